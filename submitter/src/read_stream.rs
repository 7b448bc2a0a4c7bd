//! Reading a stream from a starting point until caught up.
//!
//! Reports (usage, dead letters) need "everything stored so far", not a subscription that
//! never ends. An ordered consumer reads it without acks and recovers from gaps by
//! itself; every delivered message says how many are still pending, so the read stops at
//! the message that brings that to zero (or at once when the consumer starts with
//! nothing pending). The consumer is named, with its filter in the creation subject, so
//! that NATS permissions can pin a tenant to its own part of the stream; a read the server
//! denies is an error, never "nothing there".

use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use futures::StreamExt;
use time::OffsetDateTime;

use crate::client::Client;
use crate::error::ClientError;

/// One stored message, as a reader sees it.
#[derive(Debug)]
pub(crate) struct Stored {
    pub(crate) sequence: u64,
    pub(crate) published: OffsetDateTime,
    pub(crate) message: async_nats::Message,
}

/// Where to start and stop.
#[derive(Debug, Clone)]
pub(crate) struct ReadRange {
    pub(crate) filter_subject: String,
    pub(crate) deliver_policy: DeliverPolicy,
    /// Stop before the first message stored after this instant.
    pub(crate) until: Option<OffsetDateTime>,
}

impl Client {
    /// Calls `each` on every message in `range` of `stream`, in stream order.
    pub(crate) async fn read_stream(
        &self,
        stream: &str,
        range: ReadRange,
        each: impl FnMut(Stored),
    ) -> Result<(), ClientError> {
        self.unless_denied(&[stream], self.read_stream_unguarded(stream, range, each))
            .await
            .map_err(|denied| ClientError::PermissionDenied {
                operation: "reading a stream",
                denied,
            })?
    }

    async fn read_stream_unguarded(
        &self,
        stream: &str,
        range: ReadRange,
        mut each: impl FnMut(Stored),
    ) -> Result<(), ClientError> {
        let operation = "reading a stream";
        let handle = self
            .inner
            .js
            .get_stream_no_info(stream)
            .await
            .map_err(|err| ClientError::nats(operation, err))?;
        let consumer = handle
            .create_consumer(pull::OrderedConfig {
                name: Some(crate::outcome::consumer_name()),
                filter_subject: range.filter_subject,
                deliver_policy: range.deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(|err| self.consumer_error(err, stream, operation))?;
        if consumer.cached_info().num_pending == 0 {
            return Ok(());
        }
        let mut messages = consumer
            .messages()
            .await
            .map_err(|err| ClientError::nats(operation, err))?;
        // Messages deleted after the consumer started would leave it waiting forever for
        // a pending count that never reaches zero; silence this long means done.
        let idle = self
            .inner
            .options
            .nats
            .request_timeout
            .max(Duration::from_secs(1));
        loop {
            let next = match tokio::time::timeout(idle, messages.next()).await {
                Ok(next) => next,
                Err(_) => {
                    tracing::debug!(stream, "no more messages within {idle:?}; stopping");
                    return Ok(());
                }
            };
            let message = match next {
                Some(Ok(message)) => message,
                Some(Err(err)) => return Err(ClientError::nats(operation, err)),
                None => return Ok(()),
            };
            let info = message
                .info()
                .map_err(|err| ClientError::nats(operation, err.to_string()))?;
            let (sequence, published, pending) =
                (info.stream_sequence, info.published, info.pending);
            if range.until.is_some_and(|until| published > until) {
                return Ok(());
            }
            each(Stored {
                sequence,
                published,
                message: message.message,
            });
            if pending == 0 {
                return Ok(());
            }
        }
    }
}
