//! Word count: lines in, `word<TAB>count` out every time a word's count changes.

use sluice_core::connectors::FileSource;
use sluice_core::{DataStream, OperatorError, StreamEnv, WatermarkStrategy};

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
