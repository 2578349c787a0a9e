//! Where the CLI reads stacks from: a directory on disk, a single compose file, or a git ref.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::desired::{self, GitTree, LoadOptions, Loaded, WorkTree};
use crate::secrets::Identities;

/// Age identity options shared by the commands that read secrets.
#[derive(Debug, Clone, clap::Args)]
pub struct IdentityArgs {
    /// age identity file used to check that encrypted secrets decrypt (or set
    /// RECONCILER_AGE_IDENTITY_FILE / RECONCILER_AGE_IDENTITY).
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
}

impl IdentityArgs {
    pub fn load(&self) -> anyhow::Result<Option<Identities>> {
        Ok(Identities::discover(self.identity.as_deref())?)
    }
}

/// Read the stacks at `path`: from the work tree, or from git at `reference` when given.
/// Diagnostics name files as the user would find them from the current directory.
pub fn load(
    path: &Path,
    reference: Option<&str>,
    identities: Option<&Identities>,
) -> anyhow::Result<Loaded> {
    let options = LoadOptions {
        identities,
        process_env: true,
    };
    let mut loaded = match reference {
        Some(r) => desired::load(&GitTree::open(path, r, "")?, &options)?,
        None if path.is_file() => {
            // A bare file name has an empty parent: the current directory.
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .context("file name is not UTF-8")?;
            let stack = std::fs::canonicalize(dir)
                .ok()
                .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "stack".into());
            let tree = WorkTree::new(dir);
            let mut loaded = desired::load_file(&tree, "", name, &options)?;
            // load_file names the stack after the directory given; use the real one.
            if let Some(spec) = loaded.state.stacks.remove("stack") {
                loaded.state.stacks.insert(stack, spec);
            }
            for d in &mut loaded.diagnostics {
                d.file = shown(dir, &d.file);
            }
            return Ok(loaded);
        }
        None if path.is_dir() => desired::load(&WorkTree::new(path), &options)?,
        None => anyhow::bail!("{}: no such file or directory", path.display()),
    };
    for d in &mut loaded.diagnostics {
        d.file = shown(path, &d.file);
    }
    Ok(loaded)
}

fn shown(root: &Path, file: &str) -> String {
    if root == Path::new(".") || root.as_os_str().is_empty() {
        file.to_string()
    } else {
        root.join(file).display().to_string()
    }
}
