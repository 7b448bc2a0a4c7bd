//! The Chat Completions shapes OpenAI, OpenAI-compatible servers and Azure OpenAI share:
//! request parsing, the `chat.completion` body, the `chat.completion.chunk` stream, and the
//! `{"error":{"message","type","param","code"}}` error shape.
//!
//! Wire facts reproduced here because adapters trip over them: every chunk repeats `id`
//! and `created` and carries `"usage": null`; the role arrives in a first chunk with empty
//! content; `finish_reason` arrives in a chunk with an empty delta; usage comes last in a
//! `choices: []` chunk and only when `stream_options.include_usage` is set; the stream ends
//! with `data: [DONE]`. `prompt_tokens` includes cached tokens and `completion_tokens`
//! includes reasoning tokens.

use axum::http::StatusCode;
use bytes::Bytes;
use serde::Serialize;
use serde_json::{Value, json};

use super::content::fnv1a;
use super::dialect::{ErrorCtx, Rejection};
use super::options::MockOptions;
use super::reply::{ChatRequest, Finish, Output, Reply, Usage, text_of};
use super::sse::{Frame, data, raw};

/// OpenAI proper, or Azure OpenAI's variant of the same shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flavor {
    OpenAi,
    Azure,
}

// ---- wire types -------------------------------------------------------------------------

#[derive(Serialize)]
pub(crate) struct WireUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: PromptDetails,
    completion_tokens_details: CompletionDetails,
}

#[derive(Serialize)]
struct PromptDetails {
    cached_tokens: u64,
    audio_tokens: u64,
}

#[derive(Serialize)]
struct CompletionDetails {
    reasoning_tokens: u64,
    audio_tokens: u64,
    accepted_prediction_tokens: u64,
    rejected_prediction_tokens: u64,
}

impl From<Usage> for WireUsage {
    fn from(u: Usage) -> WireUsage {
        let completion_tokens = u.completion + u.reasoning;
        WireUsage {
            prompt_tokens: u.prompt,
            completion_tokens,
            total_tokens: u.prompt + completion_tokens,
            prompt_tokens_details: PromptDetails {
                cached_tokens: u.cached,
                audio_tokens: 0,
            },
            completion_tokens_details: CompletionDetails {
                reasoning_tokens: u.reasoning,
                audio_tokens: 0,
                accepted_prediction_tokens: 0,
                rejected_prediction_tokens: 0,
            },
        }
    }
}

/// Azure's content-filter annotations, all categories "safe".
#[derive(Serialize)]
pub(crate) struct FilterResults {
    hate: Severity,
    self_harm: Severity,
    sexual: Severity,
    violence: Severity,
}

#[derive(Serialize)]
struct Severity {
    filtered: bool,
    severity: &'static str,
}

const SAFE: Severity = Severity {
    filtered: false,
    severity: "safe",
};
pub(crate) const ALL_SAFE: FilterResults = FilterResults {
    hate: SAFE,
    self_harm: SAFE,
    sexual: SAFE,
    violence: SAFE,
};

#[derive(Serialize)]
pub(crate) struct PromptFilter {
    prompt_index: u32,
    content_filter_results: &'static FilterResults,
}

const PROMPT_FILTERS: [PromptFilter; 1] = [PromptFilter {
    prompt_index: 0,
    content_filter_results: &ALL_SAFE,
}];

#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_filter_results: Option<&'static [PromptFilter; 1]>,
    choices: [Choice<'a>; 1],
    usage: WireUsage,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_tier: Option<&'static str>,
    system_fingerprint: &'static str,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    message: Message<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_filter_results: Option<&'static FilterResults>,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: Option<String>,
    refusal: Option<()>,
    annotations: [(); 0],
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[WireToolCall<'a>; 1]>,
}

#[derive(Serialize)]
struct WireToolCall<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: WireFunction<'a>,
}

#[derive(Serialize)]
struct WireFunction<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_tier: Option<&'static str>,
    system_fingerprint: &'static str,
    choices: Vec<ChunkChoice<'a>>,
    usage: Option<WireUsage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    obfuscation: Option<String>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_filter_results: Option<&'static FilterResults>,
}

#[derive(Serialize, Default)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    /// `Some(None)` renders `"content": null`.
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[WireToolCall<'a>; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refusal: Option<Option<&'a str>>,
}

/// Azure's first stream event: prompt filter results, before any choice, with empty ids.
#[derive(Serialize)]
struct AzurePromptChunk {
    choices: [(); 0],
    created: u64,
    id: &'static str,
    model: &'static str,
    object: &'static str,
    prompt_filter_results: &'static [PromptFilter; 1],
}

// ---- rendering --------------------------------------------------------------------------

fn finish_reason(finish: Finish) -> &'static str {
    match finish {
        Finish::Stop => "stop",
        Finish::Length => "length",
        Finish::ToolCalls => "tool_calls",
        Finish::Refused => "content_filter",
    }
}

pub(crate) fn completion_id(seq: u64) -> String {
    format!("chatcmpl-mock{:020x}", fnv1a(&[&seq.to_le_bytes()]))
}

