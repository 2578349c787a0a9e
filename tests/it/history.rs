//! `reconciler history` against a real `up`: every commit pushed is there with what became of
//! it: converged (and how long it took), rolled back with its reason (never a success), or
//! refused with its errors; each with its timeline and the plan it made.

use std::time::{Duration, Instant};

use reconciler::store::UpdateState;
use reconciler::testing;
use serde_json::Value;

use crate::support::up::{compose, free_port, images, stack_name, Up};
use crate::support::{reconciler as run, stderr, stdout};

const T: Duration = Duration::from_secs(60);

fn web(image: &str, port: u16) -> String {
    format!(
        "services:\n  web:\n    image: {image}\n    ports: [\"{port}:80\"]\n    stop_grace_period: 1s\n    deploy:\n      replicas: 2\n      update_config:\n        failure_action: rollback\n        delay: 1s\n        monitor: 2s\n"
    )
}

fn history(up: &Up, args: &[&str]) -> std::process::Output {
    let mut all = vec!["history", "--server", &up.api];
    all.extend_from_slice(args);
    run(up.repo.path(), &all)
}

#[tokio::test(flavor = "multi_thread")]
async fn history_shows_each_commit_with_its_outcome_and_a_rollback_is_never_a_success() {
    if !images().await {
        return;
    }
    let stack = stack_name("hist");
    let name = format!("{stack}_web");
    let port = free_port();
    let repo = crate::support::GitRepo::new();
    repo.write(&[(
        &compose(&stack),
        Some(&web(&testing::images::busybox(1), port)),
    )]);
    let c1 = repo.commit("first deploy");
    let up = Up::start(repo, &[&stack], &[]);
    up.converged(&c1, T).await;

    let c2 = up.commit(
        &[(
            &compose(&stack),
            Some(&web(&testing::images::busybox(2), port)),
        )],
        "web to busybox 2",
    );
    up.converged(&c2, T).await;

    let c3 = up.commit(
        &[(&compose(&stack), Some(&web(testing::EXITS, port)))],
        "an image that exits",
    );
    up.wait_for("the rollback completed", T, |s| {
        s.services
            .iter()
            .any(|v| v.name == name && v.update_state == Some(UpdateState::RollbackCompleted))
    })
    .await;

    let c4 = up.commit(
        &[(&compose(&stack), Some("services:\n  web:\n    image: [\n"))],
        "broken yaml",
    );
    up.wait_for("the broken commit refused", T, |s| {
        s.revision.refused.as_ref().is_some_and(|r| r.commit == c4)
    })
    .await;

    // The rolled-back commit closes once the old spec runs again.
    let deadline = Instant::now() + T;
    let records = loop {
        let out = history(&up, &["--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
        let records = v.as_array().unwrap().clone();
        let closed = records
            .iter()
            .find(|r| r["commit"] == c3.as_str())
            .is_some_and(|r| !r["converged_at"].is_null());
        if closed {
            break records;
        }
        assert!(Instant::now() < deadline, "c3 never converged back: {v:#}");
        std::thread::sleep(Duration::from_millis(300));
    };
    let commits: Vec<&str> = records
        .iter()
        .map(|r| r["commit"].as_str().unwrap())
        .collect();
    assert_eq!(commits, [&c4, &c3, &c2, &c1], "newest first");
    let [r4, r3, r2, r1] = [&records[0], &records[1], &records[2], &records[3]];

    assert_eq!(r4["outcome"], "refused");
    assert_eq!(r4["summary"], "broken yaml");
    let error = r4["errors"][0].as_str().unwrap();
    assert!(
        error.contains("compose.yml"),
        "the error names the file: {error}"
    );

    assert_eq!(r3["outcome"], "rolled_back", "{r3:#}");
    let reason = r3["rollouts"][&name]["message"].as_str().unwrap();
    assert!(reason.contains("rollback"), "{reason}");
    let kinds: Vec<&str> = r3["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for k in [
        "received",
        "applied",
        "rollout_started",
        "rollback_started",
        "rolled_back",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }

    assert_eq!(r2["outcome"], "converged");
    assert!(r2["converged_at"].as_u64().unwrap() >= r2["received_at"].as_u64().unwrap());
    assert_eq!(r2["rollouts"][&name]["replaced"], 2);
    assert_eq!(r2["plan"]["from_revision"], c1.as_str());
    let plan = r2["plan"].to_string();
    assert!(plan.contains(&testing::images::busybox(2)), "{plan}");
    assert_eq!(r1["outcome"], "converged");
    assert!(
        records.iter().all(|r| !r["trigger"].is_null()),
        "each says what brought it"
    );

    // The table: a line per commit, the rollback and the refusal plainly so.
    let out = history(&up, &[]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    let line = |c: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(&c[..7]))
            .unwrap_or_else(|| panic!("no line for {c}:\n{text}"))
            .to_string()
    };
    assert!(line(&c4).contains("refused"), "{text}");
    assert!(line(&c3).contains("rolled back"), "{text}");
    assert!(line(&c2).contains("converged"), "{text}");

    // One commit: its timeline, its rollout and its plan.
    let out = history(&up, &[&c3[..8]]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    for part in [
        "Timeline:",
        "rollback started",
        "Rollouts:",
        "Plan:",
        testing::EXITS,
    ] {
        assert!(text.contains(part), "{part} missing:\n{text}");
    }
    // As scripts use it: quiet, filter, format.
    let out = history(&up, &["-q"]);
    assert_eq!(
        stdout(&out).lines().collect::<Vec<_>>(),
        [&c4, &c3, &c2, &c1]
    );
    let out = history(&up, &["-q", "--filter", "outcome=rolled-back"]);
    assert_eq!(stdout(&out).trim(), c3);
    let out = history(
        &up,
        &[
            "--filter",
            "outcome=converged",
            "--format",
            "{{.ID}} {{.Outcome}} {{.Changes}}",
        ],
    );
    assert_eq!(
        stdout(&out),
        format!(
            "{} converged 1 updated\n{} converged 2 created\n",
            &c2[..7],
            &c1[..7]
        )
    );
    let out = history(&up, &["--filter", "colour=red"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unknown filter key \"colour\""),
        "{}",
        stderr(&out)
    );

    let out = history(&up, &["0000000"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no commit 0000000"),
        "{}",
        stderr(&out)
    );

    // The same four commits in /metrics, counted once however often it is scraped.
    let mut text = String::new();
    for _ in 0..2 {
        text = reqwest::get(format!("{}/metrics", up.api))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
    }
    let value = |line: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(line).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no {line} in:\n{text}"))
    };
    assert_eq!(value("reconciler_commits_total{result=\"converged\"}"), 2.0);
    assert_eq!(
        value("reconciler_commits_total{result=\"rolled_back\"}"),
        1.0
    );
    assert_eq!(value("reconciler_commits_total{result=\"refused\"}"), 1.0);
    assert_eq!(
        value("reconciler_rollouts_total{result=\"completed\"}"),
        1.0
    );
    assert_eq!(
        value("reconciler_rollouts_total{result=\"rolled_back\"}"),
        1.0
    );
    assert_eq!(value("reconciler_commit_to_converged_seconds_count"), 2.0);
    assert!(value("reconciler_commit_to_converged_seconds_sum") > 0.0);
    assert!(value("reconciler_reconcile_duration_seconds_count") > 0.0);
    assert!(value("reconciler_agent_pass_duration_seconds_count") > 0.0);
    assert!(value("reconciler_git_fetches_total{result=\"ok\"}") >= 4.0);
    assert_eq!(
        value(&format!(
            "reconciler_service_replicas_running{{service=\"{name}\",stack=\"{stack}\"}}"
        )),
        2.0
    );
    assert_eq!(
        value(&format!(
            "reconciler_service_update_state{{service=\"{name}\",stack=\"{stack}\",state=\"rolled_back\"}}"
        )),
        1.0
    );
    assert!(value("reconciler_tasks{state=\"running\"}") >= 2.0);
    assert_eq!(
        value("reconciler_nodes{status=\"ready\",availability=\"active\"}"),
        1.0
    );
    assert_eq!(value("reconciler_raft_leader"), 1.0);
    assert!(value("reconciler_raft_term") >= 1.0);
    assert!(value("reconciler_raft_applied_index") >= 4.0);
    assert!(
        text.trim_end().ends_with("# EOF"),
        "OpenMetrics text ends so"
    );

    // A shell's TAB (dynamic completion, as `source <(COMPLETE=bash reconciler)` sets up)
    // offers what the running cluster has.
    let complete = |words: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_reconciler"))
            .env("COMPLETE", "bash")
            .env("_CLAP_COMPLETE_INDEX", (words.len() - 1).to_string())
            .env("RECONCILER_SERVER", &up.api)
            .arg("--")
            .args(words)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out).lines().map(str::to_string).collect::<Vec<_>>()
    };
    // (Flags are offered too on an empty word; the names come first.)
    let names = |words: &[&str]| -> Vec<String> {
        complete(words)
            .into_iter()
            .filter(|c| !c.starts_with('-'))
            .collect()
    };
    assert_eq!(names(&["reconciler", "service", "ps", ""]), [name.as_str()]);
    assert_eq!(
        names(&["reconciler", "service", "logs", ""]),
        [name.as_str()]
    );
    assert_eq!(names(&["reconciler", "stack", "ps", ""]), [stack.as_str()]);
    assert_eq!(
        names(&["reconciler", "history", ""]),
        [&c4[..7], &c3[..7], &c2[..7], &c1[..7]]
    );
    let nodes = names(&["reconciler", "node", "ps", ""]);
    assert_eq!(nodes.len(), 1, "the one node of this up: {nodes:?}");
    assert_eq!(names(&["reconciler", "node", "inspect", ""]), nodes);
    assert_eq!(
        names(&["reconciler", "service", "ps", "zzz"]),
        Vec::<String>::new()
    );

    // The Grafana dashboard in docs/ asks only for metrics that exist.
    let dashboard = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/grafana-dashboard.json"),
    )
    .unwrap();
    let names = metric_names(&dashboard);
    assert!(names.len() >= 10, "{names:?}");
    for name in names {
        assert!(
            text.lines().any(|l| l.starts_with(&name)),
            "the dashboard uses {name}, which /metrics does not have"
        );
    }
}

