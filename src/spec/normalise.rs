//! From the file as written (`raw`) to the canonical model (`model`): short syntax expanded,
//! defaults applied, names resolved, references checked. Every problem is reported with its YAML
//! path and the walk goes on, so one run shows all the errors of a file.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::diagnostic::{display_path, Report};
use super::dotenv;
use super::interpolate::Variables;
use super::model::*;
use super::raw;
use super::units::Duration;
use super::StackFiles;

/// Everything normalisation needs besides the parsed file.
pub struct Context<'a> {
    pub stack: &'a str,
    pub files: &'a dyn StackFiles,
    pub vars: &'a Variables,
}

pub fn normalise(file: raw::ComposeFile, cx: &Context<'_>, report: &mut Report<'_>) -> StackSpec {
    let stack = cx.stack;
    let mut spec = StackSpec {
        name: stack.to_string(),
        file: report.file.to_string(),
        ..Default::default()
    };

    for (key, def) in &file.networks {
        let def = def.clone().unwrap_or_default();
        let external = def
            .external
            .as_ref()
            .is_some_and(raw::External::is_external);
        check_name(
            report,
            "networks",
            key,
            def.name.as_deref(),
            def.external.as_ref(),
        );
        let name = object_name(stack, key, def.name.as_deref(), def.external.as_ref());
        // Real stacks often say how the external network was made; that is harmless.
        if external && (def.driver.is_some() || def.ipam.is_some() || def.driver_opts.is_some()) {
            report.key_warning(
                &["networks", key, "external"],
                "an external network is created outside the stack: its driver, driver_opts and ipam here are ignored",
            );
        }
        let subnets = def
            .ipam
            .as_ref()
            .and_then(|i| i.config.as_ref())
            .map(|c| c.iter().filter_map(|c| c.subnet.clone()).collect())
            .unwrap_or_default();
        for (i, s) in def
            .ipam
            .iter()
            .flat_map(|i| i.config.iter().flatten())
            .enumerate()
        {
            if let Some(subnet) = &s.subnet {
                if !is_cidr(subnet) {
                    report.error(
                        &["networks", key, "ipam", "config", &i.to_string(), "subnet"],
                        format!(
                            "expected a subnet in CIDR form like 10.0.9.0/24, found {subnet:?}"
                        ),
                    );
                }
            }
        }
        spec.networks.insert(
            key.clone(),
            NetworkSpec {
                name,
                external,
                driver: def.driver.clone().unwrap_or_else(|| "overlay".into()),
                driver_opts: scalar_map(def.driver_opts.as_ref()),
                attachable: def.attachable.unwrap_or(false),
                internal: def.internal.unwrap_or(false),
                enable_ipv6: def.enable_ipv6.unwrap_or(false),
                subnets,
                labels: list_or_map(def.labels.as_ref(), &["networks", key, "labels"], report),
            },
        );
    }

    for (key, def) in &file.volumes {
        let def = def.clone().unwrap_or_default();
        check_name(
            report,
            "volumes",
            key,
            def.name.as_deref(),
            def.external.as_ref(),
        );
        let external = def
            .external
            .as_ref()
            .is_some_and(raw::External::is_external);
        if external && (def.driver.is_some() || def.driver_opts.is_some()) {
            report.key_warning(
                &["volumes", key, "external"],
                "an external volume is created outside the stack: its driver and driver_opts here are ignored",
            );
        }
        spec.volumes.insert(
            key.clone(),
            VolumeSpec {
                name: object_name(stack, key, def.name.as_deref(), def.external.as_ref()),
                external: def
                    .external
                    .as_ref()
                    .is_some_and(raw::External::is_external),
                driver: def.driver.clone().unwrap_or_else(|| "local".into()),
                driver_opts: scalar_map(def.driver_opts.as_ref()),
                labels: list_or_map(def.labels.as_ref(), &["volumes", key, "labels"], report),
            },
        );
    }

    for (key, def) in &file.secrets {
        let obj = file_object(
            cx,
            report,
            "secrets",
            key,
            FileObjectDef {
                file: def.file.as_deref(),
                content: None,
                external: def.external.as_ref(),
                name: def.name.as_deref(),
                labels: def.labels.as_ref(),
            },
        );
        spec.secrets.insert(key.clone(), obj);
    }
    for (key, def) in &file.configs {
        let obj = file_object(
            cx,
            report,
            "configs",
            key,
            FileObjectDef {
                file: def.file.as_deref(),
                content: def.content.as_deref(),
                external: def.external.as_ref(),
                name: def.name.as_deref(),
                labels: def.labels.as_ref(),
            },
        );
        spec.configs.insert(key.clone(), obj);
    }

    let mut uses_default_network = false;
    let mut published = Vec::new();
    for (key, svc) in &file.services {
        let service = service(
            key,
            svc,
            cx,
            &spec,
            report,
            &mut uses_default_network,
            &mut published,
        );
        if let Some(service) = service {
            spec.services.insert(service.name.clone(), service);
        }
    }
    if uses_default_network && !spec.networks.contains_key("default") {
        spec.networks.insert(
            "default".into(),
            NetworkSpec {
                name: format!("{stack}_default"),
                external: false,
                driver: "overlay".into(),
                driver_opts: BTreeMap::new(),
                attachable: false,
                internal: false,
                enable_ipv6: false,
                subnets: Vec::new(),
                labels: BTreeMap::new(),
            },
        );
    }
    check_published_ports(&published, report);
    spec
}

/// A `name:` (or `external: {name:}`) that came out empty, usually from an unset variable.
fn check_name(
    report: &mut Report<'_>,
    section: &str,
    key: &str,
    name: Option<&str>,
    external: Option<&raw::External>,
) {
    if name.is_some_and(|n| n.trim().is_empty()) {
        report.error(&[section, key, "name"], "the name is empty");
    }
    if let Some(raw::External::Named { name: Some(n) }) = external {
        if n.trim().is_empty() {
            report.error(&[section, key, "external", "name"], "the name is empty");
        }
    }
}

fn object_name(
    stack: &str,
    key: &str,
    name: Option<&str>,
    external: Option<&raw::External>,
) -> String {
    match external {
        Some(raw::External::Named { name: Some(n) }) => n.clone(),
        Some(e) if e.is_external() => name.unwrap_or(key).to_string(),
        _ => name
            .map(str::to_string)
            .unwrap_or_else(|| format!("{stack}_{key}")),
    }
}

struct FileObjectDef<'a> {
    file: Option<&'a str>,
    content: Option<&'a str>,
    external: Option<&'a raw::External>,
    name: Option<&'a str>,
    labels: Option<&'a raw::ListOrMap>,
}

