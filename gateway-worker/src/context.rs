//! What every job task shares: built at start-up, read-only afterwards (interior state
//! such as cooldowns and cancels guards itself).
//!
//! A config reload builds the next [`WorkerContext`] (new routes, prices, retry policy,
//! cooldowns; the same connection, streams, registry and limits) and swaps it into
//! [`Live`] whole. A job takes the context once, when it starts, and keeps it to its end:
//! jobs in flight finish on the config they started with. Long-running tasks (consumer
//! loops, catalog heartbeat, sweeper) hold the [`Live`] and read it each round.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_nats::jetstream::{self, publish::PublishAck};
use llmq_schemas::Subjects;

use llmq_runtime::budget::Budgets;
use llmq_runtime::limits::Limiter;
use llmq_runtime::tenants::Registry;

use crate::batch_window::BatchWindow;
use crate::cancel::CancelRegistry;
use crate::config::Config;
use crate::metrics;
use crate::nats::{self, PublishFailure, Setup, Store};
use crate::pricing::PriceTable;
use crate::retry::RetryPolicy;
use crate::routing::{Cooldowns, RouteError, Router};

#[derive(Debug)]
pub struct WorkerContext {
    pub config: Arc<Config>,
    pub worker_id: String,
    pub subjects: Subjects,
    pub nats: async_nats::Client,
    pub js: jetstream::Context,
    pub setup: Setup,
    pub router: Router,
    pub cooldowns: Cooldowns,
    pub retry: RetryPolicy,
    pub prices: PriceTable,
    pub cancels: Arc<CancelRegistry>,
    /// Who may use what (open when the registry is not enforced).
    pub registry: Arc<Registry>,
    /// The fleet-wide limits, as this worker enforces them.
    pub limiter: Arc<Limiter>,
    /// Tenants' budgets: spend and this worker's reservations.
    pub budgets: Arc<Budgets>,
    /// The batch tier's window, which interactive jobs' waits narrow.
    pub batch_window: Arc<BatchWindow>,
}

impl WorkerContext {
    /// The context for `config` after a reload: new routes (unchanged providers kept, see
    /// [`Router::rebuild`]), prices, retry policy and cooldowns, everything else shared.
    /// A deployment the new routes keep (same model, upstream model and provider
    /// settings) keeps its cooldown.
    pub fn reloaded(&self, config: Config) -> Result<WorkerContext, RouteError> {
        let router = Router::rebuild(&config, &self.router, &self.config)?;
        let carried = router.carried_deployments(&self.router);
        let cooldowns = Cooldowns::carried(config.cooldown.clone(), &self.cooldowns, &carried);
        Ok(WorkerContext {
            worker_id: self.worker_id.clone(),
            subjects: self.subjects.clone(),
            nats: self.nats.clone(),
            js: self.js.clone(),
            setup: self.setup.clone(),
            router,
            cooldowns,
            retry: RetryPolicy::new(config.retry.clone()),
            prices: PriceTable::new(&config),
            cancels: Arc::clone(&self.cancels),
            registry: Arc::clone(&self.registry),
            limiter: Arc::clone(&self.limiter),
            budgets: Arc::clone(&self.budgets),
            batch_window: Arc::clone(&self.batch_window),
            config: Arc::new(config),
        })
    }

    /// How long a durable publish (outcome, usage, dead letter) keeps retrying through a
    /// broker outage before the job is handed back instead.
    pub fn publish_window(&self) -> Duration {
        self.config.jetstream.ack_wait.max(Duration::from_secs(10))
    }

    /// Publishes `message` to one of llmq's streams and waits for its PubAck, retrying
    /// with the same message id for up to the publish window.
    pub async fn store(&self, message: Store<'_>) -> Result<PublishAck, PublishFailure> {
        nats::store(&self.js, self.publish_window(), message).await
    }

    /// The `model` label of a metric about a job for `model`: the name itself when this
    /// worker's config has it, else [`metrics::OTHER_MODEL`]. A job names its model
    /// freely, so labels from job names would grow without bound.
    pub fn model_label(&self, model: &str) -> &str {
        self.router
            .model(model)
            .map_or(metrics::OTHER_MODEL, |route| route.name.as_str())
    }
}

/// The context new jobs start with; replaced whole by a config reload.
#[derive(Debug)]
pub struct Live(ArcSwap<WorkerContext>);

impl Live {
    pub fn new(ctx: Arc<WorkerContext>) -> Arc<Live> {
        Arc::new(Live(ArcSwap::new(ctx)))
    }

    /// The context now: a job holds on to it to its end.
    pub fn current(&self) -> Arc<WorkerContext> {
        self.0.load_full()
    }

    /// From now on, new jobs start with `ctx`.
    pub fn replace(&self, ctx: Arc<WorkerContext>) {
        self.0.store(ctx);
    }
}
