//! The CA and Control services every manager serves beside Raft. Each RPC checks who calls
//! from the certificate of the connection (see `proto/cluster.proto` for who may call what).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use openraft::{BasicNode, ChangeMembers};
use tonic::{Request, Response, Status};

use super::ca::{self, NodeIdentity, Role, RootCa};
use super::config::ClusterChange;
use super::lifecycle::{self, NodeChange};
use super::node::{raft_id, require_manager, ClusterNode, Forward};
use super::raft::network::MAX_MESSAGE;
use super::raft::{Answers, Proposal};
use super::rpc::{caller, from_json, json, pb};
use super::seal::UnlockKey;
use super::token::JoinToken;

/// The metadata key a follower puts the leader's address in, for a call only the leader takes.
pub const LEADER_ADDR: &str = "leader-addr";

fn not_leader(node: &ClusterNode) -> Status {
    let mut status = Status::unavailable("this manager is not the leader");
    if let Some((_, addr)) = node.leader() {
        if let Ok(v) = addr.parse() {
            status.metadata_mut().insert(LEADER_ADDR, v);
        }
    }
    status
}

pub struct CaService {
    node: Arc<ClusterNode>,
}

impl CaService {
    pub fn new(node: Arc<ClusterNode>) -> pb::ca_server::CaServer<CaService> {
        pb::ca_server::CaServer::new(CaService { node })
    }
}

#[tonic::async_trait]
impl pb::ca_server::Ca for CaService {
    async fn get_root_certificate(
        &self,
        _req: Request<pb::Empty>,
    ) -> Result<Response<pb::RootCertificate>, Status> {
        Ok(Response::new(pb::RootCertificate {
            pem: self.node.creds.root_pem().to_string(),
        }))
    }

    async fn issue_node_certificate(
        &self,
        req: Request<pb::IssueRequest>,
    ) -> Result<Response<pb::IssueResponse>, Status> {
        let req = req.into_inner();
        let offered: JoinToken = req
            .token
            .parse()
            .map_err(|e| Status::invalid_argument(format!("the join token is malformed: {e}")))?;
        let (root, role, expiry) = self
            .node
            .sm
            .read_cluster(|c| {
                let c = c?;
                let role = [Role::Manager, Role::Worker].into_iter().find(|r| {
                    c.token(*r)
                        .parse::<JoinToken>()
                        .is_ok_and(|t| t.matches(&offered))
                });
                Some((
                    RootCa::from_pem(&c.root_cert_pem, Some(&c.root_key_pem)),
                    role,
                    c.cert_expiry,
                ))
            })
            .ok_or_else(|| Status::unavailable("this manager has no cluster set up yet"))?;
        let root = root.map_err(|e| Status::internal(format!("the cluster's CA: {e:#}")))?;
        let Some(role) = role else {
            return Err(Status::permission_denied(
                if offered.trusts(root.cert_der()) {
                    "the join token is not valid: it was rotated, or it was never this cluster's; ask a manager for the current one (`reconciler join-token worker|manager`)"
                } else {
                    "the join token belongs to another cluster (its CA digest does not match this cluster's root)"
                },
            ));
        };
        let node_id = super::start::random_id(12);
        let identity = NodeIdentity {
            node_id: node_id.clone(),
            role,
            cluster_id: self.node.cluster_id().to_string(),
        };
        let cert = root
            .sign(&req.csr_pem, &identity, SystemTime::now(), expiry)
            .map_err(|e| Status::invalid_argument(format!("the certificate request: {e:#}")))?;
        tracing::info!(node = %node_id, role = role.word(), hostname = %req.hostname, addr = %req.advertise_addr, "issued a certificate to a joining node");
        Ok(Response::new(pb::IssueResponse {
            node_id,
            cluster_id: self.node.cluster_id().to_string(),
            certificate_pem: cert,
            role: role.word().to_string(),
        }))
    }

