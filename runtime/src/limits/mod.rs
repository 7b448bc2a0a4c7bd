//! Limits that hold across the whole fleet: concurrency, requests and tokens per window,
//! per provider, deployment, tenant and tenant x model.
//!
//! Every worker enforces them through the same NATS KV bucket (`fleet.rs`), by
//! compare-and-set, so adding a worker never raises a limit. Each worker holds a share
//! of the capacity it uses and serves its jobs from it (`limiter.rs`): the shared state is
//! touched when that share changes, not per job.

pub(crate) mod fleet;
mod limiter;
mod scope;
mod spec;

pub use fleet::{Holdings, Used, bucket_config, now_ms, window_of};
pub use limiter::{Admission, DEFAULT_LEASE, Demand, Exhausted, GateView, Limiter};
pub use scope::Scope;
pub use spec::{LimitSpec, MAX_WINDOW, validate};

/// Why an admission did not happen.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error(transparent)]
    Exhausted(#[from] Exhausted),
    #[error("{operation} limit state {key} failed: {message}")]
    Nats {
        operation: &'static str,
        key: String,
        message: String,
    },
}

impl LimitError {
    pub(crate) fn nats(operation: &'static str, key: &str, err: impl std::fmt::Display) -> Self {
        LimitError::Nats {
            operation,
            key: key.to_owned(),
            message: err.to_string(),
        }
    }
}
