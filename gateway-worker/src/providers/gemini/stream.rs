//! The `streamGenerateContent?alt=sse` stream decoder.

use llmq_schemas::ToolCallDelta;

use super::error::classify_status;
use super::response::{
    Candidate, CandidateContent, GenerateResponse, PartOutput, blocked, finish_reason,
    normalize_usage, part_output,
};
use super::signature::call_id;
use crate::providers::wire::{event_json, stream_end};
use crate::providers::{DeltaPart, ProviderError, SseEvent, StreamDecoder, StreamItem};

/// Decodes `streamGenerateContent?alt=sse` chunks, each a partial `GenerateContentResponse`.
#[derive(Debug, Default)]
pub(super) struct ChunkStream {
    meta_sent: bool,
    /// Tool calls so far (Gemini sends each call whole, in one part).
    calls: usize,
    answered: bool,
    finished: bool,
}

impl StreamDecoder for ChunkStream {
    fn decode(&mut self, event: &SseEvent, out: &mut Vec<StreamItem>) -> Result<(), ProviderError> {
        let Some(chunk) = event_json::<GenerateResponse>(event, "chunk")? else {
            return Ok(());
        };
        if let Some(error) = &chunk.error {
            return Err(classify_status(None, error));
        }
        // First: a chunk that says the prompt or answer was blocked still reports the
        // tokens it was billed for.
        if let Some(usage) = &chunk.usage_metadata {
            out.push(StreamItem::Usage(normalize_usage(usage)));
        }
        out.extend(self.meta(chunk.response_id, chunk.model_version));
        if chunk.candidates.is_empty()
            && let Some(reason) = chunk.prompt_feedback.and_then(|f| f.block_reason)
        {
            return Err(blocked("the prompt", &reason));
        }
        // Only the first candidate is streamed (as for OpenAI).
        let first = chunk
            .candidates
            .into_iter()
            .find(|c| c.index.unwrap_or(0) == 0);
        match first {
            Some(candidate) => self.candidate(candidate, out),
            None => Ok(()),
        }
    }

    /// There is no end marker: only the end of the body ends the stream.
    fn is_done(&self) -> bool {
        false
    }

    fn finish(&mut self) -> Result<(), ProviderError> {
        stream_end(self.finished, "a finishReason")
    }
}

impl ChunkStream {
    /// The response's identity, from the first chunk that carries any.
    fn meta(&mut self, id: Option<String>, model: Option<String>) -> Option<StreamItem> {
        if self.meta_sent || (id.is_none() && model.is_none()) {
            return None;
        }
        self.meta_sent = true;
        Some(StreamItem::Meta {
            id,
            model,
            created: None,
        })
    }

    /// The first candidate's output in this chunk, and its finish.
    fn candidate(
        &mut self,
        candidate: Candidate,
        out: &mut Vec<StreamItem>,
    ) -> Result<(), ProviderError> {
        let delta = self.delta(candidate.content);
        self.answered |= delta.content.is_some() || !delta.tool_calls.is_empty();
        if !delta.is_empty() {
            out.push(StreamItem::Delta(delta));
        }
        let Some(reason) = candidate.finish_reason.as_deref() else {
            return Ok(());
        };
        let finish = finish_reason(Some(reason), self.calls > 0);
        if finish == "content_filter" && !self.answered {
            return Err(blocked("the answer", reason));
        }
        self.finished = true;
        out.push(StreamItem::Finish(finish.to_owned()));
        Ok(())
    }

    fn delta(&mut self, content: Option<CandidateContent>) -> DeltaPart {
        let mut delta = DeltaPart::default();
        for part in content.map(|c| c.parts).unwrap_or_default() {
            match part_output(part) {
                PartOutput::Text(text) => {
                    delta
                        .content
                        .get_or_insert_with(String::new)
                        .push_str(&text);
                }
                PartOutput::Thought(text) => {
                    delta
                        .reasoning
                        .get_or_insert_with(String::new)
                        .push_str(&text);
                }
                PartOutput::Call {
                    name,
                    arguments,
                    signature,
                } => delta.tool_calls.push(self.call(name, arguments, signature)),
                PartOutput::Nothing => {}
            }
        }
        delta
    }

