//! The `Dispatcher` gRPC service on every manager's listener. The leader's dispatcher answers;
//! a follower passes each call on to the leader, saying which node it speaks for, and the
//! leader believes that only of a caller whose certificate (and record) says manager.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt as _};
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use super::wire::{Heartbeat, HeartbeatAnswer, SessionRequest, StatusAnswer, StatusBatch};
use super::DispatchError;
use crate::cluster::ca::Role;
use crate::cluster::node::ClusterNode;
use crate::cluster::rpc::{self, from_json, json, pb};
use crate::store::NodeRole;

/// The node a follower speaks for, and its role, on a call it passes on.
const FORWARDED_NODE: &str = "forwarded-node";
const FORWARDED_ROLE: &str = "forwarded-role";

pub struct DispatcherService {
    node: Arc<ClusterNode>,
}

impl DispatcherService {
    pub fn new(node: Arc<ClusterNode>) -> pb::dispatcher_server::DispatcherServer<Self> {
        pb::dispatcher_server::DispatcherServer::new(DispatcherService { node })
            .max_decoding_message_size(crate::cluster::raft::network::MAX_MESSAGE)
            .max_encoding_message_size(crate::cluster::raft::network::MAX_MESSAGE)
    }

    /// Which node the call is for: the caller's own certificate, or, from a manager passing
    /// a call on, the node it names. Refused for a node removed from the cluster.
    fn caller<T>(&self, req: &Request<T>) -> Result<(String, Role, bool), Status> {
        let who = rpc::caller(req)?;
        if who.cluster_id != self.node.cluster_id() {
            return Err(Status::permission_denied(
                "a certificate of another cluster",
            ));
        }
        let removed = |id: &str| {
            self.node
                .sm
                .read_cluster(|c| c.is_some_and(|c| c.removed.contains(id)))
        };
        if removed(&who.node_id) {
            return Err(Status::permission_denied(format!(
                "node {} was removed from the cluster",
                who.node_id
            )));
        }
        let forwarded = req
            .metadata()
            .get(FORWARDED_NODE)
            .and_then(|v| v.to_str().ok());
        let Some(for_node) = forwarded else {
            return Ok((who.node_id, who.role, false));
        };
        let is_manager =
            who.role == Role::Manager && self.node.role_of(&who.node_id) != Some(Role::Worker);
        if !is_manager {
            return Err(Status::permission_denied(
                "only a manager may pass on another node's call",
            ));
        }
        if removed(for_node) {
            return Err(Status::permission_denied(format!(
                "node {for_node} was removed from the cluster"
            )));
        }
        let role = req
            .metadata()
            .get(FORWARDED_ROLE)
            .and_then(|v| v.to_str().ok())
            .and_then(Role::from_word)
            .unwrap_or(Role::Worker);
        Ok((for_node.to_string(), role, true))
    }

    /// The dispatcher here if it serves; else the leader to pass the call on to.
    fn route(&self, forwarded: bool) -> Result<Route, Status> {
        if let Some(d) = self.node.dispatcher.get().filter(|d| d.is_active()) {
            return Ok(Route::Here(d.clone()));
        }
        if forwarded || self.node.is_leader() {
            // Passed on once only; a leader whose dispatcher is not up yet says so.
            return Err(status(DispatchError::NotServing));
        }
        match self.node.leader() {
            Some((_, addr)) if addr != self.node.info.advertise_addr => Ok(Route::Leader(addr)),
            _ => Err(Status::unavailable(
                "no leader is elected yet; try again in a moment",
            )),
        }
    }

    fn client(
        &self,
        addr: &str,
    ) -> Result<pb::dispatcher_client::DispatcherClient<tonic::transport::Channel>, Status> {
        let channel = self
            .node
            .stream_channel(addr)
            .map_err(|e| Status::unavailable(format!("{e:#}")))?;
        Ok(pb::dispatcher_client::DispatcherClient::new(channel)
            .max_decoding_message_size(crate::cluster::raft::network::MAX_MESSAGE)
            .max_encoding_message_size(crate::cluster::raft::network::MAX_MESSAGE))
    }
}

enum Route {
    Here(Arc<super::Dispatcher>),
    Leader(String),
}

fn status(e: DispatchError) -> Status {
    match e {
        DispatchError::NotServing => Status::unavailable(e.to_string()),
        DispatchError::UnknownSession => Status::not_found(e.to_string()),
    }
}

/// The same call, for the leader, naming the node it is for.
fn passed_on<T>(inner: T, node: &str, role: Role) -> Result<Request<T>, Status> {
    let mut req = Request::new(inner);
    let bad = |_| Status::invalid_argument("a node ID that cannot travel in metadata");
    req.metadata_mut()
        .insert(FORWARDED_NODE, MetadataValue::try_from(node).map_err(bad)?);
    req.metadata_mut().insert(
        FORWARDED_ROLE,
        MetadataValue::try_from(role.word()).map_err(bad)?,
    );
    Ok(req)
}

type JsonStream = Pin<Box<dyn Stream<Item = Result<pb::Json, Status>> + Send>>;

#[tonic::async_trait]
impl pb::dispatcher_server::Dispatcher for DispatcherService {
    type SessionStream = JsonStream;

    async fn session(
        &self,
        req: Request<pb::Json>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let (node, role, forwarded) = self.caller(&req)?;
        match self.route(forwarded)? {
            Route::Here(d) => {
                let request: SessionRequest = from_json(req.get_ref())?;
                let role = match role {
                    Role::Manager => NodeRole::Manager,
                    Role::Worker => NodeRole::Worker,
                };
                let rx = d.open(&node, role, request).map_err(status)?;
                let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(|m| json(&m));
                Ok(Response::new(Box::pin(stream)))
            }
            Route::Leader(addr) => {
                let stream = self
                    .client(&addr)?
                    .session(passed_on(req.into_inner(), &node, role)?)
                    .await?
                    .into_inner();
                Ok(Response::new(Box::pin(stream)))
            }
        }
    }

    async fn heartbeat(&self, req: Request<pb::Json>) -> Result<Response<pb::Json>, Status> {
        let (node, role, forwarded) = self.caller(&req)?;
        match self.route(forwarded)? {
            Route::Here(d) => {
                let beat: Heartbeat = from_json(req.get_ref())?;
                if beat.leaving {
                    d.leave(&node, &beat.session_id).await.map_err(status)?;
                }
                let period = match beat.leaving {
                    true => super::DEFAULT_HEARTBEAT,
                    false => d.heartbeat(&node, &beat.session_id).map_err(status)?,
                };
                Ok(Response::new(json(&HeartbeatAnswer {
                    period_ms: period.as_millis() as u64,
                })?))
            }
            Route::Leader(addr) => {
                self.client(&addr)?
                    .heartbeat(passed_on(req.into_inner(), &node, role)?)
                    .await
            }
        }
    }

    async fn update_task_status(
        &self,
        req: Request<pb::Json>,
    ) -> Result<Response<pb::Json>, Status> {
        let (node, role, forwarded) = self.caller(&req)?;
        match self.route(forwarded)? {
            Route::Here(d) => {
                let batch: StatusBatch = from_json(req.get_ref())?;
                let applied = d.report(&node, batch).await.map_err(status)?;
                Ok(Response::new(json(&StatusAnswer { applied })?))
            }
            Route::Leader(addr) => {
                self.client(&addr)?
                    .update_task_status(passed_on(req.into_inner(), &node, role)?)
                    .await
            }
        }
    }
}