fn file_object(
    cx: &Context<'_>,
    report: &mut Report<'_>,
    section: &str,
    key: &str,
    def: FileObjectDef<'_>,
) -> FileObjectSpec {
    let kind = &section[..section.len() - 1];
    check_name(report, section, key, def.name, def.external);
    let external = def.external.is_some_and(raw::External::is_external);
    let sources = [def.file.is_some(), def.content.is_some(), external]
        .iter()
        .filter(|b| **b)
        .count();
    let mut version = String::new();
    let mut source = None;
    let mut encrypted = false;
    if sources == 0 {
        let what = if section == "configs" {
            "file:, content: or external: true"
        } else {
            "file: or external: true"
        };
        report.missing(
            &[section, key],
            &["file", "content", "external"],
            format!("{kind} {key:?} needs {what}"),
        );
    } else if sources > 1 {
        let what = if section == "configs" {
            "file:, content: or external: true"
        } else {
            "file: or external: true"
        };
        report.key_error(
            &[section, key],
            format!("{kind} {key:?} must have only one of {what}"),
        );
    } else if let Some(path) = def.file {
        match cx.files.read(path) {
            Ok(Some(bytes)) => {
                version = content_version(&bytes);
                encrypted = crate::secrets::is_encrypted_path(path);
                source = Some(cx.files.display(path));
            }
            Ok(None) => report.error(
                &[section, key, "file"],
                format!("file not found: {}", cx.files.display(path)),
            ),
            Err(e) => report.error(&[section, key, "file"], e),
        }
    } else if let Some(content) = def.content {
        version = content_version(content.as_bytes());
        source = Some("inline".into());
    }
    FileObjectSpec {
        name: object_name(cx.stack, key, def.name, def.external),
        external,
        source,
        encrypted,
        version,
        labels: list_or_map(def.labels, &[section, key, "labels"], report),
        inline: def.content.map(str::to_string),
    }
}

/// Content-addressed version: the first 16 hex digits of the SHA-256 of the stored bytes.
pub fn content_version(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..8])
}

fn service(
    key: &str,
    svc: &raw::Service,
    cx: &Context<'_>,
    stack: &StackSpec,
    report: &mut Report<'_>,
    uses_default_network: &mut bool,
    published: &mut Vec<Published>,
) -> Option<ServiceSpec> {
    let at = |rest: &[&str]| -> Vec<String> {
        let mut p = vec!["services".to_string(), key.to_string()];
        p.extend(rest.iter().map(|s| s.to_string()));
        p
    };
    if !is_valid_name(key) {
        report.key_error(
            &at(&[]),
            "a service name may hold only letters, digits, '-', '_' and '.', and must start with a letter or digit",
        );
    }
    let image = match &svc.image {
        Some(i) if !i.trim().is_empty() => {
            let image = i.trim().to_string();
            if let Err(why) = check_image_reference(&image) {
                report.error(&at(&["image"]), why);
            }
            image
        }
        Some(_) => {
            report.error(&at(&["image"]), "the image is empty");
            String::new()
        }
        None => {
            report.missing(
                &at(&[]),
                &["image"],
                "service has no image: swarm mode runs images, it does not build them",
            );
            String::new()
        }
    };
    let deploy = svc.deploy.clone().unwrap_or_default();

    let raw_mode = deploy.mode.unwrap_or(raw::DeployMode::Replicated);
    if deploy.max_concurrent.is_some() && raw_mode != raw::DeployMode::ReplicatedJob {
        report.error(
            &at(&["deploy", "max_concurrent"]),
            "max_concurrent is for mode: replicated-job",
        );
    }
    let mode = match raw_mode {
        raw::DeployMode::Replicated => Mode::Replicated {
            replicas: deploy.replicas.unwrap_or(1),
        },
        raw::DeployMode::ReplicatedJob => {
            let total = deploy.replicas.unwrap_or(1);
            Mode::ReplicatedJob {
                total,
                max_concurrent: deploy.max_concurrent.unwrap_or(total).max(1),
            }
        }
        raw::DeployMode::GlobalJob => {
            if deploy.replicas.is_some() {
                report.error(
                    &at(&["deploy", "replicas"]),
                    "replicas cannot be used with mode: global-job (it runs once on every node)",
                );
            }
            Mode::GlobalJob
        }
        raw::DeployMode::Global => {
            if deploy.replicas.is_some() {
                report.error(
                    &at(&["deploy", "replicas"]),
                    "replicas cannot be used with mode: global (a global service runs one task per node)",
                );
            }
            if deploy
                .placement
                .as_ref()
                .and_then(|p| p.max_replicas_per_node)
                .is_some()
            {
                report.error(
                    &at(&["deploy", "placement", "max_replicas_per_node"]),
                    "max_replicas_per_node cannot be used with mode: global",
                );
            }
            Mode::Global
        }
    };

    let env = environment(svc, cx, &at, report);
    let mut labels = list_or_map(svc.labels.as_ref(), &at(&["labels"]), report);
    labels.retain(|k, _| !k.is_empty());

    // Each mount with where it is written, to name the right entry when two collide.
    let mut mounts: Vec<(Mount, Vec<String>)> = Vec::new();
    for (i, v) in svc.volumes.iter().flatten().enumerate() {
        let path = at(&["volumes", &i.to_string()]);
        if let Some(m) = volume_mount(v, cx, stack, &path, report) {
            mounts.push((m, path));
        }
    }
    let tmpfs: Vec<(&String, Vec<String>)> = match &svc.tmpfs {
        Some(raw::StringOrList::String(s)) => vec![(s, at(&["tmpfs"]))],
        Some(raw::StringOrList::List(l)) => l
            .iter()
            .enumerate()
            .map(|(i, s)| (s, at(&["tmpfs", &i.to_string()])))
            .collect(),
        None => vec![],
    };
    for (spec, path) in tmpfs {
        match tmpfs_mount(spec) {
            Ok(m) => mounts.push((m, path)),
            Err(e) => report.error(&path, e),
        }
    }
    let mut targets: BTreeMap<&str, &[String]> = BTreeMap::new();
    for (m, path) in &mounts {
        if let Some(first) = targets.insert(m.target(), path) {
            report.error(
                path,
                format!(
                    "{:?} is already mounted by {}",
                    m.target(),
                    display_path(report.root, first)
                ),
            );
        }
    }
    let mounts: Vec<Mount> = mounts.into_iter().map(|(m, _)| m).collect();

    let secrets = file_mounts(
        svc.secrets.as_deref(),
        "secrets",
        &stack.secrets,
        &at,
        report,
    );
    let configs = file_mounts(
        svc.configs.as_deref(),
        "configs",
        &stack.configs,
        &at,
        report,
    );

    let networks = service_networks(key, svc, stack, &at, report, uses_default_network);

    let healthcheck = svc
        .healthcheck
        .as_ref()
        .and_then(|h| healthcheck(h, &at(&["healthcheck"]), report));

    let container = ContainerSpec {
        image,
        command: command(svc.command.as_ref(), &at(&["command"]), report),
        entrypoint: command(svc.entrypoint.as_ref(), &at(&["entrypoint"]), report),
        env,
        labels,
        user: svc.user.clone(),
        working_dir: svc.working_dir.clone(),
        hostname: svc.hostname.clone(),
        domainname: svc.domainname.clone(),
        read_only: svc.read_only.unwrap_or(false),
        init: svc.init,
        tty: svc.tty.unwrap_or(false),
        stdin_open: svc.stdin_open.unwrap_or(false),
        stop_signal: svc.stop_signal.clone(),
        stop_grace_period: svc.stop_grace_period,
        healthcheck,
        mounts,
        ulimits: svc
            .ulimits
            .iter()
            .flatten()
            .map(|(k, u)| {
                let (soft, hard) = match u {
                    raw::Ulimit::Single(n) => (*n, *n),
                    raw::Ulimit::SoftHard { soft, hard } => (*soft, *hard),
                };
                if soft > hard {
                    report.error(
                        &at(&["ulimits", k]),
                        format!("soft limit {soft} is above hard limit {hard}"),
                    );
                }
                (k.clone(), Ulimit { soft, hard })
            })
            .collect(),
        sysctls: list_or_map(svc.sysctls.as_ref(), &at(&["sysctls"]), report),
        cap_add: sorted(svc.cap_add.clone().unwrap_or_default()),
        cap_drop: sorted(svc.cap_drop.clone().unwrap_or_default()),
        extra_hosts: extra_hosts(svc.extra_hosts.as_ref(), &at(&["extra_hosts"]), report),
        dns: string_or_list(svc.dns.as_ref()),
        dns_search: string_or_list(svc.dns_search.as_ref()),
        dns_options: svc.dns_opt.clone().unwrap_or_default(),
        isolation: svc.isolation.clone(),
        secrets,
        configs,
    };

    let placement = placement(
        deploy.placement.as_ref(),
        &at(&["deploy", "placement"]),
        report,
    );
    let resources = resources(
        deploy.resources.as_ref(),
        &at(&["deploy", "resources"]),
        report,
    );
    let restart_policy = deploy
        .restart_policy
        .as_ref()
        .map(|r| {
            let d = RestartPolicy::default();
            RestartPolicy {
                condition: match r.condition {
                    Some(raw::RestartCondition::None) => RestartCondition::None,
                    Some(raw::RestartCondition::OnFailure) => RestartCondition::OnFailure,
                    Some(raw::RestartCondition::Any) => RestartCondition::Any,
                    // A job that completed is done (Swarm's default for jobs).
                    None if mode.is_job() => RestartCondition::OnFailure,
                    None => RestartCondition::Any,
                },
                delay: r.delay.unwrap_or(d.delay),
                max_attempts: r.max_attempts.unwrap_or(0),
                window: r.window.unwrap_or(Duration::ZERO),
            }
        })
        .unwrap_or_else(|| RestartPolicy {
            condition: if mode.is_job() {
                RestartCondition::OnFailure
            } else {
                RestartCondition::Any
            },
            ..RestartPolicy::default()
        });

    let update_config = update_config(deploy.update_config.as_ref());
    let rollback_config = update_config_checked(
        deploy.rollback_config.as_ref(),
        &at(&["deploy", "rollback_config"]),
        report,
    );

    let entries = ports(svc.ports.as_deref(), &at(&["ports"]), report);
    published.extend(
        entries
            .iter()
            .filter(|(_, p)| p.published.is_some())
            .map(|(i, p)| Published {
                service: key.to_string(),
                entry: *i,
                port: p.clone(),
            }),
    );
    let mut ports: Vec<PortConfig> = entries.into_iter().map(|(_, p)| p).collect();
    ports.sort();
    ports.dedup();
    let endpoint_mode = match deploy.endpoint_mode {
        Some(raw::EndpointMode::Dnsrr) => EndpointMode::Dnsrr,
        _ => EndpointMode::Vip,
    };
    if endpoint_mode == EndpointMode::Dnsrr && ports.iter().any(|p| p.mode == PublishMode::Ingress)
    {
        report.error(
            &at(&["deploy", "endpoint_mode"]),
            "endpoint_mode dnsrr cannot publish ports in ingress mode: use mode: host on the ports",
        );
    }

    Some(ServiceSpec {
        name: format!("{}_{key}", cx.stack),
        stack: cx.stack.to_string(),
        labels: list_or_map(deploy.labels.as_ref(), &at(&["deploy", "labels"]), report),
        mode,
        task: std::sync::Arc::new(TaskSpec {
            container,
            resources,
            restart_policy,
            placement,
            networks,
            log_driver: svc.logging.as_ref().and_then(|l| {
                l.driver.as_ref().map(|d| LogDriver {
                    name: d.clone(),
                    options: scalar_map_opt(l.options.as_ref()),
                })
            }),
        }),
        endpoint: EndpointSpec {
            mode: endpoint_mode,
            ports,
        },
        update_config,
        rollback_config,
    })
}

