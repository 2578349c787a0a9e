//! Errors and warnings about user input, each naming the file, line, column and YAML path:
//! `stacks/web/compose.yml:7:17: services.web.deploy.replicas: expected a non-negative
//! integer, found "three"`.

use std::fmt;

use serde::Serialize;

use super::yaml::{Node, Span, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Diagnostic {
    pub file: String,
    pub line: u32,
    pub col: u32,
    pub severity: Severity,
    /// The YAML path, e.g. `services.web.ports[0]`; empty for the whole file.
    pub path: String,
    pub message: String,
}

impl Diagnostic {
    pub fn error(
        file: &str,
        span: Span,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            file: file.to_string(),
            line: span.line,
            col: span.col,
            severity: Severity::Error,
            path: path.into(),
            message: message.into(),
        }
    }

    pub fn warning(
        file: &str,
        span: Span,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(file, span, path, message)
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.file.is_empty() {
            write!(f, "{}", self.file)?;
            if self.line > 0 {
                write!(f, ":{}:{}", self.line, self.col)?;
            }
            f.write_str(": ")?;
        }
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Render path segments the way people write them: `services.web.ports[0].target`.
/// Whether a numeric segment is a list index or a map key is read off the tree.
pub fn display_path<S: AsRef<str>>(root: &Node, segments: &[S]) -> String {
    let mut out = String::new();
    let mut node = Some(root);
    for seg in segments {
        let seg = seg.as_ref();
        match node.map(|n| &n.value) {
            Some(Value::Seq(items)) => {
                out.push_str(&format!("[{seg}]"));
                node = seg.parse::<usize>().ok().and_then(|i| items.get(i));
            }
            other => {
                if !out.is_empty() {
                    out.push('.');
                }
                // `labels."com.example.tier"`, `services.""`: quoted where a bare key would
                // read as several, or as nothing.
                if seg.is_empty()
                    || seg.contains(|c: char| c.is_whitespace() || ".[]\"".contains(c))
                {
                    out.push_str(&format!("{seg:?}"));
                } else {
                    out.push_str(seg);
                }
                node = match other {
                    Some(Value::Map(entries)) => {
                        entries.iter().find(|e| e.key == seg).map(|e| &e.value)
                    }
                    _ => None,
                };
            }
        }
    }
    out
}

/// A growing list of diagnostics for one file, with the tree to find spans and paths in.
pub struct Report<'a> {
    pub file: &'a str,
    pub root: &'a Node,
    pub items: Vec<Diagnostic>,
    /// Values already reported and left out of the later checks: an error at or under one of
    /// these paths could only repeat the first one.
    skip_under: Vec<Vec<String>>,
    /// Keys already reported as wrong (or misspelt): "no image" about the mapping that holds
    /// one would be a consequence, not news.
    known_bad: Vec<Vec<String>>,
    /// Mappings that lost keys to an error already reported (a failed `<<` merge).
    incomplete: Vec<Vec<String>>,
    /// List items dropped before the semantic checks, in order: the list's path and the item's
    /// index at the time. Paths reported afterwards count the items without them.
    removed_items: Vec<(Vec<String>, usize)>,
    /// Definitions in the value of a duplicate key, which the tree left out (the duplicate is
    /// reported): top-level section → names. "network x is not defined" would be an echo.
    dropped_definitions: Vec<(String, String)>,
    /// Values built by interpolation from variables that were unset or empty, with a note that
    /// names them: an error about such a value says where it came from.
    interpolated: std::collections::HashMap<Vec<String>, String>,
}

impl<'a> Report<'a> {
    pub fn new(file: &'a str, root: &'a Node) -> Self {
        Report {
            file,
            root,
            items: Vec::new(),
            skip_under: Vec::new(),
            known_bad: Vec::new(),
            incomplete: Vec::new(),
            removed_items: Vec::new(),
            dropped_definitions: Vec::new(),
            interpolated: Default::default(),
        }
    }

    /// Note that the value of a duplicate key at `path` was left out, with the keys it held.
    pub fn dropped(&mut self, path: &[String], keys: &[String]) {
        if let [section] = path {
            for k in keys {
                self.dropped_definitions.push((section.clone(), k.clone()));
            }
        }
    }

    /// Was `name` defined in a top-level `section` block that was dropped as a duplicate key?
    pub fn defined_in_dropped(&self, section: &str, name: &str) -> bool {
        self.dropped_definitions
            .iter()
            .any(|(s, n)| s == section && n == name)
    }

    /// Note that the value at `path` was interpolated from unset or empty variables.
    pub fn interpolated(&mut self, path: Vec<String>, note: String) {
        self.interpolated.insert(path, note);
    }

    /// Note that the item at `index` of the list at `list` was dropped from the document.
    pub fn removed_item(&mut self, list: Vec<String>, index: usize) {
        self.removed_items.push((list, index));
    }

    /// A path counted in the document after items were dropped, as it is in the file. (Lists in
    /// a stack file do not nest, so the list paths themselves never shift.)
    pub fn original<S: AsRef<str>>(&self, path: &[S]) -> Vec<String> {
        let mut p: Vec<String> = path.iter().map(|s| s.as_ref().to_string()).collect();
        for (list, removed) in self.removed_items.iter().rev() {
            let n = list.len();
            if p.len() > n && p[..n] == list[..] {
                if let Ok(i) = p[n].parse::<usize>() {
                    if i >= *removed {
                        p[n] = (i + 1).to_string();
                    }
                }
            }
        }
        p
    }

    /// Leave out later errors at or under `path` (as it is in the file).
    pub fn skip_under(&mut self, path: Vec<String>) {
        self.skip_under.push(path);
    }

    /// Note that the key at `path` (as it is in the file) was reported as wrong: a later
    /// [`Report::missing`] error about it is left out.
    pub fn known_bad(&mut self, path: Vec<String>) {
        self.known_bad.push(path);
    }

    /// Note that the mapping at `path` lost keys to an error already reported: later
    /// [`Report::missing`] errors about it are left out.
    pub fn incomplete(&mut self, path: Vec<String>) {
        self.incomplete.push(path);
    }

    fn skipped(&self, path: &[String]) -> bool {
        self.skip_under.iter().any(|p| path.starts_with(p))
    }

    /// An error about the mapping at `path` lacking all of `keys`; left out when one of them
    /// was there but wrong, or the mapping lost keys to an earlier error.
    pub fn missing<S: AsRef<str>>(
        &mut self,
        path: &[S],
        keys: &[&str],
        message: impl Into<String>,
    ) {
        let path = self.original(path);
        let echo = self.incomplete.contains(&path)
            || keys.iter().any(|k| {
                self.known_bad.iter().any(|b| {
                    b.len() == path.len() + 1 && b.starts_with(&path) && b[path.len()] == *k
                })
            });
        if !echo {
            self.push_error(&path, true, message.into());
        }
    }

    /// An error about the value at `path`.
    pub fn error<S: AsRef<str>>(&mut self, path: &[S], message: impl Into<String>) {
        let path = self.original(path);
        self.push_error(&path, false, message.into());
    }

    /// An error about the key at `path` itself (an unknown or misplaced key).
    pub fn key_error<S: AsRef<str>>(&mut self, path: &[S], message: impl Into<String>) {
        let path = self.original(path);
        self.push_error(&path, true, message.into());
    }

    /// Add an error at a path as it is in the file, pointing at the key itself or its value.
    fn push_error(&mut self, path: &[String], at_key: bool, message: String) {
        if self.skipped(path) {
            return;
        }
        let locate = || self.root.locate(path.iter().map(String::as_str));
        let span = if at_key {
            self.root.key_span(path).unwrap_or_else(locate)
        } else {
            locate()
        };
        let p = display_path(self.root, path);
        let message = match self.interpolated.get(path) {
            Some(note) => format!("{message} ({note})"),
            None => message,
        };
        self.items
            .push(Diagnostic::error(self.file, span, p, message));
    }

    /// A warning about the value at `path`.
    pub fn warning<S: AsRef<str>>(&mut self, path: &[S], message: impl Into<String>) {
        let path = &self.original(path);
        let span = self.root.locate(path.iter().map(String::as_str));
        let p = display_path(self.root, path);
        self.items
            .push(Diagnostic::warning(self.file, span, p, message));
    }

    pub fn key_warning<S: AsRef<str>>(&mut self, path: &[S], message: impl Into<String>) {
        let path = &self.original(path);
        let span = self
            .root
            .key_span(path)
            .unwrap_or_else(|| self.root.locate(path.iter().map(String::as_str)));
        let p = display_path(self.root, path);
        self.items
            .push(Diagnostic::warning(self.file, span, p, message));
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(Diagnostic::is_error)
    }
}