fn tool_call_id(hash: u64) -> String {
    format!("call_{hash:016x}")
}

/// The non-streaming `chat.completion` body.
pub(crate) fn render_completion(flavor: Flavor, reply: &Reply) -> Bytes {
    let id = completion_id(reply.seq);
    let (content, tool_calls) = match &reply.output {
        Output::Text(tokens) => (Some(tokens.concat()), None),
        Output::Tool(call) => (
            None,
            Some([WireToolCall {
                index: None,
                id: Some(tool_call_id(call.id_hash)),
                kind: Some("function"),
                function: WireFunction {
                    name: Some(&call.name),
                    arguments: &call.arguments,
                },
            }]),
        ),
        Output::Refused => (None, None),
    };
    let azure = flavor == Flavor::Azure;
    let body = Completion {
        id: &id,
        object: "chat.completion",
        created: reply.created,
        model: &reply.model,
        prompt_filter_results: azure.then_some(&PROMPT_FILTERS),
        choices: [Choice {
            index: 0,
            message: Message {
                role: "assistant",
                content,
                refusal: None,
                annotations: [],
                tool_calls,
            },
            logprobs: None,
            finish_reason: finish_reason(reply.finish),
            content_filter_results: azure.then_some(&ALL_SAFE),
        }],
        usage: reply.usage.into(),
        service_tier: (!azure).then_some("default"),
        system_fingerprint: "fp_mock",
    };
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// Random-looking padding OpenAI adds to content chunks (so chunk sizes do not reveal
/// token lengths); deterministic here.
fn obfuscation(seed: &str, index: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut hash = fnv1a(&[seed.as_bytes(), &index.to_le_bytes()]);
    let len = 1 + (hash % 12) as usize;
    (0..len)
        .map(|_| {
            hash = hash.rotate_left(7) ^ 0x9e37_79b9_7f4a_7c15;
            ALPHABET[(hash % ALPHABET.len() as u64) as usize] as char
        })
        .collect()
}

/// Stamps the fields every chunk of one stream repeats.
struct ChunkMaker<'a> {
    id: &'a str,
    created: u64,
    model: &'a str,
    azure: bool,
}

impl<'a> ChunkMaker<'a> {
    fn chunk<'b>(&self, delta: Delta<'b>, finish: Option<&'static str>, filters: bool) -> Chunk<'b>
    where
        'a: 'b,
    {
        Chunk {
            id: self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: self.model,
            service_tier: (!self.azure).then_some("default"),
            system_fingerprint: "fp_mock",
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                logprobs: None,
                finish_reason: finish,
                content_filter_results: (self.azure && filters).then_some(&ALL_SAFE),
            }],
            usage: None,
            obfuscation: None,
        }
    }
}

/// The SSE events of a streamed reply.
pub(crate) fn render_frames(
    flavor: Flavor,
    reply: &Reply,
    request: &ChatRequest,
    options: &MockOptions,
) -> Vec<Frame> {
    let id = completion_id(reply.seq);
    let azure = flavor == Flavor::Azure;
    let maker = ChunkMaker {
        id: &id,
        created: reply.created,
        model: &reply.model,
        azure,
    };
    let chunk = |delta, finish, filters| maker.chunk(delta, finish, filters);
    let obfuscate = !azure && request.include_obfuscation;
    let mut frames = Vec::with_capacity(reply.content_chunks() + 5);
    if azure {
        let prompt_chunk = AzurePromptChunk {
            choices: [],
            created: 0,
            id: "",
            model: "",
            object: "",
            prompt_filter_results: &PROMPT_FILTERS,
        };
        frames.push(Frame::control(data(&prompt_chunk, false)));
    }
    match &reply.output {
        Output::Text(tokens) => {
            let role = Delta {
                role: Some("assistant"),
                content: Some(Some("")),
                refusal: Some(None),
                ..Delta::default()
            };
            frames.push(Frame::control(data(&chunk(role, None, false), false)));
            for (i, token) in tokens.iter().enumerate() {
                let mut c = chunk(
                    Delta {
                        content: Some(Some(token)),
                        ..Delta::default()
                    },
                    None,
                    true,
                );
                c.obfuscation = obfuscate.then(|| obfuscation(token, i));
                frames.push(Frame::content(data(&c, false)));
            }
        }
        Output::Tool(call) => {
            let head = Delta {
                role: Some("assistant"),
                content: Some(None),
                refusal: Some(None),
                tool_calls: Some([WireToolCall {
                    index: Some(0),
                    id: Some(tool_call_id(call.id_hash)),
                    kind: Some("function"),
                    function: WireFunction {
                        name: Some(&call.name),
                        arguments: "",
                    },
                }]),
            };
            frames.push(Frame::control(data(&chunk(head, None, false), false)));
            for (i, fragment) in call.fragments.iter().enumerate() {
                let delta = Delta {
                    tool_calls: Some([WireToolCall {
                        index: Some(0),
                        id: None,
                        kind: None,
                        function: WireFunction {
                            name: None,
                            arguments: fragment,
                        },
                    }]),
                    ..Delta::default()
                };
                let mut c = chunk(delta, None, true);
                c.obfuscation = obfuscate.then(|| obfuscation(fragment, i));
                frames.push(Frame::content(data(&c, false)));
            }
        }
        Output::Refused => {
            let role = Delta {
                role: Some("assistant"),
                content: Some(Some("")),
                ..Delta::default()
            };
            frames.push(Frame::control(data(&chunk(role, None, false), false)));
        }
    }
    let send_usage = request.include_usage && !options.omit_stream_usage;
    let mut last = chunk(Delta::default(), Some(finish_reason(reply.finish)), false);
    if send_usage && options.usage_on_last_content_chunk {
        last.usage = Some(reply.usage.into());
    }
    frames.push(Frame::control(data(&last, false)));
    if send_usage && !options.usage_on_last_content_chunk {
        let mut usage = chunk(Delta::default(), None, false);
        usage.choices.clear();
        usage.usage = Some(reply.usage.into());
        frames.push(Frame::control(data(&usage, false)));
    }
    frames.push(Frame::control(raw("data: [DONE]\n\n")));
    frames
}

