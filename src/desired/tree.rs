//! Read-only access to a stacks repo, from a work tree on disk or from any git commit (through
//! git2, without a checkout), so two commits can be compared side by side.

use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, bail, Context as _};

/// A directory tree of files. Paths are `/`-separated and relative to the stacks root.
pub trait Tree {
    /// Names of the directories directly under `dir` ("" for the root), sorted.
    fn subdirs(&self, dir: &str) -> anyhow::Result<Vec<String>>;
    /// The content of a file, or None if there is no such file.
    fn read(&self, path: &str) -> anyhow::Result<Option<Vec<u8>>>;
    /// A short description for messages: a path, or `repo@abc1234`.
    fn describe(&self) -> String;
    /// Is there a directory at `path` ("" for the root)?
    fn is_dir(&self, path: &str) -> anyhow::Result<bool>;
    /// The root directory's own name: a stack read from the root is named after it.
    fn name(&self) -> String;
    /// The commit this tree comes from, if any.
    fn revision(&self) -> Option<String> {
        None
    }
    /// Every file under the directory `dir`, recursively, sorted by path (relative to `dir`);
    /// None when `dir` is not a directory.
    fn walk(&self, dir: &str) -> anyhow::Result<Option<Vec<TreeFile>>>;
    /// An id of what is at `path` (a file, or a directory with everything under it) that two
    /// trees share exactly when the content is the same: git's mode and object id, `Some("")`
    /// when nothing is there. None when this tree cannot tell without reading everything (a
    /// work tree's directory): compare [`Tree::blob_ids`] instead.
    fn object_id(&self, path: &str) -> anyhow::Result<Option<String>>;
    /// Every file under the directory `dir` with its git mode and blob id, as a commit of it
    /// would record them (a work tree hashes its files, as `git status` does). None when `dir`
    /// is not a directory or holds more than `max_files` files or `max_bytes` bytes.
    fn blob_ids(
        &self,
        dir: &str,
        max_files: usize,
        max_bytes: u64,
    ) -> anyhow::Result<Option<std::collections::BTreeMap<String, String>>> {
        let Some(files) = self.walk(dir)? else {
            return Ok(None);
        };
        if files.len() > max_files {
            return Ok(None);
        }
        let mut ids = std::collections::BTreeMap::new();
        let mut total = 0u64;
        for f in files {
            let id = if f.link {
                "120000".to_string()
            } else {
                let Some(bytes) = self.read(&join_path(dir, &f.path))? else {
                    return Ok(None);
                };
                total += bytes.len() as u64;
                if total > max_bytes {
                    return Ok(None);
                }
                blob_id(&bytes, f.executable)
            };
            ids.insert(f.path, id);
        }
        Ok(Some(ids))
    }
    /// Another handle on the same tree, for a thread of its own (git handles are not shared
    /// between threads).
    fn fork(&self) -> anyhow::Result<Box<dyn Tree + Send>>;
}

/// A file's git mode and blob id, as a commit would record it: `100644 <sha1>`.
pub fn blob_id(bytes: &[u8], executable: bool) -> String {
    let mode = if executable { 0o100755 } else { 0o100644 };
    let id = git2::Oid::hash_object(git2::ObjectType::Blob, bytes)
        .map(|o| o.to_string())
        .unwrap_or_default();
    format!("{mode:o} {id}")
}

fn join_path(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// A file found by [`Tree::walk`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeFile {
    /// Relative to the directory walked, `/`-separated.
    pub path: String,
    pub executable: bool,
    /// A symbolic link (never followed: it could point anywhere on the host).
    pub link: bool,
}

/// Resolve `relative` (written in a file under `base_dir`) to a path inside the tree, refusing
/// anything that would leave it: absolute paths and `..` past the root.
pub fn join_inside(base_dir: &str, relative: &str) -> Result<String, String> {
    if relative.starts_with('/') || Path::new(relative).is_absolute() {
        return Err(format!(
            "{relative:?} is an absolute path: files must be inside the stacks repo, named relative to the stack directory"
        ));
    }
    let mut parts: Vec<&str> = base_dir.split('/').filter(|p| !p.is_empty()).collect();
    for comp in Path::new(relative).components() {
        match comp {
            Component::CurDir => {}
            Component::ParentDir => {
                if parts.pop().is_none() {
                    return Err(format!("{relative:?} leaves the stacks repo"));
                }
            }
            Component::Normal(p) => parts.push(p.to_str().ok_or("path is not UTF-8")?),
            _ => return Err(format!("{relative:?} is not a relative path")),
        }
    }
    Ok(parts.join("/"))
}

