//! Stopping an edge: stop accepting, let open requests finish within the grace period, cut
//! the rest, stop the side tasks.
//!
//! Every wait is bounded, as in the worker: an edge stopped together with its broker must
//! not wait for it forever (a cancel's publish, the last flush).

use std::time::Duration;

use tokio::time::{Instant, timeout, timeout_at};

use super::RunningEdge;

/// How long the steps after the grace period (cut connections ending, the cancels of
/// their jobs, the side tasks, the last flush) may take.
pub const STOP_MARGIN: Duration = Duration::from_secs(3);

impl RunningEdge {
    pub(super) async fn shut_down(self, grace: Duration) {
        let tasks = &self.tasks;
        tracing::info!(?grace, "edge stopping: open requests may finish");
        tasks.stops.accepting.cancel();
        tasks.connections.close();
        if timeout(grace, tasks.connections.wait()).await.is_err() && !grace.is_zero() {
            tracing::warn!(
                ?grace,
                "open requests did not finish within the grace period; cutting them (their jobs are cancelled)"
            );
        }
        tasks.stops.cut.cancel();
        let margin_over = Instant::now() + STOP_MARGIN;
        if timeout_at(margin_over, tasks.connections.wait())
            .await
            .is_err()
        {
            tracing::warn!("connections did not end in time; leaving them");
        }
        tasks.background.cancel();
        tasks.services.close();
        if timeout_at(margin_over, tasks.services.wait())
            .await
            .is_err()
        {
            tracing::warn!("side tasks did not stop in time (is NATS reachable?); leaving them");
        }
        match timeout_at(margin_over, self.nats.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::debug!(error = %err, "final flush failed"),
            Err(_) => tracing::warn!("final flush timed out: NATS is not answering"),
        }
        tracing::info!("edge stopped");
    }
}
