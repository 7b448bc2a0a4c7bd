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
//!   stop after some output keeps it and finishes `content_filter`.
//! - `RESOURCE_EXHAUSTED` is `RateLimited` (retry after `RetryInfo.retryDelay`), except
//!   when retrying cannot help soon: every violated quota is a per-day one, or a quota's
//!   value is 0 (the model has no free tier). Those are `QuotaExhausted`, so the job
//!   moves on instead of waiting. `FAILED_PRECONDITION` (region or billing not enabled)
//!   is `Auth`: the deployment cannot serve anyone.
//! - Streams have no end marker: a stream is complete when the body ends after a chunk
//!   with a `finishReason`.

use llmq_schemas::{
    ChatCompletion, ChatRequest, Choice, Content, ContentPart, ErrorType, FunctionCall, Message,
    ResponseMessage, Role, ToolCall, ToolCallDelta, ToolChoice, Usage,
};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::accumulate::{openai_usage, unix_now};
use super::anthropic::{data_url, tool_arguments};
use super::azure::percent_encode;
use super::openai::{secret_header, snippet, static_headers};
use super::retry_hint;
use super::{
    Adapter, CallSpec, Completion, DeltaPart, HttpCall, ProviderError, SseEvent, StreamDecoder,
    StreamItem,
};
use crate::config::{ApiKey, ProviderConfig};

const MODELS_PATH: &str = "/v1beta/models/";
const API_KEY_HEADER: &str = "x-goog-api-key";
/// Between a generated tool-call id and the thought signature it carries.
const SIGNATURE_SEPARATOR: &str = "__sig_";

#[derive(Debug)]
pub struct Gemini {
    base_url: String,
    key: Option<ApiKey>,
    headers: HeaderMap,
}

impl Gemini {
    pub fn from_config(name: &str, config: &ProviderConfig) -> Result<Self, String> {
        Ok(Self {
            base_url: config.base_url(),
            key: config.api_key.clone(),
            headers: static_headers(name, config)?,
        })
    }
}

impl Adapter for Gemini {
    fn build(&self, call: &CallSpec<'_>) -> Result<HttpCall, ProviderError> {
        let mut headers = self.headers.clone();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if call.stream {
            headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
        }
        if let Some(key) = &self.key {
            headers.insert(
                HeaderName::from_static(API_KEY_HEADER),
                secret_header(key.expose())?,
            );
        }
        let model = call
            .upstream_model
            .strip_prefix("models/")
            .unwrap_or(call.upstream_model);
        let method = if call.stream {
            "streamGenerateContent?alt=sse"
        } else {
            "generateContent"
        };
        let body = serde_json::to_vec(&generate_request(call.request)?).map_err(|err| {
            ProviderError::new(
                ErrorType::InvalidRequest,
                format!("cannot encode request: {err}"),
            )
        })?;
        Ok(HttpCall {
            url: format!(
                "{}{MODELS_PATH}{}:{method}",
                self.base_url,
                percent_encode(model)
            ),
            headers,
            body,
        })
    }

    fn parse_response(&self, body: &[u8]) -> Result<Completion, ProviderError> {
        match serde_json::from_slice::<GenerateResponse>(body) {
            Ok(GenerateResponse {
                error: Some(error), ..
            }) => Err(classify_status(None, &error)),
            Ok(response) => completion(response),
            Err(err) => Err(ProviderError::malformed(format!(
                "not a GenerateContentResponse ({err}): {}",
                snippet(body)
            ))),
        }
    }

    fn stream_decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(ChunkStream::default())
    }

    fn classify_error(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> ProviderError {
        // The JSON-array stream format wraps the error in an array. (Checked first: serde
        // would also read an array as a positional struct.)
        let envelope = if body.trim_ascii_start().starts_with(b"[") {
            serde_json::from_slice::<Vec<ErrorEnvelope>>(body)
                .ok()
                .and_then(|list| list.into_iter().next())
        } else {
            serde_json::from_slice::<ErrorEnvelope>(body).ok()
        };
        let mut err = match envelope {
            Some(envelope) => classify_status(Some(status), &envelope.error),
            None => ProviderError::new(
                ProviderError::class_for_status(status),
                format!("HTTP {status}: {}", snippet(body)),
            ),
        };
        err.status = Some(status);
        err.retry_after = err.retry_after.or_else(|| retry_hint::retry_after(headers));
        err.should_retry = retry_hint::should_retry(headers);
        err
    }
}

// ---- request wire types -----------------------------------------------------------------

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerateRequest<'a> {
    contents: Vec<WireContent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<SystemInstruction>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<Value>,
    #[serde(skip_serializing_if = "GenerationConfig::is_empty")]
    generation_config: GenerationConfig<'a>,
}

#[derive(Debug, Serialize)]
struct SystemInstruction {
    parts: Vec<Part>,
}

