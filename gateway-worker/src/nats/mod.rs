//! Everything the worker does with NATS that is not job logic: set-up and durable
//! publishing.

pub mod publish;
pub mod setup;

pub use llmq_runtime::PublishFailure;
pub use publish::{Store, store};
pub use setup::{
    Setup, SetupError, consumer_config, ensure, ensure_consumer, probe, tenant_consumer_config,
};
