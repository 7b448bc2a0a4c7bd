//! Turning a processing into the job's outcome, stored exactly once.
//!
//! The results stream keeps one message per job subject and refuses a second one, so the
//! server, not the workers, decides which outcome is final when two processings race (a
//! worker presumed dead that was only slow, a cancel racing completion). The loser
//! replies with the stored winner, so a producer never sees two different outcomes.
//! Every processing that called a provider publishes its usage event, winner or loser:
//! the calls were made, and paid for. So does one that paid for tokens and hands the job
//! back without an outcome ([`bill_handed_back`]).

use std::time::Duration;

use async_nats::jetstream::stream::DirectGetErrorKind;
use bytes::Bytes;
use llmq_schemas::{
    Attempt, AttemptUsage, BudgetPeriod, ChatCompletion, Cost, JobError, Outcome, OutcomeStatus,
    PROTOCOL_VERSION, Partial, Tenant, Timestamp, Timings, Usage, UsageEvent, UsageSource,
    UsageStatus,
};

use super::disposition::Disposition;
use super::execute::{CallUsage, millis};
use super::large_outcome;
use super::reply::ReplySink;
use super::request_blob;
use super::run::JobRun;
use crate::context::WorkerContext;
use crate::metrics;
use crate::nats::{PublishFailure, Store};

/// Everything a processing produced.
#[derive(Debug)]
pub struct Finished {
    pub status: OutcomeStatus,
    pub response: Option<ChatCompletion>,
    pub error: Option<JobError>,
    pub partial: Option<Partial>,
    pub attempts: Vec<Attempt>,
    pub usage: Vec<CallUsage>,
    pub ttft: Option<Duration>,
    /// The periods whose budget the tenant's spend reached with these calls' cost.
    pub over_budget: Vec<BudgetPeriod>,
}

impl Finished {
    /// An outcome reached without calling a provider.
    pub fn without_attempts(status: OutcomeStatus, error: JobError) -> Self {
        Self {
            status,
            response: None,
            error: Some(error),
            partial: None,
            attempts: Vec::new(),
            usage: Vec::new(),
            ttft: None,
            over_budget: Vec::new(),
        }
    }
}

/// Stores the outcome, replies, records usage. `Done` once the outcome is stored.
///
/// Boxed: its state (two durable publishes in flight, the outcome and the usage event) is
/// larger than a job's state while it waits on its provider, and would otherwise be part
/// of every job in flight.
pub fn finalize<'a>(
    ctx: &'a WorkerContext,
    run: &'a JobRun,
    finished: Finished,
    reply: &'a mut ReplySink,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Disposition> + Send + 'a>> {
    Box::pin(finalize_now(ctx, run, finished, reply))
}

async fn finalize_now(
    ctx: &WorkerContext,
    run: &JobRun,
    finished: Finished,
    reply: &mut ReplySink,
) -> Disposition {
    let mut outcome = build_outcome(ctx, run, &finished);
    outcome.last_seq = reply.last_seq();
    outcome.first_seq = reply.first_seq();
    let mut usage = outcome_usage_event(ctx, run, &outcome, &finished.usage);
    usage.over_budget = finished.over_budget;
    // Encoded once: stored as is, and sent as the final event.
    let json = match serde_json::to_vec(&outcome) {
        Ok(json) => Bytes::from(json),
        Err(err) => {
            tracing::error!(error = %err, "cannot encode the outcome");
            return not_stored();
        }
    };
    let (outcome, json) = match large_outcome::fit(ctx, run, outcome, json).await {
        Ok(fitted) => fitted,
        Err(err) => {
            tracing::warn!(error = %err, "outcome not stored; handing the job back");
            return not_stored();
        }
    };
    // Usage goes out first, pipelined with the outcome on the same connection: a worker
    // that dies after the outcome left has sent its usage too, and a redelivery answered
    // from the stored outcome has nothing left to bill. Both acks are awaited together.
    let (_, stored) = tokio::join!(
        publish_usage(ctx, run, &usage),
        store_outcome(ctx, &run.tenant, &outcome, &json)
    );
    let status = match stored {
        Ok(stored) => answer(ctx, run, &outcome, &json, stored, reply).await,
        Err(err) => {
            tracing::warn!(error = %err, "outcome not stored; handing the job back");
            return not_stored();
        }
    };
    request_blob::delete(ctx, run).await;
    tracing::info!(
        %status,
        attempts = outcome.attempts.len(),
        total_ms = outcome.timings.total_ms,
        "job finished"
    );
    Disposition::Done
}

