//! Load generators shared by the scenarios: closed loop and open loop.
//!
//! Closed loop: N tasks, each starting its next operation when the previous one ends, so
//! N operations are always in flight; throughput is what the system sustains at that
//! concurrency. Open loop: operations start at a fixed arrival rate whatever the system
//! does, which is how latency under a given load is measured honestly. A generator that
//! cannot keep up would silently turn an open loop into a closed one, so the open loop
//! reports what it achieved: the rate it really started operations at, how late it was
//! against the schedule, and the backlog (operations still in flight) when it stopped.
//!
//! Both discard a warm-up period: operations started during it are neither timed nor
//! counted, but their failures are (a failure is a failure whenever it happens).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::stats::{Latencies, Summary};

/// The measured part of a run.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub warmup: Duration,
    pub duration: Duration,
}

/// Failures, counted, with the first few messages kept.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Failures {
    pub count: u64,
    pub first: Vec<String>,
}

impl Failures {
    const KEEP: usize = 5;

    /// Longest message kept, in characters.
    const MAX_LEN: usize = 300;

    pub fn add(&mut self, mut message: String) {
        self.count += 1;
        if self.first.len() < Self::KEEP {
            if let Some((cut, _)) = message.char_indices().nth(Self::MAX_LEN) {
                message.truncate(cut);
                message.push_str("...");
            }
            self.first.push(message);
        }
    }

    pub fn merge(&mut self, other: Failures) {
        self.count += other.count;
        for message in other.first {
            if self.first.len() < Self::KEEP {
                self.first.push(message);
            }
        }
    }
}

/// A closed-loop run.
#[derive(Debug)]
pub struct ClosedRun<T> {
    pub concurrency: usize,
    /// Operations that ended within the measured window.
    pub completed: u64,
    pub measured: Duration,
    /// Operations started within the measured window.
    pub latency: Latencies,
    /// Outputs of the operations started within the measured window.
    pub outputs: Vec<T>,
    pub failures: Failures,
}

impl<T> ClosedRun<T> {
    pub fn throughput(&self) -> f64 {
        self.completed as f64 / self.measured.as_secs_f64().max(1e-9)
    }
}

/// Runs `op` in `concurrency` loops for the warm-up and then the measured window.
pub async fn closed_loop<T, F, Fut>(concurrency: usize, window: Window, op: F) -> ClosedRun<T>
where
    T: Send + 'static,
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, String>> + Send + 'static,
{
    let op = Arc::new(op);
    let begin = Instant::now() + window.warmup;
    let end = begin + window.duration;
    let mut tasks = JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let op = Arc::clone(&op);
        tasks.spawn(async move {
            let mut latency = Latencies::new();
            let mut outputs = Vec::new();
            let mut completed = 0u64;
            let mut failures = Failures::default();
            loop {
                let started = Instant::now();
                if started >= end {
                    break;
                }
                let result = op().await;
                let ended = Instant::now();
                match result {
                    Ok(output) => {
                        if started >= begin {
                            latency.record(ended - started);
                            outputs.push(output);
                        }
                        if ended >= begin && ended <= end {
                            completed += 1;
                        }
                    }
                    Err(message) => failures.add(message),
                }
            }
            (latency, outputs, completed, failures)
        });
    }
    let mut run = ClosedRun {
        concurrency,
        completed: 0,
        measured: window.duration,
        latency: Latencies::new(),
        outputs: Vec::new(),
        failures: Failures::default(),
    };
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((latency, outputs, completed, failures)) => {
                run.latency.merge(&latency);
                run.outputs.extend(outputs);
                run.completed += completed;
                run.failures.merge(failures);
            }
            Err(err) => run.failures.add(format!("load task panicked: {err}")),
        }
    }
    run
}

/// An open-loop run.
#[derive(Debug, Serialize)]
pub struct OpenRun {
    pub offered_rate: f64,
    /// Operations started per second within the measured window.
    pub achieved_rate: f64,
    /// Operations that ended within the measured window, per second.
    pub throughput: f64,
    /// Operations started within the measured window, timed from their start to their end.
    pub latency: Summary,
    /// How late the generator started operations against the schedule.
    pub generator_lag: Summary,
    /// Operations in flight when the generator stopped.
    pub backlog_at_end: u64,
    pub max_in_flight: u64,
    /// Operations never started because `max_in_flight` was reached.
    pub skipped: u64,
    /// Operations still running when the drain timeout passed (counted as failures too).
    pub unfinished: u64,
    pub failures: Failures,
}

#[derive(Default)]
struct OpenShared {
    latency: Latencies,
    completed_in_window: u64,
    failures: Failures,
}

