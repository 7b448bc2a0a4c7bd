//! Pauses from upstream hints: a provider said, in its own rate-limit headers, that a
//! deployment has nothing left until a reset; the whole fleet stops calling it until then.
//!
//! A worker that reads such headers writes `pause.<scope>` (until when, and why) by
//! compare-and-set, only ever moving the end later. Every worker follows `pause.>` with a
//! KV watch into a local map, so an admission checks a pause without a round trip, and
//! the pause reaches the others as fast as the broker pushes a message (the writer's own
//! jobs see it at once). A pause is a fact with an end, not a lock: nobody removes it, it
//! simply stops counting when its time comes, and the bucket ages the key out.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_nats::jetstream::kv;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::fleet::{self, Written, now_ms};
use super::lock;
use super::{LimitError, Scope};

/// The longest pause a hint may ask for: a header promising a reset further away is
/// taken as this (the longest window a limit may have).
pub const MAX_PAUSE: Duration = super::spec::MAX_WINDOW;
/// How long a worker waits before watching again after its watch ended (a broker restart).
const REWATCH: Duration = Duration::from_secs(1);

/// `pause.<scope>`'s value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    pub scope: Scope,
    /// Until then (epoch ms) no worker calls the scope.
    pub until_ms: u64,
    /// What the upstream said, e.g. `requests remaining 0`.
    pub reason: String,
    /// The worker that read the headers.
    pub by: String,
}

pub(crate) fn key(scope: &Scope) -> String {
    format!("pause.{}", scope.key())
}

/// Writes `pause` unless the scope is already paused at least as long; whether it wrote.
pub(crate) async fn extend(bucket: &kv::Store, pause: &Pause) -> Result<bool, LimitError> {
    let key = key(&pause.scope);
    for _ in 0..16 {
        let read = fleet::read::<Option<Pause>>(bucket, &key).await?;
        if read
            .value
            .as_ref()
            .is_some_and(|current| current.until_ms >= pause.until_ms)
        {
            return Ok(false);
        }
        if let Written::Done = fleet::write(bucket, &key, pause, read.revision).await? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The pauses this worker knows of: its own at once, the fleet's through the watch.
#[derive(Debug, Default)]
pub(crate) struct Pauses {
    until: Mutex<HashMap<Scope, u64>>,
}

impl Pauses {
    /// Records a pause (a later end wins).
    pub(crate) fn note(&self, scope: &Scope, until_ms: u64) {
        let mut until = lock(&self.until);
        let end = until.entry(scope.clone()).or_default();
        *end = (*end).max(until_ms);
    }

    /// When the scope's pause ends, if it is paused at `now`.
    pub(crate) fn until(&self, scope: &Scope, now: u64) -> Option<u64> {
        let until = lock(&self.until);
        if until.is_empty() {
            return None;
        }
        until.get(scope).copied().filter(|end| *end > now)
    }

    /// Follows `pause.>` until `stop`, watching again whenever the watch ends.
    pub(crate) async fn follow(&self, bucket: &kv::Store, stop: &CancellationToken) {
        while !stop.is_cancelled() {
            match bucket.watch_with_history("pause.>").await {
                Ok(mut watch) => loop {
                    tokio::select! {
                        entry = watch.next() => match entry {
                            Some(Ok(entry)) => self.apply(&entry),
                            Some(Err(err)) => {
                                tracing::debug!(error = %err, "pause watch ended; watching again");
                                break;
                            }
                            None => break,
                        },
                        () = stop.cancelled() => return,
                    }
                },
                Err(err) => tracing::debug!(error = %err, "cannot watch pauses; retrying"),
            }
            tokio::select! {
                () = tokio::time::sleep(REWATCH) => {}
                () = stop.cancelled() => return,
            }
        }
    }

    fn apply(&self, entry: &kv::Entry) {
        if entry.operation != kv::Operation::Put {
            return;
        }
        if let Ok(pause) = serde_json::from_slice::<Pause>(&entry.value)
            && pause.until_ms > now_ms()
        {
            tracing::info!(scope = %pause.scope, until_ms = pause.until_ms, reason = %pause.reason, by = %pause.by, "upstream pause");
            self.note(&pause.scope, pause.until_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pause_counts_until_its_end_and_a_later_end_wins() {
        let pauses = Pauses::default();
        let scope = Scope::Deployment {
            provider: "p".into(),
            model: "m".into(),
        };
        assert_eq!(pauses.until(&scope, 1_000), None);
        pauses.note(&scope, 2_000);
        pauses.note(&scope, 1_500);
        assert_eq!(pauses.until(&scope, 1_000), Some(2_000));
        assert_eq!(pauses.until(&scope, 2_000), None, "over at its end");
        assert_eq!(pauses.until(&Scope::Provider("p".into()), 1_000), None);
    }
}
