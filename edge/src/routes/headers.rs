//! The `x-llmq-*` headers of an answer: which job, which attempt, provider and model.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use llmq_schemas::Outcome;

/// Sets `name: value`; a value that is not a valid header is left out.
pub(super) fn insert(headers: &mut HeaderMap, name: &'static str, value: String) {
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(HeaderName::from_static(name), value);
    }
}

/// The job, the number of attempts, the provider and model that answered.
pub(super) fn describe(headers: &mut HeaderMap, outcome: &Outcome) {
    insert(headers, "x-llmq-job-id", outcome.job_id.to_string());
    insert(
        headers,
        "x-llmq-attempts",
        outcome.attempts.len().to_string(),
    );
    if let Some(last) = outcome.attempts.last() {
        insert(headers, "x-llmq-provider", last.provider.clone());
        insert(
            headers,
            "x-llmq-upstream-model",
            last.upstream_model.clone(),
        );
    }
}
