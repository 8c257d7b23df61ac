//! Jobs of one's own through `sluice::App`: a registry refuses careless registrations at
//! start, the coordinator refuses bad options at submission naming them, and a worker of
//! another build is refused when it registers.

use std::sync::Arc;
use std::time::Duration;

use sluice::app::{Job, NoOptions};
use sluice::App;
use sluice_core::cluster::{
    Coordinator, CoordinatorConfig, JobRegistry, StoreOpener, WireOption, Worker, WorkerConfig,
};
use sluice_core::connectors::{DiscardSink, VecSource};
use sluice_core::error::JobBuildError;
use sluice_core::{ExecutionConfig, StreamEnv, WatermarkStrategy};

/// A job whose options have every shape: required, typed, defaulted, a flag.
struct Tiny;

#[derive(clap::Args, Debug)]
struct TinyOptions {
    /// How many numbers (required).
    #[arg(long)]
    count: u64,
    /// A ratio.
    #[arg(long, default_value_t = 0.5)]
    ratio: f64,
    /// A flag.
    #[arg(long)]
    loud: bool,
}

impl Job for Tiny {
    type Options = TinyOptions;
    fn name(&self) -> &str {
        "tiny"
    }
    fn description(&self) -> &str {
        "a few numbers"
    }
    fn build(&self, env: &StreamEnv, o: &TinyOptions) -> Result<(), JobBuildError> {
        let numbers: Vec<u64> = (0..o.count).collect();
        env.from_source(VecSource::new(numbers), WatermarkStrategy::no_watermarks(), "numbers")
            .sink_to(DiscardSink::default(), "discard");
        Ok(())
    }
}

/// Another job under a name already taken.
struct Impostor;

impl Job for Impostor {
    type Options = NoOptions;
    fn name(&self) -> &str {
        "tiny"
    }
    fn description(&self) -> &str {
        "not tiny"
    }
    fn build(&self, _: &StreamEnv, _: &NoOptions) -> Result<(), JobBuildError> {
        Ok(())
    }
}

/// A job with an option Sluice's own `--checkpoint-interval` would shadow.
struct Shadowing;

#[derive(clap::Args, Debug)]
struct ShadowingOptions {
    #[arg(long)]
    checkpoint_interval: Option<String>,
}

impl Job for Shadowing {
    type Options = ShadowingOptions;
    fn name(&self) -> &str {
        "shadowing"
    }
    fn description(&self) -> &str {
        "shadows a flag"
    }
    fn build(&self, _: &StreamEnv, _: &ShadowingOptions) -> Result<(), JobBuildError> {
        Ok(())
    }
}

/// A job whose options cannot travel as one value each.
struct Lists;

#[derive(clap::Args, Debug)]
struct ListOptions {
    /// Several topics.
    #[arg(long)]
    topics: Vec<String>,
}

impl Job for Lists {
    type Options = ListOptions;
    fn name(&self) -> &str {
        "lists"
    }
    fn description(&self) -> &str {
        "takes a list"
    }
    fn build(&self, _: &StreamEnv, _: &ListOptions) -> Result<(), JobBuildError> {
        Ok(())
    }
}

/// A job with a positional option.
struct Positional;

#[derive(clap::Args, Debug)]
struct PositionalOptions {
    /// A file.
    file: String,
}

impl Job for Positional {
    type Options = PositionalOptions;
    fn name(&self) -> &str {
        "positional"
    }
    fn description(&self) -> &str {
        "takes a positional"
    }
    fn build(&self, _: &StreamEnv, _: &PositionalOptions) -> Result<(), JobBuildError> {
        Ok(())
    }
}

