//! Anthropic Messages (`POST /v1/messages`).
//!
//! Reproduced as the official SDK's recorded streams show it (see the fixtures under
//! `tests/fixtures/anthropic/`): named SSE events, a `ping` after the first block start,
//! usage split between `message_start` (input and cache counts, `output_tokens: 1`) and
//! a cumulative `message_delta`, no `[DONE]`. `input_tokens` excludes cache reads and
//! writes, unlike OpenAI's `prompt_tokens`; `output_tokens` includes thinking, which
//! `output_tokens_details.thinking_tokens` names. A refusal is a 200 with
//! `stop_reason: "refusal"` and `stop_details` (in `message_delta` when streaming), and
//! reports the output tokens it was billed for. The API insists on `anthropic-version`
//! and `max_tokens`, so the mock does too.

use axum::http::StatusCode;
use bytes::Bytes;
use serde::Serialize;
use serde_json::{Value, json};

use super::content::fnv1a;
use super::dialect::{Dialect, ErrorCtx, Incoming, Rejection};
use super::faults::{Fault, retry_headers, rfc3339};
use super::options::MockOptions;
use super::quota::QuotaState;
use super::record::WireFormat;
use super::reply::{ChatRequest, Finish, Output, Reply, Usage, text_of};
use super::sse::{Frame, event, raw};

// ---- wire types -------------------------------------------------------------------------

#[derive(Serialize)]
struct WireUsage {
    input_tokens: u64,
    cache_creation_input_tokens: u64,
    cache_read_input_tokens: u64,
    output_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_tokens_details: Option<OutputDetails>,
    service_tier: &'static str,
}

#[derive(Clone, Copy, Serialize)]
struct OutputDetails {
    thinking_tokens: u64,
}

/// `message_start` usage: the input, and one output token so far.
fn start_usage(u: Usage) -> WireUsage {
    WireUsage {
        input_tokens: u.prompt.saturating_sub(u.cached + u.cache_write),
        cache_creation_input_tokens: u.cache_write,
        cache_read_input_tokens: u.cached,
        output_tokens: 1,
        output_tokens_details: None,
        service_tier: "standard",
    }
}

/// The whole answer's usage: thinking is inside `output_tokens`.
fn final_usage(u: Usage) -> WireUsage {
    let output = output_usage(u);
    WireUsage {
        output_tokens: output.output_tokens,
        output_tokens_details: output.output_tokens_details,
        ..start_usage(u)
    }
}

fn output_usage(u: Usage) -> OutputUsage {
    OutputUsage {
        output_tokens: u.completion + u.reasoning,
        output_tokens_details: (u.reasoning > 0).then_some(OutputDetails {
            thinking_tokens: u.reasoning,
        }),
    }
}

#[derive(Serialize)]
struct Message<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<Block<'a>>,
    stop_reason: Option<&'static str>,
    stop_sequence: Option<()>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_details: Option<Value>,
    usage: WireUsage,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block<'a> {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: &'a str,
        caller: Caller,
        input: Input<'a>,
    },
}

#[derive(Serialize)]
struct Caller {
    #[serde(rename = "type")]
    kind: &'static str,
}

/// Tool input: `{"query": <prompt>}` when complete, `{}` in a stream's block start.
#[derive(Serialize)]
struct Input<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    query: Option<&'a str>,
}

#[derive(Serialize)]
struct MessageStart<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: Message<'a>,
}

#[derive(Serialize)]
struct BlockStart<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    index: u32,
    content_block: Block<'a>,
}

