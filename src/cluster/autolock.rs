//! Autolock and the node's local control socket.
//!
//! Every node serves its data dir's `control.sock` (mode 0600: only its owner may open it),
//! as Docker serves `docker.sock`: the command line on the same machine asks the node
//! through it, as the node itself, without holding the node's key. A caller on the socket is
//! the node: the file's mode, not a certificate, is what keeps others out.
//!
//! With autolock the node's keys are sealed on disk by the cluster's unlock key
//! ([`super::seal`]). A manager that starts so is locked: it serves only the `Lock` service
//! on its socket, opens nothing else, and waits until `reconciler unlock` gives it the key.
//! Once running, it keeps its keys sealed as the cluster's configuration says
//! ([`keep_sealed`]): a key rotated or autolock turned on or off reaches every manager's
//! disk through Raft.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::files::{KeysOnDisk, NodeFiles, NodeKeys};
use super::node::ClusterNode;
use super::rpc::pb;
use super::seal::UnlockKey;

/// The keys of this node: read from its data dir, or, when they are sealed, opened with the
/// key `reconciler unlock` sends (waiting for it on the control socket). The unlock key
/// comes back with them when one was needed.
pub async fn open_keys(
    files: &NodeFiles,
    shutdown: &CancellationToken,
) -> anyhow::Result<(NodeKeys, Option<UnlockKey>)> {
    let sealed = match files.keys()? {
        KeysOnDisk::Open(keys) => return Ok((keys, None)),
        KeysOnDisk::Locked(sealed) => sealed,
    };
    let (tx, rx) = oneshot::channel();
    let service = LockService {
        locked: Some(Mutex::new(Some((sealed, tx)))),
    };
    let stop = shutdown.child_token();
    let server =
        tonic::transport::Server::builder().add_service(pb::lock_server::LockServer::new(service));
    let serving = serve_socket(files, server, stop.clone()).await?;
    let dir = files.dir().display();
    tracing::warn!("this manager is locked (autolock): its keys are sealed by the cluster's unlock key; run `reconciler unlock --data-dir {dir}` and give it the key");
    eprintln!("This manager is locked (autolock): run `reconciler unlock --data-dir {dir}` and give it the unlock key.");
    let opened = tokio::select! {
        opened = rx => opened.ok(),
        () = shutdown.cancelled() => None,
    };
    stop.cancel();
    let _ = serving.await;
    let (keys, unlock) = opened.context("stopped while locked, before an unlock key was given")?;
    tracing::info!("unlocked: this manager's keys are open");
    Ok((keys, Some(unlock)))
}

/// Serve `server` on the node's control socket until `stop`; the socket file goes with it.
/// Refused when another process serves the same data dir.
pub async fn serve_socket(
    files: &NodeFiles,
    server: tonic::transport::server::Router,
    stop: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let path = files.socket();
    if tokio::net::UnixStream::connect(&path).await.is_ok() {
        anyhow::bail!(
            "another process serves {} already: one node per data dir",
            files.dir().display()
        );
    }
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("removing the stale {}", path.display()))
        }
        _ => {}
    }
    let listener = bind(&path)?;
    Ok(tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        if let Err(e) = server
            .serve_with_incoming_shutdown(incoming, stop.cancelled())
            .await
        {
            tracing::error!(error = %e, "the control socket failed");
        }
        let _ = std::fs::remove_file(&path);
    }))
}

/// Bind the socket, then make it readable and writable by its owner only (before anything
/// is served on it).
fn bind(path: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    let listener = tokio::net::UnixListener::bind(path).with_context(|| {
        format!(
            "binding the control socket {} (a path of at most 107 bytes)",
            path.display()
        )
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {}", path.display()))?;
    Ok(listener)
}

/// Is this request from the control socket (the node itself) rather than the network?
pub fn is_local<T>(req: &Request<T>) -> bool {
    req.extensions()
        .get::<tonic::transport::server::UdsConnectInfo>()
        .is_some()
}

/// The sealed keys of a locked node, and where to send them once opened.
type Waiting = (Vec<u8>, oneshot::Sender<(NodeKeys, UnlockKey)>);

/// The Lock service: while the node is locked, it opens the keys with the key given; once
/// it runs, it says so.
pub struct LockService {
    /// `None` for a node that runs; emptied once the keys are open.
    locked: Option<Mutex<Option<Waiting>>>,
}

impl LockService {
    /// The service of a node that runs (unlocked).
    pub fn running() -> pb::lock_server::LockServer<LockService> {
        pb::lock_server::LockServer::new(LockService { locked: None })
    }
}

#[tonic::async_trait]
impl pb::lock_server::Lock for LockService {
    async fn unlock(&self, req: Request<pb::UnlockRequest>) -> Result<Response<pb::Empty>, Status> {
        let Some(locked) = &self.locked else {
            return Err(Status::failed_precondition("this node is not locked"));
        };
        let key: UnlockKey = req
            .into_inner()
            .key
            .parse()
            .map_err(|e: super::seal::NotAnUnlockKey| Status::invalid_argument(e.to_string()))?;
        let mut waiting = locked.lock().unwrap_or_else(|e| e.into_inner());
        let Some((sealed, _)) = waiting.as_ref() else {
            return Err(Status::failed_precondition("this node is unlocked already"));
        };
        match NodeKeys::unlock(sealed, &key) {
            Ok(Some(keys)) => {
                if let Some((_, tx)) = waiting.take() {
                    let _ = tx.send((keys, key));
                }
                Ok(Response::new(pb::Empty {}))
            }
            Ok(None) => {
                tracing::warn!(
                    "an unlock key was refused: it is not the one that sealed this manager's keys"
                );
                Err(Status::permission_denied(
                    "invalid key: it does not open this manager's keys (after a rotation, a manager that was down then still takes the key from before)",
                ))
            }
            Err(e) => Err(Status::internal(format!("{e:#}"))),
        }
    }
}

/// Keep this node's keys on disk sealed as the cluster's configuration says, from now until
/// `shutdown`: checked once at start (a crash may have left them either way) and on every
/// change Raft applies.
pub async fn keep_sealed(node: Arc<ClusterNode>, shutdown: CancellationToken) {
    let mut changes = node.sm.subscribe();
    loop {
        if let Err(e) = node.save_keys(false) {
            tracing::warn!(error = %format!("{e:#}"), "keeping this node's keys as autolock says");
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            () = shutdown.cancelled() => return,
        }
    }
}
