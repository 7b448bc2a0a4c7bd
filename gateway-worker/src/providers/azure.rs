//! Azure OpenAI (`POST {base}/openai/deployments/{deployment}/chat/completions`).
//!
//! Azure speaks OpenAI's bodies, so parsing, streaming and most classification reuse
//! the OpenAI adapter's functions. What differs is kept here: the deployment id in the
//! path names the model (the body carries none), `api-version` is a required query
//! parameter, the key travels in `api-key`, and the content filter is part of the wire
//! format. A prompt the filter rejects is a 400 with `code: "content_filter"` (and an
//! `innererror` with `ResponsibleAIPolicyViolation`), which is `ContentFiltered` so
//! content-policy fallbacks fire; an answer the filter cut is a normal completion with
//! `finish_reason: "content_filter"`, as OpenAI reports it. Streams open with a
//! choice-less `prompt_filter_results` chunk with empty `id` and `model`, which the
//! chunk decoder skips for identity. Retry delays come from `retry-after-ms` and
//! `x-ms-retry-after-ms` (read by `retry_hint`).
//!
//! Only the deployment-based API is supported, not the newer `/openai/v1` surface.
//! `stream_usage = false` in the config drops `stream_options` for api-versions older
//! than 2024-09-01 that reject it.

use llmq_schemas::ErrorType;
use reqwest::header::HeaderMap;
use serde::Deserialize;

use super::openai::{ChunkDecoder, classify, parse_completion, request_body};
use super::retry_hint::{UpstreamExhausted, openai_exhausted};
use super::wire::{CallHeaders, KeyHeader, percent_encode};
use super::{
    Adapter, AdapterConfigError, CallSpec, Completion, HttpCall, ProviderError, StreamDecoder,
};
use crate::config::ProviderConfig;

const API_KEY_HEADER: &str = "api-key";
const POLICY_VIOLATION: &str = "ResponsibleAIPolicyViolation";

#[derive(Debug)]
pub struct Azure {
    base_url: String,
    api_version: String,
    headers: CallHeaders,
    stream_usage: bool,
}

impl Azure {
    pub fn from_config(name: &str, config: &ProviderConfig) -> Result<Self, AdapterConfigError> {
        let required = |field| AdapterConfigError::Required {
            provider: name.to_owned(),
            field,
            kind: "azure",
        };
        let base_url = config.base_url();
        if base_url.is_empty() {
            return Err(required("base_url"));
        }
        let api_version = config
            .api_version
            .clone()
            .filter(|version| !version.trim().is_empty())
            .ok_or_else(|| required("api_version"))?;
        Ok(Self {
            base_url,
            api_version,
            headers: CallHeaders::from_config(name, config, KeyHeader::Named(API_KEY_HEADER))?,
            stream_usage: config.stream_usage,
        })
    }
}

impl Adapter for Azure {
    fn build(&self, call: &CallSpec<'_>) -> Result<HttpCall, ProviderError> {
        Ok(HttpCall {
            url: format!(
                "{}/openai/deployments/{}/chat/completions?api-version={}",
                self.base_url,
                percent_encode(call.upstream_model),
                percent_encode(&self.api_version)
            ),
            headers: self.headers.for_call(call.stream, call.key)?,
            body: request_body(call, self.stream_usage, false)?,
        })
    }

    fn parse_response(&self, body: &[u8]) -> Result<Completion, ProviderError> {
        parse_completion(body)
    }

    fn stream_decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(ChunkDecoder::default())
    }

    fn classify_error(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> ProviderError {
        let mut err = classify(status, headers, body);
        // Some filter rejections carry only the inner code.
        if err.class != ErrorType::ContentFiltered
            && serde_json::from_slice::<FilterError>(body)
                .is_ok_and(|body| body.error.innererror.code.as_deref() == Some(POLICY_VIOLATION))
        {
            err.class = ErrorType::ContentFiltered;
        }
        err
    }

    fn exhausted(&self, headers: &HeaderMap) -> Option<UpstreamExhausted> {
        openai_exhausted(headers)
    }
}

#[derive(Debug, Deserialize)]
struct FilterError {
    error: FilterErrorObject,
}

#[derive(Debug, Deserialize)]
struct FilterErrorObject {
    innererror: InnerError,
}

#[derive(Debug, Deserialize)]
struct InnerError {
    #[serde(default)]
    code: Option<String>,
}

#[cfg(test)]
mod tests {
    use llmq_schemas::{ChatRequest, Usage};
    use reqwest::header::HeaderValue;
    use serde_json::{Value, json};

    use super::*;
    use crate::config::{ApiKey, ProviderKind};
    use crate::providers::accumulate::StreamAccumulator;
    use crate::providers::testing::{assert_classifies, spec};

    const KEY: &str = "azure-test-key-123";

    fn config() -> ProviderConfig {
        let mut config = ProviderConfig::new(
            ProviderKind::Azure,
            "https://my-resource.openai.azure.com/",
            None,
        );
        config.api_version = Some("2024-10-21".into());
        config
    }

