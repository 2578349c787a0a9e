//! `reconciler bench converge`: commit-to-converged and a rolling update of N replicas, by
//! reconciler and by Docker's own swarm mode on the same engine, side by side.
//!
//! Both run the same stack file (local test images, no published ports: this kernel has no IPVS
//! for swarm's routing mesh). Times are wall clock from the moment the change is made (a git
//! commit; `docker stack deploy`) until every replica runs the new spec and the update is
//! reported complete.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tokio_util::sync::CancellationToken;

use crate::api::views::StatusView;
use crate::gitops::Source;
use crate::manager::{self, UpConfig};
use crate::testing;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Replicas of the benchmark service.
    #[arg(long, default_value_t = 20)]
    replicas: u32,
    /// Update parallelism (both systems).
    #[arg(long, default_value_t = 2)]
    parallelism: u32,
    /// Skip the swarm-mode run.
    #[arg(long)]
    no_swarm: bool,
}

fn stack_file(replicas: u32, parallelism: u32, tag: u32) -> String {
    format!(
        "version: \"3.8\"\nservices:\n  web:\n    image: {}\n    stop_grace_period: 2s\n    deploy:\n      replicas: {replicas}\n      update_config:\n        parallelism: {parallelism}\n        monitor: 1s\n        order: stop-first\n",
        testing::images::busybox(tag)
    )
}

pub fn run(args: Args) -> anyhow::Result<i32> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let docker = bollard::Docker::connect_with_local_defaults()?
            .negotiate_version()
            .await?;
        testing::ensure_test_images(&docker).await?;
        anyhow::Ok(())
    })?;
    println!(
        "converge and roll {} replicas (update parallelism {}, monitor 1s, stop-first)",
        args.replicas, args.parallelism
    );
    let ours = rt.block_on(reconciler_run(&args))?;
    println!(
        "reconciler:  deploy {:>6.2}s   rolling update {:>6.2}s",
        ours.0.as_secs_f64(),
        ours.1.as_secs_f64()
    );
    if args.no_swarm {
        return Ok(0);
    }
    let swarm = swarm_run(&args)?;
    println!(
        "swarm mode:  deploy {:>6.2}s   rolling update {:>6.2}s",
        swarm.0.as_secs_f64(),
        swarm.1.as_secs_f64()
    );
    println!(
        "ratio (swarm / reconciler): deploy {:.2}x, rolling update {:.2}x",
        swarm.0.as_secs_f64() / ours.0.as_secs_f64(),
        swarm.1.as_secs_f64() / ours.1.as_secs_f64()
    );
    Ok(0)
}

async fn reconciler_run(args: &Args) -> anyhow::Result<(Duration, Duration)> {
    let dir = tempfile::tempdir()?;
    let repo_dir = dir.path().join("repo");
    let repo = git2::Repository::init(&repo_dir)?;
    let stack = format!("bench{}", testing::unique_suffix());
    let file = repo_dir.join(&stack).join("compose.yml");
    std::fs::create_dir_all(file.parent().unwrap())?;
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
        webhook_secret: None,
        identity: None,
        ingress_bind: "127.0.0.1".parse()?,
        variables: Default::default(),
        security: Default::default(),
    };
    // An empty first commit so the watcher is running before the timed ones.
    std::fs::write(repo_dir.join("README"), "bench\n")?;
    commit(&repo, "init")?;
    let server = tokio::spawn(manager::run(config, shutdown.clone()));
    let api = format!("http://127.0.0.1:{port}/api/v1/status");
    let http = reqwest::Client::new();
    wait(&http, &api, |_| true, Duration::from_secs(30)).await?;

    let mut times = Vec::new();
    for tag in [1, 2] {
        std::fs::write(&file, stack_file(args.replicas, args.parallelism, tag))?;
        let start = Instant::now();
        let id = commit(&repo, &format!("v{tag}"))?;
        wait(
            &http,
            &api,
            |s| s.revision.applied.as_ref().is_some_and(|a| a.commit == id) && s.converged,
            Duration::from_secs(600),
        )
        .await?;
        times.push(start.elapsed());
    }
    // Clean up: remove the stack by commit and wait for it to go.
    std::fs::remove_dir_all(file.parent().unwrap())?;
    let id = commit(&repo, "remove")?;
    wait(
        &http,
        &api,
        |s| s.revision.applied.as_ref().is_some_and(|a| a.commit == id) && s.services.is_empty(),
        Duration::from_secs(120),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    shutdown.cancel();
    let _ = server.await;
    Ok((times[0], times[1]))
}

fn commit(repo: &git2::Repository, message: &str) -> anyhow::Result<String> {
    let mut index = repo.index()?;
    index.add_all(["*"].iter(), git2::IndexAddOption::DEFAULT, None)?;
    index.update_all(["*"].iter(), None)?;
    index.write()?;
    let tree = repo.find_tree(index.write_tree()?)?;
    let sig = git2::Signature::now("bench", "bench@example.com")?;
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    Ok(repo
        .commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)?
        .to_string())
}

async fn wait(
    http: &reqwest::Client,
    url: &str,
    done: impl Fn(&StatusView) -> bool,
    timeout: Duration,
) -> anyhow::Result<()> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Ok(resp) = http.get(url).send().await {
            if let Ok(s) = resp.json::<StatusView>().await {
                if done(&s) {
                    return Ok(());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("reconciler did not converge within {timeout:?}")
}

fn docker(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .context("running docker")?;
    if !out.status.success() {
        bail!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn swarm_run(args: &Args) -> anyhow::Result<(Duration, Duration)> {
    let was_active = docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"])?.trim() == "active";
    if !was_active {
        docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"])?;
    }
    let result = swarm_measure(args);
    let _ = docker(&["stack", "rm", "reconcilerbench"]);
    // Give swarm a moment to stop the tasks before leaving.
    std::thread::sleep(Duration::from_secs(3));
    if !was_active {
        let _ = docker(&["swarm", "leave", "--force"]);
    }
    result
}

fn swarm_measure(args: &Args) -> anyhow::Result<(Duration, Duration)> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("stack.yml");
    let mut times = Vec::new();
    for tag in [1, 2] {
        std::fs::write(&file, stack_file(args.replicas, args.parallelism, tag))?;
        let start = Instant::now();
        docker(&[
            "stack",
            "deploy",
            "--resolve-image",
            "never",
            "-c",
            path(&file)?,
            "reconcilerbench",
        ])?;
        let image = testing::images::busybox(tag);
        loop {
            if swarm_converged(&image, args.replicas, tag > 1)? {
                break;
            }
            if start.elapsed() > Duration::from_secs(600) {
                bail!("swarm mode did not converge within 10 minutes");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        times.push(start.elapsed());
    }
    Ok((times[0], times[1]))
}

fn path(p: &Path) -> anyhow::Result<&str> {
    p.to_str().context("temporary path is not UTF-8")
}

/// Every replica running `image`, and for an update, swarm reports it completed.
fn swarm_converged(image: &str, replicas: u32, update: bool) -> anyhow::Result<bool> {
    let ps = docker(&[
        "service",
        "ps",
        "reconcilerbench_web",
        "--filter",
        "desired-state=running",
        "--format",
        "{{.Image}} {{.CurrentState}}",
    ])?;
    let running = ps
        .lines()
        .filter(|l| l.starts_with(image) && l.contains("Running"))
        .count();
    if running < replicas as usize {
        return Ok(false);
    }
    if !update {
        return Ok(true);
    }
    let state = docker(&[
        "service",
        "inspect",
        "reconcilerbench_web",
        "--format",
        "{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}",
    ])?;
    Ok(state.trim() == "completed")
}
