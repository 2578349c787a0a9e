//! What must never take `reconciler up` down or lose what runs: hostile commits (limits, NUL),
//! removing the last stack by mistake, a data dir deleted under a node, a port that cannot be
//! bound, a git remote gone; and that each is said plainly, in the log and in `status`.

use std::process::Command;
use std::time::Duration;

use reconciler::api::views::StatusView;
use reconciler::testing;

use crate::support::up::{compose, free_port, images, stack_name, Up};
use crate::support::{stdout, GitRepo};

const T: Duration = Duration::from_secs(60);

fn service(name: &str, replicas: &str) -> String {
    format!(
        "  {name}:\n    image: {}\n    stop_grace_period: 1s\n    deploy:\n      replicas: {replicas}\n",
        testing::images::busybox(1)
    )
}

fn refused_with<'a>(s: &'a StatusView, commit: &str) -> Option<&'a [String]> {
    s.revision
        .refused
        .as_ref()
        .filter(|r| r.commit == commit)
        .map(|r| r.errors.as_slice())
}

fn running(s: &StatusView, service: &str) -> u64 {
    s.services
        .iter()
        .find(|v| v.name == service)
        .map_or(0, |v| v.running)
}

/// `reconciler status` against the node, as text.
fn status_text(up: &Up) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_reconciler"))
        .args(["status", "--server", &up.api])
        .output()
        .unwrap();
    stdout(&out)
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_hostile_commits_are_refused_and_the_node_keeps_running_the_last_good_one() {
    if !images().await {
        return;
    }
    let stack = stack_name("hostile");
    let repo = GitRepo::new();
    let good = format!("services:\n{}{}", service("a", "1"), service("b", "1"));
    repo.write(&[(&compose(&stack), Some(&good))]);
    let c1 = repo.commit("good");
    let up = Up::start(repo, &[&stack], &[]);
    up.converged(&c1, T).await;

    // replicas beyond any machine: refused at parse time, with the limit named.
    let huge = format!(
        "services:\n{}{}",
        service("a", "18446744073709551615"),
        service("b", "1")
    );
    let c2 = up.commit(&[(&compose(&stack), Some(&huge))], "huge replicas");
    let s = up
        .wait_for("the huge commit refused", T, |s| {
            refused_with(s, &c2).is_some()
        })
        .await;
    let errors = refused_with(&s, &c2).unwrap().join("\n");
    assert!(errors.contains("replicas"), "{errors}");

    // Interpolation nested 9,000 deep: once a crash loop, now an error.
    let nested = format!("{}x{}", "${A:-".repeat(9_000), "}".repeat(9_000));
    let deep = format!(
        "services:\n{}    environment:\n      DEEP: \"{nested}\"\n{}",
        service("a", "1"),
        service("b", "1")
    );
    let c3 = up.commit(&[(&compose(&stack), Some(&deep))], "deep interpolation");
    let s = up
        .wait_for("the deep commit refused", T, |s| {
            refused_with(s, &c3).is_some()
        })
        .await;
    let errors = refused_with(&s, &c3).unwrap().join("\n");
    assert!(errors.contains("nest"), "{errors}");

    // A NUL byte in the middle: everything after it used to be dropped silently, and the
    // services after it removed.
    let with_nul = good.replacen("  b:", "\0  b:", 1);
    let c4 = up.commit(&[(&compose(&stack), Some(&with_nul))], "a NUL byte");
    let s = up
        .wait_for("the NUL commit refused", T, |s| {
            refused_with(s, &c4).is_some()
        })
        .await;
    let errors = refused_with(&s, &c4).unwrap().join("\n");
    assert!(
        errors.contains("NUL") || errors.contains("control character"),
        "{errors}"
    );
    assert!(errors.contains(":7:"), "names the line: {errors}");

    // Through all of it the last good commit ran on, and the node still acts on commits.
    assert_eq!(s.revision.applied.as_ref().unwrap().commit, c1);
    assert_eq!(running(&s, &format!("{stack}_a")), 1);
    assert_eq!(running(&s, &format!("{stack}_b")), 1);
    let again = format!("services:\n{}{}", service("a", "2"), service("b", "1"));
    let c5 = up.commit(&[(&compose(&stack), Some(&again))], "good again");
    let s = up.converged(&c5, T).await;
    assert_eq!(running(&s, &format!("{stack}_a")), 2);

    // Each refusal was said once, at warn level; and the text status says "1 error".
    let log = up.log();
    let refusals = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("refusing commit"))
        .count();
    assert_eq!(refusals, 3, "{log}");
    assert!(
        s.node.loop_failures.is_empty(),
        "{:?}",
        s.node.loop_failures
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_removing_the_last_stack_is_refused_until_keep_says_it_is_meant() {
    if !images().await {
        return;
    }
    let stack = stack_name("last");
    let repo = GitRepo::new();
    repo.write(&[(
        &compose(&stack),
        Some(&format!("services:\n{}", service("app", "1"))),
    )]);
    let c1 = repo.commit("one stack");
    let up = Up::start(repo, &[&stack], &[]);
    up.converged(&c1, T).await;

    let c2 = up.commit(&[(&compose(&stack), None)], "remove the only stack");
    let s = up
        .wait_for("the removal refused", T, |s| refused_with(s, &c2).is_some())
        .await;
    let errors = refused_with(&s, &c2).unwrap().join("\n");
    assert!(
        errors.contains("the repository root holds no stack at commit")
            && errors.contains("refusing to remove the 1 stack that runs")
            && errors.contains("commit an empty .keep to remove them on purpose"),
        "{errors}"
    );
    assert_eq!(running(&s, &format!("{stack}_app")), 1, "still running");
    let text = status_text(&up);
    assert!(
        text.contains("(1 error; the live commit keeps running)"),
        "{text}"
    );

    // The documented way works.
    let c3 = up.commit(&[(".keep", Some(""))], "no stacks, on purpose");
    let s = up.converged(&c3, T).await;
    assert!(s.services.is_empty(), "{:?}", s.services);
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_a_path_to_one_stack_names_it_as_validate_does_and_guards_its_removal() {
    if !images().await {
        return;
    }
    let stack = stack_name("onepath");
    let dir = format!("apps/{stack}");
    let repo = GitRepo::new();
    repo.write(&[(
        &format!("{dir}/compose.yml"),
        Some(&format!("services:\n{}", service("app", "1"))),
    )]);
    let c1 = repo.commit("one stack under apps/");
    let up = Up::start(repo, &[&stack], &["--path", &dir]);
    // Named after its directory, as `reconciler validate apps/STACK` in CI names it, not after
    // the repository.
    let s = up.converged(&c1, T).await;
    assert_eq!(running(&s, &format!("{stack}_app")), 1, "{:?}", s.services);

    let c2 = up.commit(
        &[(&format!("{dir}/compose.yml"), None)],
        "the stack's directory goes",
    );
    let s = up
        .wait_for("the removal refused", T, |s| refused_with(s, &c2).is_some())
        .await;
    let errors = refused_with(&s, &c2).unwrap().join("\n");
    assert!(
        errors.contains(&format!("path {dir}/ is missing at commit"))
            && errors.contains("refusing to remove the 1 stack that runs")
            && errors.contains(&format!("commit an empty {dir}/.keep")),
        "{errors}"
    );
    assert_eq!(running(&s, &format!("{stack}_app")), 1, "still running");
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_a_deleted_data_dir_leaves_stale_containers_that_status_names_with_the_way_out() {
    if !images().await {
        return;
    }
    let stack = stack_name("stale");
    let text = format!("services:\n{}", service("app", "1"));
    let repo = GitRepo::new();
    repo.write(&[(&compose(&stack), Some(&text))]);
    let c1 = repo.commit("v1");
    let mut first = Up::start(repo, &[], &[]);
    let old_node = first.converged(&c1, T).await.node.id;
    // The node dies and its data dir is lost; its containers run on.
    first.kill();
    drop(first);

    let repo = GitRepo::new();
    repo.write(&[(&compose(&stack), Some(&text))]);
    let c2 = repo.commit("v1 again");
    let second = Up::start(repo, &[&stack], &[]);
    let s = second.converged(&c2, T).await;
    assert_ne!(s.node.id, old_node, "a new data dir is a new node");
    let s = second
        .wait_for("the stale containers reported", T, |s| {
            s.node.stale_containers.contains_key(&old_node)
        })
        .await;
    assert_eq!(s.node.stale_containers[&old_node].len(), 1);
    let text = status_text(&second);
    let way_out =
        format!("docker rm -f $(docker ps -aq --filter label=org.reconciler.node={old_node})");
    assert!(text.contains("Stale:") && text.contains(&way_out), "{text}");
    // The way out works, and takes only the stale one.
    let out = Command::new("sh").args(["-c", &way_out]).output().unwrap();
    assert!(out.status.success());
    let left = Command::new("docker")
        .args([
            "ps",
            "-q",
            "--filter",
            &format!("label=com.docker.stack.namespace={stack}"),
        ])
        .output()
        .unwrap();
    assert_eq!(
        stdout(&left).lines().count(),
        1,
        "the new node's container stays"
    );

    // A git remote that goes away is said in the text status, not only in --json.
    let path = second.repo.path().to_path_buf();
    let moved = path.with_extension("moved");
    std::fs::rename(&path, &moved).unwrap();
    let failing = second
        .wait_for("git failing", T, |s| {
            s.git.get("last_error").is_some_and(|e| !e.is_null())
        })
        .await;
    let text = status_text(&second);
    std::fs::rename(&moved, &path).unwrap();
    assert!(text.contains("Git:            failing"), "{text}");
    assert!(
        text.contains("converged on the last commit fetched (git is failing)"),
        "{text}\n{:?}",
        failing.git
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_a_port_that_cannot_be_bound_is_said_once_and_shown_in_status() {
    if !images().await {
        return;
    }
    let stack = stack_name("port");
    let port = free_port();
    // Someone else holds the port on the address the ingress binds.
    let _holder = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let repo = GitRepo::new();
    repo.write(&[(
        &compose(&stack),
        Some(&format!(
            "services:\n  web:\n    image: {}\n    ports: [\"{port}:80\"]\n",
            testing::images::busybox(1)
        )),
    )]);
    let c1 = repo.commit("v1");
    let up = Up::start(repo, &[&stack], &[]);
    up.converged(&c1, T).await;
    let s = up
        .wait_for("the port failure in status", T, |s| {
            s.node.port_failures.contains_key(&port)
        })
        .await;
    assert!(
        s.node.port_failures[&port].contains("in use"),
        "{:?}",
        s.node.port_failures
    );
    // Retried every half second for a while: still one line in the log.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = up.log();
    let warnings = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("cannot publish port"))
        .count();
    assert_eq!(warnings, 1, "{log}");
    let text = status_text(&up);
    assert!(text.contains(&format!("Port {port}:")), "{text}");
}