    fn adapter() -> Azure {
        Azure::from_config("azure-eu", &config()).unwrap()
    }

    #[test]
    fn deployment_in_the_path_key_in_a_sensitive_header_no_model_in_the_body() {
        let request: ChatRequest = serde_json::from_value(json!({
            "model": "chat-fast",
            "messages": [{"role": "user", "content": "hi"}],
            "max_completion_tokens": 5,
            "reasoning_effort": "low"
        }))
        .unwrap();
        let key = ApiKey::new(KEY);
        let call = adapter()
            .build(&CallSpec {
                key: Some(&key),
                ..spec(&request, "gpt-4.1-mini", true)
            })
            .unwrap();
        assert_eq!(
            call.url,
            "https://my-resource.openai.azure.com/openai/deployments/gpt-4.1-mini/chat/completions?api-version=2024-10-21"
        );
        let key = call.headers.get("api-key").unwrap();
        assert!(key.is_sensitive());
        assert_eq!(key.to_str().unwrap(), KEY);
        assert!(call.headers.get("authorization").is_none());
        assert!(!call.url.contains(KEY));
        assert!(!format!("{call:?}").contains(KEY));
        let body: Value = serde_json::from_slice(&call.body).unwrap();
        assert!(body.get("model").is_none());
        assert_eq!(body["stream"], true);
        assert_eq!(body["stream_options"], json!({"include_usage": true}));
        assert_eq!(body["max_completion_tokens"], 5);
        assert_eq!(body["reasoning_effort"], "low");

        let call = adapter()
            .build(&spec(&request, "my deploy/v2", false))
            .unwrap();
        assert!(
            call.url
                .contains("/deployments/my%20deploy%2Fv2/chat/completions?"),
            "{}",
            call.url
        );
        let body: Value = serde_json::from_slice(&call.body).unwrap();
        assert!(body.get("stream").is_none());
        assert!(body.get("stream_options").is_none());
    }

