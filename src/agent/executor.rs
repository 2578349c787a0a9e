//! The agent's executor: for every task assigned to this node, compare what the managers want
//! (desired state) with what the engine shows, make at most one runtime call, and report the
//! task's new status. Like SwarmKit's controller, one step per call: easy to test, and a
//! restarted agent simply resumes from the containers it finds (adopted by label).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use futures::future::{BoxFuture, FutureExt};
use futures::StreamExt;

use super::assignment::{Assignments, Content};
use super::local_files::LocalFiles;
use super::runtime::{
    ContainerId, ContainerRequest, ContainerState, Health, ObservedContainer, Runtime,
    RuntimeError, TaskRef,
};
use crate::secrets::SecretBytes;
use crate::spec::model::{FileMount, Mount};
use crate::store::{Command, Millis, Task, TaskState, TaskStatus};

/// Tasks stepped at once.
const TASK_CONCURRENCY: usize = 8;

type StepResult = (String, Result<Option<TaskStatus>, RuntimeError>);

pub struct Executor<R: Runtime> {
    runtime: R,
    node_id: String,
    files: std::sync::Arc<LocalFiles>,
    /// Networks and volumes already ensured, so each is created once per process.
    ensured: BTreeSet<String>,
    /// Containers being stopped in the background: a stop waits out the grace period, which
    /// must not hold up every other task's step.
    stopping: std::sync::Arc<std::sync::Mutex<BTreeSet<ContainerId>>>,
}

/// What one pass produced: status reports for the store.
#[derive(Debug, Default)]
pub struct Reports {
    pub commands: Vec<Command>,
    /// Each task container's address (the first network's), for the ingress proxy.
    pub addresses: HashMap<String, std::net::IpAddr>,
    /// The engine could not be reached: nothing was learnt this pass.
    pub engine_down: Option<String>,
}

impl<R: Runtime> Executor<R> {
    pub fn new(runtime: R, node_id: impl Into<String>, files: std::sync::Arc<LocalFiles>) -> Self {
        Executor {
            runtime,
            node_id: node_id.into(),
            files,
            ensured: BTreeSet::new(),
            stopping: Default::default(),
        }
    }

    pub fn runtime(&self) -> &R {
        &self.runtime
    }

    /// One pass over the node's tasks (its assignment set) and containers.
    pub async fn step(&mut self, state: &Assignments, now: Millis) -> Reports {
        let mut out = Reports::default();
        let containers = match self.runtime.list().await {
            Ok(c) => c,
            Err(e) => {
                out.engine_down = Some(e.to_string());
                return out;
            }
        };
        let mut by_task: HashMap<String, ObservedContainer> = HashMap::new();
        for c in containers {
            if let Some(ip) = c.addresses.values().next() {
                out.addresses.insert(c.task.task_id.clone(), *ip);
            }
            by_task.insert(c.task.task_id.clone(), c);
        }
        let mine: Vec<&Task> = state.tasks.values().collect();
        let known: BTreeSet<&str> = mine.iter().map(|t| t.id.as_str()).collect();

        // Networks and volumes first, once each (cheap after the first time), so that the
        // per-task steps below need no shared mutable state and can run side by side.
        for task in &mine {
            let needs_prepare = !by_task.contains_key(&task.id)
                && task.status.state < TaskState::Ready
                && task.desired_state <= TaskState::Running;
            if needs_prepare {
                if let Err(e) = self.ensure_objects(state, task).await {
                    if e.is_transient() {
                        out.engine_down = Some(e.to_string());
                        return out;
                    }
                    tracing::warn!(task = %task.id, error = %e, "preparing networks and volumes failed");
                }
            }
        }
        // One step per task, several tasks at once: Docker serves requests in parallel, and
        // creating or starting 20 containers one after the other would be needlessly slow.
        let this = &*self;
        let steps: Vec<BoxFuture<'_, StepResult>> = mine
            .iter()
            .map(|task| {
                let container = by_task.get(&task.id);
                async move {
                    (
                        task.id.clone(),
                        this.step_task(state, task, container, now).await,
                    )
                }
                .boxed()
            })
            .collect();
        let results: Vec<StepResult> = futures::stream::iter(steps)
            .buffer_unordered(TASK_CONCURRENCY)
            .collect()
            .await;
        // Keep every report, even when some step found the engine gone: what did happen must
        // reach the store, or the next pass would not know about it.
        for (id, result) in results {
            match result {
                Ok(Some(status)) => out.commands.push(Command::UpdateTaskStatus { id, status }),
                Ok(None) => {}
                Err(e) if e.is_transient() => out.engine_down = Some(e.to_string()),
                Err(e) => tracing::warn!(task = %id, error = %e, "task step failed"),
            }
        }
        if out.engine_down.is_some() {
            return out;
        }
        // Containers of tasks this node is no longer given: orphans from a previous life or
        // another manager's decision. Removed, so nothing runs that git does not ask for; but
        // only once a complete set has said so (before it, a task may simply be unheard of).
        if !state.complete {
            return out;
        }
        for (id, c) in &by_task {
            if !known.contains(id.as_str()) {
                tracing::info!(container = %c.name, "removing container of an unknown task");
                let _ = self.runtime.remove(&c.id).await;
            }
        }
        out
    }

