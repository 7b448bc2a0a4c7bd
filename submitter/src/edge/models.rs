//! `GET /v1/models`: the models the caller's key and tenant may use that a live worker
//! serves now, in OpenAI's list shape.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use llmq_runtime::tenants::Lookup;
use llmq_schemas::Tenant;
use serde_json::json;

use super::error::ApiError;
use super::{EdgeState, auth};
use crate::is_live;

pub async fn list(State(state): State<Arc<EdgeState>>, headers: HeaderMap) -> Response {
    let started = std::time::Instant::now();
    let response = match models(&state, &headers).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    };
    super::metrics::request("models", response.status(), started.elapsed());
    response
}

async fn models(state: &EdgeState, headers: &HeaderMap) -> Result<Response, ApiError> {
    let key = auth::authenticate(&state.keys, headers).map_err(|refusal| {
        super::metrics::auth_failure(refusal);
        ApiError::from(refusal)
    })?;
    let client = state.client_for(&key.tenant).await?;
    let catalog = client.catalog().await.map_err(|err| ApiError::from(&err))?;
    let tenant = Tenant::parse(&key.tenant).map_err(|err| ApiError::invalid(err.to_string()))?;
    let lookup = state.registry.lookup(&tenant);
    let served: BTreeSet<String> = catalog
        .iter()
        .filter(|entry| is_live(entry))
        .flat_map(|entry| entry.models.iter().map(|m| m.name.clone()))
        .filter(|model| key.allows_model(model))
        .filter(|model| match &lookup {
            Lookup::Open => true,
            Lookup::Known(policy) => policy.allows_model(model),
            Lookup::Unknown | Lookup::Invalid(_) => false,
        })
        .collect();
    let data: Vec<_> = served
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "llmq"}))
        .collect();
    Ok(axum::Json(json!({"object": "list", "data": data})).into_response())
}
