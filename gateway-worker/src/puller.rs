//! Pull requests through one long-lived inbox per consumer.
//!
//! async-nats's `fetch` and `batch` subscribe a fresh inbox for every pull and drop it
//! after: two extra protocol operations per pull for the client and the server, which at
//! low load is a large share of a job's whole cost. A puller subscribes once and sends
//! each pull request with that inbox as its reply subject.
//!
//! One request is outstanding at a time. A request ends when it delivered all it asked
//! for, or with a status: 404 (nothing queued, for a no-wait pull), 408 (the long poll
//! expired), 409 (ended by the server: consumer changed, leader moved, limits). A message
//! of an earlier request that arrives late is still a delivered job and is returned like
//! any other.

use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::consumer::pull::BatchConfig;
use async_nats::jetstream::{self, Message};
use async_nats::{StatusCode, Subject, Subscriber};
use futures::StreamExt;

#[derive(Debug)]
pub struct Puller {
    consumer: PullConsumer,
    context: jetstream::Context,
    inbox: Subject,
    subscription: Subscriber,
}

/// What a puller got.
#[derive(Debug)]
pub enum Pulled {
    Message(Box<Message>),
    /// The current request ended without (more) messages.
    Ended,
    /// Nothing arrived within the timeout: the request's answer was lost (a broker
    /// restart); send a new one.
    Lost,
}

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("cannot subscribe the pull inbox: {0}")]
    Subscribe(String),
    #[error("cannot send a pull request: {0}")]
    Request(String),
}

impl Puller {
    pub async fn new(
        client: &async_nats::Client,
        context: jetstream::Context,
        consumer: PullConsumer,
    ) -> Result<Puller, PullError> {
        let inbox = Subject::from(client.new_inbox());
        let subscription = client
            .subscribe(inbox.clone())
            .await
            .map_err(|err| PullError::Subscribe(err.to_string()))?;
        Ok(Puller {
            consumer,
            context,
            inbox,
            subscription,
        })
    }

    /// Asks for up to `batch` jobs: at once (`wait` None: whatever is queued now), or
    /// waiting up to `wait` for them to arrive.
    pub async fn request(&self, batch: usize, wait: Option<Duration>) -> Result<(), PullError> {
        let config = BatchConfig {
            batch,
            expires: wait,
            no_wait: wait.is_none(),
            ..BatchConfig::default()
        };
        self.consumer
            .request_batch(config, self.inbox.clone())
            .await
            .map_err(|err| PullError::Request(err.to_string()))
    }

    /// The next delivered job or the end of the current request, waiting at most
    /// `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Pulled {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let message = match tokio::time::timeout_at(deadline, self.subscription.next()).await {
                Ok(Some(message)) => message,
                Ok(None) | Err(_) => return Pulled::Lost,
            };
            match message.status {
                None | Some(StatusCode::OK) => {
                    return Pulled::Message(Box::new(Message {
                        message,
                        context: self.context.clone(),
                    }));
                }
                Some(StatusCode::IDLE_HEARTBEAT) => continue,
                Some(status) => {
                    if status != StatusCode::NOT_FOUND && status != StatusCode::TIMEOUT {
                        tracing::debug!(
                            %status,
                            description = message.description.as_deref().unwrap_or(""),
                            "pull request ended by the server"
                        );
                    }
                    return Pulled::Ended;
                }
            }
        }
    }
}
