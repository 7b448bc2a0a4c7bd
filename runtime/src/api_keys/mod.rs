//! llmq API keys: who an HTTP caller is.
//!
//! A key belongs to a tenant and may narrow its models and carry its own request rate.
//! Only a SHA-256 of its secret is stored (in the `<PREFIX>_KEYS` bucket, keyed by the
//! key's id, which the key itself carries), so the bucket never holds a usable key; the
//! secret is shown once, when it is created. Every edge holds the bucket in memory
//! ([`crate::live::LiveMap`]), so a revocation reaches every edge within the watch's
//! latency, and checking a key costs no round trip. A key's id is not a secret (it is
//! listed): the secret is compared in constant time, the id is not.

mod key;
mod store;

pub use key::{ApiKeyEntry, KeyRefusal, NewKey, PRESENTED_PREFIX, parse_presented};
pub use store::{ApiKeys, KeyStoreError, bucket, create, list, revoke};
