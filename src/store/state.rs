//! The cluster state and the one state machine that changes it. Every change is a [`Command`]
//! applied by [`State::apply`]: pure and deterministic, so a log of commands replayed on any
//! manager gives the same state (the Raft issue replicates exactly these commands).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::history::{History, Received};
use super::objects::*;
use crate::desired::DesiredState;
use crate::notify::event::{News, NotifyKind};
use crate::notify::NotifyLog;
use crate::spec::model::{FileObjectSpec, NetworkSpec, ServiceSpec, VolumeSpec};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    #[serde(default)]
    pub nodes: BTreeMap<String, Node>,
    pub services: BTreeMap<String, Service>,
    pub tasks: BTreeMap<TaskId, Task>,
    /// Networks, volumes, secrets and configs by full name, with the stack they belong to.
    pub networks: BTreeMap<String, Owned<NetworkSpec>>,
    pub volumes: BTreeMap<String, Owned<VolumeSpec>>,
    pub secrets: BTreeMap<String, Owned<FileObjectSpec>>,
    pub configs: BTreeMap<String, Owned<FileObjectSpec>>,
    pub revision: RevisionStatus,
    /// Content by version, for every version a service spec (current or previous) or a task
    /// still names.
    #[serde(default)]
    pub contents: BTreeMap<String, ContentRef>,
    /// What the cluster did with each commit it saw (the last 200).
    #[serde(default)]
    pub history: History,
    /// Events for the notification targets of `reconciler.toml`, and where each target is.
    #[serde(default)]
    pub notify: NotifyLog,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Owned<T> {
    pub stack: String,
    pub spec: T,
}

/// Everything that can change the state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// A validated commit becomes the desired state: services are created, updated (their old
    /// spec kept for rollback) or removed (their tasks told to shut down); networks, volumes,
    /// secrets and configs follow. With `prune: false` nothing is removed.
    ApplyRevision {
        commit: String,
        desired: DesiredState,
        prune: bool,
        at: Millis,
        /// Stacks left as they are (not updated, not pruned), with why.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        blocked: BTreeMap<String, Vec<String>>,
        /// The commit message's first line and what made the cluster look, for the history.
        #[serde(default)]
        summary: String,
        #[serde(default)]
        trigger: Option<crate::gitops::Trigger>,
        /// The notification targets its `reconciler.toml` names (None: leave them as they are).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        notify: Option<Vec<crate::notify::Target>>,
    },
    /// A commit that failed validation: recorded for status, nothing else changes.
    RefuseRevision {
        commit: String,
        errors: Vec<String>,
        at: Millis,
        #[serde(default)]
        summary: String,
        #[serde(default)]
        trigger: Option<crate::gitops::Trigger>,
    },
    /// A valid commit seen by a cluster that only observes (`up --observe-only`): recorded in
    /// the history with the plan it would carry out; nothing else changes.
    ObserveRevision {
        commit: String,
        desired: DesiredState,
        prune: bool,
        at: Millis,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        blocked: BTreeMap<String, Vec<String>>,
        #[serde(default)]
        summary: String,
        #[serde(default)]
        trigger: Option<crate::gitops::Trigger>,
    },
    /// Everything the commit asks for runs (seen by the leader's orchestrator): its history
    /// record is closed with the time it took.
    CommitConverged {
        commit: String,
        at: Millis,
    },
    /// The leader sent a notification target every event it wants up to `seq`.
    NotificationSent {
        target: String,
        seq: u64,
    },
    /// A node joined or changed (labels, availability, readiness).
    UpsertNode {
        node: Node,
    },
    /// A node opened a dispatcher session: it is ready, and its description (hostname,
    /// platform, resources, engine) is as it says now. A node new to the store is added with
    /// the given role and availability; a known one keeps its role, availability and labels
    /// (those are the operator's).
    NodeSeen {
        node: Node,
    },
    /// `node update`: the operator's part of a node (availability and labels).
    SetNodeSpec {
        id: String,
        availability: Availability,
        labels: BTreeMap<String, String>,
    },
    /// The dispatcher heard nothing from a node for three heartbeat periods (down), or heard
    /// from it again (ready).
    SetNodeReady {
        id: String,
        ready: bool,
        #[serde(default)]
        at: Millis,
    },
    /// `node rm`: the node leaves the store (its certificate is refused by the cluster's
    /// own settings, committed beside).
    RemoveNode {
        id: String,
    },
    CreateTask {
        task: Box<Task>,
    },
    SetTaskDesiredState {
        id: TaskId,
        state: TaskState,
    },
    /// The scheduler placed a pending task on a node.
    AssignTask {
        id: TaskId,
        node: String,
        at: Millis,
    },
    /// An agent's report. Ignored unless it moves the task's state forward (or keeps it and
    /// adds facts, like health).
    UpdateTaskStatus {
        id: TaskId,
        status: TaskStatus,
    },
    DeleteTask {
        id: TaskId,
    },
    SetUpdateStatus {
        service: String,
        status: Option<UpdateStatus>,
    },
    /// Swap spec and previous spec (Swarm's rollback; twice is back again).
    RollbackService {
        service: String,
        manual: bool,
        at: Millis,
    },
}

