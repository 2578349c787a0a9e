//! The cluster's own certificate authority, after swarmkit's `ca/`: a root made once at `init`,
//! and node certificates whose subject says who a node is (CN = node ID, OU = role, O = cluster
//! ID). A node makes its own key and sends a certificate request, so its private key never
//! leaves it; the CA writes the subject itself, whatever the request asked for.

use std::time::{Duration, SystemTime};

use anyhow::{bail, Context as _};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

/// A node certificate's lifetime unless `--cert-expiry` says otherwise (Swarm's 2160h).
pub const DEFAULT_CERT_EXPIRY: Duration = Duration::from_secs(90 * 24 * 3600);
/// The root's lifetime (Swarm's 20 years).
const ROOT_EXPIRY: Duration = Duration::from_secs(20 * 365 * 24 * 3600);
/// Certificates are valid from a little before they are made: nodes' clocks differ.
const BACKDATE: Duration = Duration::from_secs(3600);
const ROOT_CN: &str = "reconciler-root-ca";

/// What a node is allowed to do, as its certificate says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Manager,
    Worker,
}

impl Role {
    /// The certificate's OU, and the DNS name in its SANs that peers verify.
    pub fn name(self) -> &'static str {
        match self {
            Role::Manager => "reconciler-manager",
            Role::Worker => "reconciler-worker",
        }
    }

    /// The word users type and read: `manager`, `worker`.
    pub fn word(self) -> &'static str {
        match self {
            Role::Manager => "manager",
            Role::Worker => "worker",
        }
    }

    /// A role from the word users type.
    pub fn from_word(s: &str) -> Option<Role> {
        [Role::Manager, Role::Worker]
            .into_iter()
            .find(|r| r.word() == s)
    }

    fn from_name(s: &str) -> Option<Role> {
        [Role::Manager, Role::Worker]
            .into_iter()
            .find(|r| r.name() == s)
    }
}

/// Who a certificate says its holder is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    pub node_id: String,
    pub role: Role,
    pub cluster_id: String,
}

/// The root certificate, and on managers its key.
pub struct RootCa {
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    key: Option<KeyPair>,
    cluster_id: String,
}

impl std::fmt::Debug for RootCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootCa")
            .field("cluster_id", &self.cluster_id)
            .field("has_key", &self.key.is_some())
            .finish()
    }
}

impl RootCa {
    /// A new root for a new cluster (`init`).
    pub fn generate(cluster_id: &str, now: SystemTime) -> anyhow::Result<RootCa> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, ROOT_CN);
        params
            .distinguished_name
            .push(DnType::OrganizationName, cluster_id);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + ROOT_EXPIRY).into();
        let cert = params.self_signed(&key)?;
        Ok(RootCa {
            cert_der: cert.der().clone(),
            cert_pem: cert.pem(),
            cluster_id: cluster_id.to_string(),
            key: Some(key),
        })
    }

    /// The root as stored: its certificate, and its key where this node keeps it.
    pub fn from_pem(cert_pem: &str, key_pem: Option<&str>) -> anyhow::Result<RootCa> {
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .context("the CA certificate is not PEM")?;
        let (_, cert) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|e| anyhow::anyhow!("the CA certificate cannot be read: {e}"))?;
        let cluster_id = first(cert.subject().iter_organization())
            .context("the CA certificate names no cluster (no O in its subject)")?;
        let key = key_pem
            .map(|k| KeyPair::from_pem(k).context("the CA key is not a PEM private key"))
            .transpose()?;
        Ok(RootCa {
            cert_der,
            cert_pem: cert_pem.to_string(),
            key,
            cluster_id,
        })
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The root key in PEM, for a manager's data dir; None where this node has none.
    pub fn key_pem(&self) -> Option<Zeroizing<String>> {
        self.key.as_ref().map(|k| Zeroizing::new(k.serialize_pem()))
    }

    /// What join tokens carry, so that a joining node can check the CA it is sent.
    pub fn digest(&self) -> [u8; 32] {
        digest(&self.cert_der)
    }

    /// Sign a node's certificate request as `identity` says (the request's own subject and
    /// names are ignored), valid for `validity` from `now`.
    pub fn sign(
        &self,
        csr_pem: &str,
        identity: &NodeIdentity,
        now: SystemTime,
        validity: Duration,
    ) -> anyhow::Result<String> {
        let Some(key) = &self.key else {
            bail!("this node holds no CA key: only managers sign certificates");
        };
        if identity.cluster_id != self.cluster_id {
            bail!(
                "a certificate for cluster {} cannot come from the CA of cluster {}",
                identity.cluster_id,
                self.cluster_id
            );
        }
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .context("the certificate request is not valid")?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, identity.node_id.as_str());
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, identity.role.name());
        params
            .distinguished_name
            .push(DnType::OrganizationName, identity.cluster_id.as_str());
        params.subject_alt_names = vec![
            SanType::DnsName(identity.role.name().try_into()?),
            SanType::DnsName(identity.node_id.as_str().try_into()?),
        ];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + validity).into();
        let issuer = Issuer::from_ca_cert_der(&self.cert_der, key)?;
        Ok(params.signed_by(&csr.public_key, &issuer)?.pem())
    }
}

