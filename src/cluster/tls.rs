//! Mutual TLS between nodes (rustls with the ring provider): both ends present a certificate
//! from the cluster's root and check the other's. A node is known by the identity in its
//! certificate ([`super::ca::identity`]), never by its address.

use std::sync::Arc;

use anyhow::Context as _;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::ca::{self, NodeIdentity, Role};

/// What a node holds to take part: the cluster's root, its own certificate and key.
pub struct NodeCredentials {
    pub root: CertificateDer<'static>,
    pub cert: CertificateDer<'static>,
    pub key: PrivateKeyDer<'static>,
}

impl NodeCredentials {
    pub fn from_pem(root_pem: &str, cert_pem: &str, key_pem: &str) -> anyhow::Result<Self> {
        Ok(NodeCredentials {
            root: CertificateDer::from_pem_slice(root_pem.as_bytes())
                .context("the CA certificate is not PEM")?,
            cert: CertificateDer::from_pem_slice(cert_pem.as_bytes())
                .context("the node certificate is not PEM")?,
            key: PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
                .context("the node key is not a PEM private key")?,
        })
    }

    /// Who this node's certificate says it is.
    pub fn identity(&self) -> anyhow::Result<NodeIdentity> {
        ca::identity(&self.cert)
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(root: &CertificateDer<'static>) -> anyhow::Result<Arc<RootCertStore>> {
    let mut store = RootCertStore::empty();
    store
        .add(root.clone())
        .context("the CA certificate is not usable as a root")?;
    Ok(Arc::new(store))
}

/// A manager's listener: every client must present a certificate from the cluster's root.
pub fn server_config(creds: &NodeCredentials) -> anyhow::Result<ServerConfig> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(&creds.root)?, provider())
        .build()
        .context("building the client-certificate check")?;
    ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![creds.cert.clone()], creds.key.clone_key())
        .context("the node's certificate and key do not go together")
}

/// A node dialling a manager: it shows its own certificate and accepts only a manager of the
/// same root (the name checked is the role in the manager's certificate, not an address).
pub fn client_config(creds: &NodeCredentials) -> anyhow::Result<ClientConfig> {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(&creds.root)?)
        .with_client_auth_cert(vec![creds.cert.clone()], creds.key.clone_key())
        .context("the node's certificate and key do not go together")
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
