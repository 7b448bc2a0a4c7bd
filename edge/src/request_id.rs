//! `x-request-id` on every answer, whatever route or error produced it.
//!
//! A failed request is the one a caller most needs to correlate with llmq's logs and
//! outcomes, so the id is not left to each handler: this layer gives every request an id
//! (the caller's `x-request-id`, else a fresh UUID v7) and puts it on every response,
//! 401s, 404s, 405s and 413s included. The fresh UUID is also the id of the job the
//! request makes, so without a caller's id, `x-request-id` and `x-llmq-job-id` agree.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use llmq_schemas::JobId;

const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// A request's ids, in its extensions.
#[derive(Debug, Clone)]
pub struct RequestId {
    /// The id the request's job gets.
    pub job_id: JobId,
    /// The caller's own `x-request-id` (trimmed), if it sent one.
    pub caller: Option<String>,
}

/// The layer: gives the request its [`RequestId`] and the response its `x-request-id`.
pub async fn layer(mut request: Request, next: Next) -> Response {
    let ids = RequestId {
        job_id: uuid::Uuid::now_v7(),
        caller: request
            .headers()
            .get(&HEADER)
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
            .filter(|text| !text.is_empty())
            .map(str::to_owned),
    };
    let echo = ids.caller.clone().unwrap_or_else(|| ids.job_id.to_string());
    request.extensions_mut().insert(ids);
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&echo) {
        response.headers_mut().insert(HEADER, value);
    }
    response
}
