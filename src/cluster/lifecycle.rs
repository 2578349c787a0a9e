//! `node promote`, `node demote`, `node rm` and `node inspect` on the leader: the membership
//! of Raft, the node's role in the store and the cluster's list of removed nodes change
//! together, in the order that keeps the cluster safe at every step.

use std::collections::BTreeMap;
use std::time::Duration;

use openraft::ChangeMembers;
use tonic::Status;

use super::ca::Role;
use super::config::ClusterChange;
use super::node::{raft_id, ClusterNode};
use super::raft::Proposal;
use super::services::NodeStatus;
use crate::store::{Command, Node, NodeRole};

/// What `node promote | demote | rm` asks for.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NodeChange {
    /// The node's ID, a unique ID prefix, or its hostname.
    pub node: String,
    pub action: Action,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Promote,
    Demote,
    Remove {
        force: bool,
    },
    /// `node update`.
    Update(NodeUpdate),
}

/// What `node update` changes; what it leaves out stays.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeUpdate {
    #[serde(default)]
    pub availability: Option<crate::store::Availability>,
    #[serde(default)]
    pub label_add: BTreeMap<String, String>,
    #[serde(default)]
    pub label_rm: Vec<String>,
    #[serde(default)]
    pub role: Option<NodeRole>,
}

/// A membership change waits this long for a quorum.
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(10);

/// The node a name means, as docker takes it: an ID, a unique ID prefix, or a hostname.
pub fn resolve(node: &ClusterNode, name: &str) -> Result<String, Status> {
    let matches = node.sm.read(|s| {
        if s.nodes.contains_key(name) {
            return vec![name.to_string()];
        }
        let by_prefix: Vec<String> = s
            .nodes
            .keys()
            .filter(|id| id.starts_with(name))
            .cloned()
            .collect();
        if !by_prefix.is_empty() {
            return by_prefix;
        }
        s.nodes
            .values()
            .filter(|n| n.hostname == name)
            .map(|n| n.id.clone())
            .collect()
    });
    match matches.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(Status::not_found(format!("no such node: {name}"))),
        many => Err(Status::invalid_argument(format!(
            "node {name} is ambiguous ({} matches: {}); give more of its ID",
            many.len(),
            many.join(", ")
        ))),
    }
}

fn with_role(node: &ClusterNode, id: &str, role: NodeRole) -> Result<Node, Status> {
    let mut n = node
        .sm
        .read(|s| s.nodes.get(id).cloned())
        .ok_or_else(|| Status::not_found(format!("no such node: {id}")))?;
    n.role = role;
    Ok(n)
}

async fn commit(node: &ClusterNode, proposal: Proposal) -> Result<(), Status> {
    let answers = node
        .propose(proposal)
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    match answers.0.into_iter().next() {
        Some(Err(e)) => Err(Status::failed_precondition(e.to_string())),
        _ => Ok(()),
    }
}

