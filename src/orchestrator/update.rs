//! The rolling updater, as a pure state machine (SWARM-SEMANTICS.md, "Rolling update").
//!
//! One `Updater` per service version being rolled out. `step(&state, now)` looks at the store,
//! returns the commands that move the update on and when it next needs to look again. It keeps
//! only bookkeeping (which slots are in flight, which new tasks failed); everything else is read
//! from the store, so an updater rebuilt after a restart carries on from the tasks it finds.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::schedule::Scheduler;
use super::{is_dirty, placed_task, slot_key, IdGen, SlotKey, Step};
use crate::spec::model::{FailureAction, UpdateConfig, UpdateOrder};
use crate::store::{Command, Millis, State, Task, TaskId, TaskState, UpdateState, UpdateStatus};

/// A stop-first slot waits at most this long for the old task to stop.
const STOP_CAP: Millis = 60_000;

#[derive(Debug)]
pub struct Updater {
    pub service: String,
    /// The service version this updater rolls out.
    pub version: u64,
    /// Rolling back (with rollback_config): a failure pauses, never rolls back again.
    rollback: bool,
    config: UpdateConfig,
    dirty_total: usize,
    queue: VecDeque<SlotKey>,
    workers: Vec<Worker>,
    /// New tasks under watch: (created at). A failure before running, or within `monitor`
    /// after running, counts once.
    watching: BTreeMap<TaskId, Millis>,
    failed: BTreeSet<TaskId>,
    last_failure: String,
    /// When the last slot finished: the update completes one monitor period later.
    last_done: Millis,
    pub outcome: Option<Outcome>,
    started: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Completed,
    Paused(String),
    RolledBack(String),
}

#[derive(Debug, Clone)]
enum Worker {
    Idle { until: Millis },
    Busy(SlotUpdate),
}

#[derive(Debug, Clone)]
struct SlotUpdate {
    old: Vec<TaskId>,
    new: TaskId,
    started: Millis,
    promoted: bool,
}

impl Updater {
    /// Start rolling out the service's current spec over its dirty slots; `None` when nothing is
    /// dirty. `rollback` selects rollback_config and the rollback statuses.
    pub fn new(state: &State, service: &str, rollback: bool) -> Option<Self> {
        let svc = state.services.get(service)?;
        let mut dirty: Vec<SlotKey> = state
            .tasks_of(service)
            .filter(|t| t.is_live() && is_dirty(t, svc))
            .map(slot_key)
            .collect();
        dirty.sort();
        dirty.dedup();
        if dirty.is_empty() {
            return None;
        }
        let config = if rollback {
            svc.spec.rollback_config
        } else {
            svc.spec.update_config
        };
        let parallelism = match config.parallelism {
            0 => dirty.len(),
            p => (p as usize).min(dirty.len()),
        };
        Some(Updater {
            service: service.to_string(),
            version: svc.version,
            rollback,
            config,
            dirty_total: dirty.len(),
            queue: dirty.into(),
            workers: vec![Worker::Idle { until: 0 }; parallelism],
            watching: BTreeMap::new(),
            failed: BTreeSet::new(),
            last_failure: String::new(),
            last_done: 0,
            outcome: None,
            started: false,
        })
    }

    fn status(&self, state: UpdateState, started: Millis, now: Millis, message: String) -> Command {
        let done = matches!(
            state,
            UpdateState::Completed
                | UpdateState::RollbackCompleted
                | UpdateState::Paused
                | UpdateState::RollbackPaused
        );
        Command::SetUpdateStatus {
            service: self.service.clone(),
            status: Some(UpdateStatus {
                state,
                started_at: started,
                completed_at: done.then_some(now),
                message,
            }),
        }
    }

    /// Move the update on by what the store shows now.
    pub fn step(
        &mut self,
        state: &State,
        now: Millis,
        ids: &mut IdGen,
        sched: &mut Scheduler<'_>,
    ) -> Step {
        let mut out = Step::default();
        if self.outcome.is_some() {
            return out;
        }
        let Some(svc) = state.services.get(&self.service) else {
            self.outcome = Some(Outcome::Completed);
            return out;
        };
        if svc.version != self.version {
            // A new spec arrived: this update is superseded (the caller starts a new one).
            self.outcome = Some(Outcome::Completed);
            return out;
        }
        if !self.started {
            self.started = true;
            let (st, msg) = if self.rollback {
                (
                    UpdateState::RollbackStarted,
                    "rollback in progress".to_string(),
                )
            } else {
                (UpdateState::Updating, "update in progress".to_string())
            };
            out.commands.push(self.status(st, now, now, msg));
        }

        self.watch_failures(state, now, &mut out);
        if let Some(action) = self.failure_action() {
            self.fire(
                action,
                svc.update.as_ref().map_or(now, |u| u.started_at),
                now,
                &mut out,
            );
            return out;
        }
        self.progress_workers(state, now, &mut out);
        self.hand_out(state, now, ids, sched, &mut out);
        self.maybe_complete(
            svc.update.as_ref().map_or(now, |u| u.started_at),
            now,
            &mut out,
        );
        out
    }