/// What a command changed, for the loops that watch the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    ServiceCreated(String),
    ServiceUpdated(String),
    ServiceRemoved(String),
    TaskCreated(TaskId),
    TaskUpdated(TaskId),
    TaskDeleted(TaskId),
    ObjectsChanged,
    RevisionChanged,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ApplyError {
    #[error("no service {0}")]
    NoService(String),
    #[error("no task {0}")]
    NoTask(String),
    #[error("no such node: {0}")]
    NoNode(String),
    #[error("task {0} exists already")]
    TaskExists(String),
    #[error("{place} of service {service} holds a live task of that version already ({task})")]
    SlotTaken {
        service: String,
        place: String,
        task: String,
    },
    #[error("service {0} has no previous spec to roll back to")]
    NothingToRollBack(String),
    /// Applying the command panicked (a bug); it was refused alike everywhere.
    #[error("applying the command failed ({0}); it was refused")]
    Panicked(String),
    /// A change to the cluster's own settings that does not hold.
    #[error("{0}")]
    Cluster(String),
    /// The last piece of a proposal too big for one Raft entry came after a change of leader
    /// dropped the earlier ones: nothing applied, the proposer tries again.
    #[error("the proposal's earlier pieces were lost to a change of leader; nothing applied")]
    PartsLost,
}

/// A service whose tasks failed this many times within [`UNHEALTHY_WINDOW`] is unhealthy.
const UNHEALTHY_FAILURES: usize = 3;
const UNHEALTHY_WINDOW: Millis = 5 * 60 * 1000;
/// A service said unhealthy is not said so again for this long.
const UNHEALTHY_QUIET: Millis = 10 * 60 * 1000;

impl State {
    /// Would `apply` accept this command? (Read-only: the store checks before logging.)
    pub fn check(&self, command: &Command) -> Result<(), ApplyError> {
        match command {
            Command::CreateTask { task } => {
                if self.tasks.contains_key(&task.id) {
                    return Err(ApplyError::TaskExists(task.id.clone()));
                }
                if !self.services.contains_key(&task.service) {
                    return Err(ApplyError::NoService(task.service.clone()));
                }
                // A slot (a node, for a global service) holds one live task of a version: a
                // step computed on a stale view, or by a leader deposed meanwhile, cannot fill
                // it twice. (A rolling update's new task has a new version; a restart's
                // predecessor has stopped.)
                // (A task draining start-first holds its slot until its replacement runs.)
                let taken = self.tasks.values().find(|t| {
                    t.service == task.service
                        && t.service_version == task.service_version
                        && t.is_live()
                        && !self.drains_start_first(t)
                        && match task.slot {
                            Some(slot) => t.slot == Some(slot),
                            None => t.slot.is_none() && t.node == task.node,
                        }
                });
                if let Some(t) = taken {
                    return Err(ApplyError::SlotTaken {
                        service: task.service.clone(),
                        place: match task.slot {
                            Some(slot) => format!("slot {slot}"),
                            None => format!("node {}", task.node),
                        },
                        task: t.id.clone(),
                    });
                }
            }
            Command::SetTaskDesiredState { id, .. }
            | Command::UpdateTaskStatus { id, .. }
            | Command::AssignTask { id, .. } => {
                if !self.tasks.contains_key(id) {
                    return Err(ApplyError::NoTask(id.clone()));
                }
            }
            Command::SetUpdateStatus { service, .. } => {
                if !self.services.contains_key(service) {
                    return Err(ApplyError::NoService(service.clone()));
                }
            }
            Command::RollbackService { service, .. } => match self.services.get(service) {
                None => return Err(ApplyError::NoService(service.clone())),
                Some(s) if s.previous_spec.is_none() => {
                    return Err(ApplyError::NothingToRollBack(service.clone()))
                }
                Some(_) => {}
            },
            Command::ApplyRevision { .. }
            | Command::RefuseRevision { .. }
            | Command::CommitConverged { .. }
            | Command::ObserveRevision { .. }
            | Command::NotificationSent { .. }
            | Command::DeleteTask { .. }
            | Command::UpsertNode { .. }
            | Command::NodeSeen { .. }
            | Command::SetNodeReady { .. }
            | Command::RemoveNode { .. } => {}
            Command::SetNodeSpec { id, .. } => {
                if !self.nodes.contains_key(id) {
                    return Err(ApplyError::NoNode(id.clone()));
                }
            }
        }
        Ok(())
    }

