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

use serde::Deserialize as _;
use serde_json::Value as Json;

pub use diagnostic::{Diagnostic, Severity};
pub use interpolate::Variables;
pub use model::StackSpec;

/// Access to the files of a stack directory, for `env_file`, secrets, configs and relative
/// bind mounts.
pub trait StackFiles {
    /// Read a file named relative to the stack directory. `Ok(None)` if it does not exist;
    /// `Err` with a message for paths that leave the stacks root or cannot be read.
    fn read(&self, relative: &str) -> Result<Option<Vec<u8>>, String>;
    /// The path as people should see it (relative to the stacks root).
    fn display(&self, relative: &str) -> String;
    /// What a path relative to the stack directory names in the repo: a file, a directory
    /// (with a version over everything in it), or nothing git tracks.
    fn entry(&self, relative: &str) -> Result<Option<PathEntry>, String> {
        Ok(self.read(relative)?.map(|bytes| PathEntry {
            path: self.display(relative),
            dir: false,
            version: normalise::content_version(&bytes),
        }))
    }
}

/// A file or directory of the stacks repo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathEntry {
    /// Relative to the stacks root.
    pub path: String,
    pub dir: bool,
    /// Content hash: of the bytes of a file; of every path, mode and content of a directory.
    pub version: String,
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
///
/// Every error of the file is reported, not just the first: a value the schema refuses is
/// reported, then left out, and the rest of the file still goes through deserialisation and
/// the semantic checks (without repeating what was already said about the value left out).
pub fn load_stack(
    stack: &str,
    file: &str,
    text: &str,
    files: &dyn StackFiles,
    vars: &Variables,
) -> Loaded {
    let fail = |span: yaml::Span, message: String| Loaded {
        spec: None,
        diagnostics: vec![Diagnostic::error(file, span, "", message)],
    };
    let parsed = match yaml::parse_document(text) {
        Ok(parsed) => parsed,
        Err(e) => return fail(e.span, format!("invalid YAML: {}", e.message)),
    };
    let mut root = parsed.root;
    if parsed.empty {
        return fail(
            yaml::Span { line: 1, col: 1 },
            "the file is empty: a stack file is a mapping with a services: key".into(),
        );
    }
    if root.as_map().is_none() {
        return fail(
            root.span,
            format!(
                "expected a mapping with a services: key at the top level, found {}",
                schema::found(&root.to_json())
            ),
        );
    }

    let interpolated = interpolate::interpolate_tree(&mut root, vars);
    for path in TEXT_VALUES {
        keep_text(&mut root, path);
    }
    let mut report = diagnostic::Report::new(file, &root);
    for d in &parsed.dropped {
        report.dropped(&d.path, &d.keys);
    }
    let mut warned = std::collections::HashSet::new();
    for u in &interpolated.unset {
        // Once per variable and line, as docker compose warns once per variable.
        if warned.insert((u.name.clone(), u.span.line)) {
            report.warning(
                &u.path,
                format!(
                    "variable {} is not set: substituting an empty string (set it in .env or pass it with --env; write ${{{}:-}} if empty is meant)",
                    u.name, u.name
                ),
            );
        }
    }
    for (path, names, whole) in interpolated.blank {
        let names: Vec<String> = names.iter().map(|n| format!("${{{n}}}")).collect();
        let verb = if names.len() == 1 { "is" } else { "are" };
        let note = if whole {
            format!(
                "the value comes from {}, which {verb} unset or empty",
                names.join(" and ")
            )
        } else {
            format!(
                "{} in this value {verb} unset or empty",
                names.join(" and ")
            )
        };
        report.interpolated(path, note);
    }
    for e in parsed.errors {
        let path = diagnostic::display_path(&root, &e.path);
        report
            .items
            .push(Diagnostic::error(file, e.span, path, e.message));
        // A merge that failed leaves keys missing: "no image" would only be its echo.
        if let Some((_, map)) = e.path.split_last().filter(|(k, _)| *k == "<<") {
            report.incomplete(map.to_vec());
        }
    }

    for e in interpolated.errors {
        let path = diagnostic::display_path(&root, &e.path);
        report
            .items
            .push(Diagnostic::error(file, e.span, path, e.message));
        // The text was left as written: checking "${X:?}" as a value would only add noise.
        report.skip_under(e.path.clone());
        report.known_bad(e.path);
    }

    let mut json = root.to_json();
    cast_known_fields(&mut json);
    check_version(&json, &mut report);
    let findings = schema::check(&json, &mut report);
    check_services(&json, &findings, &mut report);
    warn_ignored(&json, &mut report);
    for path in &findings.bad_values {
        report.skip_under(path.clone());
        report.known_bad(path.clone());
    }
    for path in &findings.meant {
        report.known_bad(path.clone());
    }

    let raw = deserialise(&mut json, &findings.bad_values, &mut report);
    if raw.is_none() && !report.has_errors() {
        // Not expected to happen; but a file without a spec must say why.
        let span = root.span;
        report.items.push(Diagnostic::error(
            file,
            span,
            "",
            "the file cannot be read as a stack file",
        ));
    }
    let spec = raw.map(|raw| {
        let cx = normalise::Context { stack, files, vars };
        normalise::normalise(raw, &cx, &mut report)
    });
    let spec = spec.filter(|_| !report.has_errors());
    let mut diagnostics = report.items;
    diagnostics.sort_by_key(|d| (d.line, d.col));
    diagnostics.dedup();
    Loaded { spec, diagnostics }
}

