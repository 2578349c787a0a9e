//! What the managers give one node: its tasks, and exactly the networks, volumes and content
//! (secrets, configs, repo files) those tasks use, after swarmkit's assignments. The dispatcher
//! computes a node's set from the store ([`for_node`], pure), sends it whole when a session
//! opens and then only what changed ([`diff`]), each message numbered; the agent keeps the set
//! ([`Assignments::apply`]) and works from it alone, never from the store.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::spec::model::{Mount, NetworkSpec, VolumeSpec};
use crate::store::{ContentRef, Owned, State, Task, TaskId, TaskState};

/// One node's assignment set, as the agent holds it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Assignments {
    /// The node's tasks, including those told to stop (the agent must stop them).
    pub tasks: BTreeMap<TaskId, Task>,
    /// The stack of each service a task belongs to.
    pub stacks: BTreeMap<String, String>,
    /// The networks and volumes the tasks use.
    pub networks: BTreeMap<String, Owned<NetworkSpec>>,
    pub volumes: BTreeMap<String, Owned<VolumeSpec>>,
    /// Every network name the cluster has: a stack network is removed from this node's engine
    /// only once no stack has it any more.
    pub cluster_networks: BTreeSet<String>,
    /// Every node the cluster has: containers of a node it forgot are shown in status.
    pub cluster_nodes: BTreeSet<String>,
    /// Content by version, for the tasks that are to run (not filled by [`for_node`]: the
    /// dispatcher resolves each version once per session).
    pub contents: BTreeMap<String, Content>,
    /// A complete set arrived in this session: until then the agent removes no container it
    /// does not know (it may simply not have heard of it yet).
    #[serde(skip)]
    pub complete: bool,
}

/// The content of one version, as the dispatcher delivers it.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Content {
    /// A secret's or config's bytes.
    Bytes {
        #[serde(with = "base64_bytes")]
        bytes: zeroize::Zeroizing<Vec<u8>>,
    },
    /// A repo file (`dir: false`, one file) or directory, copied read-only on the node.
    Files {
        dir: bool,
        /// The file's (or "dir") name in the copy.
        name: String,
        files: Vec<RepoFile>,
    },
    /// It cannot be had (an external secret, a key the managers lack): the task is rejected
    /// with this.
    Missing { why: String },
}

impl fmt::Debug for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Content::Bytes { bytes } => write!(f, "Bytes(<redacted, {} bytes>)", bytes.len()),
            Content::Files { dir, name, files } => {
                write!(f, "Files({name}, dir: {dir}, {} files)", files.len())
            }
            Content::Missing { why } => write!(f, "Missing({why})"),
        }
    }
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct RepoFile {
    /// Relative to the copy's root, `/`-separated (empty for a single file).
    pub path: String,
    pub executable: bool,
    #[serde(with = "base64_bytes")]
    pub bytes: zeroize::Zeroizing<Vec<u8>>,
}

/// What content a version is, for the dispatcher to resolve.
#[derive(Clone, Debug, PartialEq)]
pub struct Need {
    pub kind: NeedKind,
    /// The secret's or config's full name, or the mount's target for a repo file.
    pub name: String,
    /// Where the content of this version is (None: the cluster does not know the version).
    pub at: Option<ContentRef>,
    /// An external secret or config: not in git, not served.
    pub external: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NeedKind {
    Secret,
    Config,
    RepoFile,
}

impl NeedKind {
    pub fn word(self) -> &'static str {
        match self {
            NeedKind::Secret => "secret",
            NeedKind::Config => "config",
            NeedKind::RepoFile => "repo file",
        }
    }
}

/// A task is handed to its node once it is placed, and stays in the set until it is removed
/// (a node must hear that a task should stop).
fn is_assigned(t: &Task) -> bool {
    t.status.state >= TaskState::Assigned && t.status.state != TaskState::Remove
}

/// A task whose container is still to be made needs its content.
fn needs_content(t: &Task) -> bool {
    t.desired_state <= TaskState::Running && t.status.state < TaskState::Running
}

/// The assignment set of `node` (without content) and the content versions its tasks need.
pub fn for_node(state: &State, node: &str) -> (Assignments, BTreeMap<String, Need>) {
    let nodes = BTreeSet::from([node.to_string()]);
    for_nodes(state, &nodes).remove(node).unwrap_or_default()
}

