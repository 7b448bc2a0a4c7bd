//! The live tenant registry, as every worker (and the HTTP edge) sees it: the whole KV
//! bucket in memory, kept current by a watch.
//!
//! Reading the bucket per job would put a round trip on every job's path; a watch
//! delivers each change to every process within milliseconds, and a process that loses
//! the broker keeps serving from the last registry it saw. A process that cannot read the
//! registry when it starts does not start in enforced mode: it cannot tell who may run.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_nats::jetstream::kv;
use futures::StreamExt;
use llmq_schemas::{Tenant, TenantEntry};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::pattern::ModelPattern;

/// Whether a worker enforces the registry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Enforced as soon as the registry holds a tenant; open while it is empty.
    #[default]
    Auto,
    /// Unknown tenants are refused; a worker that cannot read the registry does not start.
    Enforced,
    /// No registry: any tenant may use any model (a single-team install).
    Open,
}

/// A tenant's entry, with its model patterns compiled.
#[derive(Debug, Clone)]
pub struct TenantPolicy {
    pub entry: TenantEntry,
    pub patterns: Vec<ModelPattern>,
}

impl TenantPolicy {
    /// Compiles an entry; an entry whose patterns do not parse is refused whole.
    pub fn new(entry: TenantEntry) -> Result<Self, String> {
        let patterns = entry
            .models
            .iter()
            .map(|model| ModelPattern::parse(model).map_err(|err| err.to_string()))
            .collect::<Result<_, _>>()?;
        Ok(Self { entry, patterns })
    }

    pub fn allows_model(&self, model: &str) -> bool {
        self.patterns.iter().any(|pattern| pattern.matches(model))
    }
}

/// What the registry says about one tenant.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// The registry is not enforced: anyone may run anything.
    Open,
    Known(Arc<TenantPolicy>),
    /// Not in the registry.
    Unknown,
    /// In the registry, but its entry cannot be read (written by hand?): refused.
    Invalid(String),
}

/// Every tenant, at one point in time.
#[derive(Debug, Default)]
struct Snapshot {
    tenants: HashMap<String, Result<Arc<TenantPolicy>, String>>,
}

impl Snapshot {
    fn apply(&mut self, entry: &kv::Entry) {
        match entry.operation {
            kv::Operation::Put => {
                let decoded = decode(&entry.key, &entry.value);
                if let Err(reason) = &decoded {
                    tracing::warn!(tenant = %entry.key, error = %reason, "registry entry cannot be read; the tenant is refused");
                }
                self.tenants.insert(entry.key.clone(), decoded);
            }
            kv::Operation::Delete | kv::Operation::Purge => {
                self.tenants.remove(&entry.key);
            }
        }
    }
}

fn decode(key: &str, value: &[u8]) -> Result<Arc<TenantPolicy>, String> {
    let entry: TenantEntry = serde_json::from_slice(value)
        .map_err(|err| format!("registry entry {key:?} is not a tenant entry: {err}"))?;
    if entry.id != key {
        return Err(format!(
            "registry entry {key:?} names tenant {:?}",
            entry.id
        ));
    }
    TenantPolicy::new(entry).map(Arc::new)
}

/// Why the registry could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot watch the tenant registry {bucket}: {message}")]
    Watch { bucket: String, message: String },
    #[error("the tenant registry {bucket} was not read within {waited:?}")]
    TimedOut { bucket: String, waited: Duration },
}

/// The live registry.
#[derive(Debug)]
pub struct Registry {
    mode: Mode,
    current: ArcSwap<Snapshot>,
}

/// How long start-up waits for the registry before giving up.
pub const LOAD_TIMEOUT: Duration = Duration::from_secs(10);

impl Registry {
    /// A registry nobody enforces (open mode).
    pub fn open() -> Arc<Self> {
        Arc::new(Self {
            mode: Mode::Open,
            current: ArcSwap::from_pointee(Snapshot::default()),
        })
    }

