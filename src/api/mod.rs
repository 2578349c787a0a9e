//! The HTTP API of a running node: JSON for the CLI and machines, a status page for people,
//! `/metrics` for Prometheus. The webhook receiver lives in `gitops` and is merged in by the
//! manager.
//!
//! The API sees the cluster only through [`Cluster`]: what it may read and the few
//! [`Action`]s it may ask for. It knows nothing of the manager's loops, so either can change
//! alone (Raft sits behind the same handle: `act` is committed through it).

mod events;
pub mod metrics;
mod page;
pub mod security;
pub mod serve;
pub mod views;

use std::sync::Arc;

use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::future::BoxFuture;

use crate::plan::state_file::StateFile;
use crate::store::{ApplyError, Command, State};
use views::*;

/// Why a proposed command did not apply.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// The state machine refused it (its precondition does not hold).
    #[error(transparent)]
    Refused(#[from] ApplyError),
    /// It could not be committed (no quorum, a store failure).
    #[error("{0}")]
    Store(String),
}

/// The changes the API may ask of the cluster; no other command reaches the store from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Swap a service back to its previous spec, by hand (drift from git until the next
    /// commit that changes the service).
    RollbackService { service: String },
}

impl Action {
    /// The store command that carries the action out.
    pub fn command(self) -> Command {
        match self {
            Action::RollbackService { service } => Command::RollbackService {
                service,
                manual: true,
                at: crate::store::now_ms(),
            },
        }
    }
}

/// What the API may do with the cluster: read it, ask for one of its [`Action`]s, ask for a
/// fetch.
pub trait Cluster: Send + Sync + 'static {
    /// Call `f` with the current state (under the store's lock: keep it short).
    fn read_state(&self, f: &mut dyn FnMut(&State));
    /// Carry out `action`, checked and applied as one proposal.
    fn act(self: Arc<Self>, action: Action) -> BoxFuture<'static, Result<(), ProposeError>>;
    /// This node's own report: engine, ports, loops.
    fn node(&self) -> NodeReport;
    /// The git watcher's status (JSON).
    fn git(&self) -> serde_json::Value;
    /// Fetch now; the answer is the head commit (JSON) or why the fetch failed.
    fn sync_now(&self) -> BoxFuture<'static, Result<serde_json::Value, String>>;
    /// The process's counters and histograms.
    fn metrics(&self) -> Arc<metrics::Metrics>;
    /// Bumped on every change to the store.
    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64>;
    /// What Raft says of this node, on a manager.
    fn raft(&self) -> Option<metrics::RaftNumbers> {
        None
    }
    /// Does this node hold the cluster's state? A worker does not (it knows only its own
    /// tasks), and says so rather than show a state it does not follow.
    fn is_manager(&self) -> bool {
        true
    }
}

/// Read the state through the handle.
pub fn read<T>(cluster: &dyn Cluster, f: impl FnOnce(&State) -> T) -> T {
    let mut f = Some(f);
    let mut out = None;
    cluster.read_state(&mut |s| {
        if let Some(f) = f.take() {
            out = Some(f(s));
        }
    });
    out.expect("read_state calls back once")
}

type Ctx = AxState<Arc<dyn Cluster>>;

/// The API's routes, behind the security layer (Host, Origin, token).
pub fn router(cluster: Arc<dyn Cluster>, security: security::Security) -> Router {
    Router::new()
        .route("/", get(page::page))
        .route("/metrics", get(metrics::metrics))
        .route("/api/v1/status", get(status))
        .route("/api/v1/services", get(list_services))
        .route("/api/v1/services/{name}", get(inspect_service))
        .route("/api/v1/services/{name}/tasks", get(service_tasks))
        .route("/api/v1/services/{name}/rollback", post(rollback))
        .route("/api/v1/nodes", get(list_nodes))
        .route("/api/v1/events", get(events::events))
        .route("/api/v1/history", get(history))
        .route("/api/v1/history/{commit}", get(history_of))
        .route("/api/v1/stacks", get(list_stacks))
        .route("/api/v1/tasks", get(all_tasks))
        .route("/api/v1/state", get(export_state))
        .route("/api/v1/sync", post(sync))
        .with_state(cluster.clone())
        .layer(axum::middleware::from_fn_with_state(cluster, managers_only))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(security),
            security::check,
        ))
}

