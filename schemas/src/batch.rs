//! A batch: many jobs from one input file, one record, one results file.
//!
//! Everything about a batch can be found again from NATS alone, by any process holding the
//! tenant's credentials: its record (in the batches bucket, under `<tenant>.<batch id>`),
//! its lines' job ids (derived from the batch id and the line's index, so a rerun of the
//! same file publishes the same jobs), and its outcomes (under
//! `<prefix>.results.<tenant>.<batch id>.<job id>`, so they are read by one filter, in
//! whatever order, and counted without the input file).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::tier::Tier;
use crate::timestamp::Timestamp;

/// `batch_` and 1 to 64 lowercase letters or digits: one subject token, one KV key token.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(try_from = "String", into = "String")]
#[schemars(with = "String")]
pub struct BatchId(String);

const PREFIX: &str = "batch_";

/// Namespace of the v5 UUIDs of batch lines' job ids.
const LINE_NAMESPACE: Uuid = Uuid::from_u128(0x6c6c_6d71_6261_7463_6800_0000_0000_0001);

impl BatchId {
    pub fn parse(text: &str) -> Result<Self, BatchIdError> {
        let rest = text.strip_prefix(PREFIX).ok_or(BatchIdError)?;
        let valid = (1..=64).contains(&rest.len())
            && rest
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        valid.then(|| BatchId(text.to_owned())).ok_or(BatchIdError)
    }

    /// The id made of 96 bits of a digest, in hex.
    pub fn from_digest(digest: [u8; 12]) -> Self {
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        BatchId(format!("{PREFIX}{hex}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The job id of the request at `index` (0-based) of this batch's input: the same on
    /// every run, so a rerun's publish of a line is the same job.
    pub fn line_job_id(&self, index: u64) -> Uuid {
        Uuid::new_v5(&LINE_NAMESPACE, format!("{}/{index}", self.0).as_bytes())
    }
}

impl std::fmt::Display for BatchId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for BatchId {
    type Err = BatchIdError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl TryFrom<String> for BatchId {
    type Error = BatchIdError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::parse(&text)
    }
}

impl From<BatchId> for String {
    fn from(id: BatchId) -> String {
        id.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a batch id is `batch_` followed by 1 to 64 lowercase letters or digits")]
pub struct BatchIdError;

/// What a job of a batch carries, and its outcome echoes: which batch, which line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BatchLine {
    pub id: BatchId,
    /// The request's 0-based index in the input file (blank lines are not requests).
    pub line: u64,
}

/// A batch's state, as OpenAI's Batch API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BatchStatus {
    /// Its input is being checked; nothing is published yet.
    Validating,
    /// Lines are being published or run.
    InProgress,
    /// Every line has its outcome; the results are being written.
    Finalizing,
    Completed,
    /// The input was refused: nothing ran.
    Failed,
    /// Its completion window ended before every line ran.
    Expired,
    /// Cancel asked; queued lines are ending without provider calls.
    Cancelling,
    Cancelled,
}

impl BatchStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            BatchStatus::Validating => "validating",
            BatchStatus::InProgress => "in_progress",
            BatchStatus::Finalizing => "finalizing",
            BatchStatus::Completed => "completed",
            BatchStatus::Failed => "failed",
            BatchStatus::Expired => "expired",
            BatchStatus::Cancelling => "cancelling",
            BatchStatus::Cancelled => "cancelled",
        }
    }

    /// Whether every line has ended (the batch may still be writing its results files).
    pub fn lines_ended(&self) -> bool {
        self.is_final() || *self == BatchStatus::Finalizing
    }

    /// Whether nothing will change any more.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            BatchStatus::Completed
                | BatchStatus::Failed
                | BatchStatus::Expired
                | BatchStatus::Cancelled
        )
    }
}

impl std::fmt::Display for BatchStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a batch's lines ended so far: counted from its stored outcomes, so the same
/// numbers as its results file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BatchCounts {
    /// Requests in the input.
    pub total: u64,
    /// Published and not ended (waiting in the queue or running).
    pub queued: u64,
    /// Not published yet (a submit still running, or stopped before the end).
    pub unsubmitted: u64,
    pub succeeded: u64,
    /// Ended with an error (the provider's or llmq's), other than the three below.
    pub failed: u64,
    pub expired: u64,
    pub cancelled: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: f64,
}

