//! Pulling jobs: only as many as this worker can run now.
//!
//! One loop per (model, tier). The interactive tier's loop pulls from the one consumer of
//! the (model, tier), first come first served; the batch tier's takes turns between the
//! tenants that have jobs queued, each with a consumer of its own ([`crate::fair_share`]). The
//! server counts a fetched job as delivered to
//! this worker, so a loop never asks for more jobs than it has free slots for: an idle
//! worker does not hoard jobs another worker could run. Two modes:
//! - jobs are queued: reserve free slots (up to `fetch_batch`, growing while batches come
//!   back full), take that many with a no-wait fetch, release the slots not needed;
//! - the queue is empty: long-poll for one job holding no slot, and take a slot when it
//!   arrives. (Holding a slot through a long poll would let an idle consumer starve the
//!   others: with `max_inflight = 1`, an empty batch tier would block the interactive one.)
//!
//! Batch-tier jobs also need a permit of their own, capped at a share of the worker, so
//! interactive jobs always find room.
//!
//! Each job runs in a task that owns its slot and keeps the message alive with
//! in-progress acks every third of `ack_wait`; a job whose worker died is redelivered
//! after at most `ack_wait`. A job starts on the worker's context as it is then (its
//! model's route included) and keeps it to its end, whatever a config reload swaps in
//! meanwhile.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{AckKind, Message};
use llmq_runtime::backoff::{Backoff, Delays};
use llmq_schemas::{ModelName, Tier};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::batch_window::{BatchPermit, BatchWindow};
use crate::context::{Live, WorkerContext};
use crate::fair_share::{BUSY_DISCOVERY, IDLE_REDISCOVERY, TenantTurns};
use crate::job::{Disposition, apply, process};
use crate::metrics;
use crate::puller::{Pulled, Puller};
use crate::routing::ModelRoute;

/// The worker's job slots.
#[derive(Debug)]
pub struct Capacity {
    all: Arc<Semaphore>,
    /// The batch tier's share, narrowed while interactive jobs wait.
    pub batch: Arc<BatchWindow>,
}

/// A job slot; released on drop.
#[derive(Debug)]
pub struct Slot {
    _all: OwnedSemaphorePermit,
    _batch: Option<BatchPermit>,
}

impl Capacity {
    pub fn new(max_inflight: usize, batch_share: f64) -> Arc<Self> {
        let batch = (max_inflight as f64 * batch_share).floor() as usize;
        Arc::new(Self {
            all: Arc::new(Semaphore::new(max_inflight)),
            batch: BatchWindow::new(batch),
        })
    }

    async fn acquire(&self, tier: Tier) -> Option<Slot> {
        let batch = match tier {
            Tier::Batch => Some(self.batch.acquire().await?),
            Tier::Interactive => None,
        };
        let all = Arc::clone(&self.all).acquire_owned().await.ok()?;
        Some(Slot {
            _all: all,
            _batch: batch,
        })
    }

    /// Waits until a slot is free, without taking it. False if the worker is closing.
    async fn wait_for_room(&self, tier: Tier) -> bool {
        self.acquire(tier).await.is_some()
    }

    fn try_acquire(&self, tier: Tier) -> Option<Slot> {
        let batch = match tier {
            Tier::Batch => Some(self.batch.try_acquire()?),
            Tier::Interactive => None,
        };
        let all = Arc::clone(&self.all).try_acquire_owned().ok()?;
        Some(Slot {
            _all: all,
            _batch: batch,
        })
    }

    /// Slots in use.
    pub fn in_use(&self, max_inflight: usize) -> usize {
        max_inflight - self.all.available_permits()
    }
}

/// Stops for the loops and the jobs.
#[derive(Debug, Clone)]
pub struct Stops {
    /// No more fetching; jobs already fetched but not started are handed back.
    pub fetching: CancellationToken,
    /// The grace period is over: running jobs are handed back too.
    pub hard: CancellationToken,
}

/// Where a consumer loop's jobs run: the worker's job slots and tracker, and the
/// model's own tracker (a removed model's in-flight jobs are waited for).
#[derive(Debug, Clone)]
pub struct JobTasks {
    pub capacity: Arc<Capacity>,
    pub all: TaskTracker,
    pub model: TaskTracker,
}