fn environment(
    svc: &raw::Service,
    cx: &Context<'_>,
    at: &dyn Fn(&[&str]) -> Vec<String>,
    report: &mut Report<'_>,
) -> Vec<String> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let files: Vec<(String, bool)> = match &svc.env_file {
        None => vec![],
        Some(raw::EnvFiles::One(p)) => vec![(p.clone(), true)],
        Some(raw::EnvFiles::Many(list)) => list
            .iter()
            .map(|e| match e {
                raw::EnvFileEntry::Path(p) => (p.clone(), true),
                raw::EnvFileEntry::Long(l) => (l.path.clone(), l.required),
            })
            .collect(),
    };
    for (i, (path, required)) in files.iter().enumerate() {
        let yaml_path = match &svc.env_file {
            Some(raw::EnvFiles::One(_)) => at(&["env_file"]),
            _ => at(&["env_file", &i.to_string()]),
        };
        match cx.files.read(path) {
            Ok(Some(bytes)) => match dotenv::parse(&String::from_utf8_lossy(&bytes)) {
                Ok(pairs) => env.extend(pairs),
                Err(e) => report.error(
                    &yaml_path,
                    format!("{}:{}: {}", cx.files.display(path), e.line, e.message),
                ),
            },
            Ok(None) if *required => report.error(
                &yaml_path,
                format!("env file not found: {}", cx.files.display(path)),
            ),
            Ok(None) => {}
            Err(e) => report.error(&yaml_path, e),
        }
    }
    match &svc.environment {
        Some(raw::ListOrMap::List(items)) => {
            for (i, item) in items.iter().enumerate() {
                match item.split_once('=') {
                    Some(("", _)) => report.error(
                        &at(&["environment", &i.to_string()]),
                        format!("expected KEY=value, found {item:?}"),
                    ),
                    Some((k, v)) => {
                        env.insert(k.to_string(), v.to_string());
                    }
                    // `- KEY` takes the value from the environment, and is left out when unset.
                    None => {
                        if item.is_empty() {
                            report.error(
                                &at(&["environment", &i.to_string()]),
                                "empty environment entry",
                            );
                        } else if let Some(v) = cx.vars.get(item) {
                            env.insert(item.clone(), v.to_string());
                        }
                    }
                }
            }
        }
        Some(raw::ListOrMap::Map(m)) => {
            for (k, v) in m {
                match v {
                    Some(v) => {
                        env.insert(k.clone(), v.to_string());
                    }
                    None => {
                        if let Some(v) = cx.vars.get(k) {
                            env.insert(k.clone(), v.to_string());
                        }
                    }
                }
            }
        }
        None => {}
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

fn list_or_map<S: AsRef<str>>(
    v: Option<&raw::ListOrMap>,
    path: &[S],
    report: &mut Report<'_>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    match v {
        Some(raw::ListOrMap::List(items)) => {
            for (i, item) in items.iter().enumerate() {
                match item.split_once('=') {
                    Some((k, v)) if !k.trim().is_empty() => {
                        out.insert(k.trim().to_string(), v.to_string());
                    }
                    Some(_) => {
                        let mut p: Vec<String> =
                            path.iter().map(|s| s.as_ref().to_string()).collect();
                        p.push(i.to_string());
                        report.error(&p, format!("expected KEY=value, found {item:?}"));
                    }
                    None => {
                        out.insert(item.trim().to_string(), String::new());
                    }
                }
            }
        }
        Some(raw::ListOrMap::Map(m)) => {
            for (k, v) in m {
                out.insert(
                    k.clone(),
                    v.as_ref().map(|v| v.to_string()).unwrap_or_default(),
                );
            }
        }
        None => {}
    }
    out
}

