//! Content for the dispatcher, by version: secrets and configs read from the git mirror at the
//! commit the store's content index names, checked against the version and decrypted when
//! age-encrypted; repo files and directories read whole. The agent that gets them writes
//! them on its node (`agent::local_files`).

use crate::agent::assignment::{Content, Need, NeedKind, RepoFile};
use crate::desired::{self, GitTree, Tree};
use crate::secrets::{self, SecretBytes};
use std::path::PathBuf;
use std::sync::Arc;

use super::keyring::Keyring;
use crate::spec::normalise::content_version;
use crate::store::ContentRef;

pub struct MirrorContent {
    repo: PathBuf,
    /// The stacks directory inside the repository.
    path: String,
    keyring: Arc<Keyring>,
}

impl MirrorContent {
    pub fn new(repo: PathBuf, path: String, keyring: Arc<Keyring>) -> Self {
        MirrorContent {
            repo,
            path,
            keyring,
        }
    }

    fn tree(&self, commit: &str) -> Result<GitTree, String> {
        GitTree::open(&self.repo, commit, &self.path).map_err(|e| format!("{e:#}"))
    }

    /// The content of one version as an agent is given it; what cannot be had says why
    /// (naming the object, never the content).
    pub fn resolve(&self, version: &str, need: &Need) -> Content {
        let kind = need.kind.word();
        let result = if need.external {
            Err(format!(
                "{kind} {} is external: external secrets and configs are not supported on this node",
                need.name
            ))
        } else {
            match &need.at {
                None if need.kind == NeedKind::RepoFile => Err(format!(
                    "the repo file for {} (version {version}) is not known to the cluster",
                    need.name
                )),
                None => Err(format!(
                    "{kind} {} version {version} is not known to the cluster",
                    need.name
                )),
                Some(at) if need.kind == NeedKind::RepoFile => self.files(version, at),
                Some(at) => self.read(&need.name, version, at).map(|b| Content::Bytes {
                    bytes: zeroize::Zeroizing::new(b.expose().to_vec()),
                }),
            }
        };
        result.unwrap_or_else(|why| Content::Missing { why })
    }

    /// A secret's or config's bytes at `version`.
    pub fn read(&self, name: &str, version: &str, at: &ContentRef) -> Result<SecretBytes, String> {
        let (commit, path, encrypted) = match at {
            ContentRef::Inline { content } => {
                return Ok(SecretBytes::new(content.clone().into_bytes()))
            }
            ContentRef::Git { dir: true, .. } => {
                return Err(format!(
                    "{name}: version {version} is a directory, not a file"
                ))
            }
            ContentRef::Git {
                commit,
                path,
                encrypted,
                ..
            } => (commit, path, *encrypted),
        };
        let bytes = self
            .tree(commit)
            .and_then(|t| t.read(path).map_err(|e| format!("{e:#}")))
            .map_err(|e| format!("{name}: {e}"))?
            .ok_or_else(|| format!("{name}: {path} is not in commit {}", short(commit)))?;
        if content_version(&bytes) != version {
            return Err(format!(
                "{name}: {path} in commit {} is not version {version}",
                short(commit)
            ));
        }
        if !encrypted {
            return Ok(SecretBytes::new(bytes));
        }
        let ids = self.keyring.identities().ok_or_else(|| {
            secrets::SecretError::NoIdentity {
                secret: name.to_string(),
            }
            .to_string()
        })?;
        secrets::decrypt(name, &bytes, &ids).map_err(|e| e.to_string())
    }

    /// A file at `path` from the repository's root in `commit`, decrypted when it ends in
    /// `.age` (the values `reconciler.toml` points at).
    pub fn read_repo_file(
        &self,
        what: &str,
        commit: &str,
        path: &str,
    ) -> Result<SecretBytes, String> {
        let bytes = GitTree::open(&self.repo, commit, "")
            .and_then(|t| t.read(path))
            .map_err(|e| format!("{what}: {e:#}"))?
            .ok_or_else(|| format!("{what}: {path} is not in commit {}", short(commit)))?;
        if !path.ends_with(".age") {
            return Ok(SecretBytes::new(bytes));
        }
        let ids = self.keyring.identities().ok_or_else(|| {
            secrets::SecretError::NoIdentity {
                secret: what.to_string(),
            }
            .to_string()
        })?;
        secrets::decrypt(what, &bytes, &ids).map_err(|e| e.to_string())
    }

    /// A repo file or directory of `version`, every file of it.
    fn files(&self, version: &str, at: &ContentRef) -> Result<Content, String> {
        let ContentRef::Git {
            commit, path, dir, ..
        } = at
        else {
            return Err(format!("version {version} is not a repo file"));
        };
        let fail = |e: String| {
            format!(
                "copying {path} (version {version}) from commit {}: {e}",
                short(commit)
            )
        };
        let tree = self.tree(commit).map_err(fail)?;
        let entry = desired::repo_entry(&tree, path).map_err(fail)?;
        match entry {
            Some(e) if e.version == version && e.dir == *dir => {}
            Some(_) => return Err(fail(format!("the commit holds another version of {path}"))),
            None => return Err(fail(format!("{path} is not in the commit"))),
        }
        let read = |rel: &str| -> Result<Vec<u8>, String> {
            tree.read(rel)
                .map_err(|e| fail(format!("{e:#}")))?
                .ok_or_else(|| fail(format!("{rel} vanished")))
        };
        if !*dir {
            return Ok(Content::Files {
                dir: false,
                name: path.rsplit('/').next().unwrap_or("file").to_string(),
                files: vec![RepoFile {
                    path: String::new(),
                    executable: false,
                    bytes: zeroize::Zeroizing::new(read(path)?),
                }],
            });
        }
        let walked = tree
            .walk(path)
            .map_err(|e| fail(format!("{e:#}")))?
            .unwrap_or_default();
        let mut files = Vec::with_capacity(walked.len());
        for f in walked {
            files.push(RepoFile {
                bytes: zeroize::Zeroizing::new(read(&format!("{path}/{}", f.path))?),
                path: f.path,
                executable: f.executable,
            });
        }
        Ok(Content::Files {
            dir: true,
            name: "dir".into(),
            files,
        })
    }
}

fn short(commit: &str) -> &str {
    &commit[..7.min(commit.len())]
}
