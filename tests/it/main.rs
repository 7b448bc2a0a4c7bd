//! llmq integration tests: one binary, one module per area, all against a real nats-server.

mod harness_smoke;
