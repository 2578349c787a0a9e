//! The store replicated through Raft (openraft 0.9, storage v2): the entries are the store's
//! own [`Command`]s, one entry per proposal (an orchestrator step, not a command), applied by
//! every manager to its [`State`] exactly as the single-node store applies them: each checked
//! against the state the ones before it left, a refused one answered and skipped alike
//! everywhere.
//!
//! - [`LogStore`]: votes and entries in redb, made durable (fsync) before openraft is told;
//! - [`StateMachine`]: the state in memory; its snapshots, with the last applied log id and
//!   the membership, in redb, so a restart replays only what came after.
//!

mod log_store;
pub mod network;
mod state_machine;

pub use log_store::LogStore;
pub use state_machine::StateMachine;

use super::config::ClusterChange;
use crate::store::{ApplyError, Command};

/// One Raft entry's payload.
#[derive(Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Proposal {
    /// Store commands, applied in order: one orchestrator step, one agent report, one action.
    Commands(Vec<Command>),
    /// A change to the cluster's own settings and trust (root CA, join tokens), kept apart
    /// from the store's state.
    Cluster(ClusterChange),
    /// The whole state and settings of a cluster this one was forced out of
    /// (`init --force-new-cluster`): the new log's first entry after its membership.
    Restore(Box<Restored>),
    /// A piece of a proposal too big for one entry (a revision of a large repository), as
    /// its JSON text: pieces of one `id` are joined in log order, and the `last` one applies
    /// the whole. Every entry stays small, so that each AppendEntries is answered within
    /// the heartbeat interval openraft allows it. A new leader's first (blank) entry drops
    /// the pieces of proposals a deposed leader left unfinished.
    Part { id: u64, text: String, last: bool },
}

impl std::fmt::Debug for Proposal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Proposal::Commands(c) => f.debug_tuple("Commands").field(c).finish(),
            Proposal::Cluster(c) => f.debug_tuple("Cluster").field(c).finish(),
            Proposal::Restore(r) => f.debug_tuple("Restore").field(r).finish(),
            // A piece is JSON text of any proposal, the cluster's secrets included: its size
            // only.
            Proposal::Part { id, text, last } => f
                .debug_struct("Part")
                .field("id", id)
                .field("bytes", &text.len())
                .field("last", last)
                .finish(),
        }
    }
}

/// Proposals whose JSON is longer than this go into Raft in pieces of this size.
pub const PART_SIZE: usize = 64 << 10;

impl Proposal {
    /// This proposal as the entries to commit: itself, or pieces of its JSON of at most
    /// [`PART_SIZE`] bytes each, cut at character boundaries.
    pub fn into_parts(self, id: u64) -> Result<Vec<Proposal>, serde_json::Error> {
        let text = serde_json::to_string(&self)?;
        if text.len() <= PART_SIZE {
            return Ok(vec![self]);
        }
        let mut parts = Vec::new();
        let mut rest = text.as_str();
        while !rest.is_empty() {
            let mut end = rest.len().min(PART_SIZE);
            while !rest.is_char_boundary(end) {
                end -= 1;
            }
            let (piece, tail) = rest.split_at(end);
            parts.push(Proposal::Part {
                id,
                text: piece.to_string(),
                last: tail.is_empty(),
            });
            rest = tail;
        }
        Ok(parts)
    }
}

/// What `--force-new-cluster` carries over from the old cluster.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Restored {
    pub state: crate::store::State,
    pub cluster: Option<super::config::ClusterConfig>,
}

/// What applying a proposal answered: one result per command (the reason when refused).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Answers(pub Vec<Result<(), ApplyError>>);

openraft::declare_raft_types!(
    /// The cluster's Raft types: node IDs are numbers, nodes are addressed by `BasicNode`.
    pub TypeConfig:
        D = Proposal,
        R = Answers,
        SnapshotData = std::io::Cursor<Vec<u8>>,
);

/// An openraft storage error from any displayable cause.
fn io_error(e: impl std::fmt::Display) -> openraft::AnyError {
    openraft::AnyError::error(e.to_string())
}

#[cfg(test)]
mod tests;
