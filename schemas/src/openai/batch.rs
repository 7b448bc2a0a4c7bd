//! The Batch API's files: one JSON object per line.
//!
//! An input line is one request (`custom_id`, `method`, `url`, `body`); an output line is
//! its answer: the HTTP status, request id and body the request would have had
//! (`response`), or, for a request that failed without an HTTP answer, an `error`. Both
//! keys are always written, one of them null, as OpenAI writes them. Lines are matched by
//! `custom_id`, never by position: outputs come in any order.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::chat_request::ChatCompletionRequest;
use super::completion::ChatCompletion;
use super::error::ErrorBody;

/// One request of a batch input file. `B` is the endpoint's request body: for
/// `/v1/chat/completions` (the default) a [`ChatCompletionRequest`]; a reader that must
/// check `url` before it knows the body's shape can read it as `serde_json::Value`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BatchInputLine<B = ChatCompletionRequest> {
    /// The caller's id for the request, unique within the file.
    pub custom_id: String,
    /// Always `POST`.
    pub method: String,
    /// The endpoint, relative: `/v1/chat/completions`.
    pub url: String,
    pub body: B,
}

/// One answer of a batch output (or error) file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BatchOutputLine {
    /// This line's own id (`batch_req_...`).
    pub id: String,
    /// The input line's `custom_id`.
    pub custom_id: String,
    /// The HTTP answer the request got, success or not; null when it got none.
    #[serde(default)]
    pub response: Option<BatchResponse>,
    /// Why the request got no HTTP answer; null when it got one.
    #[serde(default)]
    pub error: Option<BatchError>,
}

impl BatchOutputLine {
    /// The line of a request answered with `status_code` and `body`.
    pub fn answered(
        id: String,
        custom_id: String,
        status_code: u16,
        request_id: String,
        body: BatchResponseBody,
    ) -> Self {
        Self {
            id,
            custom_id,
            response: Some(BatchResponse {
                status_code,
                request_id,
                body,
            }),
            error: None,
        }
    }

    /// The line of a request that got no HTTP answer.
    pub fn failed(id: String, custom_id: String, code: String, message: String) -> Self {
        Self {
            id,
            custom_id,
            response: None,
            error: Some(BatchError { code, message }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BatchResponse {
    pub status_code: u16,
    /// The id of the request (`x-request-id` of a synchronous call).
    pub request_id: String,
    pub body: BatchResponseBody,
}

/// A response body: the completion (2xx), or the error body any other status carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum BatchResponseBody {
    Completion(Box<ChatCompletion>),
    Error(ErrorBody),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BatchError {
    pub code: String,
    pub message: String,
}

/// `POST /v1/batches`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CreateBatchRequest {
    pub input_file_id: String,
    pub endpoint: String,
    pub completion_window: String,
    #[serde(default)]
    pub metadata: Option<Map<String, Value>>,
}

/// OpenAI's batch object (`GET /v1/batches/{id}`). Times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BatchObject {
    pub id: String,
    /// Always `batch`.
    pub object: String,
    pub endpoint: String,
    pub errors: Option<BatchErrors>,
    pub input_file_id: String,
    pub completion_window: String,
    /// `validating`, `failed`, `in_progress`, `finalizing`, `completed`, `expired`,
    /// `cancelling`, `cancelled`.
    pub status: String,
    pub output_file_id: Option<String>,
    pub error_file_id: Option<String>,
    pub created_at: i64,
    pub in_progress_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub finalizing_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub failed_at: Option<i64>,
    pub expired_at: Option<i64>,
    pub cancelling_at: Option<i64>,
    pub cancelled_at: Option<i64>,
    pub request_counts: RequestCounts,
    pub metadata: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RequestCounts {
    pub total: u64,
    pub completed: u64,
    pub failed: u64,
}

/// Why a batch failed: its input's problems.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BatchErrors {
    /// Always `list`.
    pub object: String,
    pub data: Vec<BatchErrorData>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BatchErrorData {
    pub code: String,
    pub message: String,
    pub param: Option<String>,
    pub line: Option<u64>,
}

/// OpenAI's file object (`POST /v1/files`, `GET /v1/files/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FileObject {
    pub id: String,
    /// Always `file`.
    pub object: String,
    pub bytes: u64,
    pub created_at: i64,
    pub filename: String,
    /// `batch` (an input), `batch_output` (an output or errors file).
    pub purpose: String,
    /// Always `processed`: a file is whole once stored.
    pub status: String,
}

/// `DELETE /v1/files/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FileDeleted {
    pub id: String,
    /// Always `file`.
    pub object: String,
    pub deleted: bool,
}

/// A page of a list (`GET /v1/batches`, `GET /v1/files`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ListPage<T> {
    /// Always `list`.
    pub object: String,
    pub data: Vec<T>,
    pub first_id: Option<String>,
    pub last_id: Option<String>,
    pub has_more: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn an_input_line_is_a_chat_completion_request_with_its_envelope() {
        let line = json!({"custom_id": "request-1", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "chat", "messages": [{"role": "user", "content": "Hello"}],
                     "max_tokens": 100, "seed": 7}});
        let parsed: BatchInputLine = serde_json::from_value(line.clone()).unwrap();
        assert_eq!(parsed.custom_id, "request-1");
        assert_eq!(
            (parsed.method.as_str(), parsed.url.as_str()),
            ("POST", "/v1/chat/completions")
        );
        assert_eq!(parsed.body.model, "chat");
        assert_eq!(parsed.body.request.max_tokens, Some(100));
        assert_eq!(serde_json::to_value(&parsed).unwrap(), line);
        let untyped: BatchInputLine<Value> = serde_json::from_value(line.clone()).unwrap();
        assert_eq!(untyped.body, line["body"]);
        assert!(serde_json::from_value::<BatchInputLine>(json!({"custom_id": "x"})).is_err());
    }

    #[test]
    fn an_output_line_holds_a_response_or_an_error_and_writes_both_keys() {
        let completion = json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 5,
            "model": "chat", "choices": [{"index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": "Hi"}}]});
        let answered = json!({"id": "batch_req_1", "custom_id": "request-1",
            "response": {"status_code": 200, "request_id": "req_1", "body": completion},
            "error": null});
        let line: BatchOutputLine = serde_json::from_value(answered.clone()).unwrap();
        let body = &line.response.as_ref().unwrap().body;
        assert!(matches!(body, BatchResponseBody::Completion(c) if c.text() == "Hi"));
        assert_eq!(serde_json::to_value(&line).unwrap(), answered);

        let refused = json!({"id": "batch_req_2", "custom_id": "request-2",
            "response": {"status_code": 400, "request_id": "req_2", "body": {"error": {
                "message": "bad", "type": "invalid_request_error", "param": null,
                "code": "invalid_request"}}},
            "error": null});
        let line: BatchOutputLine = serde_json::from_value(refused.clone()).unwrap();
        let body = &line.response.as_ref().unwrap().body;
        assert!(matches!(body, BatchResponseBody::Error(e) if e.error.message == "bad"));
        assert_eq!(serde_json::to_value(&line).unwrap(), refused);

        let failed = BatchOutputLine::failed(
            "batch_req_3".into(),
            "request-3".into(),
            "batch_expired".into(),
            "not run within the completion window".into(),
        );
        assert_eq!(
            serde_json::to_value(&failed).unwrap(),
            json!({"id": "batch_req_3", "custom_id": "request-3", "response": null,
                   "error": {"code": "batch_expired",
                             "message": "not run within the completion window"}})
        );
    }
}
