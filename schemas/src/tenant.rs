//! A tenant's entry in the registry: who may use which models, how, and with which
//! labels on their usage.
//!
//! The registry is a KV bucket (`<PREFIX>_TENANTS`, key = tenant id) written by the admin
//! command from a file teams keep in git, and read by every worker (the authority) and
//! every producer-side component (to refuse early). The stored entry accepts fields it
//! does not know, so an admin tool newer than a worker never makes that worker refuse a
//! tenant; the file it comes from is strict.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::job::Tier;
use crate::limits::LimitSpec;
use crate::timestamp::Timestamp;

/// One tenant, as stored in the registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TenantEntry {
    pub v: u32,
    /// The tenant id: a subject token, the last token of its job subjects.
    pub id: String,
    /// Display name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Logical models the tenant may use: exact names, or patterns where `*` stands for
    /// any run of characters (`chat-*`, `*`). None listed: no model.
    #[serde(default)]
    pub models: Vec<String>,
    /// Tiers the tenant may submit to.
    #[serde(default = "all_tiers")]
    pub tiers: Vec<Tier>,
    /// Most completion tokens a job may ask for (`max_tokens` or `max_completion_tokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// What a job asking for more than `max_tokens` gets.
    #[serde(default, skip_serializing_if = "crate::is_default")]
    pub over_max_tokens: OverMaxTokens,
    /// Largest job payload accepted, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_request_bytes: Option<u64>,
    /// Free-form labels (team, cost centre) carried by the tenant's outcomes and usage
    /// events.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Reply-subject prefixes the tenant's jobs may name besides its own inbox prefix
    /// (`_INBOX_llmq.<id>`), for producers that listen elsewhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reply_prefixes: Vec<String>,
    /// The tenant's limits across the fleet: jobs in flight, jobs and tokens per window.
    #[serde(default, skip_serializing_if = "LimitSpec::is_empty")]
    pub limits: LimitSpec,
    /// Limits of the tenant's use of one logical model.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub model_limits: BTreeMap<String, LimitSpec>,
    /// How long an interactive job waits for a limit before it fails `rate_limited`
    /// (default: the worker's `limits.interactive_max_wait`). Batch jobs wait as long as
    /// their deadline allows.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub max_wait: Option<std::time::Duration>,
    /// The tenant's share of the batch tier against other tenants with batch jobs queued
    /// for the same model: workers take turns between them, this many jobs per turn for
    /// every one of a weight-1 tenant. Default 1 (equal shares); 1 to 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_weight: Option<u32>,
    /// What the tenant may spend per calendar day and month (UTC), across the fleet.
    #[serde(default, skip_serializing_if = "TenantBudget::is_empty")]
    pub budget: TenantBudget,
    /// When the entry was last applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Timestamp>,
}

fn all_tiers() -> Vec<Tier> {
    Tier::ALL.to_vec()
}

/// What happens to a job asking for more completion tokens than the tenant's ceiling.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OverMaxTokens {
    /// The job runs with the ceiling instead, and its outcome says so.
    #[default]
    Clamp,
    /// The job fails with `policy_denied`.
    Refuse,
}

/// A tenant's budgets, in US dollars per calendar period (UTC), from the same prices as
/// its usage events' costs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TenantBudget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day: Option<BudgetLimit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub month: Option<BudgetLimit>,
}

impl TenantBudget {
    pub fn is_empty(&self) -> bool {
        self.day.is_none() && self.month.is_none()
    }

    /// The period's budget, if it has one.
    pub fn get(&self, period: BudgetPeriod) -> Option<BudgetLimit> {
        match period {
            BudgetPeriod::Day => self.day,
            BudgetPeriod::Month => self.month,
        }
    }

    /// Whether any period's budget refuses calls once spent.
    pub fn has_hard(&self) -> bool {
        BudgetPeriod::ALL
            .iter()
            .any(|p| self.get(*p).is_some_and(|b| b.enforce == Enforce::Hard))
    }
}

/// One period's budget. Like the rest of a stored entry, it reads fields it does not know
/// (the registry file is strict).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BudgetLimit {
    /// US dollars per period.
    pub usd: f64,
    #[serde(default)]
    pub enforce: Enforce,
}

