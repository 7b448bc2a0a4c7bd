//! One worker's side of the fleet-wide limits: admission of a job or a provider call
//! against every limit that applies to it.
//!
//! Each scope has a gate. A gate keeps what this worker holds of the fleet's capacity
//! (concurrency permits, and allotments of the current window's requests and tokens) and
//! serves jobs from it without a round trip; only when it runs out does it go to the
//! bucket (`fleet.rs`) for more, by compare-and-set. Permits this worker no longer needs
//! go back after a short linger (so back-to-back jobs reuse them), and its holdings are
//! renewed while it lives. A job is admitted only when every limit admits it, so it never
//! holds one scope's capacity while it waits for another's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_nats::jetstream::kv;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::fleet::{self, Holdings, Used, Written, now_ms, window_of};
use super::pause::{self, MAX_PAUSE, Pause, Pauses};
use super::status::{self, GateState, WorkerView};
use super::{LimitError, LimitSpec, Scope};

/// How long a worker's holding lasts without renewal: a killed worker's permits come back
/// within this (plus one poll).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);
/// How long unused permits stay with a worker before they go back to the fleet.
const LINGER: Duration = Duration::from_millis(100);
/// How often a waiting job looks again at the fleet (others' releases, ended leases).
const POLL: Duration = Duration::from_millis(100);
/// A window allotment is at least this share of the limit (fewer round trips when the
/// limit is generous; at most this much unspent per worker when a window ends).
const ALLOTMENT_DIVISOR: u64 = 32;

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

