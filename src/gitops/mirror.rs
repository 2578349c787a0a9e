//! A bare mirror of the tracked branch, kept in the data directory and updated by git2 fetches.
//! Stacks are read from it by commit id (`desired::GitTree::open(mirror.path(), &commit.id, ..)`),
//! so no work tree is ever checked out.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use git2::{
    AutotagOption, CertificateCheckStatus, Cred, CredentialType, Direction, ErrorClass, ErrorCode,
    FetchOptions, RemoteCallbacks, Repository,
};
use serde::{Deserialize, Serialize};

use super::source::{scrub, url_user, HostKeyCheck, Location, Source};

/// The mirror's directory name inside the data directory.
pub const MIRROR_DIR: &str = "repo.git";

/// The head of the tracked branch after a fetch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    /// Full hex object id.
    pub id: String,
    /// The branch it is the head of.
    pub branch: String,
    /// First line of the message.
    pub summary: String,
    /// `Name <email>`.
    pub author: String,
    /// Author time, seconds since the Unix epoch.
    pub time: i64,
}

impl Commit {
    pub fn short_id(&self) -> &str {
        &self.id[..self.id.len().min(7)]
    }
}

/// Why a fetch failed. Every variant is worth retrying (with backoff): remotes come back,
/// credentials get fixed, branches get pushed. URLs in messages never carry a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GitError {
    #[error("cannot reach git remote {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("authentication to git remote {url} failed: {reason}")]
    Auth { url: String, reason: String },
    #[error("branch {branch:?} not found on git remote {url}{}", known_branches(.available))]
    BranchNotFound {
        url: String,
        branch: String,
        available: Vec<String>,
    },
    #[error("git remote {url} has no default branch (no HEAD, main or master){}: name a branch", known_branches(.available))]
    NoDefaultBranch { url: String, available: Vec<String> },
    #[error("git mirror {}: {reason}", .path.display())]
    Mirror { path: PathBuf, reason: String },
}

fn known_branches(names: &[String]) -> String {
    if names.is_empty() {
        " (the remote has no branches)".to_string()
    } else {
        format!(" (branches: {})", names.join(", "))
    }
}

/// A bare clone at `<data_dir>/repo.git` that follows one branch of a [`Source`].
pub struct Mirror {
    source: Source,
    /// What libgit2 is given: local paths made absolute.
    url: String,
    display_url: String,
    path: PathBuf,
    /// The tracked branch: configured, or the remote's default once the first fetch asked.
    branch: Mutex<Option<String>>,
    /// The credentials of the moment: the source's, until the cluster's replace them.
    auth: Mutex<super::Auth>,
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror")
            .field("url", &self.display_url)
            .field("path", &self.path)
            .field("branch", &self.branch())
            .finish()
    }
}

