//! `submitter dlq`: what was dead-lettered and why, and putting it back.

use clap::{ArgGroup, Args, Subcommand};
use llmq_submitter::{ClientOptions, DlqEntry, Operator};

use super::print::{note, out, out_json, out_line};
use super::table::{Align, Table};
use super::{CliError, Exit};

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead-lettered jobs, oldest first.
    List {
        /// Print every field (payload included) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Publish dead letters back to their original subject and remove them from the DLQ.
    Replay(ReplayArgs),
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("which").required(true).args(["seq", "all"])))]
pub struct ReplayArgs {
    /// The dead letter's sequence (SEQ in `dlq list`).
    pub seq: Option<u64>,
    /// Replay every dead letter.
    #[arg(long)]
    pub all: bool,
}

pub async fn run(command: DlqCommand, options: ClientOptions) -> Result<Exit, CliError> {
    let operator = Operator::connect(options).await?;
    match command {
        DlqCommand::List { json } => list(&operator, json).await,
        DlqCommand::Replay(ReplayArgs { seq: Some(seq), .. }) => {
            let result = operator.dlq_replay(seq).await?;
            out_line(format!(
                "replayed dead letter {} as {} (jobs stream seq {})",
                result.dlq_seq, result.subject, result.jobs_seq
            ))?;
            Ok(Exit::Success)
        }
        DlqCommand::Replay(ReplayArgs { seq: None, .. }) => {
            let results = operator.dlq_replay_all().await?;
            for result in &results {
                out_line(format!(
                    "replayed dead letter {} as {} (jobs stream seq {})",
                    result.dlq_seq, result.subject, result.jobs_seq
                ))?;
            }
            let left = operator.dlq_list().await?.len();
            note(format!(
                "{} replayed; {left} left in the dead-letter stream",
                results.len()
            ));
            Ok(Exit::Success)
        }
    }
}

async fn list(operator: &Operator, json: bool) -> Result<Exit, CliError> {
    let entries = operator.dlq_list().await?;
    if json {
        out_json(&entries)?;
        return Ok(Exit::Success);
    }
    if entries.is_empty() {
        note("the dead-letter stream is empty");
        return Ok(Exit::Success);
    }
    let mut table = Table::new(&[
        ("SEQ", Align::Right),
        ("AT", Align::Left),
        ("REASON", Align::Left),
        ("SUBJECT", Align::Left),
        ("JOB ID", Align::Left),
        ("DELIVERIES", Align::Right),
        ("DETAIL", Align::Left),
    ]);
    for entry in &entries {
        table.row(row(entry));
    }
    out(&table.render())?;
    Ok(Exit::Success)
}

fn row(entry: &DlqEntry) -> Vec<String> {
    let dash = || "-".to_owned();
    vec![
        entry.seq.to_string(),
        entry.at.unwrap_or(entry.stored_at).to_string(),
        entry.reason.clone().unwrap_or_else(dash),
        entry.original_subject.clone().unwrap_or_else(dash),
        entry.job_id.map(|id| id.to_string()).unwrap_or_else(dash),
        entry.deliveries.map(|d| d.to_string()).unwrap_or_else(dash),
        entry.detail.as_deref().map(shorten).unwrap_or_else(dash),
    ]
}

fn shorten(text: &str) -> String {
    const MAX: usize = 60;
    let one_line = text.replace(['\n', '\r'], " ");
    if one_line.chars().count() <= MAX {
        one_line
    } else {
        let cut: String = one_line.chars().take(MAX - 1).collect();
        format!("{cut}…")
    }
}