/// A directory on disk.
#[derive(Clone, Debug)]
pub struct WorkTree {
    root: PathBuf,
    /// The root with its links resolved, once: every read checks that it stays under it.
    real_root: Option<PathBuf>,
}

impl WorkTree {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        WorkTree {
            real_root: std::fs::canonicalize(&root).ok(),
            root,
        }
    }
}

impl Tree for WorkTree {
    fn fork(&self) -> anyhow::Result<Box<dyn Tree + Send>> {
        Ok(Box::new(self.clone()))
    }

    fn blob_ids(
        &self,
        dir: &str,
        max_files: usize,
        max_bytes: u64,
    ) -> anyhow::Result<Option<std::collections::BTreeMap<String, String>>> {
        let Some(files) = self.walk(dir)? else {
            return Ok(None);
        };
        if files.len() > max_files {
            return Ok(None);
        }
        // What `walk` found are regular files under real directories of the tree (it follows
        // no link): read them as they are, without resolving links again.
        let base = self.real_root.as_ref().unwrap_or(&self.root).join(dir);
        let mut ids = std::collections::BTreeMap::new();
        let mut total = 0u64;
        for f in files {
            let id = if f.link {
                "120000".to_string()
            } else {
                let bytes = std::fs::read(base.join(&f.path))
                    .with_context(|| format!("reading {}", join_path(dir, &f.path)))?;
                total += bytes.len() as u64;
                if total > max_bytes {
                    return Ok(None);
                }
                blob_id(&bytes, f.executable)
            };
            ids.insert(f.path, id);
        }
        Ok(Some(ids))
    }

