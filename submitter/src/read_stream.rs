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

use async_nats::jetstream::{
    self,
    consumer::{DeliverPolicy, pull},
};
use futures::StreamExt;
use time::OffsetDateTime;

use crate::error::ClientError;
use crate::session::{Session, consumer_name};

const OPERATION: &str = "reading a stream";

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

impl Session {
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
                operation: OPERATION,
                denied,
            })?
    }

    async fn read_stream_unguarded(
        &self,
        stream: &str,
        range: ReadRange,
        mut each: impl FnMut(Stored),
    ) -> Result<(), ClientError> {
        let until = range.until;
        let Some(mut messages) = self.ordered_messages(stream, range).await? else {
            return Ok(());
        };
        // Messages deleted after the consumer started would leave it waiting forever for
        // a pending count that never reaches zero; silence this long means done.
        let idle = self
            .options()
            .nats
            .request_timeout
            .max(Duration::from_secs(1));
        loop {
            let Ok(next) = tokio::time::timeout(idle, messages.next()).await else {
                tracing::debug!(stream, "no more messages within {idle:?}; stopping");
                return Ok(());
            };
            let Some((stored, pending)) = stored(next)? else {
                return Ok(());
            };
            if until.is_some_and(|until| stored.published > until) {
                return Ok(());
            }
            each(stored);
            if pending == 0 {
                return Ok(());
            }
        }
    }

    /// An ordered consumer's messages over `range`; `None` when nothing is pending.
    async fn ordered_messages(
        &self,
        stream: &str,
        range: ReadRange,
    ) -> Result<Option<pull::Ordered>, ClientError> {
        let handle = self
            .js()
            .get_stream_no_info(stream)
            .await
            .map_err(|err| ClientError::nats(OPERATION, err))?;
        let consumer = handle
            .create_consumer(pull::OrderedConfig {
                name: Some(consumer_name()),
                filter_subject: range.filter_subject,
                deliver_policy: range.deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(|err| self.consumer_error(err, stream, OPERATION))?;
        if consumer.cached_info().num_pending == 0 {
            return Ok(None);
        }
        let messages = consumer
            .messages()
            .await
            .map_err(|err| ClientError::nats(OPERATION, err))?;
        Ok(Some(messages))
    }
}

/// The delivered message and how many are still pending; `None` when the consumer ended.
fn stored(
    next: Option<Result<jetstream::Message, pull::OrderedError>>,
) -> Result<Option<(Stored, u64)>, ClientError> {
    let message = match next {
        Some(Ok(message)) => message,
        Some(Err(err)) => return Err(ClientError::nats(OPERATION, err)),
        None => return Ok(None),
    };
    let info = message
        .info()
        .map_err(|err| ClientError::nats(OPERATION, err.to_string()))?;
    let (sequence, published, pending) = (info.stream_sequence, info.published, info.pending);
    let stored = Stored {
        sequence,
        published,
        message: message.message,
    };
    Ok(Some((stored, pending)))
}
