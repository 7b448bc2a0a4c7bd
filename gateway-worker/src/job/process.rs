//! One delivery of a job message, start to finish: decode, answer what needs no
//! provider, run the attempts, store the outcome.
//!
//! The rarely-taken and post-call branches (dead letters, stored-outcome lookups, the
//! outcome itself) are boxed: an async fn's state is as large as its largest branch, and
//! every job waiting on its provider would otherwise carry theirs.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::Message;
use llmq_schemas::{BudgetPeriod, ErrorType, Job, JobError, OutcomeStatus, Timestamp};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::decode::{Decoded, Delivery, Rejection, decode};
use super::disposition::Disposition;
use super::execute::{
    CallUsage, Execution, ExecutionReport, JobSpec, execute, gave_up, rate_limited, reservation,
};
use super::finalize::{Finished, bill_handed_back, finalize, load_outcome};
use super::reply::ReplySink;
use super::request_blob;
use super::run::JobRun;
use llmq_runtime::budget::Reservation;
use llmq_runtime::limits::{Admission, Demand};
use llmq_runtime::policy::{self, JobFacts};
use llmq_runtime::tenants::Lookup;

use crate::budget;
use crate::context::WorkerContext;
use crate::dlq::dead_letter_message;
use crate::metrics;
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
    let max_deliver = ctx.config.jetstream.max_deliver;
    let mut ready = match decode(&ctx.subjects, max_deliver, Delivery::of(message)) {
        Decoded::Ready(ready) => ready,
        Decoded::Rejected(rejection) => return Box::pin(reject(ctx, message, rejection)).await,
    };
    if let Err(later) = Box::pin(request_blob::resolve(ctx, &mut ready)).await {
        return later;
    }
    let model_label = ctx.model_label(&ready.job.model);
    metrics::job_received(model_label, ready.tier, ready.delivery > 1);
    let subject_problem = ready.problem.take();
    let payload_bytes = ready.payload_bytes;
    let mut run = JobRun::new(*ready, picked_at, started_at);
    let verdict = policy(ctx, &mut run, payload_bytes);
    let mut reply = reply_sink(ctx, &run);
    if run.delivery > 1
        && let Some(answered) = Box::pin(answer_from_stored(ctx, &run, &mut reply)).await
    {
        return answered;
    }
    if let Some(queued) = run.queued {
        metrics::queue_wait(model_label, run.tier, queued.as_secs_f64());
    }
    let refusal = match (subject_problem, verdict) {
        (Some(problem), _) => Some(JobError::new(ErrorType::InvalidJob, problem)),
        (None, Err(denied)) => Some(denied),
        (None, Ok(())) => None,
    };
    let span = tracing::info_span!(
        "job",
        job_id = %run.job.id,
        model = %run.job.model,
        tenant = %run.tenant,
        tier = %run.tier,
        delivery = run.delivery,
    );
    let job = Processing {
        run: &run,
        served,
        hard_stop,
    };
    job.run(ctx, refusal, &mut reply).instrument(span).await
}