    async fn step_task(
        &self,
        state: &Assignments,
        task: &Task,
        container: Option<&ObservedContainer>,
        now: Millis,
    ) -> Result<Option<TaskStatus>, RuntimeError> {
        let st = &task.status;
        let report = |state: TaskState, message: &str| TaskStatus {
            state,
            timestamp: now,
            message: message.to_string(),
            ..st.clone()
        };

        // Removal: stop gracefully, remove the container, then say so (the reaper deletes it).
        if task.desired_state >= TaskState::Remove {
            if let Some(c) = container {
                if c.is_running() {
                    self.stop_in_background(task, &c.id);
                    return Ok(None);
                }
                self.runtime.remove(&c.id).await?;
            }
            return Ok(
                (st.state != TaskState::Remove).then(|| report(TaskState::Remove, "removed"))
            );
        }
        // Ended for good: make sure it is not running (a killed task must stay dead).
        if st.state.is_terminal() {
            if let Some(c) = container.filter(|c| c.is_running()) {
                self.stop_in_background(task, &c.id);
            }
            return Ok(None);
        }
        // Asked to stop: report shutdown once the container has stopped.
        if task.desired_state >= TaskState::Shutdown {
            if let Some(c) = container.filter(|c| c.is_running()) {
                self.stop_in_background(task, &c.id);
                return Ok(None);
            }
            return Ok(Some(report(TaskState::Shutdown, "shutdown")));
        }
        match (st.state, container) {
            (TaskState::New | TaskState::Pending, _) => Ok(None), // not placed yet
            (_, None) if st.state >= TaskState::Ready => {
                // Its container vanished (removed by hand): the task failed; it is replaced.
                let mut s = report(TaskState::Failed, "container removed");
                s.error = Some("the task's container was removed".into());
                Ok(Some(s))
            }
            (_, None) => {
                let prepared = self.prepare(state, task, now).await?;
                // Meant to run: start at once rather than a pass later (still one step per
                // task per pass: create and start are the two halves of "run").
                if prepared.state == TaskState::Ready && task.desired_state == TaskState::Running {
                    if let Some(id) = prepared.container_id.clone() {
                        return match self.runtime.start(&ContainerId(id)).await {
                            Ok(()) => Ok(Some(TaskStatus {
                                state: TaskState::Starting,
                                message: "starting".into(),
                                ..prepared
                            })),
                            Err(e) if e.is_transient() => Ok(Some(prepared)),
                            Err(e) => Ok(Some(TaskStatus {
                                state: TaskState::Failed,
                                message: "start failed".into(),
                                error: Some(e.to_string()),
                                ..prepared
                            })),
                        };
                    }
                }
                Ok(Some(prepared))
            }
            (TaskState::Ready, Some(c)) if task.desired_state >= TaskState::Running => {
                if let Err(e) = self.runtime.start(&c.id).await {
                    if e.is_transient() {
                        return Err(e);
                    }
                    let mut s = report(TaskState::Failed, "start failed");
                    s.error = Some(e.to_string());
                    return Ok(Some(s));
                }
                Ok(Some(report(TaskState::Starting, "starting")))
            }
            (TaskState::Ready, Some(_)) => Ok(None),
            (s, Some(c)) if s < TaskState::Ready && c.state == ContainerState::Created => {
                // Created by a pass whose report was lost (a crash, an engine hiccup): adopt it.
                Ok(Some(TaskStatus {
                    state: TaskState::Ready,
                    message: "created".into(),
                    container_id: Some(c.id.0.clone()),
                    ..report(TaskState::Ready, "created")
                }))
            }
            (_, Some(c)) => Ok(self.observe(task, c, now)),
        }
    }

