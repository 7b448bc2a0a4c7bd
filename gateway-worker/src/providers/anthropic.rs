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
//!   sum. Thinking tokens are billed inside `output_tokens` and not reported apart, so
//!   `reasoning_tokens` stays 0. Stream usage is cumulative: `message_delta` replaces
//!   what `message_start` said, field by field, when it carries a field.
//! - A `refusal` stop with nothing else in the answer is the error `ContentFiltered`, so
//!   `content_policy_fallbacks` fire as they would on OpenAI's policy error; a refusal
//!   after some text or a tool call keeps that output and finishes `content_filter`.
//!   Streaming and non-streaming apply the same rule.
//! - Thinking comes back as `reasoning_content`; its signature cannot ride through the
//!   OpenAI format, so thinking is not replayed in later turns.

use llmq_schemas::{
    ChatCompletion, ChatRequest, Choice, Content, ContentPart, ErrorType, FunctionCall, Message,
    ResponseMessage, Role, ToolCall, ToolCallDelta, ToolChoice, Usage,
};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::accumulate::{openai_usage, unix_now};
use super::openai::{secret_header, snippet, static_headers};
use super::retry_hint;
use super::{
    Adapter, CallSpec, Completion, DeltaPart, HttpCall, ProviderError, SseEvent, StreamDecoder,
    StreamItem,
};
use crate::config::{ApiKey, ProviderConfig};

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
    key: Option<ApiKey>,
    headers: HeaderMap,
}

impl Anthropic {
    pub fn from_config(name: &str, config: &ProviderConfig) -> Result<Self, String> {
        let mut headers = static_headers(name, config)?;
        let version = config.api_version.as_deref().unwrap_or(DEFAULT_VERSION);
        let version = HeaderValue::from_str(version)
            .map_err(|_| format!("providers.{name}.api_version: invalid header value"))?;
        headers.insert(HeaderName::from_static(VERSION_HEADER), version);
        Ok(Self {
            url: format!("{}{MESSAGES_PATH}", config.base_url()),
            key: config.api_key.clone(),
            headers,
        })
    }
}

impl Adapter for Anthropic {
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
        let body = serde_json::to_vec(&messages_request(call)?).map_err(|err| {
            ProviderError::new(
                ErrorType::InvalidRequest,
                format!("cannot encode request: {err}"),
            )
        })?;
        Ok(HttpCall {
            url: self.url.clone(),
            headers,
            body,
        })
    }

    fn parse_response(&self, body: &[u8]) -> Result<Completion, ProviderError> {
        match serde_json::from_slice::<MessageResponse>(body) {
            Ok(message) => completion(message),
            Err(err) => match serde_json::from_slice::<ErrorEnvelope>(body) {
                Ok(envelope) => Err(classify_envelope(None, &envelope)),
                Err(_) => Err(ProviderError::malformed(format!(
                    "not a message ({err}): {}",
                    snippet(body)
                ))),
            },
        }
    }

    fn stream_decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(EventDecoder::default())
    }

    fn classify_error(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> ProviderError {
        let mut err = match serde_json::from_slice::<ErrorEnvelope>(body) {
            Ok(envelope) => classify_envelope(Some(status), &envelope),
            Err(_) => ProviderError::new(
                ProviderError::class_for_status(status),
                format!("HTTP {status}: {}", snippet(body)),
            ),
        };
        err.status = Some(status);
        err.retry_after = retry_hint::retry_after(headers);
        err.should_retry = retry_hint::should_retry(headers);
        err
    }
}

// ---- request wire types -----------------------------------------------------------------

#[derive(Debug, Serialize)]
struct MessagesRequest<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<String>,
    messages: Vec<Turn>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<&'a Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<ToolDef<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_config: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<&'a Value>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
}

