//! The CA, tokens and mutual TLS together, over real TLS connections on loopback.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::ca::{self, NodeIdentity, Role, RootCa, DEFAULT_CERT_EXPIRY};
use super::tls::{self, ClientAuth, Credentials, TlsPem};
use super::token::JoinToken;

const T: Duration = Duration::from_secs(10);

fn identity(node: &str, role: Role, ca: &RootCa) -> NodeIdentity {
    NodeIdentity {
        node_id: node.into(),
        role,
        cluster_id: ca.cluster_id().into(),
    }
}

/// A node's credentials as a join gives them: its own key, a certificate the CA signed.
fn credentials(ca: &RootCa, node: &str, role: Role) -> TlsPem {
    let (key, csr) = ca::new_key_and_request().unwrap();
    let cert = ca
        .sign(
            &csr,
            &identity(node, role, ca),
            SystemTime::now(),
            DEFAULT_CERT_EXPIRY,
        )
        .unwrap();
    TlsPem {
        root: ca.cert_pem().into(),
        cert,
        key: key.to_string(),
    }
}

fn live(pem: &TlsPem) -> Arc<Credentials> {
    Credentials::new(pem.clone()).unwrap()
}

/// One TLS server accepting one connection: answers the client's identity as it sees it, or
/// why the handshake failed.
async fn serve_once(
    server: &TlsPem,
) -> (u16, tokio::task::JoinHandle<Result<NodeIdentity, String>>) {
    let acceptor = TlsAcceptor::from(Arc::new(
        tls::server_config(&live(server), ClientAuth::Required).unwrap(),
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut conn = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        let who =
            tls::peer_identity(conn.get_ref().1.peer_certificates()).map_err(|e| e.to_string())?;
        conn.write_all(who.node_id.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        conn.shutdown().await.map_err(|e| e.to_string())?;
        Ok(who)
    });
    (port, task)
}

/// Dial with `config`; the bytes the server answered, or the error.
async fn dial(port: u16, config: rustls::ClientConfig) -> Result<String, String> {
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let mut conn = TlsConnector::from(Arc::new(config))
        .connect(tls::manager_name(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer)
        .await
        .map_err(|e| e.to_string())?;
    Ok(answer)
}

#[tokio::test]
async fn a_node_certificate_from_the_cluster_ca_opens_a_mutual_tls_link() {
    let ca = RootCa::generate("cluster-a", SystemTime::now()).unwrap();
    let manager = credentials(&ca, "m1", Role::Manager);
    let worker = credentials(&ca, "w1", Role::Worker);
    let (port, server) = serve_once(&manager).await;
    let answer = tokio::time::timeout(T, dial(port, tls::client_config(&live(&worker)).unwrap()))
        .await
        .unwrap();
    assert_eq!(answer.as_deref(), Ok("w1"));
    // The manager knows the worker by its certificate: node, role, cluster.
    let seen = server.await.unwrap().unwrap();
    assert_eq!(seen, identity("w1", Role::Worker, &ca));
    assert_eq!(
        live(&manager).identity(),
        identity("m1", Role::Manager, &ca)
    );
}

#[tokio::test]
async fn a_client_without_a_certificate_or_from_another_cluster_is_refused() {
    let ca = RootCa::generate("cluster-a", SystemTime::now()).unwrap();
    let other = RootCa::generate("cluster-b", SystemTime::now()).unwrap();
    let manager = credentials(&ca, "m1", Role::Manager);

    // No client certificate: trusts the server, shows nothing of its own.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der().clone()).unwrap();
    let anonymous = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let (port, server) = serve_once(&manager).await;
    let answer = tokio::time::timeout(T, dial(port, anonymous))
        .await
        .unwrap();
    assert!(answer.is_err(), "{answer:?}");
    let refused = server.await.unwrap().unwrap_err();
    assert!(refused.contains("certificate"), "{refused}");

    // A certificate from another cluster's CA, which trusts this cluster's root: still no.
    let mut stranger = credentials(&other, "x1", Role::Manager);
    stranger.root = ca.cert_pem().into();
    let (port, server) = serve_once(&manager).await;
    let answer = tokio::time::timeout(T, dial(port, tls::client_config(&live(&stranger)).unwrap()))
        .await
        .unwrap();
    assert!(answer.is_err(), "{answer:?}");
    let refused = server.await.unwrap().unwrap_err();
    assert!(refused.contains("certificate"), "{refused}");
}

#[tokio::test]
async fn a_node_refuses_a_manager_of_another_cluster_and_a_worker_posing_as_a_manager() {
    let ca = RootCa::generate("cluster-a", SystemTime::now()).unwrap();
    let other = RootCa::generate("cluster-b", SystemTime::now()).unwrap();
    let node = credentials(&ca, "w1", Role::Worker);

    // A server in the middle with a certificate of its own cluster.
    let impostor = credentials(&other, "m9", Role::Manager);
    let (port, _server) = serve_once(&TlsPem {
        root: ca.cert_pem().into(),
        ..impostor
    })
    .await;
    let answer = tokio::time::timeout(T, dial(port, tls::client_config(&live(&node)).unwrap()))
        .await
        .unwrap();
    let err = answer.unwrap_err();
    assert!(err.contains("certificate"), "{err}");

    // A worker of the same cluster answering where a manager is dialled: its certificate
    // names the worker role, not the manager's name.
    let worker_server = credentials(&ca, "w2", Role::Worker);
    let (port, _server) = serve_once(&worker_server).await;
    let answer = tokio::time::timeout(T, dial(port, tls::client_config(&live(&node)).unwrap()))
        .await
        .unwrap();
    let err = answer.unwrap_err();
    assert!(err.contains("certificate"), "{err}");
}

#[test]
fn a_join_token_trusts_only_the_ca_it_was_made_for() {
    let ca = RootCa::generate("cluster-a", SystemTime::now()).unwrap();
    let other = RootCa::generate("cluster-a", SystemTime::now()).unwrap();
    let token: JoinToken = JoinToken::generate(ca.digest())
        .unwrap()
        .to_string()
        .parse()
        .unwrap();
    assert!(token.trusts(ca.cert_der()));
    // Same cluster name, another key: a server in the middle cannot pass for the cluster.
    assert!(!token.trusts(other.cert_der()));
    let mut tampered = ca.cert_der().to_vec();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert!(!token.trusts(&tampered));
}

#[test]
fn the_ca_writes_the_subject_itself_and_keeps_its_key_to_managers() {
    let now = SystemTime::now();
    let ca = RootCa::generate("cluster-a", now).unwrap();
    // Whatever the request says, the certificate says what the CA decided.
    let (_key, csr) = ca::new_key_and_request().unwrap();
    let pem = ca
        .sign(
            &csr,
            &identity("n1", Role::Worker, &ca),
            now,
            Duration::from_secs(3600),
        )
        .unwrap();
    let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    assert_eq!(
        ca::identity(&der).unwrap(),
        identity("n1", Role::Worker, &ca)
    );
    let (from, to) = ca::validity(&der).unwrap();
    assert!(
        from <= now && to > now + Duration::from_secs(3500),
        "{from:?} {to:?}"
    );

    // A CA for another cluster, or one read back without its key, signs nothing.
    let wrong = NodeIdentity {
        cluster_id: "cluster-b".into(),
        ..identity("n1", Role::Worker, &ca)
    };
    let err = ca.sign(&csr, &wrong, now, DEFAULT_CERT_EXPIRY).unwrap_err();
    assert!(err.to_string().contains("cluster-b"), "{err}");
    let public = RootCa::from_pem(ca.cert_pem(), None).unwrap();
    assert_eq!(public.cluster_id(), "cluster-a");
    assert!(public.key_pem().is_none());
    let err = public
        .sign(
            &csr,
            &identity("n1", Role::Worker, &ca),
            now,
            DEFAULT_CERT_EXPIRY,
        )
        .unwrap_err();
    assert!(err.to_string().contains("no CA key"), "{err}");
    // Read back with its key (a manager restarting): signs, and the root is the same.
    let key = ca.key_pem().unwrap();
    let again = RootCa::from_pem(ca.cert_pem(), Some(&key)).unwrap();
    assert_eq!(again.digest(), ca.digest());
    again
        .sign(
            &csr,
            &identity("n2", Role::Manager, &ca),
            now,
            DEFAULT_CERT_EXPIRY,
        )
        .unwrap();
    // A forged request is refused.
    let mut lines: Vec<String> = csr.lines().map(str::to_string).collect();
    let body = lines.len() - 2; // the last line of base64: the signature's end
    let flipped = if lines[body].starts_with('A') {
        "B"
    } else {
        "A"
    };
    lines[body].replace_range(0..1, flipped);
    let forged = lines.join("\n");
    assert_ne!(forged, csr);
    assert!(ca
        .sign(
            &forged,
            &identity("n3", Role::Worker, &ca),
            now,
            DEFAULT_CERT_EXPIRY
        )
        .is_err());
}

#[test]
fn certificates_renew_between_half_and_four_fifths_of_their_life() {
    let from = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let to = from + Duration::from_secs(1000);
    assert_eq!(ca::renew_at(from, to, 0.0), from + Duration::from_secs(500));
    assert_eq!(ca::renew_at(from, to, 1.0), from + Duration::from_secs(800));
    let mid = ca::renew_at(from, to, 0.5);
    assert!(mid > from + Duration::from_secs(640) && mid < from + Duration::from_secs(660));
    // Out-of-range input stays within the window.
    assert_eq!(
        ca::renew_at(from, to, -3.0),
        from + Duration::from_secs(500)
    );
    assert_eq!(ca::renew_at(from, to, 7.0), from + Duration::from_secs(800));
}
