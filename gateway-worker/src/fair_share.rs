//! The batch tier's turns between tenants.
//!
//! One FIFO consumer per (model, tier) serves jobs in the order they were queued: a tenant
//! that queued 50,000 batch lines holds every other tenant's batch behind them for as long
//! as they take. So the batch tier has a durable consumer per tenant and model instead
//! (shared by every worker, as the interactive tier's one is), and each worker's batch
//! loop for a model takes turns between the tenants that have jobs queued: a turn is up to
//! `batch_weight × QUANTUM` jobs (a tenant alone takes what the slots allow). Every worker
//! takes its own turns, so the fleet shares each model's batch capacity between tenants by
//! their weights whatever the workers' number.
//!
//! Which tenants have jobs queued comes from the broker: one stream-info request with the
//! model's batch subjects as filter, which answers a count per subject, i.e. per tenant.
//! A worker asks it every [`BUSY_DISCOVERY`] while some tenant has batch jobs for the
//! model, so a tenant that queues behind a large backlog gets its turn within that. While
//! none has, the worker listens on the model's batch subjects (core NATS) and stops at
//! the first job published: one message per idle spell, no request at all, and a new
//! batch starts at once on every idle worker (as the one consumer's long polls did). It
//! still asks every [`IDLE_REDISCOVERY`] `fetch_expires`, for jobs that come back to the
//! queue without a publish (a worker's hand-back, a redelivery). None of this grows with
//! the number of tenants. A tenant leaves the turns when its consumer says it has nothing
//! more queued; its pull inbox is kept for [`KEEP_LEFT`] in case it queues again (a
//! producer publishing slower than the worker runs its jobs leaves and rejoins all the
//! time, and making the consumer and the inbox anew each time cost a third of the
//! throughput with 100 tenants), then dropped: an idle tenant costs a worker nothing, and
//! the server removes its consumer after `consumer_inactive_threshold`.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use futures::StreamExt;
use llmq_runtime::queue_state;
use llmq_schemas::{ModelName, Tenant, Tier};
use tokio::time::Instant;

use crate::context::WorkerContext;
use crate::nats;
use crate::puller::Puller;

/// Jobs per turn for each unit of a tenant's `batch_weight`, when other tenants wait.
pub const QUANTUM: u32 = 16;
/// How often a worker with batch work for a model looks for tenants that queued since.
pub const BUSY_DISCOVERY: Duration = Duration::from_millis(50);
/// How long a tenant that left the turns keeps its pull inbox on this worker.
pub const KEEP_LEFT: Duration = Duration::from_secs(30);
/// How many `fetch_expires` a worker without batch work for a model waits between looks,
/// besides waking on the first job published.
pub const IDLE_REDISCOVERY: u32 = 5;

/// The tenants with batch jobs queued for one model, in turn order.
#[derive(Debug)]
pub struct TenantTurns {
    model: ModelName,
    turns: VecDeque<Turn>,
    /// Tenants that left the turns, and when: rejoining reuses their inbox.
    left: HashMap<Tenant, (Turn, Instant)>,
    discovered_at: Option<Instant>,
    /// The model's batch subjects, listened to while no tenant has jobs queued.
    wake: Option<async_nats::Subscriber>,
}

/// One tenant's place in the turns.
#[derive(Debug)]
pub struct Turn {
    pub tenant: Tenant,
    pub puller: Puller,
    /// Jobs it may still take in this turn.
    credit: u32,
    weight: u32,
}