/// Asks the tenant registry whether the job may run, before anything else happens to it
/// (whatever path it came by: a producer that skipped the submitter's own check cannot
/// bypass this). An allowed job gets its tenant's labels and, if it asked for more
/// completion tokens than its tenant may, the tenant's ceiling instead.
fn policy(ctx: &WorkerContext, run: &mut JobRun, payload_bytes: usize) -> Result<(), JobError> {
    let lookup = ctx.registry.lookup(&run.tenant);
    if let Lookup::Known(policy) = &lookup {
        run.labels = policy.entry.labels.clone();
        run.tenant_policy = Some(Arc::clone(policy));
    }
    let facts = JobFacts {
        tenant: &run.tenant,
        tier: run.tier,
        job: &run.job,
        payload_bytes,
    };
    match policy::check(&lookup, facts) {
        Ok(allowed) => {
            allowed.apply(&mut run.job.request);
            run.clamped = allowed.clamped;
            Ok(())
        }
        Err(denied) => {
            metrics::policy_denied(denied.rule);
            tracing::info!(job_id = %run.job.id, tenant = %run.tenant, rule = %denied.rule, "job refused by policy");
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
fn reply_sink(ctx: &WorkerContext, run: &JobRun) -> ReplySink {
    let job = &run.job;
    let lookup = ctx.registry.lookup(&run.tenant);
    let reply_to = job
        .reply_to
        .as_deref()
        .filter(|subject| policy::may_reply_to(&ctx.subjects, &lookup, &run.tenant, subject));
    ReplySink::new(
        ctx.nats.clone(),
        reply_to,
        job.id,
        run.delivery,
        run.processing,
        job.stream,
    )
}

/// A redelivery whose earlier processing stored the outcome (and died before its ack) is
/// answered from it instead of paying the provider again. `None`: run it.
async fn answer_from_stored(
    ctx: &WorkerContext,
    run: &JobRun,
    reply: &mut ReplySink,
) -> Option<Disposition> {
    match load_outcome(ctx, &run.tenant, run.job.id).await {
        Ok(Some(outcome)) => {
            metrics::outcome_resent();
            tracing::info!(job_id = %run.job.id, status = %outcome.status, "redelivered job already has an outcome; re-sending it");
            reply.finished(&outcome).await;
            Some(Disposition::Done)
        }
        Ok(None) => None,
        Err(err) => {
            tracing::warn!(job_id = %run.job.id, error = %err, "cannot read the stored outcome; handing the job back");
            Some(Disposition::Requeue {
                delay: Some(Duration::from_secs(1)),
                reason: "results_unreadable",
            })
        }
    }
}

/// A job past decoding, and where it runs.
struct Processing<'a> {
    run: &'a JobRun,
    served: Option<&'a Arc<ModelRoute>>,
    hard_stop: &'a CancellationToken,
}

impl Processing<'_> {
    /// Everything after decoding: the checks that end a job without a provider call,
    /// then the attempts, then the outcome.
    async fn run(
        self,
        ctx: &Arc<WorkerContext>,
        refusal: Option<JobError>,
        reply: &mut ReplySink,
    ) -> Disposition {
        let run = self.run;
        let deadline_at = run.deadline(&ctx.config.worker);
        let model = match self.before_any_call(ctx, refusal, deadline_at) {
            Ok(model) => model,
            Err((status, error)) => {
                let finished = Finished::without_attempts(status, error);
                return finalize(ctx, run, finished, reply).await;
            }
        };
        let running = ctx.cancels.register(&run.tenant, run.job.id);
        let limit_wait = run.limit_wait(&ctx.config.limits);
        let tenant_admission = match tenant_admission(
            ctx,
            run,
            model,
            deadline_at,
            limit_wait,
            &running.token,
        )
        .await
        {
            Ok(admission) => admission,
            Err(execution) => {
                drop(running);
                let finished = finished(ExecutionReport::without_attempts(execution));
                return match finished {
                    Ok(finished) => finalize(ctx, run, finished, reply).await,
                    Err(_) => Disposition::Requeue {
                        delay: None,
                        reason: "cooling_down",
                    },
                };
            }
        };
        let reservation = match Box::pin(budget::reserve(ctx, run, model)).await {
            Ok(reservation) => reservation,
            Err(stop) => {
                drop((running, tenant_admission));
                return refused_by_budget(ctx, run, stop, reply).await;
            }
        };
        let spec = JobSpec {
            request: &run.job.request,
            stream: run.job.stream,
            picked_at: run.picked_at,
            deadline: Instant::now() + deadline_at.remaining(),
            limit_wait,
        };
        let report = tokio::select! {
            report = execute(ctx, spec, model, &running.token, reply) => report,
            () = self.hard_stop.cancelled() => {
                tracing::warn!("shutdown grace period over; handing the job back");
                return Disposition::Requeue { delay: None, reason: "shutdown" };
            }
        };
        drop(running);
        let held = Held {
            admission: tenant_admission,
            reservation,
        };
        after_calls(ctx, run, report, held, deadline_at, reply).await
    }

    /// The model to run on, or the outcome of a job that must not reach a provider:
    /// invalid, cancelled, past its deadline, or for a model nobody serves.
    fn before_any_call<'m>(
        &'m self,
        ctx: &'m WorkerContext,
        refusal: Option<JobError>,
        deadline_at: Timestamp,
    ) -> Result<&'m Arc<ModelRoute>, (OutcomeStatus, JobError)> {
        let run = self.run;
        let fail = |status, kind, message: String| Err((status, JobError::new(kind, message)));
        if let Some(refusal) = refusal {
            return Err((OutcomeStatus::Failed, refusal));
        }
        if let Some(problem) = invalid(ctx, &run.job) {
            return fail(OutcomeStatus::Failed, ErrorType::InvalidJob, problem);
        }
        if ctx.cancels.is_requested(&run.tenant, run.job.id) {
            let message = "cancelled before it started".to_owned();
            return fail(OutcomeStatus::Cancelled, ErrorType::Cancelled, message);
        }
        if deadline_at.has_passed() {
            let message = format!("the deadline {deadline_at} passed before the job was picked up");
            return fail(OutcomeStatus::Expired, ErrorType::DeadlineExceeded, message);
        }
        match self.served.or_else(|| ctx.router.model(&run.job.model)) {
            Some(model) => Ok(model),
            None => fail(
                OutcomeStatus::Failed,
                ErrorType::UnknownModel,
                unknown_model(ctx, &run.job.model),
            ),
        }
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
    admission: Option<Admission>,
    reservation: Option<Reservation>,
}

