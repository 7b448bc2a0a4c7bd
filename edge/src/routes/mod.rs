//! The routes: OpenAI's `POST /v1/chat/completions` and `GET /v1/models[/{id}]`, and the
//! operator's `/healthz`, `/readyz` and `/metrics` beside them. Every answer, errors and
//! unknown routes included, carries `x-request-id` ([`crate::request_id`]) and speaks
//! OpenAI's error JSON.

mod batch_object;
mod batches;
mod caller;
mod cancel;
mod chat;
mod chat_job;
mod files;
mod headers;
mod key_rate;
mod models;
mod sse;
mod stream;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::api_error::ApiError;
use crate::request_id;
use crate::state::EdgeState;

pub(crate) fn router(state: Arc<EdgeState>) -> Router {
    let limit = state.http.max_body_bytes;
    Router::new()
        .route("/v1/chat/completions", post(chat::completions))
        .route("/v1/models", get(models::list))
        .route("/v1/models/{*id}", get(models::retrieve))
        .merge(files_and_batches(&state))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(render_metrics))
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .fallback(|| async { ApiError::not_found_route() })
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(request_id::layer))
        .with_state(state)
}

/// OpenAI's Files and Batches API, each request counted in the metrics under `files` or
/// `batches`.
fn files_and_batches(state: &Arc<EdgeState>) -> Router<Arc<EdgeState>> {
    let files = Router::new()
        .route(
            "/v1/files",
            get(files::list)
                .post(files::upload)
                .layer(DefaultBodyLimit::max(state.batches.max_file_bytes)),
        )
        .route("/v1/files/{id}", get(files::retrieve).delete(files::delete))
        .route("/v1/files/{id}/content", get(files::content))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(state),
            count_files,
        ));
    let batches = Router::new()
        .route("/v1/batches", get(batches::list).post(batches::create))
        .route("/v1/batches/{id}", get(batches::retrieve))
        .route("/v1/batches/{id}/cancel", post(batches::cancel))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(state),
            count_batches,
        ));
    files.merge(batches)
}

async fn count_files(
    State(state): State<Arc<EdgeState>>,
    request: Request,
    next: Next,
) -> Response {
    counted(&state, "files", request, next).await
}

async fn count_batches(
    State(state): State<Arc<EdgeState>>,
    request: Request,
    next: Next,
) -> Response {
    counted(&state, "batches", request, next).await
}

async fn counted(state: &EdgeState, route: &'static str, request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    state
        .metrics
        .request(route, response.status(), started.elapsed());
    response
}

/// A JSON answer, or the error's.
fn respond<T: serde::Serialize>(result: Result<T, ApiError>) -> Response {
    match result {
        Ok(value) => axum::Json(value).into_response(),
        Err(err) => err.into_response(),
    }
}

/// Ready while connected to NATS.
async fn ready(State(state): State<Arc<EdgeState>>) -> Response {
    match state.nats.connection_state() {
        async_nats::connection::State::Connected => (StatusCode::OK, "ready").into_response(),
        other => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not connected to NATS ({other})"),
        )
            .into_response(),
    }
}

async fn render_metrics(State(state): State<Arc<EdgeState>>) -> String {
    state.metrics.render()
}
