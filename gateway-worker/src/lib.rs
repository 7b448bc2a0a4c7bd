//! The llmq gateway worker.
//!
//! Holds the provider keys, consumes chat-completion jobs from JetStream, routes each
//! logical model to its deployments with retries and fallbacks, streams results back and
//! records usage. The binary and the tests call [`run`] the same way, and stop it the
//! same way: by completing the `shutdown` future.

pub mod admin;
pub mod cancel;
pub mod catalog;
pub mod config;
pub mod context;
pub mod dlq;
pub mod job;
pub mod metrics;
pub mod nats;
pub mod pricing;
pub mod providers;
pub mod puller;
pub mod retry;
pub mod routing;
pub mod scheduler;
pub mod sweeper;
pub mod telemetry;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use llmq_schemas::{Subjects, Tier, Timestamp};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::Health;
use crate::cancel::CancelRegistry;
use crate::config::Config;
use crate::context::WorkerContext;
use crate::pricing::PriceTable;
use crate::retry::RetryPolicy;
use crate::routing::{Cooldowns, Router};
use crate::scheduler::{Capacity, Stops};

/// Why the worker could not run. Each maps to its own exit code in the binary.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("invalid config:\n{0}")]
    Config(String),
    #[error(transparent)]
    Connect(#[from] llmq_runtime::ConnectError),
    #[error(transparent)]
    Setup(#[from] nats::SetupError),
    /// The admin endpoint cannot listen on `admin.listen`: most often a second worker on
    /// the same host with the same config.
    #[error(
        "admin endpoint: cannot listen on {addr} (admin.listen): {source}; to run several \
         workers on one host, give each its own admin.listen (LLMQ__ADMIN__LISTEN=127.0.0.1:9465) \
         or port 0 (admin.listen = \"127.0.0.1:0\")"
    )]
    Admin {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("metrics: {0}")]
    Metrics(String),
}

/// Facts about a worker that has started, for tests and logs.
#[derive(Debug, Clone)]
pub struct Started {
    pub worker_id: String,
    /// Where `/metrics`, `/healthz` and `/readyz` are served, if enabled.
    pub admin_addr: Option<SocketAddr>,
}

/// Runs the worker until `shutdown` completes, then drains: stops fetching, lets
/// in-flight jobs finish within `worker.shutdown_grace`, hands the rest back.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    run_with(config, shutdown, |_| {}).await
}

/// [`run`], calling `on_started` once the worker is consuming.
pub async fn run_with(
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
    on_started: impl FnOnce(Started),
) -> Result<(), RunError> {
    config::validate(&config).map_err(|errors| RunError::Config(errors.join("\n")))?;
    let config = Arc::new(config);
    let metrics_handle = metrics::install().map_err(RunError::Metrics)?;
    let worker_id = config.worker.id.clone().unwrap_or_else(default_worker_id);
    let subjects =
        Subjects::new(&config.jetstream.prefix).map_err(|err| RunError::Config(err.to_string()))?;

    let nats = llmq_runtime::connect(&config.nats, |options| {
        options
            .name(format!("llmq-worker {worker_id}"))
            .event_callback(|event| async move {
                tracing::info!(%event, "nats connection event");
            })
    })
    .await?;
    let js = async_nats::jetstream::new(nats.clone());
    let setup = nats::ensure(&js, &subjects, &config.jetstream).await?;
    let router = Router::build(&config).map_err(RunError::Config)?;
    let ctx = Arc::new(WorkerContext {
        worker_id: worker_id.clone(),
        subjects: subjects.clone(),
        nats: nats.clone(),
        js,
        router,
        cooldowns: Cooldowns::new(config.cooldown.clone()),
        retry: RetryPolicy::new(config.retry.clone()),
        prices: PriceTable::new(&config),
        cancels: CancelRegistry::new(config.jetstream.cancel_ttl),
        setup,
        config: Arc::clone(&config),
    });

    let background = CancellationToken::new();
    let stops = Stops {
        fetching: CancellationToken::new(),
        hard: CancellationToken::new(),
    };
    let health = Arc::new(Health::default());
    let tracker = TaskTracker::new();
    let services = TaskTracker::new();

    let admin_addr = match config.admin.listen {
        Some(addr) => {
            let (bound, _task) = admin::serve(
                addr,
                Arc::clone(&health),
                metrics_handle,
                nats.clone(),
                background.clone(),
            )
            .await
            .map_err(|source| RunError::Admin { addr, source })?;
            Some(bound)
        }
        None => None,
    };

    let (cancels_ready, cancels_loaded) = tokio::sync::oneshot::channel();
    services.spawn(Arc::clone(&ctx.cancels).watch(
        ctx.setup.cancels.clone(),
        cancels_ready,
        background.clone(),
    ));
    if tokio::time::timeout(Duration::from_secs(10), cancels_loaded)
        .await
        .is_err()
    {
        tracing::warn!("cancel requests not loaded within 10s; starting anyway");
    }

    let capacity = Capacity::new(config.worker.max_inflight, config.worker.batch_share);
    let mut loops = Vec::new();
    for model in ctx.router.models() {
        for tier in Tier::ALL {
            let consumer_config =
                nats::consumer_config(&subjects, &model.name, tier, &config.jetstream);
            let consumer = ensure_consumer_patiently(&ctx, consumer_config).await?;
            loops.push(tokio::spawn(scheduler::consume(
                Arc::clone(&ctx),
                Arc::clone(model),
                tier,
                consumer,
                Arc::clone(&capacity),
                tracker.clone(),
                stops.clone(),
            )));
        }
    }

    let started_at = Timestamp::now();
    if let Err(err) = catalog::publish(&ctx, started_at).await {
        tracing::warn!(error = %err, "catalog entry not written");
    }
    services.spawn(catalog::heartbeat(
        Arc::clone(&ctx),
        started_at,
        background.clone(),
    ));
    services.spawn(sweeper::run(
        Arc::clone(&ctx),
        stops.fetching.clone(),
        stops.hard.clone(),
    ));
    services.spawn(dlq::watch_max_deliveries(
        Arc::clone(&ctx),
        background.clone(),
    ));
    health.ready.store(true, Ordering::Relaxed);
    tracing::info!(
        worker_id = %worker_id,
        models = ctx.router.models().count(),
        providers = ctx.router.providers().count(),
        admin = ?admin_addr,
        "worker started"
    );
    on_started(Started {
        worker_id: worker_id.clone(),
        admin_addr,
    });

    shutdown.await;
    drain(Drain {
        grace: config.worker.shutdown_grace,
        health,
        stops,
        loops,
        tracker,
        services,
        background,
        nats,
        in_flight: || capacity.in_use(config.worker.max_inflight),
    })
    .await;
    Ok(())
}

