//! The llmq producer library: submit chat-completion jobs to llmq workers over NATS
//! JetStream and get their events and outcomes back.
//!
//! Producers never talk to a provider: they publish a [`Job`](llmq_schemas::Job), and
//! whichever worker serves its model runs it. This crate hides what makes that reliable
//! but fiddly: publish retries that cannot queue a job twice, one reply subscription per
//! client instead of one per job, outcomes recovered from the results stream when a
//! final event is lost, refusing jobs no worker would run.
//!
//! Two handles connect the same way (one [`ClientOptions`]): a [`Client`] is a producer,
//! for one tenant (submit, follow and cancel its jobs, read their outcomes and the model
//! catalog); an [`Operator`] does the rest (the tenant registry, API keys, the fleet's
//! limits and status, dead letters, usage and budget reports), mostly with an admin's
//! credentials. A tenant reads its own usage and budgets with an `Operator` on its own
//! credentials ([`Operator::from_client`] shares a client's connection).
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use llmq_schemas::{ChatRequest, Job};
//! use llmq_submitter::{Client, ClientOptions, Operator, UsageQuery};
//! use std::time::Duration;
//!
//! let client = Client::connect(ClientOptions::for_tenant("acme")).await?;
//! let handle = client.submit(Job::new("chat-fast", ChatRequest::user("Hello!"))).await?;
//! let outcome = handle.outcome_within(Duration::from_secs(60)).await?;
//! println!("{}", outcome.text().unwrap_or_default());
//!
//! // This tenant's usage over the last day.
//! let operator = Operator::from_client(&client);
//! let report = operator.usage_report(UsageQuery::last(Duration::from_secs(86_400))).await?;
//! println!("{} jobs, ${:.4}", report.total.jobs, report.total.cost_usd);
//! # Ok(())
//! # }
//! ```

mod batch;
mod catalog;
mod client;
mod connect;
mod denied;
mod error;
mod operator;
mod options;
mod own_entry;
mod read_stream;
mod session;
mod stream_text;

pub use batch::{
    BatchCount, BatchError, BatchOptions, BatchProgress, LineProblem, OutputOrder, Plan,
    ResultsSummary, SubmitProgress,
};
pub use catalog::{LIVE_HEARTBEAT, is_live};
pub use client::{CancelStatus, Client, JobHandle, POLICY_CACHE};
pub use connect::ConnectionEvents;
pub use denied::Denied;
pub use error::{ClientError, ConnectError, SubmitError, WaitError};
pub use llmq_runtime::{
    MINIMUM_SERVER_VERSION, NatsOptions, TlsOptions, check_server_version, connect,
};
pub use operator::{
    BudgetStatus, DlqEntry, Operator, QueueStatus, ReplayResult, Status, StreamStatus, UsageQuery,
    UsageReport, UsageRow, WorkerStatus,
};
pub use options::ClientOptions;
pub use stream_text::{StreamText, TextUpdate};
