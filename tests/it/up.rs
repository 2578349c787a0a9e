//! `reconciler up` end to end: a real process, a real git repository, the real Docker Engine.
//! What a user does (commit, scale, roll, break, revert, kill a container, restart the
//! reconciler) and what they must see.

use std::process::Command;
use std::time::{Duration, SystemTime};

use reconciler::api::views::TaskView;
use reconciler::store::{TaskState, UpdateState};
use reconciler::testing;

use crate::support::up::{compose, free_port, images, running, stack_name, Up};
use crate::support::{stderr, stdout, GitRepo};

const T: Duration = Duration::from_secs(60);

fn web(image: &str, replicas: u32, port: u16, update: &str) -> String {
    format!(
        r#"services:
  web:
    image: {image}
    ports: ["{port}:80"]
    stop_grace_period: 2s
    deploy:
      replicas: {replicas}
      restart_policy:
        delay: 1s
      update_config:
        monitor: 2s
{update}"#
    )
}

fn container_times(id: &str) -> (SystemTime, Option<SystemTime>) {
    let out = Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{.State.StartedAt}} {{.State.FinishedAt}}",
            id,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text.split_whitespace();
    let started = humantime::parse_rfc3339_weak(parts.next().unwrap()).unwrap();
    let finished = parts
        .next()
        .filter(|f| !f.starts_with("0001"))
        .map(|f| humantime::parse_rfc3339_weak(f).unwrap());
    (started, finished)
}

