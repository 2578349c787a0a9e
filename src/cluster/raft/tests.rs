//! The log store and state machine against openraft's own storage test suite, then what the
//! cluster relies on beyond it: proposals applied as the single-node store applies them, and a
//! restart that starts from the snapshot.

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{Entry, EntryPayload, LogId, RaftSnapshotBuilder, StorageError};

use super::{Answers, LogStore, Proposal, StateMachine, TypeConfig};

fn key() -> crate::cluster::seal::DataKey {
    crate::cluster::seal::DataKey::from_bytes([7; 32])
}

/// Is `text` anywhere in the file at `path`, as it is on disk?
fn on_disk(path: &std::path::Path, text: &str) -> bool {
    let bytes = std::fs::read(path).unwrap();
    bytes.windows(text.len()).any(|w| w == text.as_bytes())
}

/// Each suite case gets fresh files in a directory of its own (kept alive with the stores).
struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().unwrap();
        let log = LogStore::open(&dir.path().join("raft-log.redb"), key()).unwrap();
        let sm = StateMachine::open(&dir.path().join("raft-state.redb"), key()).unwrap();
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).unwrap();
}

fn revision(commit: &str) -> crate::store::Command {
    revision_of(
        commit,
        "services:\n  app:\n    image: nginx:1\n    deploy:\n      replicas: 2\n",
    )
}

/// The revision `commit` of a repository whose one stack, `web`, is `text`.
fn revision_of(commit: &str, text: &str) -> crate::store::Command {
    let loaded = crate::spec::load_stack(
        "web",
        "compose.yml",
        text,
        &crate::spec::NoFiles,
        &crate::spec::Variables::default(),
    );
    let mut desired = crate::desired::DesiredState::default();
    desired.stacks.insert("web".into(), loaded.spec.unwrap());
    crate::store::Command::ApplyRevision {
        summary: String::new(),
        notify: None,
        trigger: None,
        commit: commit.into(),
        desired,
        prune: true,
        at: 1,
        blocked: Default::default(),
    }
}

fn entry(index: u64, commands: Vec<crate::store::Command>) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Proposal::Commands(commands)),
    }
}

#[tokio::test]
async fn a_proposal_applies_like_a_store_batch_and_a_restart_starts_from_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft-state.redb");
    let mut sm = StateMachine::open(&path, key()).unwrap();
    // One entry, three commands: the middle one refers to nothing and is refused, alone.
    let answers = sm
        .apply(vec![entry(
            1,
            vec![
                revision("c1"),
                crate::store::Command::SetTaskDesiredState {
                    id: "nope".into(),
                    state: crate::store::TaskState::Shutdown,
                },
                crate::store::Command::RollbackService {
                    service: "web_app".into(),
                    manual: true,
                    at: 2,
                },
            ],
        )])
        .await
        .unwrap();
    assert_eq!(answers.len(), 1);
    let Answers(a) = &answers[0];
    assert_eq!(a.len(), 3);
    assert!(a[0].is_ok(), "{a:?}");
    assert!(
        a[1].as_ref().unwrap_err().to_string().contains("nope"),
        "{a:?}"
    );
    // The revision created the service; it has no previous spec, so the rollback is refused too.
    assert!(a[2].is_err(), "{a:?}");
    assert!(sm.read(|s| s.services.contains_key("web_app")));
    let (last, _) = sm.applied_state().await.unwrap();
    assert_eq!(last.map(|l| l.index), Some(1));

    // A snapshot, then a restart: the state and the applied log id come back from disk.
    let snapshot = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    assert_eq!(snapshot.meta.last_log_id.map(|l| l.index), Some(1));
    drop(sm);
    // Sealed on disk: the service's image is nowhere in the file, and another key opens nothing.
    assert!(!on_disk(&path, "nginx:1"));
    let other = crate::cluster::seal::DataKey::from_bytes([8; 32]);
    let refused = StateMachine::open(&path, other).err().unwrap();
    assert!(format!("{refused:#}").contains("data key"), "{refused:#}");
    let mut again = StateMachine::open(&path, key()).unwrap();
    assert!(again.read(|s| s.services.contains_key("web_app")));
    let (last, _) = again.applied_state().await.unwrap();
    assert_eq!(last.map(|l| l.index), Some(1));
    let current = again.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta.snapshot_id, snapshot.meta.snapshot_id);
}

/// A revision of `services` services (its JSON grows about 1 KB a service).
fn big_revision(commit: &str, services: usize) -> crate::store::Command {
    let mut text = String::from("services:\n");
    for i in 0..services {
        text.push_str(&format!(
            "  app{i}:\n    image: nginx:1\n    environment:\n      PAD: \"{}\"\n    deploy:\n      replicas: 2\n",
            "x".repeat(200)
        ));
    }
    revision_of(commit, &text)
}

fn at(index: u64, payload: EntryPayload<TypeConfig>) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
        payload,
    }
}

