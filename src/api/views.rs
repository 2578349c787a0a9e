//! What the API returns, shared by the server and the CLI client (serde both ways).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::store::{Millis, RevisionStatus, State, TaskState, UpdateState};

/// What a node knows about itself that is not in the store: its engine, its ports, its loops.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NodeReport {
    /// The node's id.
    #[serde(rename = "node")]
    pub id: String,
    /// Set while the Docker Engine cannot be reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_error: Option<String>,
    pub ingress_backend: String,
    pub uptime_seconds: u64,
    /// Published ports that cannot be bound, with why.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        with = "port_keys"
    )]
    pub port_failures: BTreeMap<u16, String>,
    /// Containers with this project's labels whose node is not in the cluster (a data dir
    /// deleted, a node gone), by node id: nothing adopts or removes them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stale_containers: BTreeMap<String, Vec<String>>,
    /// Loops that panicked and were restarted, with the last panic.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub loop_failures: BTreeMap<String, String>,
    /// Set while this node's writes do not commit (no quorum of managers, no leader).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_error: Option<String>,
    /// The notification targets of `reconciler.toml`, as this node's sender found them (the
    /// leader's sends; the others show none).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub notifications: BTreeMap<String, crate::notify::TargetStatus>,
    /// `up --observe-only`: commits are planned and recorded, none is applied.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub observe_only: bool,
}

