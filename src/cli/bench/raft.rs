//! `reconciler bench raft`: the manager cluster against etcd, both three members on loopback
//! on this machine, in the same run.
//!
//! - throughput: commands committed per second through the control API (`Control.Propose`
//!   on the leader, mutual TLS), with 1, 16 and 64 concurrent clients, one command per Raft
//!   entry and batched; etcd: puts per second to its leader (`KV.Put`, gRPC, no TLS);
//! - failover: from SIGKILL of the leader to the first write a survivor accepts (median);
//! - memory: each manager's RSS with 1,000 services and 10,000 tasks in the store.
//!
//! Every manager is a real `reconciler` process (`init`, `join`, `up`) with its own data dir,
//! on its own 127.0.0.x address; etcd is Debian's `etcd` with its default fsync.

use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use super::engine::{median, rss_bytes};
use crate::cluster::files::NodeFiles;
use crate::cluster::raft::Proposal;
use crate::cluster::rpc::{self, pb};
use crate::cluster::services::NodeList;
use crate::cluster::tls::Credentials;
use crate::store::{Availability, Command, Node, NodeRole};

/// etcd's generated client.
mod etcd {
    tonic::include_proto!("etcdserverpb");
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// How long each throughput run lasts.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Concurrent clients, one run each.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    clients: Vec<usize>,
    /// Commands per Raft entry of the batched runs.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Leader kills to time.
    #[arg(long, default_value_t = 5)]
    failovers: usize,
    /// Services (of 10 replicas each) in the store for the memory figure.
    #[arg(long, default_value_t = 1000)]
    services: usize,
    /// Skip the etcd runs.
    #[arg(long)]
    no_etcd: bool,
}

const WAIT: Duration = Duration::from_secs(60);

pub async fn run(args: Args) -> anyhow::Result<i32> {
    // RECONCILER_BENCH_KEEP=1 keeps the data dirs and logs for a look afterwards.
    let mut dir = tempfile::tempdir()?;
    if std::env::var_os("RECONCILER_BENCH_KEEP").is_some() {
        dir.disable_cleanup(true);
        eprintln!("keeping {}", dir.path().display());
    }
    let mut ours = Managers::start(dir.path()).await?;
    let mut etcd = if args.no_etcd {
        None
    } else {
        Some(Etcd::start(dir.path()).await?)
    };

    println!("throughput: commands committed per second (p50 / p99 latency of a call)");
    println!(
        "{:>8}  {:>28}  {:>28}  {:>28}",
        "clients",
        "reconciler, 1 per entry",
        format!("reconciler, {} per entry", args.batch),
        "etcd, puts"
    );
    for &clients in &args.clients {
        let leader = ours.leader().await?;
        let single = load(clients, args.duration, |i| ours.proposer(&leader, 1, i)).await?;
        let batched = load(clients, args.duration, |i| {
            ours.proposer(&leader, args.batch, i)
        })
        .await?;
        let theirs = match &etcd {
            Some(e) => {
                let leader = e.leader()?;
                Some(load(clients, args.duration, |i| e.putter(leader, i)).await?)
            }
            None => None,
        };
        println!(
            "{clients:>8}  {:>28}  {:>28}  {:>28}",
            single.to_string(),
            batched.to_string(),
            theirs.map(|t| t.to_string()).unwrap_or_else(|| "-".into())
        );
    }

    println!("\nfailover: SIGKILL of the leader to the first write a survivor accepts");
    let mut times = Vec::new();
    for _ in 0..args.failovers {
        times.push(ours.failover().await?);
    }
    let theirs = match etcd.as_mut() {
        Some(e) => {
            let mut t = Vec::new();
            for _ in 0..args.failovers {
                t.push(e.failover().await?);
            }
            Some(t)
        }
        None => None,
    };
    let show = |t: &[Duration]| {
        let mut s: Vec<String> = t
            .iter()
            .map(|d| format!("{:.2}", d.as_secs_f64()))
            .collect();
        s.sort();
        format!(
            "median {:.2} s  (runs: {} s)",
            median(t.to_vec()).as_secs_f64(),
            s.join(", ")
        )
    };
    println!("  reconciler: {}", show(&times));
    if let Some(t) = theirs {
        println!("  etcd:       {}", show(&t));
    }

    println!("\nmemory: manager RSS");
    let empty = ours.rss();
    let tasks = ours.fill(args.services).await?;
    let full = ours.rss();
    println!(
        "  with an empty store:                 {}",
        mib_list(&empty)
    );
    println!(
        "  with {} services, {tasks} tasks: {}",
        args.services,
        mib_list(&full)
    );
    Ok(0)
}

