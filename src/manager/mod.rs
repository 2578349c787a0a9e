//! A node of the cluster, manager or worker (`up`, `init`, `join`). Independent loops meet in
//! the store (Swarm's design): on the leader, the git loop turns new commits into
//! `ApplyRevision` commands, the orchestrator loop runs the pure [`Orchestrator`] and the
//! dispatcher hands every node's agent its assignment set; on every node, the agent loop runs
//! the [`Executor`] on the local Docker Engine from that set, the ingress loop publishes ports,
//! and the API serves status (a worker's says it holds no cluster state). No loop calls
//! another; each wakes on store changes, its assignment set or its own timer.

mod content;
pub mod ingress;
mod keyring;
pub mod notifier;
mod supervise;

use supervise::supervise;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::agent::executor::Executor;
use crate::agent::local_files::LocalFiles;
use crate::agent::DockerRuntime;
use crate::cluster::files::NodeFiles;
use crate::cluster::node::ClusterNode;
use crate::cluster::raft::{Answers, Proposal};
use crate::cluster::start::{ClusterOptions, Start};
use crate::desired::{self, GitTree, LoadOptions};
use crate::gitops::{self, Mirror, Watcher, WatcherConfig, WatcherHandle};
use crate::orchestrator::{IdGen, Orchestrator};
use crate::secrets::Identities;
use crate::store::{Availability, Command, Node, NodeRole, State, TaskStatus};
use std::collections::HashMap;

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
    /// Validate and plan every commit, apply none (`up --observe-only`).
    pub observe_only: bool,
    pub webhook_secret: Option<String>,
    /// The age identity file, if any (read at start-up).
    pub identity: Option<PathBuf>,
    /// Address the ingress proxy binds published ports on.
    pub ingress_bind: std::net::IpAddr,
    /// Variables passed to the stacks' interpolation (`--env-file`, `--env`), over `.env`.
    pub variables: std::collections::BTreeMap<String, String>,
    /// The API's Host, Origin and token checks.
    pub security: crate::api::security::Security,
    /// How this node enters its cluster (a new one, a join, or its data dir's).
    pub start: Start,
    pub cluster: ClusterOptions,
    /// The name `node ls` shows (default: this machine's).
    pub hostname: Option<String>,
}

/// What every loop shares: the replicated store (read here, written through Raft) and its
/// change counter to wake on.
pub struct Shared {
    cluster: Arc<ClusterNode>,
    pub node_id: String,
    /// The Docker Engine's last error, while it is unreachable.
    pub engine: RwLock<Option<String>>,
    pub watcher: WatcherHandle,
    pub started: std::time::Instant,
    /// `up --observe-only`: commits are planned, none applied, and the orchestrator rests.
    pub observe_only: bool,
    pub ingress_backend: &'static str,
    /// Container addresses by task id, for the ingress proxy.
    pub addresses: ingress::Addresses,
    /// Published ports that cannot be bound.
    pub port_failures: ingress::PortFailures,
    /// Containers of nodes this cluster does not know, by node.
    pub stale: RwLock<std::collections::BTreeMap<String, Vec<String>>>,
    /// Loops that panicked (and were restarted), with the last panic.
    pub loop_failures: supervise::LoopFailures,
    /// The last write that could not commit (no quorum), while it lasts.
    pub quorum: RwLock<Option<String>>,
    /// Counters and histograms for `/metrics`.
    pub metrics: Arc<crate::api::metrics::Metrics>,
    /// The notification targets as this manager's sender found them.
    pub notify: notifier::TargetStatuses,
}

impl Shared {
    /// Commit commands in order, as one Raft entry; returns how many applied. Refusals are
    /// the normal outcome of a precondition (a task deleted in between) and are debug; a
    /// write that cannot commit is an error, said once while it lasts.
    pub async fn apply(&self, commands: Vec<Command>) -> usize {
        self.apply_answers(commands)
            .await
            .iter()
            .filter(|a| a.is_ok())
            .count()
    }

