//! Cancellation requests.
//!
//! A cancel is a key in the cancel KV bucket (`<tenant>.<job_id>`), not a core-NATS
//! message: it must reach whichever worker holds the job, and still be there when the
//! job is picked up later if no worker had it yet.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::job::JobId;
use crate::timestamp::Timestamp;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CancelRequest {
    pub v: u32,
    pub job_id: JobId,
    pub tenant: String,
    pub requested_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
