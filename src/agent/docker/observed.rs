//! What the agent knows of its containers, kept current by the engine's event stream instead of
//! inspecting every container on every pass: idle, with hundreds of tasks, neither the agent
//! nor dockerd should spend anything.
//!
//! - The first listing (and the first after the event stream broke) inspects every container.
//! - An event about a container (create, start, die, health_status, destroy...) marks it
//!   dirty; so does every call this runtime makes on it. The next listing inspects only the
//!   dirty ones.
//! - Every [`RESYNC`], one list call (summaries, no inspect) checks the cache against the
//!   engine and inspects only the containers whose state or health disagree, are new, or are
//!   gone: a safety net for an event lost in transit.
//!
//! The stream is asked to replay a little of the past (`since`), so an event between the
//! listing and the subscription is never missed: an event at worst arrives twice, and a second
//! inspect is harmless.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bollard::models::{ContainerSummary, ContainerSummaryStateEnum};
use bollard::query_parameters::EventsOptions;
use futures::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::agent::runtime::{ContainerState, Health, ObservedContainer};

/// How often the cache is checked against a listing, events or not.
pub const RESYNC: Duration = Duration::from_secs(30);
/// How far back the event stream replays when it (re)connects.
const REPLAY: Duration = Duration::from_secs(5);

/// The container events that can change what a task's status depends on. Not `exec_*`: a
/// healthcheck runs an exec every interval, and its result arrives as `health_status`.
const EVENTS: [&str; 11] = [
    "create",
    "start",
    "restart",
    "die",
    "kill",
    "oom",
    "stop",
    "pause",
    "unpause",
    "destroy",
    "health_status",
];

/// The cache and the stream's state, shared by every clone of the runtime.
pub struct Observed {
    cache: Mutex<Cache>,
    /// Bumped on every event that marked something dirty: the agent wakes on it.
    changed: watch::Sender<u64>,
    /// Set once the event stream task runs.
    watching: std::sync::atomic::AtomicBool,
    /// Cancelled when the last handle goes: the stream task ends with it.
    stop: CancellationToken,
}

#[derive(Default)]
struct Cache {
    containers: HashMap<String, ObservedContainer>,
    /// Container ids to inspect before the next answer.
    dirty: HashSet<String>,
    /// Everything must be inspected again (at start, after the stream broke).
    stale: bool,
    /// When the cache was last checked against a listing.
    checked: Option<Instant>,
}

/// What the next listing must do.
pub enum Work {
    /// Inspect every container the listing shows.
    Everything,
    /// List summaries; inspect those that disagree with the cache, and `dirty`.
    Check { dirty: HashSet<String> },
    /// Inspect `dirty` only.
    Dirty { dirty: HashSet<String> },
}

impl Drop for Observed {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Default for Observed {
    fn default() -> Self {
        Observed {
            cache: Mutex::new(Cache {
                stale: true,
                ..Default::default()
            }),
            changed: watch::channel(0).0,
            watching: Default::default(),
            stop: CancellationToken::new(),
        }
    }
}

impl Observed {
    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Wakes whenever an event came in.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// This container changed (or may have): inspect it before the next answer.
    pub fn mark(&self, id: &str) {
        self.cache().dirty.insert(id.to_string());
    }

    /// Take the work the next listing must do.
    pub fn take_work(&self) -> Work {
        let mut c = self.cache();
        let dirty = std::mem::take(&mut c.dirty);
        if c.stale {
            Work::Everything
        } else if c.checked.is_none_or(|t| t.elapsed() >= RESYNC) {
            Work::Check { dirty }
        } else {
            Work::Dirty { dirty }
        }
    }

    /// The listing failed: do the same work again next time.
    pub fn give_back(&self, work: Work) {
        let mut c = self.cache();
        match work {
            Work::Everything => c.stale = true,
            Work::Check { dirty } => {
                c.dirty.extend(dirty);
                c.checked = None;
            }
            Work::Dirty { dirty } => c.dirty.extend(dirty),
        }
    }

