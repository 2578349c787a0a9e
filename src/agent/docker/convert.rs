//! Pure translation between our model and Docker's API types: a `ContainerRequest` becomes a
//! create body, a network or volume spec a create request, an inspect response an
//! `ObservedContainer`. No I/O here, so every mapping is unit-tested.

use std::collections::HashMap;
use std::time::SystemTime;

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, EndpointIpamConfig,
    EndpointSettings, HealthConfig, HealthStatusEnum, HostConfig, HostConfigLogConfig, Ipam,
    IpamConfig, Mount as DockerMount, MountBindOptions, MountBindOptionsPropagationEnum,
    MountTmpfsOptions, MountType, MountVolumeOptions, NetworkCreateRequest, NetworkingConfig,
    PortBinding, PortMap, ResourcesUlimits, RestartPolicy as DockerRestartPolicy,
    RestartPolicyNameEnum, VolumeCreateRequest,
};

use crate::agent::labels;
use crate::agent::runtime::{
    ContainerId, ContainerRequest, ContainerState, Health, ObservedContainer,
};
use crate::agent::task_files::FileBind;
use crate::spec::model::{
    protocol_name, EndpointSpec, Healthcheck, Mount, NetworkAttachment, NetworkSpec, PublishMode,
    TaskSpec, VolumeSpec,
};
use crate::spec::units::Duration;

/// The body of `POST /containers/create`. Only the first network can be given at create:
/// engines before API 1.44 (Docker 20.10 speaks 1.41) refuse several endpoints there, so the
/// others are connected before start (see [`extra_networks`]).
pub fn create_body(
    req: &ContainerRequest,
    binds: &[FileBind],
) -> Result<ContainerCreateBody, String> {
    let c = &req.spec.container;
    let (exposed_ports, port_bindings) = host_ports(&req.endpoint);
    Ok(ContainerCreateBody {
        image: Some(c.image.clone()),
        cmd: c.command.clone(),
        entrypoint: c.entrypoint.clone(),
        env: Some(c.env.clone()),
        labels: Some(labels::container_labels(&req.task, &c.labels)),
        user: c.user.clone(),
        working_dir: c.working_dir.clone(),
        hostname: c.hostname.clone(),
        domainname: c.domainname.clone(),
        tty: Some(c.tty),
        open_stdin: Some(c.stdin_open),
        stop_signal: c.stop_signal.clone(),
        stop_timeout: c.stop_grace_period.map(whole_seconds),
        healthcheck: c.healthcheck.as_ref().map(health_config),
        exposed_ports,
        host_config: Some(host_config(req, binds, port_bindings)?),
        networking_config: req.networks.first().map(|first| NetworkingConfig {
            endpoints_config: Some(HashMap::from([(first.network.clone(), endpoint(first))])),
        }),
        ..Default::default()
    })
}

/// Networks after the first, to connect between create and start.
pub fn extra_networks(req: &ContainerRequest) -> impl Iterator<Item = (&str, EndpointSettings)> {
    req.networks
        .iter()
        .skip(1)
        .map(|n| (n.network.as_str(), endpoint(n)))
}

pub fn endpoint(attachment: &NetworkAttachment) -> EndpointSettings {
    let ipam =
        (attachment.ipv4_address.is_some() || attachment.ipv6_address.is_some()).then(|| {
            EndpointIpamConfig {
                ipv4_address: attachment.ipv4_address.clone(),
                ipv6_address: attachment.ipv6_address.clone(),
                ..Default::default()
            }
        });
    EndpointSettings {
        aliases: Some(attachment.aliases.clone()),
        ipam_config: ipam,
        ..Default::default()
    }
}

