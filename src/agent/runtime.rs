//! The `Runtime` trait: what an agent asks of the container engine, one call per step of a task's
//! life, the way SwarmKit's executor drives its container adapter (prepare → create → start →
//! stop → remove). The orchestrator never talks to Docker directly; it drives a `Runtime`, so the
//! loops can be tested against a fake and the Docker implementation stays a thin shell.
//!
//! Every method is idempotent where the engine allows it: removing something already gone or
//! stopping something already stopped succeeds, so a loop that retries after a crash cannot fail
//! on its own earlier half-done step.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::time::{Duration, SystemTime};

use crate::secrets::SecretBytes;
use crate::spec::model::{
    EndpointSpec, FileMount, NetworkAttachment, NetworkSpec, TaskSpec, VolumeSpec,
};

/// The container engine as the agent sees it. Implementations are cheap handles (`Clone`) that
/// can be shared between the agent's tasks.
///
/// The methods return `impl Future + Send` (rather than `async fn`) so that generic callers can
/// spawn them on a multi-threaded runtime.
pub trait Runtime: Clone + Send + Sync + 'static {
    /// Make `image` available on this node: present locally → done; otherwise pull it.
    /// Neither → [`RuntimeError::ImageUnavailable`].
    fn ensure_image(&self, image: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Create (not start) the task's container, with its secret and config files written and
    /// its networks joined. Creating a task that already has a container is a
    /// [`RuntimeError::Conflict`]: tasks are one-shot, adopt the existing container via
    /// [`Runtime::list`] instead.
    fn create(
        &self,
        request: &ContainerRequest,
    ) -> impl Future<Output = Result<ContainerId, RuntimeError>> + Send;

    /// Start a created container. Starting a running container succeeds.
    fn start(&self, id: &ContainerId) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Send `signal` (None: the container's own stop signal, set at create from
    /// `stop_signal`, else SIGTERM), wait up to `grace` for it to exit, then SIGKILL.
    /// Stopping a container that is not running succeeds.
    fn stop(
        &self,
        id: &ContainerId,
        signal: Option<&str>,
        grace: Duration,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Remove the container (forcibly, with its anonymous volumes) and the task's secret and
    /// config files. Removing a container that is gone succeeds.
    fn remove(&self, id: &ContainerId) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// The container's current state; `None` when it no longer exists.
    fn inspect(
        &self,
        id: &ContainerId,
    ) -> impl Future<Output = Result<Option<ObservedContainer>, RuntimeError>> + Send;

    /// Every container this project manages on the node (found by label, so a restarted agent
    /// adopts what its predecessor started), whatever its state.
    fn list(&self) -> impl Future<Output = Result<Vec<ObservedContainer>, RuntimeError>> + Send;

    /// Create the network if it does not exist; for an external network, check that it does.
    fn ensure_network(
        &self,
        spec: &NetworkSpec,
        stack: &str,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Remove a network. Gone already → Ok; still in use → [`RuntimeError::Conflict`].
    fn remove_network(&self, name: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// The networks this project created (by label).
    fn list_networks(
        &self,
    ) -> impl Future<Output = Result<Vec<ObservedObject>, RuntimeError>> + Send;

    /// Create the named volume if it does not exist; for an external volume, check that it does.
    fn ensure_volume(
        &self,
        spec: &VolumeSpec,
        stack: &str,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Remove a volume. Gone already → Ok; still in use → [`RuntimeError::Conflict`].
    fn remove_volume(&self, name: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// The volumes this project created, or that Docker created for our containers (by label).
    fn list_volumes(
        &self,
    ) -> impl Future<Output = Result<Vec<ObservedObject>, RuntimeError>> + Send;
}

/// Docker's container id (the full 64-hex id once created).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContainerId(pub String);

impl ContainerId {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 12-character form people know from `docker ps`.
    pub fn short(&self) -> &str {
        self.0.get(..12).unwrap_or(&self.0)
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which task a container runs: written to its labels at create and read back from them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TaskRef {
    /// Unique per task; becomes part of the container name and the secrets directory, so it is
    /// limited to `[A-Za-z0-9_.-]`.
    pub task_id: String,
    /// Full service name, `<stack>_<service>`.
    pub service: String,
    pub stack: String,
    /// Replicated services have slots; global services have one task per node instead.
    pub slot: Option<u64>,
    pub node_id: String,
}

impl TaskRef {
    /// The service name without its stack prefix (`shop_web` → `web`): the DNS name other
    /// services of the stack use.
    pub fn short_service_name(&self) -> &str {
        self.service
            .strip_prefix(&self.stack)
            .and_then(|rest| rest.strip_prefix('_'))
            .filter(|short| !short.is_empty())
            .unwrap_or(&self.service)
    }

    /// Swarm's container name: `<service>.<slot>.<task-id>`, or `<service>.<node-id>.<task-id>`
    /// for global services.
    pub fn container_name(&self) -> String {
        match self.slot {
            Some(slot) => format!("{}.{}.{}", self.service, slot, self.task_id),
            None => format!("{}.{}.{}", self.service, self.node_id, self.task_id),
        }
    }
}

/// Everything needed to create one task's container.
#[derive(Clone, Debug)]
pub struct ContainerRequest {
    pub task: TaskRef,
    pub spec: TaskSpec,
    pub endpoint: EndpointSpec,
    /// Decrypted secrets, one per `spec.container.secrets` entry.
    pub secrets: Vec<(FileMount, SecretBytes)>,
    /// Config contents, one per `spec.container.configs` entry.
    pub configs: Vec<(FileMount, Vec<u8>)>,
    /// Networks to join, each with the DNS aliases the container answers to there.
    pub networks: Vec<NetworkAttachment>,
}

impl ContainerRequest {
    /// A request with the spec's networks, each aliased with the short and the full service name
    /// (as Swarm does, so `web` and `shop_web` both resolve inside the stack's networks).
    pub fn new(task: TaskRef, spec: TaskSpec, endpoint: EndpointSpec) -> Self {
        let networks = spec
            .networks
            .iter()
            .map(|n| with_service_aliases(n, &task))
            .collect();
        ContainerRequest {
            task,
            spec,
            endpoint,
            secrets: Vec::new(),
            configs: Vec::new(),
            networks,
        }
    }

    pub fn with_secret(mut self, mount: FileMount, content: SecretBytes) -> Self {
        self.secrets.push((mount, content));
        self
    }

    pub fn with_config(mut self, mount: FileMount, content: Vec<u8>) -> Self {
        self.configs.push((mount, content));
        self
    }
}

fn with_service_aliases(attachment: &NetworkAttachment, task: &TaskRef) -> NetworkAttachment {
    let mut aliases = vec![task.short_service_name().to_string(), task.service.clone()];
    for alias in &attachment.aliases {
        if !aliases.contains(alias) {
            aliases.push(alias.clone());
        }
    }
    aliases.dedup();
    NetworkAttachment {
        aliases,
        ..attachment.clone()
    }
}

/// A container as observed on the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedContainer {
    pub id: ContainerId,
    /// Without Docker's leading `/`.
    pub name: String,
    pub task: TaskRef,
    pub image: String,
    pub state: ContainerState,
    /// Set once the container has exited.
    pub exit_code: Option<i64>,
    pub started_at: Option<SystemTime>,
    pub finished_at: Option<SystemTime>,
    pub health: Health,
    /// Why the container failed, in the engine's words (start errors, OOM kill).
    pub error: Option<String>,
    /// The container's address on each network it joined (network name → IP), for the
    /// ingress proxy.
    pub addresses: BTreeMap<String, std::net::IpAddr>,
}

impl ObservedContainer {
    pub fn is_running(&self) -> bool {
        self.state == ContainerState::Running
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ContainerState {
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
}

impl ContainerState {
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Paused => "paused",
            ContainerState::Restarting => "restarting",
            ContainerState::Removing => "removing",
            ContainerState::Exited => "exited",
            ContainerState::Dead => "dead",
        }
    }
}

/// Docker's health status; `None` when the container has no healthcheck.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Health {
    None,
    Starting,
    Healthy,
    Unhealthy,
}

/// A network or volume found by our labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedObject {
    pub name: String,
    /// `com.docker.stack.namespace`, when set.
    pub stack: Option<String>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The engine cannot be reached (socket missing, daemon down, request timed out). Retry
    /// with backoff; nothing about the task is wrong.
    #[error("the Docker Engine is not reachable: {0}")]
    Unavailable(String),

    #[error("image {image} is not present on this node and could not be pulled: {reason}")]
    ImageUnavailable { image: String, reason: String },

    #[error("{0}")]
    NotFound(String),

    /// The object exists already, or is in use.
    #[error("{0}")]
    Conflict(String),

    /// The spec cannot be turned into a container (bad uid, unsafe task id...).
    #[error("task {task}: {reason}")]
    InvalidSpec { task: String, reason: String },

    /// Writing or removing a task's secret and config files failed. Never carries content.
    #[error("task {task}: secret and config files: {source}")]
    TaskFiles {
        task: String,
        #[source]
        source: std::io::Error,
    },

    /// Anything else the engine refused.
    #[error("Docker refused to {op}: {message} (HTTP {status})")]
    Engine {
        op: String,
        status: u16,
        message: String,
    },
}

impl RuntimeError {
    /// True when retrying later may succeed without any change to the spec.
    pub fn is_transient(&self) -> bool {
        matches!(self, RuntimeError::Unavailable(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(service: &str, stack: &str, slot: Option<u64>) -> TaskRef {
        TaskRef {
            task_id: "abc123".into(),
            service: service.into(),
            stack: stack.into(),
            slot,
            node_id: "node1".into(),
        }
    }

    #[test]
    fn short_service_name_strips_the_stack_prefix() {
        assert_eq!(
            task("shop_web", "shop", Some(1)).short_service_name(),
            "web"
        );
        assert_eq!(
            task("shop_web_api", "shop", Some(1)).short_service_name(),
            "web_api"
        );
        // A service named explicitly outside the stack prefix keeps its name.
        assert_eq!(task("other", "shop", Some(1)).short_service_name(), "other");
        assert_eq!(task("shop_", "shop", Some(1)).short_service_name(), "shop_");
    }

    #[test]
    fn container_names_follow_swarm() {
        assert_eq!(
            task("shop_web", "shop", Some(3)).container_name(),
            "shop_web.3.abc123"
        );
        assert_eq!(
            task("shop_agent", "shop", None).container_name(),
            "shop_agent.node1.abc123"
        );
    }

    #[test]
    fn aliases_are_short_then_full_then_declared_without_duplicates() {
        let attachment = NetworkAttachment {
            network: "shop_default".into(),
            aliases: vec!["web".into(), "www".into()],
            ipv4_address: None,
            ipv6_address: None,
        };
        let a = with_service_aliases(&attachment, &task("shop_web", "shop", Some(1)));
        assert_eq!(a.aliases, ["web", "shop_web", "www"]);
        assert_eq!(a.network, "shop_default");
    }
}
