//! An edge as a value, with the worker's shape: [`Edge::build`] connects, reads the keys
//! and the registry and binds; [`Edge::start`] serves and returns a [`RunningEdge`]
//! (its address, [`drain`](RunningEdge::drain), [`stop`](RunningEdge::stop));
//! [`RunningEdge::start`] is both, and [`run`] is start, wait, drain.
//!
//! The binary and the tests hold the same value: a test reads the address the edge bound
//! (port 0) from [`RunningEdge::addr`], nothing is bound, released and passed on. Every
//! task an edge starts is on one of its two trackers, so a stopped edge leaves nothing
//! running: `connections` (the accept loop, each connection) and `services` (the API key
//! and registry watches, the limiter's upkeep, the metrics' upkeep, and the cancel of a
//! job whose client went away).

mod build;
mod shutdown;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::EdgeConfig;
use crate::error::EdgeError;
use crate::serve::{self, Stops};
use crate::state::EdgeState;

pub use shutdown::STOP_MARGIN;

/// An edge ready to serve: connected, following the keys and the registry, bound.
#[derive(Debug)]
pub struct Edge {
    state: Arc<EdgeState>,
    listener: TcpListener,
    addr: SocketAddr,
    grace: Duration,
    tasks: Tasks,
}

/// A serving edge.
#[derive(Debug)]
pub struct RunningEdge {
    addr: SocketAddr,
    grace: Duration,
    nats: async_nats::Client,
    tasks: Tasks,
}

/// Everything a stop ends, in the order it ends them. Dropped, it ends them all at once.
#[derive(Debug, Default)]
struct Tasks {
    stops: Stops,
    /// Ends the services.
    background: CancellationToken,
    connections: TaskTracker,
    services: TaskTracker,
}

impl Drop for Tasks {
    fn drop(&mut self) {
        self.stops.accepting.cancel();
        self.stops.cut.cancel();
        self.background.cancel();
    }
}

impl Edge {
    /// The address it listens on (the port it was given, or the one port 0 got).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until stopped.
    pub fn start(self) -> RunningEdge {
        let Edge {
            state,
            listener,
            addr,
            grace,
            tasks,
        } = self;
        let app = crate::routes::router(Arc::clone(&state));
        tasks.connections.spawn(serve::serve(
            listener,
            app,
            state.http.read_timeout,
            tasks.stops.clone(),
            tasks.connections.clone(),
        ));
        tasks.services.spawn(crate::batch_runner::run(
            Arc::clone(&state),
            state.batches.clone(),
            tasks.background.clone(),
        ));
        tracing::info!(%addr, "edge started");
        RunningEdge {
            addr,
            grace,
            nats: state.nats.clone(),
            tasks,
        }
    }
}

impl RunningEdge {
    /// Builds and starts an edge (see [`Edge::build`]).
    pub async fn start(config: EdgeConfig) -> Result<RunningEdge, EdgeError> {
        Ok(Edge::build(config).await?.start())
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets open requests finish within `http.shutdown_grace`, cuts the
    /// rest (their jobs are cancelled), stops the side tasks; returns within the grace
    /// period plus [`STOP_MARGIN`] whether or not NATS answers.
    pub async fn drain(self) {
        let grace = self.grace;
        self.shut_down(grace).await;
    }

    /// Like [`drain`](Self::drain) without a grace period: open requests are cut at once.
    pub async fn stop(self) {
        self.shut_down(Duration::ZERO).await;
    }
}

/// Starts an edge, waits for `shutdown`, drains it.
pub async fn run(config: EdgeConfig, shutdown: impl Future<Output = ()>) -> Result<(), EdgeError> {
    let edge = RunningEdge::start(config).await?;
    shutdown.await;
    edge.drain().await;
    Ok(())
}
