//! OpenAI Chat Completions, and the OpenAI-compatible servers (vLLM, Ollama, OpenRouter,
//! Groq, Together...).
//!
//! Compatible servers differ in small ways handled here: some put `usage` on a chunk that
//! still has choices (read usage from any chunk, keep the last), some reject
//! `stream_options` (`stream_usage = false`), some report mid-stream failures as a `data:`
//! object with an `error` key inside a 200 stream, with a numeric code.
//! The parsing and classification functions are public to the crate because Azure
//! OpenAI speaks the same bodies behind a different URL and auth header.

use llmq_schemas::{CompletionUsage, ErrorType, ToolCallDelta, Usage};
use reqwest::header::{HeaderMap, HeaderName};
use serde::Deserialize;
use serde_json::Value;

use super::retry_hint::{UpstreamExhausted, openai_exhausted};
use super::wire::{
    CallHeaders, KeyHeader, error_response, event_json, header_value, json_body, parse_body,
    stream_end,
};
use super::{
    Adapter, AdapterConfigError, CallSpec, Completion, DeltaPart, HttpCall, ProviderError,
    SseEvent, StreamDecoder, StreamItem,
};
use crate::config::{ProviderConfig, ProviderKind};

const CHAT_PATH: &str = "/chat/completions";

#[derive(Debug)]
pub struct OpenAi {
    url: String,
    headers: CallHeaders,
    stream_usage: bool,
}

impl OpenAi {
    pub fn from_config(name: &str, config: &ProviderConfig) -> Result<Self, AdapterConfigError> {
        let mut headers = CallHeaders::from_config(name, config, KeyHeader::Bearer)?;
        if config.kind == ProviderKind::Openai {
            for (header, field, value) in [
                ("openai-organization", "organization", &config.organization),
                ("openai-project", "project", &config.project),
            ] {
                if let Some(value) = value {
                    headers.insert(
                        HeaderName::from_static(header),
                        header_value(name, field, value)?,
                    );
                }
            }
        }
        Ok(Self {
            url: format!("{}{CHAT_PATH}", config.base_url()),
            headers,
            stream_usage: config.kind == ProviderKind::Openai || config.stream_usage,
        })
    }
}

impl Adapter for OpenAi {
    fn build(&self, call: &CallSpec<'_>) -> Result<HttpCall, ProviderError> {
        Ok(HttpCall {
            url: self.url.clone(),
            headers: self.headers.for_call(call.stream, call.key)?,
            body: request_body(call, self.stream_usage, true)?,
        })
    }

    fn parse_response(&self, body: &[u8]) -> Result<Completion, ProviderError> {
        parse_completion(body)
    }

    fn stream_decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(ChunkDecoder::default())
    }

    fn classify_error(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> ProviderError {
        classify(status, headers, body)
    }

    fn exhausted(&self, headers: &HeaderMap) -> Option<UpstreamExhausted> {
        openai_exhausted(headers)
    }
}

/// The request body: the job's request with the upstream model, the stream flag and, when
/// streaming, `stream_options.include_usage` (if the server supports it). `with_model`
/// is false for Azure, where the deployment in the URL names the model.
pub(crate) fn request_body(
    call: &CallSpec<'_>,
    stream_usage: bool,
    with_model: bool,
) -> Result<Vec<u8>, ProviderError> {
    let mut request = call.request.clone();
    request.model = with_model.then(|| call.upstream_model.to_owned());
    request.stream = call.stream.then_some(true);
    request.stream_options =
        (call.stream && stream_usage).then(|| serde_json::json!({"include_usage": true}));
    json_body(&request)
}

/// A non-streaming `chat.completion` body.
pub(crate) fn parse_completion(body: &[u8]) -> Result<Completion, ProviderError> {
    let response: llmq_schemas::ChatCompletion =
        parse_body(body, "chat.completion", |error: ErrorBody| {
            classify_object(None, &error.error)
        })?;
    let usage = response.usage.as_ref().map(normalize_usage);
    if response.choices.is_empty() {
        return Err(ProviderError::malformed("the completion has no choices").with_usage(usage));
    }
    Ok(Completion { response, usage })
}

/// OpenAI usage counts cached prompt tokens inside `prompt_tokens`: already the normalized
/// meaning.
pub(crate) fn normalize_usage(usage: &CompletionUsage) -> Usage {
    let prompt = usage.prompt_tokens;
    let completion = usage.completion_tokens;
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: if usage.total_tokens > 0 {
            usage.total_tokens
        } else {
            prompt + completion
        },
        cached_prompt_tokens: usage
            .prompt_tokens_details
            .as_ref()
            .map_or(0, |d| d.cached_tokens),
        cache_write_tokens: 0,
        reasoning_tokens: usage
            .completion_tokens_details
            .as_ref()
            .map_or(0, |d| d.reasoning_tokens),
    }
}

