//! One delivery of a job message, start to finish.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::Message;
use llmq_schemas::job::DecodeError;
use llmq_schemas::{DlqReason, ErrorType, Job, JobError, OutcomeStatus, Tenant, Tier, Timestamp};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::disposition::Disposition;
use super::execute::{Execution, JobSpec, execute};
use super::finalize::{Finished, bill_handed_back, finalize, load_outcome};
use super::reply::ReplySink;
use crate::context::WorkerContext;
use crate::dlq::dead_letter_message;
use crate::metrics;
use crate::routing::ModelRoute;

/// A decoded job being processed.
#[derive(Debug)]
pub struct JobRun {
    pub job: Job,
    pub tenant: Tenant,
    pub tier: Tier,
    pub picked_at: Instant,
    pub started_at: Timestamp,
    pub queued: Option<Duration>,
    /// Which delivery of the message this is (1 = first).
    pub delivery: u32,
    /// This processing's id: its usage event's, its events', its outcome's.
    pub processing: uuid::Uuid,
}

/// Processes one delivery.
///
/// The rarely-taken and post-call branches (dead letters, stored-outcome lookups, the
/// outcome itself) are boxed: an async fn's state is as large as its largest branch, and
/// every job waiting on its provider would otherwise carry theirs. `served` is the model of the consumer the message came from
/// (`None` from the sweeper: a model nobody serves). `hard_stop` fires when a shutdown's
/// grace period is over: the job is handed back unfinished.
pub async fn process(
    ctx: &Arc<WorkerContext>,
    message: &Message,
    served: Option<&Arc<ModelRoute>>,
    hard_stop: &CancellationToken,
) -> Disposition {
    let picked_at = Instant::now();
    let started_at = Timestamp::now();
    let (delivered, published) = match message.info() {
        Ok(info) => (
            info.delivered.max(1) as u64,
            Some(Timestamp::from(info.published)),
        ),
        Err(_) => (1, None),
    };

    if delivered > ctx.config.jetstream.max_deliver as u64 {
        let detail = crate::dlq::max_deliveries_detail(ctx.config.jetstream.max_deliver);
        let job_id = llmq_schemas::job::Envelope::sniff(&message.payload).id;
        return terminate(
            Box::pin(dead_letter_message(
                ctx,
                message,
                DlqReason::MaxDeliveries,
                detail,
                job_id,
            ))
            .await,
        );
    }
    let subject = match ctx.subjects.parse_job_subject(&message.subject) {
        Ok(subject) => subject,
        Err(err) => {
            return terminate(
                Box::pin(dead_letter_message(
                    ctx,
                    message,
                    DlqReason::Undecodable,
                    err.to_string(),
                    None,
                ))
                .await,
            );
        }
    };
    let tenant = match &subject.tenant {
        Ok(tenant) => tenant.clone(),
        Err(err) => {
            return terminate(
                Box::pin(dead_letter_message(
                    ctx,
                    message,
                    DlqReason::Undecodable,
                    err.to_string(),
                    None,
                ))
                .await,
            );
        }
    };
    let job = match Job::decode(&message.payload) {
        Ok(job) => job,
        Err(err) => {
            let reason = match err {
                DecodeError::UnsupportedVersion(_) => DlqReason::UnsupportedVersion,
                DecodeError::Malformed(_) => DlqReason::Undecodable,
            };
            return terminate(
                Box::pin(dead_letter_message(
                    ctx,
                    message,
                    reason,
                    err.to_string(),
                    None,
                ))
                .await,
            );
        }
    };
    metrics::job_received(ctx.model_label(&job.model), subject.tier, delivered > 1);

    let delivery = u32::try_from(delivered).unwrap_or(u32::MAX);
    let processing = uuid::Uuid::now_v7();
    let mut reply = ReplySink::new(
        ctx.nats.clone(),
        safe_reply_to(ctx, &job),
        job.id,
        delivery,
        processing,
        job.stream,
    );
    if delivered > 1 {
        // A redelivery: if an earlier processing stored the outcome (and died before its
        // ack), answer from it instead of paying the provider again.
        match Box::pin(load_outcome(ctx, &tenant, job.id)).await {
            Ok(Some(outcome)) => {
                metrics::outcome_resent();
                tracing::info!(job_id = %job.id, status = %outcome.status, "redelivered job already has an outcome; re-sending it");
                reply.finished(&outcome).await;
                return Disposition::Done;
            }
            Ok(None) => {}
            Err(err) => {
                tracing::warn!(job_id = %job.id, error = %err, "cannot read the stored outcome; handing the job back");
                return Disposition::Requeue {
                    delay: Some(Duration::from_secs(1)),
                    reason: "results_unreadable",
                };
            }
        }
    }

    let submitted = job.submitted_at.or(published);
    let queued = submitted.map(|at| at.elapsed());
    if let Some(queued) = queued {
        metrics::queue_wait(
            ctx.model_label(&job.model),
            subject.tier,
            queued.as_secs_f64(),
        );
    }
    let run = JobRun {
        tenant,
        tier: subject.tier,
        picked_at,
        started_at,
        queued,
        delivery,
        processing,
        job,
    };
    let span = tracing::info_span!(
        "job",
        job_id = %run.job.id,
        model = %run.job.model,
        tenant = %run.tenant,
        tier = %run.tier,
        delivery = delivered,
    );
    run_job(
        ctx,
        &run,
        &subject.model,
        served,
        hard_stop,
        &mut reply,
        submitted,
    )
    .instrument(span)
    .await
}

