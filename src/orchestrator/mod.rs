//! The manager's loops, as pure functions of the store. Each reads the state and returns
//! commands; none calls another; they meet in the store (Swarm's design):
//!
//! - the replicated and global orchestrators fill empty slots and shut down surplus tasks,
//!   asking [`restart::restart_decision`] when a task died;
//! - the rolling [`update::Updater`] replaces dirty slots by the service's update policy;
//! - the scheduler ([`schedule::Scheduler`]) places new and pending tasks, each placement of a
//!   pass seeing the ones before it;
//! - the task reaper keeps a bounded history per slot and deletes removed tasks.
//!
//! [`Orchestrator::step`] runs them all over a state and says when to look again. The I/O shell
//! (`manager`) applies the commands and calls it on every store change or wake-up.

pub mod restart;
pub mod schedule;
pub mod update;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use restart::Decision;
use schedule::Scheduler;
use update::{Outcome, Updater};

use crate::spec::model::Mode;
use crate::store::{
    Command, Millis, Service, State, Task, TaskId, TaskState, TaskStatus, UpdateState,
};

/// Terminated tasks kept per slot (Swarm's task history limit).
pub const TASK_HISTORY_LIMIT: usize = 5;

/// A slot: replica number for replicated services, node for global ones.
pub type SlotKey = (Option<u64>, String);

pub fn slot_key(t: &Task) -> SlotKey {
    match t.slot {
        Some(s) => (Some(s), String::new()),
        None => (None, t.node.clone()),
    }
}

/// A task whose spec or endpoint differs from the service's must be replaced.
pub fn is_dirty(task: &Task, svc: &Service) -> bool {
    task.spec != svc.spec.task || task.endpoint != svc.spec.endpoint
}

/// Task ids: random enough to be unique across restarts, injectable for tests.
#[derive(Debug)]
pub struct IdGen {
    prefix: u64,
    counter: u64,
}

impl IdGen {
    pub fn random() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        IdGen {
            prefix: nanos ^ (std::process::id() as u64).rotate_left(40),
            counter: 0,
        }
    }

    pub fn seeded(seed: u64) -> Self {
        IdGen {
            prefix: seed,
            counter: 0,
        }
    }

    pub fn next_id(&mut self) -> TaskId {
        self.counter += 1;
        // A cheap mix so ids do not look sequential; uniqueness comes from prefix + counter.
        let x = self
            .prefix
            .wrapping_add(self.counter.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        format!(
            "{:016x}{:08x}",
            x.rotate_left(17) ^ 0xA5A5_5A5A_F0F0_0F0F,
            self.counter as u32
        )
    }
}

/// A new task of the service's current spec.
pub fn new_task(
    svc: &Service,
    slot: Option<u64>,
    node: String,
    now: Millis,
    id: TaskId,
    desired: TaskState,
    restarts: Vec<Millis>,
) -> Task {
    let (state, message) = if node.is_empty() {
        (TaskState::Pending, "pending".to_string())
    } else {
        (TaskState::Assigned, "assigned".to_string())
    };
    Task {
        id,
        service: svc.spec.name.clone(),
        slot,
        node,
        service_version: svc.version,
        spec: svc.spec.task.clone(),
        endpoint: svc.spec.endpoint.clone(),
        desired_state: desired,
        status: TaskStatus {
            state,
            timestamp: now,
            message,
            error: None,
            container_id: None,
            exit_code: None,
            running_since: None,
        },
        created_at: now,
        restarts,
    }
}

/// What one pass of the loops asks for.
#[derive(Debug, Default)]
pub struct Step {
    pub commands: Vec<Command>,
    /// Look again at this time even if the store does not change.
    pub wake_at: Option<Millis>,
}

impl Step {
    /// Ask to be stepped again at `at` at the latest.
    pub(crate) fn wake(&mut self, at: Millis) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }
}

/// The manager's loops and the little memory they keep (the running updaters).
#[derive(Debug)]
pub struct Orchestrator {
    updaters: BTreeMap<String, Updater>,
    ids: IdGen,
    pub history_limit: usize,
}

impl Orchestrator {
    pub fn new(ids: IdGen) -> Self {
        Orchestrator {
            updaters: BTreeMap::new(),
            ids,
            history_limit: TASK_HISTORY_LIMIT,
        }
    }

