//! One worker's side of the budgets: reserving a job's estimated maximum cost before its
//! provider call, counting its real cost after, and giving the reservation back.
//!
//! Reservations have the shape of the limits' concurrency holdings: key
//! `budget.<tenant>` in the limits bucket says how many nano-dollars each worker has in
//! flight for the tenant, each with a lease this worker renews every `lease/3`. A job is
//! refused when, for a hard period, spend + every live reservation ≥ the budget;
//! otherwise its estimate is added to this worker's share by compare-and-set. A killed
//! worker stops renewing, and its share stops counting when its lease ends.
//!
//! Why the check cannot overshoot by more than one job's estimate: the key is read first,
//! then the spend, then the key is written at the revision read. A job's cost is added to
//! the spend before its reservation leaves the key, so a concurrent finish either shows
//! in the spend read (counted twice: conservative) or changes the key (the write fails,
//! and the check runs again). So `spend + reserved < budget + estimate` holds after every
//! admission, while each job's cost stays within its estimate.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use llmq_schemas::{BudgetPeriod, Enforce, Subjects, Tenant, TenantBudget, Timestamp};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::BudgetError;
use super::period::{Periods, period_end};
use super::spend::{self, Increment, Spend, nano_usd};
use crate::limits::fleet::{self, Written, now_ms};
use crate::publish::Budget;

/// `budget.<tenant>`'s value: nano-dollars in flight per worker, with leases.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservations {
    pub holders: BTreeMap<String, Held>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    pub nano: u64,
    pub until_ms: u64,
}

impl Reservations {
    /// What live holders other than `worker` have reserved.
    pub fn others(&self, worker: &str, now: u64) -> u64 {
        self.holders
            .iter()
            .filter(|(who, held)| *who != worker && held.until_ms > now)
            .map(|(_, held)| held.nano)
            .sum()
    }

    /// Everything live holders have reserved.
    pub fn live(&self, now: u64) -> u64 {
        self.others("", now)
    }

    /// Sets `worker`'s share (0 removes it) and drops shares whose lease ended.
    pub fn set(&mut self, worker: &str, nano: u64, until_ms: u64, now: u64) {
        self.holders.retain(|_, held| held.until_ms > now);
        if nano == 0 {
            self.holders.remove(worker);
        } else {
            self.holders
                .insert(worker.to_owned(), Held { nano, until_ms });
        }
    }
}

/// A hard budget that refuses a job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the tenant's {period} budget is spent: ${spent:.6} spent and ${reserved:.6} reserved by jobs in flight, of ${budget:.6}", spent = spend::usd(*spent), reserved = spend::usd(*reserved), budget = spend::usd(*budget))]
pub struct Exceeded {
    pub period: BudgetPeriod,
    pub spent: u64,
    pub reserved: u64,
    pub budget: u64,
    /// When trying again may succeed: the period's end if spend alone reached the budget,
    /// else once jobs in flight finish.
    pub retry_after: Duration,
}

/// Why a reservation was not made.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(transparent)]
    Exceeded(#[from] Exceeded),
    #[error(transparent)]
    Unavailable(#[from] BudgetError),
}

/// How soon a refusal caused by reservations alone may succeed.
const IN_FLIGHT_RETRY: Duration = Duration::from_secs(1);
/// Compare-and-set rounds before a write gives up (it is retried by the next renewal).
const ROUNDS: usize = 16;

/// This worker's budgets: spend reads and writes, and its reservations.
#[derive(Debug)]
pub struct Budgets {
    js: jetstream::Context,
    spend: stream::Stream,
    bucket: kv::Store,
    subjects: Subjects,
    worker: String,
    lease: Duration,
    publish: Budget,
    tenants: Mutex<HashMap<String, Arc<Share>>>,
}

/// What this worker has reserved for one tenant, and what the bucket last got from it.
#[derive(Debug, Default)]
struct Share {
    local: Mutex<u64>,
    written: Mutex<WrittenShare>,
    /// Serializes this worker's writes of the tenant's key.
    writer: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default, Clone, Copy)]
struct WrittenShare {
    nano: u64,
    at: Option<Instant>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A job's reservation; give it back with [`Budgets::release`] once its cost is counted.
/// Dropped without that, it leaves this worker's share at once and the bucket at the next
/// renewal.
#[derive(Debug)]
pub struct Reservation {
    share: Arc<Share>,
    tenant: Tenant,
    pub nano: u64,
    released: bool,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.released {
            let mut local = lock(&self.share.local);
            *local = local.saturating_sub(self.nano);
        }
    }
}

/// Where the budgets' state lives, and how this worker writes it.
#[derive(Debug, Clone)]
pub struct BudgetStores {
    pub js: jetstream::Context,
    pub spend: stream::Stream,
    pub bucket: kv::Store,
    pub subjects: Subjects,
    /// How long a durable spend publish keeps retrying.
    pub publish: Budget,
}

