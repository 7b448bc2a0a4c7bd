//! Counting a batch's outcomes: the same reads that write its results file, so the
//! record's counts and the file always agree.

use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use futures::StreamExt;
use llmq_schemas::{
    BatchCounts, BatchId, BatchRecord, BatchStatus, Cost, OutcomeStatus, Timestamp, Usage,
};
use serde::Deserialize;

use super::error::BatchError;
use crate::Client;
use crate::error::ClientError;
use crate::read_stream::ReadRange;
use crate::session::consumer_name;

/// How often a wait re-reads the record (a cancel, the submit's checkpoint).
const RECORD_EVERY: Duration = Duration::from_secs(1);

/// A batch as a wait sees it, after each outcome or second.
#[derive(Debug, Clone)]
pub struct BatchProgress {
    pub status: BatchStatus,
    pub published: u64,
    pub counts: BatchCounts,
}

/// The outcomes counted so far.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tally {
    succeeded: u64,
    failed: u64,
    expired: u64,
    cancelled: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    cost_usd: f64,
    /// The stream sequence of the last outcome counted.
    last_sequence: u64,
}

/// The part of an outcome a count reads.
#[derive(Deserialize)]
struct Counted {
    status: OutcomeStatus,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    cost: Option<Cost>,
}

impl Tally {
    fn add(&mut self, payload: &[u8], sequence: u64) {
        self.last_sequence = self.last_sequence.max(sequence);
        let Ok(outcome) = serde_json::from_slice::<Counted>(payload) else {
            self.failed += 1;
            return;
        };
        *match outcome.status {
            OutcomeStatus::Succeeded => &mut self.succeeded,
            OutcomeStatus::Failed => &mut self.failed,
            OutcomeStatus::Expired => &mut self.expired,
            OutcomeStatus::Cancelled => &mut self.cancelled,
        } += 1;
        if let Some(usage) = outcome.usage {
            self.prompt_tokens += usage.prompt_tokens;
            self.completion_tokens += usage.completion_tokens;
        }
        self.cost_usd += outcome.cost.and_then(|c| c.total_usd()).unwrap_or(0.0);
    }

    fn ended(&self) -> u64 {
        self.succeeded + self.failed + self.expired + self.cancelled
    }
}

/// The record with `tally`'s counts and the status they make.
pub(crate) fn settle(record: &mut BatchRecord, tally: &Tally) {
    let total = record.counts.total;
    let stopped = record.submit_done && tally.ended() >= record.published;
    let unsubmitted = total.saturating_sub(record.published);
    let cancelled = record.cancelled_at.is_some();
    record.counts = BatchCounts {
        total,
        queued: record.published.saturating_sub(tally.ended()),
        unsubmitted: if cancelled && stopped { 0 } else { unsubmitted },
        succeeded: tally.succeeded,
        failed: tally.failed,
        expired: tally.expired,
        cancelled: tally.cancelled + if cancelled && stopped { unsubmitted } else { 0 },
        prompt_tokens: tally.prompt_tokens,
        completion_tokens: tally.completion_tokens,
        cost_usd: tally.cost_usd,
    };
    let checking = record.status == BatchStatus::Validating && record.cancelled_at.is_none();
    if !checking && record.status != BatchStatus::Failed {
        record.status = status(record, stopped);
    }
    if let Some(http) = record.http.as_mut()
        && record.status.is_final()
        && http.finalized_at.is_none()
    {
        // Its lines have ended; its results files are not written yet (OpenAI says
        // `cancelling` until a cancelled batch's files are there).
        http.finalizing_at.get_or_insert_with(Timestamp::now);
        record.status = match record.cancelled_at {
            Some(_) => BatchStatus::Cancelling,
            None => BatchStatus::Finalizing,
        };
    }
    record.counted_at = Some(Timestamp::now());
    if record.status.is_final() && record.finished_at.is_none() {
        record.finished_at = Some(Timestamp::now());
    }
}

fn status(record: &BatchRecord, stopped: bool) -> BatchStatus {
    let cancelled = record.cancelled_at.is_some();
    match (cancelled, stopped) {
        (true, true) => BatchStatus::Cancelled,
        (true, false) => BatchStatus::Cancelling,
        (false, true) if record.counts.expired > 0 => BatchStatus::Expired,
        (false, true) => BatchStatus::Completed,
        (false, false) => BatchStatus::InProgress,
    }
}

fn sequence(message: &async_nats::jetstream::Message) -> u64 {
    message.info().map(|info| info.stream_sequence).unwrap_or(0)
}

/// A batch's outcomes counted up to a stream sequence: kept between two looks at the
/// same batch (the edge's `GET /v1/batches/{id}` polls), so each look reads only the
/// outcomes stored since the last.
#[derive(Debug, Clone, Default)]
pub struct BatchCount(Tally);

impl Client {
    /// The batch's record with its counts counted now from its stored outcomes (and
    /// written back, so `batch list` shows them).
    pub async fn batch_status(&self, id: &BatchId) -> Result<BatchRecord, BatchError> {
        self.batch_status_counted(id, &mut BatchCount::default())
            .await
    }

