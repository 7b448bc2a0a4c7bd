//! llmq's HTTP edge: OpenAI's `POST /v1/chat/completions` (and `GET /v1/models`) on the
//! durable queue.
//!
//! It is a producer like any other: it authenticates the caller by an llmq API key,
//! publishes a job for the key's tenant through the producer library's `Client` (the
//! policy pre-check, the catalog check, durable publish, the job handle that recovers lost
//! events), and turns the job's events and outcome into the HTTP answer. It holds no
//! provider key and calls no provider. Edges share nothing but NATS, so any number run
//! side by side.
//!
//! Why a crate of its own: a producer that links the library must not compile an HTTP
//! server, a CLI parser and a Prometheus exporter, nor get a process-wide metrics recorder
//! installed by library code; and the edge grows (files, batches, more routes) on its own
//! schedule. It uses the producer library's public API only.
//!
//! The shape follows the worker's: [`RunningEdge::start`] returns a running edge (its
//! address, `drain`, `stop`), [`run`] is start, wait, drain, and the `llmq-edge` binary
//! and the tests start it the same way from an [`EdgeConfig`].

mod api_error;
mod auth;
mod batch_runner;
pub mod config;
mod error;
mod files;
mod lifecycle;
pub mod metrics;
pub mod oidc;
mod request_id;
mod routes;
mod serve;
mod state;

pub use api_error::ApiError;
pub use config::EdgeConfig;
pub use error::{EXIT_INTERNAL, EXIT_UNAVAILABLE, EXIT_USAGE, EdgeError};
pub use lifecycle::{Edge, RunningEdge, STOP_MARGIN, run};
