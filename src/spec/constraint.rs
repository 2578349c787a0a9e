//! Placement constraints: `key==value` or `key!=value`, as in Swarm. Unlike Swarm, an unknown
//! key is an error here rather than a constraint that silently never matches.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Constraint {
    pub key: ConstraintKey,
    pub op: ConstraintOp,
    pub value: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConstraintKey {
    NodeId,
    NodeHostname,
    NodeRole,
    NodeIp,
    NodePlatformOs,
    NodePlatformArch,
    NodeLabel(String),
    EngineLabel(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConstraintOp {
    Eq,
    Ne,
}

const KEYS: &[&str] = &[
    "node.id",
    "node.hostname",
    "node.role",
    "node.ip",
    "node.platform.os",
    "node.platform.arch",
    "node.labels.<name>",
    "engine.labels.<name>",
];

impl Constraint {
    pub fn parse(text: &str) -> Result<Self, String> {
        let (op, idx, len) = if let Some(i) = text.find("==") {
            (ConstraintOp::Eq, i, 2)
        } else if let Some(i) = text.find("!=") {
            (ConstraintOp::Ne, i, 2)
        } else if text.contains('=') {
            return Err(format!(
                "constraint {text:?} must use == or != (a single = is not an operator)"
            ));
        } else {
            return Err(format!(
                "constraint {text:?} has no operator: write it as `key==value` or `key!=value`"
            ));
        };
        let key_text = text[..idx].trim();
        let value = text[idx + len..].trim();
        if value.is_empty() {
            return Err(format!(
                "constraint {text:?} has no value after the operator"
            ));
        }
        if value.contains("==") || value.contains("!=") {
            return Err(format!("constraint {text:?} has more than one operator"));
        }
        let key = ConstraintKey::parse(key_text).ok_or_else(|| unknown_key(key_text))?;
        if key == ConstraintKey::NodeRole
            && !value.eq_ignore_ascii_case("manager")
            && !value.eq_ignore_ascii_case("worker")
        {
            return Err(format!(
                "constraint {text:?}: node.role is either manager or worker, not {value:?}"
            ));
        }
        Ok(Constraint {
            key,
            op,
            value: value.to_string(),
        })
    }

    /// Does a node with this key's `actual` value (None: label absent) satisfy the constraint?
    /// Values compare case-insensitively; a missing label reads as "".
    pub fn matches(&self, actual: Option<&str>) -> bool {
        let equal = actual.unwrap_or("").eq_ignore_ascii_case(&self.value);
        match self.op {
            ConstraintOp::Eq => equal,
            ConstraintOp::Ne => !equal,
        }
    }
}

/// Say what is wrong with a key, with the most likely intended one when there is one.
fn unknown_key(key: &str) -> String {
    let lower = key.to_ascii_lowercase();
    for prefix in ["node.labels.", "engine.labels."] {
        if lower == prefix || lower == prefix.trim_end_matches('.') {
            return format!("constraint key {key:?} needs a label name, e.g. {prefix}zone");
        }
        // `node.label.zone`: the plural is easy to miss.
        let singular = prefix.replace("labels", "label");
        if let Some(rest) = lower.strip_prefix(&singular).filter(|r| !r.is_empty()) {
            let label = &key[key.len() - rest.len()..];
            return format!("unknown constraint key {key:?}; did you mean \"{prefix}{label}\"?");
        }
    }
    let fixed: Vec<&str> = KEYS.iter().copied().filter(|k| !k.contains('<')).collect();
    let dotted = format!("node.{lower}");
    match crate::spec::schema::closest(&lower, &fixed)
        .or_else(|| fixed.contains(&dotted.as_str()).then_some(dotted.as_str()))
    {
        Some(k) => format!("unknown constraint key {key:?}; did you mean \"{k}\"?"),
        None => format!(
            "unknown constraint key {key:?}: expected one of {}",
            KEYS.join(", ")
        ),
    }
}

impl ConstraintKey {
    fn parse(text: &str) -> Option<Self> {
        let lower = text.to_ascii_lowercase();
        let label = |prefix: &str| {
            // Key names are case-insensitive; label names keep their case.
            lower
                .starts_with(prefix)
                .then(|| text[prefix.len()..].to_string())
                .filter(|l| !l.is_empty())
        };
        Some(match lower.as_str() {
            "node.id" => ConstraintKey::NodeId,
            "node.hostname" => ConstraintKey::NodeHostname,
            "node.role" => ConstraintKey::NodeRole,
            "node.ip" => ConstraintKey::NodeIp,
            "node.platform.os" => ConstraintKey::NodePlatformOs,
            "node.platform.arch" => ConstraintKey::NodePlatformArch,
            _ => {
                if let Some(l) = label("node.labels.") {
                    ConstraintKey::NodeLabel(l)
                } else if let Some(l) = label("engine.labels.") {
                    ConstraintKey::EngineLabel(l)
                } else {
                    return None;
                }
            }
        })
    }
}

impl fmt::Display for ConstraintKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConstraintKey::NodeId => f.write_str("node.id"),
            ConstraintKey::NodeHostname => f.write_str("node.hostname"),
            ConstraintKey::NodeRole => f.write_str("node.role"),
            ConstraintKey::NodeIp => f.write_str("node.ip"),
            ConstraintKey::NodePlatformOs => f.write_str("node.platform.os"),
            ConstraintKey::NodePlatformArch => f.write_str("node.platform.arch"),
            ConstraintKey::NodeLabel(l) => write!(f, "node.labels.{l}"),
            ConstraintKey::EngineLabel(l) => write!(f, "engine.labels.{l}"),
        }
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            ConstraintOp::Eq => "==",
            ConstraintOp::Ne => "!=",
        };
        write!(f, "{}{op}{}", self.key, self.value)
    }
}

impl From<Constraint> for String {
    fn from(c: Constraint) -> String {
        c.to_string()
    }
}

impl TryFrom<String> for Constraint {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Constraint::parse(&s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_swarm_constraints() {
        let c = Constraint::parse("node.role == manager").unwrap();
        assert_eq!(
            (c.key, c.op, c.value.as_str()),
            (ConstraintKey::NodeRole, ConstraintOp::Eq, "manager")
        );
        let c = Constraint::parse("Node.Labels.Zone!=eu-1").unwrap();
        assert_eq!(c.key, ConstraintKey::NodeLabel("Zone".into()));
        assert_eq!(c.to_string(), "node.labels.Zone!=eu-1");
        assert!(Constraint::parse("engine.labels.ssd==true").is_ok());
        assert!(Constraint::parse("node.platform.os==linux").is_ok());
    }

    #[test]
    fn malformed_constraints_say_why() {
        let e = Constraint::parse("node.role = manager").unwrap_err();
        assert!(e.contains("single ="), "{e}");
        assert!(Constraint::parse("node.rol==manager")
            .unwrap_err()
            .contains("unknown constraint key"));
        assert!(Constraint::parse("node.role==")
            .unwrap_err()
            .contains("no value"));
        assert!(Constraint::parse("node.role")
            .unwrap_err()
            .contains("no operator"));
        assert!(Constraint::parse("node.role==boss")
            .unwrap_err()
            .contains("manager or worker"));
        assert!(Constraint::parse("node.labels.==x").is_err());
    }

    #[test]
    fn matching_is_case_insensitive_and_missing_labels_are_empty() {
        let c = Constraint::parse("node.labels.zone==EU").unwrap();
        assert!(c.matches(Some("eu")));
        assert!(!c.matches(None));
        let c = Constraint::parse("node.labels.zone!=eu").unwrap();
        assert!(c.matches(None));
    }
}