/// What a gate took for one admission.
#[derive(Debug)]
struct Taken {
    gate: Arc<Gate>,
    permit: bool,
    window: u64,
    tokens: u64,
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

/// A scope's gate: its limits and what this worker holds of them.
#[derive(Debug)]
struct Gate {
    scope: Scope,
    spec: Mutex<LimitSpec>,
    local: Mutex<Local>,
    /// Serializes this worker's compare-and-set writes on the scope's keys.
    fleet: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct Local {
    /// Concurrency permits this worker holds in the fleet, and how many are in use.
    held: u32,
    in_use: u32,
    idle_since: Option<Instant>,
    renewed_at: Option<Instant>,
    /// The window of the allotment, and what is left of it.
    window: u64,
    requests_left: u64,
    tokens_left: u64,
    /// What the fleet had handed out of `window` when last read. It only grows within a
    /// window, so a need it has no room for is refused without reading again: jobs
    /// waiting on a used-up window cost the broker nothing until the window ends.
    fleet_used: Option<Used>,
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What one gate can say to an admission attempt.
enum Try {
    Taken(Taken),
    Full(Exhausted),
}

/// This worker's limiter.
#[derive(Debug)]
pub struct Limiter {
    bucket: kv::Store,
    worker: String,
    lease: Duration,
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
        let gate = gates.entry(scope.clone()).or_insert_with(|| {
            Arc::new(Gate {
                scope: scope.clone(),
                spec: Mutex::new(spec),
                local: Mutex::new(Local::default()),
                fleet: tokio::sync::Mutex::new(()),
            })
        });
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

impl Gate {
    /// Takes one permit and the demand's requests and tokens, from what this worker holds
    /// or, if that is not enough, from the fleet.
    async fn take(self: &Arc<Self>, limiter: &Limiter, demand: Demand) -> Result<Try, LimitError> {
        let spec = *lock(&self.spec);
        let mut taken = Taken {
            gate: Arc::clone(self),
            permit: false,
            window: 0,
            tokens: 0,
        };
        if let Some(limit) = spec.concurrency() {
            if !self.take_permit(limiter, limit).await? {
                return Ok(Try::Full(Exhausted {
                    scope: self.scope.clone(),
                    what: "concurrency",
                    retry_after: POLL,
                }));
            }
            taken.permit = true;
        }
        if spec.requests().is_some() || spec.tokens().is_some() {
            match self.take_rate(limiter, spec, demand).await? {
                Ok(window) => {
                    taken.window = window;
                    taken.tokens = if spec.tokens().is_some() {
                        demand.tokens
                    } else {
                        0
                    };
                }
                Err(exhausted) => {
                    if taken.permit {
                        self.release_permit();
                    }
                    return Ok(Try::Full(exhausted));
                }
            }
        }
        Ok(Try::Taken(taken))
    }

    fn release_permit(&self) {
        let mut local = lock(&self.local);
        local.in_use = local.in_use.saturating_sub(1);
        if local.in_use < local.held && local.idle_since.is_none() {
            local.idle_since = Some(Instant::now());
        }
    }

    /// A permit: one this worker holds, else one more from the fleet.
    async fn take_permit(&self, limiter: &Limiter, limit: u32) -> Result<bool, LimitError> {
        if self.take_held_permit() {
            return Ok(true);
        }
        let _writer = self.fleet.lock().await;
        if self.take_held_permit() {
            return Ok(true); // another job of this worker grew the holding meanwhile
        }
        let held = lock(&self.local).held;
        if !self.grow(limiter, held, limit).await? {
            return Ok(false);
        }
        let mut local = lock(&self.local);
        local.held = held + 1;
        local.in_use += 1;
        local.renewed_at = Some(Instant::now());
        Ok(true)
    }

    fn take_held_permit(&self) -> bool {
        let mut local = lock(&self.local);
        if local.in_use < local.held {
            local.in_use += 1;
            if local.in_use == local.held {
                local.idle_since = None;
            }
            true
        } else {
            false
        }
    }

    /// Raises this worker's holding from `held` to `held + 1` if the fleet has room.
    async fn grow(&self, limiter: &Limiter, held: u32, limit: u32) -> Result<bool, LimitError> {
        let key = format!("conc.{}", self.scope.key());
        for _ in 0..16 {
            let read = fleet::read::<Holdings>(&limiter.bucket, &key).await?;
            let now = now_ms();
            let others: u32 = read
                .value
                .holders
                .iter()
                .filter(|(worker, h)| *worker != &limiter.worker && h.until_ms > now)
                .map(|(_, h)| h.n)
                .sum();
            if others + held + 1 > limit {
                return Ok(false);
            }
            let mut next = read.value;
            next.set(&limiter.worker, held + 1, now + lease_ms(limiter), now);
            if let Written::Done = fleet::write(&limiter.bucket, &key, &next, read.revision).await?
            {
                return Ok(true);
            }
        }
        Ok(false) // heavy contention: try again after a poll
    }

    /// Sets this worker's holding to `n` (renewing its lease).
    async fn set_holding(&self, limiter: &Limiter, n: u32) -> Result<(), LimitError> {
        let key = format!("conc.{}", self.scope.key());
        for _ in 0..16 {
            let read = fleet::read::<Holdings>(&limiter.bucket, &key).await?;
            let now = now_ms();
            let mut next = read.value;
            next.set(&limiter.worker, n, now + lease_ms(limiter), now);
            if let Written::Done = fleet::write(&limiter.bucket, &key, &next, read.revision).await?
            {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Renews a holding that is due, and gives back permits unused for [`LINGER`].
    async fn tend(&self, limiter: &Limiter) -> Result<(), LimitError> {
        let (held, in_use, idle_long, renew_due) = {
            let local = lock(&self.local);
            let idle_long = local
                .idle_since
                .is_some_and(|since| since.elapsed() >= LINGER);
            let renew_due = local
                .renewed_at
                .is_none_or(|at| at.elapsed() >= limiter.lease / 3);
            (local.held, local.in_use, idle_long, renew_due)
        };
        if held == 0 || !(idle_long && in_use < held || renew_due) {
            return Ok(());
        }
        let _writer = self.fleet.lock().await;
        let target = {
            // Permits going back stop being takable before the fleet hears of it, or a
            // job could take one the fleet already counts as free.
            let mut local = lock(&self.local);
            if idle_long {
                local.held = local.in_use;
            }
            local.held
        };
        self.set_holding(limiter, target).await?;
        let mut local = lock(&self.local);
        // Jobs admitted meanwhile took permits this worker still held.
        local.held = target.max(local.in_use);
        local.renewed_at = Some(Instant::now());
        if local.in_use >= local.held {
            local.idle_since = None;
        }
        Ok(())
    }

    /// One request and `demand.tokens` of the current window, from this worker's
    /// allotment or a new one; the window's number, or when the window has room again.
    async fn take_rate(
        &self,
        limiter: &Limiter,
        spec: LimitSpec,
        demand: Demand,
    ) -> Result<Result<u64, Exhausted>, LimitError> {
        let (window, ends_ms) = window_of(now_ms(), spec.window());
        let need = Need::of(spec, demand);
        if self.take_allotted(window, need) {
            return Ok(Ok(window));
        }
        let _writer = self.fleet.lock().await;
        if self.take_allotted(window, need) {
            return Ok(Ok(window));
        }
        match self.allot(limiter, spec, window, need).await? {
            true => Ok(Ok(window)),
            false => Ok(Err(Exhausted {
                scope: self.scope.clone(),
                what: if spec.requests().is_some() {
                    "requests per window"
                } else {
                    "tokens per window"
                },
                retry_after: Duration::from_millis(ends_ms.saturating_sub(now_ms())),
            })),
        }
    }

    fn take_allotted(&self, window: u64, need: Need) -> bool {
        let mut local = lock(&self.local);
        if local.window != window {
            *local = Local {
                window,
                requests_left: 0,
                tokens_left: 0,
                fleet_used: None,
                ..std::mem::take(&mut *local)
            };
        }
        if local.requests_left >= need.requests && local.tokens_left >= need.tokens {
            local.requests_left -= need.requests;
            local.tokens_left -= need.tokens;
            return true;
        }
        false
    }

    /// Takes a new allotment of the window from the fleet, if it has room for `need`.
    async fn allot(
        &self,
        limiter: &Limiter,
        spec: LimitSpec,
        window: u64,
        need: Need,
    ) -> Result<bool, LimitError> {
        let key = format!("rate.{}.{window}", self.scope.key());
        if self.known_full(spec, window, need) {
            return Ok(false);
        }
        for _ in 0..16 {
            let read = fleet::read::<Used>(&limiter.bucket, &key).await?;
            let (left_requests, left_tokens) = {
                let mut local = lock(&self.local);
                if local.window == window {
                    local.fleet_used = Some(read.value);
                }
                (local.requests_left, local.tokens_left)
            };
            let Some(grant) = Grant::of(spec, read.value, need, left_requests, left_tokens) else {
                return Ok(false);
            };
            let next = Used {
                req: read.value.req + grant.requests,
                tok: read.value.tok + grant.tokens,
            };
            if let Written::Done = fleet::write(&limiter.bucket, &key, &next, read.revision).await?
            {
                let mut local = lock(&self.local);
                if local.window == window {
                    local.requests_left =
                        (local.requests_left + grant.requests).saturating_sub(need.requests);
                    local.tokens_left =
                        (local.tokens_left + grant.tokens).saturating_sub(need.tokens);
                }
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether the fleet's count of `window`, as last read, already leaves no room for
    /// `need` (beyond this worker's own allotment).
    fn known_full(&self, spec: LimitSpec, window: u64, need: Need) -> bool {
        let local = lock(&self.local);
        match local.fleet_used {
            Some(used) if local.window == window => {
                Grant::of(spec, used, need, local.requests_left, local.tokens_left).is_none()
            }
            _ => false,
        }
    }

    /// Gives back an unused reservation, or takes what was used beyond it (from this
    /// worker's allotment; what it lacks is added to the window's count in the fleet).
    fn reconcile(&self, limiter: &Arc<Limiter>, window: u64, reserved: u64, used: u64) {
        if reserved == 0 && used == 0 {
            return;
        }
        let spec = *lock(&self.spec);
        if spec.tokens().is_none() {
            return;
        }
        let owed = {
            let mut local = lock(&self.local);
            if local.window != window {
                return; // that window is over
            }
            if used <= reserved {
                local.tokens_left += reserved - used;
                return;
            }
            let extra = used - reserved;
            let covered = extra.min(local.tokens_left);
            local.tokens_left -= covered;
            extra - covered
        };
        if owed > 0 {
            let key = format!("rate.{}.{window}", self.scope.key());
            let bucket = limiter.bucket.clone();
            tokio::spawn(async move {
                for _ in 0..16 {
                    let Ok(read) = fleet::read::<Used>(&bucket, &key).await else {
                        return;
                    };
                    let next = Used {
                        tok: read.value.tok + owed,
                        ..read.value
                    };
                    if matches!(
                        fleet::write(&bucket, &key, &next, read.revision).await,
                        Ok(Written::Done) | Err(_)
                    ) {
                        return;
                    }
                }
            });
        }
    }
}

fn lease_ms(limiter: &Limiter) -> u64 {
    millis(limiter.lease)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// What one admission needs of a window.
#[derive(Debug, Clone, Copy)]
struct Need {
    requests: u64,
    tokens: u64,
}

impl Need {
    fn of(spec: LimitSpec, demand: Demand) -> Self {
        Self {
            requests: u64::from(spec.requests().is_some()),
            tokens: if spec.tokens().is_some() {
                demand.tokens
            } else {
                0
            },
        }
    }
}

/// A new allotment: what the worker lacks for the need, or a share of the limit if more,
/// never more than the window has left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Grant {
    requests: u64,
    tokens: u64,
}

impl Grant {
    fn of(
        spec: LimitSpec,
        used: Used,
        need: Need,
        left_requests: u64,
        left_tokens: u64,
    ) -> Option<Self> {
        let part = |limit: Option<u64>, used: u64, need: u64, left: u64| -> Option<u64> {
            let Some(limit) = limit else { return Some(0) };
            let room = limit.saturating_sub(used);
            let lacking = need.saturating_sub(left);
            if lacking > room {
                return None;
            }
            if lacking == 0 {
                return Some(0);
            }
            Some(lacking.max(limit / ALLOTMENT_DIVISOR).min(room))
        };
        Some(Self {
            requests: part(spec.requests(), used.req, need.requests, left_requests)?,
            tokens: part(spec.tokens(), used.tok, need.tokens, left_tokens)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(rpm: Option<i64>, tpm: Option<i64>) -> LimitSpec {
        LimitSpec {
            rpm,
            tpm,
            ..LimitSpec::default()
        }
    }

    #[test]
    fn an_allotment_never_exceeds_the_window_and_is_a_share_when_generous() {
        let need = Need {
            requests: 1,
            tokens: 100,
        };
        let tight = Grant::of(spec(Some(20), None), Used { req: 19, tok: 0 }, need, 0, 0);
        assert_eq!(
            tight,
            Some(Grant {
                requests: 1,
                tokens: 0
            })
        );
        assert_eq!(
            Grant::of(spec(Some(20), None), Used { req: 20, tok: 0 }, need, 0, 0),
            None
        );
        let generous = Grant::of(
            spec(Some(64_000), Some(3_200_000)),
            Used::default(),
            need,
            0,
            0,
        )
        .unwrap();
        assert_eq!(
            generous,
            Grant {
                requests: 2_000,
                tokens: 100_000
            }
        );
        // A demand larger than what is left of the window is refused, not split.
        assert_eq!(
            Grant::of(
                spec(None, Some(1_000)),
                Used { req: 0, tok: 950 },
                need,
                0,
                0
            ),
            None
        );
        // What the worker still holds counts.
        assert_eq!(
            Grant::of(
                spec(None, Some(1_000)),
                Used { req: 0, tok: 950 },
                need,
                0,
                60
            ),
            Some(Grant {
                requests: 0,
                tokens: 40
            })
        );
    }
}
