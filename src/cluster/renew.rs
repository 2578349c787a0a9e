//! Keeping a node's certificate current: renewed at a random point between 50% and 80% of
//! its life (so the nodes of a cluster made at once do not all renew at once), and at once
//! when the cluster gives the node another role (`node promote`, `node demote`): the new
//! certificate carries the new role, and the node takes up (or gives up) its part in Raft.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use super::ca::{self, Role};
use super::node::ClusterNode;
use super::rpc::pb;
use super::services::Health;
use super::tls::TlsPem;

/// How often a node checks whether the cluster changed its role. A manager reads its own
/// store; a node outside Raft asks a manager.
const ROLE_CHECK: Duration = Duration::from_secs(2);
/// After a failed renewal, the next try.
const RETRY: Duration = Duration::from_secs(5);

pub async fn run(node: Arc<ClusterNode>, stop: CancellationToken) {
    let mut due = next_renewal(&node);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(ROLE_CHECK) => {}
        }
        let held = node.creds.identity().role;
        let wanted = wanted_role(&node).await;
        let role_changed = wanted.is_some_and(|w| w != held);
        if !role_changed && SystemTime::now() < due {
            continue;
        }
        match renew(&node).await {
            Ok(role) => {
                due = next_renewal(&node);
                let (_, until) = node.creds.validity();
                tracing::info!(role = role.word(), valid_until = %humantime::format_rfc3339_seconds(until), "this node's certificate was renewed");
                if role != held {
                    changed_role(&node, role).await;
                }
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "renewing this node's certificate failed; trying again");
                due = SystemTime::now() + RETRY;
            }
        }
    }
}

fn next_renewal(node: &ClusterNode) -> SystemTime {
    use ring::rand::SecureRandom as _;
    let mut b = [0u8; 4];
    let unit = match ring::rand::SystemRandom::new().fill(&mut b) {
        Ok(()) => u32::from_be_bytes(b) as f64 / (u32::MAX as f64 + 1.0),
        Err(_) => 0.5,
    };
    let (from, to) = node.creds.validity();
    ca::renew_at(from, to, unit)
}

/// The role the cluster gives this node now, if it can be learnt: from the leader (a
/// follower's own store may never hear of its demotion, which commits once it has left Raft),
/// else from its own store.
async fn wanted_role(node: &ClusterNode) -> Option<Role> {
    if node.is_leader() {
        return node.role_of(node.node_id());
    }
    let me = &node.info.advertise_addr;
    for addr in authorities(node).iter().filter(|a| *a != me) {
        let Ok(mut client) = node.control(addr) else {
            continue;
        };
        if let Ok(Ok(answer)) =
            tokio::time::timeout(Duration::from_secs(2), client.health(pb::Empty {})).await
        {
            if let Ok(health) = serde_json::from_slice::<Health>(&answer.into_inner().json) {
                return health.your_role;
            }
        }
    }
    node.in_raft()
        .then(|| node.role_of(node.node_id()))
        .flatten()
}

/// The managers to ask about this node, best first: the leader (whose store is the newest),
/// the others, and this node itself last.
fn authorities(node: &ClusterNode) -> Vec<String> {
    let me = node.info.advertise_addr.clone();
    let mut all: Vec<String> = node
        .manager_addresses()
        .into_iter()
        .filter(|a| *a != me)
        .collect();
    if let Some((_, leader)) = node.leader() {
        if leader == me {
            return vec![me];
        }
        all.retain(|a| *a != leader);
        all.insert(0, leader);
    }
    all.push(me);
    all
}

/// A new key and certificate from a manager's CA, kept on disk and presented from the next
/// handshake. The answer is the role the certificate carries.
async fn renew(node: &ClusterNode) -> anyhow::Result<Role> {
    let (key, csr) = ca::new_key_and_request()?;
    let mut last = anyhow::anyhow!("no manager is known to this node");
    for addr in authorities(node) {
        let channel = super::rpc::dial(&addr, &node.creds)?;
        let answer = pb::ca_client::CaClient::new(channel)
            .renew_node_certificate(pb::RenewRequest {
                csr_pem: csr.clone(),
            })
            .await;
        let issued = match answer {
            Ok(a) => a.into_inner(),
            Err(s) => {
                last = anyhow::anyhow!("the manager at {addr}: {}", s.message());
                continue;
            }
        };
        let role = Role::from_word(&issued.role)
            .with_context(|| format!("the manager answered an unknown role {:?}", issued.role))?;
        let pem = TlsPem {
            root: node.creds.root_pem().to_string(),
            cert: issued.certificate_pem,
            key: key.to_string(),
        };
        // Checked (it parses, goes with the key) before it is kept.
        node.creds.replace(pem.clone())?;
        node.save_keys(true)?;
        node.files.save_certificates(&pem.root, &pem.cert)?;
        node.redial();
        return Ok(role);
    }
    Err(last)
}

/// The cluster changed this node's role, and its certificate now says so.
async fn changed_role(node: &ClusterNode, role: Role) {
    if let Err(e) = node.files.update(|info| info.role = role) {
        tracing::warn!(error = %format!("{e:#}"), "recording this node's new role");
    }
    match role {
        Role::Worker => {
            // Out of Raft, it hears no leader: it must not stand for election (its votes
            // would be refused, and its term would grow for nothing).
            node.raft.runtime_config().elect(false);
            tracing::warn!(
                "this node was demoted to worker: it no longer takes part in Raft; its containers keep running as they are"
            )
        }
        Role::Manager => {
            tracing::info!("this node was promoted to manager: entering Raft");
            node.raft.runtime_config().elect(true);
            // Not itself: its own view of Raft is the one from before its demotion.
            let me = &node.info.advertise_addr;
            let first = authorities(node).into_iter().find(|a| a != me);
            match first {
                Some(addr) => {
                    if let Err(e) = super::start::enter_raft(node, &addr).await {
                        tracing::warn!(error = %format!("{e:#}"), "entering Raft after a promotion");
                    }
                }
                None => tracing::warn!("no manager known to enter Raft through"),
            }
        }
    }
}
