//! The loops against a simulated node, with a simulated clock: deterministic checks of Swarm's
//! update, restart and rollback semantics. (The same behaviour against the real Docker Engine is
//! tested in tests/it.)

use std::collections::BTreeMap;

use super::*;
use crate::desired::DesiredState;
use crate::spec::{load_stack, NoFiles, Variables};
use crate::store::{ApplyError, Availability, Node, NodeRole, State, TaskState, UpdateState};

/// How a simulated image behaves once started.
#[derive(Clone, Copy)]
enum Behaviour {
    Runs,
    /// Exits with this code this long after starting.
    Exits {
        after: Millis,
        code: i64,
    },
    /// The first `count` tasks of the image exit with code 1 `after` starting; the rest run.
    FailsFirst {
        count: usize,
        after: Millis,
    },
    /// Runs, and ignores being told to stop (a process that traps SIGTERM and carries on).
    IgnoresStop,
}

struct Sim {
    state: State,
    orch: Orchestrator,
    now: Millis,
    images: BTreeMap<String, Behaviour>,
    /// (time, task id, "start" | "stop")
    log: Vec<(Millis, String, &'static str)>,
    max_running: usize,
    /// Tasks started so far, per image (for `FailsFirst`), and the tasks doomed to fail.
    started: BTreeMap<String, usize>,
    doomed: std::collections::BTreeSet<String>,
    /// Tasks that ignore being told to stop, whatever their image.
    stubborn: std::collections::BTreeSet<String>,
}

impl Sim {
    fn new() -> Self {
        let mut state = State::default();
        state
            .apply(Command::UpsertNode {
                node: Node {
                    id: "node-1".into(),
                    hostname: "node-1".into(),
                    role: NodeRole::Manager,
                    availability: Availability::Active,
                    ready: true,
                    os: "linux".into(),
                    arch: "x86_64".into(),
                    ip: "127.0.0.1".into(),
                    labels: Default::default(),
                    engine_labels: Default::default(),
                    nano_cpus: 2_000_000_000,
                    memory_bytes: 8 << 30,
                    engine_version: String::new(),
                },
            })
            .unwrap();
        Sim {
            state,
            orch: Orchestrator::new(IdGen::seeded(7)),
            now: 1_000,
            images: BTreeMap::new(),
            log: Vec::new(),
            max_running: 0,
            started: BTreeMap::new(),
            doomed: Default::default(),
            stubborn: Default::default(),
        }
    }

    fn commit(&mut self, commit: &str, compose: &str) {
        let loaded = load_stack(
            "app",
            "compose.yml",
            compose,
            &NoFiles,
            &Variables::default(),
        );
        assert!(loaded.errors().next().is_none(), "{:?}", loaded.diagnostics);
        let mut desired = DesiredState::default();
        desired.stacks.insert("app".into(), loaded.spec.unwrap());
        self.state
            .apply(Command::ApplyRevision {
                summary: String::new(),
                notify: None,
                trigger: None,
                blocked: Default::default(),
                commit: commit.into(),
                desired,
                prune: true,
                at: self.now,
            })
            .unwrap();
    }

    fn behaviour(&self, image: &str) -> Behaviour {
        self.images.get(image).copied().unwrap_or(Behaviour::Runs)
    }

    /// Run loops and the simulated agent in 100 ms ticks for `ms` milliseconds.
    fn run(&mut self, ms: Millis) {
        let end = self.now + ms;
        while self.now < end {
            for _ in 0..4 {
                let step = self.orch.step(&self.state, self.now);
                if step.commands.is_empty() {
                    break;
                }
                for c in step.commands {
                    let _ = self.state.apply(c);
                }
            }
            self.agent();
            let running = self
                .state
                .tasks
                .values()
                .filter(|t| t.status.state == TaskState::Running)
                .count();
            self.max_running = self.max_running.max(running);
            self.now += 100;
        }
    }

    /// One step per task, like the real agent: prepare, start, watch, stop, remove.
    fn agent(&mut self) {
        let now = self.now;
        let mut reports = Vec::new();
        for t in self.state.tasks.values() {
            // A node that is down says nothing.
            if self.state.nodes.get(&t.node).is_some_and(|n| !n.ready) {
                continue;
            }
            let st = &t.status;
            let mut next = st.clone();
            next.timestamp = now;
            match (st.state, t.desired_state) {
                (TaskState::Remove, _) => continue,
                (s, TaskState::Remove) if s.is_terminal() => next.state = TaskState::Remove,
                (TaskState::Running, d)
                    if d >= TaskState::Shutdown
                        && (self.stubborn.contains(&t.id)
                            || matches!(
                                self.behaviour(&t.spec.container.image),
                                Behaviour::IgnoresStop
                            )) =>
                {
                    continue
                }
                (s, d) if d >= TaskState::Shutdown && !s.is_terminal() => {
                    if s == TaskState::Running {
                        self.log.push((now, t.id.clone(), "stop"));
                    }
                    next.state = TaskState::Shutdown;
                }
                (TaskState::Assigned, d) if d >= TaskState::Ready => next.state = TaskState::Ready,
                (TaskState::Ready, TaskState::Running) => {
                    next.state = TaskState::Running;
                    next.running_since = Some(now);
                    self.log.push((now, t.id.clone(), "start"));
                    let image = &t.spec.container.image;
                    let n = self.started.entry(image.clone()).or_default();
                    *n += 1;
                    if matches!(self.images.get(image), Some(Behaviour::FailsFirst { count, .. }) if *n <= *count)
                    {
                        self.doomed.insert(t.id.clone());
                    }
                }
                (TaskState::Running, _) => match self.behaviour(&t.spec.container.image) {
                    Behaviour::FailsFirst { after, .. }
                        if self.doomed.contains(&t.id)
                            && now >= st.running_since.unwrap() + after =>
                    {
                        next.state = TaskState::Failed;
                        next.exit_code = Some(1);
                        next.error = Some("non-zero exit (1)".into());
                        self.log.push((now, t.id.clone(), "stop"));
                    }
                    Behaviour::Exits { after, code }
                        if now >= st.running_since.unwrap() + after =>
                    {
                        next.state = if code == 0 {
                            TaskState::Complete
                        } else {
                            TaskState::Failed
                        };
                        next.exit_code = Some(code);
                        next.error = (code != 0).then(|| format!("non-zero exit ({code})"));
                        self.log.push((now, t.id.clone(), "stop"));
                    }
                    _ => continue,
                },
                _ => continue,
            }
            reports.push((t.id.clone(), next));
        }
        for (id, status) in reports {
            self.state
                .apply(Command::UpdateTaskStatus { id, status })
                .unwrap();
        }
    }

    fn running_images(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .state
            .tasks
            .values()
            .filter(|t| t.status.state == TaskState::Running)
            .map(|t| t.spec.container.image.clone())
            .collect();
        v.sort();
        v
    }

    fn update_state(&self) -> Option<UpdateState> {
        self.state.services["app_web"]
            .update
            .as_ref()
            .map(|u| u.state)
    }