async fn http_get(port: u16) -> Option<String> {
    let resp = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    resp.text().await.ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn deploys_scales_and_prunes_by_commit() {
    if !images().await {
        return;
    }
    let (a, b) = (stack_name("sa"), stack_name("sb"));
    let (pa, pb) = (free_port(), free_port());
    let repo = GitRepo::new();
    repo.write(&[
        (
            &compose(&a),
            Some(&web(&testing::images::busybox(1), 2, pa, "")),
        ),
        (
            &compose(&b),
            Some(&web(
                &testing::images::busybox(1),
                1,
                pb,
                "      labels:\n        tier: back\n",
            )),
        ),
    ]);
    let c1 = repo.commit("two stacks");
    let up = Up::start(repo, &[&a, &b], &[]);
    up.converged(&c1, T).await;
    assert_eq!(running(&up.tasks(&format!("{a}_web")).await).len(), 2);

    let c2 = up.commit(
        &[(
            &compose(&a),
            Some(&web(&testing::images::busybox(1), 4, pa, "")),
        )],
        "scale to 4",
    );
    up.converged(&c2, T).await;
    assert_eq!(running(&up.tasks(&format!("{a}_web")).await).len(), 4);

    // The listings' `-q` forms, as scripts use docker's: one name or ID a line, no header.
    let quiet = |args: &[&str]| -> Vec<String> {
        let mut all = args.to_vec();
        all.extend(["-q", "--server", up.api.as_str()]);
        let out = crate::support::reconciler(std::path::Path::new("."), &all);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        stdout(&out).lines().map(str::to_string).collect()
    };
    let (sa, sb) = (format!("{a}_web"), format!("{b}_web"));
    let services = quiet(&["service", "ls"]);
    assert!(
        services.contains(&sa) && services.contains(&sb),
        "{services:?}"
    );
    assert!(services.iter().all(|l| !l.contains(' ')), "{services:?}");
    let stacks = quiet(&["stack", "ls"]);
    assert!(stacks.contains(&a) && stacks.contains(&b), "{stacks:?}");
    assert_eq!(quiet(&["stack", "services", &a]), vec![sa.clone()]);
    let mut ids: Vec<String> = up
        .tasks(&sa)
        .await
        .iter()
        .map(|t| t.id[..12].to_string())
        .collect();
    ids.sort();
    let mut listed = quiet(&["service", "ps", &sa]);
    listed.sort();
    assert_eq!(listed, ids);
    let mut listed = quiet(&["stack", "ps", &a]);
    listed.sort();
    assert_eq!(listed, ids);
    // A table fits a narrow terminal (cells wrap); into a pipe nothing is cut.
    let bin = env!("CARGO_BIN_EXE_reconciler");
    let in_pty = Command::new("script")
        .args([
            "-qc",
            &format!("stty cols 50; {bin} service ps {sa} --server {}", up.api),
            "/dev/null",
        ])
        .output()
        .unwrap();
    let narrow = stdout(&in_pty);
    assert!(narrow.lines().count() > 4, "{narrow}");
    assert!(
        narrow.lines().all(|l| l.trim_end().chars().count() <= 50),
        "{narrow}"
    );
    let piped = crate::support::reconciler(
        std::path::Path::new("."),
        &["service", "ps", &sa, "--server", &up.api],
    );
    assert!(
        stdout(&piped)
            .lines()
            .any(|l| l.trim_end().chars().count() > 50),
        "{}",
        stdout(&piped)
    );
    // Several services at once, as docker's `service ps` takes them; a stack listing one stack.
    assert_eq!(quiet(&["service", "ps", &sa, &sb]).len(), 5);
    let out = crate::support::reconciler(
        std::path::Path::new("."),
        &["stack", "ps", &a, &b, "--server", &up.api],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("takes one stack"), "{}", stderr(&out));
    // --filter, with docker's keys: values of a key are alternatives, keys all apply.
    let name_a = format!("name={a}");
    assert_eq!(
        quiet(&["service", "ls", "--filter", &name_a]),
        vec![sa.clone()]
    );
    let both = quiet(&["service", "ls", "-f", &name_a, "-f", &format!("name={b}")]);
    assert_eq!(both.len(), 2, "{both:?}");
    assert!(quiet(&["service", "ls", "-f", &name_a, "-f", "mode=global"]).is_empty());
    // label=KEY, label=KEY=VALUE: the service's deploy.labels.
    assert_eq!(
        quiet(&["service", "ls", "-f", "label=tier"]),
        vec![sb.clone()]
    );
    assert_eq!(
        quiet(&["service", "ls", "-f", "label=tier=back"]),
        vec![sb.clone()]
    );
    assert!(quiet(&["service", "ls", "-f", "label=tier=front"]).is_empty());
    let mut running_now = quiet(&["service", "ps", &sa, "-f", "desired-state=running"]);
    running_now.sort();
    assert_eq!(running_now, ids);
    assert!(quiet(&["stack", "ps", &a, "-f", "desired-state=shutdown"]).is_empty());
    // --format, with docker's field names: a template a row, `table`, `json`.
    let format = |args: &[&str]| -> String {
        let mut all = args.to_vec();
        all.extend(["--server", up.api.as_str()]);
        let out = crate::support::reconciler(std::path::Path::new("."), &all);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        stdout(&out)
    };
    let named = format(&[
        "service",
        "ls",
        "-f",
        &name_a,
        "--format",
        "{{.Name}}={{.Replicas}}",
    ]);
    assert_eq!(named, format!("{sa}=4/4\n"));
    let table = format(&[
        "service",
        "ps",
        &sa,
        "--format",
        "table {{.ID}}\\t{{.DesiredState}}",
    ]);
    let mut rows = table.lines();
    assert!(
        rows.next()
            .unwrap()
            .starts_with("ID             DESIRED STATE"),
        "{table}"
    );
    let mut from_table: Vec<String> = rows
        .map(|r| r.split_whitespace().next().unwrap().to_string())
        .collect();
    from_table.sort();
    assert_eq!(from_table, ids);
    assert!(
        table.lines().skip(1).all(|r| r.ends_with("running")),
        "{table}"
    );
    let stacks = format(&["stack", "ls", "--format", "{{.Name}}:{{.Services}}"]);
    assert!(stacks.lines().any(|l| l == format!("{a}:1")), "{stacks}");
    let objects = format(&["stack", "ps", &a, "--format", "json"]);
    for line in objects.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(
            ids.contains(&v["ID"].as_str().unwrap().to_string()),
            "{line}"
        );
        assert!(!v["Node"].as_str().unwrap().is_empty(), "{line}");
    }
    assert_eq!(objects.lines().count(), 4);
    let out = crate::support::reconciler(
        std::path::Path::new("."),
        &[
            "service",
            "ls",
            "--format",
            "{{.Nmae}}",
            "--server",
            &up.api,
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(".Name, .Mode, .Replicas"),
        "{}",
        stderr(&out)
    );

    let out = crate::support::reconciler(
        std::path::Path::new("."),
        &["service", "ls", "-f", "colour=red", "--server", &up.api],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out)
            .contains("unknown filter key \"colour\": this listing takes name, mode, stack"),
        "{}",
        stderr(&out)
    );

    let c3 = up.commit(&[(&compose(&b), None)], "remove stack b");
    let st = up.converged(&c3, T).await;
    assert!(
        st.services.iter().all(|s| s.stack != b),
        "{:?}",
        st.services
    );
    // Its containers and network are gone from the engine too.
    let deadline = std::time::Instant::now() + T;
    loop {
        let ps = Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=com.docker.stack.namespace={b}"),
            ])
            .output()
            .unwrap();
        let nets = Command::new("docker")
            .args([
                "network",
                "ls",
                "-q",
                "--filter",
                &format!("name={b}_default"),
            ])
            .output()
            .unwrap();
        if ps.stdout.is_empty() && nets.stdout.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "stack {b} was not pruned:\n{}",
            up.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Per slot: with stop-first the old container has stopped before the new one starts; with
