//! Putting a job on the queue.
//!
//! The job is checked before it leaves the process (a model name that cannot be a subject
//! token, no messages, a deadline already past, a model no live worker serves), because
//! a job refused later sits in the queue or the dead-letter stream instead of failing
//! where the caller can still act on it.

use bytes::Bytes;
use llmq_schemas::{Job, JobId, ModelName, PROTOCOL_VERSION, Timestamp};

use super::Client;
use super::JobHandle;
use crate::error::SubmitError;
use llmq_runtime::PublishFailure;

impl Client {
    /// Publishes `job` and returns a handle that receives its events.
    ///
    /// Sets `v`, `submitted_at` (unless set) and `reply_to` (this client's inbox; any value
    /// the caller set is replaced). The handle is registered before the publish, so no
    /// event can arrive before anyone listens.
    pub async fn submit(&self, mut job: Job) -> Result<JobHandle, SubmitError> {
        let model = self.prepare(&mut job).await?;
        job.reply_to = Some(self.inner.inbox.reply_subject(job.id));
        let handle = JobHandle::register(self.clone(), job.id)?;
        let msg_id = llmq_runtime::private_msg_id(&job.id.to_string());
        self.publish_job(&model, &mut job, &msg_id).await?;
        Ok(handle)
    }

    /// Publishes `job` without waiting for its events: the outcome is read later with
    /// [`get_outcome`](Self::get_outcome) or [`wait_outcome`](Self::wait_outcome).
    ///
    /// A `reply_to` the caller set is kept (someone else may listen there) if it is a safe
    /// reply subject; otherwise the job is refused.
    pub async fn submit_detached(&self, mut job: Job) -> Result<JobId, SubmitError> {
        let model = self.prepare(&mut job).await?;
        if let Some(reply_to) = &job.reply_to
            && !self.subjects().is_safe_reply_to(reply_to)
        {
            return Err(SubmitError::InvalidJob(format!(
                "reply_to {reply_to:?} is not a literal subject outside llmq's and the system's \
                 subjects"
            )));
        }
        // Not the job id: another tenant could publish it first (README, "Outcome guarantees").
        let msg_id = llmq_runtime::private_msg_id(&job.id.to_string());
        self.publish_job(&model, &mut job, &msg_id).await?;
        Ok(job.id)
    }

    /// Publishes a batch's line (`job.batch` set, no `reply_to`) under `msg_id`, the
    /// batch's own (the same in every process that reruns it).
    pub(crate) async fn submit_batch_line(
        &self,
        job: &mut Job,
        msg_id: &str,
    ) -> Result<JobId, SubmitError> {
        let model = self.prepare(job).await?;
        self.publish_job(&model, job, msg_id).await?;
        Ok(job.id)
    }

    async fn prepare(&self, job: &mut Job) -> Result<ModelName, SubmitError> {
        job.v = PROTOCOL_VERSION;
        let model =
            ModelName::parse(&job.model).map_err(|err| SubmitError::InvalidJob(err.to_string()))?;
        if let Some(problem) = job.request.problem() {
            return Err(SubmitError::InvalidJob(problem));
        }
        if let Some(deadline) = job.deadline
            && deadline.has_passed()
        {
            return Err(SubmitError::InvalidJob(format!(
                "the deadline {deadline} has already passed"
            )));
        }
        job.submitted_at.get_or_insert_with(Timestamp::now);
        if self.options().check_catalog {
            self.check_model(&job.model, job.tier).await?;
        }
        Ok(model)
    }

    /// Publishes the job, its request as a blob first when the job would not fit in one
    /// message (see `request_blob.rs`).
    async fn publish_job(
        &self,
        model: &ModelName,
        job: &mut Job,
        msg_id: &str,
    ) -> Result<(), SubmitError> {
        let subject = self.subjects().job(model, job.tier, self.tenant());
        let payload = serde_json::to_vec(job)
            .map(Bytes::from)
            .map_err(|err| SubmitError::InvalidJob(format!("cannot serialize the job: {err}")))?;
        self.check_policy(job, payload.len()).await?;
        let payload = self.fitted(job, payload).await?;
        let published = self.inner.session.publish(&subject, msg_id, None, &payload);
        let ack = self
            .inner
            .session
            .unless_denied(&[&subject], published)
            .await?
            .map_err(|failure| self.submit_error(failure, job))?;
        if ack.duplicate {
            tracing::debug!(job_id = %job.id, "job was already queued; JetStream dropped the copy");
        }
        Ok(())
    }

    fn submit_error(&self, failure: PublishFailure, job: &Job) -> SubmitError {
        match failure {
            // A job subject is (model, tier, tenant): its limit is this tenant's quota.
            PublishFailure::SubjectFull { .. } => SubmitError::TenantQueueFull {
                tenant: self.tenant().as_str().to_owned(),
                model: job.model.clone(),
                tier: job.tier,
            },
            other => self.publish_error(other),
        }
    }

    /// A refused or failed publish of the job stream, whatever the job.
    pub(super) fn publish_error(&self, failure: PublishFailure) -> SubmitError {
        let subjects = self.subjects();
        match failure {
            PublishFailure::NoStream => SubmitError::NotSetUp {
                prefix: subjects.prefix().to_owned(),
                missing: format!("stream {}", subjects.jobs_stream()),
            },
            PublishFailure::Full { detail } | PublishFailure::SubjectFull { detail } => {
                SubmitError::QueueFull {
                    stream: subjects.jobs_stream(),
                    detail,
                }
            }
            PublishFailure::TooLarge { detail } => {
                SubmitError::InvalidJob(format!("the job is too large: {detail}"))
            }
            PublishFailure::Rejected { code, description } => {
                SubmitError::Rejected { code, description }
            }
            PublishFailure::Timeout { attempts } => SubmitError::Timeout { attempts },
            PublishFailure::Connection { attempts, source } => {
                SubmitError::Connection { attempts, source }
            }
        }
    }
}
