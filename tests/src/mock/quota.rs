//! A provider's own request quota, as the rate-limit headers of every response report it.
//!
//! Real providers count requests per model in a window and say on every response how
//! many are left and when the count resets (OpenAI: Go durations; Azure: integer seconds
//! under the same names; Anthropic: an RFC 3339 instant). With [`Quota`] set, the mock
//! does the same: the response that takes the last request of a window says
//! `remaining 0` with the reset, and a request over the quota gets the format's 429. A
//! gateway that honours the headers never meets that 429.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::record::lock;

/// Requests per model per window, counted from the window's first request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    pub requests: u64,
    pub window: Duration,
}

/// What one request found of its model's quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct QuotaState {
    pub limit: u64,
    pub remaining: u64,
    pub resets_in: Duration,
    /// The request was over the quota (it gets a 429).
    pub over: bool,
}

/// The current window of every model.
#[derive(Debug, Default)]
pub(crate) struct QuotaBook {
    windows: Mutex<HashMap<String, (Instant, u64)>>,
}

impl QuotaBook {
    /// Counts a request for `model` at `now`.
    pub(crate) fn take(&self, quota: Quota, model: &str, now: Instant) -> QuotaState {
        let mut windows = lock(&self.windows);
        let (start, used) = windows.entry(model.to_owned()).or_insert((now, 0));
        if now >= *start + quota.window {
            *start = now;
            *used = 0;
        }
        let over = *used >= quota.requests;
        if !over {
            *used += 1;
        }
        QuotaState {
            limit: quota.requests,
            remaining: quota.requests - *used,
            resets_in: (*start + quota.window).saturating_duration_since(now),
            over,
        }
    }
}

/// Go's `time.Duration.String()` as OpenAI sends it: `12ms`, `1.5s`, `6m0s`, `1h2m3s`
/// (to the millisecond, rounded up: a client that waits that long finds the reset done).
pub(crate) fn go_duration(duration: Duration) -> String {
    let millis = duration.as_micros().div_ceil(1000);
    if millis == 0 {
        return "0s".to_owned();
    }
    if millis < 1000 {
        return format!("{millis}ms");
    }
    let (hours, rest) = (millis / 3_600_000, millis % 3_600_000);
    let (minutes, rest) = (rest / 60_000, rest % 60_000);
    let seconds = format!("{}.{:03}", rest / 1000, rest % 1000);
    let seconds = seconds.trim_end_matches('0').trim_end_matches('.');
    match (hours, minutes) {
        (0, 0) => format!("{seconds}s"),
        (0, m) => format!("{m}m{seconds}s"),
        (h, m) => format!("{h}h{m}m{seconds}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_as_go_prints_them() {
        assert_eq!(go_duration(Duration::from_millis(12)), "12ms");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_secs(360)), "6m0s");
        assert_eq!(go_duration(Duration::from_secs(3723)), "1h2m3s");
        assert_eq!(go_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn the_last_request_of_a_window_reports_zero_and_the_next_is_over() {
        let book = QuotaBook::default();
        let quota = Quota {
            requests: 2,
            window: Duration::from_secs(1),
        };
        let t0 = Instant::now();
        assert_eq!(book.take(quota, "m", t0).remaining, 1);
        let last = book.take(quota, "m", t0 + Duration::from_millis(100));
        assert_eq!((last.remaining, last.over), (0, false));
        assert_eq!(last.resets_in, Duration::from_millis(900));
        assert!(book.take(quota, "m", t0 + Duration::from_millis(200)).over);
        assert!(!book.take(quota, "other", t0).over, "per model");
        let next = book.take(quota, "m", t0 + Duration::from_secs(1));
        assert_eq!((next.remaining, next.over), (1, false));
    }
}
