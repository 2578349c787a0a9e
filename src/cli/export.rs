//! `reconciler export [PATH]`: print the state a cluster reaches once it has synced PATH (or
//! `--ref REF`), in the versioned state format that `plan --against-state` reads.

use std::path::PathBuf;

use super::source;
use crate::plan::state_file::StateFile;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The stacks directory.
    #[arg(default_value = ".")]
    path: PathBuf,
    /// Read the stacks from this git revision instead of the work tree.
    #[arg(long = "ref", value_name = "REF")]
    reference: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<i32> {
    let loaded = source::load(&args.path, args.reference.as_deref(), None)?;
    if loaded.has_errors() {
        for d in &loaded.diagnostics {
            eprintln!("{d}");
        }
        anyhow::bail!("the stacks are invalid: nothing exported");
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&StateFile::new(loaded.state))?
    );
    Ok(0)
}
