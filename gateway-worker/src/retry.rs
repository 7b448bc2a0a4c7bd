//! The one retry policy: when to try the same deployment again, and after how long.
//!
//! Backoff follows the official OpenAI and Anthropic SDKs (0.5 s doubling to 8 s, minus up
//! to 25 % jitter), which providers tune their rate limiters for. A server-directed delay
//! wins over the backoff, up to a cap: a provider asking for minutes is better served by
//! the next deployment. Whatever the policy says, no wait runs past the job's deadline.

use std::time::Duration;

use llmq_runtime::backoff::Backoff;
use tokio::time::Instant;

use crate::config::RetryConfig;
use crate::providers::ProviderError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Try the same deployment again after this delay.
    SameAfter(Duration),
    /// This deployment will not do; try the next one.
    NextDeployment,
    /// Nothing else can succeed (the request itself is wrong, or the job is cancelled).
    Stop,
}

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    config: RetryConfig,
}

impl RetryPolicy {
    pub fn new(config: RetryConfig) -> Self {
        Self { config }
    }

    pub fn max_attempts(&self) -> u32 {
        self.config.max_attempts
    }

    pub fn max_in_worker_wait(&self) -> Duration {
        self.config.max_in_worker_wait
    }

    /// Exponential backoff for the `retry`-th retry (0-based); `jitter` in [0, 1).
    pub fn backoff(&self, retry: u32, jitter: f64) -> Duration {
        let backoff = Backoff::doubling(self.config.base_delay, self.config.max_delay);
        backoff
            .delay(retry)
            .mul_f64(1.0 - 0.25 * jitter.clamp(0.0, 1.0))
    }

    /// What to do after `err`, given how many retries this deployment already had.
    pub fn decide(&self, err: &ProviderError, retries_done: u32, jitter: f64) -> RetryDecision {
        if !err.is_retryable() {
            return if err.allows_fallback() {
                RetryDecision::NextDeployment
            } else {
                RetryDecision::Stop
            };
        }
        if retries_done >= self.config.per_class.for_class(err.class) {
            return RetryDecision::NextDeployment;
        }
        match err.retry_after() {
            Some(delay) if delay > self.config.max_retry_after => RetryDecision::NextDeployment,
            Some(delay) => RetryDecision::SameAfter(delay),
            None => RetryDecision::SameAfter(self.backoff(retries_done, jitter)),
        }
    }
}

/// Sleeps for `delay` unless that would pass `deadline`. Returns false (without sleeping)
/// when the deadline comes first.
pub async fn sleep_before(delay: Duration, deadline: Instant) -> bool {
    let wake = Instant::now() + delay;
    if wake > deadline {
        return false;
    }
    tokio::time::sleep_until(wake).await;
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RetryCounts;
    use llmq_schemas::ErrorType;

    fn policy() -> RetryPolicy {
        RetryPolicy::new(RetryConfig {
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(60),
            max_attempts: 8,
            max_in_worker_wait: Duration::from_secs(5),
            per_class: RetryCounts {
                rate_limited: 3,
                overloaded: 2,
                timeout: 1,
                server: 2,
                network: 2,
                malformed_response: 1,
            },
        })
    }

    #[test]
    fn backoff_doubles_caps_and_jitters_down_by_at_most_a_quarter() {
        let p = policy();
        assert_eq!(p.backoff(0, 0.0), Duration::from_millis(500));
        assert_eq!(p.backoff(1, 0.0), Duration::from_secs(1));
        assert_eq!(p.backoff(3, 0.0), Duration::from_secs(4));
        assert_eq!(p.backoff(4, 0.0), Duration::from_secs(8));
        assert_eq!(p.backoff(40, 0.0), Duration::from_secs(8));
        assert_eq!(p.backoff(0, 1.0), Duration::from_millis(375));
        assert_eq!(p.backoff(2, 0.5), Duration::from_millis(1750));
    }

    #[test]
    fn decisions_follow_the_class_and_its_budget() {
        let p = policy();
        let server = ProviderError::new(ErrorType::Server, "x");
        assert_eq!(
            p.decide(&server, 0, 0.0),
            RetryDecision::SameAfter(Duration::from_millis(500))
        );
        assert_eq!(
            p.decide(&server, 1, 0.0),
            RetryDecision::SameAfter(Duration::from_secs(1))
        );
        assert_eq!(p.decide(&server, 2, 0.0), RetryDecision::NextDeployment);
        let auth = ProviderError::new(ErrorType::Auth, "x");
        assert_eq!(p.decide(&auth, 0, 0.0), RetryDecision::NextDeployment);
        let bad = ProviderError::new(ErrorType::InvalidRequest, "x");
        assert_eq!(p.decide(&bad, 0, 0.0), RetryDecision::Stop);
        let quota = ProviderError::new(ErrorType::QuotaExhausted, "x");
        assert_eq!(p.decide(&quota, 0, 0.0), RetryDecision::NextDeployment);
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_cap() {
        let p = policy();
        let limited = ProviderError::new(ErrorType::RateLimited, "x")
            .with_retry_after(Some(Duration::from_secs(7)));
        assert_eq!(
            p.decide(&limited, 0, 0.9),
            RetryDecision::SameAfter(Duration::from_secs(7))
        );
        let long = ProviderError::new(ErrorType::RateLimited, "x")
            .with_retry_after(Some(Duration::from_secs(600)));
        assert_eq!(p.decide(&long, 0, 0.0), RetryDecision::NextDeployment);
    }

    #[tokio::test(start_paused = true)]
    async fn sleeps_only_within_the_deadline() {
        let start = Instant::now();
        let deadline = start + Duration::from_secs(10);
        assert!(sleep_before(Duration::from_secs(4), deadline).await);
        assert_eq!(start.elapsed(), Duration::from_secs(4));
        assert!(!sleep_before(Duration::from_secs(7), deadline).await);
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(4),
            "did not sleep past the deadline"
        );
        assert!(sleep_before(Duration::from_secs(6), deadline).await);
        assert_eq!(start.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_retry_schedule_takes_the_expected_virtual_time() {
        let p = policy();
        let start = Instant::now();
        let deadline = start + Duration::from_secs(60);
        let err = ProviderError::new(ErrorType::Network, "x");
        let mut retries = 0;
        while let RetryDecision::SameAfter(delay) = p.decide(&err, retries, 0.0) {
            assert!(sleep_before(delay, deadline).await);
            retries += 1;
        }
        assert_eq!(retries, 2);
        assert_eq!(start.elapsed(), Duration::from_millis(1500));
    }
}
