//! `POST /api/v1/webhook`: push notifications from GitHub, Gitea and GitLab that make the
//! watcher fetch at once instead of at the next poll.
//!
//! The endpoint only ever *triggers* a fetch; what gets deployed is still whatever the tracked
//! branch holds, so a forged payload could at most cause a fetch. Even so every request must
//! be authenticated, and an endpoint without a configured secret answers 403 to everything:
//! an open endpoint would let anyone make every manager fetch as often as they like, and a
//! forgotten secret should be loud, not silently insecure.
//!
//! Only `application/json` payloads are read (GitHub's form-encoded option is refused with 400).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::watcher::{Trigger, WatcherHandle};

/// Where the router serves webhooks.
pub const WEBHOOK_PATH: &str = "/api/v1/webhook";

/// Webhook settings. `Debug` never shows the secret.
#[derive(Clone)]
pub struct WebhookConfig {
    /// The shared secret configured in the forge's webhook settings. `None` (or empty) refuses
    /// every request with 403.
    pub secret: Option<String>,
    /// Largest body read (default 25 MiB, GitHub's own cap on payloads).
    pub max_body_bytes: usize,
}

impl WebhookConfig {
    pub fn with_secret(secret: impl Into<String>) -> Self {
        WebhookConfig {
            secret: Some(secret.into()),
            ..WebhookConfig::default()
        }
    }
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            secret: None,
            max_body_bytes: 25 * 1024 * 1024,
        }
    }
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("max_body_bytes", &self.max_body_bytes)
            .finish()
    }
}

/// Who sent the request, as told by its signature header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    GitHub,
    Gitea,
    GitLab,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("no signature header (X-Hub-Signature-256, X-Gitea-Signature or X-Gitlab-Token)")]
    Missing,
    #[error("malformed {0} header")]
    Malformed(&'static str),
    #[error("{0} does not match the configured secret")]
    Mismatch(&'static str),
}

const GITEA_SIG: &str = "x-gitea-signature";
const GITHUB_SIG: &str = "x-hub-signature-256";
const GITLAB_TOKEN: &str = "x-gitlab-token";

/// Check the request's signature against `secret`. Gitea is looked at first because it also
/// sends GitHub-style headers (signed with the same secret).
pub fn verify(headers: &HeaderMap, body: &[u8], secret: &[u8]) -> Result<Provider, VerifyError> {
    let header = |name: &'static str| -> Result<Option<&str>, VerifyError> {
        headers
            .get(name)
            .map(|v| v.to_str().map_err(|_| VerifyError::Malformed(name)))
            .transpose()
    };
    if let Some(sig) = header(GITEA_SIG)? {
        return check(verify_hmac_sha256(secret, body, sig.trim()), GITEA_SIG)
            .map(|_| Provider::Gitea);
    }
    if let Some(sig) = header(GITHUB_SIG)? {
        let hex_sig = sig
            .trim()
            .strip_prefix("sha256=")
            .ok_or(VerifyError::Malformed(GITHUB_SIG))?;
        return check(verify_hmac_sha256(secret, body, hex_sig), GITHUB_SIG)
            .map(|_| Provider::GitHub);
    }
    if let Some(token) = header(GITLAB_TOKEN)? {
        return check(Some(token_matches(token.as_bytes(), secret)), GITLAB_TOKEN)
            .map(|_| Provider::GitLab);
    }
    Err(VerifyError::Missing)
}

fn check(ok: Option<bool>, header: &'static str) -> Result<(), VerifyError> {
    match ok {
        Some(true) => Ok(()),
        Some(false) => Err(VerifyError::Mismatch(header)),
        None => Err(VerifyError::Malformed(header)),
    }
}

/// Whether `signature_hex` is the HMAC-SHA256 of `body` under `secret`, compared in constant
/// time (`verify_slice`). `None` when the signature is not hex.
pub fn verify_hmac_sha256(secret: &[u8], body: &[u8], signature_hex: &str) -> Option<bool> {
    let expected = hex::decode(signature_hex).ok()?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(body);
    Some(mac.verify_slice(&expected).is_ok())
}