fn not_stored() -> Disposition {
    Disposition::Requeue {
        delay: Some(Duration::from_secs(1)),
        reason: "outcome_not_stored",
    }
}

/// The usage event of a processing that reached an outcome.
fn outcome_usage_event(
    ctx: &WorkerContext,
    run: &JobRun,
    outcome: &Outcome,
    calls: &[CallUsage],
) -> UsageEvent {
    let last = outcome
        .attempts
        .last()
        .map(|a| (a.provider.clone(), a.upstream_model.clone()));
    let timings = outcome.timings.clone();
    build_usage_event(ctx, run, outcome.status.into(), last, timings, calls)
}

/// Tells the producer the stored outcome (ours, or the one another processing stored
/// first) and returns its status. Counted before the producer is told, so a scrape after
/// the outcome includes it.
async fn answer(
    ctx: &WorkerContext,
    run: &JobRun,
    ours: &Outcome,
    ours_json: &[u8],
    stored: Stored,
    reply: &mut ReplySink,
) -> OutcomeStatus {
    let status = match &stored {
        Stored::Ours => ours.status,
        Stored::Theirs(theirs) => theirs.status,
    };
    metrics::job_finished(
        ctx.model_label(&run.job.model),
        run.tier,
        status,
        run.picked_at.elapsed().as_secs_f64(),
    );
    match stored {
        Stored::Ours => reply.finished_json(ours_json).await,
        Stored::Theirs(theirs) => {
            tracing::info!(ours = %ours.status, stored = %theirs.status, "another processing stored the outcome first");
            reply.finished(&theirs).await;
            large_outcome::discard(ctx, run, ours).await;
        }
    }
    status
}

fn build_outcome(ctx: &WorkerContext, run: &JobRun, finished: &Finished) -> Outcome {
    let (usage, cost, _) = totals(&finished.usage);
    let called = !finished.usage.is_empty();
    Outcome {
        v: PROTOCOL_VERSION,
        job_id: run.job.id,
        status: finished.status,
        model: run.job.model.clone(),
        tenant: run.tenant.to_string(),
        tier: run.tier,
        custom_id: run.job.custom_id.clone(),
        metadata: run.job.metadata.clone(),
        response: finished.response.clone(),
        error: finished.error.clone(),
        partial: finished.partial.clone(),
        body_blob: None,
        attempts: finished.attempts.clone(),
        usage: called.then_some(usage),
        cost: called.then_some(cost),
        timings: timings(run, finished.ttft),
        worker_id: ctx.worker_id.clone(),
        delivery: run.delivery,
        last_seq: None,
        first_seq: None,
        processing: Some(run.processing),
        labels: run.labels.clone(),
        clamped: run.clamped,
    }
}

fn totals(calls: &[CallUsage]) -> (Usage, Cost, UsageSource) {
    let mut usage = Usage::default();
    let mut cost = Cost::zero();
    let mut source = if calls.is_empty() {
        UsageSource::None
    } else {
        UsageSource::Reported
    };
    for call in calls {
        usage.add(&call.usage);
        cost = cost.plus(&call.cost);
        if call.source == UsageSource::Estimated {
            source = UsageSource::Estimated;
        }
    }
    (usage, cost, source)
}

fn timings(run: &JobRun, ttft: Option<Duration>) -> Timings {
    Timings {
        queued_ms: run.queued.map(millis),
        ttft_ms: ttft.map(millis),
        total_ms: millis(run.picked_at.elapsed()),
        started_at: run.started_at,
        finished_at: Timestamp::now(),
    }
}

/// Bills a processing that gives the job back to the queue without an outcome after
/// paying for tokens (every deployment cooling down after, say, a cut stream): no outcome
/// will carry these calls, so without this event they would be billed nowhere. Boxed,
/// like [`finalize`], to keep it out of every job's state.
pub fn bill_handed_back<'a>(
    ctx: &'a WorkerContext,
    run: &'a JobRun,
    calls: &'a [CallUsage],
    over_budget: Vec<BudgetPeriod>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
    Box::pin(async move {
        let last = calls
            .last()
            .map(|c| (c.provider.clone(), c.upstream_model.clone()));
        let mut event = build_usage_event(
            ctx,
            run,
            UsageStatus::HandedBack,
            last,
            timings(run, None),
            calls,
        );
        event.over_budget = over_budget;
        tracing::info!(
            prompt_tokens = event.usage.prompt_tokens,
            completion_tokens = event.usage.completion_tokens,
            "billing a processing that hands the job back"
        );
        publish_usage(ctx, run, &event).await;
    })
}