/// What a spent budget does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Enforce {
    /// New provider calls are refused (`budget_exceeded`).
    #[default]
    Hard,
    /// Calls go on; usage events say `over_budget` and a metric says so.
    Soft,
}

/// A budget's calendar period, in UTC.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum BudgetPeriod {
    Day,
    Month,
}

impl BudgetPeriod {
    pub const ALL: [BudgetPeriod; 2] = [BudgetPeriod::Day, BudgetPeriod::Month];

    pub fn as_str(&self) -> &'static str {
        match self {
            BudgetPeriod::Day => "day",
            BudgetPeriod::Month => "month",
        }
    }

    /// The rule a refusal for this period names.
    pub fn rule(&self) -> PolicyRule {
        match self {
            BudgetPeriod::Day => PolicyRule::DayBudget,
            BudgetPeriod::Month => PolicyRule::MonthBudget,
        }
    }
}

impl std::fmt::Display for BudgetPeriod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which rule refused a job (`policy_denied`, or `budget_exceeded` for the budgets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PolicyRule {
    /// The tenant is not in the registry (registry enforced).
    UnknownTenant,
    /// The tenant's registry entry cannot be read.
    InvalidTenantEntry,
    /// The model is not among the tenant's `models`.
    ModelNotAllowed,
    /// The tier is not among the tenant's `tiers`.
    TierNotAllowed,
    /// More completion tokens than the tenant's `max_tokens`, with `over_max_tokens =
    /// "refuse"`.
    MaxTokens,
    /// A payload larger than the tenant's `max_request_bytes`.
    RequestTooLarge,
    /// The job's `reply_to` is outside the tenant's inbox prefixes.
    ReplySubject,
    /// The tenant's hard budget for the day is spent (`budget_exceeded`).
    DayBudget,
    /// The tenant's hard budget for the month is spent (`budget_exceeded`).
    MonthBudget,
}

impl PolicyRule {
    pub fn as_str(&self) -> &'static str {
        match self {
            PolicyRule::UnknownTenant => "unknown_tenant",
            PolicyRule::InvalidTenantEntry => "invalid_tenant_entry",
            PolicyRule::ModelNotAllowed => "model_not_allowed",
            PolicyRule::TierNotAllowed => "tier_not_allowed",
            PolicyRule::MaxTokens => "max_tokens",
            PolicyRule::RequestTooLarge => "request_too_large",
            PolicyRule::ReplySubject => "reply_subject",
            PolicyRule::DayBudget => "day_budget",
            PolicyRule::MonthBudget => "month_budget",
        }
    }
}

impl std::fmt::Display for PolicyRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job's completion-token cap lowered to its tenant's ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Clamped {
    /// What the job asked for.
    pub requested: u32,
    /// What it ran with: the tenant's `max_tokens`.
    pub allowed: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_entry_may_use_nothing_in_both_tiers_and_keeps_unknown_fields_readable() {
        let entry: TenantEntry = serde_json::from_value(serde_json::json!({
            "v": 1, "id": "acme", "a_later_field": {"x": 1}
        }))
        .unwrap();
        assert!(entry.models.is_empty());
        assert_eq!(entry.tiers, Tier::ALL.to_vec());
        assert_eq!(entry.over_max_tokens, OverMaxTokens::Clamp);
        let json = serde_json::to_value(&entry).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"v": 1, "id": "acme", "models": [], "tiers": ["interactive", "batch"]})
        );
    }

    #[test]
    fn a_stored_budget_reads_with_hard_as_the_default_and_later_fields() {
        let entry: TenantEntry = serde_json::from_value(serde_json::json!({
            "v": 1, "id": "acme",
            "budget": {"day": {"usd": 5.0}, "month": {"usd": 90, "enforce": "soft", "later": 1}}
        }))
        .unwrap();
        assert_eq!(entry.budget.day.map(|b| b.enforce), Some(Enforce::Hard));
        assert_eq!(entry.budget.month.map(|b| b.usd), Some(90.0));
        assert!(entry.budget.has_hard());
    }
}