/// start-first the new one starts before the old one stops. Read from the engine's own times.
async fn roll(order: &str) -> Vec<(SystemTime, SystemTime)> {
    let stack = stack_name("roll");
    let port = free_port();
    let update = format!("        order: {order}\n");
    let repo = GitRepo::new();
    repo.write(&[(
        &compose(&stack),
        Some(&web(&testing::images::busybox(1), 2, port, &update)),
    )]);
    let c1 = repo.commit("v1");
    let up = Up::start(repo, &[&stack], &[]);
    up.converged(&c1, T).await;
    let c2 = up.commit(
        &[(
            &compose(&stack),
            Some(&web(&testing::images::busybox(2), 2, port, &update)),
        )],
        "v2",
    );
    up.converged(&c2, T).await;
    let tasks = up.tasks(&format!("{stack}_web")).await;
    let mut pairs = Vec::new();
    for slot in [1, 2] {
        let of_slot: Vec<&TaskView> = tasks.iter().filter(|t| t.slot == Some(slot)).collect();
        let old = of_slot
            .iter()
            .find(|t| t.image.ends_with(":1"))
            .expect("old task kept in history");
        let new = of_slot
            .iter()
            .find(|t| t.image.ends_with(":2") && t.state == TaskState::Running)
            .unwrap();
        let (_, old_finished) = container_times(old.container_id.as_deref().unwrap());
        let (new_started, _) = container_times(new.container_id.as_deref().unwrap());
        pairs.push((old_finished.expect("old container stopped"), new_started));
    }
    pairs
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_change_rolls_stop_first() {
    if !images().await {
        return;
    }
    for (old_stopped, new_started) in roll("stop-first").await {
        assert!(
            old_stopped <= new_started,
            "old stopped {old_stopped:?} after new started {new_started:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_change_rolls_start_first() {
    if !images().await {
        return;
    }
    for (old_stopped, new_started) in roll("start-first").await {
        assert!(
            new_started < old_stopped,
            "new started {new_started:?} after old stopped {old_stopped:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_version_rolls_back_with_failure_action_rollback() {
    if !images().await {
        return;
    }
    let stack = stack_name("rb");
    let port = free_port();
    let update = "        failure_action: rollback\n        delay: 1s\n";
    let repo = GitRepo::new();
    repo.write(&[(
        &compose(&stack),
        Some(&web(&testing::images::busybox(1), 2, port, update)),
    )]);
    let c1 = repo.commit("good");
    let up = Up::start(repo, &[&stack], &[]);
    up.converged(&c1, T).await;
    up.commit(
        &[(
            &compose(&stack),
            Some(&web(testing::EXITS, 2, port, update)),
        )],
        "bad",
    );
    let name = format!("{stack}_web");
    let st = up
        .wait_for("rollback completed", T, |s| {
            s.services
                .iter()
                .any(|v| v.name == name && v.update_state == Some(UpdateState::RollbackCompleted))
        })
        .await;
    let svc = st.services.iter().find(|v| v.name == name).unwrap();
    assert_eq!(
        svc.image,
        testing::images::busybox(1),
        "the old spec is back"
    );
    assert!(
        svc.update_message.contains("rollback"),
        "{}",
        svc.update_message
    );
    up.wait_for("old version running", T, |s| {
        s.services
            .iter()
            .any(|v| v.name == name && v.running == 2 && v.up_to_date == 2)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_version_pauses_with_a_reason_with_failure_action_pause() {
    if !images().await {
        return;
    }
    let stack = stack_name("pause");
    let port = free_port();
    let update = "        delay: 2s\n";
    let repo = GitRepo::new();
    repo.write(&[(
        &compose(&stack),
        Some(&web(&testing::images::busybox(1), 2, port, update)),
    )]);
    let c1 = repo.commit("good");
    let up = Up::start(repo, &[&stack], &[]);
    up.converged(&c1, T).await;
    up.commit(
        &[(
            &compose(&stack),
            Some(&web(testing::EXITS, 2, port, update)),
        )],
        "bad",
    );
    let name = format!("{stack}_web");
    let st = up
        .wait_for("update paused", T, |s| {
            s.services
                .iter()
                .any(|v| v.name == name && v.update_state == Some(UpdateState::Paused))
        })
        .await;
    let svc = st.services.iter().find(|v| v.name == name).unwrap();
    assert!(
        svc.update_message.contains("update paused due to failure"),
        "{}",
        svc.update_message
    );
    assert!(
        svc.update_message.contains("exit (1)"),
        "{}",
        svc.update_message
    );
    // The untouched slot still runs the old version.
    let tasks = up.tasks(&name).await;
    assert!(
        running(&tasks)
            .iter()
            .any(|t| t.image == testing::images::busybox(1)),
        "{tasks:?}"
    );
    // What status shows is in the log too, once: the failed task and the pause.
    let log = up.log();
    let paused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("update stopped short"))
        .collect();
    assert_eq!(paused.len(), 1, "{log}");
    assert!(
        paused[0].contains(&name) && paused[0].contains("Paused"),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("task error") && l.contains("exit (1)")),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn max_attempts_is_honoured() {
    if !images().await {
        return;
    }
    let stack = stack_name("ma");
    let repo = GitRepo::new();
    let text = format!(
        "services:\n  crash:\n    image: {}\n    deploy:\n      restart_policy:\n        condition: on-failure\n        delay: 500ms\n        max_attempts: 2\n",
        testing::EXITS
    );
    repo.write(&[(&compose(&stack), Some(&text))]);
    repo.commit("crashing");
    let up = Up::start(repo, &[&stack], &[]);
    let name = format!("{stack}_crash");
    // The first task and two restarts fail; then the slot stays down.
    let start = std::time::Instant::now();
    loop {
        let tasks = up.tasks(&name).await;
        if tasks.len() == 3 && tasks.iter().all(|t| t.state == TaskState::Failed) {
            break;
        }
        assert!(start.elapsed() < T, "{tasks:?}\n{}", up.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let tasks = up.tasks(&name).await;
    assert_eq!(tasks.len(), 3, "no further attempt: {tasks:?}");
    assert!(
        tasks
            .iter()
            .all(|t| t.error.as_deref().is_some_and(|e| e.contains("exit (1)"))),
        "{tasks:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_container_is_replaced_and_a_restart_creates_no_duplicates() {
    if !images().await {
        return;
    }
    let stack = stack_name("kill");
    let port = free_port();
    let repo = GitRepo::new();
    repo.write(&[(
        &compose(&stack),
        Some(&web(&testing::images::busybox(1), 2, port, "")),
    )]);
    let c1 = repo.commit("v1");
    let mut up = Up::start(repo, &[&stack], &[]);
    up.converged(&c1, T).await;
    let name = format!("{stack}_web");
    let victim = running(&up.tasks(&name).await)[0]
        .container_id
        .clone()
        .unwrap();
    Command::new("docker")
        .args(["rm", "-f", &victim])
        .output()
        .unwrap();
    // The removed task is reported failed, and a replacement runs.
    let start = std::time::Instant::now();
    let tasks = loop {
        let tasks = up.tasks(&name).await;
        if tasks.iter().any(|t| t.state == TaskState::Failed) && running(&tasks).len() == 2 {
            break tasks;
        }
        assert!(
            start.elapsed() < T,
            "no replacement: {tasks:?}\n{}",
            up.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(running(&tasks)
        .iter()
        .all(|t| t.container_id.as_deref() != Some(&victim)));

    up.restart();
    up.wait_for("the restarted reconciler", T, |s| s.converged)
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let out = Command::new("docker")
        .args([
            "ps",
            "-q",
            "--filter",
            &format!("label=com.docker.stack.namespace={stack}"),
        ])
        .output()
        .unwrap();
    let count = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .count();
    assert_eq!(
        count,
        2,
        "exactly the two replicas run after a restart:\n{}",
        up.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_secret_rolls_the_service_with_the_new_content() {
    if !images().await {
        return;
    }
    let stack = stack_name("sec");
    let port = free_port();
    let key = tempfile::NamedTempFile::new().unwrap();
    let (identity, recipient) = reconciler::secrets::generate_identity();
    std::fs::write(key.path(), identity).unwrap();
    let recipients = reconciler::secrets::parse_recipients(&recipient, "test").unwrap();
    let encrypt = |text: &str| {
        String::from_utf8(reconciler::secrets::encrypt(text.as_bytes(), &recipients).unwrap())
            .unwrap()
    };
    let text = format!(
        "services:\n  web:\n    image: {}\n    ports: [\"{port}:80\"]\n    secrets:\n      - source: token\n        mode: 0400\n    deploy:\n      update_config:\n        monitor: 1s\nsecrets:\n  token:\n    file: ./token.age\n",
        testing::images::busybox(1)
    );
    let repo = GitRepo::new();
    let secret_path = format!("{stack}/token.age");
    repo.write(&[
        (&compose(&stack), Some(&text)),
        (&secret_path, Some(&encrypt("first-token"))),
    ]);
    let c1 = repo.commit("v1");
    let up = Up::start(
        repo,
        &[&stack],
        &["--identity", key.path().to_str().unwrap()],
    );
    up.converged(&c1, T).await;
    let name = format!("{stack}_web");
    let read_secret = |id: &str| {
        let out = Command::new("docker")
            .args(["exec", id, "cat", "/run/secrets/token"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = running(&up.tasks(&name).await)[0]
        .container_id
        .clone()
        .unwrap();
    assert_eq!(read_secret(&first), "first-token");

    let c2 = up.commit(
        &[(&secret_path, Some(&encrypt("second-token")))],
        "rotate the token",
    );
    up.converged(&c2, T).await;
    let second = running(&up.tasks(&name).await)[0]
        .container_id
        .clone()
        .unwrap();
    assert_ne!(first, second, "the service rolled");
    assert_eq!(read_secret(&second), "second-token");
    assert!(
        !up.log().contains("second-token"),
        "secret content in the log"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_commit_is_refused_and_the_old_one_keeps_running() {
    if !images().await {
        return;
    }
    let stack = stack_name("bad");
    let port = free_port();
    let repo = GitRepo::new();
    repo.write(&[(
        &compose(&stack),
        Some(&web(&testing::images::busybox(1), 2, port, "")),
    )]);
    let c1 = repo.commit("good");
    let up = Up::start(repo, &[&stack], &[]);
    up.converged(&c1, T).await;
    let broken =
        web(&testing::images::busybox(2), 2, port, "").replace("replicas: 2", "replicas: two");
    let c2 = up.commit(&[(&compose(&stack), Some(&broken))], "broken");
    let st = up
        .wait_for("the refusal", T, |s| {
            s.revision.refused.as_ref().is_some_and(|r| r.commit == c2)
        })
        .await;
    let refused = st.revision.refused.unwrap();
    assert!(
        refused
            .errors
            .iter()
            .any(|e| e.contains("deploy.replicas") && e.contains("\"two\"")),
        "{:?}",
        refused.errors
    );
    assert_eq!(
        st.revision.applied.unwrap().commit,
        c1,
        "the good commit stays live"
    );
    let svc = up.service(&format!("{stack}_web")).await.unwrap();
    assert_eq!(
        (svc.running, svc.image.as_str()),
        (2, testing::images::busybox(1).as_str())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_webhook_signature_is_refused() {
    if !images().await {
        return;
    }
    let stack = stack_name("hook");
    let repo = GitRepo::new();
    repo.write(&[(
        &compose(&stack),
        Some(&web(&testing::images::busybox(1), 1, free_port(), "")),
    )]);
    let c1 = repo.commit("v1");
    let up = Up::start(repo, &[&stack], &["--webhook-secret", "s3cret"]);
    up.converged(&c1, T).await;
    // Anyone can post to the endpoint: each attempt is refused, and the log says so once.
    for _ in 0..5 {
        let resp = reqwest::Client::new()
            .post(format!("{}/api/v1/webhook", up.api))
            .header("X-GitHub-Event", "push")
            .header(
                "X-Hub-Signature-256",
                "sha256=0000000000000000000000000000000000000000000000000000000000000000",
            )
            .body(r#"{"ref":"refs/heads/master"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 401);
    }
    let log = up.log();
    let warned = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("webhook refused"))
        .count();
    assert_eq!(warned, 1, "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ingress_proxy_reaches_every_healthy_replica_and_skips_unhealthy_ones() {
    if !images().await {
        return;
    }
    let stack = stack_name("ing");
    let port = free_port();
    let text = format!(
        "services:\n  web:\n    image: {}\n    ports: [\"{port}:80\"]\n    healthcheck:\n      test: [\"CMD-SHELL\", \"test ! -f /tmp/sick\"]\n      interval: 1s\n      retries: 1\n    deploy:\n      replicas: 3\n      restart_policy:\n        condition: none\n",
        testing::images::busybox(1)
    );
    let repo = GitRepo::new();
    repo.write(&[(&compose(&stack), Some(&text))]);
    let c1 = repo.commit("three healthy replicas");
    let up = Up::start(repo, &[&stack], &[]);
    up.converged(&c1, T).await;
    let name = format!("{stack}_web");
    // Every replica answers through the published port (each page names its container).
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..60 {
        if let Some(body) = http_get(port).await {
            seen.insert(body.trim().to_string());
        }
        if seen.len() == 3 {
            break;
        }
    }
    assert_eq!(seen.len(), 3, "answers: {seen:?}\n{}", up.log());

    // Make one replica unhealthy: it stops counting and the proxy stops sending to it.
    let sick = running(&up.tasks(&name).await)[0]
        .container_id
        .clone()
        .unwrap();
    Command::new("docker")
        .args(["exec", &sick, "touch", "/tmp/sick"])
        .output()
        .unwrap();
    up.wait_for("one replica down", T, |s| {
        s.services.iter().any(|v| v.name == name && v.running == 2)
    })
    .await;
    let hostname = String::from_utf8_lossy(
        &Command::new("docker")
            .args(["inspect", "-f", "{{.Config.Hostname}}", &sick])
            .output()
            .unwrap()
            .stdout,
    )
    .trim()
    .to_string();
    for _ in 0..20 {
        let body = http_get(port).await.expect("the healthy replicas answer");
        assert!(
            !body.contains(&hostname),
            "the unhealthy replica {hostname} answered: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_against_the_live_cluster() {
    if !images().await {
        return;
    }
    let stack = stack_name("plan");
    let port = free_port();
    let repo = GitRepo::new();
    repo.write(&[(
        &compose(&stack),
        Some(&web(&testing::images::busybox(1), 2, port, "")),
    )]);
    let c1 = repo.commit("v1");
    let up = Up::start(repo, &[&stack], &[]);
    up.converged(&c1, T).await;
    let dir = up.repo.path().to_path_buf();
    let plan = |extra: &[&str]| {
        let mut args = vec!["plan", ".", "--server", up.api.as_str()];
        args.extend_from_slice(extra);
        crate::support::reconciler(&dir, &args)
    };
    let out = plan(&[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        crate::support::stderr(&out)
    );
    // An edit in the work tree (not committed) is what the cluster would change.
    up.repo.write(&[(
        &compose(&stack),
        Some(&web(&testing::images::busybox(2), 3, port, "")),
    )]);
    let out = plan(&[]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        crate::support::stderr(&out)
    );
    let text = crate::support::stdout(&out);
    assert!(text.contains(&format!("~ service {stack}_web")), "{text}");
    assert!(text.contains("replicas  2 -> 3"), "{text}");
    assert!(
        text.contains("busybox:1 -> reconciler-test/busybox:2"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_docker_engine_is_reported_not_a_crash() {
    let repo = GitRepo::new();
    let stack = stack_name("nodocker");
    repo.write(&[(
        &compose(&stack),
        Some(&web(&testing::images::busybox(1), 1, free_port(), "")),
    )]);
    repo.commit("v1");
    let up = Up::start_with_env(
        repo,
        &[&stack],
        &[],
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    );
    let st = up
        .wait_for("the engine error in status", T, |s| {
            s.node.engine_error.is_some() && s.revision.applied.is_some()
        })
        .await;
    assert!(!st.converged);
    assert!(
        st.revision.applied.is_some(),
        "git still works without Docker"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_wait_follows_a_commit_to_convergence_or_failure() {
    if !images().await {
        return;
    }
    let stack = stack_name("sync");
    let port = free_port();
    let update = "        failure_action: rollback\n";
    let repo = GitRepo::new();
    repo.write(&[(
        &compose(&stack),
        Some(&web(&testing::images::busybox(1), 2, port, update)),
    )]);
    let c1 = repo.commit("v1");
    let up = Up::start(repo, &[&stack], &[]);
    up.converged(&c1, T).await;
    let dir = up.repo.path().to_path_buf();
    let data = up.data_dir();
    let sync = || {
        crate::support::reconciler(
            &dir,
            &[
                "sync",
                "--wait",
                "--timeout",
                "60s",
                "--server",
                &up.api,
                "--data-dir",
                &data,
            ],
        )
    };

    up.commit(
        &[(
            &compose(&stack),
            Some(&web(&testing::images::busybox(2), 2, port, update)),
        )],
        "v2",
    );
    let out = sync();
    let text = crate::support::stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        crate::support::stderr(&out)
    );
    assert!(
        text.contains("overall progress: 2 out of 2 tasks"),
        "{text}"
    );
    assert!(text.contains("verify: Service converged"), "{text}");

    up.commit(
        &[(
            &compose(&stack),
            Some(&web(testing::EXITS, 2, port, update)),
        )],
        "broken image",
    );
    let out = sync();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        crate::support::stdout(&out)
    );
    let err = crate::support::stderr(&out);
    assert!(err.contains("did not converge"), "{err}");
    assert!(err.contains(&format!("{stack}_web")), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manual_rollback_is_drift_until_the_next_commit_changes_the_service() {
    if !images().await {
        return;
    }
    let stack = stack_name("manual");
    let port = free_port();
    let repo = GitRepo::new();
    repo.write(&[(
        &compose(&stack),
        Some(&web(&testing::images::busybox(1), 1, port, "")),
    )]);
    let c1 = repo.commit("v1");
    let up = Up::start(repo, &[&stack], &[]);
    up.converged(&c1, T).await;
    let c2 = up.commit(
        &[(
            &compose(&stack),
            Some(&web(&testing::images::busybox(2), 1, port, "")),
        )],
        "v2",
    );
    up.converged(&c2, T).await;
    let name = format!("{stack}_web");
    let dir = up.repo.path().to_path_buf();
    // Without the node's token the rollback is refused; the data dir gives it.
    let out =
        crate::support::reconciler(&dir, &["service", "rollback", &name, "--server", &up.api]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        crate::support::stderr(&out).contains("401")
            || crate::support::stderr(&out).contains("token"),
        "{}",
        crate::support::stderr(&out)
    );
    let out = crate::support::reconciler(
        &dir,
        &[
            "service",
            "rollback",
            &name,
            "--server",
            &up.api,
            "--data-dir",
            &up.data_dir(),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        crate::support::stderr(&out)
    );
    up.wait_for("the previous image back", T, |s| {
        s.converged
            && s.services
                .iter()
                .any(|v| v.name == name && v.image == testing::images::busybox(1) && v.drift)
    })
    .await;
    let out = crate::support::reconciler(&dir, &["status", "--server", &up.api]);
    assert!(
        crate::support::stdout(&out).contains("drift from git"),
        "{}",
        crate::support::stdout(&out)
    );
    // A commit that changes the service ends the drift.
    let c3 = up.commit(
        &[(
            &compose(&stack),
            Some(&web(&testing::images::busybox(3), 1, port, "")),
        )],
        "v3",
    );
    let st = up.converged(&c3, T).await;
    let svc = st.services.iter().find(|v| v.name == name).unwrap();
    assert_eq!(
        (svc.image.as_str(), svc.drift),
        (testing::images::busybox(3).as_str(), false)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn service_logs_tails_follows_and_stamps_each_line_with_its_task() {
    if !images().await {
        return;
    }
    let stack = stack_name("logs");
    let text = format!(
        "services:\n  app:\n    image: {}\n    command: [\"sh\", \"-c\", \"echo first; while true; do echo tick; sleep 1; done\"]\n    stop_grace_period: 1s\n",
        testing::images::busybox(1)
    );
    let repo = GitRepo::new();
    repo.write(&[(&compose(&stack), Some(&text))]);
    let c1 = repo.commit("v1");
    let up = Up::start(repo, &[&stack], &[]);
    up.converged(&c1, T).await;
    let name = format!("{stack}_app");
    let dir = up.repo.path().to_path_buf();
    let logs = |extra: &[&str]| {
        let mut args = vec![
            "service",
            "logs",
            name.as_str(),
            "--server",
            up.api.as_str(),
        ];
        args.extend_from_slice(extra);
        crate::support::reconciler(&dir, &args)
    };
    // The whole log by default, each line prefixed with its task as docker does.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let task = loop {
        let out = logs(&[]);
        let text = stdout(&out);
        if text.contains("| first") && text.contains("| tick") {
            let line = text
                .lines()
                .find(|l| l.ends_with("| first"))
                .unwrap()
                .to_string();
            break line;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{text}{}",
            stderr(&out)
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(task.starts_with(&format!("{name}.1.")), "{task}");
    assert!(task.contains('@'), "{task}");

    // --tail 1 --timestamps: one line, the engine's time first.
    let out = logs(&["--tail", "1", "-t"]);
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "{text}");
    let (time, rest) = text.trim().split_once(' ').unwrap();
    assert!(humantime::parse_rfc3339_weak(&time[..19]).is_ok(), "{text}");
    assert!(
        rest.starts_with(&format!("{name}.1.")) && rest.ends_with("| tick"),
        "{text}"
    );

    // --since: relative, or a time; nothing after a time still to come.
    assert!(stdout(&logs(&["--since", "1h"])).contains("| first"));
    let later = humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(3600));
    assert_eq!(stdout(&logs(&["--since", &later.to_string()])), "");
    let out = logs(&["--since", "yesterday-ish"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--since"), "{}", stderr(&out));

    // --follow keeps the stream open and shows the lines as they come.
    let mut child = Command::new(env!("CARGO_BIN_EXE_reconciler"))
        .args([
            "service", "logs", &name, "--server", &up.api, "-f", "--tail", "0",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout_pipe = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout_pipe)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut ticks = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while ticks < 2 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = rx.recv_timeout(left).expect("followed lines arrive");
        assert!(
            !line.ends_with("| first"),
            "--tail 0 showed old lines: {line}"
        );
        ticks += usize::from(line.ends_with("| tick"));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "--follow ended by itself"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_with_three_completions_one_at_a_time_completes_three_times_and_stops() {
    if !images().await {
        return;
    }
    let stack = stack_name("job");
    let service = format!("{stack}_once");
    let text = format!(
        "services:\n  once:\n    image: {}\n    command: [\"sh\", \"-c\", \"sleep 1\"]\n    deploy:\n      mode: replicated-job\n      replicas: 3\n      max_concurrent: 1\n",
        testing::images::busybox(1)
    );
    let repo = GitRepo::new();
    repo.write(&[(&compose(&stack), Some(&text))]);
    let c1 = repo.commit("a job");
    let up = Up::start(repo, &[&stack], &[]);
    // Converged: every completion has happened.
    let status = up.converged(&c1, T).await;
    let view = status.services.iter().find(|s| s.name == service).unwrap();
    assert_eq!(view.mode, "replicated job");
    assert_eq!(view.completed, Some(3));
    let tasks = up.tasks(&service).await;
    assert_eq!(tasks.len(), 3, "{tasks:?}");
    assert!(tasks.iter().all(|t| t.state == TaskState::Complete));
    // One at a time: no two ran at once (each started after the one before it finished).
    let mut spans: Vec<(String, String)> = tasks
        .iter()
        .map(|t| {
            let out = Command::new("docker")
                .args([
                    "inspect",
                    "-f",
                    "{{.State.StartedAt}} {{.State.FinishedAt}}",
                    t.container_id.as_deref().unwrap(),
                ])
                .output()
                .unwrap();
            let text = stdout(&out);
            let (a, b) = text.trim().split_once(' ').unwrap();
            (a.to_string(), b.to_string())
        })
        .collect();
    spans.sort();
    for pair in spans.windows(2) {
        let finished = humantime::parse_rfc3339_weak(&pair[0].1).unwrap();
        let started = humantime::parse_rfc3339_weak(&pair[1].0).unwrap();
        assert!(started >= finished, "{spans:?}");
    }
    // And it stays done: nothing is started again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(up.tasks(&service).await.len(), 3);
    let out = Command::new(env!("CARGO_BIN_EXE_reconciler"))
        .args([
            "service",
            "ls",
            "--filter",
            &format!("name={service}"),
            "--format",
            "{{.Replicas}}",
            "--server",
            &up.api,
        ])
        .output()
        .unwrap();
    assert_eq!(
        stdout(&out).trim(),
        "0/1 (3/3 completed)",
        "{}",
        stderr(&out)
    );
}
