//! OpenAI's Batches API: `POST /v1/batches`, `GET /v1/batches[/{id}]`,
//! `POST /v1/batches/{id}/cancel`. Creating a batch writes its record (`validating`) and
//! queues it for the edges' batch runners (`crate::batch_runner`): the request returns at
//! once, and the batch runs whether or not this edge lives on.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;
use llmq_runtime::api_keys::ApiKeyEntry;
use llmq_schemas::openai::batch::{BatchObject, CreateBatchRequest, ListPage};
use llmq_schemas::{BatchId, HttpBatch, Tenant};
use llmq_submitter::{BatchError, Client};
use serde::Deserialize;

use super::batch_object::batch_object;
use super::caller::caller;
use super::respond;
use crate::api_error::ApiError;
use crate::batch_runner::RunRequest;
use crate::state::EdgeState;

const ENDPOINT: &str = "/v1/chat/completions";
/// The longest completion window asked for: a week.
const MAX_WINDOW: Duration = Duration::from_secs(7 * 86_400);

#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    limit: Option<usize>,
    after: Option<String>,
}

pub(super) async fn create(
    State(state): State<Arc<EdgeState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(create_batch(&state, &headers, &body).await)
}

pub(super) async fn retrieve(
    State(state): State<Arc<EdgeState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    respond(retrieve_batch(&state, &headers, &id).await)
}

pub(super) async fn cancel(
    State(state): State<Arc<EdgeState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    respond(cancel_batch(&state, &headers, &id).await)
}

pub(super) async fn list(
    State(state): State<Arc<EdgeState>>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Response {
    respond(list_batches(&state, &headers, query).await)
}

async fn client_of(state: &EdgeState, key: &ApiKeyEntry) -> Result<(Client, Tenant), ApiError> {
    let tenant =
        Tenant::parse(&key.tenant).map_err(|err| ApiError::unavailable(err.to_string()))?;
    Ok((state.client_for(&key.tenant).await?, tenant))
}

async fn create_batch(
    state: &EdgeState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<BatchObject, ApiError> {
    let key = caller(state, headers).await?;
    let request: CreateBatchRequest = serde_json::from_slice(body)
        .map_err(|err| ApiError::invalid(format!("the body is not a batch request: {err}")))?;
    if request.endpoint != ENDPOINT {
        return Err(ApiError::invalid(format!(
            "endpoint {:?} is not supported: llmq batches run {ENDPOINT}",
            request.endpoint
        )));
    }
    let window = completion_window(&request.completion_window)?;
    let (client, tenant) = client_of(state, &key).await?;
    state
        .files()
        .await?
        .info(&tenant, &request.input_file_id)
        .await?;
    let http = HttpBatch {
        input_file_id: request.input_file_id.clone(),
        endpoint: ENDPOINT.into(),
        completion_window: request.completion_window.clone(),
        user: key.user.clone(),
        ..HttpBatch::default()
    };
    let record = client
        .batch_create_http(http, window, request.metadata)
        .await
        .map_err(batch_error)?;
    let run = RunRequest {
        tenant: tenant.to_string(),
        batch: record.id.clone(),
        key_models: key.models.clone(),
    };
    crate::batch_runner::queue(state, &tenant, &run).await?;
    Ok(batch_object(&record))
}

fn completion_window(text: &str) -> Result<Duration, ApiError> {
    match humantime::parse_duration(text) {
        Ok(window) if window > Duration::ZERO && window <= MAX_WINDOW => Ok(window),
        _ => Err(ApiError::invalid(format!(
            "completion_window {text:?} is not a duration up to 7 days (OpenAI's is `24h`)"
        ))),
    }
}

async fn retrieve_batch(
    state: &EdgeState,
    headers: &HeaderMap,
    id: &str,
) -> Result<BatchObject, ApiError> {
    let (client, id) = caller_batch(state, headers, id).await?;
    let tenant = client.tenant().as_str().to_owned();
    let mut count = state.batch_counts.take(&tenant, &id);
    let record = client
        .batch_status_counted(&id, &mut count)
        .await
        .map_err(batch_error)?;
    if !record.status.is_final() {
        state.batch_counts.put(&tenant, &id, count);
    }
    Ok(batch_object(&record))
}

async fn cancel_batch(
    state: &EdgeState,
    headers: &HeaderMap,
    id: &str,
) -> Result<BatchObject, ApiError> {
    let (client, id) = caller_batch(state, headers, id).await?;
    let record = client.batch_cancel(&id).await.map_err(batch_error)?;
    Ok(batch_object(&record))
}

/// The caller's producer and the batch id it names (a malformed one is not found).
async fn caller_batch(
    state: &EdgeState,
    headers: &HeaderMap,
    id: &str,
) -> Result<(Client, BatchId), ApiError> {
    let key = caller(state, headers).await?;
    let (client, _) = client_of(state, &key).await?;
    Ok((client, parse_id(id)?))
}

async fn list_batches(
    state: &EdgeState,
    headers: &HeaderMap,
    query: ListQuery,
) -> Result<ListPage<BatchObject>, ApiError> {
    let key = caller(state, headers).await?;
    let (client, _) = client_of(state, &key).await?;
    let records = client.batch_list().await.map_err(batch_error)?;
    let start = match &query.after {
        Some(after) => records
            .iter()
            .position(|r| r.id.as_str() == after)
            .map_or(records.len(), |i| i + 1),
        None => 0,
    };
    let limit = query.limit.unwrap_or(20).clamp(1, 100);
    let page: Vec<BatchObject> = records
        .iter()
        .skip(start)
        .take(limit)
        .map(batch_object)
        .collect();
    Ok(ListPage {
        object: "list".into(),
        first_id: page.first().map(|b| b.id.clone()),
        last_id: page.last().map(|b| b.id.clone()),
        has_more: records.len() > start + page.len(),
        data: page,
    })
}

fn parse_id(id: &str) -> Result<BatchId, ApiError> {
    BatchId::parse(id).map_err(|_| not_found(id))
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "invalid_request_error",
        "not_found",
        format!("No such Batch object: {id}"),
    )
}

pub(crate) fn batch_error(err: BatchError) -> ApiError {
    match err {
        BatchError::NotFound(id) => not_found(id.as_str()),
        BatchError::Ended { id, status, .. } => ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_request",
            format!("Cannot cancel batch {id}: its status is {status}"),
        ),
        other => ApiError::unavailable(other.to_string()),
    }
}