/// Where a loop's jobs come from.
#[derive(Debug)]
pub enum Source {
    /// The (model, tier)'s one consumer, first come first served: the interactive tier.
    Shared(Box<PullConsumer>),
    /// A consumer per tenant, taken in turns: the batch tier ([`crate::fair_share`]).
    PerTenant,
}

/// Runs one consumer loop for `model` until `stops.fetching`, or until the live config
/// no longer has the model.
pub async fn consumer_loop(
    live: Arc<Live>,
    model: ModelName,
    tier: Tier,
    source: Source,
    jobs: JobTasks,
    stops: Stops,
) {
    let mut consumer = Consumer {
        live,
        model,
        tier,
        jobs,
        stops,
        backoff: PULL_BACKOFF.delays(),
    };
    match source {
        Source::Shared(shared) => {
            let ctx = consumer.live.current();
            let started = start_puller(&ctx, &consumer, *shared).await;
            drop(ctx);
            if let Some(puller) = started {
                consumer.pull_until_stopped(puller).await;
            }
        }
        Source::PerTenant => {
            let turns = TenantTurns::new(consumer.model.clone());
            consumer.take_turns(turns).await;
        }
    }
}

/// Growing waits between failed pulls: 100 ms doubling to 5 s, reset on success.
const PULL_BACKOFF: Backoff = Backoff::doubling(Duration::from_millis(100), Duration::from_secs(5));

async fn start_puller(
    ctx: &WorkerContext,
    loop_: &Consumer,
    shared: PullConsumer,
) -> Option<Puller> {
    let mut backoff = PULL_BACKOFF.delays();
    loop {
        match Puller::new(&ctx.nats, ctx.js.clone(), shared.clone()).await {
            Ok(puller) => return Some(puller),
            Err(err) => {
                tracing::warn!(error = %err, model = %loop_.model, tier = %loop_.tier, "cannot start pulling; retrying");
                if !backoff.wait(&loop_.stops.fetching).await {
                    return None;
                }
            }
        }
    }
}

/// One (model, tier) consumer loop and what it needs.
struct Consumer {
    live: Arc<Live>,
    model: ModelName,
    tier: Tier,
    jobs: JobTasks,
    stops: Stops,
    backoff: Delays,
}

/// What one pull brought.
struct Received {
    /// Jobs taken.
    taken: u32,
    /// Jobs the server said were still queued after the last one it delivered.
    queued: u64,
}

impl Consumer {
    async fn pull_until_stopped(&mut self, mut puller: Puller) {
        // Jobs the server said were still queued after the last one it delivered.
        let mut queued: u64 = 0;
        while self.wait_for_room().await {
            // Jobs queued: reserve slots and take that many at once. Queue empty: wait for
            // the next job holding no slot, and take one when it arrives.
            let (slots, wait) = if queued > 0 {
                let slots = self.reserve(queued);
                if slots.is_empty() {
                    continue; // another loop took the room
                }
                (slots, None)
            } else {
                (
                    Vec::new(),
                    Some(self.live.current().config.worker.fetch_expires),
                )
            };
            let asked = slots.len().max(1);
            if let Err(err) = puller.request(asked, wait).await {
                tracing::warn!(error = %err, model = %self.model, tier = %self.tier, "pull failed; retrying");
                drop(slots);
                if !self.backoff.wait(&self.stops.fetching).await {
                    break;
                }
                continue;
            }
            self.backoff.reset();
            queued = self.receive(&mut puller, asked, slots).await.queued;
        }
    }

    /// The batch tier: turns between the tenants with jobs queued, each pull from the
    /// consumer of the tenant whose turn it is, at most as many jobs as its turn has left.
    async fn take_turns(&mut self, mut turns: TenantTurns) {
        while self.wait_for_room().await {
            if turns.is_empty() {
                if !self.wait_for_work(&mut turns).await {
                    break;
                }
                continue;
            }
            if turns.discovery_due() && !self.discover(&mut turns).await {
                break;
            }
            let Some((turn, may)) = turns.current() else {
                continue;
            };
            let slots = self.reserve(u64::from(may));
            if slots.is_empty() {
                continue; // another loop took the room
            }
            let asked = slots.len();
            if let Err(err) = turn.puller.request(asked, None).await {
                tracing::warn!(error = %err, model = %self.model, tenant = %turn.tenant, "batch pull failed; the tenant's turn ends");
                turns.drop_current();
                continue;
            }
            let received = self.receive(&mut turn.puller, asked, slots).await;
            turns.took(received.taken, received.queued);
        }
    }

