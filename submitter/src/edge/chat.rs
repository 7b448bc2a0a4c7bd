//! `POST /v1/chat/completions`: a job published for the caller's tenant, its outcome
//! turned into OpenAI's answer (streams: [`super::stream`]).
//!
//! What can be refused without a worker is refused before the job is submitted (a bad
//! body, a model the key may not use, `n > 1` with `stream`), so it costs no queue slot
//! and is a plain HTTP status. The answer's `model` is the model the client asked for (the
//! logical name), streaming or not, as OpenAI-style clients key cost tracking on it; the
//! model that answered is in `x-llmq-upstream-model`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use llmq_runtime::api_keys::ApiKeyEntry;
use llmq_schemas::{ChatRequest, Job, JobId, Outcome, OutcomeStatus, Tier, Timestamp};
use serde_json::Value;

use super::error::{ApiError, from_job_error};
use super::request_id::RequestId;
use super::{EdgeState, auth, metrics, models, stream};
use crate::{Client, SubmitError};

/// What a request asked for, besides the job itself.
pub(super) struct Asked {
    pub stream: bool,
    pub include_usage: bool,
    pub timeout: Duration,
}

pub async fn completions(
    State(state): State<Arc<EdgeState>>,
    Extension(ids): Extension<RequestId>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let started = Instant::now();
    let response = match read_body(&state, body).await {
        Ok(body) => match handle(&state, &ids, &headers, &body, started).await {
            Ok(response) => response,
            Err(err) => err.into_response(),
        },
        Err(err) => err.into_response(),
    };
    metrics::request("chat", response.status(), started.elapsed());
    response
}

async fn handle(
    state: &Arc<EdgeState>,
    ids: &RequestId,
    headers: &HeaderMap,
    body: &[u8],
    started: Instant,
) -> Result<Response, ApiError> {
    let key = auth::authenticate(&state.keys, headers).map_err(|refusal| {
        metrics::auth_failure(refusal);
        ApiError::from(refusal)
    })?;
    key_rate(state, &key).await?;
    let (mut job, asked) = job_of(state, headers, body)?;
    job.id = ids.job_id;
    job.custom_id = ids.caller.clone();
    if !key.allows_model(&job.model) {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
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
    let cancel = CancelOnDrop::new(client, job_id);
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

/// A key with its own rate takes one request of it, fleet-wide, or is told when to retry.
async fn key_rate(
    state: &EdgeState,
    key: &llmq_runtime::api_keys::ApiKeyEntry,
) -> Result<(), ApiError> {
    use llmq_runtime::limits::{Demand, LimitError, Scope};
    let Some(rpm) = key.rpm else {
        return Ok(());
    };
    let spec = llmq_schemas::LimitSpec {
        rpm: Some(i64::from(rpm)),
        ..Default::default()
    };
    let limits = [(Scope::ApiKey(key.id.clone()), spec)];
    match state
        .limiter
        .admit(
            &limits,
            Demand { tokens: 0 },
            Some(tokio::time::Instant::now()),
        )
        .await
    {
        Ok(_admission) => Ok(()),
        Err(err) => {
            let retry_after = match &err {
                LimitError::Exhausted(exhausted) => Some(exhausted.retry_after),
                LimitError::Nats { .. } => Some(Duration::from_secs(1)),
            };
            let mut error = ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "requests",
                "rate_limit_exceeded",
                format!("this API key's rate limit: {err}"),
            );
            error.retry_after = retry_after;
            Err(error)
        }
    }
}

/// The whole body, within the size limit (413; a declared length over it is refused
/// before anything is read) and the read timeout (408).
async fn read_body(state: &EdgeState, body: axum::body::Body) -> Result<Bytes, ApiError> {
    let limit = state.options.max_body_bytes;
    let read = axum::body::to_bytes(body, limit);
    match tokio::time::timeout(state.options.read_timeout, read).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "request_too_large",
            format!("the body is larger than this endpoint's limit of {limit} bytes"),
        )),
        Err(_) => Err(ApiError::new(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            "request_timeout",
            "the body did not arrive in time",
        )),
    }
}

