//! Usage estimates, for when a provider reports none.
//!
//! A stream cut before its usage chunk, or a server that ignores `stream_options`, still
//! consumed tokens. Reporting zero would undercount silently; the estimate is marked
//! `usage_source: estimated` in the usage event so billing can tell.
//!
//! The rule is OpenAI's published rule of thumb: about 4 bytes of English text per
//! token, plus 3 tokens of framing per message. It is an estimate, not a tokenizer.

use llmq_schemas::{ChatRequest, Usage};

pub const BYTES_PER_TOKEN: u64 = 4;
pub const TOKENS_PER_MESSAGE: u64 = 3;

/// Tokens for `bytes` of text: `ceil(bytes / 4)`.
pub fn tokens_for_bytes(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(BYTES_PER_TOKEN)
}

/// Estimated usage of a request and the output produced for it.
pub fn estimate(request: &ChatRequest, output_bytes: usize) -> Usage {
    let prompt_bytes: usize = request
        .messages
        .iter()
        .map(|m| m.text_content().len())
        .sum();
    let prompt =
        tokens_for_bytes(prompt_bytes) + TOKENS_PER_MESSAGE * request.messages.len() as u64;
    Usage::new(prompt, tokens_for_bytes(output_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_bytes_per_token_plus_message_framing() {
        let request = ChatRequest::user("abcdefghi"); // 9 bytes -> 3 tokens, + 3
        assert_eq!(estimate(&request, 8), Usage::new(6, 2));
        assert_eq!(estimate(&request, 0).completion_tokens, 0);
    }
}
