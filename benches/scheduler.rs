//! Benchmarks of issue 8's targets for the scheduler and the dispatcher, beside SwarmKit's
//! published figure (10,000 tasks on 1,000 nodes in about 1.8 s) and Nomad's C1M (3,750
//! placements a second):
//!
//! - `place/10000_tasks_over_{100,1000}_nodes`: one orchestrator pass over a state with that
//!   many simulated nodes (2 CPUs, 8 GiB each; a third of them labelled `zone=a|b|c`) and a
//!   service of 10,000 replicas with a spread preference over `node.labels.zone`: every slot
//!   filled, every task placed by the scheduler (filters, spread, each placement seen by the
//!   next). What a commit that scales a service to 10,000 costs the leader.
//! - `fan_out/100_agents_10000_tasks`: the dispatcher with 100 agent sessions open, the
//!   store holding 100 tasks per node: the time from a store change that touches every task
//!   (all told to shut down) until every session has its change message.
//! - `fan_out/100_agents_full_sets`: 100 sessions opened at once; until each has its complete
//!   set (what a new leader's dispatcher does).
//!
//! Run with `cargo bench --bench scheduler`; results are recorded in docs/benchmarks.md.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode};
use futures::future::BoxFuture;
use reconciler::agent::assignment::{Content, Need};
use reconciler::desired::DesiredState;
use reconciler::dispatcher::wire::{SessionMessage, SessionRequest};
use reconciler::dispatcher::{Backend, Dispatcher};
use reconciler::orchestrator::{IdGen, Orchestrator};
use reconciler::spec::{load_stack, NoFiles, Variables};
use reconciler::store::{Availability, Command, Node, NodeRole, State, TaskState, TaskStatus};

fn node(i: usize) -> Node {
    let mut labels = std::collections::BTreeMap::new();
    labels.insert("zone".to_string(), ["a", "b", "c"][i % 3].to_string());
    Node {
        id: format!("node-{i:04}"),
        hostname: format!("host-{i:04}"),
        role: if i == 0 {
            NodeRole::Manager
        } else {
            NodeRole::Worker
        },
        availability: Availability::Active,
        ready: true,
        os: "linux".into(),
        arch: "x86_64".into(),
        ip: format!("10.0.{}.{}", i / 250, i % 250),
        labels,
        engine_labels: Default::default(),
        nano_cpus: 2_000_000_000,
        memory_bytes: 8 << 30,
        engine_version: "20.10".into(),
    }
}

fn state(nodes: usize, replicas: usize) -> State {
    let mut state = State::default();
    for i in 0..nodes {
        state
            .apply(Command::UpsertNode { node: node(i) })
            .expect("a node");
    }
    let text = format!(
        "services:\n  web:\n    image: web:1\n    deploy:\n      replicas: {replicas}\n      placement:\n        preferences:\n          - spread: node.labels.zone\n"
    );
    let loaded = load_stack(
        "bench",
        "compose.yml",
        &text,
        &NoFiles,
        &Variables::default(),
    );
    let mut desired = DesiredState::default();
    desired
        .stacks
        .insert("bench".into(), loaded.spec.expect("the stack loads"));
    state
        .apply(Command::ApplyRevision {
            summary: String::new(),
            notify: None,
            trigger: None,
            commit: "c1".into(),
            desired,
            prune: true,
            at: 1,
            blocked: Default::default(),
        })
        .expect("the revision applies");
    state
}

fn place(c: &mut Criterion) {
    let mut group = c.benchmark_group("place");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    for nodes in [100, 1000] {
        let state = state(nodes, 10_000);
        group.bench_function(format!("10000_tasks_over_{nodes}_nodes"), |b| {
            b.iter(|| {
                let step = Orchestrator::new(IdGen::seeded(1)).step(&state, 2);
                let placed = step
                    .commands
                    .iter()
                    .filter(|c| matches!(c, Command::CreateTask { task } if !task.node.is_empty()))
                    .count();
                assert_eq!(placed, 10_000);
                step
            })
        });
    }
    group.finish();
}

/// A store in memory for the dispatcher.
struct Store {
    state: RwLock<State>,
    changes: tokio::sync::watch::Sender<u64>,
}

