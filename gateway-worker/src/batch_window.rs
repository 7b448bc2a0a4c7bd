//! Batch jobs give way to interactive ones.
//!
//! `batch_share` keeps slots free for interactive jobs, but slots are not all that batch
//! work takes. A worker that runs its whole batch share against a fast provider saturates
//! its CPU and the broker's. An interactive job then waits in line behind batch work in
//! both event loops. Measured with `bench priority`: p99 queue wait 1 ms idle, 16 ms under a
//! 50,000-job backlog, and no difference from idle with a tenth of the batch slots. The
//! right number of batch slots depends on the provider's speed and the machine, so it is
//! not configured: the batch tier runs under a window that follows what interactive jobs
//! see, the way a delay-based congestion control (LEDBAT, TCP Vegas) follows round-trip
//! times.
//!
//! - Each interactive job reports its queue wait on its first delivery. The wait above the
//!   lowest one seen lately is the delay that other work added. Taking the lowest as the
//!   zero absorbs a constant clock skew between producer and worker.
//! - Over [`TARGET`], the window is cut in proportion to the excess (at most to an eighth
//!   at once). It is not cut again before the cut has taken effect, that is before the
//!   batch jobs over the window have ended.
//! - At or under it, and while batch jobs fill the window, the window grows by one.
//! - After [`QUIET`] with no interactive job, the whole share is open again: batch work on
//!   its own runs at full speed.
//!
//! The window is a semaphore whose permits are added or forgotten. A cut below the permits
//! in use becomes a debt: the permits of the next batch jobs that end are forgotten
//! instead of returned.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::metrics;

/// The delay over the floor that interactive jobs tolerate from batch work.
pub const TARGET: Duration = Duration::from_millis(2);
/// How long without an interactive job before batch work gets its whole share back.
pub const QUIET: Duration = Duration::from_secs(2);
/// How long one floor period lasts; the floor is the lowest wait of this period and
/// the one before.
const FLOOR_PERIOD: Duration = Duration::from_secs(30);
/// The deepest single cut: to an eighth of the window.
const DEEPEST_CUT: usize = 8;
/// A calm interactive job grows a filled window by a sixteenth (at least by one).
const GROWTH: usize = 16;

/// The batch tier's share of a worker's slots, narrowed while interactive jobs wait.
#[derive(Debug)]
pub struct BatchWindow {
    max: usize,
    min: usize,
    permits: Arc<Semaphore>,
    /// Permits in use beyond the window: forgotten, not returned, when their jobs end.
    debt: AtomicUsize,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    window: usize,
    floor: Floor,
    last_interactive: Option<Instant>,
}

/// The lowest queue wait of the current period and the one before, in signed
/// microseconds (a producer's clock ahead of the worker's gives negative waits).
#[derive(Debug)]
struct Floor {
    current: i64,
    previous: i64,
    since: Instant,
}

/// A batch job's place in the window; given back (or forgotten, to pay a cut) on drop.
#[derive(Debug)]
pub struct BatchPermit {
    permit: Option<OwnedSemaphorePermit>,
    window: Arc<BatchWindow>,
}

impl BatchWindow {
    /// A window of `max` batch slots, fully open.
    pub fn new(max: usize) -> Arc<BatchWindow> {
        let max = max.max(1);
        metrics::batch_window(max);
        Arc::new(BatchWindow {
            max,
            min: (max / 64).max(1),
            permits: Arc::new(Semaphore::new(max)),
            debt: AtomicUsize::new(0),
            state: Mutex::new(State {
                window: max,
                floor: Floor::new(),
                last_interactive: None,
            }),
        })
    }

    /// A place in the window, waiting for one.
    pub async fn acquire(self: &Arc<Self>) -> Option<BatchPermit> {
        loop {
            let reopen_at = self.reopen_if_quiet();
            let acquired = match reopen_at {
                None => Arc::clone(&self.permits).acquire_owned().await,
                Some(at) => tokio::select! {
                    acquired = Arc::clone(&self.permits).acquire_owned() => acquired,
                    () = tokio::time::sleep_until(at) => continue,
                },
            };
            return acquired.ok().map(|permit| self.wrap(permit));
        }
    }

