//! Who may talk to a running `reconciler up`: state-changing calls need the API token, a page
//! of another origin cannot post, a name the node does not answer to is refused (DNS
//! rebinding), a client that never finishes its headers is cut off, and the API is never
//! served beyond loopback without a token.

use std::io::{Read as _, Write as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::support::up::{free_port, stack_name, Up};
use crate::support::{stderr, stdout, GitRepo};
use reconciler::testing;

const T: Duration = Duration::from_secs(60);
const TOKEN: &str = "correct-horse-battery-staple";

fn one_service(image: &str) -> String {
    format!("services:\n  app:\n    image: {image}\n    stop_grace_period: 1s\n")
}

#[test]
fn api_up_refuses_to_serve_beyond_loopback_without_a_token() {
    let repo = GitRepo::new();
    let data = tempfile::tempdir().unwrap();
    let listen = format!("0.0.0.0:{}", free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_reconciler"))
        .args(["up", "--repo", repo.path().to_str().unwrap()])
        .args([
            "--data-dir",
            data.path().to_str().unwrap(),
            "--listen",
            &listen,
        ])
        .env_remove("RECONCILER_API_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("up kept running on {listen} without a token");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    assert_eq!(status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("--api-token"), "{err}");
    assert!(err.contains(&listen), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn api_a_token_file_is_the_token_and_never_shown() {
    if testing::docker_or_skip("api").await.is_none() {
        return;
    }
    let stack = stack_name("apifile");
    let repo = GitRepo::new();
    repo.write(&[(
        &format!("{stack}/compose.yml"),
        Some(&one_service(&testing::images::busybox(1))),
    )]);
    repo.commit("one service");
    // As a secrets manager writes it: one line, with its newline.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("api-token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    let up = Up::start(
        repo,
        &[&stack],
        &["--api-token-file", file.to_str().unwrap()],
    );
    up.wait_for("the API", T, |_| true).await;
    let http = reqwest::Client::new();
    let sync = format!("{}/api/v1/sync", up.api);
    let r = http.post(&sync).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = http.post(&sync).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    let state = http
        .get(format!("{}/api/v1/status", up.api))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!state.contains(TOKEN), "the token is in the status");
    assert!(!up.log().contains(TOKEN), "the token is in the log");
}

#[tokio::test(flavor = "multi_thread")]
async fn api_changes_need_the_token_and_come_from_no_other_origin() {
    let Some(docker) = testing::docker_or_skip("api").await else {
        return;
    };
    testing::ensure_test_images(&docker).await.unwrap();
    let stack = stack_name("api");
    let repo = GitRepo::new();
    repo.write(&[(
        &format!("{stack}/compose.yml"),
        Some(&one_service(&testing::images::busybox(1))),
    )]);
    let c1 = repo.commit("one service");
    let up = Up::start(repo, &[&stack], &["--api-token", TOKEN]);
    up.converged(&c1, T).await;
    let http = reqwest::Client::new();
    let service = format!("{stack}_app");
    let rollback = format!("{}/api/v1/services/{service}/rollback", up.api);
    let sync = format!("{}/api/v1/sync", up.api);

    // Reading needs nothing.
    let r = http
        .get(format!("{}/api/v1/status", up.api))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // Changing needs the token: none, or a wrong one, is refused, and nothing happens.
    for req in [
        http.post(&sync),
        http.post(&rollback),
        http.post(&rollback).bearer_auth("wrong"),
    ] {
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let body = r.text().await.unwrap();
        assert!(body.contains("API token"), "{body}");
    }
    let r = http.post(&sync).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());

    // A page elsewhere cannot post, token or not (the browser would send its cookies and
    // its origin, never our token: but refuse it plainly either way).
    let r = http
        .post(&sync)
        .bearer_auth(TOKEN)
        .header("Origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let own = up.api.trim_start_matches("http://").to_string();
    let r = http
        .post(&sync)
        .bearer_auth(TOKEN)
        .header("Origin", format!("http://{own}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "the API's own origin may post");

    // A name this node does not answer to: a rebound DNS name must not read the state.
    let r = http
        .get(format!("{}/api/v1/state", up.api))
        .header("Host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::MISDIRECTED_REQUEST);

    // Rollback answers say what really happened: no such service is 404; a service with no
    // previous spec cannot roll back (409); the spec is unchanged.
    let r = http
        .post(format!(
            "{}/api/v1/services/nosuch_service/rollback",
            up.api
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = http
        .post(&rollback)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let body = r.text().await.unwrap();
    assert!(!body.contains("rolled_back"), "{body}");

    // The CLI passes the token from the environment.
    let cli = |token: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_reconciler"));
        c.args(["sync", "--server", &up.api]);
        c.env_remove("RECONCILER_API_TOKEN");
        if let Some(t) = token {
            c.env("RECONCILER_API_TOKEN", t);
        }
        c.output().unwrap()
    };
    let refused = cli(None);
    assert_eq!(refused.status.code(), Some(1), "{}", stdout(&refused));
    assert!(
        stderr(&refused).contains("API token"),
        "{}",
        stderr(&refused)
    );
    let ok = cli(Some(TOKEN));
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
}

#[test]
fn api_cuts_off_a_client_that_never_finishes_its_headers() {
    let repo = GitRepo::new();
    repo.write(&[(".keep", Some(""))]);
    repo.commit("no stacks");
    let up = Up::start(repo, &[], &[]);
    let addr = up.api.trim_start_matches("http://").to_string();
    let start = Instant::now();
    let mut stream = loop {
        match std::net::TcpStream::connect(&addr) {
            Ok(s) => break s,
            Err(_) if start.elapsed() < Duration::from_secs(20) => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Err(e) => panic!("the API never listened: {e}\n{}", up.log()),
        }
    };
    // Half a request, then nothing (a slowloris client).
    stream
        .write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let sent = Instant::now();
    let mut buf = [0u8; 1024];
    let closed = loop {
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => continue, // a 408 answer before closing is fine
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false, // the 30 s read timeout
        }
    };
    assert!(closed, "the connection was still open after 30 s");
    let after = sent.elapsed();
    assert!(
        after >= Duration::from_secs(5) && after < Duration::from_secs(20),
        "cut off after {after:?}, not by the 10 s header timeout"
    );
}
