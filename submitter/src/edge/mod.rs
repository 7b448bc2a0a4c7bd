//! The HTTP edge: OpenAI's `POST /v1/chat/completions` on the durable queue.
//!
//! It is a producer like any other (which is why it lives in the producer crate): it
//! authenticates the caller by an llmq API key, checks the policy through the submitter's
//! own pre-check, publishes a job for the key's tenant, and turns the job's events and
//! outcome into the HTTP answer. It holds no provider key and calls no provider. Edges
//! share nothing but NATS, so any number run side by side. The shape follows the worker:
//! [`Edge::start`] returns a [`RunningEdge`] (its address, a way to stop it), and [`run`]
//! is start, wait, stop.

mod auth;
mod chat;
mod error;
mod metrics;
mod models;
mod request_id;
mod serve;
mod sse;
mod stream;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use llmq_runtime::api_keys::{self, ApiKeys};
use llmq_runtime::tenants::{self, Mode, Registry};
use tokio_util::sync::CancellationToken;

pub use error::ApiError;

use crate::{Client, ClientOptions, ConnectionEvents};

/// How an edge listens and answers.
#[derive(Debug, Clone)]
pub struct EdgeOptions {
    pub listen: SocketAddr,
    /// The connection (NATS, prefix) the edge's per-tenant clients share.
    pub client: ClientOptions,
    /// Bodies larger than this are refused with 413 before they are read whole.
    pub max_body_bytes: usize,
    /// A request's deadline when it names none (`x-llmq-timeout`).
    pub default_timeout: Duration,
    /// SSE comments while a stream waits, so proxies do not cut it.
    pub keep_alive: Duration,
    /// A client must send a request's headers within this, and its body within this once
    /// the headers are in (slow clients are cut off, not waited for).
    pub read_timeout: Duration,
}

impl EdgeOptions {
    pub fn new(listen: SocketAddr, client: ClientOptions) -> Self {
        Self {
            listen,
            client,
            max_body_bytes: 4 * 1024 * 1024,
            default_timeout: Duration::from_secs(600),
            keep_alive: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
        }
    }
}