/// Deserialise the file for the semantic checks, even when the schema refused parts of it:
/// where serde cannot read a value, the value is dropped and reading starts again. Values the
/// schema refused but serde reads (a port 0, a ratio of 1.5) stay, so that their neighbours in
/// a list are still checked; the report already knows to say nothing more about them.
fn deserialise(
    json: &mut Json,
    bad_values: &[Vec<String>],
    report: &mut diagnostic::Report<'_>,
) -> Option<raw::ComposeFile> {
    // Most files read at once: without the path tracking, which costs a tenth of a load.
    if let Ok(raw) = raw::ComposeFile::deserialize(&*json) {
        return Some(raw);
    }
    // Each round drops at least one value, so this ends; the bound is only a guard.
    for _ in 0..256 {
        let err = match serde_path_to_error::deserialize::<_, raw::ComposeFile>(&*json) {
            Ok(raw) => return Some(raw),
            Err(e) => e,
        };
        let mut path = Vec::new();
        for seg in err.path().iter() {
            match seg {
                serde_path_to_error::Segment::Seq { index } => path.push(index.to_string()),
                serde_path_to_error::Segment::Map { key } => path.push(key.clone()),
                serde_path_to_error::Segment::Enum { .. } => {}
                serde_path_to_error::Segment::Unknown => break,
            }
        }
        // serde stops at the list item (an untagged enum) holding the value it cannot read:
        // drop the values the schema named inside it first, so that the item stays.
        let original = report.original(&path);
        let inside = bad_values
            .iter()
            .filter(|b| b.len() > original.len() && b.starts_with(&original))
            .any(|b| {
                let mut at = path.clone();
                at.extend_from_slice(&b[original.len()..]);
                remove_from_mapping(json, &at)
            });
        if inside {
            continue;
        }
        // The schema let through what serde refuses (`replicas: 1e2`, a number too large for
        // its field): say so, unless the value was already reported.
        let message = err.into_inner().to_string();
        let integer = ["u16", "u32", "u64", "i64"]
            .iter()
            .any(|t| message.ends_with(&format!("expected {t}")));
        let message = if integer {
            // Show the number as written (1e2), not as read (100.0).
            let written = report
                .root
                .at(&report.original(&path))
                .and_then(|n| n.as_str());
            match (written, value_at(json, &path)) {
                (Some(text), _) => format!("expected a whole number, found {text}"),
                (None, Some(v)) => format!("expected a whole number, found {}", schema::found(v)),
                (None, None) => message,
            }
        } else if message.starts_with("data did not match any variant") {
            // serde's words for "none of the forms fit"; the schema's words are better, but
            // when it let the value through, say at least what was found.
            let written = report
                .root
                .at(&report.original(&path))
                .map(|n| schema::found(&n.to_json()))
                .unwrap_or_else(|| "this value".into());
            format!("{written} has none of the forms this field takes")
        } else {
            message
        };
        // When the schema named a value inside, serde failing here only repeats it.
        if !bad_values.iter().any(|b| b.starts_with(&original)) {
            report.error(&path, message);
        }
        if !drop_value(json, &path, report) {
            return None;
        }
    }
    None
}