#[derive(Debug, Serialize)]
struct WireContent {
    role: &'static str,
    parts: Vec<Part>,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct Part {
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    inline_data: Option<InlineData>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file_data: Option<FileData>,
    #[serde(skip_serializing_if = "Option::is_none")]
    function_call: Option<OutgoingCall>,
    #[serde(skip_serializing_if = "Option::is_none")]
    function_response: Option<FunctionResponse>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thought_signature: Option<String>,
}

impl Part {
    fn text(text: String) -> Self {
        Self {
            text: Some(text),
            ..Self::default()
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct InlineData {
    mime_type: String,
    data: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct FileData {
    #[serde(skip_serializing_if = "Option::is_none")]
    mime_type: Option<&'static str>,
    file_uri: String,
}

#[derive(Debug, Serialize)]
struct OutgoingCall {
    name: String,
    args: Value,
}

#[derive(Debug, Serialize)]
struct FunctionResponse {
    name: String,
    response: Value,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct WireTool<'a> {
    function_declarations: Vec<FunctionDeclaration<'a>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct FunctionDeclaration<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters_json_schema: Option<&'a Value>,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    candidate_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_mime_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_json_schema: Option<&'a Value>,
}

impl GenerationConfig<'_> {
    fn is_empty(&self) -> bool {
        self.temperature.is_none()
            && self.top_p.is_none()
            && self.top_k.is_none()
            && self.max_output_tokens.is_none()
            && self.stop_sequences.is_empty()
            && self.candidate_count.is_none()
            && self.seed.is_none()
            && self.presence_penalty.is_none()
            && self.frequency_penalty.is_none()
            && self.response_mime_type.is_none()
            && self.response_json_schema.is_none()
    }
}

// ---- response wire types ----------------------------------------------------------------

/// A `GenerateContentResponse`, or (in a stream) an error object in its place.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct GenerateResponse {
    candidates: Vec<Candidate>,
    prompt_feedback: Option<PromptFeedback>,
    usage_metadata: Option<UsageMetadata>,
    model_version: Option<String>,
    response_id: Option<String>,
    error: Option<Status>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    #[serde(default)]
    content: Option<CandidateContent>,
    #[serde(default)]
    finish_reason: Option<String>,
    /// Omitted for candidate 0 (a proto3 default).
    #[serde(default)]
    index: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct CandidateContent {
    #[serde(default)]
    parts: Vec<ResponsePart>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResponsePart {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    thought: bool,
    #[serde(default)]
    function_call: Option<IncomingCall>,
    #[serde(default)]
    thought_signature: Option<String>,
}

#[derive(Debug, Deserialize)]
struct IncomingCall {
    name: String,
    #[serde(default)]
    args: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback {
    #[serde(default)]
    block_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct UsageMetadata {
    prompt_token_count: u64,
    candidates_token_count: u64,
    thoughts_token_count: u64,
    cached_content_token_count: u64,
    tool_use_prompt_token_count: u64,
}

#[derive(Debug, Deserialize)]
struct ErrorEnvelope {
    error: Status,
}

/// `google.rpc.Status`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Status {
    code: Option<u16>,
    message: Option<String>,
    status: Option<String>,
    details: Vec<Value>,
}

// ---- conversions ------------------------------------------------------------------------

fn invalid(message: impl Into<String>) -> ProviderError {
    ProviderError::new(ErrorType::InvalidRequest, message)
}

fn generate_request(request: &ChatRequest) -> Result<GenerateRequest<'_>, ProviderError> {
    let (system_instruction, contents) = contents(&request.messages)?;
    let tools = function_declarations(request)?;
    let response_format = request.response_format.as_ref();
    let format_type = response_format
        .and_then(|f| f.get("type"))
        .and_then(Value::as_str);
    let json_output = matches!(format_type, Some("json_object" | "json_schema"));
    Ok(GenerateRequest {
        contents,
        system_instruction,
        tool_config: tool_config(request)?,
        tools: if tools.is_empty() {
            Vec::new()
        } else {
            vec![WireTool {
                function_declarations: tools,
            }]
        },
        generation_config: GenerationConfig {
            temperature: request.temperature,
            top_p: request.top_p,
            top_k: request.extra.get("top_k"),
            max_output_tokens: request.max_output_tokens(),
            stop_sequences: request
                .stop
                .as_ref()
                .map(|stop| stop.to_vec())
                .unwrap_or_default(),
            candidate_count: request.n,
            seed: request.seed,
            presence_penalty: request.presence_penalty,
            frequency_penalty: request.frequency_penalty,
            response_mime_type: json_output.then_some("application/json"),
            response_json_schema: response_format
                .filter(|_| format_type == Some("json_schema"))
                .and_then(|f| f.pointer("/json_schema/schema")),
        },
    })
}

fn contents(
    messages: &[Message],
) -> Result<(Option<SystemInstruction>, Vec<WireContent>), ProviderError> {
    let mut system = Vec::new();
    let mut contents: Vec<WireContent> = Vec::new();
    for (at, message) in messages.iter().enumerate() {
        let (role, parts) = match message.role {
            Role::System | Role::Developer => {
                let text = message.text_content();
                if !text.is_empty() {
                    system.push(Part::text(text));
                }
                continue;
            }
            Role::User => ("user", content_parts(message.content.as_ref(), at)?),
            Role::Assistant => ("model", model_parts(message, at)?),
            Role::Tool => ("user", vec![function_response(messages, at)?]),
        };
        if parts.is_empty() {
            continue;
        }
        match contents.last_mut() {
            Some(last) if last.role == role => last.parts.extend(parts),
            _ => contents.push(WireContent { role, parts }),
        }
    }
    let system = (!system.is_empty()).then_some(SystemInstruction { parts: system });
    Ok((system, contents))
}

fn content_parts(content: Option<&Content>, at: usize) -> Result<Vec<Part>, ProviderError> {
    match content {
        None => Ok(Vec::new()),
        Some(Content::Text(text)) if text.is_empty() => Ok(Vec::new()),
        Some(Content::Text(text)) => Ok(vec![Part::text(text.clone())]),
        Some(Content::Parts(parts)) => parts
            .iter()
            .filter_map(|part| match part {
                ContentPart::Text { text } if text.is_empty() => None,
                ContentPart::Text { text } => Some(Ok(Part::text(text.clone()))),
                ContentPart::ImageUrl { image_url } => Some(image_part(&image_url.url, at)),
                ContentPart::Other(other) => Some(Err(invalid(format!(
                    "messages[{at}]: content part type {} is not supported by Gemini",
                    other
                        .get("type")
                        .and_then(Value::as_str)
                        .unwrap_or("(none)")
                )))),
            })
            .collect(),
    }
}

fn image_part(url: &str, at: usize) -> Result<Part, ProviderError> {
    if let Some((mime_type, data)) = data_url(url) {
        return Ok(Part {
            inline_data: Some(InlineData {
                mime_type: mime_type.to_owned(),
                data: data.to_owned(),
            }),
            ..Part::default()
        });
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(Part {
            file_data: Some(FileData {
                mime_type: mime_from_extension(url),
                file_uri: url.to_owned(),
            }),
            ..Part::default()
        });
    }
    Err(invalid(format!(
        "messages[{at}]: an image must be a base64 data: URL or an http(s) URL"
    )))
}

fn mime_from_extension(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let extension = path.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match extension.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        _ => return None,
    })
}

fn model_parts(message: &Message, at: usize) -> Result<Vec<Part>, ProviderError> {
    let mut parts = content_parts(message.content.as_ref(), at)?;
    for call in message.tool_calls.iter().flatten() {
        parts.push(Part {
            function_call: Some(OutgoingCall {
                name: call.function.name.clone(),
                args: tool_arguments(call)?,
            }),
            thought_signature: signature_of(&call.id),
            ..Part::default()
        });
    }
    Ok(parts)
}

/// The result of an earlier call, named after it: the latest assistant call with that id.
fn function_response(messages: &[Message], at: usize) -> Result<Part, ProviderError> {
    let message = &messages[at];
    let id = message
        .tool_call_id
        .as_deref()
        .ok_or_else(|| invalid(format!("messages[{at}]: a tool message needs tool_call_id")))?;
    let name = messages[..at]
        .iter()
        .rev()
        .filter(|m| m.role == Role::Assistant)
        .flat_map(|m| m.tool_calls.iter().flatten())
        .find(|call| call.id == id)
        .map(|call| call.function.name.clone())
        .ok_or_else(|| {
            invalid(format!(
                "messages[{at}]: tool_call_id {id:?} matches no earlier assistant tool call"
            ))
        })?;
    Ok(Part {
        function_response: Some(FunctionResponse {
            name,
            response: json!({ "output": message.text_content() }),
        }),
        ..Part::default()
    })
}

fn function_declarations(
    request: &ChatRequest,
) -> Result<Vec<FunctionDeclaration<'_>>, ProviderError> {
    request
        .tools
        .iter()
        .flatten()
        .map(|tool| {
            if tool.kind != "function" {
                return Err(invalid(format!(
                    "tool type {} is not supported by Gemini",
                    tool.kind
                )));
            }
            Ok(FunctionDeclaration {
                name: &tool.function.name,
                description: tool.function.description.as_deref(),
                parameters_json_schema: tool.function.parameters.as_ref(),
            })
        })
        .collect()
}

fn tool_config(request: &ChatRequest) -> Result<Option<Value>, ProviderError> {
    if request.tools.as_ref().is_none_or(Vec::is_empty) {
        return Ok(None);
    }
    let config = match &request.tool_choice {
        None => return Ok(None),
        Some(ToolChoice::Mode(mode)) => match mode.as_str() {
            "auto" => json!({"mode": "AUTO"}),
            "required" => json!({"mode": "ANY"}),
            "none" => json!({"mode": "NONE"}),
            other => return Err(invalid(format!("unknown tool_choice {other:?}"))),
        },
        Some(ToolChoice::Named(named)) => {
            json!({"mode": "ANY", "allowedFunctionNames": [named.function.name]})
        }
    };
    Ok(Some(json!({ "functionCallingConfig": config })))
}

/// The id of the `n`th call of an answer, carrying its thought signature if it has one.
fn call_id(n: usize, signature: Option<&str>) -> String {
    match signature.filter(|s| !s.is_empty()) {
        Some(signature) => {
            let safe: String = signature
                .trim_end_matches('=')
                .chars()
                .map(|c| match c {
                    '+' => '-',
                    '/' => '_',
                    c => c,
                })
                .collect();
            format!("call_{n}{SIGNATURE_SEPARATOR}{safe}")
        }
        None => format!("call_{n}"),
    }
}

/// The thought signature carried in a tool-call id, in standard base64 as received.
fn signature_of(id: &str) -> Option<String> {
    let (_, safe) = id.split_once(SIGNATURE_SEPARATOR)?;
    let mut signature: String = safe
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    while !signature.len().is_multiple_of(4) {
        signature.push('=');
    }
    Some(signature)
}

fn normalize_usage(usage: &UsageMetadata) -> Usage {
    let prompt = usage.prompt_token_count + usage.tool_use_prompt_token_count;
    let completion = usage.candidates_token_count + usage.thoughts_token_count;
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt + completion,
        cached_prompt_tokens: usage.cached_content_token_count,
        cache_write_tokens: 0,
        reasoning_tokens: usage.thoughts_token_count,
    }
}

const FILTER_REASONS: &[&str] = &[
    "SAFETY",
    "RECITATION",
    "BLOCKLIST",
    "PROHIBITED_CONTENT",
    "SPII",
    "IMAGE_SAFETY",
    "IMAGE_PROHIBITED_CONTENT",
    "IMAGE_RECITATION",
];

fn finish_reason(reason: Option<&str>, has_tool_calls: bool) -> &'static str {
    match reason {
        Some("MAX_TOKENS") => "length",
        Some(reason) if FILTER_REASONS.contains(&reason) => "content_filter",
        _ if has_tool_calls => "tool_calls",
        // STOP, LANGUAGE, OTHER, MALFORMED_FUNCTION_CALL, reasons added later.
        _ => "stop",
    }
}

