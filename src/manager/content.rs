//! Content for the agent, by version: secrets and configs read from the git mirror at the commit
//! the store's content index names, checked against the version and decrypted when
//! age-encrypted; repo files and directories copied once per version, read-only, under the
//! node's data dir; and the stacks' own persistent directories.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::agent::executor::ContentSource;
use crate::desired::{self, GitTree, Tree};
use crate::secrets::{self, SecretBytes};
use std::sync::Arc;

use super::keyring::Keyring;
use crate::spec::normalise::content_version;
use crate::store::ContentRef;

pub struct MirrorContent {
    repo: PathBuf,
    /// The stacks directory inside the repository.
    path: String,
    keyring: Arc<Keyring>,
    /// Read-only copies of repo files, one directory per version.
    files: PathBuf,
    /// The stacks' own directories (relative bind mounts of paths git does not track).
    stacks: PathBuf,
}

impl MirrorContent {
    pub fn new(repo: PathBuf, path: String, keyring: Arc<Keyring>, data_dir: &Path) -> Self {
        MirrorContent {
            repo,
            path,
            keyring,
            files: data_dir.join("files"),
            stacks: data_dir.join("stacks"),
        }
    }

    fn tree(&self, commit: &str) -> Result<GitTree, String> {
        GitTree::open(&self.repo, commit, &self.path).map_err(|e| format!("{e:#}"))
    }

    /// Remove the copies of versions that no task on this node uses any more.
    pub fn prune_files(&self, keep: &BTreeSet<&str>) -> std::io::Result<usize> {
        let entries = match std::fs::read_dir(&self.files) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            other => other?,
        };
        let mut removed = 0;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if keep.contains(name.as_str()) {
                continue;
            }
            make_writable(&entry.path())?;
            std::fs::remove_dir_all(entry.path())?;
            removed += 1;
        }
        Ok(removed)
    }
}

impl ContentSource for MirrorContent {
    fn read(&self, name: &str, version: &str, at: &ContentRef) -> Result<SecretBytes, String> {
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

    fn materialise(&self, version: &str, at: &ContentRef) -> Result<PathBuf, String> {
        let ContentRef::Git {
            commit, path, dir, ..
        } = at
        else {
            return Err(format!("version {version} is not a repo file"));
        };
        if !version.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(format!("{version:?} is not a content version"));
        }
        let home = self.files.join(version);
        let leaf_name = if *dir {
            "dir"
        } else {
            path.rsplit('/').next().unwrap_or("file")
        };
        let leaf = home.join(leaf_name);
        // Content-addressed: a copy that exists is this version, written whole (by rename).
        if leaf.exists() {
            return Ok(leaf);
        }
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
        std::fs::create_dir_all(&self.files).map_err(|e| fail(e.to_string()))?;
        let staging = tempfile::Builder::new()
            .prefix(".staging-")
            .tempdir_in(&self.files)
            .map_err(|e| fail(e.to_string()))?;
        let write = |rel: &str, to: &Path, executable: bool| -> Result<(), String> {
            let bytes = tree
                .read(rel)
                .map_err(|e| format!("{e:#}"))?
                .ok_or_else(|| format!("{rel} vanished"))?;
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            std::fs::write(to, bytes).map_err(|e| e.to_string())?;
            let mode = if executable { 0o555 } else { 0o444 };
            std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))
                .map_err(|e| e.to_string())
        };
        let staged = staging.path().join(leaf_name);
        if *dir {
            let files = tree
                .walk(path)
                .map_err(|e| fail(format!("{e:#}")))?
                .unwrap_or_default();
            std::fs::create_dir_all(&staged).map_err(|e| fail(e.to_string()))?;
            for f in files {
                write(
                    &format!("{path}/{}", f.path),
                    &staged.join(&f.path),
                    f.executable,
                )
                .map_err(fail)?;
            }
            read_only_dirs(&staged).map_err(|e| fail(e.to_string()))?;
        } else {
            write(path, &staged, false).map_err(fail)?;
        }
        let staging = staging.keep();
        match std::fs::rename(&staging, &home) {
            Ok(()) => Ok(leaf),
            // Another task's step made the same version first: theirs is as good as ours.
            Err(_) if leaf.exists() => {
                let _ = make_writable(&staging).and_then(|_| std::fs::remove_dir_all(&staging));
                Ok(leaf)
            }
            Err(e) => Err(fail(e.to_string())),
        }
    }

    fn stack_dir(&self, stack: &str, path: &str) -> Result<PathBuf, String> {
        let inside = path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
        if !crate::desired::is_valid_stack_name(stack) || !inside {
            return Err(format!("{stack}/{path} is not a stack directory path"));
        }
        let dir = self.stacks.join(stack).join(path);
        std::fs::create_dir_all(&dir).map_err(|e| {
            format!(
                "creating the directory of stack {stack} at {}: {e}",
                dir.display()
            )
        })?;
        Ok(dir)
    }
}

/// Directories of a copy are read-only too: a container cannot add files to them.
fn read_only_dirs(root: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            read_only_dirs(&entry.path())?;
        }
    }
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o555))
}

/// Undo [`read_only_dirs`] so that a copy can be removed.
fn make_writable(root: &Path) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(root)?;
    if meta.is_dir() {
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755))?;
        for entry in std::fs::read_dir(root)? {
            make_writable(&entry?.path())?;
        }
    }
    Ok(())
}

fn short(commit: &str) -> &str {
    &commit[..7.min(commit.len())]
}
