//! `reconciler up`: one process that is both manager and worker. Independent loops meet in the
//! store (Swarm's design): the git loop turns new commits into `ApplyRevision` commands, the
//! orchestrator loop runs the pure [`Orchestrator`], the agent loop runs the [`Executor`] on the
//! local Docker Engine, the ingress loop publishes ports, and the API serves status. No loop
//! calls another; each wakes on store changes or its own timer.

mod content;
pub mod ingress;
mod supervise;

use supervise::supervise;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::agent::executor::Executor;
use crate::agent::DockerRuntime;
use crate::desired::{self, GitTree, LoadOptions};
use crate::gitops::{self, Mirror, Watcher, WatcherConfig, WatcherHandle};
use crate::orchestrator::{IdGen, Orchestrator};
use crate::secrets::Identities;
use crate::store::{Availability, Command, Node, NodeRole, State, Store, StoreError};

pub use content::MirrorContent;

/// Settings of `reconciler up`.
#[derive(Clone, Debug)]
pub struct UpConfig {
    pub source: gitops::Source,
    /// Directory of the stacks inside the repository ("" for the root).
    pub path: String,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub poll: Duration,
    /// Remove what leaves git (default true).
    pub prune: bool,
    pub webhook_secret: Option<String>,
    /// The age identity file, if any (read at start-up).
    pub identity: Option<PathBuf>,
    /// Address the ingress proxy binds published ports on.
    pub ingress_bind: std::net::IpAddr,
    /// Variables passed to the stacks' interpolation (`--env-file`, `--env`), over `.env`.
    pub variables: std::collections::BTreeMap<String, String>,
    /// The API's Host, Origin and token checks.
    pub security: crate::api::security::Security,
}

/// What every loop shares: the store and a change counter to wake on.
pub struct Shared {
    store: Mutex<Store>,
    changed: watch::Sender<u64>,
    pub node_id: String,
    /// The Docker Engine's last error, while it is unreachable.
    pub engine: RwLock<Option<String>>,
    pub watcher: WatcherHandle,
    pub started: std::time::Instant,
    pub ingress_backend: &'static str,
    /// Container addresses by task id, for the ingress proxy.
    pub addresses: ingress::Addresses,
    /// Published ports that cannot be bound.
    pub port_failures: ingress::PortFailures,
    /// Containers of nodes this cluster does not know, by node.
    pub stale: RwLock<std::collections::BTreeMap<String, Vec<String>>>,
    /// Loops that panicked (and were restarted), with the last panic.
    pub loop_failures: supervise::LoopFailures,
}

impl Shared {
    /// The store, even after a panic elsewhere while it was held: the store's own changes
    /// cannot be half done (a panicking command is refused and the state rebuilt), and the
    /// loops only read under the lock.
    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Apply commands in order, in one batch; returns how many applied. Refusals are the
    /// normal outcome of a precondition (a task deleted in between) and are debug; a store
    /// failure is an error.
    pub fn apply(&self, commands: Vec<Command>) -> usize {
        self.apply_answers(commands)
            .iter()
            .filter(|a| a.is_ok())
            .count()
    }

    fn apply_answers(&self, commands: Vec<Command>) -> Vec<Result<(), crate::api::ProposeError>> {
        if commands.is_empty() {
            return Vec::new();
        }
        // What status will show as a problem is logged once: when the command saying it applies.
        let worth_saying: Vec<Option<Said>> = commands.iter().map(Said::of).collect();
        let answers = self.store().apply_batch(commands);
        let mut applied = false;
        let answers: Vec<_> = answers
            .into_iter()
            .zip(worth_saying)
            .map(|(a, said)| match a {
                Ok(_) => {
                    applied = true;
                    if let Some(said) = said {
                        said.log();
                    }
                    Ok(())
                }
                // A precondition that no longer holds (a task deleted in between) is the normal
                // end of a step computed a moment ago, not a problem.
                Err(StoreError::Apply(e)) => {
                    tracing::debug!(error = %e, "command refused");
                    Err(crate::api::ProposeError::Refused(e))
                }
                Err(e) => {
                    tracing::error!(error = %e, "the store failed");
                    Err(crate::api::ProposeError::Store(e.to_string()))
                }
            })
            .collect();
        if applied {
            self.changed.send_modify(|v| *v += 1);
        }
        answers
    }