fn blocked(what: &str, reason: &str) -> ProviderError {
    ProviderError::new(
        ErrorType::ContentFiltered,
        format!("{what} was blocked ({reason})"),
    )
    .with_code(Some(reason.to_owned()))
}

/// What a part contributes to the answer.
enum PartOutput {
    Text(String),
    Thought(String),
    Call {
        name: String,
        arguments: String,
        signature: Option<String>,
    },
    Nothing,
}

fn part_output(part: ResponsePart) -> PartOutput {
    if let Some(call) = part.function_call {
        let arguments = match call.args {
            None | Some(Value::Null) => "{}".to_owned(),
            Some(args) => args.to_string(),
        };
        return PartOutput::Call {
            name: call.name,
            arguments,
            signature: part.thought_signature,
        };
    }
    match part.text {
        Some(text) if text.is_empty() => PartOutput::Nothing,
        Some(text) if part.thought => PartOutput::Thought(text),
        Some(text) => PartOutput::Text(text),
        None => PartOutput::Nothing,
    }
}

fn completion(response: GenerateResponse) -> Result<Completion, ProviderError> {
    if response.candidates.is_empty() {
        return Err(
            match response.prompt_feedback.and_then(|f| f.block_reason) {
                Some(reason) => blocked("the prompt", &reason),
                None => ProviderError::malformed("the response has no candidates"),
            },
        );
    }
    let mut choices = Vec::with_capacity(response.candidates.len());
    // Set while every candidate so far is a safety stop with no output.
    let mut refused: Option<Option<String>> = None;
    let mut answered = false;
    for (position, candidate) in response.candidates.into_iter().enumerate() {
        let mut text = String::new();
        let mut reasoning = String::new();
        let mut tool_calls = Vec::new();
        for part in candidate.content.map(|c| c.parts).unwrap_or_default() {
            match part_output(part) {
                PartOutput::Text(part) => text.push_str(&part),
                PartOutput::Thought(part) => reasoning.push_str(&part),
                PartOutput::Call {
                    name,
                    arguments,
                    signature,
                } => tool_calls.push(ToolCall {
                    id: call_id(tool_calls.len(), signature.as_deref()),
                    kind: "function".into(),
                    function: FunctionCall { name, arguments },
                }),
                PartOutput::Nothing => {}
            }
        }
        let finish = finish_reason(candidate.finish_reason.as_deref(), !tool_calls.is_empty());
        let bare_filter = finish == "content_filter" && text.is_empty() && tool_calls.is_empty();
        if bare_filter {
            refused.get_or_insert_with(|| candidate.finish_reason.clone());
        } else {
            answered = true;
        }
        choices.push(Choice {
            index: candidate
                .index
                .unwrap_or_else(|| u32::try_from(position).unwrap_or(u32::MAX)),
            message: ResponseMessage {
                role: "assistant".into(),
                content: (!text.is_empty() || tool_calls.is_empty()).then_some(text),
                tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
                refusal: None,
                reasoning_content: (!reasoning.is_empty()).then_some(reasoning),
                extra: Map::new(),
            },
            finish_reason: Some(finish.to_owned()),
            logprobs: None,
        });
    }
    // Only when no candidate produced anything is the answer a refusal.
    if let Some(reason) = refused
        && !answered
    {
        return Err(blocked("the answer", reason.as_deref().unwrap_or("SAFETY")));
    }
    choices.sort_by_key(|c| c.index);
    let usage = response.usage_metadata.as_ref().map(normalize_usage);
    let response = ChatCompletion {
        id: response
            .response_id
            .unwrap_or_else(|| format!("chatcmpl-{}", uuid::Uuid::now_v7().simple())),
        object: "chat.completion".into(),
        created: unix_now(),
        model: response.model_version.unwrap_or_default(),
        choices,
        usage: usage.as_ref().map(openai_usage),
        system_fingerprint: None,
        service_tier: None,
        extra: Map::new(),
    };
    Ok(Completion { response, usage })
}

