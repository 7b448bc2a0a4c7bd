//! Provider adapters: one trait, one file per provider kind.
//!
//! An adapter is pure translation: an OpenAI-format request in, an HTTP request out; the
//! provider's JSON, SSE events and error responses in, normalized completions, stream
//! items and classified errors out. It does no I/O. Sending, timeouts, SSE framing,
//! cancellation and accumulation live once in [`call()`], one call per attempt (module
//! [`mod@call`]), so a new provider kind is one module implementing [`Adapter`] (a file,
//! or a folder once it grows), plus its arm in [`build_adapter`], and every adapter is
//! unit-testable without a network. What
//! adapters do alike lives once too: the HTTP edge in [`wire`], request conversion in
//! [`convert`], response assembly in [`accumulate`].

pub mod accumulate;
pub mod anthropic;
pub mod azure;
pub mod call;
pub mod convert;
pub mod error;
pub mod estimate;
pub mod gemini;
pub mod http_client;
pub mod openai;
pub mod redact;
pub mod retry_hint;
pub mod sse;
#[cfg(test)]
pub mod testing;
pub mod tool_arguments;
pub mod wire;

use std::fmt;

use llmq_schemas::{ChatCompletion, ChatRequest, ToolCallDelta, Usage};
use reqwest::header::HeaderMap;

pub use call::{AttemptReport, DeltaSink, call};
pub use error::{ProviderError, TimeoutKind};
pub use sse::SseEvent;

use crate::config::{ApiKey, InvalidToolArguments, ProviderConfig, ProviderKind};

/// Everything an adapter needs to build one upstream call.
#[derive(Debug, Clone, Copy)]
pub struct CallSpec<'a> {
    pub request: &'a ChatRequest,
    pub upstream_model: &'a str,
    pub stream: bool,
    /// For providers that require a token cap (Anthropic) when the job sets none.
    pub default_max_tokens: Option<u32>,
    /// The model's rule for tool-call arguments that are not a JSON object.
    pub invalid_tool_arguments: InvalidToolArguments,
    /// The provider's key as this attempt took it at its start (a key rotated mid-call
    /// does not change it); `None` for a provider without one.
    pub key: Option<&'a ApiKey>,
}

/// A ready-to-send HTTP request. Header values carrying keys are marked sensitive, so
/// they print as `Sensitive` in any Debug output.
#[derive(Debug)]
pub struct HttpCall {
    pub url: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// A finished answer, already in the OpenAI `chat.completion` shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub response: ChatCompletion,
    /// Normalized usage (see `llmq_schemas::Usage`); `None` when the provider reported
    /// none, in which case the caller estimates it.
    pub usage: Option<Usage>,
}

/// A piece of streamed output, in OpenAI delta terms.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeltaPart {
    pub content: Option<String>,
    pub reasoning: Option<String>,
    pub refusal: Option<String>,
    pub tool_calls: Vec<ToolCallDelta>,
}

impl DeltaPart {
    pub fn is_empty(&self) -> bool {
        self.content.as_deref().is_none_or(str::is_empty)
            && self.reasoning.as_deref().is_none_or(str::is_empty)
            && self.refusal.as_deref().is_none_or(str::is_empty)
            && self.tool_calls.is_empty()
    }
}

/// What a stream decoder gets out of one provider event.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem {
    /// Response identity, from whichever event carries it.
    Meta {
        id: Option<String>,
        model: Option<String>,
        created: Option<i64>,
    },
    Delta(DeltaPart),
    /// `finish_reason` in OpenAI's vocabulary (`stop`, `length`, `tool_calls`,
    /// `content_filter`).
    Finish(String),
    /// Normalized usage; a later item replaces an earlier one, so providers that send
    /// cumulative usage need no special handling.
    Usage(Usage),
}

