//! The worker's configuration: one typed tree.
//!
//! Loaded from a TOML file with `LLMQ__`-prefixed environment overrides
//! (`LLMQ__WORKER__MAX_INFLIGHT=64` sets `worker.max_inflight`), parsed strictly (an
//! unknown key is an error, not a silently ignored typo), then validated as a whole with
//! errors that name the field. Secrets are resolved at load time from the environment or
//! files named in the config, never from the TOML itself, so a config file can be
//! committed and a key can never end up in it; `check` validates everything else
//! without reading any key.

mod load;
mod secret;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use llmq_schemas::{ErrorType, LimitSpec};
use serde::Deserialize;

pub use load::{ConfigError, Env, Keys, check, load, load_file, load_str, process_env};
pub use secret::{ApiKey, KeySource};
pub use validate::validate;

pub use llmq_runtime::NatsOptions;
pub use llmq_runtime::telemetry::{LogConfig, LogFormat};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub nats: NatsOptions,
    #[serde(default)]
    pub jetstream: JetStreamConfig,
    #[serde(default)]
    pub worker: WorkerConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub cooldown: CooldownConfig,
    #[serde(default)]
    pub tenants: TenantsConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    pub providers: BTreeMap<String, ProviderConfig>,
    pub models: BTreeMap<String, ModelConfig>,
    /// Prices per provider and upstream model, USD per million tokens. Entries here
    /// override the shipped defaults.
    #[serde(default)]
    pub prices: Vec<PriceConfig>,
}

/// How the fleet-wide limits behave on this worker (the limits themselves are set per
/// provider, deployment and tenant).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// How long this worker's hold on limited capacity lasts without renewal: a killed
    /// worker's permits come back to the fleet within this.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// How long an interactive job waits for a limit before it fails `rate_limited` (a
    /// tenant's `max_wait` wins). Batch jobs wait up to their deadline.
    #[serde(with = "humantime_serde")]
    pub interactive_max_wait: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            lease: llmq_runtime::limits::DEFAULT_LEASE,
            interactive_max_wait: Duration::from_secs(10),
        }
    }
}

/// Whether this worker enforces the tenant registry (see README, "Tenants and access").
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantsConfig {
    /// `auto` (default): enforced once the registry holds a tenant; `enforced`: unknown
    /// tenants refused, and the worker does not start without the registry; `open`: no
    /// registry (a single-team install, tenant `default`).
    pub mode: llmq_runtime::tenants::Mode,
}

/// Streams, consumers and buckets. Every worker of a fleet must agree on these.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JetStreamConfig {
    /// Subject prefix; stream names derive from it (`llmq` -> `LLMQ_JOBS`).
    pub prefix: String,
    /// Stream replicas: 1 for a single server, 3 for a cluster.
    pub replicas: usize,
    /// Jobs queue limits; a full queue refuses new jobs (discard new).
    pub jobs_max_msgs: i64,
    pub jobs_max_bytes: i64,
    /// Bound on the request blobs (chunks of requests too large for one message) of every
    /// tenant together; a full blob stream refuses new large requests (discard new). They
    /// are kept at most `jobs_max_age`.
    pub blobs_max_bytes: i64,
    /// Jobs one tenant may have queued (or running) for one model and tier: one job
    /// subject's most messages. A tenant at it is refused more for that model and tier;
    /// other tenants are not. -1: no quota (only the queue's own limits).
    pub jobs_max_per_subject: i64,
    #[serde(with = "humantime_serde")]
    pub jobs_max_age: Duration,
    #[serde(with = "humantime_serde")]
    pub results_max_age: Duration,
    #[serde(with = "humantime_serde")]
    pub usage_max_age: Duration,
    #[serde(with = "humantime_serde")]
    pub dlq_max_age: Duration,
    /// How long JetStream remembers a `Nats-Msg-Id` for deduplication.
    #[serde(with = "humantime_serde")]
    pub duplicate_window: Duration,
    /// How long a job may go without an ack or progress before it is redelivered.
    #[serde(with = "humantime_serde")]
    pub ack_wait: Duration,
    /// Deliveries after which a job is dead-lettered.
    pub max_deliver: i64,
    /// Fleet-wide cap on jobs in flight per (model, tier) consumer.
    pub max_ack_pending: i64,
    /// A consumer no worker has pulled from for this long is removed by the server (its
    /// queued jobs stay in the stream).
    #[serde(with = "humantime_serde")]
    pub consumer_inactive_threshold: Duration,
    /// Consumers on the streams tenants read through consumers (results, usage, the
    /// catalog): one unused this long is removed by the server, and none may ask to live
    /// longer. At least 30 s (llmq's readers ask for 30 s).
    #[serde(with = "humantime_serde")]
    pub reader_inactive_threshold: Duration,
    /// Most consumers each of those streams holds, all tenants' together.
    pub reader_max_consumers: i32,
    /// How long a cancel request is remembered.
    #[serde(with = "humantime_serde")]
    pub cancel_ttl: Duration,
    /// Bytes the cancel bucket holds at most, every tenant's cancels together (tenants
    /// write it directly); when full, new cancels are refused until old ones age out.
    /// -1: no limit.
    pub cancel_max_bytes: i64,
    /// How often a worker refreshes its catalog entry.
    #[serde(with = "humantime_serde")]
    pub catalog_heartbeat: Duration,
}