#[derive(Serialize)]
struct BlockDelta<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    index: u32,
    delta: DeltaBody<'a>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum DeltaBody<'a> {
    TextDelta { text: &'a str },
    InputJsonDelta { partial_json: &'a str },
}

#[derive(Serialize)]
struct MessageDelta {
    #[serde(rename = "type")]
    kind: &'static str,
    delta: StopDelta,
    usage: OutputUsage,
}

#[derive(Serialize)]
struct StopDelta {
    stop_reason: &'static str,
    stop_sequence: Option<()>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_details: Option<Value>,
}

#[derive(Serialize)]
struct OutputUsage {
    output_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_tokens_details: Option<OutputDetails>,
}

// ---- rendering --------------------------------------------------------------------------

fn stop_reason(finish: Finish) -> &'static str {
    match finish {
        Finish::Stop => "end_turn",
        Finish::Length => "max_tokens",
        Finish::ToolCalls => "tool_use",
        Finish::Refused => "refusal",
    }
}

/// What the API says about why it refused, as its streaming-refusals page shows it.
fn stop_details(finish: Finish) -> Option<Value> {
    (finish == Finish::Refused).then(|| {
        json!({
            "type": "refusal",
            "category": "cyber",
            "explanation": "This request was declined because it could enable cyber harm."
        })
    })
}

fn message_id(seq: u64) -> String {
    format!("msg_mock{:020x}", fnv1a(&[&seq.to_le_bytes()]))
}

fn tool_use<'a>(hash: u64, name: &'a str, query: Option<&'a str>) -> Block<'a> {
    Block::ToolUse {
        id: format!("toolu_mock{hash:016x}"),
        name,
        caller: Caller { kind: "direct" },
        input: Input { query },
    }
}

/// The whole message (`done`), or the empty one `message_start` carries.
fn message<'a>(id: &'a str, reply: &'a Reply, content: Vec<Block<'a>>, done: bool) -> Message<'a> {
    Message {
        id,
        kind: "message",
        role: "assistant",
        model: &reply.model,
        content,
        stop_reason: done.then(|| stop_reason(reply.finish)),
        stop_sequence: None,
        stop_details: done.then(|| stop_details(reply.finish)).flatten(),
        usage: if done {
            final_usage(reply.usage)
        } else {
            start_usage(reply.usage)
        },
    }
}

const PING: &str = "event: ping\ndata: {\"type\": \"ping\"}\n\n";

fn block_stop(index: u32) -> Bytes {
    event(
        "content_block_stop",
        &json!({ "type": "content_block_stop", "index": index }),
    )
}

fn delta(body: DeltaBody<'_>) -> Bytes {
    event(
        "content_block_delta",
        &BlockDelta {
            kind: "content_block_delta",
            index: 0,
            delta: body,
        },
    )
}

fn frames(reply: &Reply) -> Vec<Frame> {
    let id = message_id(reply.seq);
    let start = MessageStart {
        kind: "message_start",
        message: message(&id, reply, Vec::new(), false),
    };
    let mut frames = Vec::with_capacity(reply.content_chunks() + 8);
    frames.push(Frame::control(event("message_start", &start)));
    let block = match &reply.output {
        Output::Text(_) => Some(Block::Text {
            text: String::new(),
        }),
        Output::Tool(call) => Some(tool_use(call.id_hash, &call.name, None)),
        Output::Refused => None,
    };
    if let Some(block) = block {
        let start = BlockStart {
            kind: "content_block_start",
            index: 0,
            content_block: block,
        };
        frames.push(Frame::control(event("content_block_start", &start)));
    }
    frames.push(Frame::control(raw(PING)));
    match &reply.output {
        Output::Text(tokens) => {
            frames.extend(
                tokens
                    .iter()
                    .map(|t| Frame::content(delta(DeltaBody::TextDelta { text: t }))),
            );
            frames.push(Frame::control(block_stop(0)));
        }
        Output::Tool(call) => {
            frames.push(Frame::control(delta(DeltaBody::InputJsonDelta {
                partial_json: "",
            })));
            frames.extend(
                call.fragments
                    .iter()
                    .map(|f| Frame::content(delta(DeltaBody::InputJsonDelta { partial_json: f }))),
            );
            frames.push(Frame::control(block_stop(0)));
        }
        Output::Refused => {}
    }
    let end = MessageDelta {
        kind: "message_delta",
        delta: StopDelta {
            stop_reason: stop_reason(reply.finish),
            stop_sequence: None,
            stop_details: stop_details(reply.finish),
        },
        usage: output_usage(reply.usage),
    };
    frames.push(Frame::control(event("message_delta", &end)));
    frames.push(Frame::control(event(
        "message_stop",
        &json!({ "type": "message_stop" }),
    )));
    frames
}

