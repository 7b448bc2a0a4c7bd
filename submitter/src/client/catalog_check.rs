//! Refusing jobs nobody would run.
//!
//! Without this check a job for a misspelt model would sit in the queue until its
//! deadline. Reading the catalog on every submit would double the cost of a submit, so a
//! snapshot is kept for a couple of seconds; a job the snapshot would refuse triggers one
//! fresh read first, so a worker that just started is not refused on stale data.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use llmq_schemas::{CatalogEntry, Tier};
use tokio::time::Instant;

use super::Client;
use crate::catalog::is_live;
use crate::error::{ClientError, SubmitError};

/// How long a catalog snapshot is used before it is read again.
const SNAPSHOT_MAX_AGE: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
pub(crate) struct CatalogCache {
    snapshot: Mutex<Option<Arc<Snapshot>>>,
    /// One read at a time: a burst of submits shares one read.
    reading: tokio::sync::Mutex<()>,
}

#[derive(Debug)]
struct Snapshot {
    read_at: Instant,
    entries: Vec<CatalogEntry>,
}

impl CatalogCache {
    fn current(&self) -> Option<Arc<Snapshot>> {
        self.snapshot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn store(&self, snapshot: Arc<Snapshot>) {
        *self.snapshot.lock().unwrap_or_else(PoisonError::into_inner) = Some(snapshot);
    }
}

impl Client {
    /// Refuses `model` in `tier` unless a live worker serves it.
    pub(crate) async fn check_model(&self, model: &str, tier: Tier) -> Result<(), SubmitError> {
        let snapshot = self.catalog_snapshot(None).await?;
        let prefix = self.inner.session.prefix();
        if check(&snapshot.entries, model, tier, prefix).is_ok() {
            return Ok(());
        }
        let fresh = self.catalog_snapshot(Some(snapshot.read_at)).await?;
        check(&fresh.entries, model, tier, prefix)
    }

    /// A snapshot no older than the max age, or, with `newer_than`, one read after it.
    async fn catalog_snapshot(
        &self,
        newer_than: Option<Instant>,
    ) -> Result<Arc<Snapshot>, SubmitError> {
        let cache = &self.inner.catalog;
        let usable = |snapshot: &Snapshot| match newer_than {
            Some(instant) => snapshot.read_at > instant,
            None => snapshot.read_at.elapsed() < SNAPSHOT_MAX_AGE,
        };
        if let Some(snapshot) = cache.current().filter(|s| usable(s)) {
            return Ok(snapshot);
        }
        let _reading = cache.reading.lock().await;
        // Someone else may have read it while this task waited.
        if let Some(snapshot) = cache.current().filter(|s| usable(s)) {
            return Ok(snapshot);
        }
        let read_at = Instant::now();
        let entries = match self.catalog().await {
            Ok(entries) => entries,
            Err(ClientError::NotSetUp { .. }) => Vec::new(),
            Err(err) => return Err(SubmitError::Catalog(Box::new(err))),
        };
        let snapshot = Arc::new(Snapshot { read_at, entries });
        cache.store(Arc::clone(&snapshot));
        Ok(snapshot)
    }
}

/// Whether a live entry serves `model` in `tier`.
fn check(
    entries: &[CatalogEntry],
    model: &str,
    tier: Tier,
    prefix: &str,
) -> Result<(), SubmitError> {
    let live: Vec<&CatalogEntry> = entries.iter().filter(|e| is_live(e)).collect();
    if live.is_empty() {
        return Err(SubmitError::NoWorkers {
            prefix: prefix.to_owned(),
        });
    }
    let in_tier = || {
        live.iter()
            .flat_map(|entry| &entry.models)
            .filter(|served| served.tiers.contains(&tier))
    };
    if in_tier().any(|served| served.name == model) {
        return Ok(());
    }
    let mut available: Vec<String> = in_tier().map(|served| served.name.clone()).collect();
    available.sort();
    available.dedup();
    Err(SubmitError::UnknownModel {
        model: model.to_owned(),
        tier,
        available,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmq_schemas::Timestamp;

    const BOTH: &[Tier] = &[Tier::Interactive, Tier::Batch];

    fn entry(worker: &str, heartbeat: Timestamp, models: &[(&str, &[Tier])]) -> CatalogEntry {
        CatalogEntry {
            v: 1,
            worker_id: worker.into(),
            version: "test".into(),
            started_at: heartbeat,
            heartbeat_at: heartbeat,
            models: models
                .iter()
                .map(|(name, tiers)| llmq_schemas::CatalogModel {
                    name: (*name).into(),
                    tiers: tiers.to_vec(),
                    deployments: vec![],
                    fallbacks: vec![],
                })
                .collect(),
        }
    }

    fn stale() -> Timestamp {
        Timestamp::from_unix_millis(Timestamp::now().unix_millis() - 61_000)
    }

    #[test]
    fn a_live_worker_serving_the_model_and_tier_accepts() {
        let entries = [entry("w1", Timestamp::now(), &[("chat", BOTH)])];
        assert!(check(&entries, "chat", Tier::Batch, "llmq").is_ok());
    }

    #[test]
    fn unknown_model_lists_what_the_tier_offers() {
        let entries = [
            entry(
                "w1",
                Timestamp::now(),
                &[("chat", BOTH), ("embed", &[Tier::Batch])],
            ),
            entry(
                "w2",
                Timestamp::now(),
                &[("chat", &[Tier::Interactive]), ("zeta", BOTH)],
            ),
        ];
        match check(&entries, "chta", Tier::Interactive, "llmq") {
            Err(SubmitError::UnknownModel {
                model,
                tier,
                available,
            }) => {
                assert_eq!(model, "chta");
                assert_eq!(tier, Tier::Interactive);
                assert_eq!(available, vec!["chat", "zeta"]);
            }
            other => panic!("{other:?}"),
        }
        // Served, but not in this tier.
        assert!(matches!(
            check(&entries, "embed", Tier::Interactive, "llmq"),
            Err(SubmitError::UnknownModel { .. })
        ));
    }

    #[test]
    fn stale_entries_do_not_count() {
        let entries = [entry("dead", stale(), &[("chat", BOTH)])];
        assert!(matches!(
            check(&entries, "chat", Tier::Interactive, "llmq"),
            Err(SubmitError::NoWorkers { .. })
        ));
        let mixed = [
            entry("dead", stale(), &[("old", BOTH)]),
            entry("w", Timestamp::now(), &[("chat", BOTH)]),
        ];
        assert!(matches!(
            check(&mixed, "old", Tier::Interactive, "llmq"),
            Err(SubmitError::UnknownModel { .. })
        ));
        assert!(matches!(
            check(&[], "chat", Tier::Interactive, "llmq"),
            Err(SubmitError::NoWorkers { .. })
        ));
    }
}
