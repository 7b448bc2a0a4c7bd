//! This worker's entry in the live model catalog.
//!
//! Written before the worker starts fetching (so producers can submit as soon as it is
//! up), refreshed every heartbeat, deleted on a clean shutdown; a crashed worker's entry
//! ages out of the bucket after three missed heartbeats. A config reload re-writes it at
//! once with the models the new config serves.

use std::sync::Arc;

use bytes::Bytes;
use llmq_schemas::{
    CatalogDeployment, CatalogEntry, CatalogModel, PROTOCOL_VERSION, Tier, Timestamp,
};
use tokio_util::sync::CancellationToken;

use crate::context::{Live, WorkerContext};

pub fn entry(ctx: &WorkerContext, started_at: Timestamp) -> CatalogEntry {
    CatalogEntry {
        v: PROTOCOL_VERSION,
        worker_id: ctx.worker_id.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at,
        heartbeat_at: Timestamp::now(),
        models: ctx
            .router
            .models()
            .map(|model| CatalogModel {
                name: model.name.to_string(),
                tiers: Tier::ALL.to_vec(),
                deployments: model
                    .deployments
                    .iter()
                    .map(|d| CatalogDeployment {
                        provider: d.provider.name.clone(),
                        kind: d.provider.kind.as_str().to_owned(),
                        upstream_model: d.upstream_model.clone(),
                        weight: d.weight,
                    })
                    .collect(),
                fallbacks: model.fallbacks.clone(),
            })
            .collect(),
    }
}

/// Writes the entry once.
pub async fn publish(ctx: &WorkerContext, started_at: Timestamp) -> Result<(), String> {
    let entry = entry(ctx, started_at);
    let bytes = serde_json::to_vec(&entry).map_err(|err| err.to_string())?;
    ctx.setup
        .catalog
        .put(&ctx.worker_id, Bytes::from(bytes))
        .await
        .map(|_| ())
        .map_err(|err| err.to_string())
}

/// Refreshes the entry (with the live config's models) until `stop`, then deletes it.
pub async fn heartbeat(live: Arc<Live>, started_at: Timestamp, stop: CancellationToken) {
    let ctx = live.current();
    let period = ctx.config.jetstream.catalog_heartbeat;
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if let Err(err) = publish(&live.current(), started_at).await {
                    tracing::warn!(error = %err, "catalog heartbeat failed");
                }
            }
            () = stop.cancelled() => break,
        }
    }
    if let Err(err) = ctx.setup.catalog.delete(&ctx.worker_id).await {
        tracing::debug!(error = %err, "could not remove the catalog entry");
    }
}

/// The logical models live workers serve, this one's included.
pub async fn live_models(
    ctx: &WorkerContext,
) -> Result<std::collections::BTreeSet<String>, String> {
    use futures::StreamExt;
    let mut models: std::collections::BTreeSet<String> =
        ctx.router.models().map(|m| m.name.to_string()).collect();
    let mut keys = ctx
        .setup
        .catalog
        .keys()
        .await
        .map_err(|err| err.to_string())?;
    while let Some(key) = keys.next().await {
        let key = key.map_err(|err| err.to_string())?;
        let Ok(Some(value)) = ctx.setup.catalog.get(&key).await else {
            continue;
        };
        if let Ok(entry) = serde_json::from_slice::<CatalogEntry>(&value) {
            models.extend(entry.models.into_iter().map(|m| m.name));
        }
    }
    Ok(models)
}
