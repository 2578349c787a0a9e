//! The objects of the cluster state, after Swarm's: services with their spec, previous spec and
//! update status; one-shot tasks with a desired state (written by managers) and an observed
//! status (written by agents); the git revision being applied.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::spec::model::{EndpointSpec, ServiceSpec, TaskSpec};

/// Milliseconds since the Unix epoch. Commands carry their own timestamps so that applying a
/// log of commands is deterministic (a replica replaying it computes the same state).
pub type Millis = u64;

pub type TaskId = String;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Service {
    pub spec: ServiceSpec,
    /// The spec before the last change, for rollbacks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_spec: Option<ServiceSpec>,
    /// Bumped on every spec change; tasks record the version they were made from.
    pub version: u64,
    /// The commit that last set the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<UpdateStatus>,
    /// Rolled back by hand (`reconciler service rollback`): drift from git until the next
    /// commit that changes this service.
    #[serde(default)]
    pub manual_rollback: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateState {
    Updating,
    Paused,
    Completed,
    RollbackStarted,
    RollbackPaused,
    RollbackCompleted,
}

impl UpdateState {
    /// As `service ls` and `history` show it.
    pub fn name(self) -> &'static str {
        match self {
            UpdateState::Updating => "updating",
            UpdateState::Paused => "paused",
            UpdateState::Completed => "completed",
            UpdateState::RollbackStarted => "rolling back",
            UpdateState::RollbackPaused => "rollback paused",
            UpdateState::RollbackCompleted => "rolled back",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UpdateStatus {
    pub state: UpdateState,
    pub started_at: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Millis>,
    /// Why it paused or rolled back, in words.
    #[serde(default)]
    pub message: String,
}

/// Task states in Swarm's order; a task's observed state only moves forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    New,
    Pending,
    Assigned,
    Accepted,
    Preparing,
    /// Created and ready to start; waits for desired state running (stop-first updates).
    Ready,
    Starting,
    Running,
    Complete,
    Shutdown,
    Failed,
    Rejected,
    Remove,
    Orphaned,
}

impl TaskState {
    /// The task has stopped for good (it never runs again: tasks are one-shot).
    pub fn is_terminal(self) -> bool {
        self > TaskState::Running
    }

    pub fn name(self) -> &'static str {
        match self {
            TaskState::New => "new",
            TaskState::Pending => "pending",
            TaskState::Assigned => "assigned",
            TaskState::Accepted => "accepted",
            TaskState::Preparing => "preparing",
            TaskState::Ready => "ready",
            TaskState::Starting => "starting",
            TaskState::Running => "running",
            TaskState::Complete => "complete",
            TaskState::Shutdown => "shutdown",
            TaskState::Failed => "failed",
            TaskState::Rejected => "rejected",
            TaskState::Remove => "remove",
            TaskState::Orphaned => "orphaned",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskStatus {
    pub state: TaskState,
    pub timestamp: Millis,
    /// What happened, in words ("started", "task: non-zero exit (1)", "image not present").
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// When the task reached running (healthy, if it has a healthcheck).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_since: Option<Millis>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: TaskId,
    /// Full service name.
    pub service: String,
    /// Replica slot (1-based) for replicated services; None for global ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<u64>,
    pub node: String,
    /// The service version this task was made from.
    pub service_version: u64,
    /// The service's own spec of that version, shared with it (see `State::share_specs`).
    pub spec: std::sync::Arc<TaskSpec>,
    pub endpoint: EndpointSpec,
    /// What the managers want: running, or shutdown/remove to stop it.
    pub desired_state: TaskState,
    /// What the agent last reported.
    pub status: TaskStatus,
    pub created_at: Millis,
    /// When this slot was restarted after failures since its spec last changed (newest last):
    /// what restart_policy.max_attempts and window count. Carried from task to task.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restarts: Vec<Millis>,
}

impl Task {
    /// A task still counts towards its slot while it is meant to run and has not stopped.
    pub fn is_live(&self) -> bool {
        self.desired_state <= TaskState::Running && !self.status.state.is_terminal()
    }
}

/// What the last commits did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RevisionStatus {
    /// The commit whose desired state the cluster applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<AppliedRevision>,
    /// The newest commit that was refused, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<RefusedRevision>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AppliedRevision {
    pub commit: String,
    pub at: Millis,
    /// Stacks this commit could not change (their secrets do not decrypt here), with why:
    /// what runs of them stays as it was.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub blocked: BTreeMap<String, Vec<String>>,
}

/// Where the content of one version of a secret, config or repo file lives: tasks name the
/// version they were made for, and get exactly that content (a rolled-back task gets the old
/// secret), wherever the current spec has moved on to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ContentRef {
    /// A file (or, for `dir: true`, a directory) at `path` under the stacks root in `commit`.
    Git {
        commit: String,
        path: String,
        #[serde(default)]
        encrypted: bool,
        #[serde(default)]
        dir: bool,
    },
    /// Written in the stack file itself (`configs: {x: {content: ...}}`).
    Inline { content: String },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RefusedRevision {
    pub commit: String,
    pub at: Millis,
    pub errors: Vec<String>,
}

/// A node of the cluster: where tasks run. On one node this is the local Docker Engine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub id: String,
    pub hostname: String,
    pub role: NodeRole,
    pub availability: Availability,
    /// Reachable and reporting.
    pub ready: bool,
    pub os: String,
    pub arch: String,
    #[serde(default)]
    pub ip: String,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub engine_labels: std::collections::BTreeMap<String, String>,
    /// Capacity, for reservations.
    pub nano_cpus: u64,
    pub memory_bytes: u64,
    /// The Docker Engine's version, as `node ls` shows it.
    #[serde(default)]
    pub engine_version: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    Manager,
    Worker,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Availability {
    Active,
    Pause,
    Drain,
}

impl Availability {
    /// As `node ls` shows it.
    pub fn name(self) -> &'static str {
        match self {
            Availability::Active => "Active",
            Availability::Pause => "Pause",
            Availability::Drain => "Drain",
        }
    }
}
