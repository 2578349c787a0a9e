//! The stacks repo as a [`DesiredState`]: each directory holding a compose file is a stack named
//! after the directory. Reading is pure given a [`Tree`]; the tree decides whether the bytes
//! come from a work tree or a git commit.
//!
//! A stack with errors is left out of the state and reported; the others still load, so one
//! broken stack never hides the plan of the rest (the caller decides whether to refuse the
//! whole commit).

pub mod tree;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::secrets::{self, Identities};
use crate::spec::{self, Diagnostic, StackSpec, Variables};
pub use tree::{GitTree, Tree, WorkTree};

/// File names that make a directory a stack, in order of preference: the names swarm stacks
/// use first (`docker-stack.yml` is the most common in public repositories), then Compose's
/// own names in the order `docker compose` prefers them. A directory that holds several is
/// read from the first, with a warning naming the others (a repo often keeps a
/// `docker-compose.yml` for local development beside its `docker-stack.yml`).
pub const STACK_FILE_NAMES: [&str; 7] = [
    "docker-stack.yml",
    "docker-stack.yaml",
    "stack.yml",
    "compose.yaml",
    "compose.yml",
    "docker-compose.yaml",
    "docker-compose.yml",
];

/// A file at the stacks root that says "no stacks, on purpose": without it, a path with no
/// stack is refused (a wrong `--path` must not remove everything).
pub const KEEP_FILE: &str = ".keep";

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
    /// When given, every age-encrypted secret is decrypted once to prove the key works; a
    /// stack whose secrets do not decrypt is [`Loaded::blocked`].
    pub identities: Option<&'a Identities>,
    /// Variables the operator passed explicitly (`--env-file`, `--env NAME`). They win over
    /// the stacks' `.env` files, as the environment does for `docker compose`; nothing else
    /// of the process environment is ever read.
    pub variables: BTreeMap<String, String>,
    /// Stack directories not to read (a plan skips the stacks [`unchanged_stacks`] found).
    pub skip: BTreeSet<String>,
}

#[derive(Debug, Default)]
pub struct Loaded {
    pub state: DesiredState,
    pub diagnostics: Vec<Diagnostic>,
    /// Stacks that were found but had errors (and so are not in `state`).
    pub failed: Vec<String>,
    /// Valid stacks whose secrets cannot be decrypted with the identities given, with why.
    /// They are not in `state`; `up` keeps what runs of them, and applies the others.
    pub blocked: BTreeMap<String, Vec<Diagnostic>>,
    /// The path holds no stack at all (and no `.keep`): set with an error diagnostic.
    pub no_stacks: Option<NoStacks>,
    /// Stack directories left unread because the options said so.
    pub skipped: BTreeSet<String>,
}

/// Why a path gave no stacks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoStacks {
    /// The stacks directory is not there at all.
    Missing,
    /// It is there, with no stack in it or under it.
    Empty,
}

