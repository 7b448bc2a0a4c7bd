//! Everything the worker does with NATS that is not job logic: set-up and durable
//! publishing.

pub mod publish;
pub mod setup;

pub use publish::{PublishFailure, publish_durable};
pub use setup::{Setup, SetupError, consumer_config, ensure, ensure_consumer};
