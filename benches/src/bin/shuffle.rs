//! Shuffle benchmark: a keyed exchange at parallelism 2 (generator → key_by → count →
//! discard), run three ways in the same run: embedded with the exchange in process; embedded
//! with every keyed channel over a real TCP connection on 127.0.0.1 (encoded, framed,
//! credit-controlled); and in cluster mode, a coordinator and two workers of one slot each
//! (subtask 0 on one, subtask 1 on the other, so half of the keyed traffic crosses between
//! the workers and the other half stays local to a worker, as in any cluster), once over
//! plain TCP and once with mutual TLS on every connection. Reports records/s, MB/s of
//! encoded batches, ratios to the in-process run, and TLS against plain cluster mode.
//!
//! ```text
//! cargo run --release -p sluice-benches --bin shuffle -- [--records N] [--repeat 3]
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sluice_core::cluster::tls::{issue_ca, load_certs_pem, load_key_pem, ClusterTls, Identity, Validity};
use sluice_core::cluster::{Coordinator, CoordinatorConfig, JobRegistry, JobStatus, Worker, WorkerConfig};

use sluice_core::connectors::{DiscardSink, GeneratorSource};
use sluice_core::{ExecutionConfig, Record, StreamEnv, WatermarkStrategy};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

type Rec = (u64, u64, String);

fn record(i: u64) -> Rec {
    (i % 10_007, i, format!("payload-{i:012}"))
}

fn job(records: u64) -> StreamEnv {
    let env = StreamEnv::new("shuffle");
    env.set_parallelism(2);
    env.from_source(
        GeneratorSource::new(1, Some(records), |i, _| record(i)),
        WatermarkStrategy::no_watermarks(),
        "gen",
    )
    .key_by(|r: &Rec| r.0)
    .reduce(|a: Rec, b: Rec| (a.0, a.1 + b.1, b.2))
    .sink_to(DiscardSink::default(), "discard");
    env
}

struct ShuffleJob(u64);

impl JobRegistry for ShuffleJob {
    fn build(
        &self,
        _name: &str,
        _options: &BTreeMap<String, String>,
    ) -> Result<sluice_core::JobGraph, sluice_core::error::JobBuildError> {
        Ok(job(self.0).build()?)
    }
}

/// TLS for the coordinator and workers `w1`, `w2`, of one CA made here.
fn cluster_tls() -> anyhow::Result<(ClusterTls, Vec<ClusterTls>)> {
    let ca = issue_ca("bench CA", Validity::Forever)?;
    let roots = load_certs_pem(&ca.ca.cert_pem)?;
    let node = |who: Identity| -> anyhow::Result<ClusterTls> {
        let c = ca.issue_node(&who, Validity::Forever)?;
        Ok(ClusterTls::new(
            &roots,
            load_certs_pem(&c.cert_pem)?,
            load_key_pem(&c.key_pem)?,
        )?)
    };
    let workers = vec![
        node(Identity::Worker("w1".into()))?,
        node(Identity::Worker("w2".into()))?,
    ];
    Ok((node(Identity::Coordinator)?, workers))
}