    /// A replicated task on a drained node whose service updates start-first: its
    /// replacement starts elsewhere before it stops.
    pub fn drains_start_first(&self, t: &Task) -> bool {
        t.slot.is_some()
            && self.services.get(&t.service).is_some_and(|s| {
                s.spec.update_config.order == crate::spec::model::UpdateOrder::StartFirst
            })
            && self
                .nodes
                .get(&t.node)
                .is_some_and(|n| n.ready && n.availability == Availability::Drain)
    }

    /// Point a task's spec at its service's own copy when they are the same (a task comes
    /// through Raft, or from a snapshot, with a copy of its own): 10,000 tasks then hold one
    /// spec per service version, not 10,000.
    fn share_spec(&self, task: &mut Task) {
        let Some(svc) = self.services.get(&task.service) else {
            return;
        };
        let own =
            std::iter::once(&svc.spec.task).chain(svc.previous_spec.as_ref().map(|p| &p.task));
        for spec in own {
            if std::sync::Arc::ptr_eq(spec, &task.spec) {
                return;
            }
            if **spec == *task.spec {
                task.spec = spec.clone();
                return;
            }
        }
    }

    /// [`State::share_spec`] for every task (a state read from a snapshot).
    pub fn share_specs(&mut self) {
        let mut tasks = std::mem::take(&mut self.tasks);
        for task in tasks.values_mut() {
            self.share_spec(task);
        }
        self.tasks = tasks;
    }