fn build_usage_event(
    ctx: &WorkerContext,
    run: &JobRun,
    status: UsageStatus,
    last: Option<(String, String)>,
    timings: Timings,
    calls: &[CallUsage],
) -> UsageEvent {
    let (usage, cost, usage_source) = totals(calls);
    let (provider, upstream_model) = last.unzip();
    UsageEvent {
        v: PROTOCOL_VERSION,
        id: run.processing,
        job_id: run.job.id,
        tenant: run.tenant.to_string(),
        model: run.job.model.clone(),
        tier: run.tier,
        provider,
        upstream_model,
        status,
        usage,
        usage_source,
        cost,
        attempts: calls
            .iter()
            .map(|call| AttemptUsage {
                attempt: call.attempt,
                provider: call.provider.clone(),
                upstream_model: call.upstream_model.clone(),
                usage: call.usage,
                usage_source: call.source,
                cost: call.cost.clone(),
            })
            .collect(),
        timings,
        worker_id: ctx.worker_id.clone(),
        delivery: run.delivery,
        custom_id: run.job.custom_id.clone(),
        at: Timestamp::now(),
        labels: run.labels.clone(),
        over_budget: Vec::new(),
    }
}

/// Which outcome the results stream holds for the job.
#[derive(Debug)]
enum Stored {
    /// Ours.
    Ours,
    /// Another processing's, stored first.
    Theirs(Box<Outcome>),
}

/// Why an outcome was not stored.
#[derive(Debug, thiserror::Error)]
enum NotStored {
    #[error(transparent)]
    Publish(#[from] PublishFailure),
    /// The stream refused ours because it holds one, which could not be read.
    #[error("an outcome is stored but cannot be read: {0}")]
    StoredUnreadable(String),
}

/// Stores `outcome` (already encoded as `json`) unless the job has one already.
async fn store_outcome(
    ctx: &WorkerContext,
    tenant: &Tenant,
    outcome: &Outcome,
    json: &Bytes,
) -> Result<Stored, NotStored> {
    let subject = ctx.subjects.result(tenant, outcome.job_id);
    // The tenant too: job ids are the producers', so another tenant's job with the same
    // id must not make this outcome a duplicate (dropped) within the window.
    let msg_id = format!("outcome-{tenant}.{}", outcome.job_id);
    let result = ctx
        .store(Store {
            stream: "results",
            subject: &subject,
            msg_id: &msg_id,
            headers: None,
            payload: json,
        })
        .await;
    let already_stored = match &result {
        Ok(ack) => ack.duplicate,
        Err(PublishFailure::SubjectFull { .. }) => true,
        Err(_) => false,
    };
    if !already_stored {
        return result.map(|_| Stored::Ours).map_err(NotStored::from);
    }
    match load_outcome(ctx, tenant, outcome.job_id).await {
        Ok(Some(stored)) if stored.processing == outcome.processing => Ok(Stored::Ours),
        Ok(Some(stored)) => Ok(Stored::Theirs(Box::new(stored))),
        Ok(None) => result.map(|_| Stored::Ours).map_err(NotStored::from),
        Err(message) => Err(NotStored::StoredUnreadable(message)),
    }
}

/// The stored outcome of a job, if it has one.
pub async fn load_outcome(
    ctx: &WorkerContext,
    tenant: &Tenant,
    job_id: llmq_schemas::JobId,
) -> Result<Option<Outcome>, String> {
    let subject = ctx.subjects.result(tenant, job_id);
    match ctx.setup.results.direct_get_last_for_subject(subject).await {
        Ok(message) => serde_json::from_slice(&message.payload)
            .map(Some)
            .map_err(|err| format!("stored outcome of {job_id} is not readable: {err}")),
        Err(err) if err.kind() == DirectGetErrorKind::NotFound => Ok(None),
        Err(err) => Err(err.to_string()),
    }
}

async fn publish_usage(ctx: &WorkerContext, run: &JobRun, event: &UsageEvent) {
    let Ok(payload) = serde_json::to_vec(event) else {
        return;
    };
    let Ok(model) = llmq_schemas::ModelName::parse(&run.job.model) else {
        return;
    };
    let subject = ctx.subjects.usage(&run.tenant, &model);
    let payload = Bytes::from(payload);
    let result = ctx
        .store(Store {
            stream: "usage",
            subject: &subject,
            msg_id: &event.id.to_string(),
            headers: None,
            payload: &payload,
        })
        .await;
    if let Err(err) = result {
        // The outcome (stored) carries the same usage and cost; the event is logged whole
        // so billing can be repaired from the logs.
        tracing::error!(
            error = %err,
            usage_event = %String::from_utf8_lossy(&payload),
            "usage event not stored"
        );
    }
}
