//! One delivery of a job message, start to finish, one way: take it in, handle it (the
//! checks that need no provider, admission, budget, the attempts), conclude (store the
//! outcome, or hand the job back), and return the one [`Disposition`].
//!
//! [`handle`] decides how the processing ended and stores nothing; [`conclude`] is the
//! only place that stores it. The post-call branches are boxed (the budget's settlement,
//! the conclusion): an async fn's state is as large as its largest branch, and every job
//! waiting on its provider would otherwise carry theirs.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::Message;
use llmq_runtime::budget::Reservation;
use llmq_runtime::limits::Admission;
use llmq_schemas::{ErrorType, Job, JobError, OutcomeStatus, Timestamp};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::admit;
use super::attempts::{AttemptsReport, try_deployments};
use super::budget::{self, Stop};
use super::disposition::Disposition;
use super::ended::Ended;
use super::intake::{Intake, intake};
use super::outcome::conclude;
use super::processing::Processing;
use super::reply::ReplySink;
use crate::context::WorkerContext;
use crate::routing::ModelRoute;

/// Processes one delivery. `served` is the model of the consumer the message came from
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
    let Intake {
        processing,
        mut reply,
        refusal,
    } = match intake(ctx, message, picked_at, started_at).await {
        Ok(intake) => intake,
        Err(disposition) => return disposition,
    };
    let span = tracing::info_span!(
        "job",
        job_id = %processing.job.id,
        model = %processing.job.model,
        tenant = %processing.tenant,
        tier = %processing.tier,
        delivery = processing.delivery,
    );
    let path = Path {
        processing: &processing,
        served,
        hard_stop,
    };
    async {
        let handled = handle(ctx, path, refusal, &mut reply).await;
        let disposition = conclude(ctx, &processing, handled.ended, &mut reply).await;
        // The tenant's limits are held until the outcome is stored.
        drop(handled.tenant_limits);
        disposition
    }
    .instrument(span)
    .await
}

/// A processing, and where it runs.
#[derive(Clone, Copy)]
struct Path<'a> {
    processing: &'a Processing,
    served: Option<&'a Arc<ModelRoute>>,
    hard_stop: &'a CancellationToken,
}

/// How a processing ended, and the tenant's limits it holds until that is stored (a
/// job that made calls holds them through its conclusion).
struct Handled {
    ended: Ended,
    tenant_limits: Option<Admission>,
}

impl From<Ended> for Handled {
    fn from(ended: Ended) -> Handled {
        Handled {
            ended,
            tenant_limits: None,
        }
    }
}

/// The job's path after intake: the checks that end it without a provider call, its
/// tenant's limits, its budget, the attempts, their cost. Stores nothing.
async fn handle(
    ctx: &WorkerContext,
    path: Path<'_>,
    refusal: Option<JobError>,
    reply: &mut ReplySink,
) -> Handled {
    let processing = path.processing;
    let deadline_at = processing.deadline(&ctx.config.worker);
    let model = match before_any_call(ctx, path, refusal, deadline_at) {
        Ok(model) => model,
        Err(ended) => return ended.into(),
    };
    let running = ctx.cancels.register(&processing.tenant, processing.job.id);
    let admitted = admit::tenant(ctx, processing, model, deadline_at, &running.token).await;
    let tenant_limits = match admitted {
        Ok(admission) => admission,
        Err(not_admitted) => return Ended::not_admitted(not_admitted).into(),
    };
    let reservation = match Box::pin(budget::reserve(ctx, processing, model)).await {
        Ok(reservation) => reservation,
        Err(Stop::Refused(error)) => {
            return Ended::without_calls(OutcomeStatus::Failed, error).into();
        }
        Err(Stop::Unavailable) => {
            let delay = Some(Duration::from_secs(1));
            return Ended::handed_back(delay, "budget_unavailable").into();
        }
    };
    let spec = processing.spec(deadline_at, &ctx.config.limits);
    let report = tokio::select! {
        report = try_deployments(ctx, spec, model, &running.token, reply) => report,
        () = path.hard_stop.cancelled() => {
            tracing::warn!("shutdown grace period over; handing the job back");
            return Ended::handed_back(None, "shutdown").into();
        }
    };
    drop(running);
    let held = Held {
        tenant_limits,
        reservation,
    };
    after_calls(ctx, processing, report, held).await
}

/// The model to run on, or the ending of a job that must not reach a provider: refused
/// (its subject, its tenant's policy), invalid, cancelled, past its deadline, or for a
/// model nobody serves.
fn before_any_call<'m>(
    ctx: &'m WorkerContext,
    path: Path<'m>,
    refusal: Option<JobError>,
    deadline_at: Timestamp,
) -> Result<&'m Arc<ModelRoute>, Ended> {
    let job = &path.processing.job;
    let fail = |status, kind, message: String| {
        Err(Ended::without_calls(status, JobError::new(kind, message)))
    };
    if let Some(refusal) = refusal {
        return Err(Ended::without_calls(OutcomeStatus::Failed, refusal));
    }
    if let Some(problem) = invalid(ctx, job) {
        return fail(OutcomeStatus::Failed, ErrorType::InvalidJob, problem);
    }
    if ctx.cancels.is_requested(&path.processing.tenant, job.id) {
        let message = "cancelled before it started".to_owned();
        return fail(OutcomeStatus::Cancelled, ErrorType::Cancelled, message);
    }
    if let Some(line) = &job.batch
        && ctx
            .cancels
            .is_batch_cancelled(&path.processing.tenant, &line.id)
    {
        let message = format!("batch {} was cancelled before this line started", line.id);
        return fail(OutcomeStatus::Cancelled, ErrorType::Cancelled, message);
    }
    if deadline_at.has_passed() {
        let message = format!("the deadline {deadline_at} passed before the job was picked up");
        return fail(OutcomeStatus::Expired, ErrorType::DeadlineExceeded, message);
    }
    match path.served.or_else(|| ctx.router.model(&job.model)) {
        Some(model) => Ok(model),
        None => fail(
            OutcomeStatus::Failed,
            ErrorType::UnknownModel,
            unknown_model(ctx, &job.model),
        ),
    }
}

fn unknown_model(ctx: &WorkerContext, model: &str) -> String {
    let served: Vec<String> = ctx.router.models().map(|m| m.name.to_string()).collect();
    format!(
        "no worker serves model {model:?}; models served: {}",
        served.join(", ")
    )
}

/// What a job holds through its calls: its tenant's limits (until its outcome is stored)
/// and its budget reservation (until its cost is counted).
struct Held {
    tenant_limits: Option<Admission>,
    reservation: Option<Reservation>,
}

/// After the calls: the token reservation corrected, the cost counted against the
/// tenant's budget (which gives the reservation back), then how the attempts ended.
async fn after_calls(
    ctx: &WorkerContext,
    processing: &Processing,
    report: AttemptsReport,
    held: Held,
) -> Handled {
    let Held {
        tenant_limits,
        reservation,
    } = held;
    if let Some(admission) = &tenant_limits {
        admission.reconcile(
            report
                .usage
                .iter()
                .map(|call| call.usage.total_tokens)
                .sum(),
        );
    }
    // Boxed, like the conclusion: its publishes would otherwise size every job's state.
    let over = Box::pin(budget::settle(ctx, processing, &report.usage, reservation)).await;
    Handled {
        ended: Ended::after_calls(report, over),
        tenant_limits,
    }
}

/// What makes a decoded job unrunnable, if anything.
fn invalid(ctx: &WorkerContext, job: &Job) -> Option<String> {
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
