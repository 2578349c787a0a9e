//! `reconciler bench converge`: deploy N replicas, then roll them to an image with other bytes,
//! by reconciler (a git commit) and by swarm mode (`docker stack deploy`) on the same engine,
//! with the same stack file and update_config.
//!
//! The clock runs from the change (the commit; the `stack deploy` command) until the engine
//! shows what a user waits for: N containers of the new image running and none of the old.
//! (The update's own "completed" comes one monitor period later in both systems and is not
//! part of it.) The phases come from the engine's events, the same for both systems. The
//! engine's floor is N plain `docker run -d`, 8 at a time.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bollard::Docker;

use super::engine::{self, median, Event, Timeline};
use super::harness::{docker, Reconciler, Swarm};
use crate::testing;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Replicas of the benchmark service.
    #[arg(long, default_value_t = 20)]
    replicas: u32,
    /// Update parallelism (both systems).
    #[arg(long, default_value_t = 2)]
    parallelism: u32,
    /// Update order (both systems).
    #[arg(long, default_value = "start-first", value_parser = ["start-first", "stop-first"])]
    order: String,
    /// Update monitor period (both systems).
    #[arg(long, default_value = "1s")]
    monitor: String,
    /// Runs of each system; the figures are medians.
    #[arg(long, default_value_t = 3)]
    runs: u32,
    /// Skip the swarm-mode runs.
    #[arg(long)]
    no_swarm: bool,
}

const TIMEOUT: Duration = Duration::from_secs(900);
/// `docker run -d` processes at once for the engine's floor.
const FLOOR_CONCURRENCY: usize = 8;

fn stack_file(args: &Args, tag: u32) -> String {
    format!(
        "version: \"3.8\"\nservices:\n  web:\n    image: {}\n    stop_grace_period: 10s\n    deploy:\n      replicas: {}\n      update_config:\n        parallelism: {}\n        delay: 0s\n        monitor: {}\n        order: {}\n        failure_action: rollback\n",
        testing::images::busybox(tag),
        args.replicas,
        args.parallelism,
        args.monitor,
        args.order,
    )
}

/// One run of one system: the two wall-clock times and their phases.
#[derive(Debug, Default, Clone)]
struct Run {
    deploy: Duration,
    deploy_phases: Phases,
    roll: Duration,
    roll_phases: Phases,
}

/// Where a deploy's or a roll's time went, from the engine's events.
#[derive(Debug, Default, Clone)]
struct Phases {
    /// From the change to the first new container's create event.
    pickup: Duration,
    /// Create to start event of a new container (median).
    start: Duration,
    /// Start-first: a new container's start to its old one's first signal; stop-first: the
    /// old one's exit to the new one's start (median per slot).
    handover: Duration,
    /// An old container's first signal to its exit (median).
    stop: Duration,
}

impl Phases {
    fn of(events: &[Event], t0: Instant, image: &str, start_first: bool) -> Phases {
        let mut by_container: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
        for e in events.iter().filter(|e| e.at >= t0) {
            by_container.entry(&e.container).or_default().push(e);
        }
        let first = |c: &[&Event], action: &str| {
            c.iter()
                .find(|e| e.action.starts_with(action))
                .map(|e| e.at)
        };
        let mut news: BTreeMap<u64, (Option<Instant>, Option<Instant>)> = BTreeMap::new();
        let mut olds: BTreeMap<u64, (Option<Instant>, Option<Instant>)> = BTreeMap::new();
        let mut pickup = None::<Instant>;
        let mut starts = Vec::new();
        let mut stops = Vec::new();
        for evs in by_container.values() {
            let Some(slot) = evs.iter().find_map(|e| e.slot) else {
                continue;
            };
            let new = evs.iter().any(|e| e.image == image);
            if new {
                let (created, started) = (first(evs, "create"), first(evs, "start"));
                if let Some(c) = created {
                    pickup = Some(pickup.map_or(c, |p| p.min(c)));
                }
                if let (Some(c), Some(s)) = (created, started) {
                    starts.push(s.saturating_duration_since(c));
                }
                news.insert(slot, (created, started));
            } else {
                let (signalled, died) = (first(evs, "kill"), first(evs, "die"));
                if let (Some(k), Some(d)) = (signalled, died) {
                    stops.push(d.saturating_duration_since(k));
                }
                olds.insert(slot, (signalled, died));
            }
        }
        let handovers = news
            .iter()
            .filter_map(|(slot, (_, started))| {
                let (signalled, died) = olds.get(slot)?;
                if start_first {
                    Some(signalled.as_ref()?.saturating_duration_since((*started)?))
                } else {
                    Some(started.as_ref()?.saturating_duration_since((*died)?))
                }
            })
            .collect();
        Phases {
            pickup: pickup.map_or(Duration::ZERO, |p| p.saturating_duration_since(t0)),
            start: median(starts),
            handover: median(handovers),
            stop: median(stops),
        }
    }
}

