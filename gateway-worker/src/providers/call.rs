//! One attempt against one deployment: send, time out, stream, accumulate.
//!
//! This is the only place that does provider I/O, so the timeout rules hold for every
//! adapter alike: connect (on the client), first token (streaming: request sent to first
//! output), inter-token (streaming: longest silence once output has started), total
//! (the whole attempt). Cancellation is the caller dropping this future, which drops the
//! response and closes the connection, so the provider stops generating too.
//!
//! Billing is decided here too, for every attempt alike: the usage the provider reported
//! is billed whatever the attempt's outcome (a refusal, a blocked prompt, a stream that
//! failed after its usage came), and output that visibly came is never billed at less than
//! its estimate. The tool-argument rule ([`super::tool_arguments`]) is applied to the
//! finished answer, so streaming and non-streaming answers are judged alike.

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use llmq_schemas::{AttemptWarning, ToolCall, Usage, UsageSource};
use tokio::time::{Instant, timeout_at};

use super::accumulate::StreamAccumulator;
use super::estimate::estimate;
use super::redact::redact;
use super::retry_hint::UpstreamExhausted;
use super::sse::SseParser;
use super::tool_arguments;
use super::{
    Adapter, CallSpec, Completion, DeltaPart, ProviderError, SseEvent, StreamDecoder, StreamItem,
    TimeoutKind,
};
use crate::config::{ApiKey, Timeouts};

/// Where streamed output goes as it arrives.
#[async_trait]
pub trait DeltaSink: Send {
    async fn delta(&mut self, part: DeltaPart);
}

/// A sink that drops everything (non-streaming jobs, tests).
#[derive(Debug, Default)]
pub struct NoSink;

#[async_trait]
impl DeltaSink for NoSink {
    async fn delta(&mut self, _part: DeltaPart) {}
}

/// The upstream side of a call.
#[derive(Debug, Clone, Copy)]
pub struct Upstream<'a> {
    pub client: &'a reqwest::Client,
    pub adapter: &'a dyn Adapter,
    pub timeouts: &'a Timeouts,
    /// The most bytes of an answer (a whole body, or a stream's accumulated output) held
    /// before the attempt fails with `response_too_large` (`worker.max_response_bytes`).
    pub max_response_bytes: usize,
}

/// What an attempt produced, success or not.
#[derive(Debug)]
pub struct AttemptReport {
    pub result: Result<Completion, ProviderError>,
    /// What to bill, success or not: reported by the provider, or estimated when it
    /// reported nothing but output was produced. `None` when nothing was reported or
    /// produced (a 429, a refused connect).
    pub usage: Option<(Usage, UsageSource)>,
    pub http_status: Option<u16>,
    pub latency: Duration,
    /// Streaming: from the request to the first output.
    pub ttft: Option<Duration>,
    /// Whether deltas of this attempt reached the sink (a failure then needs `restart`).
    pub deltas_sent: bool,
    /// Output produced before a failure.
    pub partial: Option<(String, Vec<ToolCall>)>,
    /// What the answer got through with (tool arguments passed through unchecked).
    pub warnings: Vec<AttemptWarning>,
    /// A limit the response's rate-limit headers say is used up (any status).
    pub exhausted: Option<UpstreamExhausted>,
}

/// Makes one call: sends the request, reads the answer within the timeouts (streaming
/// its output into `sink`), and reports everything the attempt produced.
pub async fn call(
    upstream: Upstream<'_>,
    spec: CallSpec<'_>,
    sink: &mut dyn DeltaSink,
) -> AttemptReport {
    let started = Instant::now();
    let mut report = AttemptReport {
        result: Err(ProviderError::network("not sent")),
        usage: None,
        http_status: None,
        latency: Duration::ZERO,
        ttft: None,
        deltas_sent: false,
        partial: None,
        warnings: Vec::new(),
        exhausted: None,
    };
    let mut acc = StreamAccumulator::new();
    let result = exchange(upstream, spec, sink, started, &mut report, &mut acc).await;
    report.latency = started.elapsed();
    let result = result.and_then(|completion| accept(spec, completion, &mut report));
    match result {
        Ok(completion) => report.result = Ok(completion),
        Err(mut err) => {
            err.message = redact(&err.message, spec.key.map(ApiKey::expose));
            if report.usage.is_none() {
                report.usage = failed_usage(spec, &acc, err.reported_usage());
            }
            if report.partial.is_none() && acc.saw_output() {
                report.partial = Some((acc.content().to_owned(), acc.tool_calls()));
            }
            report.result = Err(err);
        }
    }
    report
}

