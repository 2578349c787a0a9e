//! `reconciler bench`: what a user sees, measured on the real engine, side by side with Docker's
//! own swarm mode on the same engine (the anchor).
//!
//! - `bench converge`: commit to converged, and a rolling update to converged, with a per-phase
//!   breakdown read from the engine's own events, and the engine's floor (plain `docker run`).
//! - `bench idle`: the CPU the reconciler and dockerd spend while nothing changes.
//! - `bench raft`: the manager cluster's writes per second, failover and memory, side by side
//!   with etcd (three members each, on loopback).
//!
//! Both systems are observed the same way, through the engine: a container counts when the
//! engine says it runs, whoever started it.

mod converge;
mod engine;
mod harness;
mod idle;
mod raft;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Commit-to-converged and a rolling update of N replicas, reconciler vs swarm mode.
    Converge(converge::Args),
    /// CPU of the reconciler and of dockerd with N tasks running and nothing changing,
    /// reconciler vs swarm mode.
    Idle(idle::Args),
    /// Three managers against three etcd members: commits per second through the control
    /// API (1, 16, 64 clients; one command per entry and batched), failover from SIGKILL of
    /// the leader, and manager memory with 1,000 services and 10,000 tasks.
    Raft(raft::Args),
}

pub fn run(command: Command) -> anyhow::Result<i32> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let docker = engine::connect().await?;
        crate::testing::ensure_test_images(&docker).await?;
        match command {
            Command::Converge(args) => converge::run(&docker, args).await,
            Command::Idle(args) => idle::run(&docker, args).await,
            Command::Raft(args) => raft::run(args).await,
        }
    })
}
