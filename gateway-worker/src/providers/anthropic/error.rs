//! Anthropic error bodies and in-stream error events -> classified `ProviderError`s.

use llmq_schemas::ErrorType;
use serde::Deserialize;

use crate::providers::ProviderError;

#[derive(Debug, Deserialize)]
pub(super) struct ErrorEnvelope {
    error: ErrorObject,
    #[serde(default)]
    request_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct ErrorObject {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    message: Option<String>,
}
pub(super) fn classify_envelope(status: Option<u16>, envelope: &ErrorEnvelope) -> ProviderError {
    let mut err = classify_object(status, &envelope.error);
    if let Some(request_id) = &envelope.request_id {
        err.message = format!("{} (request_id {request_id})", err.message);
    }
    err
}

pub(super) fn classify_object(status: Option<u16>, error: &ErrorObject) -> ProviderError {
    let message = error.message.clone().unwrap_or_else(|| "no message".into());
    let lower = message.to_ascii_lowercase();
    let class = match error.kind.as_deref() {
        Some("invalid_request_error") => {
            if lower.contains("prompt is too long")
                || lower.contains("exceed context limit")
                || lower.contains("context window")
            {
                ErrorType::ContextWindowExceeded
            } else if lower.contains("credit balance") || lower.contains("spend limit") {
                // Sent as a 400 invalid_request_error, but it is billing, not the request.
                ErrorType::QuotaExhausted
            } else {
                ErrorType::InvalidRequest
            }
        }
        Some("authentication_error" | "permission_error") => ErrorType::Auth,
        Some("billing_error") => ErrorType::QuotaExhausted,
        Some("not_found_error") => ErrorType::NotFound,
        Some("rate_limit_error") => ErrorType::RateLimited,
        Some("api_error") => ErrorType::Server,
        Some("timeout_error") => ErrorType::Timeout,
        Some("overloaded_error") => ErrorType::Overloaded,
        Some("request_too_large") => ErrorType::InvalidRequest,
        _ => status.map_or(ErrorType::Server, ProviderError::class_for_status),
    };
    let mut err = ProviderError::new(class, message).with_code(error.kind.clone());
    err.status = status;
    err
}

#[cfg(test)]
mod tests {
    use reqwest::header::{HeaderMap, HeaderValue};
    use serde_json::json;

    use crate::providers::Adapter;
    use crate::providers::anthropic::tests::adapter;
    use crate::providers::testing::assert_classifies;
    use llmq_schemas::ErrorType;

    fn error_body(kind: &str, message: &str) -> Vec<u8> {
        json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn classifies_every_documented_error() {
        let headers = HeaderMap::new();
        let cases = [
            (
                400,
                error_body(
                    "invalid_request_error",
                    "messages.0.content: Field required",
                ),
                ErrorType::InvalidRequest,
            ),
            (
                400,
                error_body(
                    "invalid_request_error",
                    "prompt is too long: 208310 tokens > 200000 maximum",
                ),
                ErrorType::ContextWindowExceeded,
            ),
            (
                400,
                error_body(
                    "invalid_request_error",
                    "input length and `max_tokens` exceed context limit: 187254 + 20000 > 200000, decrease input length or `max_tokens` and try again",
                ),
                ErrorType::ContextWindowExceeded,
            ),
            (
                400,
                error_body(
                    "invalid_request_error",
                    "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.",
                ),
                ErrorType::QuotaExhausted,
            ),
            (
                401,
                error_body("authentication_error", "invalid x-api-key"),
                ErrorType::Auth,
            ),
            (
                402,
                error_body("billing_error", "Your credit balance is too low."),
                ErrorType::QuotaExhausted,
            ),
            (
                403,
                error_body(
                    "permission_error",
                    "Your API key does not have permission to use the specified resource.",
                ),
                ErrorType::Auth,
            ),
            (
                404,
                error_body("not_found_error", "model: claude-9"),
                ErrorType::NotFound,
            ),
            (
                413,
                error_body(
                    "request_too_large",
                    "Request exceeds the maximum allowed number of bytes.",
                ),
                ErrorType::InvalidRequest,
            ),
            (
                413,
                b"<html>413 Request Entity Too Large</html>".to_vec(),
                ErrorType::InvalidRequest,
            ),
            (
                429,
                error_body(
                    "rate_limit_error",
                    "This request would exceed the rate limit for your organization",
                ),
                ErrorType::RateLimited,
            ),
            (
                500,
                error_body("api_error", "Internal server error"),
                ErrorType::Server,
            ),
            (
                504,
                error_body("timeout_error", "Request timed out"),
                ErrorType::Timeout,
            ),
            (
                529,
                error_body("overloaded_error", "Overloaded"),
                ErrorType::Overloaded,
            ),
            (529, Vec::new(), ErrorType::Overloaded),
            (503, b"upstream connect error".to_vec(), ErrorType::Server),
        ];
        assert_classifies(&adapter(), &cases);
        let err =
            adapter().classify_error(529, &headers, &error_body("overloaded_error", "Overloaded"));
        assert_eq!(err.code.as_deref(), Some("overloaded_error"));
        assert!(err.is_retryable());
        let err =
            adapter().classify_error(402, &headers, &error_body("billing_error", "no credit"));
        assert!(!err.is_retryable());
    }

    #[test]
    fn rate_limits_carry_the_retry_hint() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("13"));
        headers.insert("x-should-retry", HeaderValue::from_static("true"));
        headers.insert(
            "anthropic-ratelimit-requests-remaining",
            HeaderValue::from_static("0"),
        );
        headers.insert(
            "anthropic-ratelimit-requests-reset",
            HeaderValue::from_static("2099-01-01T00:00:00Z"),
        );
        let err =
            adapter().classify_error(429, &headers, &error_body("rate_limit_error", "slow down"));
        assert_eq!(err.class, ErrorType::RateLimited);
        assert_eq!(err.retry_after, Some(std::time::Duration::from_secs(13)));
        assert_eq!(err.should_retry, Some(true));

        let mut headers = HeaderMap::new();
        let reset = time::OffsetDateTime::now_utc() + time::Duration::seconds(20);
        let reset = reset
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        headers.insert(
            "anthropic-ratelimit-output-tokens-remaining",
            HeaderValue::from_static("0"),
        );
        headers.insert(
            "anthropic-ratelimit-output-tokens-reset",
            HeaderValue::from_str(&reset).unwrap(),
        );
        let err =
            adapter().classify_error(429, &headers, &error_body("rate_limit_error", "slow down"));
        let delay = err.retry_after.unwrap().as_secs_f64();
        assert!((18.0..=20.0).contains(&delay), "{delay}");
    }
}
