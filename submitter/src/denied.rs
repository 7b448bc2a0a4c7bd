//! Failing at once, with the subject, when the server's permissions deny a call.
//!
//! A denied request gets no answer, only an asynchronous permission error on the
//! connection (see `connect.rs`). A call races its future against those errors and fails
//! with [`Denied`] when one names a subject the call uses (its stream, bucket or subject),
//! so the user reads "permission denied for publish to ..." instead of a timeout, and a
//! read that is denied is an error, never an empty answer.

use tokio::sync::broadcast::error::RecvError;

use crate::connect::ConnectionEvents;

/// The server refused this connection an operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the NATS server denied it: {message}; these credentials may not do that (see README, \
     \"Tenants and access\")"
)]
pub struct Denied {
    /// The server's words, e.g. `Permissions Violation for Publish to "llmq.jobs..."`.
    pub message: String,
}

/// Runs `call`, unless the server denies an operation on a subject containing one of
/// `about` (or `inbox`, the connection's inbox prefix) first, or already did on this
/// connection. Without `events` nothing is watched: the call runs as it is.
pub(crate) async fn unless_denied<T>(
    events: Option<&ConnectionEvents>,
    inbox: &str,
    about: &[&str],
    call: impl Future<Output = T>,
) -> Result<T, Denied> {
    let Some(events) = events else {
        return Ok(call.await);
    };
    let concerns =
        |message: &str| about.iter().any(|part| message.contains(part)) || message.contains(inbox);
    let (recent, mut later) = events.denials();
    if let Some(message) = recent.into_iter().find(|m| concerns(m)) {
        return Err(Denied { message });
    }
    tokio::pin!(call);
    loop {
        tokio::select! {
            done = &mut call => return Ok(done),
            denial = later.recv() => match denial {
                Ok(message) if concerns(&message) => return Err(Denied { message }),
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return Ok(call.await),
            },
        }
    }
}
