//! The coordinator's high-availability settings: `[ha]` in the configuration file, overridden
//! by `--ha`, `--etcd-endpoints`, `--cluster-id` and `--lease-ttl`.

use std::sync::Arc;
#[cfg(feature = "ha-etcd")]
use std::time::Duration;

#[cfg(feature = "ha-etcd")]
use sluice_core::ha::etcd::{EtcdHa, EtcdSettings};
use sluice_core::ha::HaBackend;

use crate::config::HaSection;
use crate::error::HarnessError;

/// How the coordinator finds out whether it leads.
#[derive(Debug, Clone)]
pub enum HaChoice {
    /// One coordinator; jobs in memory.
    Standalone,
    /// Standby coordinators elected over etcd.
    #[cfg(feature = "ha-etcd")]
    Etcd(EtcdSettings),
}

impl HaChoice {
    /// `none` or `etcd`, for the logs.
    pub fn mode(&self) -> &'static str {
        match self {
            HaChoice::Standalone => "none",
            #[cfg(feature = "ha-etcd")]
            HaChoice::Etcd(_) => "etcd",
        }
    }

    /// The lease TTL under HA.
    pub fn lease_ttl(&self) -> Option<std::time::Duration> {
        match self {
            HaChoice::Standalone => None,
            #[cfg(feature = "ha-etcd")]
            HaChoice::Etcd(s) => Some(s.lease_ttl),
        }
    }

    /// Standalone: no backend (this binary was built without etcd).
    #[cfg(not(feature = "ha-etcd"))]
    pub async fn backend(&self, _log: &slog::Logger) -> Result<Option<Arc<dyn HaBackend>>, HarnessError> {
        Ok(None)
    }

    /// A fresh backend for one term (`None` standalone); connecting to etcd is retried
    /// until it answers, since a standby has nothing better to do.
    #[cfg(feature = "ha-etcd")]
    pub async fn backend(&self, log: &slog::Logger) -> Result<Option<Arc<dyn HaBackend>>, HarnessError> {
        let HaChoice::Etcd(settings) = self else {
            return Ok(None);
        };
        let mut pause = Duration::from_millis(200);
        loop {
            match EtcdHa::connect(settings.clone(), log.clone()).await {
                Ok(ha) => return Ok(Some(Arc::new(ha))),
                Err(e) => {
                    slog::warn!(log, "cannot reach etcd; retrying"; "error" => %e, "retry_in_ms" => pause.as_millis() as u64);
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// Checks `[ha]` (with the command line's values merged in) and says how to run.
pub fn settings(section: &HaSection) -> Result<HaChoice, HarnessError> {
    let bad = |why: String| HarnessError::BadOption(why);
    match section.mode.as_str() {
        "none" => {
            if section.cluster_id.is_some() || !section.etcd_endpoints.is_empty() {
                return Err(bad(
                    "--cluster-id and --etcd-endpoints need --ha etcd ([ha] mode = \"etcd\"); without it the coordinator runs alone"
                        .into(),
                ));
            }
            Ok(HaChoice::Standalone)
        }
        #[cfg(not(feature = "ha-etcd"))]
        "etcd" => Err(bad(WITHOUT_ETCD.into())),
        #[cfg(feature = "ha-etcd")]
        "etcd" => {
            let cluster_id = section.cluster_id.clone().ok_or_else(|| {
                bad(
                    "--ha etcd needs --cluster-id NAME ([ha] cluster-id): the coordinators of one cluster share it"
                        .into(),
                )
            })?;
            let lease_ttl = parse(&section.lease_ttl, "lease-ttl")?;
            let request_timeout = match &section.etcd_timeout {
                Some(t) => parse(t, "ha.etcd-timeout")?,
                None => (lease_ttl / 2).min(Duration::from_secs(5)),
            };
            if request_timeout.is_zero() || request_timeout * 2 > lease_ttl * 3 {
                return Err(bad(format!(
                    "[ha] etcd-timeout ({request_timeout:?}) must be positive and at most 1.5 lease TTLs ({lease_ttl:?})"
                )));
            }
            let settings = EtcdSettings {
                endpoints: section.etcd_endpoints.clone(),
                cluster_id,
                lease_ttl,
                request_timeout,
            };
            settings
                .check()
                .map_err(|e| bad(e.to_string().replace("the HA store is unavailable: ", "")))?;
            Ok(HaChoice::Etcd(settings))
        }
        other => Err(bad(format!("--ha {other:?}: expected \"none\" or \"etcd\""))),
    }
}

/// What a binary built without the `ha-etcd` feature says when asked for etcd.
#[cfg(not(feature = "ha-etcd"))]
const WITHOUT_ETCD: &str = "this sluice binary was built without etcd support (cargo feature ha-etcd, on by default)";

/// A read-only view of cluster `cluster_id`'s etcd, to look its leader up (workers and
/// clients given `--etcd-endpoints` and `--cluster-id`).
#[cfg(not(feature = "ha-etcd"))]
pub async fn leader_lookup(
    _endpoints: &[String],
    _cluster_id: &str,
    _log: &slog::Logger,
) -> Result<Arc<dyn HaBackend>, HarnessError> {
    Err(HarnessError::BadOption(WITHOUT_ETCD.into()))
}

/// A read-only view of cluster `cluster_id`'s etcd, to look its leader up (workers and
/// clients given `--etcd-endpoints` and `--cluster-id`).
#[cfg(feature = "ha-etcd")]
pub async fn leader_lookup(
    endpoints: &[String],
    cluster_id: &str,
    log: &slog::Logger,
) -> Result<Arc<dyn HaBackend>, HarnessError> {
    let settings = EtcdSettings {
        endpoints: endpoints.to_vec(),
        cluster_id: cluster_id.to_string(),
        lease_ttl: Duration::from_secs(10),
        request_timeout: Duration::from_secs(5),
    };
    settings
        .check()
        .map_err(|e| HarnessError::BadOption(e.to_string().replace("the HA store is unavailable: ", "")))?;
    EtcdHa::connect(settings, log.clone())
        .await
        .map(|ha| Arc::new(ha) as Arc<dyn HaBackend>)
        .map_err(|e| HarnessError::Cluster(sluice_core::cluster::ClusterError::Ha(e)))
}

#[cfg(feature = "ha-etcd")]
fn parse(v: &str, name: &str) -> Result<Duration, HarnessError> {
    sluice_core::duration::parse_duration(v).map_err(|e| HarnessError::BadOption(format!("--{name}: {e}")))
}

#[cfg(all(test, feature = "ha-etcd"))]
mod tests {
    use super::*;

    fn section(mode: &str, id: Option<&str>, endpoints: &[&str]) -> HaSection {
        HaSection {
            mode: mode.into(),
            cluster_id: id.map(str::to_string),
            etcd_endpoints: endpoints.iter().map(|e| e.to_string()).collect(),
            ..HaSection::default()
        }
    }

    #[test]
    fn careless_settings_are_refused_naming_the_setting() {
        let e = |s: HaSection| settings(&s).unwrap_err().to_string();
        assert!(matches!(settings(&HaSection::default()), Ok(HaChoice::Standalone)));
        assert!(e(section("zookeeper", None, &[])).contains("\"none\" or \"etcd\""));
        assert!(e(section("etcd", None, &["http://e:2379"])).contains("--cluster-id"));
        assert!(e(section("etcd", Some("prod"), &[])).contains("--etcd-endpoints"));
        assert!(e(section("etcd", Some("Prod/1"), &["http://e:2379"])).contains("a-z"));
        assert!(e(section("none", Some("prod"), &[])).contains("need --ha etcd"));
        let mut short = section("etcd", Some("prod"), &["http://e:2379"]);
        short.lease_ttl = "500ms".into();
        assert!(e(short).contains("between 2 s and 1 h"));
        assert!(matches!(
            settings(&section("etcd", Some("prod"), &["http://e:2379"])),
            Ok(HaChoice::Etcd(_))
        ));
    }
}
