//! Every failure as OpenAI's error JSON, with the status an OpenAI SDK maps to the right
//! exception class (and retries, for 429 and 5xx), and the headers a caller correlates it
//! by: `x-llmq-job-id` once a job exists (`x-request-id` is set for every answer by
//! [`crate::request_id`]), `Retry-After` and `retry-after-ms` (which the SDKs prefer) when
//! trying again later may succeed.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use llmq_runtime::api_keys::KeyRefusal;

use crate::auth::Refusal;
use llmq_schemas::openai::ErrorBody;
use llmq_schemas::{ErrorType, JobError, JobId};
use llmq_submitter::{ClientError, SubmitError, WaitError};

const RETRY_AFTER_MS: header::HeaderName = header::HeaderName::from_static("retry-after-ms");
const JOB_ID: header::HeaderName = header::HeaderName::from_static("x-llmq-job-id");

/// An HTTP error answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    /// OpenAI's `error.type`.
    pub kind: &'static str,
    /// OpenAI's `error.code`.
    pub code: &'static str,
    pub message: String,
    pub retry_after: Option<Duration>,
    /// The job the request made, if it got that far.
    pub job_id: Option<JobId>,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            kind,
            code,
            message: message.into(),
            retry_after: None,
            job_id: None,
        }
    }

    /// The same error, naming the job the request made.
    pub fn for_job(mut self, job_id: JobId) -> Self {
        self.job_id = Some(job_id);
        self
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_request",
            message,
        )
    }

    pub fn not_found_route() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "unknown_url",
            "unknown route",
        )
    }

    /// A known route asked with a method it does not answer (axum adds `Allow`).
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            "method_not_allowed",
            "this route does not answer that method (see the Allow header)",
        )
    }

    /// OpenAI's 404 for a model, naming the models the caller may use (and nothing else).
    pub fn model_not_found(model: &str, usable: &[String]) -> Self {
        let usable = if usable.is_empty() {
            "none".to_owned()
        } else {
            usable.join(", ")
        };
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "model_not_found",
            format!(
                "The model `{model}` does not exist or you do not have access to it \
                 (models this key may use now: {usable})"
            ),
        )
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "service_unavailable",
            message,
        )
    }

    fn retry_after(mut self, after: Option<Duration>) -> Self {
        self.retry_after = after;
        self
    }

    /// The JSON body, as OpenAI sends it.
    pub fn body(&self) -> ErrorBody {
        ErrorBody::new(self.message.clone(), self.kind, self.code)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        let headers = response.headers_mut();
        if let Some(after) = self.retry_after {
            let seconds = after.as_secs_f64().ceil().max(1.0) as u64;
            let millis = u64::try_from(after.as_millis()).unwrap_or(u64::MAX).max(1);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            headers.insert(RETRY_AFTER_MS, HeaderValue::from(millis));
        }
        if let Some(job_id) = self.job_id
            && let Ok(value) = HeaderValue::from_str(&job_id.to_string())
        {
            headers.insert(JOB_ID, value);
        }
        response
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Key(key) => key.into(),
            Refusal::Token(_) => Self::new(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "invalid_api_key",
                refusal.to_string(),
            ),
            Refusal::UnknownTenant(_) => Self::new(
                StatusCode::FORBIDDEN,
                "invalid_request_error",
                "unknown_tenant",
                refusal.to_string(),
            ),
        }
    }
}

impl From<KeyRefusal> for ApiError {
    fn from(refusal: KeyRefusal) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "invalid_api_key",
            refusal.to_string(),
        )
    }
}

impl From<&SubmitError> for ApiError {
    fn from(err: &SubmitError) -> Self {
        let message = err.to_string();
        match err {
            SubmitError::InvalidJob(_) => Self::invalid(message),
            // Not the error's own text: it lists every served model, and a caller may
            // learn only of the ones it may use (the handler adds those).
            SubmitError::UnknownModel { model, .. } => Self::model_not_found(model, &[]),
            SubmitError::PolicyDenied { .. } => Self::new(
                StatusCode::FORBIDDEN,
                "invalid_request_error",
                "model_not_allowed",
                message,
            ),
            SubmitError::NoWorkers { .. } | SubmitError::QueueFull { .. } => {
                Self::unavailable(message).retry_after(Some(Duration::from_secs(1)))
            }
            // The tenant's own quota, as OpenAI answers a client over its limits: 429,
            // which the SDKs retry after Retry-After.
            SubmitError::TenantQueueFull { .. } => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "requests",
                "rate_limit_exceeded",
                message,
            )
            .retry_after(Some(Duration::from_secs(1))),
            _ => Self::unavailable(message),
        }
    }
}

