//! `reconciler up` as a real process against a git repository made by the test, on the real
//! Docker Engine. Each test uses its own stack names, ports, API port and data dir, so tests run
//! in parallel; everything created is removed by label when the harness drops.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reconciler::api::views::{ServiceView, StatusView, TaskView};
use reconciler::store::TaskState;

use super::GitRepo;

pub struct Up {
    child: Option<Child>,
    pub api: String,
    pub repo: GitRepo,
    pub data: tempfile::TempDir,
    /// Stack names this test uses (for clean-up).
    pub stacks: Vec<String>,
    http: reqwest::Client,
    extra: Vec<String>,
    env: Vec<(String, String)>,
    /// Pass the data dir as a path relative to the process's working directory, as a user
    /// typing `--data-dir state` would.
    relative_data_dir: bool,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The test images, made if missing; false (skip) when there is no Docker Engine and the run
/// does not require one.
pub async fn images() -> bool {
    let Some(docker) = reconciler::testing::docker_or_skip("up").await else {
        return false;
    };
    reconciler::testing::ensure_test_images(&docker)
        .await
        .expect("test images");
    true
}

/// The stack file of `stack` in the repo.
pub fn compose(stack: &str) -> String {
    format!("{stack}/compose.yml")
}

/// The tasks that run and are meant to.
pub fn running(tasks: &[TaskView]) -> Vec<&TaskView> {
    tasks
        .iter()
        .filter(|t| t.state == TaskState::Running && t.desired_state == TaskState::Running)
        .collect()
}

/// A fresh stack name, unique across parallel tests and runs.
pub fn stack_name(prefix: &str) -> String {
    format!("{prefix}{}", reconciler::testing::unique_suffix())
}

impl Up {
    /// Start `reconciler up` on `repo` (stacks at the repository root).
    pub fn start(repo: GitRepo, stacks: &[&str], extra: &[&str]) -> Up {
        Up::start_with_env(repo, stacks, extra, &[])
    }

    /// Like [`Up::start`], with extra environment variables for the process.
    pub fn start_with_env(
        repo: GitRepo,
        stacks: &[&str],
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Up {
        let mut up = Up::new(repo, stacks, extra, env);
        up.spawn();
        up
    }

    /// Like [`Up::start`], with `--data-dir state` relative to the working directory (the
    /// test's data dir), as a user typing a relative path would.
    pub fn start_relative(repo: GitRepo, stacks: &[&str], extra: &[&str]) -> Up {
        let mut up = Up::new(repo, stacks, extra, &[]);
        up.relative_data_dir = true;
        up.spawn();
        up
    }

    fn new(repo: GitRepo, stacks: &[&str], extra: &[&str], env: &[(&str, &str)]) -> Up {
        Up {
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
            api: String::new(),
            repo,
            data: tempfile::tempdir().unwrap(),
            stacks: stacks.iter().map(|s| s.to_string()).collect(),
            http: reqwest::Client::new(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            relative_data_dir: false,
        }
    }

    fn spawn(&mut self) {
        let port = free_port();
        self.api = format!("http://127.0.0.1:{port}");
        let mut args = vec![
            "up".to_string(),
            "--repo".into(),
            self.repo.path().display().to_string(),
            "--data-dir".into(),
            if self.relative_data_dir {
                "state".into()
            } else {
                self.data.path().display().to_string()
            },
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--ingress-bind".into(),
            "127.0.0.1".into(),
            "--poll".into(),
            "2s".into(),
        ];
        args.extend(self.extra.iter().cloned());
        let log = std::fs::File::create(self.data.path().join("up.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_reconciler"))
            .args(&args)
            .current_dir(self.data.path())
            .env("RUST_LOG", "reconciler=debug")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start reconciler up");
        self.child = Some(child);
    }

    /// Stop the process (containers keep running) and start it again on the same data dir.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.path().join("up.log")).unwrap_or_default()
    }

    pub async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Option<T> {
        let resp = self
            .http
            .get(format!("{}{path}", self.api))
            .send()
            .await
            .ok()?;
        resp.json().await.ok()
    }

    pub async fn status(&self) -> Option<StatusView> {
        self.get("/api/v1/status").await
    }

    pub async fn service(&self, name: &str) -> Option<ServiceView> {
        self.status()
            .await?
            .services
            .into_iter()
            .find(|s| s.name == name)
    }

    pub async fn tasks(&self, service: &str) -> Vec<TaskView> {
        self.get(&format!("/api/v1/services/{service}/tasks"))
            .await
            .unwrap_or_default()
    }

    /// Poll the status until `check` holds; panics with the last status and the log on timeout.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&StatusView) -> bool,
    ) -> StatusView {
        let start = Instant::now();
        let mut last = None;
        while start.elapsed() < timeout {
            if let Some(s) = self.status().await {
                if check(&s) {
                    return s;
                }
                last = Some(s);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "timed out after {timeout:?} waiting for {what}\nlast status: {}\nlog:\n{}",
            serde_json::to_string_pretty(&last).unwrap(),
            tail(&self.log(), 60)
        );
    }

    /// Commit files and return the commit id (the watcher sees it within a second).
    pub fn commit(&self, files: &[(&str, Option<&str>)], message: &str) -> String {
        self.repo.write(files);
        self.repo.commit(message)
    }

    /// Wait until `commit` is live and every service converged.
    pub async fn converged(&self, commit: &str, timeout: Duration) -> StatusView {
        self.wait_for(
            &format!("commit {} converged", &commit[..7]),
            timeout,
            |s| {
                s.revision
                    .applied
                    .as_ref()
                    .is_some_and(|a| a.commit == commit)
                    && s.converged
            },
        )
        .await
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `docker <args>` printing ids, one per line.
fn docker_ids(args: &[&str]) -> Vec<String> {
    Command::new("docker")
        .args(args)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

impl Up {
    /// The node's data dir (where the command line finds its API token).
    pub fn data_dir(&self) -> String {
        if self.relative_data_dir {
            self.data.path().join("state")
        } else {
            self.data.path().to_path_buf()
        }
        .display()
        .to_string()
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        self.kill();
        // The node's secret and config files on tmpfs go with its containers (a node that
        // stops keeps them for the containers it leaves running; a test's node never returns).
        let data = std::path::PathBuf::from(self.data_dir());
        let node_id = std::fs::read_to_string(data.join("node.json"))
            .ok()
            .and_then(|j| serde_json::from_str::<serde_json::Value>(&j).ok())
            .and_then(|v| v["node_id"].as_str().map(str::to_string));
        if let Some(id) = node_id {
            let id = id.trim();
            if !id.is_empty() && !id.contains('/') {
                for root in ["/run/reconciler", "/dev/shm/reconciler"] {
                    let _ = std::fs::remove_dir_all(std::path::Path::new(root).join(id));
                }
            }
        }
        // Remove what the test's stacks created, by Docker's own stack label.
        for stack in &self.stacks {
            let filter = format!("label=com.docker.stack.namespace={stack}");
            for (list, remove) in [
                (vec!["ps", "-aq", "--filter", &filter], vec!["rm", "-f"]),
                (
                    vec!["network", "ls", "-q", "--filter", &filter],
                    vec!["network", "rm"],
                ),
                (
                    vec!["volume", "ls", "-q", "--filter", &filter],
                    vec!["volume", "rm", "-f"],
                ),
            ] {
                let ids = docker_ids(&list);
                if !ids.is_empty() {
                    let _ = Command::new("docker").args(&remove).args(&ids).output();
                }
            }
        }
    }
}
