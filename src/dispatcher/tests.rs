//! The dispatcher against a store in memory: who may report what, whose clock counts, and
//! when a silent node is down.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;

use super::wire::{SessionMessage, SessionRequest, StatusBatch, StatusUpdate};
use super::{Backend, DispatchError, Dispatcher};
use crate::agent::assignment::{Content, Need};
use crate::store::{Availability, Command, Node, NodeRole, State, Task, TaskState, TaskStatus};

struct Store {
    state: RwLock<State>,
    changes: tokio::sync::watch::Sender<u64>,
    period: Duration,
}

impl Backend for Store {
    fn read_state(&self, f: &mut dyn FnMut(&State)) {
        f(&self.state.read().unwrap())
    }
    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }
    fn commit(&self, commands: Vec<Command>) -> BoxFuture<'static, usize> {
        let n = {
            let mut state = self.state.write().unwrap();
            commands
                .into_iter()
                .filter(|c| state.apply(c.clone()).is_ok())
                .count()
        };
        self.changes.send_modify(|v| *v += 1);
        Box::pin(async move { n })
    }
    fn resolve(&self, _version: &str, _need: &Need) -> Content {
        Content::Missing { why: "none".into() }
    }
    fn heartbeat_period(&self) -> Duration {
        self.period
    }
    fn managers(&self) -> Vec<String> {
        vec!["127.0.0.1:2377".into()]
    }
}

fn node(id: &str) -> Node {
    Node {
        id: id.into(),
        hostname: id.into(),
        role: NodeRole::Worker,
        availability: Availability::Active,
        ready: false,
        os: "linux".into(),
        arch: "x86_64".into(),
        ip: String::new(),
        labels: Default::default(),
        engine_labels: Default::default(),
        nano_cpus: 1_000_000_000,
        memory_bytes: 1 << 30,
        engine_version: String::new(),
    }
}

/// A store with nodes a and b and one task placed on each, and a dispatcher serving it.
async fn serving(
    period: Duration,
) -> (
    Arc<Store>,
    Arc<Dispatcher>,
    tokio_util::sync::CancellationToken,
) {
    let mut state = State::default();
    let text = "services:\n  web:\n    image: web:1\n    deploy:\n      replicas: 2\n";
    let loaded = crate::spec::load_stack(
        "s",
        "compose.yml",
        text,
        &crate::spec::NoFiles,
        &crate::spec::Variables::default(),
    );
    let mut desired = crate::desired::DesiredState::default();
    desired.stacks.insert("s".into(), loaded.spec.unwrap());
    state
        .apply(Command::ApplyRevision {
            summary: String::new(),
            notify: None,
            trigger: None,
            commit: "c".into(),
            desired,
            prune: true,
            at: 1,
            blocked: Default::default(),
        })
        .unwrap();
    let svc = state.services["s_web"].clone();
    for (id, n) in [("ta", "a"), ("tb", "b")] {
        let task = Task {
            id: id.into(),
            service: "s_web".into(),
            slot: Some(if n == "a" { 1 } else { 2 }),
            node: n.into(),
            service_version: svc.version,
            spec: svc.spec.task.clone(),
            endpoint: svc.spec.endpoint.clone(),
            desired_state: TaskState::Running,
            status: TaskStatus {
                state: TaskState::Assigned,
                timestamp: 1,
                message: "assigned".into(),
                error: None,
                container_id: None,
                exit_code: None,
                running_since: None,
            },
            created_at: 1,
            restarts: vec![],
        };
        state
            .apply(Command::CreateTask {
                task: Box::new(task),
            })
            .unwrap();
    }
    let store = Arc::new(Store {
        state: RwLock::new(state),
        changes: tokio::sync::watch::Sender::new(0),
        period,
    });
    let d = Dispatcher::new(store.clone());
    let stop = tokio_util::sync::CancellationToken::new();
    {
        let (d, stop) = (d.clone(), stop.clone());
        tokio::spawn(async move { d.serve(stop).await });
    }
    while !d.is_active() {
        tokio::task::yield_now().await;
    }
    (store, d, stop)
}

