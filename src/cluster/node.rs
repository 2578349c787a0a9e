//! A manager's part in the cluster once it runs: its Raft, its state machine, who it is, and
//! how it commits. Every write goes through [`ClusterNode::propose`]: on the leader straight
//! into Raft, on a follower forwarded to the leader over the Control service.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ServerState};
use sha2::{Digest as _, Sha256};
use tonic::transport::Channel;

use super::ca::Role;
use super::files::{NodeFiles, NodeInfo, NodeKeys};
use super::raft::{Answers, Proposal, StateMachine, TypeConfig};
use super::rpc::{self, pb};
use super::seal::{DataKey, UnlockKey};
use super::tls::Credentials;

pub type Raft = openraft::Raft<TypeConfig>;

/// How long a write may wait for a quorum before the caller is told it has none.
pub const PROPOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// A leader without word from a majority for this long says so (elections take under 1 s).
const QUORUM_SILENCE_MS: u64 = 3000;

/// Raft's number for a node: derived from its ID, so every manager computes the same one
/// and no table has to be kept in step.
pub fn raft_id(node_id: &str) -> u64 {
    let digest = Sha256::digest(node_id.as_bytes());
    let mut n = [0u8; 8];
    n.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(n).max(1)
}

/// Why a write did not commit.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProposeError {
    #[error("no quorum: the write was not committed within {secs}s; a majority of the managers must be reachable ({why})", secs = PROPOSE_TIMEOUT.as_secs(), why = .0)]
    NoQuorum(String),
    #[error("no leader is elected yet; try again in a moment")]
    NoLeader,
    #[error("{0}")]
    Failed(String),
}

pub struct ClusterNode {
    pub info: NodeInfo,
    pub raft_id: u64,
    pub raft: Raft,
    pub sm: StateMachine,
    /// This node's certificate of the moment (renewals replace it).
    pub creds: std::sync::Arc<Credentials>,
    pub files: NodeFiles,
    /// Channels to the other managers, by address.
    channels: Mutex<HashMap<String, Channel>>,
    /// The same for long-lived streams (dispatcher sessions passed on to the leader).
    stream_channels: Mutex<HashMap<String, Channel>>,
    /// The managers the dispatcher named last (a worker knows no Raft membership).
    known_managers: Mutex<Vec<String>>,
    /// The dispatcher, once the node's loops run (it serves while this manager leads).
    pub dispatcher: std::sync::OnceLock<std::sync::Arc<crate::dispatcher::Dispatcher>>,
    /// Cancelled when this node has left the cluster (`reconciler leave`): the process stops
    /// and forgets its cluster.
    pub left: tokio_util::sync::CancellationToken,
    /// Cancelled when this node starts to leave: its agent closes its dispatcher session
    /// first, so that nothing says it is ready once it is marked down.
    pub leaving: crate::agent::session::Leaving,
    /// Fetch the repository now: set by the manager once its git watcher runs.
    pub on_sync: std::sync::OnceLock<SyncHook>,
    /// The key this node's Raft files are sealed with.
    pub data_key: DataKey,
    /// The unlock key the keys on disk are sealed with now (`None`: in the clear).
    sealed_with: Mutex<Option<UnlockKey>>,
}

/// What `Control.Sync` runs: the head fetched, as JSON, or why not.
pub type SyncHook = Box<
    dyn Fn() -> futures::future::BoxFuture<'static, Result<serde_json::Value, String>>
        + Send
        + Sync,
>;

impl ClusterNode {
    pub fn new(
        info: NodeInfo,
        raft: Raft,
        sm: StateMachine,
        creds: std::sync::Arc<Credentials>,
        files: NodeFiles,
        keys: (DataKey, Option<UnlockKey>),
    ) -> Self {
        ClusterNode {
            known_managers: Mutex::new(info.managers.clone()),
            data_key: keys.0,
            sealed_with: Mutex::new(keys.1),
            raft_id: raft_id(&info.node_id),
            info,
            raft,
            sm,
            creds,
            files,
            channels: Default::default(),
            stream_channels: Default::default(),
            dispatcher: Default::default(),
            left: Default::default(),
            leaving: Default::default(),
            on_sync: Default::default(),
        }
    }

