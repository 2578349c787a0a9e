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
    /// What every manager needs to read the repository: its age identity and git
    /// credentials, so that a manager joins without copies of them on its disk.
    #[serde(default)]
    pub secrets: ClusterSecrets,
    /// How often agents send heartbeats (`init --dispatcher-heartbeat`); default 5 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatcher_heartbeat: Option<Duration>,
}

/// The cluster's secrets of its own. Sealed at rest in every manager's Raft files, sent only
/// between managers over mutual TLS, and never shown: `Debug` says which are set.
#[derive(Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClusterSecrets {
    /// The age identity file's text (`AGE-SECRET-KEY-1...` lines) that opens the
    /// repository's encrypted secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_identity: Option<String>,
    /// The token sent to an http(s) remote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_token: Option<String>,
    /// The private key (PEM text) offered to an ssh remote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_ssh_key: Option<String>,
}

impl std::fmt::Debug for ClusterSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSecrets")
            .field("age_identity", &self.age_identity.is_some())
            .field("git_token", &self.git_token.is_some())
            .field("git_ssh_key", &self.git_ssh_key.is_some())
            .finish()
    }
}

/// A change to [`ClusterSecrets`], field by field: `None` keeps a field, `Some(None)` clears
/// it, `Some(Some(v))` sets it.
#[derive(Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SecretsChange {
    #[serde(default)]
    pub age_identity: Option<Option<String>>,
    #[serde(default)]
    pub git_token: Option<Option<String>>,
    #[serde(default)]
    pub git_ssh_key: Option<Option<String>>,
}

impl SecretsChange {
    pub fn is_empty(&self) -> bool {
        self.age_identity.is_none() && self.git_token.is_none() && self.git_ssh_key.is_none()
    }

    fn apply(self, to: &mut ClusterSecrets) {
        if let Some(v) = self.age_identity {
            to.age_identity = v;
        }
        if let Some(v) = self.git_token {
            to.git_token = v;
        }
        if let Some(v) = self.git_ssh_key {
            to.git_ssh_key = v;
        }
    }
}

impl std::fmt::Debug for SecretsChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = |v: &Option<Option<String>>| match v {
            None => "kept",
            Some(None) => "cleared",
            Some(Some(_)) => "set",
        };
        f.debug_struct("SecretsChange")
            .field("age_identity", &what(&self.age_identity))
            .field("git_token", &what(&self.git_token))
            .field("git_ssh_key", &what(&self.git_ssh_key))
            .finish()
    }
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("id", &self.id)
            .field("cert_expiry", &self.cert_expiry)
            .field("removed", &self.removed)
            .field("autolock", &self.unlock_key.is_some())
            .field("secrets", &self.secrets)
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
    Init(Box<ClusterConfig>),
    /// `join-token --rotate`: the old token is refused from the moment this applies.
    RotateToken { role: Role, token: String },
    /// `node rm`: the node's certificate is refused from now on.
    Removed { node_id: String },
    /// Autolock on (a new key: `update --autolock=true`, `unlock-key --rotate`) or off.
    SetUnlockKey { key: Option<String> },
    /// `update --identity`, `--git-token`, `--ssh-key`.
    SetSecrets(SecretsChange),
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
            ClusterChange::SetSecrets(change) => f.debug_tuple("SetSecrets").field(change).finish(),
        }
    }
}

impl ClusterChange {
    /// Apply to the configuration as it is; the answer says why not.
    pub fn apply(self, config: &mut Option<ClusterConfig>) -> Result<(), String> {
        match (self, config.as_mut()) {
            (ClusterChange::Init(new), None) => {
                *config = Some(*new);
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
            (ClusterChange::SetSecrets(change), Some(c)) => {
                change.apply(&mut c.secrets);
                Ok(())
            }
            (_, None) => Err("the cluster is not set up yet".into()),
        }
    }
}
