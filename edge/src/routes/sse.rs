//! Reply events as OpenAI `chat.completion.chunk`s (the types: `llmq_schemas::openai::chunk`):
//! role first, then content, reasoning and tool-call deltas, the finish reason, and the
//! usage chunk when asked for. Pure, so what goes out is unit-tested.

use llmq_schemas::openai::{ChatCompletionChunk, ChunkChoice, ChunkDelta, ChunkToolCall};
use llmq_schemas::{Delta, Outcome, ToolCallDelta};

/// What every chunk of one answer shares.
#[derive(Debug, Clone)]
pub(super) struct ChunkFrame {
    pub id: String,
    pub created: i64,
    pub model: String,
}

impl ChunkFrame {
    fn chunk(&self, choice: ChunkChoice) -> ChatCompletionChunk {
        ChatCompletionChunk::with_choice(&self.id, self.created, &self.model, choice)
    }

    /// The first chunk: the assistant's role, no content yet.
    pub fn role(&self) -> ChatCompletionChunk {
        self.chunk(ChunkChoice::delta(ChunkDelta::role()))
    }

    /// One delta's content, reasoning and tool calls.
    pub fn delta(&self, delta: &Delta) -> ChatCompletionChunk {
        self.chunk(ChunkChoice::delta(chunk_delta(delta)))
    }

    /// A stored answer as one delta chunk (`None` when it has no text, reasoning or tool
    /// call): for a stream whose outcome came before any of its deltas had gone out, so
    /// the client reads the whole answer even if deltas were lost on the way.
    pub fn whole(&self, outcome: &Outcome) -> Option<ChatCompletionChunk> {
        let message = &outcome.response.as_ref()?.choices.first()?.message;
        let calls: Vec<ChunkToolCall> = message
            .tool_calls
            .iter()
            .flatten()
            .zip(0..)
            .map(|(call, index)| {
                ChunkToolCall::from(&ToolCallDelta {
                    index,
                    id: Some(call.id.clone()),
                    name: Some(call.function.name.clone()),
                    arguments: Some(call.function.arguments.clone()),
                })
            })
            .collect();
        let nonempty = |text: &Option<String>| text.clone().filter(|t| !t.is_empty());
        let delta = ChunkDelta {
            content: nonempty(&message.content),
            reasoning_content: nonempty(&message.reasoning_content),
            tool_calls: (!calls.is_empty()).then_some(calls),
            ..ChunkDelta::default()
        };
        let empty = delta.content.is_none() && delta.reasoning_content.is_none();
        (!empty || delta.tool_calls.is_some()).then(|| self.chunk(ChunkChoice::delta(delta)))
    }

    /// The last content chunk: an empty delta with the finish reason.
    pub fn finish(&self, outcome: &Outcome) -> ChatCompletionChunk {
        let reason = outcome
            .response
            .as_ref()
            .and_then(|r| r.choices.first())
            .and_then(|c| c.finish_reason.clone())
            .unwrap_or_else(|| "stop".to_owned());
        self.chunk(ChunkChoice::finished(reason))
    }

    /// `stream_options.include_usage`: a chunk with no choices and the usage.
    pub fn usage(&self, outcome: &Outcome) -> ChatCompletionChunk {
        let usage = outcome.response.as_ref().and_then(|r| r.usage.clone());
        ChatCompletionChunk::with_usage(&self.id, self.created, &self.model, usage)
    }
}

/// A reply event's delta as a chunk's.
fn chunk_delta(delta: &Delta) -> ChunkDelta {
    ChunkDelta {
        content: delta.content.clone(),
        reasoning_content: delta.reasoning.clone(),
        tool_calls: delta
            .tool_calls
            .as_ref()
            .map(|calls| calls.iter().map(ChunkToolCall::from).collect()),
        ..ChunkDelta::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn frame() -> ChunkFrame {
        ChunkFrame {
            id: "chatcmpl-1".into(),
            created: 1,
            model: "chat".into(),
        }
    }

    fn delta() -> Delta {
        Delta {
            v: 1,
            job_id: uuid::Uuid::now_v7(),
            processing: None,
            delivery: 1,
            seq: 1,
            attempt: 1,
            content: None,
            reasoning: None,
            tool_calls: None,
        }
    }

    fn value(chunk: ChatCompletionChunk) -> Value {
        serde_json::to_value(chunk).unwrap()
    }

    #[test]
    fn chunks_speak_openais_format() {
        let role = value(frame().role());
        assert_eq!(role["object"], "chat.completion.chunk");
        assert_eq!(role["choices"][0]["delta"]["role"], "assistant");
        let mut text = delta();
        text.content = Some("Hel".into());
        let chunk = value(frame().delta(&text));
        assert_eq!(chunk["choices"][0]["delta"], json!({"content": "Hel"}));
        assert_eq!(chunk["choices"][0]["finish_reason"], Value::Null);
        let mut call = delta();
        call.tool_calls = Some(vec![ToolCallDelta {
            index: 0,
            id: Some("call_1".into()),
            name: Some("lookup".into()),
            arguments: Some("{\"q\"".into()),
        }]);
        let chunk = value(frame().delta(&call));
        let first = &chunk["choices"][0]["delta"]["tool_calls"][0];
        assert_eq!(first["index"], 0);
        assert_eq!(first["id"], "call_1");
        assert_eq!(first["type"], "function");
        assert_eq!(first["function"]["name"], "lookup");
        assert_eq!(first["function"]["arguments"], "{\"q\"");
    }
}