impl Budgets {
    pub fn new(stores: BudgetStores, worker: impl Into<String>, lease: Duration) -> Arc<Self> {
        Arc::new(Self {
            js: stores.js,
            spend: stores.spend,
            bucket: stores.bucket,
            subjects: stores.subjects,
            worker: worker.into(),
            lease,
            publish: stores.publish,
            tenants: Mutex::new(HashMap::new()),
        })
    }

    fn share(&self, tenant: &Tenant) -> Arc<Share> {
        let mut tenants = lock(&self.tenants);
        Arc::clone(tenants.entry(tenant.as_str().to_owned()).or_default())
    }

    pub(crate) fn key(tenant: &Tenant) -> String {
        format!("budget.{tenant}")
    }

    fn lease_ms(&self) -> u64 {
        u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX)
    }

    /// The tenant's spend this day and month.
    pub async fn spend(&self, tenant: &Tenant, at: Timestamp) -> Result<Spend, BudgetError> {
        spend::read_spend(&self.spend, &self.subjects, tenant, &Periods::at(at)).await
    }

    /// What live workers have reserved for the tenant now.
    pub async fn reserved(&self, tenant: &Tenant) -> Result<u64, BudgetError> {
        read_reserved(&self.bucket, tenant).await
    }

    /// Reserves `estimate` nano-dollars for a job of `tenant`, unless a hard budget of
    /// `budget` is spent counting every live reservation.
    pub async fn reserve(
        &self,
        tenant: &Tenant,
        budget: &TenantBudget,
        estimate: u64,
    ) -> Result<Reservation, Refusal> {
        let share = self.share(tenant);
        let key = Self::key(tenant);
        let _writer = share.writer.lock().await;
        for _ in 0..ROUNDS {
            let read = fleet::read::<Reservations>(&self.bucket, &key)
                .await
                .map_err(BudgetError::from)?;
            let at = Timestamp::now();
            let spend = self.spend(tenant, at).await?;
            let now = now_ms();
            let mine = *lock(&share.local);
            let reserved = read.value.others(&self.worker, now) + mine;
            check(budget, spend, reserved, at)?;
            let mut next = read.value;
            next.set(&self.worker, mine + estimate, now + self.lease_ms(), now);
            let written = fleet::write(&self.bucket, &key, &next, read.revision)
                .await
                .map_err(BudgetError::from)?;
            if let Written::Done = written {
                *lock(&share.local) += estimate;
                *lock(&share.written) = WrittenShare {
                    nano: mine + estimate,
                    at: Some(Instant::now()),
                };
                return Ok(Reservation {
                    share: Arc::clone(&share),
                    tenant: tenant.clone(),
                    nano: estimate,
                    released: false,
                });
            }
        }
        Err(Refusal::Unavailable(BudgetError::nats(
            "reserving",
            &key,
            "too many concurrent writers",
        )))
    }

    /// Adds a usage event's cost to the tenant's totals (counted once per event id) and
    /// returns the totals after it.
    pub async fn record(
        &self,
        tenant: &Tenant,
        event_id: uuid::Uuid,
        cost_usd: f64,
        at: Timestamp,
    ) -> Result<Spend, BudgetError> {
        let periods = Periods::at(at);
        let increment = Increment {
            tenant,
            event_id,
            nano_usd: nano_usd(cost_usd),
            periods: &periods,
        };
        spend::add(
            &self.js,
            &self.spend,
            &self.subjects,
            increment,
            self.publish,
        )
        .await
    }

    /// Gives a reservation back (after its job's cost was recorded).
    pub async fn release(&self, mut reservation: Reservation) {
        let share = Arc::clone(&reservation.share);
        let _writer = share.writer.lock().await;
        {
            let mut local = lock(&share.local);
            *local = local.saturating_sub(reservation.nano);
        }
        reservation.released = true;
        if let Err(err) = self.write_share(&reservation.tenant, &share).await {
            tracing::debug!(tenant = %reservation.tenant, error = %err, "budget reservation not given back yet; the next renewal will");
        }
    }

    /// Writes this worker's share of the tenant's key as it is now (renewing its lease).
    async fn write_share(&self, tenant: &Tenant, share: &Share) -> Result<(), BudgetError> {
        let key = Self::key(tenant);
        for _ in 0..ROUNDS {
            let read = fleet::read::<Reservations>(&self.bucket, &key).await?;
            let now = now_ms();
            let mine = *lock(&share.local);
            let mut next = read.value;
            next.set(&self.worker, mine, now + self.lease_ms(), now);
            if let Written::Done = fleet::write(&self.bucket, &key, &next, read.revision).await? {
                *lock(&share.written) = WrittenShare {
                    nano: mine,
                    at: Some(Instant::now()),
                };
                return Ok(());
            }
        }
        Err(BudgetError::nats(
            "writing",
            &key,
            "too many concurrent writers",
        ))
    }

    /// Renews this worker's shares and writes those that changed without being written,
    /// until `stop`; then gives every share back.
    pub async fn maintain(self: Arc<Self>, stop: CancellationToken) {
        let every = (self.lease / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = stop.cancelled() => break,
            }
            for (tenant, share) in self.due() {
                let _writer = share.writer.lock().await;
                if let Err(err) = self.write_share(&tenant, &share).await {
                    tracing::debug!(%tenant, error = %err, "budget reservation not renewed; retrying");
                }
            }
        }
        let shares: Vec<(String, Arc<Share>)> = lock(&self.tenants)
            .iter()
            .map(|(t, s)| (t.clone(), Arc::clone(s)))
            .collect();
        for (tenant, share) in shares {
            if let Ok(tenant) = Tenant::parse(&tenant) {
                *lock(&share.local) = 0;
                let _ = self.write_share(&tenant, &share).await;
            }
        }
    }

    /// Shares whose bucket value is stale or whose lease is due for renewal.
    fn due(&self) -> Vec<(Tenant, Arc<Share>)> {
        let tenants = lock(&self.tenants);
        tenants
            .iter()
            .filter(|(_, share)| {
                let local = *lock(&share.local);
                let written = *lock(&share.written);
                let renew = written.at.is_none_or(|at| at.elapsed() >= self.lease / 3);
                local != written.nano || (local > 0 && renew)
            })
            .filter_map(|(tenant, share)| Some((Tenant::parse(tenant).ok()?, Arc::clone(share))))
            .collect()
    }
}

