//! `sluice certs`: a certificate authority and the certificates of a test or small cluster.
//! For a larger one, any CA works: what matters is the DNS name in each certificate
//! (`coordinator.sluice`, `<id>.worker.sluice`, `<name>.admin.sluice`).

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sluice_transport::tls::{issue_ca, load_issuer, Identity, IssuedCert, Issuer, Validity};

use crate::HarnessError;

/// Options of `sluice certs`.
#[derive(clap::Args, Debug)]
pub struct CertsArgs {
    /// Directory to write into (created if missing). If it already holds `ca.pem` and
    /// `ca.key`, that CA signs the new certificates (to add workers or renew certificates).
    #[arg(long)]
    pub dir: PathBuf,
    /// Make no certificate for the coordinator (one is made by default).
    #[arg(long)]
    pub no_coordinator: bool,
    /// Worker ids to make certificates for, comma-separated (lowercase letters, digits, '-').
    #[arg(long, value_delimiter = ',')]
    pub workers: Vec<String>,
    /// Admin names to make certificates for (they may submit, cancel, take savepoints).
    #[arg(long, value_delimiter = ',')]
    pub admins: Vec<String>,
    /// Host names or addresses of the REST port, for an HTTPS certificate (`rest.pem`).
    #[arg(long, value_delimiter = ',')]
    pub rest_hosts: Vec<String>,
    /// Validity of the new certificates, in days, 1 to 3650 (a new CA: ten times as long).
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub days: u32,
    /// Replace files that exist (renewal); without it an existing file is an error.
    #[arg(long)]
    pub overwrite: bool,
}

fn io_error(path: &Path, e: std::io::Error) -> HarnessError {
    HarnessError::BadOption(format!("sluice certs: {}: {e}", path.display()))
}

/// Writes `text` to `path`, readable by its owner only if `private`.
fn write(path: &Path, text: &str, private: bool) -> Result<(), HarnessError> {
    let mode = if private { 0o600 } else { 0o644 };
    // Never through a link (a planted link would make us write a key elsewhere), and the
    // mode set again: `mode` applies only to files this call creates.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| io_error(path, e))?;
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
        .map_err(|e| io_error(path, e))?;
    f.write_all(text.as_bytes()).map_err(|e| io_error(path, e))
}

/// Checks every file about to be written before any is: none may be a link, and none may
/// exist without `--overwrite` (a run that fails half-way would leave a certificate and a
/// key that do not belong together).
fn preflight(dir: &Path, stems: &[String], overwrite: bool) -> Result<(), HarnessError> {
    for stem in stems {
        for path in [dir.join(format!("{stem}.pem")), dir.join(format!("{stem}.key"))] {
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.file_type().is_symlink() {
                return Err(HarnessError::BadOption(format!(
                    "sluice certs: {} is a symbolic link; it writes only regular files",
                    path.display()
                )));
            }
            if !overwrite {
                return Err(HarnessError::BadOption(format!(
                    "sluice certs: {} exists; pass --overwrite to replace it",
                    path.display()
                )));
            }
        }
    }
    Ok(())
}

fn save(dir: &Path, stem: &str, cert: &IssuedCert) -> Result<(), HarnessError> {
    write(&dir.join(format!("{stem}.pem")), &cert.cert_pem, false)?;
    write(&dir.join(format!("{stem}.key")), &cert.key_pem, true)?;
    println!("{}", dir.join(format!("{stem}.pem")).display());
    Ok(())
}

