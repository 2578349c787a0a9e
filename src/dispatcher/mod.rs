//! The dispatcher, after swarmkit's: while this manager leads, it keeps one session per node's
//! agent, hands each node its assignment set (whole when the session opens, then numbered
//! changes), takes task status reports in batches, and marks a node down when its heartbeats
//! stop. It keeps nothing a new leader's dispatcher could not rebuild: the store says what
//! each node should run, and the agents open new sessions with it.
//!
//! - [`wire`]: the messages.
//! - [`service`]: the gRPC service every manager serves; a follower passes calls on to the
//!   leader.

pub mod service;
pub mod wire;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::agent::assignment::{self, Assignments, Change, Content, Need};
use crate::store::{Command, Node, State};
use wire::{SessionMessage, SessionRequest, StatusBatch};

/// Swarm's default heartbeat period (`docker swarm update --dispatcher-heartbeat`).
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);
/// Heartbeat periods a node may miss before it is marked down.
pub const MISSED_HEARTBEATS: u32 = 3;
/// Messages a session may have waiting: an agent that falls this far behind is sent a new
/// complete set instead (its session is closed and it opens another).
const QUEUE: usize = 64;

/// What the dispatcher needs of the manager it runs in.
pub trait Backend: Send + Sync + 'static {
    fn read_state(&self, f: &mut dyn FnMut(&State));
    /// Changes whenever the store does.
    fn subscribe(&self) -> watch::Receiver<u64>;
    /// Commit commands; the answer is how many applied.
    fn commit(&self, commands: Vec<Command>) -> BoxFuture<'static, usize>;
    /// The content of a version (blocking: it reads the git mirror).
    fn resolve(&self, version: &str, need: &Need) -> Content;
    fn heartbeat_period(&self) -> Duration;
    /// The managers' cluster addresses.
    fn managers(&self) -> Vec<String>;
}

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(
        "this manager's dispatcher is not serving (it is not the leader, or has just become it)"
    )]
    NotServing,
    #[error("no such session: open a new one")]
    UnknownSession,
}

pub struct Dispatcher {
    backend: Arc<dyn Backend>,
    inner: Mutex<Inner>,
    /// A session opened: the fan-out has a complete set to send.
    wake: Notify,
}

#[derive(Default)]
struct Inner {
    /// Since when this dispatcher serves (this manager leads); `None`: it does not.
    active_since: Option<Instant>,
    /// By node: one session each (a new one replaces the old).
    sessions: HashMap<String, Session>,
    /// Nodes whose session opened and whose registration (`NodeSeen`) has not committed yet.
    unregistered: HashMap<String, Node>,
}

struct Session {
    id: String,
    last_beat: Instant,
    tx: mpsc::Sender<SessionMessage>,
}

/// What the fan-out last sent to one session.
struct Sent {
    set: Assignments,
    next: u64,
}

