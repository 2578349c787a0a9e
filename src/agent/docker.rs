//! The [`Runtime`] on the local Docker Engine, through bollard.
//!
//! bollard 0.21 speaks API 1.53 by default and engines refuse newer clients (Docker 20.10 speaks
//! 1.41), so the first call negotiates the version down; until the engine answers, every call
//! returns [`RuntimeError::Unavailable`] and the next call tries again. The handle can therefore
//! be made while Docker is down (even before its socket exists) and never needs rebuilding.

mod convert;
mod observed;

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::models::{ContainerInspectResponse, NetworkConnectRequest};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, KillContainerOptionsBuilder,
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder, WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures::{StreamExt, TryStreamExt};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::labels;
use super::runtime::{
    ContainerId, ContainerRequest, ObservedContainer, ObservedObject, Runtime, RuntimeError,
};
use super::task_files::{valid_task_id, TaskFiles};
use crate::spec::model::{NetworkSpec, VolumeSpec};

pub use convert::pull_reference;

/// How long a pull may take before the image counts as unavailable.
const DEFAULT_PULL_TIMEOUT: Duration = Duration::from_secs(300);
/// After SIGKILL a container dies at once unless the kernel is stuck; don't wait forever.
const KILL_WAIT: Duration = Duration::from_secs(30);
/// Inspects in flight at once when listing (adoption after a restart may find hundreds).
const INSPECT_CONCURRENCY: usize = 16;

/// Makes the client; called until the engine answers.
type Connector = Arc<dyn Fn() -> Result<Docker, BollardError> + Send + Sync>;

/// The engine connection, shared by every clone of the runtime and by its event stream.
struct Engine {
    connect: Connector,
    /// The connected, version-negotiated client.
    docker: OnceCell<Docker>,
}

impl Engine {
    async fn client(&self) -> Result<&Docker, RuntimeError> {
        self.docker
            .get_or_try_init(|| async {
                let docker = (self.connect)()?;
                docker.negotiate_version().await
            })
            .await
            .map_err(|e| RuntimeError::Unavailable(error_chain(&e)))
    }
}

/// A cheap, cloneable handle on the local engine.
#[derive(Clone)]
pub struct DockerRuntime {
    engine: Arc<Engine>,
    /// The containers as last seen, kept current by the event stream.
    observed: Arc<observed::Observed>,
    files: TaskFiles,
    node_filter: Option<String>,
    pull_timeout: Duration,
}

impl std::fmt::Debug for DockerRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerRuntime")
            .field("connected", &self.engine.docker.initialized())
            .field("files", &self.files)
            .field("node_filter", &self.node_filter)
            .field("pull_timeout", &self.pull_timeout)
            .finish()
    }
}

impl DockerRuntime {
    /// The engine at the local socket (`DOCKER_HOST=unix://...` is honoured). Does no I/O and
    /// cannot fail: an engine that is down shows as `Unavailable` on each call until it is up.
    pub fn connect_local() -> Self {
        Self::with_connector(Arc::new(Docker::connect_with_local_defaults))
    }

    /// The engine at a given unix socket path.
    pub fn connect_socket(path: &str) -> Self {
        let path = path.to_string();
        Self::with_connector(Arc::new(move || {
            Docker::connect_with_socket(&path, 120, bollard::API_DEFAULT_VERSION)
        }))
    }

    /// An existing client (negotiated on first use like the others).
    pub fn new(docker: Docker) -> Self {
        Self::with_connector(Arc::new(move || Ok(docker.clone())))
    }

    fn with_connector(connect: Connector) -> Self {
        DockerRuntime {
            engine: Arc::new(Engine {
                connect,
                docker: OnceCell::new(),
            }),
            observed: Default::default(),
            files: TaskFiles::choose("node"),
            node_filter: None,
            pull_timeout: DEFAULT_PULL_TIMEOUT,
        }
    }

    /// Keep secret and config files under another root (tests; hosts without a tmpfs).
    pub fn with_task_files(mut self, files: TaskFiles) -> Self {
        self.files = files;
        self
    }