    fn image_of(&self, id: &str) -> String {
        self.state
            .tasks
            .get(id)
            .map(|t| t.spec.container.image.clone())
            .unwrap_or_default()
    }
}

fn web(image: &str, replicas: u64, update: &str) -> String {
    format!(
        "services:\n  web:\n    image: {image}\n    deploy:\n      replicas: {replicas}\n      restart_policy:\n        delay: 1s\n      update_config:\n{update}"
    )
}

const STOP_FIRST: &str = "        parallelism: 1\n        monitor: 2s\n";
const START_FIRST: &str =
    "        parallelism: 1\n        monitor: 2s\n        order: start-first\n";

#[test]
fn deploys_and_scales_by_commit() {
    let mut sim = Sim::new();
    sim.commit("c1", &web("web:1", 3, STOP_FIRST));
    sim.run(2_000);
    assert_eq!(sim.running_images(), ["web:1"; 3]);
    sim.commit("c2", &web("web:1", 5, STOP_FIRST));
    sim.run(2_000);
    assert_eq!(sim.running_images().len(), 5);
    sim.commit("c3", &web("web:1", 2, STOP_FIRST));
    sim.run(2_000);
    assert_eq!(sim.running_images().len(), 2);
    // Scaling replaced nothing: the first tasks still run.
    let slots: Vec<Option<u64>> = sim
        .state
        .tasks
        .values()
        .filter(|t| t.status.state == TaskState::Running)
        .map(|t| t.slot)
        .collect();
    assert_eq!(slots.len(), 2);
    assert!(slots.iter().all(|s| s.unwrap() <= 2));
}

/// Two leaders, one deposed a moment ago, each step from the same view; Raft commits both
/// steps, one after the other. The slots are filled once: the second step's tasks are refused
/// at apply time because their slots hold a live task of that version already.
#[test]
fn a_step_computed_by_a_deposed_leader_fills_no_slot_twice() {
    let mut sim = Sim::new();
    sim.commit("c1", &web("web:1", 3, STOP_FIRST));
    let view = sim.state.clone();
    let old = Orchestrator::new(IdGen::seeded(1)).step(&view, sim.now);
    let new = Orchestrator::new(IdGen::seeded(2)).step(&view, sim.now);
    let creates = |cmds: &[Command]| {
        cmds.iter()
            .filter(|c| matches!(c, Command::CreateTask { .. }))
            .count()
    };
    assert_eq!(creates(&new.commands), 3);
    assert_eq!(creates(&old.commands), 3);
    let mut refused = 0;
    for c in new.commands.into_iter().chain(old.commands) {
        if let Err(ApplyError::SlotTaken { .. }) = sim.state.apply(c) {
            refused += 1;
        }
    }
    assert_eq!(refused, 3);
    sim.run(2_000);
    assert_eq!(sim.running_images(), ["web:1"; 3]);
    assert_eq!(sim.state.tasks.len(), 3, "no duplicate task was ever made");

    // During a rolling update the new version's task may share its slot with the old one
    // (start-first): a new version is not a duplicate.
    sim.commit("c2", &web("web:2", 3, START_FIRST));
    sim.run(10_000);
    assert_eq!(sim.running_images(), ["web:2"; 3]);
}

#[test]
fn stop_first_stops_the_old_task_before_the_new_one_starts() {
    let mut sim = Sim::new();
    sim.commit("c1", &web("web:1", 3, STOP_FIRST));
    sim.run(2_000);
    sim.max_running = 0;
    sim.log.clear();
    sim.commit("c2", &web("web:2", 3, STOP_FIRST));
    sim.run(20_000);
    assert_eq!(sim.running_images(), ["web:2"; 3]);
    assert_eq!(sim.update_state(), Some(UpdateState::Completed));
    assert!(sim.max_running <= 3, "never more than the replica count");
    // Per slot, the old stop precedes the new start; slots go one at a time.
    let starts: Vec<Millis> = sim
        .log
        .iter()
        .filter(|e| e.2 == "start")
        .map(|e| e.0)
        .collect();
    let stops: Vec<Millis> = sim
        .log
        .iter()
        .filter(|e| e.2 == "stop")
        .map(|e| e.0)
        .collect();
    assert_eq!((starts.len(), stops.len()), (3, 3));
    for i in 0..3 {
        assert!(
            stops[i] <= starts[i],
            "slot {i}: stop at {} start at {}",
            stops[i],
            starts[i]
        );
    }
    assert!(starts.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn start_first_starts_the_new_task_before_the_old_one_stops() {
    let mut sim = Sim::new();
    sim.commit("c1", &web("web:1", 3, START_FIRST));
    sim.run(2_000);
    sim.max_running = 0;
    sim.log.clear();
    sim.commit("c2", &web("web:2", 3, START_FIRST));
    sim.run(20_000);
    assert_eq!(sim.running_images(), ["web:2"; 3]);
    assert_eq!(sim.max_running, 4, "one extra task at a time");
    let first_start = sim.log.iter().find(|e| e.2 == "start").unwrap();
    let first_stop = sim.log.iter().find(|e| e.2 == "stop").unwrap();
    assert!(first_start.0 <= first_stop.0);
    assert_eq!(sim.image_of(&first_start.1), "web:2");
}

#[test]
fn parallelism_zero_updates_every_slot_at_once() {
    let mut sim = Sim::new();
    let all = "        parallelism: 0\n        monitor: 1s\n";
    sim.commit("c1", &web("web:1", 4, all));
    sim.run(2_000);
    sim.log.clear();
    sim.commit("c2", &web("web:2", 4, all));
    sim.run(5_000);
    let starts: Vec<Millis> = sim
        .log
        .iter()
        .filter(|e| e.2 == "start")
        .map(|e| e.0)
        .collect();
    assert_eq!(starts.len(), 4);
    assert!(starts.iter().all(|t| *t == starts[0]), "{starts:?}");
}

#[test]
fn delay_spaces_the_slots() {
    let mut sim = Sim::new();
    let delayed = "        parallelism: 1\n        delay: 3s\n        monitor: 1s\n";
    sim.commit("c1", &web("web:1", 3, delayed));
    sim.run(2_000);
    sim.log.clear();
    sim.commit("c2", &web("web:2", 3, delayed));
    sim.run(30_000);
    let starts: Vec<Millis> = sim
        .log
        .iter()
        .filter(|e| e.2 == "start")
        .map(|e| e.0)
        .collect();
    assert_eq!(starts.len(), 3);
    assert!(
        starts.windows(2).all(|w| w[1] - w[0] >= 3_000),
        "{starts:?}"
    );
}

#[test]
fn a_failing_version_with_failure_action_rollback_returns_to_the_old_spec() {
    let mut sim = Sim::new();
    sim.images.insert(
        "web:bad".into(),
        Behaviour::Exits {
            after: 500,
            code: 1,
        },
    );
    let rollback =
        "        parallelism: 1\n        monitor: 3s\n        failure_action: rollback\n";
    sim.commit("c1", &web("web:1", 3, rollback));
    sim.run(2_000);
    sim.commit("c2", &web("web:bad", 3, rollback));
    sim.run(30_000);
    let svc = &sim.state.services["app_web"];
    assert_eq!(svc.spec.task.container.image, "web:1", "spec rolled back");
    assert_eq!(sim.update_state(), Some(UpdateState::RollbackCompleted));
    assert_eq!(sim.running_images(), ["web:1"; 3]);
    assert!(
        svc.update.as_ref().unwrap().message.contains("rollback"),
        "{:?}",
        svc.update
    );
    // Settled: nothing to do, and no reason to look again before something changes.
    let step = sim.orch.step(&sim.state, sim.now);
    assert!(step.commands.is_empty(), "{:?}", step.commands);
    assert!(
        step.wake_at.is_none_or(|at| at > sim.now),
        "an idle orchestrator must not ask to run again at once: {:?}",
        step.wake_at
    );
}

#[test]
fn an_update_says_it_started_once_and_keeps_its_start_time() {
    let mut sim = Sim::new();
    sim.commit("c1", &web("web:1", 3, STOP_FIRST));
    sim.run(2_000);
    sim.commit("c2", &web("web:2", 3, STOP_FIRST));
    let started = sim.now;
    sim.run(100);
    let status = sim.state.services["app_web"].update.clone().unwrap();
    assert_eq!(status.state, UpdateState::Updating);
    assert_eq!(status.message, "update in progress");
    assert_eq!(status.started_at, started);
    sim.run(1_000);
    let later = sim.state.services["app_web"].update.clone().unwrap();
    assert_eq!(later.started_at, started, "said once, not again each pass");
}

#[test]
fn a_failing_version_with_failure_action_pause_stops_with_a_reason() {
    let mut sim = Sim::new();
    sim.images.insert(
        "web:bad".into(),
        Behaviour::Exits {
            after: 500,
            code: 1,
        },
    );
    // The delay keeps the next slot waiting until the first new task has failed (Swarm moves on
    // once a new task runs; the monitor window catches failures after that).
    let paced = "        parallelism: 1\n        delay: 2s\n        monitor: 3s\n";
    sim.commit("c1", &web("web:1", 3, paced));
    sim.run(2_000);
    sim.commit("c2", &web("web:bad", 3, paced));
    sim.run(10_000);
    assert_eq!(sim.update_state(), Some(UpdateState::Paused));
    let msg = &sim.state.services["app_web"]
        .update
        .as_ref()
        .unwrap()
        .message;
    assert!(msg.contains("update paused due to failure"), "{msg}");
    assert!(msg.contains("non-zero exit (1)"), "{msg}");
    // It names the task as `service ps` shows it: the first 12 characters of its id.
    let named = sim
        .log
        .iter()
        .any(|(_, id, _)| msg.contains(&format!("task {} failed", &id[..12])));
    assert!(named, "{msg}");
    // Paused: the two untouched slots keep the old version; nothing more is handed out.
    let before: std::collections::BTreeSet<String> = sim.state.tasks.keys().cloned().collect();
    sim.run(10_000);
    let old = sim
        .running_images()
        .iter()
        .filter(|i| *i == "web:1")
        .count();
    assert_eq!(old, 2);
    let bad_tasks = sim
        .state
        .tasks
        .values()
        .filter(|t| t.spec.container.image == "web:bad" && t.slot != Some(1))
        .count();
    assert_eq!(bad_tasks, 0, "no other slot was touched");
    // Nothing more was handed out: the only tasks made since the pause are the restart
    // policy's replacements in the failed slot (Swarm's restart supervisor keeps working while
    // an update is paused), never a task in another slot.
    let new: Vec<(&String, Option<u64>)> = sim
        .state
        .tasks
        .values()
        .filter(|t| !before.contains(&t.id))
        .map(|t| (&t.id, t.slot))
        .collect();
    assert!(
        new.iter().all(|(_, slot)| *slot == Some(1)),
        "tasks handed out while paused: {new:?}"
    );
}

#[test]
fn max_failure_ratio_tolerates_some_failures() {
    let mut sim = Sim::new();
    // One replica in four runs a version that fails: 1/4 = 0.25 <= 0.3, so the update goes on.
    let tolerant = "        parallelism: 1\n        delay: 1s\n        monitor: 1s\n        max_failure_ratio: 0.3\n";
    sim.commit("c1", &web("web:1", 4, tolerant));
    sim.run(2_000);
    sim.images.insert(
        "web:2".into(),
        Behaviour::Exits {
            after: 300,
            code: 1,
        },
    );
    sim.commit("c2", &web("web:2", 4, tolerant));
    // Make only the first new task fail: switch behaviour back after it has failed.
    sim.run(900);
    sim.images.remove("web:2");
    sim.run(20_000);
    assert_eq!(sim.update_state(), Some(UpdateState::Completed));
    assert_eq!(sim.running_images(), ["web:2"; 4]);
}

#[test]
fn max_attempts_is_honoured_and_the_slot_stays_down() {
    let mut sim = Sim::new();
    sim.images.insert(
        "crash:1".into(),
        Behaviour::Exits {
            after: 200,
            code: 1,
        },
    );
    let compose = "services:\n  web:\n    image: crash:1\n    deploy:\n      restart_policy:\n        delay: 1s\n        max_attempts: 2\n";
    sim.commit("c1", compose);
    sim.run(30_000);
    let tasks: Vec<&Task> = sim.state.tasks.values().collect();
    assert_eq!(tasks.len(), 3, "the first task and two restarts");
    assert!(tasks.iter().all(|t| t.status.state == TaskState::Failed));
    // Restarts were spaced by at least the delay.
    let mut created: Vec<Millis> = tasks.iter().map(|t| t.created_at).collect();
    created.sort();
    assert!(
        created.windows(2).all(|w| w[1] - w[0] >= 1_000),
        "{created:?}"
    );
    // A new spec resets the count.
    sim.commit("c2", &compose.replace("max_attempts: 2", "max_attempts: 1"));
    sim.run(10_000);
    assert_eq!(sim.state.tasks.len(), 5);
}

#[test]
fn restart_condition_on_failure_leaves_a_completed_task_alone() {
    let mut sim = Sim::new();
    sim.images.insert(
        "job:1".into(),
        Behaviour::Exits {
            after: 200,
            code: 0,
        },
    );
    let compose = "services:\n  web:\n    image: job:1\n    deploy:\n      restart_policy:\n        condition: on-failure\n        delay: 1s\n";
    sim.commit("c1", compose);
    sim.run(10_000);
    assert_eq!(sim.state.tasks.len(), 1);
    assert_eq!(
        sim.state.tasks.values().next().unwrap().status.state,
        TaskState::Complete
    );
}

#[test]
fn a_task_that_dies_is_replaced_after_the_restart_delay() {
    let mut sim = Sim::new();
    sim.commit("c1", &web("web:1", 2, STOP_FIRST));
    sim.run(2_000);
    // Someone kills a container by hand: the agent reports it failed.
    let victim = sim
        .state
        .tasks
        .values()
        .find(|t| t.slot == Some(1))
        .unwrap()
        .clone();
    let mut status = victim.status.clone();
    status.state = TaskState::Failed;
    status.timestamp = sim.now;
    sim.state
        .apply(Command::UpdateTaskStatus {
            id: victim.id.clone(),
            status,
        })
        .unwrap();
    let died = sim.now;
    sim.run(3_000);
    let replacement = sim
        .state
        .tasks
        .values()
        .find(|t| t.slot == Some(1) && t.id != victim.id)
        .expect("replaced");
    assert!(replacement.created_at >= died + 1_000, "after the 1s delay");
    assert_eq!(sim.running_images().len(), 2);
}

#[test]
fn a_removed_stack_leaves_nothing_behind() {
    let mut sim = Sim::new();
    sim.commit("c1", &web("web:1", 2, STOP_FIRST));
    sim.run(2_000);
    sim.state
        .apply(Command::ApplyRevision {
            summary: String::new(),
            notify: None,
            trigger: None,
            blocked: Default::default(),
            commit: "c2".into(),
            desired: DesiredState::default(),
            prune: true,
            at: sim.now,
        })
        .unwrap();
    sim.run(2_000);
    assert!(sim.state.services.is_empty());
    assert!(sim.state.tasks.is_empty(), "{:?}", sim.state.tasks.keys());
    assert!(sim.state.networks.is_empty());
}

#[test]
fn task_history_is_bounded_per_slot() {
    let mut sim = Sim::new();
    sim.images.insert(
        "crash:1".into(),
        Behaviour::Exits {
            after: 100,
            code: 1,
        },
    );
    let compose = "services:\n  web:\n    image: crash:1\n    deploy:\n      restart_policy:\n        delay: 100ms\n";
    sim.commit("c1", compose);
    sim.run(20_000);
    let ended = sim
        .state
        .tasks
        .values()
        .filter(|t| t.status.state.is_terminal())
        .count();
    assert!(ended <= TASK_HISTORY_LIMIT + 1, "{ended} ended tasks kept");
}

#[test]
fn a_constraint_no_node_satisfies_leaves_the_task_pending_with_a_reason() {
    let mut sim = Sim::new();
    let compose = "services:\n  web:\n    image: web:1\n    deploy:\n      placement:\n        constraints: [node.labels.zone == eu]\n";
    sim.commit("c1", compose);
    sim.run(1_000);
    let t = sim.state.tasks.values().next().expect("a pending task");
    assert_eq!(t.status.state, TaskState::Pending);
    assert_eq!(
        t.status.error.as_deref(),
        Some("no suitable node (1 node does not satisfy the placement constraints)")
    );
}

impl Sim {
    /// Add a node like node-1 with these labels.
    fn add_node(&mut self, id: &str, labels: &[(&str, &str)]) {
        let mut node = self.state.nodes["node-1"].clone();
        node.id = id.into();
        node.hostname = id.into();
        node.labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.state.apply(Command::UpsertNode { node }).unwrap();
    }

    fn nodes_running(&self, image: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .state
            .tasks
            .values()
            .filter(|t| t.status.state == TaskState::Running && t.spec.container.image == image)
            .map(|t| t.node.clone())
            .collect();
        v.sort();
        v
    }
}

#[test]
fn a_rolling_update_places_new_tasks_by_the_new_constraints() {
    let mut sim = Sim::new();
    sim.add_node("node-2", &[("zone", "eu")]);
    let spec = |image: &str, constraint: &str| {
        format!(
            "services:\n  web:\n    image: {image}\n    deploy:\n      replicas: 2\n      placement:\n        constraints: [{constraint}]\n      update_config:\n        parallelism: 1\n        monitor: 1s\n"
        )
    };
    sim.commit("c1", &spec("web:1", "node.labels.zone != eu"));
    sim.run(2_000);
    assert_eq!(sim.nodes_running("web:1"), ["node-1", "node-1"]);
    // The update moves them: a new task does not simply inherit the old one's node.
    sim.commit("c2", &spec("web:2", "node.labels.zone == eu"));
    sim.run(20_000);
    assert_eq!(sim.nodes_running("web:2"), ["node-2", "node-2"]);
    assert!(sim.nodes_running("web:1").is_empty());
}

#[test]
fn a_crash_loop_keeps_only_the_restart_history_the_policy_needs() {
    let mut sim = Sim::new();
    sim.images.insert(
        "web:crash".into(),
        Behaviour::Exits {
            after: 100,
            code: 1,
        },
    );
    let spec = |policy: &str| {
        format!(
            "services:\n  web:\n    image: web:crash\n    deploy:\n      restart_policy:\n        delay: 100ms\n{policy}"
        )
    };
    // Unlimited attempts: nothing to count, nothing kept.
    sim.commit("c1", &spec(""));
    sim.run(30_000);
    let most = sim.state.tasks.values().map(|t| t.restarts.len()).max();
    assert_eq!(most, Some(0), "with no max_attempts no history is needed");
    // With a window, only the restarts within it, and never more than max_attempts.
    sim.commit(
        "c2",
        &spec("        max_attempts: 1000\n        window: 2s\n"),
    );
    sim.run(30_000);
    let most = sim
        .state
        .tasks
        .values()
        .map(|t| t.restarts.len())
        .max()
        .unwrap();
    assert!(
        (1..=10).contains(&most),
        "a 2 s window of restarts 0.2 s apart keeps about 10, kept {most}"
    );
}

#[test]
fn restarts_to_keep_trims_by_window_and_attempts() {
    use crate::spec::model::RestartPolicy;
    use crate::spec::units::Duration as D;
    let policy = |max_attempts, window_ms| RestartPolicy {
        max_attempts,
        window: D(std::time::Duration::from_millis(window_ms)),
        ..RestartPolicy::default()
    };
    let times = vec![1_000, 2_000, 3_000, 4_000, 5_000];
    assert_eq!(
        restarts_to_keep(&policy(0, 0), times.clone(), 5_000),
        Vec::<Millis>::new()
    );
    assert_eq!(
        restarts_to_keep(&policy(3, 0), times.clone(), 5_000),
        [3_000, 4_000, 5_000]
    );
    assert_eq!(
        restarts_to_keep(&policy(10, 1_500), times.clone(), 5_000),
        [4_000, 5_000]
    );
    assert_eq!(
        restarts_to_keep(&policy(10, 0), times.clone(), 5_000),
        times
    );
}

#[test]
fn tasks_that_never_found_a_node_go_with_their_service() {
    let mut sim = Sim::new();
    let pending = "services:\n  web:\n    image: web:1\n    deploy:\n      replicas: 3\n      placement:\n        constraints: [node.labels.zone == eu]\n";
    sim.commit("c1", pending);
    sim.run(1_000);
    assert_eq!(sim.state.tasks.len(), 3);
    assert!(sim
        .state
        .tasks
        .values()
        .all(|t| t.status.state == TaskState::Pending));
    // The stack leaves git: no agent will ever report these removed, the reaper must.
    sim.state
        .apply(Command::ApplyRevision {
            summary: String::new(),
            notify: None,
            trigger: None,
            blocked: Default::default(),
            commit: "c2".into(),
            desired: DesiredState::default(),
            prune: true,
            at: sim.now,
        })
        .unwrap();
    sim.run(2_000);
    assert!(sim.state.tasks.is_empty(), "{:?}", sim.state.tasks.keys());
}

impl Sim {
    /// When the last task of `image` reached running.
    fn last_started(&self, image: &str) -> Millis {
        self.state
            .tasks
            .values()
            .filter(|t| t.spec.container.image == image)
            .filter_map(|t| t.status.running_since)
            .max()
            .expect("a task of the image ran")
    }

    fn completed_at(&self) -> Millis {
        let u = self.state.services["app_web"].update.clone().unwrap();
        assert_eq!(u.state, UpdateState::Completed, "{u:?}");
        u.completed_at.unwrap()
    }
}

#[test]
fn an_update_completes_one_monitor_period_after_its_last_slot() {
    let mut sim = Sim::new();
    let update = "        parallelism: 1\n        monitor: 3s\n";
    sim.commit("c1", &web("web:1", 2, update));
    sim.run(2_000);
    sim.commit("c2", &web("web:2", 2, update));
    sim.run(20_000);
    let tail = sim.completed_at() - sim.last_started("web:2");
    // The orchestrator sees the task running on its next pass, 100 ms later; the update
    // completes a monitor period after that, on the dot.
    assert_eq!(tail, 3_100, "completed {tail} ms after the last start");
}

#[test]
fn with_a_delay_as_long_as_monitor_the_tail_is_the_delay_and_a_second() {
    for order in ["stop-first", "start-first"] {
        let mut sim = Sim::new();
        let update =
            format!("        parallelism: 1\n        monitor: 2s\n        delay: 5s\n        order: {order}\n");
        sim.commit("c1", &web("web:1", 2, &update));
        sim.run(2_000);
        sim.commit("c2", &web("web:2", 2, &update));
        sim.run(40_000);
        let tail = sim.completed_at() - sim.last_started("web:2");
        assert_eq!(
            tail, 6_100,
            "{order}: completed {tail} ms after the last start"
        );
        // And the slots were the delay apart (plus the pass that saw the first one run).
        let starts: Vec<Millis> = sim
            .state
            .tasks
            .values()
            .filter(|t| t.spec.container.image == "web:2")
            .filter_map(|t| t.status.running_since)
            .collect();
        let gap = starts.iter().max().unwrap() - starts.iter().min().unwrap();
        assert_eq!(
            gap,
            GAP_AFTER_DELAY[usize::from(order == "start-first")],
            "{order}: slots {gap} ms apart"
        );
    }
}

/// The delay, then the pass that hands the slot out and the one that starts it (stop-first: the
/// old task stops in the first, start-first: the new one is prepared in it).
const GAP_AFTER_DELAY: [Millis; 2] = [5_200, 5_200];

#[test]
fn a_stop_first_slot_waits_at_most_a_minute_for_the_old_task() {
    let mut sim = Sim::new();
    sim.images
        .insert("web:stubborn".into(), Behaviour::IgnoresStop);
    sim.commit("c1", &web("web:stubborn", 1, STOP_FIRST));
    sim.run(2_000);
    sim.commit("c2", &web("web:2", 1, STOP_FIRST));
    let handed_out = sim.now;
    sim.run(30_000);
    assert!(
        sim.nodes_running("web:2").is_empty(),
        "still waiting for the old task"
    );
    sim.run(40_000);
    let waited = sim.last_started("web:2") - handed_out;
    assert!(
        (60_000..=60_400).contains(&waited),
        "new task started after {waited} ms"
    );
}

#[test]
fn failures_up_to_max_failure_ratio_are_tolerated_and_one_more_is_not() {
    // Two slots, ratio 0.5: one failure is exactly the ratio (tolerated, Swarm fires only
    // above it).
    let mut sim = Sim::new();
    sim.images.insert(
        "web:flaky".into(),
        Behaviour::FailsFirst {
            count: 1,
            after: 500,
        },
    );
    let update = "        parallelism: 1\n        monitor: 2s\n        max_failure_ratio: 0.5\n";
    sim.commit("c1", &web("web:1", 2, update));
    sim.run(2_000);
    sim.commit("c2", &web("web:flaky", 2, update));
    sim.run(40_000);
    assert_eq!(sim.update_state(), Some(UpdateState::Completed));
    // Two failures of two slots is above it.
    let mut sim = Sim::new();
    sim.images.insert(
        "web:flaky".into(),
        Behaviour::FailsFirst {
            count: 2,
            after: 500,
        },
    );
    sim.commit("c1", &web("web:1", 2, update));
    sim.run(2_000);
    sim.commit("c2", &web("web:flaky", 2, update));
    sim.run(40_000);
    assert_eq!(sim.update_state(), Some(UpdateState::Paused));
}

#[test]
fn a_task_that_fails_only_after_the_monitor_period_is_not_the_updates_failure() {
    for (after, expected) in [
        (2_900, UpdateState::Paused),
        (3_000, UpdateState::Completed),
    ] {
        let mut sim = Sim::new();
        sim.images
            .insert("web:late".into(), Behaviour::FailsFirst { count: 1, after });
        let update = "        parallelism: 1\n        monitor: 3s\n";
        sim.commit("c1", &web("web:1", 1, update));
        sim.run(2_000);
        sim.commit("c2", &web("web:late", 1, update));
        sim.run(30_000);
        assert_eq!(
            sim.update_state(),
            Some(expected),
            "failing {after} ms after start"
        );
    }
}

impl Sim {
    /// The task of `image` the update handed out (the newest).
    fn newest(&self, image: &str) -> Task {
        self.state
            .tasks
            .values()
            .filter(|t| t.spec.container.image == image)
            .max_by_key(|t| t.created_at)
            .cloned()
            .expect("a task of the image")
    }

    /// Say, as an agent would, that `id` ended in `state` at `at`.
    fn report(&mut self, id: &str, state: TaskState, at: Millis) {
        let mut status = self.state.tasks[id].status.clone();
        status.state = state;
        status.timestamp = at;
        status.exit_code = Some(1);
        status.error = Some("non-zero exit (1)".into());
        self.state
            .apply(Command::UpdateTaskStatus {
                id: id.into(),
                status,
            })
            .unwrap();
    }

    /// An update of one replica to web:2 under `update`, run until the new task runs.
    fn one_slot_update(update: &str) -> (Sim, Task) {
        let mut sim = Sim::new();
        sim.commit("c1", &web("web:1", 1, update));
        sim.run(2_000);
        sim.commit("c2", &web("web:2", 1, update));
        sim.run(300);
        let new = sim.newest("web:2");
        assert_eq!(new.status.state, TaskState::Running);
        (sim, new)
    }
}

#[test]
fn the_orchestrator_asks_to_look_again_when_a_monitor_window_ends() {
    let (mut sim, new) = Sim::one_slot_update("        monitor: 5s\n");
    let since = new.status.running_since.unwrap();
    let step = sim.orch.step(&sim.state, sim.now);
    let wake = step
        .wake_at
        .expect("a wake time while a task is under watch");
    assert!(
        wake <= since + 5_000,
        "woken at {wake}, the window ends at {}",
        since + 5_000
    );
    assert!(wake > sim.now, "{wake} is not in the future");
}

#[test]
fn a_failure_counts_only_strictly_within_the_monitor_window() {
    for (after, counts) in [(2_999, true), (3_000, false)] {
        let (mut sim, new) = Sim::one_slot_update("        monitor: 3s\n");
        let since = new.status.running_since.unwrap();
        // The report arrives before the orchestrator has seen the window end.
        sim.report(&new.id, TaskState::Failed, since + after);
        let step = sim.orch.step(&sim.state, sim.now);
        let paused = step.commands.iter().any(|c| {
            matches!(c, Command::SetUpdateStatus { status: Some(s), .. } if s.state == UpdateState::Paused)
        });
        assert_eq!(paused, counts, "a failure {after} ms after running");
    }
}

#[test]
fn failure_action_continue_carries_on_past_failures() {
    let mut sim = Sim::new();
    sim.images.insert(
        "web:bad".into(),
        Behaviour::Exits {
            after: 500,
            code: 1,
        },
    );
    let update = "        parallelism: 1\n        monitor: 2s\n        failure_action: continue\n";
    sim.commit("c1", &web("web:1", 2, update));
    sim.run(2_000);
    sim.commit("c2", &web("web:bad", 2, update));
    sim.run(30_000);
    assert_eq!(sim.update_state(), Some(UpdateState::Completed));
}

#[test]
fn start_first_keeps_the_old_task_when_the_new_one_dies_before_it_is_seen_running() {
    let update =
        "        order: start-first\n        monitor: 2s\n        failure_action: continue\n";
    let mut sim = Sim::new();
    sim.commit("c1", &web("web:1", 1, update));
    sim.run(2_000);
    let old = sim.newest("web:1");
    sim.commit("c2", &web("web:2", 1, update));
    // Hand the slot out, and let the agent start the new task...
    let step = sim.orch.step(&sim.state, sim.now);
    for c in step.commands {
        let _ = sim.state.apply(c);
    }
    sim.agent();
    sim.now += 100;
    sim.agent();
    let new = sim.newest("web:2");
    assert_eq!(new.status.state, TaskState::Running);
    // ...which dies before the orchestrator looks again.
    sim.report(&new.id, TaskState::Failed, sim.now);
    let step = sim.orch.step(&sim.state, sim.now);
    let stops_old = step.commands.iter().any(|c| {
        matches!(c, Command::SetTaskDesiredState { id, state } if *id == old.id && *state >= TaskState::Shutdown)
    });
    assert!(
        !stops_old,
        "the old task keeps serving: {:?}",
        step.commands
    );
}

#[test]
fn a_waiting_stop_first_slot_asks_to_be_woken_at_the_cap() {
    let mut sim = Sim::new();
    sim.images
        .insert("web:stubborn".into(), Behaviour::IgnoresStop);
    sim.commit("c1", &web("web:stubborn", 1, STOP_FIRST));
    sim.run(2_000);
    sim.commit("c2", &web("web:2", 1, STOP_FIRST));
    let handed_out = sim.now;
    sim.run(1_000);
    let wake = sim.orch.step(&sim.state, sim.now).wake_at.unwrap();
    assert!(
        wake <= handed_out + 60_000 && wake > sim.now,
        "woken at {wake}"
    );
}

#[test]
fn an_update_is_not_complete_while_a_slot_is_still_in_flight() {
    let update = "        parallelism: 2\n        monitor: 1s\n";
    let mut sim = Sim::new();
    sim.commit("c1", &web("web:1", 2, update));
    sim.run(2_000);
    // One old task will not stop: its slot waits for the one-minute cap.
    let one = sim.newest("web:1").id;
    sim.stubborn.insert(one);
    sim.commit("c2", &web("web:2", 2, update));
    sim.run(10_000);
    assert_eq!(sim.update_state(), Some(UpdateState::Updating));
    sim.run(60_000);
    assert_eq!(sim.update_state(), Some(UpdateState::Completed));
}

#[test]
fn the_wake_after_the_last_slot_is_the_completion_time() {
    let (mut sim, new) = Sim::one_slot_update("        monitor: 1s\n        delay: 5s\n");
    let since = new.status.running_since.unwrap();
    // Seen running at since + 100: complete 6 s (delay + 1 s) after that.
    let step = sim.orch.step(&sim.state, since + 5_200);
    assert_eq!(step.wake_at, Some(since + 6_100));
    // Within a pass of it, look again a pass later rather than at once.
    let step = sim.orch.step(&sim.state, since + 6_050);
    assert_eq!(step.wake_at, Some(since + 6_150));
    let step = sim.orch.step(&sim.state, since + 6_100);
    assert!(step.commands.iter().any(|c| matches!(c, Command::SetUpdateStatus { status: Some(s), .. } if s.state == UpdateState::Completed)));
}

#[test]
fn stop_first_frees_the_old_tasks_place_and_start_first_does_not() {
    let spec = |image: &str, order: &str| {
        format!(
            "services:\n  web:\n    image: {image}\n    deploy:\n      replicas: 1\n      placement:\n        max_replicas_per_node: 1\n      update_config:\n        order: {order}\n        monitor: 1s\n"
        )
    };
    // Stop-first on a single node: the new task takes the old one's place at once.
    let mut sim = Sim::new();
    sim.commit("c1", &spec("web:1", "stop-first"));
    sim.run(2_000);
    sim.commit("c2", &spec("web:2", "stop-first"));
    let step = sim.orch.step(&sim.state, sim.now);
    let placed = step.commands.iter().any(|c| {
        matches!(c, Command::CreateTask { task } if task.spec.container.image == "web:2" && task.node == "node-1")
    });
    assert!(placed, "{:?}", step.commands);
    // Start-first: the old task still holds the node's one place, so the new one waits.
    let mut sim = Sim::new();
    sim.commit("c1", &spec("web:1", "start-first"));
    sim.run(2_000);
    sim.commit("c2", &spec("web:2", "start-first"));
    sim.run(1_000);
    let new = sim.newest("web:2");
    assert_eq!(new.status.state, TaskState::Pending);
    assert_eq!(
        new.status.error.as_deref(),
        Some("no suitable node (1 node at max_replicas_per_node)")
    );
    assert_eq!(
        sim.nodes_running("web:1"),
        ["node-1"],
        "the old one keeps serving"
    );
}

#[test]
fn start_first_waits_the_delay_after_a_new_task_that_died_before_running() {
    let update = "        order: start-first\n        parallelism: 1\n        delay: 5s\n        monitor: 1s\n        failure_action: continue\n";
    let mut sim = Sim::new();
    sim.commit("c1", &web("web:1", 2, update));
    sim.run(2_000);
    sim.commit("c2", &web("web:2", 2, update));
    // Hand the first slot out and let the agent start its new task...
    let step = sim.orch.step(&sim.state, sim.now);
    for c in step.commands {
        let _ = sim.state.apply(c);
    }
    sim.agent();
    sim.now += 100;
    sim.agent();
    let first = sim.newest("web:2");
    // ...which dies before the orchestrator sees it running.
    sim.report(&first.id, TaskState::Failed, sim.now);
    let died = sim.now;
    let other_slot = |sim: &Sim| {
        sim.state
            .tasks
            .values()
            .filter(|t| t.spec.container.image == "web:2" && t.slot != first.slot)
            .count()
    };
    sim.run(4_500);
    assert_eq!(other_slot(&sim), 0, "the next slot waits the delay");
    sim.run(died + 8_000 - sim.now);
    assert_eq!(other_slot(&sim), 1, "and is handed out after it");
}

impl Sim {
    fn set_node(&mut self, id: &str, change: impl FnOnce(&mut Node)) {
        let mut node = self.state.nodes[id].clone();
        change(&mut node);
        self.state.apply(Command::UpsertNode { node }).unwrap();
    }

    fn running_per_node(&self, image: &str) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for n in self.nodes_running(image) {
            *m.entry(n).or_default() += 1;
        }
        m
    }
}

#[test]
fn a_down_nodes_replicated_tasks_run_elsewhere_and_its_global_task_waits_for_it() {
    let mut sim = Sim::new();
    sim.add_node("node-2", &[]);
    sim.add_node("node-3", &[]);
    sim.commit(
        "c1",
        "services:\n  web:\n    image: web:1\n    deploy:\n      replicas: 6\n  agent:\n    image: agent:1\n    deploy:\n      mode: global\n",
    );
    sim.run(2_000);
    assert_eq!(
        sim.running_per_node("web:1")
            .into_values()
            .collect::<Vec<_>>(),
        [2, 2, 2]
    );
    sim.set_node("node-3", |n| n.ready = false);
    sim.run(2_000);
    let live_on_3 = |sim: &Sim, image: &str| {
        sim.state
            .tasks
            .values()
            .filter(|t| t.node == "node-3" && t.spec.container.image == image && t.is_live())
            .count()
    };
    // Six run on the two nodes left, the down node's tasks are told to stop...
    assert_eq!(
        sim.running_per_node("web:1")
            .into_iter()
            .filter(|(n, _)| n != "node-3")
            .map(|(_, c)| c)
            .sum::<usize>(),
        6
    );
    assert_eq!(live_on_3(&sim, "web:1"), 0);
    // ...but its global task is left for when it returns, and none is added elsewhere.
    assert_eq!(live_on_3(&sim, "agent:1"), 1);
    assert_eq!(sim.nodes_running("agent:1").len(), 3);
    // Back: its old replicated tasks stop (the agent is told so), nothing is duplicated.
    sim.set_node("node-3", |n| n.ready = true);
    sim.run(2_000);
    assert!(!sim.running_per_node("web:1").contains_key("node-3"));
    assert_eq!(sim.nodes_running("web:1").len(), 6);
    assert_eq!(sim.nodes_running("agent:1").len(), 3);
}

#[test]
fn draining_a_node_moves_its_tasks_and_its_global_task_goes() {
    let mut sim = Sim::new();
    sim.add_node("node-2", &[]);
    sim.commit(
        "c1",
        "services:\n  web:\n    image: web:1\n    deploy:\n      replicas: 4\n  agent:\n    image: agent:1\n    deploy:\n      mode: global\n",
    );
    sim.run(2_000);
    assert_eq!(sim.running_per_node("web:1")["node-2"], 2);
    sim.set_node("node-2", |n| n.availability = Availability::Drain);
    sim.run(3_000);
    assert_eq!(
        sim.running_per_node("web:1"),
        BTreeMap::from([("node-1".to_string(), 4)])
    );
    assert_eq!(sim.nodes_running("agent:1"), ["node-1"]);
    // Active again: new placements may use it; what runs stays where it is (as Swarm).
    sim.set_node("node-2", |n| n.availability = Availability::Active);
    sim.run(2_000);
    assert_eq!(sim.nodes_running("agent:1"), ["node-1", "node-2"]);
}

#[test]
fn a_replicated_job_completes_its_total_one_at_a_time_and_is_not_started_again() {
    let mut sim = Sim::new();
    sim.images.insert(
        "job:1".into(),
        Behaviour::Exits {
            after: 500,
            code: 0,
        },
    );
    sim.commit(
        "c1",
        "services:\n  once:\n    image: job:1\n    deploy:\n      mode: replicated-job\n      replicas: 3\n      max_concurrent: 1\n",
    );
    sim.run(10_000);
    let tasks: Vec<&Task> = sim.state.tasks.values().collect();
    assert_eq!(tasks.len(), 3, "{tasks:#?}");
    assert!(tasks.iter().all(|t| t.status.state == TaskState::Complete));
    assert_eq!(sim.max_running, 1);
    // Completed: nothing more is started, however long it is left.
    sim.run(10_000);
    assert_eq!(sim.state.tasks.len(), 3);
}

#[test]
fn a_failing_job_task_is_retried_and_a_new_spec_runs_the_job_again() {
    let mut sim = Sim::new();
    sim.images.insert(
        "job:1".into(),
        Behaviour::FailsFirst {
            count: 1,
            after: 200,
        },
    );
    sim.images.insert(
        "job:2".into(),
        Behaviour::Exits {
            after: 200,
            code: 0,
        },
    );
    let job = |image: &str| {
        format!("services:\n  once:\n    image: {image}\n    deploy:\n      mode: replicated-job\n      restart_policy:\n        delay: 1s\n")
    };
    sim.commit("c1", &job("job:1"));
    // FailsFirst's survivor runs on: the job waits for it.
    sim.run(5_000);
    let failed = sim
        .state
        .tasks
        .values()
        .filter(|t| t.status.state == TaskState::Failed)
        .count();
    assert_eq!(failed, 1, "the first task failed and was retried");
    sim.commit("c2", &job("job:2"));
    sim.run(5_000);
    let complete: Vec<&Task> = sim
        .state
        .tasks
        .values()
        .filter(|t| t.status.state == TaskState::Complete)
        .collect();
    assert_eq!(complete.len(), 1);
    assert_eq!(complete[0].spec.container.image, "job:2");
    assert_eq!(sim.running_images(), Vec::<String>::new());
}

#[test]
fn draining_follows_the_update_order_start_first_starts_the_replacement_before_the_stop() {
    for (order, start_first) in [("start-first", true), ("stop-first", false)] {
        let mut sim = Sim::new();
        sim.add_node("node-2", &[]);
        sim.commit(
            "c1",
            &format!("services:\n  web:\n    image: web:1\n    deploy:\n      replicas: 2\n      update_config:\n        order: {order}\n"),
        );
        sim.run(2_000);
        let old: Vec<String> = sim
            .state
            .tasks
            .values()
            .filter(|t| t.node == "node-2" && t.status.state == TaskState::Running)
            .map(|t| t.id.clone())
            .collect();
        assert_eq!(old.len(), 1);
        sim.set_node("node-2", |n| n.availability = Availability::Drain);
        sim.run(3_000);
        assert_eq!(
            sim.running_per_node("web:1"),
            BTreeMap::from([("node-1".to_string(), 2)])
        );
        let slot = sim.state.tasks[&old[0]].slot;
        let new = sim
            .state
            .tasks
            .values()
            .find(|t| t.slot == slot && t.node == "node-1" && t.status.state == TaskState::Running)
            .unwrap();
        let at = |id: &str, what: &str| {
            sim.log
                .iter()
                .find(|(_, t, w)| t == id && *w == what)
                .map(|(at, _, _)| *at)
                .unwrap()
        };
        let (stopped, started) = (at(&old[0], "stop"), at(&new.id, "start"));
        if start_first {
            assert!(
                started <= stopped,
                "{order}: started {started}, stopped {stopped}"
            );
        } else {
            assert!(
                stopped <= started,
                "{order}: started {started}, stopped {stopped}"
            );
        }
    }
}

#[test]
fn a_label_taken_off_a_node_moves_the_tasks_its_constraint_placed_there() {
    let mut sim = Sim::new();
    sim.add_node("node-2", &[("zone", "b")]);
    sim.add_node("node-3", &[]);
    sim.commit(
        "c1",
        "services:\n  web:\n    image: web:1\n    deploy:\n      replicas: 2\n      placement:\n        constraints: [node.labels.zone == b]\n",
    );
    sim.run(2_000);
    assert_eq!(sim.nodes_running("web:1"), ["node-2", "node-2"]);
    sim.set_node("node-3", |n| {
        n.labels.insert("zone".into(), "b".into());
    });
    sim.set_node("node-2", |n| {
        n.labels.remove("zone");
    });
    sim.run(3_000);
    assert_eq!(sim.nodes_running("web:1"), ["node-3", "node-3"]);
}

// The history of commits: each one's outcome, plan and timeline, as the orchestrator and the
// store write them (`reconciler history` shows these records).

fn record<'a>(sim: &'a Sim, commit: &str) -> &'a crate::store::CommitRecord {
    sim.state
        .history
        .find(commit)
        .unwrap_or_else(|| panic!("no record of {commit}"))
}

