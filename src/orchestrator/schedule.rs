//! The scheduler, as a pure function: which node runs a task. Filters in Swarm's order (the
//! first that fails stops the check, and the counts explain a pending task), then spread.

use std::collections::BTreeMap;

use crate::spec::model::{ConstraintKey, PublishMode, ServiceSpec};
use crate::store::{Availability, Node, NodeRole, Task};

/// Does `node` satisfy every placement constraint of the service?
pub fn constraints_hold(spec: &ServiceSpec, node: &Node) -> bool {
    spec.task.placement.constraints.iter().all(|c| {
        let role = match node.role {
            NodeRole::Manager => "manager",
            NodeRole::Worker => "worker",
        };
        let actual: Option<&str> = match &c.key {
            ConstraintKey::NodeId => Some(&node.id),
            ConstraintKey::NodeHostname => Some(&node.hostname),
            ConstraintKey::NodeRole => Some(role),
            ConstraintKey::NodeIp => Some(&node.ip),
            ConstraintKey::NodePlatformOs => Some(&node.os),
            ConstraintKey::NodePlatformArch => Some(normalise_arch(&node.arch)),
            ConstraintKey::NodeLabel(l) => node.labels.get(l).map(String::as_str),
            ConstraintKey::EngineLabel(l) => node.engine_labels.get(l).map(String::as_str),
        };
        match (&c.key, actual) {
            // x86_64 and amd64 are the same platform, as are aarch64 and arm64.
            (ConstraintKey::NodePlatformArch, Some(a)) => {
                let wanted = normalise_arch(&c.value);
                c.matches(Some(if a.eq_ignore_ascii_case(wanted) {
                    &c.value
                } else {
                    a
                }))
            }
            _ => c.matches(actual),
        }
    })
}

fn normalise_arch(a: &str) -> &str {
    match a {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Why a node was passed over, in Swarm's filter order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Filter {
    NotAvailable,
    Resources,
    Constraints,
    HostPorts,
    MaxReplicas,
}

impl Filter {
    fn describe(self, n: usize) -> String {
        let nodes = if n == 1 {
            "1 node"
        } else {
            return format!("{n} nodes {}", self.words(true));
        };
        format!("{nodes} {}", self.words(false))
    }
    fn words(self, plural: bool) -> &'static str {
        match (self, plural) {
            (Filter::NotAvailable, _) => "not available for new tasks",
            (Filter::Resources, _) => "without enough free cpu or memory for the reservations",
            (Filter::Constraints, false) => "does not satisfy the placement constraints",
            (Filter::Constraints, true) => "do not satisfy the placement constraints",
            (Filter::HostPorts, _) => "with a host-mode published port already in use",
            (Filter::MaxReplicas, _) => "at max_replicas_per_node",
        }
    }
}

/// Pick the node for a new task of `spec`, given every live task. `Err` explains why no node
/// fits: "no suitable node (1 node does not satisfy the placement constraints)".
pub fn pick_node<'a>(
    spec: &ServiceSpec,
    nodes: impl IntoIterator<Item = &'a Node>,
    live_tasks: &[&Task],
) -> Result<String, String> {
    let mut rejected: BTreeMap<Filter, usize> = BTreeMap::new();
    let mut best: Option<((usize, usize), &Node)> = None;
    let mut any = false;
    for node in nodes {
        any = true;
        let on_node: Vec<&&Task> = live_tasks.iter().filter(|t| t.node == node.id).collect();
        match filter(spec, node, &on_node) {
            Err(f) => *rejected.entry(f).or_default() += 1,
            Ok(()) => {
                let of_service = on_node.iter().filter(|t| t.service == spec.name).count();
                let rank = (of_service, on_node.len());
                if best.is_none_or(|(r, _)| rank < r) {
                    best = Some((rank, node));
                }
            }
        }
    }
    match best {
        Some((_, node)) => Ok(node.id.clone()),
        None if !any => Err("no suitable node (no nodes in the cluster)".into()),
        None => {
            let reasons: Vec<String> = rejected.iter().map(|(f, n)| f.describe(*n)).collect();
            Err(format!("no suitable node ({})", reasons.join("; ")))
        }
    }
}

fn filter(spec: &ServiceSpec, node: &Node, on_node: &[&&Task]) -> Result<(), Filter> {
    if !node.ready || node.availability != Availability::Active {
        return Err(Filter::NotAvailable);
    }
    let r = &spec.task.resources;
    let used_cpu: u64 = on_node
        .iter()
        .filter_map(|t| t.spec.resources.reserve_cpus.map(|c| c.0))
        .sum();
    let used_mem: u64 = on_node
        .iter()
        .filter_map(|t| t.spec.resources.reserve_memory.map(|m| m.0))
        .sum();
    if r.reserve_cpus
        .is_some_and(|c| used_cpu + c.0 > node.nano_cpus)
        || r.reserve_memory
            .is_some_and(|m| used_mem + m.0 > node.memory_bytes)
    {
        return Err(Filter::Resources);
    }
    if !constraints_hold(spec, node) {
        return Err(Filter::Constraints);
    }
    let host_ports = spec
        .endpoint
        .ports
        .iter()
        .filter(|p| p.mode == PublishMode::Host && p.published.is_some());
    for p in host_ports {
        let taken = on_node.iter().any(|t| {
            t.endpoint.ports.iter().any(|q| {
                q.mode == PublishMode::Host
                    && q.published == p.published
                    && q.protocol == p.protocol
            })
        });
        if taken {
            return Err(Filter::HostPorts);
        }
    }
    let max = spec.task.placement.max_replicas_per_node;
    if max > 0 && on_node.iter().filter(|t| t.service == spec.name).count() as u64 >= max {
        return Err(Filter::MaxReplicas);
    }
    Ok(())
}
