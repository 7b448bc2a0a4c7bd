//! The `chat.completion.chunk`: one server-sent event of a streamed answer.
//!
//! OpenAI's order, which clients rely on: the role first, then content, reasoning and
//! tool-call deltas (each call fragment with its `index`; the first one of a call with its
//! `id` and `type`), a chunk with the finish reason, and, when `stream_options.include_usage`
//! asked for it, a last chunk with no choices and the usage.

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use super::completion::CompletionUsage;
use super::request::ToolCallDelta;

pub const CHUNK_OBJECT: &str = "chat.completion.chunk";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChatCompletionChunk {
    /// The same for every chunk of one answer.
    pub id: String,
    /// Always `chat.completion.chunk`.
    pub object: String,
    /// Unix seconds.
    pub created: i64,
    pub model: String,
    /// One choice per chunk; none in the usage chunk.
    pub choices: Vec<ChunkChoice>,
    /// Only on the usage chunk, where it is present even when null (the usage is unknown).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub usage: Option<Option<CompletionUsage>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatCompletionChunk {
    /// A chunk of answer `id` with one choice (index 0).
    pub fn with_choice(id: &str, created: i64, model: &str, choice: ChunkChoice) -> Self {
        Self::new(id, created, model, vec![choice], None)
    }

    /// The usage chunk: no choices, and the usage (null when unknown).
    pub fn with_usage(id: &str, created: i64, model: &str, usage: Option<CompletionUsage>) -> Self {
        Self::new(id, created, model, Vec::new(), Some(usage))
    }

    fn new(
        id: &str,
        created: i64,
        model: &str,
        choices: Vec<ChunkChoice>,
        usage: Option<Option<CompletionUsage>>,
    ) -> Self {
        Self {
            id: id.to_owned(),
            object: CHUNK_OBJECT.to_owned(),
            created,
            model: model.to_owned(),
            choices,
            usage,
            extra: Map::new(),
        }
    }
}

/// A field that is present (even as null) is `Some`; an absent one is `None` (by default).
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChunkChoice {
    pub index: u32,
    pub delta: ChunkDelta,
    /// Null until the chunk that ends the choice.
    pub finish_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Value>,
}

impl ChunkChoice {
    /// Choice 0 with `delta`, not finished.
    pub fn delta(delta: ChunkDelta) -> Self {
        Self {
            index: 0,
            delta,
            finish_reason: None,
            logprobs: None,
        }
    }

    /// Choice 0 ending for `finish_reason`, with an empty delta.
    pub fn finished(finish_reason: String) -> Self {
        Self {
            finish_reason: Some(finish_reason),
            ..Self::delta(ChunkDelta::default())
        }
    }
}

/// What one chunk adds to the answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChunkDelta {
    /// `assistant`, on the first chunk only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ChunkToolCall>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
}

impl ChunkDelta {
    /// The first delta of an answer: the assistant's role and empty content.
    pub fn role() -> Self {
        Self {
            role: Some("assistant".to_owned()),
            content: Some(String::new()),
            ..Self::default()
        }
    }
}

/// A fragment of a tool call: the first one of a call carries `id`, `type` and the
/// function's name; every one carries a piece of `arguments` (possibly empty).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChunkToolCall {
    pub index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `function`, with the `id`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub function: ChunkFunction,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChunkFunction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub arguments: String,
}

impl From<&ToolCallDelta> for ChunkToolCall {
    fn from(call: &ToolCallDelta) -> Self {
        Self {
            index: call.index,
            id: call.id.clone(),
            kind: call.id.as_ref().map(|_| "function".to_owned()),
            function: ChunkFunction {
                name: call.name.clone(),
                arguments: call.arguments.clone().unwrap_or_default(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chunk(choice: ChunkChoice) -> Value {
        serde_json::to_value(ChatCompletionChunk::with_choice("c-1", 1, "chat", choice)).unwrap()
    }

    #[test]
    fn chunks_have_openais_shape() {
        assert_eq!(
            chunk(ChunkChoice::delta(ChunkDelta::role())),
            json!({"id": "c-1", "object": "chat.completion.chunk", "created": 1, "model": "chat",
                   "choices": [{"index": 0, "finish_reason": null,
                                "delta": {"role": "assistant", "content": ""}}]})
        );
        let text = ChunkDelta {
            content: Some("Hel".into()),
            reasoning_content: Some("hm".into()),
            ..ChunkDelta::default()
        };
        let value = chunk(ChunkChoice::delta(text));
        assert_eq!(
            value["choices"][0]["delta"],
            json!({"content": "Hel", "reasoning_content": "hm"})
        );
        let finish = chunk(ChunkChoice::finished("stop".into()));
        assert_eq!(
            finish["choices"][0],
            json!({"index": 0, "delta": {}, "finish_reason": "stop"})
        );
        assert!(
            finish.get("usage").is_none(),
            "only the usage chunk has one"
        );
    }

    #[test]
    fn a_tool_calls_first_fragment_names_it_and_later_ones_only_add_arguments() {
        let calls = [
            ToolCallDelta {
                index: 0,
                id: Some("call_1".into()),
                name: Some("lookup".into()),
                arguments: Some("{\"q\"".into()),
            },
            ToolCallDelta {
                index: 0,
                ..ToolCallDelta::default()
            },
        ];
        let call = ChunkDelta {
            tool_calls: Some(calls.iter().map(ChunkToolCall::from).collect()),
            ..ChunkDelta::default()
        };
        let value = chunk(ChunkChoice::delta(call));
        assert_eq!(
            value["choices"][0]["delta"]["tool_calls"],
            json!([{"index": 0, "id": "call_1", "type": "function",
                    "function": {"name": "lookup", "arguments": "{\"q\""}},
                   {"index": 0, "function": {"arguments": ""}}])
        );
    }

    #[test]
    fn the_usage_chunk_has_no_choices_and_its_usage_even_when_unknown() {
        let usage = CompletionUsage {
            prompt_tokens: 3,
            completion_tokens: 2,
            total_tokens: 5,
            ..CompletionUsage::default()
        };
        let known = ChatCompletionChunk::with_usage("c-1", 1, "chat", Some(usage));
        let value = serde_json::to_value(&known).unwrap();
        assert_eq!(value["choices"], json!([]));
        assert_eq!(value["usage"]["total_tokens"], 5);
        let unknown = ChatCompletionChunk::with_usage("c-1", 1, "chat", None);
        let value = serde_json::to_value(&unknown).unwrap();
        assert_eq!(value["usage"], Value::Null);
        assert_eq!(
            serde_json::from_value::<ChatCompletionChunk>(value).unwrap(),
            unknown
        );
        assert_eq!(
            serde_json::from_value::<ChatCompletionChunk>(chunk(ChunkChoice::finished(
                "stop".into()
            )))
            .unwrap()
            .usage,
            None
        );
    }
}
