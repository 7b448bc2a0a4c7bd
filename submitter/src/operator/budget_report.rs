//! Spend against budget, per tenant and period: what `submitter usage` shows under its
//! table.
//!
//! Read from where the workers keep it (`llmq_runtime::budget`): the spend counters and
//! the live reservations of jobs in flight, so the figures are the fleet's own, not a
//! sum this command makes.

use llmq_runtime::budget::{Periods, Spend, nano_usd, read_own_state, spend_stream_config, usd};
use llmq_runtime::tenants::Lookup;
use llmq_schemas::{BudgetPeriod, Enforce, Tenant, TenantBudget, Timestamp};
use serde::Serialize;

use super::Operator;
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

impl Operator {
    /// Every budget of the operator's tenant (or of every tenant), with this day's and
    /// month's spend and what jobs in flight have reserved. Tenants without a budget are
    /// left out. A tenant's own budget is read only through requests that name it (its
    /// registry entry, its counters, its reservations), which its credentials allow;
    /// every tenant's needs the whole registry (an admin).
    pub async fn budget_status(&self, all_tenants: bool) -> Result<Vec<BudgetStatus>, ClientError> {
        let budgeted = if all_tenants {
            self.every_budget().await?
        } else {
            self.own_budget().await
        };
        let (js, subjects) = (self.session.js(), self.session.subjects());
        let spend = spend_stream_config(subjects, 1, Default::default()).name;
        let periods = Periods::at(Timestamp::now());
        let mut rows = Vec::new();
        for (tenant, budget) in budgeted {
            let read = read_own_state(js, subjects, &tenant, &periods);
            let (spent, reserved) = self
                .session
                .unless_denied(&[&spend], read)
                .await
                .map_err(|denied| ClientError::PermissionDenied {
                    operation: "reading the budget",
                    denied,
                })?
                .map_err(|err| ClientError::nats("reading the budget", err))?;
            rows.extend(rows_of(&tenant, &budget, spent, reserved, &periods));
        }
        Ok(rows)
    }

    async fn every_budget(&self) -> Result<Vec<(Tenant, TenantBudget)>, ClientError> {
        Ok(self
            .tenants()
            .await?
            .into_iter()
            .filter_map(|(id, entry)| Some((Tenant::parse(&id).ok()?, entry.ok()?.budget)))
            .filter(|(_, budget)| !budget.is_empty())
            .collect())
    }

    async fn own_budget(&self) -> Vec<(Tenant, TenantBudget)> {
        match self.session.own_entry().await {
            Some(Lookup::Known(policy)) if !policy.entry.budget.is_empty() => {
                vec![(self.session.tenant().clone(), policy.entry.budget)]
            }
            _ => Vec::new(),
        }
    }
}

/// One row per period the tenant has a budget for.
fn rows_of(
    tenant: &Tenant,
    budget: &TenantBudget,
    spend: Spend,
    reserved: u64,
    periods: &Periods,
) -> Vec<BudgetStatus> {
    BudgetPeriod::ALL
        .into_iter()
        .filter_map(|period| {
            let limit = budget.get(period)?;
            let spent = spend.get(period);
            Some(BudgetStatus {
                tenant: tenant.as_str().to_owned(),
                period,
                key: periods.key(period).to_owned(),
                enforce: limit.enforce,
                budget_usd: limit.usd,
                spent_usd: usd(spent),
                reserved_usd: usd(reserved),
                remaining_usd: limit.usd - usd(spent),
                over: spent >= nano_usd(limit.usd),
            })
        })
        .collect()
}