fn classify_status(http_status: Option<u16>, error: &Status) -> ProviderError {
    let message = error.message.clone().unwrap_or_else(|| "no message".into());
    let lower = message.to_ascii_lowercase();
    let status = http_status.or(error.code);
    let class = match error.status.as_deref() {
        Some("RESOURCE_EXHAUSTED") if quota_exhausted(&error.details) => ErrorType::QuotaExhausted,
        Some("RESOURCE_EXHAUSTED") => ErrorType::RateLimited,
        Some("INVALID_ARGUMENT") => {
            if error_reason(&error.details).is_some_and(|r| r.starts_with("API_KEY_"))
                || lower.contains("api key not valid")
            {
                ErrorType::Auth
            } else if lower.contains("exceeds the maximum number of tokens")
                || (lower.contains("token count") && lower.contains("exceeds"))
            {
                ErrorType::ContextWindowExceeded
            } else {
                ErrorType::InvalidRequest
            }
        }
        Some("FAILED_PRECONDITION" | "PERMISSION_DENIED" | "UNAUTHENTICATED") => ErrorType::Auth,
        Some("NOT_FOUND") => ErrorType::NotFound,
        Some("DEADLINE_EXCEEDED") => ErrorType::Timeout,
        Some("UNAVAILABLE" | "INTERNAL" | "UNKNOWN" | "ABORTED" | "CANCELLED" | "DATA_LOSS") => {
            ErrorType::Server
        }
        _ => status.map_or(ErrorType::Server, ProviderError::class_for_status),
    };
    let mut err = ProviderError::new(class, message)
        .with_code(error.status.clone())
        .with_retry_after(retry_delay(&error.details));
    err.status = status;
    err
}

fn detail_type(detail: &Value) -> &str {
    detail.get("@type").and_then(Value::as_str).unwrap_or("")
}

/// `RetryInfo.retryDelay`.
fn retry_delay(details: &[Value]) -> Option<std::time::Duration> {
    details
        .iter()
        .filter(|d| detail_type(d).ends_with("google.rpc.RetryInfo"))
        .find_map(|d| d.get("retryDelay").and_then(Value::as_str))
        .and_then(retry_hint::parse_proto_duration)
}

/// `ErrorInfo.reason` (`API_KEY_INVALID`, ...).
fn error_reason(details: &[Value]) -> Option<&str> {
    details
        .iter()
        .filter(|d| detail_type(d).ends_with("google.rpc.ErrorInfo"))
        .find_map(|d| d.get("reason").and_then(Value::as_str))
}

/// Whether the violated quotas are ones a short wait does not restore: all per-day, or
/// one with a limit of 0.
fn quota_exhausted(details: &[Value]) -> bool {
    let violations: Vec<&Value> = details
        .iter()
        .filter(|d| detail_type(d).ends_with("google.rpc.QuotaFailure"))
        .filter_map(|d| d.get("violations").and_then(Value::as_array))
        .flatten()
        .collect();
    let zero_limit = violations.iter().any(|v| {
        v.get("quotaValue")
            .is_some_and(|q| q.as_str() == Some("0") || q.as_u64() == Some(0))
    });
    let periods: Vec<&str> = violations
        .iter()
        .filter_map(|v| v.get("quotaId").and_then(Value::as_str))
        .collect();
    zero_limit || (!periods.is_empty() && periods.iter().all(|id| id.contains("PerDay")))
}

/// Decodes `streamGenerateContent?alt=sse` chunks, each a partial `GenerateContentResponse`.
#[derive(Debug, Default)]
struct ChunkStream {
    meta_sent: bool,
    /// Tool calls so far (Gemini sends each call whole, in one part).
    calls: usize,
    answered: bool,
    finished: bool,
}

