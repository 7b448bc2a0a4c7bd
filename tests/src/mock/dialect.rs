//! The contract between the server and a wire format.
//!
//! The server owns everything that is the same for every provider (routing, timing, fault
//! selection, accounting); a [`Dialect`] owns everything that is not (auth header, request
//! shape, JSON/SSE rendering, error bodies, headers). Adding a provider is one new file.

use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use serde_json::Value;

use super::content::fnv1a;
use super::faults::Fault;
use super::options::MockOptions;
use super::quota::QuotaState;
use super::record::WireFormat;
use super::reply::{ChatRequest, Reply};
use super::sse::Frame;

/// The parts of an HTTP request a dialect may look at.
#[derive(Debug)]
pub(crate) struct Incoming<'a> {
    pub headers: &'a HeaderMap,
    pub query: Option<&'a str>,
    /// Azure deployment id / Gemini model from the path.
    pub path_model: Option<&'a str>,
    /// Gemini method from the path (`generateContent`, `streamGenerateContent`).
    pub method: Option<&'a str>,
    /// The body, `None` when it is not JSON.
    pub body: Option<&'a Value>,
    /// The keys the mock accepts now.
    pub api_keys: &'a [String],
    /// The id this response will carry (Anthropic repeats it in error bodies).
    pub request_id: &'a str,
}

impl<'a> Incoming<'a> {
    /// Context for errors rendered before the request is parsed.
    pub(crate) fn error_ctx(&self) -> ErrorCtx<'a> {
        ErrorCtx {
            model: "",
            prompt_tokens: 0,
            request_id: self.request_id,
        }
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The key the request carries in `format`'s key header.
    pub(crate) fn key(&self, format: WireFormat) -> Option<&'a str> {
        format.carried_key(self.headers)
    }

    /// Whether `key` is one the mock accepts now.
    pub(crate) fn accepts(&self, key: &str) -> bool {
        self.api_keys.iter().any(|accepted| accepted == key)
    }

    /// The value of query parameter `name` (no percent-decoding: names and the values the
    /// mock checks are plain ASCII).
    pub(crate) fn query_param(&self, name: &str) -> Option<&str> {
        self.query?.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name).then_some(value)
        })
    }
}

/// A fully rendered error response.
#[derive(Clone, Debug)]
pub(crate) struct Rejection {
    pub status: StatusCode,
    pub body: Bytes,
    /// Headers beyond the dialect's usual ones (retry hints).
    pub headers: Vec<(&'static str, String)>,
}

impl Rejection {
    pub(crate) fn json(status: StatusCode, body: &Value) -> Rejection {
        Rejection {
            status,
            body: Bytes::from(body.to_string()),
            headers: Vec::new(),
        }
    }

    pub(crate) fn with_headers(mut self, headers: Vec<(&'static str, String)>) -> Rejection {
        self.headers = headers;
        self
    }
}

/// What an error message may mention.
#[derive(Debug)]
pub(crate) struct ErrorCtx<'a> {
    pub model: &'a str,
    pub prompt_tokens: u64,
    pub request_id: &'a str,
}

pub(crate) trait Dialect: Send + Sync {
    fn format(&self) -> WireFormat;

    /// Auth, format-specific checks and parsing, in the order the provider applies them.
    fn parse(&self, incoming: &Incoming<'_>) -> Result<ChatRequest, Rejection>;

    /// The error response for a fault that is answered with an error status.
    fn error(&self, fault: &Fault, ctx: &ErrorCtx<'_>) -> Rejection;

    /// Whether [`Fault::ContentFiltered`] is reported inside a 200 reply (Anthropic
    /// refusal, Gemini blocked prompt) rather than as an error status.
    fn filters_in_band(&self) -> bool {
        false
    }

    /// The non-streaming JSON body.
    fn render(&self, reply: &Reply, request: &ChatRequest) -> Bytes;

    /// The SSE events of a streamed reply, terminator included.
    fn frames(&self, reply: &Reply, request: &ChatRequest, options: &MockOptions) -> Vec<Frame>;

    /// The in-stream error event ([`Fault::InStreamError`]).
    fn stream_error(&self) -> Bytes;

    /// The fault a non-streaming request gets instead of [`Fault::InStreamError`].
    fn stream_error_status(&self) -> Fault;

    /// A `data:` event whose payload is not JSON ([`Fault::MalformedChunk`]).
    fn malformed(&self) -> Bytes;

    /// Request-id and rate-limit headers of every response.
    fn headers(&self, request_id: &str, rate_limited: bool) -> Vec<(&'static str, String)>;

    /// The request quota's headers ([`MockOptions::quota`]), replacing the usual ones of
    /// the same names; none for formats without rate-limit headers.
    fn quota_headers(&self, _quota: &QuotaState) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    fn stream_content_type(&self) -> &'static str {
        "text/event-stream; charset=utf-8"
    }
}

/// A provider-looking request id, unique per server sequence number.
pub(crate) fn request_id(seq: u64) -> String {
    let a = fnv1a(&[&seq.to_le_bytes(), b"request"]);
    let b = fnv1a(&[&seq.to_le_bytes(), b"id"]);
    format!("req_{a:016x}{:08x}", b as u32)
}

/// The usual `x-ratelimit-*` quartet OpenAI and Azure send (remaining 0 on a 429).
pub(crate) fn openai_rate_headers(rate_limited: bool) -> [(&'static str, String); 4] {
    let (requests, tokens) = if rate_limited {
        (0, 0)
    } else {
        (9_999, 1_999_000)
    };
    [
        ("x-ratelimit-limit-requests", "10000".to_owned()),
        ("x-ratelimit-limit-tokens", "2000000".to_owned()),
        ("x-ratelimit-remaining-requests", requests.to_string()),
        ("x-ratelimit-remaining-tokens", tokens.to_string()),
    ]
}