// ---- request ----------------------------------------------------------------------------

fn parse_body(body: &Value) -> Result<ChatRequest, String> {
    let Some(model) = body.get("model").and_then(Value::as_str) else {
        return Err("model: Field required".into());
    };
    let Some(max_tokens) = body.get("max_tokens").and_then(Value::as_u64) else {
        return Err("max_tokens: Field required".into());
    };
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return Err("messages: Field required".into());
    };
    let mut request = ChatRequest {
        model: model.to_owned(),
        max_tokens: Some(max_tokens),
        messages: messages.len(),
        stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
        ..ChatRequest::default()
    };
    if let Some(system) = body.get("system") {
        request.text_bytes += text_of(system).1;
        request.messages += 1;
    }
    for message in messages {
        let (text, bytes) = message.get("content").map(text_of).unwrap_or_default();
        request.text_bytes += bytes;
        if message.get("role").and_then(Value::as_str) == Some("user") {
            request.prompt = text;
        }
    }
    let tools = body.get("tools").and_then(Value::as_array);
    let choice = body.get("tool_choice");
    request.tool = match choice.and_then(|c| c.get("type")).and_then(Value::as_str) {
        Some("any") => tools
            .and_then(|t| t.first())
            .and_then(|t| t.get("name"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        Some("tool") => choice
            .and_then(|c| c.get("name"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        _ => None,
    };
    if request.tool.is_some() && tools.is_none_or(Vec::is_empty) {
        return Err("tool_choice: tool_choice may only be specified while providing tools.".into());
    }
    Ok(request)
}

// ---- errors -----------------------------------------------------------------------------

fn error(status: StatusCode, kind: &str, message: &str, request_id: &str) -> Rejection {
    let body = json!({
        "type": "error",
        "error": { "type": kind, "message": message },
        "request_id": request_id,
    });
    Rejection::json(status, &body)
}

/// Anthropic Messages.
#[derive(Debug)]
pub(crate) struct Anthropic;

impl Dialect for Anthropic {
    fn format(&self) -> WireFormat {
        WireFormat::Anthropic
    }

    fn parse(&self, incoming: &Incoming<'_>) -> Result<ChatRequest, Rejection> {
        let id = incoming.request_id;
        match incoming.key(self.format()) {
            None => {
                let message = "x-api-key header is required";
                return Err(error(
                    StatusCode::UNAUTHORIZED,
                    "authentication_error",
                    message,
                    id,
                ));
            }
            Some(key) if !incoming.accepts(key) => {
                return Err(self.error(&Fault::Unauthorized, &incoming.error_ctx()));
            }
            Some(_) => {}
        }
        if incoming.header("anthropic-version").is_none() {
            let message = "anthropic-version: header is required";
            return Err(error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                message,
                id,
            ));
        }
        let Some(body) = incoming.body else {
            let message = "There was an error parsing the body of your request.";
            return Err(error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                message,
                id,
            ));
        };
        parse_body(body)
            .map_err(|m| error(StatusCode::BAD_REQUEST, "invalid_request_error", &m, id))
    }

    fn error(&self, fault: &Fault, ctx: &ErrorCtx<'_>) -> Rejection {
        let id = ctx.request_id;
        match fault {
            Fault::RateLimited(hint) => error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "This request would exceed the rate limit for your organization of 4,000 requests per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits. You can see the response headers for current usage. Please reduce the number of requests or try again later.",
                id,
            )
            .with_headers(retry_headers(hint)),
            // The errors page lists billing_error under HTTP 402.
            Fault::QuotaExhausted => error(
                StatusCode::PAYMENT_REQUIRED,
                "billing_error",
                "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.",
                id,
            ),
            Fault::ServiceUnavailable => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "api_error",
                "Service temporarily unavailable",
                id,
            ),
            Fault::Overloaded | Fault::InStreamError { .. } => {
                let status = StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                error(status, "overloaded_error", "Overloaded", id)
            }
            Fault::BadRequest => error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "messages.0.content: the mock provider was told to reject this request",
                id,
            ),
            Fault::ContextWindowExceeded => {
                let message = format!("prompt is too long: {} tokens > 200000 maximum", 200_000 + ctx.prompt_tokens);
                error(StatusCode::BAD_REQUEST, "invalid_request_error", &message, id)
            }
            Fault::Unauthorized => error(StatusCode::UNAUTHORIZED, "authentication_error", "invalid x-api-key", id),
            Fault::NotFound => {
                error(StatusCode::NOT_FOUND, "not_found_error", &format!("model: {}", ctx.model), id)
            }
            _ => error(StatusCode::INTERNAL_SERVER_ERROR, "api_error", "Internal server error", id),
        }
    }

    fn filters_in_band(&self) -> bool {
        true
    }

    fn render(&self, reply: &Reply, request: &ChatRequest) -> Bytes {
        let id = message_id(reply.seq);
        let content = match &reply.output {
            Output::Text(tokens) => vec![Block::Text {
                text: tokens.concat(),
            }],
            Output::Tool(call) => vec![tool_use(call.id_hash, &call.name, Some(&request.prompt))],
            Output::Refused => Vec::new(),
        };
        let body = message(&id, reply, content, true);
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
    }

    fn frames(&self, reply: &Reply, _request: &ChatRequest, _options: &MockOptions) -> Vec<Frame> {
        frames(reply)
    }

    fn stream_error(&self) -> Bytes {
        raw(
            "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
        )
    }

    fn stream_error_status(&self) -> Fault {
        Fault::Overloaded
    }

    fn malformed(&self) -> Bytes {
        raw(
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\n\n",
        )
    }

    /// The reset is the instant the window ends, to the second (rounded up).
    fn quota_headers(&self, quota: &QuotaState) -> Vec<(&'static str, String)> {
        let secs = u64::try_from(quota.resets_in.as_millis().div_ceil(1000)).unwrap_or(0);
        vec![
            (
                "anthropic-ratelimit-requests-limit",
                quota.limit.to_string(),
            ),
            (
                "anthropic-ratelimit-requests-remaining",
                quota.remaining.to_string(),
            ),
            ("anthropic-ratelimit-requests-reset", rfc3339(secs)),
        ]
    }

    fn headers(&self, request_id: &str, rate_limited: bool) -> Vec<(&'static str, String)> {
        let remaining = |limit: u64| if rate_limited { 0 } else { limit - 1 }.to_string();
        vec![
            ("request-id", request_id.to_owned()),
            ("anthropic-ratelimit-requests-limit", "4000".to_owned()),
            ("anthropic-ratelimit-requests-remaining", remaining(4000)),
            ("anthropic-ratelimit-tokens-limit", "2000000".to_owned()),
            ("anthropic-ratelimit-tokens-remaining", remaining(2_000_000)),
            (
                "anthropic-ratelimit-input-tokens-limit",
                "1600000".to_owned(),
            ),
            (
                "anthropic-ratelimit-input-tokens-remaining",
                remaining(1_600_000),
            ),
            (
                "anthropic-ratelimit-output-tokens-limit",
                "400000".to_owned(),
            ),
            (
                "anthropic-ratelimit-output-tokens-remaining",
                remaining(400_000),
            ),
        ]
    }
}
