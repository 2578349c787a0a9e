//! The commit as the unit of rollout: what the cluster did with each commit it saw, newest
//! last, the last [`HISTORY_LEN`] kept. Written only inside `State::apply`, from the commands
//! that carry the facts (a commit applied or refused, an update's state, a task made, a
//! service rolled back, convergence), so that every manager holds the same history and a new
//! leader carries it on. A rollback, automatic or by hand, is never reported as a success.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::objects::{Millis, UpdateState, UpdateStatus};
use crate::gitops::Trigger;
use crate::plan::Plan;

/// Commits kept; older ones are forgotten.
pub const HISTORY_LEN: usize = 200;
/// Events kept per commit: one that touches thousands of services keeps its first ones and
/// counts the rest.
pub const EVENTS_LEN: usize = 500;

/// The commits the cluster saw, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct History {
    records: VecDeque<CommitRecord>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommitRecord {
    pub commit: String,
    /// The first line of the commit message.
    #[serde(default)]
    pub summary: String,
    /// What made the cluster look (a push seen by the watcher, a poll, a webhook, a sync).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Trigger>,
    pub received_at: Millis,
    pub outcome: Outcome,
    /// Why it was refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// Stacks it could not change (their secrets do not decrypt here), with why.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub blocked: BTreeMap<String, Vec<String>>,
    /// What it changed against what ran before (none for a refused commit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,
    /// Each service's rollout, by full name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rollouts: BTreeMap<String, ServiceRollout>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub converged_at: Option<Millis>,
    /// The newer commit applied before this one converged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<String>,
    #[serde(default)]
    pub events: Vec<HistoryEvent>,
    /// Events past [`EVENTS_LEN`], counted only.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub events_dropped: u64,
}

/// How a commit ended (or where it is).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It failed validation; what ran before runs on.
    Refused,
    /// Applied; its services are converging.
    Rolling,
    /// An update paused on failures (`failure_action: pause`): it waits for a person or a commit.
    Paused,
    /// A service went back to its previous spec, automatically or by hand.
    RolledBack,
    /// Every service runs what it asks for.
    Converged,
    /// A newer commit was applied before this one converged.
    Superseded,
    /// Planned, not applied: the cluster only observes (`up --observe-only`).
    Observed,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Refused => "refused",
            Outcome::Rolling => "rolling",
            Outcome::Paused => "paused",
            Outcome::RolledBack => "rolled back",
            Outcome::Converged => "converged",
            Outcome::Superseded => "superseded",
            Outcome::Observed => "observed (not applied)",
        }
    }

    /// As JSON and `--filter outcome=` name it.
    pub fn key(self) -> &'static str {
        match self {
            Outcome::Refused => "refused",
            Outcome::Rolling => "rolling",
            Outcome::Paused => "paused",
            Outcome::RolledBack => "rolled_back",
            Outcome::Converged => "converged",
            Outcome::Superseded => "superseded",
            Outcome::Observed => "observed",
        }
    }

    /// Only a commit that converged as written succeeded.
    pub fn is_success(self) -> bool {
        self == Outcome::Converged
    }
}

/// One service's rolling update (or rollback) for this commit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceRollout {
    pub state: UpdateState,
    pub started_at: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Millis>,
    /// Tasks started on the new spec.
    #[serde(default)]
    pub replaced: u64,
    /// Why it paused or rolled back, in words.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryEvent {
    pub at: Millis,
    pub kind: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Received,
    Refused,
    Applied,
    RolloutStarted,
    RolloutPaused,
    RollbackStarted,
    RolledBack,
    RolloutCompleted,
    Converged,
    Superseded,
    Observed,
}

impl EventKind {
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Received => "received",
            EventKind::Refused => "refused",
            EventKind::Applied => "applied",
            EventKind::RolloutStarted => "rollout started",
            EventKind::RolloutPaused => "rollout paused",
            EventKind::RollbackStarted => "rollback started",
            EventKind::RolledBack => "rolled back",
            EventKind::RolloutCompleted => "rollout completed",
            EventKind::Converged => "converged",
            EventKind::Superseded => "superseded",
            EventKind::Observed => "observed",
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A commit id as people read it.
pub fn short(commit: &str) -> &str {
    commit.get(..7).unwrap_or(commit)
}

/// What a commit that reached the store says of itself.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Received {
    pub commit: String,
    pub summary: String,
    pub trigger: Option<Trigger>,
    pub at: Millis,
}

