//! Who may talk to the API, and how:
//!
//! - a request whose `Host` is a name this node does not answer to is refused, so that a web
//!   page whose DNS name was rebound to 127.0.0.1 cannot read the state (IP literals cannot be
//!   rebound, so they pass; names must be `localhost`, the machine's hostname or `--api-host`);
//! - a state-changing request (any method but GET and HEAD) must come from no browser origin or
//!   from the API's own (a web page elsewhere cannot post a rollback), and must carry the API
//!   token as `Authorization: Bearer ...`. Every node has one: given (`--api-token`), or made
//!   at its first start and kept in its data dir (`api-token`, its owner's only), where the
//!   command line on the same machine reads it. Reading (the status page, the JSON views)
//!   needs none;
//! - `reconciler up` refuses to listen beyond loopback without a token (see `cli::up`).
//!
//! The webhook receiver is not behind this layer: it is authenticated by its own signature and
//! is reached by the git host under a public name.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq as _;

/// The file in a node's data dir that holds the API token it made for itself.
pub const TOKEN_FILE: &str = "api-token";

/// The node's own API token: the one its data dir keeps, or a new one kept there.
pub fn node_token(data_dir: &std::path::Path) -> anyhow::Result<String> {
    use anyhow::Context as _;
    if let Some(token) = read_token_file(data_dir) {
        return Ok(token);
    }
    let token = crate::cluster::start::random_id(40);
    let path = data_dir.join(TOKEN_FILE);
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        writeln!(file, "{token}")?;
        file.sync_all()?;
    }
    Ok(token)
}

/// The token a node keeps in `data_dir`, if there is one this user may read.
pub fn read_token_file(data_dir: &std::path::Path) -> Option<String> {
    if data_dir.as_os_str().is_empty() {
        return None;
    }
    let text = std::fs::read_to_string(data_dir.join(TOKEN_FILE)).ok()?;
    let token = text.lines().next()?.trim().to_string();
    (!token.is_empty()).then_some(token)
}

/// What the security layer checks against.
#[derive(Clone, Debug, Default)]
pub struct Security {
    /// Required on every state-changing call when set.
    pub token: Option<String>,
    /// Host names (besides IP literals and `localhost`) this node answers to.
    pub hosts: Vec<String>,
}

impl Security {
    pub fn new(token: Option<String>, mut hosts: Vec<String>) -> Self {
        if let Ok(h) = std::fs::read_to_string("/etc/hostname") {
            let h = h.trim();
            if !h.is_empty() {
                hosts.push(h.to_string());
            }
        }
        for h in &mut hosts {
            *h = h.to_ascii_lowercase();
        }
        Security {
            token: token.filter(|t| !t.is_empty()),
            hosts,
        }
    }

    /// Is `host` (a `Host` header: name or IP, with an optional port) one this node answers to?
    pub fn host_allowed(&self, host: &str) -> bool {
        let name = host_name(host).to_ascii_lowercase();
        name.parse::<std::net::IpAddr>().is_ok()
            || name == "localhost"
            || name.ends_with(".localhost")
            || self.hosts.contains(&name)
    }

    fn token_ok(&self, request: &Request) -> bool {
        let Some(expected) = &self.token else {
            return true;
        };
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        given.as_bytes().ct_eq(expected.as_bytes()).into()
    }
}

/// The host part of a `Host` header or an origin's authority: `[::1]:7777` → `::1`.
fn host_name(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    }
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

/// The axum middleware.
pub async fn check(
    State(security): State<Arc<Security>>,
    request: Request,
    next: Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
        .unwrap_or("")
        .to_string();
    if !security.host_allowed(&host) {
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            &format!("this node does not answer to the name {host:?} (add it with --api-host)"),
        );
    }
    let changes_state = !matches!(*request.method(), Method::GET | Method::HEAD);
    if changes_state {
        let origin = request
            .headers()
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok());
        if let Some(origin) = origin {
            let authority = origin.split("://").nth(1).unwrap_or("");
            if !authority.eq_ignore_ascii_case(&host) {
                return refuse(
                    StatusCode::FORBIDDEN,
                    "a page of another origin cannot change this cluster",
                );
            }
        }
        if !security.token_ok(&request) {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "this call changes the cluster: it needs the node's API token (the command line reads it from the node's data dir, --data-dir; or give it with --api-token / RECONCILER_API_TOKEN)",
            );
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_by_ip_localhost_or_name_given_pass_and_others_do_not() {
        let s = Security::new(None, vec!["Reconciler.Example.com".into()]);
        for ok in [
            "127.0.0.1:7777",
            "10.1.2.3",
            "[::1]:7777",
            "localhost:7777",
            "reconciler.example.com",
            "RECONCILER.example.com:443",
        ] {
            assert!(s.host_allowed(ok), "{ok}");
        }
        for bad in [
            "attacker.example",
            "attacker.example:7777",
            "",
            "127.0.0.1.nip.io",
        ] {
            assert!(!s.host_allowed(bad), "{bad}");
        }
    }

    #[test]
    fn host_names_lose_their_port() {
        assert_eq!(host_name("[::1]:80"), "::1");
        assert_eq!(host_name("a.b:80"), "a.b");
        assert_eq!(host_name("a.b"), "a.b");
    }
}
