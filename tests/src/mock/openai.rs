//! OpenAI Chat Completions (`POST /v1/chat/completions`), also what OpenAI-compatible
//! servers speak: bearer auth, OpenAI's error codes and `x-ratelimit-*` headers. The
//! shapes themselves (and the OpenAI-only `obfuscation` padding) live in [`super::chat`],
//! shared with Azure.

use axum::http::StatusCode;
use bytes::Bytes;

use super::chat::{
    Flavor, MALFORMED, STREAM_ERROR, context_length_error, error_body, invalid_request, parse_body,
    quota_error, render_completion, render_frames,
};
use super::dialect::{Dialect, ErrorCtx, Incoming, Rejection, openai_rate_headers};
use super::faults::{Fault, retry_headers};
use super::options::MockOptions;
use super::quota::{QuotaState, go_duration};
use super::record::WireFormat;
use super::reply::{ChatRequest, Reply};
use super::sse::{Frame, raw};

/// OpenAI proper.
#[derive(Debug)]
pub(crate) struct OpenAi;

impl Dialect for OpenAi {
    fn format(&self) -> WireFormat {
        WireFormat::OpenAi
    }

    fn parse(&self, incoming: &Incoming<'_>) -> Result<ChatRequest, Rejection> {
        match incoming.key(self.format()) {
            None => {
                let message = "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank username) if you're accessing the API from your browser and are prompted for a username. You can obtain an API key from https://platform.openai.com/account/api-keys.";
                let body = error_body(message, "invalid_request_error", None, None);
                return Err(Rejection::json(StatusCode::UNAUTHORIZED, &body));
            }
            Some(key) if !incoming.accepts(key) => {
                // What OpenAI really says: it quotes the key it got, partly masked.
                let message = format!(
                    "Incorrect API key provided: {}. You can find your API key at https://platform.openai.com/account/api-keys.",
                    masked(key)
                );
                let body = error_body(
                    &message,
                    "invalid_request_error",
                    None,
                    Some("invalid_api_key"),
                );
                return Err(Rejection::json(StatusCode::UNAUTHORIZED, &body));
            }
            Some(_) => {}
        }
        let Some(body) = incoming.body else {
            return Err(invalid_request(
                "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)",
                None,
            ));
        };
        parse_body(body, None).map_err(|(message, param)| invalid_request(&message, param))
    }

    fn error(&self, fault: &Fault, ctx: &ErrorCtx<'_>) -> Rejection {
        let (status, body) = match fault {
            Fault::RateLimited(hint) => {
                let message = format!(
                    "Rate limit reached for {} in organization org-mock on requests per min (RPM): Limit 10000, Used 10000, Requested 1. Please try again in 6ms. Visit https://platform.openai.com/account/rate-limits to learn more.",
                    ctx.model
                );
                let body = error_body(&message, "requests", None, Some("rate_limit_exceeded"));
                return Rejection::json(StatusCode::TOO_MANY_REQUESTS, &body)
                    .with_headers(retry_headers(hint));
            }
            Fault::QuotaExhausted => return quota_error(),
            Fault::ContextWindowExceeded => return context_length_error(ctx),
            Fault::ServiceUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                error_body(
                    "The server is overloaded or not ready yet.",
                    "server_error",
                    None,
                    None,
                ),
            ),
            Fault::Overloaded => (
                StatusCode::SERVICE_UNAVAILABLE,
                error_body(
                    "The engine is currently overloaded, please try again later.",
                    "server_error",
                    None,
                    None,
                ),
            ),
            Fault::BadRequest => (
                StatusCode::BAD_REQUEST,
                error_body(
                    "Invalid 'messages[0]': the mock provider was told to reject this request.",
                    "invalid_request_error",
                    Some("messages"),
                    None,
                ),
            ),
            Fault::ContentFiltered => (
                StatusCode::BAD_REQUEST,
                error_body(
                    "Your request was rejected as a result of our safety system. Your prompt may contain text that is not allowed by our safety system.",
                    "invalid_request_error",
                    Some("prompt"),
                    Some("content_filter"),
                ),
            ),
            Fault::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                error_body(
                    "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
                    "invalid_request_error",
                    None,
                    Some("invalid_api_key"),
                ),
            ),
            Fault::NotFound => (
                StatusCode::NOT_FOUND,
                error_body(
                    &format!(
                        "The model `{}` does not exist or you do not have access to it.",
                        ctx.model
                    ),
                    "invalid_request_error",
                    None,
                    Some("model_not_found"),
                ),
            ),
            _ => (
                StatusCode::INTERNAL_SERVER_ERROR,
                error_body(
                    "The server had an error while processing your request. Sorry about that!",
                    "server_error",
                    None,
                    None,
                ),
            ),
        };
        Rejection::json(status, &body)
    }

    fn render(&self, reply: &Reply, _request: &ChatRequest) -> Bytes {
        render_completion(Flavor::OpenAi, reply)
    }

    fn frames(&self, reply: &Reply, request: &ChatRequest, options: &MockOptions) -> Vec<Frame> {
        render_frames(Flavor::OpenAi, reply, request, options)
    }

    fn stream_error(&self) -> Bytes {
        raw(STREAM_ERROR)
    }

    fn stream_error_status(&self) -> Fault {
        Fault::ServerError
    }

    fn malformed(&self) -> Bytes {
        raw(MALFORMED)
    }

    fn quota_headers(&self, quota: &QuotaState) -> Vec<(&'static str, String)> {
        vec![
            ("x-ratelimit-limit-requests", quota.limit.to_string()),
            (
                "x-ratelimit-remaining-requests",
                quota.remaining.to_string(),
            ),
            ("x-ratelimit-reset-requests", go_duration(quota.resets_in)),
        ]
    }

    fn headers(&self, request_id: &str, rate_limited: bool) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            ("x-request-id", request_id.to_owned()),
            ("openai-processing-ms", "1".to_owned()),
        ];
        headers.extend(openai_rate_headers(rate_limited));
        headers
    }
}

/// `sk-abc***wxyz`: the first 6 and last 4 characters, as OpenAI masks a key it quotes.
fn masked(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 10 {
        return "***".to_owned();
    }
    let head: String = chars[..6].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}***{tail}")
}
