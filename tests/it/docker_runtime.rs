//! The Docker runtime against the real engine: containers, networks, secrets, stop semantics,
//! health, adoption. Every object carries `org.reconciler.test.case=<test>` and is removed at
//! the end of the test, and at its start in case an earlier run was killed. Names are unique
//! per run, so the tests run in parallel.
//!
//! Without an engine the tests print "skipping: no Docker" and pass, unless
//! RECONCILER_REQUIRE_DOCKER=1 (CI), where they fail.

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use bollard::query_parameters::ListContainersOptionsBuilder;
use bollard::Docker;
use futures::FutureExt;
use reconciler::agent::{
    ContainerId, ContainerRequest, ContainerState, DockerRuntime, Health, Runtime, RuntimeError,
    TaskRef,
};
use reconciler::secrets::SecretBytes;
use reconciler::spec::model::{
    ContainerSpec, EndpointSpec, FileMount, Healthcheck, LogDriver, Mount, NetworkAttachment,
    NetworkSpec, Placement, PortConfig, Protocol, PublishMode, Resources, RestartPolicy, TaskSpec,
    Ulimit, VolumeSpec,
};
use reconciler::spec::units::{Bytes, Duration as SpecDuration, NanoCpus};
use reconciler::testing::{self, images::busybox};

const CASE_LABEL: &str = "org.reconciler.test.case";

/// One test's world: a stack name of its own and the labels to find what it made.
struct Case {
    name: &'static str,
    docker: Docker,
    rt: DockerRuntime,
    stack: String,
}

impl Case {
    fn label(&self) -> String {
        format!("{CASE_LABEL}={}", self.name)
    }

    fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (CASE_LABEL.to_string(), self.name.to_string()),
            (testing::TEST_LABEL.to_string(), "1".to_string()),
        ])
    }

    fn network(&self) -> NetworkSpec {
        NetworkSpec {
            name: format!("{}_default", self.stack),
            external: false,
            driver: "overlay".into(),
            driver_opts: BTreeMap::new(),
            attachable: false,
            internal: false,
            enable_ipv6: false,
            subnets: vec![],
            labels: self.labels(),
        }
    }

    fn task(&self, service: &str, slot: u64) -> TaskRef {
        TaskRef {
            task_id: format!("{service}{}", testing::unique_suffix()),
            service: format!("{}_{service}", self.stack),
            stack: self.stack.clone(),
            slot: Some(slot),
            node_id: "node-a".into(),
        }
    }

    /// A request for `service` running `image`, adjusted by `edit`.
    fn request(
        &self,
        service: &str,
        image: &str,
        edit: impl FnOnce(&mut TaskSpec),
    ) -> ContainerRequest {
        let mut spec = TaskSpec {
            container: ContainerSpec {
                image: image.to_string(),
                labels: self.labels(),
                ..Default::default()
            },
            resources: Resources::default(),
            restart_policy: RestartPolicy::default(),
            placement: Placement::default(),
            networks: vec![NetworkAttachment {
                network: self.network().name,
                aliases: vec![],
                ipv4_address: None,
                ipv6_address: None,
            }],
            log_driver: None,
        };
        edit(&mut spec);
        ContainerRequest::new(self.task(service, 1), spec, EndpointSpec::default())
    }

    /// Network, image, create, start: the steps an agent takes for a new task.
    ///
    /// Retried when the network vanishes between the steps: other test processes on this
    /// engine run managers that prune managed networks they do not know, and a network with
    /// only a created (not started) container on it is unused to Docker.
    async fn run(&self, req: &ContainerRequest) -> ContainerId {
        for _ in 0..3 {
            match self.try_run(req).await {
                Ok(id) => return id,
                Err(RuntimeError::NotFound(message)) if message.contains("network") => {
                    eprintln!("retrying after a network vanished: {message}");
                    if let Some(old) = self
                        .rt
                        .list()
                        .await
                        .unwrap()
                        .into_iter()
                        .find(|c| c.task == req.task)
                    {
                        self.rt.remove(&old.id).await.unwrap();
                    }
                }
                Err(e) => panic!("running {}: {e}", req.task.container_name()),
            }
        }
        panic!(
            "the network of {} kept vanishing",
            req.task.container_name()
        );
    }

    async fn try_run(&self, req: &ContainerRequest) -> Result<ContainerId, RuntimeError> {
        self.rt.ensure_network(&self.network(), &self.stack).await?;
        self.rt.ensure_image(&req.spec.container.image).await?;
        let id = self.rt.create(req).await?;
        self.rt.start(&id).await?;
        Ok(id)
    }

    /// Run a command in the container, for at most 10 s.
    async fn exec(&self, id: &ContainerId, cmd: &[&str]) -> testing::ExecOutput {
        let run = testing::exec(&self.docker, id.as_str(), None, cmd);
        tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .unwrap_or_else(|_| panic!("{cmd:?} still running after 10s"))
            .expect("exec")
    }

    /// Through the runtime first (so task files go too), then anything else by label.
    async fn cleanup(&self) {
        let filters = std::collections::HashMap::from([("label", vec![self.label()])]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        for c in self
            .docker
            .list_containers(Some(options))
            .await
            .unwrap_or_default()
        {
            if let Some(id) = c.id {
                if let Err(e) = self.rt.remove(&ContainerId(id)).await {
                    eprintln!("clean-up: {e}");
                }
            }
        }
        if let Err(e) = testing::remove_labelled(&self.docker, &self.label()).await {
            eprintln!("clean-up: {e:#}");
        }
    }
}

