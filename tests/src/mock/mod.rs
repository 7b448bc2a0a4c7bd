//! A mock LLM provider: a real HTTP server that speaks the OpenAI, Azure OpenAI,
//! Anthropic and Gemini wire formats.
//!
//! The worker's provider adapters are tested against this server, so it reproduces the
//! providers' bytes (JSON and SSE framing, error bodies, retry headers), not just their
//! meaning: a test that passes here should pass against the real API. It is also the
//! demo's and the benchmarks' provider, hence [`MockOptions::lean`] and the standalone
//! `mock-provider` binary.
//!
//! Replies are deterministic ([`mock_reply`]) so tests can check content end to end; usage
//! follows [`prompt_tokens_for`] and the number of content chunks. Failures are scripted
//! per request ([`MockProvider::push_faults`]), per model, or drawn from a seeded random
//! mix. Everything observable (requests, concurrency, disconnects) is counted where it
//! happens, and waited for through notifications, never by polling.
//!
//! ```no_run
//! # async fn demo() {
//! use llmq_tests::mock::{Fault, MockOptions, MockProvider, RetryHint, ScriptedFault};
//! let mock = MockProvider::start(MockOptions::default()).await;
//! mock.push_faults([ScriptedFault::any(Fault::RateLimited(RetryHint::RetryAfterSecs(1)))]);
//! // point the worker at mock.base_url() ...
//! # }
//! ```

mod anthropic;
mod azure;
mod chat;
mod conn;
mod content;
mod dialect;
mod faults;
mod gemini;
mod openai;
mod options;
mod quota;
mod record;
mod reply;
mod server;
mod sse;

#[cfg(test)]
mod tests;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use content::{mock_reply, mock_text, prompt_tokens_for};
pub use faults::{Fault, FaultMatch, RandomFaults, RetryHint, ScriptedFault};
pub use options::{MockOptions, ModelBehavior};
pub use quota::Quota;
pub use record::{RecordedRequest, WireFormat};
pub use reply::REFUSAL_OUTPUT_TOKENS;

use conn::{ConnKill, MockListener};
use server::Shared;

/// A running mock provider. Dropping it stops the server and closes every connection,
/// open streams included.
#[derive(Debug)]
pub struct MockProvider {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl MockProvider {
    /// Starts a mock on `127.0.0.1:0`.
    ///
    /// Panics if no loopback port can be bound: a test without its provider cannot run,
    /// and must fail loudly rather than later with a confusing connection error.
    #[expect(clippy::panic, reason = "a test without its provider must stop loudly")]
    pub async fn start(options: MockOptions) -> MockProvider {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        match MockProvider::bind(loopback, options).await {
            Ok(mock) => mock,
            Err(err) => panic!("mock provider: cannot listen on {loopback}: {err}"),
        }
    }

    /// Starts a mock on `addr` (the standalone binary's `--listen`).
    pub async fn bind(addr: SocketAddr, options: MockOptions) -> io::Result<MockProvider> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let shared = Arc::new(Shared::new(options));
        let app =
            server::router(Arc::clone(&shared)).into_make_service_with_connect_info::<ConnKill>();
        let listener = MockListener::new(listener, shutdown.clone());
        let stop = shutdown.clone().cancelled_owned();
        let task = tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
            {
                tracing::error!(error = %err, "mock provider: server failed");
            }
        });
        tracing::debug!(%addr, "mock provider listening");
        Ok(MockProvider {
            addr,
            shared,
            shutdown,
            task,
        })
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request since start (or [`MockProvider::reset_stats`]), in arrival order.
    /// Empty in lean mode.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.stats.requests()
    }

    pub fn request_count(&self) -> usize {
        self.shared.stats.request_count()
    }

    /// Requests being served right now, open streams included.
    pub fn in_flight(&self) -> usize {
        self.shared.stats.in_flight()
    }

    /// The most requests in flight at once since start or the last reset.
    pub fn peak_concurrency(&self) -> usize {
        self.shared.stats.peak()
    }

    /// Responses whose client went away before the response was complete.
    pub fn disconnects(&self) -> usize {
        self.shared.stats.disconnects()
    }

    /// Forgets recorded requests, token times, the request count and disconnects; the peak
    /// restarts from the number in flight now.
    pub fn reset_stats(&self) {
        self.shared.stats.reset();
    }

    /// The options in force.
    pub fn options(&self) -> MockOptions {
        (*self.shared.options()).clone()
    }

    /// Changes behaviour for requests arriving from now on; restarts the random-fault
    /// sequence from the new seed.
    pub fn set_options(&self, options: MockOptions) {
        self.shared.set_options(options);
    }

    /// Accepts exactly `keys` from the next request on (a rotation: the old and the new
    /// key, then only the new one). Like [`MockProvider::set_options`], restarts the
    /// random-fault sequence.
    pub fn accept_keys(&self, keys: &[&str]) {
        let mut options = self.options();
        options.api_keys = keys.iter().map(|key| (*key).to_owned()).collect();
        self.set_options(options);
    }

    /// Queues faults; each is applied once, to the first later request it matches.
    pub fn push_faults(&self, faults: impl IntoIterator<Item = ScriptedFault>) {
        self.shared.push_faults(faults);
    }

    /// Waits until at least `n` requests have arrived; false on timeout.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        self.shared
            .stats
            .wait_until(|s| s.request_count() >= n, timeout)
            .await
    }

    /// Waits until a recorded request satisfies `matches`; false on timeout.
    pub async fn wait_for_request(
        &self,
        matches: impl Fn(&RecordedRequest) -> bool,
        timeout: Duration,
    ) -> bool {
        self.shared
            .stats
            .wait_until(|s| s.any_request(&matches), timeout)
            .await
    }

    /// Waits until at least `n` requests are in flight; false on timeout.
    pub async fn wait_for_in_flight_at_least(&self, n: usize, timeout: Duration) -> bool {
        self.shared
            .stats
            .wait_until(|s| s.in_flight() >= n, timeout)
            .await
    }

    /// Waits until at least `n` client disconnects were seen; false on timeout.
    pub async fn wait_for_disconnects(&self, n: usize, timeout: Duration) -> bool {
        self.shared
            .stats
            .wait_until(|s| s.disconnects() >= n, timeout)
            .await
    }

    /// Waits until exactly `n` requests are in flight; false on timeout.
    pub async fn wait_for_in_flight(&self, n: usize, timeout: Duration) -> bool {
        self.shared
            .stats
            .wait_until(|s| s.in_flight() == n, timeout)
            .await
    }

    /// Per finished (or abandoned) request with `record_token_times` on: its prompt and
    /// the instant each content chunk was handed to hyper (non-streaming: one instant, the
    /// body's). In completion order.
    pub fn token_times(&self) -> Vec<(String, Vec<Instant>)> {
        self.shared.stats.token_times()
    }
}

impl Drop for MockProvider {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.task.abort();
    }
}
