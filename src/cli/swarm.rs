//! `init`, `join` and `join-token`: making a cluster and growing it, with the output a Swarm
//! user knows from `docker swarm init`.

use std::time::Duration;

use crate::cluster::ca::Role;
use crate::cluster::rpc::pb;
use crate::cluster::start::{ClusterOptions, Start};

use super::control::{Control, NodeArgs};
use super::up;

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    #[command(flatten)]
    up: up::Args,
    /// Lifetime of node certificates (renewed automatically).
    #[arg(long, default_value = "2160h", value_parser = up::parse_duration)]
    cert_expiry: Duration,
    /// Raft entries between snapshots (older entries are then dropped).
    #[arg(long, default_value_t = 10_000)]
    snapshot_interval: u64,
    /// Recover a manager whose cluster lost its quorum for good: a new cluster of this
    /// manager alone, from its data dir, with the state, CA and tokens it had.
    #[arg(long)]
    force_new_cluster: bool,
    /// Seal every manager's keys with an unlock key (printed): a manager that restarts
    /// stays locked until `reconciler unlock` gives it the key.
    #[arg(long)]
    autolock: bool,
    /// How often every node's agent tells the managers it is alive; a node silent for
    /// three periods is marked down and its tasks are placed elsewhere.
    #[arg(long, default_value = "5s", value_parser = up::parse_duration)]
    dispatcher_heartbeat: Duration,
}

#[derive(Debug, clap::Args)]
pub struct JoinArgs {
    /// The join token (`reconciler join-token manager` on a manager prints it).
    #[arg(long, env = "RECONCILER_JOIN_TOKEN", hide_env_values = true)]
    token: String,
    /// A manager's cluster address, host:port.
    manager: String,
    #[command(flatten)]
    up: up::Args,
}

#[derive(Debug, clap::Args)]
pub struct JoinTokenArgs {
    /// Whose token: worker or manager.
    #[arg(value_parser = ["worker", "manager"])]
    role: String,
    /// Print the token only.
    #[arg(short, long)]
    quiet: bool,
    /// Replace the token: the old one is refused from now on.
    #[arg(long)]
    rotate: bool,
    #[command(flatten)]
    node: NodeArgs,
}

fn default_listen(args: &up::Args) -> Option<String> {
    Some(
        args.listen_addr
            .clone()
            .unwrap_or_else(|| "0.0.0.0:2377".into()),
    )
}

/// Below this, renewal (at 50-80% of a lifetime, over the network) would be most of what a
/// node does; Swarm's own floor is an hour.
const MIN_CERT_EXPIRY: Duration = Duration::from_secs(10);

pub fn init(args: InitArgs) -> anyhow::Result<i32> {
    anyhow::ensure!(
        args.cert_expiry >= MIN_CERT_EXPIRY,
        "--cert-expiry {} is too short: at least {} (certificates are renewed at 50% to 80% of their lifetime)",
        humantime::format_duration(args.cert_expiry),
        humantime::format_duration(MIN_CERT_EXPIRY)
    );
    anyhow::ensure!(
        args.dispatcher_heartbeat >= Duration::from_millis(100),
        "--dispatcher-heartbeat {} is too short: at least 100ms (a node silent for three periods is marked down)",
        humantime::format_duration(args.dispatcher_heartbeat)
    );
    let options = ClusterOptions {
        // A recovered manager keeps the address it had unless told otherwise.
        listen_addr: if args.force_new_cluster {
            args.up.listen_addr.clone()
        } else {
            default_listen(&args.up)
        },
        advertise_addr: args.up.advertise_addr.clone(),
        cert_expiry: args.cert_expiry,
        snapshot_interval: args.snapshot_interval,
        autolock: args.autolock,
        dispatcher_heartbeat: Some(args.dispatcher_heartbeat),
        hostname: args.up.hostname.clone(),
        // Filled from up's flags (`--identity`, `--git-token`, `--ssh-key`) by `up::serve`.
        secrets: Default::default(),
    };
    let data_dir = args.up.data_dir.clone();
    let (start, said) = if args.force_new_cluster {
        (
            Start::ForceNewCluster,
            "Cluster forced anew from this manager's data",
        )
    } else {
        (Start::Init, "Cluster initialized")
    };
    up::serve(args.up, start, options, move |node| {
        let (tokens, unlock_key) = node.sm.read_cluster(|c| {
            (
                c.map(|c| (c.worker_token.clone(), c.manager_token.clone())),
                c.and_then(|c| c.unlock_key()),
            )
        });
        let addr = &node.info.advertise_addr;
        println!(
            "{said}: current node ({}) is now a manager.\n",
            node.node_id()
        );
        if let Some((worker, manager)) = tokens {
            let dir = data_dir.display();
            println!("To add a manager to this cluster, run the following command:\n\n    reconciler join --token {manager} {addr}\n");
            println!("To add a worker to this cluster, run the following command:\n\n    reconciler join --token {worker} {addr}\n");
            println!(
                "(`reconciler join-token manager|worker --data-dir {dir}` prints them again.)"
            );
        }
        if let Some(key) = unlock_key {
            println!("\n{}", super::lock::key_notice(&key.to_string()));
        }
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
    })
}