/// Run `body` with a fresh case, cleaning up whether it passes or panics.
async fn with_case(name: &'static str, body: impl AsyncFnOnce(&Case)) {
    let Some(docker) = testing::docker_or_skip(name).await else {
        return;
    };
    testing::ensure_test_images(&docker)
        .await
        .expect("test images");
    let case = Case {
        name,
        rt: DockerRuntime::new(docker.clone()),
        docker,
        stack: format!("t{}", testing::unique_suffix()),
    };
    case.cleanup().await;
    let outcome = AssertUnwindSafe(body(&case)).catch_unwind().await;
    case.cleanup().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Poll `check` every 200 ms until it returns Some, or panic after `limit`.
async fn wait_for<T, F: Future<Output = Option<T>>>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> F,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn secs(s: f64) -> SpecDuration {
    SpecDuration(Duration::from_secs_f64(s))
}

#[tokio::test]
async fn docker_runtime_negotiates_and_runs_a_labelled_task_on_a_stack_network() {
    with_case("runs-task", async |case| {
        let version = case.rt.api_version().await.unwrap();
        let server = case.docker.version().await.unwrap().api_version.unwrap();
        assert_eq!(
            version, server,
            "client negotiated down to the engine's API"
        );

        let req = case.request("web", &busybox(1), |_| {});
        let id = case.run(&req).await;
        let seen = case
            .rt
            .inspect(&id)
            .await
            .unwrap()
            .expect("container exists");
        assert_eq!(seen.state, ContainerState::Running);
        assert_eq!(seen.task, req.task);
        assert_eq!(seen.name, req.task.container_name());
        assert_eq!(seen.image, busybox(1));
        assert_eq!(seen.health, Health::None);
        assert!(
            seen.addresses.contains_key(&case.network().name),
            "{:?}",
            seen.addresses
        );
        assert!(seen.started_at.is_some() && seen.finished_at.is_none());

        let raw = case
            .docker
            .inspect_container(id.as_str(), None)
            .await
            .unwrap();
        let labels = raw.config.unwrap().labels.unwrap();
        assert_eq!(labels["com.docker.stack.namespace"], case.stack);
        assert_eq!(labels["org.reconciler.slot"], "1");
        assert_eq!(labels["org.reconciler.managed"], "1");
        let networks = raw.network_settings.unwrap().networks.unwrap();
        let endpoint = &networks[&case.network().name];
        let aliases = endpoint.aliases.clone().unwrap_or_default();
        assert!(aliases.contains(&"web".to_string()), "{aliases:?}");

        let ours = case.rt.list_networks().await.unwrap();
        let net = ours
            .iter()
            .find(|n| n.name == case.network().name)
            .expect("network listed");
        assert_eq!(net.stack.as_deref(), Some(case.stack.as_str()));
        // Idempotent: a second ensure neither fails nor duplicates.
        case.rt
            .ensure_network(&case.network(), &case.stack)
            .await
            .unwrap();
        let same_name = case
            .rt
            .list_networks()
            .await
            .unwrap()
            .into_iter()
            .filter(|n| n.name == net.name)
            .count();
        assert_eq!(same_name, 1);

        // Creating the same task twice is refused: the existing container must be adopted.
        let again = case.rt.create(&req).await.unwrap_err();
        assert!(matches!(again, RuntimeError::Conflict(_)), "{again}");
    })
    .await;
}

#[tokio::test]
async fn docker_runtime_services_reach_each_other_by_short_and_full_name() {
    with_case("dns", async |case| {
        let web = case.request("web", &busybox(1), |_| {});
        case.run(&web).await;
        let client = case.request("client", &busybox(2), |s| {
            s.container.command = Some(vec!["sleep".into(), "300".into()]);
        });
        let client_id = case.run(&client).await;
        for host in ["web", web.task.service.as_str()] {
            let url = format!("http://{host}/");
            let body = wait_for(&url, Duration::from_secs(15), || async {
                // Not `wget -T`: Debian's busybox-static 1.35 wget segfaults with it (exit
                // 139); case.exec bounds the time instead.
                let out = case.exec(&client_id, &["wget", "-qO-", &url]).await;
                (out.exit_code == 0).then_some(out.stdout)
            })
            .await;
            assert!(body.starts_with("v1 "), "{url} answered {body:?}");
        }
    })
    .await;
}

#[tokio::test]
async fn docker_runtime_mounts_secrets_and_configs_with_owner_and_mode() {
    with_case("secrets", async |case| {
        let secret = FileMount {
            object: format!("{}_api_key", case.stack),
            version: "0123456789abcdef".into(),
            target: "x".into(),
            uid: "1000".into(),
            gid: "1000".into(),
            mode: 0o400,
        };
        let config = FileMount {
            object: format!("{}_conf", case.stack),
            version: "fedcba9876543210".into(),
            target: "/etc/app/app.conf".into(),
            uid: "0".into(),
            gid: "0".into(),
            mode: 0o444,
        };
        let req = case
            .request("api", &busybox(1), |s| {
                s.container.user = Some("1000".into());
                s.container.command = Some(vec!["sleep".into(), "300".into()]);
            })
            .with_secret(secret, SecretBytes::new(b"hunter2\n".to_vec()))
            .with_config(config, b"listen=80\n".to_vec());
        let id = case.run(&req).await;

        let stat = case
            .exec(&id, &["stat", "-c", "%a %u %g", "/run/secrets/x"])
            .await;
        assert_eq!(stat.stdout.trim(), "400 1000 1000", "{stat:?}");
        // Read as the container's own user (1000), not as root.
        let cat = case.exec(&id, &["cat", "/run/secrets/x"]).await;
        assert_eq!(cat.stdout, "hunter2\n");
        let conf = case.exec(&id, &["cat", "/etc/app/app.conf"]).await;
        assert_eq!(conf.stdout, "listen=80\n");
        let write = case
            .exec(&id, &["sh", "-c", "echo x > /run/secrets/x"])
            .await;
        assert_ne!(write.exit_code, 0, "secrets are read-only");

        let dir = case.rt.task_files().task_dir(&req.task.task_id);
        assert!(
            dir.is_dir(),
            "{} exists while the task lives",
            dir.display()
        );
        assert!(
            case.rt.task_files().on_tmpfs(),
            "this host has a tmpfs: {}",
            dir.display()
        );
        case.rt.remove(&id).await.unwrap();
        assert!(
            !dir.exists(),
            "{} is removed with the container",
            dir.display()
        );
        assert_eq!(case.rt.inspect(&id).await.unwrap(), None);
        // Removing again is fine.
        case.rt.remove(&id).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn docker_runtime_stop_waits_the_grace_period_then_kills() {
    with_case("grace", async |case| {
        // sh as PID 1 ignoring TERM: only SIGKILL ends it.
        let req = case.request("stubborn", &busybox(1), |s| {
            s.container.command = Some(vec![
                "sh".into(),
                "-c".into(),
                "trap '' TERM; while true; do sleep 1 & wait $!; done".into(),
            ]);
            s.container.stop_grace_period = Some(secs(2.0));
        });
        let id = case.run(&req).await;
        let start = Instant::now();
        case.rt
            .stop(&id, None, Duration::from_secs(2))
            .await
            .unwrap();
        let took = start.elapsed();
        let seen = case.rt.inspect(&id).await.unwrap().unwrap();
        eprintln!(
            "stop with a 2s grace period took {took:?}, exit {:?}",
            seen.exit_code
        );
        assert!(
            took >= Duration::from_millis(1900) && took < Duration::from_secs(6),
            "{took:?}"
        );
        assert_eq!(seen.state, ContainerState::Exited);
        assert_eq!(seen.exit_code, Some(137), "killed by SIGKILL");
        // Stopping a stopped container is fine.
        case.rt
            .stop(&id, None, Duration::from_secs(2))
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test]
async fn docker_runtime_stop_uses_the_stop_signal() {
    with_case("signal", async |case| {
        let script =
            "trap 'exit 42' USR1; trap 'exit 43' TERM; while true; do sleep 1 & wait $!; done";
        let command = vec!["sh".into(), "-c".into(), script.into()];
        // The spec's stop_signal, applied by the engine's configured StopSignal.
        let configured = case.request("usr1", &busybox(1), |s| {
            s.container.command = Some(command.clone());
            s.container.stop_signal = Some("SIGUSR1".into());
        });
        // An explicit signal at stop time wins over the default.
        let explicit = case.request("plain", &busybox(1), |s| {
            s.container.command = Some(command.clone())
        });
        let a = case.run(&configured).await;
        let b = case.run(&explicit).await;
        tokio::time::sleep(Duration::from_millis(300)).await; // let sh set its traps

        let start = Instant::now();
        case.rt
            .stop(&a, None, Duration::from_secs(10))
            .await
            .unwrap();
        let took = start.elapsed();
        case.rt
            .stop(&b, Some("SIGUSR1"), Duration::from_secs(10))
            .await
            .unwrap();
        let a = case.rt.inspect(&a).await.unwrap().unwrap();
        let b = case.rt.inspect(&b).await.unwrap().unwrap();
        eprintln!("stop by SIGUSR1 took {took:?}");
        assert_eq!(a.exit_code, Some(42), "stop_signal SIGUSR1 was sent");
        assert_eq!(b.exit_code, Some(42), "explicit SIGUSR1 was sent");
        assert!(
            took < Duration::from_secs(3),
            "no grace period wasted: {took:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn docker_runtime_reports_exit_code_of_a_failed_task() {
    with_case("exits", async |case| {
        let req = case.request("job", testing::EXITS, |_| {});
        let id = case.run(&req).await;
        let seen = wait_for("exit", Duration::from_secs(10), || async {
            let c = case.rt.inspect(&id).await.unwrap()?;
            (c.state == ContainerState::Exited).then_some(c)
        })
        .await;
        assert_eq!(seen.exit_code, Some(1));
        let (started, finished) = (seen.started_at.unwrap(), seen.finished_at.unwrap());
        assert!(finished >= started);
        assert_eq!(seen.error, None);
    })
    .await;
}

#[tokio::test]
async fn docker_runtime_reports_health_from_docker() {
    with_case("health", async |case| {
        let check = |test: &[&str]| Healthcheck::Check {
            test: test.iter().map(|s| s.to_string()).collect(),
            interval: Some(secs(0.5)),
            timeout: Some(secs(2.0)),
            retries: Some(1),
            start_period: None,
            start_interval: None,
        };
        let failing = case.request("sick", &busybox(1), |s| {
            s.container.healthcheck = Some(check(&["CMD", "false"]));
        });
        let passing = case.request("well", &busybox(1), |s| {
            s.container.healthcheck = Some(check(&[
                "CMD-SHELL",
                "wget -qO- http://127.0.0.1/ >/dev/null",
            ]));
        });
        let image_check = case.request("imagecheck", testing::UNHEALTHY, |_| {});
        let disabled = case.request("nocheck", testing::UNHEALTHY, |s| {
            s.container.healthcheck = Some(Healthcheck::Disabled);
        });
        let ids = [
            case.run(&failing).await,
            case.run(&passing).await,
            case.run(&image_check).await,
            case.run(&disabled).await,
        ];
        let expected = [
            Health::Unhealthy,
            Health::Healthy,
            Health::Unhealthy,
            Health::None,
        ];
        for (id, want) in ids.iter().zip(expected) {
            let start = Instant::now();
            wait_for(&format!("{want:?}"), Duration::from_secs(20), || async {
                let c = case.rt.inspect(id).await.unwrap()?;
                (c.health == want).then_some(())
            })
            .await;
            eprintln!("{want:?} after {:?}", start.elapsed());
        }
        // Still none after several check intervals of the image's own check.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            case.rt.inspect(&ids[3]).await.unwrap().unwrap().health,
            Health::None
        );
    })
    .await;
}

#[tokio::test]
async fn docker_runtime_missing_image_is_unavailable_with_a_clear_message() {
    with_case("noimage", async |case| {
        let image = "reconciler-test/not-there:404";
        let err = case.rt.ensure_image(image).await.unwrap_err();
        let text = err.to_string();
        eprintln!("{text}");
        assert!(
            matches!(err, RuntimeError::ImageUnavailable { .. }),
            "{err:?}"
        );
        assert!(
            text.starts_with(&format!(
                "image {image} is not present on this node and could not be pulled: "
            )),
            "{text}"
        );
        assert!(!err.is_transient());

        // Create without ensure_image says the same, not a bare 404.
        case.rt
            .ensure_network(&case.network(), &case.stack)
            .await
            .unwrap();
        let req = case.request("ghost", image, |_| {});
        let err = case.rt.create(&req).await.unwrap_err();
        assert!(
            matches!(err, RuntimeError::ImageUnavailable { .. }),
            "{err:?}"
        );
        assert!(!case.rt.task_files().task_dir(&req.task.task_id).exists());
    })
    .await;
}

#[tokio::test]
async fn docker_runtime_a_new_runtime_adopts_containers_by_label() {
    with_case("adopt", async |case| {
        let web = case.request("web", &busybox(1), |_| {});
        let job = case.request("job", testing::EXITS, |_| {});
        let web_id = case.run(&web).await;
        let job_id = case.run(&job).await;

        // A fresh handle, as after an agent restart.
        let restarted = DockerRuntime::connect_local();
        let mine: Vec<_> = restarted
            .list()
            .await
            .unwrap()
            .into_iter()
            .filter(|c| c.task.stack == case.stack)
            .collect();
        assert_eq!(mine.len(), 2, "{mine:?}");
        let found = |id: &ContainerId| mine.iter().find(|c| &c.id == id).expect("adopted");
        assert_eq!(found(&web_id).task, web.task);
        assert_eq!(found(&job_id).task, job.task);

        // An agent of another node on the same engine sees none of them.
        let other = DockerRuntime::connect_local().with_node_filter("node-b");
        assert!(other
            .list()
            .await
            .unwrap()
            .iter()
            .all(|c| c.task.stack != case.stack));
    })
    .await;
}

#[tokio::test]
async fn docker_runtime_engine_down_is_a_typed_error() {
    let rt = DockerRuntime::connect_socket("/nonexistent/reconciler-test/docker.sock");
    let err = rt
        .ensure_image("reconciler-test/busybox:1")
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, RuntimeError::Unavailable(_)), "{err:?}");
    assert!(err.is_transient());
    assert!(matches!(rt.list().await, Err(RuntimeError::Unavailable(_))));
}

#[tokio::test]
async fn docker_runtime_container_options_reach_the_engine() {
    with_case("options", async |case| {
        let req = case.request("opts", &busybox(1), |s| {
            let c = &mut s.container;
            c.entrypoint = Some(vec!["sh".into(), "-c".into()]);
            c.command = Some(vec!["sleep 300".into()]);
            c.env = vec!["GREETING=hello".into()];
            c.working_dir = Some("/tmp".into());
            c.hostname = Some("opts-host".into());
            c.read_only = true;
            c.init = Some(true);
            c.mounts = vec![
                Mount::Tmpfs { target: "/scratch".into(), size: Some(Bytes(1 << 20)), mode: Some(0o1777) },
                Mount::Volume {
                    source: Some(format!("{}_data", case.stack)),
                    target: "/data".into(),
                    read_only: false,
                    nocopy: false,
                },
            ];
            c.ulimits = BTreeMap::from([("nofile".into(), Ulimit { soft: 512, hard: 1024 })]);
            c.sysctls = BTreeMap::from([("net.ipv4.ip_unprivileged_port_start".into(), "0".into())]);
            c.cap_drop = vec!["NET_RAW".into()];
            c.extra_hosts = vec!["db.example:10.1.2.3".into()];
            c.dns_options = vec!["ndots:2".into()];
            s.resources.limit_cpus = Some(NanoCpus(500_000_000));
            s.resources.limit_memory = Some(Bytes(64 << 20));
            s.resources.limit_pids = Some(64);
            s.log_driver = Some(LogDriver {
                name: "json-file".into(),
                options: BTreeMap::from([("max-size".into(), "1m".into())]),
            });
        });
        let id = case.run(&req).await;
        let script = "echo $GREETING $(pwd) $(hostname); echo nofile $(awk '/Max open files/ {print $4, $5}' /proc/1/limits); grep db.example /etc/hosts; \
                      grep ndots /etc/resolv.conf; touch /scratch/ok && echo tmpfs-rw; \
                      touch /data/ok && echo volume-rw; touch /rootfs 2>/dev/null || echo rootfs-ro; \
                      cat /proc/1/comm";
        let out = case.exec(&id, &["sh", "-c", script]).await;
        let text = out.stdout;
        for expected in ["hello /tmp opts-host", "nofile 512 1024", "10.1.2.3", "ndots:2", "tmpfs-rw", "volume-rw", "rootfs-ro", "docker-init"] {
            assert!(text.contains(expected), "{expected:?} not in {text:?}");
        }
        let host = case.docker.inspect_container(id.as_str(), None).await.unwrap().host_config.unwrap();
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.memory, Some(64 << 20));
        assert_eq!(host.pids_limit, Some(64));
        assert_eq!(host.cap_drop, Some(vec!["NET_RAW".to_string()]));
        assert_eq!(host.log_config.unwrap().config.unwrap()["max-size"], "1m");

        // The volume Docker made for the mount carries our labels, so it is found and pruned.
        let volumes = case.rt.list_volumes().await.unwrap();
        let data = volumes.iter().find(|v| v.name == format!("{}_data", case.stack)).expect("labelled volume");
        assert_eq!(data.stack.as_deref(), Some(case.stack.as_str()));
        case.rt.remove(&id).await.unwrap();
        case.rt.remove_volume(&data.name).await.unwrap();
        case.rt.remove_volume(&data.name).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn docker_runtime_binds_host_mode_ports_only() {
    with_case("ports", async |case| {
        let mut req = case.request("web", &busybox(3), |_| {});
        req.endpoint.ports = vec![
            PortConfig {
                target: 80,
                published: None,
                protocol: Protocol::Tcp,
                mode: PublishMode::Host,
                host_ip: Some("127.0.0.1".into()),
            },
            PortConfig {
                target: 8080,
                published: Some(65001),
                protocol: Protocol::Tcp,
                mode: PublishMode::Ingress,
                host_ip: None,
            },
        ];
        let id = case.run(&req).await;
        let settings = case
            .docker
            .inspect_container(id.as_str(), None)
            .await
            .unwrap()
            .network_settings
            .unwrap();
        let ports = settings.ports.unwrap_or_default();
        assert!(
            !ports.contains_key("8080/tcp"),
            "ingress ports are the proxy's job: {ports:?}"
        );
        let binding = ports["80/tcp"]
            .as_ref()
            .and_then(|b| b.first().cloned())
            .expect("host port bound");
        let port: u16 = binding.host_port.unwrap().parse().unwrap();
        let body = wait_for("http on the host port", Duration::from_secs(10), || async {
            http_get(port).await.filter(|b| b.contains("v3 "))
        })
        .await;
        assert!(body.contains("v3 "), "{body}");
    })
    .await;
}

#[tokio::test]
async fn docker_runtime_networks_and_volumes_lifecycle() {
    with_case("objects", async |case| {
        let mut volume = VolumeSpec {
            name: format!("{}_store", case.stack),
            external: false,
            driver: "local".into(),
            driver_opts: BTreeMap::new(),
            labels: case.labels(),
        };
        case.rt.ensure_volume(&volume, &case.stack).await.unwrap();
        case.rt.ensure_volume(&volume, &case.stack).await.unwrap();
        assert!(case
            .rt
            .list_volumes()
            .await
            .unwrap()
            .iter()
            .any(|v| v.name == volume.name));
        case.rt.remove_volume(&volume.name).await.unwrap();
        assert!(!case
            .rt
            .list_volumes()
            .await
            .unwrap()
            .iter()
            .any(|v| v.name == volume.name));
        volume.external = true;
        let err = case
            .rt
            .ensure_volume(&volume, &case.stack)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");

        // A network in use cannot go; once its container is gone it can, twice.
        let id = case.run(&case.request("web", &busybox(1), |_| {})).await;
        let net = case.network().name;
        let err = case.rt.remove_network(&net).await.unwrap_err();
        assert!(matches!(err, RuntimeError::Conflict(_)), "{err:?}");
        case.rt.remove(&id).await.unwrap();
        case.rt.remove_network(&net).await.unwrap();
        case.rt.remove_network(&net).await.unwrap();
        let mut external = case.network();
        external.external = true;
        let err = case
            .rt
            .ensure_network(&external, &case.stack)
            .await
            .unwrap_err();
        assert!(matches!(err, RuntimeError::NotFound(_)), "{err:?}");
    })
    .await;
}

/// A plain HTTP/1.0 GET on 127.0.0.1:port; None on any failure (the server may not be up yet).
async fn http_get(port: u16) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await.ok()?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(2), stream.read_to_string(&mut response))
        .await
        .ok()?
        .ok()?;
    Some(response)
}

/// `list` answers from what the engine's events said, not by inspecting every container each
/// time: a container killed or removed behind the runtime's back, or turning unhealthy, shows
/// in the next listing well before the periodic check (30 s) would have found it.
#[tokio::test]
async fn docker_runtime_list_follows_the_engines_events() {
    with_case("events", async |case| {
        let sick = case.request("sick", &busybox(1), |s| {
            s.container.healthcheck = Some(Healthcheck::Check {
                test: vec!["CMD".into(), "false".into()],
                interval: Some(secs(0.5)),
                timeout: Some(secs(2.0)),
                retries: Some(1),
                start_period: None,
                start_interval: None,
            });
        });
        let victim = case.request("victim", &busybox(1), |_| {});
        let doomed = case.request("doomed", &busybox(1), |_| {});
        let (sick, victim, doomed) = (
            case.run(&sick).await,
            case.run(&victim).await,
            case.run(&doomed).await,
        );
        let find = |all: &[reconciler::agent::ObservedContainer], id: &ContainerId| {
            all.iter().find(|c| c.id == *id).cloned()
        };
        let first = case.rt.list().await.unwrap();
        assert!(find(&first, &victim).is_some_and(|c| c.is_running()));
        let mut events = case.rt.container_events();
        events.mark_unchanged();
        // Behind the runtime's back.
        case.docker
            .kill_container(
                victim.as_str(),
                None::<bollard::query_parameters::KillContainerOptions>,
            )
            .await
            .unwrap();
        case.docker
            .remove_container(
                doomed.as_str(),
                Some(
                    bollard::query_parameters::RemoveContainerOptionsBuilder::default()
                        .force(true)
                        .build(),
                ),
            )
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), events.changed())
            .await
            .expect("an event within 10 s")
            .unwrap();
        // Well within the periodic check's 30 s: only the events can have told it.
        wait_for(
            "the kill, the removal and the health",
            Duration::from_secs(15),
            || async {
                let all = case.rt.list().await.unwrap();
                let killed = find(&all, &victim).is_some_and(|c| c.state == ContainerState::Exited);
                let gone = find(&all, &doomed).is_none();
                let unhealthy = find(&all, &sick).is_some_and(|c| c.health == Health::Unhealthy);
                (killed && gone && unhealthy).then_some(())
            },
        )
        .await;
    })
    .await;
}