/// Everything after decoding: validation, cancel and deadline checks, the attempts, the
/// outcome.
async fn run_job(
    ctx: &Arc<WorkerContext>,
    run: &JobRun,
    subject_model: &Result<llmq_schemas::ModelName, llmq_schemas::SubjectError>,
    served: Option<&Arc<ModelRoute>>,
    hard_stop: &CancellationToken,
    reply: &mut ReplySink,
    submitted: Option<Timestamp>,
) -> Disposition {
    if let Some(problem) = invalid(ctx, run, subject_model) {
        let finished = Finished::without_attempts(
            OutcomeStatus::Failed,
            JobError::new(ErrorType::InvalidJob, problem),
        );
        return finalize(ctx, run, finished, reply).await;
    }
    if ctx.cancels.is_requested(&run.tenant, run.job.id) {
        let error = JobError::new(ErrorType::Cancelled, "cancelled before it started");
        return finalize(
            ctx,
            run,
            Finished::without_attempts(OutcomeStatus::Cancelled, error),
            reply,
        )
        .await;
    }
    let deadline_at = run.job.deadline.unwrap_or_else(|| {
        let base = submitted.unwrap_or(run.started_at);
        base.plus(match run.tier {
            Tier::Interactive => ctx.config.worker.interactive_deadline,
            Tier::Batch => ctx.config.worker.batch_deadline,
        })
    });
    if deadline_at.has_passed() {
        let error = JobError::new(
            ErrorType::DeadlineExceeded,
            format!("the deadline {deadline_at} passed before the job was picked up"),
        );
        return finalize(
            ctx,
            run,
            Finished::without_attempts(OutcomeStatus::Expired, error),
            reply,
        )
        .await;
    }
    let Some(model) = served.or_else(|| ctx.router.model(&run.job.model)) else {
        let served: Vec<String> = ctx.router.models().map(|m| m.name.to_string()).collect();
        let error = JobError::new(
            ErrorType::UnknownModel,
            format!(
                "no worker serves model {:?}; models served: {}",
                run.job.model,
                served.join(", ")
            ),
        );
        return finalize(
            ctx,
            run,
            Finished::without_attempts(OutcomeStatus::Failed, error),
            reply,
        )
        .await;
    };

    let running = ctx.cancels.register(&run.tenant, run.job.id);
    let spec = JobSpec {
        request: &run.job.request,
        stream: run.job.stream,
        picked_at: run.picked_at,
        deadline: Instant::now() + deadline_at.remaining(),
    };
    let report = tokio::select! {
        report = execute(ctx, spec, model, &running.token, reply) => report,
        () = hard_stop.cancelled() => {
            tracing::warn!("shutdown grace period over; handing the job back");
            return Disposition::Requeue { delay: None, reason: "shutdown" };
        }
    };
    drop(running);
    let (status, response, error, partial) = match report.execution {
        Execution::Succeeded(completion) => (
            OutcomeStatus::Succeeded,
            Some(completion.response),
            None,
            None,
        ),
        Execution::Failed { error, partial } => (OutcomeStatus::Failed, None, Some(error), partial),
        Execution::Cancelled => (
            OutcomeStatus::Cancelled,
            None,
            Some(JobError::new(
                ErrorType::Cancelled,
                "cancelled while running",
            )),
            None,
        ),
        Execution::Expired { error } => (OutcomeStatus::Expired, None, Some(error), None),
        Execution::CoolingDown(wait) => {
            let delay = wait
                .max(Duration::from_millis(100))
                .min(deadline_at.remaining());
            tracing::info!(
                ?delay,
                "every deployment is cooling down; handing the job back"
            );
            if report.usage.iter().any(|c| c.usage.total_tokens > 0) {
                bill_handed_back(ctx, run, &report.usage).await;
            }
            return Disposition::Requeue {
                delay: Some(delay),
                reason: "cooling_down",
            };
        }
    };
    let finished = Finished {
        status,
        response,
        error,
        partial,
        attempts: report.attempts,
        usage: report.usage,
        ttft: report.ttft,
    };
    finalize(ctx, run, finished, reply).await
}

fn terminate(dead_lettered: bool) -> Disposition {
    if dead_lettered {
        Disposition::Terminate
    } else {
        Disposition::Requeue {
            delay: Some(Duration::from_secs(1)),
            reason: "dead_letter_not_stored",
        }
    }
}

/// The job's reply subject, if it is one the worker may publish to.
fn safe_reply_to<'a>(ctx: &WorkerContext, job: &'a Job) -> Option<&'a str> {
    job.reply_to
        .as_deref()
        .filter(|subject| ctx.subjects.is_safe_reply_to(subject))
}

/// What makes a decodable job unrunnable, if anything.
fn invalid(
    ctx: &WorkerContext,
    run: &JobRun,
    subject_model: &Result<llmq_schemas::ModelName, llmq_schemas::SubjectError>,
) -> Option<String> {
    let job = &run.job;
    match subject_model {
        Ok(model) if model.as_str() == job.model => {}
        Ok(model) => {
            return Some(format!(
                "the job's model {:?} does not match its subject's model {:?}",
                job.model,
                model.as_str()
            ));
        }
        Err(err) => return Some(format!("the subject's model token is invalid: {err}")),
    }
    if let Some(reply_to) = &job.reply_to
        && !ctx.subjects.is_safe_reply_to(reply_to)
    {
        return Some(format!(
            "reply_to {reply_to:?} is not allowed: it must be a literal subject outside {}.> and $-subjects",
            ctx.subjects.prefix()
        ));
    }
    if let Some(problem) = job.request.problem() {
        return Some(problem);
    }
    if job.stream && job.request.n.is_some_and(|n| n > 1) {
        // Deltas carry one choice; the others would be paid for and never seen.
        return Some("request.n > 1 cannot be streamed: submit it without stream".into());
    }
    None
}