impl Mirror {
    /// Open the mirror in `data_dir`, creating the directory and an empty bare repository on
    /// first use. Touches no network: the first [`Mirror::fetch`] clones.
    pub fn open(source: Source, data_dir: &Path) -> Result<Mirror, GitError> {
        let path = data_dir.join(MIRROR_DIR);
        let mirror_err = |e: &dyn std::fmt::Display| GitError::Mirror {
            path: path.clone(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(data_dir).map_err(|e| mirror_err(&e))?;
        match Repository::open_bare(&path) {
            Ok(_) => {}
            Err(e) if e.code() == ErrorCode::NotFound => {
                Repository::init_bare(&path).map_err(|e| mirror_err(&e.message()))?;
            }
            Err(e) => return Err(mirror_err(&e.message())),
        }
        let url = match source.location() {
            // libgit2 resolves relative paths against the process's directory at each fetch;
            // pin them now.
            Location::Path(p) => std::fs::canonicalize(&p)
                .or_else(|_| std::path::absolute(&p))
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_else(|_| source.repo.clone()),
            _ => source.repo.clone(),
        };
        let branch = source
            .branch
            .clone()
            .filter(|b| !b.is_empty())
            .map(|b| b.trim_start_matches("refs/heads/").to_string());
        Ok(Mirror {
            display_url: source.display_url(),
            url,
            path,
            branch: Mutex::new(branch),
            auth: Mutex::new(source.auth.clone()),
            source,
        })
    }

    /// Fetch with these credentials from now on (the cluster's, as they change).
    pub fn set_auth(&self, auth: super::Auth) {
        *self.auth.lock().unwrap_or_else(|e| e.into_inner()) = auth;
    }

    fn auth(&self) -> super::Auth {
        self.auth.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The bare repository, for `GitTree::open`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn source(&self) -> &Source {
        &self.source
    }

    /// The remote's location without credentials, for messages.
    pub fn display_url(&self) -> &str {
        &self.display_url
    }

    /// The tracked branch, once known (configured, or after the first fetch).
    pub fn branch(&self) -> Option<String> {
        self.branch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The head of the tracked branch as last fetched, without any network access.
    pub fn head(&self) -> Result<Option<Commit>, GitError> {
        let repo = self.open_repo()?;
        // Before this process's first fetch of a default branch, the mirror's HEAD still names
        // the branch an earlier run tracked.
        let remembered = || {
            let head = repo.find_reference("HEAD").ok()?;
            let target = head
                .symbolic_target()
                .ok()
                .flatten()?
                .strip_prefix("refs/heads/")?;
            Some(target.to_string())
        };
        let Some(branch) = self.branch().or_else(remembered) else {
            return Ok(None);
        };
        let found = repo.find_reference(&format!("refs/heads/{branch}"));
        match found {
            Ok(r) => {
                let commit = r.peel_to_commit().map_err(|e| self.mirror_err(e))?;
                Ok(Some(describe(&commit, &branch)))
            }
            Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
            Err(e) => Err(self.mirror_err(e)),
        }
    }

    /// Fetch the tracked branch (blocking network I/O: call it from `spawn_blocking`) and
    /// return its head.
    pub fn fetch(&self) -> Result<Commit, GitError> {
        self.fetch_cancellable(&AtomicBool::new(false))
    }

    /// [`Mirror::fetch`] that gives up once `cancel` is set and libgit2 next reports progress
    /// (a remote that accepts a connection and then says nothing cannot be interrupted: libgit2
    /// has no per-fetch timeout, hence the watcher's own).
    pub fn fetch_cancellable(&self, cancel: &AtomicBool) -> Result<Commit, GitError> {
        // libgit2 only says "unsupported URL protocol" for a path that is not there.
        if matches!(self.source.location(), Location::Path(_)) && !Path::new(&self.url).is_dir() {
            return Err(GitError::Unreachable {
                url: self.display_url.clone(),
                reason: "no such directory".to_string(),
            });
        }
        let repo = self.open_repo()?;
        // An anonymous remote: nothing about the source is written to the mirror's config, so a
        // changed URL or token takes effect at once.
        let mut remote = repo
            .remote_anonymous(&self.url)
            .map_err(|e| self.net_err(e, false))?;
        let auth_failed = Cell::new(false);

        let branch = match self.branch() {
            Some(b) => b,
            None => {
                let conn = remote
                    .connect_auth(
                        Direction::Fetch,
                        Some(self.callbacks(&auth_failed, cancel)),
                        None,
                    )
                    .map_err(|e| self.net_err(e, auth_failed.get()))?;
                let symref = conn
                    .default_branch()
                    .ok()
                    .and_then(|b| b.as_str().ok().map(str::to_string));
                let heads = advertised_branches(conn.list().map_err(|e| self.net_err(e, false))?);
                drop(conn);
                let branch = pick_default_branch(symref.as_deref(), &heads).ok_or_else(|| {
                    GitError::NoDefaultBranch {
                        url: self.display_url.clone(),
                        available: heads.clone(),
                    }
                })?;
                tracing::info!(url = %self.display_url, %branch, "tracking the remote's default branch");
                *self.branch.lock().unwrap_or_else(|e| e.into_inner()) = Some(branch.clone());
                branch
            }
        };

        let refname = format!("refs/heads/{branch}");
        let refspec = format!("+{refname}:{refname}");
        let mut opts = FetchOptions::new();
        opts.remote_callbacks(self.callbacks(&auth_failed, cancel))
            .download_tags(AutotagOption::None)
            .update_fetchhead(false);
        tracing::debug!(url = %self.display_url, %branch, "fetching");
        remote
            .fetch(&[&refspec], Some(&mut opts), None)
            .map_err(|e| self.net_err(e, auth_failed.get()))?;

        // A refspec that matches nothing is not an error to libgit2: check the advertisement,
        // so a deleted or misspelt branch is reported instead of serving a stale head.
        let heads = advertised_branches(remote.list().map_err(|e| self.net_err(e, false))?);
        if !heads.contains(&branch) {
            return Err(GitError::BranchNotFound {
                url: self.display_url.clone(),
                branch,
                available: heads,
            });
        }
        // HEAD names the tracked branch, so `GitTree::open(mirror, "HEAD", ..)` works too.
        repo.set_head(&refname).map_err(|e| self.mirror_err(e))?;
        let commit = repo
            .find_reference(&refname)
            .and_then(|r| r.peel_to_commit())
            .map_err(|e| self.mirror_err(e))?;
        Ok(describe(&commit, &branch))
    }

    /// The bare repository; made again, empty, if it has gone (its data dir was deleted
    /// under a running node): the next fetch clones afresh instead of failing forever.
    fn open_repo(&self) -> Result<Repository, GitError> {
        match Repository::open_bare(&self.path) {
            Err(e) if e.code() == ErrorCode::NotFound => {
                tracing::warn!(path = %self.path.display(), "the git mirror is gone; making it again");
                if let Some(parent) = self.path.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| GitError::Mirror {
                        path: self.path.clone(),
                        reason: e.to_string(),
                    })?;
                }
                Repository::init_bare(&self.path).map_err(|e| self.mirror_err(e))
            }
            other => other.map_err(|e| self.mirror_err(e)),
        }
    }

    fn mirror_err(&self, e: git2::Error) -> GitError {
        GitError::Mirror {
            path: self.path.clone(),
            reason: e.message().to_string(),
        }
    }

    /// Sort a libgit2 failure into auth or reachability, with any token scrubbed out.
    fn net_err(&self, e: git2::Error, auth_failed: bool) -> GitError {
        let mut reason = e.message().to_string();
        for token in [self.source.auth.token.as_ref(), self.auth().token.as_ref()]
            .into_iter()
            .flatten()
        {
            reason = scrub(&reason, token);
        }
        let url = self.display_url.clone();
        if auth_failed || is_auth_error(&e) {
            GitError::Auth { url, reason }
        } else {
            GitError::Unreachable { url, reason }
        }
    }

    /// Credentials and host-key checks. Each kind of credential is offered once: libgit2 asks
    /// again after a rejection, and offering the same one forever would loop.
    fn callbacks<'a>(
        &'a self,
        auth_failed: &'a Cell<bool>,
        cancel: &'a AtomicBool,
    ) -> RemoteCallbacks<'a> {
        let mut cb = RemoteCallbacks::new();
        // Returning false from a progress callback makes libgit2 abort the transfer.
        cb.transfer_progress(|_| !cancel.load(Ordering::Relaxed));
        cb.sideband_progress(|_| !cancel.load(Ordering::Relaxed));
        let auth = self.auth();
        let host_check = auth.ssh_host_key;
        let mut tried_token = false;
        let mut tried_key = false;
        let mut tried_agent = false;
        let mut tried_user = false;
        let url_username = url_user(&self.url).map(str::to_string);
        cb.credentials(move |_url, username, allowed| {
            let user = username.or(url_username.as_deref());
            if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) && !tried_token {
                if let Some(token) = &auth.token {
                    tried_token = true;
                    return Cred::userpass_plaintext(user.unwrap_or("x-access-token"), token);
                }
            }
            if allowed.contains(CredentialType::USERNAME) && !tried_user {
                tried_user = true;
                return Cred::username(user.unwrap_or("git"));
            }
            if allowed.contains(CredentialType::SSH_KEY) {
                let user = user.unwrap_or("git");
                if let (Some(pem), false) = (&auth.ssh_key_pem, tried_key) {
                    tried_key = true;
                    return Cred::ssh_key_from_memory(user, None, pem, None);
                }
                if let (Some(key), false) = (&auth.ssh_key, tried_key) {
                    tried_key = true;
                    return Cred::ssh_key(user, None, key, None);
                }
                if auth.ssh_key.is_none() && auth.ssh_key_pem.is_none() && !tried_agent {
                    tried_agent = true;
                    return Cred::ssh_key_from_agent(user);
                }
            }
            auth_failed.set(true);
            Err(git2::Error::from_str(
                if tried_token || tried_key || tried_agent {
                    "the remote refused the credentials"
                } else {
                    "the remote asks for credentials and none are configured"
                },
            ))
        });
        if host_check == HostKeyCheck::AcceptAny {
            cb.certificate_check(|cert, host| {
                if cert.as_hostkey().is_some() {
                    tracing::warn!(%host, "accepting the ssh host key unchecked");
                    Ok(CertificateCheckStatus::CertificateOk)
                } else {
                    Ok(CertificateCheckStatus::CertificatePassthrough)
                }
            });
        }
        cb
    }
}

