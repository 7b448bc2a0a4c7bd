//! Publishing to a JetStream stream until it is acknowledged, or clearly refused: the one
//! loop every llmq process uses (jobs, outcomes, usage events, dead letters, replays).
//!
//! A publish whose PubAck timed out, or whose connection dropped, may still have been
//! stored. Retrying with the same `Nats-Msg-Id` is safe (the stream's duplicate window
//! drops the copy and acks it again) and is the only way to be sure, so timeouts and
//! connection errors are retried within a budget of attempts (a producer, who can tell
//! its caller) or of time (a worker, who hands the job back after it). Refusals are not
//! retried: a full stream must reach the caller as "full", never be dropped.
//!
//! A stream's duplicate window is stream-wide and any client may set any `Nats-Msg-Id`,
//! so an id another tenant can guess is one it can use first, and the real message is
//! then acknowledged as a duplicate and dropped. Ids a producer makes up from something
//! guessable (a job id) go through [`private_msg_id`].

use std::sync::OnceLock;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::{self, Error as ApiError, ErrorCode};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::backoff::Backoff;

/// A `Nats-Msg-Id` for `key` (a job id, a cancel, a replay) that no other process can
/// guess: `<key>.<32 hex digits>`, the digits 128 bits of SHA-256 over a secret drawn once
/// per process and the key. The same key gives the same id in this process, so a publish
/// retried (by [`publish_durable`], or by a caller submitting the same job again after a
/// timeout) is still deduplicated; another tenant, who cannot know the secret, cannot
/// take the id first. The id reaches only the stream (workers and admins), never a tenant.
pub fn private_msg_id(key: &str) -> String {
    static SECRET: OnceLock<[u8; 32]> = OnceLock::new();
    keyed_msg_id(SECRET.get_or_init(rand::random), key)
}

/// [`private_msg_id`] under a secret of the caller's, for ids that must be the same in
/// every process that knows the secret (a batch's lines, rerun by another process: the
/// secret lives in the batch's record, which only its tenant reads).
pub fn keyed_msg_id(secret: &[u8], key: &str) -> String {
    let digest = Sha256::new()
        .chain_update(secret)
        .chain_update(key.as_bytes())
        .finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{key}.{hex}")
}

/// How long a durable publish keeps retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// This many publishes in all (at least one).
    Attempts(u32),
    /// Retries until this much time has passed since the first publish.
    Time(Duration),
}

/// One message to store durably.
#[derive(Clone, Copy)]
pub struct Durable<'a> {
    pub subject: &'a str,
    /// The `Nats-Msg-Id`: the same on every retry, so a stored copy is never stored twice.
    pub msg_id: &'a str,
    /// Headers besides the message id.
    pub headers: Option<&'a HeaderMap>,
    pub payload: &'a Bytes,
    pub budget: Budget,
    /// Whether "no stream captures the subject" is worth retrying. A worker created its
    /// streams, so for it that answer means a server still restarting; for a producer it
    /// means llmq is not set up, which it should say at once.
    pub missing_stream_is_transient: bool,
    /// When a missing stream is not transient, how long it is retried anyway before it is
    /// reported: a cluster electing a new stream leader answers like a missing stream for a
    /// moment. These retries do not count against an attempts budget.
    pub missing_stream_grace: Duration,
    /// Called before each retry, with the error that caused it (for a metric).
    pub on_retry: Option<&'a (dyn Fn(&PublishError) + Send + Sync)>,
}

impl std::fmt::Debug for Durable<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Durable")
            .field("subject", &self.subject)
            .field("msg_id", &self.msg_id)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