impl Default for JetStreamConfig {
    fn default() -> Self {
        Self {
            prefix: "llmq".into(),
            replicas: 1,
            jobs_max_msgs: 1_000_000,
            jobs_max_bytes: 4 * 1024 * 1024 * 1024,
            blobs_max_bytes: 2 * 1024 * 1024 * 1024,
            jobs_max_per_subject: 100_000,
            jobs_max_age: Duration::from_secs(7 * 86_400),
            results_max_age: Duration::from_secs(7 * 86_400),
            usage_max_age: Duration::from_secs(35 * 86_400),
            dlq_max_age: Duration::from_secs(30 * 86_400),
            duplicate_window: Duration::from_secs(120),
            ack_wait: Duration::from_secs(30),
            max_deliver: 5,
            max_ack_pending: 20_000,
            consumer_inactive_threshold: Duration::from_secs(3600),
            reader_inactive_threshold: Duration::from_secs(60),
            reader_max_consumers: 10_000,
            cancel_ttl: Duration::from_secs(86_400),
            cancel_max_bytes: 1024 * 1024 * 1024,
            catalog_heartbeat: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Unique per worker process; defaults to `<hostname>-<pid>-<random>`.
    pub id: Option<String>,
    /// Jobs this worker holds at once, across all models.
    pub max_inflight: usize,
    /// Share of `max_inflight` that batch-tier jobs may hold, so interactive jobs always
    /// find room.
    pub batch_share: f64,
    /// Most jobs requested from one consumer in one pull.
    pub fetch_batch: usize,
    /// How long one pull request waits for jobs before it is renewed.
    #[serde(with = "humantime_serde")]
    pub fetch_expires: Duration,
    /// On SIGTERM: how long in-flight jobs may take to finish before they are handed back.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Deadline for jobs that carry none, per tier.
    #[serde(with = "humantime_serde")]
    pub interactive_deadline: Duration,
    #[serde(with = "humantime_serde")]
    pub batch_deadline: Duration,
    /// How often to look for queued jobs of models no live worker serves.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// How often every `api_key_file` is re-read; a changed key is used from the next
    /// attempt on (SIGHUP re-reads at once). `api_key_env` keys never change.
    #[serde(with = "humantime_serde")]
    pub key_reload_interval: Duration,
    /// How long a starting worker waits for NATS to accept connections and for
    /// JetStream to place its streams (a cluster electing its leader, servers still
    /// starting) before it exits with the last error. It logs what it waits for.
    #[serde(with = "humantime_serde")]
    pub startup_timeout: Duration,
    /// Runtime threads of the worker binary: 1 (one thread, no cross-thread wake-ups:
    /// lowest latency, ~13k jobs/s measured), N, or 0 for one per core. Scale out with
    /// more workers rather than more threads.
    pub threads: usize,
    /// The largest request a worker reads from a blob; a job whose request blob is
    /// larger fails `invalid_job` without the blob being read.
    pub max_request_bytes: u64,
    /// The most bytes of one provider answer an attempt holds (a whole body; a stream's
    /// accumulated output); past it the attempt fails with `response_too_large`.
    pub max_response_bytes: usize,
}

impl WorkerConfig {
    /// The async runtime the binary runs the worker on.
    pub fn runtime(&self) -> std::io::Result<tokio::runtime::Runtime> {
        let mut builder = match self.threads {
            1 => tokio::runtime::Builder::new_current_thread(),
            0 => tokio::runtime::Builder::new_multi_thread(),
            n => {
                let mut builder = tokio::runtime::Builder::new_multi_thread();
                builder.worker_threads(n);
                builder
            }
        };
        builder.enable_all().build()
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            id: None,
            max_inflight: 1024,
            batch_share: 0.5,
            fetch_batch: 64,
            fetch_expires: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(30),
            interactive_deadline: Duration::from_secs(600),
            batch_deadline: Duration::from_secs(86_400),
            sweep_interval: Duration::from_secs(5),
            key_reload_interval: Duration::from_secs(5),
            startup_timeout: Duration::from_secs(120),
            threads: 1,
            max_request_bytes: 32 * 1024 * 1024,
            max_response_bytes: 32 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// `/metrics`, `/healthz`, `/readyz`; `None` turns the endpoint off.
    pub listen: Option<SocketAddr>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
        }
    }
}

/// Retries on the same deployment, before moving on to the next one.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// First backoff; doubles per retry, minus up to 25 % jitter.
    #[serde(with = "humantime_serde")]
    pub base_delay: Duration,
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// A provider's retry-after is honoured up to this; a longer one sends the job to
    /// the next deployment instead of waiting.
    #[serde(with = "humantime_serde")]
    pub max_retry_after: Duration,
    /// Most provider calls for one processing of a job, over all deployments (for a batch
    /// job, between two waits for a cooldown).
    pub max_attempts: u32,
    /// A retry wait longer than this goes to another deployment that is free now, if
    /// there is one, instead of waiting for the same one.
    #[serde(with = "humantime_serde")]
    pub max_in_worker_wait: Duration,
    /// Retries on the same deployment per error class.
    pub per_class: RetryCounts,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(60),
            max_attempts: 8,
            max_in_worker_wait: Duration::from_secs(5),
            per_class: RetryCounts::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryCounts {
    pub rate_limited: u32,
    pub overloaded: u32,
    pub timeout: u32,
    pub server: u32,
    pub network: u32,
    pub malformed_response: u32,
}

impl Default for RetryCounts {
    fn default() -> Self {
        Self {
            rate_limited: 2,
            overloaded: 2,
            timeout: 1,
            server: 2,
            network: 2,
            malformed_response: 1,
        }
    }
}

impl RetryCounts {
    /// Retries allowed for a class; 0 for classes that are never retried.
    pub fn for_class(&self, class: ErrorType) -> u32 {
        match class {
            ErrorType::RateLimited => self.rate_limited,
            ErrorType::Overloaded => self.overloaded,
            ErrorType::Timeout => self.timeout,
            ErrorType::Server => self.server,
            ErrorType::Network => self.network,
            ErrorType::MalformedResponse => self.malformed_response,
            _ => 0,
        }
    }
}

/// When a deployment is skipped for a while.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CooldownConfig {
    /// Cooldown after a 429 that carried no retry hint.
    #[serde(with = "humantime_serde")]
    pub rate_limit_default: Duration,
    /// Failure share of recent calls above which a deployment cools down.
    pub failure_threshold: f64,
    /// Calls in the window before the failure share counts.
    pub min_calls: u32,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// How long a deployment over the failure threshold (or answering auth, not-found or
    /// quota errors) is skipped.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
}

