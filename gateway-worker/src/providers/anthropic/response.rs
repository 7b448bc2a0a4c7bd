//! Messages response -> `Completion`, and usage normalization.

use llmq_schemas::{Choice, ErrorType, Usage};
use serde::Deserialize;
use serde_json::Value;

use crate::providers::accumulate::{ChoiceParts, arguments_text};
use crate::providers::{Completion, ProviderError};

// ---- response wire types ----------------------------------------------------------------

#[derive(Debug, Deserialize)]
pub(super) struct MessageResponse {
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    content: Vec<ResponseBlock>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    stop_details: Option<StopDetails>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

/// Why a `refusal` stop happened (`message_delta` carries it when streaming).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub(super) struct StopDetails {
    category: Option<String>,
    explanation: Option<String>,
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
pub(super) struct WireUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    output_tokens_details: Option<OutputDetails>,
}

/// The part of `output_tokens` spent thinking.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(default)]
pub(super) struct OutputDetails {
    thinking_tokens: Option<u64>,
}

impl WireUsage {
    /// Cumulative update: fields the newer report carries replace the older values.
    pub(super) fn update(&mut self, newer: &WireUsage) {
        self.input_tokens = newer.input_tokens.or(self.input_tokens);
        self.output_tokens = newer.output_tokens.or(self.output_tokens);
        self.cache_creation_input_tokens = newer
            .cache_creation_input_tokens
            .or(self.cache_creation_input_tokens);
        self.cache_read_input_tokens = newer
            .cache_read_input_tokens
            .or(self.cache_read_input_tokens);
        let thinking = newer
            .output_tokens_details
            .and_then(|d| d.thinking_tokens)
            .or(self.output_tokens_details.and_then(|d| d.thinking_tokens));
        self.output_tokens_details = thinking.map(|thinking_tokens| OutputDetails {
            thinking_tokens: Some(thinking_tokens),
        });
    }
}
// ---- conversions ------------------------------------------------------------------------

pub(super) fn normalize_usage(usage: &WireUsage) -> Usage {
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
        // Thinking is billed inside output_tokens; this names that part.
        reasoning_tokens: usage
            .output_tokens_details
            .and_then(|d| d.thinking_tokens)
            .unwrap_or(0),
    }
}

pub(super) fn finish_reason(stop_reason: Option<&str>, has_tool_calls: bool) -> String {
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

/// A refusal with nothing else in the answer. `usage` is what the provider reported: it
/// bills a refused answer's tokens.
pub(super) fn refusal(details: Option<&StopDetails>, usage: &WireUsage) -> ProviderError {
    let mut message = "the model refused to answer (stop_reason refusal".to_owned();
    if let Some(category) = details.and_then(|d| d.category.as_deref()) {
        message.push_str(&format!(", category {category}"));
    }
    message.push(')');
    if let Some(explanation) = details.and_then(|d| d.explanation.as_deref()) {
        message.push_str(&format!(": {explanation}"));
    }
    ProviderError::new(ErrorType::ContentFiltered, message)
        .with_code(Some("refusal".into()))
        .with_usage(Some(normalize_usage(usage)))
}

pub(super) fn completion(message: MessageResponse) -> Result<Completion, ProviderError> {
    let parts = choice_parts(message.content);
    let stop_reason = message.stop_reason.as_deref();
    if stop_reason == Some("refusal") && !parts.has_answer() {
        return Err(refusal(
            message.stop_details.as_ref(),
            &message.usage.unwrap_or_default(),
        ));
    }
    let finish = finish_reason(stop_reason, !parts.tool_calls.is_empty());
    Ok(Completion::assembled(
        Some(message.id),
        None,
        message.model,
        vec![Choice::finished(0, parts.into_message(), finish)],
        message.usage.as_ref().map(normalize_usage),
    ))
}

fn choice_parts(blocks: Vec<ResponseBlock>) -> ChoiceParts {
    let mut parts = ChoiceParts::default();
    for block in blocks {
        match block {
            ResponseBlock::Text { text } => parts.text.push_str(&text),
            ResponseBlock::Thinking { thinking } => parts.reasoning.push_str(&thinking),
            ResponseBlock::ToolUse { id, name, input } => {
                parts.push_call(id, name, arguments_text(Some(input)));
            }
            ResponseBlock::Other => {}
        }
    }
    parts
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::providers::Adapter;
    use crate::providers::anthropic::tests::adapter;

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
    fn thinking_tokens_are_reasoning_tokens_inside_completion_tokens() {
        let body = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
            "content": [{"type": "thinking", "thinking": "Hm.", "signature": "Eq"}, {"type": "text", "text": "ok"}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 5, "output_tokens": 30, "output_tokens_details": {"thinking_tokens": 24}}});
        let done = adapter()
            .parse_response(body.to_string().as_bytes())
            .unwrap();
        let usage = done.usage.unwrap();
        assert_eq!(
            (
                usage.completion_tokens,
                usage.reasoning_tokens,
                usage.total_tokens
            ),
            (30, 24, 35)
        );
        let wire = done.response.usage.unwrap();
        assert_eq!(wire.completion_tokens_details.unwrap().reasoning_tokens, 24);
    }

    #[test]
    fn a_bare_refusal_is_content_filtered_and_error_bodies_are_errors() {
        let body = r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude","content":[],"stop_reason":"refusal",
            "stop_details":{"type":"refusal","category":"cyber","explanation":"Declined."},"usage":{"input_tokens":10,"output_tokens":3}}"#;
        let err = adapter().parse_response(body.as_bytes()).unwrap_err();
        assert_eq!(err.class, ErrorType::ContentFiltered);
        assert!(err.allows_fallback());
        assert!(
            err.message.ends_with("category cyber): Declined."),
            "{}",
            err.message
        );
        // Refused tokens are billed.
        assert_eq!(err.reported_usage(), Some(Usage::new(10, 3)));
        let body = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_011CSHoEeqs5C35K2UUqR7Fy"}"#;
        let err = adapter().parse_response(body.as_bytes()).unwrap_err();
        assert_eq!(err.class, ErrorType::Overloaded);
        assert!(err.message.contains("req_011CSHoEeqs5C35K2UUqR7Fy"));
        let err = adapter()
            .parse_response(b"<html>bad gateway</html>")
            .unwrap_err();
        assert_eq!(err.class, ErrorType::MalformedResponse);
    }
}
