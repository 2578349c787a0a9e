//! The stack file format: read a Compose v3 file into the normalised [`model::StackSpec`].
//!
//! Two stages, as in ripgrep's LowArgs → HiArgs: the file as written ([`raw`], also the source
//! of the JSON Schema), then the canonical model ([`model`]). In between, every error of the file
//! is collected with its line, column and YAML path:
//!
//! ```text
//! text ─yaml::parse─▶ Node (spans, anchors, merge keys)
//!      ─interpolate─▶ Node (${VAR:-default} resolved)
//!      ─to_json + cast─▶ JSON ─schema::check─▶ structural errors, all at once
//!      ─serde─▶ raw::ComposeFile ─normalise─▶ StackSpec + semantic errors
//! ```
//!
//! This module does no I/O: files next to the stack (env files, secrets, configs) are read
//! through [`StackFiles`], which the `desired` module implements for work trees and git trees.

pub mod constraint;
pub mod diagnostic;
pub mod dotenv;
mod ignored;
pub mod interpolate;
pub mod model;
pub mod normalise;
pub mod raw;
pub mod schema;
pub mod units;
pub mod yaml;

use serde_json::Value as Json;

pub use diagnostic::{Diagnostic, Severity};
pub use interpolate::Variables;
pub use model::StackSpec;

/// Access to the files of a stack directory, for `env_file`, secrets and configs.
pub trait StackFiles {
    /// Read a file named relative to the stack directory. `Ok(None)` if it does not exist;
    /// `Err` with a message for paths that leave the stacks root or cannot be read.
    fn read(&self, relative: &str) -> Result<Option<Vec<u8>>, String>;
    /// The path as people should see it (relative to the stacks root).
    fn display(&self, relative: &str) -> String;
}

/// No files at all: for parsing a lone document (tests, fuzzing, `schema` checks).
pub struct NoFiles;

impl StackFiles for NoFiles {
    fn read(&self, _: &str) -> Result<Option<Vec<u8>>, String> {
        Ok(None)
    }
    fn display(&self, relative: &str) -> String {
        relative.to_string()
    }
}

/// The outcome of reading one stack file: the spec when there were no errors, and every
/// diagnostic (errors and warnings) in file order.
#[derive(Debug)]
pub struct Loaded {
    pub spec: Option<StackSpec>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Loaded {
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_error())
    }
}

/// Read one stack file. `file` is the path shown in messages; `stack` names the stack.
pub fn load_stack(
    stack: &str,
    file: &str,
    text: &str,
    files: &dyn StackFiles,
    vars: &Variables,
) -> Loaded {
    let fail = |d: Diagnostic| Loaded {
        spec: None,
        diagnostics: vec![d],
    };
    let mut root = match yaml::parse(text) {
        Ok(root) => root,
        Err(e) => {
            return fail(Diagnostic::error(
                file,
                e.span,
                "",
                format!("invalid YAML: {}", e.message),
            ))
        }
    };
    if root.as_map().is_none() {
        return fail(Diagnostic::error(
            file,
            root.span,
            "",
            "a stack file is a mapping with a services: key",
        ));
    }

    let mut interpolation_errors = Vec::new();
    interpolate::interpolate_tree(&mut root, vars, &mut interpolation_errors);
    let mut report = diagnostic::Report::new(file, &root);
    for e in interpolation_errors {
        report
            .items
            .push(Diagnostic::error(file, e.span, "", e.message));
    }

    let mut json = root.to_json();
    cast_known_fields(&mut json);
    check_version(&json, &mut report);
    schema::check(&json, &mut report);
    warn_ignored(&json, &mut report);

    let spec = if report.has_errors() {
        None
    } else {
        match serde_path_to_error::deserialize::<_, raw::ComposeFile>(json) {
            Ok(raw) => {
                let cx = normalise::Context { stack, files, vars };
                let spec = normalise::normalise(raw, &cx, &mut report);
                (!report.has_errors()).then_some(spec)
            }
            Err(e) => {
                // The schema should have caught this; report it as well as we can anyway.
                let path: Vec<String> = e
                    .path()
                    .to_string()
                    .split('.')
                    .map(str::to_string)
                    .collect();
                report.error(&path, e.into_inner().to_string());
                None
            }
        }
    };
    let mut diagnostics = report.items;
    diagnostics.sort_by_key(|d| (d.line, d.col));
    diagnostics.dedup();
    Loaded { spec, diagnostics }
}

/// Stack files written for `docker stack deploy` use Compose format 3.x; files without
/// `version:` follow the Compose specification. Anything else is refused with a reason.
fn check_version(json: &Json, report: &mut diagnostic::Report<'_>) {
    let Some(v) = json.get("version") else { return };
    let text = match v {
        Json::String(s) => s.clone(),
        Json::Number(n) => n.to_string(),
        _ => return, // the schema reports the type
    };
    let ok = text == "3"
        || text
            .strip_prefix("3.")
            .is_some_and(|m| m.parse::<u8>().is_ok_and(|m| m <= 9));
    if !ok {
        report.error(
            &["version"],
            format!("unsupported Compose file format {text:?}: swarm mode stacks use 3.0 to 3.9, or no version: at all"),
        );
    }
}