impl Backend for Store {
    fn read_state(&self, f: &mut dyn FnMut(&State)) {
        f(&self.state.read().unwrap())
    }
    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }
    fn commit(&self, commands: Vec<Command>) -> BoxFuture<'static, usize> {
        let mut state = self.state.write().unwrap();
        let n = commands
            .into_iter()
            .filter(|c| state.apply(c.clone()).is_ok())
            .count();
        Box::pin(async move { n })
    }
    fn resolve(&self, _version: &str, _need: &Need) -> Content {
        Content::Missing { why: "none".into() }
    }
    fn heartbeat_period(&self) -> Duration {
        Duration::from_secs(5)
    }
    fn managers(&self) -> Vec<String> {
        vec![]
    }
}

/// 100 nodes with 100 running tasks each.
fn placed_state() -> State {
    let mut state = state(100, 10_000);
    let step = Orchestrator::new(IdGen::seeded(1)).step(&state, 2);
    for c in step.commands {
        let _ = state.apply(c);
    }
    let ids: Vec<String> = state.tasks.keys().cloned().collect();
    for id in ids {
        let mut status = state.tasks[&id].status.clone();
        status = TaskStatus {
            state: TaskState::Running,
            message: "running".into(),
            ..status
        };
        state
            .apply(Command::UpdateTaskStatus { id, status })
            .expect("a report");
    }
    state
}

async fn open_all(
    d: &Dispatcher,
    state: &State,
) -> Vec<tokio::sync::mpsc::Receiver<SessionMessage>> {
    let mut sessions = Vec::new();
    for n in state.nodes.values() {
        let rx = d
            .open(&n.id, NodeRole::Worker, SessionRequest { node: n.clone() })
            .expect("serving");
        sessions.push(rx);
    }
    sessions
}

/// Until every session has had an assignment message (welcomes skipped).
async fn each_gets_assignments(sessions: &mut [tokio::sync::mpsc::Receiver<SessionMessage>]) {
    for rx in sessions.iter_mut() {
        loop {
            match rx.recv().await.expect("the session stays open") {
                SessionMessage::Assignments(_) => break,
                SessionMessage::Welcome { .. } => {}
            }
        }
    }
}

/// A dispatcher serving a store that holds `base`.
async fn serve(
    base: &State,
) -> (
    Arc<Store>,
    Arc<Dispatcher>,
    tokio_util::sync::CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let store = Arc::new(Store {
        state: RwLock::new(base.clone()),
        changes: tokio::sync::watch::Sender::new(0),
    });
    let d = Dispatcher::new(store.clone());
    let stop = tokio_util::sync::CancellationToken::new();
    let serving = {
        let (d, stop) = (d.clone(), stop.clone());
        tokio::spawn(async move { d.serve(stop).await })
    };
    while !d.is_active() {
        tokio::task::yield_now().await;
    }
    (store, d, stop, serving)
}

fn fan_out(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("fan_out");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    let base = placed_state();
    group.bench_function("100_agents_full_sets", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (_store, d, stop, serving) = serve(&base).await;
                    let start = Instant::now();
                    let mut sessions = open_all(&d, &base).await;
                    each_gets_assignments(&mut sessions).await;
                    total += start.elapsed();
                    stop.cancel();
                    let _ = serving.await;
                }
                total
            })
        })
    });
    group.bench_function("100_agents_10000_tasks", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (store, d, stop, serving) = serve(&base).await;
                    let mut sessions = open_all(&d, &base).await;
                    each_gets_assignments(&mut sessions).await;
                    // Every task told to stop: every node's set changes.
                    let start = Instant::now();
                    {
                        let mut s = store.state.write().unwrap();
                        let ids: Vec<String> = s.tasks.keys().cloned().collect();
                        for id in ids {
                            let _ = s.apply(Command::SetTaskDesiredState {
                                id,
                                state: TaskState::Shutdown,
                            });
                        }
                    }
                    store.changes.send_modify(|v| *v += 1);
                    each_gets_assignments(&mut sessions).await;
                    total += start.elapsed();
                    stop.cancel();
                    let _ = serving.await;
                }
                total
            })
        })
    });
    group.finish();
}

criterion::criterion_group!(benches, place, fan_out);
criterion::criterion_main!(benches);