/// The job a body asks for, or why it cannot be one.
fn job_of(state: &EdgeState, headers: &HeaderMap, body: &[u8]) -> Result<(Job, Asked), ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|err| ApiError::invalid(format!("the body is not JSON: {err}")))?;
    let model = value
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid("`model` is required (a string)"))?
        .to_owned();
    let stream = value
        .get("stream")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let include_usage = value
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let request: ChatRequest = serde_json::from_value(value)
        .map_err(|err| ApiError::invalid(format!("invalid chat completion request: {err}")))?;
    if let Some(problem) = request.problem() {
        return Err(ApiError::invalid(problem));
    }
    if stream && request.n.is_some_and(|n| n > 1) {
        // Chunks carry one choice; the others would be paid for and never seen.
        return Err(ApiError::invalid(
            "`n` > 1 cannot be streamed: ask without `stream`, or for one choice",
        ));
    }
    let timeout = header(headers, "x-llmq-timeout")
        .map(|text| humantime::parse_duration(&text))
        .transpose()
        .map_err(|err| ApiError::invalid(format!("x-llmq-timeout: {err}")))?
        .unwrap_or(state.options.default_timeout);
    let mut job = Job::new(model, request);
    job.stream = stream;
    job.deadline = Some(Timestamp::now().plus(timeout));
    if let Some(tier) = header(headers, "x-llmq-tier") {
        job.tier = Tier::parse(&tier).ok_or_else(|| {
            ApiError::invalid(format!("x-llmq-tier: {tier:?} is not interactive or batch"))
        })?;
    }
    job.metadata = metadata(headers)?;
    Ok((
        job,
        Asked {
            stream,
            include_usage,
            timeout,
        },
    ))
}

/// `x-llmq-meta-<name>: <value>` headers, as the job's metadata (returned with its
/// outcome): a priority, a cost centre, a caller's own ids.
fn metadata(headers: &HeaderMap) -> Result<Option<serde_json::Map<String, Value>>, ApiError> {
    const PREFIX: &str = "x-llmq-meta-";
    const MOST: usize = 16;
    let mut metadata = serde_json::Map::new();
    for (name, value) in headers {
        let Some(key) = name.as_str().strip_prefix(PREFIX) else {
            continue;
        };
        let value = value
            .to_str()
            .map_err(|_| ApiError::invalid(format!("{name}: not visible ASCII")))?;
        if metadata.len() == MOST || value.len() > 256 {
            return Err(ApiError::invalid(format!(
                "at most {MOST} {PREFIX}* headers of at most 256 bytes each"
            )));
        }
        metadata.insert(key.to_owned(), Value::String(value.to_owned()));
    }
    Ok((!metadata.is_empty()).then_some(metadata))
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    Some(headers.get(name)?.to_str().ok()?.trim().to_owned())
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

/// Response headers: the job, the provider and model that answered.
fn describe(headers: &mut HeaderMap, outcome: &Outcome) {
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

pub(super) fn insert(headers: &mut HeaderMap, name: &'static str, value: String) {
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(HeaderName::from_static(name), value);
    }
}

/// Cancels the job if the request goes away before its answer was sent (a client
/// disconnect drops the handler's future, and with it this guard).
pub(super) struct CancelOnDrop {
    armed: Option<(Client, JobId)>,
}

impl CancelOnDrop {
    fn new(client: Client, job_id: JobId) -> Self {
        Self {
            armed: Some((client, job_id)),
        }
    }

    pub(super) fn disarm(mut self) {
        self.armed = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some((client, job_id)) = self.armed.take() {
            tokio::spawn(async move {
                let reason = Some("the HTTP client went away".to_owned());
                if let Err(err) = client.cancel(job_id, reason).await {
                    tracing::warn!(%job_id, error = %err, "could not cancel the job of a closed request");
                }
            });
        }
    }
}
