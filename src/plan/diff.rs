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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The changes as `field: from -> to [+added -removed]` lines.
    fn lines(old: Value, new: Value) -> Vec<String> {
        diff(&old, &new)
            .into_iter()
            .map(|c| {
                let mut s = format!(
                    "{}: {} -> {}",
                    c.field,
                    c.from.unwrap_or_else(|| "-".into()),
                    c.to.unwrap_or_else(|| "-".into())
                );
                for a in c.added {
                    s.push_str(&format!(" +{a}"));
                }
                for r in c.removed {
                    s.push_str(&format!(" -{r}"));
                }
                s
            })
            .collect()
    }

    #[test]
    fn equal_values_have_no_changes() {
        let v = json!({"task": {"container": {"image": "a", "env": ["A=1"]}}});
        assert!(diff(&v, &v.clone()).is_empty());
    }

    #[test]
    fn the_image_comes_first_then_replicas_then_the_rest_in_field_order() {
        let old = json!({"a": 1, "mode": {"mode": "replicated", "replicas": 2}, "task": {"container": {"image": "web:1", "user": "x"}}, "z": 1});
        let new = json!({"a": 2, "mode": {"mode": "replicated", "replicas": 3}, "task": {"container": {"image": "web:2", "user": "y"}}, "z": 2});
        assert_eq!(
            lines(old, new),
            [
                "image: web:1 -> web:2",
                "replicas: 2 -> 3",
                "a: 1 -> 2",
                "user: x -> y",
                "z: 1 -> 2"
            ]
        );
    }

    #[test]
    fn a_mode_change_is_shown_whole() {
        let old = json!({"mode": {"mode": "replicated", "replicas": 2}});
        let new = json!({"mode": {"mode": "global"}});
        assert_eq!(lines(old, new), ["mode: replicated (2 replicas) -> global"]);
    }

    #[test]
    fn environment_lists_compare_by_key() {
        let old = json!({"task": {"container": {"env": ["A=1", "B=2", "C=3"]}}});
        let new = json!({"task": {"container": {"env": ["C=3", "A=1", "B=20", "D=4"]}}});
        assert_eq!(lines(old, new), ["env.B: 2 -> 20", "env.D: - -> 4"]);
        let old = json!({"task": {"container": {"env": ["A=1"]}}});
        let new = json!({"task": {"container": {"env": ["B=1"]}}});
        assert_eq!(lines(old, new), ["env.A: 1 -> -", "env.B: - -> 1"]);
    }

    #[test]
    fn other_lists_say_what_came_and_went_or_that_only_the_order_changed() {
        let old = json!({"task": {"container": {"command": ["a", "b"]}}});
        let new = json!({"task": {"container": {"command": ["b", "c"]}}});
        assert_eq!(lines(old, new), ["command: - -> - +c -a"]);
        let old = json!({"task": {"container": {"command": ["a", "b"]}}});
        let new = json!({"task": {"container": {"command": ["b", "a"]}}});
        assert_eq!(lines(old, new), ["command: [a, b] -> [b, a]"]);
        // A list that is not KEY=value pairs all through is not read as one.
        let old = json!({"task": {"container": {"command": ["A=1", "run"]}}});
        let new = json!({"task": {"container": {"command": ["A=2", "run"]}}});
        assert_eq!(lines(old, new), ["command: - -> - +A=2 -A=1"]);
        let old = json!({"task": {"container": {"command": ["=1"]}}});
        let new = json!({"task": {"container": {"command": ["=2"]}}});
        assert_eq!(lines(old, new), ["command: - -> - +=2 -=1"]);
        // Only one side all KEY=value: compared as a list, nothing lost.
        let old = json!({"task": {"container": {"command": ["A=1"]}}});
        let new = json!({"task": {"container": {"command": ["A=1", "run"]}}});
        assert_eq!(lines(old, new), ["command: - -> - +run"]);
        // Only added, or only removed: said as such, not as a new order.
        let old = json!({"task": {"container": {"command": ["a", "b"]}}});
        let new = json!({"task": {"container": {"command": ["a", "b", "c"]}}});
        assert_eq!(lines(old.clone(), new.clone()), ["command: - -> - +c"]);
        assert_eq!(lines(new, old), ["command: - -> - -c"]);
    }

    #[test]
    fn a_healthcheck_changes_as_a_whole() {
        let old = json!({"task": {"container": {"healthcheck": {"test": ["CMD", "true"], "retries": 3}}}});
        let new = json!({"task": {"container": {"healthcheck": {"test": ["CMD", "true"], "retries": 5}}}});
        assert_eq!(
            lines(old, new),
            ["healthcheck: test=[CMD, true] retries=3 -> test=[CMD, true] retries=5"]
        );
    }

    #[test]
    fn fields_that_come_or_go_show_none() {
        let old = json!({"task": {"container": {"user": null}}});
        let new = json!({"task": {"container": {"user": "app"}}});
        assert_eq!(lines(old, new), ["user: - -> app"]);
        let old = json!({"task": {"container": {"hostname": "a"}}});
        let new = json!({"task": {"container": {}}});
        assert_eq!(lines(old, new), ["hostname: a -> -"]);
    }

    #[test]
    fn values_render_compactly() {
        assert_eq!(render(&json!("text")), "text");
        assert_eq!(render(&json!(null)), "(none)");
        assert_eq!(render(&json!(3)), "3");
        assert_eq!(render(&json!(true)), "true");
        assert_eq!(render(&json!(["a", 1])), "[a, 1]");
        assert_eq!(render(&json!({"a": 1, "b": null, "c": "x"})), "a=1 c=x");
        assert_eq!(render_mode(&json!({"mode": "global"})), "global");
        assert_eq!(render_mode(&json!({"x": 1})), "x=1");
    }

    #[test]
    fn paths_get_the_names_people_write_in_stack_files() {
        for (path, name) in [
            ("task.container.image", "image"),
            ("task.resources.limit_cpus", "resources.limits.cpus"),
            ("task.resources.limit_memory", "resources.limits.memory"),
            ("task.resources.limit_pids", "resources.limits.pids"),
            ("task.resources.reserve_cpus", "resources.reservations.cpus"),
            (
                "task.resources.reserve_memory",
                "resources.reservations.memory",
            ),
            (
                "task.resources.reserve_generic",
                "resources.reservations.generic_resources",
            ),
            ("endpoint.ports", "ports"),
            ("endpoint.mode", "endpoint_mode"),
            ("labels.team", "deploy.labels.team"),
            (
                "update_config.parallelism",
                "deploy.update_config.parallelism",
            ),
            ("rollback_config.order", "deploy.rollback_config.order"),
            ("task.placement.constraints", "placement.constraints"),
            ("name", "name"),
        ] {
            assert_eq!(friendly(path), name, "{path}");
        }
    }
}
