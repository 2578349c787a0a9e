//! The dispatcher's messages, as JSON inside the `Dispatcher` gRPC service.

use serde::{Deserialize, Serialize};

use crate::agent::assignment::Change;
use crate::store::{Node, TaskId, TaskStatus};

/// What an agent says when it opens a session: its node as its engine describes it (the
/// role, availability and labels in it count only for a node new to the cluster).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionRequest {
    pub node: Node,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SessionMessage {
    /// The first message of a session.
    Welcome {
        session_id: String,
        /// How often to send a heartbeat.
        heartbeat_ms: u64,
        /// The managers' cluster addresses, to reconnect to when this one goes away.
        managers: Vec<String>,
    },
    Assignments(Box<Change>),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Heartbeat {
    pub session_id: String,
    /// The node is leaving the cluster (`reconciler leave`): it is down from now on.
    #[serde(default)]
    pub leaving: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HeartbeatAnswer {
    /// The period to keep (it may change while the session lasts).
    pub period_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusBatch {
    pub session_id: String,
    pub updates: Vec<StatusUpdate>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusUpdate {
    pub id: TaskId,
    pub status: TaskStatus,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusAnswer {
    /// Reports that changed a task.
    pub applied: usize,
}