fn scalar_map(
    m: Option<&indexmap::IndexMap<String, raw::ScalarValue>>,
) -> BTreeMap<String, String> {
    m.map(|m| m.iter().map(|(k, v)| (k.clone(), v.to_string())).collect())
        .unwrap_or_default()
}

fn scalar_map_opt(
    m: Option<&indexmap::IndexMap<String, Option<raw::ScalarValue>>>,
) -> BTreeMap<String, String> {
    m.map(|m| {
        m.iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_ref().map(|v| v.to_string()).unwrap_or_default(),
                )
            })
            .collect()
    })
    .unwrap_or_default()
}

fn string_or_list(v: Option<&raw::StringOrList>) -> Vec<String> {
    match v {
        Some(raw::StringOrList::String(s)) => vec![s.clone()],
        Some(raw::StringOrList::List(l)) => l.clone(),
        None => vec![],
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v.dedup();
    v
}

fn command(
    v: Option<&raw::StringOrList>,
    path: &[String],
    report: &mut Report<'_>,
) -> Option<Vec<String>> {
    match v? {
        raw::StringOrList::List(l) => Some(l.clone()),
        raw::StringOrList::String(s) => match shell_words::split(s) {
            Ok(words) => Some(words),
            Err(e) => {
                report.error(path, format!("cannot split {s:?} into words: {e}"));
                None
            }
        },
    }
}

fn healthcheck(
    h: &raw::Healthcheck,
    path: &[String],
    report: &mut Report<'_>,
) -> Option<Healthcheck> {
    if h.disable == Some(true) {
        return Some(Healthcheck::Disabled);
    }
    let test = match &h.test {
        None => vec![],
        Some(raw::StringOrList::String(s)) => vec!["CMD-SHELL".into(), s.clone()],
        Some(raw::StringOrList::List(l)) => match l.first().map(String::as_str) {
            Some("NONE") => return Some(Healthcheck::Disabled),
            Some("CMD") | Some("CMD-SHELL") if l.len() > 1 => l.clone(),
            Some("CMD") | Some("CMD-SHELL") => {
                let mut p = path.to_vec();
                p.push("test".into());
                report.error(&p, "the test has no command after CMD / CMD-SHELL");
                return None;
            }
            _ => {
                let mut p = path.to_vec();
                p.push("test".into());
                report.error(
                    &p,
                    "a test list starts with \"CMD\", \"CMD-SHELL\" or \"NONE\", e.g. [\"CMD\", \"curl\", \"-f\", \"http://localhost\"]",
                );
                return None;
            }
        },
    };
    Some(Healthcheck::Check {
        test,
        interval: h.interval,
        timeout: h.timeout,
        retries: h.retries,
        start_period: h.start_period,
        start_interval: h.start_interval,
    })
}

/// `/path[:size=64m,mode=1777,...]`, the short tmpfs syntax.
fn tmpfs_mount(spec: &str) -> Result<Mount, String> {
    let (target, opts) = spec.split_once(':').unwrap_or((spec, ""));
    if !target.starts_with('/') {
        return Err(format!(
            "the tmpfs target must be an absolute path, found {target:?}"
        ));
    }
    let mut size = None;
    let mut mode = None;
    for opt in opts.split(',').filter(|o| !o.is_empty()) {
        if let Some(s) = opt.strip_prefix("size=") {
            size = Some(super::units::Bytes::parse(s)?);
        } else if let Some(m) = opt.strip_prefix("mode=") {
            let m = u32::from_str_radix(m, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .ok_or_else(|| format!("expected an octal mode like 1777, found {m:?}"))?;
            mode = Some(m);
        }
        // Mount flags (noexec, nosuid, ...) are the runtime's business.
    }
    Ok(Mount::Tmpfs {
        target: target.to_string(),
        size,
        mode,
    })
}

fn volume_mount(
    v: &raw::VolumeEntry,
    cx: &Context<'_>,
    stack: &StackSpec,
    path: &[String],
    report: &mut Report<'_>,
) -> Option<Mount> {
    let (kind, source, target, read_only, nocopy, propagation, tmpfs) = match v {
        raw::VolumeEntry::Short(s) => {
            let parts: Vec<&str> = s.split(':').collect();
            let (source, target, mode) = match parts.as_slice() {
                [t] => (None, *t, ""),
                // "/data:ro" is an anonymous volume with options; anything else is a source.
                [t, m] if t.starts_with('/') && m.split(',').all(is_volume_option) => {
                    (None, *t, *m)
                }
                [s, t] => (Some(*s), *t, ""),
                [s, t, m] => (Some(*s), *t, *m),
                _ => {
                    report.error(
                        path,
                        format!("expected [SOURCE:]TARGET[:MODE], found {s:?}"),
                    );
                    return None;
                }
            };
            let mut read_only = false;
            let mut nocopy = false;
            let mut propagation = None;
            for m in mode.split(',').filter(|m| !m.is_empty()) {
                match m {
                    "ro" => read_only = true,
                    "rw" => read_only = false,
                    "nocopy" => nocopy = true,
                    "z" | "Z" => {}
                    "shared" | "rshared" | "slave" | "rslave" | "private" | "rprivate" => {
                        propagation = Some(m.to_string())
                    }
                    other => {
                        report.error(
                            path,
                            format!("unknown volume option {other:?}: expected ro, rw, nocopy or a propagation mode"),
                        );
                        return None;
                    }
                }
            }
            let kind = match source {
                Some(s) if is_host_path(s) => raw::VolumeType::Bind,
                _ => raw::VolumeType::Volume,
            };
            (
                kind,
                source.map(str::to_string),
                target.to_string(),
                read_only,
                nocopy,
                propagation,
                None,
            )
        }
        raw::VolumeEntry::Long(l) => (
            l.kind,
            l.source.clone(),
            l.target.clone(),
            l.read_only.unwrap_or(false),
            l.volume.as_ref().and_then(|v| v.nocopy).unwrap_or(false),
            l.bind.as_ref().and_then(|b| b.propagation.clone()),
            l.tmpfs.clone(),
        ),
    };
    if !target.starts_with('/') {
        report.error(
            path,
            format!("the mount target must be an absolute path, found {target:?}"),
        );
        return None;
    }
    match kind {
        raw::VolumeType::Volume => {
            let source = match source {
                None => None,
                Some(name) => match stack.volumes.get(&name) {
                    Some(v) => Some(v.name.clone()),
                    None if report.defined_in_dropped("volumes", &name) => return None,
                    None => {
                        report.error(
                            path,
                            format!(
                                "volume {name:?} is not defined in the top-level volumes: section{}",
                                suggestion(&name, stack.volumes.keys())
                            ),
                        );
                        return None;
                    }
                },
            };
            if source.is_none() && cx.stack.is_empty() {
                return None;
            }
            Some(Mount::Volume {
                source,
                target,
                read_only,
                nocopy,
            })
        }
        raw::VolumeType::Bind => {
            let Some(source) = source else {
                report.missing(path, &["source"], "a bind mount needs a source path");
                return None;
            };
            if source.starts_with('~') {
                report.error(
                    path,
                    format!(
                        "{source:?}: ~ is the home directory of whoever runs the deploy, and a commit deployed from git has no such person: use an absolute host path, a named volume, or a path inside the stack directory (./...)"
                    ),
                );
                return None;
            }
            if source.starts_with('/') {
                return Some(Mount::Bind {
                    source,
                    target,
                    read_only,
                    propagation,
                });
            }
            repo_mount(&source, target, read_only, cx, path, report)
        }
        raw::VolumeType::Tmpfs => Some(Mount::Tmpfs {
            target,
            size: tmpfs.as_ref().and_then(|t| t.size),
            mode: tmpfs.as_ref().and_then(|t| t.mode),
        }),
        raw::VolumeType::Npipe => {
            report.error(
                path,
                "npipe mounts are for Windows nodes, which are not supported",
            );
            None
        }
    }
}

/// A relative bind mount gets a meaning on cluster nodes: what git tracks is mounted from the
/// node's read-only copy of that version; what it does not becomes a directory of the stack's
/// own, kept across commits. Either way the user is told which, once per mount.
fn repo_mount(
    source: &str,
    target: String,
    read_only: bool,
    cx: &Context<'_>,
    path: &[String],
    report: &mut Report<'_>,
) -> Option<Mount> {
    match cx.files.entry(source) {
        Ok(Some(entry)) => {
            let what = if entry.dir { "directory" } else { "file" };
            report.warning(
                path,
                format!(
                    "{source} is a {what} in git: each node mounts its own read-only copy of this commit's version (a change in git rolls the service, as a config does)"
                ),
            );
            Some(Mount::Repo {
                path: entry.path,
                dir: entry.dir,
                version: entry.version,
                target,
            })
        }
        Ok(None) => {
            // Not in git: only a place of the stack's own can be meant, so it must stay inside
            // the stack directory.
            let mut parts: Vec<&str> = Vec::new();
            for c in source.split('/') {
                match c {
                    "" | "." => {}
                    ".." if parts.pop().is_some() => {}
                    ".." => {
                        report.error(
                            path,
                            format!("{source} is not in git and lies outside the stack directory: a path git does not track becomes a directory of this stack, so it must be inside it (or use a named volume)"),
                        );
                        return None;
                    }
                    c => parts.push(c),
                }
            }
            if parts.is_empty() {
                report.error(
                    path,
                    format!("{source} names the stack directory, which is not in git"),
                );
                return None;
            }
            let rel = parts.join("/");
            report.warning(
                path,
                format!(
                    "{source} is not in git: it becomes a directory of stack {stack} on each node (under the node's data dir, at stacks/{stack}/{rel}), kept across commits like a volume",
                    stack = cx.stack
                ),
            );
            Some(Mount::StackDir {
                stack: cx.stack.to_string(),
                path: rel,
                target,
                read_only,
            })
        }
        Err(e) => {
            report.error(path, e);
            None
        }
    }
}

fn is_volume_option(o: &str) -> bool {
    matches!(
        o,
        "ro" | "rw"
            | "nocopy"
            | "z"
            | "Z"
            | "shared"
            | "rshared"
            | "slave"
            | "rslave"
            | "private"
            | "rprivate"
    )
}

fn is_host_path(s: &str) -> bool {
    s.starts_with('/')
        || s.starts_with("./")
        || s.starts_with("../")
        || s.starts_with('~')
        || s == "."
}

fn file_mounts(
    refs: Option<&[raw::FileRef]>,
    section: &str,
    defined: &BTreeMap<String, FileObjectSpec>,
    at: &dyn Fn(&[&str]) -> Vec<String>,
    report: &mut Report<'_>,
) -> Vec<FileMount> {
    let mut out: Vec<FileMount> = Vec::new();
    for (i, r) in refs.into_iter().flatten().enumerate() {
        let path = at(&[section, &i.to_string()]);
        let (source, target, uid, gid, mode) = match r {
            raw::FileRef::Short(s) => (s.clone(), None, None, None, None),
            raw::FileRef::Long(l) => (
                l.source.clone(),
                l.target.clone(),
                l.uid.as_ref().map(|u| u.to_string()),
                l.gid.as_ref().map(|g| g.to_string()),
                l.mode,
            ),
        };
        let Some(obj) = defined.get(&source) else {
            if report.defined_in_dropped(section, &source) {
                continue; // the duplicate key that dropped it is reported
            }
            let kind = &section[..section.len() - 1];
            report.error(
                &path,
                format!(
                    "{kind} {source:?} is not defined in the top-level {section}: section{}",
                    suggestion(&source, defined.keys())
                ),
            );
            continue;
        };
        // An error about the target points at `target:` when it is written.
        let target_path = if target.is_some() {
            at(&[section, &i.to_string(), "target"])
        } else {
            path.clone()
        };
        let target = match target {
            Some(t) => t,
            None if section == "configs" => format!("/{source}"),
            None => source.clone(),
        };
        // As the engine does: an absolute target is used as given; a relative one goes under
        // /run/secrets/ (secrets) or / (configs). `..` could only climb out of that place.
        if target.is_empty() || target.split('/').any(|c| c == "..") {
            report.error(
                &target_path,
                format!("{kind} target {target:?} must be a file name or an absolute path without \"..\"", kind = &section[..section.len() - 1]),
            );
            continue;
        }
        let effective = |t: &str| match (t.starts_with('/'), section) {
            (true, _) => t.to_string(),
            (false, "secrets") => format!("/run/secrets/{t}"),
            (false, _) => format!("/{t}"),
        };
        if out
            .iter()
            .any(|m| effective(&m.target) == effective(&target))
        {
            report.error(
                &target_path,
                format!("two {section} use the same target {:?}", effective(&target)),
            );
            continue;
        }
        out.push(FileMount {
            object: obj.name.clone(),
            version: obj.version.clone(),
            target,
            uid: uid.unwrap_or_else(|| "0".into()),
            gid: gid.unwrap_or_else(|| "0".into()),
            mode: mode.unwrap_or(0o444),
        });
    }
    out
}

fn service_networks(
    key: &str,
    svc: &raw::Service,
    stack: &StackSpec,
    at: &dyn Fn(&[&str]) -> Vec<String>,
    report: &mut Report<'_>,
    uses_default: &mut bool,
) -> Vec<NetworkAttachment> {
    let entries: Vec<(String, raw::ServiceNetwork, Vec<String>)> = match &svc.networks {
        None => vec![],
        Some(raw::ServiceNetworks::List(l)) => l
            .iter()
            .enumerate()
            .map(|(i, n)| {
                (
                    n.clone(),
                    raw::ServiceNetwork::default(),
                    at(&["networks", &i.to_string()]),
                )
            })
            .collect(),
        Some(raw::ServiceNetworks::Map(m)) => m
            .iter()
            .map(|(n, v)| {
                (
                    n.clone(),
                    v.clone().unwrap_or_default(),
                    at(&["networks", n]),
                )
            })
            .collect(),
    };
    if entries.is_empty() {
        *uses_default = true;
        return vec![NetworkAttachment {
            network: format!("{}_default", stack.name),
            aliases: vec![key.to_string()],
            ipv4_address: None,
            ipv6_address: None,
        }];
    }
    let mut out: Vec<NetworkAttachment> = Vec::new();
    for (name, opts, path) in entries {
        let full = match stack.networks.get(&name) {
            Some(n) => n.name.clone(),
            None if name == "default" => {
                *uses_default = true;
                format!("{}_default", stack.name)
            }
            None if report.defined_in_dropped("networks", &name) => continue,
            None => {
                report.error(
                    &path,
                    format!(
                        "network {name:?} is not defined in the top-level networks: section{}",
                        suggestion(&name, stack.networks.keys())
                    ),
                );
                continue;
            }
        };
        // Two empty names are one error already reported at the names.
        if !full.is_empty() && out.iter().any(|a| a.network == full) {
            report.error(&path, format!("network {name:?} is listed twice"));
            continue;
        }
        // Like `docker stack deploy`, the short service name is an alias on every network.
        let mut aliases = vec![key.to_string()];
        for a in opts.aliases.unwrap_or_default() {
            if !aliases.contains(&a) {
                aliases.push(a);
            }
        }
        for (field, address, v6) in [
            ("ipv4_address", &opts.ipv4_address, false),
            ("ipv6_address", &opts.ipv6_address, true),
        ] {
            let Some(address) = address else { continue };
            let ok = match address.parse::<std::net::IpAddr>() {
                Ok(ip) => ip.is_ipv6() == v6,
                Err(_) => false,
            };
            if !ok {
                let mut p = path.clone();
                p.push(field.to_string());
                let example = if v6 { "fd00::10" } else { "10.0.9.10" };
                report.error(
                    &p,
                    format!("expected an IP address like {example}, found {address:?}"),
                );
            }
        }
        out.push(NetworkAttachment {
            network: full,
            aliases,
            ipv4_address: opts.ipv4_address,
            ipv6_address: opts.ipv6_address,
        });
    }
    out.sort_by(|a, b| a.network.cmp(&b.network));
    out
}

fn extra_hosts(
    v: Option<&raw::ListOrMap>,
    path: &[String],
    report: &mut Report<'_>,
) -> Vec<String> {
    let mut out = Vec::new();
    match v {
        Some(raw::ListOrMap::List(items)) => {
            for (i, item) in items.iter().enumerate() {
                // "host:ip" (Compose v3) or "host=ip" (Compose spec); IPv6 addresses hold ':'.
                let pair = item.split_once('=').or_else(|| item.split_once(':'));
                match pair {
                    Some((h, ip)) if !h.is_empty() && !ip.is_empty() => {
                        out.push(format!("{h}:{ip}"))
                    }
                    _ => {
                        let mut p = path.to_vec();
                        p.push(i.to_string());
                        report.error(&p, format!("expected host:ip, found {item:?}"));
                    }
                }
            }
        }
        Some(raw::ListOrMap::Map(m)) => {
            for (h, ip) in m {
                out.push(format!(
                    "{h}:{}",
                    ip.as_ref().map(|v| v.to_string()).unwrap_or_default()
                ));
            }
        }
        None => {}
    }
    out
}

fn placement(p: Option<&raw::Placement>, path: &[String], report: &mut Report<'_>) -> Placement {
    let Some(p) = p else {
        return Placement::default();
    };
    let mut constraints = Vec::new();
    for (i, c) in p.constraints.iter().flatten().enumerate() {
        match Constraint::parse(c) {
            Ok(c) => constraints.push(c),
            Err(e) => {
                let mut at = path.to_vec();
                at.extend(["constraints".to_string(), i.to_string()]);
                report.error(&at, e);
            }
        }
    }
    let mut spread = Vec::new();
    for (i, pref) in p.preferences.iter().flatten().enumerate() {
        let key = pref.spread.trim();
        let lower = key.to_ascii_lowercase();
        let label = ["node.labels.", "engine.labels."]
            .iter()
            .any(|prefix| lower.starts_with(prefix) && key.len() > prefix.len());
        if label {
            spread.push(key.to_string());
        } else {
            let mut at = path.to_vec();
            at.extend([
                "preferences".to_string(),
                i.to_string(),
                "spread".to_string(),
            ]);
            report.error(
                &at,
                format!("spread takes a label such as node.labels.zone or engine.labels.rack, found {key:?}"),
            );
        }
    }
    Placement {
        constraints,
        spread,
        max_replicas_per_node: p.max_replicas_per_node.unwrap_or(0),
    }
}

/// Swarm refuses memory below 4MiB and CPUs below 0.001 (a bare `memory: 512` is 512 bytes,
/// almost always a missing unit), and a container cannot start with a reservation above its
/// limit.
fn resources(r: Option<&raw::Resources>, path: &[String], report: &mut Report<'_>) -> Resources {
    const MIN_MEMORY: u64 = 4 << 20;
    const MIN_NANO_CPUS: u64 = 1_000_000;
    let Some(r) = r else {
        return Resources::default();
    };
    let limits = r.limits.clone().unwrap_or_default();
    let reservations = r.reservations.clone().unwrap_or_default();
    #[allow(deprecated)] // read only to say it is ignored
    let devices = reservations.devices.is_some();
    if devices {
        let mut at = path.to_vec();
        at.extend(["reservations".to_string(), "devices".to_string()]);
        report.key_warning(
            &at,
            "ignored in swarm mode (docker stack deploy does not pass devices to services); reserve GPUs with generic_resources, which the nodes advertise as node-generic-resources",
        );
    }
    let at = |rest: [&str; 2]| -> Vec<String> {
        let mut p = path.to_vec();
        p.extend(rest.iter().map(|s| s.to_string()));
        p
    };
    for (section, memory, cpus) in [
        ("limits", limits.memory, limits.cpus),
        ("reservations", reservations.memory, reservations.cpus),
    ] {
        if let Some(m) = memory.filter(|m| m.0 > 0 && m.0 < MIN_MEMORY) {
            let hint = if m.0 < 1 << 10 {
                format!(" (did you mean {}M?)", m.0)
            } else {
                String::new()
            };
            report.error(
                &at([section, "memory"]),
                format!("{m} is below the 4MiB minimum swarm mode allows{hint}"),
            );
        }
        if let Some(c) = cpus.filter(|c| c.0 > 0 && c.0 < MIN_NANO_CPUS) {
            report.error(
                &at([section, "cpus"]),
                format!("{c} CPUs is below the 0.001 minimum swarm mode allows"),
            );
        }
    }
    if let (Some(limit), Some(reserve)) = (limits.memory, reservations.memory) {
        if reserve > limit && limit.0 >= MIN_MEMORY {
            report.error(
                &at(["reservations", "memory"]),
                format!("the memory reservation {reserve} is above the limit {limit}"),
            );
        }
    }
    if let (Some(limit), Some(reserve)) = (limits.cpus, reservations.cpus) {
        if reserve > limit && limit.0 >= MIN_NANO_CPUS {
            report.error(
                &at(["reservations", "cpus"]),
                format!("the CPU reservation {reserve} is above the limit {limit}"),
            );
        }
    }
    let mut reserve_generic = BTreeMap::new();
    for g in reservations.generic_resources.iter().flatten() {
        if let Some(d) = &g.discrete_resource_spec {
            *reserve_generic.entry(d.kind.clone()).or_insert(0) += d.value;
        }
    }
    Resources {
        limit_cpus: limits.cpus,
        limit_memory: limits.memory,
        limit_pids: limits.pids,
        reserve_cpus: reservations.cpus,
        reserve_memory: reservations.memory,
        reserve_generic,
    }
}

fn update_config(u: Option<&raw::UpdateConfig>) -> UpdateConfig {
    let d = UpdateConfig::default();
    let Some(u) = u else {
        return d;
    };
    UpdateConfig {
        parallelism: u.parallelism.unwrap_or(d.parallelism),
        delay: u.delay.unwrap_or(d.delay),
        failure_action: match u.failure_action {
            Some(raw::FailureAction::Continue) => FailureAction::Continue,
            Some(raw::FailureAction::Rollback) => FailureAction::Rollback,
            Some(raw::FailureAction::Pause) | None => FailureAction::Pause,
        },
        monitor: u.monitor.unwrap_or(d.monitor),
        max_failure_ratio: u.max_failure_ratio.unwrap_or(d.max_failure_ratio),
        order: match u.order {
            Some(raw::UpdateOrder::StartFirst) => UpdateOrder::StartFirst,
            _ => UpdateOrder::StopFirst,
        },
    }
}

fn update_config_checked(
    u: Option<&raw::UpdateConfig>,
    path: &[String],
    report: &mut Report<'_>,
) -> UpdateConfig {
    let mut c = update_config(u);
    if c.failure_action == FailureAction::Rollback {
        let mut at = path.to_vec();
        at.push("failure_action".into());
        report.error(
            &at,
            "a rollback cannot itself roll back: use pause or continue",
        );
        c.failure_action = FailureAction::Pause;
    }
    c
}

/// The ports of a service, each with the index of the entry that wrote it, in file order.
fn ports(
    entries: Option<&[raw::PortEntry]>,
    path: &[String],
    report: &mut Report<'_>,
) -> Vec<(usize, PortConfig)> {
    let mut out = Vec::new();
    for (i, entry) in entries.into_iter().flatten().enumerate() {
        let mut at = path.to_vec();
        at.push(i.to_string());
        match entry {
            raw::PortEntry::Number(n) => match port_number(&n.to_string()) {
                Some(t) => out.push((
                    i,
                    PortConfig {
                        target: t,
                        published: None,
                        protocol: Protocol::Tcp,
                        mode: PublishMode::Ingress,
                        host_ip: None,
                    },
                )),
                None => report.error(&at, format!("expected a port from 1 to 65535, found {n}")),
            },
            raw::PortEntry::Short(s) => match parse_short_port(s) {
                Ok(ports) => out.extend(ports.into_iter().map(|p| (i, p))),
                Err(e) => report.error(&at, e),
            },
            raw::PortEntry::Long(l) => {
                let Some(target) = u16::try_from(l.target).ok().filter(|t| *t > 0) else {
                    at.push("target".into());
                    report.error(
                        &at,
                        format!("expected a port from 1 to 65535, found {}", l.target),
                    );
                    continue;
                };
                let published = match &l.published {
                    None => None,
                    Some(p) => match port_number(&p.to_string()) {
                        Some(p) => Some(p),
                        None => {
                            at.push("published".into());
                            let message = match p {
                                // Compose reads a range here as "any free port of it"; swarm
                                // has no such notion.
                                raw::StringOrNumber::String(r) if port_range(r).is_some() => {
                                    format!("{r:?} is a range, and swarm mode publishes one port per target: map ranges in the short syntax, like \"8080-8081:80-81\"")
                                }
                                raw::StringOrNumber::String(t) => {
                                    format!("expected a port from 1 to 65535, found {t:?}")
                                }
                                raw::StringOrNumber::Number(n) => {
                                    format!("expected a port from 1 to 65535, found {n}")
                                }
                            };
                            report.error(&at, message);
                            continue;
                        }
                    },
                };
                out.push((
                    i,
                    PortConfig {
                        target,
                        published,
                        protocol: match l.protocol {
                            Some(raw::Protocol::Udp) => Protocol::Udp,
                            Some(raw::Protocol::Sctp) => Protocol::Sctp,
                            _ => Protocol::Tcp,
                        },
                        mode: match l.mode {
                            Some(raw::PortMode::Host) => PublishMode::Host,
                            _ => PublishMode::Ingress,
                        },
                        host_ip: l.host_ip.clone(),
                    },
                ));
            }
        }
    }
    out
}

/// A port number as written, without spaces or signs: " 80" in "80 - 81" is not a port.
fn port_number(s: &str) -> Option<u16> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u16>().ok().filter(|p| *p > 0)
}

fn port_range(s: &str) -> Option<(u16, u16)> {
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (port_number(a)?, port_number(b)?);
            (a <= b).then_some((a, b))
        }
        None => port_number(s).map(|p| (p, p)),
    }
}