fn host_config(
    req: &ContainerRequest,
    binds: &[FileBind],
    port_bindings: Option<PortMap>,
) -> Result<HostConfig, String> {
    let c = &req.spec.container;
    let mut mounts = c
        .mounts
        .iter()
        .map(|m| mount(m, &req.task.stack))
        .collect::<Result<Vec<_>, _>>()?;
    mounts.extend(binds.iter().map(file_mount));
    let mut host = HostConfig {
        mounts: Some(mounts),
        readonly_rootfs: Some(c.read_only),
        init: c.init,
        cap_add: non_empty(&c.cap_add),
        cap_drop: non_empty(&c.cap_drop),
        sysctls: (!c.sysctls.is_empty()).then(|| c.sysctls.clone().into_iter().collect()),
        extra_hosts: non_empty(&c.extra_hosts),
        dns: non_empty(&c.dns),
        dns_search: non_empty(&c.dns_search),
        dns_options: non_empty(&c.dns_options),
        ulimits: (!c.ulimits.is_empty()).then(|| {
            c.ulimits
                .iter()
                .map(|(name, u)| ResourcesUlimits {
                    name: Some(name.clone()),
                    soft: Some(u.soft),
                    hard: Some(u.hard),
                })
                .collect()
        }),
        log_config: req.spec.log_driver.as_ref().map(|d| HostConfigLogConfig {
            typ: Some(d.name.clone()),
            config: Some(d.options.clone().into_iter().collect()),
        }),
        port_bindings,
        network_mode: req.networks.first().map(|n| n.network.clone()),
        // Tasks are one-shot: the orchestrator replaces a task that stops, Docker must not
        // restart it behind the orchestrator's back.
        restart_policy: Some(DockerRestartPolicy {
            name: Some(RestartPolicyNameEnum::NO),
            maximum_retry_count: None,
        }),
        ..Default::default()
    };
    apply_resources(&mut host, &req.spec);
    // `isolation` is Windows-only (process | hyperv); on Linux Docker accepts only "default".
    Ok(host)
}

/// Limits are enforced by Docker; reservations are the scheduler's business, except memory,
/// which Docker takes as a soft limit (as Swarm's executor passes it on).
fn apply_resources(host: &mut HostConfig, spec: &TaskSpec) {
    let r = &spec.resources;
    host.nano_cpus = r.limit_cpus.map(|c| saturating_i64(c.0));
    host.memory = r.limit_memory.map(|b| saturating_i64(b.0));
    host.pids_limit = r.limit_pids.map(saturating_i64);
    host.memory_reservation = r.reserve_memory.map(|b| saturating_i64(b.0));
}

fn mount(m: &Mount, stack: &str) -> Result<DockerMount, String> {
    Ok(match m {
        Mount::Volume {
            source,
            target,
            read_only,
            nocopy,
        } => DockerMount {
            typ: Some(MountType::VOLUME),
            source: source.clone(),
            target: Some(target.clone()),
            read_only: Some(*read_only),
            // Docker creates a missing named volume on first use; with these labels it is ours.
            volume_options: Some(MountVolumeOptions {
                no_copy: Some(*nocopy),
                labels: Some(labels::object_labels(stack)),
                ..Default::default()
            }),
            ..Default::default()
        },
        Mount::Bind {
            source,
            target,
            read_only,
            propagation,
        } => DockerMount {
            typ: Some(MountType::BIND),
            source: Some(source.clone()),
            target: Some(target.clone()),
            read_only: Some(*read_only),
            bind_options: propagation
                .as_deref()
                .map(|p| {
                    p.parse::<MountBindOptionsPropagationEnum>()
                        .map_err(|_| format!("bind propagation {p:?} is not one of private, rprivate, shared, rshared, slave, rslave"))
                })
                .transpose()?
                .map(|p| MountBindOptions {
                    propagation: Some(p),
                    ..Default::default()
                }),
            ..Default::default()
        },
        Mount::Tmpfs { target, size, mode } => DockerMount {
            typ: Some(MountType::TMPFS),
            target: Some(target.clone()),
            tmpfs_options: Some(MountTmpfsOptions {
                size_bytes: size.map(|b| saturating_i64(b.0)),
                mode: mode.map(i64::from),
                ..Default::default()
            }),
            ..Default::default()
        },
        // The executor turns these into binds of this node's paths before creating.
        Mount::Repo { target, .. } | Mount::StackDir { target, .. } => {
            return Err(format!(
                "the relative bind mount at {target} was not resolved to a path on this node"
            ))
        }
    })
}

