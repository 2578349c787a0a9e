//! Follow the stacks repository: keep a bare mirror of the tracked branch up to date and say
//! when its head moves. This module does not read stacks; the caller loads a new head with
//! `desired::load(&GitTree::open(mirror.path(), &commit.id, subdir)?, ..)`.
//!
//! - [`Mirror`]: `<data_dir>/repo.git`, fetched with git2 (local paths, `file://`, https with a
//!   token, ssh with a key or the agent). Fetch errors are typed ([`GitError`]), never carry a
//!   token, and are all retryable.
//! - [`Watcher`]: one tokio task that fetches at start-up, on a poll timer, on file changes in a
//!   local repository (notify, debounced), on webhooks and on [`WatcherHandle::sync_now`], with
//!   [`Backoff`] after failures; it sends an [`Update`] only when the head changed.
//! - [`webhook_router`]: `POST /api/v1/webhook` for GitHub, Gitea and GitLab push events.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use std::sync::Arc;
//! use reconciler::gitops::{Mirror, Source, Watcher, WatcherConfig};
//! let mirror = Arc::new(Mirror::open(Source::new("/srv/stacks", None), "/var/lib/reconciler".as_ref())?);
//! let (tx, mut rx) = tokio::sync::mpsc::channel(8);
//! let (watcher, handle) = Watcher::new(mirror.clone(), WatcherConfig::default(), tx);
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! tokio::spawn(watcher.run(shutdown.clone()));
//! while let Some(update) = rx.recv().await {
//!     let _tree = reconciler::desired::GitTree::open(mirror.path(), &update.commit.id, "")?;
//! }
//! # drop(handle); Ok(()) }
//! ```

mod backoff;
mod mirror;
mod source;
mod watcher;
mod webhook;

pub use backoff::Backoff;
pub use mirror::{pick_default_branch, Commit, GitError, Mirror, MIRROR_DIR};
pub use source::{redact_url, Auth, HostKeyCheck, Location, Source};
pub use watcher::{
    is_ref_change, SyncError, Trigger, Update, WatchStatus, Watcher, WatcherConfig, WatcherHandle,
};
pub use webhook::{
    branch_of_ref, decide, parse_event, token_matches, verify, verify_hmac_sha256, webhook_router,
    Decision, Event, Provider, VerifyError, WebhookConfig, WEBHOOK_PATH,
};
