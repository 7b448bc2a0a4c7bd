//! Where a processing's time went: shared by its outcome and its usage event.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::timestamp::Timestamp;

/// Where the time went. Durations in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Timings {
    /// From `submitted_at` to the worker picking the job up (when the producer set it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_ms: Option<u64>,
    /// From pick-up to the first token of the attempt that succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<u64>,
    /// From pick-up to the outcome.
    pub total_ms: u64,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
}
