//! Publishing a batch's lines, from its record's checkpoint on.
//!
//! Lines are published many at a time, in file order; the record's `published` moves to
//! the end of the acknowledged prefix every [`CHECKPOINT_EVERY`] lines. A rerun starts
//! there: the lines after it may have been published by the run that died, so each of
//! those is first looked up (a stored outcome means it ran: skipped), then published
//! under the same `Nats-Msg-Id`, which JetStream drops as a copy within its duplicate
//! window. A copy queued after the window, of a line whose first copy has not ended yet,
//! is the one case where a line can run twice (at most the lines of one checkpoint).
//! A line refused because the tenant's queue is full (`jetstream.jobs_max_per_subject`)
//! waits for the workers to make room and is published again: a batch larger than the
//! queue takes longer, it does not fail.

use std::collections::HashSet;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::Duration;

use futures::{StreamExt, stream};
use llmq_runtime::backoff::Backoff;
use llmq_schemas::{
    BatchCounts, BatchId, BatchLine, BatchRecord, BatchStatus, Job, PROTOCOL_VERSION, Timestamp,
};
use tokio::sync::mpsc;

use super::error::BatchError;
use super::input::{self, InputLine, ReadError};
use super::plan::{Plan, hex};
use crate::Client;
use crate::error::SubmitError;

/// Lines between two checkpoints in the record.
pub(crate) const CHECKPOINT_EVERY: u64 = 1024;
/// Publishes awaiting their acknowledgement at once.
const IN_FLIGHT: usize = 256;
/// How long a line refused for a full queue waits before it is published again: 50 ms
/// doubling to 1 s.
const QUEUE_FULL_MAX: Duration = Duration::from_secs(1);
const QUEUE_FULL_BACKOFF: Backoff = Backoff::doubling(Duration::from_millis(50), QUEUE_FULL_MAX);
/// Lines read ahead of the publishes.
const READ_AHEAD: usize = 1024;
/// Lines sent from the reader thread at once.
const CHUNK: usize = 128;

/// Where a submit is.
#[derive(Debug, Clone, Copy)]
pub struct SubmitProgress {
    pub total: u64,
    /// Lines published (a rerun counts those published before it too).
    pub published: u64,
    /// Lines skipped because their outcome was already stored.
    pub already_done: u64,
}

impl Client {
    /// Creates the batch's record (or finds it, for a rerun) and publishes every line not
    /// yet published; returns the record once every line is.
    pub async fn batch_submit(
        &self,
        plan: &Plan,
        mut progress: impl FnMut(SubmitProgress),
    ) -> Result<BatchRecord, BatchError> {
        let (record, created) = self.open_batch(plan).await?;
        if record.cancelled_at.is_some() || record.submit_done {
            return Ok(record);
        }
        let start = record.published;
        // A batch this run created has no outcome stored: nothing to look up.
        let check_from = if created { u64::MAX } else { start };
        let mut lines = read_lines(plan, start);
        let mut state = SubmitProgress {
            total: plan.requests,
            published: start,
            already_done: 0,
        };
        progress(state);
        // Set when a checkpoint finds the batch cancelled: no more lines are read, and
        // those in flight are waited for, so that `published` counts exactly the lines
        // that have a job (the rest are counted cancelled, never run).
        let cancelled = AtomicBool::new(false);
        let mut publishes = stream::poll_fn(|cx| match cancelled.load(Ordering::Relaxed) {
            true => Poll::Ready(None),
            false => lines.poll_next(cx),
        })
        .map(|line| self.publish_line(&record, line, check_from))
        .buffered(IN_FLIGHT);
        while let Some(published) = publishes.next().await {
            state.already_done += u64::from(!published?);
            state.published += 1;
            if state.published.is_multiple_of(CHECKPOINT_EVERY)
                && !cancelled.load(Ordering::Relaxed)
                && self.checkpoint(&record.id, state.published).await?
            {
                cancelled.store(true, Ordering::Relaxed);
            }
            progress(state);
        }
        if cancelled.load(Ordering::Relaxed) {
            return self.stop_submit(&record.id, state.published).await;
        }
        self.finish_submit(&record.id, plan, state.published).await
    }

    /// A cancelled batch's submit ends: exactly `published` lines have a job.
    async fn stop_submit(&self, id: &BatchId, published: u64) -> Result<BatchRecord, BatchError> {
        self.update_record(id, |record| {
            record.published = record.published.max(published);
            record.submit_done = true;
            true
        })
        .await
    }

