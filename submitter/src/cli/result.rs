//! `submitter result`: a job's outcome, now or once it is stored.

use std::time::Duration;

use clap::Args;
use llmq_schemas::JobId;
use llmq_submitter::{Client, ClientOptions, Operator, WaitError};

use super::job_id_arg::parse_job_id;
use super::print::{self, Show};
use super::{CliError, Exit};

#[derive(Debug, Args)]
pub struct ResultArgs {
    /// The job id `chat --no-wait` printed.
    #[arg(value_parser = parse_job_id)]
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
                dead_letter(&client, job_id).await?;
                return Err(CliError::NoOutcome { job_id, waited });
            }
            Err(err) => return Err(err.into()),
        },
        None => match client.get_outcome(job_id).await? {
            Some(outcome) => outcome,
            None => {
                dead_letter(&client, job_id).await?;
                return Err(CliError::NotFound(format!(
                    "no outcome for job {job_id} in tenant {}: it is queued, running, or unknown \
                     (add --wait 5m to wait for it)",
                    client.tenant()
                )));
            }
        },
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

/// A job without an outcome may be in the dead-letter stream: say so (exit 3) rather than
/// "not found". (Dead letters have no outcome, so that a replay can still produce one.)
/// Read on the client's own connection and credentials: a tenant that may not read the
/// dead letters just gets "not found".
async fn dead_letter(client: &Client, job_id: JobId) -> Result<(), CliError> {
    let letters = Operator::from_client(client)
        .dlq_list()
        .await
        .unwrap_or_default();
    match letters
        .into_iter()
        .find(|letter| letter.job_id == Some(job_id))
    {
        Some(letter) => match letter.reason_kind() {
            Some(reason) => Err(CliError::Wait(WaitError::DeadLettered {
                job_id,
                reason,
                message: format!(
                    "{} (dead letter {}; `submitter dlq replay {}` re-queues it)",
                    letter.detail.unwrap_or_default(),
                    letter.seq,
                    letter.seq
                ),
            })),
            None => Ok(()),
        },
        None => Ok(()),
    }
}