impl StreamDecoder for ChunkStream {
    fn decode(&mut self, event: &SseEvent, out: &mut Vec<StreamItem>) -> Result<(), ProviderError> {
        let data = event.data.trim();
        if data.is_empty() {
            return Ok(());
        }
        let chunk: GenerateResponse = serde_json::from_str(data).map_err(|err| {
            ProviderError::malformed(format!(
                "malformed stream chunk ({err}): {}",
                snippet(data.as_bytes())
            ))
        })?;
        if let Some(error) = &chunk.error {
            return Err(classify_status(None, error));
        }
        if !self.meta_sent && (chunk.response_id.is_some() || chunk.model_version.is_some()) {
            self.meta_sent = true;
            out.push(StreamItem::Meta {
                id: chunk.response_id,
                model: chunk.model_version,
                created: None,
            });
        }
        if chunk.candidates.is_empty()
            && let Some(reason) = chunk.prompt_feedback.and_then(|f| f.block_reason)
        {
            return Err(blocked("the prompt", &reason));
        }
        // Only the first candidate is streamed (as for OpenAI).
        let first = chunk
            .candidates
            .into_iter()
            .find(|c| c.index.unwrap_or(0) == 0);
        if let Some(candidate) = first {
            let mut delta = DeltaPart::default();
            for part in candidate.content.map(|c| c.parts).unwrap_or_default() {
                match part_output(part) {
                    PartOutput::Text(text) => {
                        delta
                            .content
                            .get_or_insert_with(String::new)
                            .push_str(&text);
                    }
                    PartOutput::Thought(text) => {
                        delta
                            .reasoning
                            .get_or_insert_with(String::new)
                            .push_str(&text);
                    }
                    PartOutput::Call {
                        name,
                        arguments,
                        signature,
                    } => {
                        delta.tool_calls.push(ToolCallDelta {
                            index: u32::try_from(self.calls).unwrap_or(u32::MAX),
                            id: Some(call_id(self.calls, signature.as_deref())),
                            name: Some(name),
                            arguments: Some(arguments),
                        });
                        self.calls += 1;
                    }
                    PartOutput::Nothing => {}
                }
            }
            self.answered |= delta.content.is_some() || !delta.tool_calls.is_empty();
            if !delta.is_empty() {
                out.push(StreamItem::Delta(delta));
            }
            if let Some(reason) = candidate.finish_reason.as_deref() {
                let finish = finish_reason(Some(reason), self.calls > 0);
                if finish == "content_filter" && !self.answered {
                    return Err(blocked("the answer", reason));
                }
                self.finished = true;
                out.push(StreamItem::Finish(finish.to_owned()));
            }
        }
        if let Some(usage) = &chunk.usage_metadata {
            out.push(StreamItem::Usage(normalize_usage(usage)));
        }
        Ok(())
    }

    /// There is no end marker: only the end of the body ends the stream.
    fn is_done(&self) -> bool {
        false
    }

