//! The state machine: the store's [`State`], changed by the proposals Raft commits. A snapshot
//! is the whole state with the last applied log id and membership, written to redb when it is
//! built or installed; a restarted manager starts from it and openraft replays the log after.

use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use redb::{Database, ReadableDatabase, TableDefinition};
use tokio::sync::RwLock;

use super::{io_error, Answers, TypeConfig};
use crate::store::{apply_caught, Command, State};

type NodeId = u64;
type Membership = StoredMembership<NodeId, openraft::BasicNode>;

const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_snapshot");
const CURRENT: &str = "current";

/// What a snapshot holds, and what a restart starts from.
#[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
struct Applied {
    last_applied: Option<LogId<NodeId>>,
    membership: Membership,
    state: State,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, openraft::BasicNode>,
    data: Vec<u8>,
}

/// The state machine; clones share it (a clone builds snapshots).
#[derive(Clone)]
pub struct StateMachine {
    db: Arc<Database>,
    applied: Arc<RwLock<Applied>>,
    /// Snapshots built by this node, numbered for their ids.
    built: Arc<std::sync::atomic::AtomicU64>,
}

impl StateMachine {
    /// Open (or create) the state machine at `path`, starting from its last snapshot.
    pub fn open(path: &Path) -> anyhow::Result<StateMachine> {
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        txn.open_table(SNAPSHOTS)?;
        txn.commit()?;
        let sm = StateMachine {
            db: Arc::new(db),
            applied: Default::default(),
            built: Default::default(),
        };
        if let Some(stored) = sm.stored()? {
            let applied: Applied = serde_json::from_slice(&stored.data)?;
            *sm.applied.try_write().expect("not shared yet") = applied;
        }
        Ok(sm)
    }

    /// Read the state as it is now.
    pub async fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.applied.read().await.state)
    }

    fn stored(&self) -> anyhow::Result<Option<StoredSnapshot>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SNAPSHOTS)?;
        let value = table.get(CURRENT)?;
        Ok(match value {
            Some(v) => Some(serde_json::from_slice(v.value())?),
            None => None,
        })
    }

    #[allow(clippy::result_large_err)] // openraft's error type, which its traits return
    fn store(&self, snapshot: &StoredSnapshot) -> Result<(), StorageError<NodeId>> {
        let write = || -> anyhow::Result<()> {
            let bytes = serde_json::to_vec(snapshot)?;
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
fn apply_one(state: &mut State, command: Command, log_id: LogId<NodeId>) -> Result<(), String> {
    state.check(&command).map_err(|e| e.to_string())?;
    match apply_caught(state, command) {
        Ok(Ok(_events)) => Ok(()),
        Ok(Err(refused)) => Err(refused.to_string()),
        Err(panic) => {
            tracing::error!(log = %log_id, panic = %panic, "applying a command panicked; it is refused");
            Err(format!("applying the command failed ({panic})"))
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let applied = self.applied.read().await.clone();
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
        let applied = self.applied.read().await;
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Answers>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut applied = self.applied.write().await;
        let mut out = Vec::new();
        for entry in entries {
            applied.last_applied = Some(entry.log_id);
            let answers = match entry.payload {
                EntryPayload::Blank => Vec::new(),
                EntryPayload::Membership(m) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), m);
                    Vec::new()
                }
                // Every manager applies the same proposals in the same order: a command
                // refused here is refused alike everywhere, so the states stay the same.
                EntryPayload::Normal(proposal) => proposal
                    .commands
                    .into_iter()
                    .map(|command| apply_one(&mut applied.state, command, entry.log_id))
                    .collect(),
            };
            out.push(Answers(answers));
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
        // The meta is what the leader says the snapshot covers.
        incoming.last_applied = meta.last_log_id;
        incoming.membership = meta.last_membership.clone();
        self.store(&StoredSnapshot {
            meta: meta.clone(),
            data,
        })?;
        *self.applied.write().await = incoming;
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
