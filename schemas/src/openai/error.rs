//! OpenAI's error body: `{"error": {"message", "type", "param", "code"}}`. The OpenAI SDKs
//! read `message` into their exception and branch on the HTTP status; callers branch on
//! `code`. Also the last event of a stream that fails after its head went out.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    pub error: ErrorObject,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorObject {
    pub message: String,
    /// `invalid_request_error`, `rate_limit_exceeded`, `server_error`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// The request field at fault, when one is; null otherwise.
    #[serde(default)]
    pub param: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
}

impl ErrorBody {
    /// An error of `kind` with `code`, naming no parameter.
    pub fn new(
        message: impl Into<String>,
        kind: impl Into<String>,
        code: impl Into<String>,
    ) -> Self {
        Self {
            error: ErrorObject {
                message: message.into(),
                kind: kind.into(),
                param: None,
                code: Some(code.into()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_error_has_openais_shape_with_param_and_code_always_present() {
        let body = ErrorBody::new("no such model", "invalid_request_error", "model_not_found");
        let value = serde_json::to_value(&body).unwrap();
        assert_eq!(
            value,
            json!({"error": {"message": "no such model", "type": "invalid_request_error",
                             "param": null, "code": "model_not_found"}})
        );
        assert_eq!(serde_json::from_value::<ErrorBody>(value).unwrap(), body);
        let bare: ErrorBody =
            serde_json::from_value(json!({"error": {"message": "m", "type": "t"}})).unwrap();
        assert_eq!((bare.error.param, bare.error.code), (None, None));
    }
}
