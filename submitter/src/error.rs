//! Errors callers branch on.
//!
//! One enum per kind of call (connect, submit, read/admin, wait), so a caller matches only
//! the cases its call can produce: a submit can be refused because the queue is full, a
//! wait can end because the job was dead-lettered. Messages say what to do about it; they
//! never contain a secret.

use std::time::Duration;

use async_nats::jetstream;
use llmq_schemas::{DlqReason, JobId, SubjectError, Tier};

/// Connecting to NATS, or building a [`Client`](crate::Client) on a connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Reaching the server: bad options, credentials, unreachable, too old.
    #[error(transparent)]
    Nats(#[from] llmq_runtime::ConnectError),
    /// A bad subject prefix or tenant.
    #[error(transparent)]
    Subject(#[from] SubjectError),
    #[error(
        "inbox prefix {0:?} must be a literal subject outside llmq's own subjects and '$' \
         namespaces"
    )]
    InvalidInboxPrefix(String),
    #[error("cannot subscribe to the reply inbox {subject}: {source}")]
    Subscribe {
        subject: String,
        #[source]
        source: async_nats::SubscribeError,
    },
}

/// Submitting a job.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The job is malformed before it even leaves the process.
    #[error("invalid job: {0}")]
    InvalidJob(String),
    /// No live worker serves the model in this tier.
    #[error(
        "no live worker serves model {model:?} in tier {tier}; available: {}",
        display_list(available)
    )]
    UnknownModel {
        model: String,
        tier: Tier,
        /// Models live workers serve in `tier`, sorted.
        available: Vec<String>,
    },
    /// The catalog is empty or missing: no worker is running.
    #[error(
        "no llmq worker is running for prefix {prefix:?} (the model catalog is empty or missing)"
    )]
    NoWorkers { prefix: String },
    /// The jobs stream is at its limits (discard-new): the job was refused, not queued.
    #[error("the job queue {stream} is full ({detail}); try again later")]
    QueueFull { stream: String, detail: String },
    /// This tenant has as many jobs queued or running for the model and tier as the
    /// fleet lets one tenant have (`jetstream.jobs_max_per_subject`): refused, not queued.
    /// Other tenants are not affected.
    #[error(
        "tenant {tenant:?} has the most jobs one tenant may queue for model {model:?} in tier \
         {tier} (the workers' jetstream.jobs_max_per_subject); try again when some have run"
    )]
    TenantQueueFull {
        tenant: String,
        model: String,
        tier: Tier,
    },
    #[error("{}", not_set_up_message(prefix, missing))]
    NotSetUp { prefix: String, missing: String },
    /// Any other PubAck error from the server.
    #[error("the server refused the job: {description} (error code {code})")]
    Rejected { code: u64, description: String },
    /// No PubAck arrived; the job may or may not be queued (a later submit of the same job
    /// id is deduplicated).
    #[error("no acknowledgement from JetStream after {attempts} attempts")]
    Timeout { attempts: u32 },
    #[error("publishing failed after {attempts} attempts: {source}")]
    Connection {
        attempts: u32,
        #[source]
        source: jetstream::context::PublishError,
    },
    /// This client already has a live handle for the job id (drop it to submit again).
    #[error("job {job_id} is already being waited on by this client")]
    AlreadyWaiting { job_id: JobId },
    /// The catalog could not be read (other than missing, which is `NoWorkers`).
    #[error("cannot read the model catalog: {0}")]
    Catalog(#[source] Box<ClientError>),
    /// The server's permissions do not let these credentials publish the job (another
    /// tenant's subject, say).
    #[error("cannot submit: {0}")]
    PermissionDenied(#[from] crate::Denied),
    /// The tenant registry does not let this tenant run the job.
    #[error("refused by the tenant registry: {message}")]
    PolicyDenied {
        rule: llmq_schemas::PolicyRule,
        message: String,
    },
}

impl SubmitError {
    /// Whether submitting the same job again later can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            SubmitError::QueueFull { .. }
                | SubmitError::TenantQueueFull { .. }
                | SubmitError::Timeout { .. }
                | SubmitError::Connection { .. }
                | SubmitError::NoWorkers { .. }
        ) || matches!(self, SubmitError::Catalog(read) if read.is_transient())
    }
}

