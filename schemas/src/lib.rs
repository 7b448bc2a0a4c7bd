//! The llmq wire protocol.
//!
//! Producers in any language talk to llmq only through these messages, so this crate is
//! pure data: no I/O, no NATS client, nothing a producer would not also need. Every
//! message carries `v` ([`PROTOCOL_VERSION`]) so a worker can dead-letter a message from
//! a newer protocol instead of misreading it, and every type derives a JSON Schema
//! (exported to `schemas/json/` and checked against the types by a test).

pub mod batch;
pub mod blob;
pub mod cancel;
pub mod catalog;
pub mod dlq;
pub mod error;
pub mod event;
pub mod job;
pub mod json_schema;
pub mod limits;
pub mod openai;
pub mod outcome;
pub mod subject;
pub mod tenant;
pub mod tier;
pub mod timestamp;
pub mod timings;
pub mod usage;

pub use batch::{
    BatchCounts, BatchId, BatchLine, BatchProblem, BatchRecord, BatchStatus, HttpBatch,
};
pub use blob::BlobRef;
pub use cancel::CancelRequest;
pub use catalog::{CatalogDeployment, CatalogEntry, CatalogModel};
pub use dlq::DlqReason;
pub use error::{ErrorType, JobError};
pub use event::{DeadLettered, Delta, ReplyEvent, Restart, Started};
pub use job::{Job, JobId, Tier};
pub use limits::LimitSpec;
pub use openai::{
    ChatCompletion, ChatRequest, Choice, CompletionUsage, Content, ContentPart, FunctionCall,
    FunctionDef, ImageUrl, Message, ResponseMessage, Role, Stop, Tool, ToolCall, ToolCallDelta,
    ToolChoice,
};
/// The OpenAI request and completion modules under their older paths
/// (`llmq_schemas::request::Message`, `llmq_schemas::completion::...`).
pub use openai::{completion, request};
pub use outcome::{
    Attempt, AttemptRoute, AttemptWarning, Outcome, OutcomeBody, OutcomeStatus, Partial, Timings,
};
pub use subject::{ModelName, SubjectError, Subjects, Tenant};
pub use tenant::{
    BudgetLimit, BudgetPeriod, Clamped, Enforce, OverMaxTokens, PolicyRule, TenantBudget,
    TenantEntry,
};
pub use timestamp::Timestamp;
pub use usage::{AttemptUsage, Cost, CostBreakdown, Usage, UsageEvent, UsageSource, UsageStatus};

/// The protocol version this crate writes. Readers accept any `v` up to this one.
pub const PROTOCOL_VERSION: u32 = 1;

/// Header set by producers on every job publish: JetStream drops a second publish with the
/// same id inside the stream's duplicate window, so a retried publish never queues twice.
pub const HEADER_MSG_ID: &str = "Nats-Msg-Id";

/// Serde default of `delivery` fields: messages from before the field existed were first
/// deliveries as far as anyone can tell.
pub(crate) fn first_delivery() -> u32 {
    1
}

pub(crate) fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}
