//! Reading a blob back: its chunks by direct get by subject, checked against the
//! reference's length and SHA-256.
//!
//! A direct get by subject names the subject in the request's own subject
//! (`$JS.API.DIRECT.GET.<stream>.<subject>`), which is what lets a NATS permission pin a
//! tenant to its own chunks. The reference is a claim, not a fact: the reader never
//! allocates more than it has received, stops as soon as the chunks exceed the claimed
//! length, and returns the bytes only when both length and digest match.

use std::time::Duration;

use async_nats::StatusCode;
use async_nats::jetstream::{self, stream::DirectGetErrorKind};
use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use llmq_schemas::{BlobRef, Subjects};
use sha2::Digest;
use tokio::time::Instant;

use super::{BlobError, sha256_hex};
use crate::backoff::Backoff;

/// Chunks in flight at once while reading.
const READ_AHEAD: usize = 4;

/// The waits between looks for a chunk not found yet: 20 ms doubling to 200 ms.
const MISSING_BACKOFF: Backoff =
    Backoff::doubling(Duration::from_millis(20), Duration::from_millis(200));

/// The bytes of `blob` under `base` in `stream`. A chunk not found is looked for again
/// for up to `missing_wait` (a replica catching up) before the blob is `Missing`.
pub async fn read(
    js: &jetstream::Context,
    stream: &str,
    base: &str,
    blob: &BlobRef,
    missing_wait: Duration,
) -> Result<Bytes, BlobError> {
    super::check(blob)?;
    let handle = js
        .get_stream_no_info(stream)
        .await
        .map_err(|err| BlobError::Unavailable {
            subject: stream.to_owned(),
            message: err.to_string(),
        })?;
    let until = Instant::now() + missing_wait;
    let mut chunks = futures::stream::iter(0..blob.chunks)
        .map(|n| {
            chunk(
                &handle,
                stream,
                Subjects::blob_chunk(base, &blob.id, n),
                until,
            )
        })
        .buffered(READ_AHEAD);
    let mut bytes = BytesMut::new();
    while let Some(piece) = chunks.try_next().await? {
        if (bytes.len() + piece.len()) as u64 > blob.bytes {
            return Err(corrupt(blob, "its chunks are longer than its length"));
        }
        bytes.extend_from_slice(&piece);
    }
    verify(blob, bytes.freeze())
}

/// One chunk's payload.
async fn chunk(
    stream: &jetstream::stream::Stream<()>,
    name: &str,
    subject: String,
    until: Instant,
) -> Result<Bytes, BlobError> {
    let mut pauses = MISSING_BACKOFF.delays();
    loop {
        let err = match stream.direct_get_last_for_subject(subject.as_str()).await {
            Ok(message) => return Ok(message.payload),
            Err(err) => err,
        };
        match err.kind() {
            DirectGetErrorKind::NotFound => {
                // A doubling backoff never runs out of delays.
                let pause = pauses.next().unwrap_or_default();
                if Instant::now() + pause > until {
                    return Err(BlobError::Missing { subject });
                }
                tokio::time::sleep(pause).await;
            }
            DirectGetErrorKind::ErrorResponse(status, _) if status == StatusCode::NO_RESPONDERS => {
                return Err(BlobError::NoStream {
                    stream: name.to_owned(),
                });
            }
            _ => {
                return Err(BlobError::Unavailable {
                    subject,
                    message: err.to_string(),
                });
            }
        }
    }
}

/// The bytes, if they are exactly what `blob` describes.
fn verify(blob: &BlobRef, bytes: Bytes) -> Result<Bytes, BlobError> {
    if bytes.len() as u64 != blob.bytes {
        let reason = format!("{} bytes, its reference says {}", bytes.len(), blob.bytes);
        return Err(corrupt(blob, &reason));
    }
    if sha256_hex(&sha2::Sha256::digest(&bytes)) != blob.sha256 {
        return Err(corrupt(blob, "its SHA-256 does not match its reference"));
    }
    Ok(bytes)
}

fn corrupt(blob: &BlobRef, reason: &str) -> BlobError {
    BlobError::Corrupt {
        id: blob.id.clone(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(bytes: &[u8]) -> BlobRef {
        BlobRef {
            id: "b".into(),
            bytes: bytes.len() as u64,
            sha256: sha256_hex(&sha2::Sha256::digest(bytes)),
            chunks: 1,
        }
    }

    #[test]
    fn only_the_exact_bytes_pass() {
        let blob = reference(b"hello");
        assert!(verify(&blob, Bytes::from_static(b"hello")).is_ok());
        for wrong in [&b"hellO"[..], b"hell", b""] {
            assert!(
                matches!(
                    verify(&blob, Bytes::copy_from_slice(wrong)),
                    Err(BlobError::Corrupt { .. })
                ),
                "{wrong:?}"
            );
        }
    }
}
