//! Raft's log and vote in redb. Every write is one redb transaction committed with its default
//! durability (fsynced) before it returns, and `append` reports its entries flushed only after
//! that: openraft must never count an entry or a vote that a crash could lose.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    Entry, LogId, LogState, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote,
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{io_error, TypeConfig};

type NodeId = u64;

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";

/// The log store; clones share the database (a clone is the log reader openraft asks for).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    /// Open (or create) the log at `path`.
    pub fn open(path: &Path) -> anyhow::Result<LogStore> {
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        txn.open_table(LOG)?;
        txn.open_table(META)?;
        txn.commit()?;
        Ok(LogStore { db: Arc::new(db) })
    }

    #[allow(clippy::result_large_err)] // openraft's error type, which its traits return
    fn get_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, StorageError<NodeId>> {
        let read = || -> anyhow::Result<Option<T>> {
            let txn = self.db.begin_read()?;
            let meta = txn.open_table(META)?;
            Ok(match meta.get(key)? {
                Some(v) => Some(serde_json::from_slice(v.value())?),
                None => None,
            })
        };
        read().map_err(|e| StorageIOError::read(io_error(format!("{key}: {e:#}"))).into())
    }

    #[allow(clippy::result_large_err)] // openraft's error type, which its traits return
    fn put_meta<T: serde::Serialize>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<(), StorageError<NodeId>> {
        let write = || -> anyhow::Result<()> {
            let bytes = serde_json::to_vec(value)?;
            let txn = self.db.begin_write()?;
            txn.open_table(META)?.insert(key, bytes.as_slice())?;
            txn.commit()?;
            Ok(())
        };
        write().map_err(|e| StorageIOError::write(io_error(format!("{key}: {e:#}"))).into())
    }

    fn last_entry_id(&self) -> anyhow::Result<Option<LogId<NodeId>>> {
        let txn = self.db.begin_read()?;
        let log = txn.open_table(LOG)?;
        let last = log.last()?;
        Ok(match last {
            Some((_, v)) => Some(serde_json::from_slice::<Entry<TypeConfig>>(v.value())?.log_id),
            None => None,
        })
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let read = || -> anyhow::Result<Vec<Entry<TypeConfig>>> {
            let txn = self.db.begin_read()?;
            let log = txn.open_table(LOG)?;
            let start = match range.start_bound() {
                Bound::Included(&i) => Bound::Included(i),
                Bound::Excluded(&i) => Bound::Excluded(i),
                Bound::Unbounded => Bound::Unbounded,
            };
            let end = match range.end_bound() {
                Bound::Included(&i) => Bound::Included(i),
                Bound::Excluded(&i) => Bound::Excluded(i),
                Bound::Unbounded => Bound::Unbounded,
            };
            let mut out = Vec::new();
            for item in log.range::<u64>((start, end))? {
                let (_, v) = item?;
                out.push(serde_json::from_slice(v.value())?);
            }
            Ok(out)
        };
        read().map_err(|e| StorageIOError::read_logs(io_error(format!("{e:#}"))).into())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last_purged_log_id = self.get_meta::<LogId<NodeId>>(LAST_PURGED)?;
        let last = self
            .last_entry_id()
            .map_err(|e| StorageIOError::read_logs(io_error(format!("{e:#}"))))?;
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last.or(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.put_meta(VOTE, vote)
            .map_err(|e| StorageIOError::write_vote(io_error(e)).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.get_meta(VOTE)
            .map_err(|e| StorageIOError::read_vote(io_error(e)).into())
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        self.put_meta(COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.get_meta::<Option<LogId<NodeId>>>(COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let write = || -> anyhow::Result<()> {
            let txn = self.db.begin_write()?;
            {
                let mut log = txn.open_table(LOG)?;
                for entry in entries {
                    let bytes = serde_json::to_vec(&entry)?;
                    log.insert(entry.log_id.index, bytes.as_slice())?;
                }
            }
            // Durable (fsynced) when commit returns: only then may openraft count them.
            txn.commit()?;
            Ok(())
        };
        match write() {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let msg = format!("{e:#}");
                callback.log_io_completed(Err(std::io::Error::other(msg.clone())));
                Err(StorageIOError::write_logs(io_error(msg)).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let write = || -> anyhow::Result<()> {
            let txn = self.db.begin_write()?;
            txn.open_table(LOG)?
                .retain(|index, _| index < log_id.index)?;
            txn.commit()?;
            Ok(())
        };
        write().map_err(|e| StorageIOError::write_logs(io_error(format!("{e:#}"))).into())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let write = || -> anyhow::Result<()> {
            let bytes = serde_json::to_vec(&log_id)?;
            let txn = self.db.begin_write()?;
            // The purge point first, in the same transaction as the entries it covers.
            txn.open_table(META)?
                .insert(LAST_PURGED, bytes.as_slice())?;
            txn.open_table(LOG)?
                .retain(|index, _| index > log_id.index)?;
            txn.commit()?;
            Ok(())
        };
        write().map_err(|e| StorageIOError::write_logs(io_error(format!("{e:#}"))).into())
    }
}