impl From<&WaitError> for ApiError {
    fn from(err: &WaitError) -> Self {
        match err {
            WaitError::Timeout { .. } => Self::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                "timeout",
                err.to_string(),
            ),
            _ => Self::unavailable(err.to_string()),
        }
    }
}

impl From<&ClientError> for ApiError {
    fn from(err: &ClientError) -> Self {
        Self::unavailable(err.to_string())
    }
}

/// A job that ended without an answer: the status its error type deserves.
pub fn from_job_error(error: &JobError) -> ApiError {
    let message = error.message.clone();
    let retry_after = error.retry_after_ms.map(Duration::from_millis);
    let (status, kind, code) = match error.kind {
        ErrorType::InvalidRequest | ErrorType::InvalidJob | ErrorType::ContextWindowExceeded => (
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_request",
        ),
        ErrorType::ContentFiltered => (
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "content_filter",
        ),
        ErrorType::PolicyDenied => (
            StatusCode::FORBIDDEN,
            "invalid_request_error",
            "model_not_allowed",
        ),
        ErrorType::UnknownModel | ErrorType::NotFound => (
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "model_not_found",
        ),
        ErrorType::RateLimited | ErrorType::Overloaded => (
            StatusCode::TOO_MANY_REQUESTS,
            "requests",
            "rate_limit_exceeded",
        ),
        ErrorType::QuotaExhausted | ErrorType::BudgetExceeded => (
            StatusCode::TOO_MANY_REQUESTS,
            "insufficient_quota",
            "insufficient_quota",
        ),
        ErrorType::DeadlineExceeded | ErrorType::Timeout => {
            (StatusCode::GATEWAY_TIMEOUT, "timeout", "timeout")
        }
        ErrorType::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "service_unavailable",
        ),
        ErrorType::Cancelled => (
            StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            "invalid_request_error",
            "cancelled",
        ),
        _ => (StatusCode::BAD_GATEWAY, "server_error", "upstream_error"),
    };
    ApiError::new(status, kind, code, message).retry_after(retry_after)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job_error(kind: ErrorType) -> JobError {
        JobError::new(kind, "x")
    }

    #[test]
    fn each_failure_gets_the_status_openai_sdks_map_to_its_class() {
        let cases = [
            (ErrorType::InvalidRequest, 400, "invalid_request"),
            (ErrorType::PolicyDenied, 403, "model_not_allowed"),
            (ErrorType::UnknownModel, 404, "model_not_found"),
            (ErrorType::RateLimited, 429, "rate_limit_exceeded"),
            (ErrorType::BudgetExceeded, 429, "insufficient_quota"),
            (ErrorType::QuotaExhausted, 429, "insufficient_quota"),
            (ErrorType::DeadlineExceeded, 504, "timeout"),
            (ErrorType::Unavailable, 503, "service_unavailable"),
            (ErrorType::Server, 502, "upstream_error"),
        ];
        for (kind, status, code) in cases {
            let error = from_job_error(&job_error(kind));
            assert_eq!(
                (error.status.as_u16(), error.code),
                (status, code),
                "{kind:?}"
            );
        }
        let mut limited = job_error(ErrorType::RateLimited);
        limited.retry_after_ms = Some(2500);
        let response = from_job_error(&limited)
            .for_job(JobId::nil())
            .into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
        assert_eq!(response.headers()[RETRY_AFTER_MS], "2500");
        assert_eq!(response.headers()[JOB_ID], JobId::nil().to_string());
        let no_workers = ApiError::from(&SubmitError::NoWorkers {
            prefix: "llmq".into(),
        });
        assert_eq!(no_workers.status.as_u16(), 503);
        assert!(no_workers.retry_after.is_some());
        let quota = ApiError::from(&SubmitError::TenantQueueFull {
            tenant: "beta".into(),
            model: "chat".into(),
            tier: llmq_schemas::Tier::Interactive,
        });
        assert_eq!(
            (quota.status.as_u16(), quota.code),
            (429, "rate_limit_exceeded")
        );
        assert!(quota.retry_after.is_some());
        let body = ApiError::from(KeyRefusal::Revoked).body();
        assert_eq!(body.error.code.as_deref(), Some("invalid_api_key"));
        assert_eq!(body.error.kind, "invalid_request_error");
    }
}
