//! Starting a worker, step by step: connect, set up the streams, build the routes, then
//! start what runs beside the jobs and, last, the consumers.
//!
//! The order matters: cancels already in the bucket are loaded before any job is fetched
//! (a job picked up earlier could miss its cancel), and the worker announces itself in
//! the catalog only once it consumes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use llmq_schemas::{Subjects, Timestamp};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::consumers::{self, Consumers};
use super::{RunError, RunningWorker, Tasks, WatchedKeys, wait};
use crate::admin::{self, Health};
use llmq_runtime::budget::{BudgetStores, Budgets};
use llmq_runtime::limits::Limiter;
use llmq_runtime::tenants::{Mode, Registry};

use crate::cancel::CancelRegistry;
use crate::config::{self, Config};
use crate::consume::{Capacity, Stops};
use crate::context::{Live, WorkerContext};
use crate::pricing::PriceTable;
use crate::retry::RetryPolicy;
use crate::routing::{Cooldowns, Router};
use crate::{catalog, dlq, metrics, nats, sweeper};

impl RunningWorker {
    /// Validates `config`, connects, sets up streams and consumers, and returns once the
    /// worker is consuming and in the live catalog.
    pub async fn start(config: Config) -> Result<RunningWorker, RunError> {
        config::validate(&config)?;
        let metrics = metrics::install()?;
        let tasks = Tasks::new(&config);
        let ctx = Arc::new(context(config, &tasks).await?);
        let keys = WatchedKeys::start(&ctx, &tasks);
        let admin_addr = serve_admin(&ctx, &tasks, metrics).await?;
        load_cancels(&ctx, &tasks).await;
        let live = Live::new(Arc::clone(&ctx));
        start_consumers(&live, &tasks).await?;
        let started_at = announce(&live, &tasks).await;
        tasks.health.ready.store(true, Ordering::Relaxed);
        tracing::info!(
            worker_id = %ctx.worker_id,
            models = ctx.router.models().count(),
            providers = ctx.router.providers().count(),
            admin = ?admin_addr,
            "worker started"
        );
        Ok(RunningWorker {
            worker_id: ctx.worker_id.clone(),
            live,
            started_at,
            admin_addr,
            tasks,
            keys: std::sync::Mutex::new(keys),
            reloading: tokio::sync::Mutex::new(()),
        })
    }
}

/// What every job shares: the connection, the streams, the routes, the registry.
async fn context(config: Config, tasks: &Tasks) -> Result<WorkerContext, RunError> {
    let config = Arc::new(config);
    let worker_id = config.worker.id.clone().unwrap_or_else(default_worker_id);
    let subjects = Subjects::new(&config.jetstream.prefix).map_err(|err| {
        let mut problems = llmq_runtime::Problems::default();
        problems.add("jetstream.prefix", err);
        problems
    })?;
    let nats = wait::connect(&config, |options| {
        options
            .name(format!("llmq-worker {worker_id}"))
            .event_callback(|event| async move {
                tracing::info!(%event, "nats connection event");
            })
    })
    .await?;
    let js = async_nats::jetstream::new(nats.clone());
    let setup = wait::setup(&config, &js, &subjects).await?;
    let registry = registry(&setup, config.tenants.mode, tasks).await?;
    let limiter = Limiter::new(setup.limits.clone(), worker_id.clone(), config.limits.lease);
    tasks
        .services
        .spawn(Arc::clone(&limiter).maintain(tasks.background.clone()));
    tasks.services.spawn(crate::metrics::follow_limits(
        Arc::clone(&limiter),
        tasks.background.clone(),
    ));
    let budgets = Budgets::new(
        BudgetStores {
            js: js.clone(),
            spend: setup.spend.clone(),
            bucket: setup.limits.clone(),
            subjects: subjects.clone(),
            publish: llmq_runtime::Budget::Time(
                config.jetstream.ack_wait.max(Duration::from_secs(10)),
            ),
        },
        worker_id.clone(),
        config.limits.lease,
    );
    tasks
        .services
        .spawn(Arc::clone(&budgets).maintain(tasks.background.clone()));
    Ok(WorkerContext {
        worker_id,
        subjects,
        nats,
        js,
        router: Router::build(&config)?,
        cooldowns: Cooldowns::new(config.cooldown.clone()),
        retry: RetryPolicy::new(config.retry.clone()),
        prices: PriceTable::new(&config),
        cancels: CancelRegistry::new(config.jetstream.cancel_ttl),
        registry,
        limiter,
        budgets,
        batch_window: Arc::clone(&tasks.capacity.batch),
        setup,
        config,
    })
}