    /// Reads the whole registry, then keeps following it until `stop` (the returned
    /// future does the following: spawn it). Fails if the registry cannot be read within
    /// [`LOAD_TIMEOUT`].
    pub async fn start(
        bucket: kv::Store,
        mode: Mode,
        stop: CancellationToken,
    ) -> Result<(Arc<Self>, impl Future<Output = ()> + Send + 'static), RegistryError> {
        let name = bucket.name.clone();
        let load = tokio::time::timeout(LOAD_TIMEOUT, load(&bucket));
        let (snapshot, watch) = match load.await {
            Ok(loaded) => loaded?,
            Err(_) => {
                return Err(RegistryError::TimedOut {
                    bucket: name,
                    waited: LOAD_TIMEOUT,
                });
            }
        };
        let registry = Arc::new(Self {
            mode,
            current: ArcSwap::from_pointee(snapshot),
        });
        let following = Arc::clone(&registry).follow(bucket, watch, stop);
        Ok((registry, following))
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether unknown tenants are refused now.
    pub fn is_enforced(&self) -> bool {
        match self.mode {
            Mode::Enforced => true,
            Mode::Open => false,
            Mode::Auto => !self.current.load().tenants.is_empty(),
        }
    }

    /// How many tenants the registry holds (readable or not).
    pub fn len(&self) -> usize {
        self.current.load().tenants.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every readable entry now (for per-tenant reports such as budget metrics).
    pub fn known(&self) -> Vec<Arc<TenantPolicy>> {
        let snapshot = self.current.load();
        snapshot
            .tenants
            .values()
            .filter_map(|entry| entry.as_ref().ok().map(Arc::clone))
            .collect()
    }

    pub fn lookup(&self, tenant: &Tenant) -> Lookup {
        if !self.is_enforced() {
            return Lookup::Open;
        }
        match self.current.load().tenants.get(tenant.as_str()) {
            Some(Ok(policy)) => Lookup::Known(Arc::clone(policy)),
            Some(Err(reason)) => Lookup::Invalid(reason.clone()),
            None => Lookup::Unknown,
        }
    }

    /// Applies every change until `stop`; after a watch error, reads the whole registry
    /// again (changes may have been missed) and keeps serving the last one meanwhile.
    async fn follow(
        self: Arc<Self>,
        bucket: kv::Store,
        mut watch: kv::Watch,
        stop: CancellationToken,
    ) {
        let mut backoff = Duration::from_millis(100);
        loop {
            loop {
                let entry = tokio::select! {
                    entry = watch.next() => entry,
                    () = stop.cancelled() => return,
                };
                match entry {
                    Some(Ok(entry)) => self.change(&entry),
                    Some(Err(err)) => {
                        tracing::warn!(error = %err, "tenant registry watch failed; reading it again");
                        break;
                    }
                    None => break,
                }
            }
            loop {
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = stop.cancelled() => return,
                }
                match load(&bucket).await {
                    Ok((snapshot, fresh)) => {
                        self.current.store(Arc::new(snapshot));
                        watch = fresh;
                        backoff = Duration::from_millis(100);
                        break;
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "tenant registry not readable; keeping the last one");
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        }
    }

    fn change(&self, entry: &kv::Entry) {
        self.current.rcu(|current| {
            let mut next = Snapshot {
                tenants: current.tenants.clone(),
            };
            next.apply(entry);
            next
        });
        tracing::info!(tenant = %entry.key, operation = ?entry.operation, "tenant registry changed");
    }
}

/// Every entry in the bucket, and the watch that continues after them.
async fn load(bucket: &kv::Store) -> Result<(Snapshot, kv::Watch), RegistryError> {
    let failed = |err: &dyn std::fmt::Display| RegistryError::Watch {
        bucket: bucket.name.clone(),
        message: err.to_string(),
    };
    let mut watch = bucket
        .watch_with_history(">")
        .await
        .map_err(|e| failed(&e))?;
    let mut snapshot = Snapshot::default();
    let empty = bucket.status().await.map_err(|e| failed(&e))?.values() == 0;
    if empty {
        return Ok((snapshot, watch));
    }
    while let Some(entry) = watch.next().await {
        let entry = entry.map_err(|e| failed(&e))?;
        snapshot.apply(&entry);
        if entry.delta == 0 {
            break; // caught up
        }
    }
    Ok((snapshot, watch))
}
