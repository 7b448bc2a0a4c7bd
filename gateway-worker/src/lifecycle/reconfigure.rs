//! Applying a re-read config to a running worker, in an order that loses no job.
//!
//! 1. Everything that can fail happens first: loading, the restart-only check, building
//!    the routes, creating the new models' consumers. A failure rejects the reload whole.
//! 2. The removed models' loops are told to stop fetching, then the new context is
//!    swapped in: a job already started keeps the context it took; every later one
//!    takes the new one.
//! 3. The new models' loops start, the catalog entry is re-written, the key files of the
//!    new providers are watched.
//! 4. A removed model is retired in the background: its loops end, its in-flight jobs
//!    finish; then, if no live worker serves it, its queued jobs are answered as the
//!    sweeper answers them (`unknown_model`) and its durable consumers are deleted, so
//!    jobs that arrive later are swept as for any model nobody serves. While another
//!    worker still serves it, its queue is left to that worker.

use std::path::Path;
use std::sync::Arc;

use async_nats::jetstream::consumer::PullConsumer;
use futures::StreamExt;
use llmq_schemas::{ModelName, Subjects, Tier};
use tokio_util::sync::CancellationToken;

use super::consumers::{self, ModelConsumers};
use super::{RunningWorker, WatchedKeys};
use crate::config::{self, Config, ConfigError};
use crate::config_change::{Changes, ReloadError, needs_restart};
use crate::consume::Source;
use crate::context::{Live, WorkerContext};
use crate::{catalog, metrics, sweeper};

impl RunningWorker {
    /// Re-reads the config file at `path` as start-up reads it (the `LLMQ__` environment
    /// overlay, validation, every key) and applies it; logs and counts the result
    /// (`llmq_config_reloads_total`). On an error the running config stays.
    pub async fn reload_config(&self, path: &Path) -> Result<Changes, ReloadError> {
        let result = match config::load(path) {
            Ok(config) => self.apply_config(config).await,
            Err(err) => Err(err.into()),
        };
        log_reload(path, &result);
        result
    }

    /// Applies `config` as a reload does (validated first; not logged or counted).
    pub async fn apply_config(&self, config: Config) -> Result<Changes, ReloadError> {
        let _one_at_a_time = self.reloading.lock().await;
        let ctx = self.live.current();
        let restart = needs_restart(&ctx.config, &config);
        if !restart.is_empty() {
            return Err(ReloadError::NeedsRestart(restart));
        }
        config::validate(&config).map_err(ConfigError::Invalid)?;
        let changes = Changes::between(&ctx.config, &config);
        let next = Arc::new(ctx.reloaded(config)?);
        let added = added_consumers(&next, &changes).await?;
        let removed = self.stop_removed(&changes);
        self.live.replace(Arc::clone(&next));
        for (model, made) in added {
            let loops = consumers::spawn(&self.live, &model, made, &self.tasks);
            self.tasks.consumers.insert(&model, loops);
        }
        if let Err(err) = catalog::publish(&next, self.started_at).await {
            tracing::warn!(error = %err, "catalog entry not re-written after the reload");
        }
        self.rewatch_keys(&next);
        for (model, consumers) in removed {
            let retire = retire(
                Arc::clone(&self.live),
                model,
                consumers,
                self.tasks.background.clone(),
                self.tasks.stops.hard.clone(),
            );
            self.tasks.services.spawn(retire);
        }
        Ok(changes)
    }

    /// Tells the removed models' loops to stop fetching; returns them to be retired.
    fn stop_removed(&self, changes: &Changes) -> Vec<(String, ModelConsumers)> {
        let removed = changes.models_removed.iter().filter_map(|model| {
            let consumers = self.tasks.consumers.remove(model)?;
            consumers.stop.cancel();
            Some((model.clone(), consumers))
        });
        removed.collect()
    }

    /// Watches the key files of `ctx`'s providers instead of the previous config's.
    fn rewatch_keys(&self, ctx: &WorkerContext) {
        let next = WatchedKeys::start(ctx, &self.tasks);
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        keys.stop.cancel();
        *keys = next;
    }
}

/// The consumers of the models the reload adds, created before anything is swapped.
async fn added_consumers(
    next: &WorkerContext,
    changes: &Changes,
) -> Result<Vec<(ModelName, Vec<(Tier, Source)>)>, ReloadError> {
    let mut added = Vec::new();
    for name in &changes.models_added {
        let Some(route) = next.router.model(name) else {
            continue;
        };
        let made = consumers::ensure(next, &route.name).await?;
        added.push((route.name.clone(), made));
    }
    Ok(added)
}

