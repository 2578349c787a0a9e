//! The plan: what converging `observed` onto `desired` would do, as a value (Nomad's idea).
//! `reconciler plan` prints it; the orchestrator will execute the same diff. Pure: no I/O.

mod diff;
pub mod render;
pub mod state_file;

use serde::{Deserialize, Serialize};

use crate::desired::DesiredState;
use crate::spec::model::{
    FailureAction, FileMount, FileObjectSpec, Mode, NetworkSpec, ServiceSpec, StackSpec,
    UpdateOrder, VolumeSpec,
};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The commit the observed state came from, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_revision: Option<String>,
    /// The commit the desired state came from, if it came from git.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_revision: Option<String>,
    /// Stacks with changes, by name.
    pub stacks: Vec<StackPlan>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    Remove,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StackPlan {
    pub name: String,
    pub action: Action,
    pub changes: Vec<Change>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Network,
    Volume,
    Secret,
    Config,
    Service,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub kind: Kind,
    /// Full name, e.g. `shop_web`.
    pub name: String,
    pub action: Action,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldChange>,
    /// How tasks move, for services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    pub field: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// For lists: elements that appear.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub added: Vec<String>,
    /// For lists: elements that go.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
}

/// What happens to a service's tasks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Rollout {
    /// New service: tasks start (per node for global services).
    Start { tasks: Option<u64> },
    /// Removed service: its tasks stop.
    Stop { tasks: Option<u64> },
    /// Only the replica count changes: tasks start or stop, none is replaced.
    Scale { from: u64, to: u64 },
    /// The task spec changed: tasks are replaced slot by slot.
    Rolling {
        /// Tasks replaced (None: one per node, global service).
        tasks: Option<u64>,
        /// Tasks started (+) or stopped (-) besides the replaced ones.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scale: Option<(u64, u64)>,
        parallelism: u64,
        order: UpdateOrder,
        delay: crate::spec::units::Duration,
        monitor: crate::spec::units::Duration,
        failure_action: FailureAction,
        max_failure_ratio: f64,
    },
    /// Service-level settings only (labels, update policy): no task is touched.
    NoTaskChange,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.stacks.is_empty()
    }

    /// Counts of (create, update, remove) over every object.
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for ch in self.stacks.iter().flat_map(|s| &s.changes) {
            match ch.action {
                Action::Create => c.0 += 1,
                Action::Update => c.1 += 1,
                Action::Remove => c.2 += 1,
            }
        }
        c
    }
}

/// Diff `observed` (what runs) against `desired` (what git asks for).
pub fn plan(desired: &DesiredState, observed: &DesiredState) -> Plan {
    let mut stacks = Vec::new();
    let empty = StackSpec::default();
    let names: std::collections::BTreeSet<&String> = desired
        .stacks
        .keys()
        .chain(observed.stacks.keys())
        .collect();
    for name in names {
        let (action, new, old) = match (desired.stacks.get(name), observed.stacks.get(name)) {
            (Some(new), Some(old)) => (Action::Update, new, old),
            (Some(new), None) => (Action::Create, new, &empty),
            (None, Some(old)) => (Action::Remove, &empty, old),
            (None, None) => unreachable!("name comes from one of the maps"),
        };
        let changes = stack_changes(new, old);
        if !changes.is_empty() {
            stacks.push(StackPlan {
                name: name.clone(),
                action,
                changes,
            });
        }
    }
    Plan {
        from_revision: observed.revision.clone(),
        to_revision: desired.revision.clone(),
        stacks,
    }
}