/// `[HOST_IP:][PUBLISHED[-END]:]TARGET[-END][/PROTOCOL]`.
pub fn parse_short_port(s: &str) -> Result<Vec<PortConfig>, String> {
    let expected = || {
        format!("expected a port like \"8080:80\", \"80\", \"8080-8081:80-81/udp\" or \"127.0.0.1:8080:80\", found {s:?}")
    };
    let (rest, protocol) = match s.rsplit_once('/') {
        Some((r, "tcp")) => (r, Protocol::Tcp),
        Some((r, "udp")) => (r, Protocol::Udp),
        Some((r, "sctp")) => (r, Protocol::Sctp),
        Some((_, p)) => {
            return Err(format!(
                "unknown protocol {p:?} in {s:?}: expected tcp, udp or sctp"
            ))
        }
        None => (s, Protocol::Tcp),
    };
    // The host IP may be IPv6 in brackets: "[::1]:8080:80".
    let (host_ip, rest) = if let Some(r) = rest.strip_prefix('[') {
        let (ip, r) = r.split_once("]:").ok_or_else(expected)?;
        (Some(ip.to_string()), r)
    } else {
        let parts: Vec<&str> = rest.split(':').collect();
        if parts.len() == 3 {
            (Some(parts[0].to_string()), &rest[parts[0].len() + 1..])
        } else {
            (None, rest)
        }
    };
    if let Some(ip) = &host_ip {
        // "80:80:80" has too many ports, not a bad IP.
        if port_range(ip).is_some() {
            return Err(expected());
        }
        if ip.parse::<std::net::IpAddr>().is_err() {
            return Err(format!(
                "{ip:?} in {s:?} is not an IP address: the host part of a port is an IP like 127.0.0.1"
            ));
        }
    }
    let (published, target) = match rest.split_once(':') {
        Some(("", t)) => (None, t),
        Some((p, t)) => (Some(p), t),
        None => (None, rest),
    };
    let target = port_range(target).ok_or_else(expected)?;
    let published = match published {
        Some(p) => Some(port_range(p).ok_or_else(expected)?),
        None => None,
    };
    let count = target.1 - target.0 + 1;
    if let Some(p) = published {
        let pc = p.1 - p.0 + 1;
        if pc != count && !(pc > 1 && count == 1) {
            return Err(format!(
                "published range and target range of {s:?} differ in length"
            ));
        }
        if pc > 1 && count == 1 {
            // Compose allows "8000-8010:80": publish on any one port of the range. Swarm has no
            // such notion; refuse rather than guess.
            return Err(format!(
                "{s:?} maps a range to one port; swarm mode publishes one port per target"
            ));
        }
    }
    Ok((0..count)
        .map(|i| PortConfig {
            target: target.0 + i,
            published: published.map(|p| p.0 + i),
            protocol,
            mode: PublishMode::Ingress,
            host_ip: host_ip.clone(),
        })
        .collect())
}