/// A node's new private key and the certificate request to send to the CA with it.
pub fn new_key_and_request() -> anyhow::Result<(Zeroizing<String>, String)> {
    let key = KeyPair::generate()?;
    let csr = CertificateParams::new(Vec::<String>::new())?.serialize_request(&key)?;
    Ok((Zeroizing::new(key.serialize_pem()), csr.pem()?))
}

/// SHA-256 of a certificate's DER.
pub fn digest(cert_der: &[u8]) -> [u8; 32] {
    Sha256::digest(cert_der).into()
}

/// Who a node certificate (DER) says its holder is.
pub fn identity(cert_der: &[u8]) -> anyhow::Result<NodeIdentity> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| anyhow::anyhow!("the certificate cannot be read: {e}"))?;
    let subject = cert.subject();
    let node_id = first(subject.iter_common_name()).context("the certificate names no node")?;
    let ou = first(subject.iter_organizational_unit()).context("the certificate names no role")?;
    let role = Role::from_name(&ou).with_context(|| format!("unknown role {ou:?}"))?;
    let cluster_id =
        first(subject.iter_organization()).context("the certificate names no cluster")?;
    Ok(NodeIdentity {
        node_id,
        role,
        cluster_id,
    })
}

/// The validity period of a certificate (DER).
pub fn validity(cert_der: &[u8]) -> anyhow::Result<(SystemTime, SystemTime)> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| anyhow::anyhow!("the certificate cannot be read: {e}"))?;
    let at = |t: x509_parser::time::ASN1Time| {
        SystemTime::UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0) as u64)
    };
    Ok((
        at(cert.validity().not_before),
        at(cert.validity().not_after),
    ))
}

/// When a certificate valid from `not_before` to `not_after` is renewed: at a point between
/// 50% and 80% of its lifetime, picked by `unit` in [0, 1), so that the nodes of a cluster
/// made at once do not all renew at once (as Swarm does).
pub fn renew_at(not_before: SystemTime, not_after: SystemTime, unit: f64) -> SystemTime {
    let life = not_after
        .duration_since(not_before)
        .unwrap_or(Duration::ZERO);
    let fraction = 0.5 + 0.3 * unit.clamp(0.0, 1.0);
    not_before + life.mul_f64(fraction)
}

fn first<'a, I>(mut it: I) -> Option<String>
where
    I: Iterator<Item = &'a x509_parser::x509::AttributeTypeAndValue<'a>>,
{
    it.next().and_then(|a| a.as_str().ok()).map(str::to_string)
}