    pub fn apply(&mut self, command: Command) -> Result<Vec<Event>, ApplyError> {
        self.check(&command)?;
        match command {
            Command::ApplyRevision {
                commit,
                desired,
                prune,
                at,
                blocked,
                summary,
                trigger,
                notify,
            } => {
                let received = Received {
                    commit: commit.clone(),
                    summary,
                    trigger,
                    at,
                };
                if let Some(targets) = notify {
                    self.notify.set_targets(targets);
                }
                let plan = self.plan_of(&commit, &desired, prune, &blocked);
                let (c, u, r) = plan.counts();
                if self.history.applied(received, plan, blocked.clone()) {
                    self.notify.push(
                        NotifyKind::CommitApplied,
                        at,
                        News {
                            commit: Some(commit.clone()),
                            message: format!("{c} to create, {u} to update, {r} to remove"),
                            ..Default::default()
                        },
                    );
                }
                Ok(self.apply_revision(commit, desired, prune, at, blocked))
            }
            Command::RefuseRevision {
                commit,
                errors,
                at,
                summary,
                trigger,
            } => {
                let received = Received {
                    commit: commit.clone(),
                    summary,
                    trigger,
                    at,
                };
                if self.history.refused(received, errors.clone()) {
                    self.notify.push(
                        NotifyKind::CommitRefused,
                        at,
                        News {
                            commit: Some(commit.clone()),
                            message: match errors.len() {
                                0 | 1 => errors.first().cloned().unwrap_or_default(),
                                n => format!("{} (and {} more)", errors[0], n - 1),
                            },
                            ..Default::default()
                        },
                    );
                }
                self.revision.refused = Some(RefusedRevision { commit, at, errors });
                Ok(vec![Event::RevisionChanged])
            }
            Command::CommitConverged { commit, at } => {
                if !self.history.converged(&commit, at) {
                    return Ok(vec![]);
                }
                // A rolled-back commit was said already; "converged" is for a success.
                if let Some(r) = self
                    .history
                    .find(&commit)
                    .filter(|r| r.outcome.is_success())
                {
                    let took = r.took().unwrap_or(0);
                    self.notify.push(
                        NotifyKind::CommitConverged,
                        at,
                        News {
                            commit: Some(commit.clone()),
                            message: format!("in {:.1}s", took as f64 / 1000.0),
                            ..Default::default()
                        },
                    );
                }
                Ok(vec![Event::RevisionChanged])
            }
            Command::ObserveRevision {
                commit,
                desired,
                prune,
                at,
                blocked,
                summary,
                trigger,
            } => {
                let received = Received {
                    commit: commit.clone(),
                    summary,
                    trigger,
                    at,
                };
                let plan = self.plan_of(&commit, &desired, prune, &blocked);
                self.history.observed(received, plan, blocked);
                Ok(vec![Event::RevisionChanged])
            }
            Command::NotificationSent { target, seq } => {
                self.notify.sent(&target, seq);
                Ok(vec![])
            }
            Command::UpsertNode { node } => {
                if self.nodes.get(&node.id) == Some(&node) {
                    return Ok(vec![]);
                }
                self.nodes.insert(node.id.clone(), node);
                Ok(vec![Event::ObjectsChanged])
            }
            Command::NodeSeen { node } => {
                let node = match self.nodes.get(&node.id) {
                    Some(known) => Node {
                        role: known.role,
                        availability: known.availability,
                        labels: known.labels.clone(),
                        ready: true,
                        ..node
                    },
                    None => Node {
                        ready: true,
                        ..node
                    },
                };
                if self.nodes.get(&node.id) == Some(&node) {
                    return Ok(vec![]);
                }
                self.nodes.insert(node.id.clone(), node);
                Ok(vec![Event::ObjectsChanged])
            }
            Command::SetNodeSpec {
                id,
                availability,
                labels,
            } => {
                let node = self.nodes.get_mut(&id).ok_or(ApplyError::NoNode(id))?;
                if node.availability == availability && node.labels == labels {
                    return Ok(vec![]);
                }
                node.availability = availability;
                node.labels = labels;
                Ok(vec![Event::ObjectsChanged])
            }
            Command::SetNodeReady { id, ready, at } => match self.nodes.get_mut(&id) {
                Some(n) if n.ready != ready => {
                    n.ready = ready;
                    if !ready {
                        let news = News {
                            node: Some(n.hostname.clone()),
                            message: format!("node {} ({}) stopped answering", n.hostname, id),
                            ..Default::default()
                        };
                        self.notify.push(NotifyKind::NodeDown, at, news);
                    }
                    Ok(vec![Event::ObjectsChanged])
                }
                _ => Ok(vec![]),
            },
            Command::RemoveNode { id } => Ok(match self.nodes.remove(&id) {
                Some(_) => vec![Event::ObjectsChanged],
                None => vec![],
            }),
            Command::CreateTask { task } => {
                let id = task.id.clone();
                let mut task = *task;
                if let Some(svc) = self.services.get(&task.service) {
                    if svc.version == task.service_version {
                        self.history
                            .task_started(&task.service, svc.revision.as_deref());
                    }
                }
                self.share_spec(&mut task);
                self.tasks.insert(id.clone(), task);
                Ok(vec![Event::TaskCreated(id)])
            }
            Command::SetTaskDesiredState { id, state } => {
                let task = self
                    .tasks
                    .get_mut(&id)
                    .ok_or(ApplyError::NoTask(id.clone()))?;
                // Desired state, like observed state, only moves forward.
                if state <= task.desired_state {
                    return Ok(vec![]);
                }
                task.desired_state = state;
                Ok(vec![Event::TaskUpdated(id)])
            }
            Command::AssignTask { id, node, at } => {
                let task = self
                    .tasks
                    .get_mut(&id)
                    .ok_or(ApplyError::NoTask(id.clone()))?;
                if task.status.state > TaskState::Pending {
                    return Ok(vec![]);
                }
                task.node = node;
                task.status = TaskStatus {
                    state: TaskState::Assigned,
                    timestamp: at,
                    message: "assigned".into(),
                    error: None,
                    container_id: None,
                    exit_code: None,
                    running_since: None,
                };
                Ok(vec![Event::TaskUpdated(id)])
            }
            Command::UpdateTaskStatus { id, status } => {
                let task = self
                    .tasks
                    .get_mut(&id)
                    .ok_or(ApplyError::NoTask(id.clone()))?;
                if status.state < task.status.state || status == task.status {
                    return Ok(vec![]);
                }
                let failed_now =
                    status.state == TaskState::Failed && task.status.state != TaskState::Failed;
                task.status = status;
                if failed_now {
                    self.maybe_unhealthy(&id);
                }
                Ok(vec![Event::TaskUpdated(id)])
            }
            Command::DeleteTask { id } => match self.tasks.remove(&id) {
                Some(_) => Ok(vec![Event::TaskDeleted(id)]),
                None => Ok(vec![]),
            },
            Command::SetUpdateStatus { service, status } => {
                let svc = self
                    .services
                    .get_mut(&service)
                    .ok_or(ApplyError::NoService(service.clone()))?;
                let old = svc.update.as_ref().map(|u| u.state);
                self.history
                    .update_status(&service, svc.revision.as_deref(), old, status.as_ref());
                if let Some(st) = status.as_ref().filter(|st| old != Some(st.state)) {
                    let kind = match st.state {
                        UpdateState::Paused | UpdateState::RollbackPaused => {
                            Some(NotifyKind::RolloutPaused)
                        }
                        UpdateState::RollbackStarted => Some(NotifyKind::RolloutRolledBack),
                        _ => None,
                    };
                    if let Some(kind) = kind {
                        let news = News {
                            commit: svc.revision.clone(),
                            service: Some(service.clone()),
                            message: st.message.clone(),
                            ..Default::default()
                        };
                        self.notify
                            .push(kind, st.completed_at.unwrap_or(st.started_at), news);
                    }
                }
                svc.update = status;
                Ok(vec![Event::ServiceUpdated(service)])
            }
            Command::RollbackService {
                service,
                manual,
                at,
            } => {
                let svc = self
                    .services
                    .get_mut(&service)
                    .ok_or(ApplyError::NoService(service.clone()))?;
                let previous = svc
                    .previous_spec
                    .take()
                    .ok_or(ApplyError::NothingToRollBack(service.clone()))?;
                svc.previous_spec = Some(std::mem::replace(&mut svc.spec, previous));
                svc.version += 1;
                svc.manual_rollback = manual;
                if manual {
                    self.history
                        .rolled_back_by_hand(&service, svc.revision.as_deref(), at);
                }
                Ok(vec![Event::ServiceUpdated(service)])
            }
        }
    }

