//! A worker as a value: [`RunningWorker::start`] returns once it is consuming, and
//! [`RunningWorker::drain`] stops it within its grace period.
//!
//! The binary and the tests hold the same value (as zero-to-production's
//! `Application::build` / `run_until_stopped`): a test learns the worker's id and admin
//! address from it instead of through a callback, and [`run`] is only start, wait, drain.
//! A config reload ([`RunningWorker::reload_config`]) changes it while it runs.

mod config_watch;
mod consumers;
mod drain;
mod reconfigure;
mod serve;
mod start;
mod wait;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use llmq_schemas::Timestamp;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::Health;
use crate::consume::{Capacity, Stops};
use crate::context::{Live, WorkerContext};
use crate::keys::{KeyFiles, KeyReload};

pub use config_watch::ConfigWatch;
pub use drain::SHUTDOWN_MARGIN;
pub use serve::serve;

/// Why the worker could not start. Each maps to its own exit code in the binary.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("invalid config:\n{0}")]
    Config(#[from] llmq_runtime::Problems),
    #[error("invalid config:\n{0}")]
    Routes(#[from] crate::routing::RouteError),
    #[error(transparent)]
    Connect(#[from] llmq_runtime::ConnectError),
    #[error(transparent)]
    Setup(#[from] crate::nats::SetupError),
    /// NATS or JetStream still not usable when `worker.startup_timeout` ran out.
    #[error("gave up after {after:?} (worker.startup_timeout) waiting for {what}: {last}")]
    StartupTimeout {
        after: std::time::Duration,
        what: String,
        last: String,
    },
    /// The tenant registry could not be read at start-up while it is to be enforced.
    #[error(
        "{0}; the worker does not start without it (tenants.mode = {mode:?}); check that NATS \
         is reachable and this worker's user may read the registry, or set tenants.mode = \
         \"open\" for a single-team install",
        mode = "enforced or auto"
    )]
    Registry(#[from] llmq_runtime::tenants::RegistryError),
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
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
}

/// A started worker: consuming, in the live catalog, serving its admin endpoint.
#[derive(Debug)]
pub struct RunningWorker {
    /// The context new jobs start with; a config reload swaps it.
    live: Arc<Live>,
    worker_id: String,
    /// When the worker joined the catalog, as its entry says.
    started_at: Timestamp,
    admin_addr: Option<SocketAddr>,
    tasks: Tasks,
    /// The providers' key files, re-read on a timer and by [`RunningWorker::reload_keys`];
    /// replaced by a config reload.
    keys: std::sync::Mutex<WatchedKeys>,
    /// One config reload at a time.
    reloading: tokio::sync::Mutex<()>,
}

/// The key files of the live config's providers, and the stop of their timer.
#[derive(Debug)]
struct WatchedKeys {
    files: Arc<KeyFiles>,
    stop: CancellationToken,
}

impl WatchedKeys {
    /// Watches the key files of `ctx`'s providers until the worker stops or a reload
    /// replaces them.
    fn start(ctx: &WorkerContext, tasks: &Tasks) -> WatchedKeys {
        let stop = tasks.background.child_token();
        let key_of = |name: &str| ctx.router.provider(name).map(|p| p.key.clone());
        let files = KeyFiles::watched(&ctx.config, key_of, &tasks.services, stop.clone());
        WatchedKeys { files, stop }
    }
}

/// Everything a drain stops, in the order it stops them.
#[derive(Debug)]
struct Tasks {
    health: Arc<Health>,
    stops: Stops,
    /// One loop per (model, tier) consumer.
    consumers: consumers::Consumers,
    /// Job tasks.
    jobs: TaskTracker,
    /// The catalog heartbeat, cancel watch, sweeper, advisory listener, key-file watch.
    services: TaskTracker,
    /// Stops the services and the admin endpoint.
    background: CancellationToken,
    capacity: Arc<Capacity>,
}

impl RunningWorker {
    /// This worker's id, as in the catalog and in every event and outcome it sends.
    pub fn id(&self) -> &str {
        &self.worker_id
    }

    /// Where `/metrics`, `/healthz` and `/readyz` are served, if enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Re-reads every provider's `api_key_file` now (the binary does on SIGHUP), without
    /// waiting for `worker.key_reload_interval`. Calls in flight keep the key they
    /// started with; the next attempts send a changed key. A file that cannot be used
    /// keeps its provider's key, with a warning naming the file.
    pub async fn reload_keys(&self) -> KeyReload {
        let files = Arc::clone(&self.keys.lock().unwrap_or_else(|e| e.into_inner()).files);
        files.reload_now().await
    }

    /// Stops fetching, lets in-flight jobs finish within `worker.shutdown_grace`, hands
    /// the rest back; returns within the grace period plus [`SHUTDOWN_MARGIN`] whether or
    /// not NATS answers.
    pub async fn drain(self) {
        let ctx = self.live.current();
        let grace = ctx.config.worker.shutdown_grace;
        drain::drain(&ctx, self.tasks, grace).await;
    }

    /// Stops everything at once, without waiting: running jobs are handed back, nothing
    /// is flushed (a test dropping its worker). The server redelivers what was not.
    pub fn stop_now(self) {
        self.tasks.stops.fetching.cancel();
        self.tasks.stops.hard.cancel();
        self.tasks.background.cancel();
        self.tasks.consumers.abort_all();
    }
}

/// Runs the worker until `shutdown` completes, then drains it.
pub async fn run(
    config: crate::config::Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    let worker = RunningWorker::start(config).await?;
    shutdown.await;
    worker.drain().await;
    Ok(())
}
