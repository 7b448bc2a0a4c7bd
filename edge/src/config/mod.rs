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
    /// Sign-in with the company's identity provider (JWTs beside llmq API keys).
    #[serde(default)]
    pub oidc: Option<OidcConfig>,
}

/// Who may call with a JWT of an OIDC identity provider, and as which tenant.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The provider's issuer URL: a token's `iss` must be exactly this.
    pub issuer: String,
    /// What a token's `aud` must hold (the client id llmq is registered under).
    pub audience: String,
    /// The provider's signing keys (JWKS). Default: the `jwks_uri` of
    /// `<issuer>/.well-known/openid-configuration`.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// The claim that names the caller's tenant: a string, or a list such as `groups`.
    #[serde(default = "default_tenant_claim")]
    pub tenant_claim: String,
    /// Claim values to tenants (`"llm-search" = "search"`). Empty: the claim's value is
    /// the tenant's name. With a list claim, the first value found here wins.
    #[serde(default)]
    pub tenants: std::collections::BTreeMap<String, String>,
    /// A claim listing the models the caller may use (names and `*` globs, a list or a
    /// space-separated string), within its tenant's. Absent from a token: the tenant's.
    #[serde(default)]
    pub models_claim: Option<String>,
    /// Signature algorithms accepted: RS256/384/512, PS256/384/512, ES256/384. Never
    /// HS*: a shared secret is not a provider's signature.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(default = "default_leeway", with = "humantime_serde")]
    pub leeway: Duration,
    /// How long fetched keys are used before they are fetched again.
    #[serde(default = "default_jwks_ttl", with = "humantime_serde")]
    pub jwks_ttl: Duration,
    /// A token signed with a key not (yet) known fetches the keys again, at most this
    /// often (a rotated key is found at once; a flood of forged `kid`s costs one fetch).
    #[serde(default = "default_jwks_refetch", with = "humantime_serde")]
    pub jwks_refetch: Duration,
}

fn default_tenant_claim() -> String {
    "tenant".into()
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".into(), "ES256".into()]
}

fn default_leeway() -> Duration {
    Duration::from_secs(30)
}

fn default_jwks_ttl() -> Duration {
    Duration::from_secs(600)
}

fn default_jwks_refetch() -> Duration {
    Duration::from_secs(10)
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
