//! Reading a job's stored outcome from the results stream.
//!
//! The results stream keeps one message per subject (`<prefix>.results.<tenant>.<job>`),
//! so "the outcome" is the last message on the job's subject: a direct get, answerable by
//! any replica. Waiting for one that is not there yet uses an ordered consumer on that
//! subject (deliver last per subject), which delivers the stored one at once or the next
//! one as it is stored, and survives reconnects, without polling. The consumer is named
//! (see `session::consumer_name`), so that its creation request names its filter and a tenant's
//! NATS permissions can pin it to the tenant's own outcomes. An outcome too large for one
//! message names a blob beside it (`body_blob`), read back here by direct gets under the
//! same subject prefix, so callers always get the whole outcome.

use std::time::Duration;

use async_nats::StatusCode;
use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::stream::{DirectGetErrorKind, Stream};
use futures::StreamExt;
use llmq_runtime::blob::{self, MISSING_CHUNK_WAIT};
use llmq_schemas::{JobId, Outcome, OutcomeBody};
use tokio::time::Instant;

use super::Client;
use crate::error::{ClientError, WaitError};
use crate::session::consumer_name;

impl Client {
    /// The job's outcome, if one is stored.
    pub async fn get_outcome(&self, job_id: JobId) -> Result<Option<Outcome>, ClientError> {
        match self
            .get_outcome_at(self.result_subject(job_id), job_id)
            .await?
        {
            Some(outcome) => Ok(Some(outcome)),
            // A batch line's outcome is stored under its batch, which the id does not say.
            None => {
                let subject = self.subjects().any_batch_result(self.tenant(), job_id);
                self.get_outcome_at(subject, job_id).await
            }
        }
    }

    /// The outcome stored last on `subject` (which may have a wildcard for the batch).
    async fn get_outcome_at(
        &self,
        subject: String,
        job_id: JobId,
    ) -> Result<Option<Outcome>, ClientError> {
        let stream = self.results_stream().await?;
        let name = self.subjects().results_stream();
        let got = self
            .inner
            .session
            .unless_denied(&[&name], stream.direct_get_last_for_subject(subject))
            .await
            .map_err(|denied| ClientError::PermissionDenied {
                operation: "reading the results stream",
                denied,
            })?;
        match got {
            Ok(message) => {
                let outcome = decode_outcome(&message.payload, job_id)?;
                self.with_body(outcome).await.map(Some)
            }
            Err(err) => match err.kind() {
                DirectGetErrorKind::NotFound => Ok(None),
                DirectGetErrorKind::ErrorResponse(status, _)
                    if status == StatusCode::NO_RESPONDERS =>
                {
                    Err(self.results_missing())
                }
                DirectGetErrorKind::TimedOut => Err(ClientError::Timeout {
                    operation: "reading the results stream",
                }),
                _ => Err(ClientError::nats("reading the results stream", err)),
            },
        }
    }

    /// Waits up to `timeout` for the job's outcome, returning at once if it is stored.
    ///
    /// A dead-lettered job has no outcome (so that a replay can still produce one), and
    /// this wait runs out its timeout: [`Operator::dlq_list`](crate::Operator::dlq_list)
    /// finds the dead letter, as `submitter result` does. A live [`crate::JobHandle`] is
    /// told at once instead.
    pub async fn wait_outcome(
        &self,
        job_id: JobId,
        timeout: Duration,
    ) -> Result<Outcome, WaitError> {
        let deadline = Instant::now() + timeout;
        match tokio::time::timeout_at(deadline, self.watch_outcome(job_id)).await {
            Ok(result) => result,
            Err(_) => Err(WaitError::Timeout { waited: timeout }),
        }
    }

    async fn watch_outcome(&self, job_id: JobId) -> Result<Outcome, WaitError> {
        // Stored already: one direct get, no consumer (thousands of waits for finished jobs
        // would otherwise make thousands of consumers, which a cluster creates by consensus).
        if let Some(outcome) = self.get_outcome(job_id).await? {
            return Ok(outcome);
        }
        let name = self.subjects().results_stream();
        self.inner
            .session
            .unless_denied(&[&name], self.watch_stored_outcome(job_id))
            .await
            .map_err(|denied| ClientError::PermissionDenied {
                operation: "watching the results stream",
                denied,
            })?
    }

    async fn watch_stored_outcome(&self, job_id: JobId) -> Result<Outcome, WaitError> {
        let stream = self.results_stream().await?;
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                name: Some(consumer_name()),
                filter_subject: self.result_subject(job_id),
                deliver_policy: DeliverPolicy::LastPerSubject,
                ..Default::default()
            })
            .await
            .map_err(|err| {
                let name = self.subjects().results_stream();
                self.inner
                    .session
                    .consumer_error(err, &name, "watching the results stream")
            })?;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|err| ClientError::nats("watching the results stream", err))?;
        match messages.next().await {
            Some(Ok(message)) => {
                let outcome = decode_outcome(&message.payload, job_id)?;
                Ok(self.with_body(outcome).await?)
            }
            Some(Err(err)) => Err(ClientError::nats("watching the results stream", err).into()),
            None => Err(WaitError::Closed),
        }
    }

    /// The whole outcome: when the stored one was too large for one message, its body
    /// (`response`, `partial`, `metadata`) read back from the blob beside it, digest
    /// checked. Callers never see a `body_blob`.
    pub(crate) async fn with_body(&self, mut outcome: Outcome) -> Result<Outcome, ClientError> {
        let Some(blob) = outcome.body_blob.take() else {
            return Ok(outcome);
        };
        let job_id = outcome.job_id;
        let session = &self.inner.session;
        let stream = session.subjects().results_stream();
        let base = session.subjects().outcome_blobs(session.tenant(), job_id);
        let read = blob::read(session.js(), &stream, &base, &blob, MISSING_CHUNK_WAIT);
        let what = || format!("reading the body of job {job_id}'s outcome");
        let bytes = session
            .unless_denied(&[&stream], read)
            .await
            .map_err(|denied| ClientError::PermissionDenied {
                operation: "reading an outcome's body",
                denied,
            })?
            .map_err(|source| ClientError::Blob {
                what: what(),
                source,
            })?;
        let body: OutcomeBody =
            serde_json::from_slice(&bytes).map_err(|source| ClientError::Decode {
                what: what(),
                source,
            })?;
        outcome.response = body.response;
        outcome.partial = body.partial;
        outcome.metadata = body.metadata;
        Ok(outcome)
    }

    fn result_subject(&self, job_id: JobId) -> String {
        self.subjects().result(self.tenant(), job_id)
    }

    pub(crate) async fn results_stream(&self) -> Result<Stream<()>, ClientError> {
        self.inner
            .session
            .js()
            .get_stream_no_info(self.subjects().results_stream())
            .await
            .map_err(|err| ClientError::nats("opening the results stream", err))
    }

    fn results_missing(&self) -> ClientError {
        ClientError::not_set_up(
            self.subjects().prefix(),
            format!("stream {}", self.subjects().results_stream()),
        )
    }
}

fn decode_outcome(payload: &[u8], job_id: JobId) -> Result<Outcome, ClientError> {
    serde_json::from_slice(payload).map_err(|source| ClientError::Decode {
        what: format!("the stored outcome of job {job_id}"),
        source,
    })
}
