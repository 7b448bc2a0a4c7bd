//! A decoded job being processed: what every step after decoding reads.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use llmq_runtime::limits::Scope;
use llmq_runtime::tenants::TenantPolicy;
use llmq_schemas::{Clamped, Job, LimitSpec, Tenant, Tier, Timestamp};
use tokio::time::Instant;

use super::decode::Ready;
use crate::config::{LimitsConfig, WorkerConfig};

#[derive(Debug)]
pub struct JobRun {
    pub job: Job,
    pub tenant: Tenant,
    pub tier: Tier,
    pub picked_at: Instant,
    pub started_at: Timestamp,
    /// When the producer submitted it (or, without `submitted_at`, when it was stored).
    pub submitted: Option<Timestamp>,
    pub queued: Option<Duration>,
    /// Which delivery of the message this is (1 = first).
    pub delivery: u32,
    /// This processing's id: its usage event's, its events', its outcome's.
    pub processing: uuid::Uuid,
    /// The tenant's registry labels, for the outcome and the usage event.
    pub labels: BTreeMap<String, String>,
    /// Set when the tenant's ceiling lowered the job's completion-token cap.
    pub clamped: Option<Clamped>,
    /// The tenant's registry entry, when the registry is enforced and has it.
    pub tenant_policy: Option<Arc<TenantPolicy>>,
}

impl JobRun {
    /// A run of `ready`, picked up at `picked_at`.
    pub fn new(ready: Ready, picked_at: Instant, started_at: Timestamp) -> Self {
        let submitted = ready.job.submitted_at.or(ready.published);
        JobRun {
            tenant: ready.tenant,
            tier: ready.tier,
            picked_at,
            started_at,
            submitted,
            queued: submitted.map(|at| at.elapsed()),
            delivery: ready.delivery,
            processing: uuid::Uuid::now_v7(),
            labels: BTreeMap::new(),
            clamped: None,
            tenant_policy: None,
            job: ready.job,
        }
    }

    /// How long the job may wait for a fleet limit: interactive jobs a bounded time (the
    /// tenant's `max_wait`, else the worker's), batch jobs up to their deadline (`None`).
    pub fn limit_wait(&self, limits: &LimitsConfig) -> Option<Duration> {
        match self.tier {
            Tier::Batch => None,
            Tier::Interactive => Some(
                self.tenant_policy
                    .as_ref()
                    .and_then(|policy| policy.entry.max_wait)
                    .unwrap_or(limits.interactive_max_wait),
            ),
        }
    }

    /// The tenant's fleet-wide limits that apply to this job.
    pub fn tenant_limits(&self) -> Vec<(Scope, LimitSpec)> {
        let Some(policy) = &self.tenant_policy else {
            return Vec::new();
        };
        let entry = &policy.entry;
        let mut limits = vec![(Scope::tenant(&self.tenant), entry.limits)];
        if let Some(spec) = entry.model_limits.get(&self.job.model) {
            let scope = Scope::TenantModel {
                tenant: self.tenant.as_str().to_owned(),
                model: self.job.model.clone(),
            };
            limits.push((scope, *spec));
        }
        limits.retain(|(_, spec)| !spec.is_empty());
        limits
    }

    /// The job's own deadline, or its tier's default counted from submission.
    pub fn deadline(&self, worker: &WorkerConfig) -> Timestamp {
        self.job.deadline.unwrap_or_else(|| {
            let base = self.submitted.unwrap_or(self.started_at);
            base.plus(match self.tier {
                Tier::Interactive => worker.interactive_deadline,
                Tier::Batch => worker.batch_deadline,
            })
        })
    }
}
