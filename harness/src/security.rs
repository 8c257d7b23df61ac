//! The daemon's security settings put to use: cluster TLS from `[security]`, the REST port's
//! TLS and bearer tokens from `[rest]`, the process umask, and warnings for ports opened to a
//! network without authentication. See `docs/security.md`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sluice_core::paths::PathPolicy;
use sluice_transport::tls::{ClusterTls, TlsFiles};

use crate::config::Config;
use crate::HarnessError;

/// `umask` as an octal number (000 to 777).
pub fn parse_umask(umask: &str) -> Option<u32> {
    u32::from_str_radix(umask, 8).ok().filter(|m| *m <= 0o777)
}

/// Sets the process umask from `[security] umask`, so output, checkpoint and savepoint files
/// are created without the bits it masks (by default not readable by others).
pub fn apply_umask(config: &Config) {
    let mask = parse_umask(&config.security.umask).expect("validated when the configuration was loaded");
    // SAFETY: umask only swaps the process's file mode mask; it cannot fail.
    unsafe {
        libc::umask(mask as libc::mode_t);
    }
}

/// The node's cluster TLS, if `[security] tls-*` are set.
pub fn cluster_tls(config: &Config) -> Result<Option<ClusterTls>, HarnessError> {
    let s = &config.security;
    let (Some(ca), Some(cert), Some(key)) = (&s.tls_ca, &s.tls_cert, &s.tls_key) else {
        return Ok(None);
    };
    let files = TlsFiles {
        ca: PathBuf::from(ca),
        cert: PathBuf::from(cert),
        key: PathBuf::from(key),
    };
    check_private(&files.key, "security.tls-key")?;
    match ClusterTls::from_files(&files) {
        Ok(tls) => Ok(Some(tls)),
        // This node's own files are wrong: a usage error, not a refusal by a peer.
        Err(e @ sluice_transport::tls::TlsError::Identity { .. }) => Err(HarnessError::BadOption(e.to_string())),
        Err(e) => Err(e.into()),
    }
}

/// The allowed paths of `[security]`.
pub fn path_policy(config: &Config) -> Result<PathPolicy, HarnessError> {
    Ok(PathPolicy::new(&config.security.allowed_paths)?)
}

/// Refuses a secret file (a private key, the token file) that others than its owner can
/// read or write: a secret on a shared machine must not be everyone's.
pub fn check_private(path: &Path, key: &str) -> Result<(), HarnessError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)
        .map_err(|e| HarnessError::BadOption(format!("{key}: cannot read {}: {e}", path.display())))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(HarnessError::Forbidden(format!(
            "{key}: {} is accessible to others (mode {mode:03o}); make it private: chmod 600 {}",
            path.display(),
            path.display()
        )));
    }
    Ok(())
}

/// Whether `bind` (an address to listen on) is reachable only from this machine.
pub fn is_loopback(bind: &str) -> bool {
    let host = bind.rsplit_once(':').map_or(bind, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Logs a warning when a port without authentication is opened beyond loopback.
pub fn warn_if_exposed(log: &slog::Logger, port: &str, bind: &str, authenticated: bool) {
    if !authenticated && !is_loopback(bind) {
        slog::warn!(log, "this port accepts anyone who reaches it: it is bound beyond loopback without authentication (see docs/security.md)";
            "port" => port, "bind" => bind);
        eprintln!("warning: the {port} port at {bind} accepts anyone who reaches it (no authentication configured; see docs/security.md)");
    }
}

/// What a REST token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// GET only.
    ReadOnly,
    /// Everything, within the `[rest]` switches.
    Admin,
}

/// The REST API's bearer tokens: token to (role, name).
#[derive(Clone, Default)]
pub struct Tokens(Arc<BTreeMap<String, (Role, String)>>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} entries)", self.0.len())
    }
}

/// Shorter tokens are refused: they can be guessed.
const MIN_TOKEN_LEN: usize = 16;

impl Tokens {
    /// Reads a token file: `<role> <name> <token>` per line, `#` comments; the file must be
    /// private to its owner.
    pub fn load(path: &Path) -> Result<Tokens, HarnessError> {
        check_private(path, "rest.tokens-file")?;
        let text = std::fs::read_to_string(path)
            .map_err(|e| HarnessError::BadOption(format!("rest.tokens-file: cannot read {}: {e}", path.display())))?;
        Tokens::parse(&text).map_err(|e| HarnessError::BadOption(format!("rest.tokens-file {}: {e}", path.display())))
    }

    /// Parses a token file's text.
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let mut map = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [role, name, token] = fields[..] else {
                return Err(format!("line {}: expected `<role> <name> <token>`", n + 1));
            };
            let role = match role {
                "admin" => Role::Admin,
                "read-only" => Role::ReadOnly,
                other => return Err(format!("line {}: unknown role '{other}' (admin or read-only)", n + 1)),
            };
            if token.len() < MIN_TOKEN_LEN {
                return Err(format!(
                    "line {}: the token of {name} is shorter than {MIN_TOKEN_LEN} characters",
                    n + 1
                ));
            }
            if map.insert(token.to_string(), (role, name.to_string())).is_some() {
                return Err(format!("line {}: this token is given twice", n + 1));
            }
        }
        if map.is_empty() {
            return Err("no tokens in it".into());
        }
        Ok(Tokens(Arc::new(map)))
    }

    /// The role and name of `presented`, compared in constant time against every token (the
    /// time taken says nothing about how much of a token was right).
    pub fn check(&self, presented: &str) -> Option<(Role, String)> {
        use subtle::ConstantTimeEq;
        let mut found = None;
        for (token, who) in self.0.iter() {
            if bool::from(token.as_bytes().ct_eq(presented.as_bytes())) {
                found = Some(who.clone());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_are_parsed_strictly() {
        let t =
            Tokens::parse("# ops\nadmin alice 0123456789abcdef0123\nread-only grafana fedcba9876543210fedc\n").unwrap();
        assert_eq!(t.check("0123456789abcdef0123"), Some((Role::Admin, "alice".into())));
        assert_eq!(
            t.check("fedcba9876543210fedc"),
            Some((Role::ReadOnly, "grafana".into()))
        );
        assert_eq!(t.check("0123456789abcdef012"), None);
        assert_eq!(t.check(""), None);
        for bad in [
            "",
            "root alice 0123456789abcdef0123",
            "admin alice short",
            "admin 0123456789abcdef0123",
        ] {
            assert!(Tokens::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn loopback_binds_are_told_apart() {
        for b in ["127.0.0.1:6123", "localhost:1", "[::1]:80"] {
            assert!(is_loopback(b), "{b}");
        }
        for b in ["0.0.0.0:6123", "10.0.0.5:1", "[::]:80", "example.com:80"] {
            assert!(!is_loopback(b), "{b}");
        }
    }
}
