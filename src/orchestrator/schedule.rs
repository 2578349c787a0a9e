//! The scheduler, as a pure value over a snapshot: which node runs a task. Filters in Swarm's
//! order (the first that fails stops the check, and the counts explain a pending task), then
//! spread: placement preferences first, then the fewest tasks of the service, then the fewest
//! tasks in all.
//!
//! A [`Scheduler`] is built once per orchestrator pass from the live tasks, and every placement
//! of the pass is recorded in it ([`Scheduler::place`]), so that the second task of a pass sees
//! the first: `max_replicas_per_node`, host ports and reservations hold within a pass too.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::spec::model::{ConstraintKey, Protocol, PublishMode, ServiceSpec};
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
pub enum Filter {
    NotAvailable,
    Resources,
    Constraints,
    HostPorts,
    MaxReplicas,
}

impl Filter {
    fn describe(self, n: usize) -> String {
        let (count, plural) = if n == 1 {
            ("1 node".to_string(), false)
        } else {
            (format!("{n} nodes"), true)
        };
        let words = match (self, plural) {
            (Filter::NotAvailable, _) => "not available for new tasks",
            (Filter::Resources, false) => "has not enough free cpu or memory for the reservations",
            (Filter::Resources, true) => "have not enough free cpu or memory for the reservations",
            (Filter::Constraints, false) => "does not satisfy the placement constraints",
            (Filter::Constraints, true) => "do not satisfy the placement constraints",
            (Filter::HostPorts, _) => "with a host-mode published port already in use",
            (Filter::MaxReplicas, _) => "at max_replicas_per_node",
        };
        format!("{count} {words}")
    }
}

/// What the scheduler knows of one node: what its live tasks take.
#[derive(Debug)]
struct NodeInfo<'a> {
    node: &'a Node,
    /// Live tasks per service.
    by_service: HashMap<String, u64>,
    total: u64,
    reserved_cpu: u64,
    reserved_memory: u64,
    host_ports: HashSet<(u16, Protocol)>,
}

impl NodeInfo<'_> {
    fn count(
        &mut self,
        service: &str,
        spec_ports: &[crate::spec::model::PortConfig],
        res: &crate::spec::model::Resources,
        adding: bool,
    ) {
        let count = self.by_service.entry(service.to_string()).or_default();
        let cpu = res.reserve_cpus.map_or(0, |c| c.0);
        let memory = res.reserve_memory.map_or(0, |m| m.0);
        let host = spec_ports
            .iter()
            .filter(|p| p.mode == PublishMode::Host)
            .filter_map(|p| p.published.map(|n| (n, p.protocol)));
        if adding {
            *count += 1;
            self.total += 1;
            self.reserved_cpu = self.reserved_cpu.saturating_add(cpu);
            self.reserved_memory = self.reserved_memory.saturating_add(memory);
            self.host_ports.extend(host);
        } else {
            *count = count.saturating_sub(1);
            self.total = self.total.saturating_sub(1);
            self.reserved_cpu = self.reserved_cpu.saturating_sub(cpu);
            self.reserved_memory = self.reserved_memory.saturating_sub(memory);
            for p in host {
                self.host_ports.remove(&p);
            }
        }
    }

    fn tasks_of(&self, service: &str) -> u64 {
        self.by_service.get(service).copied().unwrap_or(0)
    }

    /// The filters, in order: the first that fails.
    fn filter(&self, spec: &ServiceSpec) -> Result<(), Filter> {
        let node = self.node;
        if !node.ready || node.availability != Availability::Active {
            return Err(Filter::NotAvailable);
        }
        let r = &spec.task.resources;
        let cpu_short = r
            .reserve_cpus
            .is_some_and(|c| self.reserved_cpu.saturating_add(c.0) > node.nano_cpus);
        let memory_short = r
            .reserve_memory
            .is_some_and(|m| self.reserved_memory.saturating_add(m.0) > node.memory_bytes);
        if cpu_short || memory_short {
            return Err(Filter::Resources);
        }
        if !constraints_hold(spec, node) {
            return Err(Filter::Constraints);
        }
        let taken = spec
            .endpoint
            .ports
            .iter()
            .filter(|p| p.mode == PublishMode::Host)
            .filter_map(|p| p.published.map(|n| (n, p.protocol)))
            .any(|p| self.host_ports.contains(&p));
        if taken {
            return Err(Filter::HostPorts);
        }
        let max = spec.task.placement.max_replicas_per_node;
        if max > 0 && self.tasks_of(&spec.name) >= max {
            return Err(Filter::MaxReplicas);
        }
        Ok(())
    }
}

