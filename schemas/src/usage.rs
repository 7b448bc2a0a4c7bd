//! Token usage and cost, normalized so the numbers mean the same thing for every provider.
//!
//! OpenAI counts cached prompt tokens inside `prompt_tokens`; Anthropic counts cache reads
//! and writes outside `input_tokens`. Billing that adds them up naively is wrong for one
//! of the two, so llmq uses one definition (OpenAI's, the one producers already know)
//! and the adapters convert into it.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::job::{JobId, Tier};
use crate::timestamp::Timestamp;
use crate::timings::Timings;

/// Normalized token counts.
///
/// - `prompt_tokens`: every input token, cached or not, including cache writes.
/// - `cached_prompt_tokens`: the part of `prompt_tokens` read from the prompt cache.
/// - `cache_write_tokens`: the part of `prompt_tokens` written to the prompt cache.
/// - `completion_tokens`: every output token, reasoning included.
/// - `reasoning_tokens`: the part of `completion_tokens` spent on reasoning.
/// - `total_tokens` = `prompt_tokens` + `completion_tokens`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    #[serde(default)]
    pub cached_prompt_tokens: u64,
    #[serde(default)]
    pub cache_write_tokens: u64,
    #[serde(default)]
    pub reasoning_tokens: u64,
}

impl Usage {
    /// Usage from the two basic counts, no cache or reasoning detail.
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            ..Self::default()
        }
    }

    pub fn add(&mut self, other: &Usage) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.total_tokens += other.total_tokens;
        self.cached_prompt_tokens += other.cached_prompt_tokens;
        self.cache_write_tokens += other.cache_write_tokens;
        self.reasoning_tokens += other.reasoning_tokens;
    }

    /// Prompt tokens billed at the plain input price.
    pub fn uncached_prompt_tokens(&self) -> u64 {
        self.prompt_tokens
            .saturating_sub(self.cached_prompt_tokens)
            .saturating_sub(self.cache_write_tokens)
    }
}

/// Where a usage figure came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UsageSource {
    /// The provider reported it.
    #[default]
    Reported,
    /// The provider did not report it (a stream cut before its usage chunk, a server
    /// without `stream_options` support): estimated from text length, 1 token per 4
    /// bytes of prompt and completion text, at least 1 per message.
    Estimated,
    /// No provider call was made, or none returned anything to count.
    None,
}

/// Cost in US dollars, from the worker's price table. An unknown price is said out loud,
/// never reported as zero.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Cost {
    Priced(CostBreakdown),
    /// At least one `provider/upstream_model` that produced tokens has no price in the
    /// table; `missing` lists them.
    UnknownPrice {
        missing: Vec<String>,
    },
}

impl Cost {
    pub fn zero() -> Self {
        Cost::Priced(CostBreakdown::default())
    }

    /// The sum of two costs; unknown if either is.
    pub fn plus(&self, other: &Cost) -> Cost {
        match (self, other) {
            (Cost::Priced(a), Cost::Priced(b)) => Cost::Priced(CostBreakdown {
                input: a.input + b.input,
                cached_input: a.cached_input + b.cached_input,
                cache_write: a.cache_write + b.cache_write,
                output: a.output + b.output,
                total: a.total + b.total,
            }),
            (Cost::UnknownPrice { missing: a }, Cost::UnknownPrice { missing: b }) => {
                let mut missing = a.clone();
                missing.extend(b.iter().filter(|m| !a.contains(m)).cloned());
                Cost::UnknownPrice { missing }
            }
            (unknown @ Cost::UnknownPrice { .. }, _) | (_, unknown @ Cost::UnknownPrice { .. }) => {
                unknown.clone()
            }
        }
    }

    /// The total in USD, if priced.
    pub fn total_usd(&self) -> Option<f64> {
        match self {
            Cost::Priced(breakdown) => Some(breakdown.total),
            Cost::UnknownPrice { .. } => None,
        }
    }
}

/// USD per part of the usage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CostBreakdown {
    pub input: f64,
    pub cached_input: f64,
    pub cache_write: f64,
    pub output: f64,
    pub total: f64,
}

/// One provider call's share of a usage event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AttemptUsage {
    pub attempt: u32,
    pub provider: String,
    pub upstream_model: String,
    pub usage: Usage,
    pub usage_source: UsageSource,
    pub cost: Cost,
}

/// One processing of a job, for billing and dashboards; published to
/// `<prefix>.usage.<tenant>.<model>`.
///
/// `id` is unique to the processing and is the publish's `Nats-Msg-Id`, so a republish
/// after a reconnect is dropped as a duplicate. A job redelivered after a worker crash is
/// a second processing and, if it called a provider again, a second event: that second
/// call was paid for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UsageEvent {
    pub v: u32,
    pub id: Uuid,
    pub job_id: JobId,
    pub tenant: String,
    /// The logical model the job asked for.
    pub model: String,
    pub tier: Tier,
    /// The provider of the last attempt (the one that answered, when succeeded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_model: Option<String>,
    /// The job's outcome (`handed_back` only in events of earlier workers: see
    /// [`UsageStatus`]).
    pub status: UsageStatus,
    /// Sum over every attempt: failed attempts that streamed tokens were paid for too.
    pub usage: Usage,
    /// `estimated` if any attempt's usage was.
    pub usage_source: UsageSource,
    pub cost: Cost,
    /// Per provider call, for exact billing across fallbacks.
    pub attempts: Vec<AttemptUsage>,
    pub timings: Timings,
    pub worker_id: String,
    /// Which delivery of the job this processing was.
    #[serde(default)]
    pub delivery: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_id: Option<String>,
    /// The job's `user`: the signed-in person it ran for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    pub at: Timestamp,
    /// The tenant's registry labels (team, cost centre), as when the job ran: what
    /// `submitter usage --by label:<name>` groups by.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The periods whose budget the tenant's spend, this event's cost included, has
    /// reached (soft budgets: the job ran anyway). Empty when under budget or without one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub over_budget: Vec<crate::tenant::BudgetPeriod>,
}

/// How the processing a usage event bills ended.
///
/// Every processing that called a provider and got tokens is billed. `handed_back` is
/// kept for the events earlier workers wrote: they gave a batch job back to the queue
/// when every deployment was cooling down after a paid attempt, and billed that attempt
/// on its own. Workers now wait for the cooldown in the same processing, so the attempt
/// is billed with the job's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UsageStatus {
    Succeeded,
    Failed,
    Expired,
    Cancelled,
    HandedBack,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_cost_is_contagious_and_lists_every_missing_price() {
        let priced = Cost::Priced(CostBreakdown {
            total: 1.0,
            output: 1.0,
            ..CostBreakdown::default()
        });
        let unknown_a = Cost::UnknownPrice {
            missing: vec!["p/a".into()],
        };
        let unknown_b = Cost::UnknownPrice {
            missing: vec!["p/b".into(), "p/a".into()],
        };
        assert_eq!(priced.plus(&priced).total_usd(), Some(2.0));
        assert_eq!(priced.plus(&unknown_a), unknown_a);
        assert_eq!(
            unknown_a.plus(&unknown_b),
            Cost::UnknownPrice {
                missing: vec!["p/a".into(), "p/b".into()]
            }
        );
    }

    #[test]
    fn uncached_prompt_excludes_cache_reads_and_writes() {
        let usage = Usage {
            prompt_tokens: 100,
            cached_prompt_tokens: 60,
            cache_write_tokens: 30,
            ..Usage::default()
        };
        assert_eq!(usage.uncached_prompt_tokens(), 10);
    }
}