/// A map keyed by port, its keys written as JSON object keys are: text. (Flattened into
/// [`StatusView`], serde would otherwise not read numbers back from those keys.)
mod port_keys {
    use std::collections::BTreeMap;

    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(map: &BTreeMap<u16, String>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(map.iter().map(|(k, v)| (k.to_string(), v)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<u16, String>, D::Error> {
        BTreeMap::<String, String>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| Ok((k.parse().map_err(D::Error::custom)?, v)))
            .collect()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusView {
    /// The node answering, and what it knows of itself (engine, ports, loops).
    #[serde(flatten)]
    pub node: NodeReport,
    pub revision: RevisionStatus,
    pub git: serde_json::Value,
    pub stacks: Vec<StackView>,
    pub services: Vec<ServiceView>,
    /// True when every service runs its desired replicas with its current spec and no update is
    /// in progress.
    pub converged: bool,
    /// The cluster's nodes by state.
    #[serde(default)]
    pub nodes: NodeCounts,
}

/// How many nodes are in each state, as `status` and the page show them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCounts {
    pub ready: u64,
    pub down: u64,
    pub managers: u64,
    pub workers: u64,
    /// Ready nodes that take no new tasks (pause) or are emptied (drain).
    pub paused: u64,
    pub drained: u64,
}

impl NodeCounts {
    pub fn of(state: &State) -> NodeCounts {
        let mut c = NodeCounts::default();
        for n in state.nodes.values() {
            if n.ready {
                c.ready += 1;
            } else {
                c.down += 1;
            }
            match n.role {
                crate::store::NodeRole::Manager => c.managers += 1,
                crate::store::NodeRole::Worker => c.workers += 1,
            }
            match n.availability {
                crate::store::Availability::Pause => c.paused += 1,
                crate::store::Availability::Drain => c.drained += 1,
                crate::store::Availability::Active => {}
            }
        }
        c
    }
}

impl std::fmt::Display for NodeCounts {
    /// "3 ready, 1 down (1 manager, 3 workers; 1 draining)".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plural = |n: u64, one: &str| {
            if n == 1 {
                format!("{n} {one}")
            } else {
                format!("{n} {one}s")
            }
        };
        write!(
            f,
            "{} ready, {} down ({}, {}",
            self.ready,
            self.down,
            plural(self.managers, "manager"),
            plural(self.workers, "worker")
        )?;
        if self.paused > 0 {
            write!(f, "; {} paused", self.paused)?;
        }
        if self.drained > 0 {
            write!(f, "; {} draining", self.drained)?;
        }
        f.write_str(")")
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StackView {
    pub name: String,
    pub services: usize,
    pub networks: usize,
    pub secrets: usize,
    pub configs: usize,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ServiceView {
    pub name: String,
    pub stack: String,
    pub mode: String,
    pub running: u64,
    /// None for global services (one per eligible node).
    pub desired: Option<u64>,
    pub image: String,
    pub ports: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_state: Option<UpdateState>,
    #[serde(default)]
    pub update_message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Rolled back by hand: differs from git until the next commit that changes it.
    pub drift: bool,
    /// Tasks running the current spec.
    pub up_to_date: u64,
    /// The newest task error, if the service is not converged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// For global services: the nodes that should run a task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eligible_nodes: Option<u64>,
    /// A job: its tasks of the current spec that completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed: Option<u64>,
    /// A replicated job: how many of its tasks run at a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u64>,
    /// The service's labels (`deploy.labels`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskView {
    pub id: String,
    pub name: String,
    pub service: String,
    pub slot: Option<u64>,
    /// The node's ID ("" while the task waits for one).
    pub node: String,
    /// The node's hostname, as `service ps` shows it.
    #[serde(default)]
    pub node_hostname: String,
    pub image: String,
    pub desired_state: TaskState,
    pub state: TaskState,
    pub since: Millis,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    pub current: bool,
}

pub fn services(state: &State) -> Vec<ServiceView> {
    state
        .services
        .values()
        .map(|svc| {
            let tasks: Vec<_> = state.tasks_of(&svc.spec.name).collect();
            let running = tasks
                .iter()
                .filter(|t| {
                    t.status.state == TaskState::Running && t.desired_state == TaskState::Running
                })
                .count() as u64;
            let up_to_date = tasks
                .iter()
                .filter(|t| {
                    t.status.state == TaskState::Running
                        && t.desired_state == TaskState::Running
                        && !crate::orchestrator::is_dirty(t, svc)
                })
                .count() as u64;
            let mode = svc.spec.mode.name();
            let (desired, max_concurrent) = match svc.spec.mode {
                crate::spec::model::Mode::Replicated { replicas } => (Some(replicas), None),
                crate::spec::model::Mode::ReplicatedJob {
                    total,
                    max_concurrent,
                } => (Some(total), Some(max_concurrent)),
                crate::spec::model::Mode::Global | crate::spec::model::Mode::GlobalJob => {
                    (None, None)
                }
            };
            // A job's tasks of its current spec that ran to completion.
            let completed = svc.spec.mode.is_job().then(|| {
                tasks
                    .iter()
                    .filter(|t| {
                        t.status.state == TaskState::Complete
                            && !crate::orchestrator::is_dirty(t, svc)
                    })
                    .count() as u64
            });
            // A global service wants one task per node that is up and satisfies its constraints.
            let eligible_nodes = crate::orchestrator::global_nodes(state, &svc.spec).count() as u64;
            let last_error = tasks
                .iter()
                .filter(|t| t.status.error.is_some())
                .max_by_key(|t| t.status.timestamp)
                .and_then(|t| t.status.error.clone());
            ServiceView {
                labels: svc.spec.labels.clone(),
                name: svc.spec.name.clone(),
                stack: svc.spec.stack.clone(),
                mode: mode.into(),
                running,
                desired,
                completed,
                max_concurrent,
                image: svc.spec.task.container.image.clone(),
                ports: svc
                    .spec
                    .endpoint
                    .ports
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                update_state: svc.update.as_ref().map(|u| u.state),
                update_message: svc
                    .update
                    .as_ref()
                    .map(|u| u.message.clone())
                    .unwrap_or_default(),
                revision: svc.revision.clone(),
                drift: svc.manual_rollback,
                up_to_date,
                last_error: (completed.is_none() && up_to_date < desired.unwrap_or(eligible_nodes))
                    .then_some(last_error)
                    .flatten(),
                eligible_nodes: desired.is_none().then_some(eligible_nodes),
            }
        })
        .collect()
}

pub fn stacks(state: &State) -> Vec<StackView> {
    let mut names: Vec<&str> = state
        .services
        .values()
        .map(|s| s.spec.stack.as_str())
        .collect();
    names.extend(state.networks.values().map(|o| o.stack.as_str()));
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|n| StackView {
            name: n.to_string(),
            services: state
                .services
                .values()
                .filter(|s| s.spec.stack == n)
                .count(),
            networks: state.networks.values().filter(|o| o.stack == n).count(),
            secrets: state.secrets.values().filter(|o| o.stack == n).count(),
            configs: state.configs.values().filter(|o| o.stack == n).count(),
        })
        .collect()
}

pub fn tasks(state: &State, service: Option<&str>) -> Vec<TaskView> {
    let mut out: Vec<TaskView> = state
        .tasks
        .values()
        .filter(|t| service.is_none_or(|s| t.service == s))
        .map(|t| {
            let current = state
                .services
                .get(&t.service)
                .is_some_and(|svc| !crate::orchestrator::is_dirty(t, svc));
            let slot = t
                .slot
                .map(|s| s.to_string())
                .unwrap_or_else(|| t.node.clone());
            TaskView {
                id: t.id.clone(),
                name: format!("{}.{slot}", t.service),
                service: t.service.clone(),
                slot: t.slot,
                node: t.node.clone(),
                node_hostname: state
                    .nodes
                    .get(&t.node)
                    .map(|n| n.hostname.clone())
                    .unwrap_or_default(),
                image: t.spec.container.image.clone(),
                desired_state: t.desired_state,
                state: t.status.state,
                since: t.status.timestamp,
                message: t.status.message.clone(),
                error: t.status.error.clone(),
                container_id: t.status.container_id.clone(),
                current,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        (&a.service, a.slot, std::cmp::Reverse(a.since)).cmp(&(
            &b.service,
            b.slot,
            std::cmp::Reverse(b.since),
        ))
    });
    out
}

/// Converged: every replicated service runs its replicas on the current spec, global services
/// have no dirty or missing task, and no update is rolling.
pub fn converged(services: &[ServiceView]) -> bool {
    services.iter().all(|s| {
        let rolling = matches!(
            s.update_state,
            Some(UpdateState::Updating | UpdateState::RollbackStarted)
        );
        let enough = match (s.completed, s.desired) {
            // A job is done when every completion it wants has happened.
            (Some(c), Some(d)) => c >= d,
            (Some(c), None) => c >= s.eligible_nodes.unwrap_or(c),
            (None, Some(d)) => s.up_to_date == d && s.running == d,
            (None, None) => {
                s.up_to_date == s.running && s.running == s.eligible_nodes.unwrap_or(s.running)
            }
        };
        !rolling && enough
    })
}