    async fn renew_node_certificate(
        &self,
        req: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::IssueResponse>, Status> {
        let who = caller(&req)?;
        if who.cluster_id != self.node.cluster_id() {
            return Err(Status::permission_denied(
                "a certificate of another cluster",
            ));
        }
        let (root, expiry, removed) = self
            .node
            .sm
            .read_cluster(|c| {
                c.map(|c| {
                    (
                        RootCa::from_pem(&c.root_cert_pem, Some(&c.root_key_pem)),
                        c.cert_expiry,
                        c.removed.contains(&who.node_id),
                    )
                })
            })
            .ok_or_else(|| Status::unavailable("this manager has no cluster set up yet"))?;
        if removed {
            return Err(Status::permission_denied(format!(
                "node {} was removed from the cluster",
                who.node_id
            )));
        }
        let root = root.map_err(|e| Status::internal(format!("the cluster's CA: {e:#}")))?;
        // The role is the cluster's word now (promote and demote change it), not the old
        // certificate's.
        let role = self.node.role_of(&who.node_id).unwrap_or(who.role);
        let identity = NodeIdentity { role, ..who };
        let cert = root
            .sign(
                &req.into_inner().csr_pem,
                &identity,
                SystemTime::now(),
                expiry,
            )
            .map_err(|e| Status::invalid_argument(format!("the certificate request: {e:#}")))?;
        Ok(Response::new(pb::IssueResponse {
            node_id: identity.node_id,
            cluster_id: identity.cluster_id,
            certificate_pem: cert,
            role: role.word().to_string(),
        }))
    }
}

pub struct ControlService {
    node: Arc<ClusterNode>,
}

impl ControlService {
    pub fn new(node: Arc<ClusterNode>) -> pb::control_server::ControlServer<ControlService> {
        pb::control_server::ControlServer::new(ControlService { node })
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    /// Who calls: the node itself on its control socket, else the certificate of the
    /// connection.
    fn caller<T>(&self, req: &Request<T>) -> Result<NodeIdentity, Status> {
        if super::autolock::is_local(req) {
            return Ok(self.node.creds.identity());
        }
        caller(req)
    }

    /// The caller, who must be a manager of this cluster, not removed.
    fn manager<T>(&self, req: &Request<T>, what: &str) -> Result<NodeIdentity, Status> {
        let who = self.caller(req)?;
        // Removed first: the most telling answer for a node that is out.
        self.not_removed(&who)?;
        require_manager(&who, self.node.cluster_id(), what)?;
        // A demoted manager's older connections still show its manager certificate: the
        // cluster's word on its role counts.
        if self.node.role_of(&who.node_id) == Some(Role::Worker) {
            return Err(Status::permission_denied(format!(
                "{} is a worker now: {what} is for managers only",
                who.node_id
            )));
        }
        Ok(who)
    }

    /// Every node with its status, and each manager's part in Raft as seen from here
    /// (reachable: answers a health call within a second).
    async fn list(&self) -> NodeList {
        let managers = self.node.managers();
        let leader = self.node.raft.metrics().borrow().current_leader;
        // Reachable: answers a health call within a second, from here.
        let mut pings = tokio::task::JoinSet::new();
        for (id, (addr, _voter)) in &managers {
            if *id == self.node.raft_id {
                continue;
            }
            let client = self.node.control(addr);
            let id = *id;
            pings.spawn(async move {
                let ok = match client {
                    Ok(mut c) => matches!(
                        tokio::time::timeout(PING, c.health(pb::Empty {})).await,
                        Ok(Ok(_))
                    ),
                    Err(_) => false,
                };
                (id, ok)
            });
        }
        let mut reachable: BTreeSet<u64> = [self.node.raft_id].into();
        while let Some(r) = pings.join_next().await {
            if let Ok((id, true)) = r {
                reachable.insert(id);
            }
        }
        let mut nodes: Vec<NodeStatus> = self.node.sm.read(|s| {
            s.nodes
                .values()
                .map(|n| {
                    let rid = raft_id(&n.id);
                    let manager = managers.get(&rid);
                    NodeStatus {
                        id: n.id.clone(),
                        hostname: n.hostname.clone(),
                        status: if n.ready { "Ready" } else { "Down" }.into(),
                        availability: n.availability.name().into(),
                        role: if manager.is_some() {
                            "manager"
                        } else {
                            "worker"
                        }
                        .into(),
                        manager_status: match manager {
                            None => String::new(),
                            Some(_) if leader == Some(rid) => "Leader".into(),
                            Some(_) if reachable.contains(&rid) => "Reachable".into(),
                            Some(_) => "Unreachable".into(),
                        },
                        engine_version: n.engine_version.clone(),
                        addr: manager.map(|(a, _)| a.clone()).unwrap_or_default(),
                        labels: n.labels.clone(),
                        engine_labels: n.engine_labels.clone(),
                    }
                })
                .collect()
        });
        // A manager in Raft that has not registered itself yet still shows.
        for (rid, (addr, _)) in &managers {
            if !nodes.iter().any(|n| raft_id(&n.id) == *rid) {
                nodes.push(NodeStatus {
                    id: format!("{rid:x}"),
                    hostname: String::new(),
                    status: "Unknown".into(),
                    availability: String::new(),
                    role: "manager".into(),
                    manager_status: if leader == Some(*rid) {
                        "Leader"
                    } else if reachable.contains(rid) {
                        "Reachable"
                    } else {
                        "Unreachable"
                    }
                    .into(),
                    engine_version: String::new(),
                    addr: addr.clone(),
                    labels: Default::default(),
                    engine_labels: Default::default(),
                });
            }
        }
        NodeList {
            answered_by: self.node.node_id().to_string(),
            nodes,
        }
    }

    fn not_removed(&self, who: &NodeIdentity) -> Result<(), Status> {
        if self
            .node
            .sm
            .read_cluster(|c| c.is_some_and(|c| c.removed.contains(&who.node_id)))
        {
            return Err(Status::permission_denied(format!(
                "node {} was removed from the cluster; its certificate is no longer accepted",
                who.node_id
            )));
        }
        Ok(())
    }
}

/// One node as `node ls` shows it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NodeStatus {
    pub id: String,
    pub hostname: String,
    /// `Ready` or `Down`.
    pub status: String,
    pub availability: String,
    pub role: String,
    /// `Leader`, `Reachable` or `Unreachable`; empty for a worker.
    pub manager_status: String,
    pub engine_version: String,
    /// The cluster address of a manager.
    pub addr: String,
    /// The operator's labels (`node update --label-add`) and the engine's.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub engine_labels: std::collections::BTreeMap<String, String>,
}

/// The answer of ListNodes.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NodeList {
    /// The node that answered (the CLI marks it with `*`).
    pub answered_by: String,
    pub nodes: Vec<NodeStatus>,
}

