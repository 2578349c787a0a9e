//! `reconciler plan [PATH]`: what a commit would change. Exit 0: nothing; 2: changes; 1: error.

use std::path::PathBuf;

use anyhow::Context as _;

use super::source::{IdentityArgs, SourceArgs};
use crate::desired::DesiredState;
use crate::plan::{self, render, state_file};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Desired state (in a git repository when --ref or --against-ref are used).
    #[command(flatten)]
    source: SourceArgs,
    /// Observed state: what the cluster runs once it has synced this git revision.
    #[arg(long, value_name = "REF", conflicts_with = "against_state")]
    against_ref: Option<String>,
    /// Observed state: a state export (docs/state-format.md).
    #[arg(long, value_name = "FILE", conflicts_with = "server")]
    against_state: Option<PathBuf>,
    /// Observed state: what a running `reconciler up` at this address runs now.
    #[arg(long, value_name = "URL", conflicts_with = "against_ref")]
    server: Option<String>,
    #[command(flatten)]
    identity: IdentityArgs,
    /// Print the plan as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<i32> {
    let identities = args.identity.load()?;
    let desired = args.source.load(identities.as_ref())?;
    if desired.has_errors() || !desired.blocked.is_empty() {
        for d in desired.all_diagnostics() {
            eprintln!("{d}");
        }
        let failed: Vec<&str> = desired
            .failed
            .iter()
            .chain(desired.blocked.keys())
            .map(String::as_str)
            .collect();
        if failed.is_empty() {
            anyhow::bail!("the desired state is invalid: nothing planned");
        }
        anyhow::bail!(
            "the desired state is invalid ({} failed): nothing planned",
            failed.join(", ")
        );
    }
    for d in &desired.diagnostics {
        eprintln!("{d}");
    }
    let observed = observed(&args)?;
    let plan = plan::plan(&desired.state, &observed);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        print!("{}", render::text(&plan));
    }
    Ok(if plan.is_empty() { 0 } else { 2 })
}

fn observed(args: &Args) -> anyhow::Result<DesiredState> {
    if let Some(r) = &args.against_ref {
        let loaded = args.source.load_at(Some(r), None)?;
        for name in &loaded.failed {
            tracing::warn!(stack = %name, reference = %r, "stack is invalid at the observed revision; planning as if it were absent");
        }
        return Ok(loaded.state);
    }
    if let Some(server) = &args.server {
        let client = super::client::Client::new(&super::client::ServerArgs {
            server: server.clone(),
            api_token: None,
        })?;
        let export: serde_json::Value = client.get("/api/v1/state")?;
        return state_file::parse(&export.to_string(), server);
    }
    if let Some(file) = &args.against_state {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        return state_file::parse(&text, &file.display().to_string());
    }
    Ok(DesiredState::default())
}
