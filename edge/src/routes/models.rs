//! `GET /v1/models` and `GET /v1/models/{id}`: the models the caller's key and tenant may
//! use that a live worker serves now, in OpenAI's shapes. The same set is all a caller is
//! ever told of: a 404 `model_not_found` names only these.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use llmq_runtime::api_keys::ApiKeyEntry;
use llmq_runtime::tenants::Lookup;
use llmq_schemas::Tenant;
use llmq_schemas::openai::{Model, ModelList};

use llmq_submitter::is_live;

use super::caller::authenticated;
use crate::api_error::ApiError;
use crate::state::EdgeState;

pub(super) async fn list(State(state): State<Arc<EdgeState>>, headers: HeaderMap) -> Response {
    let started = std::time::Instant::now();
    let response = match models(&state, &headers).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    };
    state
        .metrics
        .request("models", response.status(), started.elapsed());
    response
}

/// `models.retrieve`: the model object, or 404 `model_not_found`. The id is the rest of
/// the path (a `{*id}` route), so ids with `/` work percent-encoded or not.
pub(super) async fn retrieve(
    State(state): State<Arc<EdgeState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let started = std::time::Instant::now();
    let response = match model(&state, &headers, &id).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    };
    state
        .metrics
        .request("models", response.status(), started.elapsed());
    response
}

async fn models(state: &EdgeState, headers: &HeaderMap) -> Result<Response, ApiError> {
    let key = authenticated(state, headers).await?;
    let data = usable(state, &key)
        .await?
        .into_iter()
        .map(Model::served)
        .collect();
    Ok(axum::Json(ModelList::new(data)).into_response())
}

async fn model(state: &EdgeState, headers: &HeaderMap, id: &str) -> Result<Response, ApiError> {
    let key = authenticated(state, headers).await?;
    let usable = usable(state, &key).await?;
    if usable.contains(id) {
        return Ok(axum::Json(Model::served(id)).into_response());
    }
    let usable: Vec<String> = usable.into_iter().collect();
    Err(ApiError::model_not_found(id, &usable))
}

/// The models a live worker serves that `key` (and its tenant) may use, sorted.
async fn usable(state: &EdgeState, key: &ApiKeyEntry) -> Result<BTreeSet<String>, ApiError> {
    let client = state.client_for(&key.tenant).await?;
    let catalog = client.catalog().await.map_err(|err| ApiError::from(&err))?;
    Ok(catalog
        .iter()
        .filter(|entry| is_live(entry))
        .flat_map(|entry| entry.models.iter().map(|m| m.name.clone()))
        .filter(|model| allows(state, key, model))
        .collect())
}

/// Whether `key` and its tenant's policy allow `model`.
pub(super) fn allows(state: &EdgeState, key: &ApiKeyEntry, model: &str) -> bool {
    if !key.allows_model(model) {
        return false;
    }
    let Ok(tenant) = Tenant::parse(&key.tenant) else {
        return false;
    };
    match state.registry.lookup(&tenant) {
        Lookup::Open => true,
        Lookup::Known(policy) => policy.allows_model(model),
        Lookup::Unknown | Lookup::Invalid(_) => false,
    }
}
