//! Publishing to a JetStream stream until it is acknowledged, or clearly refused.
//!
//! A publish whose PubAck timed out, or whose connection dropped, may still have been
//! stored. Retrying with the same `Nats-Msg-Id` is safe (the stream's duplicate window
//! drops the copy) and is the only way to be sure; so timeouts and connection errors are
//! retried a bounded number of times with backoff. Refusals are not retried: a full
//! stream (discard-new limits) must reach the caller as "queue full", never be dropped.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::{self};
use async_nats::jetstream::{Error as ApiError, ErrorCode};
use bytes::Bytes;

/// Why a publish did not end in a PubAck.
#[derive(Debug)]
pub(crate) enum PublishFailure {
    /// Nothing captures the subject: no stream, so llmq is not set up.
    NoStream,
    /// The stream is at a discard-new limit (messages, bytes) or out of storage.
    Full { detail: String },
    /// The message is larger than the server accepts.
    TooLarge { detail: String },
    /// Another API error from the server.
    Rejected { code: u64, description: String },
    /// No PubAck after every attempt.
    Timeout { attempts: u32 },
    /// The connection failed on the last attempt.
    Connection { attempts: u32, source: PublishError },
}

/// What to do about one failed attempt.
#[derive(Debug)]
enum Verdict {
    Retry(PublishError),
    Fail(PublishFailure),
}

/// Publishes `payload` to `subject` with `headers` (which must carry `Nats-Msg-Id`) and
/// awaits the PubAck, retrying `retries` times after timeouts and connection errors.
pub(crate) async fn publish_acked(
    js: &jetstream::Context,
    subject: &str,
    headers: HeaderMap,
    payload: Bytes,
    retries: u32,
) -> Result<PublishAck, PublishFailure> {
    let attempts = retries.saturating_add(1);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let message = PublishMessage::build()
            .payload(payload.clone())
            .headers(headers.clone());
        let result = match js.send_publish(subject.to_owned(), message).await {
            Ok(ack) => ack.await,
            Err(err) => Err(err),
        };
        let err = match result {
            Ok(ack) => return Ok(ack),
            Err(err) => err,
        };
        match classify(err) {
            Verdict::Fail(failure) => return Err(failure),
            Verdict::Retry(err) if attempt >= attempts => {
                return Err(match err.kind() {
                    PublishErrorKind::TimedOut => PublishFailure::Timeout { attempts },
                    _ => PublishFailure::Connection {
                        attempts,
                        source: err,
                    },
                });
            }
            Verdict::Retry(err) => {
                let delay = backoff(attempt);
                tracing::debug!(subject, attempt, error = %err, ?delay, "publish not acknowledged; retrying with the same message id");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// 100 ms, 200 ms, 400 ms, ... capped at 2 s, after failed attempt `attempt` (1-based).
fn backoff(attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(5);
    Duration::from_millis(100 * (1 << exponent)).min(Duration::from_secs(2))
}

fn classify(err: PublishError) -> Verdict {
    match err.kind() {
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
    let at_limit = code == ErrorCode::STREAM_STORE_FAILED && description.contains("maximum");
    if at_limit || code == ErrorCode::STORAGE_RESOURCES_EXCEEDED || code == INSUFFICIENT_RESOURCES {
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
    fn discard_new_limits_are_queue_full() {
        for description in [
            "maximum messages exceeded",
            "maximum bytes exceeded",
            "maximum messages per subject exceeded",
        ] {
            assert!(
                matches!(
                    classify(api(503, 10077, description)),
                    Verdict::Fail(PublishFailure::Full { ref detail }) if detail.contains(description)
                ),
                "{description}"
            );
        }
        assert!(matches!(
            classify(api(500, 10047, "insufficient storage resources available")),
            Verdict::Fail(PublishFailure::Full { .. })
        ));
    }

    #[test]
    fn other_store_failures_and_api_errors_are_rejections() {
        assert!(matches!(
            classify(api(503, 10077, "some disk error")),
            Verdict::Fail(PublishFailure::Rejected { code: 10077, .. })
        ));
        assert!(matches!(
            classify(api(400, 10054, "message size exceeds maximum allowed")),
            Verdict::Fail(PublishFailure::TooLarge { .. })
        ));
        assert!(matches!(
            classify(api(400, 10003, "bad request")),
            Verdict::Fail(PublishFailure::Rejected { code: 10003, .. })
        ));
    }

    #[test]
    fn no_stream_fails_and_transport_errors_retry() {
        assert!(matches!(
            classify(PublishError::new(PublishErrorKind::StreamNotFound)),
            Verdict::Fail(PublishFailure::NoStream)
        ));
        for kind in [
            PublishErrorKind::TimedOut,
            PublishErrorKind::BrokenPipe,
            PublishErrorKind::MaxAckPending,
        ] {
            assert!(
                matches!(classify(PublishError::new(kind)), Verdict::Retry(_)),
                "{kind:?}"
            );
        }
        let closed = PublishError::with_source(PublishErrorKind::Other, "channel closed");
        assert!(matches!(classify(closed), Verdict::Retry(_)));
    }

    #[test]
    fn backoff_doubles_up_to_two_seconds() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(4), Duration::from_millis(800));
        assert_eq!(backoff(6), Duration::from_secs(2));
        assert_eq!(backoff(60), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_connection_is_retried_then_reported() {
        // A client whose connection task is gone: every send fails at once.
        let (client, _) = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect("nats://127.0.0.1:1")
            .await
            .map(|c| (c, ()))
            .unwrap();
        let js = jetstream::ContextBuilder::new()
            .timeout(Duration::from_millis(50))
            .build(client);
        let mut headers = HeaderMap::new();
        headers.insert(llmq_schemas::HEADER_MSG_ID, "id-1");
        let started = tokio::time::Instant::now();
        let failure = publish_acked(&js, "x.y", headers, Bytes::from_static(b"{}"), 2)
            .await
            .unwrap_err();
        assert!(
            matches!(
                failure,
                PublishFailure::Timeout { attempts: 3 }
                    | PublishFailure::Connection { attempts: 3, .. }
            ),
            "{failure:?}"
        );
        // Two backoffs: 100 ms + 200 ms.
        assert!(started.elapsed() >= Duration::from_millis(300));
    }
}