/// [`for_node`] for several nodes, in one pass over the tasks.
pub fn for_nodes(
    state: &State,
    nodes: &BTreeSet<String>,
) -> HashMap<String, (Assignments, BTreeMap<String, Need>)> {
    let base = Assignments {
        cluster_networks: state.networks.keys().cloned().collect(),
        cluster_nodes: state.nodes.keys().cloned().collect(),
        ..Default::default()
    };
    let mut out: HashMap<String, (Assignments, BTreeMap<String, Need>)> = nodes
        .iter()
        .map(|n| (n.clone(), (base.clone(), BTreeMap::new())))
        .collect();
    for t in state.tasks.values().filter(|t| is_assigned(t)) {
        let Some((a, needs)) = out.get_mut(&t.node) else {
            continue;
        };
        add_task(state, t, a, needs);
    }
    out
}

fn add_task(state: &State, t: &Task, a: &mut Assignments, needs: &mut BTreeMap<String, Need>) {
    if let Some(svc) = state.services.get(&t.service) {
        a.stacks.insert(t.service.clone(), svc.spec.stack.clone());
    }
    for n in &t.spec.networks {
        if let Some(owned) = state.networks.get(&n.network) {
            a.networks.insert(n.network.clone(), owned.clone());
        }
    }
    for m in &t.spec.container.mounts {
        match m {
            Mount::Volume {
                source: Some(name), ..
            } => {
                if let Some(owned) = state.volumes.get(name) {
                    a.volumes.insert(name.clone(), owned.clone());
                }
            }
            Mount::Repo {
                version, target, ..
            } if needs_content(t) => {
                needs.entry(version.clone()).or_insert_with(|| Need {
                    kind: NeedKind::RepoFile,
                    name: target.clone(),
                    at: state.contents.get(version).cloned(),
                    external: false,
                });
            }
            _ => {}
        }
    }
    if needs_content(t) {
        let files = [
            (NeedKind::Secret, &t.spec.container.secrets, &state.secrets),
            (NeedKind::Config, &t.spec.container.configs, &state.configs),
        ];
        for (kind, mounts, objects) in files {
            for m in mounts {
                needs.entry(m.version.clone()).or_insert_with(|| Need {
                    kind,
                    name: m.object.clone(),
                    at: state.contents.get(&m.version).cloned(),
                    external: objects.get(&m.object).is_some_and(|o| o.spec.external),
                });
            }
        }
    }
    a.tasks.insert(t.id.clone(), t.clone());
}

/// One message of the assignment stream: the whole set (`full`) or what changed since the
/// message before, numbered so that the agent notices a gap.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub sequence: u64,
    pub full: bool,
    /// New or changed tasks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<Task>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed_tasks: Vec<TaskId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stacks: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networks: Option<BTreeMap<String, Owned<NetworkSpec>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, Owned<VolumeSpec>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_networks: Option<BTreeSet<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_nodes: Option<BTreeSet<String>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub contents: BTreeMap<String, Content>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed_contents: Vec<String>,
}

impl Change {
    /// The whole set.
    pub fn full(a: &Assignments, sequence: u64) -> Change {
        Change {
            sequence,
            full: true,
            tasks: a.tasks.values().cloned().collect(),
            removed_tasks: Vec::new(),
            stacks: Some(a.stacks.clone()),
            networks: Some(a.networks.clone()),
            volumes: Some(a.volumes.clone()),
            cluster_networks: Some(a.cluster_networks.clone()),
            cluster_nodes: Some(a.cluster_nodes.clone()),
            contents: a.contents.clone(),
            removed_contents: Vec::new(),
        }
    }

    /// How many tasks it carries or removes (for logs and benchmarks).
    pub fn task_count(&self) -> usize {
        self.tasks.len() + self.removed_tasks.len()
    }
}

/// What changed from `old` to `new`, or `None` when nothing did.
pub fn diff(old: &Assignments, new: &Assignments, sequence: u64) -> Option<Change> {
    let mut c = Change {
        sequence,
        ..Default::default()
    };
    for (id, t) in &new.tasks {
        if old.tasks.get(id) != Some(t) {
            c.tasks.push(t.clone());
        }
    }
    c.removed_tasks = old
        .tasks
        .keys()
        .filter(|id| !new.tasks.contains_key(*id))
        .cloned()
        .collect();
    fn changed<T: Clone + PartialEq>(old: &T, new: &T) -> Option<T> {
        (old != new).then(|| new.clone())
    }
    c.stacks = changed(&old.stacks, &new.stacks);
    c.networks = changed(&old.networks, &new.networks);
    c.volumes = changed(&old.volumes, &new.volumes);
    c.cluster_networks = changed(&old.cluster_networks, &new.cluster_networks);
    c.cluster_nodes = changed(&old.cluster_nodes, &new.cluster_nodes);
    for (v, content) in &new.contents {
        if old.contents.get(v) != Some(content) {
            c.contents.insert(v.clone(), content.clone());
        }
    }
    c.removed_contents = old
        .contents
        .keys()
        .filter(|v| !new.contents.contains_key(*v))
        .cloned()
        .collect();
    let empty = Change {
        sequence,
        ..Default::default()
    };
    (c != empty).then_some(c)
}

