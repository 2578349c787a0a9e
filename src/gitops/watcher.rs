//! The watch loop: decides *when* to fetch (start-up, poll timer, file changes in a local
//! repository, webhooks, `sync_now`) and emits a new [`Update`] only when the branch head moved.
//!
//! The watcher fetches itself and sends fetched commits, not bare triggers: one task owns the
//! mirror, so fetches never race, bursts of triggers coalesce into one fetch, and the consumer
//! only ever sees "here is a new head".

use std::path::{Component, Path};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::mirror::{Commit, GitError, Mirror};

/// What caused a fetch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    Startup,
    Poll,
    /// A retry after a failed fetch, on the backoff schedule.
    Retry,
    FileChange,
    Webhook,
    SyncNow,
    /// This manager became the leader and fetched, to start from the branch's head.
    Leadership,
}

impl Trigger {
    /// In words, as `history` shows it.
    pub fn name(self) -> &'static str {
        match self {
            Trigger::Startup => "start-up",
            Trigger::Poll => "poll",
            Trigger::Retry => "retry",
            Trigger::FileChange => "watch",
            Trigger::Webhook => "webhook",
            Trigger::SyncNow => "sync",
            Trigger::Leadership => "new leader",
        }
    }
}

/// A new head of the tracked branch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Update {
    pub commit: Commit,
    pub trigger: Trigger,
}

#[derive(Clone, Debug)]
pub struct WatcherConfig {
    /// Fetch at least this often (default 30 s).
    pub poll_interval: Duration,
    /// Quiet time after a branch ref of a local repository changed before fetching (default
    /// 20 ms): one push may move several refs.
    pub debounce: Duration,
    /// Watch a local repository's refs for changes (default true; no effect on remote URLs).
    pub watch_files: bool,
    /// Retry schedule after a failed fetch (default 1 s doubling to 60 s).
    pub backoff: Backoff,
    /// A fetch still running after this long counts as failed (default 120 s), so a remote
    /// that hangs cannot stall the watcher and `sync_now`.
    pub fetch_timeout: Duration,
}

impl Default for WatcherConfig {
    fn default() -> Self {
        WatcherConfig {
            poll_interval: Duration::from_secs(30),
            // Branch refs are replaced atomically (rename from a lock file): a short wait is
            // enough to take the refs of one push together.
            debounce: Duration::from_millis(20),
            watch_files: true,
            backoff: Backoff::default(),
            fetch_timeout: Duration::from_secs(120),
        }
    }
}

/// What the watcher knows, for status pages. Errors are already free of tokens.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WatchStatus {
    pub url: String,
    /// The tracked branch, once known.
    pub branch: Option<String>,
    /// The head as of the last successful fetch.
    pub head: Option<Commit>,
    /// When the last fetch succeeded.
    pub last_success: Option<std::time::SystemTime>,
    /// Fetches attempted so far.
    pub fetches: u64,
    /// Fetches failed in a row (0 when the last one worked).
    pub failures: u32,
    /// Fetches failed so far.
    pub fetch_failures_total: u64,
    /// Webhook requests so far, by result (accepted, ignored, pong, refused).
    pub webhooks: std::collections::BTreeMap<&'static str, u64>,
    pub last_error: Option<String>,
    /// Whether a file watcher on a local repository is active.
    pub file_watch: bool,
}

/// Why `sync_now` gave no commit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Git(#[from] GitError),
    #[error("the git watcher has stopped")]
    Stopped,
}

enum Request {
    Fetch(Trigger),
    Sync(oneshot::Sender<Result<Commit, GitError>>),
}

/// Talks to a running [`Watcher`]; cheap to clone.
#[derive(Clone, Debug)]
pub struct WatcherHandle {
    requests: mpsc::Sender<Request>,
    status: watch::Receiver<WatchStatus>,
    /// Webhook requests by result, counted by the webhook receiver.
    webhooks: Arc<std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Fetch(t) => write!(f, "Fetch({t:?})"),
            Request::Sync(_) => write!(f, "Sync"),
        }
    }
}

impl WatcherHandle {
    /// Ask for a fetch soon, without waiting. False only when the watcher has stopped; a full
    /// queue already holds a fetch that will see the same commits.
    pub fn trigger(&self, why: Trigger) -> bool {
        !matches!(
            self.requests.try_send(Request::Fetch(why)),
            Err(mpsc::error::TrySendError::Closed(_))
        )
    }