    /// Only see containers of this node: several agents may share one engine (multi-node
    /// tests on one machine), and each must adopt only its own.
    /// Its task files go under the node's own directory too, so that pruning them never
    /// touches another node's.
    pub fn with_node_filter(mut self, node_id: impl Into<String>) -> Self {
        let node_id = node_id.into();
        self.files = TaskFiles::choose(&node_id);
        self.node_filter = Some(node_id);
        self
    }

    pub fn with_pull_timeout(mut self, timeout: Duration) -> Self {
        self.pull_timeout = timeout;
        self
    }

    pub fn task_files(&self) -> &TaskFiles {
        &self.files
    }

    /// The connected client, connecting and negotiating the API version on first use (and
    /// again on the next call after a failed attempt).
    pub async fn client(&self) -> Result<&Docker, RuntimeError> {
        self.engine.client().await
    }

    /// Changes whenever the engine reports an event about one of this runtime's containers
    /// (after the first [`Runtime::list`], which starts following the events).
    pub fn container_events(&self) -> tokio::sync::watch::Receiver<u64> {
        self.observed.subscribe()
    }

    /// The label filters that select this runtime's containers.
    fn label_filters(&self) -> Vec<String> {
        let mut label_filters = vec![labels::managed_filter()];
        if let Some(node) = &self.node_filter {
            label_filters.push(format!("{}={node}", labels::NODE));
        }
        label_filters
    }

    /// Bring the cache up to date by what `work` says.
    async fn refresh(&self, work: &observed::Work) -> Result<(), RuntimeError> {
        match work {
            observed::Work::Everything => {
                let ids = self.summaries().await?.into_iter().filter_map(|s| s.id);
                let found = self.inspect_many(ids).await?;
                self.observed
                    .replace(found.into_iter().filter_map(|(_, c)| c).collect());
            }
            observed::Work::Check { dirty } => {
                let summaries = self.summaries().await?;
                let mut redo: std::collections::HashSet<String> =
                    self.observed.disagreeing(&summaries).into_iter().collect();
                redo.extend(dirty.iter().cloned());
                let found = self.inspect_many(redo).await?;
                self.observed.update(found);
                self.observed.checked();
            }
            observed::Work::Dirty { dirty } => {
                let found = self.inspect_many(dirty.iter().cloned()).await?;
                self.observed.update(found);
            }
        }
        Ok(())
    }

    /// Inspect containers side by side; `None` for those that are gone (or not ours).
    async fn inspect_many(
        &self,
        ids: impl IntoIterator<Item = String>,
    ) -> Result<Vec<(String, Option<ObservedContainer>)>, RuntimeError> {
        futures::stream::iter(ids)
            .map(|id| async move {
                let found = self.inspect_raw(&id).await?.and_then(convert::observed);
                let mine = found.filter(|c| {
                    self.node_filter
                        .as_ref()
                        .is_none_or(|n| *n == c.task.node_id)
                });
                Ok((id, mine))
            })
            .buffer_unordered(INSPECT_CONCURRENCY)
            .try_collect()
            .await
    }

    /// The API version in use, e.g. `1.41`, after negotiation.
    pub async fn api_version(&self) -> Result<String, RuntimeError> {
        let v = self.client().await?.client_version();
        Ok(format!("{}.{}", v.major_version, v.minor_version))
    }

    /// The engine's own version, e.g. `20.10.24` (what `node ls` shows).
    pub async fn engine_version(&self) -> Result<String, RuntimeError> {
        let v = self
            .client()
            .await?
            .version()
            .await
            .map_err(|e| RuntimeError::Unavailable(e.to_string()))?;
        Ok(v.version.unwrap_or_default())
    }

