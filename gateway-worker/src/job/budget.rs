//! Tenant budgets on a job's path: reserve before the provider call, count the cost
//! after (`llmq_runtime::budget` keeps the state; `crate::budget_metrics` reports it).
//!
//! Only a hard budget needs a reservation: it is what lets the fleet refuse a job before
//! the money is spent, with every job already in flight counted. A soft budget only
//! needs the spend, which every priced usage event of a registry tenant adds to, budget
//! or not (so a budget set mid-month sees the month's spend so far).

use llmq_runtime::budget::{Exceeded, Refusal, Reservation, Spend, nano_usd};
use llmq_runtime::tenants::TenantPolicy;
use llmq_schemas::{BudgetPeriod, ErrorType, JobError, TenantBudget, Timestamp, Usage};

use super::admit::reservation;
use super::attempts::CallUsage;
use super::processing::Processing;
use crate::budget_metrics::report_tenant;
use crate::context::WorkerContext;
use crate::metrics;
use crate::providers::estimate::estimate;
use crate::routing::ModelRoute;

/// Why a job does not reach its provider.
#[derive(Debug)]
pub enum Stop {
    /// A hard budget is spent: the job fails `budget_exceeded`.
    Refused(JobError),
    /// The budget state cannot be read: the job goes back to the queue.
    Unavailable,
}

/// For a tenant with a hard budget, reserves the job's estimated maximum cost, or refuses
/// the job if the budget is spent counting what jobs in flight reserved.
pub async fn reserve(
    ctx: &WorkerContext,
    processing: &Processing,
    model: &ModelRoute,
) -> Result<Option<Reservation>, Stop> {
    let Some(policy) = &processing.tenant_policy else {
        return Ok(None);
    };
    let budget = policy.entry.budget;
    if !budget.has_hard() {
        return Ok(None);
    }
    let estimate = nano_usd(estimate_usd(ctx, processing, model));
    match ctx
        .budgets
        .reserve(&processing.tenant, &budget, estimate)
        .await
    {
        Ok(reservation) => Ok(Some(reservation)),
        Err(Refusal::Exceeded(exceeded)) => {
            metrics::budget_refused(processing.tenant.as_str(), exceeded.period.as_str());
            tracing::info!(tenant = %processing.tenant, period = %exceeded.period, reason = %exceeded, "job refused by its budget");
            Err(Stop::Refused(refusal(&exceeded)))
        }
        Err(Refusal::Unavailable(err)) => {
            tracing::warn!(tenant = %processing.tenant, error = %err, "budget state unreadable; handing the job back");
            Err(Stop::Unavailable)
        }
    }
}

fn refusal(exceeded: &Exceeded) -> JobError {
    let mut error = JobError::new(ErrorType::BudgetExceeded, exceeded.to_string());
    error.rule = Some(exceeded.period.rule());
    error.retry_after_ms =
        Some(u64::try_from(exceeded.retry_after.as_millis()).unwrap_or(u64::MAX));
    error
}

/// The most one attempt of the job can cost: the prompt's estimate plus its completion
/// cap (the same reservation the token limits make), priced at the dearest deployment the
/// job may be routed to. A deployment without a price counts as free (its usage events
/// say `unknown_price`, and its cost cannot be counted either).
pub fn estimate_usd(ctx: &WorkerContext, processing: &Processing, model: &ModelRoute) -> f64 {
    let request = &processing.job.request;
    let prompt = estimate(request, 0).prompt_tokens;
    let completion = reservation(request, model.default_max_tokens).saturating_sub(prompt);
    let usage = Usage::new(prompt, completion);
    let fallbacks = model
        .fallbacks
        .iter()
        .chain(&model.context_window_fallbacks)
        .chain(&model.content_policy_fallbacks)
        .filter_map(|name| ctx.router.model(name));
    std::iter::once(model)
        .chain(fallbacks.map(|route| &**route))
        .flat_map(|route| &route.deployments)
        .filter_map(|d| {
            let provider = &d.provider;
            ctx.prices
                .cost(&provider.name, provider.kind, &d.upstream_model, &usage)
                .total_usd()
        })
        .fold(0.0, f64::max)
}

/// After the calls: adds their priced cost to the tenant's spend (once per usage event
/// id), gives the reservation back, and returns the periods whose budget the spend has
/// now reached (the usage event's `over_budget`).
pub async fn settle(
    ctx: &WorkerContext,
    processing: &Processing,
    calls: &[CallUsage],
    reservation: Option<Reservation>,
) -> Vec<BudgetPeriod> {
    let cost: f64 = calls.iter().filter_map(|c| c.cost.total_usd()).sum();
    let over = match &processing.tenant_policy {
        Some(policy) if nano_usd(cost) > 0 => record(ctx, processing, policy, cost).await,
        _ => Vec::new(),
    };
    if let Some(reservation) = reservation {
        ctx.budgets.release(reservation).await;
    }
    over
}

async fn record(
    ctx: &WorkerContext,
    processing: &Processing,
    policy: &TenantPolicy,
    cost: f64,
) -> Vec<BudgetPeriod> {
    let at = Timestamp::now();
    match ctx
        .budgets
        .record(&processing.tenant, processing.id, cost, at)
        .await
    {
        Ok(spend) => {
            let budget = &policy.entry.budget;
            report_tenant(processing.tenant.as_str(), budget, spend);
            let over = over_budget(budget, spend);
            for period in &over {
                metrics::budget_over_event(processing.tenant.as_str(), period.as_str());
            }
            over
        }
        Err(err) => {
            // The usage event (stored next) still carries the cost.
            tracing::error!(tenant = %processing.tenant, usage_event = %processing.id, cost_usd = cost, error = %err, "cost not added to the tenant's spend");
            Vec::new()
        }
    }
}

/// The periods whose budget `spend` has reached.
fn over_budget(budget: &TenantBudget, spend: Spend) -> Vec<BudgetPeriod> {
    BudgetPeriod::ALL
        .into_iter()
        .filter(|p| {
            budget
                .get(*p)
                .is_some_and(|b| spend.get(*p) >= nano_usd(b.usd))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use llmq_schemas::{BudgetLimit, Enforce};

    use super::*;

    #[test]
    fn a_period_is_over_once_its_spend_reaches_the_budget() {
        let budget = TenantBudget {
            day: Some(BudgetLimit {
                usd: 1.0,
                enforce: Enforce::Soft,
            }),
            month: None,
        };
        let spend = |day| Spend { day, month: day };
        assert!(over_budget(&budget, spend(999_999_999)).is_empty());
        assert_eq!(
            over_budget(&budget, spend(1_000_000_000)),
            [BudgetPeriod::Day]
        );
    }
}
