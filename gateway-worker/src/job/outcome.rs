//! The one place a processing's end is stored: its outcome built and stored exactly
//! once, or, for a hand-back, what its calls cost billed ([`conclude`]).
//!
//! The results stream keeps one message per job subject and refuses a second one, so the
//! server, not the workers, decides which outcome is final when two processings race (a
//! worker presumed dead that was only slow, a cancel racing completion). The loser
//! replies with the stored winner, so a producer never sees two different outcomes.
//! Every processing that called a provider publishes its usage event, winner or loser:
//! the calls were made, and paid for. So does one that paid for tokens and hands the job
//! back without an outcome.

use std::time::Duration;

use async_nats::jetstream::stream::DirectGetErrorKind;
use bytes::Bytes;
use llmq_schemas::{
    AttemptUsage, Cost, Outcome, OutcomeStatus, PROTOCOL_VERSION, Tenant, Timestamp, Timings,
    Usage, UsageEvent, UsageSource, UsageStatus,
};

use super::attempts::CallUsage;
use super::disposition::Disposition;
use super::ended::{Ended, Finished, HandedBack};
use super::large_outcome;
use super::millis;
use super::processing::Processing;
use super::reply::ReplySink;
use super::request_blob;
use crate::context::WorkerContext;
use crate::metrics;
use crate::nats::{PublishFailure, Store};

/// Stores how the processing ended: a finished job's outcome (replied, usage recorded;
/// `Done` once it is stored), or a hand-back (billed if its calls used tokens;
/// `Requeue`).
///
/// Boxed: its state (two durable publishes in flight, the outcome and the usage event) is
/// larger than a job's state while it waits on its provider, and would otherwise be part
/// of every job in flight.
pub fn conclude<'a>(
    ctx: &'a WorkerContext,
    processing: &'a Processing,
    ended: Ended,
    reply: &'a mut ReplySink,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Disposition> + Send + 'a>> {
    Box::pin(async move {
        match ended {
            Ended::Finished(finished) => store(ctx, processing, *finished, reply).await,
            Ended::HandedBack(back) => hand_back(back),
        }
    })
}

/// Stores the outcome, replies, records usage. `Done` once the outcome is stored.
async fn store(
    ctx: &WorkerContext,
    processing: &Processing,
    finished: Finished,
    reply: &mut ReplySink,
) -> Disposition {
    let mut outcome = build_outcome(ctx, processing, &finished);
    outcome.last_seq = reply.last_seq();
    outcome.first_seq = reply.first_seq();
    let mut usage = outcome_usage_event(ctx, processing, &outcome, &finished.usage);
    usage.over_budget = finished.over_budget;
    // Encoded once: stored as is, and sent as the final event.
    let json = match serde_json::to_vec(&outcome) {
        Ok(json) => Bytes::from(json),
        Err(err) => {
            tracing::error!(error = %err, "cannot encode the outcome");
            return not_stored();
        }
    };
    let (outcome, json) = match large_outcome::fit(ctx, processing, outcome, json).await {
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
        publish_usage(ctx, processing, &usage),
        store_outcome(ctx, &processing.tenant, &outcome, &json)
    );
    let status = match stored {
        Ok(stored) => answer(ctx, processing, &outcome, &json, stored, reply).await,
        Err(err) => {
            tracing::warn!(error = %err, "outcome not stored; handing the job back");
            return not_stored();
        }
    };
    request_blob::delete(ctx, processing).await;
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
    processing: &Processing,
    outcome: &Outcome,
    calls: &[CallUsage],
) -> UsageEvent {
    let last = outcome
        .attempts
        .last()
        .map(|a| (a.provider.clone(), a.upstream_model.clone()));
    let timings = outcome.timings.clone();
    build_usage_event(ctx, processing, outcome.status.into(), last, timings, calls)
}

/// Tells the producer the stored outcome (ours, or the one another processing stored
/// first) and returns its status. Counted before the producer is told, so a scrape after
/// the outcome includes it.
async fn answer(
    ctx: &WorkerContext,
    processing: &Processing,
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
        ctx.model_label(&processing.job.model),
        processing.tier,
        status,
        processing.picked_at.elapsed().as_secs_f64(),
    );
    match stored {
        Stored::Ours => reply.finished_json(ours_json).await,
        Stored::Theirs(theirs) => {
            tracing::info!(ours = %ours.status, stored = %theirs.status, "another processing stored the outcome first");
            reply.finished(&theirs).await;
            large_outcome::discard(ctx, processing, ours).await;
        }
    }
    status
}