fn issuer(args: &CertsArgs, now: SystemTime) -> Result<Issuer, HarnessError> {
    let (cert, key) = (args.dir.join("ca.pem"), args.dir.join("ca.key"));
    let bad = |e: sluice_transport::tls::IssueError| HarnessError::BadOption(format!("sluice certs: {e}"));
    match (cert.exists(), key.exists()) {
        (true, true) => {
            crate::security::check_private(&key, "sluice certs: the CA's key")?;
            let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| io_error(p, e));
            return load_issuer(&read(&cert)?, &read(&key)?).map_err(bad);
        }
        // A CA certificate without its key: making a new CA would silently split the cluster.
        (true, false) | (false, true) => {
            return Err(HarnessError::BadOption(format!(
            "sluice certs: {} holds only half of a CA (ca.pem and ca.key go together); run it where the CA's key is",
            args.dir.display()
        )))
        }
        (false, false) => {}
    }
    // A name of its own, so certificates of two CAs never look alike to a verifier.
    let ms = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let ca = issue_ca(
        &format!("Sluice cluster CA {ms}-{}", std::process::id()),
        Validity::Days {
            from: now,
            days: args.days.saturating_mul(10),
        },
    )
    .map_err(bad)?;
    preflight(&args.dir, &["ca".to_string()], false)?;
    save(&args.dir, "ca", &ca.ca)?;
    Ok(ca)
}

/// The certificates asked for: file stem and identity, each identity once.
fn wanted(args: &CertsArgs) -> Result<Vec<(String, Identity)>, HarnessError> {
    let mut who = Vec::new();
    if !args.no_coordinator {
        who.push(("coordinator".to_string(), Identity::Coordinator));
    }
    for (flag, names, make) in [
        ("--workers", &args.workers, Identity::Worker as fn(String) -> Identity),
        ("--admins", &args.admins, Identity::Admin),
    ] {
        for n in names {
            Identity::check_label(n).map_err(|e| HarnessError::BadOption(format!("{flag}: {e}")))?;
            let id = make(n.clone());
            if who.iter().any(|(_, w)| *w == id) {
                return Err(HarnessError::BadOption(format!("{flag}: {n} is named twice")));
            }
            let stem = if flag == "--workers" {
                format!("worker-{n}")
            } else {
                format!("admin-{n}")
            };
            who.push((stem, id));
        }
    }
    Ok(who)
}

fn check_rest_hosts(hosts: &[String]) -> Result<(), HarnessError> {
    for h in hosts {
        let name = h.trim().to_ascii_lowercase();
        if name.is_empty() {
            return Err(HarnessError::BadOption("--rest-hosts: an empty name".into()));
        }
        if name.trim_end_matches('.').ends_with(".sluice") || name.contains('*') {
            return Err(HarnessError::BadOption(format!(
                "--rest-hosts: {h} is a cluster identity name or a wildcard; a REST certificate of the cluster's CA with it could pose as a node"
            )));
        }
    }
    Ok(())
}

/// Runs `sluice certs`: prints each certificate written.
pub fn run(args: &CertsArgs) -> Result<(), HarnessError> {
    let who = wanted(args)?;
    check_rest_hosts(&args.rest_hosts)?;
    let mut stems: Vec<String> = who.iter().map(|(s, _)| s.clone()).collect();
    if !args.rest_hosts.is_empty() {
        stems.push("rest".into());
    }
    std::fs::create_dir_all(&args.dir).map_err(|e| io_error(&args.dir, e))?;
    preflight(&args.dir, &stems, args.overwrite)?;
    let now = SystemTime::UNIX_EPOCH
        + std::time::Duration::from_millis(sluice_core::clock::Clock::system().now_ms().max(0) as u64);
    let ca = issuer(args, now)?;
    let validity = Validity::Days {
        from: now,
        days: args.days,
    };
    let bad = |e: sluice_transport::tls::IssueError| HarnessError::BadOption(format!("sluice certs: {e}"));
    for (stem, id) in &who {
        save(&args.dir, stem, &ca.issue_node(id, validity).map_err(bad)?)?;
    }
    if !args.rest_hosts.is_empty() {
        save(
            &args.dir,
            "rest",
            &ca.issue_rest(&args.rest_hosts, validity).map_err(bad)?,
        )?;
    }
    Ok(())
}
