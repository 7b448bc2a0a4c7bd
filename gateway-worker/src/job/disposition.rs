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

use crate::metrics;

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
        Disposition::Done => {
            let mut result = message.double_ack().await;
            // A double ack waits for the server; during a reconnect, try a little longer.
            for delay in [50, 200, 1000] {
                if result.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(delay)).await;
                result = message.double_ack().await;
            }
            result
        }
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