/// What live workers have reserved for `tenant` now, from the limits bucket.
pub async fn read_reserved(bucket: &kv::Store, tenant: &Tenant) -> Result<u64, BudgetError> {
    let read = fleet::read::<Reservations>(bucket, &Budgets::key(tenant)).await?;
    Ok(read.value.live(now_ms()))
}

/// Refuses if a hard period's spend plus what is reserved reaches its budget.
fn check(
    budget: &TenantBudget,
    spend: Spend,
    reserved: u64,
    at: Timestamp,
) -> Result<(), Exceeded> {
    for period in BudgetPeriod::ALL {
        let Some(limit) = budget.get(period) else {
            continue;
        };
        let limit_nano = nano_usd(limit.usd);
        let spent = spend.get(period);
        if limit.enforce == Enforce::Hard && spent.saturating_add(reserved) >= limit_nano {
            let retry_after = if spent >= limit_nano {
                period_end(at, period)
            } else {
                IN_FLIGHT_RETRY
            };
            return Err(Exceeded {
                period,
                spent,
                reserved,
                budget: limit_nano,
                retry_after,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use llmq_schemas::BudgetLimit;

    use super::*;

    fn budget(day: Option<(f64, Enforce)>, month: Option<(f64, Enforce)>) -> TenantBudget {
        let limit = |(usd, enforce)| BudgetLimit { usd, enforce };
        TenantBudget {
            day: day.map(limit),
            month: month.map(limit),
        }
    }

    #[test]
    fn hard_periods_refuse_at_spend_plus_reserved_and_say_when_to_retry() {
        let at = Timestamp::parse("2026-12-01T12:00:00Z").unwrap();
        let hard_day = budget(Some((1.0, Enforce::Hard)), Some((0.5, Enforce::Soft)));
        let spend = |day, month| Spend { day, month };
        // The soft month is over; only the hard day refuses.
        assert!(check(&hard_day, spend(900_000_000, 900_000_000), 0, at).is_ok());
        let in_flight = check(&hard_day, spend(900_000_000, 0), 100_000_000, at).unwrap_err();
        assert_eq!(in_flight.period, BudgetPeriod::Day);
        assert_eq!(in_flight.retry_after, IN_FLIGHT_RETRY);
        let spent = check(&hard_day, spend(1_000_000_000, 0), 0, at).unwrap_err();
        assert_eq!(spent.retry_after, Duration::from_secs(12 * 3600));
        assert!(check(&TenantBudget::default(), spend(u64::MAX, u64::MAX), 0, at).is_ok());
    }

    #[test]
    fn ended_leases_do_not_count_and_are_dropped_by_the_next_writer() {
        let mut reservations = Reservations::default();
        reservations.set("a", 300, 2_000, 1_000);
        reservations.set("b", 200, 1_500, 1_000);
        assert_eq!(reservations.live(1_000), 500);
        assert_eq!(reservations.others("a", 1_000), 200);
        assert_eq!(reservations.live(1_600), 300, "b's lease ended");
        reservations.set("c", 1, 3_000, 1_600);
        assert!(!reservations.holders.contains_key("b"));
    }
}
