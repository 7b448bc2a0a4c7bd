//! Google Gemini (`POST /v1beta/models/{model}:generateContent` and
//! `:streamGenerateContent?alt=sse`).
//!
//! Gemini differs from the OpenAI family in ways adapters must handle: the model and the
//! streaming switch live in the path, SSE lines end in CRLF and carry whole
//! `GenerateContentResponse`s with no terminator, usage arrives as `usageMetadata` on the
//! last event, errors are `google.rpc.Status` objects whose retry delay sits in a
//! `RetryInfo` detail, and a wrong key is a 400 `API_KEY_INVALID` (a missing one a 403),
//! not a 401. The mock also refuses keys in the URL (`?key=`), which the real API accepts:
//! the gateway must never put a key where access logs keep it.

use axum::http::StatusCode;
use bytes::Bytes;
use serde::Serialize;
use serde_json::{Value, json};

use super::content::fnv1a;
use super::dialect::{Dialect, ErrorCtx, Incoming, Rejection};
use super::faults::{Fault, RetryHint, retry_headers};
use super::options::MockOptions;
use super::record::WireFormat;
use super::reply::{ChatRequest, Finish, Output, Reply, Usage, text_of};
use super::sse::{Frame, data, raw};

pub(crate) const GENERATE: &str = "generateContent";
pub(crate) const STREAM: &str = "streamGenerateContent";

// ---- wire types -------------------------------------------------------------------------

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Response<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    candidates: Option<[Candidate<'a>; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_feedback: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage_metadata: Option<UsageMetadata>,
    model_version: &'a str,
    response_id: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Candidate<'a> {
    content: Content<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finish_reason: Option<&'static str>,
    index: u32,
}

#[derive(Serialize)]
struct Content<'a> {
    parts: [Part<'a>; 1],
    role: &'static str,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Part<'a> {
    Text {
        text: &'a str,
    },
    Call {
        #[serde(rename = "functionCall")]
        function_call: FunctionCall<'a>,
    },
}

#[derive(Serialize)]
struct FunctionCall<'a> {
    name: &'a str,
    args: Args<'a>,
}

#[derive(Serialize)]
struct Args<'a> {
    query: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    prompt_token_count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    candidates_token_count: Option<u64>,
    total_token_count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    cached_content_token_count: Option<u64>,
    prompt_tokens_details: [Modality; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    thoughts_token_count: Option<u64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Modality {
    modality: &'static str,
    token_count: u64,
}

fn usage_metadata(u: Usage, blocked: bool) -> UsageMetadata {
    let candidates = if blocked { 0 } else { u.completion };
    let thoughts = if blocked { 0 } else { u.reasoning };
    UsageMetadata {
        prompt_token_count: u.prompt,
        candidates_token_count: (!blocked).then_some(candidates),
        total_token_count: u.prompt + candidates + thoughts,
        cached_content_token_count: (u.cached > 0).then_some(u.cached),
        prompt_tokens_details: [Modality {
            modality: "TEXT",
            token_count: u.prompt,
        }],
        thoughts_token_count: (thoughts > 0).then_some(thoughts),
    }
}

// ---- rendering --------------------------------------------------------------------------

fn finish_reason(finish: Finish) -> &'static str {
    match finish {
        Finish::Stop | Finish::ToolCalls => "STOP",
        Finish::Length => "MAX_TOKENS",
        Finish::Refused => "SAFETY",
    }
}

fn response_id(seq: u64) -> String {
    format!("mock{:020x}", fnv1a(&[&seq.to_le_bytes(), b"gemini"]))
}

fn blocked_feedback() -> Value {
    json!({
        "blockReason": "SAFETY",
        "safetyRatings": [
            { "category": "HARM_CATEGORY_SEXUALLY_EXPLICIT", "probability": "NEGLIGIBLE" },
            { "category": "HARM_CATEGORY_HATE_SPEECH", "probability": "HIGH", "blocked": true },
            { "category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE" },
            { "category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "NEGLIGIBLE" }
        ]
    })
}

/// One `GenerateContentResponse`: a candidate with `part`, or the blocked-prompt shape.
fn response<'a>(reply: &'a Reply, id: &'a str, part: Option<Part<'a>>, last: bool) -> Response<'a> {
    let blocked = matches!(reply.output, Output::Refused);
    Response {
        candidates: part.map(|part| {
            [Candidate {
                content: Content {
                    parts: [part],
                    role: "model",
                },
                finish_reason: last.then(|| finish_reason(reply.finish)),
                index: 0,
            }]
        }),
        prompt_feedback: blocked.then(blocked_feedback),
        usage_metadata: last.then(|| usage_metadata(reply.usage, blocked)),
        model_version: &reply.model,
        response_id: id,
    }
}

