//! Accepting connections, with the read timeouts a public-facing server needs.
//!
//! `axum::serve` sets no timer, so a client that sends its headers one byte a minute (a
//! slow-loris) would hold a connection forever. Connections are served here by hyper
//! directly, with a header read timeout; a body read timeout is applied where the body is
//! read (`routes/chat_job.rs`). Every connection is a task on the edge's tracker, so a
//! stopping edge knows when the last one ended: it stops accepting (open requests finish,
//! idle connections close), and past the grace period it cuts the rest.

use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// When to stop accepting, and when to cut what is still open.
#[derive(Debug, Clone, Default)]
pub(crate) struct Stops {
    pub accepting: CancellationToken,
    pub cut: CancellationToken,
}

/// Serves `listener` until `stops.accepting`; the connections run on `connections`.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    header_timeout: Duration,
    stops: Stops,
    connections: TaskTracker,
) {
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stops.accepting.cancelled() => break,
        };
        match accepted {
            Ok((stream, _)) => {
                let executor = Tracked {
                    tasks: connections.clone(),
                    cut: stops.cut.clone(),
                };
                let connection = connection(stream, &app, header_timeout, &graceful, executor);
                let cut = stops.cut.clone();
                connections.spawn(async move {
                    tokio::select! {
                        () = connection => {}
                        () = cut.cancelled() => {}
                    }
                });
            }
            Err(err) => {
                tracing::warn!(error = %err, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // Open requests finish, idle keep-alive connections close.
    tokio::select! {
        () = graceful.shutdown() => {}
        () = stops.cut.cancelled() => {}
    }
}

/// One connection, served until it ends (or a graceful shutdown closes it).
fn connection(
    stream: TcpStream,
    app: &Router,
    header_timeout: Duration,
    graceful: &GracefulShutdown,
    executor: Tracked,
) -> impl Future<Output = ()> + Send + 'static {
    // Each SSE event is a small write: without TCP_NODELAY, Nagle holds it until the
    // client's delayed ACK (40 ms on Linux), which the edge bench measured as 44 ms of
    // first-token overhead.
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(error = %err, "cannot set TCP_NODELAY");
    }
    let mut builder = Builder::new(executor);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let service = TowerToHyperService::new(app.clone());
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    let connection = graceful.watch(connection.into_owned());
    async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "connection ended with an error");
        }
    }
}

/// Runs what hyper spawns for a connection (an HTTP/2 connection's streams) on the
/// connections' tracker, cut with them, so a stopping edge waits for those too.
#[derive(Debug, Clone)]
struct Tracked {
    tasks: TaskTracker,
    cut: CancellationToken,
}

impl<F> hyper::rt::Executor<F> for Tracked
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        let cut = self.cut.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                _ = future => {}
                () = cut.cancelled() => {}
            }
        });
    }
}
