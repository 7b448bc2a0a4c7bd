//! The limits' shared state in NATS KV, changed only by compare-and-set.
//!
//! Two kinds of keys in one bucket (`<PREFIX>_LIMITS`):
//! - `conc.<scope>`: which worker holds how many of the scope's concurrency permits, each
//!   holding with a lease (`until`). A worker that dies stops renewing; its holding is
//!   ignored once the lease ends and removed by the next writer. So capacity comes back
//!   without anyone cleaning up, within one lease.
//! - `rate.<scope>.<window>`: requests and tokens handed out in one window, aligned to the
//!   clock. Workers take allotments from it and spend them locally, so a job rarely
//!   waits for a round trip; what they take never exceeds the limit.
//!
//! A writer reads the key, computes the new value, and updates it with the revision it
//! read; a concurrent writer makes the update fail, and it reads again.
//!
//! Two more kinds of keys live beside them: `pause.<scope>` (a deployment the provider's
//! own headers said is used up, until its reset: `pause.rs`) and `worker.<id>` (what one
//! worker enforces and who of it waits, with a lease: `status.rs`).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::kv::{self, UpdateErrorKind};
use async_nats::jetstream::{self};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::LimitError;
use llmq_schemas::Subjects;

/// The bucket: file storage (limits hold across a broker restart), keys aged out after
/// two of the longest windows.
pub fn bucket_config(subjects: &Subjects, replicas: usize) -> kv::Config {
    kv::Config {
        bucket: format!("{}_LIMITS", subjects.prefix().to_ascii_uppercase()),
        description: "llmq fleet-wide limits: concurrency holdings and window counters".into(),
        history: 1,
        max_age: super::spec::MAX_WINDOW * 2,
        storage: jetstream::stream::StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    }
}

/// Milliseconds since the epoch, the clock every worker's leases and windows use.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `conc.<scope>`'s value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holdings {
    pub holders: BTreeMap<String, Holding>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holding {
    pub n: u32,
    /// The lease: until then, the permits are this worker's (epoch ms).
    pub until_ms: u64,
}

impl Holdings {
    /// Permits held by live holders.
    pub fn live(&self, now: u64) -> u32 {
        self.holders
            .values()
            .filter(|h| h.until_ms > now)
            .map(|h| h.n)
            .sum()
    }

    /// Sets `worker`'s holding (0 removes it) and drops holdings whose lease ended.
    pub fn set(&mut self, worker: &str, n: u32, until_ms: u64, now: u64) {
        self.holders.retain(|_, h| h.until_ms > now);
        if n == 0 {
            self.holders.remove(worker);
        } else {
            self.holders
                .insert(worker.to_owned(), Holding { n, until_ms });
        }
    }
}

/// `rate.<scope>.<window>`'s value: what has been handed out in the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Used {
    pub req: u64,
    pub tok: u64,
}

/// A value and the revision it was read at (0: the key does not exist).
#[derive(Debug, Clone)]
pub struct Read<T> {
    pub value: T,
    pub revision: u64,
}

/// What a compare-and-set attempt did.
#[derive(Debug)]
pub enum Written {
    Done,
    /// Someone wrote first: read again.
    Conflict,
}

pub async fn read<T: Default + for<'de> Deserialize<'de>>(
    bucket: &kv::Store,
    key: &str,
) -> Result<Read<T>, LimitError> {
    let entry = bucket
        .entry(key)
        .await
        .map_err(|err| LimitError::nats("reading", key, err))?;
    Ok(match entry {
        Some(entry) if entry.operation == kv::Operation::Put => Read {
            value: serde_json::from_slice(&entry.value).unwrap_or_default(),
            revision: entry.revision,
        },
        Some(entry) => Read {
            value: T::default(),
            revision: entry.revision,
        },
        None => Read {
            value: T::default(),
            revision: 0,
        },
    })
}

/// Writes `value` if the key is still at `revision` (0: does not exist yet).
pub async fn write<T: Serialize>(
    bucket: &kv::Store,
    key: &str,
    value: &T,
    revision: u64,
) -> Result<Written, LimitError> {
    let bytes = Bytes::from(serde_json::to_vec(value).unwrap_or_default());
    match bucket.update(key, bytes, revision).await {
        Ok(_) => Ok(Written::Done),
        Err(err) if err.kind() == UpdateErrorKind::WrongLastRevision => Ok(Written::Conflict),
        Err(err) => Err(LimitError::nats("writing", key, err)),
    }
}

/// The window a time falls in, and when that window ends (epoch ms).
pub fn window_of(now_ms: u64, window: Duration) -> (u64, u64) {
    let length = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
    let index = now_ms / length;
    (index, (index + 1).saturating_mul(length))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_holdings_do_not_count_and_are_dropped_by_the_next_writer() {
        let mut holdings = Holdings::default();
        holdings.set("a", 3, 2_000, 1_000);
        holdings.set("b", 2, 1_500, 1_000);
        assert_eq!(holdings.live(1_000), 5);
        assert_eq!(
            holdings.live(1_600),
            3,
            "b's lease ended: its permits are back"
        );
        holdings.set("c", 1, 3_000, 1_600);
        assert!(!holdings.holders.contains_key("b"));
        holdings.set("a", 0, 0, 1_600);
        assert_eq!(holdings.live(1_600), 1);
    }

    #[test]
    fn windows_are_aligned_to_the_clock() {
        let ten = Duration::from_secs(10);
        assert_eq!(window_of(25_000, ten), (2, 30_000));
        assert_eq!(window_of(30_000, ten), (3, 40_000));
    }
}
