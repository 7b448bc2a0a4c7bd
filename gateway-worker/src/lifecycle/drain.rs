//! Stopping a worker: stop fetching, let in-flight jobs finish within the grace period,
//! hand the rest back, stop the side tasks.
//!
//! Every wait is bounded. A broker that is gone (stopped together with the worker, as an
//! orchestrator does when a node goes away) must not keep the worker alive: without the
//! bounds, the catalog's final delete and the last flush waited for it forever.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::{Instant, timeout_at};

use super::Tasks;
use crate::context::WorkerContext;

/// How long the steps after the grace period (handing running jobs back, stopping side
/// tasks, the last flush) may take. A worker told to stop exits within
/// `shutdown_grace` plus this, whether or not NATS answers: what it could not hand back
/// in time is redelivered by the server after `ack_wait`.
pub const SHUTDOWN_MARGIN: Duration = Duration::from_secs(3);

pub(super) async fn drain(ctx: &WorkerContext, tasks: Tasks, grace: Duration) {
    let in_flight = || tasks.capacity.in_use(ctx.config.worker.max_inflight);
    tracing::info!(in_flight = in_flight(), ?grace, "shutting down: draining");
    let grace_over = Instant::now() + grace;
    tasks.health.draining.store(true, Ordering::Relaxed);
    tasks.stops.fetching.cancel();
    for consumer_loop in tasks.consumers.take_all() {
        let abort = consumer_loop.abort_handle();
        if timeout_at(grace_over, consumer_loop).await.is_err() {
            abort.abort();
        }
    }
    tasks.jobs.close();
    if timeout_at(grace_over, tasks.jobs.wait()).await.is_err() {
        tracing::warn!(
            still_running = in_flight(),
            "grace period over: handing the remaining jobs back"
        );
        tasks.stops.hard.cancel();
    }
    let margin_over = Instant::now() + SHUTDOWN_MARGIN;
    if timeout_at(margin_over, tasks.jobs.wait()).await.is_err() {
        tracing::warn!(
            still_running = in_flight(),
            "jobs not handed back in time (is NATS reachable?); the server redelivers them after ack_wait"
        );
    }
    tasks.background.cancel();
    tasks.services.close();
    if timeout_at(margin_over, tasks.services.wait())
        .await
        .is_err()
    {
        tracing::warn!("side tasks did not stop in time; leaving them");
    }
    match timeout_at(margin_over, ctx.nats.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::debug!(error = %err, "final flush failed"),
        Err(_) => tracing::warn!("final flush timed out: NATS is not answering"),
    }
    tracing::info!("worker stopped");
}
