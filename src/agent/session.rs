//! The agent's side of the dispatcher: one session at a time with a manager (any of them: a
//! follower passes the calls on to the leader). The session brings the node's assignment set,
//! whole and then as numbered changes; heartbeats keep the node ready; status reports go back
//! in batches. When the manager goes away the agent keeps its set (its containers keep
//! running) and opens a session with the next manager it knows.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use super::assignment::Assignments;
use crate::cluster::rpc::{self, pb};
use crate::cluster::tls::Credentials;
use crate::dispatcher::wire::{
    Heartbeat, HeartbeatAnswer, SessionMessage, SessionRequest, StatusAnswer, StatusBatch,
    StatusUpdate,
};
use crate::store::Node;

type Client = pb::dispatcher_client::DispatcherClient<Channel>;

/// What the agent loop sees of the session: the assignment set, and a way to report.
pub struct Link {
    assignments: watch::Sender<Arc<Assignments>>,
    current: Mutex<Option<(Client, String)>>,
}

impl Link {
    pub fn new() -> Arc<Link> {
        Arc::new(Link {
            assignments: watch::Sender::new(Arc::new(Assignments::default())),
            current: Mutex::new(None),
        })
    }

    /// The set as last received.
    pub fn assignments(&self) -> Arc<Assignments> {
        self.assignments.borrow().clone()
    }

    /// Changes whenever the set does.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Assignments>> {
        self.assignments.subscribe()
    }

    /// Is a session open now?
    pub fn connected(&self) -> bool {
        self.lock().is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(Client, String)>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tell the dispatcher this node leaves (it is down at once), on the open session if any.
    async fn say_goodbye(&self) {
        let Some((mut client, session_id)) = self.lock().take() else {
            return;
        };
        let Ok(body) = rpc::json(&Heartbeat {
            session_id,
            leaving: true,
        }) else {
            return;
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), client.heartbeat(body)).await;
    }

    /// Send status reports on the open session: how many changed a task. Without a session
    /// they are dropped; the executor computes them again from what the engine shows.
    pub async fn report(&self, updates: Vec<StatusUpdate>) -> Result<usize, String> {
        let Some((mut client, session_id)) = self.lock().clone() else {
            return Err("no session with a manager".into());
        };
        let batch = StatusBatch {
            session_id,
            updates,
        };
        let answer = client
            .update_task_status(rpc::json(&batch).map_err(|s| s.message().to_string())?)
            .await
            .map_err(|s| s.message().to_string())?;
        let answer: StatusAnswer =
            rpc::from_json(answer.get_ref()).map_err(|s| s.message().to_string())?;
        Ok(answer.applied)
    }
}

/// Keep a session open until `stop`, moving on to the next manager when one fails.
/// `managers`: where to start (a manager's agent: itself first); the welcome of each session
/// brings the current list.
pub async fn run(
    link: Arc<Link>,
    creds: Arc<Credentials>,
    mut managers: Vec<String>,
    node: Node,
    learned: impl Fn(Vec<String>) + Send,
    leaving: Leaving,
    stop: CancellationToken,
) {
    let mut next = 0usize;
    let mut backoff =
        crate::gitops::Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let mut last_error: Option<String> = None;
    while !stop.is_cancelled() {
        if managers.is_empty() {
            tracing::error!("no manager known to this node: it cannot get its tasks");
            return;
        }
        let addr = managers[next % managers.len()].clone();
        next += 1;
        let opened = std::time::Instant::now();
        let result = session(&link, &creds, &addr, &node, &mut managers, &learned, &stop).await;
        if leaving.asked.is_cancelled() {
            link.say_goodbye().await;
            leaving.said.cancel();
            return;
        }
        *link.lock() = None;
        match result {
            Ok(()) => return,
            Err(e) => {
                if last_error.as_deref() != Some(e.as_str()) {
                    tracing::info!(manager = %addr, error = %e, "no session with the dispatcher; trying the next manager");
                    last_error = Some(e);
                }
            }
        }
        // A session that lasted a while was fine: start the next one quickly.
        if opened.elapsed() > Duration::from_secs(10) {
            backoff.reset();
        }
        tokio::select! {
            _ = stop.cancelled() => {
                if leaving.asked.is_cancelled() {
                    leaving.said.cancel();
                }
                return;
            }
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// A node that leaves: `asked` when it starts to (the session then ends), `said` once its
/// agent told the dispatcher (or could not).
#[derive(Clone, Default)]
pub struct Leaving {
    pub asked: CancellationToken,
    pub said: CancellationToken,
}

async fn session(
    link: &Link,
    creds: &Arc<Credentials>,
    addr: &str,
    node: &Node,
    managers: &mut Vec<String>,
    learned: &(impl Fn(Vec<String>) + Send),
    stop: &CancellationToken,
) -> Result<(), String> {
    let text = |s: tonic::Status| s.message().to_string();
    let channel = rpc::dial_stream(addr, creds).map_err(|e| format!("{e:#}"))?;
    let mut client = Client::new(channel)
        .max_decoding_message_size(crate::cluster::raft::network::MAX_MESSAGE)
        .max_encoding_message_size(crate::cluster::raft::network::MAX_MESSAGE);
    let request = rpc::json(&SessionRequest { node: node.clone() }).map_err(text)?;
    let opening = tokio::time::timeout(Duration::from_secs(10), client.session(request));
    let mut stream = opening
        .await
        .map_err(|_| "opening a session timed out".to_string())?
        .map_err(text)?
        .into_inner();
    let (session_id, mut period) = match next_message(&mut stream).await? {
        SessionMessage::Welcome {
            session_id,
            heartbeat_ms,
            managers: known,
        } => {
            if !known.is_empty() {
                learned(known.clone());
                // This manager first: it answered.
                let mut list = vec![addr.to_string()];
                list.extend(known.into_iter().filter(|m| m != addr));
                *managers = list;
            }
            (session_id, Duration::from_millis(heartbeat_ms.max(100)))
        }
        SessionMessage::Assignments(_) => {
            return Err("the session did not start with a welcome".into())
        }
    };
    *link.lock() = Some((client.clone(), session_id.clone()));
    tracing::info!(manager = %addr, session = %session_id, "session with the dispatcher open");
    let mut last: Option<u64> = None;
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            message = next_message(&mut stream) => match message? {
                SessionMessage::Assignments(change) => {
                    let sequence = change.sequence;
                    let mut set = (*link.assignments()).clone();
                    set.apply(*change, last)?;
                    last = Some(sequence);
                    link.assignments.send_replace(Arc::new(set));
                }
                SessionMessage::Welcome { .. } => {}
            },
            _ = beat.tick() => {
                let call = client.heartbeat(rpc::json(&Heartbeat { session_id: session_id.clone(), leaving: false }).map_err(text)?);
                let answer = tokio::time::timeout(period, call)
                    .await
                    .map_err(|_| "a heartbeat was not answered in time".to_string())?
                    .map_err(text)?;
                let answer: HeartbeatAnswer = rpc::from_json(answer.get_ref()).map_err(text)?;
                let wanted = Duration::from_millis(answer.period_ms.max(100));
                if wanted != period {
                    period = wanted;
                    beat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
                }
            }
        }
    }
}

async fn next_message(stream: &mut tonic::Streaming<pb::Json>) -> Result<SessionMessage, String> {
    match stream.message().await {
        Ok(Some(m)) => rpc::from_json(&m).map_err(|s| s.message().to_string()),
        Ok(None) => Err("the manager closed the session".into()),
        Err(s) => Err(s.message().to_string()),
    }
}