    pub fn node_id(&self) -> &str {
        &self.info.node_id
    }

    pub fn cluster_id(&self) -> &str {
        &self.info.cluster_id
    }

    /// A Control client to the manager at `addr`, as this node.
    pub fn control(
        &self,
        addr: &str,
    ) -> anyhow::Result<pb::control_client::ControlClient<Channel>> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        let channel = match channels.get(addr) {
            Some(c) => c.clone(),
            None => {
                let c = rpc::dial(addr, &self.creds)?;
                channels.insert(addr.to_string(), c.clone());
                c
            }
        };
        Ok(pb::control_client::ControlClient::new(channel)
            .max_decoding_message_size(super::raft::network::MAX_MESSAGE)
            .max_encoding_message_size(super::raft::network::MAX_MESSAGE))
    }

    /// A channel for long-lived streams to the manager at `addr`, as this node.
    pub fn stream_channel(&self, addr: &str) -> anyhow::Result<Channel> {
        let mut channels = self
            .stream_channels
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let c = rpc::dial_stream(addr, &self.creds)?;
        channels.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// How this node's keys should be kept now: sealed by the cluster's unlock key when the
    /// cluster is autolocked and this node is a manager (a worker holds no Raft data).
    pub fn wanted_lock(&self) -> Option<UnlockKey> {
        if self.creds.identity().role != Role::Manager {
            return None;
        }
        self.sm.read_cluster(|c| c.and_then(|c| c.unlock_key()))
    }

    /// Keep this node's keys on disk as [`ClusterNode::wanted_lock`] says, unless they are
    /// kept so already (`force`: write them anyway, as after a renewal's new key).
    pub fn save_keys(&self, force: bool) -> anyhow::Result<()> {
        let mut sealed_with = self.sealed_with.lock().unwrap_or_else(|e| e.into_inner());
        let wanted = self.wanted_lock();
        if !force && *sealed_with == wanted && self.files.is_locked() == wanted.is_some() {
            return Ok(());
        }
        let keys = NodeKeys {
            tls_key: zeroize::Zeroizing::new(self.creds.pem().key),
            data_key: self.data_key.clone(),
        };
        self.files.save_keys(&keys, wanted.as_ref())?;
        if wanted.is_some() != sealed_with.is_some() {
            tracing::info!(
                sealed = wanted.is_some(),
                "this manager's keys on disk are now {}",
                if wanted.is_some() {
                    "sealed by the unlock key (autolock)"
                } else {
                    "in the clear (autolock off)"
                }
            );
        }
        *sealed_with = wanted;
        Ok(())
    }

    /// The role the cluster gives a node now, by its record in the store.
    pub fn role_of(&self, node_id: &str) -> Option<Role> {
        self.sm.read(|s| {
            s.nodes.get(node_id).map(|n| match n.role {
                crate::store::NodeRole::Manager => Role::Manager,
                crate::store::NodeRole::Worker => Role::Worker,
            })
        })
    }

    /// Ask the leader to fetch now (a follower saw a head the leader may not have yet; the
    /// leader alone applies). Best effort: the leader polls on its own too.
    pub async fn ask_leader_to_sync(&self) {
        let Some((id, addr)) = self.leader() else {
            return;
        };
        if id == self.raft_id {
            return;
        }
        let Ok(mut client) = self.control(&addr) else {
            return;
        };
        match tokio::time::timeout(Duration::from_secs(30), client.sync(pb::Empty {})).await {
            Ok(Ok(_)) => tracing::debug!(leader = %addr, "asked the leader to fetch"),
            Ok(Err(s)) => {
                tracing::debug!(leader = %addr, error = %s.message(), "asking the leader to fetch")
            }
            Err(_) => tracing::debug!(leader = %addr, "asking the leader to fetch timed out"),
        }
    }

    /// Is this node in Raft's membership (a voter or a learner)?
    pub fn in_raft(&self) -> bool {
        self.managers().contains_key(&self.raft_id)
    }

    /// The managers to ask, best first: this node when it is one, then the others of the
    /// membership it knows, then those its data dir remembers.
    pub fn manager_addresses(&self) -> Vec<String> {
        let managers = self.managers();
        let mut out = Vec::new();
        if let Some((addr, _)) = managers.get(&self.raft_id) {
            out.push(addr.clone());
        }
        if let Some((_, addr)) = self.leader() {
            out.push(addr);
        }
        out.extend(managers.values().map(|(a, _)| a.clone()));
        out.extend(
            self.known_managers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned(),
        );
        out.extend(self.info.managers.iter().cloned());
        let mut seen = std::collections::HashSet::new();
        out.retain(|a| seen.insert(a.clone()));
        out
    }

    /// The managers as the dispatcher names them now: kept for renewals and role checks, and
    /// in node.json for the next start (a worker's way back in when the manager it joined
    /// through is gone).
    pub fn learn_managers(&self, managers: Vec<String>) {
        let mut known = self
            .known_managers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if *known == managers || managers.is_empty() {
            return;
        }
        known.clone_from(&managers);
        if let Err(e) = self.files.update(|info| info.managers = managers) {
            tracing::warn!(error = %format!("{e:#}"), "recording the managers in node.json");
        }
    }

    /// Forget the connections made so far: the next call dials again, with the certificate
    /// of the moment (after a renewal that changed this node's role).
    pub fn redial(&self) {
        self.channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.stream_channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    pub fn is_leader(&self) -> bool {
        let m = self.raft.metrics().borrow().clone();
        m.state == ServerState::Leader && m.current_leader == Some(self.raft_id)
    }

    /// The leader as this node knows it: Raft number and address.
    pub fn leader(&self) -> Option<(u64, String)> {
        let m = self.raft.metrics().borrow().clone();
        let id = m.current_leader?;
        let node = m.membership_config.membership().get_node(&id)?.clone();
        Some((id, node.addr))
    }

    /// The managers in the membership (voters and learners), by Raft number.
    pub fn managers(&self) -> BTreeMap<u64, (String, bool)> {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, n)| (*id, (n.addr.clone(), voters.contains(id))))
            .collect()
    }

    /// Wakes whenever this node gains or loses the leadership (and on other Raft changes).
    pub fn leadership(
        &self,
    ) -> tokio::sync::watch::Receiver<openraft::RaftMetrics<u64, BasicNode>> {
        self.raft.metrics()
    }

    /// Commit a proposal: here if this node leads, else at the leader. Waits at most
    /// [`PROPOSE_TIMEOUT`] for a quorum.
    pub async fn propose(&self, proposal: Proposal) -> Result<Answers, ProposeError> {
        match tokio::time::timeout(PROPOSE_TIMEOUT, self.propose_inner(proposal)).await {
            Ok(r) => r,
            Err(_) => Err(ProposeError::NoQuorum(self.quorum_report())),
        }
    }

    async fn propose_inner(&self, proposal: Proposal) -> Result<Answers, ProposeError> {
        let mut wait = Duration::from_millis(50);
        loop {
            match self.propose_local(proposal.clone()).await {
                Ok(answers) => return Ok(answers),
                Err(Forward::To(addr)) => match self.forward(&addr, &proposal).await {
                    Ok(answers) => return Ok(answers),
                    // The leader moved or is unreachable: look again.
                    Err(e) => {
                        tracing::debug!(leader = %addr, error = %e, "forwarding a write failed; retrying")
                    }
                },
                Err(Forward::Unknown) => {}
                Err(Forward::Fatal(e)) => return Err(ProposeError::Failed(e)),
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_millis(500));
        }
    }

    /// Commit through this node's Raft, or say where the leader is. A big proposal goes in
    /// pieces, one entry each, the last of which applies it (see [`Proposal::Part`]).
    pub async fn propose_local(&self, proposal: Proposal) -> Result<Answers, Forward> {
        let id = {
            use ring::rand::SecureRandom as _;
            let mut bytes = [0u8; 8];
            ring::rand::SystemRandom::new()
                .fill(&mut bytes)
                .map_err(|_| Forward::Fatal("the system's random source failed".into()))?;
            u64::from_le_bytes(bytes)
        };
        let parts = proposal
            .into_parts(id)
            .map_err(|e| Forward::Fatal(format!("encoding a proposal: {e}")))?;
        let mut answers = Answers::default();
        for part in parts {
            answers = self.write_entry(part).await?;
        }
        // A change of leader between the pieces (this node led again after it): nothing
        // applied; the caller's retry proposes it whole again.
        if matches!(
            answers.0.as_slice(),
            [Err(crate::store::ApplyError::PartsLost)]
        ) {
            return Err(Forward::Unknown);
        }
        Ok(answers)
    }

    async fn write_entry(&self, proposal: Proposal) -> Result<Answers, Forward> {
        match self.raft.client_write(proposal).await {
            Ok(written) => Ok(written.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                match (f.leader_id, f.leader_node) {
                    (Some(id), _) if id == self.raft_id => Err(Forward::Unknown),
                    (_, Some(node)) => Err(Forward::To(node.addr)),
                    _ => Err(Forward::Unknown),
                }
            }
            Err(e) => Err(Forward::Fatal(e.to_string())),
        }
    }

    async fn forward(&self, addr: &str, proposal: &Proposal) -> anyhow::Result<Answers> {
        let mut client = self.control(addr)?;
        let answer = client
            .propose(rpc::json(proposal).map_err(|s| anyhow::anyhow!(s.message().to_string()))?)
            .await
            .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
        Ok(serde_json::from_slice(&answer.into_inner().json)?)
    }

    /// Why this manager cannot commit now, as far as it can tell without trying: no leader
    /// known, or leading without word from a majority for a while.
    pub fn problem(&self) -> Option<String> {
        let m = self.raft.metrics().borrow().clone();
        let voters = m.membership_config.membership().voter_ids().count();
        match m.current_leader {
            None => Some(format!(
                "no leader: this manager cannot reach a majority of the {voters} managers"
            )),
            Some(l) if l == self.raft_id => match m.millis_since_quorum_ack {
                Some(ms) if ms > QUORUM_SILENCE_MS => Some(format!(
                    "no quorum: this manager leads but has not heard from a majority of the {voters} managers for {:.0}s",
                    ms as f64 / 1000.0
                )),
                _ => None,
            },
            Some(_) => None,
        }
    }

    /// What this manager knows of the quorum, for the message of a write that did not commit.
    pub fn quorum_report(&self) -> String {
        let m = self.raft.metrics().borrow().clone();
        let voters = m.membership_config.membership().voter_ids().count();
        match m.current_leader {
            None => format!("no leader is known to this manager; {voters} managers in all"),
            Some(l) if l == self.raft_id => format!(
                "this manager leads but has not heard from a majority of the {voters} managers for {}",
                m.millis_since_quorum_ack
                    .map(|ms| format!("{:.1}s", ms as f64 / 1000.0))
                    .unwrap_or_else(|| "a while".into())
            ),
            Some(_) => format!("the leader did not answer; {voters} managers in all"),
        }
    }
}

/// Where a write must go instead.
#[derive(Debug)]
pub enum Forward {
    To(String),
    /// No leader known yet (an election is under way).
    Unknown,
    Fatal(String),
}

/// The role a manager's certificate must carry for manager-only calls.
pub fn require_manager(
    who: &super::ca::NodeIdentity,
    cluster_id: &str,
    what: &str,
) -> Result<(), tonic::Status> {
    if who.cluster_id != cluster_id {
        return Err(tonic::Status::permission_denied(format!(
            "the certificate belongs to another cluster ({}), not {cluster_id}",
            who.cluster_id
        )));
    }
    if who.role != Role::Manager {
        return Err(tonic::Status::permission_denied(format!(
            "{} is a {}: {what} is for managers only",
            who.node_id,
            who.role.word()
        )));
    }
    Ok(())
}
