//! The store: the one source of truth. A [`State`] changed only by [`Command`]s, each checked
//! and applied deterministically, so that every manager that applies the same commands in the
//! same order holds the same state. The commands travel through Raft (`cluster::raft`: its
//! log in redb, the state machine that applies them, snapshots); loops read the state and
//! wake on its changes; they never call each other (Swarm's design), which is what makes a
//! restart or a new leader harmless.

pub mod history;
pub mod objects;
mod running;
pub mod state;

pub use history::{CommitRecord, History};
pub use objects::*;
pub use state::{ApplyError, Command, Event, Owned, State};

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

/// Milliseconds since the Unix epoch, now (the clock commands are stamped with).
pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
