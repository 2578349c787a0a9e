//! The two systems under test: a reconciler (this process, `up` on a git repo the benchmark
//! commits to) and swarm mode (`docker swarm init`, `docker stack deploy`).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tokio_util::sync::CancellationToken;

use crate::api::views::StatusView;

use crate::gitops::Source;
use crate::manager::{self, UpConfig};

/// A reconciler running in this process on a repo of the benchmark's own.
pub struct Reconciler {
    _dir: tempfile::TempDir,
    repo_dir: PathBuf,
    repo: git2::Repository,
    api: String,
    http: reqwest::Client,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Reconciler {
    /// Start it on an empty repo and wait for its API.
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let repo_dir = dir.path().join("repo");
        let repo = git2::Repository::init(&repo_dir)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let shutdown = CancellationToken::new();
        let config = UpConfig {
            source: Source::new(repo_dir.display().to_string(), None),
            path: String::new(),
            data_dir: dir.path().join("data"),
            listen: format!("127.0.0.1:{port}").parse()?,
            poll: Duration::from_secs(30),
            prune: true,
            observe_only: false,
            webhook_secret: None,
            identity: None,
            ingress_bind: "127.0.0.1".parse()?,
            variables: Default::default(),
            security: Default::default(),
            start: crate::cluster::start::Start::Init,
            cluster: Default::default(),
            hostname: None,
        };
        // A first commit, so that the watcher runs before the timed ones; `.keep` says that a
        // repo without stacks is meant (the benchmark removes its last stack between runs).
        std::fs::write(repo_dir.join(".keep"), "")?;
        let this = Reconciler {
            server: tokio::spawn(manager::run(config, shutdown.clone(), |_| {})),
            _dir: dir,
            repo_dir,
            repo,
            api: format!("http://127.0.0.1:{port}/api/v1/status"),
            http: reqwest::Client::new(),
            shutdown,
        };
        this.commit("init")?;
        this.wait(|_| true, Duration::from_secs(30)).await?;
        Ok(this)
    }

    /// Write (or with `None`, remove) the stack's compose file and commit: the moment a user
    /// pushes. Returns the commit id.
    pub fn deploy(&self, stack: &str, compose: Option<&str>) -> anyhow::Result<String> {
        let dir = self.repo_dir.join(stack);
        match compose {
            Some(text) => {
                std::fs::create_dir_all(&dir)?;
                std::fs::write(dir.join("compose.yml"), text)?;
            }
            None => std::fs::remove_dir_all(&dir)?,
        }
        self.commit(stack)
    }

    fn commit(&self, message: &str) -> anyhow::Result<String> {
        let mut index = self.repo.index()?;
        index.add_all(["*"].iter(), git2::IndexAddOption::DEFAULT, None)?;
        index.update_all(["*"].iter(), None)?;
        index.write()?;
        let tree = self.repo.find_tree(index.write_tree()?)?;
        let sig = git2::Signature::now("bench", "bench@example.com")?;
        let parent = self.repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        Ok(self
            .repo
            .commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)?
            .to_string())
    }

    /// Wait until the status satisfies `done`.
    pub async fn wait(
        &self,
        done: impl Fn(&StatusView) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(resp) = self.http.get(&self.api).send().await {
                if let Ok(s) = resp.json::<StatusView>().await {
                    if done(&s) {
                        return Ok(());
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("reconciler did not get there within {timeout:?}")
    }

    /// Stop it (what it runs stays: remove stacks by commit first).
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.server.await;
    }
}

/// Docker's swarm mode on this engine, made for the benchmark and left as it was found.
pub struct Swarm {
    was_active: bool,
    dir: tempfile::TempDir,
}

impl Swarm {
    pub fn init() -> anyhow::Result<Self> {
        let was_active =
            docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"])?.trim() == "active";
        if !was_active {
            docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"])?;
        }
        Ok(Swarm {
            was_active,
            dir: tempfile::tempdir()?,
        })
    }

    /// `docker stack deploy` of this compose text (images are local: never resolved).
    pub fn deploy(&self, stack: &str, compose: &str) -> anyhow::Result<()> {
        let file = self.dir.path().join(format!("{stack}.yml"));
        std::fs::write(&file, compose)?;
        let path = file.to_str().context("temporary path is not UTF-8")?;
        docker(&[
            "stack",
            "deploy",
            "--resolve-image",
            "never",
            "-c",
            path,
            stack,
        ])?;
        Ok(())
    }

    /// Leave the swarm if the benchmark made it (remove its stacks first).
    pub fn leave(self) {
        if !self.was_active {
            let _ = docker(&["swarm", "leave", "--force"]);
        }
    }
}

/// Run the docker CLI; its stdout, or an error with its stderr.
pub fn docker(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .context("running docker")?;
    if !out.status.success() {
        bail!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
