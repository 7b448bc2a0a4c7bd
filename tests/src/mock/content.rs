//! Deterministic replies and token counts.
//!
//! Tests compare what the gateway delivered with what the provider "said", so the reply
//! must be a pure function of the prompt: the same prompt gives the same words in every
//! wire format, streamed or not, on every run. Tokens are whole words (the first without a
//! leading space, the rest with one) so that a streamed reply concatenates to exactly
//! [`mock_text`], and "one content chunk = one completion token" holds.

/// The vocabulary replies are drawn from (64 words, all ASCII, no JSON escaping needed).
const WORDS: [&str; 64] = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
    "uniform", "victor", "whiskey", "xray", "yankee", "zulu", "amber", "basalt", "cobalt", "dune",
    "ember", "fjord", "granite", "harbor", "island", "jade", "kelp", "lagoon", "meadow", "nectar",
    "orchid", "pebble", "quartz", "river", "saffron", "tundra", "umber", "valley", "willow",
    "yarrow", "zephyr", "anchor", "beacon", "canyon", "drift", "estuary", "forest", "glacier",
    "horizon", "inlet", "jetty", "knoll", "ledge", "mesa",
];

/// The marker a prompt can carry to ask for a reply of exactly `N` tokens (still capped by
/// the request's max tokens).
const TOKENS_MARKER: &str = "[tokens=";

/// FNV-1a 64: tiny, stable across platforms and releases (unlike `DefaultHasher`).
pub(crate) fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in *part {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

fn word(prompt: &str, index: usize) -> &'static str {
    let index = (index as u64).to_le_bytes();
    let hash = fnv1a(&[prompt.as_bytes(), &index]);
    WORDS[(hash % WORDS.len() as u64) as usize]
}

/// The `tokens` content tokens the mock answers `prompt` with.
pub fn mock_reply(prompt: &str, tokens: usize) -> Vec<String> {
    (0..tokens)
        .map(|i| {
            let word = word(prompt, i);
            if i == 0 {
                word.to_owned()
            } else {
                format!(" {word}")
            }
        })
        .collect()
}

/// The whole reply text: the concatenation of [`mock_reply`].
pub fn mock_text(prompt: &str, tokens: usize) -> String {
    mock_reply(prompt, tokens).concat()
}

/// The mock's prompt-token count: `ceil(prompt_bytes / 4) + 3 * messages`.
///
/// `prompt_bytes` is the total UTF-8 length of all message text (system prompt included),
/// `messages` the number of messages, a system prompt counting as one in every format, so
/// the same conversation costs the same in all four wire formats. Roughly what real
/// tokenizers give for English (4 bytes per token plus a few per message for the chat
/// template), and trivially recomputable by a test.
pub fn prompt_tokens_for(prompt_bytes: usize, messages: usize) -> u64 {
    prompt_bytes.div_ceil(4) as u64 + 3 * messages as u64
}

/// `N` from the first `[tokens=N]` in the prompt, if any.
pub(crate) fn tokens_marker(prompt: &str) -> Option<usize> {
    let start = prompt.find(TOKENS_MARKER)? + TOKENS_MARKER.len();
    let rest = &prompt[start..];
    let end = rest.find(']')?;
    rest[..end].trim().parse().ok()
}

/// Splits tool-call arguments into the ~8-byte fragments a provider streams them in
/// (never inside a UTF-8 character).
pub(crate) fn fragments(text: &str) -> Vec<String> {
    const FRAGMENT: usize = 8;
    let mut out = Vec::with_capacity(text.len() / FRAGMENT + 1);
    let mut current = String::with_capacity(FRAGMENT + 3);
    for ch in text.chars() {
        current.push(ch);
        if current.len() >= FRAGMENT {
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() || out.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_is_deterministic_and_prompt_dependent() {
        let a = mock_reply("hello", 20);
        assert_eq!(a, mock_reply("hello", 20));
        assert_ne!(a, mock_reply("hello!", 20));
        assert_eq!(a.len(), 20);
        assert!(!a[0].starts_with(' '));
        assert!(a[1..].iter().all(|t| t.starts_with(' ') && t.len() > 1));
        // A longer reply extends a shorter one: token i depends only on (prompt, i).
        assert_eq!(mock_reply("hello", 5), a[..5].to_vec());
        assert_eq!(mock_text("hello", 20), a.concat());
        assert!(mock_reply("hello", 0).is_empty());
    }

    #[test]
    fn vocabulary_is_big_enough_to_vary() {
        let distinct: std::collections::HashSet<_> =
            mock_reply("variety", 200).into_iter().collect();
        assert!(
            distinct.len() > 30,
            "only {} distinct tokens",
            distinct.len()
        );
    }

    #[test]
    fn prompt_tokens_formula() {
        assert_eq!(prompt_tokens_for(0, 0), 0);
        assert_eq!(prompt_tokens_for(1, 1), 4);
        assert_eq!(prompt_tokens_for(8, 2), 8);
        assert_eq!(prompt_tokens_for(9, 2), 9);
    }

    #[test]
    fn marker_and_fragments() {
        assert_eq!(tokens_marker("please [tokens=300] words"), Some(300));
        assert_eq!(tokens_marker("no marker"), None);
        assert_eq!(tokens_marker("[tokens=x]"), None);
        let text = r#"{"query":"héllo wörld, long enough"}"#;
        let parts = fragments(text);
        assert!(parts.len() > 3);
        assert_eq!(parts.concat(), text);
        assert!(parts.iter().all(|p| p.len() <= 11));
        assert_eq!(fragments(""), vec![String::new()]);
    }
}