fn kinds(r: &crate::store::CommitRecord) -> Vec<&'static str> {
    r.events.iter().map(|e| e.kind.name()).collect()
}

#[test]
fn each_commit_keeps_its_outcome_plan_and_timeline() {
    use crate::store::history::Outcome;
    let mut sim = Sim::new();
    sim.commit("c1c1c1", &web("web:1", 3, STOP_FIRST));
    let applied = sim.now;
    sim.run(3_000);
    let r1 = record(&sim, "c1c1c1");
    assert_eq!(r1.outcome, Outcome::Converged);
    assert_eq!(kinds(r1), ["received", "applied", "converged"]);
    assert!(r1.converged_at.unwrap() > applied);
    let plan = r1.plan.as_ref().unwrap();
    // The stack's default network and its service.
    assert_eq!(plan.counts(), (2, 0, 0), "{plan:?}");
    assert!(plan.stacks[0].changes.iter().any(|c| c.name == "app_web"));

    // A rolling update: started, three tasks replaced, completed, converged; the plan says
    // what changed against c1.
    sim.commit("c2c2c2", &web("web:2", 3, STOP_FIRST));
    sim.run(20_000);
    let r2 = record(&sim, "c2c2c2");
    assert_eq!(r2.outcome, Outcome::Converged, "{:?}", r2.events);
    assert_eq!(
        kinds(r2),
        [
            "received",
            "applied",
            "rollout started",
            "rollout completed",
            "converged"
        ]
    );
    let rollout = &r2.rollouts["app_web"];
    assert_eq!(rollout.replaced, 3);
    assert_eq!(rollout.state, UpdateState::Completed);
    let plan = r2.plan.as_ref().unwrap();
    assert_eq!(plan.from_revision.as_deref(), Some("c1c1c1"));
    assert_eq!(plan.counts(), (0, 1, 0));
    let image = plan.stacks[0].changes[0]
        .fields
        .iter()
        .find(|f| f.field.contains("image"))
        .expect("the image change");
    assert_eq!(image.to.as_deref(), Some("web:2"));

    // A refused commit is recorded with its errors; what runs is c2's.
    sim.state
        .apply(Command::RefuseRevision {
            commit: "c3c3c3".into(),
            errors: vec!["app/compose.yml:3: services.web.image: required".into()],
            at: sim.now,
            summary: "break it".into(),
            trigger: Some(crate::gitops::Trigger::Webhook),
        })
        .unwrap();
    let r3 = record(&sim, "c3c3c3");
    assert_eq!(r3.outcome, Outcome::Refused);
    assert_eq!(r3.errors.len(), 1);
    assert!(r3.plan.is_none());
    assert_eq!(r3.summary, "break it");
    assert_eq!(sim.state.history.awaiting_convergence(), None);
}

