//! What goes on the wire for one event: a generic JSON event (signed with HMAC-SHA256 when
//! the target has a secret), or a chat message in Slack's, Microsoft Teams' or Discord's
//! incoming-webhook format. Pure: the sender does the I/O.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::config::Kind;
use super::event::{NotifyEvent, NotifyKind};
use crate::store::history::short;

/// The header carrying `sha256=<hex of HMAC-SHA256(secret, body)>` on generic requests.
pub const SIGNATURE_HEADER: &str = "x-reconciler-signature";
/// The event's name (`commit_refused`, ...).
pub const EVENT_HEADER: &str = "x-reconciler-event";
/// `<cluster>-<seq>`: the same for every retry of one event, so that a receiver can drop a
/// second delivery (delivery is at least once).
pub const DELIVERY_HEADER: &str = "x-reconciler-delivery";

pub struct Request {
    pub body: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

/// The event in a line, as a person reads it.
pub fn headline(e: &NotifyEvent) -> String {
    let commit = e.commit.as_deref().map(short).unwrap_or("?");
    let service = e.service.as_deref().unwrap_or("?");
    match e.kind {
        NotifyKind::CommitRefused => format!("commit {commit} refused"),
        NotifyKind::CommitApplied => format!("commit {commit} applied"),
        NotifyKind::CommitConverged => format!("commit {commit} converged"),
        NotifyKind::RolloutPaused => format!("rollout of {service} paused (commit {commit})"),
        NotifyKind::RolloutRolledBack => {
            format!("{service} rolled back (commit {commit})")
        }
        NotifyKind::ServiceUnhealthy => format!("{service} is unhealthy"),
        NotifyKind::NodeDown => format!("node {} is down", e.node.as_deref().unwrap_or("?")),
    }
}

pub fn request(kind: Kind, cluster: &str, e: &NotifyEvent, secret: Option<&[u8]>) -> Request {
    let title = format!("reconciler: {}", headline(e));
    let text = if e.message.is_empty() {
        title.clone()
    } else {
        format!("{title}: {}", e.message)
    };
    let body = match kind {
        Kind::Generic => serde_json::json!({
            "event": e.kind.name(),
            "seq": e.seq,
            "at": e.at,
            "cluster": cluster,
            "commit": e.commit,
            "service": e.service,
            "node": e.node,
            "summary": headline(e),
            "message": e.message,
        }),
        Kind::Slack => serde_json::json!({ "text": text }),
        Kind::Discord => serde_json::json!({ "content": text }),
        Kind::Teams => serde_json::json!({
            "@type": "MessageCard",
            "@context": "https://schema.org/extensions",
            "themeColor": if e.kind.is_bad() { "D70000" } else { "2DC72D" },
            "summary": title,
            "title": title,
            "text": if e.message.is_empty() { headline(e) } else { e.message.clone() },
        }),
    };
    let body = serde_json::to_vec(&body).unwrap_or_default();
    let mut headers = vec![
        ("content-type", "application/json".to_string()),
        (EVENT_HEADER, e.kind.name().to_string()),
        (DELIVERY_HEADER, format!("{cluster}-{}", e.seq)),
    ];
    if let (Kind::Generic, Some(secret)) = (kind, secret) {
        headers.push((SIGNATURE_HEADER, format!("sha256={}", sign(secret, &body))));
    }
    Request { body, headers }
}

/// Hex HMAC-SHA256 of `body` under `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rolled_back() -> NotifyEvent {
        NotifyEvent {
            seq: 7,
            at: 1_000,
            kind: NotifyKind::RolloutRolledBack,
            commit: Some("a1b2c3d4e5f6".into()),
            service: Some("shop_web".into()),
            node: None,
            message: "task 7fcaf78bf718 failed: non-zero exit (1)".into(),
        }
    }

    #[test]
    fn a_generic_event_is_json_signed_over_its_exact_body() {
        let r = request(Kind::Generic, "c1", &rolled_back(), Some(b"key"));
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["event"], "rollout_rolled_back");
        assert_eq!(v["service"], "shop_web");
        assert_eq!(v["seq"], 7);
        let sig = r
            .headers
            .iter()
            .find(|(h, _)| *h == SIGNATURE_HEADER)
            .unwrap();
        assert_eq!(sig.1, format!("sha256={}", sign(b"key", &r.body)));
        let delivery = r
            .headers
            .iter()
            .find(|(h, _)| *h == DELIVERY_HEADER)
            .unwrap();
        assert_eq!(delivery.1, "c1-7");
        // Without a secret, no signature.
        let r = request(Kind::Generic, "c1", &rolled_back(), None);
        assert!(!r.headers.iter().any(|(h, _)| *h == SIGNATURE_HEADER));
    }

    #[test]
    fn chat_targets_get_their_own_format_with_the_reason() {
        for (kind, field) in [
            (Kind::Slack, "text"),
            (Kind::Discord, "content"),
            (Kind::Teams, "text"),
        ] {
            let r = request(kind, "c1", &rolled_back(), None);
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            let text = v[field].as_str().unwrap();
            assert!(text.contains("non-zero exit (1)"), "{kind:?}: {text}");
            assert!(!r.headers.iter().any(|(h, _)| *h == SIGNATURE_HEADER));
        }
        let r = request(Kind::Teams, "c1", &rolled_back(), None);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["@type"], "MessageCard");
        assert_eq!(v["themeColor"], "D70000");
        assert_eq!(
            v["title"],
            "reconciler: shop_web rolled back (commit a1b2c3d)"
        );
    }
}
