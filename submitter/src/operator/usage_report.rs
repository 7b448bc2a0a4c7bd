//! Summing usage events into a per-(tenant, model) report.
//!
//! Usage events are the billing record: one per processing of a job, costs included. The
//! report reads them straight from the usage stream for a time window rather than from
//! outcomes, because a job processed twice (a worker crashed after calling the provider)
//! was paid for twice. Unknown prices are counted and named, never added as zero.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use async_nats::jetstream::consumer::DeliverPolicy;
use llmq_schemas::{Cost, JobId, Tenant, Timestamp, UsageEvent, UsageSource, UsageStatus};
use serde::Serialize;

use super::Operator;
use crate::error::ClientError;
use crate::read_stream::ReadRange;

/// Which usage to report.
#[derive(Debug, Clone)]
pub struct UsageQuery {
    /// Events stored at or after this instant.
    pub since: Timestamp,
    /// Events stored up to this instant; `None`: up to now.
    pub until: Option<Timestamp>,
    /// `None`: the operator's tenant ([`Operator::tenant`](crate::Operator::tenant)).
    pub tenant: Option<Tenant>,
    /// Every tenant (overrides `tenant`).
    pub all_tenants: bool,
    /// Sum per value of this registry label (`team`, `cost_centre`) instead of per
    /// (tenant, model); events without it sum under `(none)`.
    pub by_label: Option<String>,
}

impl UsageQuery {
    /// The operator's tenant, over the last `window`.
    pub fn last(window: std::time::Duration) -> Self {
        let since = Timestamp::from_unix_millis(
            Timestamp::now()
                .unix_millis()
                .saturating_sub(i64::try_from(window.as_millis()).unwrap_or(i64::MAX)),
        );
        Self {
            since,
            until: None,
            tenant: None,
            all_tenants: false,
            by_label: None,
        }
    }
}

/// Usage of one (tenant, model), or the total.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UsageRow {
    pub tenant: String,
    pub model: String,
    /// The label's value, when the report is grouped by a label (tenant and model are
    /// then `*`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Distinct jobs.
    pub jobs: u64,
    /// Processings (a job redelivered after a worker crash counts twice).
    pub events: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub expired: u64,
    pub cancelled: u64,
    /// Processings that paid for tokens and gave the job back to the queue (every
    /// deployment cooling down); another processing of the job ends it.
    pub handed_back: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_prompt_tokens: u64,
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,
    /// Sum over the events with a known price.
    pub cost_usd: f64,
    /// Events whose cost is unknown (not in `cost_usd`).
    pub unknown_price_events: u64,
    /// `provider/upstream_model` without a price, sorted.
    pub missing_prices: Vec<String>,
    /// Events whose usage was estimated rather than reported by the provider.
    pub estimated_events: u64,
}

