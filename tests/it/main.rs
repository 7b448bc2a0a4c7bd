//! llmq integration tests: one binary, one module per area, all against a real nats-server.

// Tests and their helpers may fail loudly.
#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)]

mod auth;
mod batch;
mod budgets;
mod chaos;
mod cli;
mod cluster;
mod core;
mod deploy;
mod edge;
mod edge_batches;
mod edge_oidc;
mod fair_share;
mod harness_smoke;
mod isolation;
mod keys;
mod limits;
mod ops_limits;
mod providers;
mod reliability;
mod reload;
mod scripts;
mod secrets;
mod sizes;
mod status;
mod submitter;
mod tenants;
mod worker_binary;
