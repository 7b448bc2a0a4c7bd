//! Writing a batch's results: OpenAI's Batch output format, one line per input line,
//! succeeded lines in the output file and every other in the errors file.
//!
//! Input order needs no input file: line `i`'s job id is derived from the batch id, so its
//! outcome is one direct get by subject, many in flight at once. Lines a cancel kept from
//! ever being published have no outcome; they are written `batch_cancelled`, with their
//! `custom_id` when the input file is at hand.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::stream::DirectGetErrorKind;
use futures::{StreamExt, stream};
use llmq_schemas::openai::batch::{BatchOutputLine, BatchResponseBody};
use llmq_schemas::openai::error::ErrorBody;
use llmq_schemas::{BatchRecord, ErrorType, Outcome, OutcomeStatus};

use super::error::BatchError;
use super::submit::{Runnable, custom_ids_of};
use crate::Client;
use crate::error::ClientError;
use crate::read_stream::ReadRange;

/// Direct gets in flight at once.
const IN_FLIGHT: usize = 64;

/// Which order the lines are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputOrder {
    /// The input file's order.
    #[default]
    Input,
    /// The order the outcomes were stored.
    Completion,
}

/// Lines written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResultsSummary {
    pub output_lines: u64,
    pub error_lines: u64,
}

impl Client {
    /// Writes the results of a finished batch: succeeded lines to `output`, the rest to
    /// `errors`. `input` (the batch's input file) gives the `custom_id`s of lines a cancel
    /// kept from being published.
    pub async fn batch_results(
        &self,
        record: &BatchRecord,
        order: OutputOrder,
        input: Option<&Path>,
        output: &mut (impl Write + Send),
        errors: &mut (impl Write + Send),
    ) -> Result<ResultsSummary, BatchError> {
        if !record.lines_ended() {
            let pending = record.counts.total.saturating_sub(record.counts.ended());
            return Err(BatchError::NotFinished {
                id: record.id.clone(),
                pending,
            });
        }
        let mut summary = ResultsSummary::default();
        let mut write =
            |line: BatchOutputLine, ok: bool| write_line(&mut summary, output, errors, &line, ok);
        match order {
            OutputOrder::Input => self.in_input_order(record, &mut write).await?,
            OutputOrder::Completion => self.in_completion_order(record, &mut write).await?,
        }
        let never_published = record.published..record.counts.total;
        if !never_published.is_empty() {
            let ids = custom_ids(input, record, never_published.clone()).await;
            for index in never_published {
                let custom_id = ids.get(&index).cloned().unwrap_or_default();
                write(never_run(record, index, custom_id), false)?;
            }
        }
        Ok(summary)
    }

    async fn in_input_order(
        &self,
        record: &BatchRecord,
        write: &mut impl FnMut(BatchOutputLine, bool) -> Result<(), BatchError>,
    ) -> Result<(), BatchError> {
        let mut outcomes = stream::iter(0..record.published)
            .map(|index| self.line_outcome(record, index))
            .buffered(IN_FLIGHT);
        while let Some(outcome) = outcomes.next().await {
            let (line, ok) = output_line(&outcome?);
            write(line, ok)?;
        }
        Ok(())
    }

    async fn in_completion_order(
        &self,
        record: &BatchRecord,
        write: &mut impl FnMut(BatchOutputLine, bool) -> Result<(), BatchError>,
    ) -> Result<(), BatchError> {
        let mut stored = Vec::new();
        let range = ReadRange {
            filter_subject: self
                .subjects()
                .batch_outcomes_filter(self.tenant(), &record.id),
            deliver_policy: DeliverPolicy::All,
            until: None,
        };
        let stream = self.subjects().results_stream();
        self.session()
            .read_stream(&stream, range, |message| {
                stored.push(message.message.subject.to_string())
            })
            .await?;
        let mut outcomes = stream::iter(stored)
            .map(|subject| self.outcome_at(record, subject))
            .buffered(IN_FLIGHT);
        while let Some(outcome) = outcomes.next().await {
            let (line, ok) = output_line(&outcome?);
            write(line, ok)?;
        }
        Ok(())
    }

    async fn line_outcome(&self, record: &BatchRecord, index: u64) -> Result<Outcome, BatchError> {
        let job = record.id.line_job_id(index);
        let subject = self
            .subjects()
            .outcome(self.tenant(), job, Some(&record.id));
        self.outcome_at(record, subject).await
    }