impl Default for CooldownConfig {
    fn default() -> Self {
        Self {
            rate_limit_default: Duration::from_secs(5),
            failure_threshold: 0.5,
            min_calls: 5,
            window: Duration::from_secs(60),
            duration: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    Openai,
    OpenaiCompatible,
    Azure,
    Anthropic,
    Gemini,
}

impl ProviderKind {
    pub const ALL: [ProviderKind; 5] = [
        ProviderKind::Openai,
        ProviderKind::OpenaiCompatible,
        ProviderKind::Azure,
        ProviderKind::Anthropic,
        ProviderKind::Gemini,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::OpenaiCompatible => "openai_compatible",
            ProviderKind::Azure => "azure",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
        }
    }

    /// The public endpoint, when the kind has one.
    pub fn default_base_url(&self) -> Option<&'static str> {
        match self {
            ProviderKind::Openai => Some("https://api.openai.com/v1"),
            ProviderKind::Anthropic => Some("https://api.anthropic.com"),
            ProviderKind::Gemini => Some("https://generativelanguage.googleapis.com"),
            ProviderKind::OpenaiCompatible | ProviderKind::Azure => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    /// Defaults to the kind's public endpoint; required for `azure` and
    /// `openai_compatible`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Name of the environment variable holding the key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// File holding the key (e.g. a mounted secret); surrounding whitespace is trimmed.
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// The resolved key. Never read from the config text: filled from `api_key_env` or
    /// `api_key_file` at load, or set directly by code that builds a config.
    #[serde(skip)]
    pub api_key: Option<ApiKey>,
    /// Upstream requests in flight at once, per worker.
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Extra non-secret headers sent on every request (OpenRouter's `HTTP-Referer`, ...).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `azure`: the `api-version` query parameter. `anthropic`: the `anthropic-version`
    /// header (default `2023-06-01`).
    #[serde(default)]
    pub api_version: Option<String>,
    /// `openai`: `OpenAI-Organization` / `OpenAI-Project` headers.
    #[serde(default)]
    pub organization: Option<String>,
    #[serde(default)]
    pub project: Option<String>,
    /// `openai_compatible`: whether the server understands
    /// `stream_options.include_usage` (vLLM, Groq and OpenRouter do; some do not).
    #[serde(default = "default_true")]
    pub stream_usage: bool,
    /// HTTP version to the provider.
    #[serde(default)]
    pub http: HttpVersion,
    /// The provider account's limits, across the whole fleet (every model and tenant):
    /// `concurrency`, `rpm`, `tpm`, `window`.
    #[serde(default)]
    pub limits: LimitSpec,
}

/// How the worker talks HTTP to a provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpVersion {
    /// HTTP/2 when the server offers it in the TLS handshake (every major provider
    /// does), else HTTP/1.1 (always for plain `http://`).
    #[default]
    Auto,
    /// HTTP/1.1 only: one connection per request in flight.
    Http1,
    /// HTTP/2 only, also over plain `http://` (prior knowledge; for h2c servers):
    /// requests in flight share one connection.
    Http2,
}

fn default_max_concurrency() -> usize {
    64
}

fn default_true() -> bool {
    true
}

impl ProviderConfig {
    /// A provider with defaults for everything but kind, URL and key.
    pub fn new(kind: ProviderKind, base_url: impl Into<String>, api_key: Option<ApiKey>) -> Self {
        Self {
            kind,
            base_url: Some(base_url.into()),
            api_key_env: None,
            api_key_file: None,
            api_key,
            max_concurrency: default_max_concurrency(),
            timeouts: Timeouts::default(),
            headers: BTreeMap::new(),
            api_version: None,
            organization: None,
            project: None,
            stream_usage: true,
            http: HttpVersion::Auto,
            limits: LimitSpec::default(),
        }
    }

    /// Where the key comes from, as configured (nothing is read).
    pub fn key_source(&self) -> KeySource {
        match (&self.api_key_env, &self.api_key_file) {
            (Some(_), Some(_)) => KeySource::Ambiguous,
            (Some(var), None) => KeySource::Env(var.clone()),
            (None, Some(file)) => KeySource::File(file.clone()),
            (None, None) if self.api_key.is_some() => KeySource::Given,
            (None, None) => KeySource::None,
        }
    }

    /// The base URL without a trailing slash.
    pub fn base_url(&self) -> String {
        self.base_url
            .as_deref()
            .or(self.kind.default_base_url())
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    #[serde(with = "humantime_serde")]
    pub connect: Duration,
    /// Streaming: from sending the request to the first output token.
    #[serde(with = "humantime_serde")]
    pub first_token: Duration,
    /// Streaming: longest silence between two stream events once output has started.
    #[serde(with = "humantime_serde")]
    pub inter_token: Duration,
    /// One attempt, start to end.
    #[serde(with = "humantime_serde")]
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            first_token: Duration::from_secs(60),
            inter_token: Duration::from_secs(30),
            total: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub deployments: Vec<DeploymentConfig>,
    /// Logical models to try, in order, when every deployment of this one failed.
    #[serde(default)]
    pub fallbacks: Vec<String>,
    /// Logical models to try when the prompt does not fit this model's context window.
    #[serde(default)]
    pub context_window_fallbacks: Vec<String>,
    /// Logical models to try when this model's provider refuses the content.
    #[serde(default)]
    pub content_policy_fallbacks: Vec<String>,
    /// Token cap for providers that require one (Anthropic) when the job sets none.
    #[serde(default)]
    pub default_max_tokens: Option<u32>,
    /// What to do with a tool call whose arguments are not a JSON object.
    #[serde(default)]
    pub invalid_tool_arguments: InvalidToolArguments,
}

/// What to do with a tool call whose arguments, as the provider produced them, are not a
/// JSON object (see `providers::tool_arguments`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvalidToolArguments {
    /// The attempt fails `malformed_response`: retried, then falls back.
    #[default]
    Fail,
    /// The answer is returned with the arguments unchanged (as OpenAI itself does), and
    /// its attempt carries the warning `invalid_tool_arguments`.
    PassThrough,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentConfig {
    /// A key of `[providers]`.
    pub provider: String,
    /// The provider's model name (Azure: the deployment id).
    pub model: String,
    /// Relative share of this model's traffic.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// This deployment's own limits, across the whole fleet.
    #[serde(default)]
    pub limits: LimitSpec,
}

fn default_weight() -> u32 {
    1
}

/// USD per million tokens.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    /// A provider *kind* (`openai`, `anthropic`, ...) or a provider name from
    /// `[providers]`; a name match wins over a kind match.
    pub provider: String,
    pub model: String,
    pub input: f64,
    /// Defaults to `input`.
    #[serde(default)]
    pub cached_input: Option<f64>,
    /// Defaults to `input`.
    #[serde(default)]
    pub cache_write: Option<f64>,
    pub output: f64,
}
