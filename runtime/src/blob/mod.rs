//! Claim checks: bytes too large for one NATS message, stored as numbered chunks in a
//! stream and referred to by a [`BlobRef`].
//!
//! A nats-server refuses any message over its `max_payload` (1 MiB unless raised, for every
//! client at once). A job whose request holds a base64 image, or an outcome whose answer is
//! a few hundred thousand tokens, is more. So the writer publishes the bytes as chunks, one
//! message each on `<base>.<id>.<n>` (every PubAck awaited), and puts only the reference in
//! the job or outcome; the reader fetches the chunks by direct get by subject (which a NATS
//! permission can pin to a tenant's own subjects) and checks the length and SHA-256.
//!
//! Why not async-nats's object store: its metadata subjects are `$O.<bucket>.M.<base64
//! name>` and its chunk subjects random, so no permission can keep a tenant to its own
//! objects; here the tenant is a subject token. The streams that hold chunks keep one
//! message per subject and refuse a second (`discard_new_per_subject`), so a chunk, once
//! written, can never be replaced. Both producers and workers use this one module, so the
//! format cannot drift between them.

mod read;
mod write;

use std::time::Duration;

use llmq_schemas::BlobRef;

use crate::publish::PublishFailure;

pub use read::read;
pub use write::{WriteOptions, write};

/// How large a message the connected server takes, and what follows for claim checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    /// The server's `max_payload`.
    pub max_payload: usize,
    /// The largest job or outcome published as it is; anything larger goes in a blob.
    /// `max_payload` less room for headers (`Nats-Msg-Id`, JetStream's own).
    pub inline_max: usize,
    /// The payload of one chunk.
    pub chunk: usize,
}

impl Sizes {
    /// The sizes for the server `nats` is connected to now (a cluster's servers may
    /// differ, so this is read when needed, not once).
    pub fn of(nats: &async_nats::Client) -> Sizes {
        Sizes::for_max_payload(nats.server_info().max_payload)
    }

    /// A sixteenth of the payload limit, between 4 and 64 KiB, is left for headers: a
    /// 1 MiB server inlines up to 960 KiB.
    pub fn for_max_payload(max_payload: usize) -> Sizes {
        let headroom = (max_payload / 16).clamp(4 * 1024, 64 * 1024);
        let inline_max = max_payload.saturating_sub(headroom).max(1024);
        Sizes {
            max_payload,
            inline_max,
            chunk: inline_max,
        }
    }
}

/// How long a reader waits for a chunk that is not there yet. Chunks are acknowledged
/// before the job that names them is published, so only a replica answering a direct get
/// before it caught up can miss one.
pub const MISSING_CHUNK_WAIT: Duration = Duration::from_secs(2);

/// Why a blob could not be written, read or deleted.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The reference itself is unusable (see [`BlobRef::problem`]).
    #[error("invalid blob reference: {0}")]
    InvalidRef(String),
    /// A chunk was not stored.
    #[error("blob chunk {subject} not stored: {source}")]
    Write {
        subject: String,
        #[source]
        source: PublishFailure,
    },
    /// A chunk is not in the stream (never written, deleted, or past the stream's age).
    #[error("blob chunk {subject} is missing")]
    Missing { subject: String },
    /// The chunks are not what the reference describes.
    #[error("blob {id} is corrupt: {reason}")]
    Corrupt { id: String, reason: String },
    /// The stream did not answer (a timeout, a broker restarting).
    #[error("reading blob chunk {subject} failed: {message}")]
    Unavailable { subject: String, message: String },
    /// The stream does not exist: no worker set it up.
    #[error("stream {stream} does not exist")]
    NoStream { stream: String },
    #[error("deleting blob {id} failed: {message}")]
    Delete { id: String, message: String },
}

impl BlobError {
    /// Whether the same call may succeed later without anything changing.
    pub fn is_transient(&self) -> bool {
        match self {
            BlobError::Unavailable { .. } | BlobError::Delete { .. } => true,
            BlobError::Write { source, .. } => matches!(
                source,
                PublishFailure::Timeout { .. }
                    | PublishFailure::Connection { .. }
                    | PublishFailure::Full { .. }
            ),
            _ => false,
        }
    }
}

/// Deletes every chunk of blob `id` under `base` from `stream` (a purge by subject).
pub async fn delete(
    js: &async_nats::jetstream::Context,
    stream: &str,
    base: &str,
    id: &str,
) -> Result<(), BlobError> {
    let failed = |message: String| BlobError::Delete {
        id: id.to_owned(),
        message,
    };
    let stream = js
        .get_stream_no_info(stream)
        .await
        .map_err(|err| failed(err.to_string()))?;
    stream
        .purge()
        .filter(format!("{base}.{id}.>"))
        .await
        .map(drop)
        .map_err(|err| failed(err.to_string()))
}

/// The reference's problem as an error.
fn check(blob: &BlobRef) -> Result<(), BlobError> {
    match blob.problem() {
        Some(problem) => Err(BlobError::InvalidRef(problem)),
        None => Ok(()),
    }
}

/// Lowercase hex SHA-256.
fn sha256_hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_one_mib_server_inlines_up_to_960_kib_and_small_servers_keep_room_too() {
        let mib = Sizes::for_max_payload(1024 * 1024);
        assert_eq!(mib.inline_max, 960 * 1024);
        assert_eq!(mib.chunk, mib.inline_max);
        let big = Sizes::for_max_payload(8 * 1024 * 1024);
        assert_eq!(big.inline_max, 8 * 1024 * 1024 - 64 * 1024);
        let small = Sizes::for_max_payload(32 * 1024);
        assert_eq!(small.inline_max, 28 * 1024);
    }

    #[test]
    fn digests_are_lowercase_hex() {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(b"abc");
        assert_eq!(
            sha256_hex(&digest),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