    /// One pass over every service. The commands are meant to be applied in order.
    pub fn step(&mut self, state: &State, now: Millis) -> Step {
        let mut out = Step::default();
        let mut sched = Scheduler::new(state.nodes.values(), state.tasks.values());
        self.updaters
            .retain(|name, _| state.services.contains_key(name));
        for (name, svc) in &state.services {
            if svc.spec.mode.is_job() {
                fill_job(state, svc, now, &mut self.ids, &mut sched, &mut out);
                continue;
            }
            self.update(state, name, svc, now, &mut sched, &mut out);
            fill_slots(state, svc, now, &mut self.ids, &mut sched, &mut out);
        }
        schedule_pending(state, now, &mut sched, &mut out);
        reap(state, self.history_limit, &mut out);
        if out.commands.is_empty() {
            out.commands.extend(converged(state, now));
        }
        out
    }

    fn update(
        &mut self,
        state: &State,
        name: &str,
        svc: &Service,
        now: Millis,
        sched: &mut Scheduler<'_>,
        out: &mut Step,
    ) {
        let superseded = self
            .updaters
            .get(name)
            .is_some_and(|u| u.version != svc.version);
        if superseded {
            self.updaters.remove(name);
        }
        let paused = matches!(
            svc.update.as_ref().map(|u| u.state),
            Some(UpdateState::Paused | UpdateState::RollbackPaused)
        );
        if !self.updaters.contains_key(name) {
            if paused {
                return; // nothing moves until the spec changes
            }
            let rollback = matches!(
                svc.update.as_ref().map(|u| u.state),
                Some(UpdateState::RollbackStarted)
            );
            match Updater::new(state, name, rollback) {
                Some(u) => {
                    self.updaters.insert(name.to_string(), u);
                }
                None => {
                    // Nothing dirty (e.g. only replicas changed): a pending status completes.
                    if let Some(st) = svc.update.as_ref().filter(|u| {
                        matches!(
                            u.state,
                            UpdateState::Updating | UpdateState::RollbackStarted
                        )
                    }) {
                        let done = if st.state == UpdateState::Updating {
                            UpdateState::Completed
                        } else {
                            UpdateState::RollbackCompleted
                        };
                        out.commands.push(Command::SetUpdateStatus {
                            service: name.to_string(),
                            status: Some(crate::store::UpdateStatus {
                                state: done,
                                started_at: st.started_at,
                                completed_at: Some(now),
                                message: st.message.replace("in progress", "completed"),
                            }),
                        });
                    }
                    return;
                }
            }
        }
        let Some(updater) = self.updaters.get_mut(name) else {
            return;
        };
        // A finished updater's step is empty; it stays until the next spec replaces it.
        let step = updater.step(state, now, &mut self.ids, sched);
        out.commands.extend(step.commands);
        if let Some(at) = step.wake_at {
            out.wake(at);
        }
        if matches!(updater.outcome, Some(Outcome::RolledBack(_))) {
            // The rollback swapped the spec; the next pass starts the rollback updater.
            out.wake(now);
        }
    }
}

/// A new task of the service for `slot`, placed by the scheduler (replicated) or on its node
/// (global); one that fits nowhere is created pending and says why.
#[allow(clippy::too_many_arguments)]
pub(crate) fn placed_task(
    svc: &Service,
    slot: Option<u64>,
    global_node: Option<&str>,
    now: Millis,
    id: TaskId,
    desired: TaskState,
    restarts: Vec<Millis>,
    sched: &mut Scheduler<'_>,
) -> Task {
    let placement = match global_node {
        Some(node) => sched.fits(&svc.spec, node).map(|()| node.to_string()),
        None => sched.pick(&svc.spec),
    };
    match placement {
        Ok(node) => {
            let task = new_task(svc, slot, node, now, id, desired, restarts);
            sched.place(&task);
            task
        }
        // A global task keeps its node (the node is its slot) and waits there, pending.
        Err(why) => {
            let mut task = new_task(svc, slot, String::new(), now, id, desired, restarts);
            if let Some(node) = global_node {
                task.node = node.to_string();
                task.status.state = TaskState::Pending;
                task.status.message = "pending".into();
            }
            task.status.error = Some(why);
            task
        }
    }
}

