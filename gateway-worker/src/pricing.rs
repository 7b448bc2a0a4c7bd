//! Cost: usage times the price table.
//!
//! Prices are per provider and upstream model, USD per million tokens, with separate
//! rates for cached input and cache writes (Anthropic charges 1.25x input to write its
//! cache and 0.1x to read it; OpenAI discounts cached input). Defaults ship for common
//! models, dated below; the config overrides or adds. A model without a price yields
//! `Cost::UnknownPrice` naming it, never a silent zero.

use std::collections::HashMap;

use llmq_schemas::{Cost, CostBreakdown, Usage};

use crate::config::{Config, ProviderKind};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    pub input: f64,
    pub cached_input: f64,
    pub cache_write: f64,
    pub output: f64,
}

/// List prices (USD per 1M tokens) as published by the providers in 2025. Check them
/// against your contract; `[[prices]]` in the config overrides any of them.
/// (kind, model, input, cached input, cache write, output)
const DEFAULTS: &[(ProviderKind, &str, f64, f64, f64, f64)] = &[
    (ProviderKind::Openai, "gpt-5", 1.25, 0.125, 1.25, 10.0),
    (ProviderKind::Openai, "gpt-5-mini", 0.25, 0.025, 0.25, 2.0),
    (ProviderKind::Openai, "gpt-5-nano", 0.05, 0.005, 0.05, 0.40),
    (ProviderKind::Openai, "gpt-4.1", 2.0, 0.50, 2.0, 8.0),
    (ProviderKind::Openai, "gpt-4.1-mini", 0.40, 0.10, 0.40, 1.60),
    (
        ProviderKind::Openai,
        "gpt-4.1-nano",
        0.10,
        0.025,
        0.10,
        0.40,
    ),
    (ProviderKind::Openai, "gpt-4o", 2.50, 1.25, 2.50, 10.0),
    (ProviderKind::Openai, "gpt-4o-mini", 0.15, 0.075, 0.15, 0.60),
    (ProviderKind::Openai, "o3", 2.0, 0.50, 2.0, 8.0),
    (ProviderKind::Openai, "o4-mini", 1.10, 0.275, 1.10, 4.40),
    (
        ProviderKind::Anthropic,
        "claude-opus-4-1",
        15.0,
        1.50,
        18.75,
        75.0,
    ),
    (
        ProviderKind::Anthropic,
        "claude-sonnet-4-5",
        3.0,
        0.30,
        3.75,
        15.0,
    ),
    (
        ProviderKind::Anthropic,
        "claude-sonnet-4",
        3.0,
        0.30,
        3.75,
        15.0,
    ),
    (
        ProviderKind::Anthropic,
        "claude-haiku-4-5",
        1.0,
        0.10,
        1.25,
        5.0,
    ),
    (
        ProviderKind::Anthropic,
        "claude-3-5-haiku",
        0.80,
        0.08,
        1.0,
        4.0,
    ),
    (
        ProviderKind::Gemini,
        "gemini-2.5-pro",
        1.25,
        0.31,
        1.25,
        10.0,
    ),
    (
        ProviderKind::Gemini,
        "gemini-2.5-flash",
        0.30,
        0.075,
        0.30,
        2.50,
    ),
    (
        ProviderKind::Gemini,
        "gemini-2.5-flash-lite",
        0.10,
        0.025,
        0.10,
        0.40,
    ),
    (
        ProviderKind::Gemini,
        "gemini-2.0-flash",
        0.10,
        0.025,
        0.10,
        0.40,
    ),
];

#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    /// Keyed by (provider name or kind, model).
    prices: HashMap<(String, String), Price>,
}

impl PriceTable {
    pub fn new(config: &Config) -> Self {
        let mut prices = HashMap::new();
        for &(kind, model, input, cached_input, cache_write, output) in DEFAULTS {
            prices.insert(
                (kind.as_str().to_owned(), model.to_owned()),
                Price {
                    input,
                    cached_input,
                    cache_write,
                    output,
                },
            );
        }
        for price in &config.prices {
            prices.insert(
                (price.provider.clone(), price.model.clone()),
                Price {
                    input: price.input,
                    cached_input: price.cached_input.unwrap_or(price.input),
                    cache_write: price.cache_write.unwrap_or(price.input),
                    output: price.output,
                },
            );
        }
        Self { prices }
    }

    /// The price for a deployment: by provider name first, then by kind; the model name
    /// exactly, then without a trailing date (`gpt-4o-2024-08-06` -> `gpt-4o`).
    pub fn price(&self, provider: &str, kind: ProviderKind, model: &str) -> Option<Price> {
        let undated = strip_date(model);
        [provider, kind.as_str()]
            .into_iter()
            .flat_map(|owner| [(owner, model), (owner, undated)])
            .find_map(|(owner, model)| {
                self.prices
                    .get(&(owner.to_owned(), model.to_owned()))
                    .copied()
            })
    }

