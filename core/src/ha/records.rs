//! What the HA store keeps about a job, and its encoding (a version byte, then bincode).

use serde::{Deserialize, Serialize};

use super::HaError;
use crate::status::JobStatus;

/// The encoding's version; a record of an unknown version is refused, never guessed at.
/// Version 1 (before submission ids) is still read.
const VERSION: u8 = 2;

/// The largest record read back: options are bounded at submission, so anything larger is
/// not one of ours.
const MAX_RECORD_BYTES: u64 = 1 << 20;

/// A submitted job as a new leader needs it: enough to build and restore it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The job's name in the registry.
    pub name: String,
    /// Its options, as submitted (key, value).
    pub options: Vec<(String, String)>,
    /// The submission's number within its term (orders waiting jobs).
    pub seq: u64,
    /// The highest attempt any leader started (the next one is above it, so attempt numbers
    /// never repeat across leaders).
    pub attempt: u32,
    /// How the job ended, once it has: a new leader leaves it so.
    pub result: Option<JobResult>,
    /// The checkpoint location of the coordinator that took the job: a leader configured
    /// with another would not find its checkpoints, and refuses to lead.
    pub checkpoint_dir: Option<String>,
    /// The client's id for the submission, if it gave one: a retry at a later leader finds
    /// the job instead of creating a second one.
    pub submission: Option<String>,
}

/// A record as version 1 stores it (no submission id), borrowed for writing.
#[derive(Serialize)]
struct JobRecordV1Ref<'a> {
    name: &'a str,
    options: &'a [(String, String)],
    seq: u64,
    attempt: u32,
    result: &'a Option<JobResult>,
    checkpoint_dir: &'a Option<String>,
}

/// A record as version 1 stored it: no submission id.
#[derive(Deserialize)]
struct JobRecordV1 {
    name: String,
    options: Vec<(String, String)>,
    seq: u64,
    attempt: u32,
    result: Option<JobResult>,
    checkpoint_dir: Option<String>,
}

impl From<JobRecordV1> for JobRecord {
    fn from(r: JobRecordV1) -> Self {
        JobRecord {
            name: r.name,
            options: r.options,
            seq: r.seq,
            attempt: r.attempt,
            result: r.result,
            checkpoint_dir: r.checkpoint_dir,
            submission: None,
        }
    }
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobResult {
    /// FINISHED, CANCELED or FAILED.
    pub status: String,
    /// Why it failed.
    pub error: Option<String>,
}

impl JobResult {
    /// The ended status, or `None` if the text is not a terminal status.
    pub fn status(&self) -> Option<JobStatus> {
        [JobStatus::Finished, JobStatus::Canceled, JobStatus::Failed]
            .into_iter()
            .find(|s| s.as_str() == self.status)
    }
}

impl JobRecord {
    /// The stored form: version 1 for a record without a submission id (so a coordinator of
    /// the previous version can still take it over during an upgrade or a rollback), else 2.
    pub fn encode(&self) -> Vec<u8> {
        let Some(_) = &self.submission else {
            let v1 = JobRecordV1Ref {
                name: &self.name,
                options: &self.options,
                seq: self.seq,
                attempt: self.attempt,
                result: &self.result,
                checkpoint_dir: &self.checkpoint_dir,
            };
            let mut out = vec![1];
            bincode::serialize_into(&mut out, &v1).expect("a job record is plain data and always encodes");
            return out;
        };
        let mut out = vec![VERSION];
        bincode::serialize_into(&mut out, self).expect("a job record is plain data and always encodes");
        out
    }

    /// Reads a stored record back; `key` names it in the error.
    pub fn decode(key: &str, bytes: &[u8]) -> Result<Self, HaError> {
        use bincode::Options;
        let corrupt = |reason: String| HaError::Corrupt {
            key: key.to_string(),
            reason,
        };
        let options = bincode::DefaultOptions::new()
            .with_fixint_encoding()
            .with_limit(MAX_RECORD_BYTES);
        let unreadable = |e: bincode::Error| {
            corrupt(format!(
                "not a job record this build can read ({} bytes: {e})",
                bytes.len()
            ))
        };
        match bytes.split_first() {
            Some((&VERSION, body)) => options.deserialize(body).map_err(unreadable),
            Some((1, body)) => options
                .deserialize::<JobRecordV1>(body)
                .map(JobRecord::from)
                .map_err(unreadable),
            Some((v, _)) => Err(corrupt(format!(
                "not a job record this build can read (it starts with byte {v}; this build's records start with {VERSION})"
            ))),
            None => Err(corrupt("empty".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_named() {
        let r = JobRecord {
            name: "wordcount".into(),
            options: vec![("parallelism".into(), "2".into())],
            seq: 3,
            attempt: 4,
            result: Some(JobResult {
                status: "FINISHED".into(),
                error: None,
            }),
            checkpoint_dir: Some("s3://b/ck".into()),
            submission: Some("a1b2".into()),
        };
        let bytes = r.encode();
        assert_eq!(JobRecord::decode("jobs/x", &bytes).unwrap(), r);
        assert_eq!(r.result.as_ref().unwrap().status(), Some(JobStatus::Finished));
        let e = JobRecord::decode("jobs/x", &bytes[..bytes.len() - 3]).unwrap_err();
        assert!(e.to_string().contains("jobs/x"), "{e}");
        let mut other = bytes.clone();
        other[0] = 9;
        assert!(JobRecord::decode("jobs/x", &other)
            .unwrap_err()
            .to_string()
            .contains("byte 9"));
        assert!(JobRecord::decode("jobs/x", &[]).is_err());
    }

    #[test]
    fn version_one_records_are_still_read() {
        let v1 = (
            "wordcount".to_string(),
            vec![("parallelism".to_string(), "2".to_string())],
            3u64,
            4u32,
            None::<JobResult>,
            None::<String>,
        );
        let mut bytes = vec![1u8];
        bincode::serialize_into(&mut bytes, &v1).unwrap();
        let r = JobRecord::decode("jobs/x", &bytes).unwrap();
        assert_eq!(
            (r.name.as_str(), r.attempt, r.submission.as_deref()),
            ("wordcount", 4, None)
        );
        assert_eq!(
            r.encode(),
            bytes,
            "a record without a submission id is written as version 1"
        );
    }
}