/// The stack of one run: unique, so runs never see each other's containers.
fn stack_name(system: &str, run: u32) -> String {
    format!("bench{system}{run}{}", testing::unique_suffix())
}

pub async fn run(engine: &Docker, args: Args) -> anyhow::Result<i32> {
    println!(
        "{} replicas; update: parallelism {}, delay 0s, {}, monitor {}; {} run(s) each, medians",
        args.replicas, args.parallelism, args.order, args.monitor, args.runs
    );
    let start_first = args.order == "start-first";
    let floors = (
        floor(engine, args.replicas, false).await?,
        floor(engine, args.replicas, true).await?,
    );
    let ours = {
        let reconciler = Reconciler::start().await?;
        let mut runs = Vec::new();
        for i in 0..args.runs {
            let stack = stack_name("r", i);
            let run = measure(engine, &args, &stack, start_first, |tag| {
                reconciler.deploy(&stack, Some(&stack_file(&args, tag)))?;
                Ok(())
            })
            .await;
            let stopped = reconciler_remove(&reconciler, engine, &stack).await;
            runs.push(run?);
            stopped?;
        }
        reconciler.stop().await;
        runs
    };
    let swarm = if args.no_swarm {
        None
    } else {
        let swarm = Swarm::init()?;
        let mut runs = Vec::new();
        for i in 0..args.runs {
            let stack = stack_name("s", i);
            let run = measure(engine, &args, &stack, start_first, |tag| {
                swarm.deploy(&stack, &stack_file(&args, tag))
            })
            .await;
            let _ = docker(&["stack", "rm", &stack]);
            let gone = engine::wait_until_gone(engine, &stack, TIMEOUT).await;
            runs.push(run?);
            gone?;
        }
        swarm.leave();
        Some(runs)
    };
    report(&args, floors, &ours, swarm.as_deref());
    Ok(0)
}

async fn reconciler_remove(r: &Reconciler, engine: &Docker, stack: &str) -> anyhow::Result<()> {
    r.deploy(stack, None)?;
    engine::wait_until_gone(engine, stack, TIMEOUT).await
}

/// Deploy image 1, then roll to image 2, timing each from the change to converged.
async fn measure(
    engine: &Docker,
    args: &Args,
    stack: &str,
    start_first: bool,
    change: impl Fn(u32) -> anyhow::Result<()>,
) -> anyhow::Result<Run> {
    let n = args.replicas as usize;
    let timeline = Timeline::record(engine, stack).await;
    let mut run = Run::default();
    for tag in [1, 2] {
        let image = testing::images::busybox(tag);
        let t0 = Instant::now();
        change(tag)?;
        let done = engine::wait_converged(engine, stack, &image, n, TIMEOUT).await?;
        let took = done - t0;
        // Let the last events arrive before they are read.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let events = timeline.snapshot();
        let phases = Phases::of(&events, t0, &image, start_first);
        if tag == 1 {
            (run.deploy, run.deploy_phases) = (took, phases);
        } else {
            (run.roll, run.roll_phases) = (took, phases);
        }
    }
    timeline.finish();
    Ok(run)
}

