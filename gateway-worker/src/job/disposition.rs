//! The one decision about a delivered message.
//!
//! Every path through a job ends in exactly one of these, and only [`apply`] talks to the
//! server about the message, so the ack rules live in one place:
//! - `Done`: the outcome is stored (or was already): double-ack, so the server confirms
//!   the message left the queue (a plain ack can be lost if the worker dies right after).
//! - `Requeue`: no outcome; hand the job back, now or after a delay.
//! - `Terminate`: a copy is in the dead-letter stream; remove the original.

use std::time::Duration;

use async_nats::jetstream::{AckKind, Message};
use llmq_runtime::backoff::{self, Backoff};

use crate::metrics;

/// The waits between double acks that failed: a double ack waits for the server, and
/// during a reconnect it is worth trying a little longer.
const DOUBLE_ACK_BACKOFF: Backoff = Backoff::steps(&[
    Duration::from_millis(50),
    Duration::from_millis(200),
    Duration::from_millis(1000),
]);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Done,
    Requeue {
        delay: Option<Duration>,
        reason: &'static str,
    },
    Terminate,
}

/// Acknowledges the message as decided. Failures are logged: the server redelivers after
/// `ack_wait`, and the stored outcome makes that redelivery harmless.
pub async fn apply(message: &Message, disposition: Disposition) {
    let result = match disposition {
        Disposition::Done => backoff::retry(DOUBLE_ACK_BACKOFF, || message.double_ack()).await,
        Disposition::Requeue { delay, reason } => {
            metrics::requeued(reason);
            message.ack_with(AckKind::Nak(delay)).await
        }
        Disposition::Terminate => message.ack_with(AckKind::Term).await,
    };
    if let Err(err) = result {
        tracing::warn!(error = %err, ?disposition, subject = %message.subject, "could not acknowledge a job; it will be redelivered");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_double_ack_is_tried_four_times_over_1250_ms() {
        let delays: Vec<u64> = DOUBLE_ACK_BACKOFF
            .delays()
            .map(|d| d.as_millis() as u64)
            .collect();
        assert_eq!(delays, [50, 200, 1000]);
        let tries = std::sync::atomic::AtomicU32::new(0);
        let start = tokio::time::Instant::now();
        let failing = || async {
            tries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Err::<(), _>(())
        };
        assert!(backoff::retry(DOUBLE_ACK_BACKOFF, failing).await.is_err());
        assert_eq!(tries.into_inner(), 4);
        assert_eq!(start.elapsed(), Duration::from_millis(1250));
    }
}
