//! The edge's configuration: one typed tree, as the worker's.
//!
//! Read from an optional TOML file (`--config`), with the `LLMQ__` environment variables
//! the edge shares with the worker over it (`LLMQ__NATS__URL`, `LLMQ__JETSTREAM__PREFIX`,
//! `LLMQ__LOG__LEVEL`, and its own `LLMQ__HTTP__*`), then the command line's flags.
//! Parsed strictly (an unknown key is an error, not a silently ignored typo) and validated
//! as a whole, every problem naming its field.

mod load;
mod validate;

use std::net::SocketAddr;
use std::time::Duration;

use llmq_runtime::NatsOptions;
use llmq_runtime::telemetry::LogConfig;
use serde::Deserialize;

pub use llmq_runtime::config_file::{ConfigError, Env, process_env};
pub use load::{Overrides, load, load_text};
pub use validate::validate;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    /// The connection the edge's per-tenant producers share.
    #[serde(default)]
    pub nats: NatsOptions,
    #[serde(default)]
    pub jetstream: JetStreamConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub batches: BatchesConfig,
}

/// The Files and Batches API, and running the batches made through it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchesConfig {
    /// The largest file `POST /v1/files` takes (OpenAI's limit: 200 MB).
    pub max_file_bytes: usize,
    /// Batches this edge runs at once (0: it runs none, other edges do). A batch is run
    /// by one edge at a time; when that edge dies, another takes it over.
    pub runners: usize,
    /// A running batch's claim is renewed this often; an edge silent for three times
    /// this has its batches taken over.
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
}

impl Default for BatchesConfig {
    fn default() -> Self {
        Self {
            max_file_bytes: 200 * 1024 * 1024,
            runners: 2,
            heartbeat: Duration::from_secs(10),
        }
    }
}

impl EdgeConfig {
    /// A config for the NATS server(s) at `url`, every other setting at its default.
    pub fn for_nats(url: &str) -> Self {
        Self {
            nats: NatsOptions::with_url(url),
            ..Self::default()
        }
    }
}

/// The llmq deployment the edge serves. The workers own every other setting of theirs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JetStreamConfig {
    /// Subject prefix of the llmq deployment (`llmq`).
    pub prefix: String,
}

impl Default for JetStreamConfig {
    fn default() -> Self {
        Self {
            prefix: llmq_schemas::Subjects::DEFAULT_PREFIX.to_owned(),
        }
    }
}

/// How the edge listens and answers.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to listen on (port 0: any free port, as tests use).
    pub listen: SocketAddr,
    /// Bodies larger than this are refused with 413 before they are read whole.
    pub max_body_bytes: usize,
    /// A request's deadline when it names none (`x-llmq-timeout`).
    #[serde(with = "humantime_serde")]
    pub default_timeout: Duration,
    /// A client must send a request's headers within this, and its body within this once
    /// the headers are in (slow clients are cut off, not waited for).
    #[serde(with = "humantime_serde")]
    pub read_timeout: Duration,
    /// SSE comments while a stream waits, so proxies do not cut it.
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
    /// On SIGTERM: how long open requests may take to finish before they are cut (their
    /// jobs are then cancelled).
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 4 * 1024 * 1024,
            default_timeout: Duration::from_secs(600),
            read_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}
