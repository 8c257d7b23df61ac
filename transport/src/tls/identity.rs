//! The Sluice names a certificate can carry, and who they make its holder.

use rustls::pki_types::CertificateDer;

/// The domain every Sluice name ends in.
const DOMAIN: &str = "sluice";

/// Who a certificate says its holder is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Identity {
    /// The coordinator (`coordinator.sluice`).
    Coordinator,
    /// The worker with this id (`<id>.worker.sluice`).
    Worker(String),
    /// An operator or tool allowed to submit, cancel and take savepoints
    /// (`<name>.admin.sluice`).
    Admin(String),
}

/// Why a certificate's names do not make a Sluice identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The peer presented no certificate (cannot happen with the cluster's mutual TLS; kept
    /// so that a configuration mistake is refused rather than trusted).
    #[error("it presented no certificate")]
    NoCertificate,
    /// The certificate could not be parsed.
    #[error("its certificate cannot be read: {0}")]
    Unreadable(String),
    /// No DNS name in it is a Sluice name.
    #[error("its certificate names no Sluice identity (coordinator.sluice, <id>.worker.sluice or <name>.admin.sluice); it names {0:?}")]
    None(Vec<String>),
    /// Several Sluice names: refused rather than guessing which one counts.
    #[error("its certificate names several Sluice identities ({0:?}); a node's certificate must name exactly one")]
    Several(Vec<String>),
    /// A wildcard Sluice name: it would answer for every node of a kind.
    #[error("its certificate has the wildcard name {0}; a node's certificate names exactly one node")]
    Wildcard(String),
    /// The peer proved another identity than the one dialed.
    #[error("it is {found}, not {expected}")]
    Unexpected {
        /// Who was dialed.
        expected: String,
        /// Who answered.
        found: String,
    },
    /// A name that is not a valid DNS label (a worker id with characters DNS does not allow).
    #[error("{0} is not usable as a certificate name (lowercase letters, digits and '-' only, at most 63)")]
    BadName(String),
}

impl Identity {
    /// The DNS name a certificate of this identity carries.
    pub fn dns_name(&self) -> String {
        match self {
            Identity::Coordinator => format!("coordinator.{DOMAIN}"),
            Identity::Worker(id) => format!("{id}.worker.{DOMAIN}"),
            Identity::Admin(name) => format!("{name}.admin.{DOMAIN}"),
        }
    }

    /// Checks that `label` can stand in a certificate name (worker ids and admin names do).
    pub fn check_label(label: &str) -> Result<(), IdentityError> {
        let ok = !label.is_empty()
            && label.len() <= 63
            // Lowercase only: DNS names compare without case, so `W1` and `w1` would be one
            // identity with two spellings.
            && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if ok {
            Ok(())
        } else {
            Err(IdentityError::BadName(label.to_string()))
        }
    }

    /// The identity a DNS name makes, if it is a Sluice name.
    pub fn of_name(name: &str) -> Option<Identity> {
        let name = name.to_ascii_lowercase();
        let rest = name.strip_suffix(&format!(".{DOMAIN}"))?;
        if rest == "coordinator" {
            return Some(Identity::Coordinator);
        }
        let (label, kind) = rest.split_once('.')?;
        Identity::check_label(label).ok()?;
        match kind {
            "worker" => Some(Identity::Worker(label.to_string())),
            "admin" => Some(Identity::Admin(label.to_string())),
            _ => None,
        }
    }

    /// The one Sluice identity `cert` names.
    pub fn of_certificate(cert: &CertificateDer<'_>) -> Result<Identity, IdentityError> {
        let parsed = webpki::EndEntityCert::try_from(cert).map_err(|e| IdentityError::Unreadable(e.to_string()))?;
        let names: Vec<String> = parsed.valid_dns_names().map(str::to_string).collect();
        if let Some(w) = names
            .iter()
            .find(|n| n.contains('*') && n.to_ascii_lowercase().ends_with(DOMAIN))
        {
            return Err(IdentityError::Wildcard(w.clone()));
        }
        let mut found: Vec<Identity> = names.iter().filter_map(|n| Identity::of_name(n)).collect();
        found.dedup();
        match found.len() {
            0 => Err(IdentityError::None(names)),
            1 => Ok(found.remove(0)),
            _ => Err(IdentityError::Several(found.iter().map(Identity::dns_name).collect())),
        }
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.dns_name())
    }
}

/// The identity of a peer that completed a handshake with `certs`.
pub(super) fn of_peer(certs: Option<&[CertificateDer<'static>]>, peer: &str) -> Result<Identity, super::TlsError> {
    let leaf = certs.and_then(|c| c.first()).ok_or(IdentityError::NoCertificate);
    leaf.and_then(Identity::of_certificate)
        .map_err(|source| super::TlsError::Identity {
            peer: peer.to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_with(names: &[&str]) -> CertificateDer<'static> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        rcgen::generate_simple_self_signed(names).unwrap().cert.der().clone()
    }

    #[test]
    fn a_certificate_names_exactly_one_identity_and_no_wildcard() {
        assert_eq!(
            Identity::of_certificate(&cert_with(&["w1.worker.sluice", "localhost"])),
            Ok(Identity::Worker("w1".into()))
        );
        assert!(matches!(
            Identity::of_certificate(&cert_with(&["*.worker.sluice", "w1.worker.sluice"])),
            Err(IdentityError::Wildcard(_))
        ));
        assert!(matches!(
            Identity::of_certificate(&cert_with(&["coordinator.sluice", "w1.worker.sluice"])),
            Err(IdentityError::Several(_))
        ));
        assert!(matches!(
            Identity::of_certificate(&cert_with(&["example.com"])),
            Err(IdentityError::None(_))
        ));
    }

    #[test]
    fn names_map_to_identities_and_back() {
        for id in [
            Identity::Coordinator,
            Identity::Worker("w-1".into()),
            Identity::Admin("alice".into()),
        ] {
            assert_eq!(Identity::of_name(&id.dns_name()), Some(id));
        }
        for other in [
            "sluice",
            "x.sluice",
            "a.b.worker.sluice",
            "w_1.worker.sluice",
            "localhost",
            ".worker.sluice",
        ] {
            assert_eq!(Identity::of_name(other), None, "{other}");
        }
    }
}
