//! `GenerateContentResponse` -> `Completion`, and usage normalization.

use llmq_schemas::{Choice, ErrorType, Usage};
use serde::Deserialize;
use serde_json::Value;

use super::error::Status;
use super::signature::call_id;
use crate::providers::accumulate::{ChoiceParts, arguments_text};
use crate::providers::{Completion, ProviderError};

// ---- response wire types ----------------------------------------------------------------

/// A `GenerateContentResponse`, or (in a stream) an error object in its place.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct GenerateResponse {
    pub(super) candidates: Vec<Candidate>,
    pub(super) prompt_feedback: Option<PromptFeedback>,
    pub(super) usage_metadata: Option<UsageMetadata>,
    pub(super) model_version: Option<String>,
    pub(super) response_id: Option<String>,
    pub(super) error: Option<Status>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Candidate {
    #[serde(default)]
    pub(super) content: Option<CandidateContent>,
    #[serde(default)]
    pub(super) finish_reason: Option<String>,
    /// Omitted for candidate 0 (a proto3 default).
    #[serde(default)]
    pub(super) index: Option<u32>,
}

#[derive(Debug, Deserialize)]
pub(super) struct CandidateContent {
    #[serde(default)]
    pub(super) parts: Vec<ResponsePart>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ResponsePart {
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
pub(super) struct PromptFeedback {
    #[serde(default)]
    pub(super) block_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct UsageMetadata {
    prompt_token_count: u64,
    candidates_token_count: u64,
    thoughts_token_count: u64,
    cached_content_token_count: u64,
    tool_use_prompt_token_count: u64,
}

// ---- conversions ------------------------------------------------------------------------

pub(super) fn normalize_usage(usage: &UsageMetadata) -> Usage {
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

pub(super) fn finish_reason(reason: Option<&str>, has_tool_calls: bool) -> &'static str {
    match reason {
        Some("MAX_TOKENS") => "length",
        Some(reason) if FILTER_REASONS.contains(&reason) => "content_filter",
        _ if has_tool_calls => "tool_calls",
        // STOP, LANGUAGE, OTHER, MALFORMED_FUNCTION_CALL, reasons added later.
        _ => "stop",
    }
}

pub(super) fn blocked(what: &str, reason: &str) -> ProviderError {
    ProviderError::new(
        ErrorType::ContentFiltered,
        format!("{what} was blocked ({reason})"),
    )
    .with_code(Some(reason.to_owned()))
}

/// What a part contributes to the answer.
pub(super) enum PartOutput {
    Text(String),
    Thought(String),
    Call {
        name: String,
        arguments: String,
        signature: Option<String>,
    },
    Nothing,
}

pub(super) fn part_output(part: ResponsePart) -> PartOutput {
    if let Some(call) = part.function_call {
        return PartOutput::Call {
            name: call.name,
            arguments: arguments_text(call.args),
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

/// The answer, or why there is none; an error carries the usage the response reported,
/// because Gemini bills a blocked prompt's or answer's tokens too.
pub(super) fn completion(response: GenerateResponse) -> Result<Completion, ProviderError> {
    let usage = response.usage_metadata.as_ref().map(normalize_usage);
    answer(response, usage).map_err(|err| err.with_usage(usage))
}

fn answer(response: GenerateResponse, usage: Option<Usage>) -> Result<Completion, ProviderError> {
    if response.candidates.is_empty() {
        return Err(
            match response.prompt_feedback.and_then(|f| f.block_reason) {
                Some(reason) => blocked("the prompt", &reason),
                None => ProviderError::malformed("the response has no candidates"),
            },
        );
    }
    let (mut choices, filtered): (Vec<Choice>, Vec<Option<String>>) = response
        .candidates
        .into_iter()
        .enumerate()
        .map(|(position, candidate)| choice(position, candidate))
        .unzip();
    // Only when no candidate produced anything is the answer a refusal.
    if let Some(Some(reason)) = filtered.first()
        && filtered.iter().all(Option::is_some)
    {
        return Err(blocked("the answer", reason));
    }
    choices.sort_by_key(|c| c.index);
    Ok(Completion::assembled(
        response.response_id,
        None,
        response.model_version.unwrap_or_default(),
        choices,
        usage,
    ))
}

/// A candidate as a choice, and its finish reason if it is only a filter stop (no text,
/// no tool call).
fn choice(position: usize, candidate: Candidate) -> (Choice, Option<String>) {
    let parts = choice_parts(candidate.content);
    let finish = finish_reason(
        candidate.finish_reason.as_deref(),
        !parts.tool_calls.is_empty(),
    );
    let filtered = (finish == "content_filter" && !parts.has_answer())
        .then_some(candidate.finish_reason)
        .flatten();
    let index = candidate
        .index
        .unwrap_or_else(|| u32::try_from(position).unwrap_or(u32::MAX));
    (
        Choice::finished(index, parts.into_message(), finish.to_owned()),
        filtered,
    )
}

fn choice_parts(content: Option<CandidateContent>) -> ChoiceParts {
    let mut parts = ChoiceParts::default();
    for part in content.map(|c| c.parts).unwrap_or_default() {
        match part_output(part) {
            PartOutput::Text(text) => parts.text.push_str(&text),
            PartOutput::Thought(text) => parts.reasoning.push_str(&text),
            PartOutput::Call {
                name,
                arguments,
                signature,
            } => {
                let id = call_id(parts.tool_calls.len(), signature.as_deref());
                parts.push_call(id, name, arguments);
            }
            PartOutput::Nothing => {}
        }
    }
    parts
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::providers::Adapter;
    use crate::providers::gemini::signature::signature_of;
    use crate::providers::gemini::tests::{TOOL_RESPONSE, adapter, expected_usage};

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
        // The blocked prompt's tokens are billed.
        assert_eq!(err.reported_usage(), Some(Usage::new(9, 0)));
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
}