#[test]
fn a_rolled_back_commit_is_never_a_success() {
    use crate::store::history::Outcome;
    let mut sim = Sim::new();
    sim.images.insert(
        "web:bad".into(),
        Behaviour::Exits {
            after: 500,
            code: 1,
        },
    );
    let rollback =
        "        parallelism: 1\n        monitor: 3s\n        failure_action: rollback\n";
    sim.commit("good", &web("web:1", 3, rollback));
    sim.run(2_000);
    sim.commit("badbad", &web("web:bad", 3, rollback));
    sim.run(30_000);
    assert_eq!(sim.update_state(), Some(UpdateState::RollbackCompleted));
    let r = record(&sim, "badbad");
    assert_eq!(r.outcome, Outcome::RolledBack, "{:?}", r.events);
    assert!(!r.outcome.is_success());
    let k = kinds(r);
    assert!(
        k.contains(&"rollback started") && k.contains(&"rolled back"),
        "{k:?}"
    );
    // The reason is the failure, not "rollback in progress".
    let rollout = &r.rollouts["app_web"];
    assert!(
        rollout.message.contains("non-zero exit (1)"),
        "{}",
        rollout.message
    );
    // Back on the old spec it converges, and stays a rollback.
    assert!(r.converged_at.is_some());
    assert_eq!(record(&sim, "good").outcome, Outcome::Converged);
}

