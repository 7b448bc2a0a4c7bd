//! One (model, tier) queue as the broker has it, for the worker's gauges and the
//! operator's `status`.
//!
//! The interactive tier has one consumer per model; the batch tier one per tenant with
//! jobs (workers take turns between them), so its state is the sum over the tenants that
//! have jobs in the stream. Those are found with one stream-info request filtered on the
//! model's batch subjects; a tenant without jobs there has none queued or in flight, so
//! its consumer (if the server still has it) adds nothing.

use async_nats::jetstream::consumer;
use async_nats::jetstream::stream::Stream;
use futures::StreamExt;
use llmq_schemas::{ModelName, Subjects, Tenant, Tier, Timestamp};

/// A queue's state, summed over its consumers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueState {
    /// The consumers read (the batch tier: one per tenant with jobs).
    pub consumers: Vec<String>,
    /// Jobs stored and not yet delivered.
    pub queued: u64,
    /// Delivered, not yet acknowledged.
    pub in_flight: u64,
    pub redelivered: u64,
    /// Pull requests waiting.
    pub waiting_pulls: u64,
    /// Age of the oldest job not yet acknowledged, in ms.
    pub oldest_ms: Option<u64>,
}

impl QueueState {
    fn add(&mut self, name: String, info: &consumer::Info, oldest_ms: Option<u64>) {
        self.consumers.push(name);
        self.queued += info.num_pending;
        self.in_flight += info.num_ack_pending as u64;
        self.redelivered += info.num_redelivered as u64;
        self.waiting_pulls += info.num_waiting as u64;
        self.oldest_ms = self.oldest_ms.max(oldest_ms);
    }
}

/// The queue of `model`'s `tier`; `None` when the interactive tier's consumer does not
/// exist (no worker made it yet).
pub async fn read<I>(
    jobs: &Stream<I>,
    subjects: &Subjects,
    model: &ModelName,
    tier: Tier,
) -> Result<Option<QueueState>, String> {
    match tier {
        Tier::Interactive => {
            let name = Subjects::consumer_name(model, tier);
            let filter = subjects.jobs_filter(model, tier);
            let Some((info, oldest_ms)) = consumer_info(jobs, &name, filter).await else {
                return Ok(None);
            };
            let mut state = QueueState::default();
            state.add(name, &info, oldest_ms);
            Ok(Some(state))
        }
        Tier::Batch => batch(jobs, subjects, model).await.map(Some),
    }
}

async fn batch<I>(
    jobs: &Stream<I>,
    subjects: &Subjects,
    model: &ModelName,
) -> Result<QueueState, String> {
    let mut state = QueueState::default();
    for tenant in tenants_with_jobs(jobs, subjects, model).await? {
        let name = Subjects::tenant_consumer_name(model, Tier::Batch, &tenant);
        let filter = subjects.tenant_jobs_filter(model, Tier::Batch, &tenant);
        if let Some((info, oldest_ms)) = consumer_info(jobs, &name, filter).await {
            state.add(name, &info, oldest_ms);
        }
    }
    Ok(state)
}

/// The tenants with batch jobs of `model` in the stream (queued or in flight).
pub async fn tenants_with_jobs<I>(
    jobs: &Stream<I>,
    subjects: &Subjects,
    model: &ModelName,
) -> Result<Vec<Tenant>, String> {
    let filter = subjects.jobs_filter(model, Tier::Batch);
    let mut counts = jobs
        .info_with_subjects(filter)
        .await
        .map_err(|err| err.to_string())?;
    let mut tenants = Vec::new();
    while let Some(entry) = counts.next().await {
        let (subject, count) = entry.map_err(|err| err.to_string())?;
        if count > 0
            && let Some(tenant) = subjects.tenant_of_job_subject(&subject)
        {
            tenants.push(tenant);
        }
    }
    Ok(tenants)
}

/// One consumer's info and the age of the first job past its ack floor.
async fn consumer_info<I>(
    jobs: &Stream<I>,
    name: &str,
    filter: String,
) -> Option<(consumer::Info, Option<u64>)> {
    let info = jobs.consumer_info(name).await.ok()?;
    let floor = info.ack_floor.stream_sequence;
    let oldest_ms = if info.num_pending + info.num_ack_pending as u64 > 0 {
        oldest(jobs, filter, floor).await
    } else {
        None
    };
    Some((info, oldest_ms))
}

async fn oldest<I>(jobs: &Stream<I>, filter: String, ack_floor: u64) -> Option<u64> {
    let message = jobs
        .direct_get_next_for_subject(filter, Some(ack_floor + 1))
        .await
        .ok()?;
    let stored = message.time.unix_timestamp_nanos() / 1_000_000;
    let now = i128::from(Timestamp::now().unix_millis());
    Some(u64::try_from(now - stored).unwrap_or(0))
}