#[tokio::test]
async fn a_proposal_too_big_for_one_entry_applies_whole_from_its_last_piece_even_across_a_snapshot()
{
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft-state.redb");
    let mut sm = StateMachine::open(&path, key()).unwrap();
    let parts = Proposal::Commands(vec![big_revision("c1", 400)])
        .into_parts(7)
        .unwrap();
    assert!(parts.len() >= 3, "{} parts", parts.len());
    for p in &parts {
        let Proposal::Part { text, .. } = p else {
            panic!("not a piece")
        };
        assert!(text.len() <= super::PART_SIZE);
    }
    let n = parts.len();
    let mut parts = parts.into_iter();
    // The first pieces apply nothing and answer nothing.
    let first: Vec<_> = (1..n as u64)
        .map(|i| at(i, EntryPayload::Normal(parts.next().unwrap())))
        .collect();
    let answers = sm.apply(first).await.unwrap();
    assert!(answers.iter().all(|a| a.0.is_empty()), "{answers:?}");
    assert!(sm.read(|s| s.services.is_empty()));
    // A snapshot and a restart between the pieces keep what came so far.
    sm.get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    drop(sm);
    let mut sm = StateMachine::open(&path, key()).unwrap();
    let answers = sm
        .apply(vec![at(
            n as u64,
            EntryPayload::Normal(parts.next().unwrap()),
        )])
        .await
        .unwrap();
    assert_eq!(answers, vec![Answers(vec![Ok(())])]);
    assert_eq!(sm.read(|s| s.services.len()), 400);

    // A new leader's first entry drops the pieces of a proposal left unfinished: its last
    // piece then applies nothing, and says so.
    let parts = Proposal::Commands(vec![big_revision("c2", 300)])
        .into_parts(8)
        .unwrap();
    let n2 = parts.len() as u64;
    let mut entries: Vec<_> = parts
        .into_iter()
        .enumerate()
        .map(|(i, p)| at(n as u64 + 1 + i as u64, EntryPayload::Normal(p)))
        .collect();
    let last = entries.pop().unwrap();
    sm.apply(entries).await.unwrap();
    sm.apply(vec![at(n as u64 + n2, EntryPayload::Blank)])
        .await
        .unwrap();
    let mut last = last;
    last.log_id.index = n as u64 + n2 + 1;
    let answers = sm.apply(vec![last]).await.unwrap();
    assert_eq!(
        answers,
        vec![Answers(vec![Err(crate::store::ApplyError::PartsLost)])]
    );
    assert_eq!(sm.read(|s| s.services.len()), 400);
}

#[tokio::test]
async fn appended_entries_and_the_vote_survive_reopening_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft-log.redb");
    {
        let mut log = LogStore::open(&path, key()).unwrap();
        let vote = openraft::Vote::new_committed(3, 1);
        log.save_vote(&vote).await.unwrap();
        // Through openraft's own helper, which waits for the flush callback.
        use openraft::storage::RaftLogStorageExt as _;
        log.blocking_append(vec![entry(1, vec![revision("c1")]), entry(2, vec![])])
            .await
            .unwrap();
    }
    // Sealed on disk: the revision's image is nowhere in the file.
    assert!(!on_disk(&path, "nginx:1"));
    let mut log = LogStore::open(&path, key()).unwrap();
    assert_eq!(
        log.read_vote().await.unwrap(),
        Some(openraft::Vote::new_committed(3, 1))
    );
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id.map(|l| l.index), Some(2));
    use openraft::RaftLogReader as _;
    let entries = log.try_get_log_entries(1..=2).await.unwrap();
    assert_eq!(entries.len(), 2);
    assert!(
        matches!(&entries[0].payload, EntryPayload::Normal(Proposal::Commands(c)) if c.len() == 1)
    );
}

mod over_the_network {
    //! Three managers in this process, each with its own data, certificate and gRPC listener
    //! on loopback, talking Raft over mutual TLS.

    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use openraft::BasicNode;
    use tokio::net::TcpListener;

    use super::super::network::{pb, Network, Service};
    use super::super::{Answers, LogStore, Proposal, StateMachine, TypeConfig};
    use super::{big_revision, revision};
    use crate::cluster::ca::{self, NodeIdentity, Role, RootCa, DEFAULT_CERT_EXPIRY};
    use crate::cluster::tls::{self as node_tls, ClientAuth, Credentials, TlsPem};

    const T: Duration = Duration::from_secs(20);

    struct Node {
        id: u64,
        raft: openraft::Raft<TypeConfig>,
        sm: StateMachine,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        _dir: tempfile::TempDir,
    }

    fn tls(ca: &RootCa, name: &str, role: Role) -> TlsPem {
        let (key, csr) = ca::new_key_and_request().unwrap();
        let identity = NodeIdentity {
            node_id: name.into(),
            role,
            cluster_id: ca.cluster_id().into(),
        };
        let cert = ca
            .sign(&csr, &identity, SystemTime::now(), DEFAULT_CERT_EXPIRY)
            .unwrap();
        TlsPem {
            root: ca.cert_pem().into(),
            cert,
            key: key.to_string(),
        }
    }

