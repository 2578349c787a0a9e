//! The labels that tie Docker objects to the tasks, services and stacks they belong to. They
//! are the agent's memory across restarts: a restarted agent adopts containers by these labels,
//! so they must round-trip exactly.

use std::collections::{BTreeMap, HashMap};

use super::runtime::TaskRef;

/// Docker's own stack label, so `docker ps --filter label=com.docker.stack.namespace=shop` and
/// friends show our containers the way they show `docker stack deploy`'s.
pub const STACK_NAMESPACE: &str = "com.docker.stack.namespace";
pub const MANAGED: &str = "org.reconciler.managed";
pub const STACK: &str = "org.reconciler.stack";
pub const SERVICE: &str = "org.reconciler.service";
pub const TASK: &str = "org.reconciler.task";
pub const SLOT: &str = "org.reconciler.slot";
pub const NODE: &str = "org.reconciler.node";

/// The filter value that selects everything we manage: `org.reconciler.managed=1`.
pub fn managed_filter() -> String {
    format!("{MANAGED}=1")
}

/// The spec's own container labels, then ours on top (ours win, so a stack file cannot make a
/// container pretend to be another task's).
pub fn container_labels(
    task: &TaskRef,
    spec_labels: &BTreeMap<String, String>,
) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = spec_labels.clone().into_iter().collect();
    labels.extend(object_labels(&task.stack));
    labels.insert(SERVICE.into(), task.service.clone());
    labels.insert(TASK.into(), task.task_id.clone());
    labels.insert(NODE.into(), task.node_id.clone());
    match task.slot {
        Some(slot) => labels.insert(SLOT.into(), slot.to_string()),
        None => labels.remove(SLOT),
    };
    labels
}

/// Labels for networks and volumes of a stack.
pub fn object_labels(stack: &str) -> HashMap<String, String> {
    HashMap::from([
        (MANAGED.to_string(), "1".to_string()),
        (STACK_NAMESPACE.to_string(), stack.to_string()),
        (STACK.to_string(), stack.to_string()),
    ])
}

/// Read a task back from a container's labels; `None` when any required label is missing or
/// malformed (not one of ours, or edited by hand).
pub fn task_ref(labels: &HashMap<String, String>) -> Option<TaskRef> {
    if labels.get(MANAGED).map(String::as_str) != Some("1") {
        return None;
    }
    let slot = match labels.get(SLOT) {
        Some(s) => Some(s.parse().ok()?),
        None => None,
    };
    Some(TaskRef {
        task_id: labels.get(TASK)?.clone(),
        service: labels.get(SERVICE)?.clone(),
        stack: labels.get(STACK)?.clone(),
        slot,
        node_id: labels.get(NODE)?.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(slot: Option<u64>) -> TaskRef {
        TaskRef {
            task_id: "t1".into(),
            service: "shop_web".into(),
            stack: "shop".into(),
            slot,
            node_id: "n1".into(),
        }
    }

    #[test]
    fn labels_round_trip() {
        for slot in [Some(2), None] {
            let labels = container_labels(&task(slot), &BTreeMap::new());
            assert_eq!(task_ref(&labels), Some(task(slot)));
            assert_eq!(labels[STACK_NAMESPACE], "shop");
            assert_eq!(labels[MANAGED], "1");
        }
    }

    #[test]
    fn spec_labels_cannot_override_ours() {
        let spec = BTreeMap::from([
            (TASK.to_string(), "forged".to_string()),
            (SLOT.to_string(), "9".to_string()),
            ("team".to_string(), "blue".to_string()),
        ]);
        let labels = container_labels(&task(None), &spec);
        assert_eq!(labels[TASK], "t1");
        assert!(!labels.contains_key(SLOT));
        assert_eq!(labels["team"], "blue");
    }

    #[test]
    fn foreign_or_broken_labels_are_not_a_task() {
        let mut labels = container_labels(&task(Some(1)), &BTreeMap::new());
        labels.insert(SLOT.into(), "one".into());
        assert_eq!(task_ref(&labels), None);
        assert_eq!(task_ref(&HashMap::new()), None);
    }
}
