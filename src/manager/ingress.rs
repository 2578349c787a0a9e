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
}

struct Listener {
    service: String,
    backends: Arc<RwLock<Vec<SocketAddr>>>,
    stop: CancellationToken,
}

/// The published TCP ports the state asks for, with their backends.
pub fn wanted(
    state: &State,
    addresses: &HashMap<String, IpAddr>,
) -> BTreeMap<u16, (String, Vec<SocketAddr>)> {
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
            out.insert(published, (svc.spec.name.clone(), backends));
        }
    }
    out
}

impl Ingress {
    pub fn new(bind: IpAddr) -> Self {
        Ingress {
            bind,
            listeners: BTreeMap::new(),
        }
    }

    pub fn backend_name(&self) -> &'static str {
        "userspace-proxy"
    }

    pub async fn run(mut self, shared: Arc<Shared>, shutdown: CancellationToken) {
        let mut changes = shared.subscribe();
        loop {
            let want = {
                let addresses = shared.addresses.read().expect("lock").clone();
                shared.with_state(|s| wanted(s, &addresses))
            };
            self.reconcile(want).await;
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = changes.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
        for l in self.listeners.values() {
            l.stop.cancel();
        }
    }

    async fn reconcile(&mut self, want: BTreeMap<u16, (String, Vec<SocketAddr>)>) {
        self.listeners.retain(|port, l| {
            let keep = want.get(port).is_some_and(|(svc, _)| *svc == l.service);
            if !keep {
                l.stop.cancel();
            }
            keep
        });
        for (port, (service, backends)) in want {
            if let Some(l) = self.listeners.get(&port) {
                *l.backends.write().expect("lock") = backends;
                continue;
            }
            match TcpListener::bind((self.bind, port)).await {
                Ok(listener) => {
                    tracing::info!(port, service = %service, "publishing port");
                    let l = Listener {
                        service,
                        backends: Arc::new(RwLock::new(backends)),
                        stop: CancellationToken::new(),
                    };
                    tokio::spawn(serve(listener, l.backends.clone(), l.stop.clone()));
                    self.listeners.insert(port, l);
                }
                Err(e) => {
                    tracing::warn!(port, service = %service, error = %e, "cannot publish port");
                }
            }
        }
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