/// Why an edge could not start.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error(transparent)]
    Connect(#[from] crate::ConnectError),
    #[error("cannot open the API keys: {0}")]
    Keys(String),
    #[error("cannot read the tenant registry: {0}")]
    Registry(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// What every request handler shares.
pub(crate) struct EdgeState {
    nats: async_nats::Client,
    events: ConnectionEvents,
    options: EdgeOptions,
    keys: ApiKeys,
    registry: Arc<Registry>,
    /// Each key's own request rate, fleet-wide (every edge shares the limits bucket).
    limiter: Arc<llmq_runtime::limits::Limiter>,
    clients: tokio::sync::Mutex<HashMap<String, Client>>,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

impl EdgeState {
    /// The producer for `tenant` (one per tenant, on the shared connection, each with its
    /// own reply inbox under `_INBOX_llmq.<tenant>`).
    async fn client_for(&self, tenant: &str) -> Result<Client, ApiError> {
        let mut clients = self.clients.lock().await;
        if let Some(client) = clients.get(tenant) {
            return Ok(client.clone());
        }
        let options = ClientOptions {
            tenant: tenant.to_owned(),
            inbox_prefix: None,
            check_catalog: true,
            ..self.options.client.clone()
        };
        let client = Client::from_nats_with_events(self.nats.clone(), options, &self.events)
            .await
            .map_err(|err| ApiError::unavailable(format!("cannot serve tenant {tenant}: {err}")))?;
        clients.insert(tenant.to_owned(), client.clone());
        Ok(client)
    }
}

/// A started edge.
#[derive(Debug)]
pub struct Edge;

/// A running edge: its address, and how to stop it.
#[derive(Debug)]
pub struct RunningEdge {
    addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Edge {
    /// Connects, reads the API keys and the registry, binds, and serves until stopped.
    pub async fn start(options: EdgeOptions) -> Result<RunningEdge, EdgeError> {
        let events = ConnectionEvents::new();
        // API replies use the default `_INBOX`, outside every tenant's inbox; each tenant's
        // client has its own reply inbox for its jobs' events.
        let nats = llmq_runtime::connect(&options.client.nats, |connect| events.install(connect))
            .await
            .map_err(|err| EdgeError::Connect(err.into()))?;
        let js = async_nats::jetstream::new(nats.clone());
        let subjects = llmq_schemas::Subjects::new(&options.client.prefix)
            .map_err(|err| EdgeError::Registry(err.to_string()))?;
        let stop = CancellationToken::new();
        let keys_bucket = api_keys::bucket(&js, &subjects, 0)
            .await
            .map_err(|err| EdgeError::Keys(err.to_string()))?;
        let (keys, following_keys) = ApiKeys::start(keys_bucket, stop.clone())
            .await
            .map_err(|err| EdgeError::Keys(err.to_string()))?;
        let tenants_bucket = tenants::bucket(&js, &subjects, 0)
            .await
            .map_err(|err| EdgeError::Registry(err.to_string()))?;
        let (registry, following_registry) =
            Registry::start(tenants_bucket, Mode::Auto, stop.clone())
                .await
                .map_err(|err| EdgeError::Registry(err.to_string()))?;
        tokio::spawn(following_keys);
        tokio::spawn(following_registry);
        let limits_config = llmq_runtime::limits::bucket_config(&subjects, 0);
        let limits = llmq_runtime::buckets::open_or_create(&js, &subjects, limits_config)
            .await
            .map_err(|err| EdgeError::Keys(format!("the limits bucket: {err}")))?;
        let edge_id = format!("edge-{}", uuid::Uuid::new_v4().simple());
        let limiter = llmq_runtime::limits::Limiter::new(limits, edge_id, Duration::from_secs(10));
        tokio::spawn(Arc::clone(&limiter).maintain(stop.clone()));
        let listener = tokio::net::TcpListener::bind(options.listen)
            .await
            .map_err(|source| EdgeError::Listen {
                addr: options.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| EdgeError::Listen {
            addr: options.listen,
            source,
        })?;
        let state = Arc::new(EdgeState {
            nats,
            events,
            keys,
            registry,
            limiter,
            clients: tokio::sync::Mutex::new(HashMap::new()),
            metrics: metrics::install(),
            options,
        });
        let read_timeout = state.options.read_timeout;
        let app = router(state);
        let task = tokio::spawn(serve::serve(listener, app, read_timeout, stop.clone()));
        tracing::info!(%addr, "edge started");
        Ok(RunningEdge { addr, stop, task })
    }
}

impl RunningEdge {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets open requests finish, and returns when the server is done.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Start, wait for `shutdown`, stop.
pub async fn run(
    options: EdgeOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), EdgeError> {
    let edge = Edge::start(options).await?;
    shutdown.await;
    edge.stop().await;
    Ok(())
}

fn router(state: Arc<EdgeState>) -> Router {
    let limit = state.options.max_body_bytes;
    Router::new()
        .route("/v1/chat/completions", post(chat::completions))
        .route("/v1/models", get(models::list))
        .route("/v1/models/{*id}", get(models::retrieve))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(render_metrics))
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .fallback(|| async { ApiError::not_found_route() })
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(request_id::layer))
        .with_state(state)
}

/// Ready while connected to NATS.
async fn ready(State(state): State<Arc<EdgeState>>) -> Response {
    match state.nats.connection_state() {
        async_nats::connection::State::Connected => (StatusCode::OK, "ready").into_response(),
        other => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not connected to NATS ({other})"),
        )
            .into_response(),
    }
}

async fn render_metrics(State(state): State<Arc<EdgeState>>) -> Response {
    match &state.metrics {
        Some(handle) => handle.render().into_response(),
        None => (
            StatusCode::OK,
            "# metrics are recorded by this process's own recorder\n",
        )
            .into_response(),
    }
}
