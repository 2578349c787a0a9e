//! The state machine: commands in, state out; refused commands change nothing; task states
//! only move forward. (Persistence and restarts: `cluster::raft`'s tests.)

use proptest::prelude::*;

use super::*;
use crate::desired::DesiredState;
use crate::spec::{load_stack, NoFiles, Variables};

fn desired(stacks: &[(&str, &str)]) -> DesiredState {
    let mut state = DesiredState::default();
    for (name, text) in stacks {
        let loaded = load_stack(name, "compose.yml", text, &NoFiles, &Variables::default());
        assert!(loaded.errors().next().is_none(), "{:?}", loaded.diagnostics);
        state.stacks.insert(name.to_string(), loaded.spec.unwrap());
    }
    state
}

fn apply_rev(commit: &str, d: DesiredState, prune: bool) -> Command {
    Command::ApplyRevision {
        summary: String::new(),
        notify: None,
        trigger: None,
        blocked: Default::default(),
        commit: commit.into(),
        desired: d,
        prune,
        at: 1,
    }
}

fn task(state: &State, service: &str, id: &str, slot: u64) -> Task {
    let svc = &state.services[service];
    Task {
        id: id.into(),
        service: service.into(),
        slot: Some(slot),
        node: "node-1".into(),
        service_version: svc.version,
        spec: svc.spec.task.clone(),
        endpoint: svc.spec.endpoint.clone(),
        desired_state: TaskState::Running,
        status: status(TaskState::New),
        created_at: 1,
        restarts: vec![],
    }
}

fn status(state: TaskState) -> TaskStatus {
    TaskStatus {
        state,
        timestamp: 1,
        message: String::new(),
        error: None,
        container_id: None,
        exit_code: None,
        running_since: None,
    }
}

const WEB_V1: &str = "services:\n  web:\n    image: example/web:1\n";
const WEB_V2: &str = "services:\n  web:\n    image: example/web:2\n";

#[test]
fn a_revision_creates_then_updates_services_keeping_the_previous_spec() {
    let mut s = State::default();
    let ev = s
        .apply(apply_rev("c1", desired(&[("shop", WEB_V1)]), true))
        .unwrap();
    assert!(ev.contains(&Event::ServiceCreated("shop_web".into())));
    assert_eq!(s.services["shop_web"].version, 1);
    assert!(s.networks.contains_key("shop_default"));

    s.apply(apply_rev("c2", desired(&[("shop", WEB_V2)]), true))
        .unwrap();
    let svc = &s.services["shop_web"];
    assert_eq!(svc.version, 2);
    assert_eq!(svc.spec.task.container.image, "example/web:2");
    assert_eq!(
        svc.previous_spec.as_ref().unwrap().task.container.image,
        "example/web:1"
    );
    assert_eq!(svc.revision.as_deref(), Some("c2"));
    assert_eq!(s.revision.applied.as_ref().unwrap().commit, "c2");

    // The same revision again changes nothing about the service.
    let ev = s
        .apply(apply_rev("c3", desired(&[("shop", WEB_V2)]), true))
        .unwrap();
    assert!(!ev.iter().any(|e| matches!(e, Event::ServiceUpdated(_))));
    assert_eq!(s.services["shop_web"].version, 2);
}

#[test]
fn a_stack_leaving_git_is_pruned_with_its_objects_and_tasks() {
    let mut s = State::default();
    s.apply(apply_rev(
        "c1",
        desired(&[("shop", WEB_V1), ("blog", WEB_V1)]),
        true,
    ))
    .unwrap();
    let t = task(&s, "blog_web", "t1", 1);
    s.apply(Command::CreateTask { task: Box::new(t) }).unwrap();

    s.apply(apply_rev("c2", desired(&[("shop", WEB_V1)]), true))
        .unwrap();
    assert!(!s.services.contains_key("blog_web"));
    assert!(!s.networks.contains_key("blog_default"));
    assert_eq!(s.tasks["t1"].desired_state, TaskState::Remove);
    assert!(s.services.contains_key("shop_web"));
}

#[test]
fn tasks_that_come_as_copies_share_their_service_versions_spec() {
    let mut s = State::default();
    s.apply(apply_rev("c1", desired(&[("shop", WEB_V1)]), true))
        .unwrap();
    // As a follower gets it: through JSON, a copy of its own.
    let copy =
        |t: Task| -> Task { serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap() };
    let t1 = copy(task(&s, "shop_web", "t1", 1));
    assert!(!std::sync::Arc::ptr_eq(
        &t1.spec,
        &s.services["shop_web"].spec.task
    ));
    s.apply(Command::CreateTask { task: Box::new(t1) }).unwrap();
    assert!(std::sync::Arc::ptr_eq(
        &s.tasks["t1"].spec,
        &s.services["shop_web"].spec.task
    ));
    // A task of the version before an update shares the previous spec.
    let old = copy(task(&s, "shop_web", "t2", 2));
    s.apply(apply_rev("c2", desired(&[("shop", WEB_V2)]), true))
        .unwrap();
    s.apply(Command::CreateTask {
        task: Box::new(old),
    })
    .unwrap();
    let svc = &s.services["shop_web"];
    assert!(std::sync::Arc::ptr_eq(
        &s.tasks["t2"].spec,
        &svc.previous_spec.as_ref().unwrap().task
    ));
    // A snapshot read back shares them again.
    let mut again: State = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    again.share_specs();
    let svc = &again.services["shop_web"];
    assert!(std::sync::Arc::ptr_eq(
        &again.tasks["t1"].spec,
        &svc.previous_spec.as_ref().unwrap().task
    ));
    assert!(std::sync::Arc::ptr_eq(
        &again.tasks["t2"].spec,
        &svc.previous_spec.as_ref().unwrap().task
    ));
}

