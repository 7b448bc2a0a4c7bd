//! Exit codes, and which error ends in which.
//!
//! Scripts branch on the exit code ("retry later" for 4 and some of 5, "fix the job" for
//! 5, "look at the outcome" for 3), so every failure maps to exactly one code, here, and
//! `--help` lists the same table.

use std::time::Duration;

use llmq_schemas::JobId;
use llmq_submitter::{BatchError, ClientError, ConnectError, SubmitError, WaitError};

/// The process's exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Success = 0,
    Unexpected = 1,
    /// The same code clap uses for its own usage errors.
    Usage = 2,
    JobNotSucceeded = 3,
    Unavailable = 4,
    Rejected = 5,
    NotFound = 6,
    PermissionDenied = 7,
}

impl Exit {
    pub const ALL: [Exit; 8] = [
        Exit::Success,
        Exit::Unexpected,
        Exit::Usage,
        Exit::JobNotSucceeded,
        Exit::Unavailable,
        Exit::Rejected,
        Exit::NotFound,
        Exit::PermissionDenied,
    ];

    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn describe(self) -> &'static str {
        match self {
            Exit::Success => "success",
            Exit::Unexpected => "unexpected error",
            Exit::Usage => "usage error (bad arguments or options)",
            Exit::JobNotSucceeded => {
                "the job ended but did not succeed (failed, expired, cancelled, dead-lettered)"
            }
            Exit::Unavailable => {
                "connection or server error (cannot connect, server too old, llmq not set up)"
            }
            Exit::Rejected => {
                "rejected at submit (unknown model, no workers, queue full, invalid job, policy)"
            }
            Exit::NotFound => {
                "not found (no such outcome, also when --wait/--timeout passes; no such DLQ entry)"
            }
            Exit::PermissionDenied => {
                "denied by the NATS server's permissions (these credentials may not do that)"
            }
        }
    }

    /// The exit-code table for `--help`.
    pub fn help_table() -> String {
        let mut text = String::from("Exit codes:\n");
        for exit in Exit::ALL {
            text.push_str(&format!("  {}  {}\n", exit.code(), exit.describe()));
        }
        text
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        std::process::ExitCode::from(exit.code())
    }
}

/// Everything a subcommand can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Submit(#[from] SubmitError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Wait(#[from] WaitError),
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error(
        "no outcome for job {job_id} within {}; it may still be queued or running: \
         `submitter result {job_id} --wait 10m`",
        humantime::format_duration(*waited)
    )]
    NoOutcome { job_id: JobId, waited: Duration },
    #[error("{0}")]
    NotFound(String),
    /// A connection or server error on the default URL, with a hint that it was the
    /// default.
    #[error(
        "{0}\n  (no --url or LLMQ__NATS__URL was given, so this was the default {url}, which \
         may be some other NATS server: point at llmq's with --url or LLMQ__NATS__URL)",
        url = llmq_submitter::NatsOptions::DEFAULT_URL
    )]
    OnDefaultUrl(Box<CliError>),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

impl CliError {
    pub fn exit(&self) -> Exit {
        match self {
            CliError::Usage(_) => Exit::Usage,
            CliError::Connect(err) => connect_exit(err),
            CliError::Submit(err) => submit_exit(err),
            CliError::Client(err) => client_exit(err),
            CliError::Wait(err) => wait_exit(err),
            CliError::Batch(err) => batch_exit(err),
            CliError::NoOutcome { .. } | CliError::NotFound(_) => Exit::NotFound,
            CliError::OnDefaultUrl(inner) => inner.exit(),
            CliError::Io { .. } | CliError::Json { .. } => Exit::Unexpected,
        }
    }
}

fn connect_exit(err: &ConnectError) -> Exit {
    use llmq_runtime::ConnectError as Nats;
    match err {
        ConnectError::Nats(Nats::InvalidOptions(_))
        | ConnectError::Subject(_)
        | ConnectError::InvalidInboxPrefix(_) => Exit::Usage,
        ConnectError::Nats(
            Nats::Credentials { .. } | Nats::Connect { .. } | Nats::ServerTooOld { .. },
        )
        | ConnectError::Subscribe { .. } => Exit::Unavailable,
    }
}

fn submit_exit(err: &SubmitError) -> Exit {
    match err {
        SubmitError::InvalidJob(_)
        | SubmitError::UnknownModel { .. }
        | SubmitError::NoWorkers { .. }
        | SubmitError::QueueFull { .. }
        | SubmitError::TenantQueueFull { .. }
        | SubmitError::Rejected { .. }
        | SubmitError::AlreadyWaiting { .. }
        | SubmitError::PolicyDenied { .. } => Exit::Rejected,
        SubmitError::NotSetUp { .. }
        | SubmitError::Timeout { .. }
        | SubmitError::Connection { .. } => Exit::Unavailable,
        SubmitError::Catalog(inner) => client_exit(inner),
        SubmitError::PermissionDenied(_) => Exit::PermissionDenied,
    }
}

