//! The `submitter` command line: one file per subcommand, sharing the connection options
//! and the exit-code table.

mod auth;
mod batch;
mod cancel;
mod chat;
mod dlq;
pub mod exit;
mod global;
mod job_id_arg;
mod keys;
mod limits;
mod models;
pub mod print;
mod result;
mod serve;
mod status;
mod table;
mod tenants;
mod time_arg;
mod usage;

use clap::{Parser, Subcommand};

pub use exit::{CliError, Exit};

const EXAMPLES: &str = "\
Examples:
  submitter chat --model chat-fast 'Write a haiku about queues'
  submitter chat --model chat-fast --stream --system 'Be brief' 'Explain JetStream'
  submitter chat --model gpt-4.1 --tier batch --no-wait --messages-file convo.json
  echo '[{\"role\":\"user\",\"content\":\"hi\"}]' | submitter chat --model m --messages-file -
  submitter result 0193a3c2-6c2e-7cc3-9c1d-3f1d2c4b5a69 --wait 5m --json
  submitter cancel 0193a3c2-6c2e-7cc3-9c1d-3f1d2c4b5a69 --reason 'not needed'
  submitter batch submit requests.jsonl --wait -o results.jsonl
  submitter batch status batch_3f1d2c4b5a69a0b1c2d3e4f5
  submitter models
  submitter dlq list
  submitter dlq replay --all
  submitter usage --since 7d --all-tenants
  submitter tenants apply tenants.toml
  submitter auth generate tenants.toml --out auth/
  submitter limits
  submitter status --watch
  submitter keys create acme --name ci --models 'chat-*' --expires-in 90d
  LLMQ__NATS__URL=tls://nats.internal:4222 LLMQ_TENANT=acme submitter models

Environment: the connection options also come from the variables a worker's config reads
(LLMQ__NATS__URL, LLMQ__NATS__USER, ...; each option's help names its own), so one export
points the CLI and a worker at the same server; a flag wins over its variable.

Logging: set RUST_LOG (e.g. RUST_LOG=llmq_submitter=debug); logs go to stderr.";

fn after_help() -> String {
    format!("{EXAMPLES}\n\n{}", Exit::help_table())
}

/// Submit chat-completion jobs to llmq workers over NATS, and inspect results, the model
/// catalog, dead letters and usage.
#[derive(Debug, Parser)]
#[command(name = "submitter", version, after_help = after_help())]
pub struct Cli {
    #[command(flatten)]
    pub global: global::GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one chat completion and print the answer.
    #[command(after_help = Exit::help_table())]
    Chat(chat::ChatArgs),
    /// Print a job's stored outcome.
    #[command(after_help = Exit::help_table())]
    Result(result::ResultArgs),
    /// Batches: a JSONL file of requests in, a results file out, resumable.
    #[command(subcommand, after_help = Exit::help_table())]
    Batch(batch::BatchCommand),
    /// Ask for a job to be cancelled.
    #[command(after_help = Exit::help_table())]
    Cancel(cancel::CancelArgs),
    /// List the models live workers serve.
    #[command(after_help = Exit::help_table())]
    Models(models::ModelsArgs),
    /// Inspect and replay dead-lettered jobs.
    #[command(subcommand, after_help = Exit::help_table())]
    Dlq(dlq::DlqCommand),
    /// Sum token usage and cost per tenant and model.
    #[command(after_help = Exit::help_table())]
    Usage(usage::UsageArgs),
    /// Each fleet-wide limit, its use now, who waits for it, and upstream pauses.
    #[command(after_help = Exit::help_table())]
    Limits(limits::LimitsArgs),
    /// The tenant registry: who may use which models (admin).
    #[command(subcommand, after_help = Exit::help_table())]
    Tenants(tenants::TenantsCommand),
    /// NATS users and permissions for the registry's tenants, workers and admins (admin).
    #[command(subcommand, after_help = Exit::help_table())]
    Auth(auth::AuthCommand),
    /// API keys for the HTTP edge: create (shown once), list, revoke (admin).
    #[command(subcommand, after_help = Exit::help_table())]
    Keys(keys::KeysCommand),
    /// Moved: the HTTP endpoint is the `llmq-edge` binary (this says how to run it).
    #[command(hide = true)]
    Serve(serve::ServeArgs),
    /// What the queue is doing: per model and tier, queued, oldest, in flight; workers;
    /// dead letters by reason; stream leaders and replicas (admin).
    #[command(after_help = Exit::help_table())]
    Status(status::StatusArgs),
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> Result<Exit, CliError> {
    let global::Connection {
        options,
        default_url,
        warnings,
    } = cli.global.resolve(&|name| std::env::var(name).ok())?;
    for warning in warnings {
        print::note(warning);
    }
    let result = match cli.command {
        Command::Chat(args) => chat::run(args, options).await,
        Command::Result(args) => result::run(args, options).await,
        Command::Cancel(args) => cancel::run(args, options).await,
        Command::Batch(command) => batch::run(command, options).await,
        Command::Models(args) => models::run(args, options).await,
        Command::Dlq(command) => dlq::run(command, options).await,
        Command::Usage(args) => usage::run(args, options).await,
        Command::Tenants(command) => tenants::run(command, options).await,
        Command::Auth(command) => auth::run(command, &options),
        Command::Limits(args) => limits::run(args, options).await,
        Command::Keys(command) => keys::run(command, options).await,
        Command::Serve(args) => serve::run(&args),
        Command::Status(args) => status::run(args, options).await,
    };
    result.map_err(|err| global::explain(default_url, err))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_lists_examples_and_exit_codes() {
        let help = Cli::command().render_help().to_string();
        assert!(help.contains("Examples:"), "{help}");
        assert!(help.contains("5  rejected at submit"), "{help}");
        for var in global::ALL {
            assert!(
                help.contains(var.name),
                "{} missing from:\n{help}",
                var.name
            );
        }
        assert!(help.contains("logs go to stderr"), "{help}");
    }

    #[test]
    fn global_options_work_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "submitter",
            "models",
            "--tenant",
            "acme",
            "--url",
            "nats://n:4222",
        ])
        .unwrap();
        let options = cli.global.resolve(&|_| None).unwrap().options;
        assert_eq!(options.tenant, "acme");
        assert_eq!(options.nats.url, "nats://n:4222");
    }
}