    /// Publishes one line; false when its outcome was already stored (a rerun's). Lines
    /// from `check_from` (the checkpoint a rerun starts at) to the most an earlier run
    /// may have published past it are looked up first.
    async fn publish_line(
        &self,
        record: &BatchRecord,
        line: Result<(u64, InputLine), BatchError>,
        check_from: u64,
    ) -> Result<bool, BatchError> {
        let (index, line) = line?;
        let mut job = line_job(record, index, line);
        let uncertain = (check_from
            ..check_from.saturating_add(CHECKPOINT_EVERY + IN_FLIGHT as u64))
            .contains(&index);
        if uncertain && self.has_outcome(&record.id, job.id).await? {
            return Ok(false);
        }
        let key = job.id.to_string();
        let msg_id = llmq_runtime::keyed_msg_id(record.msg_key.as_bytes(), &key);
        let mut queue_full = QUEUE_FULL_BACKOFF.delays();
        loop {
            match self.submit_batch_line(&mut job, &msg_id).await {
                Ok(_) => return Ok(true),
                // A batch larger than the tenant's queue waits for the workers to make
                // room (`jetstream.jobs_max_per_subject`); it never fails for it.
                Err(SubmitError::TenantQueueFull { .. }) => {
                    let delay = queue_full.next().unwrap_or(QUEUE_FULL_MAX);
                    tokio::time::sleep(delay).await;
                }
                Err(err) => return Err(err.into()),
            }
        }
    }

    async fn has_outcome(
        &self,
        batch: &BatchId,
        job: llmq_schemas::JobId,
    ) -> Result<bool, BatchError> {
        let subject = self.subjects().outcome(self.tenant(), job, Some(batch));
        Ok(self.stored_message(&subject).await?.is_some())
    }

    /// Moves the checkpoint; true if the batch was cancelled meanwhile (stop publishing).
    async fn checkpoint(&self, id: &BatchId, published: u64) -> Result<bool, BatchError> {
        let record = self
            .update_record(id, |record| {
                record.published = record.published.max(published);
                true
            })
            .await?;
        Ok(record.cancelled_at.is_some())
    }

    async fn finish_submit(
        &self,
        id: &BatchId,
        plan: &Plan,
        published: u64,
    ) -> Result<BatchRecord, BatchError> {
        if published != plan.requests {
            return Err(BatchError::InputChanged(plan.path.display().to_string()));
        }
        self.update_record(id, |record| {
            record.published = published;
            record.submit_done = true;
            true
        })
        .await
    }

    async fn batch_record_or_missing(&self, id: &BatchId) -> Result<BatchRecord, BatchError> {
        self.batch_record(id)
            .await?
            .ok_or_else(|| BatchError::NotFound(id.clone()))
    }

    /// The batch's record: the one a previous run left (false), or a new one (true).
    async fn open_batch(&self, plan: &Plan) -> Result<(BatchRecord, bool), BatchError> {
        if let Some(found) = self.read_record(&plan.id).await? {
            if found.record.status != BatchStatus::Validating {
                return Ok((found.record, false));
            }
            // Made over HTTP before its input was read: nothing of it was published.
            let record = self.update_record(&plan.id, |record| validated(record, plan));
            return Ok((record.await?, found.record.published == 0));
        }
        let record = new_record(self, plan);
        match self.create_record(&record).await? {
            Some(created) => Ok((created.record, true)),
            None => Ok((self.batch_record_or_missing(&plan.id).await?, false)),
        }
    }
}

/// A record made before its input was read (over HTTP), once the input is checked.
fn validated(record: &mut BatchRecord, plan: &Plan) -> bool {
    if record.status != BatchStatus::Validating {
        return false;
    }
    record.status = BatchStatus::InProgress;
    record.input_sha256 = plan.sha256.clone();
    record.counts = BatchCounts {
        total: plan.requests,
        unsubmitted: plan.requests,
        ..BatchCounts::default()
    };
    record.skip_invalid = plan.options.skip_invalid;
    record.skipped_models = plan.skipped_models.clone();
    if let Some(http) = record.http.as_mut() {
        http.in_progress_at = Some(Timestamp::now());
    }
    true
}