#[derive(Debug, Serialize)]
struct Turn {
    role: &'static str,
    content: Vec<Block>,
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block {
    Text {
        text: String,
    },
    Image {
        source: ImageSource,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    ToolResult {
        tool_use_id: String,
        content: ToolResultContent,
    },
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum ToolResultContent {
    Text(String),
    Blocks(Vec<Block>),
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ImageSource {
    Base64 { media_type: String, data: String },
    Url { url: String },
}

#[derive(Debug, Serialize)]
struct ToolDef<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    input_schema: Value,
}

// ---- response and stream wire types -----------------------------------------------------

#[derive(Debug, Deserialize)]
struct MessageResponse {
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    content: Vec<ResponseBlock>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ResponseBlock {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    Thinking {
        #[serde(default)]
        thinking: String,
    },
    /// `redacted_thinking`, server tool blocks and block types added later.
    #[serde(other)]
    Other,
}

/// Usage as `message_start` and non-streaming responses carry it; `message_delta`
/// carries the same fields, each optional.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(default)]
struct WireUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
}

impl WireUsage {
    /// Cumulative update: fields the newer report carries replace the older values.
    fn update(&mut self, newer: &WireUsage) {
        self.input_tokens = newer.input_tokens.or(self.input_tokens);
        self.output_tokens = newer.output_tokens.or(self.output_tokens);
        self.cache_creation_input_tokens = newer
            .cache_creation_input_tokens
            .or(self.cache_creation_input_tokens);
        self.cache_read_input_tokens = newer
            .cache_read_input_tokens
            .or(self.cache_read_input_tokens);
    }
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StreamEvent {
    MessageStart {
        message: StartMessage,
    },
    ContentBlockStart {
        index: u32,
        content_block: StartBlock,
    },
    ContentBlockDelta {
        index: u32,
        delta: BlockDelta,
    },
    ContentBlockStop {
        index: u32,
    },
    MessageDelta {
        #[serde(default)]
        delta: MessageDeltaBody,
        #[serde(default)]
        usage: Option<WireUsage>,
    },
    MessageStop {},
    Ping {},
    Error {
        error: ErrorObject,
    },
    /// Event types added later are ignored, as the API's versioning policy asks.
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Deserialize)]
struct StartMessage {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StartBlock {
    Text {
        #[serde(default)]
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
    },
    Thinking {
        #[serde(default)]
        thinking: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        #[serde(default)]
        partial_json: String,
    },
    ThinkingDelta {
        thinking: String,
    },
    /// `signature_delta`, `citations_delta` and later delta types.
    #[serde(other)]
    Other,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct MessageDeltaBody {
    stop_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ErrorEnvelope {
    error: ErrorObject,
    #[serde(default)]
    request_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorObject {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

// ---- conversions ------------------------------------------------------------------------

fn invalid(message: impl Into<String>) -> ProviderError {
    ProviderError::new(ErrorType::InvalidRequest, message)
}

fn messages_request<'a>(call: &CallSpec<'a>) -> Result<MessagesRequest<'a>, ProviderError> {
    let request = call.request;
    if request.n.is_some_and(|n| n > 1) {
        return Err(invalid(
            "Anthropic returns one answer per request: n > 1 is not supported",
        ));
    }
    let (system, messages) = turns(&request.messages)?;
    Ok(MessagesRequest {
        model: call.upstream_model,
        max_tokens: request
            .max_output_tokens()
            .or(call.default_max_tokens)
            .unwrap_or(FALLBACK_MAX_TOKENS),
        system,
        messages,
        temperature: request.temperature,
        top_p: request.top_p,
        top_k: request.extra.get("top_k"),
        stop_sequences: request
            .stop
            .as_ref()
            .map(|stop| stop.to_vec())
            .unwrap_or_default(),
        tools: tool_defs(request)?,
        tool_choice: tool_choice(request)?,
        metadata: ["user", "safety_identifier"]
            .iter()
            .find_map(|field| request.extra.get(*field).and_then(Value::as_str))
            .map(|user| json!({ "user_id": user })),
        output_config: output_config(request.response_format.as_ref()),
        thinking: request.extra.get("thinking"),
        stream: call.stream,
    })
}

/// The `system` text and the user/assistant turns.
fn turns(messages: &[Message]) -> Result<(Option<String>, Vec<Turn>), ProviderError> {
    let mut system = Vec::new();
    let mut turns: Vec<Turn> = Vec::new();
    for (at, message) in messages.iter().enumerate() {
        let (role, blocks) = match message.role {
            Role::System | Role::Developer => {
                let text = message.text_content();
                if !text.is_empty() {
                    system.push(text);
                }
                continue;
            }
            Role::User => ("user", content_blocks(message.content.as_ref(), at)?),
            Role::Assistant => ("assistant", assistant_blocks(message, at)?),
            Role::Tool => ("user", vec![tool_result(message, at)?]),
        };
        // Anthropic rejects empty content; an empty message says nothing anyway.
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some(last) if last.role == role => last.content.extend(blocks),
            _ => turns.push(Turn {
                role,
                content: blocks,
            }),
        }
    }
    Ok(((!system.is_empty()).then(|| system.join("\n\n")), turns))
}

fn content_blocks(content: Option<&Content>, at: usize) -> Result<Vec<Block>, ProviderError> {
    match content {
        None => Ok(Vec::new()),
        Some(Content::Text(text)) if text.is_empty() => Ok(Vec::new()),
        Some(Content::Text(text)) => Ok(vec![Block::Text { text: text.clone() }]),
        Some(Content::Parts(parts)) => parts
            .iter()
            .filter_map(|part| match part {
                ContentPart::Text { text } if text.is_empty() => None,
                ContentPart::Text { text } => Some(Ok(Block::Text { text: text.clone() })),
                ContentPart::ImageUrl { image_url } => Some(image_block(&image_url.url, at)),
                ContentPart::Other(other) => Some(Err(invalid(format!(
                    "messages[{at}]: content part type {} is not supported by Anthropic",
                    other
                        .get("type")
                        .and_then(Value::as_str)
                        .unwrap_or("(none)")
                )))),
            })
            .collect(),
    }
}

fn image_block(url: &str, at: usize) -> Result<Block, ProviderError> {
    let source = if let Some((media_type, data)) = data_url(url) {
        ImageSource::Base64 {
            media_type: media_type.to_owned(),
            data: data.to_owned(),
        }
    } else if url.starts_with("https://") || url.starts_with("http://") {
        ImageSource::Url {
            url: url.to_owned(),
        }
    } else {
        return Err(invalid(format!(
            "messages[{at}]: an image must be a base64 data: URL or an http(s) URL"
        )));
    };
    Ok(Block::Image { source })
}

/// `data:<mime>;base64,<data>` split into mime type and data.
pub(crate) fn data_url(url: &str) -> Option<(&str, &str)> {
    let (meta, data) = url.strip_prefix("data:")?.split_once(',')?;
    let mime = meta.strip_suffix(";base64")?;
    (!mime.is_empty()).then_some((mime, data))
}

fn assistant_blocks(message: &Message, at: usize) -> Result<Vec<Block>, ProviderError> {
    let mut blocks = content_blocks(message.content.as_ref(), at)?;
    for call in message.tool_calls.iter().flatten() {
        blocks.push(Block::ToolUse {
            id: call.id.clone(),
            name: call.function.name.clone(),
            input: tool_arguments(call)?,
        });
    }
    Ok(blocks)
}

/// A tool call's arguments as the JSON object providers want (`""` means no arguments).
pub(crate) fn tool_arguments(call: &ToolCall) -> Result<Value, ProviderError> {
    let text = call.function.arguments.trim();
    if text.is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    match serde_json::from_str::<Value>(text) {
        Ok(value @ Value::Object(_)) => Ok(value),
        _ => Err(invalid(format!(
            "tool call {}: arguments are not a JSON object",
            call.id
        ))),
    }
}

fn tool_result(message: &Message, at: usize) -> Result<Block, ProviderError> {
    let tool_use_id = message
        .tool_call_id
        .clone()
        .ok_or_else(|| invalid(format!("messages[{at}]: a tool message needs tool_call_id")))?;
    let content = match &message.content {
        None => ToolResultContent::Text(String::new()),
        Some(Content::Text(text)) => ToolResultContent::Text(text.clone()),
        Some(parts) => ToolResultContent::Blocks(content_blocks(Some(parts), at)?),
    };
    Ok(Block::ToolResult {
        tool_use_id,
        content,
    })
}

fn tool_defs(request: &ChatRequest) -> Result<Vec<ToolDef<'_>>, ProviderError> {
    request
        .tools
        .iter()
        .flatten()
        .map(|tool| {
            if tool.kind != "function" {
                return Err(invalid(format!(
                    "tool type {} is not supported by Anthropic",
                    tool.kind
                )));
            }
            Ok(ToolDef {
                name: &tool.function.name,
                description: tool.function.description.as_deref(),
                input_schema: tool
                    .function
                    .parameters
                    .clone()
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            })
        })
        .collect()
}

fn tool_choice(request: &ChatRequest) -> Result<Option<Value>, ProviderError> {
    if request.tools.as_ref().is_none_or(Vec::is_empty) {
        return Ok(None);
    }
    let serial = request.parallel_tool_calls == Some(false);
    let mut choice = match &request.tool_choice {
        None if serial => json!({"type": "auto"}),
        None => return Ok(None),
        Some(ToolChoice::Mode(mode)) => match mode.as_str() {
            "auto" => json!({"type": "auto"}),
            "required" => json!({"type": "any"}),
            "none" => return Ok(Some(json!({"type": "none"}))),
            other => return Err(invalid(format!("unknown tool_choice {other:?}"))),
        },
        Some(ToolChoice::Named(named)) => json!({"type": "tool", "name": named.function.name}),
    };
    if serial {
        choice["disable_parallel_tool_use"] = Value::Bool(true);
    }
    Ok(Some(choice))
}

/// `response_format: json_schema` as Anthropic structured outputs.
fn output_config(format: Option<&Value>) -> Option<Value> {
    let format = format?;
    if format.get("type").and_then(Value::as_str) != Some("json_schema") {
        return None;
    }
    let schema = format.pointer("/json_schema/schema")?;
    Some(json!({"format": {"type": "json_schema", "schema": schema}}))
}

fn normalize_usage(usage: &WireUsage) -> Usage {
    let cache_read = usage.cache_read_input_tokens.unwrap_or(0);
    let cache_write = usage.cache_creation_input_tokens.unwrap_or(0);
    let prompt = usage.input_tokens.unwrap_or(0) + cache_read + cache_write;
    let completion = usage.output_tokens.unwrap_or(0);
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt + completion,
        cached_prompt_tokens: cache_read,
        cache_write_tokens: cache_write,
        reasoning_tokens: 0,
    }
}

fn finish_reason(stop_reason: Option<&str>, has_tool_calls: bool) -> String {
    match stop_reason {
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        None if has_tool_calls => "tool_calls",
        // end_turn, stop_sequence, pause_turn, and reasons added later.
        _ => "stop",
    }
    .to_owned()
}

fn refusal() -> ProviderError {
    ProviderError::new(
        ErrorType::ContentFiltered,
        "the model refused to answer (stop_reason refusal)",
    )
    .with_code(Some("refusal".into()))
}

fn completion(message: MessageResponse) -> Result<Completion, ProviderError> {
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut tool_calls = Vec::new();
    for block in message.content {
        match block {
            ResponseBlock::Text { text: part } => text.push_str(&part),
            ResponseBlock::Thinking { thinking } => reasoning.push_str(&thinking),
            ResponseBlock::ToolUse { id, name, input } => {
                let arguments = match input {
                    Value::Null => "{}".to_owned(),
                    input => input.to_string(),
                };
                tool_calls.push(ToolCall {
                    id,
                    kind: "function".into(),
                    function: FunctionCall { name, arguments },
                });
            }
            ResponseBlock::Other => {}
        }
    }
    let stop_reason = message.stop_reason.as_deref();
    if stop_reason == Some("refusal") && text.is_empty() && tool_calls.is_empty() {
        return Err(refusal());
    }
    let usage = message.usage.as_ref().map(normalize_usage);
    let finish = finish_reason(stop_reason, !tool_calls.is_empty());
    let response = ChatCompletion {
        id: message.id,
        object: "chat.completion".into(),
        created: unix_now(),
        model: message.model,
        choices: vec![Choice {
            index: 0,
            message: ResponseMessage {
                role: "assistant".into(),
                content: (!text.is_empty() || tool_calls.is_empty()).then_some(text),
                tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
                refusal: None,
                reasoning_content: (!reasoning.is_empty()).then_some(reasoning),
                extra: Map::new(),
            },
            finish_reason: Some(finish),
            logprobs: None,
        }],
        usage: usage.as_ref().map(openai_usage),
        system_fingerprint: None,
        service_tier: None,
        extra: Map::new(),
    };
    Ok(Completion { response, usage })
}

fn classify_envelope(status: Option<u16>, envelope: &ErrorEnvelope) -> ProviderError {
    let mut err = classify_object(status, &envelope.error);
    if let Some(request_id) = &envelope.request_id {
        err.message = format!("{} (request_id {request_id})", err.message);
    }
    err
}

fn classify_object(status: Option<u16>, error: &ErrorObject) -> ProviderError {
    let message = error.message.clone().unwrap_or_else(|| "no message".into());
    let lower = message.to_ascii_lowercase();
    let class = match error.kind.as_deref() {
        Some("invalid_request_error") => {
            if lower.contains("prompt is too long")
                || lower.contains("exceed context limit")
                || lower.contains("context window")
            {
                ErrorType::ContextWindowExceeded
            } else if lower.contains("credit balance") || lower.contains("spend limit") {
                // Sent as a 400 invalid_request_error, but it is billing, not the request.
                ErrorType::QuotaExhausted
            } else {
                ErrorType::InvalidRequest
            }
        }
        Some("authentication_error" | "permission_error") => ErrorType::Auth,
        Some("billing_error") => ErrorType::QuotaExhausted,
        Some("not_found_error") => ErrorType::NotFound,
        Some("rate_limit_error") => ErrorType::RateLimited,
        Some("api_error") => ErrorType::Server,
        Some("timeout_error") => ErrorType::Timeout,
        Some("overloaded_error") => ErrorType::Overloaded,
        Some("request_too_large") => ErrorType::InvalidRequest,
        _ => status.map_or(ErrorType::Server, ProviderError::class_for_status),
    };
    let mut err = ProviderError::new(class, message).with_code(error.kind.clone());
    err.status = status;
    err
}

/// Decodes the named Messages stream events.
#[derive(Debug, Default)]
struct EventDecoder {
    done: bool,
    usage: WireUsage,
    /// Tool-use blocks by content-block index, in the order they started.
    tool_blocks: Vec<ToolBlock>,
    /// Text or a tool call was produced (a refusal after that keeps it).
    answered: bool,
}

#[derive(Debug)]
struct ToolBlock {
    block: u32,
    tool: u32,
    has_arguments: bool,
}

fn content(text: String) -> StreamItem {
    StreamItem::Delta(DeltaPart {
        content: Some(text),
        ..DeltaPart::default()
    })
}

fn reasoning(text: String) -> StreamItem {
    StreamItem::Delta(DeltaPart {
        reasoning: Some(text),
        ..DeltaPart::default()
    })
}

fn tool_delta(delta: ToolCallDelta) -> StreamItem {
    StreamItem::Delta(DeltaPart {
        tool_calls: vec![delta],
        ..DeltaPart::default()
    })
}

impl EventDecoder {
    fn tool_block(&mut self, block: u32) -> Option<&mut ToolBlock> {
        self.tool_blocks.iter_mut().find(|b| b.block == block)
    }
}

impl StreamDecoder for EventDecoder {
    fn decode(&mut self, event: &SseEvent, out: &mut Vec<StreamItem>) -> Result<(), ProviderError> {
        let data = event.data.trim();
        if data.is_empty() {
            return Ok(());
        }
        let event: StreamEvent = serde_json::from_str(data).map_err(|err| {
            ProviderError::malformed(format!(
                "malformed stream event ({err}): {}",
                snippet(data.as_bytes())
            ))
        })?;
        match event {
            StreamEvent::MessageStart { message } => {
                out.push(StreamItem::Meta {
                    id: message.id,
                    model: message.model,
                    created: None,
                });
                if let Some(usage) = message.usage {
                    self.usage.update(&usage);
                    out.push(StreamItem::Usage(normalize_usage(&self.usage)));
                }
            }
            StreamEvent::ContentBlockStart {
                index,
                content_block,
            } => match content_block {
                StartBlock::Text { text } if !text.is_empty() => {
                    self.answered = true;
                    out.push(content(text));
                }
                StartBlock::Thinking { thinking } if !thinking.is_empty() => {
                    out.push(reasoning(thinking));
                }
                StartBlock::ToolUse { id, name } => {
                    let tool = u32::try_from(self.tool_blocks.len()).unwrap_or(u32::MAX);
                    self.tool_blocks.push(ToolBlock {
                        block: index,
                        tool,
                        has_arguments: false,
                    });
                    self.answered = true;
                    out.push(tool_delta(ToolCallDelta {
                        index: tool,
                        id: Some(id),
                        name: Some(name),
                        arguments: None,
                    }));
                }
                StartBlock::Text { .. } | StartBlock::Thinking { .. } | StartBlock::Other => {}
            },
            StreamEvent::ContentBlockDelta { index, delta } => match delta {
                BlockDelta::TextDelta { text } => {
                    self.answered |= !text.is_empty();
                    out.push(content(text));
                }
                BlockDelta::ThinkingDelta { thinking } => out.push(reasoning(thinking)),
                BlockDelta::InputJsonDelta { partial_json } => {
                    if let Some(block) = self.tool_block(index)
                        && !partial_json.is_empty()
                    {
                        block.has_arguments = true;
                        let tool = block.tool;
                        out.push(tool_delta(ToolCallDelta {
                            index: tool,
                            arguments: Some(partial_json),
                            ..ToolCallDelta::default()
                        }));
                    }
                }
                BlockDelta::Other => {}
            },
            StreamEvent::ContentBlockStop { index } => {
                // A tool without arguments streams only `""`; the non-streaming answer
                // says `{}`, and so must this one.
                if let Some(block) = self.tool_block(index)
                    && !block.has_arguments
                {
                    block.has_arguments = true;
                    let tool = block.tool;
                    out.push(tool_delta(ToolCallDelta {
                        index: tool,
                        arguments: Some("{}".into()),
                        ..ToolCallDelta::default()
                    }));
                }
            }
            StreamEvent::MessageDelta { delta, usage } => {
                if let Some(usage) = usage {
                    self.usage.update(&usage);
                    out.push(StreamItem::Usage(normalize_usage(&self.usage)));
                }
                if let Some(reason) = delta.stop_reason {
                    if reason == "refusal" && !self.answered {
                        return Err(refusal());
                    }
                    out.push(StreamItem::Finish(finish_reason(
                        Some(&reason),
                        !self.tool_blocks.is_empty(),
                    )));
                }
            }
            StreamEvent::MessageStop {} => self.done = true,
            StreamEvent::Error { error } => return Err(classify_object(None, &error)),
            StreamEvent::Ping {} | StreamEvent::Unknown => {}
        }
        Ok(())
    }

    fn is_done(&self) -> bool {
        self.done
    }

    fn finish(&mut self) -> Result<(), ProviderError> {
        if self.done {
            Ok(())
        } else {
            Err(ProviderError::network("stream ended before message_stop"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProviderKind;
    use crate::providers::accumulate::StreamAccumulator;
    use crate::providers::sse::SseParser;

    const KEY: &str = "sk-ant-test-key-123";

    fn adapter() -> Anthropic {
        let config = ProviderConfig::new(
            ProviderKind::Anthropic,
            "https://api.anthropic.com/",
            Some(ApiKey::new(KEY)),
        );
        Anthropic::from_config("anthropic", &config).unwrap()
    }

    fn spec(request: &ChatRequest, stream: bool) -> CallSpec<'_> {
        CallSpec {
            request,
            upstream_model: "claude-sonnet-4-5",
            stream,
            default_max_tokens: None,
        }
    }

    fn body_of(request: &ChatRequest, stream: bool) -> Value {
        let call = adapter().build(&spec(request, stream)).unwrap();
        serde_json::from_slice(&call.body).unwrap()
    }

    fn request(value: Value) -> ChatRequest {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn url_headers_and_the_key_only_in_a_sensitive_header() {
        let call = adapter()
            .build(&spec(&ChatRequest::user("hi"), true))
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

    #[test]
    fn translates_a_rich_request_exactly() {
        let request = request(json!({
            "model": "chat-smart",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "What is the weather in Paris and Rome?"},
                {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
                {"role": "user", "content": [
                    {"type": "text", "text": "Also look at these."},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"}}
                ]},
                {"role": "assistant", "content": "Checking.", "tool_calls": [
                    {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "toolu_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Rome\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "18C, sunny"},
                {"role": "tool", "tool_call_id": "toolu_2", "content": "24C"},
                {"role": "user", "content": "Thanks. Summarize."}
            ],
            "max_completion_tokens": 300,
            "temperature": 0.2,
            "top_p": 0.9,
            "stop": ["END"],
            "tools": [{"type": "function", "function": {
                "name": "get_weather", "description": "Current weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
            }}],
            "tool_choice": "required",
            "parallel_tool_calls": false,
            "user": "user-42",
            "seed": 7,
            "presence_penalty": 0.5,
            "logit_bias": {"50256": -100},
            "reasoning_effort": "low",
            "store": true
        }));
        let expected = json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 300,
            "system": "Be brief.\n\nUse metric units.",
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "What is the weather in Paris and Rome?"},
                    {"type": "text", "text": "Also look at these."},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}
                ]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Rome"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C, sunny"},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": "24C"},
                    {"type": "text", "text": "Thanks. Summarize."}
                ]}
            ],
            "temperature": 0.2,
            "top_p": 0.9,
            "stop_sequences": ["END"],
            "tools": [{"name": "get_weather", "description": "Current weather",
                       "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "metadata": {"user_id": "user-42"},
            "stream": true
        });
        assert_eq!(body_of(&request, true), expected);
    }

    #[test]
    fn max_tokens_is_never_omitted() {
        let request = ChatRequest::user("hi");
        assert_eq!(body_of(&request, false)["max_tokens"], FALLBACK_MAX_TOKENS);
        let call = adapter()
            .build(&CallSpec {
                default_max_tokens: Some(1024),
                ..spec(&request, false)
            })
            .unwrap();
        let body: Value = serde_json::from_slice(&call.body).unwrap();
        assert_eq!(body["max_tokens"], 1024);
        assert!(body.get("stream").is_none());
        let mut capped = ChatRequest::user("hi");
        capped.max_tokens = Some(77);
        let call = adapter()
            .build(&CallSpec {
                default_max_tokens: Some(1024),
                ..spec(&capped, false)
            })
            .unwrap();
        let body: Value = serde_json::from_slice(&call.body).unwrap();
        assert_eq!(body["max_tokens"], 77);
    }

    #[test]
    fn tool_choice_modes_and_structured_output() {
        let with = |choice: Value| {
            let mut value = json!({
                "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"type": "function", "function": {"name": "f"}}],
                "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
            });
            if !choice.is_null() {
                value["tool_choice"] = choice;
            }
            body_of(&request(value), false)
        };
        assert_eq!(with(json!("auto"))["tool_choice"], json!({"type": "auto"}));
        assert_eq!(with(json!("none"))["tool_choice"], json!({"type": "none"}));
        assert_eq!(
            with(json!({"type": "function", "function": {"name": "f"}}))["tool_choice"],
            json!({"type": "tool", "name": "f"})
        );
        let body = with(Value::Null);
        assert!(body.get("tool_choice").is_none());
        assert_eq!(
            body["tools"],
            json!([{"name": "f", "input_schema": {"type": "object", "properties": {}}}])
        );
        assert_eq!(
            body["output_config"],
            json!({"format": {"type": "json_schema", "schema": {"type": "object"}}})
        );
        let body = body_of(
            &request(json!({
                "messages": [{"role": "user", "content": "hi"}],
                "response_format": {"type": "json_object"},
                "top_k": 5,
                "thinking": {"type": "enabled", "budget_tokens": 2048}
            })),
            false,
        );
        assert!(body.get("output_config").is_none());
        assert_eq!(body["top_k"], 5);
        assert_eq!(body["thinking"]["budget_tokens"], 2048);
    }

    #[test]
    fn untranslatable_requests_are_invalid() {
        let cases = [
            json!({"messages": [{"role": "assistant", "tool_calls": [
                {"id": "t", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]}]}),
            json!({"messages": [{"role": "assistant", "tool_calls": [
                {"id": "t", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}]}),
            json!({"messages": [{"role": "tool", "content": "x"}]}),
            json!({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}}]}]}),
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]}),
            json!({"messages": [{"role": "user", "content": "hi"}], "n": 2}),
            json!({"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "sometimes"}),
        ];
        for case in cases {
            let err = adapter()
                .build(&spec(&request(case.clone()), false))
                .unwrap_err();
            assert_eq!(err.class, ErrorType::InvalidRequest, "{case}");
        }
        // Empty arguments mean no arguments.
        let body = body_of(
            &request(json!({"messages": [{"role": "assistant", "tool_calls": [
                {"id": "t", "type": "function", "function": {"name": "f", "arguments": ""}}]}]})),
            false,
        );
        assert_eq!(body["messages"][0]["content"][0]["input"], json!({}));
    }

