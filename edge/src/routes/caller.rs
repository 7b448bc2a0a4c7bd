//! Who is asking: the API key a request presents, admitted by the key's own rate.

use std::sync::Arc;

use axum::http::HeaderMap;
use llmq_runtime::api_keys::ApiKeyEntry;

use super::key_rate;
use crate::api_error::ApiError;
use crate::auth;
use crate::state::EdgeState;

/// The request's key, or the answer that refuses it.
pub(super) async fn caller(
    state: &EdgeState,
    headers: &HeaderMap,
) -> Result<Arc<ApiKeyEntry>, ApiError> {
    let key = auth::authenticate(&state.keys, headers).map_err(|refusal| {
        state.metrics.auth_failure(refusal);
        ApiError::from(refusal)
    })?;
    key_rate::admit(state, &key).await?;
    Ok(key)
}