/// The restart times a slot still needs: only those that can count towards max_attempts
/// (within the window, and no more than max_attempts of them). Without this a crash-looping
/// service would carry an ever longer list in every task, log entry and snapshot.
pub(crate) fn restarts_to_keep(
    policy: &crate::spec::model::RestartPolicy,
    mut restarts: Vec<Millis>,
    now: Millis,
) -> Vec<Millis> {
    if policy.max_attempts == 0 {
        return Vec::new();
    }
    let window = policy.window.as_std().as_millis() as Millis;
    if window > 0 {
        restarts.retain(|t| t.saturating_add(window) >= now);
    }
    let excess = restarts.len().saturating_sub(policy.max_attempts as usize);
    restarts.drain(..excess);
    restarts
}

/// Replicated: slots 1..=replicas each hold one live task; global: one per eligible node.
fn fill_slots(
    state: &State,
    svc: &Service,
    now: Millis,
    ids: &mut IdGen,
    sched: &mut Scheduler<'_>,
    out: &mut Step,
) {
    let name = &svc.spec.name;
    let mut by_slot: BTreeMap<SlotKey, Vec<&Task>> = BTreeMap::new();
    for t in state.tasks_of(name) {
        by_slot.entry(slot_key(t)).or_default().push(t);
    }
    for tasks in by_slot.values_mut() {
        tasks.sort_by_key(|t| (t.created_at, t.id.clone()));
    }
    let wanted: Vec<SlotKey> = match svc.spec.mode {
        Mode::Replicated { replicas }
        | Mode::ReplicatedJob {
            total: replicas, ..
        } => (1..=replicas).map(|s| (Some(s), String::new())).collect(),
        Mode::Global | Mode::GlobalJob => global_nodes(state, &svc.spec)
            .map(|n| (None, n.id.clone()))
            .collect(),
    };
    // A replicated task on a node that is down (or gone) or drained moves: it is told to
    // stop, and its slot is filled elsewhere (at once from a down node, which cannot say it
    // stopped; once it has stopped from a drained one). A global task stays on a down node
    // until it returns.
    // Start-first (the service's update order): a drained node's task runs until its
    // replacement does.
    // The constraint enforcer: a node whose labels no longer satisfy the service's
    // constraints loses its tasks of the current spec the same way.
    if matches!(svc.spec.mode, Mode::Replicated { .. }) {
        let unfit = |t: &Task| {
            t.service_version == svc.version
                && state
                    .nodes
                    .get(&t.node)
                    .is_some_and(|n| !schedule::constraints_hold(&svc.spec, n))
        };
        for t in by_slot.values().flatten().filter(|t| {
            t.is_live()
                && t.status.state >= TaskState::Assigned
                && (!node_usable(state, &t.node) || unfit(t))
        }) {
            if state.drains_start_first(t) {
                let replaced = by_slot[&slot_key(t)].iter().any(|o| {
                    o.id != t.id
                        && o.is_live()
                        && o.status.state == TaskState::Running
                        && node_usable(state, &o.node)
                });
                if !replaced {
                    continue;
                }
            }
            sched.release(t);
            out.commands.push(Command::SetTaskDesiredState {
                id: t.id.clone(),
                state: TaskState::Shutdown,
            });
        }
    }
    // Surplus: slots past the replica count, nodes no longer eligible (constraint enforcer).
    for (key, tasks) in &by_slot {
        if wanted.contains(key) {
            continue;
        }
        let waiting_for_its_node = key.0.is_none()
            && state.nodes.get(&key.1).is_some_and(|n| {
                !n.ready
                    && n.availability != crate::store::Availability::Drain
                    && schedule::constraints_hold(&svc.spec, n)
            });
        if waiting_for_its_node {
            continue;
        }
        for t in tasks
            .iter()
            .filter(|t| t.desired_state <= TaskState::Running)
        {
            if t.is_live() {
                sched.release(t);
            }
            out.commands.push(Command::SetTaskDesiredState {
                id: t.id.clone(),
                state: TaskState::Shutdown,
            });
        }
    }
    for key in wanted {
        let tasks = by_slot.get(&key).map(Vec::as_slice).unwrap_or(&[]);
        if tasks
            .iter()
            .any(|t| t.is_live() && !state.drains_start_first(t))
        {
            continue;
        }
        let draining = tasks.iter().find(|t| t.is_live());
        let restarts = match (draining, tasks.last()) {
            // Moving, not restarting: its restart history goes with it.
            (Some(d), _) if d.service_version == svc.version => d.restarts.clone(),
            (Some(_), _) | (None, None) => Vec::new(),
            (None, Some(ended)) => match replacement(state, svc, ended, now, out) {
                Some(restarts) => restarts,
                None => continue,
            },
        };
        create_task(svc, &key, now, ids, restarts, sched, out);
    }
}

