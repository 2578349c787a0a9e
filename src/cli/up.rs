//! `reconciler up`: watch a git repository of stacks and converge the local Docker Engine onto
//! it. Without arguments it runs the project's own examples/stacks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::cluster::start::{ClusterOptions, Start};
use crate::gitops::{Auth, Source};
use crate::manager::{self, UpConfig};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7777";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The stacks repository: a local path, file://, https:// or ssh URL.
    /// Default: this project's own repository (with --path examples/stacks).
    #[arg(long)]
    repo: Option<String>,
    /// The branch to track (default: the repository's HEAD branch).
    #[arg(long)]
    branch: Option<String>,
    /// The stacks directory inside the repository.
    #[arg(long)]
    path: Option<String>,
    /// Where the store, the git mirror and the node id live.
    #[arg(long, default_value = ".reconciler")]
    pub data_dir: PathBuf,
    /// Address of the API, status page, /metrics and webhook.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// How often to fetch when no webhook or file change says so.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    poll: Duration,
    /// Keep services, networks, secrets and configs that leave git (default: remove them).
    #[arg(long)]
    no_prune: bool,
    /// Watch and plan, apply nothing: every commit is validated and recorded with the plan it
    /// would carry out (`reconciler history COMMIT`), and nothing runs, stops or changes. Give
    /// it to every manager; start again without it to apply.
    #[arg(long)]
    observe_only: bool,
    /// age identity that decrypts the repository's secrets (or RECONCILER_AGE_IDENTITY_FILE).
    #[arg(long, value_name = "FILE")]
    identity: Option<PathBuf>,
    /// Shared secret for webhook signatures (GitHub, Gitea, GitLab).
    #[arg(long, env = "RECONCILER_WEBHOOK_SECRET", hide_env_values = true)]
    webhook_secret: Option<String>,
    /// Access token for https remotes.
    #[arg(long, env = "RECONCILER_GIT_TOKEN", hide_env_values = true)]
    git_token: Option<String>,
    /// Private key for ssh remotes.
    #[arg(long, value_name = "FILE")]
    ssh_key: Option<PathBuf>,
    /// Address published ports listen on.
    #[arg(long, default_value = "0.0.0.0")]
    ingress_bind: std::net::IpAddr,
    #[command(flatten)]
    env: super::source::EnvArgs,
    /// Token that every state-changing API call (rollback, sync) must carry as
    /// `Authorization: Bearer TOKEN`. Required to listen beyond loopback.
    #[arg(long, env = "RECONCILER_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    /// Read the API token from this file (first line).
    #[arg(long, value_name = "FILE", conflicts_with = "api_token")]
    api_token_file: Option<PathBuf>,
    /// A host name the API answers to besides IP addresses, localhost and this machine's
    /// hostname (repeatable): requests for any other name are refused (DNS rebinding).
    #[arg(long = "api-host", value_name = "NAME")]
    api_hosts: Vec<String>,
    /// Where the cluster listener (Raft, the CA, the control API; mutual TLS) binds.
    /// Default: `init`/`join` 0.0.0.0:2377; `up` the address its data dir was made with, or
    /// loopback on a free port for a new single-node cluster.
    #[arg(long, value_name = "ADDR[:PORT]")]
    pub listen_addr: Option<String>,
    /// The address other nodes reach the cluster listener on (default: the listen address).
    #[arg(long, value_name = "ADDR[:PORT]")]
    pub advertise_addr: Option<String>,
    /// The name `node ls` shows for this node (default: this machine's hostname).
    #[arg(long)]
    pub hostname: Option<String>,
}

/// The API token from the flags, if any.
fn api_token(args: &Args) -> anyhow::Result<Option<String>> {
    if let Some(file) = &args.api_token_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading the API token from {}", file.display()))?;
        let token = text.lines().next().unwrap_or("").trim().to_string();
        anyhow::ensure!(
            !token.is_empty(),
            "{}: the API token file is empty",
            file.display()
        );
        return Ok(Some(token));
    }
    Ok(args.api_token.clone().filter(|t| !t.is_empty()))
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::spec::units::Duration::parse(s).map(|d| d.as_std())
}

pub fn run(args: Args) -> anyhow::Result<i32> {
    let files = crate::cluster::files::NodeFiles::new(&args.data_dir);
    // A data dir of a cluster starts again as that node; a new one becomes a single-manager
    // cluster, exactly as `init` makes one.
    let start = if files.exists() {
        Start::Resume
    } else {
        Start::Init
    };
    let options = ClusterOptions {
        listen_addr: args.listen_addr.clone(),
        advertise_addr: args.advertise_addr.clone(),
        ..ClusterOptions::default()
    };
    serve(args, start, options, |_| {})
}