/// The nodes and what their live tasks take, for one pass of placements.
#[derive(Debug)]
pub struct Scheduler<'a> {
    nodes: Vec<NodeInfo<'a>>,
    index: HashMap<&'a str, usize>,
    /// Preference groups by preference list (labels do not change within a pass).
    groups: std::cell::RefCell<HashMap<Vec<String>, std::rc::Rc<Groups>>>,
}

impl<'a> Scheduler<'a> {
    /// A scheduler over `nodes`, counting the live tasks (meant to run, not yet stopped) that
    /// are placed on them.
    pub fn new(
        nodes: impl IntoIterator<Item = &'a Node>,
        tasks: impl IntoIterator<Item = &'a Task>,
    ) -> Self {
        let nodes: Vec<NodeInfo<'a>> = nodes
            .into_iter()
            .map(|node| NodeInfo {
                node,
                by_service: HashMap::new(),
                total: 0,
                reserved_cpu: 0,
                reserved_memory: 0,
                host_ports: HashSet::new(),
            })
            .collect();
        let index = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.node.id.as_str(), i))
            .collect();
        let mut s = Scheduler {
            nodes,
            index,
            groups: Default::default(),
        };
        for t in tasks
            .into_iter()
            .filter(|t| t.is_live() && !t.node.is_empty())
        {
            s.record(t, true);
        }
        s
    }

    fn record(&mut self, t: &Task, adding: bool) {
        if let Some(&i) = self.index.get(t.node.as_str()) {
            self.nodes[i].count(&t.service, &t.endpoint.ports, &t.spec.resources, adding);
        }
    }

    /// Note that `task` runs on its node now (placed in this pass, or created assigned).
    pub fn place(&mut self, task: &Task) {
        self.record(task, true);
    }

    /// Note that `task` no longer counts (told to shut down in this pass).
    pub fn release(&mut self, task: &Task) {
        self.record(task, false);
    }

    /// Would a new task of `spec` fit on `node`? (Global services: the node is given.)
    pub fn fits(&self, spec: &ServiceSpec, node: &str) -> Result<(), String> {
        match self.index.get(node) {
            None => Err(format!("node {node} is not in the cluster")),
            Some(&i) => self.nodes[i]
                .filter(spec)
                .map_err(|f| format!("no suitable node ({})", f.describe(1))),
        }
    }

    /// Pick the node for a new task of `spec`. `Err` explains why no node fits: "no suitable
    /// node (1 node does not satisfy the placement constraints)".
    ///
    /// One pass over the nodes: the filters, then the rank of each eligible node: the tasks of
    /// the service in its preference groups (summed once per pick, over group numbers worked
    /// out once per pass), then its own tasks of the service, then all its tasks. A pick costs
    /// O(nodes) with no allocation per node.
    pub fn pick(&self, spec: &ServiceSpec) -> Result<String, String> {
        if self.nodes.is_empty() {
            return Err("no suitable node (no nodes in the cluster)".into());
        }
        let name = spec.name.as_str();
        let mut rejected: BTreeMap<Filter, usize> = BTreeMap::new();
        // (node index, its tasks of the service)
        let mut eligible: Vec<(usize, u64)> = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            match n.filter(spec) {
                Ok(()) => eligible.push((i, n.tasks_of(name))),
                Err(f) => *rejected.entry(f).or_default() += 1,
            }
        }
        if eligible.is_empty() {
            let reasons: Vec<String> = rejected.iter().map(|(f, n)| f.describe(*n)).collect();
            return Err(format!("no suitable node ({})", reasons.join("; ")));
        }
        let own = |&(i, tasks): &(usize, u64)| {
            let n = &self.nodes[i];
            (tasks, n.total, n.node.id.as_str())
        };
        let prefs = &spec.task.placement.spread;
        let best = if prefs.is_empty() {
            eligible.iter().min_by_key(|e| own(e))
        } else {
            let groups = self.groups(prefs);
            let levels = prefs.len();
            let mut sums: Vec<Vec<u64>> = groups.count.iter().map(|c| vec![0; *c]).collect();
            for &(i, tasks) in &eligible {
                for (l, sum) in sums.iter_mut().enumerate() {
                    sum[groups.of[i * levels + l] as usize] += tasks;
                }
            }
            let rank = |i: usize, l: usize| sums[l][groups.of[i * levels + l] as usize];
            eligible.iter().min_by(|a, b| {
                (0..levels)
                    .map(|l| rank(a.0, l).cmp(&rank(b.0, l)))
                    .find(|o| o.is_ne())
                    .unwrap_or(std::cmp::Ordering::Equal)
                    .then_with(|| own(a).cmp(&own(b)))
            })
        };
        let (i, _) = best.expect("not empty");
        Ok(self.nodes[*i].node.id.clone())
    }

    /// Each node's group at each level of these preferences, worked out once per pass.
    fn groups(&self, prefs: &[String]) -> std::rc::Rc<Groups> {
        let mut cache = self.groups.borrow_mut();
        if let Some(g) = cache.get(prefs) {
            return g.clone();
        }
        let g = std::rc::Rc::new(Groups::new(prefs, &self.nodes));
        cache.insert(prefs.to_vec(), g.clone());
        g
    }
}