/// Whether a slot whose newest task `ended` gets a new task now, and the restart history the
/// new one carries: `None` while the old one is still stopping, when the restart policy keeps
/// the slot down, or until its delay has passed (a wake-up is asked for then).
fn replacement(
    state: &State,
    svc: &Service,
    ended: &Task,
    now: Millis,
    out: &mut Step,
) -> Option<Vec<Millis>> {
    if !ended.status.state.is_terminal() && !node_down(state, &ended.node) {
        return None; // still stopping: the replacement waits for it
    }
    let policy = &svc.spec.task.restart_policy;
    let same_spec = ended.service_version == svc.version;
    match restart::restart_decision(policy, ended, now) {
        Decision::StayDown(_) if same_spec => None,
        Decision::StayDown(_) => Some(Vec::new()), // the spec changed since: attempts start afresh
        Decision::ReplaceAt { at, .. } if at > now => {
            out.wake(at);
            None
        }
        Decision::ReplaceAt { is_restart, .. } => {
            let mut restarts = if same_spec {
                ended.restarts.clone()
            } else {
                Vec::new()
            };
            if is_restart {
                restarts.push(now);
            }
            Some(restarts_to_keep(policy, restarts, now))
        }
    }
}

/// A new task for the slot, placed by the scheduler (a global slot's node is its own).
fn create_task(
    svc: &Service,
    key: &SlotKey,
    now: Millis,
    ids: &mut IdGen,
    restarts: Vec<Millis>,
    sched: &mut Scheduler<'_>,
    out: &mut Step,
) {
    let global_node = key.0.is_none().then_some(key.1.as_str());
    let task = placed_task(
        svc,
        key.0,
        global_node,
        now,
        ids.next_id(),
        TaskState::Running,
        restarts,
        sched,
    );
    out.commands.push(Command::CreateTask {
        task: Box::new(task),
    });
}

/// A job runs to completion: each slot (a completion of a replicated job, a node of a global
/// one) gets tasks until one completes, at most `max_concurrent` slots at a time; a task that
/// fails is restarted by the restart policy (on-failure by default). A new spec runs the job
/// again: the tasks of the old one still running are stopped.
fn fill_job(
    state: &State,
    svc: &Service,
    now: Millis,
    ids: &mut IdGen,
    sched: &mut Scheduler<'_>,
    out: &mut Step,
) {
    let name = &svc.spec.name;
    let mut by_slot: BTreeMap<SlotKey, Vec<&Task>> = BTreeMap::new();
    for t in state.tasks_of(name) {
        let stale = t.service_version != svc.version;
        // An older run, or a task on a node it cannot finish on (down, gone, drained).
        let moving = !svc.spec.mode.is_global()
            && t.status.state >= TaskState::Assigned
            && !node_usable(state, &t.node);
        if t.is_live() && (stale || moving) {
            sched.release(t);
            out.commands.push(Command::SetTaskDesiredState {
                id: t.id.clone(),
                state: TaskState::Shutdown,
            });
        }
        if !stale {
            by_slot.entry(slot_key(t)).or_default().push(t);
        }
    }
    for tasks in by_slot.values_mut() {
        tasks.sort_by_key(|t| (t.created_at, t.id.clone()));
    }
    let (slots, max): (Vec<SlotKey>, u64) = match svc.spec.mode {
        Mode::ReplicatedJob {
            total,
            max_concurrent,
        } => (
            (1..=total).map(|s| (Some(s), String::new())).collect(),
            max_concurrent,
        ),
        _ => (
            global_nodes(state, &svc.spec)
                .map(|n| (None, n.id.clone()))
                .collect(),
            u64::MAX,
        ),
    };
    let mut active = by_slot
        .values()
        .filter(|tasks| tasks.iter().any(|t| t.is_live()))
        .count() as u64;
    for key in slots {
        let tasks = by_slot.get(&key).map(Vec::as_slice).unwrap_or(&[]);
        let done = tasks.iter().any(|t| t.status.state == TaskState::Complete);
        if done || tasks.iter().any(|t| t.is_live()) {
            continue;
        }
        // (Every task here is of the current spec: a run's failures count within it.)
        let restarts = match tasks.last() {
            None => Vec::new(),
            Some(ended) => match replacement(state, svc, ended, now, out) {
                Some(restarts) => restarts,
                None => continue,
            },
        };
        if active >= max {
            break;
        }
        active += 1;
        create_task(svc, &key, now, ids, restarts, sched, out);
    }
}