    fn watch_failures(&mut self, state: &State, now: Millis, out: &mut Step) {
        let monitor = self.config.monitor.as_std().as_millis() as Millis;
        let mut settled = Vec::new();
        for id in self.watching.keys() {
            let Some(task) = state.tasks.get(id) else {
                settled.push(id.clone());
                continue;
            };
            let st = &task.status;
            match st.running_since {
                Some(since) if !st.state.is_terminal() && now >= since + monitor => {
                    settled.push(id.clone()); // survived the monitor period
                }
                Some(since) if !st.state.is_terminal() => out.wake(since + monitor),
                _ if st.state.is_terminal() && task.desired_state <= TaskState::Running => {
                    let within = st
                        .running_since
                        .is_none_or(|since| st.timestamp < since + monitor);
                    if within && self.config.failure_action != FailureAction::Continue {
                        self.failed.insert(id.clone());
                        self.last_failure = format!(
                            "task {} {}{}",
                            short(id),
                            st.state.name(),
                            st.error
                                .as_deref()
                                .map(|e| format!(": {e}"))
                                .unwrap_or_default()
                        );
                    }
                    settled.push(id.clone());
                }
                _ => {}
            }
        }
        for id in settled {
            self.watching.remove(&id);
        }
    }

    fn failure_action(&self) -> Option<FailureAction> {
        if self.failed.is_empty() {
            return None;
        }
        let ratio = self.failed.len() as f64 / self.dirty_total as f64;
        (ratio > self.config.max_failure_ratio).then_some(self.config.failure_action)
    }

    fn fire(&mut self, action: FailureAction, started: Millis, now: Millis, out: &mut Step) {
        let reason = format!(
            "update paused due to failure or early termination of {}",
            self.last_failure
        );
        match (action, self.rollback) {
            (FailureAction::Rollback, false) => {
                let msg = format!("rollback started: {}", self.last_failure);
                out.commands.push(Command::RollbackService {
                    service: self.service.clone(),
                    manual: false,
                    at: now,
                });
                out.commands
                    .push(self.status(UpdateState::RollbackStarted, now, now, msg.clone()));
                self.outcome = Some(Outcome::RolledBack(msg));
            }
            (_, rollback) => {
                let st = if rollback {
                    UpdateState::RollbackPaused
                } else {
                    UpdateState::Paused
                };
                out.commands
                    .push(self.status(st, started, now, reason.clone()));
                self.outcome = Some(Outcome::Paused(reason));
            }
        }
    }

    fn progress_workers(&mut self, state: &State, now: Millis, out: &mut Step) {
        let delay = self.config.delay.as_std().as_millis() as Millis;
        for w in &mut self.workers {
            let Worker::Busy(slot) = w else { continue };
            let Some(new) = state.tasks.get(&slot.new) else {
                *w = Worker::Idle { until: now };
                continue;
            };
            let new_running =
                new.status.state == TaskState::Running && new.status.running_since.is_some();
            let new_ended = new.status.state.is_terminal();
            match self.config.order {
                UpdateOrder::StopFirst => {
                    if !slot.promoted {
                        let old_stopped = slot.old.iter().all(|id| {
                            state
                                .tasks
                                .get(id)
                                .is_none_or(|t| t.status.state.is_terminal())
                        });
                        if old_stopped || now >= slot.started + STOP_CAP {
                            out.commands.push(Command::SetTaskDesiredState {
                                id: slot.new.clone(),
                                state: TaskState::Running,
                            });
                            slot.promoted = true;
                        } else {
                            out.wake(slot.started + STOP_CAP);
                        }
                    }
                    if new_running || new_ended {
                        self.last_done = now;
                        *w = Worker::Idle { until: now + delay };
                    }
                }
                UpdateOrder::StartFirst => {
                    if new_running {
                        for id in &slot.old {
                            out.commands.push(Command::SetTaskDesiredState {
                                id: id.clone(),
                                state: TaskState::Shutdown,
                            });
                        }
                        self.last_done = now;
                        *w = Worker::Idle { until: now + delay };
                    } else if new_ended {
                        // The old task keeps serving; the failure is counted by the watcher.
                        self.last_done = now;
                        *w = Worker::Idle { until: now + delay };
                    }
                }
            }
        }
    }

