//! Submission ids: a client names each submission and repeats the name on every retry, so a
//! retry whose first try did reach a leader (its answer lost, the leader deposed) gets that
//! job back instead of starting a second one writing the same output.
//!
//! The id is kept with the job in the table and in the HA store's record. A job that ended
//! and was forgotten (`max-retained-jobs`) leaves its id behind in a bounded list, so a late
//! retry is refused rather than run again; a new leader that finds two records of one id
//! (the first try's write landed although it was reported failed, and the retry was stored
//! too) keeps the acknowledged one.

use sluice_transport::wire::WireOption;

use super::{Coordinator, JobEntry, State};
use crate::cluster::ClusterError;
use crate::error::InvalidSetting;
use crate::ha::JobRecord;

/// The longest submission id a client may give.
const MAX_ID: usize = 128;

/// How many ids of forgotten jobs are remembered.
pub(crate) const MAX_FORGOTTEN: usize = 4096;

/// What a submission became: a new job, or the one an earlier try created.
pub(super) enum Admitted {
    New { id: String, seq: u64 },
    Earlier(String),
}

/// Refuses a submission id that is empty, long, or not plain text (it is stored and logged).
pub(super) fn check_id(s: &str) -> Result<(), ClusterError> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_.:".contains(c);
    if s.is_empty() || s.len() > MAX_ID || !s.chars().all(plain) {
        let shown: String = s.chars().take(40).collect();
        let more = if s.chars().count() > 40 { "..." } else { "" };
        return Err(ClusterError::BadOption(InvalidSetting(format!(
            "submission id {shown:?}{more}: expected 1 to {MAX_ID} letters, digits, '-', '_', '.' or ':'"
        ))));
    }
    Ok(())
}

/// The job an earlier try of submission `sub` created, if any: `Err` if that try named
/// another job or other options, is still being stored, or its job ended and was forgotten.
pub(super) fn earlier(
    st: &State,
    sub: &str,
    name: &str,
    options: &[(String, String)],
) -> Result<Option<String>, ClusterError> {
    if let Some((id, j)) = st.jobs.iter().find(|(_, j)| j.submission.as_deref() == Some(sub)) {
        return match (j.name == name && j.options == options, j.stored) {
            (false, _) => Err(ClusterError::SubmissionReused {
                submission: sub.to_string(),
                job: id.clone(),
                name: j.name.clone(),
            }),
            (true, false) => Err(ClusterError::Busy(format!(
                "submission '{sub}' is still being stored as job {id}: try again"
            ))),
            (true, true) => Ok(Some(id.clone())),
        };
    }
    match st.forgotten_submissions.iter().find(|(s, _, _)| s == sub) {
        Some((_, id, status)) => Err(ClusterError::JobEnded {
            id: id.clone(),
            status: *status,
        }),
        None => Ok(None),
    }
}

/// Admits `entry`, or finds the job an earlier try of its submission created: the lookup and
/// the insert happen under one lock, so two tries racing create one job.
pub(super) fn admit(c: &Coordinator, entry: JobEntry) -> Result<Admitted, ClusterError> {
    let mut st = c.shared().lock();
    if let Some(sub) = entry.submission.clone() {
        if let Some(id) = earlier(&st, &sub, &entry.name, &entry.options)? {
            return Ok(Admitted::Earlier(id));
        }
    }
    let (id, seq) = c.admit_locked(&mut st, entry, None)?;
    Ok(Admitted::New { id, seq })
}

/// Remembers the submission id of a job the table forgot, so a late retry is refused.
pub(crate) fn remember_forgotten(st: &mut State, id: &str, entry: &JobEntry) {
    if let Some(sub) = &entry.submission {
        if st.forgotten_submissions.len() >= MAX_FORGOTTEN {
            st.forgotten_submissions.pop_front();
        }
        st.forgotten_submissions
            .push_back((sub.clone(), id.to_string(), entry.status));
    }
}

/// Of stored records sharing a submission id, the ones a new leader must not run: all but
/// the latest, if none of them ever started. Two records of one id exist only when a first
/// try's write landed although it was reported failed (and could not be withdrawn), and the
/// client's retry was stored and acknowledged: the retry is the job the client knows.
/// Records that both started are both kept (the id cannot tell which output is wanted).
pub(super) fn superseded(records: &[(String, JobRecord)]) -> Vec<String> {
    let mut by_sub: std::collections::BTreeMap<&str, Vec<&(String, JobRecord)>> = Default::default();
    for r in records {
        if let Some(sub) = &r.1.submission {
            by_sub.entry(sub.as_str()).or_default().push(r);
        }
    }
    let mut out = Vec::new();
    for (_, mut same) in by_sub.into_iter().filter(|(_, v)| v.len() > 1) {
        same.sort_by_key(|(_, r)| r.seq);
        let latest = same.pop().expect("groups hold two or more");
        let never_started = |r: &JobRecord| r.attempt == 0 && r.result.is_none();
        if never_started(&latest.1) || same.iter().all(|(_, r)| never_started(r)) {
            out.extend(
                same.into_iter()
                    .filter(|(_, r)| never_started(r))
                    .map(|(id, _)| id.clone()),
            );
        }
    }
    out
}

/// The options of a record as they travel.
pub(super) fn wire_options(record: &JobRecord) -> Vec<WireOption> {
    record
        .options
        .iter()
        .map(|(key, value)| WireOption {
            key: key.clone(),
            value: value.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64, attempt: u32, sub: Option<&str>) -> JobRecord {
        JobRecord {
            name: "j".into(),
            options: vec![],
            seq,
            attempt,
            result: None,
            checkpoint_dir: None,
            submission: sub.map(str::to_string),
        }
    }

    #[test]
    fn of_two_records_of_one_submission_the_unstarted_earlier_one_is_superseded() {
        let records = vec![
            ("a".to_string(), record(1, 0, Some("s"))),
            ("b".to_string(), record(2, 0, Some("s"))),
            ("c".to_string(), record(3, 0, Some("t"))),
            ("d".to_string(), record(4, 0, None)),
        ];
        assert_eq!(superseded(&records), ["a"]);
        let started = vec![
            ("a".to_string(), record(1, 2, Some("s"))),
            ("b".to_string(), record(2, 0, Some("s"))),
        ];
        assert!(superseded(&started).is_empty(), "a job that ran is not dropped");
        let both = vec![
            ("a".to_string(), record(1, 0, Some("s"))),
            ("b".to_string(), record(2, 1, Some("s"))),
        ];
        assert_eq!(superseded(&both), ["a"]);
    }

    #[test]
    fn ids_are_plain_and_bounded() {
        assert!(check_id("1a2b-c_d.e:f").is_ok());
        for bad in ["", "has space", "ü", &"x".repeat(MAX_ID + 1)] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
    }
}
