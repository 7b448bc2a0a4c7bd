//! Every metric the edge exports, declared once. Labels are routes, HTTP status classes
//! and refusal reasons: finite sets, never a key, a tenant or a model as a caller spells it.
//!
//! Each edge records into its own Prometheus recorder, not the process-wide one: a library
//! must not install a global recorder (an application embedding the edge, or a test
//! process running several edges and workers, keeps its own), and `/metrics` then shows
//! exactly this edge's counts.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{
    BuildError, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use tokio_util::sync::CancellationToken;

pub const REQUESTS: &str = "llmq_edge_requests_total";
pub const REQUEST_DURATION: &str = "llmq_edge_request_duration_seconds";
pub const AUTH_FAILURES: &str = "llmq_edge_auth_failures_total";
pub const OPEN_STREAMS: &str = "llmq_edge_open_streams";

/// Request durations' histogram buckets, in seconds: the worker's latency buckets.
const LATENCY_BUCKETS: [f64; 15] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// How often histogram samples are folded into their buckets when nobody scrapes.
const UPKEEP: Duration = Duration::from_secs(5);

/// One edge's metrics.
pub struct EdgeMetrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl std::fmt::Debug for EdgeMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeMetrics").finish_non_exhaustive()
    }
}

impl EdgeMetrics {
    pub fn new() -> Result<Arc<Self>, BuildError> {
        // Buckets, not the exporter's default summary: a histogram's buckets add up
        // across edges (Prometheus computes a fleet's p99 from them), quantiles do not.
        let recorder = PrometheusBuilder::new()
            .set_buckets(&LATENCY_BUCKETS)?
            .build_recorder();
        let handle = recorder.handle();
        let metrics = Self { recorder, handle };
        metrics.record(describe);
        Ok(Arc::new(metrics))
    }

    fn record<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&self.recorder, f)
    }

    /// The Prometheus text of every metric.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Folds histogram samples into their buckets every few seconds until `stop`, so
    /// an edge nobody scrapes does not keep every sample.
    pub async fn upkeep(self: Arc<Self>, stop: CancellationToken) {
        let mut every = tokio::time::interval(UPKEEP);
        loop {
            tokio::select! {
                _ = every.tick() => self.handle.run_upkeep(),
                () = stop.cancelled() => return,
            }
        }
    }

    pub fn request(&self, route: &'static str, status: StatusCode, took: Duration) {
        let class = match status.as_u16() {
            200..=299 => "2xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.record(|| {
            counter!(REQUESTS, "route" => route, "status" => class).increment(1);
            histogram!(REQUEST_DURATION, "route" => route).record(took.as_secs_f64());
        });
    }

    pub fn auth_failure(&self, reason: &'static str) {
        self.record(|| counter!(AUTH_FAILURES, "reason" => reason).increment(1));
    }

    /// Counts an open stream for as long as the returned guard lives.
    pub fn open_stream(self: &Arc<Self>) -> OpenStream {
        self.record(|| gauge!(OPEN_STREAMS).increment(1.0));
        OpenStream(Arc::clone(self))
    }
}

fn describe() {
    describe_counter!(
        REQUESTS,
        "HTTP requests answered, by route and status class"
    );
    describe_histogram!(
        REQUEST_DURATION,
        metrics::Unit::Seconds,
        "time to the response's headers, by route"
    );
    describe_counter!(
        AUTH_FAILURES,
        "requests refused for their API key, by reason"
    );
    describe_gauge!(OPEN_STREAMS, "streaming responses open now");
}

/// An open stream, counted in [`OPEN_STREAMS`] until dropped.
#[derive(Debug)]
pub struct OpenStream(Arc<EdgeMetrics>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.record(|| gauge!(OPEN_STREAMS).decrement(1.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_edge_counts_only_its_own_requests() {
        let first = EdgeMetrics::new().unwrap();
        let second = EdgeMetrics::new().unwrap();
        first.request("chat", StatusCode::OK, Duration::from_millis(3));
        first.auth_failure(
            crate::auth::Refusal::from(llmq_runtime::api_keys::KeyRefusal::Unknown).reason(),
        );
        let open = first.open_stream();
        let page = first.render();
        assert!(
            page.contains("llmq_edge_requests_total{route=\"chat\",status=\"2xx\"} 1"),
            "{page}"
        );
        assert!(
            page.contains("llmq_edge_auth_failures_total{reason=\"unknown\"} 1"),
            "{page}"
        );
        assert!(page.contains("llmq_edge_open_streams 1"), "{page}");
        assert!(
            page.contains("llmq_edge_request_duration_seconds_bucket"),
            "{page}"
        );
        drop(open);
        assert!(first.render().contains("llmq_edge_open_streams 0"));
        assert!(!second.render().contains("llmq_edge_requests_total{"));
    }
}