/// GitLab sends the secret itself. Compared as SHA-256 digests in constant time, so neither
/// the content nor the length of the secret leaks through timing.
pub fn token_matches(given: &[u8], secret: &[u8]) -> bool {
    bool::from(Sha256::digest(given).ct_eq(&Sha256::digest(secret)))
}

/// What a verified request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Ping,
    /// A push to `git_ref` (`refs/heads/main`, `refs/tags/v1`...).
    Push {
        git_ref: String,
    },
    /// Any other event, by name.
    Other(String),
}

#[derive(Deserialize)]
struct Payload {
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    object_kind: Option<String>,
}

/// Read the event type from the provider's headers (GitLab: from the body's `object_kind`).
pub fn parse_event(provider: Provider, headers: &HeaderMap, body: &[u8]) -> Result<Event, String> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let name = match provider {
        Provider::GitHub => header("x-github-event").unwrap_or("").to_string(),
        Provider::Gitea => header("x-gitea-event")
            .or_else(|| header("x-github-event"))
            .unwrap_or("")
            .to_string(),
        Provider::GitLab => String::new(),
    };
    if name == "ping" {
        return Ok(Event::Ping);
    }
    let payload = || -> Result<Payload, String> {
        serde_json::from_slice(body)
            .map_err(|e| format!("the payload is not JSON ({e}); configure the webhook with content type application/json"))
    };
    match provider {
        Provider::GitLab => {
            let p = payload()?;
            match p.object_kind.as_deref() {
                Some("push") => Ok(Event::Push {
                    git_ref: p.git_ref.ok_or("a push event without \"ref\"")?,
                }),
                Some(kind) => Ok(Event::Other(kind.to_string())),
                None => Err("a GitLab event without \"object_kind\"".to_string()),
            }
        }
        _ if name == "push" => Ok(Event::Push {
            git_ref: payload()?.git_ref.ok_or("a push event without \"ref\"")?,
        }),
        _ if name.is_empty() => Ok(Event::Other("unnamed".to_string())),
        _ => Ok(Event::Other(name)),
    }
}

/// The branch a ref names, if it names one.
pub fn branch_of_ref(git_ref: &str) -> Option<&str> {
    git_ref
        .strip_prefix("refs/heads/")
        .filter(|b| !b.is_empty())
}

/// What to do about an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Fetch,
    Pong,
    /// Acknowledged, nothing fetched; the reason is for the forge's delivery log.
    Ignore(String),
}

/// A push to the tracked branch fetches; so does any branch push while the tracked branch is
/// not known yet (the fetch resolves it). Everything else is acknowledged and ignored.
pub fn decide(event: &Event, tracked: Option<&str>) -> Decision {
    match event {
        Event::Ping => Decision::Pong,
        Event::Other(name) => Decision::Ignore(format!("{name} events are not acted on")),
        Event::Push { git_ref } => match (branch_of_ref(git_ref), tracked) {
            (None, _) => Decision::Ignore(format!("{git_ref} is not a branch")),
            (Some(_), None) => Decision::Fetch,
            (Some(b), Some(t)) if b == t => Decision::Fetch,
            (Some(b), Some(t)) => Decision::Ignore(format!("push to branch {b:?}; tracking {t:?}")),
        },
    }
}

struct Hook {
    config: WebhookConfig,
    handle: WatcherHandle,
    refusals: RefusalLog,
}

/// Refused webhooks are logged at most once a minute (with how many were refused since):
/// anyone can post to the endpoint, and each attempt must not become a line of the log.
#[derive(Default)]
struct RefusalLog {
    state: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
}

impl RefusalLog {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(60);

    fn refused(&self, why: &str) {
        let mut st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        st.1 += 1;
        let due = st.0.is_none_or(|t| t.elapsed() >= Self::EVERY);
        if due {
            tracing::warn!(refused = st.1, reason = %why, "webhook refused (logged at most once a minute; the count is since the last line)");
            *st = (Some(std::time::Instant::now()), 0);
        } else {
            tracing::debug!(reason = %why, "webhook refused");
        }
    }
}

