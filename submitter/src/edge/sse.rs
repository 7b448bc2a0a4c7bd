//! Reply events as OpenAI `chat.completion.chunk`s: role first, then content, reasoning
//! and tool-call deltas with their `index`, the finish reason, and the usage chunk when
//! asked for. Pure, so the wire format is unit-tested.

use llmq_schemas::{Delta, Outcome, ToolCallDelta};
use serde_json::{Value, json};

/// What every chunk of one answer shares.
#[derive(Debug, Clone)]
pub struct ChunkFrame {
    pub id: String,
    pub created: i64,
    pub model: String,
}

impl ChunkFrame {
    fn chunk(&self, delta: Value, finish_reason: Value) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        })
    }

    /// The first chunk: the assistant's role, no content yet.
    pub fn role(&self) -> Value {
        self.chunk(json!({"role": "assistant", "content": ""}), Value::Null)
    }

    /// One delta's content, reasoning and tool calls.
    pub fn delta(&self, delta: &Delta) -> Value {
        let mut body = serde_json::Map::new();
        if let Some(content) = &delta.content {
            body.insert("content".into(), json!(content));
        }
        if let Some(reasoning) = &delta.reasoning {
            body.insert("reasoning_content".into(), json!(reasoning));
        }
        if let Some(calls) = &delta.tool_calls {
            let calls: Vec<Value> = calls
                .iter()
                .map(|call| {
                    let mut function = serde_json::Map::new();
                    if let Some(name) = &call.name {
                        function.insert("name".into(), json!(name));
                    }
                    function.insert(
                        "arguments".into(),
                        json!(call.arguments.clone().unwrap_or_default()),
                    );
                    let mut out = json!({"index": call.index, "function": function});
                    if let Some(id) = &call.id {
                        out["id"] = json!(id);
                        out["type"] = json!("function");
                    }
                    out
                })
                .collect();
            body.insert("tool_calls".into(), Value::Array(calls));
        }
        self.chunk(Value::Object(body), Value::Null)
    }

    /// A stored answer as one delta chunk (`None` when it has no text, reasoning or tool
    /// call): for a stream whose outcome came before any of its deltas had gone out, so
    /// the client reads the whole answer even if deltas were lost on the way.
    pub fn whole(&self, outcome: &Outcome) -> Option<Value> {
        let message = &outcome.response.as_ref()?.choices.first()?.message;
        let calls: Vec<ToolCallDelta> = message
            .tool_calls
            .iter()
            .flatten()
            .zip(0..)
            .map(|(call, index)| ToolCallDelta {
                index,
                id: Some(call.id.clone()),
                name: Some(call.function.name.clone()),
                arguments: Some(call.function.arguments.clone()),
            })
            .collect();
        let nonempty = |text: &Option<String>| text.clone().filter(|t| !t.is_empty());
        let delta = Delta {
            v: llmq_schemas::PROTOCOL_VERSION,
            job_id: outcome.job_id,
            processing: None,
            delivery: outcome.delivery,
            seq: 0,
            attempt: 0,
            content: nonempty(&message.content),
            reasoning: nonempty(&message.reasoning_content),
            tool_calls: (!calls.is_empty()).then_some(calls),
        };
        let empty = delta.content.is_none() && delta.reasoning.is_none();
        (!empty || delta.tool_calls.is_some()).then(|| self.delta(&delta))
    }

    /// The last content chunk: an empty delta with the finish reason.
    pub fn finish(&self, outcome: &Outcome) -> Value {
        let reason = outcome
            .response
            .as_ref()
            .and_then(|r| r.choices.first())
            .and_then(|c| c.finish_reason.clone())
            .map_or(json!("stop"), |r| json!(r));
        self.chunk(json!({}), reason)
    }

    /// `stream_options.include_usage`: a chunk with no choices and the usage.
    pub fn usage(&self, outcome: &Outcome) -> Value {
        let usage = outcome.response.as_ref().and_then(|r| r.usage.clone());
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn chunks_speak_openais_format() {
        let role = frame().role();
        assert_eq!(role["object"], "chat.completion.chunk");
        assert_eq!(role["choices"][0]["delta"]["role"], "assistant");
        let mut text = delta();
        text.content = Some("Hel".into());
        let chunk = frame().delta(&text);
        assert_eq!(chunk["choices"][0]["delta"], json!({"content": "Hel"}));
        assert_eq!(chunk["choices"][0]["finish_reason"], Value::Null);
        let mut call = delta();
        call.tool_calls = Some(vec![ToolCallDelta {
            index: 0,
            id: Some("call_1".into()),
            name: Some("lookup".into()),
            arguments: Some("{\"q\"".into()),
        }]);
        let chunk = frame().delta(&call);
        let first = &chunk["choices"][0]["delta"]["tool_calls"][0];
        assert_eq!(first["index"], 0);
        assert_eq!(first["id"], "call_1");
        assert_eq!(first["type"], "function");
        assert_eq!(first["function"]["name"], "lookup");
        assert_eq!(first["function"]["arguments"], "{\"q\"");
    }
}
