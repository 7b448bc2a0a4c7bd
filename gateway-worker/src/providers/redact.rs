//! Scrubbing keys out of text that leaves the worker.
//!
//! Provider error messages can quote the key they rejected (OpenAI: "Incorrect API key
//! provided: sk-abc***xyz"), and those messages go into outcomes, events and logs. The
//! configured key is removed verbatim, and anything shaped like a provider key is
//! masked, since a partially masked key is still a key leak.

/// Prefixes of provider key formats (OpenAI, Anthropic, Google, OpenRouter, Groq).
const KEY_PREFIXES: &[&str] = &["sk-", "AIza", "gsk_", "xai-"];

/// `text` with `secret` (if any) and key-shaped words replaced by `[redacted]`.
pub fn redact(text: &str, secret: Option<&str>) -> String {
    let mut text = match secret {
        Some(secret) if secret.len() >= 4 => text.replace(secret, "[redacted]"),
        _ => text.to_owned(),
    };
    for prefix in KEY_PREFIXES {
        let mut from = 0;
        while let Some(found) = text[from..].find(prefix) {
            let start = from + found;
            let starts_word = text[..start]
                .chars()
                .next_back()
                .is_none_or(|c| !is_key_char(c));
            let end = text[start..]
                .char_indices()
                .find(|(_, c)| !is_key_char(*c))
                .map_or(text.len(), |(i, _)| start + i);
            if starts_word && end - start >= prefix.len() + 4 {
                text.replace_range(start..end, "[redacted]");
                from = start + "[redacted]".len();
            } else {
                from = start + prefix.len();
            }
        }
    }
    text
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '*' | '.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_the_configured_key_and_masked_keys() {
        let text = "Incorrect API key provided: sk-abc***wxyz. You can find your key at ...";
        let out = redact(text, None);
        assert_eq!(
            out,
            "Incorrect API key provided: [redacted] You can find your key at ..."
        );
        let out = redact("bad key secret-value-123 here", Some("secret-value-123"));
        assert_eq!(out, "bad key [redacted] here");
        let out = redact("key=AIzaSyA1234567890abc failed", None);
        assert!(!out.contains("AIza"), "{out}");
    }

    #[test]
    fn leaves_ordinary_text_alone() {
        let text = "Rate limit reached for gpt-4o-mini in organization org-XXXX; task-ask sk- done";
        assert_eq!(redact(text, None), text);
    }
}