fn error_of(app: App) -> String {
    match app.registry() {
        Ok(_) => panic!("the registry must be refused"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn careless_registrations_are_refused_at_start_naming_what_clashes() {
    let e = error_of(App::new("x").job(Tiny).job(Impostor));
    assert!(
        e.contains("two jobs are registered as 'tiny'") && e.contains("Tiny") && e.contains("Impostor"),
        "{e}"
    );
    let e = error_of(App::new("x").job(Shadowing));
    assert!(e.contains("--checkpoint-interval"), "{e}");
    let e = error_of(App::new("x").job(Lists));
    assert!(e.contains("--topics is not a single value"), "{e}");
    let e = error_of(App::new("x").job(Positional));
    assert!(e.contains("'file' has no long name"), "{e}");
    let e = error_of(App::new("x").builtins().builtins());
    assert!(e.contains("registered as 'wordcount'"), "{e}");
}

fn options(pairs: &[(&str, &str)]) -> Vec<WireOption> {
    pairs
        .iter()
        .map(|(k, v)| WireOption {
            key: k.to_string(),
            value: v.to_string(),
        })
        .collect()
}

fn no_store() -> StoreOpener {
    Arc::new(|l: &str| Err(sluice_core::state::BlobError::NotFound(l.to_string())))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn the_coordinator_refuses_bad_options_at_submission_naming_the_option() {
    let registry = Arc::new(App::new("x").job(Tiny).registry().unwrap());
    let log = slog::Logger::root(slog::Discard, slog::o!());
    runtime().block_on(async {
        let c = Coordinator::new(CoordinatorConfig::new(log), registry, no_store()).unwrap();
        let refused = |pairs: &'static [(&'static str, &'static str)], wanted: &'static [&'static str]| {
            let c = c.clone();
            async move {
                let e = c.submit("tiny", &options(pairs), None).await.unwrap_err().to_string();
                for w in wanted {
                    assert!(e.contains(w), "{pairs:?}: '{w}' not in: {e}");
                }
            }
        };
        refused(&[], &["--count"]).await;
        refused(&[("count", "many")], &["'many'", "--count"]).await;
        refused(&[("count", "3"), ("ratio", "half")], &["'half'", "--ratio"]).await;
        refused(
            &[("count", "3"), ("colour", "red")],
            &["no option --colour", "--count, --ratio, --loud"],
        )
        .await;
        refused(&[("count", "3"), ("loud", "yes")], &["--loud is a flag"]).await;
        refused(&[("count", "3"), ("parallelism", "0")], &["--parallelism"]).await;
        let e = c.submit("huge", &options(&[]), None).await.unwrap_err().to_string();
        assert!(e.contains("huge") && e.contains("tiny"), "{e}");
        let ok = c
            .submit("tiny", &options(&[("count", "3"), ("loud", "true")]), None)
            .await;
        assert!(ok.is_ok(), "{ok:?}");
    });
}

#[test]
fn a_worker_of_another_build_is_refused_when_it_registers() {
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let ours: Arc<dyn JobRegistry> = Arc::new(App::new("clicks").job(Tiny).registry().unwrap());
    let theirs: Arc<dyn JobRegistry> = Arc::new(App::new("clicks").job(Tiny).builtins().registry().unwrap());
    assert_ne!(ours.build_id(), theirs.build_id());
    runtime().block_on(async {
        let c = Coordinator::new(CoordinatorConfig::new(log.clone()), ours.clone(), no_store()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let serving = c.clone();
        tokio::spawn(async move { serving.serve(listener).await });
        let worker = |registry: Arc<dyn JobRegistry>, id: &str| {
            let mut cfg = WorkerConfig::new(addr.clone(), 1, ExecutionConfig::default());
            cfg.id = Some(id.to_string());
            Worker::bind(cfg, "127.0.0.1:0", registry, no_store())
        };
        let other = worker(theirs, "w-other").await.unwrap();
        let e = tokio::time::timeout(Duration::from_secs(20), other.run())
            .await
            .expect("a refused worker stops")
            .unwrap_err()
            .to_string();
        assert!(e.contains("another build") && e.contains("nexmark-q5"), "{e}");
        assert!(c.workers().is_empty());
        let same = worker(ours, "w-same").await.unwrap();
        tokio::spawn(same.run());
        tokio::time::timeout(Duration::from_secs(20), async {
            while c.workers().is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("a worker of the same build registers");
    });
}

#[test]
fn relative_job_paths_are_refused_at_submission() {
    let registry = Arc::new(App::new("x").builtins().registry().unwrap());
    let log = slog::Logger::root(slog::Discard, slog::o!());
    runtime().block_on(async {
        let c = Coordinator::new(CoordinatorConfig::new(log), registry, no_store()).unwrap();
        let options = options(&[("input", "words.txt"), ("output", "/tmp/out")]);
        let e = c.submit("wordcount", &options, None).await.unwrap_err().to_string();
        assert!(e.contains("--input") && e.contains("must be absolute"), "{e}");
    });
}
