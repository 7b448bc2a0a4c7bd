//! The queue on `/metrics`: per model and tier, jobs waiting, delivered but unacked, and
//! the oldest job's age, sampled from JetStream's consumer info every few seconds; and
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

use llmq_schemas::{ModelName, Subjects, Tier, Timestamp};
use tokio_util::sync::CancellationToken;

use crate::context::{Live, WorkerContext};
use crate::metrics::{self, QueueSample};

/// How often the consumers are asked (one consumer info per model and tier per tick).
const SAMPLE: Duration = Duration::from_secs(5);

/// Why one queue could not be sampled (logged; the gauges keep their last value).
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error("consumer {consumer} info: {message}")]
    ConsumerInfo { consumer: String, message: String },
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

/// One consumer's state, and the age of the first job past its ack floor.
async fn sample(
    ctx: &WorkerContext,
    model: &ModelName,
    tier: Tier,
) -> Result<QueueSample, SampleError> {
    let consumer = Subjects::consumer_name(model, tier);
    let info = ctx
        .setup
        .jobs
        .consumer_info(&consumer)
        .await
        .map_err(|err| SampleError::ConsumerInfo {
            consumer: consumer.clone(),
            message: err.to_string(),
        })?;
    let unacked = u64::try_from(info.num_ack_pending).unwrap_or(u64::MAX);
    let mut sample = QueueSample {
        pending: info.num_pending,
        unacked,
        oldest_age: Duration::ZERO,
    };
    if sample.pending + sample.unacked > 0 {
        sample.oldest_age = oldest_age(ctx, model, tier, info.ack_floor.stream_sequence).await;
    }
    Ok(sample)
}

/// How long the first job after `ack_floor` has been stored (zero if there is none).
async fn oldest_age(
    ctx: &WorkerContext,
    model: &ModelName,
    tier: Tier,
    ack_floor: u64,
) -> Duration {
    let filter = ctx.subjects.jobs_filter(model, tier);
    let Ok(message) = ctx
        .setup
        .jobs
        .direct_get_next_for_subject(filter, Some(ack_floor + 1))
        .await
    else {
        return Duration::ZERO;
    };
    let stored_ms = message.time.unix_timestamp_nanos() / 1_000_000;
    let now_ms = i128::from(Timestamp::now().unix_millis());
    Duration::from_millis(u64::try_from(now_ms - stored_ms).unwrap_or(0))
}