/// After the calls: the token reservation corrected, the cost counted against the
/// tenant's budget, then the outcome, or a hand-back.
async fn after_calls(
    ctx: &WorkerContext,
    run: &JobRun,
    report: ExecutionReport,
    held: Held,
    deadline_at: Timestamp,
    reply: &mut ReplySink,
) -> Disposition {
    let Held {
        admission,
        reservation,
    } = held;
    if let Some(admission) = &admission {
        admission.reconcile(
            report
                .usage
                .iter()
                .map(|call| call.usage.total_tokens)
                .sum(),
        );
    }
    // Boxed, like `finalize`: its publishes would otherwise size every job's state.
    let over = Box::pin(budget::settle(ctx, run, &report.usage, reservation)).await;
    let disposition = match finished(report) {
        Ok(finished) => {
            let finished = Finished {
                over_budget: over,
                ..finished
            };
            finalize(ctx, run, finished, reply).await
        }
        Err(handed_back) => hand_back(ctx, run, handed_back, deadline_at, over).await,
    };
    drop(admission);
    disposition
}

/// Attempts that ended with every deployment cooling down: the job goes back to the
/// queue, and what its calls cost is billed.
struct HandedBack {
    wait: Duration,
    usage: Vec<CallUsage>,
}

/// The attempts' result as the job's outcome, or a hand-back.
fn finished(report: ExecutionReport) -> Result<Finished, HandedBack> {
    let cancelled = || JobError::new(ErrorType::Cancelled, "cancelled while running");
    let (status, response, error, partial) = match report.execution {
        Execution::Succeeded(completion) => (
            OutcomeStatus::Succeeded,
            Some(completion.response),
            None,
            None,
        ),
        Execution::Failed { error, partial } => (OutcomeStatus::Failed, None, Some(error), partial),
        Execution::Cancelled => (OutcomeStatus::Cancelled, None, Some(cancelled()), None),
        Execution::Expired { error } => (OutcomeStatus::Expired, None, Some(error), None),
        Execution::CoolingDown(wait) => {
            return Err(HandedBack {
                wait,
                usage: report.usage,
            });
        }
    };
    Ok(Finished {
        status,
        response,
        error,
        partial,
        attempts: report.attempts,
        usage: report.usage,
        ttft: report.ttft,
        over_budget: Vec::new(),
    })
}

/// A job its tenant's hard budget refuses (`failed`, `budget_exceeded`, no provider
/// call), or one handed back because the budget state cannot be read.
async fn refused_by_budget(
    ctx: &WorkerContext,
    run: &JobRun,
    stop: budget::Stop,
    reply: &mut ReplySink,
) -> Disposition {
    match stop {
        budget::Stop::Refused(error) => {
            let finished = Finished::without_attempts(OutcomeStatus::Failed, error);
            finalize(ctx, run, finished, reply).await
        }
        budget::Stop::Unavailable => Disposition::Requeue {
            delay: Some(Duration::from_secs(1)),
            reason: "budget_unavailable",
        },
    }
}

async fn hand_back(
    ctx: &WorkerContext,
    run: &JobRun,
    handed_back: HandedBack,
    deadline_at: Timestamp,
    over_budget: Vec<BudgetPeriod>,
) -> Disposition {
    let delay = handed_back
        .wait
        .max(Duration::from_millis(100))
        .min(deadline_at.remaining());
    tracing::info!(
        ?delay,
        "every deployment is cooling down; handing the job back"
    );
    let usage = &handed_back.usage;
    if usage.iter().any(|c| c.usage.total_tokens > 0) {
        bill_handed_back(ctx, run, usage, over_budget).await;
    }
    Disposition::Requeue {
        delay: Some(delay),
        reason: "cooling_down",
    }
}

/// The tenant's own fleet-wide limits (jobs in flight, jobs and tokens per window, for
/// the tenant and for its use of this model), held for the whole job. Waits as the job's
/// tier may; a job whose wait ran out ends `rate_limited`, one whose deadline passed
/// `expired`.
async fn tenant_admission(
    ctx: &WorkerContext,
    run: &JobRun,
    model: &ModelRoute,
    deadline_at: Timestamp,
    limit_wait: Option<Duration>,
    cancel: &CancellationToken,
) -> Result<Option<Admission>, Execution> {
    let limits = run.tenant_limits();
    if limits.is_empty() {
        return Ok(None);
    }
    let deadline = Instant::now() + deadline_at.remaining();
    let until = limit_wait.map_or(deadline, |wait| (Instant::now() + wait).min(deadline));
    let demand = Demand {
        tokens: reservation(&run.job.request, model.default_max_tokens),
    };
    let started = Instant::now();
    tokio::select! {
        admitted = ctx.limiter.admit(&limits, demand, Some(until)) => match admitted {
            Ok(admission) => {
                if let Some(waited) = admission.waited() {
                    metrics::limit_waited(&waited.scope, true, waited.time.as_secs_f64());
                }
                Ok(Some(admission))
            }
            Err(err) if deadline_at.has_passed() => {
                gave_up(&err, started);
                Err(Execution::Expired {
                error: JobError::new(ErrorType::DeadlineExceeded, "the job's deadline passed while it waited for its tenant's limits"),
                })
            }
            Err(err) => {
                gave_up(&err, started);
                Err(rate_limited(&err))
            }
        },
        () = cancel.cancelled() => Err(Execution::Cancelled),
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
