//! Cancellation: a cancel reaches whichever worker holds the job, or waits for it.
//!
//! Producers put `<tenant>.<job id>` in the cancel bucket (`<tenant>.<batch id>` for a
//! whole batch). Every worker watches the whole
//! bucket (with history, so cancels made while it was down arrive too) and keeps the keys
//! in memory: a job is checked against that set when it is picked up (no round trip per
//! job), and a running job's token is fired when its cancel arrives, which aborts the
//! upstream request. A cancel racing the job's completion is decided by which outcome
//! the results stream stores first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::kv;
use futures::StreamExt;
use llmq_runtime::backoff::Backoff;
use llmq_schemas::{BatchId, JobId, Subjects, Tenant};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The waits between tries to watch the bucket: 100 ms doubling to 5 s, from the start
/// again once a watch is up.
const REWATCH_BACKOFF: Backoff =
    Backoff::doubling(Duration::from_millis(100), Duration::from_secs(5));

#[derive(Debug)]
pub struct CancelRegistry {
    ttl: Duration,
    requested: Mutex<HashMap<String, Instant>>,
    running: Mutex<HashMap<String, CancellationToken>>,
}

/// A running job's cancellation; unregisters on drop.
#[derive(Debug)]
pub struct RunningJob {
    registry: Arc<CancelRegistry>,
    key: String,
    pub token: CancellationToken,
}

impl Drop for RunningJob {
    fn drop(&mut self) {
        lock(&self.registry.running).remove(&self.key);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl CancelRegistry {
    pub fn new(ttl: Duration) -> Arc<Self> {
        Arc::new(Self {
            ttl,
            requested: Mutex::new(HashMap::new()),
            running: Mutex::new(HashMap::new()),
        })
    }

    pub fn is_requested(&self, tenant: &Tenant, job_id: JobId) -> bool {
        lock(&self.requested).contains_key(&Subjects::cancel_key(tenant, job_id))
    }

    /// Whether `batch` was cancelled: its lines not yet running end without a call.
    pub fn is_batch_cancelled(&self, tenant: &Tenant, batch: &BatchId) -> bool {
        lock(&self.requested).contains_key(&Subjects::batch_cancel_key(tenant, batch))
    }

    /// Registers a job as running; its token fires if a cancel arrives.
    pub fn register(self: &Arc<Self>, tenant: &Tenant, job_id: JobId) -> RunningJob {
        let key = Subjects::cancel_key(tenant, job_id);
        let token = CancellationToken::new();
        lock(&self.running).insert(key.clone(), token.clone());
        // A cancel that arrived between the pick-up check and now.
        if lock(&self.requested).contains_key(&key) {
            token.cancel();
        }
        RunningJob {
            registry: Arc::clone(self),
            key,
            token,
        }
    }

    fn on_cancel(&self, key: String) {
        let now = Instant::now();
        {
            let mut requested = lock(&self.requested);
            if requested.len().is_multiple_of(1024) {
                let ttl = self.ttl;
                requested.retain(|_, at| now.duration_since(*at) < ttl);
            }
            requested.insert(key.clone(), now);
        }
        if let Some(token) = lock(&self.running).get(&key) {
            tracing::info!(cancel_key = %key, "cancelling a running job");
            token.cancel();
        }
    }

    /// Follows the cancel bucket until `stop`, re-establishing the watch after errors.
    pub async fn watch(
        self: Arc<Self>,
        bucket: kv::Store,
        ready: tokio::sync::oneshot::Sender<()>,
        stop: CancellationToken,
    ) {
        let mut ready = Some(ready);
        let mut backoff = REWATCH_BACKOFF.delays();
        while !stop.is_cancelled() {
            let mut watch = match bucket.watch_with_history(">").await {
                Ok(watch) => watch,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot watch the cancel bucket, retrying");
                    if !backoff.wait(&stop).await {
                        return;
                    }
                    continue;
                }
            };
            // Ready once the cancels already in the bucket are loaded: a job picked up
            // before that could miss its cancel.
            let empty = bucket
                .status()
                .await
                .map(|s| s.values() == 0)
                .unwrap_or(false);
            if empty && let Some(ready) = ready.take() {
                let _ = ready.send(());
            }
            backoff.reset();
            loop {
                let entry = tokio::select! {
                    entry = watch.next() => entry,
                    () = stop.cancelled() => return,
                };
                match entry {
                    Some(Ok(entry)) => {
                        let caught_up = entry.delta == 0;
                        if entry.operation == kv::Operation::Put {
                            self.on_cancel(entry.key);
                        }
                        if caught_up && let Some(ready) = ready.take() {
                            let _ = ready.send(());
                        }
                    }
                    Some(Err(err)) => {
                        tracing::warn!(error = %err, "cancel watch failed, re-watching");
                        break;
                    }
                    None => break,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancel_fires_the_running_token_and_is_remembered() {
        let registry = CancelRegistry::new(Duration::from_secs(60));
        let tenant = Tenant::parse("t").unwrap();
        let job = uuid::Uuid::now_v7();
        let running = registry.register(&tenant, job);
        assert!(!running.token.is_cancelled());
        registry.on_cancel(Subjects::cancel_key(&tenant, job));
        assert!(running.token.is_cancelled());
        assert!(registry.is_requested(&tenant, job));
        drop(running);
        assert!(lock(&registry.running).is_empty());
    }

    #[test]
    fn registering_after_the_cancel_starts_cancelled() {
        let registry = CancelRegistry::new(Duration::from_secs(60));
        let tenant = Tenant::parse("t").unwrap();
        let job = uuid::Uuid::now_v7();
        registry.on_cancel(Subjects::cancel_key(&tenant, job));
        assert!(registry.register(&tenant, job).token.is_cancelled());
        let other = registry.register(&tenant, uuid::Uuid::now_v7());
        assert!(!other.token.is_cancelled());
    }
}