/// How long the steps after the grace period (handing running jobs back, stopping side
/// tasks, the last flush) may take. A worker told to stop exits within
/// `shutdown_grace` plus this, whether or not NATS answers: what it could not hand back
/// in time is redelivered by the server after `ack_wait`.
pub const SHUTDOWN_MARGIN: Duration = Duration::from_secs(3);

/// What a draining worker stops, in order.
struct Drain<F> {
    grace: Duration,
    health: Arc<Health>,
    stops: Stops,
    loops: Vec<tokio::task::JoinHandle<()>>,
    tracker: TaskTracker,
    services: TaskTracker,
    background: CancellationToken,
    nats: async_nats::Client,
    in_flight: F,
}

/// Stops fetching, lets in-flight jobs finish within the grace period, hands the rest
/// back, stops the side tasks. Every wait is bounded: a broker that is gone (stopped
/// with the worker, as an orchestrator does when a node goes away) must not keep the
/// worker alive.
async fn drain<F: Fn() -> usize>(drain: Drain<F>) {
    let grace_over = tokio::time::Instant::now() + drain.grace;
    tracing::info!(in_flight = (drain.in_flight)(), grace = ?drain.grace, "shutting down: draining");
    drain.health.draining.store(true, Ordering::Relaxed);
    drain.stops.fetching.cancel();
    for consumer_loop in drain.loops {
        let abort = consumer_loop.abort_handle();
        if tokio::time::timeout_at(grace_over, consumer_loop)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    drain.tracker.close();
    if tokio::time::timeout_at(grace_over, drain.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            still_running = (drain.in_flight)(),
            "grace period over: handing the remaining jobs back"
        );
        drain.stops.hard.cancel();
    }
    let margin_over = tokio::time::Instant::now() + SHUTDOWN_MARGIN;
    if tokio::time::timeout_at(margin_over, drain.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            still_running = (drain.in_flight)(),
            "jobs not handed back in time (is NATS reachable?); the server redelivers them after ack_wait"
        );
    }
    drain.background.cancel();
    drain.services.close();
    if tokio::time::timeout_at(margin_over, drain.services.wait())
        .await
        .is_err()
    {
        tracing::warn!("side tasks did not stop in time; leaving them");
    }
    match tokio::time::timeout_at(margin_over, drain.nats.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::debug!(error = %err, "final flush failed"),
        Err(_) => tracing::warn!("final flush timed out: NATS is not answering"),
    }
    tracing::info!("worker stopped");
}

/// Creates a consumer, waiting out a sweep consumer that briefly overlaps it (see
/// `sweeper`).
async fn ensure_consumer_patiently(
    ctx: &WorkerContext,
    config: async_nats::jetstream::consumer::pull::Config,
) -> Result<async_nats::jetstream::consumer::PullConsumer, nats::SetupError> {
    let mut tries = 0;
    loop {
        match nats::ensure_consumer(&ctx.setup.jobs, config.clone()).await {
            Ok(consumer) => return Ok(consumer),
            Err(err) if tries < 20 => {
                tries += 1;
                tracing::debug!(error = %err, "consumer not created yet; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(err) => return Err(err),
        }
    }
}

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