    /// A copy of the state for a loop to read without holding the lock.
    pub fn snapshot(&self) -> State {
        self.store().state().clone()
    }

    /// Read the state under the lock (for cheap queries).
    pub fn with_state<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(self.store().state())
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

impl crate::api::Cluster for Shared {
    fn read_state(&self, f: &mut dyn FnMut(&State)) {
        f(self.store().state())
    }

    fn act(&self, action: crate::api::Action) -> Result<(), crate::api::ProposeError> {
        self.apply_answers(vec![action.command()])
            .pop()
            .unwrap_or_else(|| Err(crate::api::ProposeError::Store("no answer".into())))
    }

    fn node(&self) -> crate::api::views::NodeReport {
        crate::api::views::NodeReport {
            id: self.node_id.clone(),
            engine_error: self.engine.read().expect("lock").clone(),
            ingress_backend: self.ingress_backend.to_string(),
            uptime_seconds: self.started.elapsed().as_secs(),
            port_failures: self.port_failures.read().expect("lock").clone(),
            stale_containers: self.stale.read().expect("lock").clone(),
            loop_failures: self.loop_failures.read().expect("lock").clone(),
        }
    }

    fn git(&self) -> serde_json::Value {
        serde_json::to_value(self.watcher.status()).unwrap_or_default()
    }

    fn sync_now(&self) -> futures::future::BoxFuture<'static, Result<serde_json::Value, String>> {
        let watcher = self.watcher.clone();
        Box::pin(async move {
            match watcher.sync_now().await {
                Ok(commit) => Ok(serde_json::to_value(commit).unwrap_or_default()),
                Err(e) => Err(e.to_string()),
            }
        })
    }
}

pub use crate::store::now_ms;

/// A command whose applying is news for the log: a task that failed, an update that paused or
/// rolls back.
enum Said {
    TaskError {
        task: String,
        state: &'static str,
        error: String,
    },
    Update {
        service: String,
        state: crate::store::UpdateState,
        message: String,
    },
}

impl Said {
    fn of(command: &Command) -> Option<Said> {
        use crate::store::UpdateState;
        match command {
            Command::UpdateTaskStatus { id, status } => {
                status.error.as_ref().map(|e| Said::TaskError {
                    task: id.clone(),
                    state: status.state.name(),
                    error: e.clone(),
                })
            }
            Command::SetUpdateStatus {
                service,
                status: Some(st),
            } if matches!(
                st.state,
                UpdateState::Paused | UpdateState::RollbackStarted | UpdateState::RollbackPaused
            ) =>
            {
                Some(Said::Update {
                    service: service.clone(),
                    state: st.state,
                    message: st.message.clone(),
                })
            }
            _ => None,
        }
    }

    fn log(self) {
        match self {
            Said::TaskError { task, state, error } => {
                tracing::warn!(task = %task, state, error = %error, "task error")
            }
            Said::Update {
                service,
                state,
                message,
            } => {
                tracing::warn!(service = %service, state = ?state, reason = %message, "update stopped short")
            }
        }
    }
}