/// A published port and the entry that wrote it.
struct Published {
    service: String,
    entry: usize,
    port: PortConfig,
}

/// A published port belongs to one service: in ingress mode it is taken on every node, so no
/// other service may have it; in host mode it is taken only where a task runs, so two services
/// may share it (the scheduler keeps them apart) but one service cannot bind it twice.
fn check_published_ports(ports: &[Published], report: &mut Report<'_>) {
    for (i, p) in ports.iter().enumerate() {
        let Some(number) = p.port.published else {
            continue;
        };
        let clash = ports[..i].iter().find(|q| {
            q.port.published == Some(number)
                && q.port.protocol == p.port.protocol
                && if q.service == p.service {
                    // The same mapping written twice is harmless.
                    q.port != p.port
                } else {
                    q.port.mode == PublishMode::Ingress || p.port.mode == PublishMode::Ingress
                }
        });
        if let Some(q) = clash {
            let first = ["services", &q.service, "ports", &q.entry.to_string()];
            let line = report.root.locate(first).line;
            let by = if q.service == p.service {
                "this service".to_string()
            } else {
                format!("service {:?}", q.service)
            };
            report.error(
                &["services", &p.service, "ports", &p.entry.to_string()],
                format!(
                    "port {number}/{} is already published by {by} ({}, line {line})",
                    protocol_name(p.port.protocol),
                    display_path(report.root, &first),
                ),
            );
        }
    }
}