#[test]
fn a_paused_update_says_so_and_a_commit_applied_before_convergence_supersedes() {
    use crate::store::history::Outcome;
    let mut sim = Sim::new();
    sim.images.insert(
        "web:bad".into(),
        Behaviour::Exits {
            after: 500,
            code: 1,
        },
    );
    let paced = "        parallelism: 1\n        delay: 2s\n        monitor: 3s\n";
    sim.commit("c1c1c1", &web("web:1", 3, paced));
    sim.run(2_000);
    sim.commit("c2c2c2", &web("web:bad", 3, paced));
    sim.run(10_000);
    let r2 = record(&sim, "c2c2c2");
    assert_eq!(r2.outcome, Outcome::Paused);
    assert!(r2.rollouts["app_web"]
        .message
        .contains("update paused due to failure"));
    // A slow update, overtaken by the next commit.
    sim.commit("c3c3c3", &web("web:3", 3, paced));
    sim.run(300);
    sim.commit("c4c4c4", &web("web:4", 3, paced));
    sim.run(30_000);
    let r3 = record(&sim, "c3c3c3");
    assert_eq!(r3.outcome, Outcome::Superseded, "{:?}", r3.events);
    assert_eq!(r3.superseded_by.as_deref(), Some("c4c4c4"));
    // The paused one stays paused (that is what happened to it), and says what came after.
    let r2 = record(&sim, "c2c2c2");
    assert_eq!(r2.outcome, Outcome::Paused);
    assert_eq!(r2.superseded_by.as_deref(), Some("c3c3c3"));
    assert_eq!(record(&sim, "c4c4c4").outcome, Outcome::Converged);
}