    fn hand_out(
        &mut self,
        state: &State,
        now: Millis,
        ids: &mut IdGen,
        sched: &mut Scheduler<'_>,
        out: &mut Step,
    ) {
        let Some(svc) = state.services.get(&self.service) else {
            return;
        };
        for i in 0..self.workers.len() {
            let until = match &self.workers[i] {
                Worker::Idle { until } => *until,
                Worker::Busy(_) => continue,
            };
            if until > now {
                out.wake(until);
                continue;
            }
            // Take the next slot that is still dirty (a restart may have refreshed it).
            let Some((key, old)) = self.next_dirty(state) else {
                break;
            };
            let start_first = self.config.order == UpdateOrder::StartFirst;
            let desired = if start_first || old.is_empty() {
                TaskState::Running
            } else {
                TaskState::Ready
            };
            // Stop-first: what the old task holds (a host port, its reservations, its place
            // under max_replicas_per_node) is free for the new one. Either way the new task
            // goes through the scheduler, so a changed constraint is honoured.
            if !start_first {
                for t in old.iter().filter_map(|id| state.tasks.get(id)) {
                    sched.release(t);
                }
            }
            let global_node = key.0.is_none().then_some(key.1.as_str());
            let task = placed_task(
                svc,
                key.0,
                global_node,
                now,
                ids.next_id(),
                desired,
                vec![],
                sched,
            );
            let new_id = task.id.clone();
            out.commands.push(Command::CreateTask {
                task: Box::new(task),
            });
            if !start_first {
                for id in &old {
                    out.commands.push(Command::SetTaskDesiredState {
                        id: id.clone(),
                        state: TaskState::Shutdown,
                    });
                }
            }
            self.watching.insert(new_id.clone(), now);
            self.workers[i] = Worker::Busy(SlotUpdate {
                old,
                promoted: desired == TaskState::Running,
                new: new_id,
                started: now,
            });
        }
    }

    fn next_dirty(&mut self, state: &State) -> Option<(SlotKey, Vec<TaskId>)> {
        let svc = state.services.get(&self.service)?;
        let replicas = match svc.spec.mode {
            crate::spec::model::Mode::Replicated { replicas } => Some(replicas),
            crate::spec::model::Mode::ReplicatedJob { total, .. } => Some(total),
            crate::spec::model::Mode::Global | crate::spec::model::Mode::GlobalJob => None,
        };
        while let Some(key) = self.queue.pop_front() {
            if let (Some(slot), Some(r)) = (key.0, replicas) {
                if slot > r {
                    continue; // being scaled away, not updated
                }
            }
            let live: Vec<&Task> = state
                .tasks_of(&self.service)
                .filter(|t| t.is_live() && slot_key(t) == key)
                .collect();
            if live.iter().any(|t| is_dirty(t, svc)) {
                return Some((key, live.iter().map(|t| t.id.clone()).collect()));
            }
        }
        None
    }

    fn maybe_complete(&mut self, started: Millis, now: Millis, out: &mut Step) {
        let busy = self.workers.iter().any(|w| matches!(w, Worker::Busy(_)));
        if busy || !self.queue.is_empty() {
            return;
        }
        // Watch one more monitor period after the last slot (delay + 1s if delay ≥ monitor).
        let monitor = self.config.monitor.as_std().as_millis() as Millis;
        let delay = self.config.delay.as_std().as_millis() as Millis;
        let tail = if delay >= monitor {
            delay + 1000
        } else {
            monitor
        };
        let deadline = self.last_done + tail;
        if now < deadline || !self.watching.is_empty() {
            out.wake(deadline.max(now + 100));
            return;
        }
        let (st, msg) = if self.rollback {
            (
                UpdateState::RollbackCompleted,
                "rollback completed".to_string(),
            )
        } else {
            (UpdateState::Completed, "update completed".to_string())
        };
        out.commands.push(self.status(st, started, now, msg));
        self.outcome = Some(Outcome::Completed);
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}
