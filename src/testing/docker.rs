//! Connecting to the engine in tests, running commands inside containers, cleaning up by label.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;

use crate::agent::labels;
use crate::agent::task_files::{valid_task_id, TaskFiles};

/// Set to `1` (as CI does) to make a missing engine a test failure instead of a skip.
pub const REQUIRE_DOCKER_ENV: &str = "RECONCILER_REQUIRE_DOCKER";

/// True when tests must fail rather than skip without an engine.
pub fn require_docker() -> bool {
    std::env::var(REQUIRE_DOCKER_ENV).is_ok_and(|v| v == "1")
}

/// A version-negotiated client, or `None` after printing "skipping: no Docker" when no engine
/// answers. Panics instead when [`require_docker`] says the engine is required.
pub async fn docker_or_skip(test: &str) -> Option<Docker> {
    match connect().await {
        Ok(docker) => Some(docker),
        Err(e) if require_docker() => {
            panic!("{test}: Docker is required ({REQUIRE_DOCKER_ENV}=1) but not reachable: {e:#}")
        }
        Err(e) => {
            eprintln!("skipping: no Docker ({test}: {e:#})");
            None
        }
    }
}

async fn connect() -> anyhow::Result<Docker> {
    let docker = Docker::connect_with_local_defaults().context("connecting to the local socket")?;
    // bollard speaks API 1.53; older engines (20.10: 1.41) refuse it until negotiated down.
    let docker = docker
        .negotiate_version()
        .await
        .context("negotiating the API version")?;
    docker.ping().await.context("pinging the engine")?;
    Ok(docker)
}

/// The output of a command run in a container.
#[derive(Clone, Debug)]
pub struct ExecOutput {
    pub exit_code: i64,
    pub stdout: String,
    pub stderr: String,
}

/// Run `cmd` in a running container (as `user`, or the container's user) and collect output.
pub async fn exec(
    docker: &Docker,
    container: &str,
    user: Option<&str>,
    cmd: &[&str],
) -> anyhow::Result<ExecOutput> {
    let options = CreateExecOptions {
        cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
        user: user.map(str::to_string),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        ..Default::default()
    };
    let created = docker
        .create_exec(container, options)
        .await
        .with_context(|| format!("creating exec {cmd:?} in {container}"))?;
    let mut out = ExecOutput {
        exit_code: -1,
        stdout: String::new(),
        stderr: String::new(),
    };
    if let StartExecResults::Attached { mut output, .. } =
        docker.start_exec(&created.id, None).await?
    {
        while let Some(chunk) = output.next().await {
            match chunk? {
                bollard::container::LogOutput::StdErr { message } => {
                    out.stderr.push_str(&String::from_utf8_lossy(&message))
                }
                other => out
                    .stdout
                    .push_str(&String::from_utf8_lossy(other.as_ref())),
            }
        }
    }
    out.exit_code = docker
        .inspect_exec(&created.id)
        .await?
        .exit_code
        .context("exec finished without an exit code")?;
    Ok(out)
}

/// Force-remove every container (with its task files), then network, then volume carrying
/// `label` (`key=value`).
/// Returns how many objects were removed. Errors on single objects are printed, not raised, so
/// clean-up goes as far as it can.
pub async fn remove_labelled(docker: &Docker, label: &str) -> anyhow::Result<usize> {
    let filters = std::collections::HashMap::from([("label", vec![label.to_string()])]);
    let mut removed = 0;
    let containers = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await?;
    for container in containers {
        let Some(id) = container.id else { continue };
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        report(
            docker.remove_container(&id, Some(options)).await,
            &id,
            &mut removed,
        );
        // What the runtime's remove would have done: the task's secret and config files go too.
        let task = container.labels.as_ref().and_then(labels::task_ref);
        if let Some(task) = task.filter(|t| valid_task_id(&t.task_id)) {
            if let Err(e) = TaskFiles::choose(&task.node_id).remove(&task.task_id) {
                eprintln!("clean-up: task files of {}: {e}", task.task_id);
            }
        }
    }
    let networks = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await?;
    for id in networks.into_iter().filter_map(|n| n.id) {
        report(docker.remove_network(&id).await, &id, &mut removed);
    }
    let volumes = docker
        .list_volumes(Some(
            ListVolumesOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await?;
    for volume in volumes.volumes.unwrap_or_default() {
        let options = RemoveVolumeOptionsBuilder::default().force(true).build();
        report(
            docker.remove_volume(&volume.name, Some(options)).await,
            &volume.name,
            &mut removed,
        );
    }
    Ok(removed)
}

fn report(result: Result<(), bollard::errors::Error>, what: &str, removed: &mut usize) {
    match result {
        Ok(()) => *removed += 1,
        Err(e) => eprintln!("clean-up: could not remove {what}: {e}"),
    }
}

/// A short suffix unique to this process and call, for names that parallel tests must not share.
pub fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:x}{:x}{n}", std::process::id(), nanos >> 12)
}
