//! `reconciler validate [PATH]`: check a stacks directory or a single compose file.

use serde::Serialize;

use super::source::{IdentityArgs, SourceArgs};
use crate::spec::Diagnostic;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    source: SourceArgs,
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
    failed: Vec<&'a str>,
    diagnostics: Vec<&'a Diagnostic>,
}

pub fn run(args: Args) -> anyhow::Result<i32> {
    crate::spec::schema::prepare_in_background();
    let identities = args.identity.load()?;
    let loaded = args.source.load(identities.as_ref())?;
    // A stack whose secrets do not decrypt is an error here: CI should say so before the
    // cluster does.
    let valid = !loaded.has_errors() && loaded.blocked.is_empty();
    let diagnostics = loaded.all_diagnostics();
    let failed: Vec<&str> = loaded
        .failed
        .iter()
        .chain(loaded.blocked.keys())
        .map(String::as_str)
        .collect();
    let path = args.source.path.display();
    if args.json {
        let out = Output {
            valid,
            stacks: loaded.state.stacks.keys().map(String::as_str).collect(),
            failed,
            diagnostics,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for d in &diagnostics {
            eprintln!("{d}");
        }
        let stacks = loaded.state.stacks.len();
        let services: usize = loaded.state.stacks.values().map(|s| s.services.len()).sum();
        let errors = diagnostics.iter().filter(|d| d.is_error()).count();
        let warnings = diagnostics.len() - errors;
        if valid {
            println!(
                "{path}: {stacks} {}, {services} {}: valid{}",
                plural(stacks, "stack"),
                plural(services, "service"),
                if warnings > 0 {
                    format!(" ({warnings} {})", plural(warnings, "warning"))
                } else {
                    String::new()
                }
            );
        } else if failed.is_empty() {
            println!("{path}: {errors} {}", plural(errors, "error"));
        } else {
            println!(
                "{path}: {errors} {} in {} {}",
                plural(errors, "error"),
                failed.len(),
                plural(failed.len(), "stack")
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
