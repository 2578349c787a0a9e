//! The stacks repo as a [`DesiredState`]: each directory holding a compose file is a stack named
//! after the directory. Reading is pure given a [`Tree`]; the tree decides whether the bytes
//! come from a work tree or a git commit.
//!
//! A stack with errors is left out of the state and reported; the others still load, so one
//! broken stack never hides the plan of the rest (the caller decides whether to refuse the
//! whole commit).

pub mod tree;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::secrets::{self, Identities};
use crate::spec::{self, Diagnostic, StackSpec, Variables};
pub use tree::{GitTree, Tree, WorkTree};

/// File names that make a directory a stack, in order of preference.
pub const STACK_FILE_NAMES: [&str; 5] = [
    "compose.yml",
    "compose.yaml",
    "docker-compose.yml",
    "docker-compose.yaml",
    "stack.yml",
];

/// What the repo asks for: every stack, keyed by name.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DesiredState {
    /// The git commit this state was read from, if it came from git.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    pub stacks: BTreeMap<String, StackSpec>,
}

#[derive(Debug, Default)]
pub struct LoadOptions<'a> {
    /// When given, every age-encrypted secret is decrypted once to prove the key works.
    pub identities: Option<&'a Identities>,
    /// Interpolate from the process environment too (over `.env`), as `docker stack deploy`
    /// does; off for reproducible loads (tests, benchmarks).
    pub process_env: bool,
}

#[derive(Debug, Default)]
pub struct Loaded {
    pub state: DesiredState,
    pub diagnostics: Vec<Diagnostic>,
    /// Stacks that were found but had errors (and so are not in `state`).
    pub failed: Vec<String>,
}

impl Loaded {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// The files of one stack directory, as `spec` sees them.
struct StackDir<'a> {
    tree: &'a dyn Tree,
    dir: &'a str,
}

impl spec::StackFiles for StackDir<'_> {
    fn read(&self, relative: &str) -> Result<Option<Vec<u8>>, String> {
        let path = tree::join_inside(self.dir, relative)?;
        self.tree.read(&path).map_err(|e| format!("{e:#}"))
    }
    fn display(&self, relative: &str) -> String {
        tree::join_inside(self.dir, relative).unwrap_or_else(|_| relative.to_string())
    }
}

/// Read every stack of the tree.
pub fn load(tree: &dyn Tree, options: &LoadOptions<'_>) -> anyhow::Result<Loaded> {
    let mut out = Loaded {
        state: DesiredState {
            revision: tree.revision(),
            stacks: BTreeMap::new(),
        },
        ..Default::default()
    };
    for dir in tree.subdirs("")? {
        if dir.starts_with('.') {
            continue; // .git, .github and friends
        }
        let mut found = Vec::new();
        for name in STACK_FILE_NAMES {
            let path = format!("{dir}/{name}");
            if let Some(bytes) = tree.read(&path)? {
                found.push((path, bytes));
            }
        }
        let Some((file, bytes)) = found.first() else {
            continue;
        };
        if found.len() > 1 {
            let names: Vec<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
            out.diagnostics.push(Diagnostic::error(
                file,
                spec::yaml::Span::default(),
                "",
                format!(
                    "{dir} holds more than one stack file ({}): keep one",
                    names.join(", ")
                ),
            ));
            out.failed.push(dir.clone());
            continue;
        }
        load_one(tree, &dir, file, bytes, options, &mut out)?;
    }
    check_across_stacks(tree, &mut out);
    Ok(out)
}

/// Read a single compose file that is not part of a stacks directory layout (for
/// `reconciler validate FILE`): the stack is named after the file's directory.
pub fn load_file(
    tree: &dyn Tree,
    dir: &str,
    file: &str,
    options: &LoadOptions<'_>,
) -> anyhow::Result<Loaded> {
    let mut out = Loaded::default();
    let bytes = tree
        .read(file)?
        .ok_or_else(|| anyhow::anyhow!("{file}: no such file"))?;
    let stack = if dir.is_empty() {
        "stack"
    } else {
        dir.rsplit('/').next().unwrap_or(dir)
    };
    load_one_named(tree, stack, dir, file, &bytes, options, &mut out)?;
    Ok(out)
}

fn load_one(
    tree: &dyn Tree,
    dir: &str,
    file: &str,
    bytes: &[u8],
    options: &LoadOptions<'_>,
    out: &mut Loaded,
) -> anyhow::Result<()> {
    load_one_named(tree, dir, dir, file, bytes, options, out)
}