/// Why a durable publish did not end in a PubAck.
#[derive(Debug, thiserror::Error)]
pub enum PublishFailure {
    /// Nothing captures the subject: no stream, so llmq is not set up.
    #[error("no stream captures the subject")]
    NoStream,
    /// The stream is at a discard-new limit (messages, bytes) or out of storage.
    #[error("the stream is full: {detail}")]
    Full { detail: String },
    /// The subject already holds its most messages, with discard-new per subject (a job
    /// whose outcome is already stored).
    #[error("the subject is full: {detail}")]
    SubjectFull { detail: String },
    /// The message is larger than the server or the stream accepts.
    #[error("the message is too large: {detail}")]
    TooLarge { detail: String },
    /// Another API error from the server.
    #[error("refused by the stream: {description} (error code {code})")]
    Rejected { code: u64, description: String },
    /// No PubAck within the budget; the message may or may not be stored.
    #[error("no acknowledgement after {attempts} attempts")]
    Timeout { attempts: u32 },
    /// The connection failed on the last attempt.
    #[error("publishing failed after {attempts} attempts: {source}")]
    Connection {
        attempts: u32,
        #[source]
        source: PublishError,
    },
}

/// Publishes `message` and awaits its PubAck, retrying timeouts and connection errors
/// with the same message id within its budget.
pub async fn publish_durable(
    js: &jetstream::Context,
    message: Durable<'_>,
) -> Result<PublishAck, PublishFailure> {
    let started = Instant::now();
    let mut attempt = 0;
    let mut unanswered = 0;
    loop {
        attempt += 1;
        let err = match send(js, &message).await {
            Ok(ack) => return Ok(ack),
            Err(err) => err,
        };
        let err = match classify(err, message.missing_stream_is_transient) {
            Verdict::Fail(PublishFailure::NoStream)
                if started.elapsed() + backoff(unanswered + 1) <= message.missing_stream_grace =>
            {
                unanswered += 1;
                attempt -= 1;
                tracing::debug!(
                    subject = message.subject,
                    "no stream answered; retrying within the grace period"
                );
                tokio::time::sleep(backoff(unanswered)).await;
                continue;
            }
            Verdict::Fail(failure) => return Err(failure),
            Verdict::Retry(err) => err,
        };
        let delay = backoff(attempt);
        if out_of_budget(message.budget, attempt, started.elapsed() + delay) {
            return Err(given_up(err, attempt));
        }
        if let Some(on_retry) = message.on_retry {
            on_retry(&err);
        }
        tracing::debug!(subject = message.subject, attempt, error = %err, ?delay, "publish not acknowledged; retrying with the same message id");
        tokio::time::sleep(delay).await;
    }
}

async fn send(js: &jetstream::Context, message: &Durable<'_>) -> Result<PublishAck, PublishError> {
    let mut publish = PublishMessage::build()
        .payload(message.payload.clone())
        .message_id(message.msg_id);
    if let Some(headers) = message.headers {
        for (name, values) in headers.iter() {
            for value in values {
                publish = publish.header(name.clone(), value.clone());
            }
        }
    }
    js.send_publish(message.subject.to_owned(), publish)
        .await?
        .await
}

fn out_of_budget(budget: Budget, attempts: u32, elapsed_after_wait: Duration) -> bool {
    match budget {
        Budget::Attempts(most) => attempts >= most.max(1),
        Budget::Time(window) => elapsed_after_wait > window,
    }
}

fn given_up(err: PublishError, attempts: u32) -> PublishFailure {
    match err.kind() {
        PublishErrorKind::TimedOut => PublishFailure::Timeout { attempts },
        _ => PublishFailure::Connection {
            attempts,
            source: err,
        },
    }
}

/// The waits between publishes: 50 ms, 100 ms, 200 ms, ... capped at 2 s.
const BACKOFF: Backoff = Backoff::doubling(Duration::from_millis(50), Duration::from_secs(2));

/// The wait after failed attempt `attempt` (1-based).
fn backoff(attempt: u32) -> Duration {
    BACKOFF.delay(attempt.saturating_sub(1))
}

/// What to do about one failed attempt.
#[derive(Debug)]
enum Verdict {
    Retry(PublishError),
    Fail(PublishFailure),
}

