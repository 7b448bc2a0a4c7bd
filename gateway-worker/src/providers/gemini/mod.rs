//! Google Gemini (`generateContent`, `streamGenerateContent?alt=sse`, v1beta).
//!
//! Decisions this translation makes, and why:
//!
//! - The key goes only in `x-goog-api-key`. Gemini also accepts `?key=`, but URLs end up
//!   in proxy and access logs.
//! - Usage: `promptTokenCount` already includes `cachedContentTokenCount` (the cached
//!   part), and `toolUsePromptTokenCount` (tool-use prompts) is billed as input, so
//!   prompt = prompt + tool-use prompt. `thoughtsTokenCount` is NOT part of
//!   `candidatesTokenCount` (Google's `totalTokenCount` is the sum of all four) but is
//!   billed as output, so completion = candidates + thoughts, and reasoning = thoughts.
//!   Gemini's implicit caching has no write charge: `cache_write_tokens` is 0.
//! - `thought: true` parts are reasoning; parts that carry only a `thoughtSignature` are
//!   skipped. The signature on a `functionCall` part must come back with the call in the
//!   next turn (Gemini 3 rejects the request without it), and the OpenAI format has no
//!   field for it, so it rides in the tool-call id: `call_<n>` without a signature,
//!   `call_<n>__sig_<signature in URL-safe base64>` with one, and is put back on the
//!   `functionCall` part when the producer echoes the call. Signatures on text parts are
//!   not kept.
//! - Tool results become `functionResponse` parts named after the matching earlier call
//!   (Gemini matches by name), with the tool message's text as `response.output`.
//! - Images: `data:` URLs become `inlineData`; http(s) URLs become `fileData`, which
//!   Gemini fetches itself (its own file URIs, YouTube, and public URLs on models that
//!   support them), with the MIME type guessed from the file extension.
//! - `response_format`: `json_object` sets `responseMimeType: application/json`;
//!   `json_schema` also sets `responseJsonSchema` (plain JSON Schema, unlike
//!   `responseSchema`'s OpenAPI subset, which rejects what OpenAI schemas use). Tool
//!   parameters go in `parametersJsonSchema` for the same reason.
//! - Mapped too: `n` -> `candidateCount`, `seed`, `presence_penalty`,
//!   `frequency_penalty`, and `top_k` when a producer sets it. Dropped: `logit_bias`,
//!   `logprobs`, `reasoning_effort`, `parallel_tool_calls`, `user` and every other
//!   OpenAI-only field.
//! - A blocked prompt (`promptFeedback.blockReason`, no candidates) or an answer that is
//!   only a safety stop is `ContentFiltered`, so content-policy fallbacks fire; a safety
//!   stop after some output keeps it and finishes `content_filter`. The error carries the
//!   `usageMetadata` of that response, because those tokens are billed.
//! - A history's tool call whose arguments are not a JSON object is sent as
//!   `{"_raw_arguments": "<text>"}` (see `providers::tool_arguments`).
//! - `RESOURCE_EXHAUSTED` is `RateLimited` (retry after `RetryInfo.retryDelay`), except
//!   when retrying cannot help soon: every violated quota is a per-day one, or a quota's
//!   value is 0 (the model has no free tier). Those are `QuotaExhausted`, so the job
//!   moves on instead of waiting. `FAILED_PRECONDITION` (region or billing not enabled)
//!   is `Auth`: the deployment cannot serve anyone.
//! - Streams have no end marker: a stream is complete when the body ends after a chunk
//!   with a `finishReason`.

mod error;
mod request;
mod response;
mod signature;
mod stream;

use reqwest::header::HeaderMap;

use super::wire::{CallHeaders, KeyHeader, json_body, not_a, percent_encode};
use super::{
    Adapter, AdapterConfigError, CallSpec, Completion, HttpCall, ProviderError, StreamDecoder,
};
use crate::config::ProviderConfig;

use error::{ErrorEnvelope, classify_status};
use request::generate_request;
use response::{GenerateResponse, completion};
use stream::ChunkStream;

const MODELS_PATH: &str = "/v1beta/models/";
const API_KEY_HEADER: &str = "x-goog-api-key";

#[derive(Debug)]
pub struct Gemini {
    base_url: String,
    headers: CallHeaders,
}

impl Gemini {
    pub fn from_config(name: &str, config: &ProviderConfig) -> Result<Self, AdapterConfigError> {
        Ok(Self {
            base_url: config.base_url(),
            headers: CallHeaders::from_config(name, config, KeyHeader::Named(API_KEY_HEADER))?,
        })
    }

    /// `models/<model>:<method>`, for streaming or not.
    fn url(&self, upstream_model: &str, stream: bool) -> String {
        let model = upstream_model
            .strip_prefix("models/")
            .unwrap_or(upstream_model);
        let method = if stream {
            "streamGenerateContent?alt=sse"
        } else {
            "generateContent"
        };
        format!(
            "{}{MODELS_PATH}{}:{method}",
            self.base_url,
            percent_encode(model)
        )
    }
}

