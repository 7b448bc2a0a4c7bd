//! The worker's side of durable publishing: `llmq_runtime`'s one loop, with the worker's
//! budget and a retry metric per stream.
//!
//! A worker created its streams, so a stream that answers "not found" is a server still
//! restarting, and worth waiting for; and it retries for a window of time (at least 10 s,
//! or `ack_wait`, see `WorkerContext::publish_window`), after which the job is handed back
//! to the queue instead of held.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, publish::PublishAck};
use bytes::Bytes;
use llmq_runtime::{Budget, Durable, PublishFailure, publish_durable};

use crate::metrics;

/// A message for one of llmq's streams.
#[derive(Debug, Clone, Copy)]
pub struct Store<'a> {
    /// The stream's label in the retry metric (`results`, `usage`, `dlq`).
    pub stream: &'static str,
    pub subject: &'a str,
    pub msg_id: &'a str,
    pub headers: Option<&'a HeaderMap>,
    pub payload: &'a Bytes,
}

/// Publishes `message` and waits for its PubAck, retrying timeouts, disconnects and a
/// restarting server with the same message id for up to `window`.
pub async fn store(
    js: &jetstream::Context,
    window: Duration,
    message: Store<'_>,
) -> Result<PublishAck, PublishFailure> {
    let count_retry = |_: &_| metrics::publish_retry(message.stream);
    let durable = Durable {
        subject: message.subject,
        msg_id: message.msg_id,
        headers: message.headers,
        payload: message.payload,
        budget: Budget::Time(window),
        missing_stream_is_transient: true,
        missing_stream_grace: Duration::ZERO,
        on_retry: Some(&count_retry),
    };
    publish_durable(js, durable).await
}
