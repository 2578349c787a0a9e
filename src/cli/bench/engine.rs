//! What the engine shows, the same for both systems: which containers of a stack run which
//! image, the engine's events as a timeline, and the CPU a process spends.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use bollard::query_parameters::{EventsOptions, ListContainersOptionsBuilder};
use bollard::Docker;
use futures::StreamExt;

/// Both systems label their containers with the stack's name.
pub const STACK_LABEL: &str = "com.docker.stack.namespace";

pub async fn connect() -> anyhow::Result<Docker> {
    Ok(Docker::connect_with_local_defaults()?
        .negotiate_version()
        .await?)
}

/// Running containers of the stack, by image.
pub async fn running_by_image(
    docker: &Docker,
    stack: &str,
) -> anyhow::Result<BTreeMap<String, usize>> {
    let filters = HashMap::from([
        ("label", vec![format!("{STACK_LABEL}={stack}")]),
        ("status", vec!["running".to_string()]),
    ]);
    let options = ListContainersOptionsBuilder::default()
        .filters(&filters)
        .build();
    let mut out = BTreeMap::new();
    for c in docker.list_containers(Some(options)).await? {
        // Swarm may pin the digest after the tag; the tag is what both were given.
        let image = c.image.unwrap_or_default();
        let image = image.split('@').next().unwrap_or("").to_string();
        *out.entry(image).or_default() += 1;
    }
    Ok(out)
}

/// Wait until exactly `n` containers of the stack run `image` and none runs anything else:
/// what a user sees as converged. Returns when that was first seen.
pub async fn wait_converged(
    docker: &Docker,
    stack: &str,
    image: &str,
    n: usize,
    timeout: Duration,
) -> anyhow::Result<Instant> {
    let start = Instant::now();
    loop {
        let running = running_by_image(docker, stack).await?;
        let others: usize = running
            .iter()
            .filter(|(i, _)| *i != image)
            .map(|(_, n)| n)
            .sum();
        if running.get(image).copied().unwrap_or(0) == n && others == 0 {
            return Ok(Instant::now());
        }
        if start.elapsed() > timeout {
            bail!("not converged within {timeout:?}: running {running:?}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Wait until no container and no network of the stack is left: what a user sees as removed.
pub async fn wait_until_gone(
    docker: &Docker,
    stack: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let label = HashMap::from([("label", vec![format!("{STACK_LABEL}={stack}")])]);
    loop {
        let containers = docker
            .list_containers(Some(
                ListContainersOptionsBuilder::default()
                    .all(true)
                    .filters(&label)
                    .build(),
            ))
            .await?;
        let networks = docker
            .list_networks(Some(
                bollard::query_parameters::ListNetworksOptionsBuilder::default()
                    .filters(&label)
                    .build(),
            ))
            .await?;
        let running = containers
            .iter()
            .filter(|c| c.state == Some(bollard::models::ContainerSummaryStateEnum::RUNNING))
            .count();
        // Swarm keeps a few stopped tasks as history; what counts is that none runs.
        if running == 0 && networks.is_empty() {
            return Ok(());
        }
        if start.elapsed() > timeout {
            bail!(
                "{stack} still has {running} running containers and {} networks after {timeout:?}",
                networks.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One engine event about a container of the stack.
#[derive(Clone, Debug)]
pub struct Event {
    pub at: Instant,
    pub action: String,
    pub container: String,
    pub image: String,
    /// The replica slot (ours: a label; swarm's: in the task name `stack_web.3.xyz`).
    pub slot: Option<u64>,
}

/// The engine's events about a stack's containers, recorded as they arrive.
pub struct Timeline {
    events: Arc<Mutex<Vec<Event>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Timeline {
    /// Start recording (and wait until the subscription is in place).
    pub async fn record(docker: &Docker, stack: &str) -> Self {
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            ("label".to_string(), vec![format!("{STACK_LABEL}={stack}")]),
        ]);
        let mut stream = docker.events(Some(EventsOptions {
            since: None,
            until: None,
            filters: Some(filters),
        }));
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let task = tokio::spawn(async move {
            while let Some(Ok(e)) = stream.next().await {
                let at = Instant::now();
                let actor = e.actor.unwrap_or_default();
                let attrs = actor.attributes.unwrap_or_default();
                let slot = attrs
                    .get("org.reconciler.slot")
                    .and_then(|s| s.parse().ok())
                    .or_else(|| {
                        attrs
                            .get("com.docker.swarm.task.name")
                            .and_then(|n| n.split('.').nth(1))
                            .and_then(|s| s.parse().ok())
                    });
                let image = attrs.get("image").cloned().unwrap_or_default();
                sink.lock().expect("lock").push(Event {
                    at,
                    action: e.action.unwrap_or_default(),
                    container: actor.id.unwrap_or_default(),
                    image: image.split('@').next().unwrap_or("").to_string(),
                    slot,
                });
            }
        });
        // The stream connects on its first poll, in the task: give it a moment to be in place.
        tokio::time::sleep(Duration::from_millis(300)).await;
        Timeline { events, task }
    }

    /// The events seen so far.
    pub fn snapshot(&self) -> Vec<Event> {
        self.events.lock().expect("lock").clone()
    }

    /// Stop recording.
    pub fn finish(self) {
        self.task.abort();
    }
}

/// Seconds of CPU (user + system) a process has used, from /proc.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name is in parentheses and may hold spaces: fields count from after it.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(i)
            .ok_or_else(|| anyhow::anyhow!("/proc/{pid}/stat is short"))?
            .parse::<f64>()?)
    };
    // USER_HZ is 100 on every Linux ABI.
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

/// Resident memory of a process, in bytes.
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for {pid}"))?;
    Ok(kb * 1024)
}

/// The pid of the process whose command name is `name` (dockerd, containerd).
pub fn pid_of(name: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.find_map(|e| {
        let e = e.ok()?;
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        (comm.trim() == name).then_some(pid)
    })
}

/// The median of some durations (zero for none).
pub fn median(mut d: Vec<Duration>) -> Duration {
    if d.is_empty() {
        return Duration::ZERO;
    }
    d.sort();
    d[d.len() / 2]
}
