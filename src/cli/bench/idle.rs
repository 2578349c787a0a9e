//! `reconciler bench idle`: with N tasks running and nothing changing, how much CPU the
//! reconciler and dockerd spend, next to swarm mode running the same N tasks on the same engine.
//!
//! The reconciler runs in this process, so its figure is this process's CPU over the window
//! (the benchmark itself only sleeps then). dockerd's is read from /proc; with swarm mode the
//! orchestrator is inside dockerd, so dockerd's figure is the whole of swarm mode's cost.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use bollard::Docker;

use super::engine::{self, cpu_seconds, pid_of, rss_bytes};
use super::harness::{docker, Reconciler, Swarm};
use crate::testing;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Tasks (replicas of one service) running while idle.
    #[arg(long, default_value_t = 200)]
    tasks: u32,
    /// How long to measure, once converged and settled.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    window: Duration,
    /// Skip the swarm-mode run.
    #[arg(long)]
    no_swarm: bool,
    /// Skip the reconciler's run (measure swarm mode alone, e.g. after an engine restart).
    #[arg(long)]
    no_reconciler: bool,
}

/// After converging: let the last reports and stops settle before measuring.
const SETTLE: Duration = Duration::from_secs(10);
const TIMEOUT: Duration = Duration::from_secs(1800);

/// The stack: N replicas on the stack's network, given a /20 so that both systems can hold
/// 1,000 tasks on it (swarm's default /24 holds about 250; each system gets its own range).
fn stack_file(tasks: u32, subnet: &str) -> String {
    format!(
        "version: \"3.8\"\nservices:\n  idle:\n    image: {}\n    stop_grace_period: 10s\n    deploy:\n      replicas: {tasks}\nnetworks:\n  default:\n    ipam:\n      config:\n        - subnet: {subnet}\n",
        testing::images::busybox(1)
    )
}

/// CPU use over the window, as a percentage of one core.
struct Usage {
    ours: Option<f64>,
    ours_rss: Option<u64>,
    dockerd: f64,
    containerd: Option<f64>,
}

async fn measure(window: Duration, ours: bool) -> anyhow::Result<Usage> {
    let dockerd = pid_of("dockerd").context("no dockerd process found")?;
    let containerd = pid_of("containerd");
    let me = std::process::id();
    let (d0, c0, m0) = (
        cpu_seconds(dockerd)?,
        containerd.and_then(|p| cpu_seconds(p).ok()),
        cpu_seconds(me)?,
    );
    let start = Instant::now();
    tokio::time::sleep(window).await;
    let secs = start.elapsed().as_secs_f64();
    let pct = |a: f64, b: f64| 100.0 * (b - a) / secs;
    Ok(Usage {
        ours: ours
            .then(|| cpu_seconds(me).map(|m1| pct(m0, m1)))
            .transpose()?,
        ours_rss: ours.then(|| rss_bytes(me)).transpose()?,
        dockerd: pct(d0, cpu_seconds(dockerd)?),
        containerd: match (containerd, c0) {
            (Some(p), Some(c0)) => cpu_seconds(p).ok().map(|c1| pct(c0, c1)),
            _ => None,
        },
    })
}

fn row(name: &str, u: &Usage) {
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}%"));
    println!(
        "{name:<28} {:>12} {:>10} {:>12} {:>14}",
        pct(u.ours),
        pct(Some(u.dockerd)),
        pct(u.containerd),
        u.ours_rss
            .map_or("-".to_string(), |b| format!("{:.1} MB", b as f64 / 1e6))
    );
}

pub async fn run(engine: &Docker, args: Args) -> anyhow::Result<i32> {
    let image = testing::images::busybox(1);
    let n = args.tasks as usize;
    println!(
        "{} tasks running, nothing changing; CPU over {} as % of one core",
        args.tasks,
        humantime::format_duration(args.window)
    );
    // With nothing of ours running: what the engine spends on its own.
    let baseline = measure(args.window.min(Duration::from_secs(10)), false).await?;
    // Each row is printed as soon as it is measured: tearing down 1,000 containers at once can
    // wedge the engine (see docs/benchmarks.md), and a figure already taken must not be lost.
    println!(
        "{:<28} {:>12} {:>10} {:>12} {:>14}",
        "", "reconciler", "dockerd", "containerd", "reconciler RSS"
    );
    row("engine alone (no tasks)", &baseline);

    if !args.no_reconciler {
        let stack = format!("benchidle{}", testing::unique_suffix());
        let reconciler = Reconciler::start().await?;
        let deployed = async {
            let t0 = Instant::now();
            reconciler.deploy(&stack, Some(&stack_file(args.tasks, "10.231.0.0/20")))?;
            let done = engine::wait_converged(engine, &stack, &image, n, TIMEOUT).await?;
            let secs = (done - t0).as_secs_f64();
            tokio::time::sleep(SETTLE).await;
            let usage = measure(args.window, true).await?;
            row(&format!("reconciler, {n} tasks"), &usage);
            println!("  (converged {n} tasks in {secs:.1} s)");
            anyhow::Ok(())
        }
        .await;
        reconciler.deploy(&stack, None)?;
        let removed = engine::wait_until_gone(engine, &stack, TIMEOUT).await;
        reconciler.stop().await;
        deployed?;
        removed?;
    }

    if !args.no_swarm {
        let stack = format!("benchidles{}", testing::unique_suffix());
        let swarm = Swarm::init()?;
        let deployed = async {
            let t0 = Instant::now();
            swarm.deploy(&stack, &stack_file(args.tasks, "10.232.0.0/20"))?;
            let done = engine::wait_converged(engine, &stack, &image, n, TIMEOUT).await?;
            let secs = (done - t0).as_secs_f64();
            tokio::time::sleep(SETTLE).await;
            let usage = measure(args.window, false).await?;
            row(&format!("swarm mode, {n} tasks"), &usage);
            println!("  (converged {n} tasks in {secs:.1} s)");
            anyhow::Ok(())
        }
        .await;
        let _ = docker(&["stack", "rm", &stack]);
        let removed = engine::wait_until_gone(engine, &stack, TIMEOUT).await;
        swarm.leave();
        deployed?;
        removed?;
    }
    Ok(0)
}
