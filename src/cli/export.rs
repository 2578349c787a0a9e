//! `reconciler export [PATH]`: print the state a cluster reaches once it has synced PATH (or
//! `--ref REF`), in the versioned state format that `plan --against-state` reads.

use super::source::SourceArgs;
use crate::plan::state_file::StateFile;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    source: SourceArgs,
}

pub fn run(args: Args) -> anyhow::Result<i32> {
    let loaded = args.source.load(None)?;
    for d in &loaded.diagnostics {
        eprintln!("{d}");
    }
    if loaded.has_errors() {
        anyhow::bail!("the stacks are invalid: nothing exported");
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&StateFile::new(loaded.state))?
    );
    Ok(0)
}
