//! The state machine: the store's [`State`], changed by the proposals Raft commits. A snapshot
//! is the whole state with the last applied log id and membership, written to redb (sealed
//! with the manager's data key) when it is built or installed; a restarted manager starts
//! from it and openraft replays the log after.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use redb::{Database, ReadableDatabase, TableDefinition};
use std::sync::RwLock;
use tokio::sync::watch;

use super::{io_error, Answers, Proposal, Restored, TypeConfig};
use crate::cluster::config::ClusterConfig;
use crate::cluster::seal::DataKey;
use crate::store::{apply_caught, ApplyError, Command, State};

type NodeId = u64;
type Membership = StoredMembership<NodeId, openraft::BasicNode>;

const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_snapshot");
const CURRENT: &str = "current";
/// What snapshots are sealed for (bound into each seal).
const PURPOSE: &str = "raft-snapshot";

/// What a snapshot holds, and what a restart starts from.
#[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
struct Applied {
    last_applied: Option<LogId<NodeId>>,
    membership: Membership,
    state: State,
    /// The cluster's own settings (none before `init`'s first entry).
    #[serde(default)]
    cluster: Option<ClusterConfig>,
    /// Pieces of proposals committed so far, by id, waiting for their last piece.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    parts: BTreeMap<u64, String>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, openraft::BasicNode>,
    data: Vec<u8>,
}

/// The state machine; clones share it (a clone builds snapshots). The lock is never held
/// across an await: readers copy what they need out.
#[derive(Clone)]
pub struct StateMachine {
    db: Arc<Database>,
    applied: Arc<RwLock<Applied>>,
    /// Snapshots built by this node, numbered for their ids.
    built: Arc<std::sync::atomic::AtomicU64>,
    /// Counts the applied entries and installed snapshots: the loops wake on it.
    changed: Arc<watch::Sender<u64>>,
    key: DataKey,
}

impl StateMachine {
    /// Open (or create) the state machine at `path`, sealed with `key`, starting from its
    /// last snapshot.
    pub fn open(path: &Path, key: DataKey) -> anyhow::Result<StateMachine> {
        // One value (the last snapshot), read at start only: redb's cache need not keep it.
        let db = Database::builder().set_cache_size(1 << 20).create(path)?;
        let txn = db.begin_write()?;
        txn.open_table(SNAPSHOTS)?;
        txn.commit()?;
        let sm = StateMachine {
            db: Arc::new(db),
            applied: Default::default(),
            built: Default::default(),
            changed: Arc::new(watch::channel(0).0),
            key,
        };
        if let Some(stored) = sm.stored()? {
            let mut applied: Applied = serde_json::from_slice(&stored.data)?;
            applied.state.share_specs();
            *sm.write() = applied;
        }
        Ok(sm)
    }

    fn read_lock(&self) -> std::sync::RwLockReadGuard<'_, Applied> {
        // Applying cannot leave the state half changed (a panicking command is caught), so
        // a poisoned lock still guards a whole state.
        self.applied
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Applied> {
        self.applied
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Read the state as it is now.
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.read_lock().state)
    }

    /// Read the cluster's own settings (none before the first entry of `init` applied).
    pub fn read_cluster<T>(&self, f: impl FnOnce(Option<&ClusterConfig>) -> T) -> T {
        f(self.read_lock().cluster.as_ref())
    }

    /// The index of the last applied entry.
    pub fn last_applied(&self) -> Option<u64> {
        self.read_lock().last_applied.map(|l| l.index)
    }

    /// Everything applied so far, to carry into a new cluster (`--force-new-cluster`).
    pub fn restored(&self) -> Restored {
        let applied = self.read_lock();
        Restored {
            state: applied.state.clone(),
            cluster: applied.cluster.clone(),
        }
    }

    /// Wakes when an entry applies or a snapshot is installed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn stored(&self) -> anyhow::Result<Option<StoredSnapshot>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SNAPSHOTS)?;
        let value = table.get(CURRENT)?;
        Ok(match value {
            Some(v) => {
                let plain = self.key.open(PURPOSE, v.value()).map_err(|e| {
                    anyhow::anyhow!("the snapshot does not open with this manager's data key: {e} (a snapshot written before they were sealed, or another node's)")
                })?;
                Some(serde_json::from_slice(&plain)?)
            }
            None => None,
        })
    }

    #[allow(clippy::result_large_err)] // openraft's error type, which its traits return
    fn store(&self, snapshot: &StoredSnapshot) -> Result<(), StorageError<NodeId>> {
        let write = || -> anyhow::Result<()> {
            let bytes = self.key.seal(PURPOSE, &serde_json::to_vec(snapshot)?);
            let txn = self.db.begin_write()?;
            txn.open_table(SNAPSHOTS)?
                .insert(CURRENT, bytes.as_slice())?;
            txn.commit()?;
            Ok(())
        };
        write().map_err(|e| {
            StorageIOError::write_snapshot(
                Some(snapshot.meta.signature()),
                io_error(format!("{e:#}")),
            )
            .into()
        })
    }
}

