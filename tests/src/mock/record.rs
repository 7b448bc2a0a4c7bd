//! What the mock saw: requests, concurrency, disconnects, token timing.
//!
//! Tests assert on these numbers ("the worker never had more than 4 requests in flight",
//! "the cancelled stream was really closed"), so they are counted where the truth is: a
//! [`Flight`] guard lives exactly as long as hyper holds the response, and its drop tells a
//! finished response from one the client abandoned. Waiters are woken through a `Notify`
//! on every change; nothing polls.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use tokio::sync::Notify;

use super::faults::Fault;

/// One request as the mock received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub path: String,
    pub query: Option<String>,
    /// Header names lowercased, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The JSON body (`Null` if it was not JSON).
    pub body: serde_json::Value,
    pub format: WireFormat,
    /// Upstream model (Azure: deployment id; Gemini: path model); empty if absent.
    pub model: String,
    /// Text of the last user message.
    pub prompt: String,
    pub stream: bool,
    /// The key the request carried, in its format's key header (OpenAI: without
    /// `Bearer `), accepted or not. Compare it; never print it.
    pub key: Option<String>,
    /// The fault applied to this request (none for requests rejected before fault
    /// selection, e.g. a wrong key).
    pub fault: Option<Fault>,
    pub received_at: Instant,
    /// The same instant by the wall clock (fleet limits' windows are aligned to it).
    pub received_at_wall: std::time::SystemTime,
}

impl RecordedRequest {
    /// The value of header `name` (lowercase), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The provider API a request was addressed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WireFormat {
    OpenAi,
    Azure,
    Anthropic,
    Gemini,
}

impl WireFormat {
    /// The key in the header this format carries it in (OpenAI: `Authorization` without
    /// `Bearer `, empty when the scheme is another one).
    pub(crate) fn carried_key(self, headers: &HeaderMap) -> Option<&str> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        match self {
            WireFormat::OpenAi => {
                header("authorization").map(|v| v.strip_prefix("Bearer ").unwrap_or(""))
            }
            WireFormat::Azure => header("api-key"),
            WireFormat::Anthropic => header("x-api-key"),
            WireFormat::Gemini => header("x-goog-api-key"),
        }
    }
}

/// Counters and logs shared by the server and the [`super::MockProvider`] handle.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    requests: Mutex<Vec<RecordedRequest>>,
    token_times: Mutex<Vec<(String, Vec<Instant>)>>,
    request_count: AtomicUsize,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    disconnects: AtomicUsize,
    changed: Notify,
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks cannot leave the data half-written (every
    // critical section is a single push/clear), so a poisoned lock is still good.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Stats {
    /// A request has arrived: it is in flight until the returned guard is dropped.
    pub(crate) fn begin(self: &Arc<Self>) -> Flight {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        self.changed.notify_waiters();
        Flight {
            stats: Arc::clone(self),
            completed: false,
            token_times: None,
        }
    }

    /// Counts a request; keeps it unless the mock is lean.
    pub(crate) fn record(&self, request: Option<RecordedRequest>) {
        if let Some(request) = request {
            lock(&self.requests).push(request);
        }
        self.request_count.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    pub(crate) fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.requests).clone()
    }

    /// Whether a recorded request satisfies `matches`.
    pub(crate) fn any_request(&self, matches: impl Fn(&RecordedRequest) -> bool) -> bool {
        lock(&self.requests).iter().any(matches)
    }

    pub(crate) fn token_times(&self) -> Vec<(String, Vec<Instant>)> {
        lock(&self.token_times).clone()
    }

    pub(crate) fn request_count(&self) -> usize {
        self.request_count.load(Ordering::SeqCst)
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    pub(crate) fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    pub(crate) fn disconnects(&self) -> usize {
        self.disconnects.load(Ordering::SeqCst)
    }

    /// Forgets requests, token times and disconnects; the peak restarts from what is in
    /// flight now (requests in flight keep being counted as such).
    pub(crate) fn reset(&self) {
        lock(&self.requests).clear();
        lock(&self.token_times).clear();
        self.request_count.store(0, Ordering::SeqCst);
        self.disconnects.store(0, Ordering::SeqCst);
        self.peak.store(self.in_flight(), Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// Waits until `condition` holds or `timeout` passes; returns whether it holds.
    pub(crate) async fn wait_until(
        &self,
        condition: impl Fn(&Stats) -> bool,
        timeout: Duration,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Register before checking, so a change between the check and the await
            // still wakes us.
            notified.as_mut().enable();
            if condition(self) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return condition(self);
            }
        }
    }
}

/// A request in flight. Dropped by hyper together with the response body: after the last
/// byte ([`Flight::complete`] was called) or early, when the client went away.
#[derive(Debug)]
pub(crate) struct Flight {
    stats: Arc<Stats>,
    completed: bool,
    token_times: Option<(String, Vec<Instant>)>,
}

impl Flight {
    /// The response was handed over in full (or ended on purpose, e.g. a scripted cut).
    pub(crate) fn complete(&mut self) {
        self.completed = true;
    }

    /// Start keeping content-chunk instants for this request.
    pub(crate) fn keep_token_times(&mut self, prompt: String) {
        self.token_times = Some((prompt, Vec::new()));
    }

    /// A content chunk is being handed to hyper now.
    pub(crate) fn content_chunk(&mut self) {
        if let Some((_, times)) = &mut self.token_times {
            times.push(Instant::now());
        }
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        if let Some(times) = self.token_times.take() {
            lock(&self.stats.token_times).push(times);
        }
        if !self.completed {
            self.stats.disconnects.fetch_add(1, Ordering::SeqCst);
        }
        self.stats.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.stats.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn flights_count_peak_and_disconnects() {
        let stats = Arc::new(Stats::default());
        let mut a = stats.begin();
        let b = stats.begin();
        assert_eq!((stats.in_flight(), stats.peak()), (2, 2));
        a.complete();
        drop(a);
        drop(b);
        assert_eq!(
            (stats.in_flight(), stats.peak(), stats.disconnects()),
            (0, 2, 1)
        );
        stats.reset();
        assert_eq!((stats.peak(), stats.disconnects()), (0, 0));
    }

    #[tokio::test]
    async fn wait_until_wakes_on_change_and_times_out() {
        let stats = Arc::new(Stats::default());
        let waiter = {
            let stats = Arc::clone(&stats);
            tokio::spawn(async move {
                stats
                    .wait_until(|s| s.request_count() >= 2, Duration::from_secs(10))
                    .await
            })
        };
        stats.record(None);
        stats.record(None);
        assert!(matches!(waiter.await, Ok(true)));
        assert!(
            !stats
                .wait_until(|s| s.request_count() >= 3, Duration::from_millis(20))
                .await
        );
    }
}
