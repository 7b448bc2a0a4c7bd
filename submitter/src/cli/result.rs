//! `submitter result`: a job's outcome, now or once it is stored.

use std::time::Duration;

use clap::Args;
use llmq_schemas::JobId;
use llmq_submitter::{Client, ClientOptions, WaitError};

use super::print::{self, Show};
use super::{CliError, Exit};

#[derive(Debug, Args)]
pub struct ResultArgs {
    /// The job id `chat --no-wait` printed.
    pub job_id: JobId,
    /// Wait up to this long for the outcome if it is not stored yet.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub wait: Option<Duration>,
    /// Print the whole outcome as JSON instead of the answer.
    #[arg(long)]
    pub json: bool,
    /// Do not print the summary line on success.
    #[arg(long, short)]
    pub quiet: bool,
}

pub async fn run(args: ResultArgs, mut options: ClientOptions) -> Result<Exit, CliError> {
    options.check_catalog = false;
    let client = Client::connect(options).await?;
    let job_id = args.job_id;
    let outcome = match args.wait {
        Some(wait) => match client.wait_outcome(job_id, wait).await {
            Ok(outcome) => outcome,
            Err(WaitError::Timeout { waited }) => {
                return Err(CliError::NoOutcome { job_id, waited });
            }
            Err(err) => return Err(err.into()),
        },
        None => client.get_outcome(job_id).await?.ok_or_else(|| {
            CliError::NotFound(format!(
                "no outcome for job {job_id} in tenant {}: it is queued, running, or unknown \
                 (add --wait 5m to wait for it)",
                client.tenant()
            ))
        })?,
    };
    print::outcome(
        &outcome,
        Show {
            json: args.json,
            quiet: args.quiet,
            streamed: false,
        },
    )
}
