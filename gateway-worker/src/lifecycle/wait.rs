//! A starting worker waits for its broker instead of failing or going quiet.
//!
//! Orchestrators start everything at once: the worker may come up before any nats-server
//! listens, or while a cluster is still electing its meta leader (JetStream drops the
//! requests sent meanwhile, and a 10 s request timeout turns a 0.5 s election into a long
//! silence), or before the servers that its replicas need have joined. Each of those
//! cures itself within seconds, so the worker probes quickly (a cheap request only the
//! meta leader answers), says what it is waiting for, and gives up with the last error
//! only after `worker.startup_timeout`.

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::Context;
use llmq_runtime::ConnectError;
use llmq_runtime::backoff::Backoff;
use llmq_schemas::Subjects;
use tokio::time::Instant;

use super::RunError;
use crate::config::Config;
use crate::nats::{self, Setup, SetupError};

/// How long the probe waits for JetStream's answer: a request sent during an election is
/// dropped, not queued, so a long timeout only delays the next try. Creating a replicated
/// stream takes longer; those requests keep `nats.request_timeout`.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a stream's creation may go unanswered before it is tried again: a replicated
/// stream is placed in well under this, and two workers creating the same stream at once
/// leave one request unanswered (the retry finds the stream made).
const CREATE_TIMEOUT: Duration = Duration::from_secs(3);
/// The pauses between two tries: 100 ms doubling to 2 s.
const PAUSES: Backoff = Backoff::doubling(Duration::from_millis(100), Duration::from_secs(2));
/// How often the same wait is logged again.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// Connects, waiting while no server of `nats.url` accepts connections.
pub async fn connect(
    config: &Config,
    customize: impl Fn(async_nats::ConnectOptions) -> async_nats::ConnectOptions,
) -> Result<async_nats::Client, RunError> {
    let what = "NATS to accept connections";
    retry(config, what, || {
        llmq_runtime::connect(&config.nats, &customize)
    })
    .await
    .map_err(|waited| waited.into_run_error(what, ""))
}

/// Creates or updates every stream and bucket, waiting while the cluster cannot yet
/// place them.
pub async fn setup(config: &Config, js: &Context, subjects: &Subjects) -> Result<Setup, RunError> {
    let mut probing = js.clone();
    probing.set_timeout(PROBE_TIMEOUT);
    let what = "JetStream to answer (a cluster: to elect its meta leader)";
    retry(config, what, || nats::probe(&probing))
        .await
        .map_err(|waited| waited.into_run_error(what, ""))?;
    let replicas = config.jetstream.replicas;
    let what = format!("JetStream to place llmq's streams with {replicas} replica(s)");
    let hint = if replicas > 1 {
        "; every stream needs jetstream.replicas JetStream servers of one cluster running: \
         start them, or lower jetstream.replicas (1 for a single server)"
    } else {
        ""
    };
    let mut creating = js.clone();
    creating.set_timeout(CREATE_TIMEOUT);
    retry(config, &what, || {
        nats::ensure(&creating, subjects, &config.jetstream)
    })
    .await
    .map_err(|waited| waited.into_run_error(&what, hint))
}

/// How waiting ended, when it did not end well.
enum Waited<E> {
    /// An error waiting cannot cure.
    Failed(E),
    /// Still failing when `worker.startup_timeout` ran out.
    GaveUp { after: Duration, last: E },
}

impl<E: Into<RunError> + std::fmt::Display> Waited<E> {
    fn into_run_error(self, what: &str, hint: &str) -> RunError {
        match self {
            Waited::Failed(err) => err.into(),
            Waited::GaveUp { after, last } => {
                let last = last.to_string();
                // A placement error names the setting already.
                let hint = if last.contains("jetstream.replicas") {
                    ""
                } else {
                    hint
                };
                RunError::StartupTimeout {
                    after,
                    what: what.to_owned(),
                    last: format!("{last}{hint}"),
                }
            }
        }
    }
}

/// An error a starting worker may wait out.
trait Transient: std::fmt::Display {
    fn is_transient(&self) -> bool;
}

impl Transient for ConnectError {
    fn is_transient(&self) -> bool {
        matches!(self, ConnectError::Connect { .. })
    }
}

impl Transient for SetupError {
    fn is_transient(&self) -> bool {
        SetupError::is_transient(self)
    }
}

/// Runs `attempt` until it succeeds, fails for good, or `worker.startup_timeout` passes.
async fn retry<T, E, F>(
    config: &Config,
    what: &str,
    attempt: impl Fn() -> F,
) -> Result<T, Waited<E>>
where
    E: Transient,
    F: Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    let deadline = started + config.worker.startup_timeout;
    let mut pauses = PAUSES.delays();
    let mut logged: Option<Instant> = None;
    loop {
        let err = match attempt().await {
            Ok(value) => {
                if logged.is_some() {
                    tracing::info!(waited = ?started.elapsed(), "done waiting for {what}");
                }
                return Ok(value);
            }
            Err(err) if !err.is_transient() => return Err(Waited::Failed(err)),
            Err(last) if Instant::now() >= deadline => {
                let after = started.elapsed();
                return Err(Waited::GaveUp { after, last });
            }
            Err(err) => err,
        };
        if logged.is_none_or(|at| at.elapsed() >= LOG_EVERY) {
            let left = deadline.saturating_duration_since(Instant::now());
            tracing::warn!(error = %err, waited = ?started.elapsed(), gives_up_in = ?left, "waiting for {what}");
            logged = Some(Instant::now());
        }
        // A doubling backoff never runs out of delays.
        let pause = pauses.next().unwrap_or_default();
        tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}
