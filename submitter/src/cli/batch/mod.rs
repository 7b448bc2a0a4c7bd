//! `submitter batch`: run an OpenAI Batch input file through llmq.

mod progress;
mod results_file;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use llmq_schemas::{BatchId, BatchRecord, Tier};
use llmq_submitter::{BatchOptions, Client, ClientOptions};
use serde_json::{Map, Value};

use super::print::{note, out_json, out_line};
use super::{CliError, Exit};
use progress::Progress;

#[derive(Debug, Subcommand)]
pub enum BatchCommand {
    /// Check a JSONL input file, then queue its lines (again: only what is missing).
    Submit(SubmitArgs),
    /// A batch's state and counts, counted now from its stored outcomes.
    Status(IdArgs),
    /// This tenant's batches, newest first.
    List(ListArgs),
    /// End a batch's queued lines without provider calls.
    Cancel(IdArgs),
    /// Write a finished batch's output and errors files (OpenAI's Batch output format).
    Results(ResultsArgs),
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// OpenAI Batch input: one `{"custom_id","method":"POST","url":"/v1/chat/completions","body"}` per line.
    pub file: PathBuf,
    /// Run every line on this model instead of its body's `model`.
    #[arg(long)]
    pub model: Option<String>,
    /// `batch` (shared fairly between tenants, behind interactive jobs) or `interactive`.
    #[arg(long, default_value = "batch", value_parser = parse_tier)]
    pub tier: Tier,
    /// Lines not run this long after the batch was created end `expired`.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = humantime::parse_duration)]
    pub completion_window: Duration,
    /// `key=value`, kept on the batch record (repeatable).
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_pair)]
    pub metadata: Vec<(String, String)>,
    /// Queue the good lines and leave the bad ones out (listed) instead of refusing.
    #[arg(long)]
    pub skip_invalid: bool,
    /// A new batch, even if this file ran before with these options (default: resume it).
    #[arg(long)]
    pub fresh: bool,
    /// Wait for every line, then write the results files.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub files: OutputArgs,
    /// Machine-readable: progress as JSON lines on stderr, the record as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Output file (succeeded lines). Default: `<batch id>_output.jsonl`.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Errors file (every other line). Default: `<batch id>_errors.jsonl`.
    #[arg(long, value_name = "FILE")]
    pub errors: Option<PathBuf>,
    /// Lines in the order they finished rather than the input's.
    #[arg(long)]
    pub completion_order: bool,
}

