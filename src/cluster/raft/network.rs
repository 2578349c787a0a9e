//! Raft between managers over gRPC with mutual TLS (tonic). The payloads are openraft's own
//! messages in JSON ([`pb::Payload`]). Only a manager of this cluster may call: the caller's
//! certificate says so, whatever address it comes from.

use std::sync::Arc;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::TypeConfig;
use crate::cluster::ca::{self, Role};
use crate::cluster::tls::Credentials;

/// The generated gRPC code.
pub mod pb {
    tonic::include_proto!("reconciler.raft.v1");
}

type NodeId = u64;

/// The largest message between managers. An entry holds a whole revision (every stack's
/// spec: megabytes for a repository of a thousand services), and gRPC's default of 4 MiB
/// would stop replication at the first big commit.
pub const MAX_MESSAGE: usize = 512 << 20;
type Raft = openraft::Raft<TypeConfig>;

/// Dials the other managers; `BasicNode::addr` is `host:port`.
pub struct Network {
    pub creds: Arc<Credentials>,
    /// Which peers answered their last call: a peer lost and back is said once each way
    /// (openraft itself retries, and would say it several times a second).
    pub reachable: Reachability,
}

pub type Reachability = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<NodeId, bool>>>;

impl Network {
    pub fn new(creds: Arc<Credentials>) -> Network {
        Network {
            creds,
            reachable: Default::default(),
        }
    }
}

pub struct Peer {
    target: NodeId,
    addr: String,
    client: Result<pb::raft_client::RaftClient<Channel>, String>,
    reachable: Reachability,
}

impl Peer {
    fn answered(&self, ok: bool, why: impl FnOnce() -> String) {
        let mut map = self.reachable.lock().unwrap_or_else(|e| e.into_inner());
        let was = map.insert(self.target, ok);
        match (was, ok) {
            (Some(true) | None, false) => {
                tracing::warn!(manager = %self.addr, error = %why(), "a manager is unreachable")
            }
            (Some(false), true) => {
                tracing::info!(manager = %self.addr, "a manager is reachable again")
            }
            _ => {}
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        // Lazy: the connection is made (and made again) by the first call that needs it.
        let client = crate::cluster::rpc::dial(&node.addr, &self.creds)
            .map(|channel| {
                pb::raft_client::RaftClient::new(channel)
                    .max_decoding_message_size(MAX_MESSAGE)
                    .max_encoding_message_size(MAX_MESSAGE)
            })
            .map_err(|e| format!("{}: {e}", node.addr));
        Peer {
            target,
            addr: node.addr.clone(),
            client,
            reachable: self.reachable.clone(),
        }
    }
}

fn encode<T: Serialize>(v: &T) -> Result<pb::Payload, serde_json::Error> {
    Ok(pb::Payload {
        json: serde_json::to_vec(v)?,
    })
}

/// The three messages of Raft.
#[derive(Clone, Copy)]
enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl std::fmt::Display for Rpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Rpc::AppendEntries => "append entries",
            Rpc::Vote => "vote",
            Rpc::InstallSnapshot => "install snapshot",
        })
    }
}

