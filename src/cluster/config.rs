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
    /// Autolock: the key (`SWMKEY-1-...`) that seals every manager's own keys on its disk,
    /// so that a manager that restarts stays locked until it is given the key.
    #[serde(default)]
    pub unlock_key: Option<String>,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("id", &self.id)
            .field("cert_expiry", &self.cert_expiry)
            .field("removed", &self.removed)
            .field("autolock", &self.unlock_key.is_some())
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

    /// The unlock key, when the cluster is autolocked.
    pub fn unlock_key(&self) -> Option<super::seal::UnlockKey> {
        self.unlock_key.as_deref().and_then(|k| k.parse().ok())
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
    /// Autolock on (a new key: `update --autolock=true`, `unlock-key --rotate`) or off.
    SetUnlockKey { key: Option<String> },
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
            ClusterChange::SetUnlockKey { key } => f
                .debug_struct("SetUnlockKey")
                .field("autolock", &key.is_some())
                .finish_non_exhaustive(),
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
            (ClusterChange::SetUnlockKey { key }, Some(c)) => {
                c.unlock_key = key;
                Ok(())
            }
            (_, None) => Err("the cluster is not set up yet".into()),
        }
    }
}