/// Starts `op` at `rate` per second (at most `cap` in flight), for the warm-up and the
/// measured window, then waits up to `drain` for the operations still running.
pub async fn open_loop<F, Fut>(
    rate: f64,
    window: Window,
    cap: u64,
    drain: Duration,
    op: F,
) -> OpenRun
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let op = Arc::new(op);
    let shared = Arc::new(Mutex::new(OpenShared::default()));
    let in_flight = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let begin = start + window.warmup;
    let end = begin + window.duration;
    let mut tasks = JoinSet::new();
    let mut lag = Latencies::new();
    let (mut sent, mut started_in_window, mut skipped, mut max_in_flight) =
        (0u64, 0u64, 0u64, 0u64);
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        // Operation k is due at start + k / rate: every one due by now starts now.
        let due = ((now - start).as_secs_f64() * rate) as u64 + 1;
        while sent < due {
            let scheduled = start + Duration::from_secs_f64(sent as f64 / rate);
            sent += 1;
            let measured = scheduled >= begin;
            let current = in_flight.load(Ordering::Relaxed);
            if current >= cap {
                skipped += u64::from(measured);
                continue;
            }
            max_in_flight = max_in_flight.max(current + 1);
            if measured {
                started_in_window += 1;
                lag.record(now.saturating_duration_since(scheduled));
            }
            in_flight.fetch_add(1, Ordering::Relaxed);
            let (op, shared, in_flight) =
                (Arc::clone(&op), Arc::clone(&shared), Arc::clone(&in_flight));
            tasks.spawn(async move {
                let t0 = Instant::now();
                let result = op().await;
                let t1 = Instant::now();
                in_flight.fetch_sub(1, Ordering::Relaxed);
                let mut shared = shared.lock().unwrap_or_else(PoisonError::into_inner);
                match result {
                    Ok(()) => {
                        if measured {
                            shared.latency.record(t1 - t0);
                        }
                        if t1 >= begin && t1 <= end {
                            shared.completed_in_window += 1;
                        }
                    }
                    Err(message) => shared.failures.add(message),
                }
            });
        }
        while tasks.try_join_next().is_some() {}
        let next = start + Duration::from_secs_f64(sent as f64 / rate);
        tokio::time::sleep_until(next.min(end)).await;
    }
    let backlog_at_end = in_flight.load(Ordering::Relaxed);
    let drained =
        tokio::time::timeout(drain, async { while tasks.join_next().await.is_some() {} }).await;
    let unfinished = if drained.is_err() {
        tasks.len() as u64
    } else {
        0
    };
    tasks.abort_all();
    let shared = std::mem::take(&mut *shared.lock().unwrap_or_else(PoisonError::into_inner));
    let mut failures = shared.failures;
    if unfinished > 0 {
        failures.add(format!(
            "{unfinished} operations had not ended {drain:?} after the load stopped"
        ));
        failures.count += unfinished - 1;
    }
    let secs = window.duration.as_secs_f64().max(1e-9);
    OpenRun {
        offered_rate: rate,
        achieved_rate: started_in_window as f64 / secs,
        throughput: shared.completed_in_window as f64 / secs,
        latency: shared.latency.summary(),
        generator_lag: lag.summary(),
        backlog_at_end,
        max_in_flight,
        skipped,
        unfinished,
        failures,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(ms: u64) -> Window {
        Window {
            warmup: Duration::from_millis(20),
            duration: Duration::from_millis(ms),
        }
    }

    #[tokio::test]
    async fn closed_loop_keeps_n_in_flight_and_counts_failures() {
        let calls = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&calls);
        let run = closed_loop(4, window(200), move || {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                if n == 3 {
                    Err("boom".to_owned())
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        // 4 loops of 10 ms operations for 200 ms: at most 80 completions (fewer on a
        // busy machine).
        assert!((1..=84).contains(&run.completed), "{}", run.completed);
        assert_eq!(run.failures.count, 1);
        assert_eq!(run.failures.first, vec!["boom".to_owned()]);
        assert!(run.latency.summary().p50_us >= 10_000);
        assert_eq!(run.outputs.len() as u64, run.latency.count());
    }

    #[tokio::test]
    async fn open_loop_starts_at_the_rate_and_drains() {
        let run = open_loop(
            500.0,
            window(300),
            10_000,
            Duration::from_secs(5),
            || async {
                tokio::time::sleep(Duration::from_millis(5)).await;
                Ok(())
            },
        )
        .await;
        // The generator catches up when it wakes late, so it starts what was due.
        assert!((250.0..=600.0).contains(&run.achieved_rate), "{run:?}");
        assert_eq!((run.unfinished, run.failures.count, run.skipped), (0, 0, 0));
        assert!(run.latency.count > 0);
    }

    #[tokio::test]
    async fn open_loop_reports_skips_and_unfinished_work() {
        let run = open_loop(
            1000.0,
            window(100),
            5,
            Duration::from_millis(50),
            || async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(())
            },
        )
        .await;
        assert_eq!(run.max_in_flight, 5);
        assert!(run.skipped > 20, "{run:?}");
        assert_eq!(run.unfinished, 5);
        assert_eq!(run.failures.count, 5);
    }
}