impl Adapter for Gemini {
    fn build(&self, call: &CallSpec<'_>) -> Result<HttpCall, ProviderError> {
        let headers = self.headers.for_call(call.stream, call.key)?;
        Ok(HttpCall {
            url: self.url(call.upstream_model, call.stream),
            headers,
            body: json_body(&generate_request(call.request)?)?,
        })
    }

    fn parse_response(&self, body: &[u8]) -> Result<Completion, ProviderError> {
        match serde_json::from_slice::<GenerateResponse>(body) {
            Ok(GenerateResponse {
                error: Some(error), ..
            }) => Err(classify_status(None, &error)),
            Ok(response) => completion(response),
            Err(err) => Err(not_a("GenerateContentResponse", &err, body)),
        }
    }

    fn stream_decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(ChunkStream::default())
    }

    fn classify_error(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> ProviderError {
        let parsed =
            error_envelope(body).map(|envelope| classify_status(Some(status), &envelope.error));
        ProviderError::from_response(status, headers, body, parsed)
    }
}

/// An error body. The JSON-array stream format wraps the error in an array. (Checked
/// first: serde would also read an array as a positional struct.)
fn error_envelope(body: &[u8]) -> Option<ErrorEnvelope> {
    if body.trim_ascii_start().starts_with(b"[") {
        serde_json::from_slice::<Vec<ErrorEnvelope>>(body)
            .ok()
            .and_then(|list| list.into_iter().next())
    } else {
        serde_json::from_slice::<ErrorEnvelope>(body).ok()
    }
}

#[cfg(test)]
mod tests {
    use llmq_schemas::{ChatRequest, Usage};
    use reqwest::header::ACCEPT;

    use super::*;
    use crate::config::{ApiKey, ProviderKind};

    const KEY: &str = "AIzaSyTestKey123456789";

    pub(super) fn adapter() -> Gemini {
        let config = ProviderConfig::new(
            ProviderKind::Gemini,
            "https://generativelanguage.googleapis.com/",
            None,
        );
        Gemini::from_config("gemini", &config).unwrap()
    }

    pub(super) fn spec(request: &ChatRequest, stream: bool) -> CallSpec<'_> {
        CallSpec {
            default_max_tokens: Some(999),
            ..crate::providers::testing::spec(request, "gemini-2.5-flash", stream)
        }
    }

    /// A documented-shape response: a thought, a text part with only a signature, two
    /// function calls, and usage with cache, thoughts and tool-use prompt counts.
    pub(super) const TOOL_RESPONSE: &str = r#"{
      "candidates": [{
        "content": {"role": "model", "parts": [
          {"text": "The user wants the weather.", "thought": true},
          {"text": "Let me check."},
          {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "CiQB0e2Kb+sig/x="},
          {"functionCall": {"name": "get_time", "args": {}}},
          {"thoughtSignature": "CiQB0e2Kbonly"}
        ]},
        "finishReason": "STOP",
        "safetyRatings": [{"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "NEGLIGIBLE"}]
      }],
      "usageMetadata": {"promptTokenCount": 1200, "candidatesTokenCount": 40, "totalTokenCount": 1445,
        "cachedContentTokenCount": 1024, "thoughtsTokenCount": 200, "toolUsePromptTokenCount": 5,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 1200}]},
      "modelVersion": "gemini-2.5-flash",
      "responseId": "mAitaPWkLsfs7M8P0tqf0Qc"
    }"#;

    pub(super) fn expected_usage() -> Usage {
        Usage {
            prompt_tokens: 1205,
            completion_tokens: 240,
            total_tokens: 1445,
            cached_prompt_tokens: 1024,
            cache_write_tokens: 0,
            reasoning_tokens: 200,
        }
    }

    #[test]
    fn the_key_is_only_in_a_sensitive_header_never_in_the_url() {
        let request = ChatRequest::user("hi");
        let key = ApiKey::new(KEY);
        for stream in [false, true] {
            let call = adapter()
                .build(&CallSpec {
                    key: Some(&key),
                    ..spec(&request, stream)
                })
                .unwrap();
            assert!(!call.url.contains(KEY), "{}", call.url);
            assert!(!call.url.contains("key="), "{}", call.url);
            let key = call.headers.get("x-goog-api-key").unwrap();
            assert!(key.is_sensitive());
            assert_eq!(key.to_str().unwrap(), KEY);
            assert!(!format!("{call:?}").contains(KEY));
            assert!(!String::from_utf8_lossy(&call.body).contains(KEY));
        }
        let call = adapter().build(&spec(&request, false)).unwrap();
        assert_eq!(
            call.url,
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"
        );
        let call = adapter().build(&spec(&request, true)).unwrap();
        assert_eq!(
            call.url,
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
        assert_eq!(call.headers.get(ACCEPT).unwrap(), "text/event-stream");
        let call = adapter()
            .build(&CallSpec {
                upstream_model: "models/gemini-2.0-flash",
                ..spec(&request, false)
            })
            .unwrap();
        assert!(
            call.url
                .ends_with("/v1beta/models/gemini-2.0-flash:generateContent"),
            "{}",
            call.url
        );
    }
}