#[test]
fn the_same_commit_applied_again_is_one_record_and_the_history_is_bounded() {
    use crate::store::history::HISTORY_LEN;
    let mut sim = Sim::new();
    sim.commit("c1c1c1", &web("web:1", 1, STOP_FIRST));
    sim.run(2_000);
    // A new leader applies the branch head again.
    sim.commit("c1c1c1", &web("web:1", 1, STOP_FIRST));
    assert_eq!(sim.state.history.len(), 1);
    for i in 0..HISTORY_LEN + 10 {
        sim.state
            .apply(Command::RefuseRevision {
                commit: format!("bad{i:05}"),
                errors: vec!["no".into()],
                at: sim.now,
                summary: String::new(),
                trigger: None,
            })
            .unwrap();
    }
    assert_eq!(sim.state.history.len(), HISTORY_LEN);
    assert!(
        sim.state.history.find("c1c1c1").is_none(),
        "the oldest went first"
    );
}

#[test]
fn a_rollback_by_hand_marks_the_commit_rolled_back() {
    use crate::store::history::Outcome;
    let mut sim = Sim::new();
    sim.commit("c1c1c1", &web("web:1", 2, STOP_FIRST));
    sim.run(2_000);
    sim.commit("c2c2c2", &web("web:2", 2, STOP_FIRST));
    sim.run(15_000);
    assert_eq!(record(&sim, "c2c2c2").outcome, Outcome::Converged);
    sim.state
        .apply(Command::RollbackService {
            service: "app_web".into(),
            manual: true,
            at: sim.now,
        })
        .unwrap();
    sim.run(15_000);
    let r = record(&sim, "c2c2c2");
    assert_eq!(r.outcome, Outcome::RolledBack);
    assert!(r
        .events
        .iter()
        .any(|e| e.message.contains("rolled back by hand")));
}