/// Run until `shutdown` is cancelled.
pub async fn run(config: UpConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating the data directory {}", config.data_dir.display()))?;
    let identities = match &config.identity {
        Some(p) => Some(Identities::from_file(p)?),
        None => Identities::discover(None)?,
    };
    let store = Store::open(&config.data_dir.join("state.redb"))
        .with_context(|| format!("opening the store in {}", config.data_dir.display()))?;
    let node_id = node_id(&config.data_dir)?;

    let mirror = Arc::new(
        tokio::task::spawn_blocking({
            let (source, dir) = (config.source.clone(), config.data_dir.clone());
            move || Mirror::open(source, &dir)
        })
        .await??,
    );
    let (updates_tx, updates_rx) = mpsc::channel(8);
    let (watcher, handle) = Watcher::new(
        mirror.clone(),
        WatcherConfig {
            poll_interval: config.poll,
            ..WatcherConfig::default()
        },
        updates_tx,
    );
    let (changed, _) = watch::channel(0);
    let ingress = ingress::Ingress::new(config.ingress_bind);
    let shared = Arc::new(Shared {
        store: Mutex::new(store),
        changed,
        node_id: node_id.clone(),
        engine: RwLock::new(None),
        watcher: handle.clone(),
        started: std::time::Instant::now(),
        ingress_backend: ingress.backend_name(),
        addresses: Default::default(),
        port_failures: ingress.failures(),
        stale: Default::default(),
        loop_failures: Default::default(),
    });
    shared.apply(vec![Command::UpsertNode {
        node: local_node(&node_id),
    }]);

    let content = Arc::new(MirrorContent::new(
        mirror.path().to_path_buf(),
        config.path.clone(),
        identities.clone(),
        &config.data_dir,
    ));
    let runtime = DockerRuntime::connect_local().with_node_filter(node_id.clone());

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding the API on {}", config.listen))?;
    tracing::info!(listen = %listener.local_addr()?, repo = %mirror.display_url(), node = %node_id, "reconciler up");

    let mut tasks = tokio::task::JoinSet::new();
    // Kept across restarts: the channels to the git loop and the API live in the watcher.
    let watcher = Arc::new(tokio::sync::Mutex::new(watcher));
    let stop = shutdown.clone();
    tasks.spawn(supervise(
        "watcher",
        shared.loop_failures.clone(),
        shutdown.clone(),
        move || {
            let (watcher, stop) = (watcher.clone(), stop.clone());
            async move { watcher.lock().await.watch(stop).await }
        },
    ));
    let git = Arc::new(GitLoop {
        shared: shared.clone(),
        updates: tokio::sync::Mutex::new(updates_rx),
        mirror: mirror.clone(),
        config: GitLoopConfig {
            path: config.path.clone(),
            identities,
            prune: config.prune,
            variables: config.variables.clone(),
        },
        shutdown: shutdown.clone(),
    });
    tasks.spawn(supervise(
        "git",
        shared.loop_failures.clone(),
        shutdown.clone(),
        move || git.clone().run(),
    ));
    let (s, stop) = (shared.clone(), shutdown.clone());
    tasks.spawn(supervise(
        "orchestrator",
        shared.loop_failures.clone(),
        shutdown.clone(),
        move || orchestrator_loop(s.clone(), stop.clone()),
    ));
    let (s, stop) = (shared.clone(), shutdown.clone());
    tasks.spawn(supervise(
        "agent",
        shared.loop_failures.clone(),
        shutdown.clone(),
        move || agent_loop(s.clone(), runtime.clone(), content.clone(), stop.clone()),
    ));
    let (s, stop, ingress) = (
        shared.clone(),
        shutdown.clone(),
        Arc::new(tokio::sync::Mutex::new(ingress)),
    );
    tasks.spawn(supervise(
        "ingress",
        shared.loop_failures.clone(),
        shutdown.clone(),
        move || ingress::Ingress::run(ingress.clone(), s.clone(), stop.clone()),
    ));
    let cluster: Arc<dyn crate::api::Cluster> = shared.clone();
    let router =
        crate::api::router(cluster, config.security.clone()).merge(gitops::webhook_router(
            gitops::WebhookConfig {
                secret: config.webhook_secret.clone(),
                ..Default::default()
            },
            handle,
        ));
    tasks.spawn(crate::api::serve::serve(listener, router, shutdown.clone()));
    shutdown.cancelled().await;
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// A stable id for this node, kept in the data dir.
fn node_id(data_dir: &std::path::Path) -> anyhow::Result<String> {
    let path = data_dir.join("node-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim().to_string();
        if !id.is_empty() {
            return Ok(id);
        }
    }
    let id = IdGen::random().next_id()[..12].to_string();
    std::fs::write(&path, &id)?;
    Ok(id)
}

fn local_node(id: &str) -> Node {
    let hostname = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0);
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1);
    Node {
        id: id.to_string(),
        hostname,
        role: NodeRole::Manager,
        availability: Availability::Active,
        ready: true,
        os: std::env::consts::OS.to_string(),
        arch: std::env::consts::ARCH.to_string(),
        ip: "127.0.0.1".into(),
        labels: Default::default(),
        engine_labels: Default::default(),
        nano_cpus: cpus * 1_000_000_000,
        memory_bytes: memory,
    }
}

