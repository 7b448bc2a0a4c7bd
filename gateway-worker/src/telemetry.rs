//! Logging, for binaries only: libraries (and tests running the worker in-process) emit
//! events but never install a subscriber. The worker logs as the edge does
//! (`llmq_runtime::telemetry`): pretty or JSON lines on stderr, as `[log]` says.

pub use llmq_runtime::telemetry::init;