/// The answer of Health.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Health {
    pub node_id: String,
    pub leader: Option<u64>,
    /// The role the cluster gives the caller now (a node that is not in Raft learns of its
    /// promotion this way).
    #[serde(default)]
    pub your_role: Option<Role>,
    /// The index of the last Raft entry this manager applied.
    #[serde(default)]
    pub applied: Option<u64>,
}

const PING: Duration = Duration::from_secs(1);

#[tonic::async_trait]
impl pb::control_server::Control for ControlService {
    async fn propose(&self, req: Request<pb::Json>) -> Result<Response<pb::Json>, Status> {
        self.manager(&req, "committing to the store")?;
        let proposal: Proposal = from_json(req.get_ref())?;
        match self.node.propose_local(proposal).await {
            Ok(answers) => json(&answers).map(Response::new),
            Err(Forward::To(_)) | Err(Forward::Unknown) => Err(not_leader(&self.node)),
            Err(Forward::Fatal(e)) => Err(Status::internal(e)),
        }
    }

    async fn list_nodes(&self, req: Request<pb::Empty>) -> Result<Response<pb::Json>, Status> {
        self.manager(&req, "listing nodes")?;
        json(&self.list().await).map(Response::new)
    }

    async fn join_token(
        &self,
        req: Request<pb::JoinTokenRequest>,
    ) -> Result<Response<pb::JoinTokenResponse>, Status> {
        self.manager(&req, "reading join tokens")?;
        let req = req.into_inner();
        let role = Role::from_word(&req.role).ok_or_else(|| {
            Status::invalid_argument(format!("no role {:?}: manager or worker", req.role))
        })?;
        if req.rotate {
            let digest = ca::digest(self.node.creds.root_der());
            let token = JoinToken::generate(digest).map_err(|e| Status::internal(e.to_string()))?;
            let answers = self
                .node
                .propose(Proposal::Cluster(ClusterChange::RotateToken {
                    role,
                    token: token.to_string(),
                }))
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            refused(answers)?;
            tracing::info!(role = role.word(), "join token rotated");
            // This manager may not have applied it yet: the answer is the token committed.
            return Ok(Response::new(pb::JoinTokenResponse {
                token: token.to_string(),
            }));
        }
        let token = self
            .node
            .sm
            .read_cluster(|c| c.map(|c| c.token(role).to_string()))
            .ok_or_else(|| Status::unavailable("the cluster is not set up yet"))?;
        Ok(Response::new(pb::JoinTokenResponse { token }))
    }

