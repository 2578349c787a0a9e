//! Raft's log and vote in redb, written by one thread of its own that commits in groups.
//!
//! openraft hands over entries and goes on (storage v2): it may replicate them to the other
//! managers while they are being made durable here, and it counts them only when the
//! `LogFlushed` callback says so, which this store calls after the fsync that covers them.
//! Every write waiting when the writer wakes goes into one redb transaction, one fsync: under
//! load, many clients' entries share a disk flush (group commit). Writes happen in the order
//! they were asked for, so a callback never runs before an earlier write is durable.
//!
//! Entries handed over but not yet written are kept in memory, and reads see them: the leader
//! reads its own new entries to send them to the others before they are on its disk.
//!
//! Entries are sealed with the manager's data key before they reach the disk
//! ([`crate::cluster::seal`]): the root CA key and the join tokens travel in them.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    Entry, LogId, LogState, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote,
};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::{io_error, TypeConfig};
use crate::cluster::seal::DataKey;

type NodeId = u64;

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";
/// redb's cache for the log.
const CACHE_BYTES: usize = 8 << 20;
/// What the entries are sealed for (bound into each seal).
const PURPOSE: &str = "raft-log";

/// A write for the writer thread.
enum Job {
    /// Entries, as sealed JSON; the callback is told once they are durable.
    Append {
        entries: Vec<(LogId<NodeId>, Vec<u8>)>,
        flushed: LogFlushed<TypeConfig>,
    },
    /// Delete the entries from `index` on.
    Truncate { index: u64, done: Done },
    /// Delete the entries up to `upto` and remember it as purged.
    Purge {
        upto: Vec<u8>,
        index: u64,
        done: Done,
    },
    /// A value in the meta table, durable when `done` is answered.
    Meta {
        key: &'static str,
        value: Vec<u8>,
        done: Done,
    },
    /// The commit index: worth keeping, not worth a flush of its own (openraft learns it
    /// again from the leader after a restart).
    Committed(Vec<u8>),
}

type Done = tokio::sync::oneshot::Sender<Result<(), String>>;

