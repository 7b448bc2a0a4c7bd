//! `google.rpc.Status` error bodies and in-stream errors -> classified `ProviderError`s.

use llmq_schemas::ErrorType;
use serde::Deserialize;
use serde_json::Value;

use crate::providers::ProviderError;
use crate::providers::retry_hint;

#[derive(Debug, Deserialize)]
pub(super) struct ErrorEnvelope {
    pub(super) error: Status,
}

/// `google.rpc.Status`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Status {
    code: Option<u16>,
    message: Option<String>,
    status: Option<String>,
    details: Vec<Value>,
}

pub(super) fn classify_status(http_status: Option<u16>, error: &Status) -> ProviderError {
    let message = error.message.clone().unwrap_or_else(|| "no message".into());
    let lower = message.to_ascii_lowercase();
    let status = http_status.or(error.code);
    let class = match error.status.as_deref() {
        Some("RESOURCE_EXHAUSTED") if quota_exhausted(&error.details) => ErrorType::QuotaExhausted,
        Some("RESOURCE_EXHAUSTED") => ErrorType::RateLimited,
        Some("INVALID_ARGUMENT") => {
            if error_reason(&error.details).is_some_and(|r| r.starts_with("API_KEY_"))
                || lower.contains("api key not valid")
            {
                ErrorType::Auth
            } else if lower.contains("exceeds the maximum number of tokens")
                || (lower.contains("token count") && lower.contains("exceeds"))
            {
                ErrorType::ContextWindowExceeded
            } else {
                ErrorType::InvalidRequest
            }
        }
        Some("FAILED_PRECONDITION" | "PERMISSION_DENIED" | "UNAUTHENTICATED") => ErrorType::Auth,
        Some("NOT_FOUND") => ErrorType::NotFound,
        Some("DEADLINE_EXCEEDED") => ErrorType::Timeout,
        Some("UNAVAILABLE" | "INTERNAL" | "UNKNOWN" | "ABORTED" | "CANCELLED" | "DATA_LOSS") => {
            ErrorType::Server
        }
        _ => status.map_or(ErrorType::Server, ProviderError::class_for_status),
    };
    let mut err = ProviderError::new(class, message)
        .with_code(error.status.clone())
        .with_retry_after(retry_delay(&error.details));
    err.status = status;
    err
}

fn detail_type(detail: &Value) -> &str {
    detail.get("@type").and_then(Value::as_str).unwrap_or("")
}

/// `RetryInfo.retryDelay`.
fn retry_delay(details: &[Value]) -> Option<std::time::Duration> {
    details
        .iter()
        .filter(|d| detail_type(d).ends_with("google.rpc.RetryInfo"))
        .find_map(|d| d.get("retryDelay").and_then(Value::as_str))
        .and_then(retry_hint::parse_proto_duration)
}

/// `ErrorInfo.reason` (`API_KEY_INVALID`, ...).
fn error_reason(details: &[Value]) -> Option<&str> {
    details
        .iter()
        .filter(|d| detail_type(d).ends_with("google.rpc.ErrorInfo"))
        .find_map(|d| d.get("reason").and_then(Value::as_str))
}

