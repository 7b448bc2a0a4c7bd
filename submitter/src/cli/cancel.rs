//! `submitter cancel`: ask for a job to be stopped.

use clap::Args;
use llmq_schemas::JobId;
use llmq_submitter::{CancelStatus, Client, ClientOptions};

use super::job_id_arg::parse_job_id;
use super::print::out_line;
use super::{CliError, Exit};

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The job id `chat --no-wait` printed.
    #[arg(value_parser = parse_job_id)]
    pub job_id: JobId,
    /// Why, for the record (shown in the job's outcome).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}

pub async fn run(args: CancelArgs, mut options: ClientOptions) -> Result<Exit, CliError> {
    options.check_catalog = false;
    let client = Client::connect(options).await?;
    match client.cancel(args.job_id, args.reason).await? {
        CancelStatus::Requested { .. } => out_line(format!(
            "cancel requested for job {}: it ends `cancelled` unless it finishes first",
            args.job_id
        ))?,
        CancelStatus::AlreadyFinished(status) => {
            out_line(format!("job {} already finished: {status}", args.job_id))?
        }
    }
    Ok(Exit::Success)
}
