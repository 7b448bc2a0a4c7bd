//! Limits: how much a provider, a deployment, a tenant or a tenant's model may use at
//! once and per window. The same shape in the worker config and in the tenant registry;
//! `llmq_runtime::limits` enforces it across the fleet.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The longest window a rate limit may have (window counters live twice that long).
pub const MAX_WINDOW: Duration = Duration::from_secs(3600);

/// One scope's limits; every part is optional.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitSpec {
    /// Requests (or, for a tenant, jobs) in flight at once, across the fleet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<i64>,
    /// Requests per window (default window: one minute, so "per minute").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<i64>,
    /// Tokens (prompt + completion) per window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<i64>,
    /// The rate limits' window, aligned to the clock (`60s` by default; 1 s to 1 h).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub window: Option<Duration>,
}

impl LimitSpec {
    pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);

    pub fn is_empty(&self) -> bool {
        self.concurrency.is_none() && self.rpm.is_none() && self.tpm.is_none()
    }

    pub fn window(&self) -> Duration {
        self.window.unwrap_or(Self::DEFAULT_WINDOW)
    }

    /// The limits as counts (validated specs only: a bad value counts as no limit).
    pub fn concurrency(&self) -> Option<u32> {
        self.concurrency
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n > 0)
    }

    pub fn requests(&self) -> Option<u64> {
        self.rpm
            .and_then(|n| u64::try_from(n).ok())
            .filter(|n| *n > 0)
    }

    pub fn tokens(&self) -> Option<u64> {
        self.tpm
            .and_then(|n| u64::try_from(n).ok())
            .filter(|n| *n > 0)
    }
}