    pub fn cost(&self, provider: &str, kind: ProviderKind, model: &str, usage: &Usage) -> Cost {
        if usage.prompt_tokens == 0 && usage.completion_tokens == 0 {
            return Cost::zero();
        }
        let Some(price) = self.price(provider, kind, model) else {
            return Cost::UnknownPrice {
                missing: vec![format!("{provider}/{model}")],
            };
        };
        let per_token = |tokens: u64, usd_per_million: f64| tokens as f64 * usd_per_million / 1e6;
        let input = per_token(usage.uncached_prompt_tokens(), price.input);
        let cached_input = per_token(usage.cached_prompt_tokens, price.cached_input);
        let cache_write = per_token(usage.cache_write_tokens, price.cache_write);
        let output = per_token(usage.completion_tokens, price.output);
        Cost::Priced(CostBreakdown {
            input,
            cached_input,
            cache_write,
            output,
            total: input + cached_input + cache_write + output,
        })
    }
}

/// `name-2024-08-06` or `name-20241022` -> `name`.
fn strip_date(model: &str) -> &str {
    let bytes = model.as_bytes();
    let is_digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    let n = bytes.len();
    if n > 11 && bytes[n - 11] == b'-' && bytes[n - 6] == b'-' && bytes[n - 3] == b'-' {
        let (y, m, d) = (&bytes[n - 10..n - 6], &bytes[n - 5..n - 3], &bytes[n - 2..]);
        if is_digits(y) && is_digits(m) && is_digits(d) {
            return &model[..n - 11];
        }
    }
    if n > 9 && bytes[n - 9] == b'-' && is_digits(&bytes[n - 8..]) {
        return &model[..n - 9];
    }
    model
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(extra: &str) -> PriceTable {
        let toml = format!(
            r#"
[providers.oai]
kind = "openai_compatible"
base_url = "http://x/v1"
[models.m]
deployments = [{{ provider = "oai", model = "x" }}]
{extra}
"#
        );
        PriceTable::new(&crate::config::load_str(&toml, None).unwrap())
    }

    fn usd(cost: &Cost) -> f64 {
        cost.total_usd().unwrap()
    }

    #[test]
    fn openai_cached_input_is_discounted_inside_prompt_tokens() {
        let usage = Usage {
            prompt_tokens: 1_000_000,
            cached_prompt_tokens: 400_000,
            completion_tokens: 100_000,
            total_tokens: 1_100_000,
            ..Usage::default()
        };
        let cost = table("").cost("openai-main", ProviderKind::Openai, "gpt-4.1", &usage);
        // 600k * 2.00 + 400k * 0.50 + 100k * 8.00 per million
        assert!((usd(&cost) - (1.2 + 0.2 + 0.8)).abs() < 1e-9, "{cost:?}");
    }

    #[test]
    fn anthropic_cache_writes_and_reads_have_their_own_rates() {
        let usage = Usage {
            prompt_tokens: 1_000_000,
            cached_prompt_tokens: 500_000,
            cache_write_tokens: 300_000,
            completion_tokens: 0,
            total_tokens: 1_000_000,
            ..Usage::default()
        };
        let cost = table("").cost(
            "claude",
            ProviderKind::Anthropic,
            "claude-sonnet-4-5-20250929",
            &usage,
        );
        // 200k * 3.00 + 500k * 0.30 + 300k * 3.75
        assert!((usd(&cost) - (0.6 + 0.15 + 1.125)).abs() < 1e-9, "{cost:?}");
    }

    #[test]
    fn unknown_models_say_so_and_config_prices_win() {
        let usage = Usage::new(10, 10);
        let cost = table("").cost("oai", ProviderKind::OpenaiCompatible, "llama-3", &usage);
        assert_eq!(
            cost,
            Cost::UnknownPrice {
                missing: vec!["oai/llama-3".into()]
            }
        );
        assert_eq!(
            table("").cost(
                "oai",
                ProviderKind::OpenaiCompatible,
                "llama-3",
                &Usage::default()
            ),
            Cost::zero()
        );
        let priced = table(
            "[[prices]]\nprovider = \"oai\"\nmodel = \"llama-3\"\ninput = 1.0\noutput = 2.0\n",
        );
        let cost = priced.cost(
            "oai",
            ProviderKind::OpenaiCompatible,
            "llama-3",
            &Usage::new(1_000_000, 1_000_000),
        );
        assert!((usd(&cost) - 3.0).abs() < 1e-9);
    }

    #[test]
    fn dates_are_stripped_from_model_names() {
        assert_eq!(strip_date("gpt-4o-2024-08-06"), "gpt-4o");
        assert_eq!(strip_date("claude-3-5-haiku-20241022"), "claude-3-5-haiku");
        assert_eq!(strip_date("gpt-4.1"), "gpt-4.1");
        assert_eq!(strip_date("o3"), "o3");
    }
}
