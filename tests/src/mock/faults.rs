//! What can go wrong, and which request it goes wrong for.
//!
//! A test names the failure it wants in provider-neutral terms ([`Fault`]); each wire
//! format renders it the way that provider really fails (status, body, headers), so the
//! worker's adapters are tested against the real shapes. Faults are chosen per request in
//! a fixed precedence (scripted, then per-model, then random) so a test can overlay a
//! one-off failure on a background fault rate and still know exactly what happened; the
//! random source is a seeded splitmix64, so a run is reproducible.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

use super::options::MockOptions;

/// A failure the mock can inject into one response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// 429 in the format's rate-limit body, with the headers of the hint.
    RateLimited(RetryHint),
    /// Billing exhausted: OpenAI/Azure 429 `insufficient_quota`; Anthropic 402
    /// `billing_error`; Gemini 429 `RESOURCE_EXHAUSTED` without `RetryInfo`.
    QuotaExhausted,
    /// 500.
    ServerError,
    /// 503.
    ServiceUnavailable,
    /// Anthropic 529 `overloaded_error`; the others 503 in their format.
    Overloaded,
    /// 400 invalid request.
    BadRequest,
    /// 400 with the provider's context-length error.
    ContextWindowExceeded,
    /// OpenAI 400 `content_filter`; Azure its documented content-filter error; Anthropic a
    /// 200 with `stop_reason: "refusal"` and `stop_details`, billed
    /// [`REFUSAL_OUTPUT_TOKENS`](super::REFUSAL_OUTPUT_TOKENS) output tokens; Gemini a 200
    /// with `promptFeedback.blockReason` and the prompt's `usageMetadata`.
    ContentFiltered,
    /// The format's bad-key error (Gemini: 400 `API_KEY_INVALID`, which is what Gemini
    /// really answers to a wrong key; the others 401).
    Unauthorized,
    /// 404 model / deployment not found.
    NotFound,
    /// Read the request, then close the TCP connection without any response.
    DropConnection,
    /// Wait this long before the response head (then behave normally).
    SlowFirstToken(Duration),
    /// Streaming: N content chunks, silence for `stall`, then the rest.
    /// Non-streaming: the response is `stall` late.
    StallMidStream {
        after_tokens: usize,
        stall: Duration,
    },
    /// Streaming: N content chunks, then the connection is aborted (no final chunk, no
    /// terminator; the client sees a body error). Non-streaming: the head and half the JSON
    /// body, then the abort.
    CutMidStream { after_tokens: usize },
    /// Streaming: N content chunks, a `data:` line that is not JSON, then the rest.
    /// Non-streaming: same as [`Fault::GarbageBody`].
    MalformedChunk { after_tokens: usize },
    /// Streaming: N content chunks, then the format's in-stream error event, then the end.
    /// Non-streaming: the error status that event stands for (OpenAI/Azure 500, Anthropic
    /// 529, Gemini 503).
    InStreamError { after_tokens: usize },
    /// 200 with `content-type: application/json` and a body that is not JSON.
    GarbageBody,
    /// A forced tool call whose arguments end before their JSON does
    /// (`{"query":"<prompt>`), where the format carries arguments as text: OpenAI and
    /// Azure (streaming or not), Anthropic streams (`partial_json`). Anthropic
    /// non-streaming and Gemini carry arguments as JSON values and answer normally, and
    /// so does a request that forces no tool.
    InvalidToolArguments,
}

/// Which server-directed delay a rate-limit response carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RetryHint {
    None,
    /// `retry-after: <secs>`.
    RetryAfterSecs(u64),
    /// `retry-after-ms: <ms>`.
    RetryAfterMs(u64),
    /// `retry-after: <HTTP-date>` this many seconds from now.
    RetryAfterHttpDate(u64),
    /// `x-ms-retry-after-ms: <ms>` (Azure).
    XMsRetryAfterMs(u64),
    /// `x-ratelimit-reset-requests: <value>` (Go-style duration for OpenAI, e.g. "6m0s").
    ResetRequests(String),
    /// `x-ratelimit-reset-tokens: <value>`.
    ResetTokens(String),
    /// `anthropic-ratelimit-requests-reset: <RFC 3339>` this many seconds from now.
    AnthropicReset(u64),
    /// Gemini `RetryInfo.retryDelay` (e.g. "28s") in the error body; no effect on the
    /// other formats.
    GeminiRetryDelay(String),
}

