//! Budget metrics: every budgeted tenant's spend against its budget, kept current by a
//! side task of the worker (a day rolls over, another worker spends) and after each job
//! that counted a cost (`job::budget`).

use std::sync::Arc;
use std::time::Duration;

use llmq_runtime::budget::{Spend, usd};
use llmq_schemas::{BudgetPeriod, TenantBudget, Timestamp};
use tokio_util::sync::CancellationToken;

use crate::context::WorkerContext;
use crate::metrics;

/// How often each worker reads every budgeted tenant's spend for its metrics.
const REPORT_EVERY: Duration = Duration::from_secs(5);

/// Sets one tenant's budget metrics: its spend and budget per period.
pub fn report_tenant(tenant: &str, budget: &TenantBudget, spend: Spend) {
    for period in BudgetPeriod::ALL {
        let limit = budget.get(period).map(|b| b.usd);
        metrics::budget_state(tenant, period.as_str(), usd(spend.get(period)), limit);
    }
}

/// Keeps the budget metrics current for every registry tenant with a budget (a day
/// rolls over, another worker spends), until `stop`.
pub async fn report(ctx: Arc<WorkerContext>, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(REPORT_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = stop.cancelled() => return,
        }
        for policy in ctx.registry.known() {
            let budget = &policy.entry.budget;
            let Ok(tenant) = llmq_schemas::Tenant::parse(&policy.entry.id) else {
                continue;
            };
            if budget.is_empty() {
                continue;
            }
            match ctx.budgets.spend(&tenant, Timestamp::now()).await {
                Ok(spend) => report_tenant(tenant.as_str(), budget, spend),
                Err(err) => {
                    tracing::debug!(%tenant, error = %err, "budget spend not read for metrics")
                }
            }
        }
    }
}
