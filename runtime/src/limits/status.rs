//! What the fleet's limits look like now, for `submitter limits`.
//!
//! The limits themselves are configuration (worker config, registry) that only workers
//! read, and who waits is in workers' memory; so each worker publishes what it enforces
//! and how many of its jobs wait, per scope, under `worker.<id>` with a lease, the way it
//! holds permits (a killed worker's view stops counting when its lease ends). A reader
//! joins those views with the shared state: live holdings (`conc.*`), the current
//! window's counters (`rate.*`) and pauses (`pause.*`). Nothing here is on a job's path.

use std::collections::BTreeMap;

use async_nats::jetstream::kv;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use super::fleet::{self, Holdings, Used, now_ms, window_of};
use super::pause::Pause;
use super::{LimitError, LimitSpec, Scope};

/// `worker.<id>`'s value: one worker's gates, as it sees them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerView {
    pub worker: String,
    /// The view counts until then (epoch ms).
    pub until_ms: u64,
    pub gates: Vec<GateState>,
}

/// One scope as one worker enforces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateState {
    pub scope: Scope,
    pub spec: LimitSpec,
    /// Jobs of this worker waiting because this scope is at its limit (or paused).
    pub waiting: usize,
}

pub(crate) fn view_key(worker: &str) -> String {
    format!("worker.{}", super::scope::token(worker))
}

/// One limited scope across the fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScopeStatus {
    pub scope: Scope,
    /// The limits, as the live workers configure them (the first seen, if they differ).
    pub spec: LimitSpec,
    /// Concurrency permits held now, per worker (live leases only).
    pub holders: BTreeMap<String, u32>,
    /// The current window's counter (rate limits only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<WindowUse>,
    /// Jobs waiting on this scope, per worker.
    pub waiting: BTreeMap<String, usize>,
}

/// The current window of a rate limit: requests and tokens handed out to workers (they
/// take allotments, so this runs ahead of the calls made by at most one allotment per
/// worker), and when the window ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WindowUse {
    pub requests: u64,
    pub tokens: u64,
    pub ends_ms: u64,
}

/// Every limited scope and every pause in force.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct FleetStatus {
    /// Epoch ms the status was read at.
    pub at_ms: u64,
    pub scopes: Vec<ScopeStatus>,
    pub pauses: Vec<Pause>,
    /// Workers whose views are live.
    pub workers: Vec<String>,
}

/// Reads the fleet's limits from the bucket.
pub async fn read(bucket: &kv::Store) -> Result<FleetStatus, LimitError> {
    let keys: Vec<String> = bucket
        .keys()
        .await
        .map_err(|err| LimitError::nats("listing", "keys", err))?
        .try_collect()
        .await
        .map_err(|err| LimitError::nats("listing", "keys", err))?;
    let now = now_ms();
    let mut status = FleetStatus {
        at_ms: now,
        ..FleetStatus::default()
    };
    let mut scopes: BTreeMap<Scope, ScopeStatus> = BTreeMap::new();
    for key in keys.iter().filter(|k| k.starts_with("worker.")) {
        let view = fleet::read::<WorkerView>(bucket, key).await?.value;
        if view.until_ms <= now {
            continue;
        }
        for gate in view.gates {
            let entry = scopes
                .entry(gate.scope.clone())
                .or_insert_with(|| ScopeStatus {
                    scope: gate.scope.clone(),
                    spec: gate.spec,
                    holders: BTreeMap::new(),
                    window: None,
                    waiting: BTreeMap::new(),
                });
            if gate.waiting > 0 {
                entry.waiting.insert(view.worker.clone(), gate.waiting);
            }
        }
        status.workers.push(view.worker);
    }
    for scope in scopes.values_mut() {
        fill_shared(bucket, scope, now).await?;
    }
    for key in keys.iter().filter(|k| k.starts_with("pause.")) {
        if let Some(pause) = fleet::read::<Option<Pause>>(bucket, key).await?.value
            && pause.until_ms > now
        {
            status.pauses.push(pause);
        }
    }
    status.scopes = scopes.into_values().collect();
    Ok(status)
}

/// The scope's live holdings and its current window's counter.
async fn fill_shared(
    bucket: &kv::Store,
    scope: &mut ScopeStatus,
    now: u64,
) -> Result<(), LimitError> {
    if scope.spec.concurrency().is_some() {
        let key = format!("conc.{}", scope.scope.key());
        let holdings = fleet::read::<Holdings>(bucket, &key).await?.value;
        scope.holders = holdings
            .holders
            .into_iter()
            .filter(|(_, h)| h.until_ms > now && h.n > 0)
            .map(|(worker, h)| (worker, h.n))
            .collect();
    }
    if scope.spec.requests().is_some() || scope.spec.tokens().is_some() {
        let (window, ends) = window_of(now, scope.spec.window());
        let key = format!("rate.{}.{window}", scope.scope.key());
        let used = fleet::read::<Used>(bucket, &key).await?.value;
        scope.window = Some(WindowUse {
            requests: used.req,
            tokens: used.tok,
            ends_ms: ends,
        });
    }
    Ok(())
}