/// Run a node until it is told to stop; `started` is called once it is in its cluster.
/// The age identity and git credentials a new cluster keeps, from the flags (and the
/// identity's environment variables), each checked before it is kept.
fn new_cluster_secrets(
    identity: Option<&std::path::Path>,
    args: &Args,
) -> anyhow::Result<crate::cluster::config::ClusterSecrets> {
    let read = |path: &std::path::Path, what: &str| {
        std::fs::read_to_string(path)
            .with_context(|| format!("reading the {what} {}", path.display()))
    };
    let age_identity = match identity {
        Some(path) => Some(read(path, "age identity")?),
        None => std::env::var(crate::secrets::IDENTITY_ENV).ok(),
    };
    if let Some(text) = &age_identity {
        crate::secrets::Identities::from_text(text, "the age identity")?;
    }
    Ok(crate::cluster::config::ClusterSecrets {
        age_identity,
        git_token: args.git_token.clone(),
        git_ssh_key: args
            .ssh_key
            .as_deref()
            .map(|p| read(p, "ssh key"))
            .transpose()?,
    })
}

pub fn serve(
    args: Args,
    start: Start,
    cluster: ClusterOptions,
    started: impl FnOnce(&crate::cluster::node::ClusterNode) + Send + 'static,
) -> anyhow::Result<i32> {
    let token = api_token(&args)?;
    if token.is_none() && !args.listen.ip().is_loopback() {
        anyhow::bail!(
            "refusing to serve the API on {} without --api-token (or --api-token-file): anyone who can reach it could roll back services or trigger syncs; give a token, or listen on 127.0.0.1",
            args.listen
        );
    }
    let embedded = args.repo.is_none();
    let repo = match &args.repo {
        // A local path as given may be relative: the watcher and the mirror need it whole.
        Some(r) if std::path::Path::new(r).exists() => std::path::absolute(r)
            .with_context(|| format!("resolving {r}"))?
            .display()
            .to_string(),
        Some(r) => r.clone(),
        None => env!("CARGO_MANIFEST_DIR").to_string(),
    };
    // Paths under the data dir become bind sources for containers, which must be absolute.
    let data_dir = std::path::absolute(&args.data_dir)
        .with_context(|| format!("resolving {}", args.data_dir.display()))?;
    // Changes through the API always need a token: without one given, the node's own, kept
    // in its data dir for the command line on this machine.
    let token = match token {
        Some(t) => t,
        None => crate::api::security::node_token(&data_dir)?,
    };
    let path = args.path.clone().unwrap_or_else(|| {
        if embedded {
            "examples/stacks".into()
        } else {
            String::new()
        }
    });
    let identity = args.identity.clone().or_else(|| {
        // The embedded default decrypts the examples with their (public) example key.
        embedded.then(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/keys/example-only.agekey")
        })
    });
    if embedded {
        eprintln!("reconciler up: no --repo given; running this project's examples/stacks (commits on its current branch)");
    }
    // A new cluster keeps what it was given to read the repository: every manager that
    // joins it uses the same, with no copy on its disk.
    let mut cluster = cluster;
    if matches!(start, Start::Init) {
        cluster.secrets = new_cluster_secrets(identity.as_deref(), &args)?;
    }
    let config = UpConfig {
        source: Source {
            repo,
            branch: args.branch.clone(),
            auth: Auth {
                token: args.git_token.clone(),
                ssh_key: args.ssh_key.clone(),
                ..Auth::default()
            },
        },
        path,
        data_dir,
        listen: args.listen,
        poll: args.poll,
        prune: !args.no_prune,
        observe_only: args.observe_only,
        webhook_secret: args.webhook_secret.clone(),
        identity,
        ingress_bind: args.ingress_bind,
        variables: args.env.variables()?,
        security: crate::api::security::Security::new(Some(token), args.api_hosts.clone()),
        start,
        cluster,
        hostname: args.hostname.clone(),
    };
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
            tracing::info!("shutting down (containers keep running; the next start adopts them)");
            stop.cancel();
        });
        eprintln!("status: http://{}/  (reconciler status --server http://{})", config.listen, config.listen);
        manager::run(config, shutdown, started).await
    })?;
    Ok(0)
}