    /// A place in the window if one is free now.
    pub fn try_acquire(self: &Arc<Self>) -> Option<BatchPermit> {
        self.reopen_if_quiet();
        let permit = Arc::clone(&self.permits).try_acquire_owned().ok()?;
        Some(self.wrap(permit))
    }

    /// An interactive job was picked up on its first delivery, `waited_us` after its
    /// producer submitted it (by the two machines' clocks).
    pub fn interactive_waited(&self, waited_us: i64) {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.last_interactive = Some(now);
        let excess = waited_us.saturating_sub(state.floor.update(waited_us, now));
        let excess = Duration::from_micros(u64::try_from(excess).unwrap_or(0));
        if excess > TARGET {
            if self.debt.load(Ordering::Acquire) == 0 {
                let cut = cut_window(state.window, excess);
                self.resize(&mut state, cut);
            }
        } else if self.filled() {
            let grown = state.window + (state.window / GROWTH).max(1);
            self.resize(&mut state, grown);
        }
    }

    /// The window now: how many batch jobs may run at once.
    pub fn window(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .window
    }

    fn wrap(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> BatchPermit {
        BatchPermit {
            permit: Some(permit),
            window: Arc::clone(self),
        }
    }

    /// Opens the whole share if no interactive job came for [`QUIET`]; otherwise, while
    /// the window is narrowed, when that will be.
    fn reopen_if_quiet(&self) -> Option<Instant> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.window == self.max {
            return None;
        }
        let reopen_at = state
            .last_interactive
            .map_or_else(Instant::now, |at| at + QUIET);
        if reopen_at > Instant::now() {
            return Some(reopen_at);
        }
        self.resize(&mut state, self.max);
        None
    }

    /// Every place in the window taken, and no cut still being paid.
    fn filled(&self) -> bool {
        self.permits.available_permits() == 0 && self.debt.load(Ordering::Acquire) == 0
    }

    /// Moves the window to `to` (within min and max). Called with the state locked, so
    /// resizes never interleave.
    fn resize(&self, state: &mut State, to: usize) {
        let to = to.clamp(self.min, self.max);
        if to < state.window {
            let cut = state.window - to;
            let forgotten = self.permits.forget_permits(cut);
            self.debt.fetch_add(cut - forgotten, Ordering::AcqRel);
        } else if to > state.window {
            let mut grow = state.window.abs_diff(to);
            while grow > 0 && self.pay_debt() {
                grow -= 1;
            }
            self.permits.add_permits(grow);
        }
        state.window = to;
        metrics::batch_window(to);
    }

    /// Takes one permit off the debt; false if there is none.
    fn pay_debt(&self) -> bool {
        self.debt
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |debt| {
                debt.checked_sub(1)
            })
            .is_ok()
    }
}

/// The window after a wait `excess` over the floor: cut in proportion to how far over
/// [`TARGET`] the wait was, by half at least and to an eighth at most.
fn cut_window(window: usize, excess: Duration) -> usize {
    let ratio = excess.as_secs_f64() / TARGET.as_secs_f64();
    let divisor = (ratio.ceil() as usize).clamp(2, DEEPEST_CUT);
    window / divisor
}

impl Floor {
    fn new() -> Floor {
        Floor {
            current: i64::MAX,
            previous: i64::MAX,
            since: Instant::now(),
        }
    }

    /// Counts `waited_us` in, and returns the floor.
    fn update(&mut self, waited_us: i64, now: Instant) -> i64 {
        if now.duration_since(self.since) >= FLOOR_PERIOD {
            self.previous = self.current;
            self.current = waited_us;
            self.since = now;
        } else {
            self.current = self.current.min(waited_us);
        }
        self.current.min(self.previous)
    }
}

