//! Latency percentiles.
//!
//! Unsigned latencies go into an HDR histogram (3 significant digits, microseconds up to
//! an hour): recording is O(1) and merging per-task histograms is exact, so a closed loop
//! with 256 tasks needs no shared lock. Signed differences (a producer's inter-arrival
//! minus the mock's inter-write can be negative) are few and kept as plain samples.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// The largest latency a histogram tracks: one hour, in microseconds.
const MAX_US: u64 = 3_600_000_000;

/// Latencies in microseconds.
#[derive(Debug, Clone)]
pub struct Latencies {
    hist: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    pub fn new() -> Self {
        // Bounds and precision are constants that hdrhistogram accepts.
        let hist = Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds");
        Self { hist }
    }

    pub fn record(&mut self, latency: Duration) {
        let us = (latency.as_micros() as u64).clamp(1, MAX_US);
        self.hist.saturating_record(us);
    }

    pub fn record_us(&mut self, us: u64) {
        self.hist.saturating_record(us.clamp(1, MAX_US));
    }

    pub fn merge(&mut self, other: &Latencies) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.hist.add(&other.hist);
    }

    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    pub fn summary(&self) -> Summary {
        if self.hist.is_empty() {
            return Summary::default();
        }
        let q = |q: f64| self.hist.value_at_quantile(q) as i64;
        Summary {
            count: self.hist.len(),
            mean_us: self.hist.mean().round() as i64,
            p50_us: q(0.50),
            p90_us: q(0.90),
            p99_us: q(0.99),
            max_us: self.hist.max() as i64,
        }
    }
}

/// Percentiles of one set of samples, in microseconds (signed: differences can be
/// negative).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub count: u64,
    pub mean_us: i64,
    pub p50_us: i64,
    pub p90_us: i64,
    pub p99_us: i64,
    pub max_us: i64,
}

impl Summary {
    /// Percentiles of signed samples (nearest rank).
    pub fn of_signed(mut samples: Vec<i64>) -> Summary {
        if samples.is_empty() {
            return Summary::default();
        }
        samples.sort_unstable();
        let n = samples.len();
        let at = |q: f64| samples[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
        let sum: i128 = samples.iter().map(|&s| i128::from(s)).sum();
        Summary {
            count: n as u64,
            mean_us: (sum / n as i128) as i64,
            p50_us: at(0.50),
            p90_us: at(0.90),
            p99_us: at(0.99),
            max_us: samples[n - 1],
        }
    }

    /// Each percentile minus `us` (a fixed service time): what the system added.
    pub fn minus(&self, us: i64) -> Summary {
        Summary {
            count: self.count,
            mean_us: self.mean_us - us,
            p50_us: self.p50_us - us,
            p90_us: self.p90_us - us,
            p99_us: self.p99_us - us,
            max_us: self.max_us - us,
        }
    }
}

/// The median of `values` (the lower one of an even count); `None` if empty.
pub fn median<T: Copy + PartialOrd>(values: &[T]) -> Option<T> {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    sorted.get(sorted.len().saturating_sub(1) / 2).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_percentiles_are_within_precision() {
        let mut l = Latencies::new();
        for us in 1..=1000 {
            l.record(Duration::from_micros(us));
        }
        let s = l.summary();
        assert_eq!(s.count, 1000);
        assert!((499..=501).contains(&s.p50_us), "{s:?}");
        assert!((989..=991).contains(&s.p99_us), "{s:?}");
        assert_eq!(s.max_us, 1000);
        let mut other = Latencies::new();
        other.record(Duration::from_secs(2));
        l.merge(&other);
        assert_eq!(l.count(), 1001);
        assert!(l.summary().max_us >= 1_999_000);
    }

    #[test]
    fn signed_percentiles_use_nearest_rank() {
        let s = Summary::of_signed(vec![5, -3, 1, 2, 4, 3, -1, 0, 10, 7]);
        assert_eq!((s.count, s.p50_us, s.p90_us, s.max_us), (10, 2, 7, 10));
        assert_eq!(Summary::of_signed(Vec::new()), Summary::default());
        assert_eq!(s.minus(2).p50_us, 0);
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4, 1, 3, 2]), Some(2));
        assert_eq!(median::<u64>(&[]), None);
    }
}