impl TenantTurns {
    pub fn new(model: ModelName) -> Self {
        Self {
            model,
            turns: VecDeque::new(),
            left: HashMap::new(),
            discovered_at: None,
            wake: None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.turns.is_empty()
    }

    /// Whether to ask the broker again which tenants have jobs queued (while some have).
    pub fn discovery_due(&self) -> bool {
        self.discovered_at
            .is_none_or(|at| at.elapsed() >= BUSY_DISCOVERY)
    }

    /// Starts listening on the model's batch subjects, unless it already does.
    pub async fn listen(&mut self, ctx: &WorkerContext) -> Result<(), String> {
        if self.wake.is_none() {
            let subjects = ctx.subjects.jobs_filter(&self.model, Tier::Batch);
            let wake = ctx.nats.subscribe(subjects).await;
            self.wake = Some(wake.map_err(|err| err.to_string())?);
        }
        Ok(())
    }

    /// Stops listening: the turns have work, and every job published would be a copy.
    pub fn stop_listening(&mut self) {
        self.wake = None;
    }

    /// Waits for a job to be published on the model's batch subjects, at most `wait`.
    pub async fn woken(&mut self, wait: Duration) {
        let Some(wake) = &mut self.wake else {
            return tokio::time::sleep(wait).await;
        };
        let _ = tokio::time::timeout(wait, wake.next()).await;
    }

    /// Asks the broker which tenants have batch jobs queued for the model and gives each
    /// that is not taking turns yet a place at the end.
    pub async fn discover(&mut self, ctx: &WorkerContext) -> Result<(), String> {
        self.discovered_at = Some(Instant::now());
        let queued = queue_state::tenants_with_jobs(&ctx.setup.jobs, &ctx.subjects, &self.model);
        for tenant in queued.await? {
            if !self.turns.iter().any(|turn| turn.tenant == tenant) {
                let turn = match self.left.remove(&tenant) {
                    Some((turn, _)) => turn,
                    None => self.join(ctx, tenant).await?,
                };
                self.turns.push_back(turn);
            }
        }
        self.left.retain(|_, (_, at)| at.elapsed() < KEEP_LEFT);
        Ok(())
    }

    /// The tenant's consumer (made if the server has none) and a pull inbox for it.
    async fn join(&self, ctx: &WorkerContext, tenant: Tenant) -> Result<Turn, String> {
        let config = nats::tenant_consumer_config(
            &ctx.subjects,
            &self.model,
            Tier::Batch,
            &tenant,
            &ctx.config.jetstream,
        );
        let consumer = nats::ensure_consumer(&ctx.setup.jobs, config)
            .await
            .map_err(|err| err.to_string())?;
        let puller = Puller::new(&ctx.nats, ctx.js.clone(), consumer)
            .await
            .map_err(|err| err.to_string())?;
        let weight = ctx.registry.batch_weight(&tenant);
        tracing::debug!(model = %self.model, %tenant, weight, "tenant joins the batch turns");
        Ok(Turn {
            tenant,
            puller,
            credit: weight.saturating_mul(QUANTUM),
            weight,
        })
    }

    /// The tenant whose turn it is, and how many jobs it may take now.
    pub fn current(&mut self) -> Option<(&mut Turn, u32)> {
        let alone = self.turns.len() == 1;
        let turn = self.turns.front_mut()?;
        let may = if alone { u32::MAX } else { turn.credit };
        Some((turn, may))
    }

    /// After the current tenant's pull: it took `taken` jobs and its consumer has
    /// `queued` more. A tenant with nothing left leaves the turns; one that used its
    /// credit goes to the end with a new one.
    pub fn took(&mut self, taken: u32, queued: u64) {
        let Some(mut turn) = self.turns.pop_front() else {
            return;
        };
        if taken == 0 || queued == 0 {
            turn.credit = turn.weight.saturating_mul(QUANTUM);
            self.left
                .insert(turn.tenant.clone(), (turn, Instant::now()));
            return;
        }
        turn.credit = turn.credit.saturating_sub(taken);
        if turn.credit == 0 {
            turn.credit = turn.weight.saturating_mul(QUANTUM);
            self.turns.push_back(turn);
        } else {
            self.turns.push_front(turn);
        }
    }

    /// Drops the current tenant (its pull failed: its consumer may have been removed);
    /// the next discovery brings it back if it still has jobs queued.
    pub fn drop_current(&mut self) {
        self.turns.pop_front();
    }
}