/// The tenant registry, read whole and then followed (not at all in open mode).
async fn registry(
    setup: &nats::Setup,
    mode: Mode,
    tasks: &Tasks,
) -> Result<Arc<Registry>, RunError> {
    if mode == Mode::Open {
        return Ok(Registry::open());
    }
    let stop = tasks.background.clone();
    let (registry, following) = Registry::start(setup.tenants.clone(), mode, stop).await?;
    tracing::info!(
        tenants = registry.len(),
        enforced = registry.is_enforced(),
        ?mode,
        "tenant registry loaded"
    );
    tasks.services.spawn(following);
    Ok(registry)
}

impl Tasks {
    fn new(config: &Config) -> Tasks {
        let worker = &config.worker;
        Tasks {
            health: Arc::new(Health::default()),
            stops: Stops {
                fetching: CancellationToken::new(),
                hard: CancellationToken::new(),
            },
            consumers: Consumers::default(),
            jobs: TaskTracker::new(),
            services: TaskTracker::new(),
            background: CancellationToken::new(),
            capacity: Capacity::new(worker.max_inflight, worker.batch_share),
        }
    }
}

async fn serve_admin(
    ctx: &WorkerContext,
    tasks: &Tasks,
    metrics: PrometheusHandle,
) -> Result<Option<SocketAddr>, RunError> {
    let Some(addr) = ctx.config.admin.listen else {
        return Ok(None);
    };
    let health = Arc::clone(&tasks.health);
    let stop = tasks.background.clone();
    let (bound, _task) = admin::serve(addr, health, metrics, ctx.nats.clone(), stop)
        .await
        .map_err(|source| RunError::Admin { addr, source })?;
    Ok(Some(bound))
}

/// Follows the cancel bucket, and waits (up to 10 s) until the cancels already in it
/// are loaded.
async fn load_cancels(ctx: &WorkerContext, tasks: &Tasks) {
    let (ready, loaded) = tokio::sync::oneshot::channel();
    let bucket = ctx.setup.cancels.clone();
    let watch = Arc::clone(&ctx.cancels).watch(bucket, ready, tasks.background.clone());
    tasks.services.spawn(watch);
    if tokio::time::timeout(Duration::from_secs(10), loaded)
        .await
        .is_err()
    {
        tracing::warn!("cancel requests not loaded within 10s; starting anyway");
    }
}

/// One consumer loop per (model, tier).
async fn start_consumers(live: &Arc<Live>, tasks: &Tasks) -> Result<(), RunError> {
    let ctx = live.current();
    for model in ctx.router.models() {
        let made = consumers::ensure(&ctx, &model.name).await?;
        let loops = consumers::spawn(live, &model.name, made, tasks);
        tasks.consumers.insert(&model.name, loops);
    }
    Ok(())
}

/// Joins the live catalog and starts the side tasks: heartbeat, sweeper, advisories.
/// The budget report and the advisory listener use only what a reload never changes.
async fn announce(live: &Arc<Live>, tasks: &Tasks) -> Timestamp {
    let started_at = Timestamp::now();
    let ctx = live.current();
    if let Err(err) = catalog::publish(&ctx, started_at).await {
        tracing::warn!(error = %err, "catalog entry not written");
    }
    let background = tasks.background.clone();
    let services = &tasks.services;
    services.spawn(catalog::heartbeat(
        Arc::clone(live),
        started_at,
        background.clone(),
    ));
    services.spawn(sweeper::run(
        Arc::clone(live),
        tasks.stops.fetching.clone(),
        tasks.stops.hard.clone(),
    ));
    services.spawn(crate::budget_metrics::report(
        Arc::clone(&ctx),
        background.clone(),
    ));
    services.spawn(crate::queue_gauges::run(
        Arc::clone(live),
        background.clone(),
    ));
    services.spawn(dlq::watch_max_deliveries(ctx, background));
    started_at
}

/// `<hostname>-<pid>-<random>`, the hostname cut to subject-safe characters.
fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_owned());
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &suffix[..6])
}
