//! Running the batches made over HTTP, on whichever edge is alive.
//!
//! `POST /v1/batches` writes the batch's record and one message on the batch-runs work
//! queue. Every edge pulls from the same durable consumer, so each batch is held by one
//! edge at a time: it reads the input file, checks it, publishes the lines, waits for
//! their outcomes and writes the results files, renewing its hold every heartbeat. An
//! edge that dies (or stops) lets go of the message, another takes it, and the producer
//! library resumes the batch from its record's checkpoint: no line is published twice and
//! none is called again once its outcome is stored. The work itself is the same code as
//! `submitter batch submit --wait`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use futures::StreamExt;
use llmq_runtime::tenants::ModelPattern;
use llmq_schemas::{BatchId, BatchProblem, BatchRecord, Subjects, Tenant};
use llmq_submitter::{BatchError, BatchOptions, Client, OutputOrder};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::api_error::ApiError;
use crate::config::BatchesConfig;
use crate::state::EdgeState;

/// The message that a batch is to be run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RunRequest {
    pub tenant: String,
    pub batch: BatchId,
    /// The models the creating key may use (empty: any).
    #[serde(default)]
    pub key_models: Vec<String>,
}

/// Queues `run` for the runners.
pub(crate) async fn queue(
    state: &EdgeState,
    tenant: &Tenant,
    run: &RunRequest,
) -> Result<(), ApiError> {
    let subjects = state.subjects();
    let payload = serde_json::to_vec(run).map_err(|err| ApiError::unavailable(err.to_string()))?;
    let js = async_nats::jetstream::new(state.nats.clone());
    let ack = js.publish(subjects.batch_run(tenant), payload.into()).await;
    let ack = match ack {
        Ok(ack) => ack.await,
        Err(err) => Err(err),
    };
    ack.map(|_| ())
        .map_err(|err| ApiError::unavailable(format!("cannot queue the batch: {err}")))
}

/// Pulls batches and runs up to `config.runners` at once until `stop`.
pub(crate) async fn run(state: Arc<EdgeState>, config: BatchesConfig, stop: CancellationToken) {
    if config.runners == 0 {
        return;
    }
    let consumer = tokio::select! {
        consumer = consumer(&state, &config) => consumer,
        () = stop.cancelled() => return,
    };
    let slots = Arc::new(Semaphore::new(config.runners));
    while !stop.is_cancelled() {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let Some(message) = next_message(&consumer, &stop).await else {
            continue;
        };
        let (state, stop) = (Arc::clone(&state), stop.clone());
        let heartbeat = config.heartbeat;
        state.clone().tasks.spawn(async move {
            hold_and_run(&state, message, heartbeat, &stop).await;
            drop(permit);
        });
    }
}

