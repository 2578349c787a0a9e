//! A cluster of real `reconciler` processes on one machine: each manager with its own data
//! dir, its own 127.0.0.x address (cluster listener, API and published ports), all on the one
//! Docker Engine. Killed with SIGKILL when the test says so, and always when dropped; the
//! containers of the test's stacks are removed by label.

use std::path::PathBuf;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use reconciler::api::views::StatusView;

use super::up::free_port;
use super::GitRepo;

pub struct Manager {
    pub name: String,
    /// The cluster listener, host:port.
    pub addr: String,
    pub api: String,
    pub ip: String,
    pub data: tempfile::TempDir,
    child: Option<Child>,
    repo: PathBuf,
    /// The network namespace the node runs in (its processes and its CLI calls), if any.
    pub netns: Option<String>,
    /// The repository as the node is given it (default: the test repo's path).
    pub repo_arg: Option<String>,
    /// More flags for init, join and up.
    pub extra: Vec<String>,
    pub poll: String,
}

impl Manager {
    /// The node's data dir.
    pub fn dir(&self) -> String {
        self.data.path().join("node").display().to_string()
    }

    fn spawn(&mut self, command: &[String]) {
        let mut args: Vec<String> = command.to_vec();
        args.extend([
            "--repo".into(),
            self.repo_arg
                .clone()
                .unwrap_or_else(|| self.repo.display().to_string()),
            "--data-dir".into(),
            self.dir(),
            "--listen".into(),
            self.api.trim_start_matches("http://").to_string(),
            "--hostname".into(),
            self.name.clone(),
            "--ingress-bind".into(),
            self.ip.clone(),
            "--poll".into(),
            self.poll.clone(),
        ]);
        args.extend(self.extra.iter().cloned());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data.path().join("node.log"))
            .unwrap();
        let child = self
            .command()
            .args(&args)
            .env("RUST_LOG", "reconciler=debug")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start reconciler");
        self.child = Some(child);
    }

    /// The binary, run in the node's network namespace if it has one.
    fn command(&self) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_reconciler")]);
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_reconciler")),
        }
    }

    /// `status --json` asked from inside the node's own namespace (reachable when the test
    /// has cut the namespace off).
    pub fn status_inside(&self) -> Option<StatusView> {
        let out = self
            .command()
            .args(["status", "--json", "--server", &self.api])
            .env_remove("RUST_LOG")
            .output()
            .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Start this node again from its data dir.
    pub fn up(&mut self) {
        self.spawn(&["up".into()]);
    }

    /// Start this node with another command (its own flags added).
    pub fn run(&mut self, command: &[&str]) {
        let command: Vec<String> = command.iter().map(|s| s.to_string()).collect();
        self.spawn(&command);
    }

    /// SIGKILL: no goodbye to the others, containers left running.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.path().join("node.log")).unwrap_or_default()
    }

    /// Run the CLI against this node's data dir.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.command()
            .args(args)
            .args(["--data-dir", &self.dir()])
            .env_remove("RUST_LOG")
            .output()
            .expect("run reconciler")
    }

    /// Run the CLI against this node's data dir, with `input` on its stdin.
    pub fn cli_with_input(&self, args: &[&str], input: &str) -> Output {
        use std::io::Write as _;
        let mut child = self
            .command()
            .args(args)
            .args(["--data-dir", &self.dir()])
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run reconciler");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.as_bytes()).unwrap();
        drop(stdin);
        child.wait_with_output().unwrap()
    }

    pub async fn status(&self) -> Option<StatusView> {
        reqwest::Client::new()
            .get(format!("{}/api/v1/status", self.api))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()
    }

    pub fn node_id(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.data.path().join("node/node.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v["node_id"].as_str().map(str::to_string)
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        self.kill();
        if let Some(id) = self.node_id() {
            for root in ["/run/reconciler", "/dev/shm/reconciler"] {
                let _ = std::fs::remove_dir_all(std::path::Path::new(root).join(id.as_str()));
            }
            remove(&format!("label=org.reconciler.node={id}"));
        }
    }
}

fn remove(filter: &str) {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter", filter])
        .output()
        .unwrap();
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if !ids.is_empty() {
        let _ = Command::new("docker")
            .args(["rm", "-f"])
            .args(&ids)
            .output();
    }
}

pub struct Cluster {
    pub repo: GitRepo,
    /// The nodes: the managers first, then the workers `add_worker` joined.
    pub managers: Vec<Manager>,
    /// Stacks this test made (their networks are removed at the end).
    pub stacks: Vec<String>,
}

/// A distinct loopback address per manager, per test (tests run in parallel).
fn address(i: usize) -> String {
    let n = std::process::id() % 200 + 20;
    format!("127.0.{}.{}", n, 10 + i)
}

