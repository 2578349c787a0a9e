//! Names completed from the running cluster, for shells with dynamic completion: after
//! `source <(COMPLETE=bash reconciler)` (zsh, fish, elvish alike), `reconciler service ps <TAB>`
//! offers the services the API at `RECONCILER_SERVER` (default 127.0.0.1:7777) lists (and
//! `node ps` the nodes, `stack ps` the stacks, `history` the commits). When
//! nothing answers within a second, nothing is offered: a shell must never hang on a TAB.

use std::time::Duration;

use clap_complete::CompletionCandidate;

use super::client::ServerArgs;
use super::up::DEFAULT_LISTEN;
use crate::api::views::{ServiceView, StackView};

/// Which names a word takes: the argument is shared by `service ps`, `stack ps` and `node ps`,
/// so the words typed so far say which.
fn listing() -> Option<&'static str> {
    let words: Vec<String> = std::env::args().skip_while(|a| a != "--").collect();
    words.iter().find_map(|w| match w.as_str() {
        "service" => Some("service"),
        "stack" => Some("stack"),
        "node" => Some("node"),
        "history" => Some("history"),
        _ => None,
    })
}

/// Service names, stack names or commit ids, as the words typed so far ask.
pub fn names() -> Vec<CompletionCandidate> {
    match listing() {
        Some("service") => services(),
        Some("stack") => stacks(),
        Some("history") => commits(),
        Some("node") => nodes(),
        _ => Vec::new(),
    }
}

pub fn services() -> Vec<CompletionCandidate> {
    let v: Vec<ServiceView> = fetch("/api/v1/services").unwrap_or_default();
    v.into_iter()
        .map(|s| CompletionCandidate::new(s.name).help(Some(s.image.into())))
        .collect()
}

pub fn stacks() -> Vec<CompletionCandidate> {
    let v: Vec<StackView> = fetch("/api/v1/stacks").unwrap_or_default();
    v.into_iter()
        .map(|s| CompletionCandidate::new(s.name))
        .collect()
}

pub fn nodes() -> Vec<CompletionCandidate> {
    let v: Vec<crate::store::Node> = fetch("/api/v1/nodes").unwrap_or_default();
    v.into_iter()
        .map(|n| {
            let role = match n.role {
                crate::store::NodeRole::Manager => "manager",
                crate::store::NodeRole::Worker => "worker",
            };
            CompletionCandidate::new(n.hostname).help(Some(format!("{role} {}", n.id).into()))
        })
        .collect()
}

pub fn commits() -> Vec<CompletionCandidate> {
    let v: Vec<crate::store::CommitRecord> = fetch("/api/v1/history").unwrap_or_default();
    v.into_iter()
        .map(|r| {
            let short = crate::store::history::short(&r.commit).to_string();
            CompletionCandidate::new(short).help(Some(r.summary.into()))
        })
        .collect()
}

fn fetch<T: serde::de::DeserializeOwned>(path: &str) -> Option<T> {
    let server = std::env::var("RECONCILER_SERVER")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("http://{DEFAULT_LISTEN}"));
    let args = ServerArgs {
        server,
        api_token: None,
        data_dir: Default::default(),
    };
    super::client::Client::with_timeout(&args, Duration::from_secs(1))
        .ok()?
        .get(path)
        .ok()
}
