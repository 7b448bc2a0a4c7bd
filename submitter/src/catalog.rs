//! The live model catalog: which workers serve which models, as they last said.
//!
//! Each worker keeps its entry in the catalog bucket with a heartbeat; an entry whose
//! heartbeat is too old is a worker that died without removing it. Producers read it to
//! refuse jobs nobody would run (see `client/catalog_check.rs`), operators to see the
//! fleet (`operator/status.rs`).

use std::time::Duration;

use futures::TryStreamExt;
use llmq_schemas::CatalogEntry;

use crate::error::ClientError;
use crate::session::Session;

/// Entries whose heartbeat is older than this are ignored, even if the bucket still has
/// them.
pub const LIVE_HEARTBEAT: Duration = Duration::from_secs(60);

/// Whether `entry`'s worker has sent a heartbeat recently enough to count.
pub fn is_live(entry: &CatalogEntry) -> bool {
    entry.heartbeat_at.elapsed() <= LIVE_HEARTBEAT
}

impl Session {
    /// Every entry in the catalog bucket (stale ones included: see [`is_live`]).
    pub(crate) async fn catalog(&self) -> Result<Vec<CatalogEntry>, ClientError> {
        let name = self.subjects().catalog_bucket();
        self.unless_denied(&[&name], self.read_catalog())
            .await
            .map_err(|denied| ClientError::PermissionDenied {
                operation: "reading the model catalog",
                denied,
            })?
    }

    async fn read_catalog(&self) -> Result<Vec<CatalogEntry>, ClientError> {
        let bucket = self.bucket(&self.subjects().catalog_bucket()).await?;
        let keys: Vec<String> = bucket
            .keys()
            .await
            .map_err(|err| ClientError::nats("listing the catalog", err))?
            .try_collect()
            .await
            .map_err(|err| ClientError::nats("listing the catalog", err))?;
        let mut entries = Vec::with_capacity(keys.len());
        for key in keys {
            let Some(value) = bucket
                .get(&key)
                .await
                .map_err(|err| ClientError::nats("reading the catalog", err))?
            else {
                continue; // expired or deleted since the listing
            };
            match serde_json::from_slice::<CatalogEntry>(&value) {
                Ok(entry) => entries.push(entry),
                Err(err) => {
                    tracing::warn!(worker = key, error = %err, "skipping an undecodable catalog entry");
                }
            }
        }
        entries.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
        Ok(entries)
    }
}