    fn finish(&mut self) -> Result<(), ProviderError> {
        if self.finished {
            Ok(())
        } else {
            Err(ProviderError::network("stream ended before a finishReason"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProviderKind;
    use crate::providers::accumulate::StreamAccumulator;
    use crate::providers::sse::SseParser;
    use std::time::Duration;

    const KEY: &str = "AIzaSyTestKey123456789";

    fn adapter() -> Gemini {
        let config = ProviderConfig::new(
            ProviderKind::Gemini,
            "https://generativelanguage.googleapis.com/",
            Some(ApiKey::new(KEY)),
        );
        Gemini::from_config("gemini", &config).unwrap()
    }

    fn spec(request: &ChatRequest, stream: bool) -> CallSpec<'_> {
        CallSpec {
            request,
            upstream_model: "gemini-2.5-flash",
            stream,
            default_max_tokens: Some(999),
        }
    }

    fn request(value: Value) -> ChatRequest {
        serde_json::from_value(value).unwrap()
    }

    fn body_of(request: &ChatRequest) -> Value {
        let call = adapter().build(&spec(request, false)).unwrap();
        serde_json::from_slice(&call.body).unwrap()
    }

    #[test]
    fn the_key_is_only_in_a_sensitive_header_never_in_the_url() {
        let request = ChatRequest::user("hi");
        for stream in [false, true] {
            let call = adapter().build(&spec(&request, stream)).unwrap();
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

    #[test]
    fn translates_a_rich_request_exactly() {
        let signed_id = call_id(0, Some("CiQB0e2Kb+sig/x="));
        let request = request(json!({
            "model": "gemini-flash",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": "Use metric units."},
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather in Paris? See the photos."},
                    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/paris.PNG?size=large"}}
                ]},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"id": signed_id, "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_1", "type": "function", "function": {"name": "get_time", "arguments": ""}}
                ]},
                {"role": "tool", "tool_call_id": signed_id, "content": "18C"},
                {"role": "tool", "tool_call_id": "call_1", "content": "noon"},
                {"role": "user", "content": "And tomorrow?"}
            ],
            "max_tokens": 200,
            "temperature": 0.3,
            "top_p": 0.8,
            "n": 2,
            "seed": 11,
            "stop": "END",
            "tools": [
                {"type": "function", "function": {"name": "get_weather", "description": "Weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": false}}},
                {"type": "function", "function": {"name": "get_time"}}
            ],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}},
            "logit_bias": {"1": 1},
            "user": "u-1",
            "reasoning_effort": "high"
        }));
        let expected = json!({
            "contents": [
                {"role": "user", "parts": [
                    {"text": "Weather in Paris? See the photos."},
                    {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/4AAQ"}},
                    {"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/paris.PNG?size=large"}}
                ]},
                {"role": "model", "parts": [
                    {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "CiQB0e2Kb+sig/x="},
                    {"functionCall": {"name": "get_time", "args": {}}}
                ]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"output": "18C"}}},
                    {"functionResponse": {"name": "get_time", "response": {"output": "noon"}}},
                    {"text": "And tomorrow?"}
                ]}
            ],
            "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Use metric units."}]},
            "tools": [{"functionDeclarations": [
                {"name": "get_weather", "description": "Weather",
                 "parametersJsonSchema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": false}},
                {"name": "get_time"}
            ]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}},
            "generationConfig": {
                "temperature": 0.3, "topP": 0.8, "maxOutputTokens": 200, "stopSequences": ["END"],
                "candidateCount": 2, "seed": 11,
                "responseMimeType": "application/json", "responseJsonSchema": {"type": "object"}
            }
        });
        assert_eq!(body_of(&request), expected);
    }

    #[test]
    fn tool_choice_modes_json_mode_and_a_bare_request() {
        let with = |choice: &str| {
            body_of(&request(json!({
                "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"type": "function", "function": {"name": "f"}}],
                "tool_choice": choice
            })))["toolConfig"]["functionCallingConfig"]["mode"]
                .clone()
        };
        assert_eq!(with("auto"), "AUTO");
        assert_eq!(with("required"), "ANY");
        assert_eq!(with("none"), "NONE");
        let body = body_of(&request(json!({
            "messages": [{"role": "user", "content": "hi"}],
            "response_format": {"type": "json_object"}
        })));
        assert_eq!(
            body["generationConfig"],
            json!({"responseMimeType": "application/json"})
        );
        // The model's default_max_tokens is for Anthropic only; Gemini has its own default.
        let body = body_of(&ChatRequest::user("hi"));
        assert_eq!(
            body,
            json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
        );
    }

    #[test]
    fn untranslatable_requests_are_invalid() {
        let cases = [
            json!({"messages": [{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "call_9", "content": "x"}]}),
            json!({"messages": [{"role": "assistant", "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": "nope"}}]}]}),
            json!({"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "f"}}]}]}),
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "file:///etc/x.png"}}]}]}),
        ];
        for case in cases {
            let err = adapter()
                .build(&spec(&request(case.clone()), false))
                .unwrap_err();
            assert_eq!(err.class, ErrorType::InvalidRequest, "{case}");
        }
    }

    #[test]
    fn thought_signatures_survive_the_round_trip_through_tool_call_ids() {
        let signature = "CiQB0e2Kb+/9zAbc/def+g==";
        let id = call_id(3, Some(signature));
        assert!(id.starts_with("call_3__sig_"));
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
            "{id}"
        );
        assert_eq!(signature_of(&id).as_deref(), Some(signature));
        assert_eq!(call_id(1, None), "call_1");
        assert_eq!(call_id(1, Some("")), "call_1");
        assert_eq!(signature_of("call_1"), None);
        assert_eq!(signature_of("toolu_01A09q90qw90lq917835lq9"), None);
    }

    /// A documented-shape response: a thought, a text part with only a signature, two
    /// function calls, and usage with cache, thoughts and tool-use prompt counts.
    const TOOL_RESPONSE: &str = r#"{
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

    fn expected_usage() -> Usage {
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
    fn parses_thoughts_tool_calls_and_normalizes_usage() {
        let done = adapter().parse_response(TOOL_RESPONSE.as_bytes()).unwrap();
        let response = &done.response;
        assert_eq!(response.id, "mAitaPWkLsfs7M8P0tqf0Qc");
        assert_eq!(response.model, "gemini-2.5-flash");
        let choice = &response.choices[0];
        assert_eq!(choice.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(choice.message.content.as_deref(), Some("Let me check."));
        assert_eq!(
            choice.message.reasoning_content.as_deref(),
            Some("The user wants the weather.")
        );
        let calls = choice.message.tool_calls.clone().unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].function.name, "get_weather");
        assert_eq!(calls[0].function.arguments, r#"{"city":"Paris"}"#);
        assert_eq!(
            signature_of(&calls[0].id).as_deref(),
            Some("CiQB0e2Kb+sig/x=")
        );
        assert_eq!(calls[1].id, "call_1");
        assert_eq!(calls[1].function.arguments, "{}");
        // Google's own total is prompt + candidates + thoughts + tool-use prompt.
        assert_eq!(done.usage, Some(expected_usage()));
        let wire = response.usage.clone().unwrap();
        assert_eq!(
            wire.completion_tokens_details.unwrap().reasoning_tokens,
            200
        );
        assert_eq!(wire.prompt_tokens_details.unwrap().cached_tokens, 1024);
    }

    #[test]
    fn several_candidates_become_several_choices() {
        let body = json!({"candidates": [
            {"content": {"parts": [{"text": "A"}], "role": "model"}, "finishReason": "STOP"},
            {"content": {"parts": [{"text": "B"}], "role": "model"}, "finishReason": "MAX_TOKENS", "index": 1}
        ], "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 5}, "modelVersion": "gemini-2.5-flash"});
        let done = adapter()
            .parse_response(body.to_string().as_bytes())
            .unwrap();
        let choices = &done.response.choices;
        assert_eq!(
            (choices[0].index, choices[0].message.content.as_deref()),
            (0, Some("A"))
        );
        assert_eq!(
            (choices[1].index, choices[1].finish_reason.as_deref()),
            (1, Some("length"))
        );
        assert_eq!(done.usage, Some(Usage::new(3, 2)));
        assert!(done.response.id.starts_with("chatcmpl-"));
    }

    #[test]
    fn finish_reasons_and_blocks() {
        for (reason, finish) in [
            ("STOP", "stop"),
            ("MAX_TOKENS", "length"),
            ("SAFETY", "content_filter"),
            ("RECITATION", "content_filter"),
            ("BLOCKLIST", "content_filter"),
            ("PROHIBITED_CONTENT", "content_filter"),
            ("SPII", "content_filter"),
            ("OTHER", "stop"),
        ] {
            let body = json!({"candidates": [{"content": {"parts": [{"text": "partial"}]}, "finishReason": reason}]});
            let done = adapter()
                .parse_response(body.to_string().as_bytes())
                .unwrap();
            assert_eq!(
                done.response.choices[0].finish_reason.as_deref(),
                Some(finish),
                "{reason}"
            );
        }
        let blocked_prompt = json!({"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": []},
            "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9}, "modelVersion": "gemini-2.5-flash"});
        let err = adapter()
            .parse_response(blocked_prompt.to_string().as_bytes())
            .unwrap_err();
        assert_eq!(err.class, ErrorType::ContentFiltered);
        assert_eq!(err.code.as_deref(), Some("SAFETY"));
        let bare_safety = json!({"candidates": [{"content": {"parts": [], "role": "model"}, "finishReason": "SAFETY"}]});
        let err = adapter()
            .parse_response(bare_safety.to_string().as_bytes())
            .unwrap_err();
        assert_eq!(err.class, ErrorType::ContentFiltered);
        let mixed = json!({"candidates": [
            {"content": {"parts": [{"text": "partial"}]}, "finishReason": "SAFETY"},
            {"finishReason": "SAFETY", "index": 1}]});
        let done = adapter()
            .parse_response(mixed.to_string().as_bytes())
            .unwrap();
        assert_eq!(done.response.text(), "partial");
        assert_eq!(
            done.response.choices[1].message.content.as_deref(),
            Some("")
        );
        let no_content = json!({"candidates": [{"finishReason": "PROHIBITED_CONTENT"}]});
        let err = adapter()
            .parse_response(no_content.to_string().as_bytes())
            .unwrap_err();
        assert_eq!(err.class, ErrorType::ContentFiltered);
        assert_eq!(
            adapter().parse_response(b"{}").unwrap_err().class,
            ErrorType::MalformedResponse
        );
        assert_eq!(
            adapter().parse_response(b"<html>").unwrap_err().class,
            ErrorType::MalformedResponse
        );
        let error = br#"{"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}"#;
        assert_eq!(
            adapter().parse_response(error).unwrap_err().class,
            ErrorType::Server
        );
    }

    fn decode_stream(text: &str) -> (Result<(), ProviderError>, StreamAccumulator) {
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        for piece in text.as_bytes().chunks(13) {
            parser.feed(piece, &mut events).unwrap();
        }
        parser.finish(&mut events).unwrap();
        let mut decoder = adapter().stream_decoder();
        let mut acc = StreamAccumulator::new();
        let mut items = Vec::new();
        for event in &events {
            if let Err(err) = decoder.decode(event, &mut items) {
                return (Err(err), acc);
            }
            assert!(!decoder.is_done());
            for item in items.drain(..) {
                acc.apply(item);
            }
        }
        (decoder.finish(), acc)
    }

    fn sse(chunks: &[Value]) -> String {
        chunks
            .iter()
            .map(|c| format!("data: {c}\r\n\r\n"))
            .collect()
    }

    #[test]
    fn streams_text_like_the_same_answer_unstreamed() {
        let usage = |candidates: u64| json!({"promptTokenCount": 8, "candidatesTokenCount": candidates, "totalTokenCount": 8 + candidates + 12, "thoughtsTokenCount": 12, "cachedContentTokenCount": 4});
        let stream = sse(&[
            json!({"candidates": [{"content": {"parts": [{"text": "Thinking...", "thought": true}], "role": "model"}, "index": 0}], "usageMetadata": usage(0), "modelVersion": "gemini-2.5-flash", "responseId": "r1"}),
            json!({"candidates": [{"content": {"parts": [{"text": "Hello"}], "role": "model"}, "index": 0}], "usageMetadata": usage(1), "modelVersion": "gemini-2.5-flash", "responseId": "r1"}),
            json!({"candidates": [{"content": {"parts": [{"text": " world", "thoughtSignature": "Cq0B"}], "role": "model"}, "finishReason": "STOP", "index": 0}], "usageMetadata": usage(2), "modelVersion": "gemini-2.5-flash", "responseId": "r1"}),
        ]);
        let (end, acc) = decode_stream(&stream);
        end.unwrap();
        let streamed = acc.finish("unused");
        assert_eq!(streamed.response.id, "r1");
        assert_eq!(streamed.response.model, "gemini-2.5-flash");
        assert_eq!(streamed.response.text(), "Hello world");
        assert_eq!(
            streamed.response.choices[0]
                .message
                .reasoning_content
                .as_deref(),
            Some("Thinking...")
        );
        assert_eq!(
            streamed.response.choices[0].finish_reason.as_deref(),
            Some("stop")
        );

        let whole = json!({"candidates": [{"content": {"parts": [{"text": "Thinking...", "thought": true}, {"text": "Hello world", "thoughtSignature": "Cq0B"}], "role": "model"}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": usage(2), "modelVersion": "gemini-2.5-flash", "responseId": "r1"});
        let whole = adapter()
            .parse_response(whole.to_string().as_bytes())
            .unwrap();
        assert_eq!(streamed.usage, whole.usage);
        assert_eq!(
            streamed.usage,
            Some(Usage {
                prompt_tokens: 8,
                completion_tokens: 14,
                total_tokens: 22,
                cached_prompt_tokens: 4,
                cache_write_tokens: 0,
                reasoning_tokens: 12,
            })
        );
        assert_eq!(streamed.response.choices, whole.response.choices);
    }

    #[test]
    fn streams_function_calls_like_the_same_answer_unstreamed() {
        let response: Value = serde_json::from_str(TOOL_RESPONSE).unwrap();
        let parts = response["candidates"][0]["content"]["parts"]
            .as_array()
            .unwrap()
            .clone();
        let chunk = |parts: &[Value], last: bool| {
            let mut candidate = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
            if last {
                candidate["finishReason"] = json!("STOP");
            }
            json!({"candidates": [candidate], "usageMetadata": response["usageMetadata"], "modelVersion": "gemini-2.5-flash", "responseId": "mAitaPWkLsfs7M8P0tqf0Qc"})
        };
        let stream = sse(&[
            chunk(&parts[..2], false),
            chunk(&parts[2..3], false),
            chunk(&parts[3..], true),
        ]);
        let (end, acc) = decode_stream(&stream);
        end.unwrap();
        let streamed = acc.finish("unused");
        let whole = adapter().parse_response(TOOL_RESPONSE.as_bytes()).unwrap();
        assert_eq!(streamed.response.choices, whole.response.choices);
        assert_eq!(streamed.usage, whole.usage);
        assert_eq!(streamed.usage, Some(expected_usage()));
    }

    #[test]
    fn cut_blocked_error_and_malformed_streams_fail() {
        let text = json!({"candidates": [{"content": {"parts": [{"text": "Hel"}], "role": "model"}}], "usageMetadata": {"promptTokenCount": 3, "totalTokenCount": 3}});
        let (end, acc) = decode_stream(&sse(std::slice::from_ref(&text)));
        assert_eq!(end.unwrap_err().class, ErrorType::Network);
        assert_eq!(acc.content(), "Hel");

        let blocked = json!({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}, "usageMetadata": {"promptTokenCount": 3, "totalTokenCount": 3}});
        let (end, _) = decode_stream(&sse(&[blocked]));
        assert_eq!(end.unwrap_err().class, ErrorType::ContentFiltered);

        let bare_safety = json!({"candidates": [{"content": {"parts": [{"text": ""}], "role": "model"}, "finishReason": "SAFETY"}]});
        let (end, _) = decode_stream(&sse(&[bare_safety]));
        assert_eq!(end.unwrap_err().class, ErrorType::ContentFiltered);

        let late_safety = json!({"candidates": [{"content": {"parts": [], "role": "model"}, "finishReason": "SAFETY"}]});
        let (end, acc) = decode_stream(&sse(&[text.clone(), late_safety]));
        end.unwrap();
        assert_eq!(
            acc.finish("m").response.choices[0].finish_reason.as_deref(),
            Some("content_filter")
        );

        let overloaded = "data: {\"error\":{\"code\":503,\"message\":\"The model is overloaded. Please try again later.\",\"status\":\"UNAVAILABLE\"}}\r\n\r\n";
        let (end, _) = decode_stream(&format!("{}{overloaded}", sse(std::slice::from_ref(&text))));
        let err = end.unwrap_err();
        assert_eq!(err.class, ErrorType::Server);
        assert!(err.is_retryable());

        let malformed = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\r\n\r\n";
        let (end, _) = decode_stream(&format!("{}{malformed}", sse(&[text])));
        assert_eq!(end.unwrap_err().class, ErrorType::MalformedResponse);
    }

    fn status_body(code: u16, status: &str, message: &str, details: Value) -> Vec<u8> {
        json!({"error": {"code": code, "message": message, "status": status, "details": details}})
            .to_string()
            .into_bytes()
    }

    fn quota_failure(quota_id: &str, value: &str) -> Value {
        json!({"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{
            "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
            "quotaId": quota_id, "quotaDimensions": {"location": "global", "model": "gemini-2.5-flash"}, "quotaValue": value}]})
    }

    #[test]
    fn classifies_every_documented_error() {
        let headers = HeaderMap::new();
        let exhausted =
            "You exceeded your current quota, please check your plan and billing details.";
        let cases = [
            (
                429,
                status_body(
                    429,
                    "RESOURCE_EXHAUSTED",
                    exhausted,
                    json!([
                quota_failure("GenerateRequestsPerMinutePerProjectPerModel-FreeTier", "10"),
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "28s"}]),
                ),
                ErrorType::RateLimited,
            ),
            (
                429,
                status_body(
                    429,
                    "RESOURCE_EXHAUSTED",
                    exhausted,
                    json!([quota_failure(
                        "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
                        "250"
                    )]),
                ),
                ErrorType::QuotaExhausted,
            ),
            (
                429,
                status_body(
                    429,
                    "RESOURCE_EXHAUSTED",
                    exhausted,
                    json!([quota_failure(
                        "GenerateContentInputTokensPerModelPerMinute-FreeTier",
                        "0"
                    )]),
                ),
                ErrorType::QuotaExhausted,
            ),
            (
                429,
                status_body(
                    429,
                    "RESOURCE_EXHAUSTED",
                    "Resource has been exhausted (e.g. check quota).",
                    json!([]),
                ),
                ErrorType::RateLimited,
            ),
            (
                400,
                status_body(
                    400,
                    "INVALID_ARGUMENT",
                    "Request contains an invalid argument.",
                    json!([]),
                ),
                ErrorType::InvalidRequest,
            ),
            (
                400,
                status_body(
                    400,
                    "INVALID_ARGUMENT",
                    "The input token count (1048777) exceeds the maximum number of tokens allowed (1048576).",
                    json!([]),
                ),
                ErrorType::ContextWindowExceeded,
            ),
            (
                400,
                status_body(
                    400,
                    "INVALID_ARGUMENT",
                    "API key not valid. Please pass a valid API key.",
                    json!([
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com"}]),
                ),
                ErrorType::Auth,
            ),
            (
                400,
                status_body(
                    400,
                    "FAILED_PRECONDITION",
                    "User location is not supported for the API use.",
                    json!([]),
                ),
                ErrorType::Auth,
            ),
            (
                403,
                status_body(
                    403,
                    "PERMISSION_DENIED",
                    "Method doesn't allow unregistered callers.",
                    json!([]),
                ),
                ErrorType::Auth,
            ),
            (
                401,
                status_body(
                    401,
                    "UNAUTHENTICATED",
                    "Request had invalid authentication credentials.",
                    json!([]),
                ),
                ErrorType::Auth,
            ),
            (
                404,
                status_body(
                    404,
                    "NOT_FOUND",
                    "models/gemini-9 is not found for API version v1beta",
                    json!([]),
                ),
                ErrorType::NotFound,
            ),
            (
                500,
                status_body(
                    500,
                    "INTERNAL",
                    "An internal error has occurred.",
                    json!([]),
                ),
                ErrorType::Server,
            ),
            (
                503,
                status_body(
                    503,
                    "UNAVAILABLE",
                    "The model is overloaded. Please try again later.",
                    json!([]),
                ),
                ErrorType::Server,
            ),
            (
                504,
                status_body(
                    504,
                    "DEADLINE_EXCEEDED",
                    "The request timed out.",
                    json!([]),
                ),
                ErrorType::Timeout,
            ),
            (
                502,
                b"<html>502 Bad Gateway</html>".to_vec(),
                ErrorType::Server,
            ),
        ];
        for (status, body, class) in cases {
            let err = adapter().classify_error(status, &headers, &body);
            assert_eq!(
                err.class,
                class,
                "{status} {}",
                String::from_utf8_lossy(&body)
            );
            assert_eq!(err.status, Some(status));
        }
        let wrapped = format!(
            "[{}]",
            String::from_utf8_lossy(&status_body(503, "UNAVAILABLE", "overloaded", json!([])))
        );
        let err = adapter().classify_error(503, &headers, wrapped.as_bytes());
        assert_eq!(err.code.as_deref(), Some("UNAVAILABLE"));
    }

    #[test]
    fn retry_info_is_the_retry_hint_and_headers_are_the_fallback() {
        let body = status_body(
            429,
            "RESOURCE_EXHAUSTED",
            "quota",
            json!([
            quota_failure("GenerateRequestsPerMinutePerProjectPerModel-FreeTier", "10"),
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "28s"}]),
        );
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("3"));
        let err = adapter().classify_error(429, &headers, &body);
        assert_eq!(err.class, ErrorType::RateLimited);
        assert_eq!(err.retry_after, Some(Duration::from_secs(28)));
        assert!(err.is_retryable());
        let err = adapter().classify_error(
            429,
            &headers,
            &status_body(429, "RESOURCE_EXHAUSTED", "quota", json!([])),
        );
        assert_eq!(err.retry_after, Some(Duration::from_secs(3)));
        let daily = status_body(
            429,
            "RESOURCE_EXHAUSTED",
            "quota",
            json!([
            quota_failure("GenerateRequestsPerDayPerProjectPerModel-FreeTier", "250"),
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.5s"}]),
        );
        let err = adapter().classify_error(429, &HeaderMap::new(), &daily);
        assert_eq!(err.class, ErrorType::QuotaExhausted);
        assert!(!err.is_retryable());
        assert_eq!(err.retry_after, Some(Duration::from_millis(1500)));
    }
}