impl Dispatcher {
    pub fn new(backend: Arc<dyn Backend>) -> Arc<Self> {
        Arc::new(Dispatcher {
            backend,
            inner: Mutex::new(Inner::default()),
            wake: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_active(&self) -> bool {
        self.lock().active_since.is_some()
    }

    /// Open a session for `node` (its role from its certificate, for a node new to the
    /// store): the messages to stream to it, the welcome first.
    pub fn open(
        &self,
        node: &str,
        role: crate::store::NodeRole,
        request: SessionRequest,
    ) -> Result<mpsc::Receiver<SessionMessage>, DispatchError> {
        let period = self.backend.heartbeat_period();
        let (tx, rx) = mpsc::channel(QUEUE);
        let id = crate::cluster::start::random_id(16);
        {
            let mut inner = self.lock();
            inner.active_since.ok_or(DispatchError::NotServing)?;
            let _ = tx.try_send(SessionMessage::Welcome {
                session_id: id.clone(),
                heartbeat_ms: period.as_millis() as u64,
                managers: self.backend.managers(),
            });
            // An older session of the node ends here: its stream closes.
            inner.sessions.insert(
                node.to_string(),
                Session {
                    id: id.clone(),
                    last_beat: Instant::now(),
                    tx,
                },
            );
        }
        tracing::debug!(node = %node, session = %id, "agent session opened");
        let seen = Node {
            id: node.to_string(),
            role,
            ..request.node
        };
        self.lock().unregistered.insert(node.to_string(), seen);
        self.wake.notify_one();
        Ok(rx)
    }

    /// A heartbeat of `node`'s session: the period to keep.
    pub fn heartbeat(&self, node: &str, session: &str) -> Result<Duration, DispatchError> {
        let mut inner = self.lock();
        inner.active_since.ok_or(DispatchError::NotServing)?;
        match inner.sessions.get_mut(node) {
            Some(s) if s.id == session => {
                s.last_beat = Instant::now();
                Ok(self.backend.heartbeat_period())
            }
            _ => Err(DispatchError::UnknownSession),
        }
    }

    /// `node` leaves the cluster: its session ends and it is down at once, rather than after
    /// three missed heartbeats.
    pub async fn leave(&self, node: &str, session: &str) -> Result<(), DispatchError> {
        {
            let mut inner = self.lock();
            inner.active_since.ok_or(DispatchError::NotServing)?;
            if inner.sessions.get(node).map(|s| s.id.as_str()) != Some(session) {
                return Err(DispatchError::UnknownSession);
            }
            inner.sessions.remove(node);
            inner.unregistered.remove(node);
        }
        tracing::info!(node = %node, "a node leaves the cluster: down");
        self.backend
            .commit(vec![Command::SetNodeReady {
                id: node.to_string(),
                ready: false,
                at: crate::store::now_ms(),
            }])
            .await;
        Ok(())
    }

    /// Task status reports of `node`: only its own tasks count, and times are this manager's
    /// (a worker's clock may be off: a monitor window or restart delay must not depend on it).
    pub async fn report(&self, node: &str, batch: StatusBatch) -> Result<usize, DispatchError> {
        {
            let inner = self.lock();
            inner.active_since.ok_or(DispatchError::NotServing)?;
            if inner.sessions.get(node).map(|s| s.id.as_str()) != Some(batch.session_id.as_str()) {
                return Err(DispatchError::UnknownSession);
            }
        }
        let now = crate::store::now_ms();
        let mut commands = Vec::with_capacity(batch.updates.len());
        let mut updates = Some(batch.updates);
        self.backend.read_state(&mut |s| {
            for u in updates.take().unwrap_or_default() {
                let Some(task) = s.tasks.get(&u.id).filter(|t| t.node == node) else {
                    tracing::debug!(node = %node, task = %u.id, "a report on a task that is not the node's: ignored");
                    continue;
                };
                let mut status = u.status;
                status.timestamp = now;
                status.running_since = match (task.status.running_since, status.running_since) {
                    (Some(known), _) => Some(known),
                    (None, Some(_)) => Some(now),
                    (None, None) => None,
                };
                commands.push(Command::UpdateTaskStatus { id: u.id, status });
            }
        });
        if commands.is_empty() {
            return Ok(0);
        }
        Ok(self.backend.commit(commands).await)
    }

    /// Serve until `stop` (this manager stops leading, or the node stops): send assignments
    /// as the store changes and mark silent nodes down.
    pub async fn serve(&self, stop: CancellationToken) {
        struct Active<'a>(&'a Dispatcher);
        impl Drop for Active<'_> {
            fn drop(&mut self) {
                let mut inner = self.0.lock();
                inner.active_since = None;
                // Every session's stream ends: the agents open new ones with the next leader.
                inner.sessions.clear();
                inner.unregistered.clear();
            }
        }
        {
            let mut inner = self.lock();
            inner.active_since = Some(Instant::now());
            inner.sessions.clear();
        }
        let _active = Active(self);
        let mut changes = self.backend.subscribe();
        let mut sent: HashMap<String, Sent> = HashMap::new();
        loop {
            self.register().await;
            self.fan_out(&mut sent).await;
            self.check_heartbeats().await;
            let tick = (self.backend.heartbeat_period() / 2).max(Duration::from_millis(100));
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = changes.changed() => {}
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(tick) => {}
            }
        }
    }

    /// Nodes whose session opened are ready, with their description as they give it; tried
    /// again on the next pass if it does not commit (no quorum for a moment).
    async fn register(&self) {
        let nodes: Vec<Node> = self.lock().unregistered.drain().map(|(_, n)| n).collect();
        if nodes.is_empty() {
            return;
        }
        let commands = nodes
            .iter()
            .map(|n| Command::NodeSeen { node: n.clone() })
            .collect();
        if self.backend.commit(commands).await == 0 {
            let mut inner = self.lock();
            for n in nodes {
                inner.unregistered.entry(n.id.clone()).or_insert(n);
            }
        }
    }

