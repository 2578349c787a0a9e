//! Field-level differences between two serialisable values, as `path: old -> new` lines.
//! Works on the JSON form of the model so that every field, present and future, is compared
//! without a hand-written list; names are then made friendly for people.

use serde::Serialize;
use serde_json::Value;

use super::FieldChange;

/// Compare two values field by field.
pub fn diff<T: Serialize>(old: &T, new: &T) -> Vec<FieldChange> {
    let old = serde_json::to_value(old).expect("model serialises");
    let new = serde_json::to_value(new).expect("model serialises");
    let mut out = Vec::new();
    walk("", &old, &new, &mut out);
    // The facts people look for first: image, then replicas, then the rest in field order.
    out.sort_by_key(|c| match c.field.as_str() {
        "image" => 0,
        "mode" | "replicas" => 1,
        _ => 2,
    });
    out
}

fn walk(path: &str, old: &Value, new: &Value, out: &mut Vec<FieldChange>) {
    if old == new {
        return;
    }
    match (old, new) {
        (Value::Object(a), Value::Object(b)) if path == "mode" => {
            // `mode: {mode: replicated, replicas: 2}` reads best as `replicas 2 -> 3`.
            if a.get("mode") == b.get("mode") {
                let (x, y) = (a.get("replicas"), b.get("replicas"));
                out.push(FieldChange::new(
                    "replicas",
                    x.and_then(nonnull),
                    y.and_then(nonnull),
                ));
            } else {
                out.push(FieldChange::new(
                    "mode",
                    Some(render_mode(old)),
                    Some(render_mode(new)),
                ));
            }
        }
        (Value::Array(a), Value::Array(b)) if is_key_value_list(a) && is_key_value_list(b) => {
            // `env: [A=1, B=2]`: compare by key, `env.A  1 -> 2`.
            let pairs = |l: &Vec<Value>| -> Vec<(String, String)> {
                l.iter()
                    .filter_map(Value::as_str)
                    .filter_map(|s| s.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            };
            let (a, b) = (pairs(a), pairs(b));
            let mut keys: Vec<&String> = a.iter().chain(b.iter()).map(|(k, _)| k).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let find =
                    |l: &[(String, String)]| l.iter().find(|(x, _)| x == k).map(|(_, v)| v.clone());
                let (x, y) = (find(&a), find(&b));
                if x != y {
                    out.push(FieldChange::new(&format!("{path}.{k}"), x, y));
                }
            }
        }
        (Value::Object(a), Value::Object(b)) if !is_leaf_object(path) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                walk(
                    &p,
                    a.get(k).unwrap_or(&Value::Null),
                    b.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            let removed: Vec<String> = a.iter().filter(|x| !b.contains(x)).map(render).collect();
            let added: Vec<String> = b.iter().filter(|x| !a.contains(x)).map(render).collect();
            if removed.is_empty() && added.is_empty() {
                // Same elements, new order.
                out.push(FieldChange::new(path, Some(render(old)), Some(render(new))));
            } else {
                out.push(FieldChange {
                    field: friendly(path),
                    from: None,
                    to: None,
                    added,
                    removed,
                });
            }
        }
        _ => out.push(FieldChange::new(path, nonnull(old), nonnull(new))),
    }
}

/// Objects compared as a whole rather than key by key (their parts mean nothing alone).
fn is_leaf_object(path: &str) -> bool {
    path.ends_with("healthcheck")
}

/// Lists of `KEY=value` strings (env): non-empty, every element has a key before `=`.
fn is_key_value_list(l: &[Value]) -> bool {
    !l.is_empty()
        && l.iter().all(|v| {
            v.as_str()
                .is_some_and(|s| s.find('=').is_some_and(|i| i > 0))
        })
}

fn render_mode(v: &Value) -> String {
    match (v.get("mode").and_then(Value::as_str), v.get("replicas")) {
        (Some(m), Some(r)) => format!("{m} ({r} replicas)"),
        (Some(m), None) => m.to_string(),
        _ => render(v),
    }
}

fn nonnull(v: &Value) -> Option<String> {
    (!v.is_null()).then(|| render(v))
}

/// A compact, readable form: strings bare, objects as `k=v` lists.
pub fn render(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "(none)".into(),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(render).collect();
            format!("[{}]", parts.join(", "))
        }
        Value::Object(m) => {
            let parts: Vec<String> = m
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("{k}={}", render(v)))
                .collect();
            parts.join(" ")
        }
        other => other.to_string(),
    }
}

/// `task.container.image` → `image`; `mode.replicas` → `replicas`; `endpoint.ports` → `ports`.
pub fn friendly(path: &str) -> String {
    // Service labels (`deploy.labels`) and container labels (`labels`) must not read alike.
    if let Some(rest) = path.strip_prefix("labels") {
        return format!("deploy.labels{rest}");
    }
    if let Some(rest) = path
        .strip_prefix("update_config")
        .or_else(|| path.strip_prefix("rollback_config"))
    {
        return format!("deploy.{}{rest}", &path[..path.len() - rest.len()]);
    }
    let p = path
        .strip_prefix("task.container.")
        .or_else(|| path.strip_prefix("task."))
        .unwrap_or(path);
    match p {
        "endpoint.ports" => "ports".into(),
        "endpoint.mode" => "endpoint_mode".into(),
        "resources.limit_cpus" => "resources.limits.cpus".into(),
        "resources.limit_memory" => "resources.limits.memory".into(),
        "resources.limit_pids" => "resources.limits.pids".into(),
        "resources.reserve_cpus" => "resources.reservations.cpus".into(),
        "resources.reserve_memory" => "resources.reservations.memory".into(),
        "resources.reserve_generic" => "resources.reservations.generic_resources".into(),
        other => other.to_string(),
    }
}

impl FieldChange {
    fn new(path: &str, from: Option<String>, to: Option<String>) -> Self {
        FieldChange {
            field: friendly(path),
            from,
            to,
            added: vec![],
            removed: vec![],
        }
    }
}