struct GitLoopConfig {
    path: String,
    identities: Option<Identities>,
    prune: bool,
    variables: std::collections::BTreeMap<String, String>,
}

/// The git loop's parts, kept across restarts after a panic (the watcher's channel above all).
struct GitLoop {
    shared: Arc<Shared>,
    updates: tokio::sync::Mutex<mpsc::Receiver<gitops::Update>>,
    mirror: Arc<Mirror>,
    config: GitLoopConfig,
    shutdown: CancellationToken,
}

impl GitLoop {
    async fn run(self: Arc<Self>) {
        let mut updates = self.updates.lock().await;
        git_loop(&self, &mut updates).await
    }
}

/// New heads of the branch become the desired state, or are refused with their errors.
async fn git_loop(this: &GitLoop, updates: &mut mpsc::Receiver<gitops::Update>) {
    let (shared, mirror, shutdown) = (&this.shared, &this.mirror, &this.shutdown);
    let config = Arc::new(GitLoopConfig {
        path: this.config.path.clone(),
        identities: this.config.identities.clone(),
        prune: this.config.prune,
        variables: this.config.variables.clone(),
    });
    // A stack read from the repository root is named after the repository.
    let root_name = repo_name(mirror.display_url());
    // Warnings are said once, not again for every commit that still has them.
    let mut warned: std::collections::BTreeSet<String> = Default::default();
    loop {
        let update = tokio::select! {
            _ = shutdown.cancelled() => return,
            u = updates.recv() => match u { Some(u) => u, None => return },
        };
        let commit = update.commit.id.clone();
        let short = update.commit.short_id();
        let (repo, cfg, commit2, name) = (
            mirror.path().to_path_buf(),
            config.clone(),
            commit.clone(),
            root_name.clone(),
        );
        let loaded = tokio::task::spawn_blocking(move || -> anyhow::Result<desired::Loaded> {
            // A path into the repository names the stack it holds, as `validate PATH` does.
            let tree = GitTree::open(&repo, &commit2, &cfg.path)?;
            let tree = if cfg.path.trim_matches('/').is_empty() {
                tree.with_name(name)
            } else {
                tree
            };
            desired::load(
                &tree,
                &LoadOptions {
                    identities: cfg.identities.as_ref(),
                    variables: cfg.variables.clone(),
                    skip: Default::default(),
                },
            )
        })
        .await;
        if let Ok(Ok(l)) = &loaded {
            let warnings: std::collections::BTreeSet<String> = l
                .diagnostics
                .iter()
                .filter(|d| !d.is_error())
                .map(|d| d.to_string())
                .collect();
            for w in warnings.difference(&warned) {
                tracing::warn!(commit = %short, "{w}");
            }
            warned = warnings;
        }
        let at = now_ms();
        let refuse = |errors: Vec<String>| {
            tracing::warn!(commit = %short, errors = %errors.join("; "), "refusing commit; the last good revision keeps running");
            Command::RefuseRevision {
                commit: commit.clone(),
                errors,
                at,
            }
        };
        let command = match loaded {
            Ok(Ok(l)) if l.no_stacks.is_some() => {
                let running = shared.with_state(|s| {
                    s.services
                        .values()
                        .map(|v| v.spec.stack.as_str())
                        .collect::<std::collections::BTreeSet<_>>()
                        .len()
                });
                refuse(vec![no_stacks_message(
                    &config.path,
                    short,
                    l.no_stacks.as_ref(),
                    running,
                )])
            }
            Ok(Ok(l)) if !l.has_errors() => {
                let blocked: std::collections::BTreeMap<String, Vec<String>> = l
                    .blocked
                    .iter()
                    .map(|(stack, ds)| (stack.clone(), ds.iter().map(|d| d.to_string()).collect()))
                    .collect();
                for (stack, why) in &blocked {
                    tracing::warn!(commit = %short, stack = %stack, errors = %why.join("; "), "stack blocked: its secrets cannot be decrypted here; what runs of it stays as it was");
                }
                tracing::info!(commit = %short, summary = %update.commit.summary, trigger = ?update.trigger, "applying commit");
                Command::ApplyRevision {
                    commit: commit.clone(),
                    desired: l.state,
                    prune: config.prune,
                    at,
                    blocked,
                }
            }
            Ok(Ok(l)) => refuse(
                l.diagnostics
                    .iter()
                    .filter(|d| d.is_error())
                    .map(|d| d.to_string())
                    .collect(),
            ),
            Ok(Err(e)) => refuse(vec![format!("{e:#}")]),
            Err(e) => refuse(vec![format!("loading the commit failed: {e}")]),
        };
        shared.apply(vec![command]);
    }
}