    /// Create the task's networks and volumes if this process has not yet.
    async fn ensure_objects(
        &mut self,
        state: &Assignments,
        task: &Task,
    ) -> Result<(), RuntimeError> {
        for net in &task.spec.networks {
            if self.ensured.contains(&net.network) {
                continue;
            }
            if let Some(owned) = state.networks.get(&net.network) {
                self.runtime
                    .ensure_network(&owned.spec, &owned.stack)
                    .await?;
                self.ensured.insert(net.network.clone());
            }
        }
        for m in &task.spec.container.mounts {
            if let crate::spec::model::Mount::Volume {
                source: Some(name), ..
            } = m
            {
                if self.ensured.contains(name) {
                    continue;
                }
                if let Some(owned) = state.volumes.get(name) {
                    self.runtime
                        .ensure_volume(&owned.spec, &owned.stack)
                        .await?;
                    self.ensured.insert(name.clone());
                }
            }
        }
        Ok(())
    }

    /// Pull or find the image and create the container (networks and volumes exist): Ready.
    async fn prepare(
        &self,
        state: &Assignments,
        task: &Task,
        now: Millis,
    ) -> Result<TaskStatus, RuntimeError> {
        let rejected = |e: String| TaskStatus {
            state: TaskState::Rejected,
            timestamp: now,
            message: "rejected".into(),
            error: Some(e),
            container_id: None,
            exit_code: None,
            running_since: None,
        };
        let image = &task.spec.container.image;
        match self.runtime.ensure_image(image).await {
            Ok(()) => {}
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => return Ok(rejected(e.to_string())),
        }
        let stack = state.stacks.get(&task.service).cloned().unwrap_or_default();
        let task_ref = TaskRef {
            task_id: task.id.clone(),
            service: task.service.clone(),
            stack,
            slot: task.slot,
            node_id: self.node_id.clone(),
        };
        let mut spec = (*task.spec).clone();
        // Repo files and stack directories become plain binds of this node's paths.
        for m in &mut spec.container.mounts {
            let bind = match m {
                Mount::Repo {
                    version, target, ..
                } => match state.contents.get(version.as_str()) {
                    Some(content) => match self.files.materialise(version, content) {
                        Ok(path) => (path, target.clone(), true),
                        Err(e) => return Ok(rejected(e)),
                    },
                    None => {
                        return Ok(rejected(format!(
                            "the repo file for {target} (version {version}) was not delivered with the task"
                        )))
                    }
                },
                Mount::StackDir {
                    stack,
                    path,
                    target,
                    read_only,
                } => match self.files.stack_dir(stack, path) {
                    Ok(host) => (host, target.clone(), *read_only),
                    Err(e) => return Ok(rejected(e)),
                },
                _ => continue,
            };
            *m = Mount::Bind {
                source: bind.0.display().to_string(),
                target: bind.1,
                read_only: bind.2,
                propagation: None,
            };
        }
        let mut request = ContainerRequest::new(task_ref, spec, task.endpoint.clone());
        for m in &task.spec.container.secrets {
            match self.file_content(state, m, "secret") {
                Ok(bytes) => request = request.with_secret(m.clone(), bytes),
                Err(e) => return Ok(rejected(e)),
            }
        }
        for m in &task.spec.container.configs {
            match self.file_content(state, m, "config") {
                Ok(bytes) => request = request.with_config(m.clone(), bytes.expose().to_vec()),
                Err(e) => return Ok(rejected(e)),
            }
        }
        match self.runtime.create(&request).await {
            Ok(id) => Ok(TaskStatus {
                state: TaskState::Ready,
                timestamp: now,
                message: "created".into(),
                error: None,
                container_id: Some(id.0),
                exit_code: None,
                running_since: None,
            }),
            Err(e) if e.is_transient() => Err(e),
            Err(RuntimeError::Conflict(_)) => Ok(TaskStatus {
                // Created by an earlier pass whose report was lost: adopt it next pass.
                state: TaskState::Preparing,
                timestamp: now,
                message: "preparing".into(),
                error: None,
                container_id: None,
                exit_code: None,
                running_since: None,
            }),
            Err(e) => Ok(rejected(e.to_string())),
        }
    }

