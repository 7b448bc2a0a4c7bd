//! One worker's side of the fleet-wide limits: admission of a job or a provider call
//! against every limit that applies to it.
//!
//! Each scope has a gate (`gate.rs`): what this worker holds of the fleet's capacity,
//! served without a round trip and topped up from the bucket when it runs out. The
//! limiter keeps the gates, admits a job only when every limit admits it (so it never
//! holds one scope's capacity while it waits for another's), waits and wakes waiters,
//! counts who waits for what, applies pauses, renews holdings while the worker lives and
//! publishes what it enforces.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::kv;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::fleet::now_ms;
use super::gate::{Gate, LINGER, Taken, Try, lease_ms};
use super::pause::{self, MAX_PAUSE, Pause, Pauses};
use super::status::{self, GateState, WorkerView};
use super::{LimitError, LimitSpec, Scope, lock, millis};

/// How long a worker's holding lasts without renewal: a killed worker's permits come back
/// within this (plus one poll).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);
/// How often a waiting job looks again at the fleet (others' releases, ended leases).
pub(super) const POLL: Duration = Duration::from_millis(100);

/// The capacity one call or job asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Demand {
    /// Tokens to reserve against token limits (an estimate, reconciled afterwards).
    pub tokens: u64,
}

/// Why a job was not admitted before its wait ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{scope} is at its limit ({what}); retry after {}", humantime::format_duration(*retry_after))]
pub struct Exhausted {
    pub scope: Scope,
    pub what: &'static str,
    /// When capacity is expected back (a window's end; a short poll for concurrency).
    pub retry_after: Duration,
}

/// Capacity held by an admitted job or call; concurrency permits return when dropped.
#[derive(Debug)]
pub struct Admission {
    limiter: Arc<Limiter>,
    taken: Vec<Taken>,
    waited: Option<Waited>,
}

/// How long an admission waited, and for which scope (the first that held it back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waited {
    pub scope: Scope,
    pub time: Duration,
}

impl Admission {
    /// Whether, and how long, the admission waited for capacity.
    pub fn waited(&self) -> Option<&Waited> {
        self.waited.as_ref()
    }

    /// Corrects the token reservation with what was really used.
    pub fn reconcile(&self, used_tokens: u64) {
        for taken in &self.taken {
            taken
                .gate
                .reconcile(&self.limiter, taken.window, taken.tokens, used_tokens);
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut released = false;
        for taken in &self.taken {
            if taken.permit {
                taken.gate.release_permit();
                released = true;
            }
        }
        // Only a released permit can admit a waiter: waking them for anything else would
        // have every waiter try again, fail, and wake the others, in a loop.
        if released {
            self.limiter.changed.notify_waiters();
        }
    }
}

/// This worker's limiter.
#[derive(Debug)]
pub struct Limiter {
    pub(super) bucket: kv::Store,
    pub(super) worker: String,
    pub(super) lease: Duration,
    gates: Mutex<HashMap<Scope, Arc<Gate>>>,
    changed: Notify,
    waiting: AtomicUsize,
    /// Waiting jobs per scope holding them back (each waiting job counts once).
    blocked: Mutex<HashMap<Scope, usize>>,
    pauses: Pauses,
    /// The view last published under `worker.<id>`, and when.
    published: Mutex<Option<(Vec<GateState>, Instant)>>,
}

/// What a gate holds now, for metrics and `submitter limits`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateView {
    pub scope: Scope,
    pub spec: LimitSpec,
    pub held: u32,
    pub in_use: u32,
    /// Jobs of this worker waiting because this scope is at its limit (or paused).
    pub waiting: usize,
}

impl Limiter {
    pub fn new(bucket: kv::Store, worker: impl Into<String>, lease: Duration) -> Arc<Self> {
        Arc::new(Self {
            bucket,
            worker: worker.into(),
            lease,
            gates: Mutex::new(HashMap::new()),
            changed: Notify::new(),
            waiting: AtomicUsize::new(0),
            blocked: Mutex::new(HashMap::new()),
            pauses: Pauses::default(),
            published: Mutex::new(None),
        })
    }

    /// Pauses `scope` fleet-wide for `length` (at most [`MAX_PAUSE`]) because the
    /// upstream said it has nothing left: this worker's jobs see it at once, the others'
    /// through their watch. Whether the fleet's pause was extended (false: it already
    /// lasted as long).
    pub async fn pause(
        &self,
        scope: &Scope,
        length: Duration,
        reason: &str,
    ) -> Result<bool, LimitError> {
        let until_ms = now_ms() + millis(length.min(MAX_PAUSE));
        self.pauses.note(scope, until_ms);
        let pause = Pause {
            scope: scope.clone(),
            until_ms,
            reason: reason.to_owned(),
            by: self.worker.clone(),
        };
        let extended = pause::extend(&self.bucket, &pause).await?;
        if extended {
            self.changed.notify_waiters();
        }
        Ok(extended)
    }

