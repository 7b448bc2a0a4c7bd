//! How the mock behaves; changeable at runtime so one server can serve a whole scenario.

use std::collections::HashMap;
use std::time::Duration;

use super::faults::{Fault, RandomFaults};
use super::quota::Quota;

/// Behaviour of the mock provider. `Default` gives a fast, fault-free provider.
#[derive(Clone, Debug)]
pub struct MockOptions {
    /// The keys a request may carry (more than one while a key rotates); a missing key or
    /// any other gets the format's auth error.
    pub api_keys: Vec<String>,
    /// Content tokens per reply (unless the prompt says `[tokens=N]`; capped by max tokens).
    pub tokens_per_reply: usize,
    /// Delay before the first content chunk (non-streaming: before the body).
    pub first_token_delay: Duration,
    /// Delay between content chunks (non-streaming: `n * token_interval` before the body).
    pub token_interval: Duration,
    /// Cached prompt tokens to report (the prompt count grows to at least this).
    pub cached_prompt_tokens: u64,
    /// Anthropic `cache_creation_input_tokens`; ignored by the other formats.
    pub cache_write_tokens: u64,
    /// OpenAI/Azure `reasoning_tokens` (included in `completion_tokens`), Gemini
    /// `thoughtsTokenCount`, Anthropic `output_tokens_details.thinking_tokens` (included
    /// in `output_tokens`).
    pub reasoning_tokens: u64,
    /// OpenAI-format streams never send the usage chunk (servers without `stream_options`).
    pub omit_stream_usage: bool,
    /// OpenAI-compatible quirk: usage rides on the finish chunk (which still has choices)
    /// instead of a separate `choices: []` chunk.
    pub usage_on_last_content_chunk: bool,
    /// Per upstream model (Azure: deployment id; Gemini: path model).
    pub per_model: HashMap<String, ModelBehavior>,
    pub random_faults: Option<RandomFaults>,
    /// Benchmark mode: no request recording, identical requests served from a cache of
    /// pre-rendered bodies (so identical requests get identical response ids).
    pub lean: bool,
    /// Keep the instant each content chunk was written, per request.
    pub record_token_times: bool,
    /// The provider's own request quota per model, reported in every response's
    /// rate-limit headers (remaining, reset) and enforced with the format's 429.
    pub quota: Option<Quota>,
}

impl Default for MockOptions {
    fn default() -> MockOptions {
        MockOptions {
            api_keys: vec!["test-key".to_owned()],
            tokens_per_reply: 12,
            first_token_delay: Duration::ZERO,
            token_interval: Duration::ZERO,
            cached_prompt_tokens: 0,
            cache_write_tokens: 0,
            reasoning_tokens: 0,
            omit_stream_usage: false,
            usage_on_last_content_chunk: false,
            per_model: HashMap::new(),
            random_faults: None,
            lean: false,
            record_token_times: false,
            quota: None,
        }
    }
}

/// Overrides for one upstream model.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelBehavior {
    /// Every request for this model gets this fault (after scripted faults).
    pub always: Option<Fault>,
    pub first_token_delay: Option<Duration>,
    pub token_interval: Option<Duration>,
    pub tokens_per_reply: Option<usize>,
}

/// The timing and length that apply to one model.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pace {
    pub first_token_delay: Duration,
    pub token_interval: Duration,
    pub tokens_per_reply: usize,
}

impl MockOptions {
    pub(crate) fn pace(&self, model: &str) -> Pace {
        let behavior = self.per_model.get(model);
        Pace {
            first_token_delay: behavior
                .and_then(|b| b.first_token_delay)
                .unwrap_or(self.first_token_delay),
            token_interval: behavior
                .and_then(|b| b.token_interval)
                .unwrap_or(self.token_interval),
            tokens_per_reply: behavior
                .and_then(|b| b.tokens_per_reply)
                .unwrap_or(self.tokens_per_reply),
        }
    }
}