/// The webhook endpoint, ready to be merged into the API router or served alone.
pub fn webhook_router(config: WebhookConfig, handle: WatcherHandle) -> Router {
    let limit = config.max_body_bytes;
    Router::new()
        .route(WEBHOOK_PATH, post(receive))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(Arc::new(Hook {
            config,
            handle,
            refusals: RefusalLog::default(),
        }))
}

async fn receive(State(hook): State<Arc<Hook>>, headers: HeaderMap, body: Bytes) -> Response {
    let (code, status, message) = answer(&hook, &headers, &body);
    hook.handle.count_webhook(status);
    reply(code, status, &message)
}

/// What to answer a webhook request: its HTTP status, its result and why.
fn answer(hook: &Hook, headers: &HeaderMap, body: &Bytes) -> (StatusCode, &'static str, String) {
    let Some(secret) = hook.config.secret.as_deref().filter(|s| !s.is_empty()) else {
        hook.refusals.refused("no webhook secret is configured");
        return (
            StatusCode::FORBIDDEN,
            "refused",
            "the webhook is disabled until a secret is configured".into(),
        );
    };
    let provider = match verify(headers, body, secret.as_bytes()) {
        Ok(p) => p,
        Err(e) => {
            hook.refusals.refused(&format!("bad signature: {e}"));
            return (StatusCode::UNAUTHORIZED, "refused", e.to_string());
        }
    };
    let event = match parse_event(provider, headers, body) {
        Ok(e) => e,
        Err(msg) => return (StatusCode::BAD_REQUEST, "refused", msg),
    };
    let decision = decide(&event, hook.handle.tracked_branch().as_deref());
    tracing::info!(?provider, ?event, ?decision, "webhook");
    match decision {
        Decision::Fetch if hook.handle.trigger(Trigger::Webhook) => {
            (StatusCode::ACCEPTED, "accepted", "fetch scheduled".into())
        }
        Decision::Fetch => (
            StatusCode::SERVICE_UNAVAILABLE,
            "refused",
            "the git watcher is not running".into(),
        ),
        Decision::Pong => (StatusCode::OK, "pong", "ok".into()),
        Decision::Ignore(reason) => (StatusCode::OK, "ignored", reason),
    }
}

