//! User sessions from a file of clicks: a keyed event-time job with a process function and
//! timers, packaged as a [`sluice::Job`] so one binary runs it embedded or on a cluster.
//!
//! Input: one click per line, `TIME_MS,USER,PAGE`, in time order. Output: one line per
//! session, `USER START_MS END_MS CLICKS`, once the user has been idle for longer than
//! `--gap` of event time (or at the end of the input).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sluice::Job;
use sluice_core::connectors::{FileSink, FileSource, PrintSink};
use sluice_core::error::{InvalidSetting, JobBuildError};
use sluice_core::state::{KeyedStateStore, MapState, ValueState};
use sluice_core::{
    Collector, DataStream, KeyedContext, KeyedProcessFunction, OperatorError, StreamEnv, TimeDomain, WatermarkStrategy,
};

/// The job: `clicks run sessions --input FILE --output DIR [--gap 30s]`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sessions;

/// The options of [`Sessions`]: documented by `clicks jobs` and `clicks submit sessions
/// --help`, checked by the coordinator when the job is submitted.
#[derive(clap::Args, Debug, Clone)]
pub struct SessionOptions {
    /// The clicks, one `TIME_MS,USER,PAGE` per line, in time order.
    #[arg(long, value_name = "FILE")]
    pub input: PathBuf,
    /// Output directory for part files (committed exactly once with checkpoints).
    #[arg(long, value_name = "DIR", required_unless_present = "print")]
    pub output: Option<PathBuf>,
    /// Print sessions to standard output instead.
    #[arg(long, conflicts_with = "output")]
    pub print: bool,
    /// A session ends after this much event time without a click of its user (clicks exactly
    /// this far apart are in one session).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_gap)]
    pub gap: Duration,
    /// Pace each source subtask to this many lines per second (to watch a run, or to kill
    /// a worker in the middle of one).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub lines_per_second: Option<u64>,
}

fn parse_gap(v: &str) -> Result<Duration, String> {
    match sluice_core::duration::parse_duration(v) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("a session gap must be positive".into()),
        Err(e) => Err(e.to_string()),
    }
}

impl Job for Sessions {
    type Options = SessionOptions;

    fn name(&self) -> &str {
        "sessions"
    }

    fn description(&self) -> &str {
        "user sessions from TIME_MS,USER,PAGE clicks: USER START_MS END_MS CLICKS per session"
    }

    fn files(&self) -> &'static [&'static str] {
        &["input", "output"]
    }

    fn build(&self, env: &StreamEnv, o: &SessionOptions) -> Result<(), JobBuildError> {
        let sessions = sessions(env, o)?;
        match &o.output {
            Some(dir) => sessions
                .sink_to_transactional(FileSink::new(dir.clone(), Session::line), "FileSink")
                .uid("sink"),
            None => sessions
                .sink_to(PrintSink::with_format(Session::line), "PrintSink")
                .uid("sink"),
        };
        Ok(())
    }
}

/// The latest click time accepted (the year 9999): far from `i64::MAX`, so adding a gap
/// to a time cannot overflow.
pub const MAX_TIME_MS: i64 = 253_402_300_799_999;

/// One click.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Click {
    /// Event time, ms.
    pub time_ms: i64,
    /// Who clicked.
    pub user: String,
    /// What.
    pub page: String,
}

impl Click {
    /// Reads `TIME_MS,USER,PAGE`.
    pub fn parse(line: &str) -> Result<Click, String> {
        let mut fields = line.splitn(3, ',');
        let (Some(t), Some(user), Some(page)) = (fields.next(), fields.next(), fields.next()) else {
            return Err(format!("not TIME_MS,USER,PAGE: {line:?}"));
        };
        let time_ms: i64 = t
            .trim()
            .parse()
            .map_err(|_| format!("not a time in ms: {t:?} in {line:?}"))?;
        if !(0..=MAX_TIME_MS).contains(&time_ms) {
            return Err(format!(
                "a time in ms from 0 to {MAX_TIME_MS}, not {time_ms}, in {line:?}"
            ));
        }
        if user.is_empty() {
            return Err(format!("no user in {line:?}"));
        }
        Ok(Click {
            time_ms,
            user: user.to_string(),
            page: page.to_string(),
        })
    }
}

/// A session of one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The user.
    pub user: String,
    /// Its first click's time.
    pub start_ms: i64,
    /// Its last click's time.
    pub end_ms: i64,
    /// Its clicks.
    pub clicks: u64,
}

impl Session {
    /// `USER START_MS END_MS CLICKS`.
    pub fn line(&self) -> String {
        format!("{} {} {} {}", self.user, self.start_ms, self.end_ms, self.clicks)
    }
}