/// A fault applied once, to the first request that matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptedFault {
    pub fault: Fault,
    pub matching: FaultMatch,
}

impl ScriptedFault {
    /// The next request, whatever it is.
    pub fn any(fault: Fault) -> ScriptedFault {
        ScriptedFault {
            fault,
            matching: FaultMatch::Any,
        }
    }

    /// The next request for this upstream model.
    pub fn for_model(model: impl Into<String>, fault: Fault) -> ScriptedFault {
        ScriptedFault {
            fault,
            matching: FaultMatch::Model(model.into()),
        }
    }

    /// The next request whose prompt contains `needle`.
    pub fn prompt_contains(needle: impl Into<String>, fault: Fault) -> ScriptedFault {
        ScriptedFault {
            fault,
            matching: FaultMatch::PromptContains(needle.into()),
        }
    }
}

/// Which requests a [`ScriptedFault`] applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultMatch {
    Any,
    /// The upstream model name (Azure: the deployment id; Gemini: the path model).
    Model(String),
    PromptContains(String),
}

impl FaultMatch {
    fn matches(&self, model: &str, prompt: &str) -> bool {
        match self {
            FaultMatch::Any => true,
            FaultMatch::Model(m) => m == model,
            FaultMatch::PromptContains(needle) => prompt.contains(needle.as_str()),
        }
    }
}

/// A background fault rate: with `probability`, a request gets one of `faults`, chosen by
/// weight.
#[derive(Clone, Debug, PartialEq)]
pub struct RandomFaults {
    pub seed: u64,
    pub probability: f64,
    pub faults: Vec<(Fault, u32)>,
}

/// splitmix64: a few lines, good enough statistics, fully determined by the seed.
#[derive(Clone, Debug)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The mutable half of fault selection: the scripted queue and the random source.
#[derive(Debug)]
pub(crate) struct FaultPicker {
    scripted: VecDeque<ScriptedFault>,
    rng: SplitMix64,
}

impl FaultPicker {
    pub(crate) fn new(options: &MockOptions) -> FaultPicker {
        FaultPicker {
            scripted: VecDeque::new(),
            rng: SplitMix64::new(seed_of(options)),
        }
    }

    /// New options restart the random sequence from their seed (scripted faults stay).
    pub(crate) fn reseed(&mut self, options: &MockOptions) {
        self.rng = SplitMix64::new(seed_of(options));
    }

    pub(crate) fn push(&mut self, faults: impl IntoIterator<Item = ScriptedFault>) {
        self.scripted.extend(faults);
    }

    /// Scripted (first match, consumed) > `per_model[model].always` > random > none.
    pub(crate) fn pick(
        &mut self,
        options: &MockOptions,
        model: &str,
        prompt: &str,
    ) -> Option<Fault> {
        if let Some(index) = self
            .scripted
            .iter()
            .position(|s| s.matching.matches(model, prompt))
        {
            return self.scripted.remove(index).map(|s| s.fault);
        }
        if let Some(always) = options.per_model.get(model).and_then(|b| b.always.clone()) {
            return Some(always);
        }
        let random = options.random_faults.as_ref()?;
        let total: u64 = random.faults.iter().map(|(_, w)| u64::from(*w)).sum();
        if total == 0 || self.rng.next_f64() >= random.probability {
            return None;
        }
        let mut ticket = self.rng.next_u64() % total;
        for (fault, weight) in &random.faults {
            let weight = u64::from(*weight);
            if ticket < weight {
                return Some(fault.clone());
            }
            ticket -= weight;
        }
        None
    }
}

fn seed_of(options: &MockOptions) -> u64 {
    options.random_faults.as_ref().map_or(0, |r| r.seed)
}