#[derive(Debug, Args)]
pub struct IdArgs {
    /// The batch's id (`batch_...`), as `batch submit` and `batch list` print it.
    pub id: BatchId,
    /// The record as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// The records as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ResultsArgs {
    /// The batch's id (`batch_...`).
    pub id: BatchId,
    #[command(flatten)]
    pub files: OutputArgs,
    /// Wait for the batch to finish first (progress as `submit --wait` shows it).
    #[arg(long)]
    pub wait: bool,
    /// The batch's input file: gives the `custom_id`s of lines a cancel kept unsubmitted.
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Progress and the files written as JSON lines on stderr.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(command: BatchCommand, options: ClientOptions) -> Result<Exit, CliError> {
    match command {
        BatchCommand::Submit(args) => submit(args, options).await,
        BatchCommand::Status(args) => status(args, options).await,
        BatchCommand::List(args) => list(args, options).await,
        BatchCommand::Cancel(args) => cancel(args, options).await,
        BatchCommand::Results(args) => results(args, options).await,
    }
}

async fn submit(args: SubmitArgs, options: ClientOptions) -> Result<Exit, CliError> {
    let client = Client::connect(options).await?;
    let plan = client.batch_plan(&args.file, batch_options(&args)).await?;
    for skipped in &plan.skipped {
        note(format!("skipped {skipped}"));
    }
    let mut progress = Progress::new(args.json, plan.requests);
    progress.started(&plan);
    let record = client
        .batch_submit(&plan, |p| progress.submitted(p))
        .await?;
    progress.submit_done(&record);
    if !args.wait {
        return show_record(&client.batch_status(&record.id).await?, args.json);
    }
    let record = client
        .batch_wait(&record.id, |p| progress.waited(p))
        .await?;
    progress.finish(&record);
    let written = results_file::write(&client, &record, &args.files, Some(&args.file)).await?;
    results_file::report(&written, args.json);
    show_record(&record, args.json)?;
    Ok(record_exit(&record))
}

async fn status(args: IdArgs, options: ClientOptions) -> Result<Exit, CliError> {
    let client = connect(options).await?;
    let record = client.batch_status(&args.id).await?;
    show_record(&record, args.json)
}

async fn list(args: ListArgs, options: ClientOptions) -> Result<Exit, CliError> {
    let client = connect(options).await?;
    let records = client.batch_list().await?;
    if args.json {
        let views: Vec<Value> = records.iter().map(view).collect();
        out_json(&views)?;
        return Ok(Exit::Success);
    }
    out_line(format!(
        "{:<31} {:<11} {:>8} {:>8} {:>8}  CREATED",
        "ID", "STATUS", "TOTAL", "DONE", "FAILED"
    ))?;
    for r in &records {
        let c = &r.counts;
        out_line(format!(
            "{:<31} {:<11} {:>8} {:>8} {:>8}  {}",
            r.id,
            r.status,
            c.total,
            c.succeeded,
            c.failed + c.expired + c.cancelled,
            r.created_at
        ))?;
    }
    Ok(Exit::Success)
}

async fn cancel(args: IdArgs, options: ClientOptions) -> Result<Exit, CliError> {
    let client = connect(options).await?;
    let record = client.batch_cancel(&args.id).await?;
    show_record(&record, args.json)
}

async fn results(args: ResultsArgs, options: ClientOptions) -> Result<Exit, CliError> {
    let client = connect(options).await?;
    let mut record = client.batch_status(&args.id).await?;
    if args.wait && !record.status.is_final() {
        let mut progress = Progress::new(args.json, record.counts.total);
        record = client.batch_wait(&args.id, |p| progress.waited(p)).await?;
        progress.finish(&record);
    }
    let written = results_file::write(&client, &record, &args.files, args.input.as_deref()).await?;
    results_file::report(&written, args.json);
    Ok(record_exit(&record))
}

async fn connect(mut options: ClientOptions) -> Result<Client, CliError> {
    options.check_catalog = false;
    Ok(Client::connect(options).await?)
}

fn batch_options(args: &SubmitArgs) -> BatchOptions {
    let metadata = (!args.metadata.is_empty()).then(|| {
        args.metadata
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect::<Map<_, _>>()
    });
    BatchOptions {
        model: args.model.clone(),
        tier: args.tier,
        completion_window: args.completion_window,
        metadata,
        skip_invalid: args.skip_invalid,
        fresh: args.fresh,
        id: None,
    }
}

/// Exit 0 when every line succeeded, 3 when the batch ended with lines that did not.
fn record_exit(record: &BatchRecord) -> Exit {
    let c = &record.counts;
    if record.status.is_final() && c.succeeded < c.total {
        Exit::JobNotSucceeded
    } else {
        Exit::Success
    }
}

fn show_record(record: &BatchRecord, json: bool) -> Result<Exit, CliError> {
    if json {
        out_json(&view(record))?;
        return Ok(Exit::Success);
    }
    let c = &record.counts;
    out_line(format!(
        "{id}  {status}\n  total {total}: succeeded {ok}, failed {failed}, expired {expired}, cancelled {cancelled}, queued {queued}, not submitted {unsubmitted}\n  tokens {prompt} in / {completion} out, cost ${cost:.4}\n  created {created}, expires {expires}{finished}",
        id = record.id,
        status = record.status,
        total = c.total,
        ok = c.succeeded,
        failed = c.failed,
        expired = c.expired,
        cancelled = c.cancelled,
        queued = c.queued,
        unsubmitted = c.unsubmitted,
        prompt = c.prompt_tokens,
        completion = c.completion_tokens,
        cost = c.cost_usd,
        created = record.created_at,
        expires = record.expires_at,
        finished = record
            .finished_at
            .map(|at| format!(", finished {at}"))
            .unwrap_or_default(),
    ))?;
    Ok(Exit::Success)
}

/// The record as shown: everything but the key its lines' message ids are made with.
fn view(record: &BatchRecord) -> Value {
    let mut value = serde_json::to_value(record).unwrap_or(Value::Null);
    if let Some(object) = value.as_object_mut() {
        object.remove("msg_key");
    }
    value
}

fn parse_tier(text: &str) -> Result<Tier, String> {
    Tier::parse(text).ok_or_else(|| format!("{text:?} is not a tier: interactive or batch"))
}

fn parse_pair(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))
}
