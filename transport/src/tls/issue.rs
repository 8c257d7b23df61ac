//! Making a cluster's certificates: a certificate authority, and certificates for its nodes,
//! admins and REST port signed by it (what `sluice certs` writes). Ed25519 throughout.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, PublicKeyData, PKCS_ED25519,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use super::Identity;

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// rcgen refused (a name that is not a DNS name, a key it cannot read).
    #[error("cannot make the certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// The CA files given do not make an issuer.
    #[error("the CA certificate and key do not belong together or cannot be read: {0}")]
    BadCa(String),
}

/// How long a certificate is valid.
#[derive(Debug, Clone, Copy)]
pub enum Validity {
    /// From `from` for `days` days.
    Days {
        /// The start.
        from: SystemTime,
        /// The length.
        days: u32,
    },
    /// 1975 to 4096: for tests and the simulation, whose clocks run in other years.
    Forever,
}

/// A certificate and its private key, PEM.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (keep it private: `sluice certs` writes it readable by its owner only).
    pub key_pem: String,
}

/// A certificate authority that signs.
pub struct Issuer {
    issuer: rcgen::Issuer<'static, KeyPair>,
    /// The CA's own certificate and key.
    pub ca: IssuedCert,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer").finish_non_exhaustive()
    }
}

/// The start of an Ed25519 key in PKCS#8 v2 (with its public key, as ring makes it), and of
/// one in v1 (the seed alone); the 32 bytes of the seed follow either.
const PKCS8_V2_ED25519: [u8; 16] = [
    0x30, 0x51, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
const PKCS8_V1_ED25519: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// `key` as PEM in PKCS#8 v1: the form OpenSSL 3.0 reads (it refuses ring's v2), so that
/// `openssl s_client` and `curl` can use the keys when debugging. rustls, ring and rcgen read
/// both.
fn pkcs8_v1_pem(key: &KeyPair) -> String {
    let der = key.serialize_der();
    let v1 = match der.strip_prefix(&PKCS8_V2_ED25519[..]) {
        Some(rest) if rest.len() >= 32 => [&PKCS8_V1_ED25519[..], &rest[..32]].concat(),
        _ => der,
    };
    pem::encode(&pem::Pem::new("PRIVATE KEY", v1))
}

fn at(t: SystemTime) -> time::OffsetDateTime {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn params(names: Vec<String>, common_name: &str, validity: Validity) -> Result<CertificateParams, IssueError> {
    let mut p = CertificateParams::new(names)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "Sluice");
    p.distinguished_name = dn;
    if let Validity::Days { from, days } = validity {
        // An hour's slack for clocks a little behind the issuer's.
        p.not_before = at(from - Duration::from_secs(3600));
        p.not_after = at(from + Duration::from_secs(u64::from(days) * 86_400));
    }
    Ok(p)
}

/// Makes a new certificate authority named `name`.
pub fn issue_ca(name: &str, validity: Validity) -> Result<Issuer, IssueError> {
    let mut p = params(Vec::new(), name, validity)?;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate_for(&PKCS_ED25519)?;
    let cert = p.self_signed(&key)?;
    let ca = IssuedCert {
        cert_pem: cert.pem(),
        key_pem: pkcs8_v1_pem(&key),
    };
    Ok(Issuer {
        issuer: rcgen::Issuer::new(p, key),
        ca,
    })
}

/// An issuer from an existing CA's certificate and key (to add or renew node certificates);
/// refused if the key is not the certificate's.
pub fn load_issuer(cert_pem: &str, key_pem: &str) -> Result<Issuer, IssueError> {
    let bad = |e: &dyn std::fmt::Display| IssueError::BadCa(e.to_string());
    let key = KeyPair::from_pem(key_pem).map_err(|e| bad(&e))?;
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| bad(&e))?;
    let parsed = webpki::EndEntityCert::try_from(&der).map_err(|e| bad(&e))?;
    if parsed.subject_public_key_info().as_ref() != key.subject_public_key_info().as_slice() {
        return Err(bad(&"ca.key is not the private key of ca.pem"));
    }
    let v1 = pkcs8_v1_pem(&key);
    let issuer = rcgen::Issuer::from_ca_cert_pem(cert_pem, key).map_err(|e| bad(&e))?;
    Ok(Issuer {
        issuer,
        ca: IssuedCert {
            cert_pem: cert_pem.to_string(),
            key_pem: v1,
        },
    })
}

impl Issuer {
    fn sign(&self, mut p: CertificateParams, usages: Vec<ExtendedKeyUsagePurpose>) -> Result<IssuedCert, IssueError> {
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = usages;
        p.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate_for(&PKCS_ED25519)?;
        let cert = p.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: pkcs8_v1_pem(&key),
        })
    }

    /// A certificate for a node or an admin: its one Sluice name, usable on both sides of a
    /// handshake (a worker both dials and accepts).
    pub fn issue_node(&self, who: &Identity, validity: Validity) -> Result<IssuedCert, IssueError> {
        let p = params(vec![who.dns_name()], &who.dns_name(), validity)?;
        let usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(p, usages)
    }

    /// A certificate for a REST port reached as `hosts` (DNS names or IP addresses).
    pub fn issue_rest(&self, hosts: &[String], validity: Validity) -> Result<IssuedCert, IssueError> {
        let first = hosts.first().map(String::as_str).unwrap_or("sluice-rest");
        let p = params(hosts.to_vec(), first, validity)?;
        self.sign(p, vec![ExtendedKeyUsagePurpose::ServerAuth])
    }
}

/// [`Issuer::issue_node`] as a free function (reads better at call sites that make one).
pub fn issue_node(issuer: &Issuer, who: &Identity, validity: Validity) -> Result<IssuedCert, IssueError> {
    issuer.issue_node(who, validity)
}