fn warn_ignored(json: &Json, report: &mut diagnostic::Report<'_>) {
    let Some(top) = json.as_object() else { return };
    for (key, hint) in ignored::TOP_LEVEL_KEYS {
        if top.contains_key(*key) {
            report.key_warning(&[*key], ignored_message(hint));
        }
    }
    let Some(services) = top.get("services").and_then(Json::as_object) else {
        return;
    };
    for (name, svc) in services {
        let Some(svc) = svc.as_object() else { continue };
        for (key, hint) in ignored::SERVICE_KEYS {
            if svc.contains_key(*key) {
                report.key_warning(&["services", name, key], ignored_message(hint));
            }
        }
    }
}

fn ignored_message(hint: &str) -> String {
    if hint.is_empty() {
        "ignored in swarm mode".into()
    } else {
        format!("ignored in swarm mode; {hint}")
    }
}

#[derive(Clone, Copy)]
enum Cast {
    Int,
    Float,
    Bool,
}

/// Where Compose turns interpolated text into numbers and booleans (docker/cli's
/// interpolation type-cast table): `replicas: "${REPLICAS:-2}"` is the number 2.
const CASTS: &[(&[&str], Cast)] = &[
    (&["services", "*", "deploy", "replicas"], Cast::Int),
    (
        &["services", "*", "deploy", "update_config", "parallelism"],
        Cast::Int,
    ),
    (
        &[
            "services",
            "*",
            "deploy",
            "update_config",
            "max_failure_ratio",
        ],
        Cast::Float,
    ),
    (
        &["services", "*", "deploy", "rollback_config", "parallelism"],
        Cast::Int,
    ),
    (
        &[
            "services",
            "*",
            "deploy",
            "rollback_config",
            "max_failure_ratio",
        ],
        Cast::Float,
    ),
    (
        &["services", "*", "deploy", "restart_policy", "max_attempts"],
        Cast::Int,
    ),
    (
        &[
            "services",
            "*",
            "deploy",
            "placement",
            "max_replicas_per_node",
        ],
        Cast::Int,
    ),
    (&["services", "*", "healthcheck", "retries"], Cast::Int),
    (&["services", "*", "healthcheck", "disable"], Cast::Bool),
    (&["services", "*", "init"], Cast::Bool),
    (&["services", "*", "read_only"], Cast::Bool),
    (&["services", "*", "tty"], Cast::Bool),
    (&["services", "*", "stdin_open"], Cast::Bool),
    (&["services", "*", "ports", "*", "target"], Cast::Int),
    (&["services", "*", "ports", "*", "published"], Cast::Int),
    (&["services", "*", "secrets", "*", "mode"], Cast::Int),
    (&["services", "*", "configs", "*", "mode"], Cast::Int),
    (&["services", "*", "ulimits", "*"], Cast::Int),
    (&["services", "*", "ulimits", "*", "soft"], Cast::Int),
    (&["services", "*", "ulimits", "*", "hard"], Cast::Int),
    (&["services", "*", "volumes", "*", "read_only"], Cast::Bool),
    (
        &["services", "*", "volumes", "*", "volume", "nocopy"],
        Cast::Bool,
    ),
    (&["networks", "*", "external"], Cast::Bool),
    (&["networks", "*", "internal"], Cast::Bool),
    (&["networks", "*", "attachable"], Cast::Bool),
    (&["volumes", "*", "external"], Cast::Bool),
    (&["secrets", "*", "external"], Cast::Bool),
    (&["configs", "*", "external"], Cast::Bool),
];

fn cast_known_fields(json: &mut Json) {
    for (path, cast) in CASTS {
        cast_at(json, path, *cast);
    }
}

fn cast_at(v: &mut Json, path: &[&str], cast: Cast) {
    let Some((head, rest)) = path.split_first() else {
        if let Json::String(s) = v {
            let t = s.trim();
            let new = match cast {
                Cast::Int => t.parse::<i64>().ok().map(Json::from),
                Cast::Float => t
                    .parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite())
                    .map(Json::from),
                Cast::Bool => match t.to_ascii_lowercase().as_str() {
                    "true" | "yes" | "y" | "on" => Some(Json::Bool(true)),
                    "false" | "no" | "n" | "off" => Some(Json::Bool(false)),
                    _ => None,
                },
            };
            if let Some(new) = new {
                *v = new;
            }
        }
        return;
    };
    match (v, *head) {
        (Json::Object(m), "*") => m.values_mut().for_each(|c| cast_at(c, rest, cast)),
        (Json::Array(a), "*") => a.iter_mut().for_each(|c| cast_at(c, rest, cast)),
        (Json::Object(m), key) => {
            if let Some(c) = m.get_mut(key) {
                cast_at(c, rest, cast);
            }
        }
        _ => {}
    }
}