fn is_auth_error(e: &git2::Error) -> bool {
    e.code() == ErrorCode::Auth
        || (e.class() == ErrorClass::Http && e.message().contains("401"))
        || (e.class() == ErrorClass::Ssh && e.message().contains("authentication"))
}

fn advertised_branches(heads: &[git2::RemoteHead<'_>]) -> Vec<String> {
    heads
        .iter()
        .filter_map(|h| h.name().strip_prefix("refs/heads/"))
        .map(str::to_string)
        .collect()
}

fn describe(commit: &git2::Commit<'_>, branch: &str) -> Commit {
    let author = commit.author();
    Commit {
        id: commit.id().to_string(),
        branch: branch.to_string(),
        summary: String::from_utf8_lossy(commit.summary_bytes().unwrap_or_default()).into_owned(),
        author: format!(
            "{} <{}>",
            String::from_utf8_lossy(author.name_bytes()),
            String::from_utf8_lossy(author.email_bytes())
        ),
        time: author.when().seconds(),
    }
}

/// The branch to follow when none is configured: what the remote's HEAD points at, else
/// `main`, else `master`.
pub fn pick_default_branch(head_target: Option<&str>, branches: &[String]) -> Option<String> {
    if let Some(b) = head_target.and_then(|t| t.strip_prefix("refs/heads/")) {
        if branches.iter().any(|x| x == b) {
            return Some(b.to_string());
        }
    }
    ["main", "master"]
        .into_iter()
        .find(|c| branches.iter().any(|b| b == c))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn default_branch_follows_head_then_main_then_master() {
        let all = names(&["dev", "main", "master", "trunk"]);
        assert_eq!(
            pick_default_branch(Some("refs/heads/trunk"), &all).as_deref(),
            Some("trunk")
        );
        assert_eq!(pick_default_branch(None, &all).as_deref(), Some("main"));
        assert_eq!(
            pick_default_branch(Some("refs/heads/gone"), &names(&["master"])).as_deref(),
            Some("master")
        );
        assert_eq!(pick_default_branch(None, &names(&["dev"])), None);
    }

    #[test]
    fn errors_name_the_url_and_the_branches() {
        let e = GitError::BranchNotFound {
            url: "https://h/r.git".into(),
            branch: "mian".into(),
            available: names(&["main", "dev"]),
        };
        assert_eq!(
            e.to_string(),
            "branch \"mian\" not found on git remote https://h/r.git (branches: main, dev)"
        );
    }
}
