//! `stream: true`: a job's events as OpenAI `chat.completion.chunk`s.
//!
//! **The head waits for the first content.** The response head (200, SSE headers) goes out
//! with the first delta that carries output (text, reasoning or a tool call), or with the
//! final outcome if that comes first. An error before then is a real HTTP status with
//! OpenAI's error body, mapped as a non-streaming answer maps it ([`from_job_error`]): a
//! 200 followed by an in-stream error makes the OpenAI SDKs raise an `APIError` with no
//! status, which they neither classify nor retry. While the head waits the client sees
//! nothing, as for a non-streaming request; its own read timeout applies, and the job's
//! deadline (`x-llmq-timeout`) ends the wait with 504. The head costs no round trip: the
//! role chunk and the first delta leave with it. It names the provider, upstream model
//! and attempt of the `started` event before that delta.
//!
//! **The restart rule.** OpenAI's stream format has no way to take back text. When an
//! attempt fails after some of its output went out and a fallback takes over (a `restart`
//! event, or a later attempt or processing whose restart event was lost), the edge does
//! not splice the next attempt's text onto the first: it sends an error chunk
//! (`{"error": {..., "code": "stream_restarted"}}`), ends the stream and cancels the job.
//! A restart before any output went out is invisible. The same error ends a stream whose
//! deltas were lost on the way (the final outcome says how many there were), so a client
//! never reads a partial answer as a whole one.

use std::collections::VecDeque;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use llmq_schemas::{Delta, Outcome, OutcomeStatus, ReplyEvent, Started, Timestamp};
use llmq_submitter::{JobHandle, StreamText, TextUpdate, WaitError};
use serde::Serialize;

use super::cancel::CancelOnDrop;
use super::chat_job::Asked;
use super::headers::insert;
use super::sse::ChunkFrame;
use crate::api_error::{ApiError, from_job_error};
use crate::metrics::OpenStream;
use crate::state::EdgeState;

/// How long past the job's own deadline the head waits for its outcome to arrive.
const HEAD_GRACE: Duration = Duration::from_secs(5);

/// Waits for the job's first output (or its end), then answers: the SSE stream, or the
/// error as its HTTP status.
pub(super) async fn respond(
    state: &EdgeState,
    handle: JobHandle,
    cancel: CancelOnDrop,
    model: String,
    asked: &Asked,
) -> Result<Response, ApiError> {
    let job_id = handle.job_id();
    let open = state.metrics.open_stream();
    let mut streaming = Streaming::new(handle, cancel, model, asked.include_usage, open);
    let wait = asked.timeout + HEAD_GRACE;
    match tokio::time::timeout(wait, streaming.until_output()).await {
        Ok(Ok(())) => Ok(streaming.into_response(state.http.keep_alive)),
        Ok(Err(error)) => Err(error.for_job(job_id)),
        Err(_) => Err(ApiError::from(&WaitError::Timeout { waited: wait }).for_job(job_id)),
    }
}

/// Where a stream is.
struct Streaming {
    handle: JobHandle,
    cancel: Option<CancelOnDrop>,
    frame: ChunkFrame,
    text: StreamText,
    include_usage: bool,
    /// Output (not just the role) is among the chunks queued or sent.
    sent_output: bool,
    /// The head went out: failures from now on are error chunks.
    head_sent: bool,
    /// A failure before the head: the HTTP answer instead of a stream.
    failure: Option<ApiError>,
    /// The attempt that produced the output so far, for the head's headers.
    started: Option<Started>,
    pending: VecDeque<Event>,
    done: bool,
    _open: OpenStream,
}

impl Streaming {
    fn new(
        handle: JobHandle,
        cancel: CancelOnDrop,
        model: String,
        include_usage: bool,
        open: OpenStream,
    ) -> Self {
        let frame = ChunkFrame {
            id: format!("chatcmpl-{}", handle.job_id().simple()),
            created: Timestamp::now().unix_millis() / 1000,
            model,
        };
        let pending = VecDeque::from([data(&frame.role())]);
        Self {
            handle,
            cancel: Some(cancel),
            frame,
            text: StreamText::new(),
            include_usage,
            sent_output: false,
            head_sent: false,
            failure: None,
            started: None,
            pending,
            done: false,
            _open: open,
        }
    }

