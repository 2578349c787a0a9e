//! The normalised stack model: one canonical form for every short/long syntax, with defaults
//! applied and names resolved (`web` becomes `shop_web`). This is what the planner diffs, what
//! the store keeps, and what the runtime turns into containers. Everything is ordered
//! (`BTreeMap`, sorted lists where order carries no meaning) so that equal specs compare equal
//! and serialise identically.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use super::constraint::{Constraint, ConstraintKey, ConstraintOp};
use super::units::{Bytes, Duration, NanoCpus};

/// One stack: a directory of the stacks repo.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StackSpec {
    pub name: String,
    /// The compose file, relative to the stacks root (for messages).
    pub file: String,
    pub services: BTreeMap<String, ServiceSpec>,
    pub networks: BTreeMap<String, NetworkSpec>,
    pub volumes: BTreeMap<String, VolumeSpec>,
    pub secrets: BTreeMap<String, FileObjectSpec>,
    pub configs: BTreeMap<String, FileObjectSpec>,
}

/// A service, keyed by its full name `<stack>_<service>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub name: String,
    pub stack: String,
    /// Service labels (`deploy.labels`), which do not restart tasks when changed.
    pub labels: BTreeMap<String, String>,
    pub mode: Mode,
    /// Shared (not copied) by the tasks made from it: a store of 10,000 tasks holds one per
    /// service version.
    pub task: std::sync::Arc<TaskSpec>,
    pub endpoint: EndpointSpec,
    pub update_config: UpdateConfig,
    pub rollback_config: UpdateConfig,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "mode")]
pub enum Mode {
    Replicated {
        replicas: u64,
    },
    Global,
    /// Runs to completion: `total` tasks complete, at most `max_concurrent` at a time; a
    /// task that exits 0 is not started again.
    #[serde(rename = "replicated-job")]
    ReplicatedJob {
        total: u64,
        max_concurrent: u64,
    },
    /// Runs to completion, once on every node.
    #[serde(rename = "global-job")]
    GlobalJob,
}

impl Mode {
    /// A job runs to completion (no rolling update: a new spec runs it again).
    pub fn is_job(self) -> bool {
        matches!(self, Mode::ReplicatedJob { .. } | Mode::GlobalJob)
    }

    /// One task per node.
    pub fn is_global(self) -> bool {
        matches!(self, Mode::Global | Mode::GlobalJob)
    }

    /// As `service ls` names it.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Replicated { .. } => "replicated",
            Mode::Global => "global",
            Mode::ReplicatedJob { .. } => "replicated job",
            Mode::GlobalJob => "global job",
        }
    }
}