/// The value at `path`, if there is one.
fn value_at<'j>(json: &'j mut Json, path: &[String]) -> Option<&'j mut Json> {
    path.iter().try_fold(json, |node, seg| match node {
        Json::Object(m) => m.get_mut(seg),
        Json::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
        _ => None,
    })
}

/// Remove the entry at `path` when it is a key of a mapping; false if there is none.
fn remove_from_mapping(json: &mut Json, path: &[String]) -> bool {
    let Some((last, parent)) = path.split_last() else {
        return false;
    };
    match value_at(json, parent) {
        Some(Json::Object(m)) => m.shift_remove(last).is_some(),
        _ => false,
    }
}

/// Top-level sections whose entries are definitions other parts of the file refer to.
const SECTIONS: [&str; 5] = ["services", "networks", "volumes", "secrets", "configs"];

/// Drop the value at `path` (counted in the document as it is now) so that the rest of the
/// file can still be read, and tell the report to say nothing more about it. A top-level
/// definition is emptied rather than removed, so that references to it still resolve; a list
/// item is removed and the report told, so that later messages still name the items by their
/// place in the file. Returns false when nothing could be dropped.
fn drop_value(json: &mut Json, path: &[String], report: &mut diagnostic::Report<'_>) -> bool {
    let Some((last, parent)) = path.split_last() else {
        return false;
    };
    let original = report.original(path);
    match value_at(json, parent) {
        Some(Json::Object(m)) if parent.len() == 1 && SECTIONS.contains(&parent[0].as_str()) => {
            m.insert(last.clone(), Json::Object(Default::default()));
        }
        Some(Json::Object(m)) => {
            if m.shift_remove(last).is_none() {
                return false;
            }
        }
        Some(Json::Array(items)) => match last.parse::<usize>() {
            Ok(i) if i < items.len() => {
                items.remove(i);
                report.removed_item(parent.to_vec(), i);
            }
            _ => return false,
        },
        _ => return false,
    }
    report.skip_under(original);
    true
}

