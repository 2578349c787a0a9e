//! The log store and state machine against openraft's own storage test suite, then what the
//! cluster relies on beyond it: proposals applied as the single-node store applies them, and a
//! restart that starts from the snapshot.

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{Entry, EntryPayload, LogId, RaftSnapshotBuilder, StorageError};

use super::{Answers, LogStore, Proposal, StateMachine, TypeConfig};

/// Each suite case gets fresh files in a directory of its own (kept alive with the stores).
struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().unwrap();
        let log = LogStore::open(&dir.path().join("raft-log.redb")).unwrap();
        let sm = StateMachine::open(&dir.path().join("raft-state.redb")).unwrap();
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).unwrap();
}

fn revision(commit: &str) -> crate::store::Command {
    let loaded = crate::spec::load_stack(
        "web",
        "compose.yml",
        "services:\n  app:\n    image: nginx:1\n    deploy:\n      replicas: 2\n",
        &crate::spec::NoFiles,
        &crate::spec::Variables::default(),
    );
    let mut desired = crate::desired::DesiredState::default();
    desired.stacks.insert("web".into(), loaded.spec.unwrap());
    crate::store::Command::ApplyRevision {
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
        payload: EntryPayload::Normal(Proposal { commands }),
    }
}

#[tokio::test]
async fn a_proposal_applies_like_a_store_batch_and_a_restart_starts_from_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft-state.redb");
    let mut sm = StateMachine::open(&path).unwrap();
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
    assert!(a[1].as_ref().unwrap_err().contains("nope"), "{a:?}");
    // The revision created the service; it has no previous spec, so the rollback is refused too.
    assert!(a[2].is_err(), "{a:?}");
    assert!(sm.read(|s| s.services.contains_key("web_app")).await);
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
    let mut again = StateMachine::open(&path).unwrap();
    assert!(again.read(|s| s.services.contains_key("web_app")).await);
    let (last, _) = again.applied_state().await.unwrap();
    assert_eq!(last.map(|l| l.index), Some(1));
    let current = again.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta.snapshot_id, snapshot.meta.snapshot_id);
}

#[tokio::test]
async fn appended_entries_and_the_vote_survive_reopening_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft-log.redb");
    {
        let mut log = LogStore::open(&path).unwrap();
        let vote = openraft::Vote::new_committed(3, 1);
        log.save_vote(&vote).await.unwrap();
        // Through openraft's own helper, which waits for the flush callback.
        use openraft::storage::RaftLogStorageExt as _;
        log.blocking_append(vec![entry(1, vec![revision("c1")]), entry(2, vec![])])
            .await
            .unwrap();
    }
    let mut log = LogStore::open(&path).unwrap();
    assert_eq!(
        log.read_vote().await.unwrap(),
        Some(openraft::Vote::new_committed(3, 1))
    );
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id.map(|l| l.index), Some(2));
    use openraft::RaftLogReader as _;
    let entries = log.try_get_log_entries(1..=2).await.unwrap();
    assert_eq!(entries.len(), 2);
    assert!(matches!(&entries[0].payload, EntryPayload::Normal(p) if p.commands.len() == 1));
}