fn frames(reply: &Reply, request: &ChatRequest) -> Vec<Frame> {
    let id = response_id(reply.seq);
    match &reply.output {
        Output::Text(tokens) if tokens.is_empty() => {
            vec![Frame::content(data(
                &response(reply, &id, Some(Part::Text { text: "" }), true),
                true,
            ))]
        }
        Output::Text(tokens) => tokens
            .iter()
            .enumerate()
            .map(|(i, token)| {
                let last = i + 1 == tokens.len();
                Frame::content(data(
                    &response(reply, &id, Some(Part::Text { text: token }), last),
                    true,
                ))
            })
            .collect(),
        Output::Tool(call) => {
            let part = Part::Call {
                function_call: FunctionCall {
                    name: &call.name,
                    args: Args {
                        query: &request.prompt,
                    },
                },
            };
            vec![Frame::content(data(
                &response(reply, &id, Some(part), true),
                true,
            ))]
        }
        Output::Refused => vec![Frame::control(data(
            &response(reply, &id, None, true),
            true,
        ))],
    }
}

// ---- request ----------------------------------------------------------------------------

fn parse_body(body: &Value, model: &str) -> Result<ChatRequest, String> {
    let Some(contents) = body.get("contents").and_then(Value::as_array) else {
        return Err("* GenerateContentRequest.contents: contents is not specified\n".into());
    };
    let mut request = ChatRequest {
        model: model.to_owned(),
        messages: contents.len(),
        ..ChatRequest::default()
    };
    if let Some(parts) = body.pointer("/systemInstruction/parts") {
        request.text_bytes += text_of(parts).1;
        request.messages += 1;
    }
    for content in contents {
        let (text, bytes) = content.get("parts").map(text_of).unwrap_or_default();
        request.text_bytes += bytes;
        // A turn without a role is a user turn.
        if content
            .get("role")
            .and_then(Value::as_str)
            .is_none_or(|r| r == "user")
        {
            request.prompt = text;
        }
    }
    request.max_tokens = body
        .pointer("/generationConfig/maxOutputTokens")
        .and_then(Value::as_u64);
    let calling = body.pointer("/toolConfig/functionCallingConfig");
    if calling.and_then(|c| c.get("mode")).and_then(Value::as_str) == Some("ANY") {
        let allowed = calling
            .and_then(|c| c.pointer("/allowedFunctionNames/0"))
            .and_then(Value::as_str);
        let first = body
            .pointer("/tools/0/functionDeclarations/0/name")
            .and_then(Value::as_str);
        match allowed.or(first) {
            Some(name) => request.tool = Some(name.to_owned()),
            None => return Err("Function calling mode ANY requires function declarations.".into()),
        }
    }
    Ok(request)
}

// ---- errors -----------------------------------------------------------------------------

fn status_error(code: u16, status: &str, message: &str, details: Option<Value>) -> Rejection {
    let mut error = json!({ "code": code, "message": message, "status": status });
    if let Some(details) = details {
        error["details"] = details;
    }
    let http = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    Rejection::json(http, &json!({ "error": error }))
}

fn invalid(message: &str) -> Rejection {
    status_error(400, "INVALID_ARGUMENT", message, None)
}

fn quota_failure(model: &str, quota_id: &str, value: &str) -> Value {
    json!({
        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
        "violations": [{
            "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
            "quotaId": quota_id,
            "quotaDimensions": { "location": "global", "model": model },
            "quotaValue": value
        }]
    })
}

const HELP: &str = "https://ai.google.dev/gemini-api/docs/rate-limits";

/// Google Gemini.
#[derive(Debug)]
pub(crate) struct Gemini;

impl Dialect for Gemini {
    fn format(&self) -> WireFormat {
        WireFormat::Gemini
    }

    fn parse(&self, incoming: &Incoming<'_>) -> Result<ChatRequest, Rejection> {
        if incoming.query_param("key").is_some() {
            return Err(invalid(
                "API keys must not be sent in the URL (?key=): URLs end up in access logs. Send the key in the x-goog-api-key header. (llmq mock provider policy)",
            ));
        }
        let model = incoming.path_model.unwrap_or_default();
        match incoming.method {
            Some(GENERATE) => {}
            Some(STREAM) if incoming.query_param("alt") == Some("sse") => {}
            Some(STREAM) => {
                return Err(invalid(
                    "The mock provider implements streamGenerateContent only with alt=sse (the JSON-array stream is not supported).",
                ));
            }
            _ => {
                return Err(self.error(
                    &Fault::NotFound,
                    &ErrorCtx {
                        model,
                        ..incoming.error_ctx()
                    },
                ));
            }
        }
        match incoming.key(self.format()) {
            None => {
                return Err(status_error(
                    403,
                    "PERMISSION_DENIED",
                    "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
                    None,
                ));
            }
            Some(key) if !incoming.accepts(key) => {
                return Err(self.error(&Fault::Unauthorized, &incoming.error_ctx()));
            }
            Some(_) => {}
        }
        let Some(body) = incoming.body else {
            return Err(invalid("Invalid JSON payload received. Unexpected token."));
        };
        let mut request = parse_body(body, model).map_err(|m| invalid(&m))?;
        request.stream = incoming.method == Some(STREAM);
        Ok(request)
    }