#[test]
fn a_service_whose_tasks_keep_failing_is_said_unhealthy_once() {
    use crate::notify::{config::Value, Kind, NotifyKind, Target};
    let mut sim = Sim::new();
    sim.state.notify.set_targets(vec![Target {
        name: "ops".into(),
        kind: Kind::Generic,
        url: Value::Inline {
            value: "https://ops.example/".into(),
        },
        events: vec![],
        secret: None,
    }]);
    sim.images.insert(
        "web:crash".into(),
        Behaviour::Exits {
            after: 300,
            code: 1,
        },
    );
    sim.commit("c1c1c1", &web("web:crash", 1, STOP_FIRST));
    sim.run(30_000);
    let unhealthy: Vec<_> = sim
        .state
        .notify
        .events
        .iter()
        .filter(|e| e.kind == NotifyKind::ServiceUnhealthy)
        .collect();
    assert_eq!(unhealthy.len(), 1, "{:?}", sim.state.notify.events);
    assert_eq!(unhealthy[0].service.as_deref(), Some("app_web"));
    assert!(
        unhealthy[0].message.contains("keep failing"),
        "{}",
        unhealthy[0].message
    );
    assert!(
        unhealthy[0].message.contains("non-zero exit (1)"),
        "{}",
        unhealthy[0].message
    );
}