    async fn apply_answers(
        &self,
        commands: Vec<Command>,
    ) -> Vec<Result<(), crate::api::ProposeError>> {
        if commands.is_empty() {
            return Vec::new();
        }
        // What status will show as a problem is logged once: when the command saying it applies.
        let worth_saying: Vec<Option<Said>> = commands.iter().map(Said::of).collect();
        let n = commands.len();
        let answers = match self.cluster.propose(Proposal::Commands(commands)).await {
            Ok(Answers(answers)) => {
                if self.quorum.write().expect("lock").take().is_some() {
                    tracing::info!("writes commit again");
                }
                answers
            }
            Err(e) => {
                let e = e.to_string();
                let mut last = self.quorum.write().expect("lock");
                if last.as_deref() != Some(e.as_str()) {
                    tracing::error!(error = %e, "a write did not commit");
                    *last = Some(e.clone());
                }
                return (0..n)
                    .map(|_| Err(crate::api::ProposeError::Store(e.clone())))
                    .collect();
            }
        };
        answers
            .into_iter()
            .zip(worth_saying)
            .map(|(a, said)| match a {
                Ok(()) => {
                    if let Some(said) = said {
                        said.log();
                    }
                    Ok(())
                }
                // A precondition that no longer holds (a task deleted in between) is the normal
                // end of a step computed a moment ago, not a problem.
                Err(e) => {
                    tracing::debug!(error = %e, "command refused");
                    Err(crate::api::ProposeError::Refused(e))
                }
            })
            .collect()
    }

    /// Read the state under the lock (for cheap queries).
    pub fn with_state<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        self.cluster.sm.read(f)
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.cluster.sm.subscribe()
    }
}

impl crate::api::Cluster for Shared {
    fn read_state(&self, f: &mut dyn FnMut(&State)) {
        self.cluster.sm.read(|s| f(s))
    }

