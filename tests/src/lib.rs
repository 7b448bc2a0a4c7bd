//! The llmq test harness: real parts, really started.
//!
//! - [`nats::TestNats`]: a real nats-server (JetStream on) on a random loopback port with
//!   its own temp store, killed on drop.
//! - [`mock`]: a real HTTP server speaking the providers' wire formats, with scripted faults.
//! - [`worker`]: the gateway worker, in-process through its library `run`, or as a child
//!   process for kill tests.
//! - [`stack`]: one test's world (server, mock, temp dir) and intent-named helpers.
//! - [`bench`](mod@bench): the benchmark harness behind the `bench` binary.
//!
//! Integration tests (`it/`) and the benchmark binary both build on these.

// Test equipment: a broken setup must stop the test loudly.
#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)]

pub mod bench;
pub mod cluster;
pub mod edge;
pub mod mock;
pub mod nats;
pub mod readme;
pub mod stack;
pub mod worker;
