//! A job's one final outcome: what the producer reads, whatever happened on the way.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::blob::BlobRef;
use crate::error::{ErrorType, JobError};
use crate::job::{JobId, Tier};
use crate::openai::ChatCompletion;
use crate::openai::ToolCall;
use crate::tenant::Clamped;
pub use crate::timings::Timings;
use crate::usage::{Cost, Usage, UsageStatus};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeStatus {
    Succeeded,
    Failed,
    Expired,
    Cancelled,
}

impl OutcomeStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            OutcomeStatus::Succeeded => "succeeded",
            OutcomeStatus::Failed => "failed",
            OutcomeStatus::Expired => "expired",
            OutcomeStatus::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for OutcomeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The usage event of a processing that reached an outcome bills it under the outcome's
/// status.
impl From<OutcomeStatus> for UsageStatus {
    fn from(status: OutcomeStatus) -> Self {
        match status {
            OutcomeStatus::Succeeded => UsageStatus::Succeeded,
            OutcomeStatus::Failed => UsageStatus::Failed,
            OutcomeStatus::Expired => UsageStatus::Expired,
            OutcomeStatus::Cancelled => UsageStatus::Cancelled,
        }
    }
}

/// The final outcome, stored once per job at `<prefix>.results.<tenant>.<job_id>` (a batch
/// line's at `<prefix>.results.<tenant>.<batch id>.<job_id>`) and sent to the job's
/// `reply_to` as the `final` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Outcome {
    pub v: u32,
    pub job_id: JobId,
    pub status: OutcomeStatus,
    /// The logical model the job asked for.
    pub model: String,
    pub tenant: String,
    pub tier: Tier,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    /// The job's batch and line, when it is a batch's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<crate::batch::BatchLine>,
    /// The `chat.completion` object, when `succeeded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<ChatCompletion>,
    /// Why the job did not succeed, otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<JobError>,
    /// Present only when the job failed after its last attempt had streamed some output:
    /// that output, which is partial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial: Option<Partial>,
    /// Set when the outcome would not fit in one NATS message: `response`, `partial` and
    /// `metadata` are then absent here and held, as an [`OutcomeBody`](crate::OutcomeBody)
    /// JSON object, by this blob under the outcome's own subject
    /// (`<prefix>.results.<tenant>.<job id>.<id>.<n>`). The submitter library reads it
    /// back, so its callers get the whole outcome.
    // The explicit target is kept: this text is also the field's JSON Schema description.
    #[allow(rustdoc::redundant_explicit_links)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_blob: Option<BlobRef>,
    /// Every provider call made for the job, in order.
    #[serde(default)]
    pub attempts: Vec<Attempt>,
    /// Summed over every attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<Cost>,
    pub timings: Timings,
    pub worker_id: String,
    /// Which delivery of the job produced this outcome: above 1, earlier processings died
    /// or handed the job back (cooldowns, shutdown).
    #[serde(default = "crate::first_delivery")]
    pub delivery: u32,
    /// Streaming jobs: the `seq` of the last delta this outcome's processing sent. A
    /// producer that saw a lower one (or deltas of another `delivery`) missed deltas; the
    /// outcome's text is complete either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<u64>,
    /// Streaming jobs: the `seq` of the first delta of the last attempt, the one whose
    /// output this outcome holds (the answer, or `partial`). That output was streamed as
    /// exactly the deltas `first_seq..=last_seq` (none when `first_seq > last_seq`), so a
    /// producer can tell from the deltas it received whether its text is the whole
    /// answer, even when the attempt's `started` event and its first deltas were lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seq: Option<u64>,
    /// The processing that produced this outcome: the id of its usage event, and of the
    /// events it sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processing: Option<uuid::Uuid>,
    /// The tenant's registry labels (team, cost centre), as when the job ran.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The job asked for more completion tokens than its tenant may, and ran with the
    /// tenant's ceiling instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clamped: Option<Clamped>,
}

/// What an outcome's `body_blob` holds: the outcome's parts whose size the provider or
/// the producer decides, taken out because the outcome would not fit in one message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OutcomeBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<ChatCompletion>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial: Option<Partial>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Outcome {
    /// The answer's text when succeeded.
    pub fn text(&self) -> Option<&str> {
        self.response.as_ref().map(ChatCompletion::text)
    }
}

/// Output of an attempt that failed part-way: never mixed into a later attempt's output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Partial {
    /// The attempt that produced it.
    pub attempt: u32,
    pub content: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
}

/// How an attempt came to be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttemptRoute {
    /// The first attempt, on the deployment the weights picked.
    Primary,
    /// The same deployment again after a retryable error.
    Retry,
    /// Another deployment of the same logical model.
    DeploymentFallback,
    /// A deployment of a model in the `fallbacks` list.
    ModelFallback,
    /// A model in `context_window_fallbacks`, after a context-window error.
    ContextWindowFallback,
    /// A model in `content_policy_fallbacks`, after a content-filter error.
    ContentPolicyFallback,
}

/// One provider call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Attempt {
    /// 1-based, counted over the whole job processing.
    pub n: u32,
    pub route: AttemptRoute,
    /// The logical model this attempt served (differs from the job's on a model fallback).
    pub model: String,
    /// Provider name from the worker's config.
    pub provider: String,
    pub upstream_model: String,
    /// Absent when the attempt succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    pub latency_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// What a succeeded attempt's answer got through with, when it was let through
    /// anyway (see [`AttemptWarning`]). Empty almost always.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<AttemptWarning>,
}

/// Something wrong with an answer that was returned anyway, because the model's config
/// says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttemptWarning {
    /// A tool call's arguments are not a JSON object and were passed through unchanged
    /// (`invalid_tool_arguments = "pass_through"`). Sending that assistant message back
    /// still works with every provider kind.
    InvalidToolArguments,
}
