//! One processing of a job: the decoded job and what every step after decoding reads
//! about it (who sent it, when, which delivery, the tenant's policy), with the id its
//! events, usage event and outcome carry.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use llmq_runtime::limits::Scope;
use llmq_runtime::tenants::TenantPolicy;
use llmq_schemas::{ChatRequest, Clamped, Job, LimitSpec, Tenant, Tier, Timestamp};
use tokio::time::Instant;

use super::decode::Ready;
use crate::config::{LimitsConfig, WorkerConfig};

#[derive(Debug)]
pub struct Processing {
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
    pub id: uuid::Uuid,
    /// The tenant's registry labels, for the outcome and the usage event.
    pub labels: BTreeMap<String, String>,
    /// Set when the tenant's ceiling lowered the job's completion-token cap.
    pub clamped: Option<Clamped>,
    /// The tenant's registry entry, when the registry is enforced and has it.
    pub tenant_policy: Option<Arc<TenantPolicy>>,
}

impl Processing {
    /// A processing of `ready`, picked up at `picked_at`.
    pub fn new(ready: Ready, picked_at: Instant, started_at: Timestamp) -> Self {
        let submitted = ready.job.submitted_at.or(ready.published);
        Processing {
            tenant: ready.tenant,
            tier: ready.tier,
            picked_at,
            started_at,
            submitted,
            queued: submitted.map(|at| at.elapsed()),
            delivery: ready.delivery,
            id: uuid::Uuid::now_v7(),
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

    /// What the attempts need of the job, its deadline at `deadline_at`.
    pub fn spec(&self, deadline_at: Timestamp, limits: &LimitsConfig) -> JobSpec<'_> {
        JobSpec {
            request: &self.job.request,
            stream: self.job.stream,
            picked_at: self.picked_at,
            deadline: Instant::now() + deadline_at.remaining(),
            limit_wait: self.limit_wait(limits),
        }
    }
}

/// What the attempts (and each call's admission) need to know about the job.
#[derive(Debug, Clone, Copy)]
pub struct JobSpec<'a> {
    pub request: &'a ChatRequest,
    pub stream: bool,
    pub picked_at: Instant,
    pub deadline: Instant,
    /// How long an attempt may wait for a fleet limit, and an interactive job for a
    /// cooling or paused deployment (`None`: a batch job, which waits as it always did).
    pub limit_wait: Option<Duration>,
}

impl JobSpec<'_> {
    /// Until when an attempt waits for a limit: its wait, but never past the deadline.
    pub fn limit_until(&self) -> Instant {
        match self.limit_wait {
            Some(wait) => (Instant::now() + wait).min(self.deadline),
            None => self.deadline,
        }
    }
}
