//! The Messages SSE stream decoder.

use llmq_schemas::ToolCallDelta;
use serde::Deserialize;

use super::error::{ErrorObject, classify_object};
use super::response::{StopDetails, WireUsage, finish_reason, normalize_usage, refusal};
use crate::providers::wire::{event_json, stream_end};
use crate::providers::{DeltaPart, ProviderError, SseEvent, StreamDecoder, StreamItem};

// ---- stream wire types ------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StreamEvent {
    MessageStart {
        message: StartMessage,
    },
    ContentBlockStart {
        index: u32,
        content_block: StartBlock,
    },
    ContentBlockDelta {
        index: u32,
        delta: BlockDelta,
    },
    ContentBlockStop {
        index: u32,
    },
    MessageDelta {
        #[serde(default)]
        delta: MessageDeltaBody,
        #[serde(default)]
        usage: Option<WireUsage>,
    },
    MessageStop {},
    Ping {},
    Error {
        error: ErrorObject,
    },
    /// Event types added later are ignored, as the API's versioning policy asks.
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Deserialize)]
struct StartMessage {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StartBlock {
    Text {
        #[serde(default)]
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
    },
    Thinking {
        #[serde(default)]
        thinking: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        #[serde(default)]
        partial_json: String,
    },
    ThinkingDelta {
        thinking: String,
    },
    /// `signature_delta`, `citations_delta` and later delta types.
    #[serde(other)]
    Other,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct MessageDeltaBody {
    stop_reason: Option<String>,
    stop_details: Option<StopDetails>,
}
// ---- decoder ----------------------------------------------------------------------------

/// Decodes the named Messages stream events.
#[derive(Debug, Default)]
pub(super) struct EventDecoder {
    done: bool,
    usage: WireUsage,
    /// Tool-use blocks by content-block index, in the order they started.
    tool_blocks: Vec<ToolBlock>,
    /// Text or a tool call was produced (a refusal after that keeps it).
    answered: bool,
}

#[derive(Debug)]
struct ToolBlock {
    block: u32,
    tool: u32,
    has_arguments: bool,
}

fn content(text: String) -> StreamItem {
    StreamItem::Delta(DeltaPart {
        content: Some(text),
        ..DeltaPart::default()
    })
}

fn reasoning(text: String) -> StreamItem {
    StreamItem::Delta(DeltaPart {
        reasoning: Some(text),
        ..DeltaPart::default()
    })
}

fn tool_delta(delta: ToolCallDelta) -> StreamItem {
    StreamItem::Delta(DeltaPart {
        tool_calls: vec![delta],
        ..DeltaPart::default()
    })
}

impl StreamDecoder for EventDecoder {
    fn decode(&mut self, event: &SseEvent, out: &mut Vec<StreamItem>) -> Result<(), ProviderError> {
        let Some(event) = event_json::<StreamEvent>(event, "event")? else {
            return Ok(());
        };
        match event {
            StreamEvent::MessageStart { message } => self.message_start(message, out),
            StreamEvent::ContentBlockStart {
                index,
                content_block,
            } => self.block_start(index, content_block, out),
            StreamEvent::ContentBlockDelta { index, delta } => self.block_delta(index, delta, out),
            StreamEvent::ContentBlockStop { index } => self.block_stop(index, out),
            StreamEvent::MessageDelta { delta, usage } => self.message_delta(delta, usage, out)?,
            StreamEvent::MessageStop {} => self.done = true,
            StreamEvent::Error { error } => return Err(classify_object(None, &error)),
            StreamEvent::Ping {} | StreamEvent::Unknown => {}
        }
        Ok(())
    }

    fn is_done(&self) -> bool {
        self.done
    }

    fn finish(&mut self) -> Result<(), ProviderError> {
        stream_end(self.done, "message_stop")
    }
}

impl EventDecoder {
    fn tool_block(&mut self, block: u32) -> Option<&mut ToolBlock> {
        self.tool_blocks.iter_mut().find(|b| b.block == block)
    }

    /// Usage is cumulative: a report updates what the earlier ones said.
    fn usage(&mut self, usage: Option<WireUsage>, out: &mut Vec<StreamItem>) {
        if let Some(usage) = usage {
            self.usage.update(&usage);
            out.push(StreamItem::Usage(normalize_usage(&self.usage)));
        }
    }

    fn message_start(&mut self, message: StartMessage, out: &mut Vec<StreamItem>) {
        out.push(StreamItem::Meta {
            id: message.id,
            model: message.model,
            created: None,
        });
        self.usage(message.usage, out);
    }

