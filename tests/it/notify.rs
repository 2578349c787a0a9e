//! Notifications end to end: `reconciler.toml` in the stacks repo names targets, a real
//! `up` sends them what happens (a commit applied, converged, rolled back, refused) and a real
//! HTTP receiver started here checks what arrives: the generic event signed with HMAC, the
//! Slack message at an age-encrypted URL, a filter per target, and a target that fails at
//! first getting its event later (at least once). Status says how each target does, and never
//! shows the encrypted URL.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{Hmac, Mac};
use reconciler::store::UpdateState;
use reconciler::testing;
use sha2::Sha256;

use crate::support::up::{compose, free_port, images, stack_name, Up};
use crate::support::GitRepo;

const T: Duration = Duration::from_secs(60);
const HMAC_KEY: &str = "the-audit-key";
/// The path part of the Slack URL: a secret, which must show nowhere.
const SLACK_PATH: &str = "services/T000/B000/s3cr3tS1ack";

#[derive(Clone, Debug)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: serde_json::Value,
    raw: Bytes,
}

#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    /// Answers 500 to this many requests on /flaky before it takes them.
    flaky_failures: Arc<Mutex<u32>>,
}

async fn receive(
    State(r): State<Receiver>,
    Path(path): Path<String>,
    headers: HeaderMap,
    raw: Bytes,
) -> StatusCode {
    if path == "flaky" {
        let mut left = r.flaky_failures.lock().unwrap();
        if *left > 0 {
            *left -= 1;
            return StatusCode::INTERNAL_SERVER_ERROR;
        }
    }
    let body = serde_json::from_slice(&raw).unwrap_or_default();
    r.got.lock().unwrap().push(Received {
        path,
        headers,
        body,
        raw,
    });
    StatusCode::OK
}