fn client_exit(err: &ClientError) -> Exit {
    match err {
        ClientError::Keys(llmq_runtime::api_keys::KeyStoreError::NotFound(_)) => Exit::NotFound,
        ClientError::NotSetUp { .. }
        | ClientError::Timeout { .. }
        | ClientError::PublishTimeout { .. }
        | ClientError::Nats { .. }
        | ClientError::Registry(_)
        | ClientError::Keys(_) => Exit::Unavailable,
        ClientError::NotFound { .. } => Exit::NotFound,
        ClientError::PermissionDenied { .. } => Exit::PermissionDenied,
        ClientError::InvalidDlqEntry { .. }
        | ClientError::QueueFull { .. }
        | ClientError::Rejected { .. } => Exit::Rejected,
        ClientError::Decode { .. } => Exit::Unexpected,
        ClientError::Blob { source, .. } if source.is_transient() => Exit::Unavailable,
        ClientError::Blob { .. } => Exit::Unexpected,
    }
}

fn batch_exit(err: &BatchError) -> Exit {
    match err {
        BatchError::InvalidInput { .. } | BatchError::EmptyInput | BatchError::Ended { .. } => {
            Exit::Rejected
        }
        BatchError::Io { .. } => Exit::Usage,
        BatchError::NotFound(_) | BatchError::NotFinished { .. } => Exit::NotFound,
        BatchError::InputChanged(_) | BatchError::BadRecord { .. } => Exit::Unexpected,
        BatchError::Client(inner) => client_exit(inner),
        BatchError::Submit(inner) => submit_exit(inner),
    }
}

fn wait_exit(err: &WaitError) -> Exit {
    match err {
        WaitError::Timeout { .. } => Exit::NotFound,
        WaitError::DeadLettered { .. } => Exit::JobNotSucceeded,
        WaitError::Closed => Exit::Unavailable,
        WaitError::Decode(_) => Exit::Unexpected,
        WaitError::Client(inner) => client_exit(inner),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmq_schemas::{DlqReason, SubjectError, Tier};

    #[test]
    fn codes_are_the_documented_ones() {
        let codes: Vec<u8> = Exit::ALL.iter().map(|e| e.code()).collect();
        assert_eq!(codes, vec![0, 1, 2, 3, 4, 5, 6, 7]);
        let help = Exit::help_table();
        for exit in Exit::ALL {
            assert!(help.contains(&format!("{}  {}", exit.code(), exit.describe())));
        }
    }

    #[test]
    fn submit_refusals_are_5_and_outages_are_4() {
        let unknown = CliError::from(SubmitError::UnknownModel {
            model: "m".into(),
            tier: Tier::Batch,
            available: vec![],
        });
        assert_eq!(unknown.exit(), Exit::Rejected);
        let full = CliError::from(SubmitError::QueueFull {
            stream: "S".into(),
            detail: "maximum messages exceeded".into(),
        });
        assert_eq!(full.exit(), Exit::Rejected);
        let quota = CliError::from(SubmitError::TenantQueueFull {
            tenant: "beta".into(),
            model: "chat".into(),
            tier: Tier::Interactive,
        });
        assert_eq!(quota.exit(), Exit::Rejected);
        let no_workers = CliError::from(SubmitError::NoWorkers {
            prefix: "llmq".into(),
        });
        assert_eq!(no_workers.exit(), Exit::Rejected);
        let not_set_up = CliError::from(SubmitError::NotSetUp {
            prefix: "llmq".into(),
            missing: "stream LLMQ_JOBS".into(),
        });
        assert_eq!(not_set_up.exit(), Exit::Unavailable);
        let catalog_down = CliError::from(SubmitError::Catalog(Box::new(ClientError::Timeout {
            operation: "x",
        })));
        assert_eq!(catalog_down.exit(), Exit::Unavailable);
    }

    #[test]
    fn connection_problems_are_4_and_bad_settings_are_2() {
        let old = CliError::from(ConnectError::Nats(
            llmq_runtime::ConnectError::ServerTooOld {
                version: "2.9.0".into(),
                minimum: "2.11.0",
            },
        ));
        assert_eq!(old.exit(), Exit::Unavailable);
        let tenant = CliError::from(ConnectError::Subject(SubjectError::BadTenant("a.b".into())));
        assert_eq!(tenant.exit(), Exit::Usage);
    }

    #[test]
    fn waiting_outcomes_map_to_3_and_6() {
        let dead = CliError::from(WaitError::DeadLettered {
            job_id: uuid::Uuid::nil(),
            reason: DlqReason::MaxDeliveries,
            message: "x".into(),
        });
        assert_eq!(dead.exit(), Exit::JobNotSucceeded);
        let late = CliError::NoOutcome {
            job_id: uuid::Uuid::nil(),
            waited: Duration::from_secs(1),
        };
        assert_eq!(late.exit(), Exit::NotFound);
        let missing = CliError::from(ClientError::NotFound {
            what: "dead letter 9".into(),
        });
        assert_eq!(missing.exit(), Exit::NotFound);
    }
}