pub fn join(args: JoinArgs) -> anyhow::Result<i32> {
    let options = ClusterOptions {
        listen_addr: default_listen(&args.up),
        advertise_addr: args.up.advertise_addr.clone(),
        hostname: args.up.hostname.clone(),
        ..ClusterOptions::default()
    };
    up::serve(
        args.up,
        Start::Join {
            token: args.token,
            manager: args.manager,
        },
        options,
        |node| {
            println!(
                "This node joined the cluster {} as a {} (node {}).",
                node.cluster_id(),
                node.info.role.word(),
                node.node_id()
            );
            use std::io::Write as _;
            let _ = std::io::stdout().flush();
        },
    )
}

#[derive(Debug, clap::Args)]
pub struct LeaveArgs {
    /// Leave even as a manager (the cluster loses one), or as the last one (the cluster is
    /// gone); with a node that is not running, forget its cluster in the data dir.
    #[arg(short, long)]
    force: bool,
    #[command(flatten)]
    node: NodeArgs,
}

pub fn leave(args: LeaveArgs) -> anyhow::Result<i32> {
    let files = crate::cluster::files::NodeFiles::new(&args.node.data_dir);
    if !files.exists() {
        anyhow::bail!(
            "{} is not part of a cluster (no node.json)",
            args.node.data_dir.display()
        );
    }
    let body = crate::cluster::rpc::json(&serde_json::json!({ "force": args.force }))
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
    let answer = Control::connect(&NodeArgs {
        host: None,
        ..args.node.clone()
    })
    .and_then(|mut c| c.call(async |c| c.leave(body).await));
    match answer {
        Ok(answer) => {
            println!("{}", serde_json::from_slice::<String>(&answer.json)?);
            // The node stops and forgets its cluster on its own; wait for it to say so.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while files.exists() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Ok(0)
        }
        Err(e) if args.force && e.to_string().contains("cannot reach") => {
            files.forget()?;
            println!(
                "The node is not running: its cluster is forgotten in {} (its containers stay; remove it from the cluster with `reconciler node demote` / `node rm --force` on a manager).",
                args.node.data_dir.display()
            );
            Ok(0)
        }
        Err(e) => Err(e),
    }
}

pub fn join_token(args: JoinTokenArgs) -> anyhow::Result<i32> {
    let role = Role::from_word(&args.role).expect("clap checked the role");
    let mut control = Control::connect(&args.node)?;
    let (word, rotate) = (role.word().to_string(), args.rotate);
    let answer = control.call(async move |c| {
        c.join_token(pb::JoinTokenRequest { role: word, rotate })
            .await
    })?;
    if args.quiet {
        println!("{}", answer.token);
        return Ok(0);
    }
    if args.rotate {
        println!("Successfully rotated {} join token.\n", role.word());
    }
    println!(
        "To add a {} to this cluster, run the following command:\n\n    reconciler join --token {} {}\n",
        role.word(),
        answer.token,
        control.addr
    );
    Ok(0)
}
