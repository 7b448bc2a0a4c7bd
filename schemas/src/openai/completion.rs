//! The OpenAI `chat.completion` object: what a succeeded job returns, whichever provider
//! served it, so producers parse one shape.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::request::ToolCall;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChatCompletion {
    pub id: String,
    /// Always `chat.completion`.
    pub object: String,
    /// Unix seconds.
    pub created: i64,
    /// The upstream model that answered.
    pub model: String,
    pub choices: Vec<Choice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<CompletionUsage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_tier: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatCompletion {
    /// A `chat.completion` built by llmq (from another provider's answer, or from a
    /// stream): the fields only OpenAI itself sets (`system_fingerprint`, `service_tier`,
    /// unknown extras) are left out.
    pub fn new(
        id: String,
        created: i64,
        model: String,
        choices: Vec<Choice>,
        usage: Option<CompletionUsage>,
    ) -> Self {
        Self {
            id,
            object: "chat.completion".into(),
            created,
            model,
            choices,
            usage,
            system_fingerprint: None,
            service_tier: None,
            extra: Map::new(),
        }
    }

    /// The first choice's text, or "" when it has none.
    pub fn text(&self) -> &str {
        self.choices
            .first()
            .and_then(|choice| choice.message.content.as_deref())
            .unwrap_or("")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Choice {
    pub index: u32,
    pub message: ResponseMessage,
    /// `stop | length | tool_calls | content_filter | function_call`; null only while
    /// a stream is still running.
    pub finish_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Value>,
}

impl Choice {
    /// A choice whose generation ended for `finish_reason`, without logprobs.
    pub fn finished(index: u32, message: ResponseMessage, finish_reason: String) -> Self {
        Self {
            index,
            message,
            finish_reason: Some(finish_reason),
            logprobs: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ResponseMessage {
    /// Always `assistant`.
    pub role: String,
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// Reasoning text, for providers that return it (Anthropic thinking, some
    /// OpenAI-compatible servers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ResponseMessage {
    /// An assistant answer in OpenAI's conventions: `content` is null only when tool
    /// calls carry the answer; no tool calls, no reasoning (empty text) are left out.
    pub fn assistant(content: String, tool_calls: Vec<ToolCall>, reasoning: String) -> Self {
        Self {
            role: "assistant".into(),
            content: (!content.is_empty() || tool_calls.is_empty()).then_some(content),
            tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
            refusal: None,
            reasoning_content: (!reasoning.is_empty()).then_some(reasoning),
            extra: Map::new(),
        }
    }

    /// The same answer with the model's refusal text, if there is any.
    pub fn with_refusal(mut self, refusal: String) -> Self {
        self.refusal = (!refusal.is_empty()).then_some(refusal);
        self
    }
}

/// OpenAI's `usage` object, as returned inside the completion. llmq's normalized usage
/// (with cache writes, and the same meaning for every provider) is `crate::Usage`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CompletionUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<CompletionTokensDetails>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PromptTokensDetails {
    #[serde(default)]
    pub cached_tokens: u64,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CompletionTokensDetails {
    #[serde(default)]
    pub reasoning_tokens: u64,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::openai::request::FunctionCall;

    fn call() -> ToolCall {
        ToolCall {
            id: "call_1".into(),
            kind: "function".into(),
            function: FunctionCall {
                name: "lookup".into(),
                arguments: "{}".into(),
            },
        }
    }

    #[test]
    fn a_built_completion_has_the_openai_shape_and_no_openai_only_fields() {
        let message = ResponseMessage::assistant("Hi".into(), Vec::new(), "Hm.".into());
        let completion = ChatCompletion::new(
            "chatcmpl-1".into(),
            5,
            "m".into(),
            vec![Choice::finished(0, message, "stop".into())],
            None,
        );
        assert_eq!(
            serde_json::to_value(&completion).unwrap(),
            json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 5, "model": "m",
                "choices": [{"index": 0, "finish_reason": "stop", "message":
                    {"role": "assistant", "content": "Hi", "reasoning_content": "Hm."}}]})
        );
    }

    #[test]
    fn content_is_null_only_when_tool_calls_carry_the_answer() {
        let tools_only = ResponseMessage::assistant(String::new(), vec![call()], String::new());
        assert_eq!(tools_only.content, None);
        assert_eq!(tools_only.tool_calls, Some(vec![call()]));
        assert_eq!(tools_only.reasoning_content, None);
        let empty = ResponseMessage::assistant(String::new(), Vec::new(), String::new());
        assert_eq!(empty.content.as_deref(), Some(""));
        assert_eq!(empty.tool_calls, None);
        let both = ResponseMessage::assistant("x".into(), vec![call()], String::new());
        assert_eq!(both.content.as_deref(), Some("x"));
        assert_eq!(empty.clone().with_refusal(String::new()).refusal, None);
        assert_eq!(
            empty.with_refusal("no".into()).refusal.as_deref(),
            Some("no")
        );
    }
}
