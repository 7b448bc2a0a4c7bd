//! OpenAI's Files API: `POST /v1/files` (multipart, `purpose=batch`), `GET /v1/files`,
//! `GET /v1/files/{id}`, `GET /v1/files/{id}/content`, `DELETE /v1/files/{id}`. A file
//! streams into the object store as it arrives; nothing holds it whole in memory.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Multipart, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use llmq_schemas::Tenant;
use llmq_schemas::openai::batch::{FileDeleted, FileObject, ListPage};
use tokio_util::io::{ReaderStream, StreamReader};

use super::caller::caller;
use super::respond;
use crate::api_error::ApiError;
use crate::state::EdgeState;

/// The purposes an upload may have: llmq's files are batch inputs.
const UPLOAD_PURPOSES: [&str; 1] = ["batch"];

pub(super) async fn upload(
    State(state): State<Arc<EdgeState>>,
    headers: HeaderMap,
    multipart: Multipart,
) -> Response {
    respond(upload_file(&state, &headers, multipart).await)
}

pub(super) async fn list(State(state): State<Arc<EdgeState>>, headers: HeaderMap) -> Response {
    respond(list_files(&state, &headers).await)
}

pub(super) async fn retrieve(
    State(state): State<Arc<EdgeState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    respond(file_info(&state, &headers, &id).await)
}

pub(super) async fn delete(
    State(state): State<Arc<EdgeState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    respond(delete_file(&state, &headers, &id).await)
}

pub(super) async fn content(
    State(state): State<Arc<EdgeState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    match file_content(&state, &headers, &id).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

async fn tenant(state: &EdgeState, headers: &HeaderMap) -> Result<Tenant, ApiError> {
    let key = caller(state, headers).await?;
    Tenant::parse(&key.tenant).map_err(|err| ApiError::unavailable(err.to_string()))
}

async fn upload_file(
    state: &EdgeState,
    headers: &HeaderMap,
    mut multipart: Multipart,
) -> Result<FileObject, ApiError> {
    let tenant = tenant(state, headers).await?;
    let files = state.files().await?;
    let (mut purpose, mut stored) = (None, None);
    while let Some(field) = multipart.next_field().await.map_err(bad_form)? {
        match field.name() {
            Some("purpose") => purpose = Some(field.text().await.map_err(bad_form)?),
            Some("file") => {
                let filename = field.file_name().unwrap_or("upload.jsonl").to_owned();
                let mut reader = StreamReader::new(field.map_err(std::io::Error::other));
                stored = Some(files.put(&tenant, &filename, "batch", &mut reader).await?);
            }
            _ => {}
        }
    }
    let stored = stored.ok_or_else(|| ApiError::invalid("the form has no `file` field"))?;
    match purpose.as_deref() {
        Some(purpose) if UPLOAD_PURPOSES.contains(&purpose) => Ok(stored),
        other => {
            files.delete(&tenant, &stored.id).await?;
            Err(ApiError::invalid(format!(
                "purpose {other:?} is not supported: llmq takes files for `batch` only"
            )))
        }
    }
}

async fn list_files(
    state: &EdgeState,
    headers: &HeaderMap,
) -> Result<ListPage<FileObject>, ApiError> {
    let tenant = tenant(state, headers).await?;
    let data = state.files().await?.list(&tenant).await?;
    Ok(ListPage {
        object: "list".into(),
        first_id: data.first().map(|f| f.id.clone()),
        last_id: data.last().map(|f| f.id.clone()),
        has_more: false,
        data,
    })
}

async fn file_info(
    state: &EdgeState,
    headers: &HeaderMap,
    id: &str,
) -> Result<FileObject, ApiError> {
    let tenant = tenant(state, headers).await?;
    state.files().await?.info(&tenant, id).await
}

async fn delete_file(
    state: &EdgeState,
    headers: &HeaderMap,
    id: &str,
) -> Result<FileDeleted, ApiError> {
    let tenant = tenant(state, headers).await?;
    state.files().await?.delete(&tenant, id).await?;
    Ok(FileDeleted {
        id: id.to_owned(),
        object: "file".into(),
        deleted: true,
    })
}

async fn file_content(
    state: &EdgeState,
    headers: &HeaderMap,
    id: &str,
) -> Result<Response, ApiError> {
    let tenant = tenant(state, headers).await?;
    let object = state.files().await?.open_content(&tenant, id).await?;
    let body = Body::from_stream(ReaderStream::new(object));
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/octet-stream")],
        body,
    )
        .into_response())
}

fn bad_form(err: axum::extract::multipart::MultipartError) -> ApiError {
    let status = err.status();
    let mut error = ApiError::invalid(format!("cannot read the upload: {}", err.body_text()));
    error.status = status;
    error
}