#[test]
fn without_prune_nothing_is_removed() {
    let mut s = State::default();
    s.apply(apply_rev(
        "c1",
        desired(&[("shop", WEB_V1), ("blog", WEB_V1)]),
        true,
    ))
    .unwrap();
    s.apply(apply_rev("c2", desired(&[("shop", WEB_V1)]), false))
        .unwrap();
    assert!(s.services.contains_key("blog_web"));
    assert!(s.networks.contains_key("blog_default"));
}

#[test]
fn manual_rollback_is_drift_until_a_commit_touches_the_service() {
    let mut s = State::default();
    s.apply(apply_rev("c1", desired(&[("shop", WEB_V1)]), true))
        .unwrap();
    s.apply(apply_rev("c2", desired(&[("shop", WEB_V2)]), true))
        .unwrap();
    s.apply(Command::RollbackService {
        service: "shop_web".into(),
        manual: true,
        at: 2,
    })
    .unwrap();
    assert_eq!(
        s.services["shop_web"].spec.task.container.image,
        "example/web:1"
    );

    // A commit that does not change the service leaves the rollback in place...
    s.apply(apply_rev("c3", desired(&[("shop", WEB_V2)]), true))
        .unwrap();
    assert_eq!(
        s.services["shop_web"].spec.task.container.image,
        "example/web:1"
    );
    assert!(s.services["shop_web"].manual_rollback);

    // ...one that does wins.
    let web_v3 = WEB_V2.replace(":2", ":3");
    s.apply(apply_rev("c4", desired(&[("shop", &web_v3)]), true))
        .unwrap();
    assert_eq!(
        s.services["shop_web"].spec.task.container.image,
        "example/web:3"
    );
    assert!(!s.services["shop_web"].manual_rollback);

    // Rolling back twice is back again (Swarm's swap).
    s.apply(Command::RollbackService {
        service: "shop_web".into(),
        manual: true,
        at: 3,
    })
    .unwrap();
    s.apply(Command::RollbackService {
        service: "shop_web".into(),
        manual: true,
        at: 4,
    })
    .unwrap();
    assert_eq!(
        s.services["shop_web"].spec.task.container.image,
        "example/web:3"
    );
}

#[test]
fn refused_commands_change_nothing() {
    let mut s = State::default();
    assert_eq!(
        s.apply(Command::SetTaskDesiredState {
            id: "nope".into(),
            state: TaskState::Shutdown
        }),
        Err(ApplyError::NoTask("nope".into()))
    );
    s.apply(apply_rev("c1", desired(&[("shop", WEB_V1)]), true))
        .unwrap();
    assert_eq!(
        s.apply(Command::RollbackService {
            service: "shop_web".into(),
            manual: true,
            at: 1
        }),
        Err(ApplyError::NothingToRollBack("shop_web".into()))
    );
}

fn any_state() -> impl Strategy<Value = TaskState> {
    prop::sample::select(vec![
        TaskState::New,
        TaskState::Pending,
        TaskState::Assigned,
        TaskState::Preparing,
        TaskState::Starting,
        TaskState::Running,
        TaskState::Complete,
        TaskState::Shutdown,
        TaskState::Failed,
        TaskState::Rejected,
        TaskState::Remove,
    ])
}

proptest! {
    /// Whatever agents report, in whatever order, a task's observed and desired states never
    /// move backwards.
    #[test]
    fn task_states_never_go_backwards(reports in prop::collection::vec((any_state(), any::<bool>()), 1..40)) {
        let mut s = State::default();
        s.apply(apply_rev("c1", desired(&[("shop", WEB_V1)]), true)).unwrap();
        let t = task(&s, "shop_web", "t1", 1);
        s.apply(Command::CreateTask { task: Box::new(t) }).unwrap();
        let (mut observed, mut wanted) = (TaskState::New, TaskState::Running);
        for (state, is_desired) in reports {
            let cmd = if is_desired {
                Command::SetTaskDesiredState { id: "t1".into(), state }
            } else {
                Command::UpdateTaskStatus { id: "t1".into(), status: status(state) }
            };
            s.apply(cmd).unwrap();
            let task = &s.tasks["t1"];
            prop_assert!(task.status.state >= observed);
            prop_assert!(task.desired_state >= wanted);
            observed = task.status.state;
            wanted = task.desired_state;
        }
    }
}