fn classify(err: PublishError, missing_stream_is_transient: bool) -> Verdict {
    match err.kind() {
        PublishErrorKind::StreamNotFound if missing_stream_is_transient => Verdict::Retry(err),
        PublishErrorKind::StreamNotFound => Verdict::Fail(PublishFailure::NoStream),
        PublishErrorKind::MaxPayloadExceeded => Verdict::Fail(PublishFailure::TooLarge {
            detail: err.to_string(),
        }),
        PublishErrorKind::TimedOut
        | PublishErrorKind::BrokenPipe
        | PublishErrorKind::MaxAckPending => Verdict::Retry(err),
        PublishErrorKind::WrongLastMessageId
        | PublishErrorKind::WrongLastSequence
        | PublishErrorKind::Other => match api_error(&err) {
            Some(api) => Verdict::Fail(classify_api_error(api)),
            // Not an answer from the server: the request never made it (connection closed
            // or reconnecting).
            None => Verdict::Retry(err),
        },
    }
}

fn api_error(err: &PublishError) -> Option<&ApiError> {
    use std::error::Error as _;
    err.source()?.downcast_ref::<ApiError>()
}

/// Error codes from nats-server's `errors.json`.
const INSUFFICIENT_RESOURCES: ErrorCode = ErrorCode(10023);

