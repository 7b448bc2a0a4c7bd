//! Anthropic Messages (`POST /v1/messages`).
//!
//! The Messages API is stricter than OpenAI's and counts differently, which is why this
//! translation is explicit rather than a field rename:
//!
//! - It rejects unknown fields, so nothing from `extra` is forwarded blindly. Mapped:
//!   `user` (or `safety_identifier`) -> `metadata.user_id`, `parallel_tool_calls: false`
//!   -> `tool_choice.disable_parallel_tool_use`, `response_format` `json_schema` ->
//!   `output_config.format`, and the Anthropic-native `top_k` and `thinking` when a
//!   producer sets them. Dropped, because Anthropic has no equivalent: `seed`,
//!   `presence_penalty`, `frequency_penalty`, `logit_bias`, `logprobs`, `top_logprobs`,
//!   `reasoning_effort`, `service_tier`, `store`, `metadata`, `response_format`
//!   `json_object` (there is no schema-less JSON mode), and every other OpenAI field.
//!   `n > 1` is refused rather than answered with one choice.
//! - `max_tokens` is required: the job's cap, else the model's `default_max_tokens`,
//!   else [`FALLBACK_MAX_TOKENS`].
//! - System and developer messages become `system` (joined with a blank line, in order);
//!   consecutive same-role turns are merged, tool results travel as `tool_result` blocks
//!   in a user turn.
//! - `input_tokens` excludes cache reads and writes, so the normalized prompt is their
//!   sum. Thinking tokens are billed inside `output_tokens`, and
//!   `output_tokens_details.thinking_tokens` names them: that is `reasoning_tokens`.
//!   Stream usage is cumulative: `message_delta` replaces what `message_start` said,
//!   field by field, when it carries a field.
//! - A `refusal` stop with nothing else in the answer is the error `ContentFiltered`, so
//!   `content_policy_fallbacks` fire as they would on OpenAI's policy error; a refusal
//!   after some text or a tool call keeps that output and finishes `content_filter`.
//!   Streaming and non-streaming apply the same rule. The error names `stop_details`'
//!   category and explanation and carries the usage reported with the refusal: Anthropic
//!   bills the input and the output generated up to it.
//! - A history's tool call whose arguments are not a JSON object is sent as
//!   `{"_raw_arguments": "<text>"}` (see `providers::tool_arguments`).
//! - Thinking comes back as `reasoning_content`; its signature cannot ride through the
//!   OpenAI format, so thinking is not replayed in later turns.

mod error;
mod request;
mod response;
mod stream;

use reqwest::header::{HeaderMap, HeaderName};

use super::retry_hint::{UpstreamExhausted, anthropic_exhausted};
use super::wire::{CallHeaders, KeyHeader, error_response, header_value, json_body, parse_body};
use super::{
    Adapter, AdapterConfigError, CallSpec, Completion, HttpCall, ProviderError, StreamDecoder,
};
use crate::config::ProviderConfig;

use error::{ErrorEnvelope, classify_envelope};
use request::messages_request;
use response::{MessageResponse, completion};
use stream::EventDecoder;

const MESSAGES_PATH: &str = "/v1/messages";
const DEFAULT_VERSION: &str = "2023-06-01";
const API_KEY_HEADER: &str = "x-api-key";
const VERSION_HEADER: &str = "anthropic-version";

/// `max_tokens` when neither the job nor the model config sets one: Anthropic requires
/// the field, and 4096 fits every current Claude model's output limit.
pub const FALLBACK_MAX_TOKENS: u32 = 4096;

#[derive(Debug)]
pub struct Anthropic {
    url: String,
    headers: CallHeaders,
}

impl Anthropic {
    pub fn from_config(name: &str, config: &ProviderConfig) -> Result<Self, AdapterConfigError> {
        let mut headers = CallHeaders::from_config(name, config, KeyHeader::Named(API_KEY_HEADER))?;
        let version = config.api_version.as_deref().unwrap_or(DEFAULT_VERSION);
        headers.insert(
            HeaderName::from_static(VERSION_HEADER),
            header_value(name, "api_version", version)?,
        );
        Ok(Self {
            url: format!("{}{MESSAGES_PATH}", config.base_url()),
            headers,
        })
    }
}

impl Adapter for Anthropic {
    fn build(&self, call: &CallSpec<'_>) -> Result<HttpCall, ProviderError> {
        Ok(HttpCall {
            url: self.url.clone(),
            headers: self.headers.for_call(call.stream, call.key)?,
            body: json_body(&messages_request(call)?)?,
        })
    }

    fn parse_response(&self, body: &[u8]) -> Result<Completion, ProviderError> {
        parse_body(body, "message", |envelope: ErrorEnvelope| {
            classify_envelope(None, &envelope)
        })
        .and_then(|message: MessageResponse| completion(message))
    }

    fn stream_decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(EventDecoder::default())
    }

    fn classify_error(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> ProviderError {
        error_response(status, headers, body, |envelope: ErrorEnvelope| {
            classify_envelope(Some(status), &envelope)
        })
    }

    fn exhausted(&self, headers: &HeaderMap) -> Option<UpstreamExhausted> {
        anthropic_exhausted(headers)
    }
}

#[cfg(test)]
mod tests {
    use llmq_schemas::ChatRequest;
    use reqwest::header::{ACCEPT, CONTENT_TYPE};

    use super::*;
    use crate::config::{ApiKey, ProviderKind};

    const KEY: &str = "sk-ant-test-key-123";

    pub(super) fn adapter() -> Anthropic {
        let config =
            ProviderConfig::new(ProviderKind::Anthropic, "https://api.anthropic.com/", None);
        Anthropic::from_config("anthropic", &config).unwrap()
    }

    pub(super) fn spec(request: &ChatRequest, stream: bool) -> CallSpec<'_> {
        crate::providers::testing::spec(request, "claude-sonnet-4-5", stream)
    }

    #[test]
    fn url_headers_and_the_key_only_in_a_sensitive_header() {
        let key = ApiKey::new(KEY);
        let call = adapter()
            .build(&CallSpec {
                key: Some(&key),
                ..spec(&ChatRequest::user("hi"), true)
            })
            .unwrap();
        assert_eq!(call.url, "https://api.anthropic.com/v1/messages");
        let key = call.headers.get("x-api-key").unwrap();
        assert!(key.is_sensitive());
        assert_eq!(key.to_str().unwrap(), KEY);
        assert_eq!(call.headers.get("anthropic-version").unwrap(), "2023-06-01");
        assert_eq!(call.headers.get(CONTENT_TYPE).unwrap(), "application/json");
        assert_eq!(call.headers.get(ACCEPT).unwrap(), "text/event-stream");
        assert!(!call.url.contains(KEY));
        assert!(!format!("{call:?}").contains(KEY));
        assert!(!String::from_utf8_lossy(&call.body).contains(KEY));

        let mut config =
            ProviderConfig::new(ProviderKind::Anthropic, "https://proxy.internal", None);
        config.api_version = Some("2024-01-01".into());
        let call = Anthropic::from_config("a", &config)
            .unwrap()
            .build(&spec(&ChatRequest::user("hi"), false))
            .unwrap();
        assert_eq!(call.url, "https://proxy.internal/v1/messages");
        assert_eq!(call.headers.get("anthropic-version").unwrap(), "2024-01-01");
        assert!(call.headers.get("x-api-key").is_none());
        assert!(call.headers.get(ACCEPT).is_none());
    }
}
