//! The llmq gateway worker.
//!
//! Holds the provider keys, consumes chat-completion jobs from JetStream, routes each
//! logical model to its deployments with retries and fallbacks, streams results back and
//! records usage. The binary and the tests start a [`RunningWorker`] the same way and
//! drain it the same way; [`run`] is start, wait for the shutdown signal, drain.

pub mod admin;
pub mod batch_window;
pub mod budget_metrics;
pub mod cancel;
pub mod catalog;
pub mod config;
pub mod config_change;
pub mod consume;
pub mod context;
pub mod dlq;
pub mod fair_share;
pub mod job;
pub mod keys;
pub mod lifecycle;
pub mod metrics;
pub mod nats;
pub mod pricing;
pub mod providers;
pub mod puller;
pub mod queue_gauges;
pub mod retry;
pub mod routing;
pub mod sweeper;
pub mod telemetry;

pub use lifecycle::{RunError, RunningWorker, SHUTDOWN_MARGIN, run};