/// Placement preferences, as Swarm applies them: at each level (outermost first) the group of
/// nodes sharing a node's label value, within its group at the level above, should hold the
/// fewest tasks of the service. Groups are numbered per level; a node without the label is in
/// a group of its own value (none).
#[derive(Debug)]
struct Groups {
    /// `of[node * levels + level]`: the node's group at that level.
    of: Vec<u32>,
    /// How many groups each level has.
    count: Vec<usize>,
}

impl Groups {
    fn new(prefs: &[String], nodes: &[NodeInfo<'_>]) -> Groups {
        let keys: Vec<LabelKey<'_>> = prefs.iter().map(|p| LabelKey::parse(p)).collect();
        let levels = keys.len();
        let mut of = vec![0u32; nodes.len() * levels];
        let mut count = Vec::with_capacity(levels);
        let mut parent = vec![0u32; nodes.len()];
        for (l, key) in keys.iter().enumerate() {
            let mut ids: HashMap<(u32, Option<&str>), u32> = HashMap::new();
            for (i, n) in nodes.iter().enumerate() {
                let next = ids.len() as u32;
                let id = *ids.entry((parent[i], key.value(n.node))).or_insert(next);
                of[i * levels + l] = id;
                parent[i] = id;
            }
            count.push(ids.len());
        }
        Groups { of, count }
    }
}

/// A `spread=` label as a preference names it: `node.labels.KEY` or `engine.labels.KEY`.
enum LabelKey<'s> {
    Node(&'s str),
    Engine(&'s str),
    Other,
}

impl<'s> LabelKey<'s> {
    fn parse(key: &'s str) -> Self {
        let lower = key.to_ascii_lowercase();
        if let Some(l) = lower.strip_prefix("node.labels.") {
            LabelKey::Node(&key[key.len() - l.len()..])
        } else if let Some(l) = lower.strip_prefix("engine.labels.") {
            LabelKey::Engine(&key[key.len() - l.len()..])
        } else {
            LabelKey::Other
        }
    }

    /// The node's value; nodes without the label form their own group.
    fn value<'n>(&self, node: &'n Node) -> Option<&'n str> {
        match self {
            LabelKey::Node(l) => node.labels.get(*l).map(String::as_str),
            LabelKey::Engine(l) => node.engine_labels.get(*l).map(String::as_str),
            LabelKey::Other => None,
        }
    }
}

#[cfg(test)]
mod tests;
