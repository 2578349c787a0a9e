//! Starting a manager: `init` makes a new cluster, `join` enters one with a token, and a data
//! dir that belongs to a cluster already is started again from its files. All three end the
//! same way: Raft and the gRPC listener running, a [`ClusterNode`] to commit through.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context as _};
use openraft::BasicNode;
use tokio_util::sync::CancellationToken;

use super::autolock;
use super::ca::{self, NodeIdentity, Role, RootCa};
use super::config::{ClusterChange, ClusterConfig};
use super::files::{NodeFiles, NodeInfo, NodeKeys};
use super::node::{raft_id, ClusterNode};
use super::raft::network::{Network, Service as RaftService};
use super::raft::{LogStore, Proposal, StateMachine};
use super::rpc::{self, pb};
use super::seal::{DataKey, UnlockKey};
use super::services::{CaService, ControlService, LEADER_ADDR};
use super::tls::{self, ClientAuth, Credentials};
use super::token::JoinToken;

/// The settings of the cluster listener and of Raft.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Where the cluster listener binds (`--listen-addr`); `None`: the saved one, or
    /// loopback on a port the system picks (the single-node default).
    pub listen_addr: Option<String>,
    /// What other nodes dial (`--advertise-addr`); default: the listen address.
    pub advertise_addr: Option<String>,
    pub cert_expiry: Duration,
    /// Entries between snapshots (`--snapshot-interval`).
    pub snapshot_interval: u64,
    /// A new cluster seals its managers' keys with an unlock key (`init --autolock`).
    pub autolock: bool,
    /// A new cluster's age identity and git credentials (`init`'s `--identity`,
    /// `--git-token`, `--ssh-key`).
    pub secrets: super::config::ClusterSecrets,
    /// A new cluster's heartbeat period (`init --dispatcher-heartbeat`).
    pub dispatcher_heartbeat: Option<Duration>,
    /// The name this node gives when it joins (`--hostname`; default: the machine's).
    pub hostname: Option<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            listen_addr: None,
            advertise_addr: None,
            cert_expiry: ca::DEFAULT_CERT_EXPIRY,
            snapshot_interval: 10_000,
            autolock: false,
            secrets: Default::default(),
            dispatcher_heartbeat: None,
            hostname: None,
        }
    }
}

/// How this node comes to be in a cluster.
#[derive(Debug, Clone)]
pub enum Start {
    /// A new cluster with this node as its first manager.
    Init,
    /// Enter the cluster of the manager at `manager` with `token`.
    Join { token: String, manager: String },
    /// The data dir belongs to a cluster already.
    Resume,
    /// The data dir's manager lost its quorum for good: make a new single-manager cluster
    /// of it, keeping the state, the CA and the tokens (`init --force-new-cluster`).
    ForceNewCluster,
}