/// Why a commit with no stacks under the path is refused, and the documented way out.
fn no_stacks_message(
    path: &str,
    commit: &str,
    why: Option<&desired::NoStacks>,
    running: usize,
) -> String {
    let (shown, keep) = if path.is_empty() {
        (
            "the repository root".to_string(),
            desired::KEEP_FILE.to_string(),
        )
    } else {
        let p = path.trim_matches('/');
        (format!("path {p}/"), format!("{p}/{}", desired::KEEP_FILE))
    };
    let state = match why {
        Some(desired::NoStacks::Missing) => "is missing",
        _ => "holds no stack",
    };
    let consequence = match running {
        0 => "nothing to run (check --path)".to_string(),
        1 => "refusing to remove the 1 stack that runs".to_string(),
        n => format!("refusing to remove all {n} stacks"),
    };
    format!("{shown} {state} at commit {commit}: {consequence}; commit an empty {keep} to remove them on purpose")
}

/// The repository's name from its URL or path (`git@host:team/stacks.git` → `stacks`).
fn repo_name(url: &str) -> String {
    let last = url
        .trim_end_matches('/')
        .rsplit(['/', ':'])
        .next()
        .unwrap_or("stack");
    let name = last.strip_suffix(".git").unwrap_or(last);
    if desired::is_valid_stack_name(name) {
        name.to_string()
    } else {
        "stack".to_string()
    }
}