/// A stack without services does nothing: almost always a mistake (an empty file, a
/// misspelt `services:`).
fn check_services(json: &Json, findings: &schema::Findings, report: &mut diagnostic::Report<'_>) {
    match json.get("services") {
        // "did you mean services?" already says it.
        None if findings.meant.iter().any(|p| p == &["services"]) => {}
        None => report.error(
            &[] as &[&str],
            "missing key \"services\": a stack file needs at least one service",
        ),
        Some(Json::Object(m)) if m.is_empty() => report.error(
            &["services"],
            "no services: a stack file needs at least one service",
        ),
        Some(_) => {}
    }
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

/// Values that are text whatever they look like: `VERSION: 1.10` is "1.10", not the number
/// 1.1, and `ZIP: 01234` is not octal. (docker/cli reads these as YAML 1.1 numbers and prints
/// them back, changing them; people then learn to quote. Here they need not.)
const TEXT_VALUES: &[&[&str]] = &[
    &["version"],
    &["services", "*", "environment", "*"],
    &["services", "*", "labels", "*"],
    &["services", "*", "deploy", "labels", "*"],
    &["services", "*", "logging", "options", "*"],
    &["services", "*", "sysctls", "*"],
    &["services", "*", "extra_hosts", "*"],
    &["networks", "*", "labels", "*"],
    &["networks", "*", "driver_opts", "*"],
    &["networks", "*", "ipam", "options", "*"],
    &["volumes", "*", "labels", "*"],
    &["volumes", "*", "driver_opts", "*"],
    &["secrets", "*", "labels", "*"],
    &["configs", "*", "labels", "*"],
];

/// Mark the plain scalars at `path` (`*` for any key) as text. Empty values stay null: an
/// environment `KEY:` without a value means "take it from the environment".
fn keep_text(node: &mut yaml::Node, path: &[&str]) {
    let Some((head, rest)) = path.split_first() else {
        let null = node.is_null();
        if let yaml::Value::Scalar(s) = &mut node.value {
            s.plain &= null;
        }
        return;
    };
    if let yaml::Value::Map(entries) = &mut node.value {
        for e in entries
            .iter_mut()
            .filter(|e| *head == "*" || e.key == *head)
        {
            keep_text(&mut e.value, rest);
        }
    }
}

#[derive(Clone, Copy)]
enum Cast {
    Int,
    Float,
    Bool,
    /// A file mode: "0440" is octal, as the same digits unquoted are (docker/cli reads the
    /// quoted form as decimal 440, which is mode 0670: a silent surprise not worth copying).
    Mode,
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
    (
        &["services", "*", "deploy", "resources", "limits", "pids"],
        Cast::Int,
    ),
    (
        &[
            "services",
            "*",
            "deploy",
            "resources",
            "reservations",
            "generic_resources",
            "*",
            "discrete_resource_spec",
            "value",
        ],
        Cast::Int,
    ),
    (&["services", "*", "healthcheck", "retries"], Cast::Int),
    (&["services", "*", "env_file", "*", "required"], Cast::Bool),
    (
        &["services", "*", "volumes", "*", "bind", "create_host_path"],
        Cast::Bool,
    ),
    (&["networks", "*", "enable_ipv6"], Cast::Bool),
    (&["services", "*", "healthcheck", "disable"], Cast::Bool),
    (&["services", "*", "init"], Cast::Bool),
    (&["services", "*", "read_only"], Cast::Bool),
    (&["services", "*", "tty"], Cast::Bool),
    (&["services", "*", "stdin_open"], Cast::Bool),
    (&["services", "*", "ports", "*", "target"], Cast::Int),
    (&["services", "*", "ports", "*", "published"], Cast::Int),
    (&["services", "*", "secrets", "*", "mode"], Cast::Mode),
    (&["services", "*", "configs", "*", "mode"], Cast::Mode),
    (
        &["services", "*", "volumes", "*", "tmpfs", "mode"],
        Cast::Mode,
    ),
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
                Cast::Mode => match yaml::plain_scalar_to_json(t) {
                    n @ Json::Number(_) => Some(n),
                    _ => None,
                },
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

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        let vars = Variables::new([("EMPTY".to_string(), String::new())].into());
        let loaded = load_stack("s", "f.yml", text, &NoFiles, &vars);
        assert!(loaded.spec.is_none() || loaded.errors().next().is_none());
        loaded.errors().map(ToString::to_string).collect()
    }

    #[test]
    fn a_list_item_serde_cannot_read_does_not_hide_its_neighbours() {
        let e = errors(
            "services:\n  web:\n    image: nginx\n    ports:\n      - \"80:80\"\n      - [8080]\n      - \"80:81\"\n",
        );
        assert_eq!(e.len(), 2, "{e:#?}");
        assert!(
            e[0].starts_with("f.yml:6:9: services.web.ports[1]: expected"),
            "{e:#?}"
        );
        // Still counted as the file counts: the item before it was dropped, not forgotten.
        assert!(
            e[1].starts_with("f.yml:7:9: services.web.ports[2]: port 80/tcp is already published"),
            "{e:#?}"
        );
    }

    #[test]
    fn a_refused_value_is_not_reported_again_as_missing() {
        let e = errors("services:\n  web:\n    image: [nginx]\n  db:\n    imgae: postgres\n");
        assert_eq!(e.len(), 2, "{e:#?}");
        assert!(e.iter().all(|e| !e.contains("has no image")), "{e:#?}");
    }

    #[test]
    fn an_interpolated_empty_value_is_empty_text_not_null() {
        let vars = Variables::new([("EMPTY".to_string(), String::new())].into());
        let text = "services:\n  web:\n    image: nginx\n    environment:\n      A: ${EMPTY}\n";
        let spec = load_stack("s", "f.yml", text, &NoFiles, &vars)
            .spec
            .unwrap();
        assert_eq!(spec.services["s_web"].task.container.env, ["A="]);
    }
}
