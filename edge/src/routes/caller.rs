//! Who is asking: the API key or token a request presents, admitted by the key's own
//! rate.

use axum::http::HeaderMap;

use super::key_rate;
use crate::api_error::ApiError;
use crate::auth::{self, Caller, Gate};
use crate::state::EdgeState;

/// The request's caller, or the answer that refuses it.
pub(super) async fn caller(state: &EdgeState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let key = authenticated(state, headers).await?;
    key_rate::admit(state, &key).await?;
    Ok(key)
}

/// The request's caller, its rate not counted.
pub(super) async fn authenticated(
    state: &EdgeState,
    headers: &HeaderMap,
) -> Result<Caller, ApiError> {
    let gate = Gate {
        keys: &state.keys,
        oidc: state.oidc.as_ref(),
        registry: &state.registry,
    };
    auth::authenticate(gate, headers).await.map_err(|refusal| {
        state.metrics.auth_failure(refusal.reason());
        ApiError::from(refusal)
    })
}
