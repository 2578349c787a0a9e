//! `reconciler.toml` at the root of the stacks repository: where the cluster sends word of
//! what it does. Read with every commit, like the stacks: a commit with a broken
//! `reconciler.toml` is refused, with the file, line and field named.
//!
//! ```toml
//! [[notify]]
//! name = "ops"
//! kind = "slack"                       # generic, slack, teams, discord
//! url_file = "notify/slack-url.age"    # or url = "https://..."; .age files are decrypted
//! events = ["commit_refused", "rollout_rolled_back", "node_down"]   # default: every event
//!
//! [[notify]]
//! name = "audit"
//! kind = "generic"                     # JSON, signed with HMAC-SHA256 when a secret is set
//! url = "https://audit.example.com/hooks/reconciler"
//! secret_file = "notify/audit-hmac.age"
//! ```

use serde::{Deserialize, Serialize};

use super::event::NotifyKind;
use crate::desired::Tree;

/// The file's name, at the repository root.
pub const CONFIG_FILE: &str = "reconciler.toml";

/// The most targets a repo may name (each is a loop's worth of work and a connection).
const MAX_TARGETS: usize = 32;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    notify: Vec<TargetFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetFile {
    name: String,
    kind: Kind,
    url: Option<String>,
    url_file: Option<String>,
    #[serde(default)]
    events: Option<Vec<NotifyKind>>,
    secret: Option<String>,
    secret_file: Option<String>,
}

/// What a target is sent: a generic JSON event, or a chat message in the service's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Generic,
    Slack,
    Teams,
    Discord,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Generic => "generic",
            Kind::Slack => "slack",
            Kind::Teams => "teams",
            Kind::Discord => "discord",
        }
    }
}

/// A value written in the file, or a file of the repo (age-encrypted when it ends in `.age`),
/// read by the leader when it sends: an encrypted URL or key is never in the store in clear.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "from")]
pub enum Value {
    Inline { value: String },
    File { commit: String, path: String },
}

impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Inline { .. } => f.write_str("Inline(..)"),
            Value::File { commit, path } => write!(f, "File({path} at {commit})"),
        }
    }
}

/// One target, as the store keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub name: String,
    pub kind: Kind,
    pub url: Value,
    /// The events it wants; empty: every event.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<NotifyKind>,
    /// The HMAC key of a generic target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Value>,
}

impl Target {
    pub fn wants(&self, kind: NotifyKind) -> bool {
        self.events.is_empty() || self.events.contains(&kind)
    }
}

/// The targets `reconciler.toml` names at `commit` (none without the file), or the errors
/// that refuse the commit, each naming the file, line and field.
pub fn load(tree: &dyn Tree, commit: &str) -> Result<Vec<Target>, Vec<String>> {
    let bytes = match tree.read(CONFIG_FILE) {
        Ok(Some(b)) => b,
        Ok(None) => return Ok(Vec::new()),
        Err(e) => return Err(vec![format!("{CONFIG_FILE}: {e:#}")]),
    };
    let text = String::from_utf8(bytes).map_err(|_| vec![format!("{CONFIG_FILE}: not UTF-8")])?;
    let file: File = toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].lines().count().max(1))
            .unwrap_or(1);
        vec![format!("{CONFIG_FILE}:{line}: {}", e.message().trim())]
    })?;
    let mut errors = Vec::new();
    let mut out: Vec<Target> = Vec::new();
    if file.notify.len() > MAX_TARGETS {
        errors.push(format!(
            "{CONFIG_FILE}: notify: {} targets; at most {MAX_TARGETS}",
            file.notify.len()
        ));
    }
    for (i, t) in file.notify.into_iter().enumerate() {
        let at = format!("{CONFIG_FILE}:{}: notify[{i}]", line_of(&text, i));
        if t.name.is_empty()
            || !t
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            errors.push(format!(
                "{at}.name: {:?}: letters, digits, - and _ only",
                t.name
            ));
        }
        if out.iter().any(|o| o.name == t.name) {
            errors.push(format!("{at}.name: {:?} is named twice", t.name));
        }
        let url = match (t.url, t.url_file) {
            (Some(u), None) => match check_url(&u) {
                Ok(()) => Some(Value::Inline { value: u }),
                // The URL may be a secret (a Slack hook is): say what is wrong, not what it is.
                Err(why) => {
                    errors.push(format!("{at}.url: {why}"));
                    None
                }
            },
            (None, Some(path)) => {
                file_value(tree, commit, &path, &format!("{at}.url_file"), &mut errors)
            }
            (Some(_), Some(_)) => {
                errors.push(format!("{at}: url and url_file: give one"));
                None
            }
            (None, None) => {
                errors.push(format!("{at}: url or url_file is required"));
                None
            }
        };
        let secret = match (t.secret, t.secret_file) {
            (Some(s), None) => Some(Value::Inline { value: s }),
            (None, Some(path)) => file_value(
                tree,
                commit,
                &path,
                &format!("{at}.secret_file"),
                &mut errors,
            ),
            (Some(_), Some(_)) => {
                errors.push(format!("{at}: secret and secret_file: give one"));
                None
            }
            (None, None) => None,
        };
        if secret.is_some() && t.kind != Kind::Generic {
            errors.push(format!(
                "{at}.secret: only a generic target signs its requests ({} does not)",
                t.kind.name()
            ));
        }
        if let Some(url) = url {
            out.push(Target {
                name: t.name,
                kind: t.kind,
                url,
                events: t.events.unwrap_or_default(),
                secret,
            });
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// The line of the `i`th `[[notify]]` table, for messages about it.
fn line_of(text: &str, i: usize) -> usize {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with("[[notify]]"))
        .nth(i)
        .map_or(1, |(n, _)| n + 1)
}

fn check_url(url: &str) -> Result<(), String> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        Ok(u) => Err(format!(
            "an http or https URL is needed, not {}:",
            u.scheme()
        )),
        Err(e) => Err(format!("not a URL ({e})")),
    }
}

/// A file of the repo the target names: it must be there (it is read when sending).
fn file_value(
    tree: &dyn Tree,
    commit: &str,
    path: &str,
    at: &str,
    errors: &mut Vec<String>,
) -> Option<Value> {
    if path.starts_with('/') || path.split('/').any(|p| p == "..") {
        errors.push(format!("{at}: {path}: a path inside the repository"));
        return None;
    }
    match tree.read(path) {
        Ok(Some(_)) => Some(Value::File {
            commit: commit.to_string(),
            path: path.to_string(),
        }),
        Ok(None) => {
            errors.push(format!("{at}: {path} is not in the commit"));
            None
        }
        Err(e) => {
            errors.push(format!("{at}: {path}: {e:#}"));
            None
        }
    }
}
