//! The queue on `/metrics`: per model and tier, jobs waiting, delivered but unacked, and
//! the oldest job's age, sampled from JetStream's consumer info every few seconds (the
//! batch tier's summed over its consumers per tenant); and
//! which models this worker serves (`llmq_worker_model_served`).
//!
//! Why here: depth and age are the broker's state, not something a worker counts, and
//! without them on `/metrics` Prometheus cannot graph or alert on a growing queue
//! (`submitter status` reads the same consumer info, but needs an operator at a terminal).
//! Every worker samples the consumers of the models it serves, so workers that share a
//! model report the same values: dashboards and alerts aggregate with `max by (model, tier)`.
//! Labels are models from this worker's routes and the fixed tiers: bounded by config.
//!
//! The model set is read from the routes on every tick, so a reloaded config is followed:
//! a model no longer served reads `served 0` and its queue gauges 0 here (a worker that
//! still serves it reports the truth; `max by` picks that).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use llmq_runtime::queue_state;
use llmq_schemas::{ModelName, Tier};
use tokio_util::sync::CancellationToken;

use crate::context::{Live, WorkerContext};
use crate::metrics::{self, QueueSample};

/// How often the consumers are asked (per model and tick: one consumer info for the
/// interactive tier; for the batch tier one stream info and one consumer info per tenant
/// with jobs).
const SAMPLE: Duration = Duration::from_secs(5);

/// Why one queue could not be sampled (logged; the gauges keep their last value).
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error("queue state: {message}")]
    Queue { message: String },
    #[error("the tier's consumer does not exist yet")]
    NoConsumer,
}

/// Samples until `stop`.
pub async fn run(live: Arc<Live>, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(SAMPLE);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut served = BTreeSet::new();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = stop.cancelled() => return,
        }
        // The current config each tick: a reload adds and removes models.
        served = sample_all(&live.current(), &served).await;
    }
}

/// One tick: every served (model, tier), then the models served last tick and not now.
/// Returns the models served now.
async fn sample_all(ctx: &WorkerContext, before: &BTreeSet<ModelName>) -> BTreeSet<ModelName> {
    let now: BTreeSet<ModelName> = ctx.router.models().map(|m| m.name.clone()).collect();
    for model in &now {
        metrics::model_served(model.as_str(), true);
        for tier in Tier::ALL {
            match sample(ctx, model, tier).await {
                Ok(sample) => metrics::queue_sampled(model.as_str(), tier, sample),
                Err(err) => tracing::debug!(error = %err, "queue not sampled"),
            }
        }
    }
    for gone in before.difference(&now) {
        metrics::model_served(gone.as_str(), false);
        for tier in Tier::ALL {
            metrics::queue_sampled(gone.as_str(), tier, QueueSample::default());
        }
    }
    now
}

/// One queue's state, summed over its consumers (the batch tier has one per tenant).
async fn sample(
    ctx: &WorkerContext,
    model: &ModelName,
    tier: Tier,
) -> Result<QueueSample, SampleError> {
    let state = queue_state::read(&ctx.setup.jobs, &ctx.subjects, model, tier)
        .await
        .map_err(|message| SampleError::Queue { message })?
        .ok_or(SampleError::NoConsumer)?;
    Ok(QueueSample {
        pending: state.queued,
        unacked: state.in_flight,
        oldest_age: Duration::from_millis(state.oldest_ms.unwrap_or(0)),
    })
}