    /// Whether any of `scopes` is paused now (the fast check before an admission).
    pub fn is_paused<'a>(&self, mut scopes: impl Iterator<Item = &'a Scope>) -> bool {
        let now = now_ms();
        scopes.any(|scope| self.pauses.until(scope, now).is_some())
    }

    /// The first of `limits`' scopes that is paused, as a refusal (its `retry_after` is
    /// the pause's end).
    pub fn paused(&self, limits: &[(Scope, LimitSpec)]) -> Option<Exhausted> {
        let now = now_ms();
        limits.iter().find_map(|(scope, _)| {
            let until = self.pauses.until(scope, now)?;
            Some(Exhausted {
                scope: scope.clone(),
                what: "paused: the provider reported nothing left until its reset",
                retry_after: Duration::from_millis(until - now),
            })
        })
    }

    /// Jobs of this worker waiting for capacity now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    pub fn gates(&self) -> Vec<GateView> {
        let gates: Vec<Arc<Gate>> = lock(&self.gates).values().cloned().collect();
        let mut blocked = lock(&self.blocked).clone();
        let mut views: Vec<GateView> = gates
            .iter()
            .map(|gate| {
                let local = lock(&gate.local);
                GateView {
                    scope: gate.scope.clone(),
                    spec: *lock(&gate.spec),
                    held: local.held,
                    in_use: local.in_use,
                    waiting: blocked.remove(&gate.scope).unwrap_or(0),
                }
            })
            .collect();
        // Jobs waiting on a scope without limits of its own: a paused deployment.
        views.extend(blocked.into_iter().map(|(scope, waiting)| GateView {
            scope,
            spec: LimitSpec::default(),
            held: 0,
            in_use: 0,
            waiting,
        }));
        views
    }

    fn gate(&self, scope: &Scope, spec: LimitSpec) -> Arc<Gate> {
        let mut gates = lock(&self.gates);
        let gate = gates
            .entry(scope.clone())
            .or_insert_with(|| Arc::new(Gate::new(scope, spec)));
        *lock(&gate.spec) = spec; // the config or the registry may have changed it
        Arc::clone(gate)
    }

    /// Admits a demand against every limit in `limits`, waiting for capacity until
    /// `until` (`None`: as long as it takes).
    pub async fn admit(
        self: &Arc<Self>,
        limits: &[(Scope, LimitSpec)],
        demand: Demand,
        until: Option<Instant>,
    ) -> Result<Admission, LimitError> {
        let gates: Vec<Arc<Gate>> = limits
            .iter()
            .filter(|(_, spec)| !spec.is_empty())
            .map(|(scope, spec)| self.gate(scope, *spec))
            .collect();
        let mut waiting: Option<WaitingGuard<'_>> = None;
        loop {
            // The state being unreachable (a broker restarting) waits like a full limit.
            let refused = match self.paused(limits) {
                Some(exhausted) => LimitError::Exhausted(exhausted),
                None => match self.try_all(&gates, demand).await {
                    // A pause that came while the gates were taken wins: capacity freed by
                    // the call that brought the pause must not start another call.
                    Ok(Ok(mut admission)) => match self.paused(limits) {
                        None => {
                            admission.waited = waiting.as_ref().and_then(WaitingGuard::waited);
                            return Ok(admission);
                        }
                        Some(exhausted) => {
                            admission.give_back_reservations();
                            LimitError::Exhausted(exhausted)
                        }
                    },
                    Ok(Err(exhausted)) => LimitError::Exhausted(exhausted),
                    Err(err) => {
                        tracing::debug!(error = %err, "limit state unreachable; waiting");
                        err
                    }
                },
            };
            if until.is_some_and(|until| Instant::now() >= until) {
                return Err(refused);
            }
            let guard = waiting.get_or_insert_with(|| WaitingGuard::new(self));
            if let LimitError::Exhausted(exhausted) = &refused {
                guard.blocked_by(&exhausted.scope);
            }
            let poll = tokio::time::sleep(POLL);
            let give_up = async {
                match until {
                    Some(until) => tokio::time::sleep_until(until).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = self.changed.notified() => {}
                () = poll => {}
                () = give_up => {}
            }
        }
    }

    /// One round over every gate: all admit, or whatever was taken goes back.
    async fn try_all(
        self: &Arc<Self>,
        gates: &[Arc<Gate>],
        demand: Demand,
    ) -> Result<Result<Admission, Exhausted>, LimitError> {
        let mut admission = Admission {
            limiter: Arc::clone(self),
            taken: Vec::with_capacity(gates.len()),
            waited: None,
        };
        for gate in gates {
            match gate.take(self, demand).await? {
                Try::Taken(taken) => admission.taken.push(taken),
                Try::Full(exhausted) => {
                    admission.give_back_reservations();
                    return Ok(Err(exhausted));
                }
            }
        }
        Ok(Ok(admission))
    }

    /// Renews this worker's holdings, returns unused permits, publishes its view and
    /// follows the fleet's pauses, until `stop`.
    pub async fn maintain(self: Arc<Self>, stop: CancellationToken) {
        tokio::join!(
            self.pauses.follow(&self.bucket, &stop),
            Arc::clone(&self).tend_all(stop.clone()),
        );
    }

    async fn tend_all(self: Arc<Self>, stop: CancellationToken) {
        let every = (self.lease / 4).max(Duration::from_millis(50)).min(LINGER);
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = stop.cancelled() => break,
            }
            let gates: Vec<Arc<Gate>> = lock(&self.gates).values().cloned().collect();
            for gate in gates {
                if let Err(err) = gate.tend(&self).await {
                    tracing::debug!(scope = %gate.scope, error = %err, "limit holding not renewed; retrying");
                }
            }
            // Waiters look again: a lease of another worker may have ended.
            self.changed.notify_waiters();
            if let Err(err) = self.publish_view().await {
                tracing::debug!(error = %err, "limits view not published; retrying");
            }
        }
        let gates: Vec<Arc<Gate>> = lock(&self.gates).values().cloned().collect();
        for gate in gates {
            let _ = gate.set_holding(&self, 0).await;
        }
        let _ = self.bucket.delete(status::view_key(&self.worker)).await;
    }

    /// Publishes what this worker enforces and who of it waits (`worker.<id>`), when that
    /// changed or its lease is a third through.
    async fn publish_view(&self) -> Result<(), LimitError> {
        let mut gates: Vec<GateState> = self
            .gates()
            .into_iter()
            .map(|view| GateState {
                scope: view.scope,
                spec: view.spec,
                waiting: view.waiting,
            })
            .collect();
        if gates.is_empty() {
            return Ok(());
        }
        gates.sort_by(|a, b| a.scope.cmp(&b.scope));
        let due = lock(&self.published)
            .as_ref()
            .is_none_or(|(last, at)| *last != gates || at.elapsed() >= self.lease / 3);
        if !due {
            return Ok(());
        }
        let view = WorkerView {
            worker: self.worker.clone(),
            until_ms: now_ms() + lease_ms(self),
            gates,
        };
        let key = status::view_key(&self.worker);
        let bytes = bytes::Bytes::from(serde_json::to_vec(&view).unwrap_or_default());
        self.bucket
            .put(&key, bytes)
            .await
            .map_err(|err| LimitError::nats("writing", &key, err))?;
        *lock(&self.published) = Some((view.gates, Instant::now()));
        Ok(())
    }
}