/// The delay headers a rate-limit response carries for `hint`.
pub(crate) fn retry_headers(hint: &RetryHint) -> Vec<(&'static str, String)> {
    match hint {
        RetryHint::None | RetryHint::GeminiRetryDelay(_) => Vec::new(),
        RetryHint::RetryAfterSecs(secs) => vec![("retry-after", secs.to_string())],
        RetryHint::RetryAfterMs(ms) => vec![("retry-after-ms", ms.to_string())],
        RetryHint::RetryAfterHttpDate(secs) => vec![("retry-after", http_date(*secs))],
        RetryHint::XMsRetryAfterMs(ms) => vec![("x-ms-retry-after-ms", ms.to_string())],
        RetryHint::ResetRequests(value) => vec![("x-ratelimit-reset-requests", value.clone())],
        RetryHint::ResetTokens(value) => vec![("x-ratelimit-reset-tokens", value.clone())],
        RetryHint::AnthropicReset(secs) => {
            vec![("anthropic-ratelimit-requests-reset", rfc3339(*secs))]
        }
    }
}

fn from_now(secs: u64) -> OffsetDateTime {
    let at = SystemTime::now() + Duration::from_secs(secs);
    OffsetDateTime::from(at)
        .replace_nanosecond(0)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// IMF-fixdate (RFC 9110 §5.6.7), e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
pub(crate) fn http_date(secs_from_now: u64) -> String {
    let format = format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    from_now(secs_from_now).format(&format).unwrap_or_default()
}

/// Whole-second RFC 3339 in UTC, e.g. `2025-02-24T22:25:47Z`, as Anthropic sends it.
pub(crate) fn rfc3339(secs_from_now: u64) -> String {
    from_now(secs_from_now).format(&Rfc3339).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::options::ModelBehavior;

    #[test]
    fn precedence_scripted_then_per_model_then_random() {
        let mut options = MockOptions::default();
        options.per_model.insert(
            "m".into(),
            ModelBehavior {
                always: Some(Fault::ServerError),
                ..ModelBehavior::default()
            },
        );
        options.random_faults = Some(RandomFaults {
            seed: 7,
            probability: 1.0,
            faults: vec![(Fault::GarbageBody, 1)],
        });
        let mut picker = FaultPicker::new(&options);
        picker.push([
            ScriptedFault::prompt_contains("needle", Fault::BadRequest),
            ScriptedFault::for_model("other", Fault::NotFound),
        ]);
        assert_eq!(
            picker.pick(&options, "m", "a needle here"),
            Some(Fault::BadRequest)
        );
        // Consumed: the next one falls through to per-model.
        assert_eq!(
            picker.pick(&options, "m", "a needle here"),
            Some(Fault::ServerError)
        );
        assert_eq!(picker.pick(&options, "x", "p"), Some(Fault::GarbageBody));
        assert_eq!(picker.pick(&options, "other", "p"), Some(Fault::NotFound));
        assert_eq!(
            picker.pick(&options, "other", "p"),
            Some(Fault::GarbageBody)
        );
    }

    #[test]
    fn random_faults_follow_the_seed_and_rate() {
        let options = MockOptions {
            random_faults: Some(RandomFaults {
                seed: 42,
                probability: 0.25,
                faults: vec![(Fault::ServerError, 3), (Fault::Overloaded, 1)],
            }),
            ..MockOptions::default()
        };
        let draw = |picker: &mut FaultPicker| -> Vec<Option<Fault>> {
            (0..4000).map(|_| picker.pick(&options, "m", "p")).collect()
        };
        let first = draw(&mut FaultPicker::new(&options));
        assert_eq!(
            first,
            draw(&mut FaultPicker::new(&options)),
            "same seed, same sequence"
        );
        let hits = first.iter().flatten().count();
        assert!(
            (800..1200).contains(&hits),
            "{hits} faults out of 4000 at p=0.25"
        );
        let server = first
            .iter()
            .flatten()
            .filter(|f| **f == Fault::ServerError)
            .count();
        assert!(
            server * 100 / hits > 65,
            "weights 3:1 gave {server} of {hits}"
        );
    }

    #[test]
    fn delay_header_formats() {
        let date = http_date(0);
        assert!(date.ends_with(" GMT") && date.len() == 29, "{date}");
        let stamp = rfc3339(60);
        assert!(stamp.ends_with('Z') && stamp.len() == 20, "{stamp}");
        assert!(retry_headers(&RetryHint::GeminiRetryDelay("3s".into())).is_empty());
        assert_eq!(
            retry_headers(&RetryHint::ResetTokens("6m0s".into())),
            vec![("x-ratelimit-reset-tokens", "6m0s".to_string())]
        );
    }
}