fn load_one_named(
    tree: &dyn Tree,
    stack: &str,
    dir: &str,
    file: &str,
    bytes: &[u8],
    options: &LoadOptions<'_>,
    out: &mut Loaded,
) -> anyhow::Result<()> {
    let fail = |out: &mut Loaded, message: String| {
        out.diagnostics.push(Diagnostic::error(
            file,
            spec::yaml::Span::default(),
            "",
            message,
        ));
        out.failed.push(stack.to_string());
    };
    if !is_valid_stack_name(stack) {
        fail(
            out,
            format!("{stack:?} is not a valid stack name: use letters, digits, '-' and '_', starting with a letter or digit"),
        );
        return Ok(());
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        fail(out, "the file is not UTF-8 text".into());
        return Ok(());
    };
    let dotenv_path = if dir.is_empty() {
        ".env".to_string()
    } else {
        format!("{dir}/.env")
    };
    let dotenv = match tree.read(&dotenv_path)? {
        Some(b) => match spec::dotenv::parse_map(&String::from_utf8_lossy(&b)) {
            Ok(m) => m,
            Err(e) => {
                out.diagnostics.push(Diagnostic::error(
                    &dotenv_path,
                    spec::yaml::Span {
                        line: e.line,
                        col: 1,
                    },
                    "",
                    e.message,
                ));
                out.failed.push(stack.to_string());
                return Ok(());
            }
        },
        None => BTreeMap::new(),
    };
    let vars = if options.process_env {
        Variables::from_dotenv_and_process(dotenv)
    } else {
        Variables::new(dotenv)
    };
    let files = StackDir { tree, dir };
    let loaded = spec::load_stack(stack, file, text, &files, &vars);
    out.diagnostics.extend(loaded.diagnostics);
    let Some(spec) = loaded.spec else {
        out.failed.push(stack.to_string());
        return Ok(());
    };
    if let Some(ids) = options.identities {
        let mut ok = true;
        for (key, secret) in &spec.secrets {
            if !secret.encrypted {
                continue;
            }
            let Some(source) = &secret.source else {
                continue;
            };
            let Some(ciphertext) = tree.read(source)? else {
                continue;
            };
            if let Err(e) = secrets::decrypt(&secret.name, &ciphertext, ids) {
                let root = spec::yaml::parse(text).ok();
                let span = root
                    .map(|r| r.locate(["secrets", key.as_str(), "file"]))
                    .unwrap_or_default();
                out.diagnostics.push(Diagnostic::error(
                    file,
                    span,
                    format!("secrets.{key}.file"),
                    e.to_string(),
                ));
                ok = false;
            }
        }
        if !ok {
            out.failed.push(stack.to_string());
            return Ok(());
        }
    }
    out.state.stacks.insert(stack.to_string(), spec);
    Ok(())
}

/// Ingress ports are cluster-wide: two stacks cannot publish the same one.
fn check_across_stacks(tree: &dyn Tree, out: &mut Loaded) {
    let mut seen: BTreeMap<(u16, spec::model::Protocol), String> = BTreeMap::new();
    let mut clashes = Vec::new();
    for stack in out.state.stacks.values() {
        for svc in stack.services.values() {
            for p in &svc.endpoint.ports {
                let Some(published) = p.published else {
                    continue;
                };
                if p.mode == spec::model::PublishMode::Host {
                    continue;
                }
                if let Some(other) = seen.insert((published, p.protocol), svc.name.clone()) {
                    if !other.starts_with(&format!("{}_", stack.name)) {
                        clashes.push((
                            stack.file.clone(),
                            stack.name.clone(),
                            svc.name.clone(),
                            published,
                            other,
                        ));
                    }
                }
            }
        }
    }
    for (file, stack, svc, port, other) in clashes {
        // Point at the service's `ports:` in its file, like every other diagnostic.
        let short = svc
            .strip_prefix(&format!("{stack}_"))
            .unwrap_or(&svc)
            .to_string();
        let path = ["services", short.as_str(), "ports"];
        let span = tree
            .read(&file)
            .ok()
            .flatten()
            .and_then(|b| spec::yaml::parse(&String::from_utf8_lossy(&b)).ok())
            .map(|root| root.locate(path))
            .unwrap_or_default();
        out.diagnostics.push(Diagnostic::error(
            &file,
            span,
            path.join("."),
            format!("port {port} is already published by service {other} of another stack (ingress ports are cluster-wide)"),
        ));
        out.state.stacks.remove(&stack);
        out.failed.push(stack);
    }
}

pub fn is_valid_stack_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_'))
}
