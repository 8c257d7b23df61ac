//! Word count: lines in, `word<TAB>count` out every time a word's count changes.

use std::path::PathBuf;

use sluice_core::connectors::FileSource;
use sluice_core::error::{InvalidSetting, JobBuildError};
use sluice_core::{DataStream, OperatorError, StreamEnv, WatermarkStrategy};

use super::{attach_sink, Output, OutputArgs};
use crate::app::Job;

/// Word count as a job: `wordcount --input FILE --output DIR`.
#[derive(Debug, Clone, Copy, Default)]
pub struct WordCount;

/// The options of [`WordCount`].
#[derive(clap::Args, Debug, Clone)]
pub struct WordCountArgs {
    /// The text file to count the words of.
    #[arg(long, value_name = "FILE")]
    pub input: PathBuf,
    /// Pace input lines to this many per second.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub lines_per_second: Option<u64>,
    /// Where results go.
    #[command(flatten)]
    pub output: OutputArgs,
}

impl Job for WordCount {
    type Options = WordCountArgs;

    fn name(&self) -> &str {
        "wordcount"
    }

    fn description(&self) -> &str {
        "counts words of a text file; emits word<TAB>count on every change"
    }

    fn files(&self) -> &'static [&'static str] {
        &["input", "output"]
    }

    fn build(&self, env: &StreamEnv, o: &WordCountArgs) -> Result<(), JobBuildError> {
        let output = o.output.output();
        if matches!(output, Output::Discard) {
            return Err(JobBuildError::BadOption(InvalidSetting(
                "job 'wordcount' needs --output DIR (or --print)".into(),
            )));
        }
        let counts = build(env, &o.input, o.lines_per_second).map_err(JobBuildError::Input)?;
        attach_sink(counts, &output, |(w, n): &(String, u64)| format!("{w}\t{n}"));
        Ok(())
    }
}

/// Splits a line into lowercase words on every non-alphanumeric character.
pub fn words(line: &str) -> Vec<String> {
    line.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Builds the word-count pipeline over the lines of `input`: one `(word, count)` record per
/// input word, carrying the word's new count.
pub fn build(
    env: &StreamEnv,
    input: &std::path::Path,
    lines_per_second: Option<u64>,
) -> Result<DataStream<(String, u64)>, OperatorError> {
    let mut source = FileSource::new(input)?;
    if let Some(rate) = lines_per_second {
        source = source.with_lines_per_second(rate);
    }
    let lines = env
        .from_source(source, WatermarkStrategy::no_watermarks(), "FileSource")
        .uid("file-source");
    Ok(lines
        .flat_map(|line: String| words(&line))
        .name("Tokenize")
        .map(|w: String| (w, 1u64))
        .name("Pair")
        .key_by(|p: &(String, u64)| p.0.clone())
        .reduce(|a: (String, u64), b: (String, u64)| (a.0, a.1 + b.1))
        .name("Count")
        .uid("count"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_non_alphanumerics_and_lowercases() {
        assert_eq!(
            words("Hello, hello-World! x2 ü"),
            ["hello", "hello", "world", "x2", "ü"]
        );
        assert!(words(" ,;- ").is_empty());
    }
}
