//! The `reconciler` command line: clap definitions and dispatch. Each subcommand lives in its own
//! file and returns the process exit code, so the conventions (0 ok, 1 error, 2 "plan has
//! changes") are decided in one place per command.

use clap::{Parser, Subcommand};

use crate::logging::{self, LogFormat};

mod export;
mod plan;
mod schema;
mod secret;
mod source;
mod validate;

#[derive(Debug, Parser)]
#[command(
    name = "reconciler",
    version,
    about = "A declarative GitOps reconciler for containers, modelled on Docker Swarm mode",
    propagate_version = true
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
}

/// Parse the command line, run the command, and return the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // clap exits 2 on usage errors, but 2 means "changes" for `plan`: use 1.
            return if e.use_stderr() { 1 } else { 0 };
        }
    };
    logging::init(cli.log_format, "warn");
    let result = match cli.command {
        Command::Validate(args) => validate::run(args),
        Command::Plan(args) => plan::run(args),
        Command::Schema(args) => schema::run(args),
        Command::Export(args) => export::run(args),
        Command::Secret(cmd) => secret::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}