    /// Fetch now and answer with the current head, changed or not (for `reconciler sync`).
    /// A changed head is also sent on the update channel as usual.
    pub async fn sync_now(&self) -> Result<Commit, SyncError> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(Request::Sync(tx))
            .await
            .map_err(|_| SyncError::Stopped)?;
        Ok(rx.await.map_err(|_| SyncError::Stopped)??)
    }

    pub fn status(&self) -> WatchStatus {
        let mut status = self.status.borrow().clone();
        status.webhooks = self.webhooks.lock().expect("lock").clone();
        status
    }

    /// One more webhook request that ended so (accepted, ignored, pong, refused).
    pub fn count_webhook(&self, result: &'static str) {
        *self
            .webhooks
            .lock()
            .expect("lock")
            .entry(result)
            .or_default() += 1;
    }

    /// The tracked branch, once known (configured, or after the first fetch).
    pub fn tracked_branch(&self) -> Option<String> {
        self.status.borrow().branch.clone()
    }
}

/// Watches one [`Mirror`]; see the module docs.
pub struct Watcher {
    mirror: Arc<Mirror>,
    config: WatcherConfig,
    updates: mpsc::Sender<Update>,
    requests: mpsc::Receiver<Request>,
    status: watch::Sender<WatchStatus>,
    last_emitted: Option<String>,
}

impl Watcher {
    /// A watcher that will send new heads on `updates`. Nothing happens until [`Watcher::run`].
    pub fn new(
        mirror: Arc<Mirror>,
        config: WatcherConfig,
        updates: mpsc::Sender<Update>,
    ) -> (Watcher, WatcherHandle) {
        let (req_tx, req_rx) = mpsc::channel(32);
        let (status_tx, status_rx) = watch::channel(WatchStatus {
            url: mirror.display_url().to_string(),
            branch: mirror.branch(),
            ..WatchStatus::default()
        });
        let watcher = Watcher {
            mirror,
            config,
            updates,
            requests: req_rx,
            status: status_tx,
            last_emitted: None,
        };
        let handle = WatcherHandle {
            requests: req_tx,
            status: status_rx,
            webhooks: Default::default(),
        };
        (watcher, handle)
    }

    /// Fetch at once, then on every trigger, until `shutdown` is cancelled or the update
    /// receiver is dropped. The first successful fetch always emits its head.
    pub async fn run(mut self, shutdown: CancellationToken) {
        self.watch(shutdown).await
    }

    /// [`Watcher::run`] on a watcher kept by its caller, so that a supervisor can start it
    /// again after a panic with the same channels.
    pub async fn watch(&mut self, shutdown: CancellationToken) {
        let (fs_tx, mut fs_rx) = mpsc::unbounded_channel::<()>();
        let mut file_watch = None;
        let mut backoff = self.config.backoff.clone();
        let mut failing = false;
        let mut next_poll = Instant::now() + self.config.poll_interval;
        let mut debounce_until: Option<Instant> = None;
        let mut requests_open = true;
        let mut pending: Option<(Trigger, Vec<Waiter>)> = Some((Trigger::Startup, Vec::new()));
        let mut stuck: Option<Stuck> = None;

        if self.config.watch_files {
            file_watch = self.start_file_watch(fs_tx.clone());
        }

        loop {
            if pending.is_none() {
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => break,
                    req = self.requests.recv(), if requests_open => match req {
                        Some(req) => pending = Some(merge(None, req)),
                        None => requests_open = false,
                    },
                    Some(()) = fs_rx.recv() => {
                        // Debounce from the first event: a steady stream of changes still
                        // fetches every `debounce`, rather than never.
                        debounce_until.get_or_insert(Instant::now() + self.config.debounce);
                    }
                    _ = sleep_until_opt(debounce_until) => {
                        debounce_until = None;
                        pending = Some((Trigger::FileChange, Vec::new()));
                    }
                    _ = tokio::time::sleep_until(next_poll) => {
                        pending = Some((if failing { Trigger::Retry } else { Trigger::Poll }, Vec::new()));
                    }
                }
            }
            let Some(mut batch) = pending.take() else {
                continue;
            };
            // Everything queued so far is answered by this one fetch.
            while let Ok(req) = self.requests.try_recv() {
                batch = merge(Some(batch), req);
            }
            let (trigger, waiters) = batch;

            let result = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = self.fetch(&mut stuck) => r,
            };

