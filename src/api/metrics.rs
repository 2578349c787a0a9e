//! `/metrics` for Prometheus, through the prometheus-client crate, after Flux's and Argo CD's
//! conventions: counters of commits and rollouts by the result they reached, of git fetches
//! and webhook requests by result; histograms of commit-to-converged and of reconcile passes
//! (the orchestrator's on the leader, the agent's on every node); gauges of what the store
//! holds now (tasks by state, replicas desired and running, each service's update state, nodes
//! by status) and of Raft (term, leader, log and applied index).
//!
//! Counters and histograms live as long as the process ([`Metrics`]); the gauges are read
//! from the state at each scrape. Commits and rollouts are counted from the history's events
//! newer than this process, each once, so every manager counts what the cluster did while it
//! ran, leader or not.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::State as AxState;
use axum::response::IntoResponse;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use super::{read, status_view, Cluster, Ctx};
use crate::store::history::{EventKind, History, Outcome};
use crate::store::{Millis, TaskState};

/// The process's counters and histograms.
#[derive(Debug)]
pub struct Metrics {
    /// Events before this (the leader's clock, in the history) were counted by someone else.
    since: Millis,
    commits: Family<ResultLabel, Counter>,
    rollouts: Family<ResultLabel, Counter>,
    commit_to_converged: Histogram,
    reconcile: Histogram,
    agent_pass: Histogram,
    /// Events of each record (commit, received at) already counted.
    counted: Mutex<BTreeMap<(String, Millis), usize>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

const COMMIT_RESULTS: [&str; 5] = [
    "converged",
    "rolled_back",
    "paused",
    "refused",
    "superseded",
];
const ROLLOUT_RESULTS: [&str; 3] = ["completed", "paused", "rolled_back"];
const WEBHOOK_RESULTS: [&str; 4] = ["accepted", "ignored", "pong", "refused"];

fn label(result: &str) -> ResultLabel {
    ResultLabel {
        result: result.into(),
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabel {
    target: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabel {
    service: String,
    stack: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpdateLabel {
    service: String,
    stack: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabel {
    status: String,
    availability: String,
}

/// What Raft says of this manager, for the gauges.
#[derive(Clone, Debug, Default)]
pub struct RaftNumbers {
    pub term: u64,
    pub leader: bool,
    pub last_log_index: u64,
    pub applied_index: u64,
}

impl Metrics {
    pub fn new(since: Millis) -> Self {
        let m = Metrics {
            since,
            commits: Family::default(),
            rollouts: Family::default(),
            // 0.5 s to about 68 minutes.
            commit_to_converged: Histogram::new(exponential_buckets(0.5, 2.0, 14)),
            // 0.5 ms to about 16 s.
            reconcile: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            agent_pass: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            counted: Mutex::new(BTreeMap::new()),
        };
        // Every result from the start, at zero, so that rate() and increase() see the first.
        for result in COMMIT_RESULTS {
            m.commits.get_or_create(&label(result)).inc_by(0);
        }
        for result in ROLLOUT_RESULTS {
            m.rollouts.get_or_create(&label(result)).inc_by(0);
        }
        m
    }

    /// An orchestrator pass on the leader took this long.
    pub fn observe_reconcile(&self, took: Duration) {
        self.reconcile.observe(took.as_secs_f64());
    }

    /// An agent pass (one step over the node's tasks) took this long.
    pub fn observe_agent_pass(&self, took: Duration) {
        self.agent_pass.observe(took.as_secs_f64());
    }

    /// Count the history's events not counted yet (and newer than this process).
    fn take_history(&self, history: &History) {
        let mut counted = self.counted.lock().expect("lock");
        let inc = |family: &Family<ResultLabel, Counter>, result: &str| {
            family.get_or_create(&label(result)).inc();
        };
        for r in history.records() {
            let done = counted
                .entry((r.commit.clone(), r.received_at))
                .or_insert(0);
            *done = (*done).min(r.events.len());
            let fresh = r.events.iter().enumerate().skip(*done);
            // A commit enters an outcome once: its first rollback or pause counts.
            let mut rolled_back = r.events[..*done]
                .iter()
                .any(|e| e.kind == EventKind::RollbackStarted);
            let mut paused = r.events[..*done]
                .iter()
                .any(|e| e.kind == EventKind::RolloutPaused);
            for (_, e) in fresh.filter(|(_, e)| e.at >= self.since) {
                match e.kind {
                    EventKind::Refused => inc(&self.commits, "refused"),
                    EventKind::Superseded => inc(&self.commits, "superseded"),
                    EventKind::RollbackStarted if !rolled_back => {
                        rolled_back = true;
                        inc(&self.commits, "rolled_back");
                    }
                    EventKind::RolloutPaused => {
                        inc(&self.rollouts, "paused");
                        if !paused {
                            paused = true;
                            inc(&self.commits, "paused");
                        }
                    }
                    EventKind::RolloutCompleted => inc(&self.rollouts, "completed"),
                    EventKind::RolledBack => inc(&self.rollouts, "rolled_back"),
                    EventKind::Converged if r.outcome == Outcome::Converged => {
                        inc(&self.commits, "converged");
                        if let Some(took) = r.took() {
                            self.commit_to_converged.observe(took as f64 / 1000.0);
                        }
                    }
                    _ => {}
                }
            }
            *done = r.events.len();
        }
        // Commits that left the history are not coming back.
        counted.retain(|(c, at), _| {
            history
                .records()
                .any(|r| &r.commit == c && r.received_at == *at)
        });
    }
}

pub async fn metrics(AxState(cluster): Ctx) -> impl IntoResponse {
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        render(&*cluster),
    )
}

/// The OpenMetrics text of everything above.
pub fn render(cluster: &dyn Cluster) -> String {
    let m = cluster.metrics();
    read(cluster, |s| m.take_history(&s.history));
    let mut reg = Registry::with_prefix("reconciler");

    reg.register(
        "commits",
        "Commits by the outcome they reached: converged, rolled_back, paused, refused, superseded",
        m.commits.clone(),
    );
    reg.register(
        "rollouts",
        "Service rollouts by how they ended: completed, paused, rolled_back",
        m.rollouts.clone(),
    );
    reg.register_with_unit(
        "commit_to_converged",
        "From a commit applied to every service running it",
        Unit::Seconds,
        m.commit_to_converged.clone(),
    );
    reg.register_with_unit(
        "reconcile_duration",
        "One orchestrator pass over the store (on the leader)",
        Unit::Seconds,
        m.reconcile.clone(),
    );
    reg.register_with_unit(
        "agent_pass_duration",
        "One agent pass over this node's tasks and containers",
        Unit::Seconds,
        m.agent_pass.clone(),
    );

    let git = cluster.git();
    let number = |key: &str| git.get(key).and_then(|v| v.as_u64()).unwrap_or(0);
    let (fetches, failed) = (number("fetches"), number("fetch_failures_total"));
    let fetched: Family<ResultLabel, Counter> = Family::default();
    for (result, n) in [("ok", fetches.saturating_sub(failed)), ("error", failed)] {
        fetched.get_or_create(&label(result)).inc_by(n);
    }
    reg.register(
        "git_fetches",
        "Fetches of the stacks repo by result",
        fetched,
    );
    let webhooks: Family<ResultLabel, Counter> = Family::default();
    for result in WEBHOOK_RESULTS {
        webhooks.get_or_create(&label(result)).inc_by(0);
    }
    if let Some(counts) = git.get("webhooks").and_then(|w| w.as_object()) {
        for (result, n) in counts {
            webhooks
                .get_or_create(&label(result))
                .inc_by(n.as_u64().unwrap_or(0));
        }
    }
    reg.register(
        "webhook_requests",
        "Webhook requests by result: accepted, ignored, pong, refused",
        webhooks,
    );

    let view = status_view(cluster);
    let notified: Family<TargetLabel, Counter> = Family::default();
    let waiting: Family<TargetLabel, Gauge> = Family::default();
    for (name, t) in &view.node.notifications {
        for (result, n) in [
            ("delivered", t.delivered),
            ("failed", t.failures),
            ("lost", t.lost),
        ] {
            notified
                .get_or_create(&TargetLabel {
                    target: name.clone(),
                    result: result.into(),
                })
                .inc_by(n);
        }
        waiting
            .get_or_create(&TargetLabel {
                target: name.clone(),
                result: "pending".into(),
            })
            .set(t.pending as i64);
    }
    reg.register(
        "notifications",
        "Notification attempts by target and result (delivered, failed, lost), on the leader",
        notified,
    );
    reg.register(
        "notifications_pending",
        "Events waiting for each notification target, on the leader",
        waiting,
    );
    let tasks: Family<StateLabel, Gauge> = Family::default();
    read(cluster, |s| {
        let mut by_state: BTreeMap<TaskState, i64> = BTreeMap::new();
        for t in s.tasks.values() {
            *by_state.entry(t.status.state).or_default() += 1;
        }
        for (state, n) in by_state {
            tasks
                .get_or_create(&StateLabel {
                    state: state.name().into(),
                })
                .set(n);
        }
    });
    reg.register("tasks", "Tasks in the store by observed state", tasks);

    let desired: Family<ServiceLabel, Gauge> = Family::default();
    let running: Family<ServiceLabel, Gauge> = Family::default();
    let update: Family<UpdateLabel, Gauge> = Family::default();
    for s in &view.services {
        let label = ServiceLabel {
            service: s.name.clone(),
            stack: s.stack.clone(),
        };
        running.get_or_create(&label).set(s.running as i64);
        if let Some(d) = s.desired {
            desired.get_or_create(&label).set(d as i64);
        }
        if let Some(state) = s.update_state {
            update
                .get_or_create(&UpdateLabel {
                    service: s.name.clone(),
                    stack: s.stack.clone(),
                    state: state.name().replace(' ', "_"),
                })
                .set(1);
        }
    }
    reg.register(
        "service_replicas_desired",
        "Desired tasks per replicated service",
        desired,
    );
    reg.register(
        "service_replicas_running",
        "Running tasks per service",
        running,
    );
    reg.register(
        "service_update_state",
        "1 for each service's update state (updating, paused, completed, rolling_back, rollback_paused, rolled_back)",
        update,
    );

    let nodes: Family<NodeLabel, Gauge> = Family::default();
    read(cluster, |s| {
        for n in s.nodes.values() {
            nodes
                .get_or_create(&NodeLabel {
                    status: if n.ready { "ready" } else { "down" }.into(),
                    availability: n.availability.name().to_lowercase(),
                })
                .inc();
        }
    });
    reg.register("nodes", "Nodes by status and availability", nodes);

    let flag = |on: bool| {
        let g: Gauge = Gauge::default();
        g.set(i64::from(on));
        g
    };
    reg.register(
        "converged",
        "1 when every service runs its desired spec",
        flag(view.converged),
    );
    reg.register(
        "engine_up",
        "1 while this node's Docker Engine answers",
        flag(view.node.engine_error.is_none()),
    );
    let refused = match (&view.revision.refused, &view.revision.applied) {
        (Some(r), Some(a)) => r.at > a.at,
        (Some(_), None) => true,
        _ => false,
    };
    reg.register(
        "revision_refused",
        "1 while the newest commit is refused",
        flag(refused),
    );

    if let Some(raft) = cluster.raft() {
        let value = |v: u64| {
            let g: Gauge = Gauge::default();
            g.set(v as i64);
            g
        };
        reg.register("raft_term", "This manager's Raft term", value(raft.term));
        reg.register(
            "raft_leader",
            "1 on the manager that leads",
            flag(raft.leader),
        );
        reg.register(
            "raft_last_log_index",
            "The index of the last entry in this manager's Raft log",
            value(raft.last_log_index),
        );
        reg.register(
            "raft_applied_index",
            "The index of the last entry this manager applied to its store",
            value(raft.applied_index),
        );
    }

    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &reg) {
        tracing::warn!(error = %e, "encoding /metrics failed");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::history::Received;

    fn refused(h: &mut History, commit: &str, at: Millis) {
        h.refused(
            Received {
                commit: commit.into(),
                at,
                ..Default::default()
            },
            vec!["bad".into()],
        );
    }

    #[test]
    fn history_events_count_once_and_only_those_since_the_process_started() {
        let mut h = History::default();
        refused(&mut h, "before0", 500);
        let m = Metrics::new(1_000);
        refused(&mut h, "after01", 1_500);
        m.take_history(&h);
        m.take_history(&h);
        let count = |m: &Metrics, r: &str| m.commits.get_or_create(&label(r)).get();
        assert_eq!(count(&m, "refused"), 1);
        refused(&mut h, "after02", 2_000);
        m.take_history(&h);
        assert_eq!(count(&m, "refused"), 2);
        assert_eq!(count(&m, "converged"), 0, "listed at zero from the start");
    }
}