fn stack_changes(new: &StackSpec, old: &StackSpec) -> Vec<Change> {
    if new == old {
        return Vec::new();
    }
    // Supporting objects first on the way in, services, then removals last: the order in
    // which they are applied.
    let mut creates = Vec::new();
    let mut removes = Vec::new();
    objects(
        &new.networks,
        &old.networks,
        Kind::Network,
        network_fields,
        &mut creates,
        &mut removes,
    );
    objects(
        &new.volumes,
        &old.volumes,
        Kind::Volume,
        volume_fields,
        &mut creates,
        &mut removes,
    );
    objects(
        &new.secrets,
        &old.secrets,
        Kind::Secret,
        file_object_fields,
        &mut creates,
        &mut removes,
    );
    objects(
        &new.configs,
        &old.configs,
        Kind::Config,
        file_object_fields,
        &mut creates,
        &mut removes,
    );
    let mut services = Vec::new();
    for (name, svc) in &new.services {
        match old.services.get(name) {
            None => services.push(Change {
                kind: Kind::Service,
                name: name.clone(),
                action: Action::Create,
                fields: service_summary(svc),
                rollout: Some(Rollout::Start {
                    tasks: replicas(svc),
                }),
            }),
            Some(prev) if prev != svc => services.push(service_update(prev, svc)),
            Some(_) => {}
        }
    }
    for (name, svc) in &old.services {
        if !new.services.contains_key(name) {
            removes.insert(
                0,
                Change {
                    kind: Kind::Service,
                    name: name.clone(),
                    action: Action::Remove,
                    fields: vec![],
                    rollout: Some(Rollout::Stop {
                        tasks: replicas(svc),
                    }),
                },
            );
        }
    }
    creates.extend(services);
    creates.extend(removes);
    creates
}

fn objects<T: PartialEq + Named>(
    new: &std::collections::BTreeMap<String, T>,
    old: &std::collections::BTreeMap<String, T>,
    kind: Kind,
    fields: fn(&T, &T) -> Vec<FieldChange>,
    creates: &mut Vec<Change>,
    removes: &mut Vec<Change>,
) {
    // Matched by full name: a renamed object is a removal and a creation.
    for n in new.values() {
        match old.values().find(|o| o.full_name() == n.full_name()) {
            None => creates.push(Change {
                kind,
                name: n.full_name().to_string(),
                action: Action::Create,
                fields: vec![],
                rollout: None,
            }),
            Some(o) if o != n => creates.push(Change {
                kind,
                name: n.full_name().to_string(),
                action: Action::Update,
                fields: fields(o, n),
                rollout: None,
            }),
            Some(_) => {}
        }
    }
    for o in old.values() {
        if !new.values().any(|n| n.full_name() == o.full_name()) {
            removes.push(Change {
                kind,
                name: o.full_name().to_string(),
                action: Action::Remove,
                fields: vec![],
                rollout: None,
            });
        }
    }
}

trait Named {
    fn full_name(&self) -> &str;
}
impl Named for NetworkSpec {
    fn full_name(&self) -> &str {
        &self.name
    }
}
impl Named for VolumeSpec {
    fn full_name(&self) -> &str {
        &self.name
    }
}
impl Named for FileObjectSpec {
    fn full_name(&self) -> &str {
        &self.name
    }
}

fn network_fields(old: &NetworkSpec, new: &NetworkSpec) -> Vec<FieldChange> {
    diff::diff(old, new)
}

fn volume_fields(old: &VolumeSpec, new: &VolumeSpec) -> Vec<FieldChange> {
    diff::diff(old, new)
}

/// Secrets and configs: content shows only as "content changed", never as data or hashes.
fn file_object_fields(old: &FileObjectSpec, new: &FileObjectSpec) -> Vec<FieldChange> {
    let mut out = Vec::new();
    if old.version != new.version {
        out.push(content_changed("content"));
    }
    let strip = |o: &FileObjectSpec| FileObjectSpec {
        version: String::new(),
        inline: None,
        ..o.clone()
    };
    out.extend(diff::diff(&strip(old), &strip(new)));
    out
}

fn content_changed(field: &str) -> FieldChange {
    FieldChange {
        field: field.to_string(),
        from: None,
        to: Some("content changed".into()),
        added: vec![],
        removed: vec![],
    }
}

fn replicas(svc: &ServiceSpec) -> Option<u64> {
    match svc.mode {
        Mode::Replicated { replicas } => Some(replicas),
        Mode::ReplicatedJob { total, .. } => Some(total),
        Mode::Global | Mode::GlobalJob => None,
    }
}