    fn apply_revision(
        &mut self,
        commit: String,
        desired: DesiredState,
        prune: bool,
        at: Millis,
        blocked: BTreeMap<String, Vec<String>>,
    ) -> Vec<Event> {
        let mut events = vec![Event::RevisionChanged, Event::ObjectsChanged];
        let mut wanted: BTreeMap<String, ServiceSpec> = BTreeMap::new();
        for stack in desired
            .stacks
            .values()
            .filter(|s| !blocked.contains_key(&s.name))
        {
            take_in(&mut self.networks, &stack.name, &stack.networks);
            take_in(&mut self.volumes, &stack.name, &stack.volumes);
            take_in(&mut self.secrets, &stack.name, &stack.secrets);
            take_in(&mut self.configs, &stack.name, &stack.configs);
            for s in stack.secrets.values().chain(stack.configs.values()) {
                if let Some(content) = content_ref(&commit, s) {
                    self.contents.insert(s.version.clone(), content);
                }
            }
            for svc in stack.services.values() {
                for m in &svc.task.container.mounts {
                    if let crate::spec::model::Mount::Repo {
                        path, dir, version, ..
                    } = m
                    {
                        self.contents.insert(
                            version.clone(),
                            ContentRef::Git {
                                commit: commit.clone(),
                                path: path.clone(),
                                encrypted: false,
                                dir: *dir,
                            },
                        );
                    }
                }
                wanted.insert(svc.name.clone(), svc.clone());
            }
        }
        for (name, spec) in wanted {
            match self.services.get_mut(&name) {
                None => {
                    self.services.insert(
                        name.clone(),
                        Service {
                            spec,
                            previous_spec: None,
                            version: 1,
                            revision: Some(commit.clone()),
                            update: None,
                            manual_rollback: false,
                        },
                    );
                    events.push(Event::ServiceCreated(name));
                }
                // A manually rolled-back service keeps its drift until a commit changes it.
                Some(svc) if svc.manual_rollback && svc.revision_spec_unchanged(&spec) => {}
                Some(svc) if svc.spec != spec => {
                    svc.previous_spec = Some(std::mem::replace(&mut svc.spec, spec));
                    svc.version += 1;
                    svc.revision = Some(commit.clone());
                    svc.manual_rollback = false;
                    // A paused update stays paused until the spec changes: this is that change.
                    svc.update = None;
                    events.push(Event::ServiceUpdated(name));
                }
                Some(_) => {}
            }
        }
        if prune {
            // What a blocked stack has stays: this commit could not say what it should be.
            let gone: Vec<String> = self
                .services
                .iter()
                .filter(|(name, s)| {
                    !blocked.contains_key(&s.spec.stack)
                        && !desired
                            .stacks
                            .get(&s.spec.stack)
                            .is_some_and(|st| st.services.contains_key(*name))
                })
                .map(|(n, _)| n.clone())
                .collect();
            for name in gone {
                self.services.remove(&name);
                for task in self.tasks.values_mut().filter(|t| t.service == name) {
                    if task.desired_state < TaskState::Remove {
                        task.desired_state = TaskState::Remove;
                    }
                }
                events.push(Event::ServiceRemoved(name));
            }
            let blocked = &blocked;
            prune_kind(&mut self.networks, &desired, blocked, |s| &s.networks);
            prune_kind(&mut self.volumes, &desired, blocked, |s| &s.volumes);
            prune_kind(&mut self.secrets, &desired, blocked, |s| &s.secrets);
            prune_kind(&mut self.configs, &desired, blocked, |s| &s.configs);
        }
        self.gc_contents();
        self.revision.applied = Some(AppliedRevision {
            commit,
            at,
            blocked,
        });
        events
    }

