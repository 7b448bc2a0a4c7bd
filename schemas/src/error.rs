//! Why a job or an attempt failed, as a closed set of types.
//!
//! Producers branch on `type`, dashboards count by it, and it is the metrics label, so it
//! is a fixed vocabulary: provider-specific detail goes in `message` and `provider_code`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The error classes. Provider errors (the first group) are what the worker's retry and
/// fallback rules act on; the rest describe the job itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    /// 429 with a retry hint (requests or tokens per minute).
    RateLimited,
    /// The provider is overloaded (Anthropic 529, `overloaded_error`).
    Overloaded,
    /// Connect, first-token, inter-token (stall) or total timeout.
    Timeout,
    /// 5xx from the provider.
    Server,
    /// Connection refused or reset, DNS, TLS, a stream cut mid-way.
    Network,
    /// The provider answered 2xx with something that is not its wire format.
    MalformedResponse,
    /// 400: the request is wrong; another provider would reject it too.
    InvalidRequest,
    /// 401 / 403: the worker's key is wrong or lacks access.
    Auth,
    /// 404: the upstream model or deployment does not exist.
    NotFound,
    /// The prompt does not fit the model's context window.
    ContextWindowExceeded,
    /// The provider refused the content (policy filter).
    ContentFiltered,
    /// Billing or quota exhausted (OpenAI 429 `insufficient_quota`): not retryable.
    QuotaExhausted,
    /// The producer cancelled the job.
    Cancelled,
    /// The job's deadline passed before it could finish.
    DeadlineExceeded,
    /// No worker serves the job's model.
    UnknownModel,
    /// The job is well-formed JSON but not a valid job (bad subject, reply subject,
    /// messages).
    InvalidJob,
    /// The tenant registry does not allow the job (`rule` says which rule).
    PolicyDenied,
    /// The tenant's hard budget is spent, counting what jobs in flight have reserved
    /// (`rule` says which period's); no provider was called.
    BudgetExceeded,
    /// No deployment of the model can be called before the job's wait for it ends (every
    /// one cooling down or paused); no provider was called, and `retry_after_ms` says when
    /// one may be usable again. Interactive jobs only: batch jobs wait.
    Unavailable,
    /// The provider's answer was larger than the worker accepts
    /// (`worker.max_response_bytes`): the attempt stops reading it. Not retried.
    ResponseTooLarge,
    /// A bug or an unexpected state in the worker.
    Internal,
}

impl ErrorType {
    /// The fixed label used in metrics, logs and usage events.
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorType::RateLimited => "rate_limited",
            ErrorType::Overloaded => "overloaded",
            ErrorType::Timeout => "timeout",
            ErrorType::Server => "server",
            ErrorType::Network => "network",
            ErrorType::MalformedResponse => "malformed_response",
            ErrorType::InvalidRequest => "invalid_request",
            ErrorType::Auth => "auth",
            ErrorType::NotFound => "not_found",
            ErrorType::ContextWindowExceeded => "context_window_exceeded",
            ErrorType::ContentFiltered => "content_filtered",
            ErrorType::QuotaExhausted => "quota_exhausted",
            ErrorType::Cancelled => "cancelled",
            ErrorType::DeadlineExceeded => "deadline_exceeded",
            ErrorType::UnknownModel => "unknown_model",
            ErrorType::InvalidJob => "invalid_job",
            ErrorType::PolicyDenied => "policy_denied",
            ErrorType::BudgetExceeded => "budget_exceeded",
            ErrorType::Unavailable => "unavailable",
            ErrorType::ResponseTooLarge => "response_too_large",
            ErrorType::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job's error, in its outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JobError {
    #[serde(rename = "type")]
    pub kind: ErrorType,
    /// Human-readable; never contains a provider key.
    pub message: String,
    /// The provider (config name) whose answer this was, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The provider's HTTP status, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_status: Option<u16>,
    /// The provider's own error code or type (`insufficient_quota`, `overloaded_error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_code: Option<String>,
    /// `policy_denied` and `budget_exceeded`: the registry rule that refused the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<crate::tenant::PolicyRule>,
    /// `rate_limited` (a limit llmq holds), `budget_exceeded`, `unavailable`, and the last
    /// error of an interactive job that ended rather than wait for a cooldown: when trying
    /// again may succeed, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl JobError {
    pub fn new(kind: ErrorType, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            provider: None,
            provider_status: None,
            provider_code: None,
            rule: None,
            retry_after_ms: None,
        }
    }

    /// A `policy_denied` error naming its rule.
    pub fn policy_denied(rule: crate::tenant::PolicyRule, message: impl Into<String>) -> Self {
        Self {
            rule: Some(rule),
            ..Self::new(ErrorType::PolicyDenied, message)
        }
    }
}

impl std::fmt::Display for JobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}