/// The headline facts of a new service.
fn service_summary(svc: &ServiceSpec) -> Vec<FieldChange> {
    let mut out = vec![FieldChange {
        field: "image".into(),
        from: None,
        to: Some(svc.task.container.image.clone()),
        added: vec![],
        removed: vec![],
    }];
    out.push(FieldChange {
        field: "mode".into(),
        from: None,
        to: Some(match svc.mode {
            Mode::Replicated { replicas: 1 } => "replicated, 1 replica".into(),
            Mode::Replicated { replicas } => format!("replicated, {replicas} replicas"),
            Mode::Global => "global".into(),
            Mode::ReplicatedJob {
                total,
                max_concurrent,
            } => format!("replicated job, {total} completions, {max_concurrent} at a time"),
            Mode::GlobalJob => "global job, once on every node".into(),
        }),
        added: vec![],
        removed: vec![],
    });
    if !svc.endpoint.ports.is_empty() {
        out.push(FieldChange {
            field: "ports".into(),
            from: None,
            to: Some(
                svc.endpoint
                    .ports
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            added: vec![],
            removed: vec![],
        });
    }
    out
}

fn service_update(old: &ServiceSpec, new: &ServiceSpec) -> Change {
    // Secret and config versions are hidden from the diff and shown as "content changed".
    let hide = |s: &ServiceSpec| {
        let mut s = s.clone();
        let blank = |v: &mut Vec<FileMount>| v.iter_mut().for_each(|m| m.version.clear());
        let task = std::sync::Arc::make_mut(&mut s.task);
        blank(&mut task.container.secrets);
        blank(&mut task.container.configs);
        s
    };
    let mut fields = diff::diff(&hide(old), &hide(new));
    for (label, o, n) in [
        (
            "secret",
            &old.task.container.secrets,
            &new.task.container.secrets,
        ),
        (
            "config",
            &old.task.container.configs,
            &new.task.container.configs,
        ),
    ] {
        for m in n {
            if let Some(prev) = o
                .iter()
                .find(|p| p.object == m.object && p.target == m.target)
            {
                if prev.version != m.version {
                    fields.push(content_changed(&format!("{label} {}", m.object)));
                }
            }
        }
    }

    let tasks_dirty = old.task != new.task || old.endpoint != new.endpoint;
    let rollout = if tasks_dirty {
        let cfg = &new.update_config;
        let scale = match (old.mode, new.mode) {
            (Mode::Replicated { replicas: a }, Mode::Replicated { replicas: b }) if a != b => {
                Some((a, b))
            }
            _ => None,
        };
        Rollout::Rolling {
            tasks: match (old.mode, new.mode) {
                (Mode::Replicated { replicas: a }, Mode::Replicated { replicas: b }) => {
                    Some(a.min(b))
                }
                _ => None,
            },
            scale,
            parallelism: cfg.parallelism,
            order: cfg.order,
            delay: cfg.delay,
            monitor: cfg.monitor,
            failure_action: cfg.failure_action,
            max_failure_ratio: cfg.max_failure_ratio,
        }
    } else {
        match (old.mode, new.mode) {
            (Mode::Replicated { replicas: a }, Mode::Replicated { replicas: b }) if a != b => {
                Rollout::Scale { from: a, to: b }
            }
            (Mode::Replicated { .. }, Mode::Global) | (Mode::Global, Mode::Replicated { .. }) => {
                // Swarm cannot change a service's mode in place; neither can we pretend to.
                Rollout::Rolling {
                    tasks: None,
                    scale: None,
                    parallelism: 0,
                    order: UpdateOrder::StopFirst,
                    delay: crate::spec::units::Duration::ZERO,
                    monitor: new.update_config.monitor,
                    failure_action: new.update_config.failure_action,
                    max_failure_ratio: new.update_config.max_failure_ratio,
                }
            }
            _ => Rollout::NoTaskChange,
        }
    };
    Change {
        kind: Kind::Service,
        name: new.name.clone(),
        action: Action::Update,
        fields,
        rollout: Some(rollout),
    }
}