impl Client {
    /// A record for a batch made over HTTP, before its input file is read: `validating`,
    /// no lines yet. Whoever runs it ([`batch_plan`](Self::batch_plan) with this id, then
    /// [`batch_submit`](Self::batch_submit)) fills it in.
    pub async fn batch_create_http(
        &self,
        http: llmq_schemas::HttpBatch,
        completion_window: std::time::Duration,
        metadata: Option<serde_json::Map<String, serde_json::Value>>,
    ) -> Result<BatchRecord, BatchError> {
        let random = uuid::Uuid::new_v4();
        let id = BatchId::from_digest(std::array::from_fn(|i| random.as_bytes()[i]));
        let now = Timestamp::now();
        let record = BatchRecord {
            v: PROTOCOL_VERSION,
            id: id.clone(),
            tenant: self.tenant().to_string(),
            status: BatchStatus::Validating,
            input_file: http.input_file_id.clone(),
            input_sha256: String::new(),
            model: None,
            tier: llmq_schemas::Tier::Batch,
            expires_at: now.plus(completion_window),
            published: 0,
            submit_done: false,
            counts: BatchCounts::default(),
            counted_at: None,
            created_at: now,
            cancelled_at: None,
            finished_at: None,
            metadata,
            http: Some(http),
            errors: Vec::new(),
            skip_invalid: false,
            skipped_models: Vec::new(),
            msg_key: msg_key(),
        };
        match self.create_record(&record).await? {
            Some(created) => Ok(created.record),
            None => Err(BatchError::BadRecord {
                id,
                message: "a batch with this id exists".into(),
            }),
        }
    }

    /// Ends a batch whose input was refused: `failed`, with the problems, nothing run.
    pub async fn batch_fail(
        &self,
        id: &BatchId,
        problems: Vec<llmq_schemas::BatchProblem>,
    ) -> Result<BatchRecord, BatchError> {
        self.update_record(id, |record| {
            record.status = BatchStatus::Failed;
            record.errors = problems.clone();
            record.submit_done = true;
            record.finished_at.get_or_insert_with(Timestamp::now);
            if let Some(http) = record.http.as_mut() {
                http.finalized_at.get_or_insert_with(Timestamp::now);
            }
            true
        })
        .await
    }
}

fn msg_key() -> String {
    hex(uuid::Uuid::new_v4().as_bytes()) + &hex(uuid::Uuid::new_v4().as_bytes())
}

fn new_record(client: &Client, plan: &Plan) -> BatchRecord {
    let now = Timestamp::now();
    BatchRecord {
        v: PROTOCOL_VERSION,
        id: plan.id.clone(),
        tenant: client.tenant().to_string(),
        status: BatchStatus::InProgress,
        input_file: plan.path.display().to_string(),
        input_sha256: plan.sha256.clone(),
        model: plan.options.model.clone(),
        tier: plan.options.tier,
        expires_at: now.plus(plan.options.completion_window),
        published: 0,
        submit_done: false,
        counts: BatchCounts {
            total: plan.requests,
            unsubmitted: plan.requests,
            ..BatchCounts::default()
        },
        counted_at: None,
        created_at: now,
        cancelled_at: None,
        finished_at: None,
        metadata: plan.options.metadata.clone(),
        skip_invalid: plan.options.skip_invalid,
        skipped_models: plan.skipped_models.clone(),
        http: None,
        errors: Vec::new(),
        msg_key: msg_key(),
    }
}

fn line_job(record: &BatchRecord, index: u64, line: InputLine) -> Job {
    let model = record.model.clone().or(line.model).unwrap_or_default();
    let mut job = Job::new(model, line.body);
    job.id = record.id.line_job_id(index);
    job.tier = record.tier;
    job.deadline = Some(record.expires_at);
    job.custom_id = Some(line.custom_id);
    job.user = record.http.as_ref().and_then(|http| http.user.clone());
    job.batch = Some(BatchLine {
        id: record.id.clone(),
        line: index,
    });
    job
}