fn reply(code: StatusCode, status: &str, message: &str) -> Response {
    (
        code,
        Json(serde_json::json!({ "status": status, "message": message })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const SECRET: &[u8] = b"It's a Secret to Everybody";
    const BODY: &[u8] = b"Hello, World!";
    // The example from GitHub's documentation on validating webhook deliveries.
    const GITHUB_EXAMPLE: &str = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn hmac_matches_githubs_published_example() {
        assert_eq!(verify_hmac_sha256(SECRET, BODY, GITHUB_EXAMPLE), Some(true));
        assert_eq!(
            verify_hmac_sha256(b"other", BODY, GITHUB_EXAMPLE),
            Some(false)
        );
        assert_eq!(
            verify_hmac_sha256(SECRET, b"Hello", GITHUB_EXAMPLE),
            Some(false)
        );
        assert_eq!(verify_hmac_sha256(SECRET, BODY, "zz"), None);
        assert_eq!(verify_hmac_sha256(SECRET, BODY, ""), Some(false));
    }

    #[test]
    fn each_provider_is_verified_by_its_header() {
        let gh = format!("sha256={GITHUB_EXAMPLE}");
        assert_eq!(
            verify(&headers(&[(GITHUB_SIG, &gh)]), BODY, SECRET),
            Ok(Provider::GitHub)
        );
        assert_eq!(
            verify(&headers(&[(GITEA_SIG, GITHUB_EXAMPLE)]), BODY, SECRET),
            Ok(Provider::Gitea)
        );
        // Gitea sends both headers; it is recognised as Gitea.
        assert_eq!(
            verify(
                &headers(&[(GITHUB_SIG, &gh), (GITEA_SIG, GITHUB_EXAMPLE)]),
                BODY,
                SECRET
            ),
            Ok(Provider::Gitea)
        );
        let secret = std::str::from_utf8(SECRET).unwrap();
        assert_eq!(
            verify(&headers(&[(GITLAB_TOKEN, secret)]), BODY, SECRET),
            Ok(Provider::GitLab)
        );
    }

    #[test]
    fn bad_or_missing_signatures_are_refused() {
        assert_eq!(
            verify(&HeaderMap::new(), BODY, SECRET),
            Err(VerifyError::Missing)
        );
        assert_eq!(
            verify(&headers(&[(GITHUB_SIG, GITHUB_EXAMPLE)]), BODY, SECRET),
            Err(VerifyError::Malformed(GITHUB_SIG)),
            "GitHub's header needs its sha256= prefix"
        );
        let wrong = format!("sha256={}", "0".repeat(64));
        assert_eq!(
            verify(&headers(&[(GITHUB_SIG, &wrong)]), BODY, SECRET),
            Err(VerifyError::Mismatch(GITHUB_SIG))
        );
        assert_eq!(
            verify(&headers(&[(GITEA_SIG, "not hex")]), BODY, SECRET),
            Err(VerifyError::Malformed(GITEA_SIG))
        );
        assert_eq!(
            verify(&headers(&[(GITLAB_TOKEN, "It's a Secret")]), BODY, SECRET),
            Err(VerifyError::Mismatch(GITLAB_TOKEN))
        );
        assert!(!token_matches(b"", SECRET));
        assert!(token_matches(SECRET, SECRET));
    }

    #[test]
    fn events_are_read_per_provider() {
        let push = br#"{"ref":"refs/heads/main","after":"abc"}"#;
        assert_eq!(
            parse_event(
                Provider::GitHub,
                &headers(&[("x-github-event", "push")]),
                push
            ),
            Ok(Event::Push {
                git_ref: "refs/heads/main".into()
            })
        );
        assert_eq!(
            parse_event(
                Provider::GitHub,
                &headers(&[("x-github-event", "ping")]),
                b"{}"
            ),
            Ok(Event::Ping)
        );
        assert_eq!(
            parse_event(
                Provider::Gitea,
                &headers(&[("x-gitea-event", "push")]),
                push
            ),
            Ok(Event::Push {
                git_ref: "refs/heads/main".into()
            })
        );
        assert_eq!(
            parse_event(
                Provider::GitHub,
                &headers(&[("x-github-event", "issues")]),
                b"{}"
            ),
            Ok(Event::Other("issues".into()))
        );
        let gl = br#"{"object_kind":"push","ref":"refs/heads/dev"}"#;
        assert_eq!(
            parse_event(
                Provider::GitLab,
                &headers(&[("x-gitlab-event", "Push Hook")]),
                gl
            ),
            Ok(Event::Push {
                git_ref: "refs/heads/dev".into()
            })
        );
        let tag = br#"{"object_kind":"tag_push","ref":"refs/tags/v1"}"#;
        assert_eq!(
            parse_event(Provider::GitLab, &HeaderMap::new(), tag),
            Ok(Event::Other("tag_push".into()))
        );
        assert!(parse_event(
            Provider::GitHub,
            &headers(&[("x-github-event", "push")]),
            b"payload=%7B%7D"
        )
        .unwrap_err()
        .contains("application/json"));
    }

    #[test]
    fn only_the_tracked_branch_fetches() {
        let push = |r: &str| Event::Push { git_ref: r.into() };
        assert_eq!(
            decide(&push("refs/heads/main"), Some("main")),
            Decision::Fetch
        );
        assert_eq!(decide(&push("refs/heads/main"), None), Decision::Fetch);
        assert!(matches!(
            decide(&push("refs/heads/dev"), Some("main")),
            Decision::Ignore(_)
        ));
        assert!(matches!(
            decide(&push("refs/heads/main-2"), Some("main")),
            Decision::Ignore(_)
        ));
        assert!(matches!(
            decide(&push("refs/tags/main"), Some("main")),
            Decision::Ignore(_)
        ));
        assert_eq!(decide(&Event::Ping, Some("main")), Decision::Pong);
        assert!(matches!(
            decide(&Event::Other("issues".into()), None),
            Decision::Ignore(_)
        ));
        assert_eq!(branch_of_ref("refs/heads/team/x"), Some("team/x"));
        assert_eq!(branch_of_ref("refs/heads/"), None);
    }
}