    fn object_id(&self, path: &str) -> anyhow::Result<Option<String>> {
        use std::os::unix::fs::PermissionsExt;
        let full = self.root.join(path);
        match std::fs::symlink_metadata(&full) {
            Ok(m) if m.is_file() => {
                let bytes = std::fs::read(&full).with_context(|| format!("reading {path}"))?;
                Ok(Some(blob_id(&bytes, m.permissions().mode() & 0o111 != 0)))
            }
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Some(String::new())),
            Err(e) => Err(anyhow!(e).context(format!("reading {path}"))),
        }
    }

    fn subdirs(&self, dir: &str) -> anyhow::Result<Vec<String>> {
        let path = self.root.join(dir);
        let mut out = Vec::new();
        for entry in
            std::fs::read_dir(&path).with_context(|| format!("reading {}", path.display()))?
        {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                if let Some(name) = entry.file_name().to_str() {
                    out.push(name.to_string());
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn is_dir(&self, path: &str) -> anyhow::Result<bool> {
        Ok(self.root.join(path).is_dir())
    }

    fn name(&self) -> String {
        std::fs::canonicalize(&self.root)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "stack".into())
    }

    fn read(&self, path: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let full = self.real_root.as_ref().unwrap_or(&self.root).join(path);
        // Most reads ask for files that are not there (the stack file names looked for): one
        // call says so, before the links are resolved.
        if std::fs::symlink_metadata(&full).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
        {
            return Ok(None);
        }
        // Symlinks could point anywhere on the host; only follow those that stay in the repo.
        match std::fs::canonicalize(&full) {
            Ok(real) => {
                let root = match &self.real_root {
                    Some(r) => r.clone(),
                    None => std::fs::canonicalize(&self.root)?,
                };
                if !real.starts_with(&root) {
                    bail!("{path} is a link to a file outside the stacks repo");
                }
                if real.is_dir() {
                    return Ok(None);
                }
                if !real.is_file() {
                    bail!("{path} is not a regular file (a FIFO, socket or device): only files are read");
                }
                Ok(Some(
                    std::fs::read(&real).with_context(|| format!("reading {path}"))?,
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow!(e).context(format!("reading {path}"))),
        }
    }

    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn walk(&self, dir: &str) -> anyhow::Result<Option<Vec<TreeFile>>> {
        use std::os::unix::fs::PermissionsExt;
        let base = self.root.join(dir);
        if !std::fs::symlink_metadata(&base).is_ok_and(|m| m.is_dir()) {
            return Ok(None);
        }
        let mut out = Vec::new();
        let mut pending = vec![String::new()];
        while let Some(rel) = pending.pop() {
            let path = base.join(&rel);
            for entry in
                std::fs::read_dir(&path).with_context(|| format!("reading {}", path.display()))?
            {
                let entry = entry?;
                let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                    bail!("{}: a file name that is not UTF-8", path.display());
                };
                let child = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                let meta = std::fs::symlink_metadata(entry.path())?;
                if meta.is_dir() {
                    pending.push(child);
                } else {
                    out.push(TreeFile {
                        path: child,
                        executable: meta.permissions().mode() & 0o111 != 0,
                        link: meta.file_type().is_symlink() || !meta.is_file(),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Some(out))
    }
}

/// A commit of a git repository, read through git2 without touching any work tree.
pub struct GitTree {
    repo: git2::Repository,
    tree: git2::Oid,
    commit: git2::Oid,
    /// Sub-directory of the repository holding the stacks ("" for the root).
    prefix: String,
    label: String,
    name: Option<String>,
}

impl GitTree {
    /// Open `repo_path` (or a directory inside a repository) at `reference`: a branch, tag,
    /// commit id, or any revision expression git understands (`HEAD~1`, `main^{tree}`...).
    /// `subdir` selects the stacks directory inside the repository.
    pub fn open(repo_path: &Path, reference: &str, subdir: &str) -> anyhow::Result<Self> {
        let repo = git2::Repository::discover(repo_path)
            .with_context(|| format!("{} is not inside a git repository", repo_path.display()))?;
        let commit = repo
            .revparse_single(reference)
            .and_then(|o| o.peel_to_commit())
            .with_context(|| format!("cannot resolve git reference {reference:?}"))?;
        // A path given on disk inside the repository selects the same sub-directory.
        let mut prefix = subdir.trim_matches('/').to_string();
        if prefix.is_empty() {
            if let (Some(workdir), Ok(abs)) = (repo.workdir(), std::fs::canonicalize(repo_path)) {
                if let Ok(rel) = abs.strip_prefix(std::fs::canonicalize(workdir)?) {
                    prefix = rel.to_string_lossy().replace('\\', "/");
                }
            }
        }
        let commit_id = commit.id();
        let tree = commit.tree()?.id();
        drop(commit);
        let short = commit_id.to_string()[..7].to_string();
        Ok(GitTree {
            tree,
            commit: commit_id,
            label: format!("{reference} ({short})"),
            repo,
            prefix,
            name: None,
        })
    }

    /// Name the root (for a stack read from the root of a bare mirror, whose own directory
    /// name means nothing to the user).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    fn full(&self, path: &str) -> String {
        match (self.prefix.is_empty(), path.is_empty()) {
            (true, _) => path.to_string(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}/{path}", self.prefix),
        }
    }

    fn subtree(&self, path: &str) -> anyhow::Result<Option<git2::Tree<'_>>> {
        let root = self.repo.find_tree(self.tree)?;
        let full = self.full(path);
        if full.is_empty() {
            return Ok(Some(root));
        }
        match root.get_path(Path::new(&full)) {
            Ok(entry) if entry.kind() == Some(git2::ObjectType::Tree) => {
                Ok(Some(self.repo.find_tree(entry.id())?))
            }
            Ok(_) => Ok(None),
            Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

impl Tree for GitTree {
    fn fork(&self) -> anyhow::Result<Box<dyn Tree + Send>> {
        Ok(Box::new(GitTree {
            repo: git2::Repository::open(self.repo.path())?,
            tree: self.tree,
            commit: self.commit,
            prefix: self.prefix.clone(),
            label: self.label.clone(),
            name: self.name.clone(),
        }))
    }

    fn object_id(&self, path: &str) -> anyhow::Result<Option<String>> {
        let root = self.repo.find_tree(self.tree)?;
        let full = self.full(path);
        if full.is_empty() {
            return Ok(Some(self.tree.to_string()));
        }
        match root.get_path(Path::new(&full)) {
            // The mode too: a file that became executable or a link is not the same.
            Ok(e) => Ok(Some(format!("{:o} {}", e.filemode(), e.id()))),
            Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(Some(String::new())),
            Err(e) => Err(e.into()),
        }
    }

    fn blob_ids(
        &self,
        dir: &str,
        max_files: usize,
        _max_bytes: u64,
    ) -> anyhow::Result<Option<std::collections::BTreeMap<String, String>>> {
        let Some(tree) = self.subtree(dir)? else {
            return Ok(None);
        };
        let mut ids = std::collections::BTreeMap::new();
        tree.walk(git2::TreeWalkMode::PreOrder, |parent, entry| {
            if entry.kind() == Some(git2::ObjectType::Blob) {
                if let Ok(name) = entry.name() {
                    let id = match entry.filemode() {
                        0o120000 => "120000".to_string(),
                        mode => format!("{mode:o} {}", entry.id()),
                    };
                    ids.insert(format!("{parent}{name}"), id);
                }
            }
            git2::TreeWalkResult::Ok
        })?;
        Ok((ids.len() <= max_files).then_some(ids))
    }

    fn subdirs(&self, dir: &str) -> anyhow::Result<Vec<String>> {
        let Some(tree) = self.subtree(dir)? else {
            bail!("{} has no directory {:?}", self.label, self.full(dir));
        };
        let mut out: Vec<String> = tree
            .iter()
            .filter(|e| e.kind() == Some(git2::ObjectType::Tree))
            .filter_map(|e| e.name().ok().map(str::to_string))
            .collect();
        out.sort();
        Ok(out)
    }

    fn read(&self, path: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let root = self.repo.find_tree(self.tree)?;
        let entry = match root.get_path(Path::new(&self.full(path))) {
            Ok(e) => e,
            Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if entry.kind() != Some(git2::ObjectType::Blob) {
            return Ok(None);
        }
        if entry.filemode() == 0o120000 {
            bail!("{path} is a symbolic link; links are not followed in git trees");
        }
        let blob = self.repo.find_blob(entry.id())?;
        Ok(Some(blob.content().to_vec()))
    }

    fn describe(&self) -> String {
        if self.prefix.is_empty() {
            self.label.clone()
        } else {
            format!("{}/ at {}", self.prefix, self.label)
        }
    }

    fn is_dir(&self, path: &str) -> anyhow::Result<bool> {
        Ok(self.subtree(path)?.is_some())
    }

    fn name(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        if let Some(last) = self.prefix.rsplit('/').next().filter(|l| !l.is_empty()) {
            return last.to_string();
        }
        let dir = self.repo.workdir().unwrap_or_else(|| self.repo.path());
        std::fs::canonicalize(dir)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .map(|n| n.trim_end_matches(".git").to_string())
            .unwrap_or_else(|| "stack".into())
    }

    fn revision(&self) -> Option<String> {
        Some(self.commit.to_string())
    }

    fn walk(&self, dir: &str) -> anyhow::Result<Option<Vec<TreeFile>>> {
        let Some(tree) = self.subtree(dir)? else {
            return Ok(None);
        };
        let mut out = Vec::new();
        tree.walk(git2::TreeWalkMode::PreOrder, |parent, entry| {
            if entry.kind() == Some(git2::ObjectType::Blob) {
                if let Ok(name) = entry.name() {
                    let mode = entry.filemode();
                    out.push(TreeFile {
                        path: format!("{parent}{name}"),
                        executable: mode == 0o100755,
                        link: mode == 0o120000,
                    });
                }
            }
            git2::TreeWalkResult::Ok
        })?;
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_stays_inside() {
        assert_eq!(join_inside("web", "./db.age").unwrap(), "web/db.age");
        assert_eq!(
            join_inside("web", "../shared/ca.pem").unwrap(),
            "shared/ca.pem"
        );
        assert!(join_inside("web", "../../etc/passwd").is_err());
        assert!(join_inside("web", "/etc/passwd").is_err());
    }
}
