//! Deployment cooldowns: skipping a deployment that is known to fail right now.
//!
//! Two triggers, as LiteLLM users know them: a 429 cools the deployment until its
//! retry-after passes (so the next jobs go elsewhere instead of collecting 429s), and a
//! deployment failing more than a share of its recent calls cools down for a fixed time.
//! Auth, not-found and quota errors cool immediately: they will not fix themselves in
//! seconds. State is per worker; every worker learns from its own calls.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use llmq_schemas::ErrorType;
use tokio::time::Instant;

use crate::config::CooldownConfig;
use crate::providers::ProviderError;

/// The longest cooldown a retry hint can impose (an Azure quota reset can say hours; the
/// deployment is re-probed after this).
const MAX_COOLDOWN: Duration = Duration::from_secs(3600);
/// Outcomes remembered per deployment for the failure share.
const MAX_WINDOW_ENTRIES: usize = 1024;

#[derive(Debug)]
pub struct Cooldowns {
    config: CooldownConfig,
    state: Mutex<HashMap<usize, Health>>,
}

#[derive(Debug, Default, Clone)]
struct Health {
    until: Option<Instant>,
    recent: VecDeque<(Instant, bool)>,
}

impl Cooldowns {
    pub fn new(config: CooldownConfig) -> Self {
        Self {
            config,
            state: Mutex::new(HashMap::new()),
        }
    }

    /// The cooldowns after a config reload: `config`, with the state `previous` has of
    /// each deployment the new routes still have (`carried` maps an old deployment
    /// index to its new one; see [`super::Router::carried_deployments`]).
    pub fn carried(
        config: CooldownConfig,
        previous: &Cooldowns,
        carried: &std::collections::BTreeMap<usize, usize>,
    ) -> Self {
        let old = previous.state.lock().unwrap_or_else(|e| e.into_inner());
        let state = old
            .iter()
            .filter_map(|(index, health)| Some((*carried.get(index)?, health.clone())))
            .collect();
        Self {
            config,
            state: Mutex::new(state),
        }
    }

    /// How much longer the deployment is cooling down, if it is.
    pub fn remaining(&self, deployment: usize) -> Option<Duration> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let until = state.get(&deployment)?.until?;
        let now = Instant::now();
        (until > now).then(|| until - now)
    }

    pub fn record_success(&self, deployment: usize) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let health = state.entry(deployment).or_default();
        push(health, &self.config, Instant::now(), false);
    }

    /// Records a failed call; returns the cooldown it started, if any.
    pub fn record_failure(&self, deployment: usize, err: &ProviderError) -> Option<Duration> {
        if !err.counts_against_deployment() {
            return None;
        }
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let health = state.entry(deployment).or_default();
        push(health, &self.config, now, true);
        let cooldown = match err.class {
            ErrorType::RateLimited => Some(
                err.retry_after()
                    .unwrap_or(self.config.rate_limit_default)
                    .min(MAX_COOLDOWN),
            ),
            ErrorType::Auth | ErrorType::NotFound | ErrorType::QuotaExhausted => {
                Some(self.config.duration)
            }
            _ => {
                let calls = health.recent.len();
                let failures = health.recent.iter().filter(|(_, failed)| *failed).count();
                let over = calls >= self.config.min_calls as usize
                    && failures as f64 / calls as f64 > self.config.failure_threshold;
                over.then_some(self.config.duration)
            }
        }?;
        let until = now + cooldown;
        if health.until.is_none_or(|current| current < until) {
            health.until = Some(until);
        }
        // A fresh start after the cooldown: old failures must not re-trigger it at once.
        health.recent.clear();
        Some(cooldown)
    }
}

fn push(health: &mut Health, config: &CooldownConfig, now: Instant, failed: bool) {
    while health
        .recent
        .front()
        .is_some_and(|(at, _)| now.duration_since(*at) > config.window)
        || health.recent.len() >= MAX_WINDOW_ENTRIES
    {
        health.recent.pop_front();
    }
    health.recent.push_back((now, failed));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cooldowns() -> Cooldowns {
        Cooldowns::new(CooldownConfig {
            rate_limit_default: Duration::from_secs(5),
            failure_threshold: 0.5,
            min_calls: 4,
            window: Duration::from_secs(60),
            duration: Duration::from_secs(30),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_carries_the_cooldowns_of_the_deployments_it_keeps() {
        let c = cooldowns();
        let err = ProviderError::new(ErrorType::Auth, "x");
        c.record_failure(1, &err);
        c.record_failure(2, &err);
        let carried = Cooldowns::carried(c.config.clone(), &c, &[(1, 7)].into_iter().collect());
        assert_eq!(carried.remaining(7), Some(Duration::from_secs(30)));
        assert_eq!(carried.remaining(1), None);
        assert_eq!(carried.remaining(2), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_cools_until_its_retry_after() {
        let c = cooldowns();
        let err = ProviderError::new(ErrorType::RateLimited, "x")
            .with_retry_after(Some(Duration::from_secs(3)));
        assert_eq!(c.record_failure(1, &err), Some(Duration::from_secs(3)));
        assert_eq!(c.remaining(1), Some(Duration::from_secs(3)));
        assert_eq!(c.remaining(2), None);
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(c.remaining(1), None);
        let no_hint = ProviderError::new(ErrorType::RateLimited, "x");
        assert_eq!(c.record_failure(1, &no_hint), Some(Duration::from_secs(5)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_share_over_the_threshold_cools_down() {
        let c = cooldowns();
        let server = ProviderError::new(ErrorType::Server, "x");
        c.record_success(1);
        assert_eq!(c.record_failure(1, &server), None);
        assert_eq!(c.record_failure(1, &server), None); // 2/3 but under min_calls
        assert_eq!(c.record_failure(1, &server), Some(Duration::from_secs(30))); // 3/4
        assert!(c.remaining(1).is_some());
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(c.remaining(1), None);
        assert_eq!(c.record_failure(1, &server), None, "the window restarted");
    }

    #[tokio::test(start_paused = true)]
    async fn old_failures_leave_the_window_and_request_errors_do_not_count() {
        let c = cooldowns();
        let server = ProviderError::new(ErrorType::Server, "x");
        for _ in 0..3 {
            c.record_failure(1, &server);
        }
        tokio::time::advance(Duration::from_secs(61)).await;
        c.record_success(1);
        c.record_success(1);
        c.record_success(1);
        assert_eq!(c.record_failure(1, &server), None, "1 of 4 in the window");
        let bad = ProviderError::new(ErrorType::InvalidRequest, "x");
        for _ in 0..10 {
            assert_eq!(c.record_failure(2, &bad), None);
        }
        let auth = ProviderError::new(ErrorType::Auth, "x");
        assert_eq!(c.record_failure(3, &auth), Some(Duration::from_secs(30)));
    }
}
