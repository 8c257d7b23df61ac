//! Checkpoints and tiered state over a real S3-compatible server (moto, started on a free
//! loopback port): a tiered wordcount checkpointing to `s3://` is SIGKILLed mid-run and
//! resumes exactly from its shared runs there; the runs no retained checkpoint names are
//! deleted from the bucket; and the create-if-absent commit (`If-None-Match: *`) refuses a
//! second write of an object, as checkpoint metadata commits rely on.

// Child processes and a blocking wait on their output: real time, never simulated.
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::procs::{sluice, text};
use common::s3::S3;
use common::{assert_same_lines, committed_lines, write_input};
use sluice_core::state::blob::{BlobError, BlobStore, ObjectStoreBlob};

const BUCKET: &str = "sluice-test";

fn wordcount(s3: &S3, input: &Path, out: &Path) -> Command {
    let mut c = sluice();
    c.args(["run", "wordcount", "-p", "2", "--lines-per-second", "5000"])
        .args(["--checkpoint-interval", "200ms", "--restart-strategy", "none"])
        .args(["--checkpoint-dir", &format!("s3://{BUCKET}/ck")])
        .args(["--state-backend", "tiered", "--state-cache-memory", "1MiB"])
        .args(["--log-format", "json", "--log-level", "info", "-q"])
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(out)
        .envs(s3.env())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// Reads the child's JSON log until `n` checkpoints completed.
fn wait_for_checkpoints(child: &mut Child, n: usize) {
    let start = Instant::now();
    let mut seen = 0;
    let lines = BufReader::new(child.stderr.as_mut().expect("stderr is piped")).lines();
    for line in lines {
        let line = line.unwrap();
        assert!(!line.contains("panicked"), "{line}");
        if line.contains("\"checkpoint complete\"") {
            seen += 1;
            if seen == n {
                return;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "too few checkpoints completed"
        );
    }
    panic!("the run ended after {seen} checkpoints");
}

/// The store the runs went to, read in this process with the same settings.
fn bucket(s3: &S3) -> ObjectStoreBlob {
    for (k, v) in s3.env() {
        // SAFETY (of the call, which is safe in this edition): the only test of this binary
        // sets them before it starts any thread that reads the environment.
        std::env::set_var(k, v);
    }
    ObjectStoreBlob::s3_from_url(&format!("s3://{BUCKET}/ck")).expect("the bucket opens")
}

fn run_files(objects: &[String]) -> Vec<String> {
    objects
        .iter()
        .filter(|o| o.contains("/shared/") && o.ends_with(".run"))
        .cloned()
        .collect()
}

#[test]
fn tiered_state_and_checkpoints_over_s3_survive_a_kill_and_clean_up() {
    let s3 = S3::start(BUCKET);
    let store = bucket(&s3);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The commit primitive first: a second create of the same object is refused.
    rt.block_on(async {
        store
            .put_if_absent("probe/once", Bytes::from_static(b"1"))
            .await
            .unwrap();
        let again = store.put_if_absent("probe/once", Bytes::from_static(b"2")).await;
        assert!(matches!(again, Err(BlobError::AlreadyExists(_))), "{again:?}");
        assert_eq!(store.get("probe/once").await.unwrap(), Bytes::from_static(b"1"));
    });

    let tmp = tempfile::tempdir().unwrap();
    let (input, expected) = write_input(tmp.path(), 30_000);
    let out = tmp.path().join("out");
    let mut first = wordcount(&s3, &input, &out).spawn().unwrap();
    wait_for_checkpoints(&mut first, 4);
    first.kill().unwrap();
    let _ = first.wait();
    let at_kill = run_files(&rt.block_on(store.list("")).unwrap());
    assert!(!at_kill.is_empty(), "no run went to the bucket");

    let second = wordcount(&s3, &input, &out).output().unwrap();
    assert!(second.status.success(), "{}", text(&second.stderr));
    assert!(
        text(&second.stderr).contains("restoring from checkpoint"),
        "the second run did not restore a checkpoint"
    );
    assert_same_lines(
        &committed_lines(&out),
        &expected,
        "tiered wordcount over s3 after SIGKILL",
    );

    // Nothing a retained checkpoint names is gone, and the runs of subsumed checkpoints
    // were deleted from the bucket (what the killed run wrote before any checkpoint named
    // it stays until the job's directory goes).
    rt.block_on(async {
        let objects = store.list("").await.unwrap();
        let runs = run_files(&objects);
        let mut named = std::collections::BTreeSet::new();
        for m in objects.iter().filter(|o| o.ends_with("/_metadata")) {
            let bytes = store.get(m).await.unwrap();
            let meta = sluice_core::checkpoint::CheckpointMetadata::decode(m, &bytes).unwrap();
            named.extend(meta.shared_files().into_iter().map(|f| f.path));
        }
        assert!(!named.is_empty(), "no retained checkpoint names a run");
        for n in &named {
            assert!(runs.contains(n), "a retained checkpoint names {n}, which is gone");
        }
        let deleted: Vec<_> = at_kill.iter().filter(|r| !runs.contains(*r)).collect();
        assert!(
            !deleted.is_empty(),
            "no run of a subsumed checkpoint was deleted: {runs:?}"
        );
    });
}