    /// [`batch_status`](Self::batch_status) counting on from `count` (which it moves on).
    /// The record is written back only when its counts or status changed.
    pub async fn batch_status_counted(
        &self,
        id: &BatchId,
        count: &mut BatchCount,
    ) -> Result<BatchRecord, BatchError> {
        self.count_outcomes_from(id, &mut count.0).await?;
        let tally = count.0.clone();
        let record = self
            .update_record(id, |record| {
                let before = (record.counts.clone(), record.status);
                settle(record, &tally);
                before != (record.counts.clone(), record.status)
            })
            .await?;
        if tally.ended() <= record.published {
            return Ok(record);
        }
        // More outcomes than published lines: one was stored again and counted twice
        // by counting on. Count the batch whole.
        *count = BatchCount::default();
        Box::pin(self.batch_status_counted(id, count)).await
    }

    /// Follows the batch's outcomes as they are stored, calling `progress` on each
    /// change, until every line has one (or the batch is cancelled and its queued lines
    /// ended); returns the settled record (`finalizing` for a batch made over HTTP, until
    /// [`batch_finalize`](Self::batch_finalize)).
    pub async fn batch_wait(
        &self,
        id: &BatchId,
        mut progress: impl FnMut(&BatchProgress),
    ) -> Result<BatchRecord, BatchError> {
        // What is stored already, counted at once; then what comes, as it comes.
        let mut tally = self.count_outcomes(id).await?;
        let mut messages = self.follow_outcomes(id, tally.last_sequence + 1).await?;
        loop {
            let record = self.settled(id, &tally).await?;
            progress(&BatchProgress {
                status: record.status,
                published: record.published,
                counts: record.counts.clone(),
            });
            if record.lines_ended() {
                return self.batch_status(id).await;
            }
            let until = tokio::time::Instant::now() + RECORD_EVERY;
            // The record is read again after a second, or at once when every line it
            // said was published has ended (it may be the end).
            let all_in = |tally: &Tally| record.submit_done && tally.ended() >= record.published;
            while !all_in(&tally)
                && let Ok(next) = tokio::time::timeout_at(until, messages.next()).await
            {
                match next {
                    Some(Ok(message)) => tally.add(&message.payload, sequence(&message)),
                    Some(Err(err)) => {
                        return Err(ClientError::nats("following outcomes", err).into());
                    }
                    None => return Err(ClientError::nats("following outcomes", "ended").into()),
                }
            }
        }
    }

    async fn settled(&self, id: &BatchId, tally: &Tally) -> Result<BatchRecord, BatchError> {
        let mut record = self
            .batch_record(id)
            .await?
            .ok_or_else(|| BatchError::NotFound(id.clone()))?;
        settle(&mut record, tally);
        Ok(record)
    }

    /// Every stored outcome of the batch, counted.
    pub(crate) async fn count_outcomes(&self, id: &BatchId) -> Result<Tally, BatchError> {
        let mut tally = Tally::default();
        self.count_outcomes_from(id, &mut tally).await?;
        Ok(tally)
    }

    /// Counts into `tally` the batch's outcomes stored after those it counted.
    async fn count_outcomes_from(&self, id: &BatchId, tally: &mut Tally) -> Result<(), BatchError> {
        let deliver_policy = match tally.last_sequence {
            0 => DeliverPolicy::All,
            last => DeliverPolicy::ByStartSequence {
                start_sequence: last + 1,
            },
        };
        let range = ReadRange {
            filter_subject: self.subjects().batch_outcomes_filter(self.tenant(), id),
            deliver_policy,
            until: None,
        };
        let stream = self.subjects().results_stream();
        self.session()
            .read_stream(&stream, range, |stored| {
                tally.add(&stored.message.payload, stored.sequence)
            })
            .await?;
        Ok(())
    }

    /// The batch's outcomes from stream sequence `from` on, as they are stored.
    async fn follow_outcomes(&self, id: &BatchId, from: u64) -> Result<pull::Ordered, BatchError> {
        let name = self.subjects().results_stream();
        let stream = self.results_stream().await?;
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                name: Some(consumer_name()),
                filter_subject: self.subjects().batch_outcomes_filter(self.tenant(), id),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: from,
                },
                ..Default::default()
            })
            .await
            .map_err(|err| {
                self.session()
                    .consumer_error(err, &name, "following outcomes")
            })?;
        let messages = consumer
            .messages()
            .await
            .map_err(|err| ClientError::nats("following outcomes", err))?;
        Ok(messages)
    }
}

impl Client {
    /// Records a batch made over HTTP as whole: its results files are written.
    pub async fn batch_finalize(
        &self,
        id: &BatchId,
        output_file_id: Option<String>,
        error_file_id: Option<String>,
    ) -> Result<BatchRecord, BatchError> {
        let tally = self.count_outcomes(id).await?;
        self.update_record(id, |record| {
            if let Some(http) = record.http.as_mut() {
                http.output_file_id = output_file_id.clone();
                http.error_file_id = error_file_id.clone();
                http.finalized_at.get_or_insert_with(Timestamp::now);
            }
            settle(record, &tally);
            true
        })
        .await
    }
}