    /// Asks which tenants have jobs queued. False when fetching stops.
    async fn discover(&mut self, turns: &mut TenantTurns) -> bool {
        let ctx = self.live.current();
        match turns.discover(&ctx).await {
            Ok(()) => {
                self.backoff.reset();
                true
            }
            Err(err) => {
                tracing::warn!(error = %err, model = %self.model, "cannot read which tenants have batch jobs queued; retrying");
                self.backoff.wait(&self.stops.fetching).await
            }
        }
    }

    /// No tenant takes turns: listens on the model's batch subjects (first, so no job
    /// published meanwhile is missed), looks, and if nothing is queued waits for a job to
    /// be published or for the next look. False when fetching stops.
    async fn wait_for_work(&mut self, turns: &mut TenantTurns) -> bool {
        let ctx = self.live.current();
        if let Err(err) = turns.listen(&ctx).await {
            tracing::warn!(error = %err, model = %self.model, "cannot listen for batch jobs; retrying");
            return self.backoff.wait(&self.stops.fetching).await;
        }
        // Looked a moment ago (its tenants had jobs in flight, none queued): not again
        // before the busy interval, unless a job is published meanwhile.
        if !turns.discovery_due() {
            tokio::select! {
                () = turns.woken(BUSY_DISCOVERY) => {}
                () = self.stops.fetching.cancelled() => return false,
            }
        }
        if !self.discover(turns).await {
            return false;
        }
        if !turns.is_empty() {
            turns.stop_listening();
            return true;
        }
        let wait = ctx.config.worker.fetch_expires * IDLE_REDISCOVERY;
        tokio::select! {
            () = turns.woken(wait) => true,
            () = self.stops.fetching.cancelled() => false,
        }
    }

    /// The model's route in the live config; `None` once a reload removed it.
    fn route(&self) -> Option<Arc<ModelRoute>> {
        self.live
            .current()
            .router
            .model(self.model.as_str())
            .cloned()
    }

    /// Waits until this worker has a free slot for the tier and one of the model's
    /// providers a free request slot, without taking either. False when fetching stops.
    async fn wait_for_room(&self) -> bool {
        if !self.wait_for_limits().await {
            return false;
        }
        let room = tokio::select! {
            room = self.jobs.capacity.wait_for_room(self.tier) => room,
            () = self.stops.fetching.cancelled() => false,
        };
        let Some(route) = self.route().filter(|_| room) else {
            return false;
        };
        tokio::select! {
            () = provider_room(&route) => true,
            () = self.stops.fetching.cancelled() => false,
        }
    }