async fn orchestrator_loop(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut orch = Orchestrator::new(IdGen::random());
    let mut changes = shared.subscribe();
    loop {
        let step = shared.with_state(|s| orch.step(s, now_ms()));
        let wake = step.wake_at;
        if shared.apply(step.commands) > 0 {
            continue; // look again at once: one step's commands often enable the next
        }
        let sleep = wake
            .map(|w| Duration::from_millis(w.saturating_sub(now_ms()).max(10)))
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = changes.changed() => {}
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

async fn agent_loop(
    shared: Arc<Shared>,
    runtime: DockerRuntime,
    content: Arc<MirrorContent>,
    shutdown: CancellationToken,
) {
    // Woken by the store (new tasks, new desired states) and by the engine's events about
    // this node's containers; the timer is only a safety net, so an idle node costs nothing.
    let mut events = runtime.container_events();
    let mut executor = Executor::new(runtime, shared.node_id.clone(), content.clone());
    let mut changes = shared.subscribe();
    let mut backoff = gitops::Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    let mut last_upkeep: Option<std::time::Instant> = None;
    let mut networks_seen: Vec<String> = Vec::new();
    let mut networks_left = false;
    // Upkeep failures repeat every pass until fixed: each different one is said once.
    let mut upkeep_errors: std::collections::BTreeMap<&str, String> = Default::default();
    let mut upkeep_failed = |what: &'static str, e: String| {
        if upkeep_errors.get(what) != Some(&e) {
            tracing::warn!(error = %e, "{what} failed");
            upkeep_errors.insert(what, e);
        }
    };
    loop {
        let state = shared.snapshot();
        let reports = executor.step(&state, now_ms()).await;
        let pause = match reports.engine_down.clone() {
            Some(e) => {
                let first = shared.engine.read().expect("lock").is_none();
                if first {
                    tracing::warn!(error = %e, "the Docker Engine is unreachable; retrying");
                }
                *shared.engine.write().expect("lock") = Some(e);
                backoff.next_delay()
            }
            None => {
                if shared.engine.write().expect("lock").take().is_some() {
                    tracing::info!("the Docker Engine is back");
                }
                backoff.reset();
                IDLE_PASS
            }
        };
        if reports.engine_down.is_none() {
            *shared.addresses.write().expect("lock") = reports.addresses;
        }
        shared.apply(reports.commands);
        // Upkeep: when the stacks' networks changed (one was removed with its stack), and
        // every UPKEEP otherwise.
        let networks: Vec<String> = state.networks.keys().cloned().collect();
        let due = last_upkeep.is_none_or(|t| t.elapsed() > UPKEEP)
            || networks != networks_seen
            || networks_left;
        if due && reports.engine_down.is_none() {
            last_upkeep = Some(std::time::Instant::now());
            networks_seen = networks;
            match executor.prune_networks(&state).await {
                // Still in use by a task that is stopping: look again next pass.
                Ok(left) => networks_left = left,
                Err(e) => upkeep_failed("removing unused stack networks", format!("{e:#}")),
            }
            // Secret files of containers removed behind our back (docker rm -f).
            if let Err(e) = executor.runtime().prune_task_files().await {
                upkeep_failed(
                    "removing the task files of gone containers",
                    format!("{e:#}"),
                );
            }
            // Copies of repo files that no task of this node mounts any more.
            let keep: std::collections::BTreeSet<&str> = state
                .tasks
                .values()
                .filter(|t| t.node == shared.node_id)
                .flat_map(|t| t.spec.content_versions())
                .collect();
            if let Err(e) = content.prune_files(&keep) {
                upkeep_failed("removing old copies of repo files", format!("{e:#}"));
            }
            // Containers of nodes the cluster does not know (a data dir deleted, a node gone):
            // nothing adopts or removes them, so status says so, once in the log too.
            if let Ok(by_node) = executor.runtime().containers_by_node().await {
                let stale: std::collections::BTreeMap<String, Vec<String>> = by_node
                    .into_iter()
                    .filter(|(node, _)| !state.nodes.contains_key(node))
                    .collect();
                let mut known = shared.stale.write().expect("lock");
                for (node, names) in &stale {
                    if !known.contains_key(node) {
                        tracing::warn!(node = %node, containers = names.len(), "containers of a node that is not in this cluster are still there: remove them with `docker rm -f $(docker ps -aq --filter label=org.reconciler.node={node})`");
                    }
                }
                *known = stale;
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            // A moment for the rest of a burst (a step's commands, a batch of events).
            _ = changes.changed() => tokio::time::sleep(WAKE_SETTLE).await,
            _ = events.changed() => tokio::time::sleep(WAKE_SETTLE).await,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// How long the agent lets a burst of changes settle before a pass.
const WAKE_SETTLE: Duration = Duration::from_millis(5);
/// An agent pass when nothing woke it sooner.
const IDLE_PASS: Duration = Duration::from_secs(2);
/// How often the agent prunes networks, task files and repo copies and looks for stale
/// containers.
const UPKEEP: Duration = Duration::from_secs(30);
