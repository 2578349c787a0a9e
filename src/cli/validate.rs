//! `reconciler validate [PATH]`: check a stacks directory or a single compose file, and the
//! repository's `reconciler.toml` (the cluster refuses a commit with a broken one).

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
    /// What is wrong with `reconciler.toml`, each naming its line and field.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    config_errors: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<i32> {
    crate::spec::schema::prepare_in_background();
    let identities = args.identity.load()?;
    let loaded = args.source.load(identities.as_ref())?;
    // A stack whose secrets do not decrypt is an error here: CI should say so before the
    // cluster does.
    let config_errors = config_errors(&args.source)?;
    let valid = !loaded.has_errors() && loaded.blocked.is_empty() && config_errors.is_empty();
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
            config_errors,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for d in &diagnostics {
            eprintln!("{d}");
        }
        for e in &config_errors {
            eprintln!("{e}");
        }
        let stacks = loaded.state.stacks.len();
        let services: usize = loaded.state.stacks.values().map(|s| s.services.len()).sum();
        let stack_errors = diagnostics.iter().filter(|d| d.is_error()).count();
        let warnings = diagnostics.len() - stack_errors;
        let errors = stack_errors + config_errors.len();
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

/// The errors of `reconciler.toml` at the root of the repository that holds PATH (or in PATH
/// when it is in none), at `--ref` when given; none without the file.
fn config_errors(source: &SourceArgs) -> anyhow::Result<Vec<String>> {
    use crate::desired::tree::{GitTree, WorkTree};
    use crate::notify::config::load;
    let dir = if source.path.is_file() {
        source
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."))
            .to_path_buf()
    } else {
        source.path.clone()
    };
    let root = git2::Repository::discover(&dir)
        .ok()
        .and_then(|r| r.workdir().map(|w| w.to_path_buf()));
    let result = match (&source.reference, &root) {
        (Some(r), Some(root)) => {
            let tree = GitTree::open(root, r, "")?;
            load(&tree, r)
        }
        (_, Some(root)) => load(&WorkTree::new(root), "the work tree"),
        (_, None) => load(&WorkTree::new(&dir), "the work tree"),
    };
    Ok(result.err().unwrap_or_default())
}

pub fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        word.to_string()
    } else {
        format!("{word}s")
    }
}