    fn act(
        self: Arc<Self>,
        action: crate::api::Action,
    ) -> futures::future::BoxFuture<'static, Result<(), crate::api::ProposeError>> {
        Box::pin(async move {
            self.apply_answers(vec![action.command()])
                .await
                .pop()
                .unwrap_or_else(|| Err(crate::api::ProposeError::Store("no answer".into())))
        })
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
            cluster_error: self
                .cluster
                .problem()
                .or_else(|| self.quorum.read().expect("lock").clone()),
            notifications: self.notify.read().expect("lock").clone(),
            observe_only: self.observe_only,
        }
    }

    fn git(&self) -> serde_json::Value {
        serde_json::to_value(self.watcher.status()).unwrap_or_default()
    }

    fn is_manager(&self) -> bool {
        self.cluster.creds.identity().role == crate::cluster::ca::Role::Manager
    }

    fn metrics(&self) -> Arc<crate::api::metrics::Metrics> {
        self.metrics.clone()
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.cluster.sm.subscribe()
    }

    fn raft(&self) -> Option<crate::api::metrics::RaftNumbers> {
        let m = self.cluster.raft.metrics().borrow().clone();
        Some(crate::api::metrics::RaftNumbers {
            term: m.current_term,
            leader: m.current_leader == Some(m.id),
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: m.last_applied.map_or(0, |l| l.index),
        })
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

/// Run until `shutdown` is cancelled. `started` is called once the node is in its cluster
/// (`init` prints the join commands there).
pub async fn run(
    config: UpConfig,
    shutdown: CancellationToken,
    started: impl FnOnce(&ClusterNode),
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating the data directory {}", config.data_dir.display()))?;
    let identities = match &config.identity {
        Some(p) => Some(Identities::from_file(p)?),
        None => Identities::discover(None)?,
    };
    // The API's port is taken before the cluster is made, so that a port in use leaves no
    // half-made cluster behind.
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding the API on {}", config.listen))?;
    let mirror = Arc::new(
        tokio::task::spawn_blocking({
            let (source, dir) = (config.source.clone(), config.data_dir.clone());
            move || Mirror::open(source, &dir)
        })
        .await??,
    );
    let files = NodeFiles::new(&config.data_dir);
    let cluster = crate::cluster::start::start(
        files,
        config.start.clone(),
        &config.cluster,
        shutdown.clone(),
    )
    .await?;
    let node_id = cluster.node_id().to_string();
    started(&cluster);

    let (updates_tx, updates_rx) = mpsc::channel(8);
    let (watcher, handle) = Watcher::new(
        mirror.clone(),
        WatcherConfig {
            poll_interval: config.poll,
            ..WatcherConfig::default()
        },
        updates_tx,
    );
    {
        let handle = handle.clone();
        let _ = cluster.on_sync.set(Box::new(move || {
            let handle = handle.clone();
            Box::pin(async move {
                handle
                    .sync_now()
                    .await
                    .map(|commit| serde_json::to_value(commit).unwrap_or_default())
                    .map_err(|e| e.to_string())
            })
        }));
    }
    let ingress = ingress::Ingress::new(config.ingress_bind);
    let shared = Arc::new(Shared {
        cluster: cluster.clone(),
        node_id: node_id.clone(),
        engine: RwLock::new(None),
        watcher: handle.clone(),
        started: std::time::Instant::now(),
        ingress_backend: ingress.backend_name(),
        addresses: Default::default(),
        port_failures: ingress.failures(),
        stale: Default::default(),
        loop_failures: Default::default(),
        quorum: Default::default(),
        metrics: Arc::new(crate::api::metrics::Metrics::new(now_ms())),
        observe_only: config.observe_only,
        notify: Default::default(),
    });

    let keyring = keyring::Keyring::new(identities, config.source.auth.clone());
    if let Some(secrets) = cluster.sm.read_cluster(|c| c.map(|c| c.secrets.clone())) {
        keyring.take_up(&secrets, &mirror);
    }
    tokio::spawn(keyring::follow(
        keyring.clone(),
        cluster.clone(),
        mirror.clone(),
        shutdown.clone(),
    ));
    let content = Arc::new(MirrorContent::new(
        mirror.path().to_path_buf(),
        config.path.clone(),
        keyring.clone(),
    ));
    let files = Arc::new(LocalFiles::new(&config.data_dir));
    let runtime = DockerRuntime::connect_local().with_node_filter(node_id.clone());
    let own_containers = runtime.clone();
    // This node as the scheduler sees it, as its agent describes it when its session opens
    // (its address, capacity and engine may have changed since the last start).
    let mut me = local_node(
        &node_id,
        config.hostname.as_deref(),
        &cluster.info.advertise_addr,
    );
    // The role is the cluster's (promote and demote change it), not this process's to say.
    let role = cluster.role_of(&node_id).unwrap_or(cluster.info.role);
    me.role = match role {
        crate::cluster::ca::Role::Manager => NodeRole::Manager,
        crate::cluster::ca::Role::Worker => NodeRole::Worker,
    };
    // Bounded: a node whose engine hangs still registers (and shows its engine missing in
    // `node ls`) rather than never opening its session.
    let described = tokio::time::timeout(DESCRIBE_TIMEOUT, runtime.describe())
        .await
        .unwrap_or_else(|_| {
            Err(crate::agent::RuntimeError::Unavailable(format!(
                "no answer within {}",
                humantime::format_duration(DESCRIBE_TIMEOUT)
            )))
        });
    match described {
        Ok(engine) => {
            // Docker's names for the platform (x86_64, linux), as constraints use them.
            me.engine_version = engine.version;
            if !engine.os.is_empty() {
                me.os = engine.os;
            }
            if !engine.arch.is_empty() {
                me.arch = engine.arch;
            }
            me.engine_labels = engine.labels;
            if engine.nano_cpus > 0 {
                me.nano_cpus = engine.nano_cpus;
            }
            if engine.memory_bytes > 0 {
                me.memory_bytes = engine.memory_bytes;
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "the Docker Engine did not describe this node; using what the system says")
        }
    }
    // Every node, managers too, gets its work from the dispatcher, which registers it when
    // its session opens (its description new, its role, availability and labels kept).
    let dispatcher = crate::dispatcher::Dispatcher::new(Arc::new(DispatchBackend {
        shared: shared.clone(),
        content: content.clone(),
    }));
    let _ = cluster.dispatcher.set(dispatcher.clone());
    let link = crate::agent::session::Link::new();
    let session_stop = shutdown.child_token();
    {
        let (leaving, stop) = (cluster.leaving.asked.clone(), session_stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = leaving.cancelled() => stop.cancel(),
                _ = stop.cancelled() => {}
            }
        });
    }
    let learner = cluster.clone();
    tokio::spawn(crate::agent::session::run(
        link.clone(),
        cluster.creds.clone(),
        cluster.manager_addresses(),
        me,
        move |managers| learner.learn_managers(managers),
        cluster.leaving.clone(),
        session_stop,
    ));
    tracing::info!(listen = %listener.local_addr()?, repo = %mirror.display_url(), node = %node_id, cluster = %cluster.cluster_id(), "reconciler up");

    let mut tasks = tokio::task::JoinSet::new();
    // Every manager keeps its mirror fetched (its agent reads secrets and repo files from
    // it); only the leader turns new heads into revisions.
    let watcher = Arc::new(tokio::sync::Mutex::new(watcher));
    let stop = shutdown.clone();
    let creds = cluster.creds.clone();
    tasks.spawn(supervise(
        "watcher",
        shared.loop_failures.clone(),
        shutdown.clone(),
        move || {
            let (watcher, stop, creds) = (watcher.clone(), stop.clone(), creds.clone());
            async move {
                // A worker reads no repository: it is given its tasks and their content.
                while creds.identity().role == crate::cluster::ca::Role::Worker {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    }
                }
                watcher.lock().await.watch(stop).await
            }
        },
    ));
    let git = Arc::new(GitLoop {
        shared: shared.clone(),
        updates: tokio::sync::Mutex::new(updates_rx),
        mirror: mirror.clone(),
        config: GitLoopConfig {
            path: config.path.clone(),
            keyring,
            prune: config.prune,
            observe_only: config.observe_only,
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
    let (s, stop, c) = (shared.clone(), shutdown.clone(), content.clone());
    tasks.spawn(supervise(
        "notifier",
        shared.loop_failures.clone(),
        shutdown.clone(),
        move || notifier::notifier_loop(s.clone(), c.clone(), stop.clone()),
    ));
    let (s, stop, d) = (shared.clone(), shutdown.clone(), dispatcher.clone());
    tasks.spawn(supervise(
        "dispatcher",
        shared.loop_failures.clone(),
        shutdown.clone(),
        move || dispatcher_loop(s.clone(), d.clone(), stop.clone()),
    ));
    let (s, stop) = (shared.clone(), shutdown.clone());
    tasks.spawn(supervise(
        "agent",
        shared.loop_failures.clone(),
        shutdown.clone(),
        move || {
            agent_loop(
                s.clone(),
                runtime.clone(),
                files.clone(),
                link.clone(),
                stop.clone(),
            )
        },
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
    let api: Arc<dyn crate::api::Cluster> = shared.clone();
    let router = crate::api::router(api, config.security.clone()).merge(gitops::webhook_router(
        gitops::WebhookConfig {
            secret: config.webhook_secret.clone(),
            ..Default::default()
        },
        handle,
    ));
    tasks.spawn(crate::api::serve::serve(listener, router, shutdown.clone()));
    {
        let (left, stop) = (cluster.left.clone(), shutdown.clone());
        tokio::spawn(async move {
            left.cancelled().await;
            stop.cancel();
        });
    }
    shutdown.cancelled().await;
    while tasks.join_next().await.is_some() {}
    let _ = cluster.raft.shutdown().await;
    if cluster.left.is_cancelled() {
        // As `docker swarm leave`: the node's task containers go, and so does its cluster.
        use crate::agent::runtime::Runtime as _;
        let mine = own_containers.list().await.unwrap_or_default();
        for c in &mine {
            if let Err(e) = own_containers.remove(&c.id).await {
                tracing::warn!(container = %c.id, error = %e, "removing a container after leaving");
            }
        }
        cluster.files.forget()?;
        tracing::info!(
            containers = mine.len(),
            "left the cluster; the data dir holds no cluster now"
        );
    }
    Ok(())
}

/// This machine's name.
pub fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Resolves when this node leads, at once if it does now.
async fn until_leader(shared: &Shared) {
    let mut metrics = shared.cluster.leadership();
    loop {
        if shared.cluster.is_leader() {
            return;
        }
        if metrics.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Resolves when this node stops leading.
async fn until_not_leader(shared: &Shared) {
    let mut metrics = shared.cluster.leadership();
    loop {
        if !shared.cluster.is_leader() {
            return;
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

fn local_node(id: &str, hostname_flag: Option<&str>, advertise: &str) -> Node {
    let hostname = hostname_flag.map(str::to_string).unwrap_or_else(hostname);
    let ip = advertise
        .parse::<SocketAddr>()
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|_| "127.0.0.1".into());
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
        ip,
        labels: Default::default(),
        engine_labels: Default::default(),
        nano_cpus: cpus * 1_000_000_000,
        memory_bytes: memory,
        engine_version: String::new(),
    }
}

struct GitLoopConfig {
    path: String,
    keyring: Arc<keyring::Keyring>,
    prune: bool,
    observe_only: bool,
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
        keyring: this.config.keyring.clone(),
        prune: this.config.prune,
        observe_only: this.config.observe_only,
        variables: this.config.variables.clone(),
    });
    // A stack read from the repository root is named after the repository.
    let root_name = repo_name(mirror.display_url());
    // Warnings are said once, not again for every commit that still has them.
    let mut warned: std::collections::BTreeSet<String> = Default::default();
    // The newest head not turned into a revision yet. Every manager's watcher fetches; only
    // the leader applies, so a follower just remembers the newest head.
    let mut pending: Option<gitops::Update> = None;
    // What this manager applied while it leads: the same head twice is said once.
    let mut done: Option<String> = None;
    loop {
        if !shared.cluster.is_leader() {
            done = None;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                u = updates.recv() => match u {
                    Some(u) => {
                        // A head this follower saw first (a sync or webhook sent here, or
                        // its poll came sooner): the leader is asked to fetch it now.
                        let applied = shared.cluster.sm.read(|s| {
                            s.revision.applied.as_ref().map(|a| a.commit.clone())
                        });
                        if applied.as_deref() != Some(u.commit.id.as_str()) {
                            let cluster = shared.cluster.clone();
                            tokio::spawn(async move { cluster.ask_leader_to_sync().await });
                        }
                        pending = Some(u);
                    }
                    None => return,
                },
                _ = until_leader(shared) => {
                    // A new leader starts from the branch's head as it is now, not from what
                    // its own mirror last saw, so that no commit the old leader had is undone
                    // and none pushed meanwhile is missed.
                    tracing::info!("this manager leads: the git loop and the orchestrator run here");
                    match tokio::time::timeout(Duration::from_secs(30), shared.watcher.sync_now()).await {
                        Ok(Ok(commit)) => pending = Some(gitops::Update { commit, trigger: gitops::Trigger::Leadership }),
                        Ok(Err(e)) => tracing::warn!(error = %e, "fetching as the new leader failed; going on with the last head seen"),
                        Err(_) => tracing::warn!("fetching as the new leader took over 30s; going on with the last head seen"),
                    }
                }
            }
            continue;
        }
        if pending.is_none() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                u = updates.recv() => match u { Some(u) => pending = Some(u), None => return },
                _ = until_not_leader(shared) => continue,
            }
        }
        while let Ok(u) = updates.try_recv() {
            pending = Some(u);
        }
        let Some(update) = pending.take() else {
            continue;
        };
        if done.as_deref() == Some(update.commit.id.as_str()) {
            continue;
        }
        done = Some(update.commit.id.clone());
        let commit = update.commit.id.clone();
        let short = update.commit.short_id();
        let (repo, cfg, commit2, name) = (
            mirror.path().to_path_buf(),
            config.clone(),
            commit.clone(),
            root_name.clone(),
        );
        let loaded = tokio::task::spawn_blocking(
            move || -> anyhow::Result<(desired::Loaded, NotifyTargets)> {
                // reconciler.toml is at the repository's root, whatever the stacks' path.
                let root = GitTree::open(&repo, &commit2, "")?;
                let notify = crate::notify::config::load(&root, &commit2);
                // A path into the repository names the stack it holds, as `validate PATH` does.
                let tree = GitTree::open(&repo, &commit2, &cfg.path)?;
                let tree = if cfg.path.trim_matches('/').is_empty() {
                    tree.with_name(name)
                } else {
                    tree
                };
                let loaded = desired::load(
                    &tree,
                    &LoadOptions {
                        identities: cfg.keyring.identities().as_ref(),
                        variables: cfg.variables.clone(),
                        skip: Default::default(),
                    },
                )?;
                Ok((loaded, notify))
            },
        )
        .await;
        // A broken reconciler.toml refuses the commit, as a broken stack file does.
        let (loaded, notify) = match loaded {
            Ok(Ok((l, targets))) => (Ok(Ok(l)), Some(targets)),
            Ok(Err(e)) => (Ok(Err(e)), None),
            Err(e) => (Err(e), None),
        };
        let (notify, notify_errors) = match notify {
            Some(Ok(targets)) => (Some(targets), None),
            Some(Err(errors)) => (None, Some(errors)),
            None => (None, None),
        };
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
                summary: update.commit.summary.clone(),
                trigger: Some(update.trigger),
            }
        };
        let command = match loaded {
            Ok(Ok(l)) if notify_errors.is_some() => {
                let mut errors: Vec<String> = l
                    .diagnostics
                    .iter()
                    .filter(|d| d.is_error())
                    .map(|d| d.to_string())
                    .collect();
                errors.extend(notify_errors.unwrap_or_default());
                refuse(errors)
            }
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
                if config.observe_only {
                    tracing::info!(commit = %short, summary = %update.commit.summary, trigger = ?update.trigger, "observing commit: planned, not applied (--observe-only)");
                    Command::ObserveRevision {
                        commit: commit.clone(),
                        desired: l.state,
                        prune: config.prune,
                        at,
                        blocked,
                        summary: update.commit.summary.clone(),
                        trigger: Some(update.trigger),
                    }
                } else {
                    tracing::info!(commit = %short, summary = %update.commit.summary, trigger = ?update.trigger, "applying commit");
                    Command::ApplyRevision {
                        commit: commit.clone(),
                        desired: l.state,
                        prune: config.prune,
                        at,
                        blocked,
                        summary: update.commit.summary.clone(),
                        trigger: Some(update.trigger),
                        notify: notify.clone(),
                    }
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
        if shared.apply(vec![command]).await == 0 {
            // Not committed (no quorum, or leadership lost): the next leader, or this one
            // once it can commit, takes the head again.
            pending.get_or_insert(update);
            done = None;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// The targets of a commit's `reconciler.toml`, or why it is refused.
type NotifyTargets = Result<Vec<crate::notify::Target>, Vec<String>>;

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

/// The orchestrator runs on the leader only: while this manager leads, it steps; when it
/// stops leading, it waits, and a fresh orchestrator starts from the store next time (all it
/// needs is there: a new leader loses nothing and repeats nothing).
async fn orchestrator_loop(shared: Arc<Shared>, shutdown: CancellationToken) {
    if shared.observe_only {
        // Nothing is applied, so nothing is converged either: not a task starts or stops.
        tracing::info!("observing only: commits are planned and recorded, none is applied");
        return shutdown.cancelled().await;
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = until_leader(&shared) => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = until_not_leader(&shared) => {
                tracing::info!("this manager no longer leads: its orchestrator stops");
            }
            _ = orchestrate(&shared) => {}
        }
    }
}

async fn orchestrate(shared: &Shared) {
    let mut orch = Orchestrator::new(IdGen::random());
    let mut changes = shared.subscribe();
    loop {
        let began = std::time::Instant::now();
        let step = shared.with_state(|s| orch.step(s, now_ms()));
        shared.metrics.observe_reconcile(began.elapsed());
        let wake = step.wake_at;
        let proposed = !step.commands.is_empty();
        if shared.apply(step.commands).await > 0 {
            continue; // look again at once: one step's commands often enable the next
        }
        if proposed && shared.quorum.read().expect("lock").is_some() {
            // Nothing committed: do not spin on a write that cannot succeed.
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let sleep = wake
            .map(|w| Duration::from_millis(w.saturating_sub(now_ms()).max(10)))
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1));
        tokio::select! {
            _ = changes.changed() => {}
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

/// The dispatcher serves while this manager leads; its sessions end when it stops leading.
async fn dispatcher_loop(
    shared: Arc<Shared>,
    dispatcher: Arc<crate::dispatcher::Dispatcher>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = until_leader(&shared) => {}
        }
        let stop = shutdown.child_token();
        tokio::select! {
            _ = until_not_leader(&shared) => {}
            _ = dispatcher.serve(stop.clone()) => {}
        }
        stop.cancel();
        if shutdown.is_cancelled() {
            return;
        }
    }
}

/// What the dispatcher needs of this manager.
struct DispatchBackend {
    shared: Arc<Shared>,
    content: Arc<MirrorContent>,
}

impl crate::dispatcher::Backend for DispatchBackend {
    fn read_state(&self, f: &mut dyn FnMut(&State)) {
        self.shared.cluster.sm.read(|s| f(s))
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.subscribe()
    }

    fn commit(&self, commands: Vec<Command>) -> futures::future::BoxFuture<'static, usize> {
        let shared = self.shared.clone();
        Box::pin(async move { shared.apply(commands).await })
    }

    fn resolve(
        &self,
        version: &str,
        need: &crate::agent::assignment::Need,
    ) -> crate::agent::assignment::Content {
        self.content.resolve(version, need)
    }

    fn heartbeat_period(&self) -> Duration {
        self.shared
            .cluster
            .sm
            .read_cluster(|c| c.and_then(|c| c.dispatcher_heartbeat))
            .unwrap_or(crate::dispatcher::DEFAULT_HEARTBEAT)
    }

    fn managers(&self) -> Vec<String> {
        self.shared.cluster.manager_addresses()
    }
}

async fn agent_loop(
    shared: Arc<Shared>,
    runtime: DockerRuntime,
    files: Arc<LocalFiles>,
    link: Arc<crate::agent::session::Link>,
    shutdown: CancellationToken,
) {
    // Woken by the assignment set (new tasks, new desired states) and by the engine's events
    // about this node's containers; the timer is only a safety net, so an idle node costs
    // nothing.
    let mut events = runtime.container_events();
    let mut executor = Executor::new(runtime, shared.node_id.clone(), files.clone());
    let mut changes = link.subscribe();
    // What was reported and when: a pass that runs before the set shows a report need not
    // send it again.
    let mut reported: HashMap<String, (TaskStatus, std::time::Instant)> = HashMap::new();
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
        let state = link.assignments();
        let began = std::time::Instant::now();
        let reports = executor.step(&state, now_ms()).await;
        shared.metrics.observe_agent_pass(began.elapsed());
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
        report(&link, &state, reports.commands, &mut reported).await;
        // Upkeep: when the stacks' networks changed (one was removed with its stack), and
        // every UPKEEP otherwise.
        let networks: Vec<String> = state.cluster_networks.iter().cloned().collect();
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
                .flat_map(|t| t.spec.content_versions())
                .collect();
            if !state.complete {
                // Not yet told what this node runs: keep every copy.
            } else if let Err(e) = files.prune_files(&keep) {
                upkeep_failed("removing old copies of repo files", format!("{e:#}"));
            }
            // Containers of nodes the cluster does not know (a data dir deleted, a node gone):
            // nothing adopts or removes them, so status says so, once in the log too.
            let by_node = match state.complete {
                true => executor.runtime().containers_by_node().await.ok(),
                false => None,
            };
            if let Some(by_node) = by_node {
                let stale: std::collections::BTreeMap<String, Vec<String>> = by_node
                    .into_iter()
                    .filter(|(node, _)| !state.cluster_nodes.contains(node))
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

/// Send a pass's status reports, but not one already sent in the last few seconds that the
/// assignment set does not show yet.
async fn report(
    link: &crate::agent::session::Link,
    set: &crate::agent::assignment::Assignments,
    commands: Vec<Command>,
    reported: &mut HashMap<String, (TaskStatus, std::time::Instant)>,
) {
    use crate::dispatcher::wire::StatusUpdate;
    let same = |a: &TaskStatus, b: &TaskStatus| {
        (a.state, &a.message, &a.error, &a.container_id, a.exit_code)
            == (b.state, &b.message, &b.error, &b.container_id, b.exit_code)
    };
    reported.retain(|id, (_, at)| set.tasks.contains_key(id) && at.elapsed() < REPORT_AGAIN);
    let mut updates = Vec::new();
    for c in commands {
        let Command::UpdateTaskStatus { id, status } = c else {
            continue;
        };
        if reported.get(&id).is_some_and(|(s, _)| same(s, &status)) {
            continue;
        }
        reported.insert(id.clone(), (status.clone(), std::time::Instant::now()));
        updates.push(StatusUpdate { id, status });
    }
    if updates.is_empty() {
        return;
    }
    if let Err(e) = link.report(updates).await {
        // Computed again from what the engine shows, once a session is open.
        tracing::debug!(error = %e, "status reports not delivered");
        reported.clear();
    }
}

/// How long the engine may take to describe the node before its session opens without it.
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a report sent is not sent again while the assignment set does not show it.
const REPORT_AGAIN: Duration = Duration::from_secs(5);
/// How long the agent lets a burst of changes settle before a pass.
const WAKE_SETTLE: Duration = Duration::from_millis(5);
/// An agent pass when nothing woke it sooner.
const IDLE_PASS: Duration = Duration::from_secs(2);
/// How often the agent prunes networks, task files and repo copies and looks for stale
/// containers.
const UPKEEP: Duration = Duration::from_secs(30);