/// A secret or config file, bound read-only over its target.
fn file_mount(bind: &FileBind) -> DockerMount {
    DockerMount {
        typ: Some(MountType::BIND),
        source: Some(bind.host_path.to_string_lossy().into_owned()),
        target: Some(bind.target.clone()),
        read_only: Some(true),
        ..Default::default()
    }
}

/// Host-mode ports become Docker port bindings on this node. Ingress-mode ports are NOT bound
/// here: the node's ingress proxy publishes them and balances across the service's healthy
/// tasks (binding them per container would clash as soon as there are two replicas).
fn host_ports(endpoint: &EndpointSpec) -> (Option<Vec<String>>, Option<PortMap>) {
    let host: Vec<_> = endpoint
        .ports
        .iter()
        .filter(|p| p.mode == PublishMode::Host)
        .collect();
    if host.is_empty() {
        return (None, None);
    }
    let mut map = PortMap::new();
    for p in &host {
        let key = format!("{}/{}", p.target, protocol_name(p.protocol));
        let binding = PortBinding {
            host_ip: p.host_ip.clone(),
            // Empty: Docker picks a free port, as Swarm does for an unpublished host port.
            host_port: Some(p.published.map(|n| n.to_string()).unwrap_or_default()),
        };
        map.entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(binding);
    }
    let mut exposed: Vec<String> = map.keys().cloned().collect();
    exposed.sort();
    (Some(exposed), Some(map))
}

/// Docker's health config: durations in nanoseconds; `["NONE"]` turns off the image's check;
/// an empty test keeps the image's command but applies the given timings.
pub fn health_config(h: &Healthcheck) -> HealthConfig {
    match h {
        Healthcheck::Disabled => HealthConfig {
            test: Some(vec!["NONE".into()]),
            ..Default::default()
        },
        Healthcheck::Check {
            test,
            interval,
            timeout,
            retries,
            start_period,
            start_interval,
        } => HealthConfig {
            test: non_empty(test),
            interval: interval.map(nanos),
            timeout: timeout.map(nanos),
            retries: retries.map(saturating_i64),
            start_period: start_period.map(nanos),
            // API 1.44+; older engines (20.10) ignore it.
            start_interval: start_interval.map(nanos),
        },
    }
}

