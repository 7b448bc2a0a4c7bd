//! Every metric the edge exports, declared once. Labels are routes, HTTP status classes
//! and refusal reasons: finite sets, never a key, a tenant or a model as a caller spells it.

use std::sync::OnceLock;
use std::time::Duration;

use axum::http::StatusCode;
use llmq_runtime::api_keys::KeyRefusal;
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub const REQUESTS: &str = "llmq_edge_requests_total";
pub const REQUEST_DURATION: &str = "llmq_edge_request_duration_seconds";
pub const AUTH_FAILURES: &str = "llmq_edge_auth_failures_total";
pub const OPEN_STREAMS: &str = "llmq_edge_open_streams";

/// Request durations' histogram buckets, in seconds: the worker's latency buckets.
const LATENCY_BUCKETS: [f64; 15] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// Installs the Prometheus recorder once per process; `None` if another recorder was
/// installed first (an edge inside a process that has one).
pub fn install() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // Buckets, not the exporter's default summary: a histogram's buckets add up
            // across edges (Prometheus computes a fleet's p99 from them), quantiles do not.
            let handle = PrometheusBuilder::new()
                .set_buckets(&LATENCY_BUCKETS)
                .ok()?
                .install_recorder()
                .ok()?;
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
            Some(handle)
        })
        .clone()
}

pub fn request(route: &'static str, status: StatusCode, took: Duration) {
    let class = match status.as_u16() {
        200..=299 => "2xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    counter!(REQUESTS, "route" => route, "status" => class).increment(1);
    histogram!(REQUEST_DURATION, "route" => route).record(took.as_secs_f64());
}

pub fn auth_failure(refusal: KeyRefusal) {
    let reason = match refusal {
        KeyRefusal::Missing => "missing",
        KeyRefusal::Malformed => "malformed",
        KeyRefusal::Unknown => "unknown",
        KeyRefusal::Revoked => "revoked",
        KeyRefusal::Expired => "expired",
        KeyRefusal::Unreadable => "unreadable",
    };
    counter!(AUTH_FAILURES, "reason" => reason).increment(1);
}

/// Counts an open stream for as long as it lives.
#[derive(Debug)]
pub struct OpenStream;

impl OpenStream {
    pub fn new() -> Self {
        gauge!(OPEN_STREAMS).increment(1.0);
        Self
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        gauge!(OPEN_STREAMS).decrement(1.0);
    }
}
