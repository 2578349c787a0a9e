//! The cluster's gRPC services beside Raft (`proto/cluster.proto`): how a node dials a
//! manager, and who a caller is. The services themselves are in `services`, the TLS
//! settings in `tls`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::DigitallySignedStruct;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use super::ca::{self, NodeIdentity};
use super::tls::{self, Credentials};

/// The generated gRPC code.
pub mod pb {
    tonic::include_proto!("reconciler.cluster.v1");
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

fn endpoint(addr: &str, scheme: &str) -> anyhow::Result<Endpoint> {
    Ok(Endpoint::from_shared(format!("{scheme}://{addr}"))
        .with_context(|| format!("{addr} is not a host:port address"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT))
}

/// Dial a manager as this node: mutual TLS, and the other end must hold a manager
/// certificate of the same root. Each new connection presents the node's certificate of the
/// moment (it changes on renewal, promote and demote).
pub fn dial(addr: &str, creds: &Arc<Credentials>) -> anyhow::Result<Channel> {
    dial_tls(addr, tls::client_config(creds)?)
}

/// [`dial`] for long-lived streams (the dispatcher's sessions): no deadline per call, and
/// HTTP/2 pings to notice a manager that went away without closing the connection.
pub fn dial_stream(addr: &str, creds: &Arc<Credentials>) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .with_context(|| format!("{addr} is not a host:port address"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(Duration::from_secs(2))
        .keep_alive_timeout(Duration::from_secs(3))
        .keep_alive_while_idle(true);
    Ok(endpoint.connect_with_connector_lazy(tls_connector(addr, tls::client_config(creds)?)))
}

/// Dial a manager that must hold a manager certificate of `root_pem`, with no certificate of
/// our own (a node joining, once it trusts the root).
pub fn dial_with_root(addr: &str, root_pem: &str) -> anyhow::Result<Channel> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(
            CertificateDer::from_pem_slice(root_pem.as_bytes())
                .context("the CA certificate is not PEM")?,
        )
        .context("the CA certificate is not usable as a root")?;
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    dial_tls(addr, config)
}

/// Dial a manager trusting nothing it shows: only for fetching the root certificate, which
/// the caller then checks against the digest in its join token before it trusts it.
pub fn dial_unverified(addr: &str) -> anyhow::Result<Channel> {
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(TrustNothingYet))
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    dial_tls(addr, config)
}

/// A lazy channel to `addr` whose connections are TLS by `config`, checking the manager's
/// name (the role in its certificate).
fn dial_tls(addr: &str, config: rustls::ClientConfig) -> anyhow::Result<Channel> {
    Ok(endpoint(addr, "http")?.connect_with_connector_lazy(tls_connector(addr, config)))
}

/// Connections to `addr`, TLS by `config`, checking the manager's name.
fn tls_connector(
    addr: &str,
    config: rustls::ClientConfig,
) -> impl tower::Service<
    http::Uri,
    Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    Error = std::io::Error,
    Future = impl Send,
> + Clone
       + Send
       + 'static {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let target = addr.to_string();
    tower::service_fn(move |_: http::Uri| {
        let (connector, target) = (connector.clone(), target.clone());
        async move {
            let tcp = tokio::net::TcpStream::connect(&target).await?;
            let _ = tcp.set_nodelay(true);
            let tls = connector.connect(tls::manager_name(), tcp).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    })
}

/// Accepts any server certificate (still checking the handshake's signatures): what it
/// fetches is checked afterwards, against the token.
#[derive(Debug)]
struct TrustNothingYet;

impl ServerCertVerifier for TrustNothingYet {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Who called, from the client certificate of the connection; refused without one.
pub fn caller<T>(req: &Request<T>) -> Result<NodeIdentity, Status> {
    let certs = req.peer_certs();
    let leaf = certs.as_ref().and_then(|c| c.first()).ok_or_else(|| {
        Status::unauthenticated("no client certificate: this call is for the nodes of the cluster")
    })?;
    ca::identity(leaf).map_err(|e| Status::unauthenticated(e.to_string()))
}

pub fn json<T: serde::Serialize>(v: &T) -> Result<pb::Json, Status> {
    serde_json::to_vec(v)
        .map(|json| pb::Json { json })
        .map_err(|e| Status::internal(e.to_string()))
}

pub fn from_json<T: serde::de::DeserializeOwned>(j: &pb::Json) -> Result<T, Status> {
    serde_json::from_slice(&j.json).map_err(|e| Status::invalid_argument(e.to_string()))
}