/// Commit through the leader the other managers elected, asking them who it is (for a leader
/// that has just left Raft).
async fn commit_at_new_leader(node: &ClusterNode, proposal: Proposal) -> Result<(), Status> {
    let deadline = tokio::time::Instant::now() + MEMBERSHIP_TIMEOUT;
    let mut last = String::from("no manager answered");
    while tokio::time::Instant::now() < deadline {
        let managers = node.managers();
        for (addr, _) in managers
            .iter()
            .filter(|(id, _)| **id != node.raft_id)
            .map(|(_, a)| a)
        {
            let Ok(mut client) = node.control(addr) else {
                continue;
            };
            let leader = match client.health(super::rpc::pb::Empty {}).await {
                Ok(h) => serde_json::from_slice::<super::services::Health>(&h.into_inner().json)
                    .ok()
                    .and_then(|h| h.leader),
                Err(s) => {
                    last = s.message().to_string();
                    None
                }
            };
            let Some((_, (leader_addr, _))) = leader
                .filter(|l| *l != node.raft_id)
                .and_then(|l| managers.get_key_value(&l))
            else {
                continue;
            };
            let Ok(mut client) = node.control(leader_addr) else {
                continue;
            };
            match client.propose(super::rpc::json(&proposal)?).await {
                Ok(answer) => {
                    let answers: super::raft::Answers =
                        serde_json::from_slice(&answer.into_inner().json)
                            .map_err(|e| Status::internal(e.to_string()))?;
                    return match answers.0.into_iter().next() {
                        Some(Err(e)) => Err(Status::failed_precondition(e.to_string())),
                        _ => Ok(()),
                    };
                }
                Err(s) => last = s.message().to_string(),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(Status::unavailable(format!(
        "this manager left Raft, but no new leader took the rest of the change within {}s: {last}",
        MEMBERSHIP_TIMEOUT.as_secs()
    )))
}

/// Make the change; the answer is what the command line prints.
pub async fn change(node: &ClusterNode, change: NodeChange) -> Result<String, Status> {
    let id = resolve(node, &change.node)?;
    let rid = raft_id(&id);
    let record = node
        .sm
        .read(|s| s.nodes.get(&id).cloned())
        .ok_or_else(|| Status::not_found(format!("no such node: {}", change.node)))?;
    let managers = node.managers();
    let in_raft = managers.contains_key(&rid);
    match change.action {
        Action::Update(update) => {
            let mut labels = record.labels.clone();
            for k in &update.label_rm {
                if labels.remove(k).is_none() {
                    return Err(Status::failed_precondition(format!(
                        "key {k} doesn't exist in node's labels"
                    )));
                }
            }
            labels.extend(update.label_add);
            let availability = update.availability.unwrap_or(record.availability);
            commit(
                node,
                Proposal::Commands(vec![Command::SetNodeSpec {
                    id: id.clone(),
                    availability,
                    labels,
                }]),
            )
            .await?;
            let role = update.role.filter(|r| *r != record.role);
            if let Some(role) = role {
                let action = match role {
                    NodeRole::Manager => Action::Promote,
                    NodeRole::Worker => Action::Demote,
                };
                Box::pin(self::change(
                    node,
                    NodeChange {
                        node: id.clone(),
                        action,
                    },
                ))
                .await?;
            }
            // As docker: the node as the caller named it.
            Ok(change.node)
        }
        Action::Promote => {
            if record.role == NodeRole::Manager {
                return Ok(format!("Node {id} is already a manager."));
            }
            // The store says it first; the node learns it, renews its certificate as a
            // manager, and asks to enter Raft (see `renew`).
            commit(
                node,
                Proposal::Commands(vec![Command::UpsertNode {
                    node: with_role(node, &id, NodeRole::Manager)?,
                }]),
            )
            .await?;
            Ok(format!("Node {id} promoted to a manager in the cluster."))
        }
        Action::Demote => {
            if record.role == NodeRole::Worker && !in_raft {
                return Ok(format!("Manager {id} is already a worker."));
            }
            let voters = managers.values().filter(|(_, voter)| *voter).count();
            if in_raft && voters <= 1 && managers.get(&rid).is_some_and(|(_, v)| *v) {
                return Err(Status::failed_precondition(format!(
                    "{id} is the last manager of the cluster: demoting it would leave no one to run the cluster"
                )));
            }
            // Out of Raft first, while its certificate still says manager; then the store.
            // The node learns its new role from a manager and renews its certificate as a
            // worker. (A leader that demotes itself steps down once the change commits; the
            // new leader takes the store's half.)
            if in_raft {
                tokio::time::timeout(
                    MEMBERSHIP_TIMEOUT,
                    node.raft
                        .change_membership(ChangeMembers::RemoveVoters([rid].into()), false),
                )
                .await
                .map_err(|_| {
                    Status::unavailable(format!(
                        "no quorum: the membership change was not committed within {}s",
                        MEMBERSHIP_TIMEOUT.as_secs()
                    ))
                })?
                .map_err(|e| Status::failed_precondition(format!("demoting {id}: {e}")))?;
                tracing::info!(node = %id, "a manager left Raft (demoted)");
            }
            let record = Proposal::Commands(vec![Command::UpsertNode {
                node: with_role(node, &id, NodeRole::Worker)?,
            }]);
            if rid == node.raft_id {
                // This leader demoted itself: it steps down and, out of Raft, never hears who
                // leads next. The managers left elect one; the store's half goes there.
                commit_at_new_leader(node, record).await?;
            } else {
                commit(node, record).await?;
            }
            Ok(format!("Manager {id} demoted in the cluster."))
        }
        Action::Remove { force } => {
            if in_raft || record.role == NodeRole::Manager {
                return Err(Status::failed_precondition(format!(
                    "node {id} is a cluster manager and is a member of the Raft cluster. It must be demoted to worker before removal (`reconciler node demote {id}`)"
                )));
            }
            if record.ready && !force {
                return Err(Status::failed_precondition(format!(
                    "node {id} is not down and can't be removed (use --force to remove it anyway; its certificate is refused from then on)"
                )));
            }
            // Its certificate is refused first, then it leaves the store.
            commit(
                node,
                Proposal::Cluster(ClusterChange::Removed {
                    node_id: id.clone(),
                }),
            )
            .await?;
            commit(
                node,
                Proposal::Commands(vec![Command::RemoveNode { id: id.clone() }]),
            )
            .await?;
            tracing::info!(node = %id, "a node was removed");
            Ok(id)
        }
    }
}

/// `reconciler leave` on this node. A manager is marked down and leaves Raft through the
/// leader; then the node stops (see `manager::run`), removing its containers and its cluster
/// files, as `docker swarm leave` does.
pub async fn leave(node: &ClusterNode, force: bool) -> Result<String, Status> {
    let me = node.node_id().to_string();
    let managers = node.managers();
    let voters = managers.values().filter(|(_, v)| *v).count();
    let manager = node.in_raft() && node.creds.identity().role == Role::Manager;
    if manager && !force {
        let message = if voters <= 1 {
            "You are attempting to leave the cluster on a node that is participating as a manager. Removing the last manager erases all current state of the cluster. Use `--force` to ignore this message.".to_string()
        } else {
            let left = voters - 1;
            let quorum = if left < voters / 2 + 1 {
                " Without a Raft quorum your cluster will be inaccessible. The only way to restore a cluster that has lost consensus is to reinitialize it with `--force-new-cluster`."
            } else {
                ""
            };
            format!(
                "You are attempting to leave the cluster on a node that is participating as a manager. Removing this node leaves {left} managers out of {voters}.{quorum} Use `--force` to suppress this message."
            )
        };
        return Err(Status::failed_precondition(message));
    }
    // No more work for this node: its agent's session ends, telling the dispatcher (which
    // marks it down), before anything else.
    node.leaving.asked.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(3), node.leaving.said.cancelled()).await;
    if manager && voters > 1 {
        // Down first, while this node may still write; then out of Raft, by the leader.
        if let Some(mut record) = node.sm.read(|s| s.nodes.get(&me).cloned()) {
            record.ready = false;
            commit(
                node,
                Proposal::Commands(vec![Command::UpsertNode { node: record }]),
            )
            .await?;
        }
        let demote = NodeChange {
            node: me.clone(),
            action: Action::Demote,
        };
        if node.is_leader() {
            change(node, demote).await?;
        } else {
            let (_, leader) = node.leader().ok_or_else(|| {
                Status::unavailable("no leader is elected: cannot leave Raft now")
            })?;
            node.control(&leader)
                .map_err(|e| Status::unavailable(e.to_string()))?
                .change_node(super::rpc::json(&demote)?)
                .await?;
        }
    }
    tracing::warn!(node = %me, "this node left the cluster: stopping, removing its containers and its cluster files");
    // A moment for this answer to reach the caller before the listener closes.
    let left = node.left.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        left.cancel();
    });
    Ok("Node left the cluster.".into())
}