/// A coordinator and two one-slot workers in this process, over TCP on 127.0.0.1 (mutual
/// TLS on every connection with `tls`); the time from submission to FINISHED.
fn run_cluster(records: u64, tls: bool) -> anyhow::Result<Duration> {
    let (coordinator_tls, worker_tls) = if tls {
        let (c, w) = cluster_tls()?;
        (Some(c), w.into_iter().map(Some).collect())
    } else {
        (None, vec![None, None])
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let log = slog::Logger::root(slog::Discard, slog::o!());
        let registry: Arc<dyn JobRegistry> = Arc::new(ShuffleJob(records));
        let opener: sluice_core::cluster::StoreOpener = Arc::new(|location: &str| {
            Err(sluice_core::state::BlobError::InvalidPath {
                path: location.to_string(),
                reason: "this benchmark takes no checkpoints",
            })
        });
        let mut config = CoordinatorConfig::new(log.clone());
        config.tls = coordinator_tls;
        let coordinator = Coordinator::new(config, registry.clone(), opener.clone())?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let serve = coordinator.clone();
        let server = tokio::spawn(async move { serve.serve(listener).await });
        let mut workers = Vec::new();
        for (id, tls) in ["w1", "w2"].into_iter().zip(worker_tls) {
            let mut cfg = WorkerConfig::new(
                addr.clone(),
                1,
                ExecutionConfig {
                    log: log.clone(),
                    ..ExecutionConfig::default()
                },
            );
            cfg.id = Some(id.to_string());
            cfg.tls = tls;
            workers.push(tokio::spawn(
                Worker::bind(cfg, "127.0.0.1:0", registry.clone(), opener.clone())
                    .await?
                    .run(),
            ));
        }
        while coordinator.workers().len() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let start = tokio::time::Instant::now();
        let id = coordinator.submit("shuffle", &[], None).await?;
        loop {
            let st = coordinator.job(&id).map(|j| (j.status, j.error));
            match st {
                Some((JobStatus::Finished, _)) => break,
                Some((s, e)) if s.is_terminal() => anyhow::bail!("cluster run ended {s}: {e:?}"),
                _ => tokio::time::sleep(Duration::from_millis(2)).await,
            }
        }
        let took = start.elapsed();
        server.abort();
        for w in workers {
            w.abort();
        }
        Ok(took)
    })
}

fn run(records: u64, over_tcp: bool) -> anyhow::Result<Duration> {
    let env = job(records);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let config = ExecutionConfig {
        transport: if over_tcp {
            std::sync::Arc::new(sluice_core::cluster::LoopbackShuffle)
        } else {
            std::sync::Arc::new(sluice_core::runtime::transport::InProcess)
        },
        ..ExecutionConfig::default()
    };
    let r = rt.block_on(env.execute(config))?;
    anyhow::ensure!(r.records_in == records, "lost records: {} of {records}", r.records_in);
    Ok(r.duration)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let records: u64 = arg(&args, "--records")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(2_000_000);
    let repeat: u32 = arg(&args, "--repeat").map(|s| s.parse()).transpose()?.unwrap_or(3);
    // Bytes per record on the wire: a batch of 1024 records encoded as the shuffle does.
    let batch: Vec<Record<Rec>> = (0..1024)
        .map(|i| Record::new(record(i), sluice_core::EventTime::MIN))
        .collect();
    let bytes_per_record = bincode::serialize(&batch)?.len() as f64 / 1024.0;
    let best = |tcp: bool| -> anyhow::Result<Duration> {
        let mut best = Duration::MAX;
        for _ in 0..repeat.max(1) {
            best = best.min(run(records, tcp)?);
        }
        Ok(best)
    };
    let local = best(false)?;
    let tcp = best(true)?;
    // Plain and TLS alternate, so a change in the machine's load hits both alike.
    let (mut cluster, mut secured) = (Duration::MAX, Duration::MAX);
    for _ in 0..repeat.max(1) {
        cluster = cluster.min(run_cluster(records, false)?);
        secured = secured.min(run_cluster(records, true)?);
    }
    let rate = |d: Duration| records as f64 / d.as_secs_f64();
    let mbs = |d: Duration| rate(d) * bytes_per_record / 1e6;
    println!("| exchange | records | records/s | MB/s (encoded) | ratio to in-process |");
    println!("|---|---|---|---|---|");
    println!(
        "| in process | {records} | {:.0} | {:.1} | 1.000 |",
        rate(local),
        mbs(local)
    );
    println!(
        "| TCP loopback, every keyed channel | {records} | {:.0} | {:.1} | {:.3} |",
        rate(tcp),
        mbs(tcp),
        rate(tcp) / rate(local)
    );
    println!(
        "| two workers (cluster mode) | {records} | {:.0} | {:.1} | {:.3} |",
        rate(cluster),
        mbs(cluster),
        rate(cluster) / rate(local)
    );
    println!(
        "| two workers, mutual TLS | {records} | {:.0} | {:.1} | {:.3} |",
        rate(secured),
        mbs(secured),
        rate(secured) / rate(local)
    );
    println!(
        "\n{bytes_per_record:.1} bytes per record encoded; best of {repeat} runs each; TLS / plain cluster mode: {:.3}.",
        rate(secured) / rate(cluster)
    );
    Ok(())
}