    async fn outcome_at(
        &self,
        record: &BatchRecord,
        subject: String,
    ) -> Result<Outcome, BatchError> {
        let Some(payload) = self.stored_message(&subject).await? else {
            let pending = record.counts.total.saturating_sub(record.counts.ended());
            return Err(BatchError::NotFinished {
                id: record.id.clone(),
                pending: pending.max(1),
            });
        };
        let outcome: Outcome =
            serde_json::from_slice(&payload).map_err(|source| ClientError::Decode {
                what: format!("the stored outcome at {subject}"),
                source,
            })?;
        Ok(self.with_body(outcome).await?)
    }

    /// The last message stored on `subject` in the results stream, if any.
    pub(crate) async fn stored_message(
        &self,
        subject: &str,
    ) -> Result<Option<bytes::Bytes>, BatchError> {
        let stream = self.results_stream().await?;
        match stream.direct_get_last_for_subject(subject).await {
            Ok(message) => Ok(Some(message.payload)),
            Err(err) if err.kind() == DirectGetErrorKind::NotFound => Ok(None),
            Err(err) => Err(ClientError::nats("reading the results stream", err).into()),
        }
    }
}

fn write_line(
    summary: &mut ResultsSummary,
    output: &mut impl Write,
    errors: &mut impl Write,
    line: &BatchOutputLine,
    ok: bool,
) -> Result<(), BatchError> {
    let (file, count) = if ok {
        (output as &mut dyn Write, &mut summary.output_lines)
    } else {
        (errors as &mut dyn Write, &mut summary.error_lines)
    };
    let io = |source| BatchError::Io {
        what: "cannot write",
        path: "the results".into(),
        source,
    };
    serde_json::to_writer(&mut *file, line).map_err(|err| io(err.into()))?;
    file.write_all(b"\n").map_err(io)?;
    *count += 1;
    Ok(())
}

/// The output line of an outcome, and whether it belongs in the output file.
pub(crate) fn output_line(outcome: &Outcome) -> (BatchOutputLine, bool) {
    let id = format!("batch_req_{}", outcome.job_id.simple());
    let custom_id = outcome.custom_id.clone().unwrap_or_default();
    let request_id = outcome.job_id.to_string();
    if let (OutcomeStatus::Succeeded, Some(completion)) = (outcome.status, &outcome.response) {
        let body = BatchResponseBody::Completion(Box::new(completion.clone()));
        return (
            BatchOutputLine::answered(id, custom_id, 200, request_id, body),
            true,
        );
    }
    let (kind, message) = outcome
        .error
        .as_ref()
        .map(|e| (e.kind, e.message.clone()))
        .unwrap_or((
            ErrorType::Internal,
            format!("the job ended {}", outcome.status),
        ));
    let provider = outcome
        .error
        .as_ref()
        .and_then(|e| e.provider_status.zip(Some(e.provider_code.clone())));
    let line = match provider {
        Some((status, code)) => {
            let code = code.unwrap_or_else(|| kind.as_str().into());
            let body = ErrorBody::new(message, openai_type(status), code);
            BatchOutputLine::answered(
                id,
                custom_id,
                status,
                request_id,
                BatchResponseBody::Error(body),
            )
        }
        None => BatchOutputLine::failed(id, custom_id, error_code(outcome.status, kind), message),
    };
    (line, false)
}

/// OpenAI's `error.type` for an HTTP status of the provider's.
fn openai_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        500.. => "server_error",
        _ => "invalid_request_error",
    }
}

/// OpenAI's codes where it has one for the case.
fn error_code(status: OutcomeStatus, kind: ErrorType) -> String {
    match status {
        OutcomeStatus::Expired => "batch_expired".into(),
        OutcomeStatus::Cancelled => "batch_cancelled".into(),
        _ => kind.as_str().into(),
    }
}

fn never_run(record: &BatchRecord, index: u64, custom_id: String) -> BatchOutputLine {
    let id = format!("batch_req_{}", record.id.line_job_id(index).simple());
    let message = "the batch was cancelled before this line was submitted".to_owned();
    BatchOutputLine::failed(id, custom_id, "batch_cancelled".into(), message)
}

/// The custom ids of lines `range` of the input, when `input` is the batch's file.
async fn custom_ids(
    input: Option<&Path>,
    record: &BatchRecord,
    range: std::ops::Range<u64>,
) -> HashMap<u64, String> {
    let Some(path) = input.map(Path::to_owned) else {
        return HashMap::new();
    };
    let checks = super::input::Checks {
        max_line_bytes: usize::MAX,
        model_override: record.model.is_some(),
    };
    let runnable = Runnable::new(
        record.skip_invalid,
        record.model.clone(),
        &record.skipped_models,
    );
    let sha256 = record.input_sha256.clone();
    let read = tokio::task::spawn_blocking(move || {
        custom_ids_of(&path, (checks, runnable), &sha256, range)
    });
    read.await
        .ok()
        .flatten()
        .map(|(_, ids)| ids)
        .unwrap_or_default()
}