    /// Send every session what changed in its node's assignment set (a new session: all of it).
    async fn fan_out(&self, sent: &mut HashMap<String, Sent>) {
        let sessions: Vec<(String, String, mpsc::Sender<SessionMessage>)> = self
            .lock()
            .sessions
            .iter()
            .map(|(node, s)| (node.clone(), s.id.clone(), s.tx.clone()))
            .collect();
        sent.retain(|id, _| sessions.iter().any(|(_, s, _)| s == id));
        if sessions.is_empty() {
            return;
        }
        let nodes: BTreeSet<String> = sessions.iter().map(|(n, _, _)| n.clone()).collect();
        let mut computed = HashMap::new();
        self.backend
            .read_state(&mut |s| computed = assignment::for_nodes(s, &nodes));
        // Each version is read once per pass, and only for sessions that were not sent it.
        let mut wanted: BTreeMap<String, Need> = BTreeMap::new();
        for (node, id, _) in &sessions {
            let Some((_, needs)) = computed.get(node) else {
                continue;
            };
            let had = sent.get(id).map(|s| &s.set.contents);
            for (v, need) in needs {
                if had.is_none_or(|c| !c.contains_key(v)) {
                    wanted.entry(v.clone()).or_insert_with(|| need.clone());
                }
            }
        }
        let resolved: BTreeMap<String, Content> = if wanted.is_empty() {
            BTreeMap::new()
        } else {
            let backend = self.backend.clone();
            tokio::task::spawn_blocking(move || {
                wanted
                    .iter()
                    .map(|(v, need)| (v.clone(), backend.resolve(v, need)))
                    .collect()
            })
            .await
            .unwrap_or_default()
        };
        for (node, id, tx) in sessions {
            let (mut set, needs) = computed.remove(&node).unwrap_or_default();
            let before = sent.get(&id);
            set.contents = needs
                .keys()
                .filter_map(|v| {
                    before
                        .and_then(|b| b.set.contents.get(v))
                        .or_else(|| resolved.get(v))
                        .map(|c| (v.clone(), c.clone()))
                })
                .collect();
            let message = match before {
                None => Some(Change::full(&set, 0)),
                Some(b) => assignment::diff(&b.set, &set, b.next),
            };
            let Some(message) = message else {
                continue;
            };
            let sequence = message.sequence;
            match tx.try_send(SessionMessage::Assignments(Box::new(message))) {
                Ok(()) => {
                    sent.insert(
                        id,
                        Sent {
                            set,
                            next: sequence + 1,
                        },
                    );
                }
                Err(e) => {
                    // Gone, or too far behind: the session ends, and a new one starts whole.
                    if matches!(e, mpsc::error::TrySendError::Full(_)) {
                        tracing::warn!(node = %node, "an agent fell behind its assignments: its session is closed");
                    }
                    sent.remove(&id);
                    let mut inner = self.lock();
                    if inner.sessions.get(&node).is_some_and(|s| s.id == id) {
                        inner.sessions.remove(&node);
                    }
                }
            }
        }
    }

    /// Nodes silent for [`MISSED_HEARTBEATS`] periods are down, and their sessions end (a
    /// node is ready again only when it opens a new one). A dispatcher that has just started
    /// counts from its start, not from the last heartbeat its predecessor saw.
    async fn check_heartbeats(&self) {
        let grace = self.backend.heartbeat_period() * MISSED_HEARTBEATS;
        let (since, beats): (Instant, HashMap<String, (String, Instant)>) = {
            let inner = self.lock();
            let Some(since) = inner.active_since else {
                return;
            };
            (
                since,
                inner
                    .sessions
                    .iter()
                    .map(|(n, s)| (n.clone(), (s.id.clone(), s.last_beat)))
                    .collect(),
            )
        };
        let mut down = Vec::new();
        self.backend.read_state(&mut |s| {
            for n in s.nodes.values().filter(|n| n.ready) {
                let last = beats.get(&n.id).map(|b| b.1).unwrap_or(since).max(since);
                if last.elapsed() > grace {
                    tracing::warn!(node = %n.id, hostname = %n.hostname, "node down: no heartbeat for {} periods", MISSED_HEARTBEATS);
                    down.push(n.id.clone());
                }
            }
        });
        if down.is_empty() {
            return;
        }
        {
            let mut inner = self.lock();
            for node in &down {
                let silent = beats.get(node).map(|b| b.0.as_str());
                if inner.sessions.get(node).map(|s| s.id.as_str()) == silent {
                    inner.sessions.remove(node);
                }
            }
        }
        let commands = down
            .into_iter()
            .map(|id| Command::SetNodeReady {
                id,
                ready: false,
                at: crate::store::now_ms(),
            })
            .collect();
        self.backend.commit(commands).await;
    }
}