fn suggestion<'a>(word: &str, known: impl Iterator<Item = &'a String>) -> String {
    let known: Vec<&str> = known.map(String::as_str).collect();
    match super::schema::closest(word, &known) {
        Some(k) => format!("; did you mean {k:?}?"),
        None if known.is_empty() => String::new(),
        None => format!(" (defined: {})", known.join(", ")),
    }
}

/// Check an image reference with the grammar docker uses (distribution/reference), saying what
/// is wrong and where: `ghcr.io//app` has an empty name component, `app:` an empty tag.
pub fn check_image_reference(image: &str) -> Result<(), String> {
    use container_image_dist_ref::{err::Kind, ImgRef};
    let e = match ImgRef::new(image) {
        Ok(_) => return Ok(()),
        Err(e) => e,
    };
    let at = usize::from(e.index()).min(image.len());
    let ch = image[at..].chars().next();
    let what = match e.kind() {
        Kind::RefMissing => "the reference is empty".to_string(),
        Kind::HostOrPathMissing | Kind::PathMissing | Kind::HostMissing => {
            "a part of the name is empty (two \"/\" in a row, or a \"/\" at either end)".into()
        }
        Kind::HostOrPathInvalidChar | Kind::PathInvalidChar | Kind::HostInvalidChar => match ch {
            Some(c) if c.is_ascii_uppercase() => "repository names must be lowercase".into(),
            Some(c) => format!("{c:?} cannot appear in an image name (lowercase letters, digits, \".\", \"_\", \"-\" and \"/\")"),
            None => "the name ends too early".into(),
        },
        Kind::HostOrPathInvalidComponentEnd
        | Kind::PathComponentInvalidEnd
        | Kind::HostComponentInvalidEnd => {
            "a part of the name starts or ends with a separator (\".\", \"_\" or \"-\"), or has two in a row".into()
        }
        Kind::PortOrTagMissing | Kind::TagMissing => {
            "the tag after \":\" is empty: write name:tag, or leave out \":\" for latest".into()
        }
        Kind::PortOrTagInvalidChar | Kind::TagInvalidChar => match ch {
            Some(c) => format!("{c:?} cannot appear in a tag (letters, digits, \"_\", \".\" and \"-\", not starting with \".\" or \"-\")"),
            None => "the tag ends too early".into(),
        },
        Kind::TagTooLong => "the tag is longer than 128 characters".into(),
        Kind::NameTooLong | Kind::HostOrPathTooLong | Kind::PathTooLong | Kind::HostTooLong => {
            "the name is longer than 255 characters".into()
        }
        Kind::Port | Kind::PortInvalidChar | Kind::PortTooLong | Kind::PortMissing => {
            "the registry's port is not a number".into()
        }
        Kind::Ipv6InvalidChar
        | Kind::Ipv6TooLong
        | Kind::Ipv6BadColon
        | Kind::Ipv6TooManyHexDigits
        | Kind::Ipv6TooManyGroups
        | Kind::Ipv6TooFewGroups
        | Kind::Ipv6MissingClosingBracket => "the registry's IPv6 address is malformed".into(),
        _ => "the digest is malformed: expected @sha256: and 64 hex digits".into(),
    };
    Err(format!(
        "invalid image reference {image:?}: {what} (at character {})",
        at + 1
    ))
}