            match result {
                Ok(commit) => {
                    if failing {
                        tracing::info!(url = %self.mirror.display_url(), "git remote reachable again");
                    }
                    failing = false;
                    backoff.reset();
                    next_poll = Instant::now() + self.config.poll_interval;
                    if self.config.watch_files && file_watch.is_none() {
                        // A local repository that did not exist at start-up may exist now.
                        file_watch = self.start_file_watch(fs_tx.clone());
                    }
                    self.status.send_modify(|s| {
                        s.branch = Some(commit.branch.clone());
                        s.head = Some(commit.clone());
                        s.last_success = Some(std::time::SystemTime::now());
                        s.fetches += 1;
                        s.failures = 0;
                        s.last_error = None;
                        s.file_watch = file_watch.is_some();
                    });
                    for w in waiters {
                        let _ = w.send(Ok(commit.clone()));
                    }
                    if self.last_emitted.as_deref() == Some(commit.id.as_str()) {
                        tracing::debug!(?trigger, commit = %commit.short_id(), "head unchanged");
                        continue;
                    }
                    tracing::info!(?trigger, commit = %commit.short_id(), branch = %commit.branch,
                        summary = %commit.summary, "new head");
                    self.last_emitted = Some(commit.id.clone());
                    let update = Update { commit, trigger };
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        sent = self.updates.send(update) => if sent.is_err() {
                            tracing::debug!("update receiver dropped; git watcher stops");
                            break;
                        },
                    }
                }
                Err(err) => {
                    let delay = backoff.next_delay();
                    failing = true;
                    next_poll = Instant::now() + delay;
                    // Said once per distinct error; the retries that follow are debug.
                    let news = self.status.borrow().last_error.as_deref() != Some(&err.to_string());
                    if news {
                        tracing::warn!(?trigger, error = %err, retry_in = ?delay, "git fetch failed; retrying with backoff");
                    } else {
                        tracing::debug!(?trigger, error = %err, retry_in = ?delay, "git fetch failed again");
                    }
                    self.status.send_modify(|s| {
                        s.branch = self.mirror.branch();
                        s.fetches += 1;
                        s.failures += 1;
                        s.fetch_failures_total += 1;
                        s.last_error = Some(err.to_string());
                    });
                    for w in waiters {
                        let _ = w.send(Err(err.clone()));
                    }
                }
            }
        }
        tracing::debug!(url = %self.mirror.display_url(), "git watcher stopped");
    }

    /// One fetch on the blocking pool, bounded by `fetch_timeout`. A fetch that overruns is
    /// asked to stop and left to finish on its own; no other starts until it has, so a hanging
    /// remote costs one thread, not one per retry.
    async fn fetch(&self, stuck: &mut Option<Stuck>) -> Result<Commit, GitError> {
        let url = self.mirror.display_url().to_string();
        if let Some(s) = stuck.take() {
            if !s.task.is_finished() {
                *stuck = Some(s);
                return Err(GitError::Unreachable {
                    url,
                    reason: "an earlier fetch that timed out is still running".to_string(),
                });
            }
        }
        let cancel = Arc::new(AtomicBool::new(false));
        let mirror = Arc::clone(&self.mirror);
        let flag = Arc::clone(&cancel);
        let mut task = tokio::task::spawn_blocking(move || mirror.fetch_cancellable(&flag));
        match tokio::time::timeout(self.config.fetch_timeout, &mut task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(GitError::Mirror {
                path: self.mirror.path().to_path_buf(),
                reason: format!("fetch task failed: {join}"),
            }),
            Err(_elapsed) => {
                cancel.store(true, Ordering::Relaxed);
                *stuck = Some(Stuck { task });
                Err(GitError::Unreachable {
                    url,
                    reason: format!(
                        "no answer within {}",
                        humantime::format_duration(self.config.fetch_timeout)
                    ),
                })
            }
        }
    }

    /// Watch the refs of a local source repository. `None` (polling only) when the source is
    /// remote or the repository cannot be watched yet.
    fn start_file_watch(
        &self,
        tx: mpsc::UnboundedSender<()>,
    ) -> Option<notify::RecommendedWatcher> {
        use notify::Watcher as _;
        let path = self.mirror.source().location().local_path()?.to_path_buf();
        let common = match git2::Repository::open(&path) {
            Ok(repo) => std::fs::canonicalize(repo.commondir()).ok()?,
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e.message(), "no file watch yet");
                return None;
            }
        };
        let root = common.clone();
        let handler = move |res: notify::Result<notify::Event>| {
            let Ok(event) = res else { return };
            if matches!(event.kind, notify::EventKind::Access(_)) {
                return;
            }
            if event.paths.iter().any(|p| is_ref_change_under(&root, p)) {
                let _ = tx.send(());
            }
        };
        let mut watcher = match notify::recommended_watcher(handler) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot start a file watcher; polling only");
                return None;
            }
        };
        // Not the whole git dir: objects/ holds hundreds of directories and is the noisiest part.
        let watched = watcher
            .watch(&common, notify::RecursiveMode::NonRecursive)
            .and_then(|_| watcher.watch(&common.join("refs"), notify::RecursiveMode::Recursive));
        if let Err(e) = watched {
            tracing::warn!(path = %common.display(), error = %e, "cannot watch the repository; polling only");
            return None;
        }
        tracing::info!(path = %common.display(), "watching the local repository for commits");
        Some(watcher)
    }
}

