//! The cluster's own settings and trust, replicated through Raft beside the store's state but
//! never part of it: the API, status and exports read the [`State`](crate::store::State) only,
//! so the root key and the join tokens cannot reach them.

use std::collections::BTreeSet;
use std::time::Duration;

use super::ca::Role;

/// What every manager knows of the cluster itself.
#[derive(Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClusterConfig {
    pub id: String,
    pub root_cert_pem: String,
    /// The root's private key: managers sign node certificates with it.
    pub root_key_pem: String,
    pub worker_token: String,
    pub manager_token: String,
    /// Lifetime of the node certificates the CA signs.
    pub cert_expiry: Duration,
    /// Nodes removed from the cluster: their certificates are refused from then on.
    #[serde(default)]
    pub removed: BTreeSet<String>,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("id", &self.id)
            .field("cert_expiry", &self.cert_expiry)
            .field("removed", &self.removed)
            .finish_non_exhaustive()
    }
}

impl ClusterConfig {
    pub fn token(&self, role: Role) -> &str {
        match role {
            Role::Manager => &self.manager_token,
            Role::Worker => &self.worker_token,
        }
    }
}

/// A change to the cluster's own settings, committed through Raft like a store command.
#[derive(Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ClusterChange {
    /// The first entry of a new cluster (refused once there is one).
    Init(ClusterConfig),
    /// `join-token --rotate`: the old token is refused from the moment this applies.
    RotateToken { role: Role, token: String },
    /// `node rm`: the node's certificate is refused from now on.
    Removed { node_id: String },
}

impl std::fmt::Debug for ClusterChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClusterChange::Init(c) => f.debug_tuple("Init").field(c).finish(),
            ClusterChange::RotateToken { role, .. } => f
                .debug_struct("RotateToken")
                .field("role", role)
                .finish_non_exhaustive(),
            ClusterChange::Removed { node_id } => {
                f.debug_struct("Removed").field("node_id", node_id).finish()
            }
        }
    }
}

impl ClusterChange {
    /// Apply to the configuration as it is; the answer says why not.
    pub fn apply(self, config: &mut Option<ClusterConfig>) -> Result<(), String> {
        match (self, config.as_mut()) {
            (ClusterChange::Init(new), None) => {
                *config = Some(new);
                Ok(())
            }
            (ClusterChange::Init(_), Some(c)) => {
                Err(format!("the cluster {} is set up already", c.id))
            }
            (ClusterChange::RotateToken { role, token }, Some(c)) => {
                match role {
                    Role::Manager => c.manager_token = token,
                    Role::Worker => c.worker_token = token,
                }
                Ok(())
            }
            (ClusterChange::Removed { node_id }, Some(c)) => {
                c.removed.insert(node_id);
                Ok(())
            }
            (_, None) => Err("the cluster is not set up yet".into()),
        }
    }
}