fn build_outcome(ctx: &WorkerContext, processing: &Processing, finished: &Finished) -> Outcome {
    let (usage, cost, _) = totals(&finished.usage);
    let called = !finished.usage.is_empty();
    Outcome {
        v: PROTOCOL_VERSION,
        job_id: processing.job.id,
        status: finished.status,
        model: processing.job.model.clone(),
        tenant: processing.tenant.to_string(),
        tier: processing.tier,
        custom_id: processing.job.custom_id.clone(),
        metadata: processing.job.metadata.clone(),
        batch: processing.job.batch.clone(),
        response: finished.response.clone(),
        error: finished.error.clone(),
        partial: finished.partial.clone(),
        body_blob: None,
        attempts: finished.attempts.clone(),
        usage: called.then_some(usage),
        cost: called.then_some(cost),
        timings: timings(processing, finished.ttft),
        worker_id: ctx.worker_id.clone(),
        delivery: processing.delivery,
        last_seq: None,
        first_seq: None,
        processing: Some(processing.id),
        labels: processing.labels.clone(),
        clamped: processing.clamped,
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

fn timings(processing: &Processing, ttft: Option<Duration>) -> Timings {
    Timings {
        queued_ms: processing.queued.map(millis),
        ttft_ms: ttft.map(millis),
        total_ms: millis(processing.picked_at.elapsed()),
        started_at: processing.started_at,
        finished_at: Timestamp::now(),
    }
}

/// Gives the job back to the queue: nothing was called, so nothing is billed.
fn hand_back(back: HandedBack) -> Disposition {
    Disposition::Requeue {
        delay: back.delay,
        reason: back.reason,
    }
}

fn build_usage_event(
    ctx: &WorkerContext,
    processing: &Processing,
    status: UsageStatus,
    last: Option<(String, String)>,
    timings: Timings,
    calls: &[CallUsage],
) -> UsageEvent {
    let (usage, cost, usage_source) = totals(calls);
    let (provider, upstream_model) = last.unzip();
    UsageEvent {
        v: PROTOCOL_VERSION,
        id: processing.id,
        job_id: processing.job.id,
        tenant: processing.tenant.to_string(),
        model: processing.job.model.clone(),
        tier: processing.tier,
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
        delivery: processing.delivery,
        custom_id: processing.job.custom_id.clone(),
        user: processing.job.user.clone(),
        at: Timestamp::now(),
        labels: processing.labels.clone(),
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
    let batch = outcome.batch.as_ref().map(|line| &line.id);
    let subject = ctx.subjects.outcome(tenant, outcome.job_id, batch);
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
    match load_outcome(ctx, tenant, outcome.job_id, batch).await {
        Ok(Some(stored)) if stored.processing == outcome.processing => Ok(Stored::Ours),
        Ok(Some(stored)) => Ok(Stored::Theirs(Box::new(stored))),
        Ok(None) => result.map(|_| Stored::Ours).map_err(NotStored::from),
        Err(message) => Err(NotStored::StoredUnreadable(message)),
    }
}

/// The stored outcome of a job (of `batch`'s, if it is a batch line), if it has one.
pub async fn load_outcome(
    ctx: &WorkerContext,
    tenant: &Tenant,
    job_id: llmq_schemas::JobId,
    batch: Option<&llmq_schemas::BatchId>,
) -> Result<Option<Outcome>, String> {
    let subject = ctx.subjects.outcome(tenant, job_id, batch);
    match ctx.setup.results.direct_get_last_for_subject(subject).await {
        Ok(message) => serde_json::from_slice(&message.payload)
            .map(Some)
            .map_err(|err| format!("stored outcome of {job_id} is not readable: {err}")),
        Err(err) if err.kind() == DirectGetErrorKind::NotFound => Ok(None),
        Err(err) => Err(err.to_string()),
    }
}

async fn publish_usage(ctx: &WorkerContext, processing: &Processing, event: &UsageEvent) {
    let Ok(payload) = serde_json::to_vec(event) else {
        return;
    };
    let Ok(model) = llmq_schemas::ModelName::parse(&processing.job.model) else {
        return;
    };
    let subject = ctx.subjects.usage(&processing.tenant, &model);
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
