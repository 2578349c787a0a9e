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

/// Apply a command, turning a panic (a bug: `apply` must not panic on any input) into an error
/// instead of a dead process.
pub(crate) fn apply_caught(
    state: &mut State,
    command: Command,
) -> Result<Result<Vec<Event>, ApplyError>, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| state.apply(command))).map_err(|p| {
        p.downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into())
    })
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
        self.state = State::default();
        self.snapshot_index = 0;
        self.last_index = 0;
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
                // Only commands that applied are logged; one that fails now fails the same way
                // on every replay, and is skipped alike (a panic included: it must not make the
                // node crash on every start until the commit is reverted).
                match apply_caught(&mut self.state, cmd) {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::error!(index = k.value(), error = %e, "a logged command no longer applies; skipped")
                    }
                    Err(p) => {
                        tracing::error!(index = k.value(), panic = %p, "a logged command panics when applied; skipped")
                    }
                }
                self.last_index = k.value();
            }
        }
        Ok(())
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// The commands in the log after the last snapshot, oldest first (for tests and tools).
    pub fn log(&self) -> Result<Vec<Command>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let Ok(log) = txn.open_table(LOG) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for entry in log.range(self.snapshot_index + 1..).map_err(db_err)? {
            let (k, v) = entry.map_err(db_err)?;
            out.push(
                serde_json::from_slice(v.value())
                    .map_err(|e| StoreError::Corrupt(format!("log entry {}: {e}", k.value())))?,
            );
        }
        Ok(out)
    }

    /// Append the command durably, then apply it. A command the state machine refuses is
    /// not logged.
    pub fn apply(&mut self, command: Command) -> Result<Vec<Event>, StoreError> {
        self.apply_batch(vec![command])
            .pop()
            .expect("one answer per command")
    }

    /// Apply commands in order, each checked against the state the ones before it left, and
    /// make the ones that apply durable in one transaction (one fsync for an orchestrator
    /// step, not one per command). A command that is refused is not logged; one that panics
    /// is refused and the state is rebuilt from the log, which does not hold it.
    pub fn apply_batch(&mut self, commands: Vec<Command>) -> Vec<Result<Vec<Event>, StoreError>> {
        let mut answers = Vec::with_capacity(commands.len());
        if commands.is_empty() {
            return answers;
        }
        let txn = match self.db.begin_write() {
            Ok(t) => t,
            Err(e) => {
                let e = db_err(e);
                return commands
                    .iter()
                    .map(|_| Err(StoreError::Db(e.to_string())))
                    .collect();
            }
        };
        let mut index = self.last_index;
        let mut rebuild = false;
        let mut failed: Option<String> = None;
        {
            let mut log = match txn.open_table(LOG) {
                Ok(l) => l,
                Err(e) => {
                    let e = db_err(e).to_string();
                    return commands
                        .iter()
                        .map(|_| Err(StoreError::Db(e.clone())))
                        .collect();
                }
            };
            for command in commands {
                if let Some(e) = &failed {
                    answers.push(Err(StoreError::Db(e.clone())));
                    continue;
                }
                if let Err(e) = self.state.check(&command) {
                    answers.push(Err(e.into()));
                    continue;
                }
                let bytes = match serde_json::to_vec(&command) {
                    Ok(b) => b,
                    Err(e) => {
                        answers.push(Err(StoreError::Corrupt(e.to_string())));
                        continue;
                    }
                };
                if let Err(e) = log.insert(index + 1, bytes.as_slice()) {
                    failed = Some(db_err(e).to_string());
                    answers.push(Err(StoreError::Db(failed.clone().unwrap_or_default())));
                    continue;
                }
                match apply_caught(&mut self.state, command) {
                    Ok(result) => {
                        index += 1;
                        answers.push(result.map_err(StoreError::from));
                    }
                    Err(panic) => {
                        // Not logged after all; the state may be half changed: rebuild it.
                        let _ = log.remove(index + 1);
                        rebuild = true;
                        tracing::error!(panic = %panic, "applying a command panicked; it is refused and the state rebuilt from the log");
                        answers.push(Err(StoreError::Corrupt(format!(
                            "applying the command failed ({panic}); it was refused"
                        ))));
                    }
                }
            }
        }
        match txn.commit() {
            Ok(()) => self.last_index = index,
            Err(e) => {
                let e = db_err(e).to_string();
                for a in answers.iter_mut().filter(|a| a.is_ok()) {
                    *a = Err(StoreError::Db(e.clone()));
                }
                rebuild = true;
            }
        }
        if rebuild {
            // What memory holds must be what the log says, whatever happened above.
            if let Err(e) = self.load() {
                tracing::error!(error = %e, "rebuilding the state from the store failed");
            }
        }
        if self.last_index - self.snapshot_index >= SNAPSHOT_EVERY {
            if let Err(e) = self.snapshot() {
                tracing::error!(error = %e, "writing a snapshot failed; the log keeps growing until one succeeds");
            }
        }
        answers
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

/// Milliseconds since the Unix epoch, now (the clock commands are stamped with).
pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
