//! The age identity and git credentials a node uses: the cluster's (replicated through Raft,
//! sealed at rest: [`ClusterSecrets`]) where it has them, else the node's own flags; taken up
//! again whenever the cluster's change, so `reconciler update --identity` or `--git-token`
//! reaches every manager without a restart, and a manager joins with neither on its disk.

use std::sync::{Arc, Mutex, RwLock};

use tokio_util::sync::CancellationToken;

use crate::cluster::config::ClusterSecrets;
use crate::cluster::node::ClusterNode;
use crate::gitops::{Auth, Mirror};
use crate::secrets::Identities;

pub struct Keyring {
    /// What the node was started with (`--identity`, `--git-token`, `--ssh-key`).
    local_identities: Option<Identities>,
    local_auth: Auth,
    identities: RwLock<Option<Identities>>,
    /// The cluster's secrets last taken up (`None`: not yet).
    seen: Mutex<Option<ClusterSecrets>>,
}

/// Where the identities came from, as messages name it (never the key itself).
const CLUSTER_ORIGIN: &str = "the cluster's configuration";

impl Keyring {
    pub fn new(local_identities: Option<Identities>, local_auth: Auth) -> Arc<Keyring> {
        Arc::new(Keyring {
            identities: RwLock::new(local_identities.clone()),
            local_identities,
            local_auth,
            seen: Mutex::new(None),
        })
    }

    /// The identities to open the repository's secrets with now.
    pub fn identities(&self) -> Option<Identities> {
        self.identities
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Take up the cluster's secrets, unless they are the ones taken up last.
    pub fn take_up(&self, secrets: &ClusterSecrets, mirror: &Mirror) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.as_ref() == Some(secrets) {
            return;
        }
        let identities = match &secrets.age_identity {
            Some(text) => match Identities::from_text(text, CLUSTER_ORIGIN) {
                Ok(ids) => {
                    if self
                        .local_identities
                        .as_ref()
                        .is_some_and(|local| !local.same_keys(&ids))
                    {
                        tracing::warn!("this node was given an age identity of its own, not the cluster's; the cluster's is used (change it with `reconciler update --identity FILE`)");
                    }
                    Some(ids)
                }
                Err(e) => {
                    tracing::error!(error = %e, "the cluster's age identity is unusable; this node keeps its own");
                    self.local_identities.clone()
                }
            },
            None => self.local_identities.clone(),
        };
        *self.identities.write().unwrap_or_else(|e| e.into_inner()) = identities;
        let mut auth = self.local_auth.clone();
        if let Some(token) = &secrets.git_token {
            auth.token = Some(token.clone());
        }
        if let Some(pem) = &secrets.git_ssh_key {
            auth.ssh_key_pem = Some(zeroize::Zeroizing::new(pem.clone()));
        }
        mirror.set_auth(auth);
        tracing::info!(
            age_identity = secrets.age_identity.is_some(),
            git_token = secrets.git_token.is_some(),
            git_ssh_key = secrets.git_ssh_key.is_some(),
            "took up the cluster's credentials"
        );
        *seen = Some(secrets.clone());
    }
}

/// Follow the cluster's secrets until `shutdown`.
pub async fn follow(
    keyring: Arc<Keyring>,
    node: Arc<ClusterNode>,
    mirror: Arc<Mirror>,
    shutdown: CancellationToken,
) {
    let mut changes = node.sm.subscribe();
    loop {
        if let Some(secrets) = node.sm.read_cluster(|c| c.map(|c| c.secrets.clone())) {
            keyring.take_up(&secrets, &mirror);
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            () = shutdown.cancelled() => return,
        }
    }
}
