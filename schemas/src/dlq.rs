//! The dead-letter stream's vocabulary.
//!
//! A dead-lettered message keeps the original payload bytes untouched as its body (so a
//! replay republishes exactly what the producer sent) and says everything else in
//! headers: the original headers are copied, and these are added.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Why a message is in the dead-letter stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DlqReason {
    /// The payload is not a job (not JSON, missing fields, wrong types).
    Undecodable,
    /// The payload is from a newer protocol version than the worker understands.
    UnsupportedVersion,
    /// It was delivered `max_deliver` times without reaching an outcome (workers
    /// crashing on it, or waiting on cooling-down providers for too long).
    MaxDeliveries,
}

impl DlqReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            DlqReason::Undecodable => "undecodable",
            DlqReason::UnsupportedVersion => "unsupported_version",
            DlqReason::MaxDeliveries => "max_deliveries",
        }
    }

    pub fn parse(text: &str) -> Option<DlqReason> {
        match text {
            "undecodable" => Some(DlqReason::Undecodable),
            "unsupported_version" => Some(DlqReason::UnsupportedVersion),
            "max_deliveries" => Some(DlqReason::MaxDeliveries),
            _ => None,
        }
    }
}

impl std::fmt::Display for DlqReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `DlqReason` as text.
pub const HEADER_REASON: &str = "Llmq-Dlq-Reason";
/// Human-readable detail (the decode error, ...).
pub const HEADER_DETAIL: &str = "Llmq-Dlq-Detail";
/// The subject the job was published to; a replay publishes there again.
pub const HEADER_SUBJECT: &str = "Llmq-Dlq-Subject";
/// The job's sequence in the jobs stream.
pub const HEADER_STREAM_SEQ: &str = "Llmq-Dlq-Stream-Seq";
/// How many times the job had been delivered.
pub const HEADER_DELIVERIES: &str = "Llmq-Dlq-Deliveries";
/// The job id, when it could be read.
pub const HEADER_JOB_ID: &str = "Llmq-Dlq-Job-Id";
/// When it was dead-lettered (RFC 3339).
pub const HEADER_AT: &str = "Llmq-Dlq-At";
/// Which worker moved it.
pub const HEADER_WORKER: &str = "Llmq-Dlq-Worker";
