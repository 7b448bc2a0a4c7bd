//! From a delivered message to a processing ready to handle: what happens before the
//! job's own path starts.
//!
//! A message that is not a runnable job goes to the dead-letter stream here ([`reject`],
//! the one call site); a request sent as a blob is read; the tenant registry's policy
//! gives its verdict, and the job its tenant's labels and ceilings; the job's events get
//! their sink; and a job whose outcome is already stored (a redelivery, or the same id
//! published again after the duplicate window) is answered from it instead of paying the
//! provider again. The rarely-taken branches are boxed: an async
//! fn's state is as large as its largest branch.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::Message;
use llmq_runtime::policy::{self, JobFacts};
use llmq_runtime::tenants::Lookup;
use llmq_schemas::{ErrorType, JobError, Tier, Timestamp};
use tokio::time::Instant;

use super::decode::{Decoded, Delivery, Rejection, decode};
use super::disposition::Disposition;
use super::outcome::load_outcome;
use super::processing::Processing;
use super::reply::ReplySink;
use super::request_blob;
use crate::context::WorkerContext;
use crate::dlq::dead_letter_message;
use crate::metrics;

/// A processing ready to handle.
#[derive(Debug)]
pub struct Intake {
    pub processing: Processing,
    pub reply: ReplySink,
    /// Why the job must not run, if the subject or the tenant's policy says so.
    pub refusal: Option<JobError>,
}

/// Takes a delivered message in, picked up at `picked_at`: the processing to handle, or
/// how the delivery ends here (dead-lettered, handed back, answered from the stored
/// outcome).
pub async fn intake(
    ctx: &WorkerContext,
    message: &Message,
    picked_at: Instant,
    started_at: Timestamp,
) -> Result<Intake, Disposition> {
    let max_deliver = ctx.config.jetstream.max_deliver;
    let mut ready = match decode(&ctx.subjects, max_deliver, Delivery::of(message)) {
        Decoded::Ready(ready) => ready,
        Decoded::Rejected(rejection) => return Err(Box::pin(reject(ctx, message, rejection)).await),
    };
    Box::pin(request_blob::resolve(ctx, &mut ready)).await?;
    let model_label = ctx.model_label(&ready.job.model);
    metrics::job_received(model_label, ready.tier, ready.delivery > 1);
    let subject_problem = ready.problem.take();
    let payload_bytes = ready.payload_bytes;
    let mut processing = Processing::new(*ready, picked_at, started_at);
    if let (Tier::Interactive, 1, Some(submitted)) =
        (processing.tier, processing.delivery, processing.submitted)
    {
        ctx.batch_window.interactive_waited(submitted.micros_ago());
    }
    let verdict = policy(ctx, &mut processing, payload_bytes);
    let mut reply = reply_sink(ctx, &processing);
    if let Some(answered) = Box::pin(answer_from_stored(ctx, &processing, &mut reply)).await {
        return Err(answered);
    }
    if let Some(queued) = processing.queued {
        metrics::queue_wait(model_label, processing.tier, queued.as_secs_f64());
    }
    let refusal = match (subject_problem, verdict) {
        (Some(problem), _) => Some(JobError::new(ErrorType::InvalidJob, problem)),
        (None, Err(denied)) => Some(denied),
        (None, Ok(())) => None,
    };
    Ok(Intake {
        processing,
        reply,
        refusal,
    })
}

/// Asks the tenant registry whether the job may run, before anything else happens to it
/// (whatever path it came by: a producer that skipped the submitter's own check cannot
/// bypass this). An allowed job gets its tenant's labels and, if it asked for more
/// completion tokens than its tenant may, the tenant's ceiling instead.
fn policy(
    ctx: &WorkerContext,
    processing: &mut Processing,
    payload_bytes: usize,
) -> Result<(), JobError> {
    let lookup = ctx.registry.lookup(&processing.tenant);
    if let Lookup::Known(policy) = &lookup {
        processing.labels = policy.entry.labels.clone();
        processing.tenant_policy = Some(Arc::clone(policy));
    }
    let facts = JobFacts {
        tenant: &processing.tenant,
        tier: processing.tier,
        job: &processing.job,
        payload_bytes,
    };
    match policy::check(&lookup, facts) {
        Ok(allowed) => {
            allowed.apply(&mut processing.job.request);
            processing.clamped = allowed.clamped;
            Ok(())
        }
        Err(denied) => {
            metrics::policy_denied(denied.rule);
            tracing::info!(job_id = %processing.job.id, tenant = %processing.tenant, rule = %denied.rule, "job refused by policy");
            Err(denied.job_error())
        }
    }
}

/// The one place a delivery goes to the dead-letter stream: copied there, then removed
/// from the queue; if the copy was not stored, it stays queued for another try.
async fn reject(ctx: &WorkerContext, message: &Message, rejection: Rejection) -> Disposition {
    let Rejection {
        reason,
        detail,
        job_id,
    } = rejection;
    if dead_letter_message(ctx, message, reason, detail, job_id).await {
        Disposition::Terminate
    } else {
        Disposition::Requeue {
            delay: Some(Duration::from_secs(1)),
            reason: "dead_letter_not_stored",
        }
    }
}

/// Where the job's events go: its `reply_to`, when the one reply rule lets the worker
/// publish there (`policy::may_reply_to`: safe, and under the tenant's own inboxes). A job
/// that names another tenant's inbox gets no events (its outcome is in the results stream).
fn reply_sink(ctx: &WorkerContext, processing: &Processing) -> ReplySink {
    let job = &processing.job;
    let lookup = ctx.registry.lookup(&processing.tenant);
    let reply_to = job.reply_to.as_deref().filter(|subject| {
        policy::may_reply_to(&ctx.subjects, &lookup, &processing.tenant, subject)
    });
    ReplySink::new(
        ctx.nats.clone(),
        reply_to,
        job.id,
        processing.delivery,
        processing.id,
        job.stream,
    )
}

/// A job that already has a stored outcome is answered from it instead of paying the
/// provider again: a redelivery whose earlier processing stored the outcome and died
/// before its ack, and as much a first delivery of a job id published again after the
/// duplicate window (a batch resumed hours later, a raw producer's retry). `None`: run it.
async fn answer_from_stored(
    ctx: &WorkerContext,
    processing: &Processing,
    reply: &mut ReplySink,
) -> Option<Disposition> {
    let batch = processing.job.batch.as_ref().map(|line| &line.id);
    match load_outcome(ctx, &processing.tenant, processing.job.id, batch).await {
        Ok(Some(outcome)) => {
            metrics::outcome_resent();
            tracing::info!(job_id = %processing.job.id, status = %outcome.status, "redelivered job already has an outcome; re-sending it");
            reply.finished(&outcome).await;
            Some(Disposition::Done)
        }
        Ok(None) => None,
        Err(err) => {
            tracing::warn!(job_id = %processing.job.id, error = %err, "cannot read the stored outcome; handing the job back");
            Some(Disposition::Requeue {
                delay: Some(Duration::from_secs(1)),
                reason: "results_unreadable",
            })
        }
    }
}