/// Start this node's part in the cluster. The listener and Raft stop with `shutdown`.
pub async fn start(
    files: NodeFiles,
    how: Start,
    options: &ClusterOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<Arc<ClusterNode>> {
    std::fs::create_dir_all(files.dir())
        .with_context(|| format!("creating the data directory {}", files.dir().display()))?;
    match how {
        Start::Resume => resume(files, options, shutdown).await,
        Start::ForceNewCluster if !files.exists() => bail!(
            "{} holds no cluster to recover (no node.json): --force-new-cluster starts a manager of a cluster that lost its quorum, from its data dir",
            files.dir().display()
        ),
        Start::ForceNewCluster => force_new_cluster(files, options, shutdown).await,
        Start::Init | Start::Join { .. } if files.exists() => {
            let info = files.load()?;
            bail!(
                "{} belongs to cluster {} already (node {}, {}); start it with `reconciler up --data-dir {}`, or give another --data-dir",
                files.dir().display(),
                info.cluster_id,
                info.node_id,
                info.role.word(),
                files.dir().display()
            )
        }
        Start::Init => init(files, options, shutdown).await,
        Start::Join { token, manager } => join(files, &token, &manager, options, shutdown).await,
    }
}

/// Bind the listener and work out the address to advertise.
async fn listen(
    listen_addr: &str,
    advertise: Option<&str>,
) -> anyhow::Result<(tokio::net::TcpListener, String)> {
    let listener = tokio::net::TcpListener::bind(listen_addr)
        .await
        .with_context(|| format!("binding the cluster listener on {listen_addr}"))?;
    let bound = listener.local_addr()?;
    let advertise = match advertise {
        Some(a) if a.contains(':') => a.to_string(),
        // An address without a port advertises the port bound.
        Some(a) => format!("{a}:{}", bound.port()),
        None if bound.ip().is_unspecified() => bail!(
            "the cluster listener is on {bound}, every address of this machine: say which one other nodes reach it on with --advertise-addr"
        ),
        None => bound.to_string(),
    };
    Ok((listener, advertise))
}

/// A new random ID of `len` characters from `[0-9a-z]`, as Swarm's IDs look.
pub fn random_id(len: usize) -> String {
    use ring::rand::SecureRandom as _;
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut bytes = vec![0u8; len];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random source works");
    // 252 = 7 * 36: a byte below it maps without bias; the rare one above is drawn again.
    bytes
        .iter()
        .map(|b| {
            let mut b = *b;
            while b >= 252 {
                let mut one = [0u8; 1];
                ring::rand::SystemRandom::new()
                    .fill(&mut one)
                    .expect("the system's random source works");
                b = one[0];
            }
            ALPHABET[(b % 36) as usize] as char
        })
        .collect()
}

async fn init(
    files: NodeFiles,
    options: &ClusterOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<Arc<ClusterNode>> {
    let listen_addr = options
        .listen_addr
        .clone()
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let (listener, advertise) = listen(&listen_addr, options.advertise_addr.as_deref()).await?;
    let cluster_id = random_id(25);
    // A data dir of a single node from before the cluster keeps its node ID, so that the
    // containers it labelled are still its own.
    let node_id = legacy_node_id(&files).unwrap_or_else(|| random_id(12));
    let now = SystemTime::now();
    let root = RootCa::generate(&cluster_id, now)?;
    let (key, csr) = ca::new_key_and_request()?;
    let identity = NodeIdentity {
        node_id: node_id.clone(),
        role: Role::Manager,
        cluster_id: cluster_id.clone(),
    };
    let cert = root.sign(&csr, &identity, now, options.cert_expiry)?;
    let keys = NodeKeys {
        tls_key: zeroize::Zeroizing::new(key.to_string()),
        data_key: DataKey::generate()?,
    };
    // In the clear until the cluster's settings (and its unlock key) are committed.
    files.save_keys(&keys, None)?;
    files.save_certificates(root.cert_pem(), &cert)?;
    let config = ClusterConfig {
        id: cluster_id.clone(),
        root_cert_pem: root.cert_pem().to_string(),
        root_key_pem: root
            .key_pem()
            .context("a new root has its key")?
            .to_string(),
        worker_token: JoinToken::generate(root.digest())?.to_string(),
        manager_token: JoinToken::generate(root.digest())?.to_string(),
        cert_expiry: options.cert_expiry,
        removed: Default::default(),
        unlock_key: if options.autolock {
            Some(UnlockKey::generate()?.to_string())
        } else {
            None
        },
        secrets: options.secrets.clone(),
        dispatcher_heartbeat: options.dispatcher_heartbeat,
    };
    let info = NodeInfo {
        node_id,
        cluster_id,
        role: Role::Manager,
        listen_addr: listen_addr.clone(),
        advertise_addr: advertise.clone(),
        managers: vec![advertise.clone()],
    };
    let node = launch_alone(
        files.clone(),
        info.clone(),
        (keys, None),
        listener,
        options,
        shutdown,
    )
    .await?;
    let answers = node
        .propose(Proposal::Cluster(ClusterChange::Init(Box::new(config))))
        .await
        .context("committing the new cluster's settings")?;
    if let Some(Err(e)) = answers.0.into_iter().next() {
        bail!("committing the new cluster's settings: {e}");
    }
    node.save_keys(false)
        .context("sealing this manager's keys (autolock)")?;
    // Written last: a data dir with node.json is a cluster's, whole.
    files.save(&info)?;
    Ok(node)
}

fn legacy_node_id(files: &NodeFiles) -> Option<String> {
    let id = std::fs::read_to_string(files.dir().join("node-id")).ok()?;
    let id = id.trim();
    (!id.is_empty()).then(|| id.to_string())
}

async fn join(
    files: NodeFiles,
    token: &str,
    manager: &str,
    options: &ClusterOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<Arc<ClusterNode>> {
    let token: JoinToken = token
        .trim()
        .parse()
        .map_err(|e| anyhow::anyhow!("the join token is malformed: {e}"))?;
    // The root, fetched trusting nothing, then checked against the token's digest: a
    // server in the middle cannot pass its own.
    let mut ca_client = pb::ca_client::CaClient::new(rpc::dial_unverified(manager)?);
    let root_pem = ca_client
        .get_root_certificate(pb::Empty {})
        .await
        .map_err(|s| anyhow::anyhow!("cannot reach the manager at {manager}: {}", s.message()))?
        .into_inner()
        .pem;
    let root = RootCa::from_pem(&root_pem, None)
        .with_context(|| format!("the manager at {manager} sent no usable CA certificate"))?;
    if !token.trusts(root.cert_der()) {
        bail!(
            "the CA certificate of the manager at {manager} does not match the join token: the token is of another cluster, or someone between here and {manager} poses as it"
        );
    }
    let listen_addr = options
        .listen_addr
        .clone()
        .unwrap_or_else(|| "0.0.0.0:2377".into());
    let (listener, advertise) = listen(&listen_addr, options.advertise_addr.as_deref()).await?;
    let (key, csr) = ca::new_key_and_request()?;
    let mut ca_client = pb::ca_client::CaClient::new(rpc::dial_with_root(manager, &root_pem)?);
    let issued = ca_client
        .issue_node_certificate(pb::IssueRequest {
            csr_pem: csr,
            token: token.to_string(),
            hostname: options
                .hostname
                .clone()
                .unwrap_or_else(crate::manager::hostname),
            advertise_addr: advertise.clone(),
        })
        .await
        .map_err(|s| {
            anyhow::anyhow!(
                "the manager at {manager} refused to join this node: {}",
                s.message()
            )
        })?
        .into_inner();
    let role = Role::from_word(&issued.role)
        .with_context(|| format!("the manager answered an unknown role {:?}", issued.role))?;
    let keys = NodeKeys {
        tls_key: zeroize::Zeroizing::new(key.to_string()),
        data_key: DataKey::generate()?,
    };
    // In the clear until Raft brings the cluster's settings: sealed then if autolocked.
    files.save_keys(&keys, None)?;
    files.save_certificates(&root_pem, &issued.certificate_pem)?;
    let info = NodeInfo {
        node_id: issued.node_id,
        cluster_id: issued.cluster_id,
        role,
        listen_addr,
        advertise_addr: advertise.clone(),
        managers: vec![manager.to_string()],
    };
    let node = launch(
        files.clone(),
        info.clone(),
        (keys, None),
        listener,
        options,
        shutdown,
    )
    .await?;
    // A worker takes no part in Raft: it gets its work from the dispatcher.
    if role == Role::Manager {
        enter_raft(&node, manager).await?;
    }
    files.save(&info)?;
    Ok(node)
}

/// Ask the leader to take this manager into Raft (as a learner, then a voter); `manager` is
/// any manager, which names the leader if it is not.
pub async fn enter_raft(node: &ClusterNode, manager: &str) -> anyhow::Result<()> {
    let mut target = manager.to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let answer = node
            .control(&target)?
            .add_manager(pb::AddManagerRequest {
                advertise_addr: node.info.advertise_addr.clone(),
            })
            .await;
        match answer {
            Ok(_) => return Ok(()),
            Err(status) => {
                if let Some(leader) = status
                    .metadata()
                    .get(LEADER_ADDR)
                    .and_then(|v| v.to_str().ok())
                {
                    target = leader.to_string();
                } else if tokio::time::Instant::now() > deadline {
                    bail!(
                        "the cluster did not take this manager into Raft: {}",
                        status.message()
                    );
                } else {
                    tracing::debug!(error = %status.message(), "joining Raft; retrying");
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        }
    }
}

async fn resume(
    files: NodeFiles,
    options: &ClusterOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<Arc<ClusterNode>> {
    let mut info = files.load()?;
    let keys = autolock::open_keys(&files, &shutdown).await?;
    if let Some(l) = &options.listen_addr {
        info.listen_addr = l.clone();
    }
    let (listener, advertise) = listen(
        &info.listen_addr,
        options
            .advertise_addr
            .as_deref()
            .or(Some(info.advertise_addr.as_str())),
    )
    .await?;
    if advertise != info.advertise_addr {
        tracing::warn!(was = %info.advertise_addr, now = %advertise, "this manager's advertised address changed; the others still dial the old one");
    }
    launch(files, info, keys, listener, options, shutdown).await
}

async fn force_new_cluster(
    files: NodeFiles,
    options: &ClusterOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<Arc<ClusterNode>> {
    use openraft::storage::{RaftLogStorage as _, RaftStateMachine as _};
    use openraft::RaftLogReader as _;
    let info = files.load()?;
    anyhow::ensure!(
        info.role == Role::Manager,
        "only a manager's data dir holds the cluster's state; this one is a worker's"
    );
    let keys = autolock::open_keys(&files, &shutdown).await?;
    // Everything this manager has: its last snapshot, then every entry of its log after it.
    let restored = {
        let mut log = LogStore::open(&files.raft_log(), keys.0.data_key.clone())?;
        let mut sm = StateMachine::open(&files.raft_state(), keys.0.data_key.clone())?;
        let from = sm.last_applied().map(|i| i + 1).unwrap_or(0);
        let last = log
            .get_log_state()
            .await
            .map_err(|e| anyhow::anyhow!("reading the Raft log: {e}"))?
            .last_log_id
            .map(|l| l.index);
        if let Some(last) = last.filter(|l| *l >= from) {
            let entries = log
                .try_get_log_entries(from..=last)
                .await
                .map_err(|e| anyhow::anyhow!("reading the Raft log: {e}"))?;
            sm.apply(entries)
                .await
                .map_err(|e| anyhow::anyhow!("replaying the Raft log: {e}"))?;
        }
        let mut restored = sm.restored();
        // The other nodes are gone as far as this cluster knows. The other managers hold the
        // old log: were they to come back, their Raft messages must not mix with the new
        // one's, so their certificates are refused from now on (they join again with a fresh
        // data dir, as in Swarm).
        let mut others = Vec::new();
        for (id, node) in restored.state.nodes.iter_mut() {
            if *id != info.node_id {
                node.ready = false;
                if node.role == crate::store::NodeRole::Manager {
                    others.push(id.clone());
                }
            }
        }
        if let Some(c) = restored.cluster.as_mut() {
            c.removed.extend(others);
        }
        restored
    };
    // The old databases stay beside the new ones, renamed, in case they are wanted.
    for path in [files.raft_log(), files.raft_state()] {
        let mut old = path.clone().into_os_string();
        old.push(".before-force-new-cluster");
        std::fs::rename(&path, &old).with_context(|| format!("moving {} aside", path.display()))?;
    }
    let listen_addr = options
        .listen_addr
        .clone()
        .unwrap_or_else(|| info.listen_addr.clone());
    let (listener, advertise) = listen(
        &listen_addr,
        options
            .advertise_addr
            .as_deref()
            .or(Some(info.advertise_addr.as_str())),
    )
    .await?;
    let info = NodeInfo {
        listen_addr,
        advertise_addr: advertise.clone(),
        managers: vec![advertise.clone()],
        ..info
    };
    let node = launch_alone(
        files.clone(),
        info.clone(),
        keys,
        listener,
        options,
        shutdown,
    )
    .await?;
    node.propose(Proposal::Restore(Box::new(restored)))
        .await
        .context("committing the state carried over")?;
    files.save(&info)?;
    tracing::warn!(node = %info.node_id, "forced a new cluster of this manager alone, with the old cluster's state; add managers again with `reconciler join`");
    Ok(node)
}

/// A cluster of this manager alone: Raft's first membership is this node.
async fn launch_alone(
    files: NodeFiles,
    info: NodeInfo,
    keys: (NodeKeys, Option<UnlockKey>),
    listener: tokio::net::TcpListener,
    options: &ClusterOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<Arc<ClusterNode>> {
    let advertise = info.advertise_addr.clone();
    let node = launch(files, info, keys, listener, options, shutdown).await?;
    node.raft
        .initialize(
            [(node.raft_id, BasicNode::new(&advertise))]
                .into_iter()
                .collect::<std::collections::BTreeMap<_, _>>(),
        )
        .await
        .context("starting Raft")?;
    Ok(node)
}

/// Raft, the gRPC listener and the control socket, running until `shutdown`. `keys` are the
/// node's open keys, with the unlock key that opened them if they were sealed.
async fn launch(
    files: NodeFiles,
    info: NodeInfo,
    keys: (NodeKeys, Option<UnlockKey>),
    listener: tokio::net::TcpListener,
    options: &ClusterOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<Arc<ClusterNode>> {
    let (keys, unlocked_with) = keys;
    let tls = files.credentials(&keys)?;
    let log = LogStore::open(&files.raft_log(), keys.data_key.clone())
        .with_context(|| format!("opening {}", files.raft_log().display()))?;
    let sm = StateMachine::open(&files.raft_state(), keys.data_key.clone())
        .with_context(|| format!("opening {}", files.raft_state().display()))?;
    let config = openraft::Config {
        cluster_name: info.cluster_id.clone(),
        // openraft gives each AppendEntries one heartbeat interval to be answered. Entries
        // stay small (a big proposal goes in pieces of `PART_SIZE`) and one call carries at
        // most `BATCH_BYTES` of them (the network answers a partial success for the rest),
        // so the interval can be short. Followers stand for election once the leader's lease
        // (election_timeout_max) and their own timeout have passed since its last word:
        // 0.6 to 0.9 s here, where Swarm's default is about 10 s. openraft draws each node's
        // timeout once and checks it every 1.5 heartbeats: a range several of those wide
        // keeps two followers from standing at the same moment, election after election.
        heartbeat_interval: 40,
        election_timeout_min: 150,
        election_timeout_max: 450,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(options.snapshot_interval.max(1)),
        max_in_snapshot_log_to_keep: 100,
        max_payload_entries: 64,
        // A snapshot travels in chunks, each with its own deadline.
        snapshot_max_chunk_size: 1 << 20,
        install_snapshot_timeout: 1000,
        ..Default::default()
    };
    let creds = Credentials::new(tls).context("this node's certificates")?;
    let raft = openraft::Raft::new(
        raft_id(&info.node_id),
        Arc::new(config.validate().context("Raft settings")?),
        Network::new(creds.clone()),
        log,
        sm.clone(),
    )
    .await
    .context("starting Raft")?;
    if info.role == Role::Worker {
        // A demoted manager started again: no elections until it is promoted.
        raft.runtime_config().elect(false);
    }
    let node = Arc::new(ClusterNode::new(
        info,
        raft,
        sm,
        creds.clone(),
        files.clone(),
        (keys.data_key, unlocked_with),
    ));
    let tls_config = tls::server_config(&creds, ClientAuth::Optional)
        .context("the cluster listener's TLS settings")?;
    let server = tonic::transport::Server::builder()
        .add_service(RaftService::new(
            node.raft.clone(),
            node.cluster_id(),
            Some(node.sm.clone()),
        ))
        .add_service(CaService::new(node.clone()))
        .add_service(ControlService::new(node.clone()))
        .add_service(crate::dispatcher::service::DispatcherService::new(
            node.clone(),
        ));
    let (raft, stop) = (node.raft.clone(), shutdown.clone());
    tokio::spawn(async move {
        let incoming = tls::incoming(listener, tls_config);
        if let Err(e) = server
            .serve_with_incoming_shutdown(incoming, stop.cancelled())
            .await
        {
            tracing::error!(error = %e, "the cluster listener failed");
        }
        let _ = raft.shutdown().await;
    });
    // The command line on this machine asks the node through its socket, as the node.
    let local = tonic::transport::Server::builder()
        .add_service(ControlService::new(node.clone()))
        .add_service(autolock::LockService::running());
    autolock::serve_socket(&files, local, shutdown.clone()).await?;
    tokio::spawn(super::renew::run(node.clone(), shutdown.clone()));
    tokio::spawn(autolock::keep_sealed(node.clone(), shutdown.clone()));
    tracing::info!(node = %node.node_id(), cluster = %node.cluster_id(), addr = %node.info.advertise_addr, "cluster listener up");
    Ok(node)
}
