//! Asking for a job to be cancelled.
//!
//! A cancel is a key in the cancel bucket rather than a message, because the job may be
//! running on any worker, or still queued: whichever worker holds it (now or later) reads
//! the key. A job that already has an outcome cannot be cancelled, and the caller is told
//! how it ended instead.
//!
//! The request is published straight to the key's subject (`$KV.<bucket>.<tenant>.<job>`)
//! rather than through a KV handle, whose opening reads the bucket's stream info: so a
//! tenant's NATS permissions can allow its own cancels and nothing else of the bucket.

use bytes::Bytes;
use llmq_schemas::{CancelRequest, JobId, OutcomeStatus, PROTOCOL_VERSION, Subjects, Timestamp};

use super::Client;
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
        let tenant = self.tenant();
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
        let key = Subjects::cancel_key(tenant, job_id);
        let unique = format!("{job_id}-{}", request.requested_at.unix_millis());
        let revision = self.put_cancel(&key, &unique, Bytes::from(value)).await?;
        Ok(CancelStatus::Requested { revision })
    }

    /// Stores a cancel under `key` of the cancel bucket; its revision.
    pub(crate) async fn put_cancel(
        &self,
        key: &str,
        unique: &str,
        payload: Bytes,
    ) -> Result<u64, ClientError> {
        let bucket = self.subjects().cancel_bucket();
        let subject = format!("$KV.{bucket}.{key}");
        // Unguessable: a cancel id another tenant could publish first (to its own key;
        // the duplicate window is bucket-wide) would make this cancel a dropped duplicate.
        let msg_id = llmq_runtime::private_msg_id(&format!("cancel-{unique}"));
        let published = self
            .inner
            .session
            .publish(&subject, &msg_id, None, &payload);
        let ack = self
            .inner
            .session
            .unless_denied(&[&bucket], published)
            .await
            .map_err(|denied| ClientError::PermissionDenied {
                operation: "writing the cancel request",
                denied,
            })?
            .map_err(|failure| self.cancel_error(failure, &bucket))?;
        Ok(ack.sequence)
    }

    fn cancel_error(&self, failure: llmq_runtime::PublishFailure, bucket: &str) -> ClientError {
        use llmq_runtime::PublishFailure;
        match failure {
            PublishFailure::NoStream => {
                ClientError::not_set_up(self.subjects().prefix(), format!("KV bucket {bucket}"))
            }
            PublishFailure::Timeout { attempts } => ClientError::PublishTimeout { attempts },
            PublishFailure::Rejected { code, description } => {
                ClientError::Rejected { code, description }
            }
            PublishFailure::Full { detail }
            | PublishFailure::SubjectFull { detail }
            | PublishFailure::TooLarge { detail } => ClientError::Rejected {
                code: 0,
                description: detail,
            },
            PublishFailure::Connection { source, .. } => {
                ClientError::nats("writing the cancel request", source)
            }
        }
    }
}