    #[test]
    fn base_url_and_api_version_are_required() {
        let mut missing_version = config();
        missing_version.api_version = None;
        let err = Azure::from_config("a", &missing_version).unwrap_err();
        assert_eq!(
            err,
            AdapterConfigError::Required {
                provider: "a".into(),
                field: "api_version",
                kind: "azure"
            }
        );
        assert_eq!(
            err.to_string(),
            "providers.a.api_version: required for kind azure"
        );
        let mut missing_base = config();
        missing_base.base_url = None;
        let err = Azure::from_config("a", &missing_base).unwrap_err();
        assert!(
            matches!(
                err,
                AdapterConfigError::Required {
                    field: "base_url",
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "providers.a.base_url: required for kind azure"
        );
        let mut old = config();
        old.stream_usage = false;
        let request = ChatRequest::user("hi");
        let call = Azure::from_config("a", &old)
            .unwrap()
            .build(&spec(&request, "d", true))
            .unwrap();
        let body: Value = serde_json::from_slice(&call.body).unwrap();
        assert!(body.get("stream_options").is_none());
    }

    #[test]
    fn a_filtered_answer_is_a_normal_completion_with_filter_annotations_kept() {
        let body = json!({
            "id": "chatcmpl-AZ1", "object": "chat.completion", "created": 1727000000, "model": "gpt-4o-2024-08-06",
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {"hate": {"filtered": false, "severity": "safe"}}}],
            "choices": [{"index": 0, "finish_reason": "content_filter", "logprobs": null,
                "message": {"role": "assistant", "content": null, "refusal": null},
                "content_filter_results": {"violence": {"filtered": true, "severity": "high"}}}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 4, "total_tokens": 24,
                      "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}}
        });
        let done = adapter()
            .parse_response(body.to_string().as_bytes())
            .unwrap();
        assert_eq!(
            done.response.choices[0].finish_reason.as_deref(),
            Some("content_filter")
        );
        assert_eq!(done.usage, Some(Usage::new(20, 4)));
        assert!(done.response.extra.contains_key("prompt_filter_results"));
    }

    fn decode_stream(text: &str) -> (Result<(), ProviderError>, StreamAccumulator) {
        crate::providers::testing::decode_stream(adapter().stream_decoder(), text.as_bytes(), 7)
    }

    #[test]
    fn streams_with_prompt_filter_chunks_keep_the_real_identity_and_usage() {
        let stream = concat!(
            "data: {\"choices\":[],\"created\":0,\"id\":\"\",\"model\":\"\",\"object\":\"\",\"prompt_filter_results\":[{\"prompt_index\":0,\"content_filter_results\":{\"hate\":{\"filtered\":false,\"severity\":\"safe\"}}}]}\n\n",
            "data: {\"choices\":[{\"content_filter_results\":{},\"delta\":{\"content\":\"\",\"refusal\":null,\"role\":\"assistant\"},\"finish_reason\":null,\"index\":0,\"logprobs\":null}],\"created\":1727000000,\"id\":\"chatcmpl-AZ2\",\"model\":\"gpt-4o-2024-08-06\",\"object\":\"chat.completion.chunk\",\"system_fingerprint\":\"fp_1\"}\n\n",
            "data: {\"choices\":[{\"content_filter_results\":{\"hate\":{\"filtered\":false,\"severity\":\"safe\"}},\"delta\":{\"content\":\"Hello\"},\"finish_reason\":null,\"index\":0,\"logprobs\":null}],\"created\":1727000000,\"id\":\"chatcmpl-AZ2\",\"model\":\"gpt-4o-2024-08-06\",\"object\":\"chat.completion.chunk\"}\n\n",
            "data: {\"choices\":[{\"content_filter_results\":{},\"delta\":{},\"finish_reason\":\"content_filter\",\"index\":0,\"logprobs\":null}],\"created\":1727000000,\"id\":\"chatcmpl-AZ2\",\"model\":\"gpt-4o-2024-08-06\",\"object\":\"chat.completion.chunk\"}\n\n",
            "data: {\"choices\":[],\"created\":1727000000,\"id\":\"chatcmpl-AZ2\",\"model\":\"gpt-4o-2024-08-06\",\"object\":\"chat.completion.chunk\",\"usage\":{\"completion_tokens\":1,\"prompt_tokens\":9,\"total_tokens\":10,\"prompt_tokens_details\":{\"cached_tokens\":0}}}\n\n",
            "data: [DONE]\n\n"
        );
        let (end, acc) = decode_stream(stream);
        end.unwrap();
        let done = acc.finish("unused");
        assert_eq!(done.response.id, "chatcmpl-AZ2");
        assert_eq!(done.response.model, "gpt-4o-2024-08-06");
        assert_eq!(done.response.created, 1_727_000_000);
        assert_eq!(done.response.text(), "Hello");
        assert_eq!(
            done.response.choices[0].finish_reason.as_deref(),
            Some("content_filter")
        );
        assert_eq!(done.usage, Some(Usage::new(9, 1)));
    }

    fn content_filter_body() -> Vec<u8> {
        json!({"error": {
            "message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy.",
            "type": null, "param": "prompt", "code": "content_filter", "status": 400,
            "innererror": {"code": "ResponsibleAIPolicyViolation", "content_filter_result": {
                "hate": {"filtered": true, "severity": "high"}, "violence": {"filtered": false, "severity": "safe"}}}
        }})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn classifies_azure_errors() {
        let headers = HeaderMap::new();
        let azure = |code: &str, message: &str| {
            json!({"error": {"code": code, "message": message}})
                .to_string()
                .into_bytes()
        };
        let inner_only = json!({"error": {"code": "BadRequest", "message": "filtered",
            "innererror": {"code": "ResponsibleAIPolicyViolation"}}})
        .to_string()
        .into_bytes();
        let cases = [
            (400, content_filter_body(), ErrorType::ContentFiltered),
            (400, inner_only, ErrorType::ContentFiltered),
            (400, json!({"error": {"message": "This model's maximum context length is 128000 tokens.", "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}).to_string().into_bytes(), ErrorType::ContextWindowExceeded),
            (429, azure("429", "Requests to the ChatCompletions_Create Operation have exceeded token rate limit. Please retry after 1 second."), ErrorType::RateLimited),
            (401, azure("401", "Access denied due to invalid subscription key or wrong API endpoint."), ErrorType::Auth),
            (404, azure("DeploymentNotFound", "The API deployment for this resource does not exist."), ErrorType::NotFound),
            (404, azure("404", "Resource not found"), ErrorType::NotFound),
            (503, azure("ServiceUnavailable", "The service is temporarily unable to process your request."), ErrorType::Server),
            (500, azure("InternalServerError", "Backend returned unexpected response."), ErrorType::Server),
        ];
        assert_classifies(&adapter(), &cases);
        let err = adapter().classify_error(400, &headers, &content_filter_body());
        assert!(!err.is_retryable());
        assert!(err.allows_fallback());
    }

    #[test]
    fn azure_retry_headers_are_honoured() {
        let mut headers = HeaderMap::new();
        headers.insert("x-ms-retry-after-ms", HeaderValue::from_static("1500"));
        headers.insert("retry-after", HeaderValue::from_static("2"));
        let err = adapter().classify_error(
            429,
            &headers,
            b"{\"error\":{\"code\":\"429\",\"message\":\"slow\"}}",
        );
        assert_eq!(err.class, ErrorType::RateLimited);
        assert_eq!(
            err.retry_after,
            Some(std::time::Duration::from_millis(1500))
        );
        let mut headers = HeaderMap::new();
        headers.insert("retry-after-ms", HeaderValue::from_static("250"));
        let err = adapter().classify_error(429, &headers, b"");
        assert_eq!(err.retry_after, Some(std::time::Duration::from_millis(250)));
    }
}
