//! Building the final `chat.completion`: from stream items, and from another provider's
//! whole answer.
//!
//! Streaming and non-streaming jobs must end with the same outcome for the same upstream
//! answer, so every streaming adapter feeds this one accumulator instead of assembling
//! its own response, and the accumulator and the adapters that translate a whole answer
//! ([`Completion::assembled`]) fill in what the provider did not say the same way.

use llmq_schemas::completion::{CompletionTokensDetails, PromptTokensDetails};
use llmq_schemas::{
    ChatCompletion, Choice, CompletionUsage, FunctionCall, ResponseMessage, ToolCall,
    ToolCallDelta, Usage,
};
use serde_json::Map;

use super::{Completion, DeltaPart, StreamItem};

#[derive(Debug, Default)]
pub struct StreamAccumulator {
    id: Option<String>,
    model: Option<String>,
    created: Option<i64>,
    content: String,
    reasoning: String,
    refusal: String,
    tool_calls: Vec<ToolCallBuilder>,
    finish_reason: Option<String>,
    usage: Option<Usage>,
    saw_output: bool,
}

#[derive(Debug, Default)]
struct ToolCallBuilder {
    index: u32,
    id: String,
    name: String,
    arguments: String,
}

impl StreamAccumulator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies an item; returns the delta to forward to the producer, if any.
    pub fn apply(&mut self, item: StreamItem) -> Option<DeltaPart> {
        match item {
            StreamItem::Meta { id, model, created } => {
                self.id = self.id.take().or(id);
                self.model = self.model.take().or(model);
                self.created = self.created.or(created);
                None
            }
            StreamItem::Delta(part) => {
                if part.is_empty() {
                    return None;
                }
                self.saw_output = true;
                if let Some(text) = &part.content {
                    self.content.push_str(text);
                }
                if let Some(text) = &part.reasoning {
                    self.reasoning.push_str(text);
                }
                if let Some(text) = &part.refusal {
                    self.refusal.push_str(text);
                }
                for call in &part.tool_calls {
                    self.apply_tool_call(call);
                }
                Some(part)
            }
            StreamItem::Finish(reason) => {
                self.finish_reason = Some(reason);
                None
            }
            StreamItem::Usage(usage) => {
                self.usage = Some(usage);
                None
            }
        }
    }

    fn apply_tool_call(&mut self, delta: &ToolCallDelta) {
        let builder = match self.tool_calls.iter_mut().find(|c| c.index == delta.index) {
            Some(builder) => builder,
            None => {
                self.tool_calls.push(ToolCallBuilder {
                    index: delta.index,
                    ..ToolCallBuilder::default()
                });
                let last = self.tool_calls.len() - 1;
                &mut self.tool_calls[last]
            }
        };
        if let Some(id) = &delta.id {
            builder.id.clone_from(id);
        }
        if let Some(name) = &delta.name {
            builder.name.push_str(name);
        }
        if let Some(arguments) = &delta.arguments {
            builder.arguments.push_str(arguments);
        }
    }

    /// Whether any output was produced (a failure after this point is a partial answer).
    pub fn saw_output(&self) -> bool {
        self.saw_output
    }

    pub fn content(&self) -> &str {
        &self.content
    }

    /// Bytes of output held so far (text, reasoning, refusal, tool calls): what a
    /// stream's answer will weigh.
    pub fn held_bytes(&self) -> usize {
        let calls: usize = self
            .tool_calls
            .iter()
            .map(|c| c.id.len() + c.name.len() + c.arguments.len())
            .sum();
        self.content.len() + self.reasoning.len() + self.refusal.len() + calls
    }

    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// The tool calls assembled so far.
    pub fn tool_calls(&self) -> Vec<ToolCall> {
        let mut calls: Vec<&ToolCallBuilder> = self.tool_calls.iter().collect();
        calls.sort_by_key(|c| c.index);
        calls
            .into_iter()
            .map(|c| ToolCall {
                id: c.id.clone(),
                kind: "function".into(),
                function: FunctionCall {
                    name: c.name.clone(),
                    arguments: c.arguments.clone(),
                },
            })
            .collect()
    }

    /// The completed answer. `upstream_model` names the model when the stream did not.
    pub fn finish(self, upstream_model: &str) -> Completion {
        let tool_calls = self.tool_calls();
        let finish_reason = self.finish_reason.unwrap_or_else(|| {
            if tool_calls.is_empty() {
                "stop"
            } else {
                "tool_calls"
            }
            .to_owned()
        });
        let message = ResponseMessage::assistant(self.content, tool_calls, self.reasoning)
            .with_refusal(self.refusal);
        Completion::assembled(
            self.id,
            self.created,
            self.model.unwrap_or_else(|| upstream_model.to_owned()),
            vec![Choice::finished(0, message, finish_reason)],
            self.usage,
        )
    }
}

