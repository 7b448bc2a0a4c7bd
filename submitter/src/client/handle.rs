//! Waiting on one submitted job.
//!
//! Events come over core NATS, which is fast but may drop messages while a connection is
//! down. A handle that only listened could then wait forever for a final event that was
//! lost. So it also looks in the results stream, where every outcome is stored, at the
//! two moments a loss is possible or likely: right after each reconnect, and after a long
//! silence (`results_poll_interval`). It never polls while events keep coming.

use std::time::Duration;

use bytes::Bytes;
use llmq_schemas::{JobId, Outcome, ReplyEvent};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::Client;
use crate::connect::ConnectionEvents;
use crate::error::{SubmitError, WaitError};

/// A submitted job's events and outcome. Dropping it stops listening.
#[derive(Debug)]
pub struct JobHandle {
    job_id: JobId,
    client: Client,
    events: mpsc::UnboundedReceiver<Bytes>,
    connects: Option<watch::Receiver<u64>>,
    poll: Option<Interval>,
    /// An outcome found in the results stream, delivered after the events already queued.
    recovered: Option<Box<Outcome>>,
    done: bool,
}

enum Wake {
    Event(Option<Bytes>),
    Reconnected,
    ConnectsGone,
    Poll,
}

impl JobHandle {
    pub(super) fn register(client: Client, job_id: JobId) -> Result<JobHandle, SubmitError> {
        let events = client
            .inner
            .inbox
            .register(job_id)
            .map_err(|_| SubmitError::AlreadyWaiting { job_id })?;
        let connects = client
            .inner
            .session
            .events()
            .map(ConnectionEvents::subscribe);
        Ok(JobHandle {
            job_id,
            client,
            events,
            connects,
            poll: None,
            recovered: None,
            done: false,
        })
    }

    pub fn job_id(&self) -> JobId {
        self.job_id
    }

    /// The next event, in the order the worker sent them; `None` after the final (or
    /// dead-lettered) event.
    ///
    /// A final event recovered from the results stream is delivered as
    /// [`ReplyEvent::Final`] too, after any events that had already arrived. A final
    /// outcome too large for one message arrives naming the blob that holds its body;
    /// it is read back here, so the outcome is always whole.
    pub async fn next_event(&mut self) -> Option<Result<ReplyEvent, WaitError>> {
        let event = self.next_sent().await?;
        Some(match event {
            Ok(ReplyEvent::Final(outcome)) if outcome.body_blob.is_some() => self
                .client
                .with_body(*outcome)
                .await
                .map(|outcome| ReplyEvent::Final(Box::new(outcome)))
                .map_err(WaitError::from),
            other => other,
        })
    }

    /// The next event as the worker sent it.
    async fn next_sent(&mut self) -> Option<Result<ReplyEvent, WaitError>> {
        loop {
            if self.done {
                return None;
            }
            if self.recovered.is_some() {
                match self.events.try_recv() {
                    Ok(bytes) => match self.accept(&bytes) {
                        Some(event) => return Some(event),
                        None => continue,
                    },
                    Err(_) => {
                        let outcome = self.recovered.take()?;
                        self.finish();
                        return Some(Ok(ReplyEvent::Final(outcome)));
                    }
                }
            }
            match self.wake().await {
                Wake::Event(Some(bytes)) => {
                    if let Some(poll) = self.poll.as_mut() {
                        poll.reset();
                    }
                    if let Some(event) = self.accept(&bytes) {
                        return Some(event);
                    }
                }
                Wake::Event(None) => {
                    // The inbox closed; the results stream is the last place to look.
                    self.look_in_results().await;
                    if self.recovered.is_none() {
                        self.finish();
                        return Some(Err(WaitError::Closed));
                    }
                }
                Wake::Reconnected | Wake::Poll => self.look_in_results().await,
                Wake::ConnectsGone => self.connects = None,
            }
        }
    }

    /// Waits for the final outcome, skipping the other events. A dead-lettered job is
    /// [`WaitError::DeadLettered`].
    pub async fn outcome(mut self) -> Result<Outcome, WaitError> {
        while let Some(event) = self.next_event().await {
            match event {
                Ok(ReplyEvent::Final(outcome)) => return Ok(*outcome),
                Ok(ReplyEvent::DeadLettered(dead)) => {
                    return Err(WaitError::DeadLettered {
                        job_id: dead.job_id,
                        reason: dead.reason,
                        message: dead.message,
                    });
                }
                Ok(_) => {}
                // One garbled delta must not lose the outcome.
                Err(WaitError::Decode(err)) => {
                    tracing::warn!(job_id = %self.job_id, error = %err, "skipping an undecodable reply event");
                }
                Err(err) => return Err(err),
            }
        }
        Err(WaitError::Closed)
    }

    /// [`outcome`](Self::outcome), giving up after `timeout`.
    pub async fn outcome_within(self, timeout: Duration) -> Result<Outcome, WaitError> {
        tokio::time::timeout(timeout, self.outcome())
            .await
            .unwrap_or(Err(WaitError::Timeout { waited: timeout }))
    }

    async fn wake(&mut self) -> Wake {
        let period = self
            .client
            .options()
            .results_poll_interval
            .max(Duration::from_millis(1));
        let poll = self.poll.get_or_insert_with(|| {
            let mut poll = tokio::time::interval_at(Instant::now() + period, period);
            poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
            poll
        });
        let connects = &mut self.connects;
        tokio::select! {
            biased;
            bytes = self.events.recv() => Wake::Event(bytes),
            changed = changed(connects) => if changed { Wake::Reconnected } else { Wake::ConnectsGone },
            _ = poll.tick() => Wake::Poll,
        }
    }

    /// Decodes one event; `None` to skip it.
    fn accept(&mut self, bytes: &[u8]) -> Option<Result<ReplyEvent, WaitError>> {
        let event = match serde_json::from_slice::<ReplyEvent>(bytes) {
            Ok(event) => event,
            Err(err) => return Some(Err(WaitError::Decode(err))),
        };
        if event.job_id() != self.job_id {
            tracing::warn!(job_id = %self.job_id, other = %event.job_id(), "reply event for another job on this job's subject; skipped");
            return None;
        }
        if matches!(event, ReplyEvent::Final(_) | ReplyEvent::DeadLettered(_)) {
            self.finish();
        }
        Some(Ok(event))
    }

    async fn look_in_results(&mut self) {
        match self.client.get_outcome(self.job_id).await {
            Ok(Some(outcome)) => {
                tracing::debug!(job_id = %self.job_id, "final event missed; outcome read from the results stream");
                self.recovered = Some(Box::new(outcome));
            }
            Ok(None) => {}
            Err(err) => {
                tracing::debug!(job_id = %self.job_id, error = %err, "could not look for the outcome in the results stream");
            }
        }
    }

    fn finish(&mut self) {
        self.done = true;
        self.poll = None;
        self.client.inner.inbox.unregister(self.job_id);
    }
}

impl Drop for JobHandle {
    fn drop(&mut self) {
        if !self.done {
            self.client.inner.inbox.unregister(self.job_id);
        }
    }
}

/// Resolves `true` on the next (re)connect, `false` if the connection's event source is
/// gone, and never without a source.
async fn changed(connects: &mut Option<watch::Receiver<u64>>) -> bool {
    match connects {
        Some(rx) => rx.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}
