//! Provider adapters: one trait, one file per provider kind.
//!
//! An adapter is pure translation: an OpenAI-format request in, an HTTP request out; the
//! provider's JSON, SSE events and error responses in, normalized completions, stream
//! items and classified errors out. It does no I/O. Sending, timeouts, SSE framing,
//! cancellation and accumulation live once in [`call`], so a new provider kind is one
//! new file implementing [`Adapter`], plus its arm in [`build_adapter`], and every
//! adapter is unit-testable without a network.

pub mod accumulate;
pub mod anthropic;
pub mod azure;
pub mod call;
pub mod convert;
pub mod error;
pub mod estimate;
pub mod gemini;
pub mod http_client;
pub mod openai;
pub mod redact;
pub mod retry_hint;
pub mod sse;
#[cfg(test)]
pub mod testing;
pub mod tool_arguments;

use std::fmt;

use llmq_schemas::{ChatCompletion, ChatRequest, ToolCallDelta, Usage};
use reqwest::header::HeaderMap;

pub use call::{AttemptReport, DeltaSink, execute};
pub use error::{ProviderError, TimeoutKind};
pub use sse::SseEvent;

use crate::config::{InvalidToolArguments, ProviderConfig, ProviderKind};

/// Everything an adapter needs to build one upstream call.
#[derive(Debug, Clone, Copy)]
pub struct CallSpec<'a> {
    pub request: &'a ChatRequest,
    pub upstream_model: &'a str,
    pub stream: bool,
    /// For providers that require a token cap (Anthropic) when the job sets none.
    pub default_max_tokens: Option<u32>,
    /// The model's rule for tool-call arguments that are not a JSON object.
    pub invalid_tool_arguments: InvalidToolArguments,
}

/// A ready-to-send HTTP request. Header values carrying keys are marked sensitive, so
/// they print as `Sensitive` in any Debug output.
#[derive(Debug)]
pub struct HttpCall {
    pub url: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// A finished answer, already in the OpenAI `chat.completion` shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub response: ChatCompletion,
    /// Normalized usage (see `llmq_schemas::Usage`); `None` when the provider reported
    /// none, in which case the caller estimates it.
    pub usage: Option<Usage>,
}

/// A piece of streamed output, in OpenAI delta terms.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeltaPart {
    pub content: Option<String>,
    pub reasoning: Option<String>,
    pub refusal: Option<String>,
    pub tool_calls: Vec<ToolCallDelta>,
}

impl DeltaPart {
    pub fn is_empty(&self) -> bool {
        self.content.as_deref().is_none_or(str::is_empty)
            && self.reasoning.as_deref().is_none_or(str::is_empty)
            && self.refusal.as_deref().is_none_or(str::is_empty)
            && self.tool_calls.is_empty()
    }
}

/// What a stream decoder gets out of one provider event.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem {
    /// Response identity, from whichever event carries it.
    Meta {
        id: Option<String>,
        model: Option<String>,
        created: Option<i64>,
    },
    Delta(DeltaPart),
    /// `finish_reason` in OpenAI's vocabulary (`stop`, `length`, `tool_calls`,
    /// `content_filter`).
    Finish(String),
    /// Normalized usage; a later item replaces an earlier one, so providers that send
    /// cumulative usage need no special handling.
    Usage(Usage),
}

/// Translation between OpenAI-format jobs and one provider's wire format.
pub trait Adapter: Send + Sync + fmt::Debug {
    fn build(&self, call: &CallSpec<'_>) -> Result<HttpCall, ProviderError>;

    /// Parses a 2xx non-streaming body. A 2xx that is really an error (some servers do
    /// that) returns the classified error.
    fn parse_response(&self, body: &[u8]) -> Result<Completion, ProviderError>;

    fn stream_decoder(&self) -> Box<dyn StreamDecoder>;

    /// Classifies a non-2xx response.
    fn classify_error(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> ProviderError;
}

/// Turns one stream's SSE events into stream items. One decoder per attempt.
pub trait StreamDecoder: Send {
    /// An in-stream error event returns the classified error.
    fn decode(&mut self, event: &SseEvent, out: &mut Vec<StreamItem>) -> Result<(), ProviderError>;

    /// Whether the stream's end marker has been seen; reading stops there, so a server
    /// that keeps the connection open after it does not look like a stall.
    fn is_done(&self) -> bool;

    /// The body ended. Errors if the stream's end marker never came: that is a cut stream,
    /// not a finished answer.
    fn finish(&mut self) -> Result<(), ProviderError>;
}

/// The adapter for a configured provider.
pub fn build_adapter(name: &str, config: &ProviderConfig) -> Result<Box<dyn Adapter>, String> {
    match config.kind {
        ProviderKind::Openai | ProviderKind::OpenaiCompatible => {
            Ok(Box::new(openai::OpenAi::from_config(name, config)?))
        }
        ProviderKind::Azure => Ok(Box::new(azure::Azure::from_config(name, config)?)),
        ProviderKind::Anthropic => Ok(Box::new(anthropic::Anthropic::from_config(name, config)?)),
        ProviderKind::Gemini => Ok(Box::new(gemini::Gemini::from_config(name, config)?)),
    }
}