    /// The documented response shape, with thinking, a tool call and cache counts.
    const TOOL_RESPONSE: &str = r#"{"id":"msg_01Aq9w938a90dw8q","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929",
        "content":[{"type":"thinking","thinking":"The user wants weather.","signature":"EqQBCgIYAhIM"},
                   {"type":"redacted_thinking","data":"EmwKAhgBEgy3va3pzix"},
                   {"type":"text","text":"I'll check the weather."},
                   {"type":"tool_use","id":"toolu_01A09q90qw90lq917835lq9","name":"get_weather","input":{"location":"San Francisco, CA","unit":"celsius"}}],
        "stop_reason":"tool_use","stop_sequence":null,
        "usage":{"input_tokens":12,"cache_creation_input_tokens":100,"cache_read_input_tokens":2000,"output_tokens":85,"service_tier":"standard"}}"#;

    #[test]
    fn parses_a_response_with_thinking_tools_and_cache_usage() {
        let done = adapter().parse_response(TOOL_RESPONSE.as_bytes()).unwrap();
        let response = &done.response;
        assert_eq!(response.id, "msg_01Aq9w938a90dw8q");
        assert_eq!(response.model, "claude-sonnet-4-5-20250929");
        let choice = &response.choices[0];
        assert_eq!(choice.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(
            choice.message.content.as_deref(),
            Some("I'll check the weather.")
        );
        assert_eq!(
            choice.message.reasoning_content.as_deref(),
            Some("The user wants weather.")
        );
        let calls = choice.message.tool_calls.clone().unwrap();
        assert_eq!(calls[0].id, "toolu_01A09q90qw90lq917835lq9");
        assert_eq!(calls[0].function.name, "get_weather");
        assert_eq!(
            calls[0].function.arguments,
            r#"{"location":"San Francisco, CA","unit":"celsius"}"#
        );
        let usage = done.usage.unwrap();
        assert_eq!(
            usage,
            Usage {
                prompt_tokens: 2112,
                completion_tokens: 85,
                total_tokens: 2197,
                cached_prompt_tokens: 2000,
                cache_write_tokens: 100,
                reasoning_tokens: 0,
            }
        );
        let wire = response.usage.clone().unwrap();
        assert_eq!(wire.prompt_tokens, 2112);
        assert_eq!(wire.prompt_tokens_details.unwrap().cached_tokens, 2000);
    }

    #[test]
    fn stop_reasons_map_to_finish_reasons() {
        for (stop, finish) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("pause_turn", "stop"),
            ("max_tokens", "length"),
            ("model_context_window_exceeded", "length"),
            ("refusal", "content_filter"),
        ] {
            let body = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
                "content": [{"type": "text", "text": "partial"}], "stop_reason": stop,
                "usage": {"input_tokens": 1, "output_tokens": 1}});
            let done = adapter()
                .parse_response(body.to_string().as_bytes())
                .unwrap();
            assert_eq!(
                done.response.choices[0].finish_reason.as_deref(),
                Some(finish),
                "{stop}"
            );
            assert_eq!(done.response.text(), "partial");
        }
    }

    #[test]
    fn a_bare_refusal_is_content_filtered_and_error_bodies_are_errors() {
        let body = r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude","content":[],"stop_reason":"refusal","usage":{"input_tokens":10,"output_tokens":0}}"#;
        let err = adapter().parse_response(body.as_bytes()).unwrap_err();
        assert_eq!(err.class, ErrorType::ContentFiltered);
        assert!(err.allows_fallback());
        let body = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_011CSHoEeqs5C35K2UUqR7Fy"}"#;
        let err = adapter().parse_response(body.as_bytes()).unwrap_err();
        assert_eq!(err.class, ErrorType::Overloaded);
        assert!(err.message.contains("req_011CSHoEeqs5C35K2UUqR7Fy"));
        let err = adapter()
            .parse_response(b"<html>bad gateway</html>")
            .unwrap_err();
        assert_eq!(err.class, ErrorType::MalformedResponse);
    }

    fn decode_stream(text: &[u8]) -> (Result<(), ProviderError>, StreamAccumulator) {
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        for piece in text.chunks(11) {
            parser.feed(piece, &mut events).unwrap();
        }
        parser.finish(&mut events).unwrap();
        let mut decoder = adapter().stream_decoder();
        let mut acc = StreamAccumulator::new();
        let mut items = Vec::new();
        for event in &events {
            assert!(!decoder.is_done(), "events after message_stop");
            if let Err(err) = decoder.decode(event, &mut items) {
                return (Err(err), acc);
            }
            for item in items.drain(..) {
                acc.apply(item);
            }
        }
        (decoder.finish(), acc)
    }

    #[test]
    fn decodes_the_recorded_basic_stream() {
        let (end, acc) = decode_stream(include_bytes!(
            "../../tests/fixtures/anthropic/basic_response.txt"
        ));
        end.unwrap();
        let done = acc.finish("unused");
        assert_eq!(done.response.text(), "Hello there!");
        assert_eq!(done.response.id, "msg_4QpJur2dWWDjF6C758FbBw5vm12BaVipnK");
        assert_eq!(done.response.model, "claude-3-opus-latest");
        assert_eq!(
            done.response.choices[0].finish_reason.as_deref(),
            Some("stop")
        );
        // output_tokens from message_delta replaces message_start's 1; input is kept.
        assert_eq!(done.usage, Some(Usage::new(11, 6)));
    }

    #[test]
    fn decodes_the_recorded_tool_use_stream_like_the_same_answer_unstreamed() {
        let (end, acc) = decode_stream(include_bytes!(
            "../../tests/fixtures/anthropic/tool_use_response.txt"
        ));
        end.unwrap();
        let streamed = acc.finish("unused");
        let message = &streamed.response.choices[0].message;
        assert_eq!(
            message.content.as_deref(),
            Some("I'll check the current weather in Paris for you.")
        );
        let calls = message.tool_calls.clone().unwrap();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].id, "toolu_01NRLabsLyVHZPKxbKvkfSMn");
        assert_eq!(calls[0].function.name, "get_weather");
        assert_eq!(calls[0].function.arguments, r#"{"location": "Paris"}"#);
        assert_eq!(
            streamed.response.choices[0].finish_reason.as_deref(),
            Some("tool_calls")
        );

        // The same answer, non-streaming.
        let body = json!({"id": "msg_019Q1hrJbZG26Fb9BQhrkHEr", "type": "message", "role": "assistant",
            "model": "claude-sonnet-4-20250514",
            "content": [{"type": "text", "text": "I'll check the current weather in Paris for you."},
                        {"type": "tool_use", "id": "toolu_01NRLabsLyVHZPKxbKvkfSMn", "name": "get_weather", "input": {"location": "Paris"}}],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 377, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 65, "service_tier": "standard"}});
        let whole = adapter()
            .parse_response(body.to_string().as_bytes())
            .unwrap();
        assert_eq!(streamed.usage, whole.usage);
        assert_eq!(streamed.usage, Some(Usage::new(377, 65)));
        assert_eq!(
            streamed.response.choices[0].finish_reason,
            whole.response.choices[0].finish_reason
        );
        let whole_calls = whole.response.choices[0]
            .message
            .tool_calls
            .clone()
            .unwrap();
        let parse = |s: &str| serde_json::from_str::<Value>(s).unwrap();
        assert_eq!(
            parse(&calls[0].function.arguments),
            parse(&whole_calls[0].function.arguments)
        );
    }

    fn sse(events: &[Value]) -> Vec<u8> {
        let mut text = String::new();
        for event in events {
            let name = event["type"].as_str().unwrap();
            text.push_str(&format!("event: {name}\ndata: {event}\n\n"));
        }
        text.into_bytes()
    }

    #[test]
    fn cache_usage_thinking_and_argumentless_tools_stream_like_the_unstreamed_answer() {
        let stream = sse(&[
            json!({"type": "message_start", "message": {"id": "msg_c", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5", "content": [],
                "stop_reason": null, "usage": {"input_tokens": 12, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 2000, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Let me "}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "think."}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "EqQBCgIYAhIM"}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_a", "name": "now", "input": {}}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}}),
            json!({"type": "content_block_stop", "index": 1}),
            json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_b", "name": "lookup", "input": {}}}),
            json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{\"q\":"}}),
            json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "1}"}}),
            json!({"type": "content_block_stop", "index": 2}),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
                   "usage": {"output_tokens": 85, "input_tokens": null, "cache_read_input_tokens": null}}),
            json!({"type": "message_stop"}),
        ]);
        let (end, acc) = decode_stream(&stream);
        end.unwrap();
        let streamed = acc.finish("m");
        let message = &streamed.response.choices[0].message;
        assert_eq!(message.reasoning_content.as_deref(), Some("Let me think."));
        assert_eq!(message.content, None);
        let calls = message.tool_calls.clone().unwrap();
        assert_eq!(
            (calls[0].id.as_str(), calls[0].function.arguments.as_str()),
            ("toolu_a", "{}")
        );
        assert_eq!(
            (calls[1].id.as_str(), calls[1].function.arguments.as_str()),
            ("toolu_b", "{\"q\":1}")
        );

        let body = json!({"id": "msg_c", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": [{"type": "thinking", "thinking": "Let me think.", "signature": "EqQBCgIYAhIM"},
                        {"type": "tool_use", "id": "toolu_a", "name": "now", "input": {}},
                        {"type": "tool_use", "id": "toolu_b", "name": "lookup", "input": {"q": 1}}],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 12, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 2000, "output_tokens": 85}});
        let whole = adapter()
            .parse_response(body.to_string().as_bytes())
            .unwrap();
        assert_eq!(streamed.usage, whole.usage);
        assert_eq!(streamed.usage.unwrap().prompt_tokens, 2112);
        assert_eq!(streamed.usage.unwrap().cache_write_tokens, 100);
        assert_eq!(whole.response.choices[0].message.tool_calls, Some(calls));
        assert_eq!(whole.response.choices[0].message.content, None);
    }

    #[test]
    fn message_delta_input_counts_replace_message_start_counts() {
        let stream = sse(&[
            json!({"type": "message_start", "message": {"id": "m", "model": "c", "usage": {"input_tokens": 5, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "ok"}}),
            // Later additions to the protocol are ignored.
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "citations_delta", "citation": {"type": "char_location"}}}),
            json!({"type": "message_annotation", "anything": [1, 2]}),
            json!({"type": "message_delta", "delta": {"stop_reason": "max_tokens"},
                   "usage": {"input_tokens": 7, "cache_read_input_tokens": 3, "output_tokens": 2}}),
            json!({"type": "message_stop"}),
        ]);
        let (end, acc) = decode_stream(&stream);
        end.unwrap();
        let done = acc.finish("m");
        assert_eq!(
            done.response.choices[0].finish_reason.as_deref(),
            Some("length")
        );
        assert_eq!(done.response.text(), "ok");
        let usage = done.usage.unwrap();
        assert_eq!(
            (
                usage.prompt_tokens,
                usage.cached_prompt_tokens,
                usage.completion_tokens
            ),
            (10, 3, 2)
        );
    }

    #[test]
    fn error_events_refusals_cut_and_malformed_streams_fail() {
        let start = json!({"type": "message_start", "message": {"id": "m", "model": "c", "usage": {"input_tokens": 5, "output_tokens": 1}}});
        let mut stream = sse(std::slice::from_ref(&start));
        stream.extend_from_slice(b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n");
        let (end, _) = decode_stream(&stream);
        let err = end.unwrap_err();
        assert_eq!(err.class, ErrorType::Overloaded);
        assert!(err.is_retryable());

        let refusal = sse(&[
            start.clone(),
            json!({"type": "message_delta", "delta": {"stop_reason": "refusal"}, "usage": {"output_tokens": 0}}),
            json!({"type": "message_stop"}),
        ]);
        let (end, _) = decode_stream(&refusal);
        assert_eq!(end.unwrap_err().class, ErrorType::ContentFiltered);

        let late_refusal = sse(&[
            start.clone(),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Sure, "}}),
            json!({"type": "message_delta", "delta": {"stop_reason": "refusal"}, "usage": {"output_tokens": 3}}),
            json!({"type": "message_stop"}),
        ]);
        let (end, acc) = decode_stream(&late_refusal);
        end.unwrap();
        let done = acc.finish("m");
        assert_eq!(
            done.response.choices[0].finish_reason.as_deref(),
            Some("content_filter")
        );
        assert_eq!(done.response.text(), "Sure, ");

        let cut = sse(&[
            start.clone(),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}}),
        ]);
        let (end, acc) = decode_stream(&cut);
        assert_eq!(end.unwrap_err().class, ErrorType::Network);
        assert_eq!(acc.content(), "Hel");
        // What message_start said is kept for billing a cut stream.
        assert_eq!(acc.usage(), Some(Usage::new(5, 1)));

        let mut malformed = sse(&[start]);
        malformed.extend_from_slice(b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\n\n");
        let (end, _) = decode_stream(&malformed);
        assert_eq!(end.unwrap_err().class, ErrorType::MalformedResponse);
    }

    fn error_body(kind: &str, message: &str) -> Vec<u8> {
        json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn classifies_every_documented_error() {
        let headers = HeaderMap::new();
        let cases = [
            (
                400,
                error_body(
                    "invalid_request_error",
                    "messages.0.content: Field required",
                ),
                ErrorType::InvalidRequest,
            ),
            (
                400,
                error_body(
                    "invalid_request_error",
                    "prompt is too long: 208310 tokens > 200000 maximum",
                ),
                ErrorType::ContextWindowExceeded,
            ),
            (
                400,
                error_body(
                    "invalid_request_error",
                    "input length and `max_tokens` exceed context limit: 187254 + 20000 > 200000, decrease input length or `max_tokens` and try again",
                ),
                ErrorType::ContextWindowExceeded,
            ),
            (
                400,
                error_body(
                    "invalid_request_error",
                    "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.",
                ),
                ErrorType::QuotaExhausted,
            ),
            (
                401,
                error_body("authentication_error", "invalid x-api-key"),
                ErrorType::Auth,
            ),
            (
                402,
                error_body("billing_error", "Your credit balance is too low."),
                ErrorType::QuotaExhausted,
            ),
            (
                403,
                error_body(
                    "permission_error",
                    "Your API key does not have permission to use the specified resource.",
                ),
                ErrorType::Auth,
            ),
            (
                404,
                error_body("not_found_error", "model: claude-9"),
                ErrorType::NotFound,
            ),
            (
                413,
                error_body(
                    "request_too_large",
                    "Request exceeds the maximum allowed number of bytes.",
                ),
                ErrorType::InvalidRequest,
            ),
            (
                413,
                b"<html>413 Request Entity Too Large</html>".to_vec(),
                ErrorType::InvalidRequest,
            ),
            (
                429,
                error_body(
                    "rate_limit_error",
                    "This request would exceed the rate limit for your organization",
                ),
                ErrorType::RateLimited,
            ),
            (
                500,
                error_body("api_error", "Internal server error"),
                ErrorType::Server,
            ),
            (
                504,
                error_body("timeout_error", "Request timed out"),
                ErrorType::Timeout,
            ),
            (
                529,
                error_body("overloaded_error", "Overloaded"),
                ErrorType::Overloaded,
            ),
            (529, Vec::new(), ErrorType::Overloaded),
            (503, b"upstream connect error".to_vec(), ErrorType::Server),
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
        let err =
            adapter().classify_error(529, &headers, &error_body("overloaded_error", "Overloaded"));
        assert_eq!(err.code.as_deref(), Some("overloaded_error"));
        assert!(err.is_retryable());
        let err =
            adapter().classify_error(402, &headers, &error_body("billing_error", "no credit"));
        assert!(!err.is_retryable());
    }

    #[test]
    fn rate_limits_carry_the_retry_hint() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("13"));
        headers.insert("x-should-retry", HeaderValue::from_static("true"));
        headers.insert(
            "anthropic-ratelimit-requests-remaining",
            HeaderValue::from_static("0"),
        );
        headers.insert(
            "anthropic-ratelimit-requests-reset",
            HeaderValue::from_static("2099-01-01T00:00:00Z"),
        );
        let err =
            adapter().classify_error(429, &headers, &error_body("rate_limit_error", "slow down"));
        assert_eq!(err.class, ErrorType::RateLimited);
        assert_eq!(err.retry_after, Some(std::time::Duration::from_secs(13)));
        assert_eq!(err.should_retry, Some(true));

        let mut headers = HeaderMap::new();
        let reset = time::OffsetDateTime::now_utc() + time::Duration::seconds(20);
        let reset = reset
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        headers.insert(
            "anthropic-ratelimit-output-tokens-remaining",
            HeaderValue::from_static("0"),
        );
        headers.insert(
            "anthropic-ratelimit-output-tokens-reset",
            HeaderValue::from_str(&reset).unwrap(),
        );
        let err =
            adapter().classify_error(429, &headers, &error_body("rate_limit_error", "slow down"));
        let delay = err.retry_after.unwrap().as_secs_f64();
        assert!((18.0..=20.0).contains(&delay), "{delay}");
    }
}
