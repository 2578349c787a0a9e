//! The Compose v3 file as written: every short and long form `docker stack deploy` accepts, with
//! nothing normalised yet. These types are the source of `schemas/stack.schema.json`
//! (schemars), so their doc comments are what an editor shows on hover.
//!
//! Keys that swarm mode ignores (`build`, `depends_on`, ...) are not fields here: the schema
//! lists them separately (see `super::ignored`) and they are reported as warnings.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;

use super::units::{Bytes, Duration, NanoCpus};

/// A Compose file (formats 3.0 to 3.9, or the Compose specification without `version:`).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
#[schemars(title = "reconciler stack file")]
pub struct ComposeFile {
    /// The Compose file format, e.g. "3.8". Optional: files without it are read as the
    /// Compose specification.
    pub version: Option<StringOrNumber>,
    /// The services of the stack; each runs as `<stack>_<service>`.
    #[serde(default)]
    pub services: IndexMap<String, Service>,
    /// Networks; `<stack>_default` is added for services that name none.
    #[serde(default)]
    pub networks: IndexMap<String, Option<NetworkDef>>,
    /// Named volumes.
    #[serde(default)]
    pub volumes: IndexMap<String, Option<VolumeDef>>,
    /// Secrets, from files in the repo (`*.age` files are decrypted with age) or external.
    #[serde(default)]
    pub secrets: IndexMap<String, SecretDef>,
    /// Configs, from files in the repo, inline content, or external.
    #[serde(default)]
    pub configs: IndexMap<String, ConfigDef>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum StringOrNumber {
    String(String),
    Number(serde_json::Number),
}

impl std::fmt::Display for StringOrNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StringOrNumber::String(s) => f.write_str(s),
            StringOrNumber::Number(n) => write!(f, "{n}"),
        }
    }
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum StringOrList {
    String(String),
    List(Vec<String>),
}

/// A scalar value in an environment or label map: numbers and booleans become text.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ScalarValue {
    String(String),
    Number(serde_json::Number),
    Bool(bool),
}

