//! Loops that cannot take the node down: a loop that panics is said (log and status) and
//! started again after a backoff, never silently gone and never the end of the process.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::gitops::Backoff;

/// Loops that panicked (and were restarted), with the last panic's message, for status.
pub type LoopFailures = Arc<RwLock<BTreeMap<String, String>>>;

/// Run `make()`'s loop until it returns or `shutdown`; when it panics, record it in
/// `failures`, log it, and start it again after a backoff (1 s doubling to 30 s).
pub async fn supervise<F, Fut>(
    name: &'static str,
    failures: LoopFailures,
    shutdown: CancellationToken,
    make: F,
) where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    loop {
        match tokio::spawn(make()).await {
            Ok(()) => return,
            Err(e) if e.is_panic() => {
                let p = e.into_panic();
                let message = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into());
                let delay = backoff.next_delay();
                tracing::error!(r#loop = name, panic = %message, restart_in = ?delay, "a loop panicked; restarting it");
                failures
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(name.to_string(), message);
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_panicking_loop_is_recorded_and_started_again() {
        let failures = LoopFailures::default();
        let runs = Arc::new(AtomicU32::new(0));
        let counter = runs.clone();
        // Panics on its first two runs, then ends normally.
        supervise(
            "flaky",
            failures.clone(),
            CancellationToken::new(),
            move || {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < 2 {
                        panic!("bad input number {n}");
                    }
                }
            },
        )
        .await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert_eq!(
            failures.read().unwrap().get("flaky").map(String::as_str),
            Some("bad input number 1")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_the_wait_before_a_restart() {
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let runs = Arc::new(AtomicU32::new(0));
        let counter = runs.clone();
        supervise("always", LoopFailures::default(), shutdown, move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { panic!("always") }
        })
        .await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }
}
