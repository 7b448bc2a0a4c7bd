//! `POST /v1/chat/completions` as an HTTP client sends it.
//!
//! Three of the body's fields are not the job's request but say where it runs and how its
//! answer is delivered (`model`, `stream`, `stream_options`); they are typed here, around
//! the [`ChatRequest`] the job carries. One parse of the body gives both, so nothing reads
//! the body twice or through a `serde_json::Value`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::request::ChatRequest;

/// The body of `POST /v1/chat/completions`. Every field besides `model`, `stream` and
/// `stream_options` is the job's request, unknown ones included (kept in
/// `request.extra`, forwarded untouched to OpenAI-compatible providers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChatCompletionRequest {
    /// The logical model: where the job runs.
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// The rest of the body. Its own `model`, `stream` and `stream_options` stay empty
    /// (the fields above take them).
    #[serde(flatten)]
    pub request: ChatRequest,
}

impl ChatCompletionRequest {
    /// Whether the answer is to be streamed as chunks.
    pub fn streams(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// Whether a streamed answer ends with a usage chunk (`stream_options.include_usage`).
    pub fn includes_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|options| options.include_usage)
            .unwrap_or(false)
    }
}

/// `stream_options`: only `include_usage` means something to llmq; the rest is kept.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StreamOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn one_parse_gives_the_model_the_delivery_and_the_request_with_unknown_fields_kept() {
        let body = json!({
            "model": "chat",
            "stream": true,
            "stream_options": {"include_usage": true, "include_obfuscation": false},
            "messages": [{"role": "user", "content": "hi", "x_vendor": 1}],
            "reasoning_effort": "low",
            "logit_bias": {"50256": -100},
            "max_completion_tokens": 5
        });
        let parsed: ChatCompletionRequest = serde_json::from_value(body.clone()).unwrap();
        assert_eq!(parsed.model, "chat");
        assert!(parsed.streams() && parsed.includes_usage());
        let request = &parsed.request;
        assert_eq!(request.model, None);
        assert_eq!(request.stream, None);
        assert_eq!(request.extra["reasoning_effort"], "low");
        assert_eq!(request.extra["logit_bias"], json!({"50256": -100}));
        assert_eq!(request.messages[0].extra["x_vendor"], 1);
        assert_eq!(request.max_output_tokens(), Some(5));
        assert_eq!(serde_json::to_value(&parsed).unwrap(), body);
    }

    #[test]
    fn model_is_required_and_the_delivery_fields_are_optional() {
        let plain: ChatCompletionRequest =
            serde_json::from_value(json!({"model": "m", "messages": [], "stream": null})).unwrap();
        assert!(!plain.streams() && !plain.includes_usage());
        for bad in [
            json!({"messages": []}),
            json!({"model": 7, "messages": []}),
            json!({"model": "m", "messages": [], "stream": "yes"}),
        ] {
            assert!(
                serde_json::from_value::<ChatCompletionRequest>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }
}