impl Loaded {
    /// Take in what another part of the tree gave.
    fn merge(&mut self, part: Loaded) {
        self.state.stacks.extend(part.state.stacks);
        self.diagnostics.extend(part.diagnostics);
        self.failed.extend(part.failed);
        self.blocked.extend(part.blocked);
    }

    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// Every diagnostic, including those of blocked stacks, in file order.
    pub fn all_diagnostics(&self) -> Vec<&Diagnostic> {
        let mut all: Vec<&Diagnostic> = self
            .diagnostics
            .iter()
            .chain(self.blocked.values().flatten())
            .collect();
        all.sort_by(|a, b| (&a.file, a.line, a.col).cmp(&(&b.file, b.line, b.col)));
        all
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
    fn entry(&self, relative: &str) -> Result<Option<spec::PathEntry>, String> {
        let path = tree::join_inside(self.dir, relative)?;
        repo_entry(self.tree, &path)
    }
}

/// A directory mounted from the repo holds at most this many files...
pub const MAX_MOUNT_FILES: usize = 10_000;
/// ...and at most this many bytes (a repo file mount is copied onto every node that runs it).
pub const MAX_MOUNT_BYTES: u64 = 64 << 20;

/// What `path` (relative to the stacks root) names in the tree, with its content version. A
/// directory's version covers every file's path, mode and content, so it changes exactly when
/// what a container would see changes; the same content gives the same version in a work tree
/// and in git.
pub fn repo_entry(tree: &dyn Tree, path: &str) -> Result<Option<spec::PathEntry>, String> {
    let err = |e: anyhow::Error| format!("{e:#}");
    if let Some(files) = tree.walk(path).map_err(err)? {
        if files.len() > MAX_MOUNT_FILES {
            return Err(format!(
                "{path}/ holds {} files; a directory mounted from the repo may hold at most {MAX_MOUNT_FILES}",
                files.len()
            ));
        }
        let mut hash = sha2::Sha256::new();
        let mut total: u64 = 0;
        for f in &files {
            let full = join(path, &f.path);
            if f.link {
                return Err(format!(
                    "{full} is a symbolic link (or not a regular file): a directory mounted from the repo may hold only files and directories"
                ));
            }
            let bytes = tree.read(&full).map_err(err)?.unwrap_or_default();
            total = total.saturating_add(bytes.len() as u64);
            if total > MAX_MOUNT_BYTES {
                return Err(format!(
                    "{path}/ holds more than {} MiB; a directory mounted from the repo may hold at most that",
                    MAX_MOUNT_BYTES >> 20
                ));
            }
            hash.update(f.path.as_bytes());
            hash.update(if f.executable { b"\0x\0" } else { b"\0-\0" });
            hash.update(spec::normalise::content_version(&bytes).as_bytes());
            hash.update(b"\n");
        }
        return Ok(Some(spec::PathEntry {
            path: path.to_string(),
            dir: true,
            version: format!("d{}", hex::encode(&hash.finalize()[..8])),
        }));
    }
    match tree.read(path).map_err(err)? {
        Some(bytes) if bytes.len() as u64 > MAX_MOUNT_BYTES => Err(format!(
            "{path} is larger than {} MiB, the most a file mounted from the repo may be",
            MAX_MOUNT_BYTES >> 20
        )),
        Some(bytes) => Ok(Some(spec::PathEntry {
            path: path.to_string(),
            dir: false,
            version: spec::normalise::content_version(&bytes),
        })),
        None => Ok(None),
    }
}

/// A directory's stack file: its path, its bytes, and a warning when there were several.
type StackFile = (String, Vec<u8>, Option<Diagnostic>);

/// The stack file of a directory, if it has one; with a warning when it has several.
fn stack_file(tree: &dyn Tree, dir: &str) -> anyhow::Result<Option<StackFile>> {
    let mut found: Vec<(String, Vec<u8>)> = Vec::new();
    for name in STACK_FILE_NAMES {
        let path = join(dir, name);
        if let Some(bytes) = tree.read(&path)? {
            found.push((path, bytes));
        }
    }
    let mut found = found.into_iter();
    let Some((file, bytes)) = found.next() else {
        return Ok(None);
    };
    let base = |p: &str| p.rsplit('/').next().unwrap_or(p).to_string();
    let others: Vec<String> = found.map(|(p, _)| base(&p)).collect();
    let warning = (!others.is_empty()).then(|| {
        Diagnostic::warning(
            &file,
            spec::yaml::Span::default(),
            "",
            format!(
                "this directory also holds {}: only {} is read (the first of {})",
                others.join(", "),
                base(&file),
                STACK_FILE_NAMES.join(", ")
            ),
        )
    });
    Ok(Some((file, bytes, warning)))
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Read every stack of the tree. A tree whose root holds a stack file is one stack, named after
/// the directory (so `reconciler validate` works inside a stack directory); otherwise each
/// sub-directory holding one is a stack. Problems with one stack (its file, its `.env`, a link
/// out of the repo) are that stack's diagnostics; only a tree that cannot be read is an `Err`.
pub fn load(tree: &dyn Tree, options: &LoadOptions<'_>) -> anyhow::Result<Loaded> {
    let mut out = Loaded {
        state: DesiredState {
            revision: tree.revision(),
            stacks: BTreeMap::new(),
        },
        ..Default::default()
    };
    if !tree.is_dir("")? {
        out.no_stacks = Some(NoStacks::Missing);
        out.diagnostics.push(Diagnostic::error(
            "",
            spec::yaml::Span::default(),
            "",
            format!(
                "{}: no such directory: there are no stacks to read",
                tree.describe()
            ),
        ));
        return Ok(out);
    }
    let root_env = read_dotenv(tree, ".env");
    match stack_file(tree, "") {
        Ok(Some((file, bytes, warning))) => {
            out.diagnostics.extend(warning);
            let stack = tree.name();
            // A stack file committed at the root of a directory of stacks would otherwise
            // replace them all (and `up` would remove them): refuse to guess.
            let nested: Vec<String> = tree
                .subdirs("")?
                .into_iter()
                .filter(|d| !d.starts_with('.') && matches!(stack_file(tree, d), Ok(Some(_))))
                .collect();
            if !nested.is_empty() {
                out.diagnostics.push(Diagnostic::error(
                    &file,
                    spec::yaml::Span::default(),
                    "",
                    format!(
                        "this directory holds a stack file and also directories of stacks ({}): it is read either as one stack or as a directory of stacks, not both; move {file} into a directory of its own (or point the path at one stack)",
                        nested.join(", ")
                    ),
                ));
                out.failed.push(stack);
                return Ok(out);
            }
            load_one(
                tree, &stack, "", &file, &bytes, &root_env, options, &mut out,
            );
            return Ok(out);
        }
        Ok(None) => {}
        Err(e) => {
            out.diagnostics.push(Diagnostic::error(
                "",
                spec::yaml::Span::default(),
                "",
                format!("{e:#}"),
            ));
            out.failed.push(tree.name());
            return Ok(out);
        }
    }
    // .git, .github and friends are not stacks.
    let (skipped, dirs): (Vec<String>, Vec<String>) = tree
        .subdirs("")?
        .into_iter()
        .filter(|d| !d.starts_with('.'))
        .partition(|d| options.skip.contains(d));
    for part in load_dirs(tree, &dirs, &root_env, options)? {
        out.merge(part);
    }
    out.skipped = skipped.into_iter().collect();
    let found = out.state.stacks.len() + out.failed.len() + out.blocked.len() + out.skipped.len();
    if found == 0 && !matches!(tree.read(KEEP_FILE), Ok(Some(_))) {
        out.no_stacks = Some(NoStacks::Empty);
        out.diagnostics.push(Diagnostic::error(
            "",
            spec::yaml::Span::default(),
            "",
            format!(
                "{}: no stack here: looked for {} in this directory and in each directory under it (commit an empty {KEEP_FILE} here to mean no stacks on purpose)",
                tree.describe(),
                STACK_FILE_NAMES.join(", ")
            ),
        ));
    }
    check_across_stacks(tree, &mut out);
    Ok(out)
}

/// Stacks a thread reads at least, before a second thread is worth starting.
const STACKS_PER_THREAD: usize = 8;

/// Read each directory's stack; several at once when there are many (parsing is CPU-bound and
/// independent per stack), each thread on its own handle of the tree. The parts come back in
/// directory order, so the output does not depend on the threads.
fn load_dirs(
    tree: &dyn Tree,
    dirs: &[String],
    root_env: &Result<BTreeMap<String, String>, Diagnostic>,
    options: &LoadOptions<'_>,
) -> anyhow::Result<Vec<Loaded>> {
    let one = |tree: &dyn Tree, dir: &str| {
        let mut out = Loaded::default();
        match stack_file(tree, dir) {
            Ok(Some((file, bytes, warning))) => {
                out.diagnostics.extend(warning);
                load_one(tree, dir, dir, &file, &bytes, root_env, options, &mut out);
            }
            Ok(None) => {}
            Err(e) => {
                out.diagnostics.push(Diagnostic::error(
                    dir,
                    spec::yaml::Span::default(),
                    "",
                    format!("{e:#}"),
                ));
                out.failed.push(dir.to_string());
            }
        }
        out
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(dirs.len() / STACKS_PER_THREAD)
        .max(1);
    if threads == 1 {
        return Ok(dirs.iter().map(|d| one(tree, d)).collect());
    }
    let chunk = dirs.len().div_ceil(threads);
    let forks = (1..threads)
        .map(|_| tree.fork())
        .collect::<anyhow::Result<Vec<_>>>()?;
    std::thread::scope(|scope| {
        let one = &one;
        let others: Vec<_> = dirs
            .chunks(chunk)
            .skip(1)
            .zip(forks)
            .map(|(part, fork)| {
                scope.spawn(move || part.iter().map(|d| one(&*fork, d)).collect::<Vec<_>>())
            })
            .collect();
        let mut all: Vec<Loaded> = dirs[..chunk].iter().map(|d| one(tree, d)).collect();
        for thread in others {
            match thread.join() {
                Ok(parts) => all.extend(parts),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        Ok(all)
    })
}

/// The stack directories whose stacks are bound to be the same in both trees, so that a plan
/// need not read them: the same content under the directory (git object ids when both trees
/// come from git, the files' bytes otherwise), the same repo-level `.env`, and nothing read
/// from outside the directory (no symbolic link under it, no `..` in its stack file).
/// Conservative: a stack that might differ is left to be read.
pub fn unchanged_stacks(a: &dyn Tree, b: &dyn Tree) -> anyhow::Result<BTreeSet<String>> {
    let mut same = BTreeSet::new();
    // A stack at the root reads everything under it.
    let root_stack = |t: &dyn Tree| !matches!(stack_file(t, ""), Ok(None));
    if root_stack(a) || root_stack(b) || !same_content(a, b, ".env") {
        return Ok(same);
    }
    let in_b: BTreeSet<String> = b.subdirs("")?.into_iter().collect();
    for dir in a.subdirs("")? {
        // The same content on both sides: either tells whether it reads outside; the second
        // is a commit in every plan, and cheaper to look at than a work tree.
        if !dir.starts_with('.')
            && in_b.contains(&dir)
            && same_content(a, b, &dir)
            && self_contained(b, &dir)
        {
            same.insert(dir);
        }
    }
    Ok(same)
}

/// Is what is at `path` the same in both trees? Git ids where both trees have them (two
/// commits: one comparison per directory), each file's blob id otherwise (a work tree against a
/// commit, as `git status` compares). False when it cannot be told.
fn same_content(a: &dyn Tree, b: &dyn Tree, path: &str) -> bool {
    if let (Ok(Some(x)), Ok(Some(y))) = (a.object_id(path), b.object_id(path)) {
        return x == y;
    }
    let ids = |t: &dyn Tree| {
        t.blob_ids(path, MAX_MOUNT_FILES, MAX_MOUNT_BYTES)
            .ok()
            .flatten()
    };
    matches!((ids(a), ids(b)), (Some(x), Some(y)) if x == y)
}

/// A stack directory whose stack can read nothing outside it: no links, no `..`.
fn self_contained(tree: &dyn Tree, dir: &str) -> bool {
    let no_links = matches!(tree.walk(dir), Ok(Some(files)) if files.iter().all(|f| !f.link));
    let no_parent = matches!(
        stack_file(tree, dir),
        Ok(Some((_, bytes, _))) if !bytes.windows(2).any(|w| w == b"..")
    );
    no_links && no_parent
}

/// A `.env` file: its variables, or the diagnostic that says why it cannot be read.
fn read_dotenv(tree: &dyn Tree, path: &str) -> Result<BTreeMap<String, String>, Diagnostic> {
    let at_line = |line, message: String| {
        Diagnostic::error(path, spec::yaml::Span { line, col: 1 }, "", message)
    };
    match tree.read(path) {
        Ok(Some(b)) => {
            let text = std::str::from_utf8(&b)
                .map_err(|_| at_line(0, "the file is not UTF-8 text".into()))?;
            spec::dotenv::parse_map(text).map_err(|e| at_line(e.line, e.message))
        }
        Ok(None) => Ok(BTreeMap::new()),
        Err(e) => Err(at_line(0, format!("{e:#}"))),
    }
}

/// Read a single compose file that is not part of a stacks directory layout (for
/// `reconciler validate FILE`): the stack is named `stack`.
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
    load_one(
        tree,
        stack,
        dir,
        file,
        &bytes,
        &Ok(BTreeMap::new()),
        options,
        &mut out,
    );
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn load_one(
    tree: &dyn Tree,
    stack: &str,
    dir: &str,
    file: &str,
    bytes: &[u8],
    root_env: &Result<BTreeMap<String, String>, Diagnostic>,
    options: &LoadOptions<'_>,
    out: &mut Loaded,
) {
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
        return;
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        fail(out, "the file is not UTF-8 text".into());
        return;
    };
    // Variables: the repo's .env, then the stack's, then what the operator passed.
    let mut vars = match root_env {
        Ok(m) => m.clone(),
        Err(d) => {
            out.diagnostics.push(d.clone());
            out.failed.push(stack.to_string());
            return;
        }
    };
    if !dir.is_empty() {
        match read_dotenv(tree, &join(dir, ".env")) {
            Ok(m) => vars.extend(m),
            Err(d) => {
                out.diagnostics.push(d);
                out.failed.push(stack.to_string());
                return;
            }
        }
    }
    vars.extend(options.variables.clone());
    let vars = Variables::new(vars);
    let files = StackDir { tree, dir };
    let loaded = spec::load_stack(stack, file, text, &files, &vars);
    out.diagnostics.extend(loaded.diagnostics);
    let Some(spec) = loaded.spec else {
        out.failed.push(stack.to_string());
        return;
    };
    if let Some(ids) = options.identities {
        let mut undecryptable = Vec::new();
        for (key, secret) in &spec.secrets {
            if !secret.encrypted {
                continue;
            }
            let Some(source) = &secret.source else {
                continue;
            };
            let Ok(Some(ciphertext)) = tree.read(source) else {
                continue; // reading it worked a moment ago in spec; nothing new to say
            };
            if let Err(e) = secrets::decrypt(&secret.name, &ciphertext, ids) {
                let root = spec::yaml::parse(text).ok();
                let span = root
                    .map(|r| r.locate(["secrets", key.as_str(), "file"]))
                    .unwrap_or_default();
                undecryptable.push(Diagnostic::error(
                    file,
                    span,
                    format!("secrets.{key}.file"),
                    e.to_string(),
                ));
            }
        }
        if !undecryptable.is_empty() {
            out.blocked.insert(stack.to_string(), undecryptable);
            return;
        }
    }
    out.state.stacks.insert(stack.to_string(), spec);
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
