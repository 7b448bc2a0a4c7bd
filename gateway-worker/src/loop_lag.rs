//! How late the worker's runtime fires its timers: the sign that it has more work than CPU.
//!
//! Interactive jobs have their own consumer and slots, but they share the runtime, the
//! broker and the machine with batch jobs. A batch backlog pulled as fast as slots free up
//! saturates them, and an interactive job's message then waits behind batch work (measured:
//! p99 queue wait 2 ms idle, 26 ms under a 50,000-job backlog). So while interactive jobs
//! are around, a batch loop looks here before each pull and waits while the runtime runs
//! late: batch throughput gives way to interactive latency, not the other way round. With
//! no interactive job for [`INTERACTIVE_RECENT`], batch work runs flat out and nothing is
//! measured (an idle worker does not tick).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often the lateness is measured.
const TICK: Duration = Duration::from_millis(2);
/// Later than this (beyond the timer's own millisecond): the runtime is saturated.
const LATE: Duration = Duration::from_millis(2);
/// A batch pull waits at most this long for the runtime to catch up: batch work slows
/// down, it never stops.
const MAX_YIELD: Duration = Duration::from_millis(100);
/// Batch pulls give way while an interactive job was picked up this recently.
const INTERACTIVE_RECENT: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct LoopLag {
    started: Instant,
    /// The last tick's lateness, µs.
    late_us: AtomicU64,
    /// When an interactive job was last picked up, ms since `started` (0: never).
    interactive_at_ms: AtomicU64,
    /// Wakes the measuring from its idle sleep: an idle worker does not tick.
    woken: Notify,
}

impl Default for LoopLag {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            late_us: AtomicU64::new(0),
            interactive_at_ms: AtomicU64::new(0),
            woken: Notify::new(),
        }
    }
}

impl LoopLag {
    /// Measures until `stop`, while interactive jobs are around (no ticks otherwise).
    pub async fn measure(&self, stop: CancellationToken) {
        while !stop.is_cancelled() {
            if !self.interactive_recent() {
                self.late_us.store(0, Ordering::Relaxed);
                tokio::select! {
                    () = self.woken.notified() => {}
                    () = stop.cancelled() => return,
                }
            }
            let before = Instant::now();
            tokio::select! {
                () = tokio::time::sleep(TICK) => {}
                () = stop.cancelled() => return,
            }
            let late = before.elapsed().saturating_sub(TICK);
            self.late_us.store(micros(late), Ordering::Relaxed);
        }
    }

    /// An interactive job was picked up.
    pub fn interactive_seen(&self) {
        let at = micros(self.started.elapsed()) / 1000;
        if !self.interactive_recent() {
            self.woken.notify_one();
        }
        self.interactive_at_ms.store(at.max(1), Ordering::Relaxed);
    }

    /// Waits (at most [`MAX_YIELD`]) while the runtime is late and interactive jobs are
    /// around; returns how long it waited.
    pub async fn give_way(&self) -> Duration {
        let start = Instant::now();
        while self.lagging() && self.interactive_recent() && start.elapsed() < MAX_YIELD {
            tokio::time::sleep(TICK).await;
        }
        start.elapsed()
    }

    fn lagging(&self) -> bool {
        self.late_us.load(Ordering::Relaxed) > micros(LATE + Duration::from_millis(1))
    }

    fn interactive_recent(&self) -> bool {
        let at = self.interactive_at_ms.load(Ordering::Relaxed);
        let now = micros(self.started.elapsed()) / 1000;
        at > 0 && now.saturating_sub(at) < micros(INTERACTIVE_RECENT) / 1000
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn batch_gives_way_only_while_late_and_interactive_jobs_are_around() {
        let lag = LoopLag::default();
        lag.late_us.store(50_000, Ordering::Relaxed);
        assert_eq!(
            lag.give_way().await,
            Duration::ZERO,
            "no interactive job: no waiting"
        );
        lag.interactive_seen();
        assert!(
            lag.give_way().await >= MAX_YIELD,
            "late with interactive jobs: waits, bounded"
        );
        lag.late_us.store(100, Ordering::Relaxed);
        assert_eq!(lag.give_way().await, Duration::ZERO, "on time: no waiting");
        lag.late_us.store(50_000, Ordering::Relaxed);
        tokio::time::advance(INTERACTIVE_RECENT + Duration::from_millis(1)).await;
        assert_eq!(
            lag.give_way().await,
            Duration::ZERO,
            "interactive jobs long gone"
        );
    }
}