fn mib_list(v: &[u64]) -> String {
    v.iter()
        .map(|b| format!("{:.1} MiB", *b as f64 / (1 << 20) as f64))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a throughput run measured.
struct Figures {
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.0}/s ({:.1} / {:.1} ms)",
            self.per_second,
            self.p50.as_secs_f64() * 1000.0,
            self.p99.as_secs_f64() * 1000.0
        )
    }
}

/// A client's one call: how many commands it committed.
type Call = std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<usize>> + Send>>;
type Caller = Box<dyn FnMut() -> Call + Send>;

/// `clients` callers, each calling in a loop for `duration`.
async fn load(
    clients: usize,
    duration: Duration,
    make: impl Fn(usize) -> anyhow::Result<Caller>,
) -> anyhow::Result<Figures> {
    let mut set = tokio::task::JoinSet::new();
    let start = Instant::now();
    for i in 0..clients {
        let mut call = make(i)?;
        set.spawn(async move {
            let mut latencies = Vec::new();
            let mut committed = 0usize;
            while start.elapsed() < duration {
                let t = Instant::now();
                committed += call().await?;
                latencies.push(t.elapsed());
            }
            anyhow::Ok((committed, latencies))
        });
    }
    let mut committed = 0;
    let mut latencies = Vec::new();
    while let Some(r) = set.join_next().await {
        let (c, l) = r??;
        committed += c;
        latencies.extend(l);
    }
    let elapsed = start.elapsed();
    latencies.sort();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Ok(Figures {
        per_second: committed as f64 / elapsed.as_secs_f64(),
        p50: at(0.5),
        p99: at(0.99),
    })
}

/// A node no scheduler places anything on: what the benchmark's writes upsert.
fn bench_node(id: &str) -> Node {
    Node {
        id: id.to_string(),
        hostname: id.to_string(),
        role: NodeRole::Worker,
        availability: Availability::Drain,
        ready: false,
        os: "linux".into(),
        arch: "x86_64".into(),
        ip: String::new(),
        labels: Default::default(),
        engine_labels: Default::default(),
        nano_cpus: 0,
        memory_bytes: 0,
        engine_version: String::new(),
    }
}

struct Manager {
    name: String,
    dir: PathBuf,
    addr: String,
    api: String,
    child: Option<Child>,
}

struct Managers {
    repo: PathBuf,
    tls: std::sync::Arc<Credentials>,
    managers: Vec<Manager>,
    http: reqwest::Client,
}

fn free_port(ip: &str) -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind((ip, 0))?.local_addr()?.port())
}

fn commit_all(repo: &git2::Repository, message: &str) -> anyhow::Result<()> {
    let mut index = repo.index()?;
    index.add_all(["*"].iter(), git2::IndexAddOption::DEFAULT, None)?;
    index.write()?;
    let tree = repo.find_tree(index.write_tree()?)?;
    let sig = git2::Signature::now("bench", "bench@localhost")?;
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)?;
    Ok(())
}