fn classify_api_error(api: &ApiError) -> PublishFailure {
    let description = api.to_string();
    let code = api.error_code();
    // A discard-new limit answers 503 "stream store failed" (10077) with the store's
    // error as the description: "maximum messages exceeded", "maximum bytes exceeded",
    // "maximum messages per subject exceeded". Storage exhaustion has codes of its own.
    let store_limit = code == ErrorCode::STREAM_STORE_FAILED && description.contains("maximum");
    if store_limit && description.contains("per subject") {
        return PublishFailure::SubjectFull {
            detail: description,
        };
    }
    if store_limit
        || code == ErrorCode::STORAGE_RESOURCES_EXCEEDED
        || code == INSUFFICIENT_RESOURCES
    {
        return PublishFailure::Full {
            detail: description,
        };
    }
    if code == ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM {
        return PublishFailure::TooLarge {
            detail: description,
        };
    }
    PublishFailure::Rejected {
        code: code.0,
        description,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: usize, err_code: u64, description: &str) -> PublishError {
        let api: ApiError = serde_json::from_value(serde_json::json!({
            "code": code, "err_code": err_code, "description": description
        }))
        .unwrap();
        PublishError::with_source(PublishErrorKind::Other, api)
    }

    #[test]
    fn discard_new_limits_are_full_and_per_subject_ones_are_told_apart() {
        for description in ["maximum messages exceeded", "maximum bytes exceeded"] {
            assert!(
                matches!(
                    classify(api(503, 10077, description), false),
                    Verdict::Fail(PublishFailure::Full { ref detail }) if detail.contains(description)
                ),
                "{description}"
            );
        }
        assert!(matches!(
            classify(
                api(503, 10077, "maximum messages per subject exceeded"),
                false
            ),
            Verdict::Fail(PublishFailure::SubjectFull { .. })
        ));
        assert!(matches!(
            classify(
                api(500, 10047, "insufficient storage resources available"),
                false
            ),
            Verdict::Fail(PublishFailure::Full { .. })
        ));
    }

    #[test]
    fn other_store_failures_and_api_errors_are_rejections() {
        assert!(matches!(
            classify(api(503, 10077, "some disk error"), false),
            Verdict::Fail(PublishFailure::Rejected { code: 10077, .. })
        ));
        assert!(matches!(
            classify(
                api(400, 10054, "message size exceeds maximum allowed"),
                false
            ),
            Verdict::Fail(PublishFailure::TooLarge { .. })
        ));
        assert!(matches!(
            classify(api(400, 10003, "bad request"), false),
            Verdict::Fail(PublishFailure::Rejected { code: 10003, .. })
        ));
    }

    #[test]
    fn a_missing_stream_fails_a_producer_and_is_retried_by_a_worker() {
        assert!(matches!(
            classify(PublishError::new(PublishErrorKind::StreamNotFound), false),
            Verdict::Fail(PublishFailure::NoStream)
        ));
        assert!(matches!(
            classify(PublishError::new(PublishErrorKind::StreamNotFound), true),
            Verdict::Retry(_)
        ));
        for kind in [
            PublishErrorKind::TimedOut,
            PublishErrorKind::BrokenPipe,
            PublishErrorKind::MaxAckPending,
        ] {
            assert!(
                matches!(classify(PublishError::new(kind), false), Verdict::Retry(_)),
                "{kind:?}"
            );
        }
        let closed = PublishError::with_source(PublishErrorKind::Other, "channel closed");
        assert!(matches!(classify(closed, false), Verdict::Retry(_)));
    }

    #[test]
    fn a_private_msg_id_is_stable_for_its_key_and_unguessable_from_it() {
        let id = private_msg_id("0193a3c2-6c2e-7cc3-9c1d-3f1d2c4b5a69");
        let (key, digits) = id.rsplit_once('.').unwrap();
        assert_eq!(key, "0193a3c2-6c2e-7cc3-9c1d-3f1d2c4b5a69");
        assert_eq!(digits.len(), 32);
        assert!(digits.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(private_msg_id(key), id, "a retry reuses the id");
        assert_ne!(private_msg_id("another"), private_msg_id("another2"));
    }

    #[test]
    fn backoff_doubles_up_to_two_seconds() {
        assert_eq!(backoff(1), Duration::from_millis(50));
        assert_eq!(backoff(2), Duration::from_millis(100));
        assert_eq!(backoff(4), Duration::from_millis(400));
        assert_eq!(backoff(7), Duration::from_secs(2));
        assert_eq!(backoff(60), Duration::from_secs(2));
    }

    #[test]
    fn budgets_count_attempts_or_time() {
        assert!(!out_of_budget(Budget::Attempts(3), 2, Duration::ZERO));
        assert!(out_of_budget(Budget::Attempts(3), 3, Duration::ZERO));
        assert!(out_of_budget(Budget::Attempts(0), 1, Duration::ZERO));
        let window = Budget::Time(Duration::from_secs(1));
        assert!(!out_of_budget(window, 9, Duration::from_millis(900)));
        assert!(out_of_budget(window, 1, Duration::from_millis(1100)));
    }

    async fn dead_connection() -> jetstream::Context {
        // A client whose server never answers: every send fails or times out.
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect("nats://127.0.0.1:1")
            .await
            .unwrap();
        jetstream::ContextBuilder::new()
            .timeout(Duration::from_millis(50))
            .build(client)
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreachable_server_is_retried_within_the_budget_then_reported() {
        let js = dead_connection().await;
        let payload = Bytes::from_static(b"{}");
        let retries = std::sync::atomic::AtomicU32::new(0);
        let count = |_: &PublishError| {
            retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        };
        let message = Durable {
            subject: "x.y",
            msg_id: "id-1",
            headers: None,
            payload: &payload,
            budget: Budget::Attempts(3),
            missing_stream_is_transient: false,
            missing_stream_grace: Duration::ZERO,
            on_retry: Some(&count),
        };
        let started = Instant::now();
        let failure = publish_durable(&js, message).await.unwrap_err();
        assert!(
            matches!(
                failure,
                PublishFailure::Timeout { attempts: 3 }
                    | PublishFailure::Connection { attempts: 3, .. }
            ),
            "{failure:?}"
        );
        assert_eq!(retries.load(std::sync::atomic::Ordering::Relaxed), 2);
        // Two backoffs: 50 ms + 100 ms.
        assert!(started.elapsed() >= Duration::from_millis(150));

        let timed = Durable {
            budget: Budget::Time(Duration::from_secs(2)),
            on_retry: None,
            ..message
        };
        let started = Instant::now();
        assert!(publish_durable(&js, timed).await.is_err());
        assert!(started.elapsed() <= Duration::from_secs(3));
    }
}
