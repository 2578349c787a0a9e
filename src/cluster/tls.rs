//! Mutual TLS between nodes (rustls with the ring provider): both ends present a certificate
//! from the cluster's root and check the other's. A node is known by the identity in its
//! certificate ([`super::ca::identity`]), never by its address.
//!
//! A running node's certificate changes under it (renewal, promote, demote), so its TLS
//! settings do not hold a certificate: they ask [`Credentials`] at every handshake, and a
//! renewed certificate is used by the next connection made, in both directions.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SignatureScheme};
use tokio::net::{TcpListener, TcpStream};

use super::ca::{self, NodeIdentity, Role};

/// A node's certificate, key and the cluster's root, in PEM, as its data dir keeps them.
#[derive(Clone)]
pub struct TlsPem {
    pub root: String,
    pub cert: String,
    pub key: String,
}

/// The credentials a node presents now: replaced whole when its certificate is renewed.
pub struct Credentials {
    root_pem: String,
    root: CertificateDer<'static>,
    current: RwLock<Arc<Current>>,
}

struct Current {
    pem: TlsPem,
    key: Arc<CertifiedKey>,
    identity: NodeIdentity,
    validity: (SystemTime, SystemTime),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("identity", &self.identity())
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Current {
    fn from_pem(pem: TlsPem) -> anyhow::Result<Current> {
        let cert = CertificateDer::from_pem_slice(pem.cert.as_bytes())
            .context("the node certificate is not PEM")?;
        let key = PrivateKeyDer::from_pem_slice(pem.key.as_bytes())
            .context("the node key is not a PEM private key")?;
        let signing = provider()
            .key_provider
            .load_private_key(key)
            .context("the node key is not usable")?;
        let certified = CertifiedKey::new(vec![cert.clone()], signing);
        certified
            .keys_match()
            .context("the node's certificate and key do not go together")?;
        Ok(Current {
            identity: ca::identity(&cert)?,
            validity: ca::validity(&cert)?,
            key: Arc::new(certified),
            pem,
        })
    }
}

impl Credentials {
    pub fn new(pem: TlsPem) -> anyhow::Result<Arc<Credentials>> {
        let root = CertificateDer::from_pem_slice(pem.root.as_bytes())
            .context("the CA certificate is not PEM")?;
        Ok(Arc::new(Credentials {
            root_pem: pem.root.clone(),
            root,
            current: RwLock::new(Arc::new(Current::from_pem(pem)?)),
        }))
    }

    fn current(&self) -> Arc<Current> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Present `pem` from the next handshake on. The root stays the cluster's.
    pub fn replace(&self, pem: TlsPem) -> anyhow::Result<()> {
        anyhow::ensure!(
            pem.root == self.root_pem,
            "a renewed certificate must come with the same root"
        );
        let new = Arc::new(Current::from_pem(pem)?);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = new;
        Ok(())
    }

    pub fn pem(&self) -> TlsPem {
        self.current().pem.clone()
    }

    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    pub fn root_der(&self) -> &CertificateDer<'static> {
        &self.root
    }

    /// Who the current certificate says this node is.
    pub fn identity(&self) -> NodeIdentity {
        self.current().identity.clone()
    }

    /// From when to when the current certificate is valid.
    pub fn validity(&self) -> (SystemTime, SystemTime) {
        self.current().validity
    }

    /// How long the current certificate has left (zero once expired).
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.validity().1.duration_since(now).unwrap_or_default()
    }

    fn roots(&self) -> anyhow::Result<Arc<RootCertStore>> {
        let mut store = RootCertStore::empty();
        store
            .add(self.root.clone())
            .context("the CA certificate is not usable as a root")?;
        Ok(Arc::new(store))
    }
}

impl ResolvesServerCert for Credentials {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current().key.clone())
    }
}

impl ResolvesClientCert for Credentials {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current().key.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Whether a listener lets a client without a certificate finish the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    Required,
    /// The cluster listener: a node that joins has no certificate yet and may call the CA
    /// service only; every other RPC refuses a caller without one.
    Optional,
}

/// A node's listener. A client certificate, when shown, must come from the cluster's root.
pub fn server_config(creds: &Arc<Credentials>, auth: ClientAuth) -> anyhow::Result<ServerConfig> {
    let builder = WebPkiClientVerifier::builder_with_provider(creds.roots()?, provider());
    let builder = match auth {
        ClientAuth::Required => builder,
        ClientAuth::Optional => builder.allow_unauthenticated(),
    };
    let verifier = builder
        .build()
        .context("building the client-certificate check")?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(creds.clone());
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// A node dialling a manager: it shows its own certificate and accepts only a manager of the
/// same root (the name checked is the role in the manager's certificate, not an address).
pub fn client_config(creds: &Arc<Credentials>) -> anyhow::Result<ClientConfig> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(creds.roots()?)
        .with_client_cert_resolver(creds.clone());
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The name a client verifies in a manager's certificate.
pub fn manager_name() -> ServerName<'static> {
    ServerName::try_from(Role::Manager.name()).expect("a valid DNS name")
}

/// Who the peer of an established connection is, from its certificate.
pub fn peer_identity(certs: Option<&[CertificateDer<'static>]>) -> anyhow::Result<NodeIdentity> {
    let leaf = certs
        .and_then(|c| c.first())
        .context("the peer presented no certificate")?;
    ca::identity(leaf)
}

/// How long a client has to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

type Accepted = Result<tokio_rustls::server::TlsStream<TcpStream>, std::io::Error>;

/// The TLS connections of `listener`, for tonic's `serve_with_incoming`. Each handshake runs
/// on its own, so a slow or failing client holds up no other; a failed one is dropped
/// (tonic sees only finished handshakes).
pub fn incoming(
    listener: TcpListener,
    config: ServerConfig,
) -> tokio_stream::wrappers::ReceiverStream<Accepted> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let (tcp, from) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::debug!(error = %e, "accepting a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                // tonic dropped the stream: the server stopped.
                () = tx.closed() => return,
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%from, error = %e, "a TLS handshake failed")
                    }
                    Err(_) => tracing::debug!(%from, "a TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
