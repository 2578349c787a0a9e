//! Where the CLI reads stacks from: a directory on disk, a single compose file, or a git ref;
//! and which variables their `${VAR}`s see. One set of flags for every command that reads
//! stacks, so that `validate` and `plan` in CI see what `up` on the cluster will see.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

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

/// The variables an operator passes to the stacks, on top of their `.env` files.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct EnvArgs {
    /// Variables for ${VAR} interpolation from a file of KEY=value lines (repeatable; later
    /// files win). They win over the stacks' .env files.
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_files: Vec<PathBuf>,
    /// Pass one variable: NAME takes its value from this process's environment, NAME=VALUE
    /// sets it (repeatable). Nothing else of the environment reaches the stacks, and never the
    /// reconciler's own RECONCILER_* settings.
    #[arg(long = "env", value_name = "NAME[=VALUE]")]
    pub env: Vec<String>,
}

/// Variables named like the reconciler's own settings: a stack must never read them.
fn is_own_setting(name: &str) -> bool {
    name.starts_with("RECONCILER_")
}

impl EnvArgs {
    /// Resolve the variables now (files read, names looked up), refusing what may not pass.
    pub fn variables(&self) -> anyhow::Result<BTreeMap<String, String>> {
        let mut vars = BTreeMap::new();
        for file in &self.env_files {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading --env-file {}", file.display()))?;
            let pairs = crate::spec::dotenv::parse(&text)
                .map_err(|e| anyhow::anyhow!("{}:{}: {}", file.display(), e.line, e.message))?;
            for (k, v) in pairs {
                if is_own_setting(&k) {
                    bail!("{}: {k}: the reconciler's own settings (RECONCILER_*) are never passed to stacks", file.display());
                }
                vars.insert(k, v);
            }
        }
        for item in &self.env {
            let (name, value) = match item.split_once('=') {
                Some((n, v)) => (n.to_string(), v.to_string()),
                None => {
                    let v = std::env::var(item).with_context(|| {
                        format!("--env {item}: the variable is not set in this environment")
                    })?;
                    (item.clone(), v)
                }
            };
            if name.is_empty() || name.contains(char::is_whitespace) {
                bail!("--env {item:?}: expected NAME or NAME=VALUE");
            }
            if is_own_setting(&name) {
                bail!("--env {name}: the reconciler's own settings (RECONCILER_*) are never passed to stacks");
            }
            vars.insert(name, value);
        }
        Ok(vars)
    }
}

/// The stacks a command reads: a path (a stacks directory, one stack's directory or one
/// file), optionally at a git revision, with the variables passed to them.
#[derive(Debug, Clone, clap::Args)]
pub struct SourceArgs {
    /// A stacks directory (each sub-directory with a stack file is a stack), one stack's
    /// directory, or one stack file.
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// Read the stacks from this git revision instead of the work tree.
    #[arg(long = "ref", value_name = "REF")]
    pub reference: Option<String>,
    #[command(flatten)]
    pub env: EnvArgs,
}

impl SourceArgs {
    pub fn load(&self, identities: Option<&Identities>) -> anyhow::Result<Loaded> {
        self.load_at(self.reference.as_deref(), identities)
    }

    /// The same path and variables at another revision.
    pub fn load_at(
        &self,
        reference: Option<&str>,
        identities: Option<&Identities>,
    ) -> anyhow::Result<Loaded> {
        self.load_skipping(reference, identities, BTreeSet::new())
    }

    /// Like [`SourceArgs::load_at`], leaving the stack directories `skip` unread.
    pub fn load_skipping(
        &self,
        reference: Option<&str>,
        identities: Option<&Identities>,
        skip: BTreeSet<String>,
    ) -> anyhow::Result<Loaded> {
        let options = LoadOptions {
            identities,
            variables: self.env.variables()?,
            skip,
        };
        load(&self.path, reference, &options)
    }

    /// The stacks that are bound to read the same at `reference` (None: the work tree) as at
    /// `against`: a plan between the two need not read them. None are when the path is one
    /// file.
    pub fn unchanged(
        &self,
        reference: Option<&str>,
        against: &str,
    ) -> anyhow::Result<BTreeSet<String>> {
        if self.path.is_file() {
            return Ok(BTreeSet::new());
        }
        let observed = GitTree::open(&self.path, against, "")?;
        match reference {
            Some(r) => desired::unchanged_stacks(&GitTree::open(&self.path, r, "")?, &observed),
            None => desired::unchanged_stacks(&WorkTree::new(&self.path), &observed),
        }
    }
}

/// Read the stacks at `path`: from the work tree, or from git at `reference` when given.
/// Diagnostics name files as the user would find them from the current directory.
pub fn load(
    path: &Path,
    reference: Option<&str>,
    options: &LoadOptions<'_>,
) -> anyhow::Result<Loaded> {
    let mut loaded = match reference {
        Some(r) => desired::load(&GitTree::open(path, r, "")?, options)?,
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
            let tree = WorkTree::new(dir);
            let stack = desired::Tree::name(&tree);
            let mut loaded = desired::load_file(&tree, "", name, options)?;
            // load_file names the stack after the directory given; use the real one.
            if let Some(spec) = loaded.state.stacks.remove("stack") {
                loaded.state.stacks.insert(stack, spec);
            }
            shown_all(&mut loaded, dir);
            return Ok(loaded);
        }
        None if path.is_dir() => desired::load(&WorkTree::new(path), options)?,
        None => bail!("{}: no such file or directory", path.display()),
    };
    shown_all(&mut loaded, path);
    Ok(loaded)
}

fn shown_all(loaded: &mut Loaded, root: &Path) {
    for d in loaded
        .diagnostics
        .iter_mut()
        .chain(loaded.blocked.values_mut().flatten())
    {
        // A diagnostic about the whole tree names no file (its message says where).
        if !d.file.is_empty() {
            d.file = shown(root, &d.file);
        }
    }
}

fn shown(root: &Path, file: &str) -> String {
    if root == Path::new(".") || root.as_os_str().is_empty() {
        file.to_string()
    } else {
        root.join(file).display().to_string()
    }
}