impl Receiver {
    async fn start() -> (Receiver, String) {
        let r = Receiver::default();
        *r.flaky_failures.lock().unwrap() = 2;
        let app = axum::Router::new()
            .route("/{*path}", post(receive))
            .with_state(r.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (r, base)
    }

    fn at(&self, path: &str) -> Vec<Received> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|g| g.path == path)
            .cloned()
            .collect()
    }

    /// Wait until a request on `path` matches.
    async fn wait(&self, what: &str, path: &str, ok: impl Fn(&Received) -> bool) -> Received {
        let deadline = Instant::now() + T;
        loop {
            if let Some(g) = self.at(path).into_iter().find(|g| ok(g)) {
                return g;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: never came; {path} got {:#?}",
                self.at(path).iter().map(|g| &g.body).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn web(image: &str, port: u16) -> String {
    format!(
        "services:\n  web:\n    image: {image}\n    ports: [\"{port}:80\"]\n    stop_grace_period: 1s\n    deploy:\n      replicas: 1\n      update_config:\n        failure_action: rollback\n        monitor: 2s\n"
    )
}

fn config(base: &str) -> String {
    format!(
        r#"# where the cluster says what it does
[[notify]]
name = "audit"
kind = "generic"
url = "{base}/generic"
secret = "{HMAC_KEY}"

[[notify]]
name = "chat"
kind = "slack"
url_file = "notify/slack-url.age"
events = ["rollout_rolled_back", "commit_refused"]

[[notify]]
name = "flaky"
kind = "discord"
url = "{base}/flaky"
events = ["commit_converged"]
"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn notify_targets_get_their_events_signed_filtered_and_at_least_once() {
    if !images().await {
        return;
    }
    let (receiver, base) = Receiver::start().await;
    let key = tempfile::NamedTempFile::new().unwrap();
    let (identity, recipient) = reconciler::secrets::generate_identity();
    std::fs::write(key.path(), identity).unwrap();
    let to = reconciler::secrets::parse_recipients(&recipient, "test").unwrap();
    let slack_url = format!("{base}/{SLACK_PATH}");
    let encrypted = reconciler::secrets::encrypt(slack_url.as_bytes(), &to).unwrap();

    let stack = stack_name("notify");
    let name = format!("{stack}_web");
    let port = free_port();
    let repo = GitRepo::new();
    repo.write(&[
        (
            &compose(&stack),
            Some(&web(&testing::images::busybox(1), port)),
        ),
        ("reconciler.toml", Some(&config(&base))),
        (
            "notify/slack-url.age",
            Some(std::str::from_utf8(&encrypted).unwrap()),
        ),
    ]);
    let c1 = repo.commit("first deploy");
    let up = Up::start(
        repo,
        &[&stack],
        &["--identity", key.path().to_str().unwrap()],
    );
    up.converged(&c1, T).await;

    // The generic target: applied, then converged, each signed over its exact body.
    let converged = receiver
        .wait("c1 converged at audit", "generic", |g| {
            g.body["event"] == "commit_converged" && g.body["commit"] == c1.as_str()
        })
        .await;
    let applied = receiver.at("generic");
    assert_eq!(applied[0].body["event"], "commit_applied", "in order");
    for g in [&converged, &applied[0]] {
        let mut mac = Hmac::<Sha256>::new_from_slice(HMAC_KEY.as_bytes()).unwrap();
        mac.update(&g.raw);
        let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(g.headers["x-reconciler-signature"], want.as_str());
        assert!(g.headers.contains_key("x-reconciler-delivery"));
    }
    // The flaky target answered 500 twice: it gets the event all the same, later.
    let flaky = receiver
        .wait("c1 converged at flaky", "flaky", |_| true)
        .await;
    assert!(
        flaky.body["content"]
            .as_str()
            .unwrap()
            .contains("converged"),
        "{:?}",
        flaky.body
    );

    // A failing version rolls back: the generic and the chat target hear of it, with why.
    let c2 = up.commit(
        &[(&compose(&stack), Some(&web(testing::EXITS, port)))],
        "an image that exits",
    );
    up.wait_for("the rollback", T, |s| {
        s.services
            .iter()
            .any(|v| v.name == name && v.update_state == Some(UpdateState::RollbackCompleted))
    })
    .await;
    let slack = receiver
        .wait("the rollback at chat", SLACK_PATH, |_| true)
        .await;
    let text = slack.body["text"].as_str().unwrap();
    assert!(text.contains("rolled back"), "{text}");
    assert!(text.contains(&c2[..7]), "{text}");
    receiver
        .wait("the rollback at audit", "generic", |g| {
            g.body["event"] == "rollout_rolled_back" && g.body["service"] == name.as_str()
        })
        .await;

    // A broken reconciler.toml is refused, naming file and line; the targets of the last good
    // commit hear of it.
    let c3 = up.commit(
        &[(
            "reconciler.toml",
            Some("[[notify]]\nname = \"x\"\nkind = \"pager\"\nurl = \"http://127.0.0.1:1/\"\n"),
        )],
        "a kind that does not exist",
    );
    let s = up
        .wait_for("c3 refused", T, |s| {
            s.revision.refused.as_ref().is_some_and(|r| r.commit == c3)
        })
        .await;
    let errors = &s.revision.refused.as_ref().unwrap().errors;
    assert!(
        errors.iter().any(|e| e.starts_with("reconciler.toml:3")),
        "{errors:?}"
    );
    receiver
        .wait("the refusal at chat", SLACK_PATH, |g| {
            g.body["text"].as_str().unwrap_or("").contains("refused")
        })
        .await;

    // The chat target was sent only what it asked for.
    for g in receiver.at(SLACK_PATH) {
        let text = g.body["text"].as_str().unwrap();
        assert!(
            text.contains("rolled back") || text.contains("refused"),
            "{text}"
        );
    }
    // Status says how each target does, and the encrypted URL shows nowhere.
    let out =
        crate::support::reconciler(up.repo.path(), &["status", "--json", "--server", &up.api]);
    let status = crate::support::stdout(&out);
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    let flaky = &v["notifications"]["flaky"];
    assert!(flaky["failures"].as_u64().unwrap() >= 2, "{flaky}");
    assert!(flaky["delivered"].as_u64().unwrap() >= 1, "{flaky}");
    assert!(!status.contains(SLACK_PATH), "{status}");
    assert!(
        !up.log().contains(SLACK_PATH),
        "the slack URL reached the log"
    );
    let metrics = reqwest::get(format!("{}/metrics", up.api))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("reconciler_notifications_total{target=\"flaky\",result=\"failed\"} 2"),
        "{metrics}"
    );
    assert!(!metrics.contains(SLACK_PATH));
}