/// N `docker run -d` of the same image, 8 at a time: the engine's own floor for a deploy. With
/// `network`, each joins a network of its own stack, as the tasks of a stack do in both
/// systems (the engine spends more on that than on its default bridge).
async fn floor(engine: &Docker, replicas: u32, network: bool) -> anyhow::Result<Duration> {
    let stack = format!("benchfloor{}", testing::unique_suffix());
    let image = testing::images::busybox(1);
    let label = format!("{}={stack}", engine::STACK_LABEL);
    let test_label = format!("{}=1", testing::TEST_LABEL);
    let mut options = vec!["--label".to_string(), label.clone()];
    if network {
        docker(&["network", "create", "--label", &test_label, &stack])?;
        options.extend(["--network".to_string(), stack.clone()]);
    }
    let start = Instant::now();
    let mut pending: Vec<u32> = (0..replicas).collect();
    let mut running: Vec<std::process::Child> = Vec::new();
    let mut failed = None;
    while !pending.is_empty() || !running.is_empty() {
        while running.len() < FLOOR_CONCURRENCY {
            let Some(i) = pending.pop() else { break };
            let name = format!("{stack}-{i}");
            running.push(
                std::process::Command::new("docker")
                    .args(["run", "-d", "--name", &name, "--label", &test_label])
                    .args(&options)
                    .arg(&image)
                    .stdout(std::process::Stdio::null())
                    .spawn()?,
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        let mut still = Vec::new();
        for mut child in running {
            match child.try_wait()? {
                Some(status) if !status.success() => failed = Some(status),
                Some(_) => {}
                None => still.push(child),
            }
        }
        running = still;
    }
    let took = start.elapsed();
    let _ = testing::remove_labelled(engine, &label).await;
    if network {
        let _ = docker(&["network", "rm", &stack]);
    }
    if let Some(status) = failed {
        anyhow::bail!("docker run failed for the floor: {status}");
    }
    Ok(took)
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn med(runs: &[Run], f: impl Fn(&Run) -> Duration) -> Duration {
    median(runs.iter().map(f).collect())
}

fn report(args: &Args, floors: (Duration, Duration), ours: &[Run], swarm: Option<&[Run]>) {
    let handover = if args.order == "start-first" {
        "new started -> old signalled"
    } else {
        "old exited -> new started"
    };
    type Row = (&'static str, fn(&Run) -> Duration);
    let rows: [Row; 8] = [
        ("deploy: commit to converged", |r| r.deploy),
        ("  change -> first create", |r| r.deploy_phases.pickup),
        ("  create -> start (median)", |r| r.deploy_phases.start),
        ("roll: commit to converged", |r| r.roll),
        ("  change -> first new create", |r| r.roll_phases.pickup),
        ("  create -> start (median)", |r| r.roll_phases.start),
        ("  handover (median)", |r| r.roll_phases.handover),
        ("  old signalled -> exited (median)", |r| r.roll_phases.stop),
    ];
    println!();
    println!(
        "{:<38} {:>12} {:>12} {:>14}",
        "", "reconciler", "swarm mode", "reconciler/swarm"
    );
    for (label, f) in &rows {
        let label = if label.starts_with("  handover") {
            format!("  {handover} (median)")
        } else {
            label.to_string()
        };
        let o = med(ours, f);
        match swarm {
            Some(s) => {
                let w = med(s, f);
                let ratio = if w.is_zero() {
                    String::new()
                } else {
                    format!("{:.2}x", o.as_secs_f64() / w.as_secs_f64())
                };
                println!("{label:<38} {:>12} {:>12} {:>14}", secs(o), secs(w), ratio);
            }
            None => println!("{label:<38} {:>12}", secs(o)),
        }
    }
    let deploy = med(ours, |r| r.deploy).as_secs_f64();
    println!();
    println!(
        "engine floor, {} x `docker run -d`, {} at a time: {} on the default bridge, {} on a network of their own",
        args.replicas,
        FLOOR_CONCURRENCY,
        secs(floors.0),
        secs(floors.1),
    );
    println!(
        "reconciler's deploy = {:.2}x / {:.2}x of those",
        deploy / floors.0.as_secs_f64(),
        deploy / floors.1.as_secs_f64()
    );
    for (name, runs) in [("reconciler", Some(ours)), ("swarm mode", swarm)] {
        if let Some(runs) = runs {
            let all: Vec<String> = runs
                .iter()
                .map(|r| format!("{:.2}/{:.2}", r.deploy.as_secs_f64(), r.roll.as_secs_f64()))
                .collect();
            println!("{name} runs (deploy/roll, s): {}", all.join("  "));
        }
    }
}