/// The writer thread's end of the store. Dropped with the last store handle: it finishes the
/// jobs it has and stops, so that the database is closed when the store is gone (a restart
/// in the same process opens it again at once).
struct Writer {
    sender: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn send(&self, job: Job) -> Result<(), String> {
        self.sender
            .as_ref()
            .and_then(|s| s.send(job).ok())
            .ok_or_else(|| "the Raft log's writer has stopped".to_string())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.sender.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The log store; clones share the database, the writer and the entries not yet written (a
/// clone is the log reader openraft asks for).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    writer: Arc<Writer>,
    /// Entries handed to the writer and not yet written, by index.
    unwritten: Arc<Mutex<BTreeMap<u64, Entry<TypeConfig>>>>,
    key: DataKey,
}

/// An entry as it is read back from the disk.
fn decode(key: &DataKey, sealed: &[u8]) -> anyhow::Result<Entry<TypeConfig>> {
    let plain = key.open(PURPOSE, sealed).map_err(|e| {
        anyhow::anyhow!("an entry of the Raft log does not open with this manager's data key: {e} (a log written before entries were sealed, or another node's)")
    })?;
    Ok(serde_json::from_slice(&plain)?)
}

impl LogStore {
    /// Open (or create) the log at `path`, sealed with `key`, and start its writer.
    pub fn open(path: &Path, key: DataKey) -> anyhow::Result<LogStore> {
        // A small cache: the entries being replicated are read from memory (`unwritten`) and
        // the rest from the OS's page cache; redb's default would keep up to a gigabyte.
        let db = Arc::new(
            Database::builder()
                .set_cache_size(CACHE_BYTES)
                .create(path)?,
        );
        let txn = db.begin_write()?;
        txn.open_table(LOG)?;
        txn.open_table(META)?;
        txn.commit()?;
        let (sender, jobs) = mpsc::channel();
        let unwritten: Arc<Mutex<BTreeMap<u64, Entry<TypeConfig>>>> = Default::default();
        let (db2, unwritten2) = (db.clone(), unwritten.clone());
        let thread = std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || write_loop(&db2, &jobs, &unwritten2))?;
        Ok(LogStore {
            db,
            writer: Arc::new(Writer {
                sender: Some(sender),
                thread: Some(thread),
            }),
            unwritten,
            key,
        })
    }

    fn unwritten(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Entry<TypeConfig>>> {
        self.unwritten
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Hand a job to the writer and wait until it is durable.
    async fn write(&self, job: impl FnOnce(Done) -> Job) -> Result<(), String> {
        let (done, answer) = tokio::sync::oneshot::channel();
        self.writer.send(job(done))?;
        answer
            .await
            .map_err(|_| "the Raft log's writer has stopped".to_string())?
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

    fn last_written_id(&self) -> anyhow::Result<Option<LogId<NodeId>>> {
        let txn = self.db.begin_read()?;
        let log = txn.open_table(LOG)?;
        let last = log.last()?;
        Ok(match last {
            Some((_, v)) => Some(decode(&self.key, v.value())?.log_id),
            None => None,
        })
    }
}

/// The writer thread: takes every job waiting, writes them in one transaction (one fsync
/// unless only the commit index changed), then answers them in order. Ends when every store
/// handle is dropped.
fn write_loop(
    db: &Database,
    jobs: &mpsc::Receiver<Job>,
    unwritten: &Mutex<BTreeMap<u64, Entry<TypeConfig>>>,
) {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        group.extend(jobs.try_iter());
        let result = write_group(db, &group).map_err(|e| format!("{e:#}"));
        for job in group {
            match job {
                Job::Append { entries, flushed } => {
                    if result.is_ok() {
                        // Read from disk from now on, unless a newer write took the index.
                        let mut map = unwritten
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        for (id, _) in &entries {
                            if map.get(&id.index).is_some_and(|e| e.log_id == *id) {
                                map.remove(&id.index);
                            }
                        }
                    }
                    flushed.log_io_completed(result.clone().map_err(std::io::Error::other));
                }
                Job::Truncate { done, .. } | Job::Purge { done, .. } | Job::Meta { done, .. } => {
                    let _ = done.send(result.clone());
                }
                Job::Committed(_) => {}
            }
        }
    }
}

fn write_group(db: &Database, group: &[Job]) -> anyhow::Result<()> {
    let mut txn = db.begin_write()?;
    if group.iter().all(|j| matches!(j, Job::Committed(_))) {
        txn.set_durability(Durability::None)?;
    }
    {
        let mut log = txn.open_table(LOG)?;
        let mut meta = txn.open_table(META)?;
        for job in group {
            match job {
                Job::Append { entries, .. } => {
                    for (id, bytes) in entries {
                        log.insert(id.index, bytes.as_slice())?;
                    }
                }
                Job::Truncate { index, .. } => {
                    let index = *index;
                    log.retain(|i, _| i < index)?;
                }
                Job::Purge { upto, index, .. } => {
                    // The purge point in the same transaction as the entries it covers.
                    meta.insert(LAST_PURGED, upto.as_slice())?;
                    let index = *index;
                    log.retain(|i, _| i > index)?;
                }
                Job::Meta { key, value, .. } => {
                    meta.insert(*key, value.as_slice())?;
                }
                Job::Committed(value) => {
                    meta.insert(COMMITTED, value.as_slice())?;
                }
            }
        }
    }
    // Durable (fsynced) when commit returns, unless only the commit index changed.
    txn.commit()?;
    Ok(())
}

fn bounds<RB: RangeBounds<u64>>(range: &RB) -> (Bound<u64>, Bound<u64>) {
    let copy = |b: Bound<&u64>| match b {
        Bound::Included(&i) => Bound::Included(i),
        Bound::Excluded(&i) => Bound::Excluded(i),
        Bound::Unbounded => Bound::Unbounded,
    };
    (copy(range.start_bound()), copy(range.end_bound()))
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let range = bounds(&range);
        let read = || -> anyhow::Result<Vec<Entry<TypeConfig>>> {
            let mut out: BTreeMap<u64, Entry<TypeConfig>> = BTreeMap::new();
            let txn = self.db.begin_read()?;
            let log = txn.open_table(LOG)?;
            for item in log.range::<u64>(range)? {
                let (k, v) = item?;
                out.insert(k.value(), decode(&self.key, v.value())?);
            }
            // Entries not written yet are newer than what the disk holds at their index.
            for (i, e) in self.unwritten().range(range) {
                out.insert(*i, e.clone());
            }
            Ok(out.into_values().collect())
        };
        read().map_err(|e| StorageIOError::read_logs(io_error(format!("{e:#}"))).into())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last_purged_log_id = self.get_meta::<LogId<NodeId>>(LAST_PURGED)?;
        let written = self
            .last_written_id()
            .map_err(|e| StorageIOError::read_logs(io_error(format!("{e:#}"))))?;
        let unwritten = self.unwritten().values().next_back().map(|e| e.log_id);
        let last = unwritten.max(written);
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last.or(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let value =
            serde_json::to_vec(vote).map_err(|e| StorageIOError::write_vote(io_error(e)))?;
        self.write(|done| Job::Meta {
            key: VOTE,
            value,
            done,
        })
        .await
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
        let value =
            serde_json::to_vec(&committed).map_err(|e| StorageIOError::write(io_error(e)))?;
        self.writer
            .send(Job::Committed(value))
            .map_err(|e| StorageIOError::write(io_error(e)))?;
        Ok(())
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
        let mut encoded = Vec::new();
        {
            let mut unwritten = self.unwritten();
            for entry in entries {
                let bytes = serde_json::to_vec(&entry)
                    .map_err(|e| StorageIOError::write_logs(io_error(e)))?;
                encoded.push((entry.log_id, self.key.seal(PURPOSE, &bytes)));
                unwritten.insert(entry.log_id.index, entry);
            }
        }
        self.writer
            .send(Job::Append {
                entries: encoded,
                flushed: callback,
            })
            .map_err(|e| StorageIOError::write_logs(io_error(e)).into())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let index = log_id.index;
        self.unwritten().retain(|i, _| *i < index);
        self.write(|done| Job::Truncate { index, done })
            .await
            .map_err(|e| StorageIOError::write_logs(io_error(e)).into())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let index = log_id.index;
        let upto =
            serde_json::to_vec(&log_id).map_err(|e| StorageIOError::write_logs(io_error(e)))?;
        self.unwritten().retain(|i, _| *i > index);
        self.write(|done| Job::Purge { upto, index, done })
            .await
            .map_err(|e| StorageIOError::write_logs(io_error(e)).into())
    }
}