    async fn add_manager(
        &self,
        req: Request<pb::AddManagerRequest>,
    ) -> Result<Response<pb::Json>, Status> {
        let who = self.manager(&req, "joining Raft")?;
        if !self.node.is_leader() {
            return Err(not_leader(&self.node));
        }
        let addr = req.into_inner().advertise_addr;
        let id = raft_id(&who.node_id);
        let raft = &self.node.raft;
        let voters: BTreeSet<u64> = raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        if !voters.contains(&id) {
            raft.add_learner(id, BasicNode::new(&addr), true)
                .await
                .map_err(|e| {
                    Status::unavailable(format!("adding {} as a learner: {e}", who.node_id))
                })?;
            raft.change_membership(ChangeMembers::AddVoterIds([id].into()), false)
                .await
                .map_err(|e| Status::unavailable(format!("making {} a voter: {e}", who.node_id)))?;
            tracing::info!(node = %who.node_id, addr = %addr, "a manager joined Raft");
        }
        json(&serde_json::json!({ "raft_id": id })).map(Response::new)
    }

    async fn change_node(&self, req: Request<pb::Json>) -> Result<Response<pb::Json>, Status> {
        self.manager(&req, "changing nodes")?;
        let change: NodeChange = from_json(req.get_ref())?;
        // Membership changes are the leader's to make: a follower passes the request on, as
        // the manager the caller reached.
        if !self.node.is_leader() {
            let Some((_, leader)) = self.node.leader() else {
                return Err(Status::unavailable(
                    "no leader is elected: a majority of the managers must be reachable",
                ));
            };
            let mut client = self
                .node
                .control(&leader)
                .map_err(|e| Status::unavailable(e.to_string()))?;
            return client.change_node(json(&change)?).await;
        }
        let message = lifecycle::change(&self.node, change).await?;
        json(&message).map(Response::new)
    }

    async fn sync(&self, req: Request<pb::Empty>) -> Result<Response<pb::Json>, Status> {
        self.manager(&req, "syncing")?;
        let hook =
            self.node.on_sync.get().ok_or_else(|| {
                Status::unavailable("this manager's git watcher is not running yet")
            })?;
        let head = hook().await.map_err(Status::unavailable)?;
        json(&head).map(Response::new)
    }

    async fn leave(&self, req: Request<pb::Json>) -> Result<Response<pb::Json>, Status> {
        let who = self.caller(&req)?;
        if who.cluster_id != self.node.cluster_id() || who.node_id != self.node.node_id() {
            return Err(Status::permission_denied(
                "only the node itself leaves the cluster: run `reconciler leave` with its data dir",
            ));
        }
        #[derive(serde::Deserialize)]
        struct Leave {
            force: bool,
        }
        let Leave { force } = from_json(req.get_ref())?;
        let message = lifecycle::leave(&self.node, force).await?;
        json(&message).map(Response::new)
    }

    async fn inspect_node(&self, req: Request<pb::Json>) -> Result<Response<pb::Json>, Status> {
        self.manager(&req, "inspecting nodes")?;
        let name: String = from_json(req.get_ref())?;
        let id = lifecycle::resolve(&self.node, &name)?;
        let list = self.list().await;
        let status = list.nodes.iter().find(|n| n.id == id).cloned();
        let node = self
            .node
            .sm
            .read(|s| s.nodes.get(&id).cloned())
            .ok_or_else(|| Status::not_found(format!("no such node: {name}")))?;
        json(&lifecycle::inspect(node, status)).map(Response::new)
    }

    async fn health(&self, req: Request<pb::Empty>) -> Result<Response<pb::Json>, Status> {
        let who = self.caller(&req)?;
        if who.cluster_id != self.node.cluster_id() {
            return Err(Status::permission_denied(
                "a certificate of another cluster",
            ));
        }
        json(&Health {
            node_id: self.node.node_id().to_string(),
            leader: self.node.raft.metrics().borrow().current_leader,
            your_role: self.node.role_of(&who.node_id),
            applied: self.node.sm.last_applied(),
        })
        .map(Response::new)
    }

