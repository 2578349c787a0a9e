//! The git watcher against real repositories made on the spot (git2, temp dirs), a real file
//! watcher, and a real webhook server on loopback driven over HTTP.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use reconciler::desired::{GitTree, Tree};
use reconciler::gitops::{
    webhook_router, Backoff, Commit, GitError, Mirror, Source, Trigger, Update, Watcher,
    WatcherConfig, WatcherHandle, WebhookConfig, WEBHOOK_PATH,
};
use sha2::Sha256;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "webhook-s3cret";
pub(crate) const TOKEN: &str = "tok-DO-NOT-PRINT-1234";
/// Generous, so a loaded machine does not make the tests flaky; latencies are printed.
const ARRIVES: Duration = Duration::from_secs(10);
/// How long "nothing happens" is watched for.
const QUIET: Duration = Duration::from_millis(700);

/// A repository with a work tree whose commits are made with git2 straight onto a branch.
struct Repo {
    dir: tempfile::TempDir,
    repo: git2::Repository,
}

impl Repo {
    fn new(initial_branch: &str) -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let repo = init_at(dir.path(), initial_branch);
        Repo { dir, repo }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Commit `file` = `content` on `branch` (created from HEAD's commit when missing).
    fn commit(&self, branch: &str, file: &str, content: &str) -> String {
        commit_to(&self.repo, branch, file, content)
    }
}

fn init_at(path: &Path, initial_branch: &str) -> git2::Repository {
    let mut opts = git2::RepositoryInitOptions::new();
    opts.initial_head(initial_branch);
    git2::Repository::init_opts(path, &opts).unwrap()
}

fn commit_to(repo: &git2::Repository, branch: &str, file: &str, content: &str) -> String {
    let refname = format!("refs/heads/{branch}");
    let parent = repo
        .find_reference(&refname)
        .or_else(|_| repo.head())
        .ok()
        .and_then(|r| r.peel_to_commit().ok());
    let mut builder = repo
        .treebuilder(parent.as_ref().map(|c| c.tree().unwrap()).as_ref())
        .unwrap();
    let blob = repo.blob(content.as_bytes()).unwrap();
    builder.insert(file, blob, 0o100644).unwrap();
    let tree = repo.find_tree(builder.write().unwrap()).unwrap();
    let sig = git2::Signature::now("Tess Ter", "tess@example.com").unwrap();
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    repo.commit(
        Some(&refname),
        &sig,
        &sig,
        &format!("set {file} to {content}\n\nbody"),
        &tree,
        &parents,
    )
    .unwrap()
    .to_string()
}

fn read_at(mirror: &Mirror, commit: &Commit, file: &str) -> String {
    let tree = GitTree::open(mirror.path(), &commit.id, "").unwrap();
    String::from_utf8(tree.read(file).unwrap().expect(file)).unwrap()
}

fn file_url(path: &Path) -> String {
    format!("file://{}", path.display())
}

async fn fetch(mirror: &Arc<Mirror>) -> Result<Commit, GitError> {
    let m = Arc::clone(mirror);
    tokio::task::spawn_blocking(move || m.fetch())
        .await
        .unwrap()
}

#[test]
fn gitops_clone_and_fetch_from_a_local_path() {
    let repo = Repo::new("main");
    let c1 = repo.commit("main", "stack.txt", "one");
    let data = tempfile::tempdir().unwrap();
    let mirror = Mirror::open(
        Source::new(repo.path().to_str().unwrap(), None),
        data.path(),
    )
    .unwrap();
    assert_eq!(mirror.path(), data.path().join("repo.git"));
    assert!(git2::Repository::open_bare(mirror.path())
        .unwrap()
        .is_bare());
    assert_eq!(mirror.head().unwrap(), None, "nothing fetched yet");

    let head = mirror.fetch().unwrap();
    assert_eq!(head.id, c1);
    assert_eq!(head.branch, "main", "the remote's HEAD branch");
    assert_eq!(head.summary, "set stack.txt to one");
    assert_eq!(head.author, "Tess Ter <tess@example.com>");
    assert!(head.time > 1_600_000_000);
    assert_eq!(read_at(&mirror, &head, "stack.txt"), "one");

    let c2 = repo.commit("main", "stack.txt", "two");
    let head = mirror.fetch().unwrap();
    assert_eq!(head.id, c2, "the next fetch sees the new commit");
    assert_eq!(read_at(&mirror, &head, "stack.txt"), "two");
    assert_eq!(mirror.head().unwrap().unwrap().id, c2);
    // The mirror's HEAD names the tracked branch, so GitTree can use "HEAD" too.
    let tree = GitTree::open(mirror.path(), "HEAD", "").unwrap();
    assert_eq!(tree.revision().unwrap(), c2);

    // Reopening an existing mirror keeps what it has, and knows its head before any fetch.
    drop(mirror);
    let again = Mirror::open(
        Source::new(repo.path().to_str().unwrap(), None),
        data.path(),
    )
    .unwrap();
    assert_eq!(again.head().unwrap().unwrap().id, c2);
}

#[test]
fn gitops_a_mirror_deleted_under_a_running_node_is_made_again_by_the_next_fetch() {
    let repo = Repo::new("main");
    repo.commit("main", "stack.txt", "one");
    let data = tempfile::tempdir().unwrap();
    let mirror = Mirror::open(
        Source::new(repo.path().to_str().unwrap(), None),
        data.path(),
    )
    .unwrap();
    mirror.fetch().unwrap();
    // `rm -rf` of the data dir while the process runs.
    std::fs::remove_dir_all(data.path()).unwrap();
    let c2 = repo.commit("main", "stack.txt", "two");
    let head = mirror.fetch().expect("the mirror is cloned again");
    assert_eq!(head.id, c2);
    assert_eq!(read_at(&mirror, &head, "stack.txt"), "two");
}

#[test]
fn gitops_clone_and_fetch_from_a_file_url() {
    let repo = Repo::new("main");
    let c1 = repo.commit("main", "a.txt", "1");
    let data = tempfile::tempdir().unwrap();
    let mirror = Mirror::open(Source::new(file_url(repo.path()), None), data.path()).unwrap();
    assert_eq!(mirror.fetch().unwrap().id, c1);
    let c2 = repo.commit("main", "a.txt", "2");
    let head = mirror.fetch().unwrap();
    assert_eq!(head.id, c2);
    assert_eq!(read_at(&mirror, &head, "a.txt"), "2");
}

#[test]
fn gitops_tracked_branch_is_honoured() {
    let repo = Repo::new("main");
    let main1 = repo.commit("main", "f", "main-1");
    let dev1 = repo.commit("dev", "f", "dev-1");

    let data = tempfile::tempdir().unwrap();
    let on_main = Mirror::open(
        Source::new(repo.path().to_str().unwrap(), Some("main".into())),
        data.path(),
    )
    .unwrap();
    assert_eq!(on_main.fetch().unwrap().id, main1);
    let dev2 = repo.commit("dev", "f", "dev-2");
    assert_eq!(
        on_main.fetch().unwrap().id,
        main1,
        "a commit on another branch is not seen"
    );
    assert!(
        git2::Repository::open_bare(on_main.path())
            .unwrap()
            .find_reference("refs/heads/dev")
            .is_err(),
        "other branches are not even fetched"
    );

    let data_dev = tempfile::tempdir().unwrap();
    let on_dev = Mirror::open(
        Source::new(repo.path().to_str().unwrap(), Some("dev".into())),
        data_dev.path(),
    )
    .unwrap();
    let head = on_dev.fetch().unwrap();
    assert_eq!(
        (head.id.as_str(), head.branch.as_str()),
        (dev2.as_str(), "dev")
    );
    assert_ne!(dev1, dev2);

    // No branch configured: the remote's HEAD branch, whatever its name.
    let trunk = Repo::new("trunk");
    let t1 = trunk.commit("trunk", "f", "t");
    trunk.commit("main", "f", "decoy");
    let data_t = tempfile::tempdir().unwrap();
    let m = Mirror::open(
        Source::new(trunk.path().to_str().unwrap(), None),
        data_t.path(),
    )
    .unwrap();
    let head = m.fetch().unwrap();
    assert_eq!(
        (head.id.as_str(), head.branch.as_str()),
        (t1.as_str(), "trunk")
    );
    assert_eq!(m.branch().as_deref(), Some("trunk"));
}

#[test]
fn gitops_missing_branch_is_a_clear_error() {
    let repo = Repo::new("main");
    repo.commit("main", "f", "1");
    let data = tempfile::tempdir().unwrap();
    let mirror = Mirror::open(
        Source::new(repo.path().to_str().unwrap(), Some("mian".into())),
        data.path(),
    )
    .unwrap();
    let err = mirror.fetch().unwrap_err();
    println!("{err}");
    assert!(
        matches!(&err, GitError::BranchNotFound { branch, available, .. }
            if branch == "mian" && available == &["main".to_string()]),
        "{err:?}"
    );
    assert!(err.to_string().contains("branches: main"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitops_unreachable_remotes_give_clear_errors() {
    let data = tempfile::tempdir().unwrap();
    for (i, url) in [
        "file:///nonexistent/stacks.git",
        "/nonexistent/stacks",
        "http://127.0.0.1:1/x.git",
    ]
    .into_iter()
    .enumerate()
    {
        let mut source = Source::new(url, Some("main".into()));
        source.auth.token = Some(TOKEN.into());
        let mirror = Arc::new(Mirror::open(source, &data.path().join(i.to_string())).unwrap());
        let err = fetch(&mirror).await.unwrap_err();
        let msg = err.to_string();
        println!("{url}: {msg}");
        assert!(matches!(err, GitError::Unreachable { .. }), "{err:?}");
        assert!(msg.contains(url), "the error names the URL: {msg}");
        assert!(!msg.contains(TOKEN) && !format!("{err:?}").contains(TOKEN));
    }

    // A token written into the URL is not shown either.
    let url = format!("http://x-access-token:{TOKEN}@127.0.0.1:1/x.git");
    let mirror = Arc::new(Mirror::open(Source::new(url, None), &data.path().join("u")).unwrap());
    let err = fetch(&mirror).await.unwrap_err();
    println!("{err}");
    assert!(err
        .to_string()
        .contains("http://x-access-token:***@127.0.0.1:1/x.git"));
    assert!(!format!("{err} {err:?} {mirror:?}").contains(TOKEN));
}

/// A "git server" that refuses every request with 401, recording the credentials offered.
async fn refusing_server() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    use axum::http::{header, HeaderMap, StatusCode};
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    let app = axum::Router::new().fallback(move |headers: HeaderMap| {
        let record = Arc::clone(&record);
        async move {
            if let Some(auth) = headers.get(header::AUTHORIZATION) {
                record
                    .lock()
                    .unwrap()
                    .push(auth.to_str().unwrap().to_string());
            }
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Basic realm=\"git\"")],
                "no",
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitops_refused_credentials_are_an_auth_error_without_the_token() {
    let (addr, seen) = refusing_server().await;
    let data = tempfile::tempdir().unwrap();
    let url = format!("http://{addr}/org/stacks.git");
    let mut source = Source::new(url.clone(), Some("main".into()));
    source.auth.token = Some(TOKEN.into());
    let mirror = Arc::new(Mirror::open(source, data.path()).unwrap());
    let err = fetch(&mirror).await.unwrap_err();
    println!("{err}");
    assert!(matches!(err, GitError::Auth { .. }), "{err:?}");
    assert!(err.to_string().contains(&url));
    assert!(!format!("{err} {err:?}").contains(TOKEN));
    let offered = seen.lock().unwrap().clone();
    let expected = format!("Basic {}", base64(&format!("x-access-token:{TOKEN}")));
    assert_eq!(
        offered,
        [expected],
        "the token is offered once, as x-access-token's password"
    );

    // Without a token the error says that none is configured.
    let data = tempfile::tempdir().unwrap();
    let mirror = Arc::new(Mirror::open(Source::new(url, None), data.path()).unwrap());
    let err = fetch(&mirror).await.unwrap_err();
    println!("{err}");
    assert!(matches!(err, GitError::Auth { .. }), "{err:?}");
}

fn base64(input: &str) -> String {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

struct Running {
    handle: WatcherHandle,
    updates: mpsc::Receiver<Update>,
    shutdown: CancellationToken,
    _data: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Running {
    async fn next(&mut self) -> Update {
        tokio::time::timeout(ARRIVES, self.updates.recv())
            .await
            .expect("an update in time")
            .expect("watcher running")
    }

    /// No update (a fetch may happen: file events on other branches are not filtered by name).
    async fn assert_quiet_updates(&mut self) {
        if let Ok(u) = tokio::time::timeout(QUIET, self.updates.recv()).await {
            panic!("unexpected update {u:?}");
        }
    }

    /// No update and no fetch at all.
    async fn assert_quiet(&mut self) {
        let fetches = self.handle.status().fetches;
        if let Ok(u) = tokio::time::timeout(QUIET, self.updates.recv()).await {
            panic!("unexpected update {u:?}");
        }
        assert_eq!(self.handle.status().fetches, fetches, "nothing was fetched");
    }
}

fn start(source: Source, config: WatcherConfig) -> Running {
    let data = tempfile::tempdir().unwrap();
    let mirror = Arc::new(Mirror::open(source, data.path()).unwrap());
    let (tx, updates) = mpsc::channel(16);
    let (watcher, handle) = Watcher::new(mirror, config, tx);
    let shutdown = CancellationToken::new();
    tokio::spawn(watcher.run(shutdown.clone()));
    Running {
        handle,
        updates,
        shutdown,
        _data: data,
    }
}

/// Only the trigger under test can cause a fetch.
fn no_poll(watch_files: bool) -> WatcherConfig {
    WatcherConfig {
        poll_interval: Duration::from_secs(3600),
        watch_files,
        ..WatcherConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitops_watcher_sees_a_local_commit_within_a_second() {
    let repo = Repo::new("main");
    let c1 = repo.commit("main", "f", "0");
    let mut w = start(
        Source::new(repo.path().to_str().unwrap(), None),
        no_poll(true),
    );
    let first = w.next().await;
    assert_eq!(
        (first.commit.id.as_str(), first.trigger),
        (c1.as_str(), Trigger::Startup)
    );
    assert!(w.handle.status().file_watch, "{:?}", w.handle.status());

    let mut latencies = Vec::new();
    for i in 1..=5 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let t0 = Instant::now();
        let id = repo.commit("main", "f", &i.to_string());
        let u = w.next().await;
        let latency = t0.elapsed();
        assert_eq!(
            (u.commit.id.as_str(), u.trigger),
            (id.as_str(), Trigger::FileChange)
        );
        latencies.push(latency);
    }
    // A `git commit` by the real command line, if there is one.
    let t0 = Instant::now();
    if let Ok(out) = std::process::Command::new("git")
        .args(["-c", "user.name=cli", "-c", "user.email=cli@example.com"])
        .args(["commit", "--allow-empty", "-q", "-m", "from the git cli"])
        .current_dir(repo.path())
        .output()
    {
        let took = t0.elapsed();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let u = w.next().await;
        assert_eq!(u.commit.summary, "from the git cli");
        println!(
            "`git commit` (ran {took:?}) picked up {:?} after it started",
            t0.elapsed()
        );
    }
    let max = latencies.iter().max().unwrap();
    println!("commit → update latencies: {latencies:?}, max {max:?}");
    assert!(*max < Duration::from_secs(3), "{latencies:?}");
    // Commits on another branch move no head.
    repo.commit("dev", "f", "x");
    w.assert_quiet_updates().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitops_sync_now_answers_with_the_current_head() {
    let repo = Repo::new("main");
    let c1 = repo.commit("main", "f", "1");
    let mut w = start(
        Source::new(repo.path().to_str().unwrap(), None),
        no_poll(false),
    );
    assert_eq!(w.next().await.commit.id, c1);

    let head = w.handle.sync_now().await.unwrap();
    assert_eq!(head.id, c1, "unchanged, and still answered");
    w.assert_quiet_updates().await;

    let c2 = repo.commit("main", "f", "2");
    assert_eq!(w.handle.sync_now().await.unwrap().id, c2);
    let u = w.next().await;
    assert_eq!(
        (u.commit.id.as_str(), u.trigger),
        (c2.as_str(), Trigger::SyncNow)
    );
    assert_eq!(w.handle.status().head.unwrap().id, c2);

    w.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        w.handle.sync_now().await.is_err(),
        "a stopped watcher says so"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitops_watcher_retries_with_backoff_until_the_repository_appears() {
    let parent = tempfile::tempdir().unwrap();
    let path = parent.path().join("later");
    let config = WatcherConfig {
        backoff: Backoff::new(Duration::from_millis(50), Duration::from_millis(400)),
        ..no_poll(true)
    };
    let mut w = start(Source::new(path.to_str().unwrap(), None), config);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = w.handle.status();
    println!("{status:?}");
    assert!(status.failures >= 2, "{status:?}");
    assert!(status.last_error.unwrap().contains("later"));
    assert!(!status.file_watch);
    let err = w.handle.sync_now().await.unwrap_err();
    println!("sync_now: {err}");

    std::fs::create_dir(&path).unwrap();
    let repo = init_at(&path, "main");
    let c1 = commit_to(&repo, "main", "f", "1");
    let u = w.next().await;
    assert_eq!(
        (u.commit.id.as_str(), u.trigger),
        (c1.as_str(), Trigger::Retry)
    );
    assert_eq!(w.handle.status().failures, 0);
    assert!(
        w.handle.status().file_watch,
        "the file watch starts once the repo exists"
    );
    let c2 = commit_to(&repo, "main", "f", "2");
    let u = w.next().await;
    assert_eq!(
        (u.commit.id.as_str(), u.trigger),
        (c2.as_str(), Trigger::FileChange)
    );
}

// --- webhooks -------------------------------------------------------------------------------

struct Hooked {
    repo: Repo,
    w: Running,
    url: String,
    client: reqwest::Client,
}

async fn webhook_setup(secret: Option<&str>) -> Hooked {
    let repo = Repo::new("main");
    let c1 = repo.commit("main", "f", "1");
    let mut w = start(
        Source::new(repo.path().to_str().unwrap(), None),
        no_poll(false),
    );
    assert_eq!(w.next().await.commit.id, c1);
    let config = WebhookConfig {
        secret: secret.map(str::to_string),
        ..WebhookConfig::default()
    };
    let app = webhook_router(config, w.handle.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = w.shutdown.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .unwrap()
    });
    Hooked {
        repo,
        w,
        url: format!("http://{addr}{WEBHOOK_PATH}"),
        client: reqwest::Client::new(),
    }
}

fn hmac_hex(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn push_body(branch: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "ref": format!("refs/heads/{branch}"),
        "before": "0000000000000000000000000000000000000000",
        "after": "1111111111111111111111111111111111111111",
        "repository": {"full_name": "org/stacks"},
    }))
    .unwrap()
}

impl Hooked {
    async fn post(&self, headers: &[(&str, String)], body: Vec<u8>) -> (u16, serde_json::Value) {
        let mut req = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let resp = req.send().await.unwrap();
        let code = resp.status().as_u16();
        (code, resp.json().await.unwrap())
    }

    async fn github_push(&self, branch: &str) -> (u16, serde_json::Value) {
        let body = push_body(branch);
        let sig = format!("sha256={}", hmac_hex(&body));
        self.post(
            &[
                ("x-github-event", "push".into()),
                ("x-hub-signature-256", sig),
            ],
            body,
        )
        .await
    }

    /// A webhook makes the new commit arrive; returns the latency from the request.
    async fn expect_fetch(&mut self, id: &str, t0: Instant) -> Duration {
        let u = self.w.next().await;
        assert_eq!((u.commit.id.as_str(), u.trigger), (id, Trigger::Webhook));
        t0.elapsed()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitops_webhook_github_signature_triggers_a_fetch() {
    let mut h = webhook_setup(Some(SECRET)).await;
    let c2 = h.repo.commit("main", "f", "2");
    let t0 = Instant::now();
    let (code, reply) = h.github_push("main").await;
    assert_eq!(code, 202, "{reply}");
    let latency = h.expect_fetch(&c2, t0).await;
    println!("github webhook → update: {latency:?}");

    // A ping is answered, and fetches nothing.
    let body = br#"{"zen":"Keep it logically awesome.","hook_id":1}"#.to_vec();
    let sig = format!("sha256={}", hmac_hex(&body));
    let (code, reply) = h
        .post(
            &[
                ("x-github-event", "ping".into()),
                ("x-hub-signature-256", sig),
            ],
            body,
        )
        .await;
    assert_eq!((code, reply["status"].as_str()), (200, Some("pong")));
    h.w.assert_quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitops_webhook_gitea_signature_triggers_a_fetch() {
    let mut h = webhook_setup(Some(SECRET)).await;
    let c2 = h.repo.commit("main", "f", "2");
    let body = push_body("main");
    let sig = hmac_hex(&body);
    let t0 = Instant::now();
    let (code, reply) = h
        .post(
            &[("x-gitea-event", "push".into()), ("x-gitea-signature", sig)],
            body,
        )
        .await;
    assert_eq!(code, 202, "{reply}");
    println!(
        "gitea webhook → update: {:?}",
        h.expect_fetch(&c2, t0).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitops_webhook_gitlab_token_triggers_a_fetch() {
    let mut h = webhook_setup(Some(SECRET)).await;
    let c2 = h.repo.commit("main", "f", "2");
    let body = serde_json::to_vec(&serde_json::json!({
        "object_kind": "push", "event_name": "push", "ref": "refs/heads/main",
    }))
    .unwrap();
    let t0 = Instant::now();
    let (code, reply) = h
        .post(
            &[
                ("x-gitlab-event", "Push Hook".into()),
                ("x-gitlab-token", SECRET.into()),
            ],
            body.clone(),
        )
        .await;
    assert_eq!(code, 202, "{reply}");
    println!(
        "gitlab webhook → update: {:?}",
        h.expect_fetch(&c2, t0).await
    );

    let (code, _) = h
        .post(
            &[
                ("x-gitlab-event", "Push Hook".into()),
                ("x-gitlab-token", format!("{SECRET}x")),
            ],
            body,
        )
        .await;
    assert_eq!(code, 401);
    h.w.assert_quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitops_webhook_bad_signature_is_refused_and_fetches_nothing() {
    let mut h = webhook_setup(Some(SECRET)).await;
    let c2 = h.repo.commit("main", "f", "2");
    let body = push_body("main");
    let wrong = {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"not the secret").unwrap();
        mac.update(&body);
        hex::encode(mac.finalize().into_bytes())
    };
    let attempts: Vec<Vec<(&str, String)>> = vec![
        vec![
            ("x-github-event", "push".into()),
            ("x-hub-signature-256", format!("sha256={wrong}")),
        ],
        vec![
            ("x-github-event", "push".into()),
            ("x-hub-signature-256", hmac_hex(&body)),
        ],
        vec![("x-github-event", "push".into())],
        vec![
            ("x-gitea-event", "push".into()),
            ("x-gitea-signature", wrong.clone()),
        ],
        vec![
            ("x-gitea-event", "push".into()),
            ("x-gitea-signature", "zz".into()),
        ],
    ];
    for headers in attempts {
        let (code, reply) = h.post(&headers, body.clone()).await;
        assert_eq!(code, 401, "{headers:?}: {reply}");
        assert!(!reply.to_string().contains(SECRET));
    }
    // The signature covers the body: a valid signature of another body is refused too.
    let sig = format!("sha256={}", hmac_hex(&push_body("other")));
    let (code, _) = h
        .post(
            &[
                ("x-github-event", "push".into()),
                ("x-hub-signature-256", sig),
            ],
            body,
        )
        .await;
    assert_eq!(code, 401);
    h.w.assert_quiet().await;

    // The commit was there all along: a good signature fetches it.
    let t0 = Instant::now();
    assert_eq!(h.github_push("main").await.0, 202);
    h.expect_fetch(&c2, t0).await;
    // Counted by result, for /metrics.
    let counted = h.w.handle.status().webhooks;
    assert_eq!(counted.get("refused"), Some(&6), "{counted:?}");
    assert_eq!(counted.get("accepted"), Some(&1), "{counted:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitops_webhook_push_to_another_branch_is_ignored() {
    let mut h = webhook_setup(Some(SECRET)).await;
    h.repo.commit("dev", "f", "dev");
    let c2 = h.repo.commit("main", "f", "2");
    let (code, reply) = h.github_push("dev").await;
    assert_eq!(
        (code, reply["status"].as_str()),
        (200, Some("ignored")),
        "{reply}"
    );
    println!("{reply}");
    h.w.assert_quiet().await;
    let t0 = Instant::now();
    assert_eq!(h.github_push("main").await.0, 202);
    h.expect_fetch(&c2, t0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitops_webhook_without_a_secret_is_refused() {
    let mut h = webhook_setup(None).await;
    h.repo.commit("main", "f", "2");
    let (code, reply) = h.github_push("main").await;
    assert_eq!(code, 403, "{reply}");
    let (code, _) = h
        .post(&[("x-github-event", "push".into())], push_body("main"))
        .await;
    assert_eq!(code, 403);
    h.w.assert_quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitops_a_hanging_remote_times_out_and_does_not_stall_the_watcher() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let server_stop = stop.clone();
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            tokio::select! {
                _ = server_stop.cancelled() => break,
                Ok((conn, _)) = listener.accept() => held.push(conn),
            }
        }
        // Dropping the connections ends the stuck fetch.
    });
    let config = WatcherConfig {
        fetch_timeout: Duration::from_millis(300),
        ..no_poll(false)
    };
    let url = format!("http://{addr}/stacks.git");
    let w = start(Source::new(url.clone(), Some("main".into())), config);

    let t0 = Instant::now();
    let err = w.handle.sync_now().await.unwrap_err().to_string();
    println!("{err} ({:?})", t0.elapsed());
    assert!(err.contains(&url), "{err}");
    assert!(
        err.contains("still running") || err.contains("no answer within"),
        "{err}"
    );
    assert!(t0.elapsed() < Duration::from_secs(5));
    let err = w.handle.sync_now().await.unwrap_err().to_string();
    println!("{err}");
    assert!(err.contains("still running"), "{err}");

    stop.cancel();
    server.await.unwrap();
    // Once the stuck fetch ends, fetching resumes (and reports the closed port plainly).
    let deadline = Instant::now() + ARRIVES;
    loop {
        let err = w.handle.sync_now().await.unwrap_err().to_string();
        if !err.contains("still running") && !err.contains("no answer within") {
            println!("{err}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stuck fetch never ended: {err}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A smart-HTTP git server: `git http-backend` behind axum, requiring basic auth with
/// `user:TOKEN` (what a forge does with an access token). Returns None without a git binary.
pub(crate) async fn git_http_server(root: &Path, user: &'static str) -> Option<SocketAddr> {
    use axum::body::Bytes;
    use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
    use axum::response::IntoResponse;

    let probe = std::process::Command::new("git").arg("--version").output();
    if !probe.is_ok_and(|o| o.status.success()) {
        println!("no git binary: the smart-HTTP server test is skipped");
        return None;
    }
    let root = root.to_path_buf();
    let app = axum::Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let root = root.clone();
            async move {
                let expected = format!("Basic {}", base64(&format!("{user}:{TOKEN}")));
                let authorised = headers
                    .get(header::AUTHORIZATION)
                    .is_some_and(|v| v.as_bytes() == expected.as_bytes());
                if !authorised {
                    return (
                        StatusCode::UNAUTHORIZED,
                        [(header::WWW_AUTHENTICATE, "Basic realm=\"git\"")],
                        "auth",
                    )
                        .into_response();
                }
                let text = |name: header::HeaderName| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string()
                };
                let mut child = tokio::process::Command::new("git")
                    .arg("http-backend")
                    .env("GIT_PROJECT_ROOT", &root)
                    .env("GIT_HTTP_EXPORT_ALL", "1")
                    .env("PATH_INFO", uri.path())
                    .env("QUERY_STRING", uri.query().unwrap_or(""))
                    .env("REQUEST_METHOD", method.as_str())
                    .env("CONTENT_TYPE", text(header::CONTENT_TYPE))
                    .env("CONTENT_LENGTH", body.len().to_string())
                    .env("HTTP_CONTENT_ENCODING", text(header::CONTENT_ENCODING))
                    .env("REMOTE_USER", user)
                    .env("REMOTE_ADDR", "127.0.0.1")
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                let mut stdin = child.stdin.take().unwrap();
                tokio::io::AsyncWriteExt::write_all(&mut stdin, &body)
                    .await
                    .unwrap();
                drop(stdin);
                let out = child.wait_with_output().await.unwrap().stdout;
                // CGI: headers, a blank line, the body.
                let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
                let mut resp = axum::response::Response::new(axum::body::Body::from(
                    out[split + 4..].to_vec(),
                ));
                for line in String::from_utf8_lossy(&out[..split]).lines() {
                    let (k, v) = line.split_once(':').unwrap();
                    if k.eq_ignore_ascii_case("status") {
                        let code = v.trim().split(' ').next().unwrap().parse().unwrap();
                        *resp.status_mut() = StatusCode::from_u16(code).unwrap();
                    } else {
                        resp.headers_mut().insert(
                            header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                            v.trim().parse().unwrap(),
                        );
                    }
                }
                resp
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Some(addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitops_fetch_over_http_with_a_token() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("stacks");
    std::fs::create_dir(&path).unwrap();
    let repo = init_at(&path, "main");
    let c1 = commit_to(&repo, "main", "f", "1");
    let Some(addr) = git_http_server(root.path(), "x-access-token").await else {
        return;
    };

    let url = format!("http://{addr}/stacks");
    let mut source = Source::new(url.clone(), None);
    source.auth.token = Some(TOKEN.into());
    let data = tempfile::tempdir().unwrap();
    let mirror = Arc::new(Mirror::open(source, data.path()).unwrap());
    let head = fetch(&mirror).await.unwrap();
    assert_eq!(
        (head.id.as_str(), head.branch.as_str()),
        (c1.as_str(), "main")
    );
    assert_eq!(read_at(&mirror, &head, "f"), "1");
    let c2 = commit_to(&repo, "main", "f", "2");
    assert_eq!(fetch(&mirror).await.unwrap().id, c2);

    // A wrong token is an auth error naming the URL, and the token is not in it.
    let mut source = Source::new(url.clone(), Some("main".into()));
    source.auth.token = Some("wrong-token-5678".into());
    let data = tempfile::tempdir().unwrap();
    let mirror = Arc::new(Mirror::open(source, data.path()).unwrap());
    let err = fetch(&mirror).await.unwrap_err();
    println!("{err}");
    assert!(matches!(err, GitError::Auth { .. }), "{err:?}");
    assert!(err.to_string().contains(&url) && !err.to_string().contains("wrong-token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitops_fetch_over_http_uses_the_user_named_in_the_url() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("stacks.git");
    let repo = git2::Repository::init_bare(&path).unwrap();
    let c1 = commit_to(&repo, "main", "f", "1");
    repo.set_head("refs/heads/main").unwrap();
    let Some(addr) = git_http_server(root.path(), "bob").await else {
        return;
    };
    let mut source = Source::new(format!("http://bob@{addr}/stacks.git"), None);
    source.auth.token = Some(TOKEN.into());
    let data = tempfile::tempdir().unwrap();
    let mirror = Arc::new(Mirror::open(source, data.path()).unwrap());
    assert_eq!(fetch(&mirror).await.unwrap().id, c1);
}
