//! `--filter KEY=VALUE` as docker takes it: repeatable; values of one key are alternatives,
//! different keys must all match. Each listing says which keys it knows.

use std::collections::BTreeMap;

use crate::api::views::{ServiceView, TaskView};

/// Parsed filters: key → the values any of which may match.
#[derive(Debug, Default)]
pub struct Filters(BTreeMap<String, Vec<String>>);

impl Filters {
    /// Parse `KEY=VALUE` strings, refusing a key this listing does not know.
    pub fn parse(raw: &[String], known: &[&str]) -> anyhow::Result<Filters> {
        let mut out = BTreeMap::<String, Vec<String>>::new();
        for f in raw {
            let Some((key, value)) = f.split_once('=') else {
                anyhow::bail!("bad filter {f:?}: expected KEY=VALUE (as `--filter name=web`)");
            };
            if !known.contains(&key) {
                anyhow::bail!(
                    "unknown filter key {key:?}: this listing takes {}",
                    known.join(", ")
                );
            }
            out.entry(key.to_string())
                .or_default()
                .push(value.to_string());
        }
        Ok(Filters(out))
    }

    /// Does every key have a value that `matches` accepts?
    fn all(&self, mut matches: impl FnMut(&str, &str) -> bool) -> bool {
        self.0
            .iter()
            .all(|(key, values)| values.iter().any(|v| matches(key, v)))
    }

    /// Services: `name` (a prefix, as docker matches service names), `mode`, `stack`,
    /// `label` (`KEY` present, or `KEY=VALUE`).
    pub fn service(&self, s: &ServiceView) -> bool {
        self.all(|key, v| match key {
            "name" => s.name.starts_with(v),
            "mode" => s.mode == v,
            "stack" => s.stack == v,
            "label" => match v.split_once('=') {
                Some((k, value)) => s.labels.get(k).is_some_and(|l| l == value),
                None => s.labels.contains_key(v),
            },
            _ => false,
        })
    }

    /// Tasks: `id` (a prefix), `name` (a prefix), `desired-state`, `node`.
    pub fn task(&self, t: &TaskView) -> bool {
        self.all(|key, v| match key {
            "id" => t.id.starts_with(v),
            "name" => t.name.starts_with(v),
            "desired-state" => t.desired_state.name() == v,
            "node" => t.node == v || t.node_hostname == v,
            _ => false,
        })
    }
}

impl Filters {
    /// Nodes, as `docker node ls` filters them: `id` (a prefix), `name` (the hostname, a
    /// prefix), `role` (manager, worker), `node.label` (the operator's labels) and `label`
    /// (the engine's), each `KEY` present or `KEY=VALUE`.
    pub fn node(&self, n: &crate::cluster::services::NodeStatus) -> bool {
        let label = |labels: &BTreeMap<String, String>, v: &str| match v.split_once('=') {
            Some((k, value)) => labels.get(k).is_some_and(|l| l == value),
            None => labels.contains_key(v),
        };
        self.all(|key, v| match key {
            "id" => n.id.starts_with(v),
            "name" => n.hostname.starts_with(v),
            "role" => n.role == v,
            "node.label" => label(&n.labels, v),
            "label" => label(&n.engine_labels, v),
            _ => false,
        })
    }

    /// Stacks: `name` (a prefix).
    pub fn stack(&self, name: &str) -> bool {
        self.all(|key, v| key == "name" && name.starts_with(v))
    }
}

impl Filters {
    /// Commits (`history`): `id` (a prefix), `outcome` (`converged`, `rolled-back`, ...),
    /// `trigger` (`webhook`, `poll`, ...), `service` (a service the commit changed or rolled).
    pub fn commit(&self, r: &crate::store::CommitRecord) -> bool {
        let words = |s: &str| s.replace(['_', ' '], "-");
        self.all(|key, v| match key {
            "id" => r.commit.starts_with(v),
            "outcome" => words(r.outcome.key()) == words(v),
            "trigger" => r.trigger.is_some_and(|t| words(t.name()) == words(v)),
            "service" => {
                r.rollouts.contains_key(v)
                    || r.plan.as_ref().is_some_and(|p| {
                        p.stacks
                            .iter()
                            .flat_map(|s| &s.changes)
                            .any(|c| c.kind == crate::plan::Kind::Service && c.name == v)
                    })
            }
            _ => false,
        })
    }
}

pub const HISTORY_KEYS: [&str; 4] = ["id", "outcome", "trigger", "service"];
pub const SERVICE_KEYS: [&str; 4] = ["name", "mode", "stack", "label"];
pub const TASK_KEYS: [&str; 4] = ["id", "name", "desired-state", "node"];
pub const NODE_KEYS: [&str; 5] = ["id", "name", "role", "node.label", "label"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_of_one_key_are_alternatives_and_keys_must_all_match() {
        let f = Filters::parse(
            &[
                "mode=replicated".into(),
                "name=web_".into(),
                "name=db_".into(),
            ],
            &SERVICE_KEYS,
        )
        .unwrap();
        let svc = |name: &str, mode: &str| ServiceView {
            name: name.into(),
            mode: mode.into(),
            ..Default::default()
        };
        assert!(f.service(&svc("web_api", "replicated")));
        assert!(f.service(&svc("db_main", "replicated")));
        assert!(!f.service(&svc("db_main", "global")));
        assert!(!f.service(&svc("cache_redis", "replicated")));
        assert!(Filters::default().service(&svc("anything", "global")));
    }

    #[test]
    fn a_label_filter_takes_a_key_or_a_key_and_its_value() {
        let svc = ServiceView {
            name: "web_api".into(),
            labels: [("tier".to_string(), "front".to_string())].into(),
            ..Default::default()
        };
        let with = |f: &str| {
            Filters::parse(&[f.into()], &SERVICE_KEYS)
                .unwrap()
                .service(&svc)
        };
        assert!(with("label=tier"));
        assert!(with("label=tier=front"));
        assert!(!with("label=tier=back"));
        assert!(!with("label=team"));
    }

    #[test]
    fn unknown_keys_and_malformed_filters_say_what_is_taken() {
        let e = Filters::parse(&["colour=red".into()], &TASK_KEYS).unwrap_err();
        assert!(
            e.to_string().contains(
                "unknown filter key \"colour\": this listing takes id, name, desired-state, node"
            ),
            "{e}"
        );
        let e = Filters::parse(&["running".into()], &TASK_KEYS).unwrap_err();
        assert!(e.to_string().contains("expected KEY=VALUE"), "{e}");
    }
}
