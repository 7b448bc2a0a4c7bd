//! `POST /v1/chat/completions`: a job published for the caller's tenant, its events and
//! outcome turned into OpenAI's answer.
//!
//! **The restart rule.** OpenAI's stream format has no way to take back text. When an
//! attempt fails after some of its text went out and a fallback takes over (a `restart`
//! event), the edge does not splice the next attempt's text onto the first: it sends an
//! error chunk (`{"error": {..., "code": "stream_restarted"}}`), ends the stream and
//! cancels the job. A restart before any text went out is invisible to the client. The
//! same error ends a stream whose deltas were lost on the way (the final outcome says
//! how many there were), so a client never reads a partial answer as a whole one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use llmq_schemas::{ChatRequest, Job, JobId, Outcome, OutcomeStatus, ReplyEvent, Tier, Timestamp};
use serde_json::Value;

use super::error::{ApiError, from_job_error};
use super::sse::ChunkFrame;
use super::{EdgeState, auth, metrics};
use crate::{Client, JobHandle, StreamText, TextUpdate};

/// What a request asked for, besides the job itself.
struct Asked {
    stream: bool,
    include_usage: bool,
    request_id: Option<String>,
    timeout: Duration,
}

pub async fn completions(
    State(state): State<Arc<EdgeState>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let started = Instant::now();
    let response = match read_body(&state, body).await {
        Ok(body) => match handle(&state, &headers, &body, started).await {
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
    headers: &HeaderMap,
    body: &[u8],
    started: Instant,
) -> Result<Response, ApiError> {
    let key = auth::authenticate(&state.keys, headers).map_err(|refusal| {
        metrics::auth_failure(refusal);
        ApiError::from(refusal)
    })?;
    key_rate(state, &key).await?;
    let (job, asked) = job_of(state, headers, body)?;
    if !key.allows_model(&job.model) {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "invalid_request_error",
            "model_not_allowed",
            format!("this API key may not use model {:?}", job.model),
        ));
    }
    let client = state.client_for(&key.tenant).await?;
    let model = job.model.clone();
    let handle = client
        .submit(job)
        .await
        .map_err(|err| ApiError::from(&err))?;
    let cancel = CancelOnDrop::new(client, handle.job_id());
    if asked.stream {
        return Ok(stream(state, handle, cancel, model, &asked).into_response());
    }
    let outcome = handle
        .outcome_within(asked.timeout + Duration::from_secs(5))
        .await;
    let outcome = outcome.map_err(|err| ApiError::from(&err))?;
    cancel.disarm();
    answer(&outcome, &asked, started)
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
    let request_id = header(headers, "x-request-id");
    job.custom_id = request_id.clone();
    job.metadata = metadata(headers)?;
    Ok((
        job,
        Asked {
            stream,
            include_usage,
            request_id,
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

/// A finished job as OpenAI's answer, or its error.
fn answer(outcome: &Outcome, asked: &Asked, started: Instant) -> Result<Response, ApiError> {
    let response = match (&outcome.status, &outcome.response, &outcome.error) {
        (OutcomeStatus::Succeeded, Some(response), _) => response,
        (_, _, Some(error)) => return Err(from_job_error(error)),
        _ => {
            return Err(ApiError::unavailable(format!(
                "job {} ended {:?} without an answer",
                outcome.job_id, outcome.status
            )));
        }
    };
    let mut http = axum::Json(response).into_response();
    let headers = http.headers_mut();
    describe(headers, outcome, asked);
    let upstream_ms: u64 = outcome.attempts.iter().map(|a| a.latency_ms).sum();
    let overhead = (started.elapsed().as_millis() as u64).saturating_sub(upstream_ms);
    insert(headers, "x-llmq-overhead-duration-ms", overhead.to_string());
    Ok(http)
}

/// Response headers: the request id, the job, the provider and model that answered.
fn describe(headers: &mut HeaderMap, outcome: &Outcome, asked: &Asked) {
    let job_id = outcome.job_id.to_string();
    insert(
        headers,
        "x-request-id",
        asked.request_id.clone().unwrap_or_else(|| job_id.clone()),
    );
    insert(headers, "x-llmq-job-id", job_id);
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

fn insert(headers: &mut HeaderMap, name: &'static str, value: String) {
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(HeaderName::from_static(name), value);
    }
}

/// Cancels the job if the request goes away before its answer was sent (a client
/// disconnect drops the handler's future, and with it this guard).
struct CancelOnDrop {
    armed: Option<(Client, JobId)>,
}

impl CancelOnDrop {
    fn new(client: Client, job_id: JobId) -> Self {
        Self {
            armed: Some((client, job_id)),
        }
    }

    fn disarm(mut self) {
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

/// Where a stream is.
struct Streaming {
    handle: JobHandle,
    cancel: Option<CancelOnDrop>,
    frame: ChunkFrame,
    text: StreamText,
    include_usage: bool,
    sent_text: bool,
    pending: std::collections::VecDeque<Event>,
    done: bool,
    _open: metrics::OpenStream,
}

fn stream(
    state: &EdgeState,
    handle: JobHandle,
    cancel: CancelOnDrop,
    model: String,
    asked: &Asked,
) -> impl IntoResponse {
    let frame = ChunkFrame {
        id: format!("chatcmpl-{}", handle.job_id().simple()),
        created: Timestamp::now().unix_millis() / 1000,
        model,
    };
    let mut pending = std::collections::VecDeque::new();
    pending.push_back(data(&frame.role()));
    let job_id = handle.job_id().to_string();
    let streaming = Streaming {
        handle,
        cancel: Some(cancel),
        frame,
        text: StreamText::new(),
        include_usage: asked.include_usage,
        sent_text: false,
        pending,
        done: false,
        _open: metrics::OpenStream::new(),
    };
    let keep_alive = KeepAlive::new()
        .interval(state.options.keep_alive)
        .text("keep-alive");
    let mut response = Sse::new(events(streaming))
        .keep_alive(keep_alive)
        .into_response();
    let headers = response.headers_mut();
    insert(
        headers,
        "x-request-id",
        asked.request_id.clone().unwrap_or_else(|| job_id.clone()),
    );
    insert(headers, "x-llmq-job-id", job_id);
    response
}

fn events(streaming: Streaming) -> impl Stream<Item = Result<Event, std::convert::Infallible>> {
    futures::stream::unfold(streaming, |mut s| async move {
        loop {
            if let Some(event) = s.pending.pop_front() {
                return Some((Ok(event), s));
            }
            if s.done {
                return None;
            }
            s.next().await;
        }
    })
}

impl Streaming {
    /// Turns the job's next event into the chunks it stands for.
    async fn next(&mut self) {
        let event = match self.handle.next_event().await {
            Some(Ok(event)) => event,
            Some(Err(crate::WaitError::Decode(err))) => {
                tracing::warn!(error = %err, "skipping an undecodable reply event");
                return;
            }
            Some(Err(err)) => return self.fail(&ApiError::from(&err)),
            None => {
                return self.fail(&ApiError::unavailable(
                    "the job's events ended without an outcome",
                ));
            }
        };
        // What goes out is what `StreamText` accepts as the current text: a delta of an
        // attempt or processing already superseded never does, and new text after text
        // went out (a fallback, or the job processed again) ends the stream.
        let update = self.text.apply(&event);
        let restarted_now = matches!(update, TextUpdate::Restarted { .. });
        let passes = matches!(update, TextUpdate::Appended(_) | TextUpdate::Gap { .. });
        match &event {
            _ if restarted_now && self.sent_text => self.fail(&restarted()),
            ReplyEvent::Delta(delta) if passes || restarted_now => {
                self.sent_text = true;
                self.pending.push_back(data(&self.frame.delta(delta)));
            }
            ReplyEvent::Final(outcome) => self.finish(outcome),
            ReplyEvent::DeadLettered(dead) => self.fail(&ApiError::invalid(dead.message.clone())),
            _ => {}
        }
    }

    fn finish(&mut self, outcome: &Outcome) {
        if let Some(cancel) = self.cancel.take() {
            cancel.disarm();
        }
        match (&outcome.status, &outcome.error) {
            (OutcomeStatus::Succeeded, _) if !self.text.is_complete() => {
                return self.fail(&incomplete(outcome));
            }
            (OutcomeStatus::Succeeded, _) => {}
            (_, Some(error)) => return self.fail(&from_job_error(error)),
            _ => return self.fail(&ApiError::unavailable("the job ended without an answer")),
        }
        self.pending.push_back(data(&self.frame.finish(outcome)));
        if self.include_usage {
            self.pending.push_back(data(&self.frame.usage(outcome)));
        }
        self.pending.push_back(Event::default().data("[DONE]"));
        self.done = true;
    }

    /// An error chunk ends the stream (and, through the guard, cancels an unfinished job).
    fn fail(&mut self, error: &ApiError) {
        self.pending.push_back(data(&error.body()));
        self.done = true;
    }
}

fn restarted() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::BAD_GATEWAY,
        "server_error",
        "stream_restarted",
        "the answer was started again after part of it was sent (a provider failed and \
         another deployment took over, or the job was processed again); the stream ends here \
         rather than splice two answers (retry the request)",
    )
}

fn incomplete(outcome: &Outcome) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::BAD_GATEWAY,
        "server_error",
        "stream_incomplete",
        format!(
            "part of the streamed answer was lost on the way; the whole answer is stored as job {}",
            outcome.job_id
        ),
    )
}

fn data(value: &Value) -> Event {
    Event::default().data(value.to_string())
}