impl History {
    /// Oldest first.
    pub fn records(&self) -> impl DoubleEndedIterator<Item = &CommitRecord> + ExactSizeIterator {
        self.records.iter()
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The record of `commit` (a full id or a prefix of at least 4 characters), newest first.
    pub fn find(&self, commit: &str) -> Option<&CommitRecord> {
        if commit.len() < 4 {
            return None;
        }
        self.records
            .iter()
            .rev()
            .find(|r| r.commit.starts_with(commit))
    }

    fn find_mut(&mut self, commit: &str) -> Option<&mut CommitRecord> {
        self.records.iter_mut().rev().find(|r| r.commit == commit)
    }

    /// The applied commit whose convergence is still awaited: the newest one that was not
    /// refused, while it has not converged (a superseded one never will).
    pub fn awaiting_convergence(&self) -> Option<&str> {
        let last = self
            .records
            .iter()
            .rev()
            .find(|r| !matches!(r.outcome, Outcome::Refused | Outcome::Observed))?;
        (last.converged_at.is_none() && last.outcome != Outcome::Superseded)
            .then_some(last.commit.as_str())
    }

    /// A commit became the desired state, with what it changed. False when it is the newest
    /// record already (a new leader applies the head again).
    pub fn applied(
        &mut self,
        received: Received,
        plan: Plan,
        blocked: BTreeMap<String, Vec<String>>,
    ) -> bool {
        // The same head applied again (a new leader starts from it): one commit, one record.
        if self
            .records
            .back()
            .is_some_and(|r| r.commit == received.commit && r.outcome != Outcome::Refused)
        {
            return false;
        }
        let at = received.at;
        for earlier in self.records.iter_mut().filter(|r| {
            r.superseded_by.is_none()
                && r.converged_at.is_none()
                && matches!(
                    r.outcome,
                    Outcome::Rolling | Outcome::Paused | Outcome::RolledBack
                )
        }) {
            earlier.superseded_by = Some(received.commit.clone());
            if earlier.outcome == Outcome::Rolling {
                earlier.outcome = Outcome::Superseded;
            }
            earlier.push(HistoryEvent {
                at,
                kind: EventKind::Superseded,
                service: None,
                message: format!("by {}", short(&received.commit)),
            });
        }
        let (created, updated, removed) = plan.counts();
        let changes = if plan.is_empty() {
            "no change".to_string()
        } else {
            format!("{created} to create, {updated} to update, {removed} to remove")
        };
        let mut record = CommitRecord::new(received, Outcome::Rolling);
        record.push(HistoryEvent {
            at,
            kind: EventKind::Applied,
            service: None,
            message: changes,
        });
        record.plan = Some(plan);
        record.blocked = blocked;
        self.push(record);
        true
    }

    /// A commit the cluster only observes: valid, planned, not applied.
    pub fn observed(
        &mut self,
        received: Received,
        plan: Plan,
        blocked: BTreeMap<String, Vec<String>>,
    ) {
        if self
            .records
            .back()
            .is_some_and(|r| r.commit == received.commit && r.outcome == Outcome::Observed)
        {
            return;
        }
        let at = received.at;
        let (created, updated, removed) = plan.counts();
        let mut record = CommitRecord::new(received, Outcome::Observed);
        record.push(HistoryEvent {
            at,
            kind: EventKind::Observed,
            service: None,
            message: format!(
                "would create {created}, update {updated}, remove {removed}; nothing applied (--observe-only)"
            ),
        });
        record.plan = Some(plan);
        record.blocked = blocked;
        self.push(record);
    }

    /// A commit failed validation. False when that was the newest record already.
    pub fn refused(&mut self, received: Received, errors: Vec<String>) -> bool {
        // The same refusal again (a new leader fetched the same head) is one record.
        if self
            .records
            .back()
            .is_some_and(|r| r.commit == received.commit && r.errors == errors)
        {
            return false;
        }
        let at = received.at;
        let mut record = CommitRecord::new(received, Outcome::Refused);
        record.push(HistoryEvent {
            at,
            kind: EventKind::Refused,
            service: None,
            message: match errors.len() {
                0 | 1 => errors.first().cloned().unwrap_or_default(),
                n => format!("{} (and {} more)", errors[0], n - 1),
            },
        });
        record.errors = errors;
        self.push(record);
        true
    }

    /// A service's update status changed; `revision` is the commit that set its spec.
    pub fn update_status(
        &mut self,
        service: &str,
        revision: Option<&str>,
        old: Option<UpdateState>,
        new: Option<&UpdateStatus>,
    ) {
        let (Some(revision), Some(new)) = (revision, new) else {
            return;
        };
        // A new leader's orchestrator says "updating" again for the update it carries on.
        if old == Some(new.state) {
            return;
        }
        let Some(record) = self.find_mut(revision) else {
            return;
        };
        let at = new.completed_at.unwrap_or(new.started_at);
        let (kind, message) = match new.state {
            UpdateState::Updating => (EventKind::RolloutStarted, String::new()),
            UpdateState::Paused | UpdateState::RollbackPaused => {
                (EventKind::RolloutPaused, new.message.clone())
            }
            UpdateState::RollbackStarted => (EventKind::RollbackStarted, new.message.clone()),
            UpdateState::RollbackCompleted => (EventKind::RolledBack, String::new()),
            UpdateState::Completed => (EventKind::RolloutCompleted, String::new()),
        };
        let rollout = record
            .rollouts
            .entry(service.to_string())
            .or_insert_with(|| ServiceRollout {
                state: new.state,
                started_at: at,
                ended_at: None,
                replaced: 0,
                message: String::new(),
            });
        rollout.state = new.state;
        rollout.ended_at = new.completed_at;
        // The first reason stays (a rollback's "in progress" does not replace why it started).
        if !message.is_empty() && (rollout.message.is_empty() || kind == EventKind::RolloutPaused) {
            rollout.message = message.clone();
        }
        let message = match kind {
            EventKind::RolloutCompleted => format!("{} tasks replaced", rollout.replaced),
            _ => message,
        };
        match new.state {
            UpdateState::RollbackStarted | UpdateState::RollbackCompleted => {
                record.outcome = Outcome::RolledBack
            }
            UpdateState::Paused | UpdateState::RollbackPaused
                if record.outcome == Outcome::Rolling =>
            {
                record.outcome = Outcome::Paused
            }
            _ => {}
        }
        record.push(HistoryEvent {
            at,
            kind,
            service: Some(service.to_string()),
            message,
        });
    }

    /// A task was made for a service while it updates: one more replaced.
    pub fn task_started(&mut self, service: &str, revision: Option<&str>) {
        let Some(record) = revision.and_then(|r| self.find_mut(r)) else {
            return;
        };
        if let Some(rollout) = record
            .rollouts
            .get_mut(service)
            .filter(|r| r.state == UpdateState::Updating)
        {
            rollout.replaced += 1;
        }
    }

    /// `service rollback` by hand: the commit's change to this service is undone.
    pub fn rolled_back_by_hand(&mut self, service: &str, revision: Option<&str>, at: Millis) {
        let Some(record) = revision.and_then(|r| self.find_mut(r)) else {
            return;
        };
        record.outcome = Outcome::RolledBack;
        record.push(HistoryEvent {
            at,
            kind: EventKind::RollbackStarted,
            service: Some(service.to_string()),
            message: "rolled back by hand (`service rollback`)".into(),
        });
    }

    /// Everything the commit asks for runs. A rolled-back commit stays rolled back.
    pub fn converged(&mut self, commit: &str, at: Millis) -> bool {
        let Some(record) = self.find_mut(commit) else {
            return false;
        };
        if record.converged_at.is_some() {
            return false;
        }
        record.converged_at = Some(at);
        if matches!(record.outcome, Outcome::Rolling | Outcome::Paused) {
            record.outcome = Outcome::Converged;
        }
        let took = at.saturating_sub(record.received_at);
        record.push(HistoryEvent {
            at,
            kind: EventKind::Converged,
            service: None,
            message: format!("in {:.1}s", took as f64 / 1000.0),
        });
        true
    }

    fn push(&mut self, record: CommitRecord) {
        self.records.push_back(record);
        while self.records.len() > HISTORY_LEN {
            self.records.pop_front();
        }
    }
}

impl CommitRecord {
    fn new(received: Received, outcome: Outcome) -> Self {
        let trigger_words = received
            .trigger
            .map(|t| t.name().to_string())
            .unwrap_or_default();
        let mut record = CommitRecord {
            commit: received.commit,
            summary: received.summary,
            trigger: received.trigger,
            received_at: received.at,
            outcome,
            errors: Vec::new(),
            blocked: BTreeMap::new(),
            plan: None,
            rollouts: BTreeMap::new(),
            converged_at: None,
            superseded_by: None,
            events: Vec::new(),
            events_dropped: 0,
        };
        record.push(HistoryEvent {
            at: received.at,
            kind: EventKind::Received,
            service: None,
            message: trigger_words,
        });
        record
    }

    fn push(&mut self, event: HistoryEvent) {
        if self.events.len() < EVENTS_LEN {
            self.events.push(event);
        } else {
            self.events_dropped += 1;
        }
    }

    /// When it converged, how long after it was received.
    pub fn took(&self) -> Option<Millis> {
        self.converged_at
            .map(|c| c.saturating_sub(self.received_at))
    }
}