    fn block_start(&mut self, index: u32, block: StartBlock, out: &mut Vec<StreamItem>) {
        match block {
            StartBlock::Text { text } if !text.is_empty() => {
                self.answered = true;
                out.push(content(text));
            }
            StartBlock::Thinking { thinking } if !thinking.is_empty() => {
                out.push(reasoning(thinking));
            }
            StartBlock::ToolUse { id, name } => {
                let tool = u32::try_from(self.tool_blocks.len()).unwrap_or(u32::MAX);
                self.tool_blocks.push(ToolBlock {
                    block: index,
                    tool,
                    has_arguments: false,
                });
                self.answered = true;
                out.push(tool_delta(ToolCallDelta {
                    index: tool,
                    id: Some(id),
                    name: Some(name),
                    arguments: None,
                }));
            }
            StartBlock::Text { .. } | StartBlock::Thinking { .. } | StartBlock::Other => {}
        }
    }

    fn block_delta(&mut self, index: u32, delta: BlockDelta, out: &mut Vec<StreamItem>) {
        match delta {
            BlockDelta::TextDelta { text } => {
                self.answered |= !text.is_empty();
                out.push(content(text));
            }
            BlockDelta::ThinkingDelta { thinking } => out.push(reasoning(thinking)),
            BlockDelta::InputJsonDelta { partial_json } => {
                if !partial_json.is_empty() {
                    out.extend(self.arguments(index, partial_json));
                }
            }
            BlockDelta::Other => {}
        }
    }

    /// A tool without arguments streams only `""`; the non-streaming answer says `{}`,
    /// and so must this one.
    fn block_stop(&mut self, index: u32, out: &mut Vec<StreamItem>) {
        if self
            .tool_block(index)
            .is_some_and(|block| !block.has_arguments)
        {
            out.extend(self.arguments(index, "{}".into()));
        }
    }

    /// Arguments text for the tool call of content block `index`, if it is one.
    fn arguments(&mut self, index: u32, arguments: String) -> Option<StreamItem> {
        let block = self.tool_block(index)?;
        block.has_arguments = true;
        Some(tool_delta(ToolCallDelta {
            index: block.tool,
            arguments: Some(arguments),
            ..ToolCallDelta::default()
        }))
    }