/// As Docker answers on a worker: "This node is not a swarm manager."
async fn managers_only(
    AxState(cluster): Ctx,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if cluster.is_manager() {
        return next.run(request).await;
    }
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "this node is a worker: worker nodes hold no cluster state; ask a manager's API (`--server`)",
    )
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

pub fn status_view(cluster: &dyn Cluster) -> StatusView {
    let git = cluster.git();
    let node = cluster.node();
    read(cluster, |s| {
        let services = services(s);
        StatusView {
            converged: node.engine_error.is_none()
                && node.cluster_error.is_none()
                && converged(&services),
            node,
            revision: s.revision.clone(),
            git,
            stacks: stacks(s),
            services,
            nodes: views::NodeCounts::of(s),
        }
    })
}

async fn status(AxState(cluster): Ctx) -> Json<StatusView> {
    Json(status_view(&*cluster))
}

async fn list_services(AxState(cluster): Ctx) -> Json<Vec<ServiceView>> {
    Json(read(&*cluster, services))
}

async fn list_stacks(AxState(cluster): Ctx) -> Json<Vec<StackView>> {
    Json(read(&*cluster, stacks))
}

async fn all_tasks(AxState(cluster): Ctx) -> Json<Vec<TaskView>> {
    Json(read(&*cluster, |s| tasks(s, None)))
}

async fn inspect_service(AxState(cluster): Ctx, Path(name): Path<String>) -> Response {
    match read(&*cluster, |s| s.services.get(&name).cloned()) {
        Some(svc) => Json(svc).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no service {name}")),
    }
}

/// The cluster's nodes as the store has them (what `node ls` shows, without Raft's view).
async fn list_nodes(AxState(cluster): Ctx) -> Json<Vec<crate::store::Node>> {
    Json(read(&*cluster, |s| s.nodes.values().cloned().collect()))
}

/// The commits the cluster saw, newest first.
async fn history(AxState(cluster): Ctx) -> Json<Vec<crate::store::CommitRecord>> {
    Json(read(&*cluster, |s| {
        s.history.records().rev().cloned().collect()
    }))
}

/// One commit's record, by its id or a prefix of 4 characters or more.
async fn history_of(AxState(cluster): Ctx, Path(commit): Path<String>) -> Response {
    match read(&*cluster, |s| s.history.find(&commit).cloned()) {
        Some(r) => Json(r).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!(
                "no commit {commit} in the history (the cluster keeps its last {} commits; give 4 characters or more)",
                crate::store::history::HISTORY_LEN
            ),
        ),
    }
}

async fn service_tasks(AxState(cluster): Ctx, Path(name): Path<String>) -> Response {
    let found = read(&*cluster, |s| {
        s.services
            .contains_key(&name)
            .then(|| tasks(s, Some(&name)))
    });
    match found {
        Some(t) => Json(t).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no service {name}")),
    }
}

/// Swap a service back to its previous spec. Checked and applied as one proposal, so the
/// answer says what really happened.
async fn rollback(AxState(cluster): Ctx, Path(name): Path<String>) -> Response {
    match cluster
        .act(Action::RollbackService {
            service: name.clone(),
        })
        .await
    {
        Ok(()) => Json(serde_json::json!({ "service": name, "rolled_back": true })).into_response(),
        Err(ProposeError::Refused(e @ ApplyError::NoService(_))) => {
            error(StatusCode::NOT_FOUND, e.to_string())
        }
        Err(ProposeError::Refused(e)) => error(StatusCode::CONFLICT, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn sync(AxState(cluster): Ctx) -> Response {
    match cluster.sync_now().await {
        Ok(commit) => Json(commit).into_response(),
        Err(e) => error(StatusCode::BAD_GATEWAY, e),
    }
}

async fn export_state(AxState(cluster): Ctx) -> Json<StateFile> {
    Json(StateFile::new(read(&*cluster, State::running_state)))
}