/// The sessions of the clicks in `o.input`.
pub fn sessions(env: &StreamEnv, o: &SessionOptions) -> Result<DataStream<Session>, JobBuildError> {
    let mut source = FileSource::new(&o.input).map_err(JobBuildError::Input)?;
    if let Some(rate) = o.lines_per_second {
        source = source.with_lines_per_second(rate);
    }
    // Each source subtask reads a part of the file, in time order; the watermark is the
    // minimum over the subtasks, and a second of slack allows some disorder within a part.
    // A line that does not parse gets time 0 here and fails the job in `SessionFunction`.
    // Clicks of a part that runs ahead wait in keyed state until the others catch up.
    let watermarks = WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_secs(1))
        .with_timestamp_assigner(|line: &String| Click::parse(line).map_or(0, |c| c.time_ms));
    let gap_ms = i64::try_from(o.gap.as_millis())
        .ok()
        .filter(|g| *g <= MAX_TIME_MS)
        .ok_or_else(|| JobBuildError::BadOption(InvalidSetting(format!("--gap {:?} is too long", o.gap))))?;
    Ok(env
        .from_source(source, watermarks, "clicks")
        .uid("clicks")
        // Blank lines (a trailing newline, a spacer) are not clicks.
        .filter(|line: &String| !line.trim().is_empty())
        .map(|line: String| Click::parse(&line))
        .name("Parse")
        .key_by(|c: &Result<Click, String>| c.as_ref().map(|c| c.user.clone()).unwrap_or_default())
        .process(SessionFunction {
            gap_ms,
            open: None,
            waiting: None,
        })
        .name("Sessions")
        .uid("sessions"))
}

/// Sessions in event time. Clicks of one user may arrive out of order (the source's
/// subtasks each read part of the file, at their own pace), so each click waits in keyed
/// state until the watermark passes it; timers then take the waiting clicks in time order,
/// extend or close the user's open session, and close it `gap` after its last click.
#[derive(Clone)]
struct SessionFunction {
    gap_ms: i64,
    open: Option<ValueState<Session>>,
    waiting: Option<MapState<i64, u64>>,
}

impl KeyedProcessFunction for SessionFunction {
    type Key = String;
    type In = Result<Click, String>;
    type Out = Session;

    fn open(&mut self, state: &mut KeyedStateStore<String>) -> Result<(), OperatorError> {
        self.open = Some(state.value_state("open-session")?);
        self.waiting = Some(state.map_state("waiting-clicks")?);
        Ok(())
    }

    fn process_element(
        &mut self,
        click: Result<Click, String>,
        ctx: &mut KeyedContext<'_, String>,
        _out: &mut Collector<'_, Session>,
    ) -> Result<(), OperatorError> {
        // A damaged input stops the job with the line, rather than dropping clicks silently.
        let click = click.map_err(OperatorError::user)?;
        if click.time_ms <= ctx.current_watermark().0 {
            return Err(OperatorError::user(format!(
                "a click of {} at {} ms came after the watermark ({} ms): the input must be in time order (within a second)",
                click.user,
                click.time_ms,
                ctx.current_watermark().0
            )));
        }
        let waiting = self.waiting.expect("opened before any record");
        ctx.update_map(waiting, |m| *m.entry(click.time_ms).or_default() += 1);
        ctx.register_event_time_timer(click.time_ms);
        Ok(())
    }

    fn on_timer(
        &mut self,
        timestamp: i64,
        _domain: TimeDomain,
        ctx: &mut KeyedContext<'_, String>,
        out: &mut Collector<'_, Session>,
    ) -> Result<(), OperatorError> {
        let (open, waiting) = (self.open.expect("opened"), self.waiting.expect("opened"));
        // Every click up to the watermark has arrived: take them in time order.
        let mut all = ctx.take_map(waiting);
        let later = all.split_off(&(timestamp + 1));
        if !later.is_empty() {
            ctx.update_map(waiting, |m| *m = later);
        }
        let mut session = ctx.take_value(open);
        for (time_ms, clicks) in all {
            session = Some(match session {
                Some(s) if time_ms - s.end_ms <= self.gap_ms => Session {
                    end_ms: time_ms,
                    clicks: s.clicks + clicks,
                    ..s
                },
                previous => {
                    // Silent for longer than the gap: the old session ends, a new one starts.
                    if let Some(p) = previous {
                        out.collect(p);
                    }
                    Session {
                        user: ctx.key().clone(),
                        start_ms: time_ms,
                        end_ms: time_ms,
                        clicks,
                    }
                }
            });
        }
        match session {
            Some(s) if timestamp >= s.end_ms + self.gap_ms => out.collect(s),
            Some(s) => {
                ctx.register_event_time_timer(s.end_ms + self.gap_ms);
                ctx.set_value(open, s);
            }
            None => {}
        }
        Ok(())
    }
}