/// The HTTP exchange: request out, status, headers and body (or stream) in.
async fn exchange(
    upstream: Upstream<'_>,
    spec: CallSpec<'_>,
    sink: &mut dyn DeltaSink,
    started: Instant,
    report: &mut AttemptReport,
    acc: &mut StreamAccumulator,
) -> Result<Completion, ProviderError> {
    let deadlines = Deadlines::new(started, upstream.timeouts);
    let call = upstream.adapter.build(&spec)?;
    let request = upstream
        .client
        .post(&call.url)
        .headers(call.headers)
        .body(call.body);
    let response = send(request, spec.stream, &deadlines).await?;
    let status = response.status().as_u16();
    report.http_status = Some(status);
    report.exhausted = upstream.adapter.exhausted(response.headers());
    if !response.status().is_success() {
        return Err(error_response(upstream.adapter, status, response, &deadlines).await);
    }
    let most = upstream.max_response_bytes;
    if !spec.stream {
        let body = whole_body(response, &deadlines, most).await?;
        return upstream.adapter.parse_response(&body);
    }
    let decoder = upstream.adapter.stream_decoder();
    Feed::new(decoder, started, &mut *acc, sink, report)
        .read(response, &deadlines, most)
        .await?;
    Ok(std::mem::take(acc).finish(spec.upstream_model))
}

/// The attempt's deadlines, all counted from its start.
struct Deadlines<'a> {
    timeouts: &'a Timeouts,
    total: Instant,
    first_token: Instant,
}

impl<'a> Deadlines<'a> {
    fn new(started: Instant, timeouts: &'a Timeouts) -> Self {
        let total = started + timeouts.total;
        Self {
            timeouts,
            total,
            first_token: (started + timeouts.first_token).min(total),
        }
    }

    /// Until the response starts. Non-streaming answers arrive whole, after the
    /// generation: only `total` applies.
    fn send(&self, stream: bool) -> (Instant, TimeoutKind) {
        if stream {
            self.within_total(self.first_token, TimeoutKind::FirstToken)
        } else {
            (self.total, TimeoutKind::Total)
        }
    }

    /// Until the stream's next chunk: the first token's deadline until output started,
    /// then the inter-token timeout from now.
    fn next_chunk(&self, output_started: bool) -> (Instant, TimeoutKind) {
        if output_started {
            let deadline = Instant::now() + self.timeouts.inter_token;
            self.within_total(deadline, TimeoutKind::InterToken)
        } else {
            self.within_total(self.first_token, TimeoutKind::FirstToken)
        }
    }

    /// `deadline`, unless the total deadline comes first (or at the same time).
    fn within_total(&self, deadline: Instant, kind: TimeoutKind) -> (Instant, TimeoutKind) {
        if deadline >= self.total {
            (self.total, TimeoutKind::Total)
        } else {
            (deadline, kind)
        }
    }

    fn expired(&self, kind: TimeoutKind) -> ProviderError {
        let after = match kind {
            TimeoutKind::Connect => self.timeouts.connect,
            TimeoutKind::FirstToken => self.timeouts.first_token,
            TimeoutKind::InterToken => self.timeouts.inter_token,
            TimeoutKind::Total => self.timeouts.total,
        };
        ProviderError::timeout(kind, after)
    }
}