/// The metric names a dashboard's queries use (`reconciler_...`).
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("reconciler_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        out.insert(name);
    }
    out
}

/// `up --observe-only`: every commit is validated and recorded with the plan it would carry
/// out; no container starts, and a broken commit is still refused.
#[tokio::test(flavor = "multi_thread")]
async fn observe_only_plans_every_commit_and_applies_none() {
    if !images().await {
        return;
    }
    let stack = stack_name("observe");
    let port = free_port();
    let repo = crate::support::GitRepo::new();
    repo.write(&[(
        &compose(&stack),
        Some(&web(&testing::images::busybox(1), port)),
    )]);
    let c1 = repo.commit("first deploy");
    let up = Up::start(repo, &[&stack], &["--observe-only"]);
    let c2 = up.commit(
        &[(
            &compose(&stack),
            Some(&web(&testing::images::busybox(2), port)),
        )],
        "web to busybox 2",
    );
    let deadline = Instant::now() + T;
    let records = loop {
        let out = history(&up, &["--json"]);
        let v: Value = serde_json::from_str(&stdout(&out)).unwrap_or_default();
        let records = v.as_array().cloned().unwrap_or_default();
        if records.iter().any(|r| r["commit"] == c2.as_str()) {
            break records;
        }
        assert!(Instant::now() < deadline, "c2 never observed: {v:#}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    // c1 may be observed or not (c2 may have come first); c2 is, with its plan.
    let r2 = records.iter().find(|r| r["commit"] == c2.as_str()).unwrap();
    assert_eq!(r2["outcome"], "observed", "{r2:#}");
    let plan = r2["plan"].to_string();
    assert!(plan.contains(&format!("{stack}_web")), "{plan}");
    assert!(
        plan.contains("\"create\""),
        "nothing runs, so all is to create: {plan}"
    );
    let _ = c1;

    // Nothing was started.
    let st = up.status().await.unwrap();
    assert!(st.services.is_empty(), "{:?}", st.services);
    assert!(st.node.observe_only);
    let out = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter"])
        .arg(format!("label=com.docker.stack.namespace={stack}"))
        .output()
        .unwrap();
    assert!(
        stdout(&out).trim().is_empty(),
        "containers: {}",
        stdout(&out)
    );
    let out = run(up.repo.path(), &["status", "--server", &up.api]);
    assert!(stdout(&out).contains("observe only"), "{}", stdout(&out));

    // A broken commit is refused all the same.
    let c3 = up.commit(
        &[(&compose(&stack), Some("services:\n  web:\n    image: [\n"))],
        "broken",
    );
    up.wait_for("c3 refused", T, |s| {
        s.revision.refused.as_ref().is_some_and(|r| r.commit == c3)
    })
    .await;
    let out = history(&up, &["-q", "--filter", "outcome=observed"]);
    assert!(stdout(&out).lines().any(|l| l == c2), "{}", stdout(&out));
}

/// `/api/v1/events`: a client that only listens sees a pushed commit arrive and converge,
/// without asking again.
#[tokio::test(flavor = "multi_thread")]
async fn the_event_stream_shows_a_pushed_commit_arrive_and_converge() {
    if !images().await {
        return;
    }
    let stack = stack_name("sse");
    let port = free_port();
    let repo = crate::support::GitRepo::new();
    repo.write(&[(
        &compose(&stack),
        Some(&web(&testing::images::busybox(1), port)),
    )]);
    let c1 = repo.commit("first deploy");
    let up = Up::start(repo, &[&stack], &[]);
    up.converged(&c1, T).await;

    let resp = reqwest::get(format!("{}/api/v1/events", up.api))
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut resp = resp;
    let mut buffer = String::new();
    // The next event of `kind` whose data satisfies `ok`, from the one open stream.
    let mut next = async |kind: &str, ok: &dyn Fn(&Value) -> bool| -> Value {
        let deadline = Instant::now() + T;
        loop {
            while let Some(end) = buffer.find("\n\n") {
                let frame: String = buffer.drain(..end + 2).collect();
                let event = frame
                    .lines()
                    .find_map(|l| l.strip_prefix("event: "))
                    .unwrap_or("");
                let data: String = frame
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .collect();
                if event == kind {
                    let v: Value = serde_json::from_str(&data).unwrap();
                    if ok(&v) {
                        return v;
                    }
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, resp.chunk())
                .await
                .unwrap_or_else(|_| panic!("no {kind} event in time"))
                .unwrap()
                .expect("the stream ended");
            buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    };
    // On connecting: the status and the newest commit, converged.
    let s = next("status", &|_| true).await;
    assert_eq!(s["revision"]["applied"]["commit"], c1.as_str());
    next("commit", &|r| {
        r["commit"] == c1.as_str() && r["outcome"] == "converged"
    })
    .await;

    let c2 = up.commit(
        &[(
            &compose(&stack),
            Some(&web(&testing::images::busybox(2), port)),
        )],
        "web to busybox 2",
    );
    next("commit", &|r| r["commit"] == c2.as_str()).await;
    // A status with the new commit converged, then its record closed (an event comes with
    // each change: the status first).
    next("status", &|s| {
        s["converged"] == true && s["revision"]["applied"]["commit"] == c2.as_str()
    })
    .await;
    let done = next("commit", &|r| {
        r["commit"] == c2.as_str() && r["outcome"] == "converged"
    })
    .await;
    assert_eq!(done["rollouts"][format!("{stack}_web")]["replaced"], 2);
}