impl Manager {
    fn spawn(&mut self, command: &[&str], repo: &Path) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.with_extension("log"))?;
        let child = Process::new(std::env::current_exe()?)
            .args(command)
            .args(["--repo", &repo.display().to_string()])
            .args(["--data-dir", &self.dir.display().to_string()])
            .args(["--listen", self.api.trim_start_matches("http://")])
            .args(["--hostname", &self.name])
            .args(["--ingress-bind", "127.0.0.1", "--poll", "1h"])
            // RECONCILER_BENCH_LOG: the managers' log filter, to see what they do.
            .env(
                "RUST_LOG",
                std::env::var("RECONCILER_BENCH_LOG").unwrap_or_else(|_| "reconciler=warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting a manager")?;
        self.child = Some(child);
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    async fn wait_joined(&self) -> anyhow::Result<()> {
        let start = Instant::now();
        while !NodeFiles::new(&self.dir).exists() {
            if start.elapsed() > WAIT {
                bail!(
                    "{} did not start; its log: {}",
                    self.name,
                    self.dir.with_extension("log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }
}

impl Drop for Managers {
    fn drop(&mut self) {
        for m in &mut self.managers {
            m.kill();
        }
    }
}

impl Managers {
    async fn start(dir: &Path) -> anyhow::Result<Managers> {
        let repo = dir.join("repo");
        let git = git2::Repository::init(&repo)?;
        std::fs::write(repo.join(".keep"), "")?;
        commit_all(&git, "empty")?;
        let mut managers = Vec::new();
        for i in 0..3 {
            let ip = format!("127.0.0.{}", 21 + i);
            managers.push(Manager {
                name: format!("bench-{}", i + 1),
                dir: dir.join(format!("m{}", i + 1)),
                addr: format!("{ip}:{}", free_port(&ip)?),
                api: format!("http://{ip}:{}", free_port(&ip)?),
                child: None,
            });
        }
        let listen = managers[0].addr.clone();
        managers[0].spawn(&["init", "--listen-addr", &listen], &repo)?;
        managers[0].wait_joined().await?;
        let files = NodeFiles::new(&managers[0].dir);
        let crate::cluster::files::KeysOnDisk::Open(keys) = files.keys()? else {
            anyhow::bail!("the bench's managers are not autolocked");
        };
        let tls = Credentials::new(files.credentials(&keys)?)?;
        let mut this = Managers {
            repo,
            tls,
            managers,
            http: reqwest::Client::new(),
        };
        let token = {
            let mut control = pb::control_client::ControlClient::new(rpc::dial(
                &this.managers[0].addr,
                &this.tls,
            )?);
            control
                .join_token(pb::JoinTokenRequest {
                    role: "manager".into(),
                    rotate: false,
                })
                .await?
                .into_inner()
                .token
        };
        let first = this.managers[0].addr.clone();
        for i in 1..3 {
            let m = &mut this.managers[i];
            let listen = m.addr.clone();
            m.spawn(
                &["join", "--token", &token, &first, "--listen-addr", &listen],
                &this.repo,
            )?;
            m.wait_joined().await?;
        }
        this.all_reachable().await?;
        Ok(this)
    }

    async fn nodes(&self, addr: &str) -> anyhow::Result<NodeList> {
        let mut control = pb::control_client::ControlClient::new(rpc::dial(addr, &self.tls)?);
        let answer = tokio::time::timeout(Duration::from_secs(5), control.list_nodes(pb::Empty {}))
            .await??
            .into_inner();
        Ok(serde_json::from_slice(&answer.json)?)
    }

    /// Until every manager is a Reachable or Leader voter, as the first live one sees it.
    async fn all_reachable(&self) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            for m in self.managers.iter().filter(|m| m.child.is_some()) {
                if let Ok(list) = self.nodes(&m.addr).await {
                    let up = list
                        .nodes
                        .iter()
                        .filter(|n| n.manager_status == "Leader" || n.manager_status == "Reachable")
                        .count();
                    if up == 3 && list.nodes.iter().any(|n| n.manager_status == "Leader") {
                        return Ok(());
                    }
                }
            }
            if start.elapsed() > WAIT {
                bail!("the three managers did not all come up");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Until every manager has applied the same entries: the next failover starts from a
    /// healthy cluster, not from a manager still catching up after its restart (whose
    /// shorter log would cost an election round).
    async fn caught_up(&self) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            let mut applied = std::collections::BTreeSet::new();
            for m in &self.managers {
                let mut control =
                    pb::control_client::ControlClient::new(rpc::dial(&m.addr, &self.tls)?);
                let health =
                    tokio::time::timeout(Duration::from_secs(5), control.health(pb::Empty {}))
                        .await
                        .ok()
                        .and_then(|r| r.ok())
                        .and_then(|r| {
                            serde_json::from_slice::<crate::cluster::services::Health>(
                                &r.into_inner().json,
                            )
                            .ok()
                        });
                applied.insert(health.and_then(|h| h.applied));
            }
            if applied.len() == 1 && !applied.contains(&None) {
                return Ok(());
            }
            if start.elapsed() > WAIT {
                bail!("the three managers did not catch up with each other: {applied:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The leader's index, once every live manager names the same one.
    async fn leader_index(&self) -> anyhow::Result<usize> {
        let start = Instant::now();
        loop {
            let mut named = Vec::new();
            for m in self.managers.iter().filter(|m| m.child.is_some()) {
                let leader = match self.nodes(&m.addr).await {
                    Ok(list) => list
                        .nodes
                        .into_iter()
                        .find(|n| n.manager_status == "Leader")
                        .map(|n| n.addr),
                    Err(_) => None,
                };
                named.push(leader);
            }
            if let Some(Some(addr)) = named.first() {
                if named.iter().all(|n| n.as_ref() == Some(addr)) {
                    if let Some(i) = self
                        .managers
                        .iter()
                        .position(|m| &m.addr == addr && m.child.is_some())
                    {
                        return Ok(i);
                    }
                }
            }
            if start.elapsed() > WAIT {
                bail!("the managers do not agree on a leader");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn leader(&self) -> anyhow::Result<String> {
        Ok(self.managers[self.leader_index().await?].addr.clone())
    }

    /// A client of its own connection that commits `batch` commands per call.
    fn proposer(&self, addr: &str, batch: usize, i: usize) -> anyhow::Result<Caller> {
        let control = pb::control_client::ControlClient::new(rpc::dial(addr, &self.tls)?);
        let body = serde_json::to_vec(&Proposal::Commands(
            (0..batch)
                .map(|_| Command::UpsertNode {
                    node: bench_node(&format!("bench-client-{i}")),
                })
                .collect(),
        ))?;
        Ok(Box::new(move || {
            let (mut control, json) = (control.clone(), body.clone());
            Box::pin(async move {
                control.propose(pb::Json { json }).await?;
                Ok(batch)
            })
        }))
    }

    /// Kill the leader, time the first write a survivor takes, bring the killed one back.
    async fn failover(&mut self) -> anyhow::Result<Duration> {
        let leader = self.leader_index().await?;
        let survivors: Vec<String> = (0..3)
            .filter(|i| *i != leader)
            .map(|i| self.managers[i].addr.clone())
            .collect();
        let body = serde_json::to_vec(&Proposal::Commands(vec![Command::UpsertNode {
            node: bench_node("bench-failover"),
        }]))?;
        let clients: Vec<_> = survivors
            .iter()
            .map(|a| rpc::dial(a, &self.tls).map(pb::control_client::ControlClient::new))
            .collect::<Result<_, _>>()?;
        self.managers[leader].kill();
        let killed = Instant::now();
        let took = 'found: loop {
            for c in &clients {
                let mut c = c.clone();
                let call = c.propose(pb::Json { json: body.clone() });
                if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(200), call).await {
                    break 'found killed.elapsed();
                }
            }
            if killed.elapsed() > WAIT {
                bail!("no survivor took a write within {WAIT:?}");
            }
        };
        let repo = self.repo.clone();
        self.managers[leader].spawn(&["up"], &repo)?;
        self.all_reachable().await?;
        self.caught_up().await?;
        Ok(took)
    }

    /// Commit at the leader, looking for it again while leadership settles.
    async fn propose(&self, proposal: &Proposal) -> anyhow::Result<()> {
        let json = serde_json::to_vec(proposal)?;
        let mut last = None;
        for _ in 0..20 {
            let leader = self.leader().await?;
            let mut control =
                pb::control_client::ControlClient::new(rpc::dial(&leader, &self.tls)?);
            match control.propose(pb::Json { json: json.clone() }).await {
                Ok(_) => return Ok(()),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!(
            "no leader took the write: {}",
            last.map(|e| e.message().to_string()).unwrap_or_default()
        )
    }

    fn rss(&self) -> Vec<u64> {
        self.managers
            .iter()
            .filter_map(|m| m.child.as_ref())
            .filter_map(|c| rss_bytes(c.id()).ok())
            .collect()
    }

    /// Pause every node (nothing is placed, so no container starts), commit `services`
    /// services of 10 replicas, and wait until the store holds their tasks; returns how many.
    async fn fill(&mut self, services: usize) -> anyhow::Result<usize> {
        let leader = self.leader().await?;
        let list = self.nodes(&leader).await?;
        let paused: Vec<Command> = list
            .nodes
            .iter()
            .filter(|n| n.role == "manager")
            .map(|n| Command::UpsertNode {
                node: Node {
                    role: NodeRole::Manager,
                    availability: Availability::Pause,
                    ready: true,
                    ..bench_node(&n.id)
                },
            })
            .collect();
        self.propose(&Proposal::Commands(paused)).await?;
        let git = git2::Repository::open(&self.repo)?;
        let per_stack = 10;
        for s in 0..services.div_ceil(per_stack) {
            let mut file = String::from("services:\n");
            for i in 0..per_stack.min(services - s * per_stack) {
                file.push_str(&format!(
                    "  svc{i}:\n    image: {}\n    environment:\n      N: \"{s}-{i}\"\n    deploy:\n      replicas: 10\n",
                    crate::testing::images::busybox(1)
                ));
            }
            let d = self.repo.join(format!("s{s:03}"));
            std::fs::create_dir_all(&d)?;
            std::fs::write(d.join("compose.yml"), file)?;
        }
        let _ = std::fs::remove_file(self.repo.join(".keep"));
        commit_all(&git, "many services")?;
        let want = services * 10;
        let api = self.managers[self.leader_index().await?].api.clone();
        let start = Instant::now();
        loop {
            let tasks: Vec<serde_json::Value> = self
                .http
                .get(format!("{api}/api/v1/tasks"))
                .send()
                .await?
                .json()
                .await
                .unwrap_or_default();
            if tasks.len() >= want {
                // A moment for the followers to apply the last entries.
                tokio::time::sleep(Duration::from_secs(2)).await;
                return Ok(tasks.len());
            }
            if start.elapsed() > Duration::from_secs(300) {
                bail!(
                    "the store holds {} of {want} tasks after 300 s (the managers' logs: {})",
                    tasks.len(),
                    self.managers[0].dir.with_extension("log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

struct Etcd {
    members: Vec<(String, PathBuf, Vec<String>, Option<Child>)>,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for (_, _, _, child) in &mut self.members {
            if let Some(mut c) = child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

impl Etcd {
    async fn start(dir: &Path) -> anyhow::Result<Etcd> {
        if Process::new("etcd").arg("--version").output().is_err() {
            bail!("etcd is not installed (Debian: apt-get install etcd-server etcd-client), or pass --no-etcd");
        }
        let mut peers = Vec::new();
        let mut clients = Vec::new();
        for i in 0..3 {
            let ip = format!("127.0.0.{}", 31 + i);
            peers.push(format!("e{}=http://{ip}:{}", i + 1, free_port(&ip)?));
            clients.push(format!("{ip}:{}", free_port(&ip)?));
        }
        let cluster = peers.join(",");
        let mut members = Vec::new();
        for i in 0..3 {
            let peer = peers[i]
                .split_once('=')
                .map(|(_, u)| u.to_string())
                .unwrap_or_default();
            let client = format!("http://{}", clients[i]);
            let data = dir.join(format!("etcd{}", i + 1));
            let args: Vec<String> = [
                "--name",
                &format!("e{}", i + 1),
                "--data-dir",
                &data.display().to_string(),
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &cluster,
                "--initial-cluster-token",
                "bench",
                "--initial-cluster-state",
                "new",
                "--log-level",
                "error",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            members.push((clients[i].clone(), data, args, None));
        }
        let mut this = Etcd { members };
        for i in 0..3 {
            this.spawn(i)?;
        }
        this.wait_healthy().await?;
        Ok(this)
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let (_, data, args, child) = &mut self.members[i];
        let log = std::fs::File::create(data.with_extension("log"))?;
        *child = Some(
            Process::new("etcd")
                .args(args.iter())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .context("starting etcd")?,
        );
        Ok(())
    }

    /// The leader's index, from `etcdctl endpoint status` of the live members.
    fn leader(&self) -> anyhow::Result<usize> {
        let live: Vec<&str> = self
            .members
            .iter()
            .filter(|m| m.3.is_some())
            .map(|m| m.0.as_str())
            .collect();
        let out = Process::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args([
                "endpoint",
                "status",
                "-w",
                "json",
                "--endpoints",
                &live.join(","),
            ])
            .output()
            .context("running etcdctl (Debian: etcd-client)")?;
        let status: Vec<serde_json::Value> =
            serde_json::from_slice(&out.stdout).unwrap_or_default();
        for s in &status {
            let me = &s["Status"]["header"]["member_id"];
            if !me.is_null() && *me == s["Status"]["leader"] {
                let endpoint = s["Endpoint"].as_str().unwrap_or_default();
                if let Some(i) = self.members.iter().position(|m| endpoint.ends_with(&m.0)) {
                    return Ok(i);
                }
            }
        }
        bail!("no etcd leader yet")
    }

    async fn wait_healthy(&self) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            if self.leader().is_ok() {
                let all = self.members.iter().filter(|m| m.3.is_some()).count();
                let mut ok = 0;
                for m in &self.members {
                    if m.3.is_some() && self.put_once(&m.0, Duration::from_secs(1)).await {
                        ok += 1;
                    }
                }
                if ok == all {
                    return Ok(());
                }
            }
            if start.elapsed() > WAIT {
                bail!("etcd did not come up");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn put_once(&self, addr: &str, timeout: Duration) -> bool {
        let Ok(endpoint) = tonic::transport::Endpoint::from_shared(format!("http://{addr}")) else {
            return false;
        };
        let call = async {
            let mut c = etcd::kv_client::KvClient::new(endpoint.connect().await?);
            c.put(etcd::PutRequest {
                key: b"bench-probe".to_vec(),
                value: b"1".to_vec(),
            })
            .await?;
            anyhow::Ok(())
        };
        matches!(tokio::time::timeout(timeout, call).await, Ok(Ok(())))
    }

    fn putter(&self, leader: usize, i: usize) -> anyhow::Result<Caller> {
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{}", self.members[leader].0))?
                .connect_lazy();
        let client = etcd::kv_client::KvClient::new(channel);
        let key = format!("bench-client-{i}").into_bytes();
        let value = Arc::new(serde_json::to_vec(&bench_node(&format!(
            "bench-client-{i}"
        )))?);
        Ok(Box::new(move || {
            let (mut client, key, value) = (client.clone(), key.clone(), value.clone());
            Box::pin(async move {
                client
                    .put(etcd::PutRequest {
                        key,
                        value: value.to_vec(),
                    })
                    .await?;
                Ok(1)
            })
        }))
    }

    async fn failover(&mut self) -> anyhow::Result<Duration> {
        let leader = self.leader()?;
        let survivors: Vec<String> = (0..3)
            .filter(|i| *i != leader)
            .map(|i| self.members[i].0.clone())
            .collect();
        let clients: Vec<_> = survivors
            .iter()
            .map(|a| {
                tonic::transport::Endpoint::from_shared(format!("http://{a}"))
                    .map(|e| etcd::kv_client::KvClient::new(e.connect_lazy()))
            })
            .collect::<Result<_, _>>()?;
        if let Some(mut c) = self.members[leader].3.take() {
            c.kill()?;
            c.wait()?;
        }
        let killed = Instant::now();
        let took = 'found: loop {
            for c in &clients {
                let mut c = c.clone();
                let call = c.put(etcd::PutRequest {
                    key: b"bench-failover".to_vec(),
                    value: b"1".to_vec(),
                });
                if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(200), call).await {
                    break 'found killed.elapsed();
                }
            }
            if killed.elapsed() > WAIT {
                bail!("no etcd survivor took a write within {WAIT:?}");
            }
        };
        // Back with its data dir: the same flags, which etcd ignores for an existing member.
        self.spawn(leader)?;
        self.wait_healthy().await?;
        Ok(took)
    }
}