/// A manager not started yet, the `i`-th of its test.
pub fn manager(i: usize, repo: &GitRepo) -> Manager {
    let ip = address(i);
    Manager {
        name: format!("m{}", i + 1),
        addr: format!("{ip}:{}", free_port()),
        api: format!("http://{ip}:{}", free_port()),
        ip,
        data: tempfile::tempdir().unwrap(),
        child: None,
        repo: repo.path().to_path_buf(),
        netns: None,
        repo_arg: None,
        extra: Vec::new(),
        poll: "2s".into(),
    }
}

/// Network namespaces for a test, one per manager, each joined by a veth pair to one bridge
/// in the host's namespace (which has the address `.1`, so the test reaches every manager
/// whose link is up). Made by the test as root, removed when dropped.
pub struct Namespaces {
    pub bridge: String,
    pub prefix: String,
    names: Vec<String>,
    links: Vec<String>,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Namespaces {
    pub fn new(count: usize) -> Namespaces {
        let pid = std::process::id();
        let prefix = format!("10.199.{}", pid % 250);
        let bridge = format!("rcb{pid}");
        let mut ns = Namespaces {
            bridge: bridge.clone(),
            prefix: prefix.clone(),
            names: Vec::new(),
            links: Vec::new(),
        };
        ip(&["link", "add", &bridge, "type", "bridge"]);
        ip(&["addr", "add", &format!("{prefix}.1/24"), "dev", &bridge]);
        ip(&["link", "set", &bridge, "up"]);
        // The engine's FORWARD policy is DROP and bridged traffic passes through it
        // (br_netfilter): let this bridge's own traffic through, for as long as it exists.
        let out = Command::new("iptables")
            .args([
                "-I", "FORWARD", "-i", &bridge, "-o", &bridge, "-j", "ACCEPT",
            ])
            .output()
            .expect("run iptables");
        assert!(
            out.status.success(),
            "iptables: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for i in 0..count {
            let name = format!("rcn{pid}-{i}");
            let host_end = format!("rcv{pid}-{i}");
            ip(&["netns", "add", &name]);
            ns.names.push(name.clone());
            ip(&[
                "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &name,
            ]);
            ns.links.push(host_end.clone());
            ip(&["link", "set", &host_end, "master", &bridge]);
            ip(&["link", "set", &host_end, "up"]);
            let addr = format!("{prefix}.{}/24", 10 + i);
            ip(&["-n", &name, "addr", "add", &addr, "dev", "eth0"]);
            ip(&["-n", &name, "link", "set", "eth0", "up"]);
            ip(&["-n", &name, "link", "set", "lo", "up"]);
        }
        ns
    }

    pub fn name(&self, i: usize) -> &str {
        &self.names[i]
    }

    /// Cut manager `i` off (its link to the bridge down), or join it again.
    pub fn set_link(&self, i: usize, up: bool) {
        ip(&[
            "link",
            "set",
            &self.links[i],
            if up { "up" } else { "down" },
        ]);
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
        for link in &self.links {
            let _ = Command::new("ip").args(["link", "del", link]).output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
        let _ = Command::new("iptables")
            .args([
                "-D",
                "FORWARD",
                "-i",
                &self.bridge,
                "-o",
                &self.bridge,
                "-j",
                "ACCEPT",
            ])
            .output();
    }
}

impl Cluster {
    /// `init` on the first manager, then `join` with the manager token for the others; returns
    /// once all are in Raft.
    pub fn start(repo: GitRepo, managers: usize, stacks: &[&str]) -> Cluster {
        Cluster::start_with(repo, managers, stacks, &[])
    }

    /// As [`Cluster::start`], each manager (by its index) set up by `configure` first.
    pub fn start_configured(
        repo: GitRepo,
        managers: usize,
        configure: impl Fn(usize, &mut Manager),
    ) -> Cluster {
        let mut all: Vec<Manager> = (0..managers).map(|i| manager(i, &repo)).collect();
        for (i, m) in all.iter_mut().enumerate() {
            configure(i, m);
        }
        Cluster::launch(
            Cluster {
                managers: all,
                repo,
                stacks: Vec::new(),
            },
            &[],
        )
    }

    /// As [`Cluster::start`], each manager in its own network namespace of `net`.
    pub fn start_in(repo: GitRepo, net: &Namespaces, managers: usize) -> Cluster {
        Cluster::start_configured(repo, managers, |i, m| {
            let ip = format!("{}.{}", net.prefix, 10 + i);
            m.addr = format!("{ip}:2377");
            // Each namespace has a loopback of its own: the API stays on it (an API on
            // another address needs a token), reached from inside (`status_inside`).
            m.api = "http://127.0.0.1:8080".into();
            m.ip = ip;
            m.netns = Some(net.name(i).to_string());
        })
    }

    /// Wait (bounded) until `ok`; the failure names `what` and shows the logs.
    pub fn wait_until(&self, what: &str, ok: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ok() {
            assert!(Instant::now() < deadline, "{what}\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Is `commit` the live one on manager `i`, as its status says from inside?
    pub fn applied(&self, i: usize, commit: &str) -> bool {
        self.managers[i].status_inside().is_some_and(|s| {
            s.revision
                .applied
                .as_ref()
                .is_some_and(|a| a.commit == commit)
        })
    }

    /// As [`Cluster::start`], with more flags for `init`.
    pub fn start_with(
        repo: GitRepo,
        managers: usize,
        stacks: &[&str],
        init_flags: &[&str],
    ) -> Cluster {
        let cluster = Cluster {
            managers: (0..managers).map(|i| manager(i, &repo)).collect(),
            repo,
            stacks: stacks.iter().map(|s| s.to_string()).collect(),
        };
        Cluster::launch(cluster, init_flags)
    }

    fn launch(mut cluster: Cluster, init_flags: &[&str]) -> Cluster {
        let managers = cluster.managers.len();
        let first = &mut cluster.managers[0];
        let listen = first.addr.clone();
        let mut init: Vec<String> = vec!["init".into(), "--listen-addr".into(), listen];
        init.extend(init_flags.iter().map(|f| f.to_string()));
        first.spawn(&init);
        cluster.wait_for_node(0);
        let token = cluster.token("manager");
        let leader = cluster.managers[0].addr.clone();
        for i in 1..managers {
            let m = &mut cluster.managers[i];
            let listen = m.addr.clone();
            m.spawn(&[
                "join".into(),
                "--token".into(),
                token.clone(),
                leader.clone(),
                "--listen-addr".into(),
                listen,
            ]);
            cluster.wait_for_node(i);
        }
        cluster
    }

    /// Join a worker (named `w1`, `w2`...) with the worker token through the first manager;
    /// its index among the nodes once it is in the cluster.
    pub fn add_worker(&mut self) -> usize {
        let i = self.managers.len();
        let workers = self
            .managers
            .iter()
            .filter(|m| m.name.starts_with('w'))
            .count();
        let token = self.token("worker");
        let mut w = manager(i, &self.repo);
        w.name = format!("w{}", workers + 1);
        let (leader, listen) = (self.managers[0].addr.clone(), w.addr.clone());
        w.spawn(&[
            "join".into(),
            "--token".into(),
            token,
            leader,
            "--listen-addr".into(),
            listen,
        ]);
        self.managers.push(w);
        self.wait_for_node(i);
        i
    }

    /// Until the node wrote its node.json (it does once it is in the cluster).
    pub fn wait_for_node(&self, i: usize) {
        let m = &self.managers[i];
        let start = Instant::now();
        while m.node_id().is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{} never joined; log:\n{}",
                m.name,
                m.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn token(&self, role: &str) -> String {
        let out = self.managers[0].cli(&["join-token", role, "-q"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `node ls --json` as `i` answers it.
    pub fn nodes(&self, i: usize) -> Option<serde_json::Value> {
        let out = self.managers[i].cli(&["node", "ls", "--json"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// The index of the manager that `node ls` on the running ones agree leads, waiting for
    /// one to be elected.
    pub fn leader(&self, timeout: Duration) -> usize {
        let start = Instant::now();
        loop {
            for (i, m) in self.managers.iter().enumerate() {
                if !m.is_running() {
                    continue;
                }
                if let Some(v) = self.nodes(i) {
                    let leader = v["nodes"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|n| n["manager_status"] == "Leader")
                        .and_then(|n| n["hostname"].as_str().map(str::to_string));
                    if let Some(l) = leader {
                        if let Some(j) = self
                            .managers
                            .iter()
                            .position(|m| m.name == l && m.is_running())
                        {
                            return j;
                        }
                    }
                }
            }
            assert!(
                start.elapsed() < timeout,
                "no leader among the running managers after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn logs(&self) -> String {
        self.managers
            .iter()
            .map(|m| {
                let log = m.log();
                // The polls at debug level would hide what happened.
                let lines: Vec<&str> = log.lines().filter(|l| !l.contains("DEBUG")).collect();
                format!(
                    "--- {} ---\n{}",
                    m.name,
                    lines[lines.len().saturating_sub(40)..].join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.managers {
            m.kill();
        }
        for stack in &self.stacks {
            remove(&format!("label=com.docker.stack.namespace={stack}"));
            let out = Command::new("docker")
                .args([
                    "network",
                    "ls",
                    "-q",
                    "--filter",
                    &format!("label=com.docker.stack.namespace={stack}"),
                ])
                .output()
                .unwrap();
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("docker").args(["network", "rm", id]).output();
            }
        }
    }
}
