//! Secret and config content for the agent: read from the git mirror at the applied revision,
//! checked against the content version in the spec, decrypted when age-encrypted.

use std::path::PathBuf;
use std::sync::RwLock;

use crate::agent::executor::ContentSource;
use crate::desired::{GitTree, Tree};
use crate::secrets::{self, Identities, SecretBytes};
use crate::spec::model::FileObjectSpec;
use crate::spec::normalise::content_version;

pub struct MirrorContent {
    repo: PathBuf,
    path: String,
    identities: Option<Identities>,
    revision: RwLock<Option<String>>,
}

impl MirrorContent {
    pub fn new(repo: PathBuf, path: String, identities: Option<Identities>) -> Self {
        MirrorContent {
            repo,
            path,
            identities,
            revision: RwLock::new(None),
        }
    }

    pub fn set_revision(&self, commit: &str) {
        *self.revision.write().expect("lock") = Some(commit.to_string());
    }
}

impl ContentSource for MirrorContent {
    fn read(&self, object: &FileObjectSpec) -> Result<SecretBytes, String> {
        if object.external {
            return Err(format!(
                "{} is external: external secrets and configs are not supported on this node",
                object.name
            ));
        }
        if let Some(inline) = &object.inline {
            return Ok(SecretBytes::new(inline.clone().into_bytes()));
        }
        let Some(source) = &object.source else {
            return Err(format!("{} has no source", object.name));
        };
        let revision = self
            .revision
            .read()
            .expect("lock")
            .clone()
            .ok_or_else(|| format!("{}: no revision applied yet", object.name))?;
        let tree = GitTree::open(&self.repo, &revision, &self.path)
            .map_err(|e| format!("{}: {e:#}", object.name))?;
        let bytes = tree
            .read(source)
            .map_err(|e| format!("{}: {e:#}", object.name))?
            .ok_or_else(|| {
                format!(
                    "{}: {source} is not in commit {}",
                    object.name,
                    &revision[..7.min(revision.len())]
                )
            })?;
        if content_version(&bytes) != object.version {
            return Err(format!(
                "{}: the content in the applied commit is not the version this task was made for",
                object.name
            ));
        }
        if !object.encrypted {
            return Ok(SecretBytes::new(bytes));
        }
        let ids = self.identities.as_ref().ok_or_else(|| {
            secrets::SecretError::NoIdentity {
                secret: object.name.clone(),
            }
            .to_string()
        })?;
        secrets::decrypt(&object.name, &bytes, ids).map_err(|e| e.to_string())
    }
}