async fn send(
    request: reqwest::RequestBuilder,
    stream: bool,
    deadlines: &Deadlines<'_>,
) -> Result<reqwest::Response, ProviderError> {
    let (deadline, kind) = deadlines.send(stream);
    match timeout_at(deadline, request.send()).await {
        Err(_) => Err(deadlines.expired(kind)),
        Ok(Err(err)) => Err(from_reqwest(&err, deadlines.timeouts)),
        Ok(Ok(response)) => Ok(response),
    }
}

/// A non-2xx response, classified from its status, headers and the start of its body.
async fn error_response(
    adapter: &dyn Adapter,
    status: u16,
    response: reqwest::Response,
    deadlines: &Deadlines<'_>,
) -> ProviderError {
    let headers = response.headers().clone();
    let body = timeout_at(deadlines.total, read_prefix(response, 64 * 1024))
        .await
        .unwrap_or_default();
    let mut err = adapter.classify_error(status, &headers, &body);
    err.status.get_or_insert(status);
    err
}

async fn whole_body(
    response: reqwest::Response,
    deadlines: &Deadlines<'_>,
    most: usize,
) -> Result<Vec<u8>, ProviderError> {
    if response
        .content_length()
        .is_some_and(|length| length > most as u64)
    {
        return Err(too_large(most));
    }
    match timeout_at(deadlines.total, read_within(response, most)).await {
        Err(_) => Err(deadlines.expired(TimeoutKind::Total)),
        Ok(Err(err)) => Err(err.unwrap_or_else(|err| from_reqwest(&err, deadlines.timeouts))),
        Ok(Ok(body)) => Ok(body),
    }
}