    /// A task of a service just failed: when its tasks failed again and again lately, the
    /// service is news (once in a while, not at every failure).
    fn maybe_unhealthy(&mut self, id: &str) {
        let Some(task) = self.tasks.get(id) else {
            return;
        };
        let (service, at) = (task.service.clone(), task.status.timestamp);
        let why = task.status.error.clone().unwrap_or_default();
        let failures = self
            .tasks_of(&service)
            .filter(|t| {
                t.status.state == TaskState::Failed
                    && t.status.timestamp.saturating_add(UNHEALTHY_WINDOW) >= at
            })
            .count();
        if failures < UNHEALTHY_FAILURES
            || self
                .notify
                .unhealthy_since(&service, at.saturating_sub(UNHEALTHY_QUIET))
        {
            return;
        }
        let news = News {
            commit: self.services.get(&service).and_then(|s| s.revision.clone()),
            service: Some(service),
            message: format!("its tasks keep failing ({failures} in the last 5 minutes): {why}"),
            ..Default::default()
        };
        self.notify.push(NotifyKind::ServiceUnhealthy, at, news);
    }

    /// What applying `desired` changes against what runs now, as `reconciler plan` shows it:
    /// blocked stacks are left out (they do not change), and so are removals without prune.
    fn plan_of(
        &self,
        commit: &str,
        desired: &DesiredState,
        prune: bool,
        blocked: &BTreeMap<String, Vec<String>>,
    ) -> crate::plan::Plan {
        let running = self.running_state();
        let mut plan = crate::plan::plan(desired, &running);
        plan.from_revision = running.revision;
        plan.to_revision = Some(commit.to_string());
        plan.stacks.retain(|s| !blocked.contains_key(&s.name));
        if !prune {
            use crate::plan::Action;
            plan.stacks.retain(|s| s.action != Action::Remove);
            for stack in &mut plan.stacks {
                stack.changes.retain(|c| c.action != Action::Remove);
            }
            plan.stacks.retain(|s| !s.changes.is_empty());
        }
        plan
    }