    /// The node as its engine describes it: platform, capacity and the engine's own labels
    /// (`dockerd --label`), which placement constraints read as `engine.labels.*`.
    pub async fn describe(&self) -> Result<EngineDescription, RuntimeError> {
        let info = self
            .client()
            .await?
            .info()
            .await
            .map_err(|e| RuntimeError::Unavailable(e.to_string()))?;
        Ok(EngineDescription {
            version: info.server_version.unwrap_or_default(),
            os: info.os_type.unwrap_or_default(),
            arch: info.architecture.unwrap_or_default(),
            labels: info
                .labels
                .unwrap_or_default()
                .into_iter()
                .map(|l| match l.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (l, String::new()),
                })
                .collect(),
            nano_cpus: info.ncpu.unwrap_or(0).max(0) as u64 * 1_000_000_000,
            memory_bytes: info.mem_total.unwrap_or(0).max(0) as u64,
        })
    }

    /// Remove task directories whose container is gone (after a crash between remove steps, or
    /// a container removed by hand). Returns the task ids pruned.
    pub async fn prune_task_files(&self) -> Result<Vec<String>, RuntimeError> {
        let live: std::collections::HashSet<String> = self
            .list()
            .await?
            .into_iter()
            .map(|c| c.task.task_id)
            .collect();
        let io = |task: &str, source| RuntimeError::TaskFiles {
            task: task.to_string(),
            source,
        };
        let mut pruned = Vec::new();
        for task in self.files.task_ids().map_err(|e| io("*", e))? {
            if !live.contains(&task) {
                self.files.remove(&task).map_err(|e| io(&task, e))?;
                pruned.push(task);
            }
        }
        Ok(pruned)
    }

    async fn stop_container(
        &self,
        id: &ContainerId,
        signal: Option<&str>,
        grace: Duration,
    ) -> Result<(), RuntimeError> {
        let Some(container) = self.inspect_raw(id.as_str()).await? else {
            return Ok(());
        };
        let running = container
            .state
            .as_ref()
            .and_then(|s| s.running)
            .unwrap_or(false);
        if !running {
            return Ok(());
        }
        // Done here rather than with `POST /stop?signal=`: that parameter needs API 1.42, and
        // `t` is whole seconds; this way any signal and sub-second grace periods work on 20.10.
        let configured = container.config.and_then(|c| c.stop_signal);
        let signal = signal
            .map(str::to_string)
            .or(configured)
            .unwrap_or_else(|| "SIGTERM".into());
        self.kill(id.as_str(), &signal).await?;
        if self.wait_stopped(id.as_str(), grace).await? {
            return Ok(());
        }
        tracing::info!(container = id.short(), %signal, grace = %humantime::format_duration(grace), "grace period over: killing");
        self.kill(id.as_str(), "SIGKILL").await?;
        if self.wait_stopped(id.as_str(), KILL_WAIT).await? {
            Ok(())
        } else {
            Err(RuntimeError::Engine {
                op: format!("stop container {}", id.short()),
                status: 0,
                message: format!("still running {}s after SIGKILL", KILL_WAIT.as_secs()),
            })
        }
    }

    async fn inspect_raw(
        &self,
        id: &str,
    ) -> Result<Option<ContainerInspectResponse>, RuntimeError> {
        match self.client().await?.inspect_container(id, None).await {
            Ok(r) => Ok(Some(r)),
            Err(e) => match classify(&format!("inspect container {id}"), e) {
                RuntimeError::NotFound(_) => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn pull(&self, image: &str) -> Result<(), RuntimeError> {
        let docker = self.client().await?;
        let options = CreateImageOptionsBuilder::default()
            .from_image(&pull_reference(image))
            .build();
        let unavailable = |reason: String| RuntimeError::ImageUnavailable {
            image: image.to_string(),
            reason,
        };
        let pull = docker
            .create_image(Some(options), None, None)
            .try_for_each(|_progress| async { Ok(()) });
        match tokio::time::timeout(self.pull_timeout, pull).await {
            Err(_) => Err(unavailable(format!(
                "the pull did not finish within {}",
                humantime::format_duration(self.pull_timeout)
            ))),
            Ok(Err(e)) => match classify(&format!("pull {image}"), e) {
                e @ RuntimeError::Unavailable(_) => Err(e),
                other => Err(unavailable(engine_message(&other))),
            },
            Ok(Ok(())) => Ok(()),
        }
    }

    async fn connect_extra_networks(
        &self,
        id: &str,
        req: &ContainerRequest,
    ) -> Result<(), RuntimeError> {
        let docker = self.client().await?;
        for (network, endpoint) in convert::extra_networks(req) {
            let request = NetworkConnectRequest {
                container: id.to_string(),
                endpoint_config: Some(endpoint),
            };
            docker
                .connect_network(network, request)
                .await
                .map_err(|e| classify(&format!("connect {id} to network {network}"), e))?;
        }
        Ok(())
    }

    /// Remove a half-made container and its files after a failed create; the first error is
    /// the one worth reporting, so this one only logs.
    async fn undo_create(&self, id: Option<&str>, task_id: &str) {
        if let Some(id) = id {
            if let Err(e) = self.remove_container(id).await {
                tracing::warn!(container = id, error = %e, "could not remove a half-created container");
            }
        }
        if let Err(e) = self.files.remove(task_id) {
            tracing::warn!(task = task_id, error = %e, "could not remove task files");
        }
    }

    async fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self
            .client()
            .await?
            .remove_container(id, Some(options))
            .await
        {
            Ok(()) => {
                self.observed.mark(id);
                Ok(())
            }
            Err(e) => match classify(&format!("remove container {id}"), e) {
                RuntimeError::NotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    /// Send a signal; a container that is not running (409) or gone (404) has nothing to stop.
    async fn kill(&self, id: &str, signal: &str) -> Result<(), RuntimeError> {
        let options = KillContainerOptionsBuilder::default()
            .signal(signal)
            .build();
        match self.client().await?.kill_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) => match classify(&format!("send {signal} to container {id}"), e) {
                RuntimeError::NotFound(_) | RuntimeError::Conflict(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    /// Wait until the container is not running, at most `limit`; true when it stopped.
    async fn wait_stopped(&self, id: &str, limit: Duration) -> Result<bool, RuntimeError> {
        let docker = self.client().await?;
        let deadline = Instant::now() + limit;
        loop {
            let options = WaitContainerOptionsBuilder::default()
                .condition("not-running")
                .build();
            let mut wait = docker.wait_container(id, Some(options));
            match tokio::time::timeout_at(deadline, wait.next()).await {
                Err(_elapsed) => return Ok(false),
                // bollard reports a non-zero exit code as an error: it did stop.
                Ok(
                    None | Some(Ok(_)) | Some(Err(BollardError::DockerContainerWaitError { .. })),
                ) => return Ok(true),
                // The HTTP client's own timeout on a long wait: ask again.
                Ok(Some(Err(BollardError::RequestTimeoutError))) => continue,
                Ok(Some(Err(e))) => {
                    return match classify(&format!("wait for container {id}"), e) {
                        RuntimeError::NotFound(_) => Ok(true),
                        other => Err(other),
                    }
                }
            }
        }
    }

    /// The names of every container this project manages on the engine, whichever node's,
    /// by node id (from list summaries: no inspect). Finds what nothing adopts any more.
    pub async fn containers_by_node(
        &self,
    ) -> Result<std::collections::BTreeMap<String, Vec<String>>, RuntimeError> {
        let mut out: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for c in self.list_labelled(vec![labels::managed_filter()]).await? {
            let node = c
                .labels
                .as_ref()
                .and_then(|l| l.get(labels::NODE))
                .cloned()
                .unwrap_or_default();
            let name = c
                .names
                .and_then(|n| n.into_iter().next())
                .map(|n| n.trim_start_matches('/').to_string())
                .unwrap_or_default();
            out.entry(node).or_default().push(name);
        }
        Ok(out)
    }

    /// This runtime's containers as the engine lists them (no inspect).
    async fn summaries(&self) -> Result<Vec<bollard::models::ContainerSummary>, RuntimeError> {
        self.list_labelled(self.label_filters()).await
    }

    /// Every container, running or not, with all of these labels.
    async fn list_labelled(
        &self,
        label_filters: Vec<String>,
    ) -> Result<Vec<bollard::models::ContainerSummary>, RuntimeError> {
        let filters = std::collections::HashMap::from([("label", label_filters)]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let summaries = self
            .client()
            .await?
            .list_containers(Some(options))
            .await
            .map_err(|e| classify("list containers", e))?;
        Ok(summaries)
    }
}

impl Runtime for DockerRuntime {
    async fn ensure_image(&self, image: &str) -> Result<(), RuntimeError> {
        let docker = self.client().await?;
        match docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(e) => match classify(&format!("inspect image {image}"), e) {
                RuntimeError::NotFound(_) => {}
                other => return Err(other),
            },
        }
        tracing::info!(image, "image not present on this node: pulling");
        self.pull(image).await
    }

    async fn create(&self, req: &ContainerRequest) -> Result<ContainerId, RuntimeError> {
        let task_id = req.task.task_id.as_str();
        let invalid = |reason: String| RuntimeError::InvalidSpec {
            task: task_id.to_string(),
            reason,
        };
        if !valid_task_id(task_id) {
            return Err(invalid(
                "a task id may only contain letters, digits, '_', '.' and '-'".into(),
            ));
        }
        let docker = self.client().await?;
        let name = req.task.container_name();
        // Checked before the task files are written, against what the last listing and the
        // events since say (no extra call to the engine): a second create of the same task must
        // not touch the files of the container that already runs it. (Should the cache be
        // behind, the engine's own 409 below keeps the files too.)
        if self.observed.has_name(&name) {
            return Err(RuntimeError::Conflict(format!(
                "container {name} already exists: the task already has a container, adopt it rather than create another"
            )));
        }
        let binds = self
            .files
            .write(task_id, &req.secrets, &req.configs)
            .map_err(|source| RuntimeError::TaskFiles {
                task: task_id.to_string(),
                source,
            })?;
        let body = match convert::create_body(req, &binds) {
            Ok(body) => body,
            Err(reason) => {
                self.undo_create(None, task_id).await;
                return Err(invalid(reason));
            }
        };
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        let created = match docker.create_container(Some(options), body).await {
            Ok(created) => created,
            Err(e) => {
                let e = create_error(&name, &req.spec.container.image, e);
                // A conflict means the task's container exists and uses these very files.
                if !matches!(e, RuntimeError::Conflict(_)) {
                    self.undo_create(None, task_id).await;
                }
                return Err(e);
            }
        };
        if let Err(e) = self.connect_extra_networks(&created.id, req).await {
            self.undo_create(Some(&created.id), task_id).await;
            return Err(e);
        }
        self.observed.mark(&created.id);
        tracing::debug!(container = %created.id, name, "container created");
        Ok(ContainerId(created.id))
    }

    async fn start(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        self.observed.mark(id.as_str());
        // 304 "already started" counts as success in bollard.
        self.client()
            .await?
            .start_container(id.as_str(), None)
            .await
            .map_err(|e| classify(&format!("start container {}", id.short()), e))
    }

    async fn stop(
        &self,
        id: &ContainerId,
        signal: Option<&str>,
        grace: Duration,
    ) -> Result<(), RuntimeError> {
        let result = self.stop_container(id, signal, grace).await;
        // Its die event says the same; this makes sure the next listing sees it either way.
        self.observed.mark(id.as_str());
        result
    }

    async fn remove(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        let task = self
            .inspect_raw(id.as_str())
            .await?
            .and_then(|c| c.config)
            .and_then(|c| c.labels)
            .and_then(|l| labels::task_ref(&l));
        self.remove_container(id.as_str()).await?;
        if let Some(task) = task {
            self.files
                .remove(&task.task_id)
                .map_err(|source| RuntimeError::TaskFiles {
                    task: task.task_id.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    async fn inspect(&self, id: &ContainerId) -> Result<Option<ObservedContainer>, RuntimeError> {
        Ok(self
            .inspect_raw(id.as_str())
            .await?
            .and_then(convert::observed))
    }

    async fn list(&self) -> Result<Vec<ObservedContainer>, RuntimeError> {
        self.observed
            .watch(self.engine.clone(), self.label_filters());
        let work = self.observed.take_work();
        match self.refresh(&work).await {
            Ok(()) => Ok(self.observed.containers()),
            Err(e) => {
                self.observed.give_back(work);
                Err(e)
            }
        }
    }

    async fn ensure_network(&self, spec: &NetworkSpec, stack: &str) -> Result<(), RuntimeError> {
        let docker = self.client().await?;
        let name = spec.name.as_str();
        // Nodes that share an engine (the tests run several on one machine) would each
        // create the stack's network at the same moment: the look and the create are one
        // step for every agent of this machine.
        let _machine_wide = network_lock().await;
        match docker.inspect_network(name, None).await {
            Ok(network) => return check_existing(name, spec.external, network.labels.unwrap_or_default()),
            Err(e) => match classify(&format!("inspect network {name}"), e) {
                RuntimeError::NotFound(_) if spec.external => {
                    return Err(RuntimeError::NotFound(format!(
                        "external network {name} does not exist on this node: create it first (docker network create {name})"
                    )))
                }
                RuntimeError::NotFound(_) => {}
                other => return Err(other),
            },
        }
        let mut request = convert::network_create(spec, stack);
        // One agent per node: a node prunes only the networks it created itself.
        if let Some(node) = &self.node_filter {
            request
                .labels
                .get_or_insert_with(Default::default)
                .insert(labels::NODE.to_string(), node.clone());
        }
        let created = docker
            .create_network(request)
            .await
            .map_err(|e| classify(&format!("create network {name}"), e))?;
        // Engines before API 1.44 create a second network of the same name unless asked not to
        // (CheckDuplicate, which bollard's 1.53 types lack), and two agents sharing an engine
        // (several nodes on one machine) can create one each at the same moment. Every agent
        // keeps the oldest of the name and drops its own if it is not that one, so the name
        // is soon unambiguous again.
        let filters = std::collections::HashMap::from([("name", vec![name.to_string()])]);
        let options = ListNetworksOptionsBuilder::default()
            .filters(&filters)
            .build();
        let same_name: Vec<(std::time::SystemTime, String)> = docker
            .list_networks(Some(options))
            .await
            .map_err(|e| classify("list networks", e))?
            .into_iter()
            .filter(|n| n.name.as_deref() == Some(name))
            .filter_map(|n| {
                // Docker's RFC 3339 with nanoseconds; the fraction's length varies, so the
                // text does not sort by time.
                let created = n
                    .created
                    .as_deref()
                    .and_then(|c| humantime::parse_rfc3339_weak(c).ok())
                    .unwrap_or(std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1 << 40));
                Some((created, n.id?))
            })
            .collect();
        let oldest = same_name.iter().min().map(|(_, id)| id.as_str());
        if same_name.len() > 1 && oldest != Some(created.id.as_str()) {
            tracing::debug!(
                network = name,
                "lost a creation race: removing the duplicate"
            );
            self.remove_network(&created.id).await?;
        }
        Ok(())
    }

    async fn remove_network(&self, name: &str) -> Result<(), RuntimeError> {
        match self.client().await?.remove_network(name).await {
            Ok(()) => Ok(()),
            Err(e) => match classify(&format!("remove network {name}"), e) {
                RuntimeError::NotFound(_) => Ok(()),
                // 20.10 answers 403 when endpoints are still attached.
                RuntimeError::Engine {
                    status: 403,
                    message,
                    ..
                } => Err(RuntimeError::Conflict(message)),
                other => Err(other),
            },
        }
    }

    async fn list_networks(&self) -> Result<Vec<ObservedObject>, RuntimeError> {
        let mut label_filters = vec![labels::managed_filter()];
        if let Some(node) = &self.node_filter {
            label_filters.push(format!("{}={node}", labels::NODE));
        }
        let filters = std::collections::HashMap::from([("label", label_filters)]);
        let options = ListNetworksOptionsBuilder::default()
            .filters(&filters)
            .build();
        let networks = self
            .client()
            .await?
            .list_networks(Some(options))
            .await
            .map_err(|e| classify("list networks", e))?;
        let mut found: Vec<_> = networks
            .into_iter()
            .filter_map(|n| Some(observed_object(n.name?, n.labels.unwrap_or_default())))
            .collect();
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    async fn ensure_volume(&self, spec: &VolumeSpec, stack: &str) -> Result<(), RuntimeError> {
        let docker = self.client().await?;
        let name = spec.name.as_str();
        if spec.external {
            return match docker.inspect_volume(name).await {
                Ok(_) => Ok(()),
                Err(e) => match classify(&format!("inspect volume {name}"), e) {
                    RuntimeError::NotFound(_) => Err(RuntimeError::NotFound(format!(
                        "external volume {name} does not exist on this node: create it first (docker volume create {name})"
                    ))),
                    other => Err(other),
                },
            };
        }
        // Creating a volume that exists with the same driver returns it unchanged.
        docker
            .create_volume(convert::volume_create(spec, stack))
            .await
            .map(drop)
            .map_err(|e| classify(&format!("create volume {name}"), e))
    }

    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        let options = RemoveVolumeOptionsBuilder::default().build();
        match self
            .client()
            .await?
            .remove_volume(name, Some(options))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) => match classify(&format!("remove volume {name}"), e) {
                RuntimeError::NotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn list_volumes(&self) -> Result<Vec<ObservedObject>, RuntimeError> {
        let filters = std::collections::HashMap::from([("label", vec![labels::managed_filter()])]);
        let options = ListVolumesOptionsBuilder::default()
            .filters(&filters)
            .build();
        let response = self
            .client()
            .await?
            .list_volumes(Some(options))
            .await
            .map_err(|e| classify("list volumes", e))?;
        let mut found: Vec<_> = response
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| observed_object(v.name, v.labels))
            .collect();
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }
}

/// An existing network of the same name is fine when it is external or ours; anything else is
/// a name clash that the user must resolve (we never take over a network we did not make).
fn check_existing(
    name: &str,
    external: bool,
    labels: std::collections::HashMap<String, String>,
) -> Result<(), RuntimeError> {
    if external || labels.get(labels::MANAGED).map(String::as_str) == Some("1") {
        Ok(())
    } else {
        Err(RuntimeError::Conflict(format!(
            "network {name} already exists and was not created by reconciler: remove it, or declare it `external: true`"
        )))
    }
}

fn observed_object(
    name: String,
    labels: std::collections::HashMap<String, String>,
) -> ObservedObject {
    ObservedObject {
        name,
        stack: labels.get(labels::STACK_NAMESPACE).cloned(),
        labels: labels.into_iter().collect(),
    }
}

fn create_error(name: &str, image: &str, e: BollardError) -> RuntimeError {
    match classify(&format!("create container {name}"), e) {
        RuntimeError::NotFound(message) if message.starts_with("No such image") => {
            RuntimeError::ImageUnavailable {
                image: image.to_string(),
                reason: "not present locally (ensure_image pulls it before create)".into(),
            }
        }
        RuntimeError::Conflict(message) => RuntimeError::Conflict(format!(
            "{message} (the task already has a container: adopt it rather than create another)"
        )),
        other => other,
    }
}

/// Sort bollard's errors into ours: the engine's HTTP answers by status, transport failures as
/// `Unavailable`.
fn classify(op: &str, e: BollardError) -> RuntimeError {
    match e {
        BollardError::DockerResponseServerError {
            status_code: 404,
            message,
        } => RuntimeError::NotFound(message),
        BollardError::DockerResponseServerError {
            status_code: 409,
            message,
        } => RuntimeError::Conflict(message),
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => RuntimeError::Engine {
            op: op.to_string(),
            status: status_code,
            message,
        },
        BollardError::DockerStreamError { error } => RuntimeError::Engine {
            op: op.to_string(),
            status: 0,
            message: error,
        },
        e @ (BollardError::IOError { .. }
        | BollardError::HyperLegacyError { .. }
        | BollardError::HyperResponseError { .. }
        | BollardError::SocketNotFoundError(_)
        | BollardError::RequestTimeoutError
        | BollardError::APIVersionParseError { .. }) => RuntimeError::Unavailable(error_chain(&e)),
        other => RuntimeError::Engine {
            op: op.to_string(),
            status: 0,
            message: error_chain(&other),
        },
    }
}

/// The engine's own words for an error, without our prefixes.
fn engine_message(e: &RuntimeError) -> String {
    match e {
        RuntimeError::NotFound(m) | RuntimeError::Conflict(m) | RuntimeError::Unavailable(m) => {
            m.clone()
        }
        RuntimeError::Engine { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// bollard's transport errors say little at the top ("client error (Connect)"); the cause is
/// further down the chain.
fn error_chain(e: &BollardError) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// What a node's engine says of the node (`docker info`).
#[derive(Clone, Debug, Default)]
pub struct EngineDescription {
    pub version: String,
    pub os: String,
    pub arch: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub nano_cpus: u64,
    pub memory_bytes: u64,
}

/// A lock held by one agent of this machine at a time (an advisory `flock`), released when
/// dropped; `None` when no lock file can be had (then the duplicate check alone guards).
async fn network_lock() -> Option<std::fs::File> {
    tokio::task::spawn_blocking(|| {
        let dir = std::path::Path::new("/run/lock");
        let dir = if dir.is_dir() {
            dir.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("reconciler-networks.lock"))
            .ok()?;
        file.lock().ok()?;
        Some(file)
    })
    .await
    .ok()
    .flatten()
}
