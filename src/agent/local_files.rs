//! Repo files and stack directories on this node: a repo file or directory that a task mounts
//! is copied once per version, read-only, under the node's data dir, from the content its
//! assignment delivered; a stack's own persistent directories live beside them.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::assignment::Content;

pub struct LocalFiles {
    /// Read-only copies of repo files, one directory per version.
    files: PathBuf,
    /// The stacks' own directories (relative bind mounts of paths git does not track).
    stacks: PathBuf,
}

impl LocalFiles {
    pub fn new(data_dir: &Path) -> Self {
        LocalFiles {
            files: data_dir.join("files"),
            stacks: data_dir.join("stacks"),
        }
    }

    /// A read-only copy of a repo file or directory of `version` on this node: its host path.
    pub fn materialise(&self, version: &str, content: &Content) -> Result<PathBuf, String> {
        let (dir, name, files) = match content {
            Content::Files { dir, name, files } => (*dir, name, files),
            Content::Missing { why } => return Err(why.clone()),
            Content::Bytes { .. } => return Err(format!("version {version} is not a repo file")),
        };
        if !version.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(format!("{version:?} is not a content version"));
        }
        let safe = |p: &str| p.split('/').all(|c| !c.is_empty() && c != "." && c != "..");
        if !safe(name) || name.contains('/') {
            return Err(format!("{name:?} is not a file name"));
        }
        let home = self.files.join(version);
        let leaf = home.join(name);
        // Content-addressed: a copy that exists is this version, written whole (by rename).
        if leaf.exists() {
            return Ok(leaf);
        }
        let fail = |e: String| format!("copying the repo file {name} (version {version}): {e}");
        std::fs::create_dir_all(&self.files).map_err(|e| fail(e.to_string()))?;
        let staging = tempfile::Builder::new()
            .prefix(".staging-")
            .tempdir_in(&self.files)
            .map_err(|e| fail(e.to_string()))?;
        let staged = staging.path().join(name);
        if dir {
            std::fs::create_dir_all(&staged).map_err(|e| fail(e.to_string()))?;
        }
        for f in files {
            let to = if dir {
                if !safe(&f.path) {
                    return Err(fail(format!("{:?} is not a path inside the copy", f.path)));
                }
                staged.join(&f.path)
            } else {
                staged.clone()
            };
            write_read_only(&to, &f.bytes, f.executable).map_err(|e| fail(e.to_string()))?;
        }
        if dir {
            read_only_dirs(&staged).map_err(|e| fail(e.to_string()))?;
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

    /// A stack's own persistent directory on this node (created if missing): its host path.
    pub fn stack_dir(&self, stack: &str, path: &str) -> Result<PathBuf, String> {
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

fn write_read_only(to: &Path, bytes: &[u8], executable: bool) -> std::io::Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(to, bytes)?;
    let mode = if executable { 0o555 } else { 0o444 };
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))
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
