//! The leader's notification sender: for each target of `reconciler.toml`, the next event it
//! wants from the store's log, POSTed in the target's format; the store is told once it was
//! accepted (`NotificationSent`), so a new leader goes on from there and every event is
//! delivered at least once (a receiver drops repeats by the delivery header). A target that
//! fails is retried with a growing backoff, on its own: the others go on, and nothing here
//! holds up reconciling. Failures show in status and `/metrics`; a URL never does.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{until_leader, until_not_leader, MirrorContent, Shared};
use crate::notify::config::Value;
use crate::notify::{deliver, NotifyEvent, Target};
use crate::store::Command;

/// How long one delivery may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_RETRY: Duration = Duration::from_secs(1);
const LAST_RETRY: Duration = Duration::from_secs(300);

pub type TargetStatuses = Arc<RwLock<BTreeMap<String, crate::notify::TargetStatus>>>;

pub async fn notifier_loop(
    shared: Arc<Shared>,
    content: Arc<MirrorContent>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = until_leader(&shared) => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = until_not_leader(&shared) => {}
            _ = send(&shared, &content) => {}
        }
    }
}

/// A target, the next event it wants (with how many it lost off the log) and how many wait.
struct Due {
    target: Target,
    next: Option<(NotifyEvent, u64)>,
    pending: u64,
}

struct Retry {
    at: Instant,
    delay: Duration,
}

async fn send(shared: &Shared, content: &MirrorContent) {
    let http = match reqwest::Client::builder()
        .timeout(SEND_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "no HTTP client for notifications");
            return std::future::pending().await;
        }
    };
    let cluster = shared.cluster.info.cluster_id.clone();
    let mut retry: BTreeMap<String, Retry> = BTreeMap::new();
    let mut changes = shared.subscribe();
    loop {
        let work: Vec<Due> = shared.with_state(|s| {
            s.notify
                .targets
                .iter()
                .map(|t| Due {
                    pending: s.notify.sent.get(&t.name).map_or(0, |after| {
                        s.notify
                            .events
                            .iter()
                            .filter(|e| e.seq > *after && t.wants(e.kind))
                            .count() as u64
                    }),
                    next: s.notify.next_for(t).map(|(e, lost)| (e.clone(), lost)),
                    target: t.clone(),
                })
                .collect()
        });
        {
            let mut statuses = shared.notify.write().expect("lock");
            statuses.retain(|name, _| work.iter().any(|d| &d.target.name == name));
            for d in &work {
                let st = statuses.entry(d.target.name.clone()).or_default();
                st.kind = d.target.kind.name().to_string();
                st.pending = d.pending;
            }
        }
        retry.retain(|name, _| work.iter().any(|d| &d.target.name == name));
        let now = Instant::now();
        for Due { target, next, .. } in &work {
            let Some((event, lost)) = next else { continue };
            if retry.get(&target.name).is_some_and(|r| r.at > now) {
                continue;
            }
            let outcome = deliver_one(&http, content, &cluster, target, event).await;
            let failed = {
                let mut statuses = shared.notify.write().expect("lock");
                let st = statuses.entry(target.name.clone()).or_default();
                match outcome {
                    Ok(()) => {
                        st.delivered += 1;
                        st.lost += lost;
                        st.last_error = None;
                        None
                    }
                    Err(why) => {
                        st.failures += 1;
                        let news = st.last_error.as_deref() != Some(why.as_str());
                        st.last_error = Some(why.clone());
                        Some((why, news))
                    }
                }
            };
            match failed {
                None => {
                    retry.remove(&target.name);
                    let sent = Command::NotificationSent {
                        target: target.name.clone(),
                        seq: event.seq,
                    };
                    shared.apply(vec![sent]).await;
                }
                Some((why, news)) => {
                    let delay = retry
                        .get(&target.name)
                        .map_or(FIRST_RETRY, |r| (r.delay * 2).min(LAST_RETRY));
                    if news {
                        tracing::warn!(target = %target.name, event = event.kind.name(), error = %why, retry_in = ?delay, "a notification was not delivered; retrying");
                    }
                    retry.insert(
                        target.name.clone(),
                        Retry {
                            at: Instant::now() + delay,
                            delay,
                        },
                    );
                }
            }
        }
        let sent_something = work
            .iter()
            .any(|d| d.next.is_some() && !retry.contains_key(&d.target.name));
        if sent_something {
            continue; // the next event of the same target, at once
        }
        let wake = retry
            .values()
            .map(|r| r.at)
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(30));
        tokio::select! {
            _ = changes.changed() => {}
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
}

/// POST one event; a 2xx answer is delivery. Errors never name the URL (it may be a secret).
async fn deliver_one(
    http: &reqwest::Client,
    content: &MirrorContent,
    cluster: &str,
    target: &Target,
    event: &NotifyEvent,
) -> Result<(), String> {
    let url = value(
        content,
        &target.url,
        &format!("notify target {}: url", target.name),
    )?;
    let url = String::from_utf8(url.to_vec())
        .map_err(|_| format!("the URL of {} is not text", target.name))?;
    let secret = match &target.secret {
        Some(v) => Some(value(
            content,
            v,
            &format!("notify target {}: secret", target.name),
        )?),
        None => None,
    };
    let req = deliver::request(
        target.kind,
        cluster,
        event,
        secret.as_ref().map(|s| s.as_slice()),
    );
    let mut builder = http.post(url.trim());
    for (name, value) in &req.headers {
        builder = builder.header(*name, value);
    }
    let resp = builder
        .body(req.body)
        .send()
        .await
        .map_err(|e| e.without_url().to_string())?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("the receiver answered {}", resp.status()))
    }
}

/// A value of `reconciler.toml`: written there, or a repo file (decrypted when `.age`).
fn value(
    content: &MirrorContent,
    v: &Value,
    what: &str,
) -> Result<zeroize::Zeroizing<Vec<u8>>, String> {
    match v {
        Value::Inline { value } => Ok(zeroize::Zeroizing::new(value.clone().into_bytes())),
        Value::File { commit, path } => content
            .read_repo_file(what, commit, path)
            .map(|b| zeroize::Zeroizing::new(b.expose().to_vec())),
    }
}