impl Assignments {
    /// Take one message of the stream. A full set replaces everything; a change must follow
    /// the last message received, or the set can no longer be trusted (the agent then opens
    /// a new session, which starts with a full set).
    pub fn apply(&mut self, c: Change, last: Option<u64>) -> Result<(), String> {
        if c.full {
            *self = Assignments {
                complete: true,
                ..Default::default()
            };
        } else if last.map(|l| l + 1) != Some(c.sequence) {
            return Err(format!(
                "assignment message {} does not follow {}",
                c.sequence,
                last.map(|l| l.to_string())
                    .unwrap_or_else(|| "nothing".into())
            ));
        }
        for id in c.removed_tasks {
            self.tasks.remove(&id);
        }
        for t in c.tasks {
            self.tasks.insert(t.id.clone(), t);
        }
        if let Some(s) = c.stacks {
            self.stacks = s;
        }
        if let Some(n) = c.networks {
            self.networks = n;
        }
        if let Some(v) = c.volumes {
            self.volumes = v;
        }
        if let Some(n) = c.cluster_networks {
            self.cluster_networks = n;
        }
        if let Some(n) = c.cluster_nodes {
            self.cluster_nodes = n;
        }
        for v in c.removed_contents {
            self.contents.remove(&v);
        }
        self.contents.extend(c.contents);
        Ok(())
    }
}

/// Bytes as base64 in JSON (the assignment stream's payload is JSON, like the rest of the
/// cluster's RPCs).
mod base64_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        bytes: &zeroize::Zeroizing<Vec<u8>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&zeroize::Zeroizing::new(
            base64::engine::general_purpose::STANDARD.encode(bytes.as_slice()),
        ))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, D::Error> {
        let text = zeroize::Zeroizing::new(String::deserialize(d)?);
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map(zeroize::Zeroizing::new)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, node: &str, state: TaskState) -> Task {
        use crate::spec::{load_stack, NoFiles, Variables};
        let text = "services:\n  web:\n    image: nginx\n";
        let loaded = load_stack("s", "compose.yml", text, &NoFiles, &Variables::default());
        let svc = loaded.spec.unwrap().services.into_values().next().unwrap();
        Task {
            id: id.into(),
            service: "s_web".into(),
            slot: Some(1),
            node: node.into(),
            service_version: 1,
            spec: svc.task.clone(),
            endpoint: svc.endpoint.clone(),
            desired_state: TaskState::Running,
            status: crate::store::TaskStatus {
                state,
                timestamp: 0,
                message: String::new(),
                error: None,
                container_id: None,
                exit_code: None,
                running_since: None,
            },
            created_at: 0,
            restarts: vec![],
        }
    }

    #[test]
    fn a_node_gets_only_its_own_placed_tasks() {
        let mut state = State::default();
        for t in [
            task("a", "n1", TaskState::Assigned),
            task("b", "n2", TaskState::Running),
            task("c", "n1", TaskState::Pending),
            task("d", "n1", TaskState::Remove),
        ] {
            state.tasks.insert(t.id.clone(), t);
        }
        let (a, _) = for_node(&state, "n1");
        assert_eq!(a.tasks.keys().collect::<Vec<_>>(), ["a"]);
    }

    #[test]
    fn changes_replayed_on_a_full_set_give_the_new_set_and_a_gap_is_refused() {
        let mut state = State::default();
        let t1 = task("a", "n1", TaskState::Assigned);
        state.tasks.insert("a".into(), t1.clone());
        let (old, _) = for_node(&state, "n1");
        let mut agent = Assignments::default();
        agent.apply(Change::full(&old, 0), None).unwrap();
        assert!(agent.complete);

        let mut t2 = t1.clone();
        t2.desired_state = TaskState::Shutdown;
        state.tasks.insert("a".into(), t2);
        state
            .tasks
            .insert("b".into(), task("b", "n1", TaskState::Assigned));
        let (new, _) = for_node(&state, "n1");
        let change = diff(&old, &new, 1).expect("something changed");
        assert_eq!(change.tasks.len(), 2);
        assert!(diff(&new, &new, 2).is_none());

        let mut skipped = agent.clone();
        assert!(skipped.apply(change.clone(), Some(5)).is_err());
        agent.apply(change, Some(0)).unwrap();
        assert_eq!(agent.tasks, new.tasks);
    }

    #[test]
    fn content_never_shows_in_debug_and_survives_the_wire() {
        let c = Content::Bytes {
            bytes: zeroize::Zeroizing::new(b"hunter2".to_vec()),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        let json = serde_json::to_string(&c).unwrap();
        let back: Content = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
    }
}