/// Classifies a non-2xx OpenAI-format response.
pub(crate) fn classify(status: u16, headers: &HeaderMap, body: &[u8]) -> ProviderError {
    error_response(status, headers, body, |body: ErrorBody| {
        classify_object(Some(status), &body.error)
    })
}

#[derive(Debug, Deserialize)]
pub(crate) struct ErrorBody {
    pub error: ErrorObject,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ErrorObject {
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// A string for OpenAI; a number (an HTTP status) for OpenRouter's in-stream errors.
    #[serde(default)]
    pub code: Option<Value>,
}

/// The class of an OpenAI-format error object. `status` is the HTTP status when there is
/// one; a numeric `code` stands in for it in in-stream errors.
pub(crate) fn classify_object(status: Option<u16>, error: &ErrorObject) -> ProviderError {
    let code = match &error.code {
        Some(Value::String(code)) => Some(code.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let status = status.or_else(|| {
        error
            .code
            .as_ref()
            .and_then(Value::as_u64)
            .and_then(|n| u16::try_from(n).ok())
    });
    let message = error.message.clone().unwrap_or_else(|| "no message".into());
    let class = class_of(code.as_deref(), error.kind.as_deref(), &message, status);
    let mut err = ProviderError::new(class, message).with_code(code.or_else(|| error.kind.clone()));
    err.status = status;
    err
}

/// The class an error's code or type names (either field may carry the name), else its
/// message says, else its status.
fn class_of(
    code: Option<&str>,
    kind: Option<&str>,
    message: &str,
    status: Option<u16>,
) -> ErrorType {
    let lower = message.to_ascii_lowercase();
    let by_code = |name: &str| code == Some(name) || kind == Some(name);
    if by_code("insufficient_quota") || by_code("billing_hard_limit_reached") {
        ErrorType::QuotaExhausted
    } else if by_code("context_length_exceeded")
        || by_code("string_above_max_length")
        || lower.contains("maximum context length")
        || lower.contains("context window")
    {
        ErrorType::ContextWindowExceeded
    } else if by_code("content_filter") || by_code("content_policy_violation") {
        ErrorType::ContentFiltered
    } else if by_code("rate_limit_exceeded") {
        ErrorType::RateLimited
    } else if by_code("invalid_api_key") || by_code("authentication_error") {
        ErrorType::Auth
    } else if by_code("model_not_found") || by_code("DeploymentNotFound") {
        ErrorType::NotFound
    } else if let Some(status) = status {
        ProviderError::class_for_status(status)
    } else if by_code("invalid_request_error") {
        ErrorType::InvalidRequest
    } else {
        ErrorType::Server
    }
}

/// Decodes `chat.completion.chunk` events.
#[derive(Debug, Default)]
pub(crate) struct ChunkDecoder {
    done: bool,
    meta_sent: bool,
}

#[derive(Debug, Deserialize)]
struct Chunk {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    created: Option<i64>,
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    #[serde(default)]
    usage: Option<CompletionUsage>,
    #[serde(default)]
    error: Option<ErrorObject>,
}

#[derive(Debug, Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    delta: Option<ChunkDelta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ChunkDelta {
    #[serde(default)]
    content: Option<String>,
    /// `reasoning_content` (DeepSeek, vLLM) or `reasoning` (OpenRouter).
    #[serde(default, alias = "reasoning")]
    reasoning_content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ChunkToolCall>>,
}

#[derive(Debug, Deserialize)]
struct ChunkToolCall {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<ChunkFunction>,
}

#[derive(Debug, Deserialize)]
struct ChunkFunction {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

impl StreamDecoder for ChunkDecoder {
    fn decode(&mut self, event: &SseEvent, out: &mut Vec<StreamItem>) -> Result<(), ProviderError> {
        if event.data.trim() == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        let Some(chunk) = event_json::<Chunk>(event, "chunk")? else {
            return Ok(());
        };
        // Any chunk may carry usage, not only the choices-less last one; one that also
        // carries an error still reports what was billed.
        if let Some(usage) = &chunk.usage {
            out.push(StreamItem::Usage(normalize_usage(usage)));
        }
        if let Some(error) = &chunk.error {
            return Err(classify_object(None, error));
        }
        out.extend(self.meta(chunk.id, chunk.model, chunk.created));
        // Only the first choice is streamed to producers (`n` > 1 is not supported when
        // streaming).
        for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
            if let Some(delta) = choice.delta {
                out.push(StreamItem::Delta(delta_part(delta)));
            }
            if let Some(reason) = choice.finish_reason {
                out.push(StreamItem::Finish(reason));
            }
        }
        Ok(())
    }

    fn is_done(&self) -> bool {
        self.done
    }

    fn finish(&mut self) -> Result<(), ProviderError> {
        stream_end(self.done, "[DONE]")
    }
}

impl ChunkDecoder {
    /// The response's identity, until a chunk that has an id was seen. Azure opens with a
    /// choice-less `prompt_filter_results` chunk whose id and model are empty.
    fn meta(
        &mut self,
        id: Option<String>,
        model: Option<String>,
        created: Option<i64>,
    ) -> Option<StreamItem> {
        if self.meta_sent {
            return None;
        }
        let id = id.filter(|id| !id.is_empty());
        self.meta_sent = id.is_some();
        Some(StreamItem::Meta {
            id,
            model: model.filter(|model| !model.is_empty()),
            created: created.filter(|created| *created > 0),
        })
    }
}

fn delta_part(delta: ChunkDelta) -> DeltaPart {
    DeltaPart {
        content: delta.content,
        reasoning: delta.reasoning_content,
        refusal: delta.refusal,
        tool_calls: delta
            .tool_calls
            .unwrap_or_default()
            .into_iter()
            .map(|call| ToolCallDelta {
                index: call.index,
                id: call.id,
                name: call.function.as_ref().and_then(|f| f.name.clone()),
                arguments: call.function.and_then(|f| f.arguments),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use llmq_schemas::ChatRequest;
    use reqwest::header::{AUTHORIZATION, HeaderValue};
    use serde_json::json;

    use super::*;
    use crate::config::ApiKey;
    use crate::providers::accumulate::StreamAccumulator;
    use crate::providers::testing::assert_classifies;

    fn adapter() -> OpenAi {
        let config = ProviderConfig::new(ProviderKind::Openai, "https://api.openai.com/v1/", None);
        OpenAi::from_config("openai", &config).unwrap()
    }

    fn spec(request: &ChatRequest, stream: bool) -> CallSpec<'_> {
        crate::providers::testing::spec(request, "gpt-4.1-mini", stream)
    }

    #[test]
    fn request_replaces_model_and_stream_and_keeps_unknown_fields() {
        let mut request: ChatRequest = serde_json::from_value(json!({
            "model": "chat-fast",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": false,
            "reasoning_effort": "low",
            "max_completion_tokens": 5
        }))
        .unwrap();
        request.stream_options = Some(json!({"include_obfuscation": true}));
        let key = ApiKey::new("sk-test-key-123");
        let call = adapter()
            .build(&CallSpec {
                key: Some(&key),
                ..spec(&request, true)
            })
            .unwrap();
        assert_eq!(call.url, "https://api.openai.com/v1/chat/completions");
        let body: Value = serde_json::from_slice(&call.body).unwrap();
        assert_eq!(body["model"], "gpt-4.1-mini");
        assert_eq!(body["stream"], true);
        assert_eq!(body["stream_options"], json!({"include_usage": true}));
        assert_eq!(body["reasoning_effort"], "low");
        assert_eq!(body["max_completion_tokens"], 5);
        let auth = call.headers.get(AUTHORIZATION).unwrap();
        assert!(auth.is_sensitive());
        assert_eq!(auth.to_str().unwrap(), "Bearer sk-test-key-123");
        assert!(!format!("{call:?}").contains("sk-test-key-123"));

        let call = adapter().build(&spec(&request, false)).unwrap();
        let body: Value = serde_json::from_slice(&call.body).unwrap();
        assert!(body.get("stream").is_none());
        assert!(body.get("stream_options").is_none());
    }

    #[test]
    fn organization_and_project_travel_in_their_headers_for_openai_only() {
        let mut config =
            ProviderConfig::new(ProviderKind::Openai, "https://api.openai.com/v1", None);
        config.organization = Some("org-1".into());
        config.project = Some("proj_1".into());
        let request = ChatRequest::user("hi");
        let call = OpenAi::from_config("openai", &config)
            .unwrap()
            .build(&spec(&request, false))
            .unwrap();
        assert_eq!(call.headers.get("openai-organization").unwrap(), "org-1");
        assert_eq!(call.headers.get("openai-project").unwrap(), "proj_1");
        config.kind = ProviderKind::OpenaiCompatible;
        let call = OpenAi::from_config("vllm", &config)
            .unwrap()
            .build(&spec(&request, false))
            .unwrap();
        assert!(call.headers.get("openai-organization").is_none());
        assert!(call.headers.get("openai-project").is_none());
    }

    #[test]
    fn compatible_servers_can_opt_out_of_stream_options() {
        let mut config =
            ProviderConfig::new(ProviderKind::OpenaiCompatible, "http://vllm:8000/v1", None);
        config.stream_usage = false;
        config
            .headers
            .insert("HTTP-Referer".into(), "https://example.com".into());
        let adapter = OpenAi::from_config("vllm", &config).unwrap();
        let request = ChatRequest::user("hi");
        let call = adapter.build(&spec(&request, true)).unwrap();
        let body: Value = serde_json::from_slice(&call.body).unwrap();
        assert!(body.get("stream_options").is_none());
        assert!(call.headers.get(AUTHORIZATION).is_none());
        assert_eq!(
            call.headers.get("http-referer").unwrap(),
            "https://example.com"
        );
    }

    #[test]
    fn parses_the_documented_completion_and_normalizes_usage() {
        let body = json!({"id":"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG","object":"chat.completion","created":1741570283,"model":"gpt-4o-2024-08-06",
            "choices":[{"index":0,"message":{"role":"assistant","content":"Hi there","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],
            "usage":{"prompt_tokens":1117,"completion_tokens":46,"total_tokens":1163,
                     "prompt_tokens_details":{"cached_tokens":1024,"audio_tokens":0},
                     "completion_tokens_details":{"reasoning_tokens":10,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},
            "service_tier":"default"});
        let done = adapter()
            .parse_response(body.to_string().as_bytes())
            .unwrap();
        assert_eq!(done.response.text(), "Hi there");
        let usage = done.usage.unwrap();
        assert_eq!(usage.prompt_tokens, 1117);
        assert_eq!(usage.cached_prompt_tokens, 1024);
        assert_eq!(usage.reasoning_tokens, 10);
        assert_eq!(usage.total_tokens, 1163);
        assert_eq!(
            done.response.choices[0].message.extra["annotations"],
            json!([])
        );
    }

    #[test]
    fn garbage_and_empty_bodies_are_malformed_and_error_bodies_are_errors() {
        let err = adapter().parse_response(b"<html>oops</html>").unwrap_err();
        assert_eq!(err.class, ErrorType::MalformedResponse);
        let err = adapter()
            .parse_response(
                br#"{"id":"x","object":"chat.completion","created":1,"model":"m","choices":[]}"#,
            )
            .unwrap_err();
        assert_eq!(err.class, ErrorType::MalformedResponse);
        let err = adapter()
            .parse_response(br#"{"error":{"message":"upstream overloaded","code":503}}"#)
            .unwrap_err();
        assert_eq!(err.class, ErrorType::Server);
    }

    fn error_body(message: &str, kind: &str, code: Value) -> Vec<u8> {
        json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn classifies_every_documented_error() {
        let headers = HeaderMap::new();
        let cases = [
            (
                429,
                error_body(
                    "Rate limit reached for gpt-4o-mini in organization org-XXXX on tokens per min (TPM): Limit 200000, Used 170633, Requested 180002. Please try again in 45.19s.",
                    "tokens",
                    json!("rate_limit_exceeded"),
                ),
                ErrorType::RateLimited,
            ),
            (
                429,
                error_body(
                    "You exceeded your current quota",
                    "insufficient_quota",
                    json!("insufficient_quota"),
                ),
                ErrorType::QuotaExhausted,
            ),
            (
                401,
                error_body(
                    "Incorrect API key provided: sk-abc***wxyz.",
                    "invalid_request_error",
                    json!("invalid_api_key"),
                ),
                ErrorType::Auth,
            ),
            (
                404,
                error_body(
                    "The model `gpt-9` does not exist",
                    "invalid_request_error",
                    json!("model_not_found"),
                ),
                ErrorType::NotFound,
            ),
            (
                400,
                error_body(
                    "This model's maximum context length is 128000 tokens.",
                    "invalid_request_error",
                    json!("context_length_exceeded"),
                ),
                ErrorType::ContextWindowExceeded,
            ),
            (
                400,
                error_body(
                    "Your request was rejected by the safety system",
                    "invalid_request_error",
                    json!("content_policy_violation"),
                ),
                ErrorType::ContentFiltered,
            ),
            (
                400,
                error_body(
                    "Invalid value for 'temperature'",
                    "invalid_request_error",
                    Value::Null,
                ),
                ErrorType::InvalidRequest,
            ),
            (
                500,
                error_body("The server had an error", "server_error", Value::Null),
                ErrorType::Server,
            ),
            (
                503,
                b"<html>Service Unavailable</html>".to_vec(),
                ErrorType::Server,
            ),
            (529, b"overloaded".to_vec(), ErrorType::Overloaded),
        ];
        assert_classifies(&adapter(), &cases);
        let err = adapter().classify_error(
            429,
            &headers,
            &error_body("q", "insufficient_quota", json!("insufficient_quota")),
        );
        assert!(!err.is_retryable());
    }

    #[test]
    fn rate_limit_carries_the_retry_hint() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("46"));
        headers.insert("retry-after-ms", HeaderValue::from_static("45190"));
        headers.insert("x-should-retry", HeaderValue::from_static("true"));
        let err = adapter().classify_error(429, &headers, b"{}");
        assert_eq!(err.class, ErrorType::RateLimited);
        assert_eq!(
            err.retry_after,
            Some(std::time::Duration::from_millis(45190))
        );
        assert_eq!(err.should_retry, Some(true));
    }

    fn decode_stream(text: &str) -> (Result<(), ProviderError>, StreamAccumulator) {
        crate::providers::testing::decode_stream(
            Box::new(ChunkDecoder::default()),
            text.as_bytes(),
            7,
        )
    }

    #[test]
    fn decodes_the_documented_stream_with_a_usage_chunk() {
        let stream = r#"data: {"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}

data: {"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}],"obfuscation":"p9K3xT6w"}

data: {"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}

data: {"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10}}

data: [DONE]

"#;
        let (end, acc) = decode_stream(stream);
        end.unwrap();
        let done = acc.finish("unused");
        assert_eq!(done.response.text(), "Hello");
        assert_eq!(done.response.id, "chatcmpl-123");
        assert_eq!(done.usage, Some(Usage::new(9, 1)));
    }

    #[test]
    fn usage_on_a_chunk_that_still_has_choices_is_read() {
        let stream = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":1,\"total_tokens\":5}}\n\ndata: [DONE]\n\n";
        let (end, acc) = decode_stream(stream);
        end.unwrap();
        assert_eq!(acc.usage(), Some(Usage::new(4, 1)));
    }

    #[test]
    fn cut_malformed_and_error_streams_fail() {
        let (end, acc) =
            decode_stream("data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n");
        assert_eq!(end.unwrap_err().class, ErrorType::Network);
        assert_eq!(acc.content(), "Hi");
        let (end, _) = decode_stream(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: {not json\n\n",
        );
        assert_eq!(end.unwrap_err().class, ErrorType::MalformedResponse);
        let (end, _) = decode_stream(
            "data: {\"error\":{\"message\":\"Provider returned error\",\"code\":502}}\n\n",
        );
        let err = end.unwrap_err();
        assert_eq!(err.class, ErrorType::Server);
        assert!(err.is_retryable());
        let (end, _) =
            decode_stream("data: {\"error\":{\"message\":\"slow down\",\"code\":429}}\n\n");
        assert_eq!(end.unwrap_err().class, ErrorType::RateLimited);
    }

    #[test]
    fn usage_reported_with_or_before_an_error_is_kept_for_billing() {
        let (end, acc) = decode_stream(
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4,\"total_tokens\":13},\"error\":{\"message\":\"Provider returned error\",\"code\":502}}\n\n",
        );
        assert_eq!(end.unwrap_err().class, ErrorType::Server);
        assert_eq!(acc.usage(), Some(Usage::new(9, 4)));
        let err = adapter()
            .parse_response(br#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":0,"total_tokens":9}}"#)
            .unwrap_err();
        assert_eq!(err.class, ErrorType::MalformedResponse);
        assert_eq!(err.reported_usage(), Some(Usage::new(9, 0)));
    }

    #[test]
    fn tool_call_fragments_stream_into_one_call() {
        let stream = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"lookup\",\"arguments\":\"\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"q\\\":\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"1}\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: [DONE]\n\n"
        );
        let (end, acc) = decode_stream(stream);
        end.unwrap();
        let done = acc.finish("m");
        let calls = done.response.choices[0].message.tool_calls.clone().unwrap();
        assert_eq!(calls[0].function.name, "lookup");
        assert_eq!(calls[0].function.arguments, "{\"q\":1}");
    }
}