/// Reading results, the catalog, usage and dead letters; cancelling; replaying.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{}", not_set_up_message(prefix, missing))]
    NotSetUp { prefix: String, missing: String },
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("{operation} timed out")]
    Timeout { operation: &'static str },
    #[error("invalid JSON in {what}: {source}")]
    Decode {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    /// A dead letter without what a replay needs (its original subject).
    #[error("dead letter {seq} cannot be replayed: {reason}")]
    InvalidDlqEntry { seq: u64, reason: String },
    #[error("the job queue {stream} is full ({detail}); try again later")]
    QueueFull { stream: String, detail: String },
    #[error("the server refused the publish: {description} (error code {code})")]
    Rejected { code: u64, description: String },
    #[error("no acknowledgement from JetStream after {attempts} attempts")]
    PublishTimeout { attempts: u32 },
    #[error("{operation} failed: {source}")]
    Nats {
        operation: &'static str,
        #[source]
        source: async_nats::Error,
    },
    #[error(transparent)]
    Registry(#[from] llmq_runtime::tenants::StoreError),
    #[error(transparent)]
    Keys(#[from] llmq_runtime::api_keys::KeyStoreError),
    #[error("{operation}: {denied}")]
    PermissionDenied {
        operation: &'static str,
        denied: crate::Denied,
    },
    /// A claim check (an outcome's `body_blob`) could not be read back.
    #[error("{what}: {source}")]
    Blob {
        what: String,
        #[source]
        source: llmq_runtime::blob::BlobError,
    },
}

impl ClientError {
    pub(crate) fn nats(operation: &'static str, source: impl Into<async_nats::Error>) -> Self {
        ClientError::Nats {
            operation,
            source: source.into(),
        }
    }

    /// Whether the same call can succeed later without anything changing: a timeout, a
    /// dropped connection (a broker restarting), a full queue.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ClientError::Timeout { .. }
                | ClientError::PublishTimeout { .. }
                | ClientError::QueueFull { .. }
                | ClientError::Nats { .. }
        ) || matches!(self, ClientError::Blob { source, .. } if source.is_transient())
    }

    pub(crate) fn not_set_up(prefix: &str, missing: impl Into<String>) -> Self {
        ClientError::NotSetUp {
            prefix: prefix.to_owned(),
            missing: missing.into(),
        }
    }
}

/// Waiting for a job's events or outcome.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("no outcome within {}", humantime::format_duration(*waited))]
    Timeout { waited: Duration },
    /// The job went to the dead-letter stream; an operator may replay it.
    #[error("job {job_id} was dead-lettered ({reason}): {message}")]
    DeadLettered {
        job_id: JobId,
        reason: DlqReason,
        message: String,
    },
    /// A message on the job's reply subject is not a reply event.
    #[error("undecodable reply event: {0}")]
    Decode(#[source] serde_json::Error),
    /// The client's reply subscription ended (the connection was closed).
    #[error("the client's reply inbox was closed before the job's outcome arrived")]
    Closed,
    #[error(transparent)]
    Client(#[from] ClientError),
}

fn not_set_up_message(prefix: &str, missing: &str) -> String {
    format!(
        "no llmq worker has set up prefix '{prefix}' on this server ({missing} is missing); start \
         a gateway-worker with this prefix first"
    )
}

fn display_list(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

/// Whether a JetStream API error says the stream does not exist.
pub(crate) fn is_stream_not_found(err: &jetstream::Error) -> bool {
    err.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_set_up_names_the_prefix_and_what_is_missing() {
        let err = ClientError::not_set_up("llmq", "stream LLMQ_RESULTS");
        let text = err.to_string();
        assert!(
            text.contains("'llmq'") && text.contains("LLMQ_RESULTS"),
            "{text}"
        );
    }

    #[test]
    fn only_transient_submit_failures_are_retryable() {
        assert!(
            SubmitError::QueueFull {
                stream: "S".into(),
                detail: "d".into()
            }
            .is_retryable()
        );
        assert!(SubmitError::Timeout { attempts: 3 }.is_retryable());
        // A catalog read cut short by a broker restart is worth retrying; a missing
        // catalog is not.
        let timed_out = ClientError::nats(
            "reading the catalog",
            std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"),
        );
        assert!(SubmitError::Catalog(Box::new(timed_out)).is_retryable());
        assert!(
            !SubmitError::Catalog(Box::new(ClientError::not_set_up("llmq", "x"))).is_retryable()
        );
        assert!(!SubmitError::InvalidJob("x".into()).is_retryable());
        assert!(
            !SubmitError::UnknownModel {
                model: "m".into(),
                tier: Tier::Batch,
                available: vec![]
            }
            .is_retryable()
        );
    }
}
