//! Spend against budget, per tenant and period: what `submitter usage` shows under its
//! table.
//!
//! Read from where the workers keep it (`llmq_runtime::budget`): the spend counters and
//! the live reservations of jobs in flight, so the figures are the fleet's own, not a
//! sum this command makes.

use llmq_runtime::budget::{Periods, nano_usd, read_spend, usd};
use llmq_schemas::{BudgetPeriod, Enforce, Tenant, Timestamp};
use serde::Serialize;

use crate::client::Client;
use crate::error::ClientError;

/// One tenant's budget for one period, and where it stands.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetStatus {
    pub tenant: String,
    pub period: BudgetPeriod,
    /// `d20261201` or `m202612` (UTC).
    pub key: String,
    pub enforce: Enforce,
    pub budget_usd: f64,
    pub spent_usd: f64,
    /// Estimated maximum cost of the tenant's jobs in flight (hard budgets).
    pub reserved_usd: f64,
    pub remaining_usd: f64,
    pub over: bool,
}

impl Client {
    /// Every budget of this client's tenant (or of every tenant), with this day's and
    /// month's spend and what jobs in flight have reserved. Tenants without a budget are
    /// left out.
    pub async fn budget_status(&self, all_tenants: bool) -> Result<Vec<BudgetStatus>, ClientError> {
        let entries = self.tenants().await?;
        let subjects = &self.inner.subjects;
        let js = &self.inner.js;
        let spend_name =
            llmq_runtime::budget::spend_stream_config(subjects, 1, Default::default()).name;
        let limits_name = llmq_runtime::limits::bucket_config(subjects, 1).bucket;
        let mut rows = Vec::new();
        for (id, entry) in entries {
            let Ok(entry) = entry else { continue };
            if entry.budget.is_empty() || (!all_tenants && id != self.inner.tenant.as_str()) {
                continue;
            }
            let Ok(tenant) = Tenant::parse(&id) else {
                continue;
            };
            let stream = js
                .get_stream(&spend_name)
                .await
                .map_err(|err| ClientError::nats("opening the spend stream", err))?;
            let bucket = js
                .get_key_value(&limits_name)
                .await
                .map_err(|err| ClientError::nats("opening the limits bucket", err))?;
            let at = Timestamp::now();
            let periods = Periods::at(at);
            let spend = read_spend(&stream, subjects, &tenant, &periods)
                .await
                .map_err(|err| ClientError::nats("reading spend", err))?;
            let reserved = llmq_runtime::budget::read_reserved(&bucket, &tenant)
                .await
                .map_err(|err| ClientError::nats("reading reservations", err))?;
            for period in BudgetPeriod::ALL {
                let Some(limit) = entry.budget.get(period) else {
                    continue;
                };
                let spent = spend.get(period);
                rows.push(BudgetStatus {
                    tenant: id.clone(),
                    period,
                    key: periods.key(period).to_owned(),
                    enforce: limit.enforce,
                    budget_usd: limit.usd,
                    spent_usd: usd(spent),
                    reserved_usd: usd(reserved),
                    remaining_usd: limit.usd - usd(spent),
                    over: spent >= nano_usd(limit.usd),
                });
            }
        }
        Ok(rows)
    }
}
