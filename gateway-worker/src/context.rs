//! What every job task shares: built once at start-up, read-only afterwards (interior
//! state such as cooldowns and cancels guards itself).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use llmq_schemas::Subjects;

use llmq_runtime::budget::Budgets;
use llmq_runtime::limits::Limiter;
use llmq_runtime::tenants::Registry;

use crate::cancel::CancelRegistry;
use crate::config::Config;
use crate::metrics;
use crate::nats::Setup;
use crate::pricing::PriceTable;
use crate::retry::RetryPolicy;
use crate::routing::{Cooldowns, Router};

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
}

impl WorkerContext {
    /// How long a durable publish (outcome, usage, dead letter) keeps retrying through a
    /// broker outage before the job is handed back instead.
    pub fn publish_window(&self) -> Duration {
        self.config.jetstream.ack_wait.max(Duration::from_secs(10))
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