    /// The next tool call of the answer (Gemini sends each call whole, in one part).
    fn call(
        &mut self,
        name: String,
        arguments: String,
        signature: Option<String>,
    ) -> ToolCallDelta {
        let call = ToolCallDelta {
            index: u32::try_from(self.calls).unwrap_or(u32::MAX),
            id: Some(call_id(self.calls, signature.as_deref())),
            name: Some(name),
            arguments: Some(arguments),
        };
        self.calls += 1;
        call
    }
}

#[cfg(test)]
mod tests {
    use llmq_schemas::{ErrorType, Usage};
    use serde_json::{Value, json};

    use super::*;
    use crate::providers::Adapter;
    use crate::providers::accumulate::StreamAccumulator;
    use crate::providers::gemini::tests::{TOOL_RESPONSE, adapter, expected_usage};

    fn decode_stream(text: &str) -> (Result<(), ProviderError>, StreamAccumulator) {
        crate::providers::testing::decode_stream(adapter().stream_decoder(), text.as_bytes(), 13)
    }

    fn sse(chunks: &[Value]) -> String {
        chunks
            .iter()
            .map(|c| format!("data: {c}\r\n\r\n"))
            .collect()
    }

    #[test]
    fn streams_text_like_the_same_answer_unstreamed() {
        let usage = |candidates: u64| json!({"promptTokenCount": 8, "candidatesTokenCount": candidates, "totalTokenCount": 8 + candidates + 12, "thoughtsTokenCount": 12, "cachedContentTokenCount": 4});
        let stream = sse(&[
            json!({"candidates": [{"content": {"parts": [{"text": "Thinking...", "thought": true}], "role": "model"}, "index": 0}], "usageMetadata": usage(0), "modelVersion": "gemini-2.5-flash", "responseId": "r1"}),
            json!({"candidates": [{"content": {"parts": [{"text": "Hello"}], "role": "model"}, "index": 0}], "usageMetadata": usage(1), "modelVersion": "gemini-2.5-flash", "responseId": "r1"}),
            json!({"candidates": [{"content": {"parts": [{"text": " world", "thoughtSignature": "Cq0B"}], "role": "model"}, "finishReason": "STOP", "index": 0}], "usageMetadata": usage(2), "modelVersion": "gemini-2.5-flash", "responseId": "r1"}),
        ]);
        let (end, acc) = decode_stream(&stream);
        end.unwrap();
        let streamed = acc.finish("unused");
        assert_eq!(streamed.response.id, "r1");
        assert_eq!(streamed.response.model, "gemini-2.5-flash");
        assert_eq!(streamed.response.text(), "Hello world");
        assert_eq!(
            streamed.response.choices[0]
                .message
                .reasoning_content
                .as_deref(),
            Some("Thinking...")
        );
        assert_eq!(
            streamed.response.choices[0].finish_reason.as_deref(),
            Some("stop")
        );

        let whole = json!({"candidates": [{"content": {"parts": [{"text": "Thinking...", "thought": true}, {"text": "Hello world", "thoughtSignature": "Cq0B"}], "role": "model"}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": usage(2), "modelVersion": "gemini-2.5-flash", "responseId": "r1"});
        let whole = adapter()
            .parse_response(whole.to_string().as_bytes())
            .unwrap();
        assert_eq!(streamed.usage, whole.usage);
        assert_eq!(
            streamed.usage,
            Some(Usage {
                prompt_tokens: 8,
                completion_tokens: 14,
                total_tokens: 22,
                cached_prompt_tokens: 4,
                cache_write_tokens: 0,
                reasoning_tokens: 12,
            })
        );
        assert_eq!(streamed.response.choices, whole.response.choices);
    }

    #[test]
    fn streams_function_calls_like_the_same_answer_unstreamed() {
        let response: Value = serde_json::from_str(TOOL_RESPONSE).unwrap();
        let parts = response["candidates"][0]["content"]["parts"]
            .as_array()
            .unwrap()
            .clone();
        let chunk = |parts: &[Value], last: bool| {
            let mut candidate = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
            if last {
                candidate["finishReason"] = json!("STOP");
            }
            json!({"candidates": [candidate], "usageMetadata": response["usageMetadata"], "modelVersion": "gemini-2.5-flash", "responseId": "mAitaPWkLsfs7M8P0tqf0Qc"})
        };
        let stream = sse(&[
            chunk(&parts[..2], false),
            chunk(&parts[2..3], false),
            chunk(&parts[3..], true),
        ]);
        let (end, acc) = decode_stream(&stream);
        end.unwrap();
        let streamed = acc.finish("unused");
        let whole = adapter().parse_response(TOOL_RESPONSE.as_bytes()).unwrap();
        assert_eq!(streamed.response.choices, whole.response.choices);
        assert_eq!(streamed.usage, whole.usage);
        assert_eq!(streamed.usage, Some(expected_usage()));
    }

    #[test]
    fn blocked_prompts_and_answers_report_the_tokens_they_were_billed_for() {
        let blocked = json!({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}, "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9}});
        let (end, acc) = decode_stream(&sse(&[blocked]));
        assert_eq!(end.unwrap_err().class, ErrorType::ContentFiltered);
        assert_eq!(acc.usage(), Some(Usage::new(9, 0)));

        let bare_safety = json!({"candidates": [{"content": {"parts": [], "role": "model"}, "finishReason": "SAFETY"}],
            "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 2, "totalTokenCount": 11}});
        let (end, acc) = decode_stream(&sse(&[bare_safety]));
        assert_eq!(end.unwrap_err().class, ErrorType::ContentFiltered);
        assert_eq!(acc.usage(), Some(Usage::new(9, 2)));
    }

    #[test]
    fn cut_blocked_error_and_malformed_streams_fail() {
        let text = json!({"candidates": [{"content": {"parts": [{"text": "Hel"}], "role": "model"}}], "usageMetadata": {"promptTokenCount": 3, "totalTokenCount": 3}});
        let (end, acc) = decode_stream(&sse(std::slice::from_ref(&text)));
        assert_eq!(end.unwrap_err().class, ErrorType::Network);
        assert_eq!(acc.content(), "Hel");

        let blocked = json!({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}, "usageMetadata": {"promptTokenCount": 3, "totalTokenCount": 3}});
        let (end, _) = decode_stream(&sse(&[blocked]));
        assert_eq!(end.unwrap_err().class, ErrorType::ContentFiltered);

        let bare_safety = json!({"candidates": [{"content": {"parts": [{"text": ""}], "role": "model"}, "finishReason": "SAFETY"}]});
        let (end, _) = decode_stream(&sse(&[bare_safety]));
        assert_eq!(end.unwrap_err().class, ErrorType::ContentFiltered);

        let late_safety = json!({"candidates": [{"content": {"parts": [], "role": "model"}, "finishReason": "SAFETY"}]});
        let (end, acc) = decode_stream(&sse(&[text.clone(), late_safety]));
        end.unwrap();
        assert_eq!(
            acc.finish("m").response.choices[0].finish_reason.as_deref(),
            Some("content_filter")
        );

        let overloaded = "data: {\"error\":{\"code\":503,\"message\":\"The model is overloaded. Please try again later.\",\"status\":\"UNAVAILABLE\"}}\r\n\r\n";
        let (end, _) = decode_stream(&format!("{}{overloaded}", sse(std::slice::from_ref(&text))));
        let err = end.unwrap_err();
        assert_eq!(err.class, ErrorType::Server);
        assert!(err.is_retryable());

        let malformed = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\r\n\r\n";
        let (end, _) = decode_stream(&format!("{}{malformed}", sse(&[text])));
        assert_eq!(end.unwrap_err().class, ErrorType::MalformedResponse);
    }
}