    /// The content of a secret or config mount: the version the task was made for, never
    /// simply the current one (a rolled-back task gets the old secret).
    fn file_content(
        &self,
        state: &Assignments,
        m: &FileMount,
        kind: &str,
    ) -> Result<SecretBytes, String> {
        match state.contents.get(&m.version) {
            Some(Content::Bytes { bytes }) => Ok(SecretBytes::new(bytes.to_vec())),
            Some(Content::Missing { why }) => Err(why.clone()),
            Some(Content::Files { .. }) => Err(format!(
                "{kind} {} version {} is a repo file, not a {kind}",
                m.object, m.version
            )),
            None => Err(format!(
                "{kind} {} version {} was not delivered with the task",
                m.object, m.version
            )),
        }
    }

    /// A started task: running (healthy when it has a healthcheck), or ended.
    fn observe(&self, task: &Task, c: &ObservedContainer, now: Millis) -> Option<TaskStatus> {
        let st = &task.status;
        let mut next = TaskStatus {
            timestamp: now,
            container_id: Some(c.id.0.clone()),
            ..st.clone()
        };
        match c.state {
            ContainerState::Exited | ContainerState::Dead => {
                let code = c.exit_code.unwrap_or(-1);
                next.exit_code = Some(code);
                if code == 0 {
                    next.state = TaskState::Complete;
                    next.message = "finished".into();
                } else {
                    next.state = TaskState::Failed;
                    next.message = "failed".into();
                    next.error = Some(
                        c.error
                            .clone()
                            .filter(|e| !e.is_empty())
                            .unwrap_or_else(|| format!("task: non-zero exit ({code})")),
                    );
                }
            }
            ContainerState::Running => match c.health {
                Health::Unhealthy => {
                    // Swarm stops an unhealthy task and counts it as failed.
                    next.state = TaskState::Failed;
                    next.message = "unhealthy".into();
                    next.error = Some("task: unhealthy container".into());
                }
                Health::Starting => {
                    if st.state == TaskState::Starting {
                        return None;
                    }
                    next.state = TaskState::Starting;
                    next.message = "starting (health: starting)".into();
                }
                Health::Healthy | Health::None => {
                    if st.state == TaskState::Running {
                        return None;
                    }
                    next.state = TaskState::Running;
                    next.message = "running".into();
                    next.running_since = Some(now);
                }
            },
            ContainerState::Created
            | ContainerState::Restarting
            | ContainerState::Paused
            | ContainerState::Removing => {
                return None;
            }
        }
        (next != *st).then_some(next)
    }

    fn stop_in_background(&self, task: &Task, id: &ContainerId) {
        if !self.stopping.lock().expect("lock").insert(id.clone()) {
            return; // already being stopped
        }
        let grace = task
            .spec
            .container
            .stop_grace_period
            .map(|d| d.as_std())
            .unwrap_or(std::time::Duration::from_secs(10));
        let signal = task.spec.container.stop_signal.clone();
        let (runtime, id, stopping, task_id) = (
            self.runtime.clone(),
            id.clone(),
            self.stopping.clone(),
            task.id.clone(),
        );
        tokio::spawn(async move {
            if let Err(e) = runtime.stop(&id, signal.as_deref(), grace).await {
                tracing::warn!(task = %task_id, error = %e, "stopping the container failed");
            }
            stopping.lock().expect("lock").remove(&id);
        });
    }

    /// Remove networks this project created that no stack in the state wants any more.
    /// Volumes are kept: data outlives stacks, as with `docker stack rm`. Returns whether any
    /// is left (still in use by a stopping task: try again soon).
    pub async fn prune_networks(&mut self, state: &Assignments) -> Result<bool, RuntimeError> {
        if !state.complete {
            return Ok(false);
        }
        let wanted: BTreeMap<&str, ()> = state
            .cluster_networks
            .iter()
            .map(|k| (k.as_str(), ()))
            .collect();
        let mut left = false;
        for n in self.runtime.list_networks().await? {
            if !wanted.contains_key(n.name.as_str()) {
                match self.runtime.remove_network(&n.name).await {
                    Ok(()) => {
                        self.ensured.remove(&n.name);
                    }
                    Err(RuntimeError::Conflict(_)) => left = true,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(left)
    }
}
