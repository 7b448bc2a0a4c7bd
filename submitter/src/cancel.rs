//! Asking for a job to be cancelled.
//!
//! A cancel is a key in the cancel bucket rather than a message, because the job may be
//! running on any worker, or still queued: whichever worker holds it (now or later) reads
//! the key. A job that already has an outcome cannot be cancelled, and the caller is told
//! how it ended instead.

use bytes::Bytes;
use llmq_schemas::{CancelRequest, JobId, OutcomeStatus, PROTOCOL_VERSION, Subjects, Timestamp};

use crate::client::Client;
use crate::error::ClientError;

/// What a cancel did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelStatus {
    /// The request is stored; the job ends `cancelled` unless it finishes first.
    Requested { revision: u64 },
    /// The job had already ended, with this status.
    AlreadyFinished(OutcomeStatus),
}

impl Client {
    /// Requests that this tenant's job `job_id` be cancelled.
    pub async fn cancel(
        &self,
        job_id: JobId,
        reason: Option<String>,
    ) -> Result<CancelStatus, ClientError> {
        if let Some(outcome) = self.get_outcome(job_id).await? {
            return Ok(CancelStatus::AlreadyFinished(outcome.status));
        }
        let tenant = &self.inner.tenant;
        let request = CancelRequest {
            v: PROTOCOL_VERSION,
            job_id,
            tenant: tenant.as_str().to_owned(),
            requested_at: Timestamp::now(),
            reason,
        };
        let value = serde_json::to_vec(&request).map_err(|source| ClientError::Decode {
            what: "a cancel request".into(),
            source,
        })?;
        let bucket = self.cancel_bucket().await?;
        let revision = bucket
            .put(Subjects::cancel_key(tenant, job_id), Bytes::from(value))
            .await
            .map_err(|err| ClientError::nats("writing the cancel request", err))?;
        Ok(CancelStatus::Requested { revision })
    }
}