async fn open(d: &Dispatcher, id: &str) -> (String, tokio::sync::mpsc::Receiver<SessionMessage>) {
    let mut rx = d
        .open(id, NodeRole::Worker, SessionRequest { node: node(id) })
        .unwrap();
    match rx.recv().await.unwrap() {
        SessionMessage::Welcome { session_id, .. } => (session_id, rx),
        other => panic!("{other:?}"),
    }
}

fn running(at: u64) -> TaskStatus {
    TaskStatus {
        state: TaskState::Running,
        timestamp: at,
        message: "running".into(),
        error: None,
        container_id: Some("c".into()),
        exit_code: None,
        running_since: Some(at),
    }
}

#[tokio::test]
async fn a_node_reports_only_on_its_own_tasks_and_times_are_the_managers() {
    let (store, d, stop) = serving(Duration::from_secs(5)).await;
    let (session, mut rx) = open(&d, "a").await;
    // Its first assignment set holds its own task only.
    match rx.recv().await.unwrap() {
        SessionMessage::Assignments(c) => {
            assert!(c.full);
            let ids: Vec<&str> = c.tasks.iter().map(|t| t.id.as_str()).collect();
            assert_eq!(ids, ["ta"]);
        }
        other => panic!("{other:?}"),
    }
    // A clock ten years behind, and a report on b's task: b's is ignored, a's is stamped
    // with the manager's clock.
    let skewed = crate::store::now_ms() - 10 * 365 * 24 * 3600 * 1000;
    let before = crate::store::now_ms();
    let applied = d
        .report(
            "a",
            StatusBatch {
                session_id: session.clone(),
                updates: vec![
                    StatusUpdate {
                        id: "ta".into(),
                        status: running(skewed),
                    },
                    StatusUpdate {
                        id: "tb".into(),
                        status: running(skewed),
                    },
                ],
            },
        )
        .await
        .unwrap();
    assert_eq!(applied, 1);
    let state = store.state.read().unwrap().clone();
    let (ta, tb) = (&state.tasks["ta"], &state.tasks["tb"]);
    assert_eq!(ta.status.state, TaskState::Running);
    assert!(ta.status.timestamp >= before, "stamped on receipt");
    assert!(ta.status.running_since.unwrap() >= before);
    assert_eq!(tb.status.state, TaskState::Assigned, "b's task untouched");
    // A session that is not the node's is refused.
    let refused = d
        .report(
            "b",
            StatusBatch {
                session_id: session,
                updates: vec![],
            },
        )
        .await;
    assert!(matches!(refused, Err(DispatchError::UnknownSession)));
    stop.cancel();
}

#[tokio::test]
async fn a_silent_node_is_down_after_three_periods_and_ready_again_with_a_new_session() {
    let period = Duration::from_millis(100);
    let (store, d, stop) = serving(period).await;
    let (sa, _ra) = open(&d, "a").await;
    let (_sb, _rb) = open(&d, "b").await;
    let ready = |id: &str| store.state.read().unwrap().nodes[id].ready;
    // Registered by their sessions.
    tokio::time::timeout(Duration::from_secs(5), async {
        while !(store.state.read().unwrap().nodes.len() == 2 && ready("a") && ready("b")) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("both registered and ready");
    // a keeps beating, b falls silent.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(800);
    while tokio::time::Instant::now() < deadline {
        d.heartbeat("a", &sa).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready("a"));
    assert!(!ready("b"), "b missed three heartbeats");
    // b's old session is gone; a new one makes it ready again.
    assert!(matches!(
        d.heartbeat("b", "whatever"),
        Err(DispatchError::UnknownSession)
    ));
    let (_sb2, _rb2) = open(&d, "b").await;
    tokio::time::timeout(Duration::from_secs(5), async {
        while !ready("b") {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("b ready again");
    stop.cancel();
}