impl UsageRow {
    /// Whether `cost_usd` leaves out events of unknown price.
    pub fn has_unknown_prices(&self) -> bool {
        self.unknown_price_events > 0
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct UsageReport {
    pub since: Timestamp,
    pub until: Timestamp,
    /// `None`: every tenant.
    pub tenant: Option<String>,
    /// Sorted by tenant, then model.
    pub rows: Vec<UsageRow>,
    /// Over every row; tenant and model are `*`.
    pub total: UsageRow,
    /// Messages in the window that were not usage events.
    pub undecodable: u64,
}

impl Operator {
    /// Reads the usage stream over the query's window and sums it per (tenant, model).
    pub async fn usage_report(&self, query: UsageQuery) -> Result<UsageReport, ClientError> {
        let subjects = self.session.subjects();
        let tenant = match (&query.tenant, query.all_tenants) {
            (_, true) => None,
            (Some(tenant), false) => Some(tenant.clone()),
            (None, false) => Some(self.session.tenant().clone()),
        };
        let until = query.until.unwrap_or_else(Timestamp::now);
        let range = ReadRange {
            filter_subject: subjects.usage_filter(tenant.as_ref()),
            deliver_policy: DeliverPolicy::ByStartTime {
                start_time: query.since.as_offset(),
            },
            until: Some(until.as_offset()),
        };
        let mut sum = Aggregator::by_label(query.by_label.clone());
        self.session.read_stream(&subjects.usage_stream(), range, |stored| {
            match serde_json::from_slice::<UsageEvent>(&stored.message.payload) {
                Ok(event) => sum.add(&event),
                Err(err) => {
                    tracing::warn!(seq = stored.sequence, error = %err, "skipping an undecodable usage event");
                    sum.undecodable += 1;
                }
            }
        })
        .await?;
        let (rows, total, undecodable) = sum.finish();
        Ok(UsageReport {
            since: query.since,
            until,
            tenant: tenant.map(|t| t.as_str().to_owned()),
            rows,
            total,
            undecodable,
        })
    }
}

/// Sums events; pure, so the arithmetic is unit-tested without a server.
#[derive(Debug, Default)]
pub(crate) struct Aggregator {
    by_label: Option<String>,
    rows: BTreeMap<(String, String), Partial>,
    all_jobs: HashSet<JobId>,
    pub(crate) undecodable: u64,
}

#[derive(Debug, Default)]
struct Partial {
    row: UsageRow,
    jobs: HashSet<JobId>,
    missing: BTreeSet<String>,
}

/// What a report's row of events without the grouping label is called.
pub const NO_LABEL: &str = "(none)";

impl Aggregator {
    pub(crate) fn by_label(by_label: Option<String>) -> Self {
        Self {
            by_label,
            ..Self::default()
        }
    }

    fn key(&self, event: &UsageEvent) -> (String, String) {
        match &self.by_label {
            None => (event.tenant.clone(), event.model.clone()),
            Some(name) => (
                event
                    .labels
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| NO_LABEL.into()),
                String::new(),
            ),
        }
    }

    pub(crate) fn add(&mut self, event: &UsageEvent) {
        self.all_jobs.insert(event.job_id);
        let key = self.key(event);
        let partial = self.rows.entry(key).or_default();
        partial.jobs.insert(event.job_id);
        add_event(&mut partial.row, &mut partial.missing, event);
    }

    pub(crate) fn finish(self) -> (Vec<UsageRow>, UsageRow, u64) {
        let mut total = UsageRow {
            tenant: "*".into(),
            model: "*".into(),
            jobs: self.all_jobs.len() as u64,
            ..UsageRow::default()
        };
        let mut all_missing = BTreeSet::new();
        let mut rows = Vec::with_capacity(self.rows.len());
        let by_label = self.by_label.is_some();
        for ((first, model), partial) in self.rows {
            let mut row = partial.row;
            if by_label {
                (row.tenant, row.model, row.label) = ("*".into(), "*".into(), Some(first));
            } else {
                (row.tenant, row.model) = (first, model);
            }
            row.jobs = partial.jobs.len() as u64;
            row.missing_prices = partial.missing.iter().cloned().collect();
            all_missing.extend(partial.missing);
            add_row(&mut total, &row);
            rows.push(row);
        }
        total.missing_prices = all_missing.into_iter().collect();
        (rows, total, self.undecodable)
    }
}

fn add_event(row: &mut UsageRow, missing: &mut BTreeSet<String>, event: &UsageEvent) {
    row.events += 1;
    match event.status {
        UsageStatus::Succeeded => row.succeeded += 1,
        UsageStatus::Failed => row.failed += 1,
        UsageStatus::Expired => row.expired += 1,
        UsageStatus::Cancelled => row.cancelled += 1,
        UsageStatus::HandedBack => row.handed_back += 1,
    }
    let usage = &event.usage;
    row.prompt_tokens += usage.prompt_tokens;
    row.completion_tokens += usage.completion_tokens;
    row.cached_prompt_tokens += usage.cached_prompt_tokens;
    row.cache_write_tokens += usage.cache_write_tokens;
    row.reasoning_tokens += usage.reasoning_tokens;
    match &event.cost {
        Cost::Priced(breakdown) => row.cost_usd += breakdown.total,
        Cost::UnknownPrice { missing: names } => {
            row.unknown_price_events += 1;
            missing.extend(names.iter().cloned());
        }
    }
    if event.usage_source == UsageSource::Estimated {
        row.estimated_events += 1;
    }
}

fn add_row(total: &mut UsageRow, row: &UsageRow) {
    total.events += row.events;
    total.succeeded += row.succeeded;
    total.failed += row.failed;
    total.expired += row.expired;
    total.cancelled += row.cancelled;
    total.handed_back += row.handed_back;
    total.prompt_tokens += row.prompt_tokens;
    total.completion_tokens += row.completion_tokens;
    total.cached_prompt_tokens += row.cached_prompt_tokens;
    total.cache_write_tokens += row.cache_write_tokens;
    total.reasoning_tokens += row.reasoning_tokens;
    total.cost_usd += row.cost_usd;
    total.unknown_price_events += row.unknown_price_events;
    total.estimated_events += row.estimated_events;
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmq_schemas::{CostBreakdown, OutcomeStatus, Tier, Timings, Usage};
    use uuid::Uuid;

    fn event(
        tenant: &str,
        model: &str,
        job: JobId,
        status: impl Into<UsageStatus>,
        usage: Usage,
        cost: Cost,
    ) -> UsageEvent {
        UsageEvent {
            user: None,
            v: 1,
            id: Uuid::now_v7(),
            job_id: job,
            tenant: tenant.into(),
            model: model.into(),
            tier: Tier::Interactive,
            provider: Some("p".into()),
            upstream_model: Some("u".into()),
            status: status.into(),
            usage,
            usage_source: UsageSource::Reported,
            cost,
            attempts: vec![],
            timings: Timings {
                queued_ms: None,
                ttft_ms: None,
                total_ms: 1,
                started_at: Timestamp::now(),
                finished_at: Timestamp::now(),
            },
            worker_id: "w".into(),
            delivery: 1,
            custom_id: None,
            at: Timestamp::now(),
            labels: Default::default(),
            over_budget: Vec::new(),
        }
    }

    fn priced(total: f64) -> Cost {
        Cost::Priced(CostBreakdown {
            total,
            ..CostBreakdown::default()
        })
    }

    #[test]
    fn groups_by_a_label_across_tenants_and_models() {
        let mut sum = Aggregator::by_label(Some("team".into()));
        let labelled = |tenant: &str, model: &str, team: Option<&str>, cost: f64| {
            let mut e = event(
                tenant,
                model,
                Uuid::now_v7(),
                OutcomeStatus::Succeeded,
                Usage::new(10, 5),
                priced(cost),
            );
            if let Some(team) = team {
                e.labels.insert("team".into(), team.into());
            }
            e
        };
        sum.add(&labelled("a", "chat", Some("search"), 1.0));
        sum.add(&labelled("b", "other", Some("search"), 2.0));
        sum.add(&labelled("c", "chat", Some("ads"), 4.0));
        sum.add(&labelled("d", "chat", None, 8.0));
        let (rows, total, _) = sum.finish();
        let by: Vec<(Option<&str>, f64, u64)> = rows
            .iter()
            .map(|r| (r.label.as_deref(), r.cost_usd, r.jobs))
            .collect();
        assert_eq!(
            by,
            vec![
                (Some(NO_LABEL), 8.0, 1),
                (Some("ads"), 4.0, 1),
                (Some("search"), 3.0, 2)
            ]
        );
        assert!(rows.iter().all(|r| r.tenant == "*" && r.model == "*"));
        assert_eq!(total.cost_usd, 15.0);
    }

    #[test]
    fn sums_per_tenant_and_model_with_unknown_prices_kept_apart() {
        let job_a = Uuid::now_v7();
        let job_b = Uuid::now_v7();
        let mut sum = Aggregator::default();
        let mut cached = Usage::new(100, 10);
        cached.cached_prompt_tokens = 40;
        cached.reasoning_tokens = 3;
        sum.add(&event(
            "t1",
            "chat",
            job_a,
            OutcomeStatus::Succeeded,
            cached,
            priced(0.5),
        ));
        // The same job processed again (redelivery): two events, one job.
        sum.add(&event(
            "t1",
            "chat",
            job_a,
            OutcomeStatus::Failed,
            Usage::new(7, 0),
            priced(0.25),
        ));
        let mut unknown = event(
            "t1",
            "chat",
            job_b,
            OutcomeStatus::Succeeded,
            Usage::new(5, 5),
            Cost::UnknownPrice {
                missing: vec!["p/new-model".into()],
            },
        );
        unknown.usage_source = UsageSource::Estimated;
        sum.add(&unknown);
        // A processing of job b that paid for a cut stream, then gave the job back.
        sum.add(&event(
            "t1",
            "chat",
            job_b,
            UsageStatus::HandedBack,
            Usage::new(3, 2),
            priced(0.125),
        ));
        sum.add(&event(
            "t2",
            "chat",
            Uuid::now_v7(),
            OutcomeStatus::Expired,
            Usage::default(),
            priced(0.0),
        ));

        let (rows, total, undecodable) = sum.finish();
        assert_eq!(undecodable, 0);
        assert_eq!(rows.len(), 2);
        let t1 = &rows[0];
        assert_eq!((t1.tenant.as_str(), t1.model.as_str()), ("t1", "chat"));
        assert_eq!((t1.jobs, t1.events), (2, 4));
        assert_eq!((t1.succeeded, t1.failed, t1.handed_back), (2, 1, 1));
        assert_eq!(t1.prompt_tokens, 115);
        assert_eq!(t1.completion_tokens, 17);
        assert_eq!(t1.cached_prompt_tokens, 40);
        assert_eq!(t1.reasoning_tokens, 3);
        assert!((t1.cost_usd - 0.875).abs() < 1e-12);
        assert_eq!(t1.unknown_price_events, 1);
        assert_eq!(t1.missing_prices, vec!["p/new-model"]);
        assert_eq!(t1.estimated_events, 1);
        assert_eq!(rows[1].expired, 1);
        assert!(!rows[1].has_unknown_prices());

        assert_eq!((total.jobs, total.events), (3, 5));
        assert_eq!(total.handed_back, 1);
        assert_eq!(total.prompt_tokens, 115);
        assert!(total.has_unknown_prices());
        assert_eq!(total.missing_prices, vec!["p/new-model"]);
    }
}