    fn message_delta(
        &mut self,
        delta: MessageDeltaBody,
        usage: Option<WireUsage>,
        out: &mut Vec<StreamItem>,
    ) -> Result<(), ProviderError> {
        self.usage(usage, out);
        if let Some(reason) = delta.stop_reason {
            if reason == "refusal" && !self.answered {
                return Err(refusal(delta.stop_details.as_ref(), &self.usage));
            }
            out.push(StreamItem::Finish(finish_reason(
                Some(&reason),
                !self.tool_blocks.is_empty(),
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use llmq_schemas::{ErrorType, Usage};
    use serde_json::{Value, json};

    use super::*;
    use crate::providers::Adapter;
    use crate::providers::accumulate::StreamAccumulator;
    use crate::providers::anthropic::tests::adapter;

    fn decode_stream(text: &[u8]) -> (Result<(), ProviderError>, StreamAccumulator) {
        crate::providers::testing::decode_stream(adapter().stream_decoder(), text, 11)
    }

    #[test]
    fn decodes_the_recorded_basic_stream() {
        let (end, acc) = decode_stream(include_bytes!(
            "../../../tests/fixtures/anthropic/basic_response.txt"
        ));
        end.unwrap();
        let done = acc.finish("unused");
        assert_eq!(done.response.text(), "Hello there!");
        assert_eq!(done.response.id, "msg_4QpJur2dWWDjF6C758FbBw5vm12BaVipnK");
        assert_eq!(done.response.model, "claude-3-opus-latest");
        assert_eq!(
            done.response.choices[0].finish_reason.as_deref(),
            Some("stop")
        );
        // output_tokens from message_delta replaces message_start's 1; input is kept.
        assert_eq!(done.usage, Some(Usage::new(11, 6)));
    }

    #[test]
    fn decodes_the_recorded_tool_use_stream_like_the_same_answer_unstreamed() {
        let (end, acc) = decode_stream(include_bytes!(
            "../../../tests/fixtures/anthropic/tool_use_response.txt"
        ));
        end.unwrap();
        let streamed = acc.finish("unused");
        let message = &streamed.response.choices[0].message;
        assert_eq!(
            message.content.as_deref(),
            Some("I'll check the current weather in Paris for you.")
        );
        let calls = message.tool_calls.clone().unwrap();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].id, "toolu_01NRLabsLyVHZPKxbKvkfSMn");
        assert_eq!(calls[0].function.name, "get_weather");
        assert_eq!(calls[0].function.arguments, r#"{"location": "Paris"}"#);
        assert_eq!(
            streamed.response.choices[0].finish_reason.as_deref(),
            Some("tool_calls")
        );

        // The same answer, non-streaming.
        let body = json!({"id": "msg_019Q1hrJbZG26Fb9BQhrkHEr", "type": "message", "role": "assistant",
            "model": "claude-sonnet-4-20250514",
            "content": [{"type": "text", "text": "I'll check the current weather in Paris for you."},
                        {"type": "tool_use", "id": "toolu_01NRLabsLyVHZPKxbKvkfSMn", "name": "get_weather", "input": {"location": "Paris"}}],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 377, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 65, "service_tier": "standard"}});
        let whole = adapter()
            .parse_response(body.to_string().as_bytes())
            .unwrap();
        assert_eq!(streamed.usage, whole.usage);
        assert_eq!(streamed.usage, Some(Usage::new(377, 65)));
        assert_eq!(
            streamed.response.choices[0].finish_reason,
            whole.response.choices[0].finish_reason
        );
        let whole_calls = whole.response.choices[0]
            .message
            .tool_calls
            .clone()
            .unwrap();
        let parse = |s: &str| serde_json::from_str::<Value>(s).unwrap();
        assert_eq!(
            parse(&calls[0].function.arguments),
            parse(&whole_calls[0].function.arguments)
        );
    }

    fn sse(events: &[Value]) -> Vec<u8> {
        let mut text = String::new();
        for event in events {
            let name = event["type"].as_str().unwrap();
            text.push_str(&format!("event: {name}\ndata: {event}\n\n"));
        }
        text.into_bytes()
    }

    #[test]
    fn cache_usage_thinking_and_argumentless_tools_stream_like_the_unstreamed_answer() {
        let stream = sse(&[
            json!({"type": "message_start", "message": {"id": "msg_c", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5", "content": [],
                "stop_reason": null, "usage": {"input_tokens": 12, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 2000, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Let me "}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "think."}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "EqQBCgIYAhIM"}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_a", "name": "now", "input": {}}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}}),
            json!({"type": "content_block_stop", "index": 1}),
            json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_b", "name": "lookup", "input": {}}}),
            json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{\"q\":"}}),
            json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "1}"}}),
            json!({"type": "content_block_stop", "index": 2}),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
                   "usage": {"output_tokens": 85, "input_tokens": null, "cache_read_input_tokens": null}}),
            json!({"type": "message_stop"}),
        ]);
        let (end, acc) = decode_stream(&stream);
        end.unwrap();
        let streamed = acc.finish("m");
        let message = &streamed.response.choices[0].message;
        assert_eq!(message.reasoning_content.as_deref(), Some("Let me think."));
        assert_eq!(message.content, None);
        let calls = message.tool_calls.clone().unwrap();
        assert_eq!(
            (calls[0].id.as_str(), calls[0].function.arguments.as_str()),
            ("toolu_a", "{}")
        );
        assert_eq!(
            (calls[1].id.as_str(), calls[1].function.arguments.as_str()),
            ("toolu_b", "{\"q\":1}")
        );

        let body = json!({"id": "msg_c", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": [{"type": "thinking", "thinking": "Let me think.", "signature": "EqQBCgIYAhIM"},
                        {"type": "tool_use", "id": "toolu_a", "name": "now", "input": {}},
                        {"type": "tool_use", "id": "toolu_b", "name": "lookup", "input": {"q": 1}}],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 12, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 2000, "output_tokens": 85}});
        let whole = adapter()
            .parse_response(body.to_string().as_bytes())
            .unwrap();
        assert_eq!(streamed.usage, whole.usage);
        assert_eq!(streamed.usage.unwrap().prompt_tokens, 2112);
        assert_eq!(streamed.usage.unwrap().cache_write_tokens, 100);
        assert_eq!(whole.response.choices[0].message.tool_calls, Some(calls));
        assert_eq!(whole.response.choices[0].message.content, None);
    }

    #[test]
    fn message_delta_input_counts_replace_message_start_counts() {
        let stream = sse(&[
            json!({"type": "message_start", "message": {"id": "m", "model": "c", "usage": {"input_tokens": 5, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "ok"}}),
            // Later additions to the protocol are ignored.
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "citations_delta", "citation": {"type": "char_location"}}}),
            json!({"type": "message_annotation", "anything": [1, 2]}),
            json!({"type": "message_delta", "delta": {"stop_reason": "max_tokens"},
                   "usage": {"input_tokens": 7, "cache_read_input_tokens": 3, "output_tokens": 2}}),
            json!({"type": "message_stop"}),
        ]);
        let (end, acc) = decode_stream(&stream);
        end.unwrap();
        let done = acc.finish("m");
        assert_eq!(
            done.response.choices[0].finish_reason.as_deref(),
            Some("length")
        );
        assert_eq!(done.response.text(), "ok");
        let usage = done.usage.unwrap();
        assert_eq!(
            (
                usage.prompt_tokens,
                usage.cached_prompt_tokens,
                usage.completion_tokens
            ),
            (10, 3, 2)
        );
    }

    #[test]
    fn a_refusal_reports_the_tokens_it_was_billed_for() {
        let refusal = sse(&[
            json!({"type": "message_start", "message": {"id": "m", "model": "c", "usage": {"input_tokens": 40, "cache_read_input_tokens": 2, "output_tokens": 1}}}),
            json!({"type": "message_delta",
                   "delta": {"stop_reason": "refusal", "stop_sequence": null,
                             "stop_details": {"type": "refusal", "category": "cyber", "explanation": "This request was declined because it could enable cyber harm."}},
                   "usage": {"output_tokens": 7}}),
            json!({"type": "message_stop"}),
        ]);
        let (end, acc) = decode_stream(&refusal);
        let err = end.unwrap_err();
        assert_eq!(err.class, ErrorType::ContentFiltered);
        assert_eq!(
            err.message,
            "the model refused to answer (stop_reason refusal, category cyber): This request was declined because it could enable cyber harm."
        );
        let billed = Usage {
            cached_prompt_tokens: 2,
            ..Usage::new(42, 7)
        };
        assert_eq!(err.reported_usage(), Some(billed));
        // The usage of the event that carried the refusal reached the accumulator too.
        assert_eq!(acc.usage(), Some(billed));
    }

    #[test]
    fn thinking_tokens_are_reasoning_tokens_inside_completion_tokens() {
        let stream = sse(&[
            json!({"type": "message_start", "message": {"id": "m", "model": "c", "usage": {"input_tokens": 5, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Hm."}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "ok"}}),
            json!({"type": "content_block_stop", "index": 1}),
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                   "usage": {"output_tokens": 30, "output_tokens_details": {"thinking_tokens": 24}}}),
            // A later report without the breakdown keeps it (usage is cumulative).
            json!({"type": "message_delta", "delta": {}, "usage": {"output_tokens": 31}}),
            json!({"type": "message_stop"}),
        ]);
        let (end, acc) = decode_stream(&stream);
        end.unwrap();
        let usage = acc.finish("m").usage.unwrap();
        assert_eq!(
            (
                usage.completion_tokens,
                usage.reasoning_tokens,
                usage.total_tokens
            ),
            (31, 24, 36)
        );
    }

    #[test]
    fn error_events_refusals_cut_and_malformed_streams_fail() {
        let start = json!({"type": "message_start", "message": {"id": "m", "model": "c", "usage": {"input_tokens": 5, "output_tokens": 1}}});
        let mut stream = sse(std::slice::from_ref(&start));
        stream.extend_from_slice(b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n");
        let (end, _) = decode_stream(&stream);
        let err = end.unwrap_err();
        assert_eq!(err.class, ErrorType::Overloaded);
        assert!(err.is_retryable());

        let refusal = sse(&[
            start.clone(),
            json!({"type": "message_delta", "delta": {"stop_reason": "refusal"}, "usage": {"output_tokens": 0}}),
            json!({"type": "message_stop"}),
        ]);
        let (end, _) = decode_stream(&refusal);
        assert_eq!(end.unwrap_err().class, ErrorType::ContentFiltered);

        let late_refusal = sse(&[
            start.clone(),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Sure, "}}),
            json!({"type": "message_delta", "delta": {"stop_reason": "refusal"}, "usage": {"output_tokens": 3}}),
            json!({"type": "message_stop"}),
        ]);
        let (end, acc) = decode_stream(&late_refusal);
        end.unwrap();
        let done = acc.finish("m");
        assert_eq!(
            done.response.choices[0].finish_reason.as_deref(),
            Some("content_filter")
        );
        assert_eq!(done.response.text(), "Sure, ");

        let cut = sse(&[
            start.clone(),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}}),
        ]);
        let (end, acc) = decode_stream(&cut);
        assert_eq!(end.unwrap_err().class, ErrorType::Network);
        assert_eq!(acc.content(), "Hel");
        // What message_start said is kept for billing a cut stream.
        assert_eq!(acc.usage(), Some(Usage::new(5, 1)));

        let mut malformed = sse(&[start]);
        malformed.extend_from_slice(b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\n\n");
        let (end, _) = decode_stream(&malformed);
        assert_eq!(end.unwrap_err().class, ErrorType::MalformedResponse);
    }
}