    /// Reads events until the first output or the end: `Err` when the job failed first.
    async fn until_output(&mut self) -> Result<(), ApiError> {
        while !self.sent_output && !self.done {
            self.next().await;
        }
        match self.failure.take() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// The SSE answer, with what is known of the attempt in its headers.
    fn into_response(mut self, keep_alive: Duration) -> Response {
        self.head_sent = true;
        let job_id = self.handle.job_id().to_string();
        let started = self.started.take();
        let keep_alive = KeepAlive::new().interval(keep_alive).text("keep-alive");
        let mut response = Sse::new(events(self))
            .keep_alive(keep_alive)
            .into_response();
        let headers = response.headers_mut();
        insert(headers, "x-llmq-job-id", job_id);
        if let Some(started) = started {
            insert(headers, "x-llmq-attempts", started.attempt.to_string());
            insert(headers, "x-llmq-provider", started.provider);
            insert(headers, "x-llmq-upstream-model", started.upstream_model);
        }
        response
    }

    /// Turns the job's next event into the chunks it stands for.
    async fn next(&mut self) {
        let event = match self.handle.next_event().await {
            Some(Ok(event)) => event,
            Some(Err(WaitError::Decode(err))) => {
                tracing::warn!(error = %err, "skipping an undecodable reply event");
                return;
            }
            Some(Err(err)) => return self.fail(ApiError::from(&err)),
            None => {
                return self.fail(ApiError::unavailable(
                    "the job's events ended without an outcome",
                ));
            }
        };
        // What goes out is what `StreamText` accepts as the current text: a delta of an
        // attempt or processing already superseded never does, and new text after output
        // went out (a fallback, or the job processed again) ends the stream.
        let update = self.text.apply(&event);
        let restarted_now = matches!(update, TextUpdate::Restarted { .. });
        if self.sent_output && restarted_now {
            return self.fail(restarted());
        }
        let current =
            restarted_now || matches!(update, TextUpdate::Appended(_) | TextUpdate::Gap { .. });
        match event {
            ReplyEvent::Delta(delta) if current && carries_output(&delta) => {
                self.sent_output = true;
                self.pending.push_back(data(&self.frame.delta(&delta)));
            }
            ReplyEvent::Started(started) if !self.sent_output => self.started = Some(started),
            ReplyEvent::Final(outcome) => self.finish(&outcome),
            ReplyEvent::DeadLettered(dead) => self.fail(ApiError::invalid(dead.message)),
            ReplyEvent::Delta(_) | ReplyEvent::Started(_) | ReplyEvent::Restart(_) => {}
        }
    }

    fn finish(&mut self, outcome: &Outcome) {
        if let Some(cancel) = self.cancel.take() {
            cancel.disarm();
        }
        match (&outcome.status, &outcome.error) {
            (OutcomeStatus::Succeeded, _) => {}
            (_, Some(error)) => return self.fail(from_job_error(error)),
            _ => return self.fail(ApiError::unavailable("the job ended without an answer")),
        }
        if !self.sent_output {
            // Nothing went out yet: the stored answer, whole (its deltas may have been lost).
            self.started = self.started.take().or_else(|| started_of(outcome));
            if let Some(chunk) = self.frame.whole(outcome) {
                self.pending.push_back(data(&chunk));
            }
        } else if !self.text.is_complete() {
            return self.fail(incomplete(outcome));
        }
        self.pending.push_back(data(&self.frame.finish(outcome)));
        if self.include_usage {
            self.pending.push_back(data(&self.frame.usage(outcome)));
        }
        self.pending.push_back(Event::default().data("[DONE]"));
        self.done = true;
    }

    /// Ends the stream: before the head, as the HTTP answer; after it, with an error chunk
    /// (and, through the guard, the unfinished job is cancelled).
    fn fail(&mut self, error: ApiError) {
        if self.head_sent {
            self.pending.push_back(data(&error.body()));
        } else {
            self.failure = Some(error);
        }
        self.done = true;
    }
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

fn carries_output(delta: &Delta) -> bool {
    let text = |t: &Option<String>| t.as_deref().is_some_and(|t| !t.is_empty());
    text(&delta.content)
        || text(&delta.reasoning)
        || delta.tool_calls.as_ref().is_some_and(|c| !c.is_empty())
}

/// What the head can say of an outcome's last attempt when no `started` event arrived.
fn started_of(outcome: &Outcome) -> Option<Started> {
    let last = outcome.attempts.last()?;
    Some(Started {
        v: llmq_schemas::PROTOCOL_VERSION,
        job_id: outcome.job_id,
        processing: None,
        delivery: outcome.delivery,
        attempt: last.n,
        first_seq: 0,
        provider: last.provider.clone(),
        upstream_model: last.upstream_model.clone(),
        model: last.model.clone(),
    })
}

fn restarted() -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "server_error",
        "stream_restarted",
        "the answer was started again after part of it was sent (a provider failed and \
         another deployment took over, or the job was processed again); the stream ends here \
         rather than splice two answers (retry the request)",
    )
}

fn incomplete(outcome: &Outcome) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "server_error",
        "stream_incomplete",
        format!(
            "part of the streamed answer was lost on the way; the whole answer is stored as job {}",
            outcome.job_id
        ),
    )
}

/// One SSE `data:` event holding `chunk` as JSON.
fn data(chunk: &impl Serialize) -> Event {
    Event::default().json_data(chunk).unwrap_or_else(|err| {
        tracing::warn!(error = %err, "a chunk could not be written as JSON");
        Event::default().comment("unwritable chunk")
    })
}