/// The plan's runnable lines from `start` on, numbered 0.. among runnable lines, read on
/// a blocking thread.
fn read_lines(plan: &Plan, start: u64) -> LineChunks {
    let (tx, rx) = mpsc::channel(READ_AHEAD / CHUNK);
    let (path, checks, sha256) = (plan.path.clone(), plan.checks, plan.sha256.clone());
    let mut runnable = Runnable::new(
        plan.options.skip_invalid,
        plan.options.model.clone(),
        &plan.skipped_models,
    );
    tokio::task::spawn_blocking(move || {
        let name = path.display().to_string();
        let reader = match input::open(&path) {
            Ok(reader) => reader,
            Err(source) => {
                let _ = tx.blocking_send(vec![Err(BatchError::Io {
                    what: "cannot read",
                    path: name,
                    source,
                })]);
                return;
            }
        };
        let mut requests = input::requests(reader, &checks);
        let mut chunk = Vec::with_capacity(CHUNK);
        for read in requests.by_ref() {
            let item = match runnable.next(read) {
                Some(Ok(line)) => Ok(line),
                Some(Err(())) => Err(BatchError::InputChanged(name.clone())),
                None => continue,
            };
            let stop = item.is_err();
            if stop || item.as_ref().is_ok_and(|(i, _)| *i >= start) {
                chunk.push(item);
            }
            if (stop || chunk.len() == CHUNK)
                && tx.blocking_send(std::mem::take(&mut chunk)).is_err()
            {
                return;
            }
            if stop {
                return;
            }
        }
        if hex(&requests.sha256()) != sha256 {
            chunk.push(Err(BatchError::InputChanged(name)));
        }
        let _ = tx.blocking_send(chunk);
    });
    LineChunks {
        rx,
        pending: std::collections::VecDeque::new(),
    }
}

/// Lines come from the reader thread [`CHUNK`] at a time: one wake-up of each side per
/// chunk rather than per line (waking threads was a seventh of the CLI's time).
struct LineChunks {
    rx: mpsc::Receiver<Vec<Line>>,
    pending: std::collections::VecDeque<Line>,
}

type Line = Result<(u64, InputLine), BatchError>;

impl LineChunks {
    fn poll_next(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Option<Line>> {
        loop {
            if let Some(line) = self.pending.pop_front() {
                return Poll::Ready(Some(line));
            }
            match std::task::ready!(self.rx.poll_recv(cx)) {
                Some(chunk) => self.pending.extend(chunk),
                None => return Poll::Ready(None),
            }
        }
    }
}

/// Numbers the lines that run: with `skip`, bad lines and later duplicates are left out
/// (as the check listed them); without, any bad line means the file changed.
pub(crate) struct Runnable {
    skip: bool,
    model: Option<String>,
    bad_models: HashSet<String>,
    next_index: u64,
    seen: HashSet<u128>,
}

impl Runnable {
    pub(crate) fn new(skip: bool, model: Option<String>, bad_models: &[String]) -> Self {
        let bad_models = bad_models.iter().cloned().collect();
        Self {
            skip,
            model,
            bad_models,
            next_index: 0,
            seen: HashSet::new(),
        }
    }

    pub(crate) fn next(
        &mut self,
        read: Result<InputLine, ReadError>,
    ) -> Option<Result<(u64, InputLine), ()>> {
        let line = match read {
            Ok(line) => line,
            Err(ReadError::Changed(_)) if self.skip => return None,
            Err(_) => return Some(Err(())),
        };
        if self.skip && !self.runs(&line) {
            return None;
        }
        let index = self.next_index;
        self.next_index += 1;
        Some(Ok((index, line)))
    }
}

impl Runnable {
    fn runs(&mut self, line: &InputLine) -> bool {
        let model = self.model.as_ref().or(line.model.as_ref());
        let bad_model = model.is_some_and(|model| self.bad_models.contains(model));
        !bad_model && self.seen.insert(id_hash(&line.custom_id))
    }
}

/// How many lines of `path` run, and the custom ids of those in `wanted`; `None` if the
/// file cannot be read or is not the batch's input (`sha256`).
pub(crate) fn custom_ids_of(
    path: &std::path::Path,
    (checks, mut runnable): (super::input::Checks, Runnable),
    sha256: &str,
    wanted: std::ops::Range<u64>,
) -> Option<(u64, std::collections::HashMap<u64, String>)> {
    let mut requests = input::requests(input::open(path).ok()?, &checks);
    let mut ids = std::collections::HashMap::new();
    let mut count = 0;
    for read in requests.by_ref() {
        if let Some(Ok((index, line))) = runnable.next(read) {
            count = index + 1;
            if wanted.contains(&index) {
                ids.insert(index, line.custom_id);
            }
        }
    }
    (hex(&requests.sha256()) == sha256).then_some((count, ids))
}

/// 128 bits of two fixed-key hashes: a collision is not a practical worry.
fn id_hash(id: &str) -> u128 {
    let hash = |seed: u64| {
        let mut hasher =
            std::hash::BuildHasherDefault::<std::hash::DefaultHasher>::default().build_hasher();
        seed.hash(&mut hasher);
        id.hash(&mut hasher);
        hasher.finish()
    };
    (u128::from(hash(1)) << 64) | u128::from(hash(2))
}