/// One log line and one count per reload.
fn log_reload(path: &Path, result: &Result<Changes, ReloadError>) {
    match result {
        Ok(changes) => {
            metrics::config_reload("applied");
            tracing::info!(
                path = %path.display(),
                models_added = ?changes.models_added,
                models_removed = ?changes.models_removed,
                models_changed = ?changes.models_changed,
                providers_added = ?changes.providers_added,
                providers_removed = ?changes.providers_removed,
                providers_changed = ?changes.providers_changed,
                sections_changed = ?changes.sections,
                "config reloaded"
            );
        }
        Err(err) => {
            metrics::config_reload("rejected");
            tracing::error!(
                path = %path.display(),
                reason = err.reason(),
                error = %err,
                "config reload rejected; the running config stays"
            );
        }
    }
}

/// Retires a model a reload removed (step 4 of the module docs). Gives up when the
/// worker stops.
async fn retire(
    live: Arc<Live>,
    model: String,
    consumers: ModelConsumers,
    background: CancellationToken,
    hard_stop: CancellationToken,
) {
    consumers.jobs.close();
    let finished = async {
        for consumer_loop in consumers.loops {
            let _ = consumer_loop.await;
        }
        consumers.jobs.wait().await;
    };
    tokio::select! {
        () = finished => {}
        () = background.cancelled() => return,
    }
    tracing::info!(model = %model, "removed model: its consumer loops stopped, its in-flight jobs finished");
    let ctx = live.current();
    match answer_removed(&ctx, &model, &background, &hard_stop).await {
        Ok(Some(answered)) => tracing::info!(
            model = %model,
            answered,
            "removed model: no live worker serves it; its queued jobs were answered"
        ),
        Ok(None) => tracing::info!(
            model = %model,
            "removed model: another live worker serves it; its queue is left to it"
        ),
        Err(err) => tracing::warn!(
            model = %model,
            error = %err,
            "removed model: its queued jobs not answered; the sweeper answers them once its consumers expire"
        ),
    }
}

/// When no live worker serves `model`: answers its queued jobs and deletes its durable
/// consumers (those no job is in flight on). `None` when a live worker serves it.
async fn answer_removed(
    ctx: &Arc<WorkerContext>,
    model: &str,
    stop: &CancellationToken,
    hard_stop: &CancellationToken,
) -> Result<Option<usize>, String> {
    let served = catalog::live_models(ctx).await?;
    if served.contains(model) {
        return Ok(None);
    }
    let name = ModelName::parse(model).map_err(|err| err.to_string())?;
    let mut answered = 0;
    for durable in durables_of(ctx, &name).await? {
        let Ok(consumer) = ctx.setup.jobs.get_consumer(&durable).await else {
            continue;
        };
        answered += sweeper::answer_queued(ctx, &consumer, stop, hard_stop).await?;
        delete_if_idle(ctx, consumer, &durable).await;
    }
    Ok(Some(answered))
}

/// The model's durable consumers: the interactive tier's, and the batch tier's per tenant
/// (and its one shared consumer of earlier versions).
async fn durables_of(ctx: &WorkerContext, model: &ModelName) -> Result<Vec<String>, String> {
    let batch = Subjects::consumer_name(model, Tier::Batch);
    let per_tenant = format!("{batch}~");
    let mut durables = vec![Subjects::consumer_name(model, Tier::Interactive), batch];
    let mut names = ctx.setup.jobs.consumer_names();
    while let Some(name) = names.next().await {
        let name = name.map_err(|err| err.to_string())?;
        if name.starts_with(&per_tenant) {
            durables.push(name);
        }
    }
    Ok(durables)
}

/// Deletes the consumer unless a job is in flight on it (another worker's, whose ack
/// must still reach it); the server removes it later otherwise.
async fn delete_if_idle(ctx: &WorkerContext, mut consumer: PullConsumer, durable: &str) {
    let idle = consumer
        .info()
        .await
        .is_ok_and(|info| info.num_ack_pending == 0);
    if idle && let Err(err) = ctx.setup.jobs.delete_consumer(durable).await {
        tracing::debug!(consumer = durable, error = %err, "removed model's consumer not deleted");
    }
}