impl std::fmt::Display for ScalarValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScalarValue::String(s) => f.write_str(s),
            ScalarValue::Number(n) => write!(f, "{n}"),
            ScalarValue::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// `["KEY=value", "KEY"]` or `{KEY: value}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ListOrMap {
    List(Vec<String>),
    Map(IndexMap<String, Option<ScalarValue>>),
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Service {
    /// The image to run, e.g. `nginx:1.27` or `registry.example.com/app@sha256:...`.
    pub image: Option<String>,
    /// Overrides the image's CMD: a string (split like a shell would) or a list.
    pub command: Option<StringOrList>,
    /// Overrides the image's ENTRYPOINT: a string (split like a shell would) or a list.
    pub entrypoint: Option<StringOrList>,
    /// Environment variables, as a list of `KEY=value` or a map.
    pub environment: Option<ListOrMap>,
    /// Files of `KEY=value` lines, relative to the stack directory.
    pub env_file: Option<EnvFiles>,
    /// Container labels.
    pub labels: Option<ListOrMap>,
    /// Published ports: `"8080:80"`, `"8080-8081:80-81/udp"`, or the long syntax.
    pub ports: Option<Vec<PortEntry>>,
    /// Secrets mounted at /run/secrets/<target>.
    pub secrets: Option<Vec<FileRef>>,
    /// Configs mounted in the container (at /<target> by default).
    pub configs: Option<Vec<FileRef>>,
    /// Volumes: `name:/path[:ro]`, `./host:/path`, or the long syntax.
    pub volumes: Option<Vec<VolumeEntry>>,
    /// Networks to attach to, as a list or a map with aliases.
    pub networks: Option<ServiceNetworks>,
    pub healthcheck: Option<Healthcheck>,
    /// How long to wait after stop_signal before killing the container (default 10s).
    pub stop_grace_period: Option<Duration>,
    /// The signal that stops the container (default SIGTERM, or the image's STOPSIGNAL).
    pub stop_signal: Option<String>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    pub hostname: Option<String>,
    pub domainname: Option<String>,
    pub read_only: Option<bool>,
    pub tmpfs: Option<StringOrList>,
    /// Run an init process (tini) as PID 1 inside the container.
    pub init: Option<bool>,
    pub tty: Option<bool>,
    pub stdin_open: Option<bool>,
    /// Resource limits per process: `nofile: 1024` or `nofile: {soft: 1024, hard: 2048}`.
    pub ulimits: Option<IndexMap<String, Ulimit>>,
    pub sysctls: Option<ListOrMap>,
    pub cap_add: Option<Vec<String>>,
    pub cap_drop: Option<Vec<String>>,
    pub logging: Option<Logging>,
    /// Extra `/etc/hosts` lines: `["host:ip"]` or `{host: ip}`.
    pub extra_hosts: Option<ListOrMap>,
    pub dns: Option<StringOrList>,
    pub dns_search: Option<StringOrList>,
    pub dns_opt: Option<Vec<String>>,
    pub isolation: Option<String>,
    /// Only used on Windows nodes; accepted and passed through.
    pub credential_spec: Option<serde_json::Value>,
    /// Swarm mode settings: replicas, placement, resources, restart and update policies.
    pub deploy: Option<Deploy>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum EnvFiles {
    One(String),
    Many(Vec<EnvFileEntry>),
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum EnvFileEntry {
    Path(String),
    Long(EnvFileLong),
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct EnvFileLong {
    pub path: String,
    /// When false, a missing file is skipped instead of being an error.
    #[serde(default = "yes")]
    pub required: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum PortEntry {
    /// `80`, published on a port chosen by the cluster.
    Number(u32),
    /// `"8080:80"`, `"127.0.0.1:8080:80/udp"`, `"9000-9001:80-81"`.
    Short(String),
    Long(PortLong),
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct PortLong {
    /// The port inside the container.
    #[schemars(range(min = 1, max = 65535))]
    pub target: u32,
    /// The port published on the nodes (a number, or a range as text).
    pub published: Option<StringOrNumber>,
    pub protocol: Option<Protocol>,
    /// `ingress` (every node, load balanced; the default) or `host` (only where a task runs).
    pub mode: Option<PortMode>,
    pub host_ip: Option<String>,
    /// A name for the port (Compose specification); informational.
    pub name: Option<String>,
    pub app_protocol: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PortMode {
    Ingress,
    Host,
}

/// A secret or config used by a service: its name, or the long syntax.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum FileRef {
    Short(String),
    Long(FileRefLong),
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct FileRefLong {
    /// The name of the secret or config in this file's top-level `secrets:` or `configs:`.
    pub source: String,
    /// The file name in the container (secrets: under /run/secrets/; configs: an absolute path).
    pub target: Option<String>,
    pub uid: Option<StringOrNumber>,
    pub gid: Option<StringOrNumber>,
    /// File mode, e.g. 0400 (octal, as in YAML 1.1) or 0o440.
    #[schemars(range(min = 0, max = 4095))]
    pub mode: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum VolumeEntry {
    Short(String),
    Long(VolumeLong),
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct VolumeLong {
    #[serde(rename = "type")]
    pub kind: VolumeType,
    /// The volume name or host path (not used for tmpfs).
    pub source: Option<String>,
    /// The path in the container.
    pub target: String,
    pub read_only: Option<bool>,
    pub consistency: Option<String>,
    pub bind: Option<BindOptions>,
    pub volume: Option<VolumeOptions>,
    pub tmpfs: Option<TmpfsOptions>,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum VolumeType {
    Volume,
    Bind,
    Tmpfs,
    Npipe,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct BindOptions {
    pub propagation: Option<String>,
    pub create_host_path: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct VolumeOptions {
    pub nocopy: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct TmpfsOptions {
    pub size: Option<Bytes>,
    #[schemars(range(min = 0, max = 4095))]
    pub mode: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ServiceNetworks {
    List(Vec<String>),
    Map(IndexMap<String, Option<ServiceNetwork>>),
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ServiceNetwork {
    /// Extra DNS names for this service on the network.
    pub aliases: Option<Vec<String>>,
    pub ipv4_address: Option<String>,
    pub ipv6_address: Option<String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Healthcheck {
    /// `["CMD", "curl", "-f", "http://localhost"]`, `["CMD-SHELL", "..."]`, `["NONE"]`, or a
    /// string run by the shell.
    pub test: Option<StringOrList>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    #[schemars(range(min = 0))]
    pub retries: Option<u64>,
    pub start_period: Option<Duration>,
    pub start_interval: Option<Duration>,
    /// Turn off the image's healthcheck.
    pub disable: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Ulimit {
    Single(#[schemars(range(min = -1, max = 1e18))] i64),
    SoftHard {
        #[schemars(range(min = -1, max = 1e18))]
        soft: i64,
        #[schemars(range(min = -1, max = 1e18))]
        hard: i64,
    },
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Logging {
    pub driver: Option<String>,
    pub options: Option<IndexMap<String, Option<ScalarValue>>>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Deploy {
    /// `replicated` (the default: `replicas` tasks), `global` (one task per node), or a job
    /// that runs to completion: `replicated-job` (`replicas` completions) or `global-job`.
    pub mode: Option<DeployMode>,
    /// Number of tasks for a replicated service (default 1, at most 10000); for a
    /// replicated job, the number of completions.
    #[schemars(range(min = 0, max = 10000))]
    pub replicas: Option<u64>,
    /// A replicated job's tasks that run at once (default: all of `replicas`).
    #[schemars(range(min = 1, max = 10000))]
    pub max_concurrent: Option<u64>,
    /// `vip` (one virtual IP, the default) or `dnsrr` (DNS round robin over the tasks).
    pub endpoint_mode: Option<EndpointMode>,
    /// Labels on the service (not on its containers).
    pub labels: Option<ListOrMap>,
    pub placement: Option<Placement>,
    pub resources: Option<Resources>,
    pub restart_policy: Option<RestartPolicy>,
    /// How an update rolls out.
    pub update_config: Option<UpdateConfig>,
    /// How a rollback rolls out.
    pub rollback_config: Option<UpdateConfig>,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DeployMode {
    Replicated,
    Global,
    /// A job: `replicas` tasks run to completion, at most `max_concurrent` at a time.
    #[serde(rename = "replicated-job")]
    ReplicatedJob,
    /// A job: one task on every node runs to completion.
    #[serde(rename = "global-job")]
    GlobalJob,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMode {
    Vip,
    Dnsrr,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Placement {
    /// Expressions such as `node.role == manager` or `node.labels.zone != eu-1`; all must hold.
    pub constraints: Option<Vec<String>>,
    /// Spread tasks evenly over the values of a node label: `- spread: node.labels.zone`.
    pub preferences: Option<Vec<PlacementPreference>>,
    /// At most this many tasks of the service on one node (0 = no limit).
    #[schemars(range(min = 0, max = 10000))]
    pub max_replicas_per_node: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct PlacementPreference {
    pub spread: String,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Resources {
    pub limits: Option<Limits>,
    pub reservations: Option<Reservations>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Limits {
    pub cpus: Option<NanoCpus>,
    pub memory: Option<Bytes>,
    #[schemars(range(min = 0))]
    pub pids: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Reservations {
    pub cpus: Option<NanoCpus>,
    pub memory: Option<Bytes>,
    pub generic_resources: Option<Vec<GenericResource>>,
    /// Ignored in swarm mode (`docker stack deploy` does not pass devices to services): use
    /// `generic_resources` with the nodes' `node-generic-resources`.
    #[deprecated = "ignored in swarm mode"]
    pub devices: Option<Vec<serde_json::Value>>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct GenericResource {
    pub discrete_resource_spec: Option<DiscreteResource>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct DiscreteResource {
    pub kind: String,
    #[schemars(range(min = 0))]
    pub value: u64,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RestartPolicy {
    /// `none`, `on-failure` or `any` (the default).
    pub condition: Option<RestartCondition>,
    /// Wait between restart attempts (default 5s).
    pub delay: Option<Duration>,
    /// Give up after this many restarts of a slot (0 or absent: never give up).
    #[schemars(range(min = 0))]
    pub max_attempts: Option<u64>,
    /// Only restarts within this window count towards max_attempts.
    pub window: Option<Duration>,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RestartCondition {
    None,
    OnFailure,
    Any,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct UpdateConfig {
    /// Tasks updated at once (default 1; 0 = all at once).
    #[schemars(range(min = 0))]
    pub parallelism: Option<u64>,
    /// Wait between updating one task and the next (default 0s).
    pub delay: Option<Duration>,
    /// `pause` (default), `continue` or `rollback` (rollback only in update_config).
    pub failure_action: Option<FailureAction>,
    /// How long after starting a task a failure still counts against the update (default 5s).
    pub monitor: Option<Duration>,
    /// Failures tolerated, as a fraction of the tasks updated (default 0).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_failure_ratio: Option<f64>,
    /// `stop-first` (default: old task stops, then the new one starts) or `start-first`.
    pub order: Option<UpdateOrder>,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FailureAction {
    Pause,
    Continue,
    Rollback,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    StopFirst,
    StartFirst,
}

/// `external: true`, or the older `external: {name: real-name}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum External {
    Flag(bool),
    Named { name: Option<String> },
}

impl External {
    pub fn is_external(&self) -> bool {
        match self {
            External::Flag(b) => *b,
            External::Named { .. } => true,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct NetworkDef {
    /// `overlay` (the default in swarm mode) or another network driver.
    pub driver: Option<String>,
    pub driver_opts: Option<IndexMap<String, ScalarValue>>,
    /// Let standalone containers attach to this network.
    pub attachable: Option<bool>,
    pub internal: Option<bool>,
    pub enable_ipv6: Option<bool>,
    pub ipam: Option<Ipam>,
    /// Defined outside the stack; not created or removed by the reconciler.
    pub external: Option<External>,
    pub labels: Option<ListOrMap>,
    /// The network's real name (by default `<stack>_<key>`).
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Ipam {
    pub driver: Option<String>,
    pub config: Option<Vec<IpamConfig>>,
    pub options: Option<IndexMap<String, String>>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct IpamConfig {
    /// A subnet in CIDR form, e.g. 10.10.0.0/24.
    pub subnet: Option<String>,
    pub ip_range: Option<String>,
    pub gateway: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct VolumeDef {
    pub driver: Option<String>,
    pub driver_opts: Option<IndexMap<String, ScalarValue>>,
    pub external: Option<External>,
    pub labels: Option<ListOrMap>,
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct SecretDef {
    /// A file relative to the stack directory; `*.age` files are decrypted with the cluster's
    /// age identity.
    pub file: Option<String>,
    pub external: Option<External>,
    pub name: Option<String>,
    pub labels: Option<ListOrMap>,
    pub driver: Option<String>,
    pub template_driver: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ConfigDef {
    /// A file relative to the stack directory.
    pub file: Option<String>,
    /// The content itself, inline.
    pub content: Option<String>,
    pub external: Option<External>,
    pub name: Option<String>,
    pub labels: Option<ListOrMap>,
    pub template_driver: Option<String>,
}