/// The nodes a global service (or global job) runs a task on: ready, not drained, and
/// satisfying its constraints.
pub fn global_nodes<'a>(
    state: &'a State,
    spec: &'a crate::spec::model::ServiceSpec,
) -> impl Iterator<Item = &'a crate::store::Node> + 'a {
    state
        .nodes
        .values()
        .filter(|n| n.ready && n.availability != crate::store::Availability::Drain)
        .filter(move |n| schedule::constraints_hold(spec, n))
}

/// A node tasks may stay on: known, ready and not drained.
fn node_usable(state: &State, node: &str) -> bool {
    state
        .nodes
        .get(node)
        .is_some_and(|n| n.ready && n.availability != crate::store::Availability::Drain)
}

/// A node that cannot say its tasks stopped: down, or no longer in the cluster.
fn node_down(state: &State, node: &str) -> bool {
    state.nodes.get(node).is_none_or(|n| !n.ready)
}

/// Place tasks still waiting for a node; a task that fits nowhere says why.
fn schedule_pending(state: &State, now: Millis, sched: &mut Scheduler<'_>, out: &mut Step) {
    for t in state
        .tasks
        .values()
        .filter(|t| t.status.state == TaskState::Pending && t.is_live())
    {
        let Some(svc) = state.services.get(&t.service) else {
            continue;
        };
        // A global task waits on its own node; a replicated one goes where the scheduler says.
        let placement = if t.slot.is_none() && !t.node.is_empty() {
            sched.fits(&svc.spec, &t.node).map(|()| t.node.clone())
        } else {
            sched.pick(&svc.spec)
        };
        match placement {
            Ok(node) => {
                let mut placed = t.clone();
                placed.node = node.clone();
                sched.place(&placed);
                out.commands.push(Command::AssignTask {
                    id: t.id.clone(),
                    node,
                    at: now,
                })
            }
            Err(why) if t.status.error.as_deref() != Some(why.as_str()) => {
                out.commands.push(Command::UpdateTaskStatus {
                    id: t.id.clone(),
                    status: TaskStatus {
                        error: Some(why),
                        timestamp: now,
                        ..t.status.clone()
                    },
                })
            }
            Err(_) => {}
        }
    }
}

/// Keep `limit` ended tasks per slot; delete tasks whose containers are gone.
fn reap(state: &State, limit: usize, out: &mut Step) {
    let mut by_slot: BTreeMap<(&str, SlotKey), Vec<&Task>> = BTreeMap::new();
    for t in state.tasks.values() {
        // Removed by its agent, or never handed to one (still pending, or on a node that is
        // not in the cluster): nothing on any node holds it any more.
        let unplaced = t.status.state <= TaskState::Pending || !state.nodes.contains_key(&t.node);
        if t.status.state == TaskState::Remove || (t.desired_state >= TaskState::Remove && unplaced)
        {
            out.commands.push(Command::DeleteTask { id: t.id.clone() });
            continue;
        }
        if !state.services.contains_key(&t.service) && t.desired_state < TaskState::Remove {
            out.commands.push(Command::SetTaskDesiredState {
                id: t.id.clone(),
                state: TaskState::Remove,
            });
            continue;
        }
        if t.status.state.is_terminal() && t.desired_state < TaskState::Remove {
            by_slot
                .entry((&t.service, slot_key(t)))
                .or_default()
                .push(t);
        }
    }
    for tasks in by_slot.values_mut() {
        if tasks.len() <= limit {
            continue;
        }
        tasks.sort_by_key(|t| (t.created_at, t.id.clone()));
        let excess = tasks.len() - limit;
        for t in tasks.iter().take(excess) {
            out.commands.push(Command::SetTaskDesiredState {
                id: t.id.clone(),
                state: TaskState::Remove,
            });
        }
    }
}

/// The applied commit's history record closes once everything it asks for runs (as `status`
/// judges convergence). Looked at only while a commit awaits it, and only on a quiet step.
fn converged(state: &State, now: Millis) -> Option<Command> {
    let commit = state.history.awaiting_convergence()?;
    crate::api::views::converged(&crate::api::views::services(state)).then(|| {
        Command::CommitConverged {
            commit: commit.to_string(),
            at: now,
        }
    })
}
