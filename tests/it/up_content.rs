//! What reaches a container, and what never does, with `reconciler up` on the real engine:
//! repo files mounted by relative binds, ports on the host IP the file names, the variables a
//! stack may see, secret versions across a rollback, stacks blocked by an undecryptable
//! secret, two nodes' secret files on one machine, and placements that do not fit.

use std::process::Command;
use std::time::Duration;

use reconciler::api::views::TaskView;
use reconciler::store::TaskState;
use reconciler::testing;

use crate::support::up::{compose, free_port, images, running, stack_name, Up};
use crate::support::{stdout, GitRepo};

const T: Duration = Duration::from_secs(60);

/// `docker exec CONTAINER sh -c SCRIPT`: (success, stdout).
fn exec(container: &str, script: &str) -> (bool, String) {
    let out = Command::new("docker")
        .args(["exec", container, "sh", "-c", script])
        .output()
        .unwrap();
    (out.status.success(), stdout(&out))
}

async fn the_running_container(up: &Up, service: &str) -> String {
    let tasks = up.tasks(service).await;
    let r = running(&tasks);
    assert_eq!(r.len(), 1, "{tasks:?}");
    r[0].container_id.clone().unwrap()
}

async fn http_get(addr: &str) -> Option<String> {
    reqwest::Client::new()
        .get(format!("http://{addr}/"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn content_relative_binds_mount_repo_files_read_only_and_keep_stack_directories() {
    if !images().await {
        return;
    }
    let stack = stack_name("binds");
    let text = format!(
        "services:\n  app:\n    image: {}\n    stop_grace_period: 1s\n    volumes:\n      - ./conf/app.conf:/etc/app.conf\n      - ./data:/data\n    deploy:\n      update_config:\n        monitor: 1s\n",
        testing::images::busybox(1)
    );
    let repo = GitRepo::new();
    repo.write(&[
        (&compose(&stack), Some(&text)),
        (&format!("{stack}/conf/app.conf"), Some("setting=one\n")),
    ]);
    let c1 = repo.commit("v1");
    // `--data-dir state`, relative, as typed: the bind sources must still be whole paths.
    let up = Up::start_relative(repo, &[&stack], &[]);
    up.converged(&c1, T).await;
    let service = format!("{stack}_app");
    let first = the_running_container(&up, &service).await;
    assert_eq!(exec(&first, "cat /etc/app.conf").1, "setting=one\n");
    // The repo's file cannot be changed from inside: git is the only way.
    assert!(
        !exec(&first, "echo x > /etc/app.conf").0,
        "the repo file is read-only"
    );
    // ./data is not in git: a directory of the stack's own, writable.
    assert!(exec(&first, "echo kept > /data/note").0);
    let log = up.log();
    assert!(
        log.contains("conf/app.conf") && log.contains("./data"),
        "each mount says what it became:\n{log}"
    );

    // A change to the file in git rolls the service; the stack's directory outlives it.
    let c2 = up.commit(
        &[(&format!("{stack}/conf/app.conf"), Some("setting=two\n"))],
        "v2 of the config file",
    );
    up.converged(&c2, T).await;
    let second = the_running_container(&up, &service).await;
    assert_ne!(first, second, "the service rolled");
    assert_eq!(exec(&second, "cat /etc/app.conf").1, "setting=two\n");
    assert_eq!(exec(&second, "cat /data/note").1, "kept\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn content_a_port_with_a_host_ip_is_published_there_only() {
    if !images().await {
        return;
    }
    let stack = stack_name("hostip");
    let (ingress, host) = (free_port(), free_port());
    let text = format!(
        "services:\n  web:\n    image: {}\n    ports:\n      - \"127.0.0.2:{ingress}:80\"\n      - target: 80\n        published: {host}\n        host_ip: 127.0.0.2\n        mode: host\n",
        testing::images::busybox(1)
    );
    let repo = GitRepo::new();
    repo.write(&[(&compose(&stack), Some(&text))]);
    let c1 = repo.commit("v1");
    // The node's ingress address is 127.0.0.1: the file's 127.0.0.2 must win, not widen.
    let up = Up::start(repo, &[&stack], &[]);
    up.converged(&c1, T).await;
    for port in [ingress, host] {
        let mut answer = None;
        for _ in 0..50 {
            answer = http_get(&format!("127.0.0.2:{port}")).await;
            if answer.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let body = answer.unwrap_or_else(|| panic!("nothing on 127.0.0.2:{port}\n{}", up.log()));
        assert!(body.starts_with("v1"), "{body}");
        assert!(
            http_get(&format!("127.0.0.1:{port}")).await.is_none(),
            "port {port} answered on 127.0.0.1 too"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn content_a_stack_sees_its_env_files_and_what_the_operator_passes_never_the_nodes_secrets() {
    if !images().await {
        return;
    }
    let stack = stack_name("env");
    let text = format!(
        "services:\n  app:\n    image: {}\n    environment:\n      LEAK: \"${{RECONCILER_WEBHOOK_SECRET:-none}}\"\n      FROM_DOTENV: \"${{COLOUR}}\"\n      PASSED: \"${{REGION:-unset}}\"\n    deploy:\n      labels:\n        leak: \"${{RECONCILER_WEBHOOK_SECRET:-none}}\"\n",
        testing::images::busybox(1)
    );
    let repo = GitRepo::new();
    repo.write(&[
        (&compose(&stack), Some(&text)),
        (&format!("{stack}/.env"), Some("COLOUR=blue\n")),
    ]);
    let c1 = repo.commit("v1");
    let secret = "webhook-secret-that-must-not-leak";
    let up = Up::start_with_env(
        repo,
        &[&stack],
        &["--webhook-secret", secret, "--env", "REGION"],
        &[("REGION", "eu-west"), ("RECONCILER_WEBHOOK_SECRET", secret)],
    );
    up.converged(&c1, T).await;
    let container = the_running_container(&up, &format!("{stack}_app")).await;
    let env = exec(&container, "env").1;
    assert!(env.contains("LEAK=none\n"), "{env}");
    assert!(env.contains("FROM_DOTENV=blue\n"), "{env}");
    assert!(env.contains("PASSED=eu-west\n"), "{env}");
    let state: serde_json::Value = up.get("/api/v1/state").await.unwrap();
    let state = state.to_string();
    assert!(!state.contains(secret), "the secret reached /api/v1/state");
    assert!(!env.contains(secret));
    assert!(!up.log().contains(secret), "the secret reached the log");
}

fn age_key() -> (tempfile::NamedTempFile, reconciler::secrets::Recipients) {
    let key = tempfile::NamedTempFile::new().unwrap();
    let (identity, recipient) = reconciler::secrets::generate_identity();
    std::fs::write(key.path(), identity).unwrap();
    (
        key,
        reconciler::secrets::parse_recipients(&recipient, "test").unwrap(),
    )
}

fn encrypt(text: &str, to: &reconciler::secrets::Recipients) -> String {
    String::from_utf8(reconciler::secrets::encrypt(text.as_bytes(), to).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn content_a_rolled_back_task_gets_the_secret_of_its_own_version() {
    if !images().await {
        return;
    }
    let stack = stack_name("rbsec");
    let (key, to) = age_key();
    let spec = |image: &str| {
        format!(
            "services:\n  app:\n    image: {image}\n    stop_grace_period: 1s\n    secrets: [token]\n    deploy:\n      update_config:\n        monitor: 2s\n        failure_action: rollback\n      rollback_config:\n        monitor: 1s\n      restart_policy:\n        condition: none\nsecrets:\n  token:\n    file: ./token.age\n"
        )
    };
    let secret_file = format!("{stack}/token.age");
    let repo = GitRepo::new();
    repo.write(&[
        (&compose(&stack), Some(&spec(&testing::images::busybox(1)))),
        (&secret_file, Some(&encrypt("old-token", &to))),
    ]);
    let c1 = repo.commit("v1");
    let up = Up::start(
        repo,
        &[&stack],
        &["--identity", key.path().to_str().unwrap()],
    );
    up.converged(&c1, T).await;
    let service = format!("{stack}_app");
    // A new secret and an image that fails: the update rolls back to v1, secret and all.
    let c2 = up.commit(
        &[
            (&compose(&stack), Some(&spec(testing::EXITS))),
            (&secret_file, Some(&encrypt("new-token", &to))),
        ],
        "v2 fails",
    );
    up.wait_for("the rollback, running", T, |s| {
        s.revision.applied.as_ref().is_some_and(|a| a.commit == c2)
            && s.services.iter().any(|v| {
                v.name == service
                    && v.update_state == Some(reconciler::store::UpdateState::RollbackCompleted)
                    && v.running == 1
            })
    })
    .await;
    let container = the_running_container(&up, &service).await;
    assert_eq!(exec(&container, "cat /run/secrets/token").1, "old-token");
}

#[tokio::test(flavor = "multi_thread")]
async fn content_an_undecryptable_secret_blocks_only_its_stack() {
    if !images().await {
        return;
    }
    let (ours, theirs) = (stack_name("ours"), stack_name("theirs"));
    let (key, to_us) = age_key();
    let (_other_key, to_someone_else) = age_key();
    let with_secret = |image: &str| {
        format!(
            "services:\n  app:\n    image: {image}\n    stop_grace_period: 1s\n    secrets: [token]\nsecrets:\n  token:\n    file: ./token.age\n"
        )
    };
    let repo = GitRepo::new();
    repo.write(&[
        (
            &compose(&ours),
            Some(&with_secret(&testing::images::busybox(1))),
        ),
        (&format!("{ours}/token.age"), Some(&encrypt("ok", &to_us))),
        (
            &compose(&theirs),
            Some(&with_secret(&testing::images::busybox(1))),
        ),
        (&format!("{theirs}/token.age"), Some(&encrypt("ok", &to_us))),
    ]);
    let c1 = repo.commit("v1");
    let up = Up::start(
        repo,
        &[&ours, &theirs],
        &["--identity", key.path().to_str().unwrap()],
    );
    up.converged(&c1, T).await;
    // Both stacks change; one secret is now for a key this node does not hold.
    let c2 = up.commit(
        &[
            (
                &compose(&ours),
                Some(&with_secret(&testing::images::busybox(2))),
            ),
            (
                &compose(&theirs),
                Some(&with_secret(&testing::images::busybox(2))),
            ),
            (
                &format!("{theirs}/token.age"),
                Some(&encrypt("not for you", &to_someone_else)),
            ),
        ],
        "v2",
    );
    let s = up.converged(&c2, T).await;
    let image = |name: &str| {
        s.services
            .iter()
            .find(|v| v.name == name)
            .map(|v| v.image.clone())
            .unwrap()
    };
    assert_eq!(image(&format!("{ours}_app")), testing::images::busybox(2));
    assert_eq!(
        image(&format!("{theirs}_app")),
        testing::images::busybox(1),
        "what runs of the blocked stack stays as it was"
    );
    let blocked = &s.revision.applied.as_ref().unwrap().blocked;
    assert!(blocked.contains_key(&theirs), "{blocked:?}");
    assert!(!blocked.contains_key(&ours));
    let text = stdout(
        &Command::new(env!("CARGO_BIN_EXE_reconciler"))
            .args(["status", "--server", &up.api])
            .output()
            .unwrap(),
    );
    assert!(
        text.contains(&format!("Blocked stack:  {theirs}")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn content_two_nodes_on_one_machine_keep_each_others_secret_files() {
    if !images().await {
        return;
    }
    let (a, b) = (stack_name("nodea"), stack_name("nodeb"));
    let with_secret = |replicas: u32| {
        format!(
            "services:\n  app:\n    image: {}\n    stop_grace_period: 1s\n    secrets: [token]\n    deploy:\n      replicas: {replicas}\nsecrets:\n  token:\n    file: ./token.txt\n",
            testing::images::busybox(1)
        )
    };
    let start = |stack: &str| {
        let repo = GitRepo::new();
        repo.write(&[
            (&compose(stack), Some(&with_secret(1))),
            (&format!("{stack}/token.txt"), Some(stack)),
        ]);
        let c = repo.commit("v1");
        (Up::start(repo, &[stack], &[]), c)
    };
    let (mut first, c1) = start(&a);
    first.converged(&c1, T).await;
    let (second, c2) = start(&b);
    second.converged(&c2, T).await;
    // The first node starts again: at start it prunes the task files it no longer needs.
    first.restart();
    first.converged(&c1, T).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let container = the_running_container(&second, &format!("{b}_app")).await;
    // The secret file on the host, under the second node's own directory, is still there.
    let source = stdout(
        &Command::new("docker")
            .args([
                "inspect",
                "-f",
                "{{range .Mounts}}{{if eq .Destination \"/run/secrets/token\"}}{{.Source}}{{end}}{{end}}",
                &container,
            ])
            .output()
            .unwrap(),
    );
    let source = source.trim();
    assert!(!source.is_empty(), "the secret is a bind mount");
    assert_eq!(std::fs::read_to_string(source).unwrap(), b, "{source}");
    assert_eq!(exec(&container, "cat /run/secrets/token").1, b);
    // And the second node can still start new tasks with it.
    let c3 = second.commit(&[(&compose(&b), Some(&with_secret(2)))], "scale");
    let s = second.converged(&c3, T).await;
    assert_eq!(s.services[0].running, 2, "{:?}", s.services);
}

#[tokio::test(flavor = "multi_thread")]
async fn content_a_placement_that_does_not_fit_waits_pending_and_says_why() {
    if !images().await {
        return;
    }
    let stack = stack_name("fit");
    let text = format!(
        "services:\n  app:\n    image: {}\n    deploy:\n      replicas: 2\n      placement:\n        max_replicas_per_node: 1\n",
        testing::images::busybox(1)
    );
    let repo = GitRepo::new();
    repo.write(&[(&compose(&stack), Some(&text))]);
    let c1 = repo.commit("two replicas, one per node, one node");
    let up = Up::start(repo, &[&stack], &[]);
    let service = format!("{stack}_app");
    up.wait_for("one running", T, |s| {
        s.revision.applied.as_ref().is_some_and(|a| a.commit == c1)
            && s.services
                .iter()
                .any(|v| v.name == service && v.running == 1)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tasks = up.tasks(&service).await;
    assert_eq!(
        running(&tasks).len(),
        1,
        "both placed in one pass: {tasks:?}"
    );
    let pending: Vec<&TaskView> = tasks
        .iter()
        .filter(|t| t.state == TaskState::Pending)
        .collect();
    assert_eq!(pending.len(), 1, "{tasks:?}");
    let why = pending[0].error.clone().unwrap_or_default();
    assert_eq!(why, "no suitable node (1 node at max_replicas_per_node)");
    let ps = |extra: &[&str]| {
        stdout(
            &Command::new(env!("CARGO_BIN_EXE_reconciler"))
                .args(["service", "ps", &service, "--server", &up.api])
                .args(extra)
                .output()
                .unwrap(),
        )
    };
    // Cut as docker cuts it (30 characters, the last an ellipsis), whole with --no-trunc.
    let table = ps(&[]);
    assert!(table.contains("no suitable node (1 node at m…"), "{table}");
    assert!(!table.contains("max_replicas_per_node"), "{table}");
    assert!(!table.contains(&pending[0].id), "{table}");
    let whole = ps(&["--no-trunc"]);
    assert!(whole.contains(&why), "{whole}");
    assert!(whole.contains(&pending[0].id), "{whole}");
    let ids = ps(&["-q", "--no-trunc"]);
    assert!(ids.lines().any(|l| l == pending[0].id), "{ids}");
}
