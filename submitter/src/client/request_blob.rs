//! A job too large for one NATS message: its request sent ahead as a claim check.
//!
//! The server refuses any message over its `max_payload` (1 MiB unless raised), and one
//! base64 image is that much. So a job whose JSON is over the limit publishes its
//! request's JSON first as a blob under its own tenant (`<prefix>.blobs.<tenant>.<id>.<n>`,
//! every chunk acknowledged), then the job with `request_blob` in place of `request`. A
//! job that fits is published exactly as before.

use bytes::Bytes;
use llmq_runtime::blob::{self, BlobError, Sizes, WriteOptions};
use llmq_runtime::{Budget, PublishFailure};
use llmq_schemas::{BlobRef, ChatRequest, Job};

use super::Client;
use crate::error::SubmitError;

/// Room a blob reference takes in the job, generously.
const REFERENCE_BYTES: usize = 256;

impl Client {
    /// The job's JSON as published: `inline` when it fits in one message, else the job
    /// with its request moved into a blob (written here).
    pub(super) async fn fitted(&self, job: &mut Job, inline: Bytes) -> Result<Bytes, SubmitError> {
        let sizes = Sizes::of(self.nats());
        if inline.len() <= sizes.inline_max {
            return Ok(inline);
        }
        let request = std::mem::take(&mut job.request);
        let fitted = self.with_request_blob(job, &request, sizes).await;
        job.request = request;
        job.request_blob = None;
        fitted
    }

    async fn with_request_blob(
        &self,
        job: &mut Job,
        request: &ChatRequest,
        sizes: Sizes,
    ) -> Result<Bytes, SubmitError> {
        let envelope = encode(job)?.len() + REFERENCE_BYTES;
        if envelope > sizes.inline_max {
            return Err(SubmitError::InvalidJob(format!(
                "the job's fields besides its request (metadata, custom_id, ...) take {envelope} \
                 bytes; at most {} fit in one message of this server",
                sizes.inline_max
            )));
        }
        let bytes = serde_json::to_vec(request)
            .map(Bytes::from)
            .map_err(|err| {
                SubmitError::InvalidJob(format!("cannot serialize the request: {err}"))
            })?;
        job.request_blob = Some(self.write_blob(bytes, sizes.chunk).await?);
        encode(job)
    }

    async fn write_blob(&self, bytes: Bytes, chunk: usize) -> Result<BlobRef, SubmitError> {
        let session = &self.inner.session;
        let base = session.subjects().request_blobs(session.tenant());
        let options = WriteOptions {
            budget: Budget::Attempts(session.options().publish_retries.saturating_add(1)),
            missing_stream_is_transient: false,
            missing_stream_grace: session.options().missing_stream_grace,
            on_retry: None,
        };
        let written = blob::write(session.js_publish(), &base, bytes, chunk, options);
        self.inner
            .session
            .unless_denied(&[&base], written)
            .await?
            .map_err(|err| self.blob_error(err))
    }

    fn blob_error(&self, err: BlobError) -> SubmitError {
        let stream = self.subjects().blobs_stream();
        match err {
            BlobError::Write { source, .. } => match source {
                PublishFailure::NoStream => SubmitError::NotSetUp {
                    prefix: self.subjects().prefix().to_owned(),
                    missing: format!("stream {stream}"),
                },
                PublishFailure::Full { detail } | PublishFailure::SubjectFull { detail } => {
                    SubmitError::QueueFull { stream, detail }
                }
                other => self.publish_error(other),
            },
            other => SubmitError::InvalidJob(format!("the request cannot be sent: {other}")),
        }
    }
}

fn encode(job: &Job) -> Result<Bytes, SubmitError> {
    serde_json::to_vec(job)
        .map(Bytes::from)
        .map_err(|err| SubmitError::InvalidJob(format!("cannot serialize the job: {err}")))
}
