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
use super::sse::SseParser;
use super::tool_arguments;
use super::{
    Adapter, CallSpec, Completion, DeltaPart, ProviderError, SseEvent, StreamDecoder, StreamItem,
    TimeoutKind,
};
use crate::config::Timeouts;

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
    /// The key, only to scrub it out of error text.
    pub secret: Option<&'a str>,
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
}

pub async fn execute(
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
    };
    let mut acc = StreamAccumulator::new();
    let result = run(upstream, spec, sink, started, &mut report, &mut acc).await;
    report.latency = started.elapsed();
    let result = result.and_then(|completion| accept(spec, completion, &mut report));
    match result {
        Ok(completion) => report.result = Ok(completion),
        Err(mut err) => {
            err.message = redact(&err.message, upstream.secret);
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

async fn run(
    upstream: Upstream<'_>,
    spec: CallSpec<'_>,
    sink: &mut dyn DeltaSink,
    started: Instant,
    report: &mut AttemptReport,
    acc: &mut StreamAccumulator,
) -> Result<Completion, ProviderError> {
    let timeouts = upstream.timeouts;
    let total_deadline = started + timeouts.total;
    let first_token_deadline = (started + timeouts.first_token).min(total_deadline);
    let call = upstream.adapter.build(&spec)?;
    let request = upstream
        .client
        .post(&call.url)
        .headers(call.headers)
        .body(call.body);

    // Non-streaming answers arrive whole, after the generation: only `total` applies.
    let (send_deadline, send_timeout) = if spec.stream && first_token_deadline < total_deadline {
        (
            first_token_deadline,
            (TimeoutKind::FirstToken, timeouts.first_token),
        )
    } else {
        (total_deadline, (TimeoutKind::Total, timeouts.total))
    };
    let response = match timeout_at(send_deadline, request.send()).await {
        Err(_) => return Err(ProviderError::timeout(send_timeout.0, send_timeout.1)),
        Ok(Err(err)) => return Err(from_reqwest(&err, timeouts)),
        Ok(Ok(response)) => response,
    };
    let status = response.status().as_u16();
    report.http_status = Some(status);
    if !response.status().is_success() {
        let headers = response.headers().clone();
        let body = timeout_at(total_deadline, read_prefix(response, 64 * 1024))
            .await
            .unwrap_or_default();
        let mut err = upstream.adapter.classify_error(status, &headers, &body);
        err.status.get_or_insert(status);
        return Err(err);
    }

    if !spec.stream {
        let body = match timeout_at(total_deadline, response.bytes()).await {
            Err(_) => return Err(ProviderError::timeout(TimeoutKind::Total, timeouts.total)),
            Ok(Err(err)) => return Err(from_reqwest(&err, timeouts)),
            Ok(Ok(body)) => body,
        };
        return upstream.adapter.parse_response(&body);
    }

    let mut body = response.bytes_stream();
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    let mut feed = Feed {
        decoder: upstream.adapter.stream_decoder(),
        items: Vec::new(),
        started,
        first_output: None,
    };
    while !feed.decoder.is_done() {
        let (deadline, kind) = match feed.first_output {
            None => (first_token_deadline, TimeoutKind::FirstToken),
            Some(_) => (
                Instant::now() + timeouts.inter_token,
                TimeoutKind::InterToken,
            ),
        };
        let (deadline, kind) = if deadline >= total_deadline {
            (total_deadline, TimeoutKind::Total)
        } else {
            (deadline, kind)
        };
        let chunk = match timeout_at(deadline, body.next()).await {
            Err(_) => {
                let after = match kind {
                    TimeoutKind::FirstToken => timeouts.first_token,
                    TimeoutKind::InterToken => timeouts.inter_token,
                    _ => timeouts.total,
                };
                return Err(ProviderError::timeout(kind, after));
            }
            Ok(None) => {
                parser
                    .finish(&mut events)
                    .map_err(|err| ProviderError::malformed(format!("bad event stream: {err}")))?;
                feed.events(&mut events, acc, sink, report).await?;
                feed.decoder.finish()?;
                break;
            }
            Ok(Some(Err(err))) => {
                return Err(ProviderError::network(format!(
                    "stream interrupted: {}",
                    err.without_url()
                )));
            }
            Ok(Some(Ok(chunk))) => chunk,
        };
        parser
            .feed(&chunk, &mut events)
            .map_err(|err| ProviderError::malformed(format!("bad event stream: {err}")))?;
        feed.events(&mut events, acc, sink, report).await?;
    }
    Ok(std::mem::take(acc).finish(spec.upstream_model))
}

/// One stream's decoding state.
struct Feed {
    decoder: Box<dyn StreamDecoder>,
    items: Vec<StreamItem>,
    started: Instant,
    first_output: Option<Instant>,
}

impl Feed {
    /// Decodes `events` and forwards their output. What an event yielded before its error
    /// is applied first: Anthropic's refusal comes in the `message_delta` that carries
    /// the final usage, and those tokens were charged.
    async fn events(
        &mut self,
        events: &mut Vec<SseEvent>,
        acc: &mut StreamAccumulator,
        sink: &mut dyn DeltaSink,
        report: &mut AttemptReport,
    ) -> Result<(), ProviderError> {
        for event in events.drain(..) {
            let decoded = self.decoder.decode(&event, &mut self.items);
            for item in self.items.drain(..) {
                if let Some(part) = acc.apply(item) {
                    if self.first_output.is_none() {
                        self.first_output = Some(Instant::now());
                        report.ttft = Some(self.started.elapsed());
                    }
                    sink.delta(part).await;
                    report.deltas_sent = true;
                }
            }
            decoded?;
        }
        Ok(())
    }
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
