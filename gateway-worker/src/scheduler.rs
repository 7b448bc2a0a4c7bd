//! Pulling jobs: only as many as this worker can run now.
//!
//! One loop per (model, tier) consumer. The server counts a fetched job as delivered to
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
//! after at most `ack_wait`.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{AckKind, Message};
use llmq_schemas::Tier;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::context::WorkerContext;
use crate::job::{Disposition, apply, process};
use crate::metrics;
use crate::puller::{Pulled, Puller};
use crate::routing::ModelRoute;

/// The worker's job slots.
#[derive(Debug)]
pub struct Capacity {
    all: Arc<Semaphore>,
    batch: Arc<Semaphore>,
}

/// A job slot; released on drop.
#[derive(Debug)]
pub struct Slot {
    _all: OwnedSemaphorePermit,
    _batch: Option<OwnedSemaphorePermit>,
}

impl Capacity {
    pub fn new(max_inflight: usize, batch_share: f64) -> Arc<Self> {
        let batch = ((max_inflight as f64 * batch_share).floor() as usize).max(1);
        Arc::new(Self {
            all: Arc::new(Semaphore::new(max_inflight)),
            batch: Arc::new(Semaphore::new(batch)),
        })
    }

    async fn acquire(&self, tier: Tier) -> Option<Slot> {
        let batch = match tier {
            Tier::Batch => Some(Arc::clone(&self.batch).acquire_owned().await.ok()?),
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
            Tier::Batch => Some(Arc::clone(&self.batch).try_acquire_owned().ok()?),
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

/// Runs one consumer loop until `stops.fetching`.
pub async fn consume(
    ctx: Arc<WorkerContext>,
    model: Arc<ModelRoute>,
    tier: Tier,
    consumer: PullConsumer,
    capacity: Arc<Capacity>,
    tracker: TaskTracker,
    stops: Stops,
) {
    let max_batch = ctx.config.worker.fetch_batch;
    let expires = ctx.config.worker.fetch_expires;
    // How long a pull's answer may take before it is taken for lost.
    let lost_reply = expires + Duration::from_secs(5);
    let mut backoff = Duration::from_millis(100);
    let mut puller = loop {
        match Puller::new(&ctx.nats, ctx.js.clone(), consumer.clone()).await {
            Ok(puller) => break puller,
            Err(err) => {
                tracing::warn!(error = %err, model = %model.name, %tier, "cannot start pulling; retrying");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = stops.fetching.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    };
    let spawn = |message: Message, slot: Slot| {
        tracker.spawn(run_job(
            Arc::clone(&ctx),
            message,
            Arc::clone(&model),
            slot,
            stops.hard.clone(),
        ));
    };
    // Jobs the server said were still queued after the last one it delivered.
    let mut queued: u64 = 0;
    loop {
        // Room first, without holding it.
        let room = tokio::select! {
            room = capacity.wait_for_room(tier) => room,
            () = stops.fetching.cancelled() => false,
        };
        if !room {
            break;
        }
        tokio::select! {
            () = provider_room(&model) => {}
            () = stops.fetching.cancelled() => break,
        }

        // Jobs queued: reserve slots and take that many at once. Queue empty: wait for the
        // next job holding no slot, and take one when it arrives.
        let mut slots = Vec::new();
        let wait = if queued > 0 {
            let provider_room = model
                .providers()
                .iter()
                .map(|p| p.permits.available_permits())
                .sum::<usize>()
                .max(1);
            let want = usize::try_from(queued)
                .unwrap_or(usize::MAX)
                .min(max_batch)
                .min(provider_room);
            while slots.len() < want {
                match capacity.try_acquire(tier) {
                    Some(slot) => slots.push(slot),
                    None => break,
                }
            }
            if slots.is_empty() {
                continue; // another loop took the room
            }
            None
        } else {
            Some(expires)
        };
        let asked = slots.len().max(1);
        if let Err(err) = puller.request(asked, wait).await {
            tracing::warn!(error = %err, model = %model.name, %tier, "pull failed; retrying");
            drop(slots);
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = stops.fetching.cancelled() => break,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
            continue;
        }
        backoff = Duration::from_millis(100);
        let mut received = 0;
        queued = 0;
        while received < asked {
            let message = match puller.next(lost_reply).await {
                Pulled::Message(message) => *message,
                Pulled::Ended | Pulled::Lost => break,
            };
            received += 1;
            queued = message.info().map(|info| info.pending).unwrap_or(0);
            let slot = match slots.pop() {
                Some(slot) => Some(slot),
                None => tokio::select! {
                    slot = capacity.acquire(tier) => slot,
                    () = stops.fetching.cancelled() => None,
                },
            };
            match slot {
                Some(slot) if !stops.fetching.is_cancelled() => spawn(message, slot),
                _ => hand_back(&message, &stops).await,
            }
        }
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

async fn run_job(
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