impl Completion {
    /// An answer llmq assembled (from a stream, or from a provider's own format): an id
    /// is generated when the provider sent none, `created` is now when it said no time,
    /// and the usage goes in both shapes.
    pub fn assembled(
        id: Option<String>,
        created: Option<i64>,
        model: String,
        choices: Vec<Choice>,
        usage: Option<Usage>,
    ) -> Self {
        let response = ChatCompletion::new(
            id.unwrap_or_else(|| format!("chatcmpl-{}", uuid::Uuid::now_v7().simple())),
            created.unwrap_or_else(unix_now),
            model,
            choices,
            usage.as_ref().map(openai_usage),
        );
        Self { response, usage }
    }
}

/// One choice of a whole answer, collected part by part in the provider's order.
#[derive(Debug, Default)]
pub(crate) struct ChoiceParts {
    pub(crate) text: String,
    pub(crate) reasoning: String,
    pub(crate) tool_calls: Vec<ToolCall>,
}

impl ChoiceParts {
    pub(crate) fn push_call(&mut self, id: String, name: String, arguments: String) {
        self.tool_calls.push(ToolCall {
            id,
            kind: "function".into(),
            function: FunctionCall { name, arguments },
        });
    }

    /// Whether the choice says anything: text or a tool call (reasoning alone does not).
    pub(crate) fn has_answer(&self) -> bool {
        !self.text.is_empty() || !self.tool_calls.is_empty()
    }

    pub(crate) fn into_message(self) -> ResponseMessage {
        ResponseMessage::assistant(self.text, self.tool_calls, self.reasoning)
    }
}

/// A tool call's arguments as OpenAI carries them, JSON text; `{}` for none.
pub(crate) fn arguments_text(arguments: Option<serde_json::Value>) -> String {
    match arguments {
        None | Some(serde_json::Value::Null) => "{}".to_owned(),
        Some(arguments) => arguments.to_string(),
    }
}

/// Normalized usage in OpenAI's `usage` shape (for the `chat.completion` object).
pub fn openai_usage(usage: &Usage) -> CompletionUsage {
    CompletionUsage {
        prompt_tokens: usage.prompt_tokens,
        completion_tokens: usage.completion_tokens,
        total_tokens: usage.total_tokens,
        prompt_tokens_details: (usage.cached_prompt_tokens > 0).then(|| PromptTokensDetails {
            cached_tokens: usage.cached_prompt_tokens,
            extra: Map::new(),
        }),
        completion_tokens_details: (usage.reasoning_tokens > 0).then(|| CompletionTokensDetails {
            reasoning_tokens: usage.reasoning_tokens,
            extra: Map::new(),
        }),
    }
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(text: &str) -> StreamItem {
        StreamItem::Delta(DeltaPart {
            content: Some(text.into()),
            ..DeltaPart::default()
        })
    }

    #[test]
    fn concatenates_content_and_keeps_the_last_usage() {
        let mut acc = StreamAccumulator::new();
        acc.apply(StreamItem::Meta {
            id: Some("chatcmpl-1".into()),
            model: Some("gpt-x".into()),
            created: Some(5),
        });
        assert!(acc.apply(delta("")).is_none());
        assert!(acc.apply(delta("Hel")).is_some());
        acc.apply(delta("lo"));
        acc.apply(StreamItem::Usage(Usage::new(3, 1)));
        acc.apply(StreamItem::Usage(Usage::new(3, 2)));
        acc.apply(StreamItem::Finish("length".into()));
        let done = acc.finish("fallback-name");
        assert_eq!(done.response.text(), "Hello");
        assert_eq!(done.response.id, "chatcmpl-1");
        assert_eq!(done.response.model, "gpt-x");
        assert_eq!(
            done.response.choices[0].finish_reason.as_deref(),
            Some("length")
        );
        assert_eq!(done.usage, Some(Usage::new(3, 2)));
        assert_eq!(done.response.usage.unwrap().total_tokens, 5);
    }

    #[test]
    fn assembles_tool_call_fragments_by_index() {
        let mut acc = StreamAccumulator::new();
        let frag = |index, id: Option<&str>, name: Option<&str>, args: &str| {
            StreamItem::Delta(DeltaPart {
                tool_calls: vec![ToolCallDelta {
                    index,
                    id: id.map(Into::into),
                    name: name.map(Into::into),
                    arguments: Some(args.into()),
                }],
                ..DeltaPart::default()
            })
        };
        acc.apply(frag(1, Some("call_b"), Some("b"), ""));
        acc.apply(frag(0, Some("call_a"), Some("a"), "{\"x\""));
        acc.apply(frag(0, None, None, ":1}"));
        acc.apply(frag(1, None, None, "{}"));
        let done = acc.finish("m");
        let calls = done.response.choices[0].message.tool_calls.clone().unwrap();
        assert_eq!(calls[0].id, "call_a");
        assert_eq!(calls[0].function.arguments, "{\"x\":1}");
        assert_eq!(calls[1].function.name, "b");
        assert_eq!(
            done.response.choices[0].finish_reason.as_deref(),
            Some("tool_calls")
        );
        assert_eq!(done.response.choices[0].message.content, None);
    }
}