/// The body, unless it is longer than `most` bytes (`Err(Ok(..))`) or fails to arrive
/// (`Err(Err(..))`).
async fn read_within(
    mut response: reqwest::Response,
    most: usize,
) -> Result<Vec<u8>, Result<ProviderError, reqwest::Error>> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(Err)? {
        if body.len() + chunk.len() > most {
            return Err(Ok(too_large(most)));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An answer longer than the worker reads: the attempt stops, the connection closes.
fn too_large(most: usize) -> ProviderError {
    ProviderError::new(
        llmq_schemas::ErrorType::ResponseTooLarge,
        format!("the answer is larger than {most} bytes (worker.max_response_bytes)"),
    )
}

/// One stream's decoding state, and where its output goes.
struct Feed<'a> {
    decoder: Box<dyn StreamDecoder>,
    parser: SseParser,
    events: Vec<SseEvent>,
    items: Vec<StreamItem>,
    started: Instant,
    first_output: Option<Instant>,
    acc: &'a mut StreamAccumulator,
    sink: &'a mut dyn DeltaSink,
    report: &'a mut AttemptReport,
}

impl<'a> Feed<'a> {
    fn new(
        decoder: Box<dyn StreamDecoder>,
        started: Instant,
        acc: &'a mut StreamAccumulator,
        sink: &'a mut dyn DeltaSink,
        report: &'a mut AttemptReport,
    ) -> Self {
        Self {
            decoder,
            parser: SseParser::new(),
            events: Vec::new(),
            items: Vec::new(),
            started,
            first_output: None,
            acc,
            sink,
            report,
        }
    }

    /// Reads the body until the decoder saw the stream's end, or the body ends.
    async fn read(
        &mut self,
        response: reqwest::Response,
        deadlines: &Deadlines<'_>,
        most: usize,
    ) -> Result<(), ProviderError> {
        let mut body = response.bytes_stream();
        while !self.decoder.is_done() {
            let (deadline, kind) = deadlines.next_chunk(self.first_output.is_some());
            match timeout_at(deadline, body.next()).await {
                Err(_) => return Err(deadlines.expired(kind)),
                Ok(None) => return self.end().await,
                Ok(Some(Err(err))) => {
                    return Err(ProviderError::network(format!(
                        "stream interrupted: {}",
                        err.without_url()
                    )));
                }
                Ok(Some(Ok(chunk))) => {
                    self.chunk(&chunk).await?;
                    // The answer held, not the stream's framing (a token's event is ~30
                    // times its text); one event is bounded by the SSE parser.
                    if self.acc.held_bytes() > most {
                        return Err(too_large(most));
                    }
                }
            }
        }
        Ok(())
    }

    async fn chunk(&mut self, chunk: &[u8]) -> Result<(), ProviderError> {
        self.parser
            .feed(chunk, &mut self.events)
            .map_err(bad_event_stream)?;
        self.dispatch().await
    }

    /// The body ended: the last event, then the decoder's verdict on the stream's end.
    async fn end(&mut self) -> Result<(), ProviderError> {
        self.parser
            .finish(&mut self.events)
            .map_err(bad_event_stream)?;
        self.dispatch().await?;
        self.decoder.finish()
    }

    /// Decodes the parsed events and forwards their output. What an event yielded before
    /// its error is applied first: Anthropic's refusal comes in the `message_delta` that
    /// carries the final usage, and those tokens were charged.
    async fn dispatch(&mut self) -> Result<(), ProviderError> {
        for event in self.events.drain(..) {
            let decoded = self.decoder.decode(&event, &mut self.items);
            for item in self.items.drain(..) {
                if let Some(part) = self.acc.apply(item) {
                    if self.first_output.is_none() {
                        self.first_output = Some(Instant::now());
                        self.report.ttft = Some(self.started.elapsed());
                    }
                    self.sink.delta(part).await;
                    self.report.deltas_sent = true;
                }
            }
            decoded?;
        }
        Ok(())
    }
}

fn bad_event_stream(err: super::sse::SseError) -> ProviderError {
    ProviderError::malformed(format!("bad event stream: {err}"))
}

/// What to bill for a failed attempt: the usage the provider reported (with the error,
/// or in the stream before it), because it charged for it; after visible output, never
/// less than that output. `None` when nothing was reported or produced (a 429, a refused
/// connect).
fn failed_usage(
    spec: CallSpec<'_>,
    acc: &StreamAccumulator,
    with_error: Option<Usage>,
) -> Option<(Usage, UsageSource)> {
    let reported = with_error
        .or(acc.usage())
        .filter(|usage| usage.total_tokens > 0);
    if acc.saw_output() {
        Some(partial_usage(spec, acc.content().len(), reported))
    } else {
        reported.map(|usage| (usage, UsageSource::Reported))
    }
}

/// Usage of an attempt that failed after producing output. A cut stream may have
/// reported usage early (Anthropic's `message_start` says 1 output token) and never the
/// final count: never bill less than the output visibly produced.
fn partial_usage(
    spec: CallSpec<'_>,
    output_bytes: usize,
    reported: Option<Usage>,
) -> (Usage, UsageSource) {
    let estimated = estimate(spec.request, output_bytes);
    match reported {
        Some(reported) if reported.completion_tokens >= estimated.completion_tokens => {
            (reported, UsageSource::Reported)
        }
        Some(reported) => {
            let mut usage = reported;
            usage.completion_tokens = estimated.completion_tokens;
            usage.total_tokens = usage.prompt_tokens + usage.completion_tokens;
            (usage, UsageSource::Estimated)
        }
        None => (estimated, UsageSource::Estimated),
    }
}

/// A finished answer: named, billed, and held to the tool-argument rule (a broken one
/// is still billed, and its output kept as the partial).
fn accept(
    spec: CallSpec<'_>,
    mut completion: Completion,
    report: &mut AttemptReport,
) -> Result<Completion, ProviderError> {
    if completion.response.model.is_empty() {
        // Some responses do not name the model (Gemini without modelVersion).
        completion.response.model = spec.upstream_model.to_owned();
    }
    report.usage = Some(match completion.usage {
        Some(usage) => (usage, UsageSource::Reported),
        None => (
            estimate(spec.request, output_bytes(&completion)),
            UsageSource::Estimated,
        ),
    });
    match tool_arguments::check(&mut completion, spec.invalid_tool_arguments) {
        Ok(warnings) => {
            report.warnings = warnings;
            Ok(completion)
        }
        Err(err) => {
            report.partial = Some(partial_of(&completion));
            Err(err)
        }
    }
}

/// The first choice's output, for an answer that is not used.
fn partial_of(completion: &Completion) -> (String, Vec<ToolCall>) {
    completion
        .response
        .choices
        .first()
        .map(|choice| {
            (
                choice.message.content.clone().unwrap_or_default(),
                choice.message.tool_calls.clone().unwrap_or_default(),
            )
        })
        .unwrap_or_default()
}

fn output_bytes(completion: &Completion) -> usize {
    completion
        .response
        .choices
        .iter()
        .map(|choice| {
            let message = &choice.message;
            message.content.as_deref().map_or(0, str::len)
                + message
                    .tool_calls
                    .iter()
                    .flatten()
                    .map(|call| call.function.arguments.len() + call.function.name.len())
                    .sum::<usize>()
        })
        .sum()
}

async fn read_prefix(mut response: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(limit);
    body
}

fn from_reqwest(err: &reqwest::Error, timeouts: &Timeouts) -> ProviderError {
    if err.is_connect() {
        if err.is_timeout() {
            return ProviderError::timeout(TimeoutKind::Connect, timeouts.connect);
        }
        return ProviderError::network(format!("connect failed: {}", error_chain(err)));
    }
    if err.is_timeout() {
        return ProviderError::timeout(TimeoutKind::Total, timeouts.total);
    }
    ProviderError::network(error_chain(err))
}

/// The error and its causes, without the URL.
fn error_chain(err: &reqwest::Error) -> String {
    let mut text = String::new();
    let mut source: Option<&dyn std::error::Error> = Some(err);
    let mut first = true;
    while let Some(current) = source {
        let part = if first {
            // reqwest's own Display names the URL; providers never get keys in URLs, but
            // the URL adds nothing to the message either.
            let mut part = current.to_string();
            if let Some(cut) = part.find(" for url (") {
                part.truncate(cut);
            }
            part
        } else {
            current.to_string()
        };
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
        first = false;
        source = current.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeouts(first_token: u64, inter_token: u64, total: u64) -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(1),
            first_token: Duration::from_secs(first_token),
            inter_token: Duration::from_secs(inter_token),
            total: Duration::from_secs(total),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn streams_wait_for_the_first_token_then_between_tokens_never_past_the_total() {
        let started = Instant::now();
        let timeouts = timeouts(10, 5, 60);
        let deadlines = Deadlines::new(started, &timeouts);
        let first = (started + Duration::from_secs(10), TimeoutKind::FirstToken);
        assert_eq!(deadlines.send(true), first);
        assert_eq!(deadlines.next_chunk(false), first);
        assert_eq!(
            deadlines.send(false),
            (started + Duration::from_secs(60), TimeoutKind::Total)
        );
        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(
            deadlines.next_chunk(true),
            (started + Duration::from_secs(25), TimeoutKind::InterToken)
        );
        tokio::time::advance(Duration::from_secs(38)).await;
        assert_eq!(
            deadlines.next_chunk(true),
            (started + Duration::from_secs(60), TimeoutKind::Total)
        );
        let err = deadlines.expired(TimeoutKind::InterToken);
        assert_eq!(err.timeout, Some(TimeoutKind::InterToken));
        assert_eq!(err.message, "inter_token timeout after 5s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_token_timeout_at_or_past_the_total_is_the_total() {
        let started = Instant::now();
        let timeouts = timeouts(60, 5, 60);
        let deadlines = Deadlines::new(started, &timeouts);
        let total = (started + Duration::from_secs(60), TimeoutKind::Total);
        assert_eq!(deadlines.send(true), total);
        assert_eq!(deadlines.next_chunk(false), total);
        assert_eq!(
            deadlines.expired(TimeoutKind::Total).message,
            "total timeout after 1m"
        );
    }
}