impl Admission {
    /// Returns token and request reservations of a partial admission (permits return on
    /// drop).
    fn give_back_reservations(&mut self) {
        for taken in &self.taken {
            taken
                .gate
                .reconcile(&self.limiter, taken.window, taken.tokens, 0);
            let mut local = lock(&taken.gate.local);
            if local.window == taken.window && lock(&taken.gate.spec).requests().is_some() {
                local.requests_left += 1;
            }
        }
    }
}

/// Counts a job as waiting for as long as it is, under the scope holding it back now.
struct WaitingGuard<'a> {
    limiter: &'a Limiter,
    since: Instant,
    /// The scope it waits for now, and the first it waited for.
    now: Option<Scope>,
    first: Option<Scope>,
}

impl<'a> WaitingGuard<'a> {
    fn new(limiter: &'a Limiter) -> Self {
        limiter.waiting.fetch_add(1, Ordering::Relaxed);
        Self {
            limiter,
            since: Instant::now(),
            now: None,
            first: None,
        }
    }

    fn blocked_by(&mut self, scope: &Scope) {
        if self.now.as_ref() == Some(scope) {
            return;
        }
        let mut blocked = lock(&self.limiter.blocked);
        if let Some(old) = self.now.take() {
            unblock(&mut blocked, &old);
        }
        *blocked.entry(scope.clone()).or_default() += 1;
        self.now = Some(scope.clone());
        self.first.get_or_insert_with(|| scope.clone());
    }

    fn waited(&self) -> Option<Waited> {
        Some(Waited {
            scope: self.first.clone()?,
            time: self.since.elapsed(),
        })
    }
}

fn unblock(blocked: &mut HashMap<Scope, usize>, scope: &Scope) {
    if let Some(n) = blocked.get_mut(scope) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            blocked.remove(scope);
        }
    }
}

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.limiter.waiting.fetch_sub(1, Ordering::Relaxed);
        if let Some(scope) = self.now.take() {
            unblock(&mut lock(&self.limiter.blocked), &scope);
        }
    }
}
