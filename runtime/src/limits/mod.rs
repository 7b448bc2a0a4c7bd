//! Limits that hold across the whole fleet: concurrency, requests and tokens per window,
//! per provider, deployment, tenant and tenant x model.
//!
//! Every worker enforces them through the same NATS KV bucket (`fleet.rs`), by
//! compare-and-set, so adding a worker never raises a limit. Each worker holds a share
//! of the capacity it uses and serves its jobs from it (`limiter.rs`): the shared state is
//! touched when that share changes, not per job.
//!
//! A provider's own rate-limit headers add pauses (`pause.rs`): when the upstream says a
//! deployment has nothing left, the fleet stops calling it until the reset. Workers also
//! publish what they enforce and who waits (`status.rs`), so `submitter limits` can show
//! the whole fleet's limits from NATS alone.

pub(crate) mod fleet;
mod gate;
mod limiter;
mod pause;
mod scope;
mod spec;
mod status;

pub use fleet::{Holdings, Used, bucket_config, now_ms, window_of};
pub use limiter::{Admission, DEFAULT_LEASE, Demand, Exhausted, GateView, Limiter, Waited};
pub use pause::{MAX_PAUSE, Pause};
pub use scope::Scope;
pub use spec::{LimitSpec, MAX_WINDOW, validate};
pub use status::{FleetStatus, GateState, ScopeStatus, WindowUse, WorkerView, read as read_status};

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

/// Locks a mutex whose data stays usable after a panic elsewhere (every critical section
/// here leaves it consistent).
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
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
