//! `/metrics`, `/healthz` and `/readyz`, on their own port so that scraping and probes
//! never compete with job traffic and can be firewalled separately.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What the probes report.
#[derive(Debug, Default)]
pub struct Health {
    /// Streams, consumers and buckets exist, and the worker is fetching.
    pub ready: AtomicBool,
    /// Shutting down: not ready, but still alive until in-flight jobs finish.
    pub draining: AtomicBool,
}

#[derive(Clone)]
struct AdminState {
    health: Arc<Health>,
    metrics: PrometheusHandle,
    nats: async_nats::Client,
}

/// Binds `addr` and serves until `stop`; returns the bound address (port 0 picks one).
pub async fn serve(
    addr: SocketAddr,
    health: Arc<Health>,
    metrics: PrometheusHandle,
    nats: async_nats::Client,
    stop: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(AdminState {
            health,
            metrics,
            nats,
        });
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(err) = served {
            tracing::warn!(error = %err, "admin endpoint stopped");
        }
    });
    Ok((bound, task))
}

async fn metrics_page(State(state): State<AdminState>) -> String {
    state.metrics.render()
}

async fn readyz(State(state): State<AdminState>) -> (StatusCode, &'static str) {
    let connected = state.nats.connection_state() == async_nats::connection::State::Connected;
    if state.health.draining.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else if !state.health.ready.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    } else if !connected {
        (StatusCode::SERVICE_UNAVAILABLE, "nats disconnected\n")
    } else {
        (StatusCode::OK, "ready\n")
    }
}
