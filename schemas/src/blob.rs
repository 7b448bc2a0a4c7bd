//! Claim checks: a reference to bytes stored as chunks in JetStream, in place of a request
//! or an answer too large for one NATS message.
//!
//! NATS refuses a message larger than the server's `max_payload` (1 MiB unless raised, for
//! every client at once), yet one base64 image or one long answer is more. So the large part
//! is published first as numbered chunks, one message each, and the job or outcome carries a
//! [`BlobRef`] to them: the reader fetches chunks `0..chunks`, and the length and SHA-256 say
//! whether it got exactly what was written. Where the chunks live is decided by what refers
//! to them, never by the reference: a job's `request_blob` is read under the job subject's
//! tenant (`<prefix>.blobs.<tenant>.<id>.<n>`), an outcome's `body_blob` under the outcome's
//! own subject (`<prefix>.results.<tenant>.<job id>.<id>.<n>`), so a reference cannot point
//! at another tenant's bytes.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The most chunks one blob may have: with 1 MiB messages, 4 GiB; far above any request
/// size a tenant is allowed.
pub const MAX_CHUNKS: u32 = 4096;

/// Where a blob's bytes are: chunks `0..chunks` under `<base>.<id>`, `bytes` long in all,
/// with this SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BlobRef {
    /// The blob's id, one subject token (1-64 of `A-Za-z0-9_-`); chunk `n` is the
    /// message on `<base>.<id>.<n>`. Random ids (a UUID) keep blobs from colliding.
    #[schemars(pattern(r"^[A-Za-z0-9_-]{1,64}$"))]
    pub id: String,
    /// The blob's length in bytes: every chunk's payload, concatenated.
    pub bytes: u64,
    /// SHA-256 of those bytes, 64 lowercase hex digits.
    #[schemars(pattern(r"^[0-9a-f]{64}$"))]
    pub sha256: String,
    /// How many chunks (numbered from 0), at least 1.
    #[schemars(range(min = 1, max = 4096))]
    pub chunks: u32,
}

impl BlobRef {
    /// What makes the reference unusable, if anything: an id that is not one subject
    /// token, a digest that is not SHA-256 hex, a chunk count out of range.
    pub fn problem(&self) -> Option<String> {
        let token = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
        if self.id.is_empty() || self.id.len() > 64 || !self.id.bytes().all(token) {
            return Some(format!(
                "blob id {:?} must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-'",
                self.id
            ));
        }
        let hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
        if self.sha256.len() != 64 || !self.sha256.bytes().all(hex) {
            return Some("blob sha256 must be 64 lowercase hex digits".into());
        }
        if self.chunks == 0 || self.chunks > MAX_CHUNKS {
            return Some(format!(
                "blob chunks must be 1-{MAX_CHUNKS} (got {})",
                self.chunks
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob() -> BlobRef {
        BlobRef {
            id: "0193a3c26c2e7cc39c1d3f1d2c4b5a69".into(),
            bytes: 10,
            sha256: "a".repeat(64),
            chunks: 1,
        }
    }

    #[test]
    fn a_reference_names_one_token_a_digest_and_a_sane_chunk_count() {
        assert_eq!(blob().problem(), None);
        for bad in [
            BlobRef {
                id: "acme.x".into(),
                ..blob()
            },
            BlobRef {
                id: "*".into(),
                ..blob()
            },
            BlobRef {
                id: String::new(),
                ..blob()
            },
            BlobRef {
                sha256: "A".repeat(64),
                ..blob()
            },
            BlobRef {
                chunks: 0,
                ..blob()
            },
            BlobRef {
                chunks: MAX_CHUNKS + 1,
                ..blob()
            },
        ] {
            assert!(bad.problem().is_some(), "{bad:?}");
        }
    }
}
