//! The consumer loops, per model: one per (model, tier), started at start-up and for a
//! model a config reload adds, stopped for a model it removes (see `reload`), all stopped
//! by a drain.
//!
//! Each model keeps its own stop token (a child of the worker's) and its own tracker of
//! the jobs its loops started, so a removed model's in-flight jobs can be waited for
//! while the other models' jobs run on.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use llmq_schemas::{ModelName, Subjects, Tier};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Tasks;
use crate::consume::{self, JobTasks, Source, Stops};
use crate::context::{Live, WorkerContext};
use crate::nats::{self, SetupError};

/// Every model's consumer loops.
#[derive(Debug, Default)]
pub(super) struct Consumers(Mutex<BTreeMap<String, ModelConsumers>>);

/// One model's loops, what stops them, and the jobs they started.
#[derive(Debug)]
pub(super) struct ModelConsumers {
    pub stop: CancellationToken,
    pub loops: Vec<JoinHandle<()>>,
    pub jobs: TaskTracker,
}

impl Consumers {
    fn models(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ModelConsumers>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn insert(&self, model: &ModelName, consumers: ModelConsumers) {
        self.models().insert(model.to_string(), consumers);
    }

    /// Takes the model's loops out, to be stopped.
    pub fn remove(&self, model: &str) -> Option<ModelConsumers> {
        self.models().remove(model)
    }

    /// Every loop, taken out (a drain waits for them).
    pub fn take_all(&self) -> Vec<JoinHandle<()>> {
        let models = std::mem::take(&mut *self.models());
        models.into_values().flat_map(|m| m.loops).collect()
    }

    /// Aborts every loop at once.
    pub fn abort_all(&self) {
        for model in self.models().values() {
            for consumer_loop in &model.loops {
                consumer_loop.abort();
            }
        }
    }
}

/// Where each of the model's tiers takes its jobs from: the interactive tier's durable
/// consumer, created (or found) on the jobs stream; the batch tier's consumers per tenant,
/// made as tenants queue jobs (`fair_share`).
pub(super) async fn ensure(
    ctx: &WorkerContext,
    model: &ModelName,
) -> Result<Vec<(Tier, Source)>, SetupError> {
    let tier = Tier::Interactive;
    let config = nats::consumer_config(&ctx.subjects, model, tier, &ctx.config.jetstream);
    let interactive = ensure_patiently(ctx, config).await?;
    retire_shared_batch_consumer(ctx, model).await;
    Ok(vec![
        (tier, Source::Shared(Box::new(interactive))),
        (Tier::Batch, Source::PerTenant),
    ])
}

/// Deletes the batch tier's one consumer of earlier versions, if there is one: a work
/// queue stream refuses consumers with overlapping filters, so the tenants' consumers
/// cannot be made while it exists. Jobs it had delivered and not acknowledged stay in the
/// stream and go to the tenants' consumers; the ones whose outcome was stored are answered
/// from it.
async fn retire_shared_batch_consumer(ctx: &WorkerContext, model: &ModelName) {
    let name = Subjects::consumer_name(model, Tier::Batch);
    if ctx.setup.jobs.consumer_info(&name).await.is_ok() {
        match ctx.setup.jobs.delete_consumer(&name).await {
            Ok(_) => {
                tracing::info!(consumer = %name, "replaced the batch tier's shared consumer by one per tenant")
            }
            Err(err) => {
                tracing::warn!(consumer = %name, error = %err, "cannot delete the batch tier's shared consumer; the tenants' consumers cannot be made while it exists")
            }
        }
    }
}

/// Starts a loop on each of the model's consumers.
pub(super) fn spawn(
    live: &Arc<Live>,
    model: &ModelName,
    made: Vec<(Tier, Source)>,
    tasks: &Tasks,
) -> ModelConsumers {
    let stop = tasks.stops.fetching.child_token();
    let jobs = TaskTracker::new();
    let stops = Stops {
        fetching: stop.clone(),
        hard: tasks.stops.hard.clone(),
    };
    let job_tasks = JobTasks {
        capacity: Arc::clone(&tasks.capacity),
        all: tasks.jobs.clone(),
        model: jobs.clone(),
    };
    let loops = made
        .into_iter()
        .map(|(tier, source)| {
            tokio::spawn(consume::consumer_loop(
                Arc::clone(live),
                model.clone(),
                tier,
                source,
                job_tasks.clone(),
                stops.clone(),
            ))
        })
        .collect();
    ModelConsumers { stop, loops, jobs }
}

/// Creates a consumer, waiting out a sweep consumer that briefly overlaps it (see
/// `sweeper`).
async fn ensure_patiently(
    ctx: &WorkerContext,
    config: async_nats::jetstream::consumer::pull::Config,
) -> Result<PullConsumer, SetupError> {
    let mut tries = 0;
    loop {
        match nats::ensure_consumer(&ctx.setup.jobs, config.clone()).await {
            Ok(consumer) => return Ok(consumer),
            Err(err) if tries < 20 => {
                tries += 1;
                tracing::debug!(error = %err, "consumer not created yet; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(err) => return Err(err),
        }
    }
}