    /// The containers whose summary disagrees with what the cache holds (or that it lacks),
    /// and the cached ones the listing no longer shows (gone: dropped here).
    pub fn disagreeing(&self, summaries: &[ContainerSummary]) -> Vec<String> {
        let mut c = self.cache();
        let listed: HashSet<&str> = summaries.iter().filter_map(|s| s.id.as_deref()).collect();
        c.containers.retain(|id, _| listed.contains(id.as_str()));
        summaries
            .iter()
            .filter_map(|s| {
                let id = s.id.as_deref()?;
                let agrees = c.containers.get(id).is_some_and(|known| {
                    summary_state(s) == Some(known.state) && summary_health(s) == known.health
                });
                (!agrees).then(|| id.to_string())
            })
            .collect()
    }

    /// Store what was inspected: `Some` is the container now, `None` means it is gone.
    pub fn update(&self, inspected: Vec<(String, Option<ObservedContainer>)>) {
        let mut c = self.cache();
        for (id, found) in inspected {
            match found {
                Some(o) => c.containers.insert(id, o),
                None => c.containers.remove(&id),
            };
        }
    }

    /// Replace everything with a full listing's result.
    pub fn replace(&self, all: Vec<ObservedContainer>) {
        let mut c = self.cache();
        c.containers = all.into_iter().map(|o| (o.id.0.clone(), o)).collect();
        c.stale = false;
        c.checked = Some(Instant::now());
    }

    /// The listing checked the cache against the engine just now.
    pub fn checked(&self) {
        self.cache().checked = Some(Instant::now());
    }

    /// Does the cache hold a container of this name?
    pub fn has_name(&self, name: &str) -> bool {
        self.cache().containers.values().any(|c| c.name == name)
    }

    /// Every container the cache holds, by name.
    pub fn containers(&self) -> Vec<ObservedContainer> {
        let mut all: Vec<ObservedContainer> = self.cache().containers.values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Start following the engine's events, once per runtime (its clones share it).
    pub fn watch(self: &Arc<Self>, engine: Arc<super::Engine>, labels: Vec<String>) {
        if self
            .watching
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        let (weak, stop) = (Arc::downgrade(self), self.stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = follow(weak, engine, labels) => {}
            }
        });
    }
}