/// The durable consumer every edge shares, once the stream exists.
async fn consumer(state: &EdgeState, config: &BatchesConfig) -> PullConsumer {
    let js = async_nats::jetstream::new(state.nats.clone());
    let stream_name = state.subjects().batch_runs_stream();
    loop {
        let made = async {
            let stream = js
                .get_stream(&stream_name)
                .await
                .map_err(|e| e.to_string())?;
            stream
                .get_or_create_consumer(
                    Subjects::BATCH_RUNNERS,
                    pull::Config {
                        durable_name: Some(Subjects::BATCH_RUNNERS.into()),
                        ack_policy: AckPolicy::Explicit,
                        ack_wait: config.heartbeat * 3,
                        max_deliver: -1,
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| e.to_string())
        };
        match made.await {
            Ok(consumer) => return consumer,
            Err(err) => {
                tracing::warn!(error = %err, stream = %stream_name, "cannot follow the batch runs yet; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

async fn next_message(
    consumer: &PullConsumer,
    stop: &CancellationToken,
) -> Option<async_nats::jetstream::Message> {
    let batch = consumer
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(5))
        .messages();
    let mut messages = tokio::select! {
        messages = batch => messages.ok()?,
        () = stop.cancelled() => return None,
    };
    tokio::select! {
        next = messages.next() => next?.ok(),
        () = stop.cancelled() => None,
    }
}

/// Runs the batch while renewing the hold on its message; acknowledges it when the batch
/// is done, hands it back when this edge stops or the run failed on the way.
async fn hold_and_run(
    state: &EdgeState,
    message: async_nats::jetstream::Message,
    heartbeat: Duration,
    stop: &CancellationToken,
) {
    let request: RunRequest = match serde_json::from_slice(&message.payload) {
        Ok(request) => request,
        Err(err) => {
            tracing::error!(error = %err, "an unreadable batch run request; dropped");
            let _ = message.ack_with(AckKind::Term).await;
            return;
        }
    };
    let run = run_batch(state, &request);
    tokio::pin!(run);
    let mut beat = tokio::time::interval(heartbeat);
    let outcome = loop {
        tokio::select! {
            outcome = &mut run => break Some(outcome),
            _ = beat.tick() => { let _ = message.ack_with(AckKind::Progress).await; }
            () = stop.cancelled() => break None,
        }
    };
    let ack = match outcome {
        Some(Ok(())) => AckKind::Ack,
        Some(Err(err)) => {
            tracing::warn!(batch = %request.batch, error = %err, "batch run failed; handing it back");
            AckKind::Nak(Some(Duration::from_secs(5)))
        }
        None => AckKind::Nak(None),
    };
    let _ = message.ack_with(ack).await;
}

/// The whole run of one batch, from wherever an earlier run left it.
async fn run_batch(state: &EdgeState, request: &RunRequest) -> Result<(), BatchError> {
    let client = state
        .client_for(&request.tenant)
        .await
        .map_err(|err| BatchError::BadRecord {
            id: request.batch.clone(),
            message: err.message,
        })?;
    let Some(record) = client.batch_record(&request.batch).await? else {
        return Ok(());
    };
    if record
        .http
        .as_ref()
        .is_some_and(|h| h.finalized_at.is_some())
    {
        return Ok(());
    }
    let dir = tempfile::tempdir().map_err(|source| io("a temporary directory", source))?;
    let input = dir.path().join("input.jsonl");
    if !record.lines_ended() {
        download(state, &record, &input).await?;
        if !submit(&client, &record, request, &input).await? {
            return Ok(());
        }
    }
    let record = client.batch_wait(&record.id, |_| {}).await?;
    finalize(state, &client, &record, &input, dir.path()).await
}

/// Checks and publishes the input; false if it was refused (the batch failed).
async fn submit(
    client: &Client,
    record: &BatchRecord,
    request: &RunRequest,
    input: &Path,
) -> Result<bool, BatchError> {
    let options = BatchOptions {
        id: Some(record.id.clone()),
        completion_window: record
            .expires_at
            .unix_millis()
            .saturating_sub(record.created_at.unix_millis())
            .try_into()
            .map(Duration::from_millis)
            .unwrap_or_default(),
        ..BatchOptions::default()
    };
    let plan = match client.batch_plan(input, options).await {
        Ok(plan) => plan,
        Err(err) => return refused(client, record, err).await.map(|()| false),
    };
    if let Some(model) = plan
        .models
        .iter()
        .find(|model| !key_allows(&request.key_models, model))
    {
        let problem = BatchProblem {
            code: "model_not_allowed".into(),
            message: format!("this API key may not use model {model:?}"),
            line: None,
        };
        client.batch_fail(&record.id, vec![problem]).await?;
        return Ok(false);
    }
    client.batch_submit(&plan, |_| {}).await?;
    Ok(true)
}

/// An input the check refused ends the batch `failed`, with its problems; anything else
/// is an error of the run (tried again).
async fn refused(client: &Client, record: &BatchRecord, err: BatchError) -> Result<(), BatchError> {
    let problems = match err {
        BatchError::InvalidInput { problems, .. } => problems
            .into_iter()
            .map(|p| BatchProblem {
                code: "invalid_request".into(),
                message: p.message,
                line: Some(p.line_number),
            })
            .collect(),
        BatchError::EmptyInput => vec![BatchProblem {
            code: "empty_file".into(),
            message: "the input file has no requests".into(),
            line: None,
        }],
        BatchError::Submit(submit) => vec![BatchProblem {
            code: "invalid_request".into(),
            message: submit.to_string(),
            line: None,
        }],
        other => return Err(other),
    };
    client.batch_fail(&record.id, problems).await.map(|_| ())
}

async fn download(state: &EdgeState, record: &BatchRecord, path: &Path) -> Result<(), BatchError> {
    let tenant = Tenant::parse(&record.tenant).map_err(|err| BatchError::BadRecord {
        id: record.id.clone(),
        message: err.to_string(),
    })?;
    let file_id = record
        .http
        .as_ref()
        .map(|h| h.input_file_id.clone())
        .unwrap_or_default();
    let files = state.files().await.map_err(|err| api(record, err))?;
    let mut object = files
        .open_content(&tenant, &file_id)
        .await
        .map_err(|err| api(record, err))?;
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|source| io("the input's copy", source))?;
    tokio::io::copy(&mut object, &mut file)
        .await
        .map_err(|source| io("the input file", source))?;
    Ok(())
}

/// Writes the results files into the files bucket and marks the batch whole.
async fn finalize(
    state: &EdgeState,
    client: &Client,
    record: &BatchRecord,
    input: &Path,
    dir: &Path,
) -> Result<(), BatchError> {
    let (output_path, errors_path) = (dir.join("output.jsonl"), dir.join("errors.jsonl"));
    let summary = {
        let mut output = std::io::BufWriter::new(
            std::fs::File::create(&output_path).map_err(|s| io("the output file", s))?,
        );
        let mut errors = std::io::BufWriter::new(
            std::fs::File::create(&errors_path).map_err(|s| io("the errors file", s))?,
        );
        let input = input.exists().then_some(input);
        let summary = client
            .batch_results(record, OutputOrder::Input, input, &mut output, &mut errors)
            .await?;
        std::io::Write::flush(&mut output).map_err(|s| io("the output file", s))?;
        std::io::Write::flush(&mut errors).map_err(|s| io("the errors file", s))?;
        summary
    };
    let output_id = upload(state, record, &output_path, "output", summary.output_lines).await?;
    let errors_id = upload(state, record, &errors_path, "errors", summary.error_lines).await?;
    client
        .batch_finalize(&record.id, output_id, errors_id)
        .await?;
    Ok(())
}

/// Stores a results file (none when it has no lines, as OpenAI leaves the id null).
async fn upload(
    state: &EdgeState,
    record: &BatchRecord,
    path: &Path,
    what: &str,
    lines: u64,
) -> Result<Option<String>, BatchError> {
    if lines == 0 {
        return Ok(None);
    }
    let tenant = Tenant::parse(&record.tenant).map_err(|err| BatchError::BadRecord {
        id: record.id.clone(),
        message: err.to_string(),
    })?;
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|source| io("a results file", source))?;
    let name = format!("{}_{what}.jsonl", record.id);
    let files = state.files().await.map_err(|err| api(record, err))?;
    let stored = files
        .put(&tenant, &name, "batch_output", &mut file)
        .await
        .map_err(|err| api(record, err))?;
    Ok(Some(stored.id))
}

/// What `ApiKeyEntry::allows_model` says, for the key's patterns kept with the batch.
fn key_allows(patterns: &[String], model: &str) -> bool {
    patterns.is_empty()
        || patterns
            .iter()
            .filter_map(|pattern| ModelPattern::parse(pattern).ok())
            .any(|pattern| pattern.matches(model))
}

fn io(what: &'static str, source: std::io::Error) -> BatchError {
    BatchError::Io {
        what: "cannot write",
        path: what.into(),
        source,
    }
}

fn api(record: &BatchRecord, err: ApiError) -> BatchError {
    BatchError::BadRecord {
        id: record.id.clone(),
        message: err.message,
    }
}