/// Translation between OpenAI-format jobs and one provider's wire format.
pub trait Adapter: Send + Sync + fmt::Debug {
    fn build(&self, call: &CallSpec<'_>) -> Result<HttpCall, ProviderError>;

    /// Parses a 2xx non-streaming body. A 2xx that is really an error (some servers do
    /// that) returns the classified error.
    fn parse_response(&self, body: &[u8]) -> Result<Completion, ProviderError>;

    fn stream_decoder(&self) -> Box<dyn StreamDecoder>;

    /// Classifies a non-2xx response.
    fn classify_error(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> ProviderError;

    /// A limit the response's rate-limit headers (any status) say is used up, and when it
    /// resets; `None` for providers that send no such headers.
    fn exhausted(&self, _headers: &HeaderMap) -> Option<retry_hint::UpstreamExhausted> {
        None
    }
}

/// Turns one stream's SSE events into stream items. One decoder per attempt.
pub trait StreamDecoder: Send {
    /// An in-stream error event returns the classified error.
    fn decode(&mut self, event: &SseEvent, out: &mut Vec<StreamItem>) -> Result<(), ProviderError>;

    /// Whether the stream's end marker has been seen; reading stops there, so a server
    /// that keeps the connection open after it does not look like a stall.
    fn is_done(&self) -> bool;

    /// The body ended. Errors if the stream's end marker never came: that is a cut stream,
    /// not a finished answer.
    fn finish(&mut self) -> Result<(), ProviderError>;
}

/// Why an adapter cannot be built from a provider's config. Each message starts with the
/// field's path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdapterConfigError {
    /// A `headers` entry whose name is not an HTTP header name.
    #[error("providers.{provider}.headers: invalid header name {header:?}")]
    HeaderName { provider: String, header: String },
    /// A configured value that travels in a header and is not a valid header value.
    #[error("providers.{provider}.{field}: invalid header value")]
    HeaderValue { provider: String, field: String },
    /// A field this provider kind cannot do without.
    #[error("providers.{provider}.{field}: required for kind {kind}")]
    Required {
        provider: String,
        field: &'static str,
        kind: &'static str,
    },
}

/// The adapter for a configured provider.
pub fn build_adapter(
    name: &str,
    config: &ProviderConfig,
) -> Result<Box<dyn Adapter>, AdapterConfigError> {
    match config.kind {
        ProviderKind::Openai | ProviderKind::OpenaiCompatible => {
            Ok(Box::new(openai::OpenAi::from_config(name, config)?))
        }
        ProviderKind::Azure => Ok(Box::new(azure::Azure::from_config(name, config)?)),
        ProviderKind::Anthropic => Ok(Box::new(anthropic::Anthropic::from_config(name, config)?)),
        ProviderKind::Gemini => Ok(Box::new(gemini::Gemini::from_config(name, config)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_adapter_errors_are_variants_a_caller_can_match() {
        let azure = ProviderConfig::new(ProviderKind::Azure, "https://x.openai.azure.com", None);
        let err = build_adapter("eu", &azure).unwrap_err();
        assert!(
            matches!(&err, AdapterConfigError::Required { provider, field: "api_version", kind: "azure" } if provider == "eu"),
            "{err:?}"
        );
        let mut anthropic = ProviderConfig::new(
            ProviderKind::Anthropic,
            "https://api.anthropic.com",
            Some(ApiKey::new("k")),
        );
        anthropic.api_version = Some("2023-06-01\n".into());
        let err = build_adapter("claude", &anthropic).unwrap_err();
        assert!(
            matches!(&err, AdapterConfigError::HeaderValue { field, .. } if field == "api_version"),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "providers.claude.api_version: invalid header value"
        );
        let mut openai = ProviderConfig::new(ProviderKind::Openai, "", None);
        openai.organization = Some("org\u{7f}".into());
        let err = build_adapter("oa", &openai).unwrap_err();
        assert!(
            matches!(&err, AdapterConfigError::HeaderValue { field, .. } if field == "organization"),
            "{err:?}"
        );
        for kind in [
            ProviderKind::Openai,
            ProviderKind::OpenaiCompatible,
            ProviderKind::Anthropic,
            ProviderKind::Gemini,
        ] {
            let config = ProviderConfig::new(kind, "http://localhost:1", None);
            assert!(build_adapter("p", &config).is_ok(), "{kind:?}");
        }
    }
}
