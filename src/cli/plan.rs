//! `reconciler plan [PATH]`: what a commit would change. Exit 0: nothing; 2: changes; 1: error.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::Context as _;

use super::source::{IdentityArgs, SourceArgs};
use crate::desired::{DesiredState, Loaded};
use crate::plan::{self, render, state_file};
use crate::spec::model::PublishMode;

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

impl Args {
    /// Does this plan talk to anything but local repositories?
    pub fn uses_network(&self) -> bool {
        self.server.is_some()
    }
}

pub fn run(args: Args) -> anyhow::Result<i32> {
    crate::spec::schema::prepare_in_background();
    let identities = args.identity.load()?;
    let reference = args.source.reference.as_deref();
    // Between two revisions, stacks whose inputs did not change cannot change: leave them
    // unread on both sides (most of a large repo, for most commits).
    let skip = match &args.against_ref {
        Some(against) => args.source.unchanged(reference, against)?,
        None => BTreeSet::new(),
    };
    let desired = args
        .source
        .load_skipping(reference, identities.as_ref(), skip.clone())?;
    refuse(&desired)?;
    let observed = observed(&args, &skip)?;
    // Ingress ports are checked across stacks: a changed stack that publishes other ports
    // than before may now clash with one left unread. Read everything then, for the check.
    if !skip.is_empty() && ports_changed(&desired.state, &observed) {
        let full = args.source.load(identities.as_ref())?;
        refuse(&full)?;
    }
    for d in &desired.diagnostics {
        eprintln!("{d}");
    }
    let plan = plan::plan(&desired.state, &observed);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        print!("{}", render::text(&plan));
    }
    Ok(if plan.is_empty() { 0 } else { 2 })
}

/// An invalid desired state is an error, after every problem is printed.
fn refuse(desired: &Loaded) -> anyhow::Result<()> {
    if !desired.has_errors() && desired.blocked.is_empty() {
        return Ok(());
    }
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

/// Does any stack publish other ingress ports in `desired` than in `observed`?
fn ports_changed(desired: &DesiredState, observed: &DesiredState) -> bool {
    let ports = |s: &DesiredState, stack: &str| -> BTreeSet<(u16, String)> {
        s.stacks
            .get(stack)
            .into_iter()
            .flat_map(|st| st.services.values())
            .flat_map(|svc| svc.endpoint.ports.iter())
            .filter(|p| p.mode == PublishMode::Ingress)
            .filter_map(|p| p.published.map(|n| (n, format!("{:?}", p.protocol))))
            .collect()
    };
    let stacks: BTreeSet<&String> = desired
        .stacks
        .keys()
        .chain(observed.stacks.keys())
        .collect();
    stacks
        .into_iter()
        .any(|name| ports(desired, name) != ports(observed, name))
}

fn observed(args: &Args, skip: &BTreeSet<String>) -> anyhow::Result<DesiredState> {
    if let Some(r) = &args.against_ref {
        let loaded = args.source.load_skipping(Some(r), None, skip.clone())?;
        for name in &loaded.failed {
            tracing::warn!(stack = %name, reference = %r, "stack is invalid at the observed revision; planning as if it were absent");
        }
        return Ok(loaded.state);
    }
    if let Some(server) = &args.server {
        let client = super::client::Client::new(&super::client::ServerArgs {
            server: server.clone(),
            api_token: None,
            data_dir: Default::default(),
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
