//! A chat-completions request as a job: the body read within its limits and parsed once
//! into OpenAI's typed request, the `x-llmq-*` headers applied.
//!
//! What can be refused without a worker is refused here, before the job is submitted (a
//! body that is not a request, `n > 1` with `stream`, a bad header), so it costs no queue
//! slot and is a plain 400.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode};
use llmq_schemas::openai::ChatCompletionRequest;
use llmq_schemas::{Job, Tier, Timestamp};
use serde_json::Value;

use crate::api_error::ApiError;
use crate::config::HttpConfig;

/// What a request asked for, besides the job itself.
pub(super) struct Asked {
    pub stream: bool,
    pub include_usage: bool,
    pub timeout: Duration,
}

/// The whole body, within the size limit (413; a declared length over it is refused
/// before anything is read) and the read timeout (408).
pub(super) async fn read_body(http: &HttpConfig, body: Body) -> Result<Bytes, ApiError> {
    let limit = http.max_body_bytes;
    let read = axum::body::to_bytes(body, limit);
    match tokio::time::timeout(http.read_timeout, read).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "request_too_large",
            format!("the body is larger than this endpoint's limit of {limit} bytes"),
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            "request_timeout",
            "the body did not arrive in time",
        )),
    }
}

/// The job a body asks for, or why it cannot be one.
pub(super) fn job_of(
    http: &HttpConfig,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Job, Asked), ApiError> {
    let asked: ChatCompletionRequest = serde_json::from_slice(body).map_err(unreadable)?;
    if let Some(problem) = asked.request.problem() {
        return Err(ApiError::invalid(problem));
    }
    let stream = asked.streams();
    if stream && asked.request.n.is_some_and(|n| n > 1) {
        // Chunks carry one choice; the others would be paid for and never seen.
        return Err(ApiError::invalid(
            "`n` > 1 cannot be streamed: ask without `stream`, or for one choice",
        ));
    }
    let timeout = header(headers, "x-llmq-timeout")
        .map(|text| humantime::parse_duration(&text))
        .transpose()
        .map_err(|err| ApiError::invalid(format!("x-llmq-timeout: {err}")))?
        .unwrap_or(http.default_timeout);
    let include_usage = asked.includes_usage();
    let mut job = Job::new(asked.model, asked.request);
    job.stream = stream;
    job.deadline = Some(Timestamp::now().plus(timeout));
    if let Some(tier) = header(headers, "x-llmq-tier") {
        job.tier = Tier::parse(&tier).ok_or_else(|| {
            ApiError::invalid(format!("x-llmq-tier: {tier:?} is not interactive or batch"))
        })?;
    }
    job.metadata = metadata(headers)?;
    let asked = Asked {
        stream,
        include_usage,
        timeout,
    };
    Ok((job, asked))
}

/// A body that is not JSON, or not a chat-completions request.
fn unreadable(err: serde_json::Error) -> ApiError {
    match err.classify() {
        serde_json::error::Category::Data => {
            ApiError::invalid(format!("invalid chat completion request: {err}"))
        }
        _ => ApiError::invalid(format!("the body is not JSON: {err}")),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn job(body: &str) -> Result<(Job, Asked), ApiError> {
        job_of(&HttpConfig::default(), &HeaderMap::new(), body.as_bytes())
    }

    #[test]
    fn a_body_becomes_a_job_with_its_unknown_fields_and_the_delivery_it_asked_for() {
        let (job, asked) = job(
            r#"{"model": "chat", "stream": true, "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "low"}"#,
        )
        .unwrap();
        assert_eq!(job.model, "chat");
        assert!(job.stream && asked.stream && asked.include_usage);
        assert_eq!(job.request.extra["reasoning_effort"], "low");
        assert_eq!(asked.timeout, Duration::from_secs(600));
    }

    #[test]
    fn what_cannot_be_a_job_is_a_400_saying_why() {
        let message = |body: &str| {
            job(body)
                .err()
                .map(|err| (err.status.as_u16(), err.message))
        };
        let (status, text) = message("{not json").unwrap();
        assert_eq!(status, 400);
        assert!(text.starts_with("the body is not JSON"), "{text}");
        let (_, text) = message(r#"{"model": 7, "messages": []}"#).unwrap();
        assert!(
            text.starts_with("invalid chat completion request"),
            "{text}"
        );
        let (_, text) = message(r#"{"messages": [{"role": "user", "content": "x"}]}"#).unwrap();
        assert!(text.contains("model"), "{text}");
        let (_, text) = message(r#"{"model": "m", "messages": []}"#).unwrap();
        assert!(text.contains("messages"), "{text}");
        let streamed_n = r#"{"model": "m", "stream": true, "n": 2,
                             "messages": [{"role": "user", "content": "x"}]}"#;
        assert!(message(streamed_n).unwrap().1.contains("`n`"));
    }
}
