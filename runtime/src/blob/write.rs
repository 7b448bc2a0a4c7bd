//! Writing a blob: every chunk published durably, the reference returned once all are
//! acknowledged.
//!
//! The chunks are published together (their PubAcks awaited concurrently), so a 4 MiB
//! blob costs about one round trip more than a small message, not one per chunk. Each
//! chunk's `Nats-Msg-Id` is its subject, which names a random blob id: a publish retried
//! after a lost PubAck is dropped as a duplicate, and no one can block a chunk by using
//! its id first without knowing the blob's id before it is written.

use std::time::Duration;

use async_nats::jetstream::{self, context::PublishError};
use bytes::Bytes;
use llmq_schemas::{BlobRef, Subjects};
use sha2::Digest;

use super::{BlobError, sha256_hex};
use crate::publish::{Budget, Durable, publish_durable};

/// How hard each chunk's publish tries (see [`Durable`]): a producer's budget of
/// attempts, a worker's budget of time.
#[derive(Clone, Copy)]
pub struct WriteOptions<'a> {
    pub budget: Budget,
    pub missing_stream_is_transient: bool,
    pub missing_stream_grace: Duration,
    pub on_retry: Option<&'a (dyn Fn(&PublishError) + Send + Sync)>,
}

impl std::fmt::Debug for WriteOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteOptions")
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

/// Stores `bytes` as a new blob under `base` in chunks of `chunk` bytes; returns its
/// reference once every chunk is stored.
pub async fn write(
    js: &jetstream::Context,
    base: &str,
    bytes: Bytes,
    chunk: usize,
    options: WriteOptions<'_>,
) -> Result<BlobRef, BlobError> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let pieces = split(&bytes, chunk.max(1));
    let chunks = u32::try_from(pieces.len()).unwrap_or(u32::MAX);
    let blob = BlobRef {
        id,
        bytes: bytes.len() as u64,
        sha256: sha256_hex(&sha2::Sha256::digest(&bytes)),
        chunks,
    };
    super::check(&blob)?;
    let subjects: Vec<String> = (0..chunks)
        .map(|n| Subjects::blob_chunk(base, &blob.id, n))
        .collect();
    let publishes = subjects
        .iter()
        .zip(&pieces)
        .map(|(subject, piece)| publish(js, subject, piece, options));
    futures::future::try_join_all(publishes).await?;
    Ok(blob)
}

async fn publish(
    js: &jetstream::Context,
    subject: &str,
    payload: &Bytes,
    options: WriteOptions<'_>,
) -> Result<(), BlobError> {
    // Not the subject itself: any client may set any message id, and one who knew a
    // chunk's subject could otherwise take its id first.
    let msg_id = crate::private_msg_id(subject);
    let message = Durable {
        subject,
        msg_id: &msg_id,
        headers: None,
        payload,
        budget: options.budget,
        missing_stream_is_transient: options.missing_stream_is_transient,
        missing_stream_grace: options.missing_stream_grace,
        on_retry: options.on_retry,
    };
    publish_durable(js, message)
        .await
        .map(drop)
        .map_err(|source| BlobError::Write {
            subject: subject.to_owned(),
            source,
        })
}

/// `bytes` in pieces of at most `chunk` bytes (one empty piece for no bytes), sharing
/// its buffer.
fn split(bytes: &Bytes, chunk: usize) -> Vec<Bytes> {
    if bytes.is_empty() {
        return vec![Bytes::new()];
    }
    (0..bytes.len())
        .step_by(chunk)
        .map(|start| bytes.slice(start..(start + chunk).min(bytes.len())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_split_into_full_chunks_and_a_rest() {
        let bytes = Bytes::from(vec![7u8; 10]);
        let pieces = split(&bytes, 4);
        assert_eq!(pieces.iter().map(Bytes::len).collect::<Vec<_>>(), [4, 4, 2]);
        assert_eq!(split(&bytes, 10).len(), 1);
        assert_eq!(split(&Bytes::new(), 4), vec![Bytes::new()]);
    }
}