impl Peer {
    async fn call<Req, Resp, E>(
        &mut self,
        rpc: Rpc,
        req: &Req,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let network = |e: &dyn std::fmt::Display| {
            RPCError::Network(NetworkError::new(&std::io::Error::other(format!(
                "{rpc}: {e}"
            ))))
        };
        let client = match &mut self.client {
            Ok(c) => c,
            Err(e) => {
                return Err(RPCError::Unreachable(Unreachable::new(
                    &std::io::Error::other(e.clone()),
                )))
            }
        };
        let payload = encode(req).map_err(|e| network(&e))?;
        let answer = match rpc {
            Rpc::AppendEntries => client.append_entries(payload).await,
            Rpc::Vote => client.vote(payload).await,
            Rpc::InstallSnapshot => client.install_snapshot(payload).await,
        };
        match &answer {
            Ok(_) => self.answered(true, String::new),
            Err(status) => self.answered(false, || status.message().to_string()),
        }
        let answer = answer.map_err(|status| {
            if status.code() == tonic::Code::Unavailable {
                RPCError::Unreachable(Unreachable::new(&std::io::Error::other(status.to_string())))
            } else {
                network(&status)
            }
        })?;
        let result: Result<Resp, RaftError<NodeId, E>> =
            serde_json::from_slice(&answer.into_inner().json).map_err(|e| network(&e))?;
        result.map_err(|e| RPCError::RemoteError(openraft::error::RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    /// openraft gives each call one heartbeat interval: entries beyond a byte budget are
    /// left for the next call, and the answer says how far this one got (a partial success).
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let keep = within_budget(&rpc.entries);
        if keep == rpc.entries.len() {
            return self.call(Rpc::AppendEntries, &rpc).await;
        }
        rpc.entries.truncate(keep);
        let sent = rpc.entries.last().map(|e| e.log_id);
        match self.call(Rpc::AppendEntries, &rpc).await? {
            AppendEntriesResponse::Success => Ok(AppendEntriesResponse::PartialSuccess(sent)),
            other => Ok(other),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(Rpc::InstallSnapshot, &rpc).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(Rpc::Vote, &rpc).await
    }
}

/// The most entry bytes one AppendEntries carries (at least one entry goes, whatever its
/// size; proposals are cut into pieces of [`super::PART_SIZE`]).
const BATCH_BYTES: usize = 256 << 10;

/// How many of `entries`, from the first, fit in [`BATCH_BYTES`] (never none).
fn within_budget(entries: &[openraft::Entry<TypeConfig>]) -> usize {
    let mut used = 0;
    for (i, entry) in entries.iter().enumerate() {
        used += entry_size(entry);
        if i > 0 && used > BATCH_BYTES {
            return i;
        }
    }
    entries.len()
}

/// An entry's size on the wire, near enough: the pieces of big proposals by their text,
/// the rest by their JSON.
fn entry_size(entry: &openraft::Entry<TypeConfig>) -> usize {
    match &entry.payload {
        openraft::EntryPayload::Normal(super::Proposal::Part { text, .. }) => text.len() + 64,
        openraft::EntryPayload::Normal(p) => serde_json::to_vec(p).map_or(0, |v| v.len()) + 64,
        _ => 128,
    }
}

/// The receiving end: hands each message to this manager's Raft.
pub struct Service {
    raft: Raft,
    cluster_id: String,
    /// Where the removed nodes are known (none in tests of Raft alone).
    sm: Option<super::StateMachine>,
}

impl Service {
    pub fn new(
        raft: Raft,
        cluster_id: &str,
        sm: Option<super::StateMachine>,
    ) -> pb::raft_server::RaftServer<Service> {
        pb::raft_server::RaftServer::new(Service {
            raft,
            cluster_id: cluster_id.to_string(),
            sm,
        })
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
    }

    /// Only a manager of this cluster takes part in Raft (a worker's certificate is valid TLS,
    /// not a vote).
    fn check_caller(&self, req: &Request<pb::Payload>) -> Result<(), Status> {
        let certs = req.peer_certs();
        let leaf = certs
            .as_ref()
            .and_then(|c| c.first())
            .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
        let who = ca::identity(leaf).map_err(|e| Status::unauthenticated(e.to_string()))?;
        if who.role != Role::Manager || who.cluster_id != self.cluster_id {
            return Err(Status::permission_denied(format!(
                "{} ({}) may not take part in Raft: managers of cluster {} only",
                who.node_id,
                who.role.name(),
                self.cluster_id
            )));
        }
        let removed = self.sm.as_ref().is_some_and(|sm| {
            sm.read_cluster(|c| c.is_some_and(|c| c.removed.contains(&who.node_id)))
        });
        if removed {
            return Err(Status::permission_denied(format!(
                "{} was removed from the cluster",
                who.node_id
            )));
        }
        Ok(())
    }
}

fn decode<T: DeserializeOwned>(req: Request<pb::Payload>) -> Result<T, Status> {
    serde_json::from_slice(&req.into_inner().json)
        .map_err(|e| Status::invalid_argument(format!("not an openraft message: {e}")))
}

fn answer<T: Serialize>(v: &T) -> Result<Response<pb::Payload>, Status> {
    encode(v)
        .map(Response::new)
        .map_err(|e| Status::internal(e.to_string()))
}

#[tonic::async_trait]
impl pb::raft_server::Raft for Service {
    async fn append_entries(
        &self,
        req: Request<pb::Payload>,
    ) -> Result<Response<pb::Payload>, Status> {
        self.check_caller(&req)?;
        let rpc: AppendEntriesRequest<TypeConfig> = decode(req)?;
        answer(&self.raft.append_entries(rpc).await)
    }

    async fn vote(&self, req: Request<pb::Payload>) -> Result<Response<pb::Payload>, Status> {
        self.check_caller(&req)?;
        let rpc: VoteRequest<NodeId> = decode(req)?;
        answer(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        req: Request<pb::Payload>,
    ) -> Result<Response<pb::Payload>, Status> {
        self.check_caller(&req)?;
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(req)?;
        answer(&self.raft.install_snapshot(rpc).await)
    }
}
