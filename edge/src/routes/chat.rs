//! `POST /v1/chat/completions`: a job published for the caller's tenant, its outcome
//! turned into OpenAI's answer (streams: [`super::stream`]).
//!
//! The answer's `model` is the model the client asked for (the logical name), streaming
//! or not, as OpenAI-style clients key cost tracking on it; the model that answered is in
//! `x-llmq-upstream-model`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use llmq_runtime::api_keys::ApiKeyEntry;
use llmq_schemas::{Outcome, OutcomeStatus};
use llmq_submitter::SubmitError;

use super::caller::caller;
use super::cancel::CancelOnDrop;
use super::chat_job::{job_of, read_body};
use super::headers::{describe, insert};
use super::{models, stream};
use crate::api_error::{ApiError, from_job_error};
use crate::request_id::RequestId;
use crate::state::EdgeState;

pub(super) async fn completions(
    State(state): State<Arc<EdgeState>>,
    Extension(ids): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let response = match read_body(&state.http, body).await {
        Ok(body) => match handle(&state, &ids, &headers, &body, started).await {
            Ok(response) => response,
            Err(err) => err.into_response(),
        },
        Err(err) => err.into_response(),
    };
    state
        .metrics
        .request("chat", response.status(), started.elapsed());
    response
}

async fn handle(
    state: &Arc<EdgeState>,
    ids: &RequestId,
    headers: &HeaderMap,
    body: &[u8],
    started: Instant,
) -> Result<Response, ApiError> {
    let key = caller(state, headers).await?;
    let (mut job, asked) = job_of(&state.http, headers, body)?;
    job.id = ids.job_id;
    job.custom_id = ids.caller.clone();
    job.user = key.user.clone();
    if !key.allows_model(&job.model) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "invalid_request_error",
            "model_not_allowed",
            format!("this API key may not use model {:?}", job.model),
        ));
    }
    let client = state.client_for(&key.tenant).await?;
    let (model, job_id) = (job.model.clone(), job.id);
    let handle = client
        .submit(job)
        .await
        .map_err(|err| refused(state, &key, &err))?;
    let cancel = CancelOnDrop::new(client, job_id, state.tasks.clone());
    if asked.stream {
        return stream::respond(state, handle, cancel, model, &asked).await;
    }
    let outcome = handle
        .outcome_within(asked.timeout + Duration::from_secs(5))
        .await;
    let outcome = outcome.map_err(|err| ApiError::from(&err).for_job(job_id))?;
    cancel.disarm();
    answer(&outcome, &model, started).map_err(|err| err.for_job(job_id))
}

/// A job the submitter refused: a 404 names only the models this key may use.
fn refused(state: &EdgeState, key: &ApiKeyEntry, err: &SubmitError) -> ApiError {
    match err {
        SubmitError::UnknownModel {
            model, available, ..
        } => {
            let usable: Vec<String> = available
                .iter()
                .filter(|name| models::allows(state, key, name))
                .cloned()
                .collect();
            ApiError::model_not_found(model, &usable)
        }
        _ => ApiError::from(err),
    }
}

/// A finished job as OpenAI's answer (its `model` the one asked for), or its error.
fn answer(outcome: &Outcome, model: &str, started: Instant) -> Result<Response, ApiError> {
    let mut response = match (&outcome.status, &outcome.response, &outcome.error) {
        (OutcomeStatus::Succeeded, Some(response), _) => response.clone(),
        (_, _, Some(error)) => return Err(from_job_error(error)),
        _ => {
            return Err(ApiError::unavailable(format!(
                "job {} ended {:?} without an answer",
                outcome.job_id, outcome.status
            )));
        }
    };
    model.clone_into(&mut response.model);
    let mut http = axum::Json(response).into_response();
    let headers = http.headers_mut();
    describe(headers, outcome);
    let upstream_ms: u64 = outcome.attempts.iter().map(|a| a.latency_ms).sum();
    let overhead = (started.elapsed().as_millis() as u64).saturating_sub(upstream_ms);
    insert(headers, "x-llmq-overhead-duration-ms", overhead.to_string());
    Ok(http)
}
