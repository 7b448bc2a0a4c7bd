//! The llmq producer library: submit chat-completion jobs to llmq workers over NATS
//! JetStream and get their events and outcomes back.
//!
//! Producers never talk to a provider: they publish a [`Job`](llmq_schemas::Job), and
//! whichever worker serves its model runs it. This crate hides what makes that reliable
//! but fiddly: publish retries that cannot queue a job twice, one reply subscription per
//! client instead of one per job, outcomes recovered from the results stream when a
//! final event is lost, refusing jobs no worker would run, and the operator's reads
//! (catalog, dead letters, usage).
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use llmq_schemas::{ChatRequest, Job};
//! use llmq_submitter::{Client, ClientOptions};
//!
//! let client = Client::connect(ClientOptions::for_tenant("acme")).await?;
//! let handle = client.submit(Job::new("chat-fast", ChatRequest::user("Hello!"))).await?;
//! let outcome = handle.outcome_within(std::time::Duration::from_secs(60)).await?;
//! println!("{}", outcome.text().unwrap_or_default());
//! # Ok(())
//! # }
//! ```

mod api_keys;
mod budget_report;
mod cancel;
mod catalog;
mod client;
mod connect;
mod denied;
mod dlq;
mod error;
mod handle;
mod inbox;
mod limits;
mod options;
mod outcome;
mod read_stream;
mod request_blob;
mod status;
mod stream_text;
mod submit;
mod tenants;
mod usage_report;

pub use budget_report::BudgetStatus;
pub use cancel::CancelStatus;
pub use catalog::{LIVE_HEARTBEAT, is_live};
pub use client::Client;
pub use connect::ConnectionEvents;
pub use denied::Denied;
pub use dlq::{DlqEntry, ReplayResult};
pub use error::{ClientError, ConnectError, SubmitError, WaitError};
pub use handle::JobHandle;
pub use llmq_runtime::{
    MINIMUM_SERVER_VERSION, NatsOptions, TlsOptions, check_server_version, connect,
};
pub use options::ClientOptions;
pub use status::{QueueStatus, Status, StreamStatus, WorkerStatus};
pub use stream_text::{StreamText, TextUpdate};
pub use tenants::POLICY_CACHE;
pub use usage_report::{UsageQuery, UsageReport, UsageRow};