type Waiter = oneshot::Sender<Result<Commit, GitError>>;

/// A fetch that overran `fetch_timeout` and has not finished yet.
struct Stuck {
    task: tokio::task::JoinHandle<Result<Commit, GitError>>,
}

/// Fold a request into the pending batch: one fetch, every `sync_now` caller answered by it.
fn merge(batch: Option<(Trigger, Vec<Waiter>)>, req: Request) -> (Trigger, Vec<Waiter>) {
    let (trigger, mut waiters) = match (batch, &req) {
        (Some(batch), _) => batch,
        (None, Request::Fetch(t)) => (*t, Vec::new()),
        (None, Request::Sync(_)) => (Trigger::SyncNow, Vec::new()),
    };
    match req {
        Request::Fetch(_) => (trigger, waiters),
        Request::Sync(w) => {
            waiters.push(w);
            (Trigger::SyncNow, waiters)
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn is_ref_change_under(git_dir: &Path, path: &Path) -> bool {
    path.strip_prefix(git_dir).is_ok_and(is_ref_change)
}

/// Whether a change to `path` (relative to a git dir) can move a branch: `HEAD`,
/// `packed-refs`, and branch files under `refs/heads/`. Lock files are skipped: git writes
/// `main.lock` and renames it to `main`, and the rename is the moment the commit is there.
/// Objects, the index, logs and FETCH_HEAD are noise.
pub fn is_ref_change(path: &Path) -> bool {
    let parts: Vec<&str> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect();
    match parts.as_slice() {
        ["HEAD"] | ["packed-refs"] => true,
        ["refs", "heads", rest @ ..] => rest.last().is_some_and(|n| !n.ends_with(".lock")),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_branch_refs_count_as_changes() {
        for yes in [
            "HEAD",
            "packed-refs",
            "refs/heads/main",
            "refs/heads/team/feature",
        ] {
            assert!(is_ref_change(Path::new(yes)), "{yes}");
        }
        for no in [
            "refs/heads/main.lock",
            "packed-refs.lock",
            "HEAD.lock",
            "index",
            "index.lock",
            "FETCH_HEAD",
            "ORIG_HEAD",
            "objects/ab/cdef",
            "logs/HEAD",
            "logs/refs/heads/main",
            "refs/tags/v1",
            "refs/heads",
            "config",
        ] {
            assert!(!is_ref_change(Path::new(no)), "{no}");
        }
        assert!(is_ref_change_under(
            Path::new("/r/.git"),
            Path::new("/r/.git/refs/heads/main")
        ));
        assert!(!is_ref_change_under(
            Path::new("/r/.git"),
            Path::new("/elsewhere/refs/heads/main")
        ));
    }

    #[test]
    fn requests_coalesce_into_one_fetch() {
        let (a, _ra) = oneshot::channel();
        let (b, _rb) = oneshot::channel();
        let batch = merge(None, Request::Fetch(Trigger::Webhook));
        assert_eq!(batch.0, Trigger::Webhook);
        let batch = merge(Some(batch), Request::Sync(a));
        let batch = merge(Some(batch), Request::Fetch(Trigger::Poll));
        let batch = merge(Some(batch), Request::Sync(b));
        assert_eq!(batch.0, Trigger::SyncNow);
        assert_eq!(batch.1.len(), 2);
    }
}
