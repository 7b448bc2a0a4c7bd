//! A KV bucket held in memory and kept current by a watch: the tenant registry of every
//! worker, the API keys of every edge.
//!
//! Reading the bucket per request would put a round trip on every job's path; a watch
//! delivers each change to every process within milliseconds, and a process that loses
//! the broker keeps serving from the last state it saw. An entry that cannot be decoded
//! is kept as its reason, so that its key is refused rather than forgotten.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_nats::jetstream::kv;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;

/// One key's value: decoded, or why it could not be.
pub type Decoded<T> = Result<Arc<T>, String>;

/// Turns a key and its bytes into a value.
pub type Decoder<T> = fn(&str, &[u8]) -> Result<T, String>;

/// Why a bucket could not be read at start-up.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("cannot watch the {what} {bucket}: {message}")]
    Watch {
        what: &'static str,
        bucket: String,
        message: String,
    },
    #[error("the {what} {bucket} was not read within {waited:?}")]
    TimedOut {
        what: &'static str,
        bucket: String,
        waited: Duration,
    },
}

/// How long start-up waits for a bucket before giving up.
pub const LOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// The waits before reading the bucket again after a watch failed: 100 ms doubling to 5 s,
/// from the start again once a read succeeds.
const REREAD_BACKOFF: Backoff =
    Backoff::doubling(Duration::from_millis(100), Duration::from_secs(5));

/// The bucket's keys and values, as last seen.
#[derive(Debug)]
pub struct LiveMap<T> {
    what: &'static str,
    decode: Decoder<T>,
    current: ArcSwap<HashMap<String, Decoded<T>>>,
}

impl<T: Send + Sync + 'static> LiveMap<T> {
    /// A map that follows nothing and stays empty.
    pub fn empty(what: &'static str, decode: Decoder<T>) -> Arc<Self> {
        Arc::new(Self {
            what,
            decode,
            current: ArcSwap::from_pointee(HashMap::new()),
        })
    }

    /// Reads the whole bucket, then keeps following it until `stop` (the returned future
    /// does the following: spawn it). Fails if the bucket is not read within
    /// [`LOAD_TIMEOUT`].
    pub async fn start(
        bucket: kv::Store,
        what: &'static str,
        decode: Decoder<T>,
        stop: CancellationToken,
    ) -> Result<(Arc<Self>, impl Future<Output = ()> + Send + 'static), LiveError> {
        let map = Self::empty(what, decode);
        let load = tokio::time::timeout(LOAD_TIMEOUT, map.load(&bucket));
        let watch = match load.await {
            Ok(loaded) => loaded?,
            Err(_) => {
                return Err(LiveError::TimedOut {
                    what,
                    bucket: bucket.name.clone(),
                    waited: LOAD_TIMEOUT,
                });
            }
        };
        let following = Arc::clone(&map).follow(bucket, watch, stop);
        Ok((map, following))
    }

    pub fn get(&self, key: &str) -> Option<Decoded<T>> {
        self.current.load().get(key).cloned()
    }

    pub fn len(&self) -> usize {
        self.current.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every key and value now.
    pub fn snapshot(&self) -> Arc<HashMap<String, Decoded<T>>> {
        self.current.load_full()
    }

    /// Applies every change until `stop`; after a watch error, reads the whole bucket
    /// again (changes may have been missed) and keeps serving the last state meanwhile.
    async fn follow(
        self: Arc<Self>,
        bucket: kv::Store,
        mut watch: kv::Watch,
        stop: CancellationToken,
    ) {
        let mut backoff = REREAD_BACKOFF.delays();
        loop {
            loop {
                let entry = tokio::select! {
                    entry = watch.next() => entry,
                    () = stop.cancelled() => return,
                };
                match entry {
                    Some(Ok(entry)) => self.change(&entry),
                    Some(Err(err)) => {
                        tracing::warn!(what = self.what, error = %err, "watch failed; reading the bucket again");
                        break;
                    }
                    None => break,
                }
            }
            loop {
                if !backoff.wait(&stop).await {
                    return;
                }
                match self.load(&bucket).await {
                    Ok(fresh) => {
                        watch = fresh;
                        backoff.reset();
                        break;
                    }
                    Err(err) => {
                        tracing::warn!(what = self.what, error = %err, "bucket not readable; keeping the last state");
                    }
                }
            }
        }
    }

    fn change(&self, entry: &kv::Entry) {
        self.current.rcu(|current| {
            let mut next = HashMap::clone(current);
            self.apply(&mut next, entry);
            next
        });
        tracing::info!(what = self.what, key = %entry.key, operation = ?entry.operation, "changed");
    }

    fn apply(&self, map: &mut HashMap<String, Decoded<T>>, entry: &kv::Entry) {
        match entry.operation {
            kv::Operation::Put => {
                let decoded = (self.decode)(&entry.key, &entry.value).map(Arc::new);
                if let Err(reason) = &decoded {
                    tracing::warn!(what = self.what, key = %entry.key, error = %reason, "entry cannot be read; its key is refused");
                }
                map.insert(entry.key.clone(), decoded);
            }
            kv::Operation::Delete | kv::Operation::Purge => {
                map.remove(&entry.key);
            }
        }
    }

    /// Replaces the map with every entry in the bucket; returns the watch that continues
    /// after them.
    async fn load(&self, bucket: &kv::Store) -> Result<kv::Watch, LiveError> {
        let failed = |err: &dyn std::fmt::Display| LiveError::Watch {
            what: self.what,
            bucket: bucket.name.clone(),
            message: err.to_string(),
        };
        let mut watch = bucket
            .watch_with_history(">")
            .await
            .map_err(|e| failed(&e))?;
        let mut map = HashMap::new();
        let empty = bucket.status().await.map_err(|e| failed(&e))?.values() == 0;
        while !empty && let Some(entry) = watch.next().await {
            let entry = entry.map_err(|e| failed(&e))?;
            self.apply(&mut map, &entry);
            if entry.delta == 0 {
                break; // caught up
            }
        }
        self.current.store(Arc::new(map));
        Ok(watch)
    }
}