    /// Pulls nothing more while this worker already has as many jobs waiting for a fleet
    /// limit as one pull brings: the rest stay in the queue, undelivered (no delivery
    /// counted, no nak loop), until capacity returns. False when fetching stops.
    async fn wait_for_limits(&self) -> bool {
        let ctx = self.live.current();
        let most = ctx.config.worker.fetch_batch.max(1);
        while ctx.limiter.waiting() >= most {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
                () = self.stops.fetching.cancelled() => return false,
            }
        }
        true
    }

    /// Slots for up to `queued` jobs, as many as are free (and the model's providers
    /// could take), at most `fetch_batch`.
    fn reserve(&self, queued: u64) -> Vec<Slot> {
        let ctx = self.live.current();
        let provider_room = ctx
            .router
            .model(self.model.as_str())
            .map(|route| route.providers())
            .unwrap_or_default()
            .iter()
            .map(|p| p.permits.available_permits())
            .sum::<usize>()
            .max(1);
        let want = usize::try_from(queued)
            .unwrap_or(usize::MAX)
            .min(ctx.config.worker.fetch_batch)
            .min(provider_room);
        let mut slots = Vec::with_capacity(want);
        while slots.len() < want {
            match self.jobs.capacity.try_acquire(self.tier) {
                Some(slot) => slots.push(slot),
                None => break,
            }
        }
        slots
    }

    /// Takes up to `asked` jobs from the pull's answer, each into a task with a slot.
    async fn receive(
        &mut self,
        puller: &mut Puller,
        asked: usize,
        mut slots: Vec<Slot>,
    ) -> Received {
        // How long a pull's answer may take before it is taken for lost.
        let lost_reply = self.live.current().config.worker.fetch_expires + Duration::from_secs(5);
        let mut received = Received {
            taken: 0,
            queued: 0,
        };
        for _ in 0..asked {
            let message = match puller.next(lost_reply).await {
                Pulled::Message(message) => *message,
                Pulled::Ended | Pulled::Lost => break,
            };
            received.taken += 1;
            received.queued = message.info().map(|info| info.pending).unwrap_or(0);
            let slot = match slots.pop() {
                Some(slot) => Some(slot),
                None => tokio::select! {
                    slot = self.jobs.capacity.acquire(self.tier) => slot,
                    () = self.stops.fetching.cancelled() => None,
                },
            };
            let ctx = self.live.current();
            let route = ctx.router.model(self.model.as_str()).cloned();
            match (slot, route) {
                (Some(slot), Some(route)) if !self.stops.fetching.is_cancelled() => {
                    self.spawn(ctx, message, route, slot);
                }
                _ => hand_back(&message, &self.stops).await,
            }
        }
        received
    }

    /// Runs the job on `ctx`, the context as it is now, to its end.
    fn spawn(&self, ctx: Arc<WorkerContext>, message: Message, route: Arc<ModelRoute>, slot: Slot) {
        let job = job_task(ctx, message, route, slot, self.stops.hard.clone());
        self.jobs.all.spawn(self.jobs.model.track_future(job));
    }
}

/// A job fetched but not started: back to the queue for another worker, now.
async fn hand_back(message: &Message, stops: &Stops) {
    let reason = if stops.fetching.is_cancelled() {
        "shutdown"
    } else {
        "over_capacity"
    };
    apply(
        message,
        Disposition::Requeue {
            delay: None,
            reason,
        },
    )
    .await;
}

/// Waits until one of the model's providers has a free request slot.
async fn provider_room(model: &ModelRoute) {
    let providers = model.providers();
    if providers.iter().any(|p| p.permits.available_permits() > 0) {
        return;
    }
    let waits = providers
        .iter()
        .map(|p| Box::pin(Arc::clone(&p.permits).acquire_owned()));
    let (_permit, _, _) = futures::future::select_all(waits).await;
}

/// One job's task: processes it, keeping it alive with in-progress acks, applies the
/// disposition, and gives its slot back.
async fn job_task(
    ctx: Arc<WorkerContext>,
    message: Message,
    model: Arc<ModelRoute>,
    slot: Slot,
    hard_stop: CancellationToken,
) {
    metrics::jobs_in_flight(1.0);
    let every = ctx.config.jetstream.ack_wait / 3;
    let disposition = tokio::select! {
        disposition = process(&ctx, &message, Some(&model), &hard_stop) => disposition,
        () = keep_alive(&message, every) => Disposition::Requeue { delay: None, reason: "keep_alive_ended" },
    };
    apply(&message, disposition).await;
    metrics::jobs_in_flight(-1.0);
    drop(slot);
}

/// Tells the server the job is still being worked on, so a long generation is not
/// redelivered to another worker. Never returns.
async fn keep_alive(message: &Message, every: Duration) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        ticker.tick().await;
        if let Err(err) = message.ack_with(AckKind::Progress).await {
            tracing::debug!(error = %err, "in-progress ack not sent");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn failed_pulls_wait_100_ms_doubling_to_5_s_and_start_over_after_a_success() {
        let stop = CancellationToken::new();
        let mut backoff = PULL_BACKOFF.delays();
        let start = tokio::time::Instant::now();
        let mut waited = Vec::new();
        for _ in 0..8 {
            let before = tokio::time::Instant::now();
            assert!(backoff.wait(&stop).await);
            waited.push(before.elapsed().as_millis());
        }
        assert_eq!(waited, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        backoff.reset();
        let before = tokio::time::Instant::now();
        assert!(backoff.wait(&stop).await);
        assert_eq!(before.elapsed(), Duration::from_millis(100));
        stop.cancel();
        assert!(!backoff.wait(&stop).await, "a stop ends the wait");
        assert_eq!(start.elapsed(), Duration::from_millis(16_400));
    }
}
