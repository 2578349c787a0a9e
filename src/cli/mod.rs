//! The `reconciler` command line: clap definitions and dispatch. Each subcommand lives in its own
//! file and returns the process exit code, so the conventions (0 ok, 1 error, 2 "plan has
//! changes") are decided in one place per command.

use clap::{Parser, Subcommand};

use crate::logging::{self, LogFormat};

mod bench;
mod client;
mod cluster;
mod complete;
mod control;
mod docs;
mod export;
mod filter;
mod format;
mod gitops_way;
mod history;
mod lock;
mod node;
mod plan;
mod schema;
mod secret;
mod source;
mod swarm;
mod up;
mod validate;

#[derive(Debug, Parser)]
#[command(
    name = "reconciler",
    version,
    about = "A declarative GitOps reconciler for containers, modelled on Docker Swarm mode",
    propagate_version = true,
    after_long_help = "Exit codes: 0 success; 1 an error, a refusal, or a check that failed \
(`validate` with errors, `sync --wait` on a refused or rolled-back commit, the commands that \
answer with the git change instead); 2 `plan` found changes (0: none).\n\n\
Colour only on a terminal, never with NO_COLOR set."
)]
pub struct Cli {
    /// Log line format (filter with RUST_LOG, e.g. RUST_LOG=reconciler=debug).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "RECONCILER_LOG_FORMAT")]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a stacks directory (or a single compose file) without diffing.
    Validate(validate::Args),
    /// Show what a commit would change: desired state against an observed one.
    Plan(plan::Args),
    /// Print the JSON Schema of the stack file format.
    Schema(schema::Args),
    /// Print the state a repo revision describes, in the format `plan --against-state` reads.
    Export(export::Args),
    /// Encrypt secrets for the stacks repo with age.
    #[command(subcommand)]
    Secret(secret::Command),
    /// Run this node: a new data dir becomes a single-manager cluster (as `init` makes),
    /// one of a cluster starts that node again.
    Up(up::Args),
    /// Make a new cluster with this node as its first manager, and run it.
    Init(swarm::InitArgs),
    /// Join a cluster with a token, and run this node in it.
    Join(swarm::JoinArgs),
    /// Print (or --rotate) the token that joins a worker or a manager.
    JoinToken(swarm::JoinTokenArgs),
    /// Leave the cluster: the node stops, removes its containers and forgets its cluster (a
    /// manager leaves Raft first, and needs --force).
    Leave(swarm::LeaveArgs),
    /// Give a locked manager (autolock) its unlock key, read from the terminal or stdin.
    Unlock(lock::UnlockArgs),
    /// Show the cluster's unlock key, or rotate it.
    UnlockKey(lock::UnlockKeyArgs),
    /// Change the cluster's settings: autolock, the age identity, the git credentials.
    Update(lock::UpdateArgs),
    /// The cluster's nodes.
    #[command(subcommand)]
    Node(node::NodeCommand),
    /// What runs: live and refused commits, services, replicas, update states.
    Status(cluster::StatusArgs),
    /// What the cluster did with each commit: outcome, timeline, rollouts and plan.
    History(history::Args),
    /// Fetch the repository now; with --wait, follow the commit until it converges.
    Sync(cluster::SyncArgs),
    /// Services of the running cluster.
    #[command(subcommand)]
    Service(cluster::ServiceCommand),
    /// Stacks of the running cluster.
    #[command(subcommand)]
    Stack(cluster::StackCommand),
    /// Benchmarks against the real engine, side by side with swarm mode on the same engine.
    #[command(subcommand)]
    Bench(bench::Command),
    /// Print a shell completion script.
    Completions(docs::CompletionsArgs),
    /// Print (or write into a directory) the man pages.
    Man(docs::ManArgs),
}

/// Parse the command line, run the command, and return the process exit code.
pub fn main() -> i32 {
    // `COMPLETE=bash reconciler` prints the shell's registration; the shell then calls back
    // with the words typed, and gets candidates (names from the running cluster) and exits.
    clap_complete::CompleteEnv::with_factory(<Cli as clap::CommandFactory>::command).complete();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // clap exits 2 on usage errors, but 2 means "changes" for `plan`: use 1.
            return if e.use_stderr() { 1 } else { 0 };
        }
    };
    // A command whose output goes into `| head` must stop quietly when the pipe closes, as
    // Unix tools do; not the servers (`up`, and `bench`, which runs one), whose sockets would
    // then kill them on a client hanging up.
    let server = matches!(
        cli.command,
        Command::Up(_) | Command::Init(_) | Command::Join(_)
    );
    if !server && !matches!(cli.command, Command::Bench(_)) {
        sigpipe::reset();
    }
    let local_only = match &cli.command {
        Command::Validate(_) | Command::Export(_) => true,
        Command::Plan(args) => !args.uses_network(),
        _ => false,
    };
    if local_only {
        no_tls_for_git();
    }
    // `up` is a server: its progress is worth seeing by default.
    let level = if server { "info" } else { "warn" };
    logging::init(cli.log_format, level);
    let result = match cli.command {
        Command::Validate(args) => validate::run(args),
        Command::Plan(args) => plan::run(args),
        Command::Schema(args) => schema::run(args),
        Command::Export(args) => export::run(args),
        Command::Secret(cmd) => secret::run(cmd),
        Command::Up(args) => up::run(args),
        Command::Init(args) => swarm::init(args),
        Command::Join(args) => swarm::join(args),
        Command::JoinToken(args) => swarm::join_token(args),
        Command::Node(cmd) => node::run(cmd),
        Command::Leave(args) => swarm::leave(args),
        Command::Unlock(args) => lock::unlock(args),
        Command::UnlockKey(args) => lock::unlock_key(args),
        Command::Update(args) => lock::update(args),
        Command::Status(args) => cluster::status(args),
        Command::History(args) => history::run(args),
        Command::Sync(args) => cluster::sync(args),
        Command::Service(cmd) => cluster::service(cmd),
        Command::Stack(cmd) => cluster::stack(cmd),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Completions(args) => docs::completions(args),
        Command::Man(args) => docs::man(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

/// For commands that read git only from local repositories: libgit2 sets up TLS the moment it
/// starts, parsing the system's whole CA bundle for https fetches these commands never make
/// (17 ms of a 30 ms `plan` here); point OpenSSL's default bundle at nothing instead. It also
/// skips re-hashing every object read, as git itself does: these objects are the user's own
/// repository's. Runs before any thread exists, so setting the variables is sound.
fn no_tls_for_git() {
    for var in ["SSL_CERT_FILE", "SSL_CERT_URI"] {
        std::env::set_var(var, "/dev/null");
    }
    git2::opts::strict_hash_verification(false);
}
