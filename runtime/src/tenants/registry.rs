//! The live tenant registry, as every worker (and the HTTP edge) sees it: the whole KV
//! bucket in memory, kept current by a watch ([`LiveMap`]), so that a process that loses
//! the broker keeps serving from the last registry it saw. A process that cannot read the
//! registry when it starts does not start in enforced mode: it cannot tell who may run.

use std::sync::Arc;

use async_nats::jetstream::kv;
use llmq_schemas::{Tenant, TenantEntry};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::pattern::ModelPattern;
pub use crate::live::LOAD_TIMEOUT;
use crate::live::{LiveError, LiveMap};

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

fn decode(key: &str, value: &[u8]) -> Result<TenantPolicy, String> {
    let entry: TenantEntry = serde_json::from_slice(value)
        .map_err(|err| format!("registry entry {key:?} is not a tenant entry: {err}"))?;
    if entry.id != key {
        return Err(format!(
            "registry entry {key:?} names tenant {:?}",
            entry.id
        ));
    }
    TenantPolicy::new(entry)
}

/// Why the registry could not be read at start-up.
pub type RegistryError = LiveError;

/// The live registry.
#[derive(Debug)]
pub struct Registry {
    mode: Mode,
    tenants: Arc<LiveMap<TenantPolicy>>,
}

const WHAT: &str = "tenant registry";

impl Registry {
    /// A registry nobody enforces (open mode).
    pub fn open() -> Arc<Self> {
        Arc::new(Self {
            mode: Mode::Open,
            tenants: LiveMap::empty(WHAT, decode),
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
        let (tenants, following) = LiveMap::start(bucket, WHAT, decode, stop).await?;
        Ok((Arc::new(Self { mode, tenants }), following))
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether unknown tenants are refused now.
    pub fn is_enforced(&self) -> bool {
        match self.mode {
            Mode::Enforced => true,
            Mode::Open => false,
            Mode::Auto => !self.tenants.is_empty(),
        }
    }

    /// How many tenants the registry holds (readable or not).
    pub fn len(&self) -> usize {
        self.tenants.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every readable entry now (for per-tenant reports such as budget metrics).
    pub fn known(&self) -> Vec<Arc<TenantPolicy>> {
        self.tenants
            .snapshot()
            .values()
            .filter_map(|entry| entry.as_ref().ok().map(Arc::clone))
            .collect()
    }

    /// The tenant's `batch_weight` (1 when it has none, or no readable entry), in any
    /// mode: an open registry's entries still share the batch tier.
    pub fn batch_weight(&self, tenant: &Tenant) -> u32 {
        match self.tenants.get(tenant.as_str()) {
            Some(Ok(policy)) => policy.entry.batch_weight.unwrap_or(1).max(1),
            _ => 1,
        }
    }

    pub fn lookup(&self, tenant: &Tenant) -> Lookup {
        if !self.is_enforced() {
            return Lookup::Open;
        }
        match self.tenants.get(tenant.as_str()) {
            Some(Ok(policy)) => Lookup::Known(policy),
            Some(Err(reason)) => Lookup::Invalid(reason),
            None => Lookup::Unknown,
        }
    }
}
