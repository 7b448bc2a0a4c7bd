//! Durable publishing that survives reconnects without duplicates.
//!
//! A publish whose PubAck timed out during a reconnect may still have been stored, so a
//! retry must carry the same `Nats-Msg-Id`: the stream drops it as a duplicate and acks
//! it again. The retry window is bounded; past it the caller hands the job back to the
//! queue rather than holding it forever.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{Context, publish::PublishAck};
use bytes::Bytes;
use tokio::time::Instant;

use crate::metrics;

/// Why a durable publish did not happen.
#[derive(Debug, thiserror::Error)]
pub enum PublishFailure {
    /// The stream refused the message for a reason a retry cannot fix; the server's
    /// JetStream error code is kept for callers that expect a specific refusal.
    #[error("refused by the stream: {message}")]
    Refused { code: Option<u64>, message: String },
    /// No ack within the retry window (broker down, or unreachable).
    #[error("no acknowledgement within {0:?}")]
    GaveUp(Duration),
}

/// JetStream's error for a publish to a subject that already holds its maximum number of
/// messages, with discard-new per subject: a job's outcome already stored.
pub const ERR_MAX_MSGS_PER_SUBJECT: u64 = 10077;

/// Publishes with `msg_id` and waits for the PubAck, retrying timeouts and disconnects
/// with the same id for up to `window`.
pub async fn publish_durable(
    js: &Context,
    subject: &str,
    msg_id: &str,
    headers: Option<HeaderMap>,
    payload: Bytes,
    window: Duration,
    stream_label: &'static str,
) -> Result<PublishAck, PublishFailure> {
    let give_up = Instant::now() + window;
    let mut delay = Duration::from_millis(50);
    loop {
        let mut publish = PublishMessage::build()
            .payload(payload.clone())
            .message_id(msg_id);
        if let Some(headers) = &headers {
            for (name, values) in headers.iter() {
                for value in values {
                    publish = publish.header(name.clone(), value.clone());
                }
            }
        }
        let result = match js.send_publish(subject.to_owned(), publish).await {
            Ok(ack) => ack.await,
            Err(err) => Err(err),
        };
        let err = match result {
            Ok(ack) => return Ok(ack),
            Err(err) => err,
        };
        match err.kind() {
            PublishErrorKind::TimedOut
            | PublishErrorKind::BrokenPipe
            | PublishErrorKind::MaxAckPending => {}
            // While the server restarts, the stream may briefly answer "no responders".
            PublishErrorKind::StreamNotFound => {}
            PublishErrorKind::Other => {
                let api = std::error::Error::source(&err)
                    .and_then(|source| source.downcast_ref::<async_nats::jetstream::Error>());
                // Without an API error it is a connection-level failure: retry.
                if let Some(api) = api {
                    return Err(PublishFailure::Refused {
                        code: Some(api.error_code().0),
                        message: api.to_string(),
                    });
                }
            }
            _ => {
                return Err(PublishFailure::Refused {
                    code: None,
                    message: err.to_string(),
                });
            }
        }
        if Instant::now() + delay > give_up {
            return Err(PublishFailure::GaveUp(window));
        }
        metrics::publish_retry(stream_label);
        tracing::debug!(subject, error = %err, "durable publish failed, retrying with the same id");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}