/// `node inspect`: the node as the store holds it, with its manager status, in the shape of
/// `docker node inspect`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeInspect {
    #[serde(rename = "ID")]
    pub id: String,
    pub spec: InspectSpec,
    pub description: InspectDescription,
    pub status: InspectStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager_status: Option<InspectManager>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InspectSpec {
    pub role: Role,
    pub availability: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InspectDescription {
    pub hostname: String,
    pub platform: InspectPlatform,
    pub resources: InspectResources,
    pub engine: InspectEngine,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InspectPlatform {
    pub architecture: String,
    #[serde(rename = "OS")]
    pub os: String,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InspectResources {
    #[serde(rename = "NanoCPUs")]
    pub nano_cpus: u64,
    pub memory_bytes: u64,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InspectEngine {
    pub engine_version: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InspectStatus {
    /// `ready` or `down`.
    pub state: String,
    pub addr: String,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InspectManager {
    pub leader: bool,
    /// `reachable` or `unreachable`.
    pub reachability: String,
    pub addr: String,
}

pub fn inspect(node: Node, status: Option<NodeStatus>) -> NodeInspect {
    let manager_status = status
        .as_ref()
        .filter(|s| !s.manager_status.is_empty())
        .map(|s| InspectManager {
            leader: s.manager_status == "Leader",
            reachability: if s.manager_status == "Unreachable" {
                "unreachable"
            } else {
                "reachable"
            }
            .into(),
            addr: s.addr.clone(),
        });
    NodeInspect {
        id: node.id,
        spec: InspectSpec {
            role: match node.role {
                NodeRole::Manager => Role::Manager,
                NodeRole::Worker => Role::Worker,
            },
            availability: node.availability.name().to_lowercase(),
            labels: node.labels,
        },
        description: InspectDescription {
            hostname: node.hostname,
            platform: InspectPlatform {
                architecture: node.arch,
                os: node.os,
            },
            resources: InspectResources {
                nano_cpus: node.nano_cpus,
                memory_bytes: node.memory_bytes,
            },
            engine: InspectEngine {
                engine_version: node.engine_version,
                labels: node.engine_labels,
            },
        },
        status: InspectStatus {
            state: if node.ready { "ready" } else { "down" }.into(),
            addr: node.ip,
        },
        manager_status,
    }
}