    /// Forget content versions that no service spec (current or previous) and no task names.
    fn gc_contents(&mut self) {
        let mut named = std::collections::BTreeSet::new();
        let specs = self
            .services
            .values()
            .flat_map(|s| {
                std::iter::once(&s.spec.task).chain(s.previous_spec.as_ref().map(|p| &p.task))
            })
            .chain(self.tasks.values().map(|t| &t.spec));
        for task in specs {
            named.extend(task.content_versions());
        }
        self.contents.retain(|v, _| named.contains(v.as_str()));
    }

    /// Tasks of a service, in slot order.
    pub fn tasks_of<'a>(&'a self, service: &'a str) -> impl Iterator<Item = &'a Task> + 'a {
        self.tasks.values().filter(move |t| t.service == service)
    }
}

impl Service {
    /// True when `incoming` is what git already asked for before the manual rollback, i.e. the
    /// commit did not touch this service.
    fn revision_spec_unchanged(&self, incoming: &ServiceSpec) -> bool {
        self.previous_spec.as_ref() == Some(incoming)
    }
}

/// The stack objects besides services (networks, volumes, secrets, configs), treated alike:
/// each is known in the store by its full name (`shop_default`), in its stack file by a
/// short one.
trait StackObject: Clone {
    fn full_name(&self) -> &str;
}

impl StackObject for crate::spec::model::NetworkSpec {
    fn full_name(&self) -> &str {
        &self.name
    }
}

impl StackObject for crate::spec::model::VolumeSpec {
    fn full_name(&self) -> &str {
        &self.name
    }
}

impl StackObject for FileObjectSpec {
    fn full_name(&self) -> &str {
        &self.name
    }
}

/// Record a stack's objects of one kind, as the commit gives them.
fn take_in<T: StackObject>(
    ours: &mut BTreeMap<String, Owned<T>>,
    stack: &str,
    objects: &BTreeMap<String, T>,
) {
    for o in objects.values() {
        ours.insert(o.full_name().to_string(), owned(stack, o));
    }
}

/// Drop the objects of one kind that left git; a blocked stack keeps what it has (this commit
/// could not say what it should be).
fn prune_kind<T: StackObject>(
    ours: &mut BTreeMap<String, Owned<T>>,
    desired: &DesiredState,
    blocked: &BTreeMap<String, Vec<String>>,
    kind: fn(&crate::spec::StackSpec) -> &BTreeMap<String, T>,
) {
    ours.retain(|name, o| {
        blocked.contains_key(&o.stack)
            || desired
                .stacks
                .get(&o.stack)
                .is_some_and(|s| kind(s).values().any(|x| x.full_name() == name))
    });
}

/// Where a secret's or config's content is, for the index of versions.
fn content_ref(commit: &str, s: &FileObjectSpec) -> Option<ContentRef> {
    if s.external || s.version.is_empty() {
        return None;
    }
    if let Some(content) = &s.inline {
        return Some(ContentRef::Inline {
            content: content.clone(),
        });
    }
    s.source.as_ref().map(|path| ContentRef::Git {
        commit: commit.to_string(),
        path: path.clone(),
        encrypted: s.encrypted,
        dir: false,
    })
}

fn owned<T: Clone>(stack: &str, spec: &T) -> Owned<T> {
    Owned {
        stack: stack.to_string(),
        spec: spec.clone(),
    }
}