/// Whether the violated quotas are ones a short wait does not restore: all per-day, or
/// one with a limit of 0.
fn quota_exhausted(details: &[Value]) -> bool {
    let violations: Vec<&Value> = details
        .iter()
        .filter(|d| detail_type(d).ends_with("google.rpc.QuotaFailure"))
        .filter_map(|d| d.get("violations").and_then(Value::as_array))
        .flatten()
        .collect();
    let zero_limit = violations.iter().any(|v| {
        v.get("quotaValue")
            .is_some_and(|q| q.as_str() == Some("0") || q.as_u64() == Some(0))
    });
    let periods: Vec<&str> = violations
        .iter()
        .filter_map(|v| v.get("quotaId").and_then(Value::as_str))
        .collect();
    zero_limit || (!periods.is_empty() && periods.iter().all(|id| id.contains("PerDay")))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use llmq_schemas::ErrorType;
    use reqwest::header::{HeaderMap, HeaderValue};
    use serde_json::{Value, json};

    use crate::providers::Adapter;
    use crate::providers::gemini::tests::adapter;
    use crate::providers::testing::assert_classifies;

    fn status_body(code: u16, status: &str, message: &str, details: Value) -> Vec<u8> {
        json!({"error": {"code": code, "message": message, "status": status, "details": details}})
            .to_string()
            .into_bytes()
    }

    fn quota_failure(quota_id: &str, value: &str) -> Value {
        json!({"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{
            "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
            "quotaId": quota_id, "quotaDimensions": {"location": "global", "model": "gemini-2.5-flash"}, "quotaValue": value}]})
    }

    #[test]
    fn classifies_every_documented_error() {
        let headers = HeaderMap::new();
        let exhausted =
            "You exceeded your current quota, please check your plan and billing details.";
        let cases = [
            (
                429,
                status_body(
                    429,
                    "RESOURCE_EXHAUSTED",
                    exhausted,
                    json!([
                quota_failure("GenerateRequestsPerMinutePerProjectPerModel-FreeTier", "10"),
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "28s"}]),
                ),
                ErrorType::RateLimited,
            ),
            (
                429,
                status_body(
                    429,
                    "RESOURCE_EXHAUSTED",
                    exhausted,
                    json!([quota_failure(
                        "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
                        "250"
                    )]),
                ),
                ErrorType::QuotaExhausted,
            ),
            (
                429,
                status_body(
                    429,
                    "RESOURCE_EXHAUSTED",
                    exhausted,
                    json!([quota_failure(
                        "GenerateContentInputTokensPerModelPerMinute-FreeTier",
                        "0"
                    )]),
                ),
                ErrorType::QuotaExhausted,
            ),
            (
                429,
                status_body(
                    429,
                    "RESOURCE_EXHAUSTED",
                    "Resource has been exhausted (e.g. check quota).",
                    json!([]),
                ),
                ErrorType::RateLimited,
            ),
            (
                400,
                status_body(
                    400,
                    "INVALID_ARGUMENT",
                    "Request contains an invalid argument.",
                    json!([]),
                ),
                ErrorType::InvalidRequest,
            ),
            (
                400,
                status_body(
                    400,
                    "INVALID_ARGUMENT",
                    "The input token count (1048777) exceeds the maximum number of tokens allowed (1048576).",
                    json!([]),
                ),
                ErrorType::ContextWindowExceeded,
            ),
            (
                400,
                status_body(
                    400,
                    "INVALID_ARGUMENT",
                    "API key not valid. Please pass a valid API key.",
                    json!([
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com"}]),
                ),
                ErrorType::Auth,
            ),
            (
                400,
                status_body(
                    400,
                    "FAILED_PRECONDITION",
                    "User location is not supported for the API use.",
                    json!([]),
                ),
                ErrorType::Auth,
            ),
            (
                403,
                status_body(
                    403,
                    "PERMISSION_DENIED",
                    "Method doesn't allow unregistered callers.",
                    json!([]),
                ),
                ErrorType::Auth,
            ),
            (
                401,
                status_body(
                    401,
                    "UNAUTHENTICATED",
                    "Request had invalid authentication credentials.",
                    json!([]),
                ),
                ErrorType::Auth,
            ),
            (
                404,
                status_body(
                    404,
                    "NOT_FOUND",
                    "models/gemini-9 is not found for API version v1beta",
                    json!([]),
                ),
                ErrorType::NotFound,
            ),
            (
                500,
                status_body(
                    500,
                    "INTERNAL",
                    "An internal error has occurred.",
                    json!([]),
                ),
                ErrorType::Server,
            ),
            (
                503,
                status_body(
                    503,
                    "UNAVAILABLE",
                    "The model is overloaded. Please try again later.",
                    json!([]),
                ),
                ErrorType::Server,
            ),
            (
                504,
                status_body(
                    504,
                    "DEADLINE_EXCEEDED",
                    "The request timed out.",
                    json!([]),
                ),
                ErrorType::Timeout,
            ),
            (
                502,
                b"<html>502 Bad Gateway</html>".to_vec(),
                ErrorType::Server,
            ),
        ];
        assert_classifies(&adapter(), &cases);
        let wrapped = format!(
            "[{}]",
            String::from_utf8_lossy(&status_body(503, "UNAVAILABLE", "overloaded", json!([])))
        );
        let err = adapter().classify_error(503, &headers, wrapped.as_bytes());
        assert_eq!(err.code.as_deref(), Some("UNAVAILABLE"));
    }

    #[test]
    fn retry_info_is_the_retry_hint_and_headers_are_the_fallback() {
        let body = status_body(
            429,
            "RESOURCE_EXHAUSTED",
            "quota",
            json!([
            quota_failure("GenerateRequestsPerMinutePerProjectPerModel-FreeTier", "10"),
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "28s"}]),
        );
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("3"));
        let err = adapter().classify_error(429, &headers, &body);
        assert_eq!(err.class, ErrorType::RateLimited);
        assert_eq!(err.retry_after, Some(Duration::from_secs(28)));
        assert!(err.is_retryable());
        let err = adapter().classify_error(
            429,
            &headers,
            &status_body(429, "RESOURCE_EXHAUSTED", "quota", json!([])),
        );
        assert_eq!(err.retry_after, Some(Duration::from_secs(3)));
        let daily = status_body(
            429,
            "RESOURCE_EXHAUSTED",
            "quota",
            json!([
            quota_failure("GenerateRequestsPerDayPerProjectPerModel-FreeTier", "250"),
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.5s"}]),
        );
        let err = adapter().classify_error(429, &HeaderMap::new(), &daily);
        assert_eq!(err.class, ErrorType::QuotaExhausted);
        assert!(!err.is_retryable());
        assert_eq!(err.retry_after, Some(Duration::from_millis(1500)));
    }
}
