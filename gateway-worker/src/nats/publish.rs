//! The worker's side of durable publishing: `llmq_runtime`'s one loop, with the worker's
//! budget and a retry metric per stream.
//!
//! A worker created its streams, so a stream that answers "not found" is a server still
//! restarting, and worth waiting for; and it retries for a window of time (at least 10 s,
//! or `ack_wait`), after which the job is handed back to the queue instead of held.

use async_nats::HeaderMap;
use async_nats::jetstream::publish::PublishAck;
use bytes::Bytes;
use llmq_runtime::{Budget, Durable, PublishFailure, publish_durable};

use crate::context::WorkerContext;
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

impl WorkerContext {
    /// Publishes `message` and waits for its PubAck, retrying timeouts, disconnects and a
    /// restarting server with the same message id for up to the publish window.
    pub async fn store(&self, message: Store<'_>) -> Result<PublishAck, PublishFailure> {
        let count_retry = |_: &_| metrics::publish_retry(message.stream);
        let durable = Durable {
            subject: message.subject,
            msg_id: message.msg_id,
            headers: message.headers,
            payload: message.payload,
            budget: Budget::Time(self.publish_window()),
            missing_stream_is_transient: true,
            missing_stream_grace: std::time::Duration::ZERO,
            on_retry: Some(&count_retry),
        };
        publish_durable(&self.js, durable).await
    }
}
