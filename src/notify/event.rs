//! What the cluster tells its notification targets: events appended to a bounded log in the
//! store by `State::apply` (so every manager has the same log, and a new leader delivers from
//! where the last one stopped), each target with the sequence number it has been sent up to.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::config::Target;
use crate::store::Millis;

/// Events kept; a target that falls further behind loses the oldest (counted, and said).
pub const LOG_LEN: usize = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyKind {
    CommitRefused,
    CommitApplied,
    CommitConverged,
    RolloutPaused,
    RolloutRolledBack,
    ServiceUnhealthy,
    NodeDown,
}

impl NotifyKind {
    pub fn name(self) -> &'static str {
        match self {
            NotifyKind::CommitRefused => "commit_refused",
            NotifyKind::CommitApplied => "commit_applied",
            NotifyKind::CommitConverged => "commit_converged",
            NotifyKind::RolloutPaused => "rollout_paused",
            NotifyKind::RolloutRolledBack => "rollout_rolled_back",
            NotifyKind::ServiceUnhealthy => "service_unhealthy",
            NotifyKind::NodeDown => "node_down",
        }
    }

    /// Bad news, for the colour of a chat message.
    pub fn is_bad(self) -> bool {
        !matches!(
            self,
            NotifyKind::CommitApplied | NotifyKind::CommitConverged
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyEvent {
    pub seq: u64,
    pub at: Millis,
    pub kind: NotifyKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// What happened, in words.
    pub message: String,
}

/// The log and the targets' places in it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NotifyLog {
    /// The last sequence number given.
    pub seq: u64,
    pub events: VecDeque<NotifyEvent>,
    /// The targets of the applied commit's `reconciler.toml`.
    #[serde(default)]
    pub targets: Vec<Target>,
    /// Each target's last event sent (or skipped: not wanted, or lost off the log).
    #[serde(default)]
    pub sent: BTreeMap<String, u64>,
}

/// An event before it has its number.
#[derive(Clone, Debug, Default)]
pub struct News {
    pub commit: Option<String>,
    pub service: Option<String>,
    pub node: Option<String>,
    pub message: String,
}

impl NotifyLog {
    pub fn push(&mut self, kind: NotifyKind, at: Millis, news: News) {
        // Nothing to tell anyone: keep no log (a repo without reconciler.toml).
        if self.targets.is_empty() {
            return;
        }
        self.seq += 1;
        self.events.push_back(NotifyEvent {
            seq: self.seq,
            at,
            kind,
            commit: news.commit,
            service: news.service,
            node: news.node,
            message: news.message,
        });
        while self.events.len() > LOG_LEN {
            self.events.pop_front();
        }
    }

    /// The targets a new commit names: a new one starts from now (it is not sent the past), a
    /// removed one is forgotten.
    pub fn set_targets(&mut self, targets: Vec<Target>) {
        self.sent
            .retain(|name, _| targets.iter().any(|t| &t.name == name));
        for t in &targets {
            self.sent.entry(t.name.clone()).or_insert(self.seq);
        }
        self.targets = targets;
    }

    /// A target was sent everything up to `seq`.
    pub fn sent(&mut self, target: &str, seq: u64) -> bool {
        match self.sent.get_mut(target) {
            Some(s) if *s < seq => {
                *s = seq;
                true
            }
            _ => false,
        }
    }

    /// The next event `target` wants and has not been sent, with how many it lost off the
    /// log meanwhile.
    pub fn next_for(&self, target: &Target) -> Option<(&NotifyEvent, u64)> {
        let after = *self.sent.get(&target.name)?;
        let first = self.events.front()?.seq;
        let lost = first.saturating_sub(after + 1);
        self.events
            .iter()
            .filter(|e| e.seq > after && target.wants(e.kind))
            .map(|e| (e, lost))
            .next()
    }

    /// Has `service` been said unhealthy since `since`?
    pub fn unhealthy_since(&self, service: &str, since: Millis) -> bool {
        self.events
            .iter()
            .rev()
            .take_while(|e| e.at >= since)
            .any(|e| {
                e.kind == NotifyKind::ServiceUnhealthy && e.service.as_deref() == Some(service)
            })
    }
}
