//! The store: the one source of truth. An in-memory [`State`] changed only by [`Command`]s,
//! each appended durably to a redb log before it is applied, with periodic snapshots so that
//! start-up replays only the tail. Loops read snapshots of the state and watch the events; they
//! never call each other (Swarm's design), which is what makes a restart harmless.
//!
//! With the manager cluster, the log becomes Raft's log: the same commands, the same `apply`.

pub mod objects;
pub mod state;

use std::path::Path;

use redb::{Database, ReadableDatabase, TableDefinition};

pub use objects::*;
pub use state::{ApplyError, Command, Event, Owned, State};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const SNAPSHOT_KEY: &str = "snapshot";
/// Commands between snapshots: replay stays short, snapshots stay rare.
const SNAPSHOT_EVERY: u64 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store database: {0}")]
    Db(String),
    #[error("store data is corrupt: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(e.to_string())
}

pub struct Store {
    db: Database,
    state: State,
    /// Index of the last command in the log.
    last_index: u64,
    /// Index covered by the last snapshot.
    snapshot_index: u64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Snapshot {
    index: u64,
    state: State,
}

impl Store {
    /// Open (or create) the store at `path` and rebuild the state: snapshot, then the log tail.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(db_err)?;
        let mut store = Store {
            db,
            state: State::default(),
            last_index: 0,
            snapshot_index: 0,
        };
        store.load()?;
        Ok(store)
    }

    fn load(&mut self) -> Result<(), StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        if let Ok(meta) = txn.open_table(META) {
            if let Some(bytes) = meta.get(SNAPSHOT_KEY).map_err(db_err)? {
                let snap: Snapshot = serde_json::from_slice(bytes.value())
                    .map_err(|e| StoreError::Corrupt(format!("snapshot: {e}")))?;
                self.state = snap.state;
                self.snapshot_index = snap.index;
                self.last_index = snap.index;
            }
        }
        if let Ok(log) = txn.open_table(LOG) {
            for entry in log.range(self.snapshot_index + 1..).map_err(db_err)? {
                let (k, v) = entry.map_err(db_err)?;
                let cmd: Command = serde_json::from_slice(v.value())
                    .map_err(|e| StoreError::Corrupt(format!("log entry {}: {e}", k.value())))?;
                // A command that failed when first applied fails the same way now: skip it.
                let _ = self.state.apply(cmd);
                self.last_index = k.value();
            }
        }
        Ok(())
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// Append the command durably, then apply it. A command the state machine refuses is
    /// not logged.
    pub fn apply(&mut self, command: Command) -> Result<Vec<Event>, StoreError> {
        // Only commands that will apply are logged, so a replay never meets a bad one.
        self.state.check(&command)?;
        let bytes = serde_json::to_vec(&command).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let index = self.last_index + 1;
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut log = txn.open_table(LOG).map_err(db_err)?;
            log.insert(index, bytes.as_slice()).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;
        self.last_index = index;
        let events = self.state.apply(command)?;
        if self.last_index - self.snapshot_index >= SNAPSHOT_EVERY {
            self.snapshot()?;
        }
        Ok(events)
    }

    /// Write the whole state as a snapshot and drop the log it covers.
    pub fn snapshot(&mut self) -> Result<(), StoreError> {
        let snap = Snapshot {
            index: self.last_index,
            state: self.state.clone(),
        };
        let bytes = serde_json::to_vec(&snap).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut meta = txn.open_table(META).map_err(db_err)?;
            meta.insert(SNAPSHOT_KEY, bytes.as_slice())
                .map_err(db_err)?;
            let mut log = txn.open_table(LOG).map_err(db_err)?;
            log.retain(|k, _| k > snap.index).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;
        self.snapshot_index = snap.index;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
