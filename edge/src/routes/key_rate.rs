//! A key's own request rate (`submitter keys create --rpm`), fleet-wide: every edge takes
//! from the same window in the limits bucket.

use std::time::Duration;

use axum::http::StatusCode;
use llmq_runtime::api_keys::ApiKeyEntry;
use llmq_runtime::limits::{Demand, LimitError, Scope};

use crate::api_error::ApiError;
use crate::state::EdgeState;

/// A key with its own rate takes one request of it, or is told when to retry (429).
pub(super) async fn admit(state: &EdgeState, key: &ApiKeyEntry) -> Result<(), ApiError> {
    let Some(rpm) = key.rpm else {
        return Ok(());
    };
    let spec = llmq_schemas::LimitSpec {
        rpm: Some(i64::from(rpm)),
        ..Default::default()
    };
    let limits = [(Scope::ApiKey(key.id.clone()), spec)];
    let now = Some(tokio::time::Instant::now());
    match state
        .limiter
        .admit(&limits, Demand { tokens: 0 }, now)
        .await
    {
        Ok(_admission) => Ok(()),
        Err(err) => Err(refused(&err)),
    }
}

fn refused(err: &LimitError) -> ApiError {
    let retry_after = match err {
        LimitError::Exhausted(exhausted) => exhausted.retry_after,
        LimitError::Nats { .. } => Duration::from_secs(1),
    };
    let mut error = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "requests",
        "rate_limit_exceeded",
        format!("this API key's rate limit: {err}"),
    );
    error.retry_after = Some(retry_after);
    error
}