    async fn unlock_key(
        &self,
        req: Request<pb::UnlockKeyRequest>,
    ) -> Result<Response<pb::UnlockKeyResponse>, Status> {
        self.manager(&req, "reading the unlock key")?;
        if self.current_unlock_key().is_none() {
            return Err(Status::failed_precondition(
                "no unlock key is set: autolock is off (turn it on with `reconciler update --autolock=true`)",
            ));
        }
        let key = if req.get_ref().rotate {
            let key = UnlockKey::generate().map_err(|e| Status::internal(e.to_string()))?;
            self.set_unlock_key(Some(key.clone())).await?;
            tracing::info!("the unlock key was rotated");
            // This manager may not have applied it yet: the answer is the key committed.
            key
        } else {
            self.current_unlock_key()
                .ok_or_else(|| Status::failed_precondition("autolock was turned off meanwhile"))?
        };
        Ok(Response::new(pb::UnlockKeyResponse {
            key: key.to_string(),
        }))
    }

    async fn set_secrets(&self, req: Request<pb::Json>) -> Result<Response<pb::Json>, Status> {
        self.manager(&req, "changing the cluster's credentials")?;
        let change: super::config::SecretsChange = from_json(req.get_ref())?;
        if let Some(Some(text)) = &change.age_identity {
            crate::secrets::Identities::from_text(text, "the age identity")
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
        }
        if !change.is_empty() {
            tracing::info!(change = ?change, "changing the cluster's credentials");
            let answers = self
                .node
                .propose(Proposal::Cluster(ClusterChange::SetSecrets(change.clone())))
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            refused(answers)?;
        }
        // What is set now, as this change leaves it (this manager may not have applied it yet).
        let now = self
            .node
            .sm
            .read_cluster(|c| c.map(|c| c.secrets.clone()))
            .unwrap_or_default();
        let set = |mine: &Option<String>, changed: &Option<Option<String>>| match changed {
            Some(v) => v.is_some(),
            None => mine.is_some(),
        };
        let answer = serde_json::json!({
            "age_identity": set(&now.age_identity, &change.age_identity),
            "git_token": set(&now.git_token, &change.git_token),
            "git_ssh_key": set(&now.git_ssh_key, &change.git_ssh_key),
        });
        json(&answer).map(Response::new)
    }

    async fn autolock(
        &self,
        req: Request<pb::AutolockRequest>,
    ) -> Result<Response<pb::UnlockKeyResponse>, Status> {
        self.manager(&req, "changing autolock")?;
        let enable = req.get_ref().enable;
        let key = match (enable, self.current_unlock_key()) {
            // On already: the key stays (rotating is `unlock-key --rotate`).
            (true, Some(key)) => Some(key),
            (true, None) => {
                let key = UnlockKey::generate().map_err(|e| Status::internal(e.to_string()))?;
                self.set_unlock_key(Some(key.clone())).await?;
                tracing::info!("autolock turned on");
                Some(key)
            }
            (false, None) => None,
            (false, Some(_)) => {
                self.set_unlock_key(None).await?;
                tracing::info!("autolock turned off");
                None
            }
        };
        Ok(Response::new(pb::UnlockKeyResponse {
            key: key.map(|k| k.to_string()).unwrap_or_default(),
        }))
    }
}

impl ControlService {
    /// Commit a new unlock key (or none: autolock off); every manager seals its keys with
    /// it once it applies.
    async fn set_unlock_key(&self, key: Option<UnlockKey>) -> Result<(), Status> {
        let answers = self
            .node
            .propose(Proposal::Cluster(ClusterChange::SetUnlockKey {
                key: key.map(|k| k.to_string()),
            }))
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        refused(answers)
    }

    fn current_unlock_key(&self) -> Option<UnlockKey> {
        self.node
            .sm
            .read_cluster(|c| c.and_then(|c| c.unlock_key()))
    }
}

/// A proposal of one cluster change: its refusal as a status.
fn refused(answers: Answers) -> Result<(), Status> {
    match answers.0.into_iter().next() {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err(Status::failed_precondition(e.to_string())),
        None => Err(Status::internal("no answer")),
    }
}