impl BatchCounts {
    /// Lines with an outcome.
    pub fn ended(&self) -> u64 {
        self.succeeded + self.failed + self.expired + self.cancelled
    }
}

/// The batch record: `<tenant>.<batch id>` in the batches bucket. Written by whoever runs
/// the batch (the `submitter batch` commands), read by anyone with the tenant's
/// credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BatchRecord {
    /// Protocol version; `1`.
    pub v: u32,
    pub id: BatchId,
    pub tenant: String,
    pub status: BatchStatus,
    /// The input file's name, as given, and its SHA-256 (hex).
    pub input_file: String,
    pub input_sha256: String,
    /// The model of every line, when the submit overrode the lines' own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub tier: Tier,
    /// After this instant, lines not run end `expired` (the completion window).
    pub expires_at: Timestamp,
    /// Lines published so far, from the start of the file: a rerun starts there.
    pub published: u64,
    /// Every line is published (or the batch was cancelled before they were).
    pub submit_done: bool,
    pub counts: BatchCounts,
    /// When `counts` was counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counted_at: Option<Timestamp>,
    pub created_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// Free-form data of the submitter's, as OpenAI's batch `metadata`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    /// A batch made over HTTP (`POST /v1/batches`): its files, and when each stage began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpBatch>,
    /// Why the batch failed: its input's problems (OpenAI's `errors.data`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<BatchProblem>,
    /// Bad lines were left out of the batch (`--skip-invalid`): lines the check refused,
    /// later duplicates, and lines on `skipped_models`.
    #[serde(default, skip_serializing_if = "crate::is_default")]
    pub skip_invalid: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_models: Vec<String>,
    /// The secret the lines' `Nats-Msg-Id`s are keyed with (hex): the same in every
    /// process that reruns the batch, unknown to other tenants, who cannot read the record.
    pub msg_key: String,
}

impl BatchRecord {
    /// Whether every line has ended (a batch made over HTTP may still be writing its
    /// results files: `finalizing`, or `cancelling` when it was cancelled).
    pub fn lines_ended(&self) -> bool {
        self.status.lines_ended()
            || self
                .http
                .as_ref()
                .is_some_and(|h| h.finalizing_at.is_some())
    }
}

/// What OpenAI's Files and Batches API needs of a batch made over HTTP.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HttpBatch {
    pub input_file_id: String,
    /// `/v1/chat/completions`.
    pub endpoint: String,
    /// As asked (`24h`).
    pub completion_window: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_file_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_file_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_progress_at: Option<Timestamp>,
    /// Every line ended; the results files are being written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finalizing_at: Option<Timestamp>,
    /// The results files are written: the batch's status is final.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finalized_at: Option<Timestamp>,
    /// The signed-in user who created it (the `sub` of its token): its lines' jobs, and
    /// so their usage events, carry it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// One problem of a refused input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BatchProblem {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_id_is_one_safe_token() {
        assert!(BatchId::parse("batch_0a9z").is_ok());
        for bad in [
            "batch_",
            "batch_A1",
            "batch_a.b",
            "batch_a*",
            "x_1",
            "batch_a b",
        ] {
            assert_eq!(BatchId::parse(bad), Err(BatchIdError), "{bad}");
        }
        let long = format!("batch_{}", "a".repeat(65));
        assert!(BatchId::parse(&long).is_err());
        let json = serde_json::to_string(&BatchId::parse("batch_1").unwrap()).unwrap();
        assert_eq!(json, "\"batch_1\"");
        assert!(serde_json::from_str::<BatchId>("\"batch_A\"").is_err());
    }

    #[test]
    fn a_lines_job_id_is_the_same_on_every_run_and_differs_per_line_and_batch() {
        let a = BatchId::parse("batch_a").unwrap();
        let b = BatchId::parse("batch_b").unwrap();
        assert_eq!(a.line_job_id(7), a.line_job_id(7));
        assert_ne!(a.line_job_id(7), a.line_job_id(8));
        assert_ne!(a.line_job_id(7), b.line_job_id(7));
    }
}
