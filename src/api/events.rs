//! `/api/v1/events`: server-sent events, so that a page (or `curl -N`) follows the cluster
//! without polling. On connecting and after every change to the store (coalesced over
//! [`SETTLE`]), a `status` event carries the status view; a `commit` event carries the newest
//! history record whenever it changed (a commit received, a rollout step, converged). Comment
//! lines keep idle connections open through proxies. At most [`MAX_STREAMS`] at once.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State as AxState;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, Stream, StreamExt};
use tokio::sync::Semaphore;

use super::{error, read, status_view, Cluster, Ctx};

/// Streams open at once; more are refused with 503 rather than hold a task each.
pub const MAX_STREAMS: usize = 64;
/// A burst of changes (a rollout commits many) becomes one event.
const SETTLE: Duration = Duration::from_millis(200);

static STREAMS: std::sync::LazyLock<Arc<Semaphore>> =
    std::sync::LazyLock::new(|| Arc::new(Semaphore::new(MAX_STREAMS)));

pub async fn events(AxState(cluster): Ctx) -> Response {
    let Ok(permit) = STREAMS.clone().try_acquire_owned() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_STREAMS} event streams are open already; try again later"),
        );
    };
    let stream = follow(cluster).map(move |e| {
        let _held = &permit; // released when the client goes
        e
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// What a client has been sent, to send only what changed.
struct Sent {
    first: bool,
    /// The newest record as (commit, received at, events, outcome) last sent.
    commit: Option<(String, u64, usize, &'static str)>,
}

fn follow(cluster: Arc<dyn Cluster>) -> impl Stream<Item = Result<Event, Infallible>> {
    let changes = cluster.subscribe();
    let sent = Sent {
        first: true,
        commit: None,
    };
    stream::unfold(
        (cluster, changes, sent),
        |(cluster, mut changes, mut sent)| async move {
            if !sent.first {
                changes.changed().await.ok()?;
                tokio::time::sleep(SETTLE).await;
                changes.borrow_and_update();
            }
            sent.first = false;
            let mut out = Vec::new();
            let status = serde_json::to_string(&status_view(&*cluster)).unwrap_or_default();
            out.push(Ok(Event::default().event("status").data(status)));
            let newest = read(&*cluster, |s| s.history.records().next_back().cloned());
            if let Some(r) = newest {
                let key = (
                    r.commit.clone(),
                    r.received_at,
                    r.events.len(),
                    r.outcome.key(),
                );
                if sent.commit.as_ref() != Some(&key) {
                    sent.commit = Some(key);
                    let json = serde_json::to_string(&r).unwrap_or_default();
                    out.push(Ok(Event::default().event("commit").data(json)));
                }
            }
            Some((stream::iter(out), (cluster, changes, sent)))
        },
    )
    .flatten()
}