impl Drop for BatchPermit {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take()
            && self.window.pay_debt()
        {
            permit.forget();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALM_US: i64 = 300;

    fn congested(by: Duration) -> i64 {
        CALM_US + i64::try_from(by.as_micros()).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_interactive_job_cuts_the_window_in_proportion_to_its_wait() {
        let window = BatchWindow::new(512);
        window.interactive_waited(CALM_US);
        assert_eq!(
            window.window(),
            512,
            "a wait at the floor leaves an idle window"
        );
        window.interactive_waited(congested(Duration::from_millis(5)));
        assert_eq!(window.window(), 512 / 3, "2.5 × the target: a third");
        let window = BatchWindow::new(512);
        window.interactive_waited(CALM_US);
        window.interactive_waited(congested(Duration::from_millis(40)));
        assert_eq!(
            window.window(),
            64,
            "far over the target: an eighth, no deeper"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_cut_below_the_places_in_use_is_paid_by_the_jobs_that_end() {
        let window = BatchWindow::new(64);
        let held: Vec<_> = (0..64).map(|_| window.try_acquire().unwrap()).collect();
        window.interactive_waited(CALM_US);
        window.interactive_waited(congested(Duration::from_millis(40)));
        assert_eq!(window.window(), 8);
        window.interactive_waited(congested(Duration::from_millis(40)));
        assert_eq!(
            window.window(),
            8,
            "no second cut before the first took effect"
        );
        let mut held = held.into_iter();
        for permit in held.by_ref().take(56) {
            drop(permit);
            assert!(window.try_acquire().is_none(), "an ended job pays the cut");
        }
        drop(held.next());
        let taken = window
            .try_acquire()
            .expect("the cut is paid: a place is free");
        assert!(window.try_acquire().is_none());
        drop(taken);
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_grows_by_one_per_calm_job_only_while_batch_jobs_fill_it() {
        let window = BatchWindow::new(64);
        window.interactive_waited(CALM_US);
        window.interactive_waited(congested(Duration::from_millis(40)));
        assert_eq!(window.window(), 8);
        window.interactive_waited(CALM_US);
        assert_eq!(window.window(), 8, "nothing fills the window: it stays");
        let held: Vec<_> = (0..8).map(|_| window.try_acquire().unwrap()).collect();
        window.interactive_waited(CALM_US);
        window.interactive_waited(CALM_US);
        assert_eq!(window.window(), 9, "grown once, then not filled again");
        drop(held);
    }

    #[tokio::test(start_paused = true)]
    async fn the_whole_share_reopens_after_a_quiet_spell_even_for_a_waiting_batch_job() {
        let window = BatchWindow::new(64);
        window.interactive_waited(CALM_US);
        window.interactive_waited(congested(Duration::from_millis(40)));
        let held: Vec<_> = (0..8).map(|_| window.try_acquire().unwrap()).collect();
        let waiting = tokio::spawn({
            let window = Arc::clone(&window);
            async move { window.acquire().await.is_some() }
        });
        tokio::time::sleep(QUIET - Duration::from_millis(10)).await;
        assert!(
            !waiting.is_finished(),
            "still narrowed before the quiet spell ends"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(waiting.await.unwrap(), "the waiting batch job got a place");
        assert_eq!(window.window(), 64);
        drop(held);
    }

    #[tokio::test(start_paused = true)]
    async fn a_producer_clock_ahead_of_the_worker_still_shows_the_added_delay() {
        let window = BatchWindow::new(512);
        window.interactive_waited(-20_000);
        window.interactive_waited(-20_000 + 1_000);
        assert_eq!(
            window.window(),
            512,
            "1 ms over the floor is within the target"
        );
        window.interactive_waited(-20_000 + 16_000);
        assert_eq!(window.window(), 64);
    }

    #[test]
    fn the_floor_forgets_a_period_it_has_left_behind() {
        let mut floor = Floor::new();
        let start = floor.since;
        assert_eq!(floor.update(100, start), 100);
        assert_eq!(floor.update(500, start + FLOOR_PERIOD), 100);
        assert_eq!(floor.update(600, start + FLOOR_PERIOD * 2), 500);
    }
}