/// One command of a proposal, as the single-node store takes it: checked, then applied; a
/// refusal (or a panic, a bug) is the command's answer, not the end of the proposal.
fn apply_one(state: &mut State, command: Command, log_id: LogId<NodeId>) -> Result<(), ApplyError> {
    state.check(&command)?;
    match apply_caught(state, command) {
        Ok(result) => result.map(|_events| ()),
        Err(panic) => {
            tracing::error!(log = %log_id, panic = %panic, "applying a command panicked; it is refused");
            Err(ApplyError::Panicked(panic))
        }
    }
}

/// Apply one proposal. Every manager applies the same proposals in the same order: a command
/// refused here is refused alike everywhere, so the states stay the same.
fn apply_proposal(
    applied: &mut Applied,
    proposal: Proposal,
    log_id: LogId<NodeId>,
) -> Vec<Result<(), ApplyError>> {
    match proposal {
        Proposal::Commands(commands) => commands
            .into_iter()
            .map(|command| apply_one(&mut applied.state, command, log_id))
            .collect(),
        Proposal::Restore(restored) => {
            let Restored { mut state, cluster } = *restored;
            state.share_specs();
            applied.state = state;
            applied.cluster = cluster;
            vec![Ok(())]
        }
        Proposal::Cluster(change) => {
            vec![change
                .apply(&mut applied.cluster)
                .map_err(ApplyError::Cluster)]
        }
        Proposal::Part { id, text, last } => {
            let mut whole = applied.parts.remove(&id).unwrap_or_default();
            whole.push_str(&text);
            if !last {
                applied.parts.insert(id, whole);
                return Vec::new();
            }
            match serde_json::from_str::<Proposal>(&whole) {
                Ok(Proposal::Part { .. }) => vec![Err(ApplyError::Cluster(
                    "a piece of a proposal held another piece".into(),
                ))],
                Ok(proposal) => apply_proposal(applied, proposal, log_id),
                // Its first pieces were dropped by a change of leader: the proposer was
                // deposed and is told to try again.
                Err(_) => vec![Err(ApplyError::PartsLost)],
            }
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let applied = self.read_lock().clone();
        let data = serde_json::to_vec(&applied)
            .map_err(|e| StorageIOError::read_state_machine(io_error(e)))?;
        let n = self
            .built
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let snapshot_id = match applied.last_applied {
            Some(id) => format!("{}-{}-{n}", id.leader_id, id.index),
            None => format!("none-{n}"),
        };
        let meta = SnapshotMeta {
            last_log_id: applied.last_applied,
            last_membership: applied.membership.clone(),
            snapshot_id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        self.store(&stored)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, Membership), StorageError<NodeId>> {
        let applied = self.read_lock();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Answers>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut applied = self.write();
        let mut out = Vec::new();
        for entry in entries {
            applied.last_applied = Some(entry.log_id);
            let answers = match entry.payload {
                // A new leader's first entry: pieces a deposed leader left are never finished.
                EntryPayload::Blank => {
                    applied.parts.clear();
                    Vec::new()
                }
                EntryPayload::Membership(m) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), m);
                    Vec::new()
                }
                EntryPayload::Normal(proposal) => {
                    apply_proposal(&mut applied, proposal, entry.log_id)
                }
            };
            out.push(Answers(answers));
        }
        drop(applied);
        if !out.is_empty() {
            self.changed.send_modify(|n| *n += 1);
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let mut incoming: Applied = serde_json::from_slice(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), io_error(e)))?;
        incoming.state.share_specs();
        // The meta is what the leader says the snapshot covers.
        incoming.last_applied = meta.last_log_id;
        incoming.membership = meta.last_membership.clone();
        self.store(&StoredSnapshot {
            meta: meta.clone(),
            data,
        })?;
        *self.write() = incoming;
        self.changed.send_modify(|n| *n += 1);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let stored = self
            .stored()
            .map_err(|e| StorageIOError::read_snapshot(None, io_error(format!("{e:#}"))))?;
        Ok(stored.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}
