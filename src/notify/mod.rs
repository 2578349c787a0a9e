//! Notifications: `reconciler.toml` in the stacks repo names targets (generic JSON signed with
//! HMAC, Slack, Microsoft Teams, Discord) and the events each wants; the store keeps a bounded
//! log of events and each target's place in it; the leader's sender (`manager::notifier`)
//! delivers them at least once, with retries and backoff, never in the way of reconciling.

pub mod config;
pub mod deliver;
pub mod event;

use serde::{Deserialize, Serialize};

pub use config::{Kind, Target};
pub use event::{NotifyEvent, NotifyKind, NotifyLog};

/// What status shows of a target (never its URL).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetStatus {
    pub kind: String,
    /// Events delivered by this manager.
    pub delivered: u64,
    /// Failed attempts by this manager.
    pub failures: u64,
    /// Events that fell off the store's log before they could be sent.
    #[serde(default)]
    pub lost: u64,
    /// Events waiting for it.
    #[serde(default)]
    pub pending: u64,
    /// The last failure, while it lasts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

#[cfg(test)]
mod tests;
