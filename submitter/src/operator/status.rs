//! What the queue is doing, for an operator: per model and tier, what waits and for how
//! long; the live workers; the dead letters by reason; where the streams' leaders are.
//!
//! Everything is read from JetStream's own state (consumer and stream info, the catalog,
//! the dead-letter stream), so it needs the admin's permissions and nothing besides NATS.

use std::collections::BTreeMap;

use llmq_schemas::{CatalogEntry, ModelName, Subjects, Tier, Timestamp};
use serde::Serialize;

use super::Operator;
use llmq_runtime::queue_state;

use crate::catalog::is_live;
use crate::error::ClientError;

/// The whole picture at one instant.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub at: Timestamp,
    pub queues: Vec<QueueStatus>,
    pub workers: Vec<WorkerStatus>,
    pub dead_letters: BTreeMap<String, u64>,
    pub streams: Vec<StreamStatus>,
}

/// One model and tier's queue on the job stream (the batch tier's summed over its
/// consumers per tenant).
#[derive(Debug, Clone, Serialize)]
pub struct QueueStatus {
    pub model: String,
    pub tier: Tier,
    /// The consumer (the batch tier: `batch-<model>~*` and how many tenants have jobs).
    pub consumer: String,
    /// Jobs stored and not yet delivered.
    pub queued: u64,
    /// Age of the oldest job not yet acknowledged, in ms.
    pub oldest_ms: Option<u64>,
    /// Delivered, not yet acknowledged (running or waiting in a worker).
    pub in_flight: u64,
    pub redelivered: u64,
    /// Pull requests waiting (workers ready for more).
    pub waiting_pulls: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkerStatus {
    pub id: String,
    pub version: String,
    pub models: Vec<String>,
    pub uptime_s: u64,
    pub live: bool,
}

/// A stream's leader and replicas (one replica, no leader shown, on a single server).
#[derive(Debug, Clone, Serialize)]
pub struct StreamStatus {
    pub name: String,
    pub messages: u64,
    pub leader: Option<String>,
    /// Each other replica: its server, whether it is current, how far behind.
    pub replicas: Vec<(String, bool, u64)>,
}

impl Operator {
    /// Reads the status (admin permissions).
    pub async fn status(&self) -> Result<Status, ClientError> {
        let catalog = self.session.catalog().await?;
        let mut queues = Vec::new();
        for (model, tier) in served(&catalog) {
            if let Some(queue) = self.queue_status(&model, tier).await? {
                queues.push(queue);
            }
        }
        Ok(Status {
            at: Timestamp::now(),
            queues,
            workers: catalog.iter().map(worker_status).collect(),
            dead_letters: self.dead_letters_by_reason().await?,
            streams: self.stream_statuses().await?,
        })
    }

    async fn queue_status(
        &self,
        model: &str,
        tier: Tier,
    ) -> Result<Option<QueueStatus>, ClientError> {
        let subjects = self.session.subjects();
        let Ok(name) = ModelName::parse(model) else {
            return Ok(None);
        };
        let stream = self
            .session
            .js()
            .get_stream_no_info(subjects.jobs_stream())
            .await
            .map_err(|err| ClientError::nats("opening the job stream", err))?;
        let state = queue_state::read(&stream, subjects, &name, tier)
            .await
            .map_err(|message| ClientError::nats("reading the queue", message))?;
        let Some(state) = state else {
            return Ok(None); // no worker made it yet
        };
        Ok(Some(QueueStatus {
            model: model.to_owned(),
            tier,
            consumer: consumers_label(&name, tier, &state.consumers),
            queued: state.queued,
            oldest_ms: state.oldest_ms,
            in_flight: state.in_flight,
            redelivered: state.redelivered,
            waiting_pulls: state.waiting_pulls,
        }))
    }

    async fn dead_letters_by_reason(&self) -> Result<BTreeMap<String, u64>, ClientError> {
        let mut by_reason = BTreeMap::new();
        for entry in self.dlq_list().await? {
            let reason = entry.reason.unwrap_or_else(|| "(none)".into());
            *by_reason.entry(reason).or_default() += 1;
        }
        Ok(by_reason)
    }

    async fn stream_statuses(&self) -> Result<Vec<StreamStatus>, ClientError> {
        let subjects = self.session.subjects();
        let names = [
            subjects.jobs_stream(),
            subjects.results_stream(),
            subjects.usage_stream(),
            subjects.dlq_stream(),
        ];
        let mut statuses = Vec::new();
        for name in names {
            let Ok(mut stream) = self.session.js().get_stream(&name).await else {
                continue;
            };
            let info = stream
                .info()
                .await
                .map_err(|err| ClientError::nats("reading stream info", err))?;
            let cluster = info.cluster.clone();
            statuses.push(StreamStatus {
                name,
                messages: info.state.messages,
                leader: cluster.as_ref().and_then(|c| c.leader.clone()),
                replicas: cluster
                    .map(|c| {
                        c.replicas
                            .into_iter()
                            .map(|r| (r.name, r.current, r.lag.unwrap_or(0)))
                            .collect()
                    })
                    .unwrap_or_default(),
            });
        }
        Ok(statuses)
    }
}

/// Every (model, tier) some catalog entry serves, sorted.
fn served(catalog: &[CatalogEntry]) -> Vec<(String, Tier)> {
    let mut served: Vec<(String, Tier)> = catalog
        .iter()
        .filter(|entry| is_live(entry))
        .flat_map(|entry| {
            entry
                .models
                .iter()
                .flat_map(|m| m.tiers.iter().map(|tier| (m.name.clone(), *tier)))
        })
        .collect();
    served.sort_by(|a, b| (&a.0, a.1.as_str()).cmp(&(&b.0, b.1.as_str())));
    served.dedup();
    served
}

fn worker_status(entry: &CatalogEntry) -> WorkerStatus {
    WorkerStatus {
        id: entry.worker_id.clone(),
        version: entry.version.clone(),
        models: entry.models.iter().map(|m| m.name.clone()).collect(),
        uptime_s: entry.started_at.elapsed().as_secs(),
        live: is_live(entry),
    }
}

/// The consumer column: the interactive tier's one name; the batch tier's names share
/// `batch-<model>~`, so the pattern and how many tenants have jobs.
fn consumers_label(model: &ModelName, tier: Tier, consumers: &[String]) -> String {
    match tier {
        Tier::Interactive => Subjects::consumer_name(model, tier),
        Tier::Batch => format!(
            "{}~* ({} tenants)",
            Subjects::consumer_name(model, tier),
            consumers.len()
        ),
    }
}
