//! One scope's gate: what this worker holds of the scope's fleet-wide capacity, and how it
//! gets more.
//!
//! A gate serves admissions from its holding (concurrency permits, and an allotment of
//! the current window's requests and tokens) without a round trip. Only when the holding
//! runs out does it go to the bucket (`fleet.rs`), by compare-and-set: one more permit
//! when the live holdings leave room, or a new allotment (what it lacks, or a share of
//! the limit if that is more). Unused permits go back after [`LINGER`], holdings are
//! renewed every `lease/3` while the worker lives (`tend`), and a window known to be used
//! up is refused without reading the bucket again. [`super::limiter`] asks every gate of
//! a job in turn and keeps what they gave in its `Admission`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::fleet::{self, Holdings, Used, Written, now_ms, window_of};
use super::limiter::{Demand, Exhausted, Limiter, POLL};
use super::{LimitError, LimitSpec, Scope, lock, millis};

/// How long unused permits stay with a worker before they go back to the fleet.
pub(super) const LINGER: Duration = Duration::from_millis(100);

/// A window allotment is at least this share of the limit (fewer round trips when the
/// limit is generous; at most this much unspent per worker when a window ends).
const ALLOTMENT_DIVISOR: u64 = 32;

/// A scope's gate: its limits and what this worker holds of them.
#[derive(Debug)]
pub(super) struct Gate {
    pub(super) scope: Scope,
    pub(super) spec: Mutex<LimitSpec>,
    pub(super) local: Mutex<Local>,
    /// Serializes this worker's compare-and-set writes on the scope's keys.
    fleet: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
pub(super) struct Local {
    /// Concurrency permits this worker holds in the fleet, and how many are in use.
    pub(super) held: u32,
    pub(super) in_use: u32,
    idle_since: Option<Instant>,
    renewed_at: Option<Instant>,
    /// The window of the allotment, and what is left of it.
    pub(super) window: u64,
    pub(super) requests_left: u64,
    tokens_left: u64,
    /// What the fleet had handed out of `window` when last read. It only grows within a
    /// window, so a need it has no room for is refused without reading again: jobs
    /// waiting on a used-up window cost the broker nothing until the window ends.
    fleet_used: Option<Used>,
}

/// What a gate took for one admission.
#[derive(Debug)]
pub(super) struct Taken {
    pub(super) gate: Arc<Gate>,
    pub(super) permit: bool,
    pub(super) window: u64,
    pub(super) tokens: u64,
}

/// What one gate can say to an admission attempt.
pub(super) enum Try {
    Taken(Taken),
    Full(Exhausted),
}

impl Gate {
    pub(super) fn new(scope: &Scope, spec: LimitSpec) -> Gate {
        Gate {
            scope: scope.clone(),
            spec: Mutex::new(spec),
            local: Mutex::new(Local::default()),
            fleet: tokio::sync::Mutex::new(()),
        }
    }

    /// Takes one permit and the demand's requests and tokens, from what this worker holds
    /// or, if that is not enough, from the fleet.
    pub(super) async fn take(
        self: &Arc<Self>,
        limiter: &Limiter,
        demand: Demand,
    ) -> Result<Try, LimitError> {
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

    pub(super) fn release_permit(&self) {
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
    pub(super) async fn set_holding(&self, limiter: &Limiter, n: u32) -> Result<(), LimitError> {
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
    pub(super) async fn tend(&self, limiter: &Limiter) -> Result<(), LimitError> {
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
    pub(super) fn reconcile(&self, limiter: &Arc<Limiter>, window: u64, reserved: u64, used: u64) {
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

pub(super) fn lease_ms(limiter: &Limiter) -> u64 {
    millis(limiter.lease)
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