// ---- request ----------------------------------------------------------------------------

/// Parses a chat-completions body (OpenAI and Azure). `model` is the upstream model when
/// the path names it (Azure); otherwise the body's `model` is required.
pub(crate) fn parse_body(
    body: &Value,
    model: Option<&str>,
) -> Result<ChatRequest, (String, Option<&'static str>)> {
    let model = match model.or_else(|| body.get("model").and_then(Value::as_str)) {
        Some(m) => m.to_owned(),
        None => return Err(("you must provide a model parameter".into(), None)),
    };
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return Err((
            "Missing required parameter: 'messages'.".into(),
            Some("messages"),
        ));
    };
    if messages.is_empty() {
        return Err(("[] is too short - 'messages'".into(), Some("messages")));
    }
    let mut request = ChatRequest {
        model,
        messages: messages.len(),
        ..ChatRequest::default()
    };
    for message in messages {
        let (text, bytes) = message.get("content").map(text_of).unwrap_or_default();
        request.text_bytes += bytes;
        if message.get("role").and_then(Value::as_str) == Some("user") {
            request.prompt = text;
        }
    }
    request.stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    request.max_tokens = body
        .get("max_completion_tokens")
        .or_else(|| body.get("max_tokens"))
        .and_then(Value::as_u64);
    let stream_options = body.get("stream_options");
    let flag = |name: &str| {
        stream_options
            .and_then(|o| o.get(name))
            .and_then(Value::as_bool)
    };
    request.include_usage = flag("include_usage").unwrap_or(false);
    request.include_obfuscation = flag("include_obfuscation").unwrap_or(true);
    request.tool = forced_tool(body)?;
    Ok(request)
}

/// The tool a request forces: `tool_choice: "required"` (first tool) or a named function.
fn forced_tool(body: &Value) -> Result<Option<String>, (String, Option<&'static str>)> {
    let choice = body.get("tool_choice");
    let tools = body.get("tools").and_then(Value::as_array);
    let first = || {
        tools
            .and_then(|t| t.first())
            .and_then(|t| t.pointer("/function/name"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let forced = match choice {
        Some(Value::String(mode)) if mode == "required" => first(),
        Some(Value::Object(_)) => choice
            .and_then(|c| c.pointer("/function/name"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        _ => return Ok(None),
    };
    match (forced, tools.is_some_and(|t| !t.is_empty())) {
        (Some(name), true) => Ok(Some(name)),
        _ => Err((
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified."
                .into(),
            Some("tool_choice"),
        )),
    }
}

// ---- errors -----------------------------------------------------------------------------

pub(crate) fn error_body(
    message: &str,
    kind: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Value {
    json!({ "error": { "message": message, "type": kind, "param": param, "code": code } })
}

pub(crate) fn invalid_request(message: &str, param: Option<&str>) -> Rejection {
    Rejection::json(
        StatusCode::BAD_REQUEST,
        &error_body(message, "invalid_request_error", param, None),
    )
}

pub(crate) fn context_length_error(ctx: &ErrorCtx<'_>) -> Rejection {
    let message = format!(
        "This model's maximum context length is 128000 tokens. However, your messages resulted in {} tokens. Please reduce the length of the messages.",
        128_000 + ctx.prompt_tokens
    );
    let body = error_body(
        &message,
        "invalid_request_error",
        Some("messages"),
        Some("context_length_exceeded"),
    );
    Rejection::json(StatusCode::BAD_REQUEST, &body)
}

pub(crate) fn quota_error() -> Rejection {
    let message = "You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.";
    let body = error_body(
        message,
        "insufficient_quota",
        None,
        Some("insufficient_quota"),
    );
    Rejection::json(StatusCode::TOO_MANY_REQUESTS, &body)
}

pub(crate) const STREAM_ERROR: &str = "data: {\"error\":{\"message\":\"The server had an error while processing your request. Sorry about that!\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n";

pub(crate) const MALFORMED: &str = "data: {\"id\":\"chatcmpl-mock\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"delta\":{\"content\":\n\n";