fn is_cidr(s: &str) -> bool {
    let Some((ip, bits)) = s.split_once('/') else {
        return false;
    };
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => bits.parse::<u8>().is_ok_and(|b| b <= 32),
        Ok(std::net::IpAddr::V6(_)) => bits.parse::<u8>().is_ok_and(|b| b <= 128),
        Err(_) => false,
    }
}

pub fn is_valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ports() {
        let p = parse_short_port("8080:80").unwrap();
        assert_eq!(
            (p[0].published, p[0].target, p[0].protocol),
            (Some(8080), 80, Protocol::Tcp)
        );
        let p = parse_short_port("9000-9001:80-81/udp").unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(
            (p[1].published, p[1].target, p[1].protocol),
            (Some(9001), 81, Protocol::Udp)
        );
        let p = parse_short_port("127.0.0.1:5000:5000").unwrap();
        assert_eq!(p[0].host_ip.as_deref(), Some("127.0.0.1"));
        let p = parse_short_port("[::1]:53:53/udp").unwrap();
        assert_eq!(p[0].host_ip.as_deref(), Some("::1"));
        let p = parse_short_port("3000").unwrap();
        assert_eq!(p[0].published, None);
        for bad in [
            "80:80:80:80",
            "0:80",
            "99999:80",
            "80/icmp",
            "a:b",
            "9000-9002:80-81",
            "81-80:80",
        ] {
            assert!(parse_short_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn image_references_follow_dockers_grammar() {
        for ok in [
            "nginx",
            "nginx:1.27",
            "library/nginx:latest",
            "ghcr.io/owner/app:v1.2.3",
            "registry.example.com:5000/team/app:2024.01",
            "localhost:5000/app",
            "127.0.0.1:5000/a/b/c:tag_1",
            "nginx@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "nginx:1.27@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "my_app__x.y-z",
        ] {
            assert_eq!(check_image_reference(ok), Ok(()), "{ok}");
        }
        let why = |s: &str| check_image_reference(s).unwrap_err();
        assert!(
            why("ghcr.io//app:latest").contains("a part of the name is empty"),
            "{}",
            why("ghcr.io//app:latest")
        );
        assert!(why("app:").contains("the tag after \":\" is empty"));
        assert!(why("MyApp").contains("lowercase"));
        assert!(why("app:v1 2").contains("cannot appear in a tag"));
        assert!(why("app@sha256:abc").contains("digest"));
        assert!(why("app/").contains("empty"));
        assert!(why("-app").contains("(at character 1)"), "{}", why("-app"));
    }

    #[test]
    fn names() {
        assert!(is_valid_name("web"));
        assert!(is_valid_name("web-2.x_y"));
        assert!(!is_valid_name("-web"));
        assert!(!is_valid_name("web/x"));
        assert!(!is_valid_name(""));
    }
}
