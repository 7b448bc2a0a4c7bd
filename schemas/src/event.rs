//! Events on a job's `reply_to` subject, over core NATS: low latency, no persistence.
//!
//! Order per streaming job: `started`, then `delta`s; if an attempt fails after sending
//! deltas, `restart` (drop what you have) and the next attempt's `started` and deltas;
//! then exactly one `final`. A non-streaming job gets only its `final` (attempts and
//! timings are in it). Missing a core-NATS event is possible (slow consumer, reconnect):
//! `seq` exposes gaps, and the final outcome is also stored in the results stream.
//!
//! `seq` and `attempt` count within one processing of the job. If the worker running it
//! dies, the job is redelivered and processed again from scratch, with a higher
//! `delivery`: an event with a higher `delivery` than what you have supersedes it all
//! (drop the text, restart the `seq` count), and events of a lower `delivery` are stale.
//! `processing` identifies the processing exactly, for the rare case of two under one
//! `delivery`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::dlq::DlqReason;
use crate::error::ErrorType;
use crate::job::JobId;
use crate::openai::ToolCallDelta;
use crate::outcome::Outcome;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ReplyEvent {
    Started(Started),
    Delta(Delta),
    Restart(Restart),
    /// The one final outcome; the same object as stored in the results stream.
    Final(Box<Outcome>),
    /// The job was moved to the dead-letter stream instead of running (not final: an
    /// operator may replay it).
    DeadLettered(DeadLettered),
}

impl ReplyEvent {
    pub fn job_id(&self) -> JobId {
        match self {
            ReplyEvent::Started(e) => e.job_id,
            ReplyEvent::Delta(e) => e.job_id,
            ReplyEvent::Restart(e) => e.job_id,
            ReplyEvent::Final(e) => e.job_id,
            ReplyEvent::DeadLettered(e) => e.job_id,
        }
    }
}

/// An attempt began (streaming jobs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Started {
    pub v: u32,
    pub job_id: JobId,
    /// The processing that sent the event (its usage event's id). Two processings can
    /// share a `delivery` (a broker restart can roll a delivery count back): a different
    /// `processing` under the same `delivery` means the text may be mixed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processing: Option<uuid::Uuid>,
    /// Which delivery (processing) of the job this is, from 1.
    #[serde(default = "crate::first_delivery")]
    pub delivery: u32,
    pub attempt: u32,
    /// The `seq` this attempt's first delta will have: deltas lost at the start of an
    /// attempt show as a gap.
    #[serde(default)]
    pub first_seq: u64,
    pub provider: String,
    pub upstream_model: String,
    /// The logical model this attempt serves (differs from the job's on a fallback).
    pub model: String,
}

/// A piece of output. `seq` counts from 1 over the whole processing and never repeats,
/// also across attempts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Delta {
    pub v: u32,
    pub job_id: JobId,
    /// The processing that sent the event (its usage event's id). Two processings can
    /// share a `delivery` (a broker restart can roll a delivery count back): a different
    /// `processing` under the same `delivery` means the text may be mixed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processing: Option<uuid::Uuid>,
    #[serde(default = "crate::first_delivery")]
    pub delivery: u32,
    pub seq: u64,
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

/// The attempt that sent the deltas so far failed; discard them. Another attempt follows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Restart {
    pub v: u32,
    pub job_id: JobId,
    /// The processing that sent the event (its usage event's id). Two processings can
    /// share a `delivery` (a broker restart can roll a delivery count back): a different
    /// `processing` under the same `delivery` means the text may be mixed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processing: Option<uuid::Uuid>,
    #[serde(default = "crate::first_delivery")]
    pub delivery: u32,
    /// The attempt that failed.
    pub attempt: u32,
    pub reason: ErrorType,
    pub message: String,
}

/// The job went to the dead-letter stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeadLettered {
    pub v: u32,
    pub job_id: JobId,
    pub reason: DlqReason,
    pub message: String,
}
