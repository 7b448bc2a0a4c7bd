//! Jobs for models nobody serves get an answer instead of waiting forever.
//!
//! Producers that check the live catalog refuse such jobs at submit time; this catches
//! the rest (producers in other languages, a catalog that was stale, a model removed
//! from every worker's config). Every `sweep_interval`, each worker lists the models that
//! have queued jobs; for a model absent from the live catalog, it creates a consumer on
//! that model's subjects and fails each job with `unknown_model`. A WorkQueue stream
//! refuses a consumer that overlaps an existing one, so a model some worker does consume
//! (its catalog entry not yet visible) is left alone: the server arbitrates.
//! A durable consumer of a model that all workers stopped serving is removed by the
//! server after `consumer_inactive_threshold`; its jobs are swept after that. A worker
//! whose config reload removes a model no other live worker serves answers that model's
//! queued jobs the same way at once (`lifecycle::reconfigure`), with [`answer_queued`].

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, pull};
use futures::StreamExt;
use llmq_schemas::ModelName;
use tokio_util::sync::CancellationToken;

use crate::catalog::live_models;
use crate::context::{Live, WorkerContext};
use crate::job::{apply, process};

pub async fn run(live: Arc<Live>, stop: CancellationToken, hard_stop: CancellationToken) {
    let mut ticker = tokio::time::interval(live.current().config.worker.sweep_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = stop.cancelled() => return,
        }
        let ctx = live.current();
        // Bounded: a broker restart can swallow the answer to any request in it.
        match tokio::time::timeout(Duration::from_secs(60), sweep_once(&ctx, &stop, &hard_stop))
            .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => tracing::debug!(error = %err, "sweep failed"),
            Err(_) => tracing::warn!("a sweep took over 60 s; abandoned"),
        }
    }
}

/// One pass; returns how many jobs it answered.
pub async fn sweep_once(
    ctx: &Arc<WorkerContext>,
    stop: &CancellationToken,
    hard_stop: &CancellationToken,
) -> Result<usize, String> {
    let tokens = queued_model_tokens(ctx).await?;
    if tokens.is_empty() {
        return Ok(0);
    }
    let live = live_models(ctx).await?;
    let mut answered = 0;
    for token in tokens {
        if matches!(ModelName::from_token(&token), Ok(name) if live.contains(name.as_str())) {
            continue;
        }
        answered += sweep_model(ctx, &token, stop, hard_stop).await?;
    }
    Ok(answered)
}

async fn queued_model_tokens(ctx: &WorkerContext) -> Result<BTreeSet<String>, String> {
    let filter = format!("{}.jobs.>", ctx.subjects.prefix());
    let mut subjects = ctx
        .setup
        .jobs
        .info_with_subjects(filter)
        .await
        .map_err(|err| err.to_string())?;
    let mut tokens = BTreeSet::new();
    while let Some(entry) = subjects.next().await {
        let (subject, count) = entry.map_err(|err| err.to_string())?;
        if count == 0 {
            continue;
        }
        if let Some(token) = subject.split('.').nth(2) {
            tokens.insert(token.to_owned());
        }
    }
    Ok(tokens)
}

async fn sweep_model(
    ctx: &Arc<WorkerContext>,
    token: &str,
    stop: &CancellationToken,
    hard_stop: &CancellationToken,
) -> Result<usize, String> {
    let name = format!("sweep-{token}");
    let config = pull::Config {
        durable_name: Some(name.clone()),
        name: Some(name.clone()),
        description: Some("llmq: answers jobs of models no worker serves".into()),
        filter_subject: ctx.subjects.jobs_filter_for_token(token),
        ack_policy: AckPolicy::Explicit,
        ack_wait: ctx.config.jetstream.ack_wait,
        inactive_threshold: Duration::from_secs(60),
        ..Default::default()
    };
    let consumer = match ctx.setup.jobs.create_consumer(config).await {
        Ok(consumer) => consumer,
        Err(err) => {
            // Most likely an overlap: a worker consumes this model after all.
            tracing::debug!(model_token = token, error = %err, "not sweeping");
            return Ok(0);
        }
    };
    let answered = answer_queued(ctx, &consumer, stop, hard_stop).await?;
    if answered > 0 {
        tracing::info!(
            model_token = token,
            answered,
            "answered jobs of a model no worker serves"
        );
    }
    let _ = ctx.setup.jobs.delete_consumer(&name).await;
    Ok(answered)
}

/// Takes every job `consumer` has queued and processes it as a job of a model this
/// worker does not serve (`unknown_model`, unless it is invalid, cancelled or expired
/// first); returns how many it answered.
pub async fn answer_queued(
    ctx: &Arc<WorkerContext>,
    consumer: &async_nats::jetstream::consumer::PullConsumer,
    stop: &CancellationToken,
    hard_stop: &CancellationToken,
) -> Result<usize, String> {
    let mut answered = 0;
    while !stop.is_cancelled() {
        let mut batch = consumer
            .fetch()
            .max_messages(64)
            .messages()
            .await
            .map_err(|err| err.to_string())?;
        let mut got = 0;
        // A no-wait fetch has no client-side timer; its answer can be lost in a broker
        // restart. (The loop re-checks `stop` each round.)
        while let Ok(Some(message)) =
            tokio::time::timeout(Duration::from_secs(10), batch.next()).await
        {
            let Ok(message) = message else { break };
            got += 1;
            let disposition = process(ctx, &message, None, hard_stop).await;
            apply(&message, disposition).await;
            answered += 1;
        }
        if got == 0 {
            break;
        }
    }
    Ok(answered)
}