    fn error(&self, fault: &Fault, ctx: &ErrorCtx<'_>) -> Rejection {
        match fault {
            Fault::RateLimited(hint) => {
                let mut details = vec![
                    quota_failure(
                        ctx.model,
                        "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                        "10",
                    ),
                    json!({ "@type": "type.googleapis.com/google.rpc.Help", "links": [{ "description": "Learn more about Gemini API quotas", "url": HELP }] }),
                ];
                if let RetryHint::GeminiRetryDelay(delay) = hint {
                    details.push(json!({ "@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay }));
                }
                let message = format!(
                    "You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: {HELP}."
                );
                status_error(
                    429,
                    "RESOURCE_EXHAUSTED",
                    &message,
                    Some(Value::Array(details)),
                )
                .with_headers(retry_headers(hint))
            }
            Fault::QuotaExhausted => {
                let details = json!([quota_failure(
                    ctx.model,
                    "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
                    "250"
                )]);
                let message = format!(
                    "You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: {HELP}."
                );
                status_error(429, "RESOURCE_EXHAUSTED", &message, Some(details))
            }
            Fault::ServiceUnavailable => status_error(
                503,
                "UNAVAILABLE",
                "The service is currently unavailable.",
                None,
            ),
            Fault::Overloaded | Fault::InStreamError { .. } => status_error(
                503,
                "UNAVAILABLE",
                "The model is overloaded. Please try again later.",
                None,
            ),
            Fault::BadRequest => invalid("Request contains an invalid argument."),
            Fault::ContextWindowExceeded => invalid(&format!(
                "The input token count ({}) exceeds the maximum number of tokens allowed (1048576).",
                1_048_576 + ctx.prompt_tokens
            )),
            Fault::Unauthorized => status_error(
                400,
                "INVALID_ARGUMENT",
                "API key not valid. Please pass a valid API key.",
                Some(json!([
                    { "@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com", "metadata": { "service": "generativelanguage.googleapis.com" } },
                    { "@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US", "message": "API key not valid. Please pass a valid API key." }
                ])),
            ),
            Fault::NotFound => status_error(
                404,
                "NOT_FOUND",
                &format!(
                    "models/{} is not found for API version v1beta, or is not supported for generateContent. Call ListModels to see the list of available models and their supported methods.",
                    ctx.model
                ),
                None,
            ),
            _ => status_error(
                500,
                "INTERNAL",
                "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
                None,
            ),
        }
    }

    fn filters_in_band(&self) -> bool {
        true
    }

    fn render(&self, reply: &Reply, request: &ChatRequest) -> Bytes {
        let id = response_id(reply.seq);
        let text;
        let part = match &reply.output {
            Output::Text(tokens) => {
                text = tokens.concat();
                Some(Part::Text { text: &text })
            }
            Output::Tool(call) => Some(Part::Call {
                function_call: FunctionCall {
                    name: &call.name,
                    args: Args {
                        query: &request.prompt,
                    },
                },
            }),
            Output::Refused => None,
        };
        Bytes::from(serde_json::to_vec(&response(reply, &id, part, true)).unwrap_or_default())
    }

    fn frames(&self, reply: &Reply, request: &ChatRequest, _options: &MockOptions) -> Vec<Frame> {
        frames(reply, request)
    }

    fn stream_error(&self) -> Bytes {
        raw(
            "data: {\"error\":{\"code\":503,\"message\":\"The model is overloaded. Please try again later.\",\"status\":\"UNAVAILABLE\"}}\r\n\r\n",
        )
    }

    fn stream_error_status(&self) -> Fault {
        Fault::Overloaded
    }

    fn malformed(&self) -> Bytes {
        raw("data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\r\n\r\n")
    }

    fn headers(&self, request_id: &str, _rate_limited: bool) -> Vec<(&'static str, String)> {
        vec![("x-request-id", request_id.to_owned())]
    }

    fn stream_content_type(&self) -> &'static str {
        "text/event-stream"
    }
}
