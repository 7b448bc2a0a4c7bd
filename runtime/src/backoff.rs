//! Growing waits between tries: the one backoff every llmq retry loop uses.
//!
//! Each loop keeps its own sequence (a provider retry starts at 0.5 s, a durable publish at
//! 50 ms, a consumer loop's pull at 100 ms), because what it waits for differs; what they
//! share is how a sequence grows, where it stops growing, how a loop steps through it and
//! starts over after a success, and a wait that a stop token ends early. A [`Backoff`] is
//! the sequence, [`Delays`] a loop's place in it, [`retry`] the plain "try, wait, try
//! again" loop.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// A sequence of delays between tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff(Sequence);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sequence {
    /// `first`, doubling with each retry, never more than `max`; it never runs out.
    Doubling { first: Duration, max: Duration },
    /// These delays in order; then no more tries.
    Steps(&'static [Duration]),
}

impl Backoff {
    /// `first`, then twice that, and so on, capped at `max`, for as many retries as the
    /// loop makes.
    pub const fn doubling(first: Duration, max: Duration) -> Backoff {
        Backoff(Sequence::Doubling { first, max })
    }

    /// Exactly these delays, one retry after each.
    pub const fn steps(delays: &'static [Duration]) -> Backoff {
        Backoff(Sequence::Steps(delays))
    }

    /// The wait before retry `retry` (0-based: the wait after the first failure is
    /// `delay(0)`). Past the end of a [`Backoff::steps`], the last step.
    pub fn delay(&self, retry: u32) -> Duration {
        match self.0 {
            Sequence::Doubling { first, max } => first
                .saturating_mul(2u32.saturating_pow(retry.min(31)))
                .min(max),
            Sequence::Steps(steps) => {
                let index = usize::try_from(retry).unwrap_or(usize::MAX);
                steps
                    .get(index)
                    .or(steps.last())
                    .copied()
                    .unwrap_or_default()
            }
        }
    }

    /// How many retries the sequence allows; `None`: as many as the loop wants.
    pub fn retries(&self) -> Option<u32> {
        match self.0 {
            Sequence::Doubling { .. } => None,
            Sequence::Steps(steps) => Some(u32::try_from(steps.len()).unwrap_or(u32::MAX)),
        }
    }

    /// A loop's place in the sequence, at its start.
    pub fn delays(self) -> Delays {
        Delays {
            backoff: self,
            retries: 0,
        }
    }
}

/// Where a retry loop stands in its [`Backoff`]: each failure takes the next delay, a
/// success starts the sequence over ([`Delays::reset`]).
#[derive(Debug, Clone)]
pub struct Delays {
    backoff: Backoff,
    retries: u32,
}

impl Delays {
    /// Back to the first delay (after a success).
    pub fn reset(&mut self) {
        self.retries = 0;
    }

    /// Sleeps the next delay, unless `stop` fires first. False when stopped, or when the
    /// sequence has no delay left (then without sleeping).
    pub async fn wait(&mut self, stop: &CancellationToken) -> bool {
        let Some(delay) = self.next() else {
            return false;
        };
        tokio::select! {
            () = tokio::time::sleep(delay) => true,
            () = stop.cancelled() => false,
        }
    }
}

impl Iterator for Delays {
    type Item = Duration;

    /// The wait before the next retry, counting it; `None` once a sequence of steps is
    /// spent.
    fn next(&mut self) -> Option<Duration> {
        if self
            .backoff
            .retries()
            .is_some_and(|most| self.retries >= most)
        {
            return None;
        }
        let delay = self.backoff.delay(self.retries);
        self.retries = self.retries.saturating_add(1);
        Some(delay)
    }
}

/// Runs `attempt` until it succeeds or `backoff` has no delay left, sleeping each delay
/// between tries; the last error when it never succeeded.
pub async fn retry<T, E, F>(backoff: Backoff, mut attempt: impl FnMut() -> F) -> Result<T, E>
where
    F: Future<Output = Result<T, E>>,
{
    let mut delays = backoff.delays();
    loop {
        let err = match attempt().await {
            Ok(value) => return Ok(value),
            Err(err) => err,
        };
        match delays.next() {
            Some(delay) => tokio::time::sleep(delay).await,
            None => return Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use tokio::time::Instant;

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    const STEPS: &[Duration] = &[
        Duration::from_millis(50),
        Duration::from_millis(200),
        Duration::from_millis(1000),
    ];

    #[test]
    fn doubling_doubles_up_to_its_cap_and_never_runs_out() {
        let backoff = Backoff::doubling(ms(100), Duration::from_secs(5));
        let first: Vec<_> = backoff.delays().take(8).collect();
        assert_eq!(first, [100, 200, 400, 800, 1600, 3200, 5000, 5000].map(ms));
        assert_eq!(backoff.delay(u32::MAX), Duration::from_secs(5));
        assert_eq!(backoff.retries(), None);
    }

    #[test]
    fn steps_are_taken_in_order_then_run_out() {
        let backoff = Backoff::steps(STEPS);
        assert_eq!(
            backoff.delays().collect::<Vec<_>>(),
            [50, 200, 1000].map(ms)
        );
        assert_eq!(backoff.retries(), Some(3));
        assert_eq!(backoff.delay(7), ms(1000));
        assert_eq!(Backoff::steps(&[]).delays().next(), None);
    }

    #[test]
    fn a_reset_starts_the_sequence_over() {
        let mut delays = Backoff::doubling(ms(50), Duration::from_secs(2)).delays();
        assert_eq!(delays.next(), Some(ms(50)));
        assert_eq!(delays.next(), Some(ms(100)));
        delays.reset();
        assert_eq!(delays.next(), Some(ms(50)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_sleeps_the_next_delay_unless_stopped() {
        let stop = CancellationToken::new();
        let mut delays = Backoff::doubling(ms(100), Duration::from_secs(5)).delays();
        let start = Instant::now();
        assert!(delays.wait(&stop).await);
        assert!(delays.wait(&stop).await);
        assert_eq!(start.elapsed(), ms(300));
        stop.cancel();
        assert!(!delays.wait(&stop).await);
        assert_eq!(start.elapsed(), ms(300), "a stopped wait returns at once");
        let mut spent = Backoff::steps(&[]).delays();
        assert!(!spent.wait(&CancellationToken::new()).await);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_tries_once_more_after_each_step() {
        let tries = AtomicU32::new(0);
        let start = Instant::now();
        let failing = || async {
            tries.fetch_add(1, Ordering::Relaxed);
            Err::<(), _>("no")
        };
        assert_eq!(retry(Backoff::steps(STEPS), failing).await, Err("no"));
        assert_eq!(tries.load(Ordering::Relaxed), 4);
        assert_eq!(start.elapsed(), ms(1250));

        let tries = AtomicU32::new(0);
        let start = Instant::now();
        let second = || async {
            let n = tries.fetch_add(1, Ordering::Relaxed);
            if n == 0 { Err("not yet") } else { Ok(n) }
        };
        assert_eq!(retry(Backoff::steps(STEPS), second).await, Ok(1));
        assert_eq!(start.elapsed(), ms(50));
    }
}
