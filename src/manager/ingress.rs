//! The ingress proxy: every published port (ingress mode) listens on the node and balances
//! connections across the service's healthy running tasks, skipping the others. This kernel
//! has no IPVS, so the backend is a userspace TCP proxy (chosen at start-up and shown in status);
//! an IPVS or nftables backend can take its place behind the same backend list.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::spec::model::{Protocol, PublishMode};
use crate::store::{State, TaskState};

/// Container addresses by task id, filled by the agent loop from what Docker reports.
pub type Addresses = Arc<RwLock<HashMap<String, IpAddr>>>;

pub struct Ingress {
    bind: IpAddr,
    listeners: BTreeMap<u16, Listener>,
    /// Ports that could not be bound, with why.
    failures: BTreeMap<u16, String>,
    /// The same, for status.
    status: PortFailures,
}

/// Published ports that cannot be bound, with the error, for status.
pub type PortFailures = Arc<RwLock<BTreeMap<u16, String>>>;

struct Listener {
    service: String,
    /// The address it is bound to (a port's host IP, or the node's ingress address).
    ip: IpAddr,
    backends: Arc<RwLock<Vec<SocketAddr>>>,
    stop: CancellationToken,
}

/// A published port as the ingress serves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    pub service: String,
    /// The host IP the stack file gave (`127.0.0.1:8080:80`): the port listens there only.
    pub host_ip: Option<IpAddr>,
    pub backends: Vec<SocketAddr>,
}

/// The published TCP ports the state asks for, with their backends.
pub fn wanted(state: &State, addresses: &HashMap<String, IpAddr>) -> BTreeMap<u16, Published> {
    let mut out = BTreeMap::new();
    for svc in state.services.values() {
        for p in &svc.spec.endpoint.ports {
            let Some(published) = p.published else {
                continue;
            };
            if p.mode != PublishMode::Ingress || p.protocol != Protocol::Tcp {
                continue;
            }
            let mut backends: Vec<SocketAddr> = state
                .tasks_of(&svc.spec.name)
                .filter(|t| {
                    t.status.state == TaskState::Running && t.desired_state == TaskState::Running
                })
                .filter(|t| {
                    t.endpoint
                        .ports
                        .iter()
                        .any(|q| q.published == Some(published))
                })
                .filter_map(|t| {
                    addresses
                        .get(&t.id)
                        .map(|ip| SocketAddr::new(*ip, p.target))
                })
                .collect();
            backends.sort();
            let host_ip = p
                .host_ip
                .as_deref()
                .and_then(|ip| ip.trim_matches(['[', ']']).parse().ok());
            out.insert(
                published,
                Published {
                    service: svc.spec.name.clone(),
                    host_ip,
                    backends,
                },
            );
        }
    }
    out
}

impl Ingress {
    pub fn new(bind: IpAddr) -> Self {
        Ingress {
            bind,
            listeners: BTreeMap::new(),
            failures: BTreeMap::new(),
            status: Default::default(),
        }
    }

    /// A handle on the ports that cannot be bound, for status.
    pub fn failures(&self) -> PortFailures {
        self.status.clone()
    }

    pub fn backend_name(&self) -> &'static str {
        "userspace-proxy"
    }

    /// Follow the store until `shutdown`. The ingress is shared so that a restarted loop (after
    /// a panic) carries on with the listeners it has.
    pub async fn run(
        this: Arc<tokio::sync::Mutex<Ingress>>,
        shared: Arc<Shared>,
        shutdown: CancellationToken,
    ) {
        let mut this = this.lock().await;
        let mut changes = shared.subscribe();
        loop {
            let want = {
                let addresses = shared.addresses.read().expect("lock").clone();
                shared.with_state(|s| wanted(s, &addresses))
            };
            this.reconcile(want).await;
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = changes.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
        for l in this.listeners.values() {
            l.stop.cancel();
        }
    }

    async fn reconcile(&mut self, want: BTreeMap<u16, Published>) {
        let bind = self.bind;
        self.listeners.retain(|port, l| {
            let keep = want
                .get(port)
                .is_some_and(|p| p.service == l.service && p.host_ip.unwrap_or(bind) == l.ip);
            if !keep {
                l.stop.cancel();
            }
            keep
        });
        self.failures.retain(|port, _| want.contains_key(port));
        for (port, p) in want {
            if let Some(l) = self.listeners.get(&port) {
                *l.backends.write().expect("lock") = p.backends;
                continue;
            }
            let ip = p.host_ip.unwrap_or(self.bind);
            match TcpListener::bind((ip, port)).await {
                Ok(listener) => {
                    tracing::info!(port, %ip, service = %p.service, "publishing port");
                    self.failures.remove(&port);
                    let l = Listener {
                        service: p.service,
                        ip,
                        backends: Arc::new(RwLock::new(p.backends)),
                        stop: CancellationToken::new(),
                    };
                    tokio::spawn(serve(listener, l.backends.clone(), l.stop.clone()));
                    self.listeners.insert(port, l);
                }
                Err(e) => {
                    // Said once per port and reason, not on every pass (it is retried).
                    let why = e.to_string();
                    if self.failures.get(&port) != Some(&why) {
                        tracing::warn!(port, %ip, service = %p.service, error = %why, "cannot publish port; retrying");
                        self.failures.insert(port, why);
                    }
                }
            }
        }
        *self.status.write().expect("lock") = self.failures.clone();
    }
}

async fn serve(
    listener: TcpListener,
    backends: Arc<RwLock<Vec<SocketAddr>>>,
    stop: CancellationToken,
) {
    let next = Arc::new(AtomicUsize::new(0));
    loop {
        let (mut client, _) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let (backends, next) = (backends.clone(), next.clone());
        tokio::spawn(async move {
            let list = backends.read().expect("lock").clone();
            // Round robin; a backend that refuses is skipped for this connection.
            for _ in 0..list.len() {
                let i = next.fetch_add(1, Ordering::Relaxed) % list.len();
                let connect =
                    tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(list[i]));
                if let Ok(Ok(mut upstream)) = connect.await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    return;
                }
            }
        });
    }
}
