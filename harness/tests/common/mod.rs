//! Test helpers shared by the harness's integration tests.

/// Words of a line as wordcount defines them: maximal runs of alphanumeric characters,
/// lowercased. Written here independently of `sluice::jobs::wordcount::words`, so the tests
/// check the job against a separate reading of its specification.
pub(crate) fn expected_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    for c in line.chars() {
        if c.is_alphanumeric() {
            cur.extend(c.to_lowercase());
        } else if !cur.is_empty() {
            words.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}