/// Follow the event stream for as long as the cache exists, reconnecting with backoff; each
/// (re)connection makes the next listing inspect everything.
async fn follow(observed: Weak<Observed>, engine: Arc<super::Engine>, labels: Vec<String>) {
    let mut backoff =
        crate::gitops::Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
    loop {
        let docker = match engine.client().await {
            Ok(d) => d.clone(),
            Err(_) => {
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_sub(REPLAY)
            .as_secs();
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            ("label".to_string(), labels.clone()),
            (
                "event".to_string(),
                EVENTS.iter().map(|e| e.to_string()).collect(),
            ),
        ]);
        let mut events = docker.events(Some(EventsOptions {
            since: Some(since.to_string()),
            until: None,
            filters: Some(filters),
        }));
        {
            let Some(o) = observed.upgrade() else { return };
            o.cache().stale = true;
            o.changed.send_modify(|v| *v += 1);
        }
        while let Some(event) = events.next().await {
            let Some(o) = observed.upgrade() else { return };
            match event {
                Ok(e) => {
                    backoff.reset();
                    if let Some(id) = e.actor.and_then(|a| a.id) {
                        o.mark(&id);
                        o.changed.send_modify(|v| *v += 1);
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "the engine's event stream broke; reconnecting");
                    break;
                }
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// A summary's state, as the inspect would say it.
fn summary_state(s: &ContainerSummary) -> Option<ContainerState> {
    Some(match s.state? {
        ContainerSummaryStateEnum::RUNNING => ContainerState::Running,
        ContainerSummaryStateEnum::PAUSED => ContainerState::Paused,
        ContainerSummaryStateEnum::RESTARTING => ContainerState::Restarting,
        ContainerSummaryStateEnum::REMOVING => ContainerState::Removing,
        ContainerSummaryStateEnum::EXITED => ContainerState::Exited,
        ContainerSummaryStateEnum::DEAD => ContainerState::Dead,
        ContainerSummaryStateEnum::CREATED => ContainerState::Created,
        _ => return None,
    })
}

/// A summary's health, from its status text (`Up 2 minutes (healthy)`): engines before API
/// 1.52 give it no field of its own.
fn summary_health(s: &ContainerSummary) -> Health {
    let status = s.status.as_deref().unwrap_or("");
    if status.ends_with("(healthy)") {
        Health::Healthy
    } else if status.ends_with("(unhealthy)") {
        Health::Unhealthy
    } else if status.ends_with("(health: starting)") {
        Health::Starting
    } else {
        Health::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(id: &str, state: ContainerSummaryStateEnum, status: &str) -> ContainerSummary {
        ContainerSummary {
            id: Some(id.into()),
            state: Some(state),
            status: Some(status.into()),
            ..Default::default()
        }
    }

    fn observed(id: &str, state: ContainerState, health: Health) -> ObservedContainer {
        ObservedContainer {
            id: crate::agent::runtime::ContainerId(id.into()),
            name: format!("c-{id}"),
            task: crate::agent::runtime::TaskRef {
                task_id: id.into(),
                service: "s_web".into(),
                stack: "s".into(),
                slot: Some(1),
                node_id: "n".into(),
            },
            image: "img".into(),
            state,
            exit_code: None,
            started_at: None,
            finished_at: None,
            health,
            error: None,
            addresses: Default::default(),
        }
    }

    #[test]
    fn a_check_inspects_only_what_the_listing_contradicts_and_drops_what_is_gone() {
        let o = Observed::default();
        o.replace(vec![
            observed("a", ContainerState::Running, Health::Healthy),
            observed("b", ContainerState::Running, Health::None),
            observed("c", ContainerState::Running, Health::None),
            observed("gone", ContainerState::Running, Health::None),
        ]);
        use ContainerSummaryStateEnum as S;
        let listing = [
            summary("a", S::RUNNING, "Up 2 minutes (healthy)"),
            // Died without our hearing of it.
            summary("b", S::EXITED, "Exited (1) 3 seconds ago"),
            summary("c", S::RUNNING, "Up 5 minutes"),
            summary("new", S::CREATED, "Created"),
        ];
        let mut redo = o.disagreeing(&listing);
        redo.sort();
        assert_eq!(redo, ["b", "new"]);
        let names: Vec<String> = o.containers().into_iter().map(|c| c.task.task_id).collect();
        assert_eq!(
            names,
            ["a", "b", "c"],
            "the container the engine no longer lists is gone"
        );
    }

    #[test]
    fn health_changes_in_the_status_text_count_as_disagreement() {
        let o = Observed::default();
        o.replace(vec![observed(
            "a",
            ContainerState::Running,
            Health::Starting,
        )]);
        let listing = [summary(
            "a",
            ContainerSummaryStateEnum::RUNNING,
            "Up 40 seconds (unhealthy)",
        )];
        assert_eq!(o.disagreeing(&listing), ["a"]);
    }

    #[test]
    fn work_is_everything_at_first_then_dirty_only_and_a_failed_listing_gives_it_back() {
        let o = Observed::default();
        assert!(matches!(o.take_work(), Work::Everything));
        o.give_back(Work::Everything);
        assert!(matches!(o.take_work(), Work::Everything));
        o.replace(vec![]);
        o.mark("x");
        match o.take_work() {
            Work::Dirty { dirty } => {
                assert!(dirty.contains("x"));
                o.give_back(Work::Dirty { dirty });
            }
            _ => panic!("a fresh cache needs only the dirty containers"),
        }
        match o.take_work() {
            Work::Dirty { dirty } => assert!(dirty.contains("x"), "given back"),
            _ => panic!("still fresh"),
        }
    }
}