/// Everything that, when it changes, means tasks must be replaced (Swarm's TaskSpec).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub container: ContainerSpec,
    pub resources: Resources,
    pub restart_policy: RestartPolicy,
    pub placement: Placement,
    pub networks: Vec<NetworkAttachment>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_driver: Option<LogDriver>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// `KEY=value`, sorted by key; env_file entries first overridden by `environment`.
    pub env: Vec<String>,
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domainname: Option<String>,
    pub read_only: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<bool>,
    pub tty: bool,
    pub stdin_open: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_grace_period: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    pub mounts: Vec<Mount>,
    pub ulimits: BTreeMap<String, Ulimit>,
    pub sysctls: BTreeMap<String, String>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// `host:ip` pairs, as Docker's ExtraHosts.
    pub extra_hosts: Vec<String>,
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    pub dns_options: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub isolation: Option<String>,
    pub secrets: Vec<FileMount>,
    pub configs: Vec<FileMount>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Healthcheck {
    /// Turn off any healthcheck the image defines.
    Disabled,
    Check {
        /// `["CMD", ...]` or `["CMD-SHELL", "..."]`; empty keeps the image's test.
        test: Vec<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        interval: Option<Duration>,
        #[serde(skip_serializing_if = "Option::is_none")]
        timeout: Option<Duration>,
        #[serde(skip_serializing_if = "Option::is_none")]
        retries: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        start_period: Option<Duration>,
        #[serde(skip_serializing_if = "Option::is_none")]
        start_interval: Option<Duration>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Mount {
    /// A named volume; `source` is the full name (`<stack>_<volume>`) or None for anonymous.
    Volume {
        #[serde(skip_serializing_if = "Option::is_none")]
        source: Option<String>,
        target: String,
        read_only: bool,
        nocopy: bool,
    },
    Bind {
        source: String,
        target: String,
        read_only: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        propagation: Option<String>,
    },
    Tmpfs {
        target: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        size: Option<Bytes>,
        #[serde(skip_serializing_if = "Option::is_none")]
        mode: Option<u32>,
    },
    /// A relative bind mount of a file or directory that git tracks (`./nginx.conf:/etc/...`):
    /// the node mounts its own read-only copy of exactly this version, so a change in git is a
    /// new version and rolls the service, like a config.
    Repo {
        /// Relative to the stacks root.
        path: String,
        dir: bool,
        /// Content hash (of the file, or of every file under the directory).
        version: String,
        target: String,
    },
    /// A relative bind mount of a path git does not track (`./data:/var/lib/x`): a directory
    /// of the stack's own under the node's data dir, kept across commits like a volume.
    StackDir {
        stack: String,
        /// Relative to the stack directory, normalised (`data`, `conf/certs`).
        path: String,
        target: String,
        read_only: bool,
    },
}

impl Mount {
    pub fn target(&self) -> &str {
        match self {
            Mount::Volume { target, .. }
            | Mount::Bind { target, .. }
            | Mount::Tmpfs { target, .. }
            | Mount::Repo { target, .. }
            | Mount::StackDir { target, .. } => target,
        }
    }
}

impl TaskSpec {
    /// Every content version the task's containers need: its secrets, configs and repo files.
    pub fn content_versions(&self) -> impl Iterator<Item = &str> {
        let c = &self.container;
        c.secrets
            .iter()
            .chain(&c.configs)
            .map(|m| m.version.as_str())
            .chain(c.mounts.iter().filter_map(|m| match m {
                Mount::Repo { version, .. } => Some(version.as_str()),
                _ => None,
            }))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    pub soft: i64,
    pub hard: i64,
}

/// A secret or config file in the container. `object` is the full name of the stack's secret or
/// config and `version` its content hash, so a content change is a task spec change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMount {
    pub object: String,
    pub version: String,
    /// File name under /run/secrets/ for secrets; an absolute path for configs.
    pub target: String,
    pub uid: String,
    pub gid: String,
    pub mode: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_cpus: Option<NanoCpus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_memory: Option<Bytes>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_pids: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reserve_cpus: Option<NanoCpus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reserve_memory: Option<Bytes>,
    /// Generic resources such as `gpu=2`, sorted.
    pub reserve_generic: BTreeMap<String, u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartCondition {
    None,
    OnFailure,
    Any,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    pub condition: RestartCondition,
    pub delay: Duration,
    /// 0 = unlimited.
    pub max_attempts: u64,
    /// Zero = every restart counts.
    pub window: Duration,
}

impl Default for RestartPolicy {
    /// Swarm's defaults: condition any, delay 5s, unlimited attempts, no window.
    fn default() -> Self {
        RestartPolicy {
            condition: RestartCondition::Any,
            delay: Duration::from_secs(5),
            max_attempts: 0,
            window: Duration::ZERO,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub constraints: Vec<Constraint>,
    /// Label keys to spread over, outermost first (`node.labels.zone`).
    pub spread: Vec<String>,
    /// 0 = no limit.
    pub max_replicas_per_node: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkAttachment {
    /// Full network name.
    pub network: String,
    pub aliases: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv4_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6_address: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogDriver {
    pub name: String,
    pub options: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointSpec {
    pub mode: EndpointMode,
    pub ports: Vec<PortConfig>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMode {
    #[default]
    Vip,
    Dnsrr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    Ingress,
    Host,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortConfig {
    pub target: u16,
    /// None: the cluster picks a port (like Swarm's dynamic range).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub published: Option<u16>,
    pub protocol: Protocol,
    pub mode: PublishMode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
}

impl std::fmt::Display for PortConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.published {
            Some(p) => write!(f, "{p}")?,
            None => f.write_str("*")?,
        }
        write!(f, "->{}/{}", self.target, protocol_name(self.protocol))?;
        if self.mode == PublishMode::Host {
            f.write_str(" (host)")?;
        }
        Ok(())
    }
}

pub fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureAction {
    Pause,
    Continue,
    Rollback,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    StopFirst,
    StartFirst,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct UpdateConfig {
    /// 0 = all at once.
    pub parallelism: u64,
    pub delay: Duration,
    pub failure_action: FailureAction,
    pub monitor: Duration,
    pub max_failure_ratio: f64,
    pub order: UpdateOrder,
}

impl Default for UpdateConfig {
    /// Swarm's defaults, the same for updates and rollbacks.
    fn default() -> Self {
        UpdateConfig {
            parallelism: 1,
            delay: Duration::ZERO,
            failure_action: FailureAction::Pause,
            monitor: Duration::from_secs(5),
            max_failure_ratio: 0.0,
            order: UpdateOrder::StopFirst,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpec {
    /// Full name: `<stack>_<key>` unless `name:` says otherwise.
    pub name: String,
    pub external: bool,
    pub driver: String,
    pub driver_opts: BTreeMap<String, String>,
    pub attachable: bool,
    pub internal: bool,
    pub enable_ipv6: bool,
    pub subnets: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSpec {
    pub name: String,
    pub external: bool,
    pub driver: String,
    pub driver_opts: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

/// A secret or config: where its content comes from and the hash that versions it. The content
/// itself is not part of the spec (it never reaches plans, exports or logs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileObjectSpec {
    pub name: String,
    pub external: bool,
    /// Where the content comes from, for people: `web/secrets/api_key.age`, `inline`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// True when the file is age-encrypted and must be decrypted before use.
    pub encrypted: bool,
    /// Hash of the bytes stored in git (ciphertext for age files), 16 hex digits; empty for
    /// external objects.
    pub version: String,
    pub labels: BTreeMap<String, String>,
    /// The content of a config given inline (`content:`); configs are not secret. Never set
    /// for secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<String>,
}
