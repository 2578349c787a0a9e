//! `reconciler validate [PATH]`: check a stacks directory or a single compose file.

use std::path::PathBuf;

use serde::Serialize;

use super::source::{self, IdentityArgs};
use crate::spec::Diagnostic;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A stacks directory (each sub-directory with a compose file is a stack) or one file.
    #[arg(default_value = ".")]
    path: PathBuf,
    /// Read the stacks from this git revision instead of the work tree.
    #[arg(long = "ref", value_name = "REF")]
    reference: Option<String>,
    #[command(flatten)]
    identity: IdentityArgs,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Output<'a> {
    valid: bool,
    stacks: Vec<&'a str>,
    failed: &'a [String],
    diagnostics: &'a [Diagnostic],
}

pub fn run(args: Args) -> anyhow::Result<i32> {
    let identities = args.identity.load()?;
    let loaded = source::load(&args.path, args.reference.as_deref(), identities.as_ref())?;
    let valid = !loaded.has_errors();
    if args.json {
        let out = Output {
            valid,
            stacks: loaded.state.stacks.keys().map(String::as_str).collect(),
            failed: &loaded.failed,
            diagnostics: &loaded.diagnostics,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for d in &loaded.diagnostics {
            eprintln!("{d}");
        }
        let stacks = loaded.state.stacks.len();
        let services: usize = loaded.state.stacks.values().map(|s| s.services.len()).sum();
        let errors = loaded.diagnostics.iter().filter(|d| d.is_error()).count();
        let warnings = loaded.diagnostics.len() - errors;
        if valid {
            println!(
                "{}: {stacks} {}, {services} {}: valid{}",
                args.path.display(),
                plural(stacks, "stack"),
                plural(services, "service"),
                if warnings > 0 {
                    format!(" ({warnings} {})", plural(warnings, "warning"))
                } else {
                    String::new()
                }
            );
        } else {
            println!(
                "{}: {errors} {} in {} {}",
                args.path.display(),
                plural(errors, "error"),
                loaded.failed.len(),
                plural(loaded.failed.len(), "stack")
            );
        }
    }
    Ok(if valid { 0 } else { 1 })
}

pub fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        word.to_string()
    } else {
        format!("{word}s")
    }
}