    async fn start(id: u64, ca: &RootCa, listener: TcpListener) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let log = LogStore::open(&dir.path().join("raft-log.redb"), super::key()).unwrap();
        let sm = StateMachine::open(&dir.path().join("raft-state.redb"), super::key()).unwrap();
        let tls = tls(ca, &format!("m{id}"), Role::Manager);
        let config = openraft::Config {
            heartbeat_interval: 100,
            election_timeout_min: 400,
            election_timeout_max: 800,
            ..Default::default()
        };
        let raft = openraft::Raft::new(
            id,
            Arc::new(config.validate().unwrap()),
            Network::new(Credentials::new(tls.clone()).unwrap()),
            log,
            sm.clone(),
        )
        .await
        .unwrap();
        let service = Service::new(raft.clone(), ca.cluster_id(), None);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let tls_config =
            node_tls::server_config(&Credentials::new(tls).unwrap(), ClientAuth::Optional).unwrap();
        let server = tonic::transport::Server::builder().add_service(service);
        tokio::spawn(async move {
            let incoming = node_tls::incoming(listener, tls_config);
            let _ = server
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await;
        });
        Node {
            id,
            raft,
            sm,
            stop: Some(stop),
            _dir: dir,
        }
    }

    async fn leader(nodes: &[&Node], not: Option<u64>) -> u64 {
        let deadline = tokio::time::Instant::now() + T;
        loop {
            for n in nodes {
                let m = n.raft.metrics().borrow().clone();
                if let Some(l) = m.current_leader {
                    if Some(l) != not && nodes.iter().any(|x| x.id == l) {
                        return l;
                    }
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no leader elected in {T:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn applied_everywhere(nodes: &[&Node], commit: &str) {
        let deadline = tokio::time::Instant::now() + T;
        for n in nodes {
            loop {
                let live =
                    n.sm.read(|s| s.revision.applied.as_ref().map(|a| a.commit.clone()));
                if live.as_deref() == Some(commit) {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "node {} never applied {commit} (it has {live:?})",
                    n.id
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn three_managers_replicate_proposals_and_elect_a_new_leader_when_one_dies() {
        let ca = RootCa::generate("cluster-a", SystemTime::now()).unwrap();
        let mut listeners = Vec::new();
        let mut members = BTreeMap::new();
        for id in 1..=3u64 {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            members.insert(id, BasicNode::new(l.local_addr().unwrap().to_string()));
            listeners.push(l);
        }
        let mut nodes = Vec::new();
        for (i, l) in listeners.into_iter().enumerate() {
            nodes.push(start(i as u64 + 1, &ca, l).await);
        }
        nodes[0].raft.initialize(members.clone()).await.unwrap();

        let all: Vec<&Node> = nodes.iter().collect();
        let first = leader(&all, None).await;
        let at = |id: u64| nodes.iter().find(|n| n.id == id).unwrap();
        let written = at(first)
            .raft
            .client_write(Proposal::Commands(vec![revision("c1")]))
            .await
            .unwrap();
        assert_eq!(written.data, Answers(vec![Ok(())]));
        applied_everywhere(&all, "c1").await;

        // A revision of megabytes as one entry is never answered within one heartbeat, and
        // replication stalls for good (tried: this very revision hangs); in pieces, each is.
        let parts = Proposal::Commands(vec![big_revision("big", 4000)])
            .into_parts(1)
            .unwrap();
        assert!(parts.len() > 20, "{} parts", parts.len());
        let mut answers = Answers::default();
        for p in parts {
            answers = tokio::time::timeout(T, at(first).raft.client_write(p))
                .await
                .expect("a piece committed in time")
                .unwrap()
                .data;
        }
        assert_eq!(answers, Answers(vec![Ok(())]));
        applied_everywhere(&all, "big").await;

        // The leader goes (its Raft and its listener); the other two elect one of themselves
        // and go on committing.
        let old = nodes.iter().position(|n| n.id == first).unwrap();
        let mut gone = nodes.remove(old);
        gone.raft.shutdown().await.unwrap();
        let _ = gone.stop.take().unwrap().send(());
        let survivors: Vec<&Node> = nodes.iter().collect();
        let second = leader(&survivors, Some(first)).await;
        assert_ne!(second, first);
        let written = survivors
            .iter()
            .find(|n| n.id == second)
            .unwrap()
            .raft
            .client_write(Proposal::Commands(vec![revision("c2")]))
            .await
            .unwrap();
        assert_eq!(written.data, Answers(vec![Ok(())]));
        applied_everywhere(&survivors, "c2").await;

        // A worker of the same cluster has a valid certificate, but no say in Raft.
        let worker = tls(&ca, "w1", Role::Worker);
        let addr = &members[&survivors[0].id].addr;
        let channel = crate::cluster::rpc::dial(addr, &Credentials::new(worker).unwrap()).unwrap();
        let refused = pb::raft_client::RaftClient::new(channel)
            .vote(pb::Payload {
                json: b"{}".to_vec(),
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused}");
        assert!(refused.message().contains("w1"), "{refused}");

        for n in &mut nodes {
            n.raft.shutdown().await.unwrap();
            let _ = n.stop.take().unwrap().send(());
        }
    }
}