/// A stack network becomes a local network on this single node: `overlay` needs swarm mode, so
/// it is created as a `bridge`, which gives the same name-based discovery on one node.
pub fn network_create(spec: &NetworkSpec, stack: &str) -> NetworkCreateRequest {
    let driver = match spec.driver.as_str() {
        "" | "overlay" => "bridge",
        other => other,
    };
    let mut labels: HashMap<String, String> = spec.labels.clone().into_iter().collect();
    labels.extend(labels::object_labels(stack));
    NetworkCreateRequest {
        name: spec.name.clone(),
        driver: Some(driver.to_string()),
        internal: Some(spec.internal),
        enable_ipv6: Some(spec.enable_ipv6),
        options: (!spec.driver_opts.is_empty())
            .then(|| spec.driver_opts.clone().into_iter().collect()),
        ipam: (!spec.subnets.is_empty()).then(|| Ipam {
            config: Some(
                spec.subnets
                    .iter()
                    .map(|s| IpamConfig {
                        subnet: Some(s.clone()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        labels: Some(labels),
        ..Default::default()
    }
}

pub fn volume_create(spec: &VolumeSpec, stack: &str) -> VolumeCreateRequest {
    let mut labels: HashMap<String, String> = spec.labels.clone().into_iter().collect();
    labels.extend(labels::object_labels(stack));
    VolumeCreateRequest {
        name: Some(spec.name.clone()),
        driver: Some(spec.driver.clone()).filter(|d| !d.is_empty()),
        driver_opts: Some(spec.driver_opts.clone().into_iter().collect()),
        labels: Some(labels),
        ..Default::default()
    }
}

/// What we know of a container from `GET /containers/{id}/json`; `None` when it is not one of
/// ours (labels missing or edited).
pub fn observed(r: ContainerInspectResponse) -> Option<ObservedContainer> {
    let config = r.config.unwrap_or_default();
    let task = labels::task_ref(config.labels.as_ref()?)?;
    let state = r.state.unwrap_or_default();
    let status = container_state(state.status);
    let exit_code = matches!(status, ContainerState::Exited | ContainerState::Dead)
        .then_some(state.exit_code)
        .flatten();
    let error = if state.oom_killed == Some(true) {
        Some("out of memory: the container was OOM killed".to_string())
    } else {
        state.error.filter(|e| !e.is_empty())
    };
    let started_at = state.started_at.as_deref().and_then(timestamp);
    // The engine records StartedAt once the start call returns, so a process that exits at
    // once can show a FinishedAt a little before it; a run never lasts less than zero.
    let finished_at = state
        .finished_at
        .as_deref()
        .and_then(timestamp)
        .map(|f| started_at.map_or(f, |s| f.max(s)));
    let addresses = r
        .network_settings
        .and_then(|n| n.networks)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(net, ep)| Some((net, ep.ip_address?.parse().ok()?)))
        .collect();
    Some(ObservedContainer {
        id: ContainerId(r.id?),
        name: r
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        task,
        image: config.image.unwrap_or_default(),
        state: status,
        exit_code,
        started_at,
        finished_at,
        health: health(state.health.and_then(|h| h.status)),
        error,
        addresses,
    })
}

fn container_state(status: Option<ContainerStateStatusEnum>) -> ContainerState {
    match status {
        Some(ContainerStateStatusEnum::RUNNING) => ContainerState::Running,
        Some(ContainerStateStatusEnum::PAUSED) => ContainerState::Paused,
        Some(ContainerStateStatusEnum::RESTARTING) => ContainerState::Restarting,
        Some(ContainerStateStatusEnum::REMOVING) => ContainerState::Removing,
        Some(ContainerStateStatusEnum::EXITED) => ContainerState::Exited,
        Some(ContainerStateStatusEnum::DEAD) => ContainerState::Dead,
        // "stopping" (API 1.52+) is still running as far as a task is concerned.
        Some(ContainerStateStatusEnum::STOPPING) => ContainerState::Running,
        Some(ContainerStateStatusEnum::CREATED | ContainerStateStatusEnum::EMPTY) | None => {
            ContainerState::Created
        }
    }
}

fn health(status: Option<HealthStatusEnum>) -> Health {
    match status {
        Some(HealthStatusEnum::STARTING) => Health::Starting,
        Some(HealthStatusEnum::HEALTHY) => Health::Healthy,
        Some(HealthStatusEnum::UNHEALTHY) => Health::Unhealthy,
        Some(HealthStatusEnum::NONE | HealthStatusEnum::EMPTY) | None => Health::None,
    }
}

/// Docker's RFC 3339 timestamps; its zero time (`0001-01-01T00:00:00Z`, "never") is None.
pub fn timestamp(text: &str) -> Option<SystemTime> {
    if text.starts_with("0001-") {
        return None;
    }
    humantime::parse_rfc3339_weak(text).ok()
}

/// `nginx` means `nginx:latest` to a pull; without a tag the engine would pull every tag.
pub fn pull_reference(image: &str) -> String {
    let name = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') || name.contains(':') {
        image.to_string()
    } else {
        format!("{image}:latest")
    }
}

fn whole_seconds(d: Duration) -> i64 {
    let d = d.as_std();
    saturating_i64(d.as_secs() + u64::from(d.subsec_nanos() > 0))
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_std().as_nanos()).unwrap_or(i64::MAX)
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn non_empty(v: &[String]) -> Option<Vec<String>> {
    (!v.is_empty()).then(|| v.to_vec())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::agent::runtime::TaskRef;
    use crate::spec::model::{
        ContainerSpec, Placement, PortConfig, Protocol, Resources, RestartPolicy, Ulimit,
    };
    use crate::spec::units::{Bytes, NanoCpus};

    fn request() -> ContainerRequest {
        let container = ContainerSpec {
            image: "nginx:1.27".into(),
            command: Some(vec!["nginx".into(), "-g".into(), "daemon off;".into()]),
            env: vec!["A=1".into()],
            stop_signal: Some("SIGQUIT".into()),
            stop_grace_period: Some(Duration::from_millis(1500)),
            healthcheck: Some(Healthcheck::Check {
                test: vec!["CMD".into(), "true".into()],
                interval: Some(Duration::from_secs(2)),
                timeout: None,
                retries: Some(3),
                start_period: None,
                start_interval: None,
            }),
            mounts: vec![
                Mount::Volume {
                    source: Some("shop_data".into()),
                    target: "/data".into(),
                    read_only: false,
                    nocopy: true,
                },
                Mount::Tmpfs {
                    target: "/cache".into(),
                    size: Some(Bytes(1 << 20)),
                    mode: Some(0o1777),
                },
            ],
            ulimits: BTreeMap::from([(
                "nofile".into(),
                Ulimit {
                    soft: 1024,
                    hard: 2048,
                },
            )]),
            ..Default::default()
        };
        let spec = TaskSpec {
            container,
            resources: Resources {
                limit_cpus: Some(NanoCpus(500_000_000)),
                limit_memory: Some(Bytes(64 << 20)),
                ..Default::default()
            },
            restart_policy: RestartPolicy::default(),
            placement: Placement::default(),
            networks: vec![
                NetworkAttachment {
                    network: "shop_default".into(),
                    aliases: vec![],
                    ipv4_address: None,
                    ipv6_address: None,
                },
                NetworkAttachment {
                    network: "shop_back".into(),
                    aliases: vec!["api".into()],
                    ipv4_address: None,
                    ipv6_address: None,
                },
            ],
            log_driver: None,
        };
        let endpoint = EndpointSpec {
            mode: Default::default(),
            ports: vec![
                PortConfig {
                    target: 80,
                    published: Some(8080),
                    protocol: Protocol::Tcp,
                    mode: PublishMode::Host,
                    host_ip: None,
                },
                PortConfig {
                    target: 443,
                    published: Some(8443),
                    protocol: Protocol::Tcp,
                    mode: PublishMode::Ingress,
                    host_ip: None,
                },
            ],
        };
        let task = TaskRef {
            task_id: "t1".into(),
            service: "shop_web".into(),
            stack: "shop".into(),
            slot: Some(1),
            node_id: "n1".into(),
        };
        ContainerRequest::new(task, spec, endpoint)
    }

    #[test]
    fn create_body_maps_the_spec() {
        let body = create_body(&request(), &[]).unwrap();
        assert_eq!(body.stop_signal.as_deref(), Some("SIGQUIT"));
        // 1.5s rounds up: a grace period is a minimum.
        assert_eq!(body.stop_timeout, Some(2));
        let health = body.healthcheck.unwrap();
        assert_eq!(health.interval, Some(2_000_000_000));
        assert_eq!(health.retries, Some(3));
        let host = body.host_config.unwrap();
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.memory, Some(64 << 20));
        assert_eq!(host.network_mode.as_deref(), Some("shop_default"));
        assert_eq!(
            host.restart_policy.unwrap().name,
            Some(RestartPolicyNameEnum::NO)
        );
        let mounts = host.mounts.unwrap();
        assert_eq!(mounts[0].typ, Some(MountType::VOLUME));
        let vol_labels = mounts[0]
            .volume_options
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        assert_eq!(vol_labels[labels::STACK_NAMESPACE], "shop");
        assert_eq!(mounts[1].tmpfs_options.as_ref().unwrap().mode, Some(0o1777));
        assert_eq!(host.ulimits.unwrap()[0].hard, Some(2048));
    }

    #[test]
    fn only_host_ports_are_bound() {
        let body = create_body(&request(), &[]).unwrap();
        assert_eq!(body.exposed_ports, Some(vec!["80/tcp".to_string()]));
        let bindings = body.host_config.unwrap().port_bindings.unwrap();
        assert_eq!(bindings.len(), 1);
        assert_eq!(
            bindings["80/tcp"].as_ref().unwrap()[0].host_port.as_deref(),
            Some("8080")
        );
    }

    #[test]
    fn first_network_at_create_the_rest_after() {
        let req = request();
        let body = create_body(&req, &[]).unwrap();
        let endpoints = body.networking_config.unwrap().endpoints_config.unwrap();
        assert_eq!(endpoints.len(), 1);
        assert_eq!(
            endpoints["shop_default"].aliases.as_ref().unwrap(),
            &["web", "shop_web"]
        );
        let extra: Vec<_> = extra_networks(&req).collect();
        assert_eq!(extra.len(), 1);
        assert_eq!(extra[0].0, "shop_back");
        assert_eq!(
            extra[0].1.aliases.as_ref().unwrap(),
            &["web", "shop_web", "api"]
        );
    }

    #[test]
    fn secret_files_are_read_only_binds() {
        let bind = FileBind {
            host_path: "/dev/shm/reconciler/tasks/t1/secret-0".into(),
            target: "/run/secrets/key".into(),
        };
        let body = create_body(&request(), &[bind]).unwrap();
        let mounts = body.host_config.unwrap().mounts.unwrap();
        let last = mounts.last().unwrap();
        assert_eq!(last.typ, Some(MountType::BIND));
        assert_eq!(last.read_only, Some(true));
        assert_eq!(last.target.as_deref(), Some("/run/secrets/key"));
    }

    #[test]
    fn bad_propagation_is_an_error() {
        let mut req = request();
        req.spec.container.mounts = vec![Mount::Bind {
            source: "/srv".into(),
            target: "/srv".into(),
            read_only: true,
            propagation: Some("sideways".into()),
        }];
        assert!(create_body(&req, &[]).unwrap_err().contains("sideways"));
    }

    #[test]
    fn healthcheck_disabled_is_none() {
        assert_eq!(
            health_config(&Healthcheck::Disabled).test,
            Some(vec!["NONE".to_string()])
        );
    }

    #[test]
    fn overlay_becomes_bridge_with_our_labels() {
        let spec = NetworkSpec {
            name: "shop_default".into(),
            external: false,
            driver: "overlay".into(),
            driver_opts: BTreeMap::new(),
            attachable: false,
            internal: false,
            enable_ipv6: false,
            subnets: vec!["10.99.0.0/24".into()],
            labels: BTreeMap::from([(labels::MANAGED.into(), "0".into())]),
        };
        let req = network_create(&spec, "shop");
        assert_eq!(req.driver.as_deref(), Some("bridge"));
        let labels = req.labels.unwrap();
        assert_eq!(labels[labels::MANAGED], "1");
        assert_eq!(labels[labels::STACK_NAMESPACE], "shop");
        assert_eq!(
            req.ipam.unwrap().config.unwrap()[0].subnet.as_deref(),
            Some("10.99.0.0/24")
        );
    }

    #[test]
    fn timestamps_and_references() {
        assert_eq!(timestamp("0001-01-01T00:00:00Z"), None);
        let t = timestamp("2024-05-01T10:00:00.123456789Z").unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            1_714_557_600
        );
        assert_eq!(pull_reference("nginx"), "nginx:latest");
        assert_eq!(pull_reference("nginx:1.27"), "nginx:1.27");
        assert_eq!(
            pull_reference("localhost:5000/app"),
            "localhost:5000/app:latest"
        );
        assert_eq!(pull_reference("app@sha256:abc"), "app@sha256:abc");
    }
}
