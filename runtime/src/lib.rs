//! llmq's shared runtime: what the worker, the producer library and (soon) the HTTP edge
//! must do with NATS the same way.
//!
//! It exists so that the worker does not depend on the producer crate, and so that the
//! code both sides must agree on lives once: how to reach NATS (auth, TLS, timeouts, the
//! server-version check) and how to store a message durably (retries with the same
//! `Nats-Msg-Id`). The tenant registry, the policy every component checks and the
//! fleet-wide limits and budgets join it, for the same reason. `schemas` stays pure data; this crate
//! is where that data meets the broker.

pub mod api_keys;
pub mod auth;
pub mod backoff;
pub mod blob;
pub mod buckets;
pub mod budget;
#[cfg(feature = "server")]
pub mod config_file;
mod connect;
pub mod limits;
pub mod live;
mod nats_options;
pub mod policy;
mod problems;
pub mod publish;
pub mod queue_state;
pub mod signals;
pub mod stream_guards;
#[cfg(feature = "server")]
pub mod telemetry;
pub mod tenants;

pub use connect::{ConnectError, MINIMUM_SERVER_VERSION, check_server_version, connect};
pub use nats_options::{NatsOptions, TlsOptions, redact_url_userinfo};
pub use problems::{Problem, Problems};
pub use publish::{Budget, Durable, PublishFailure, keyed_msg_id, private_msg_id, publish_durable};
