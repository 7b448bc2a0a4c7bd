//! One reply, decided once and rendered by every wire format.
//!
//! Each format parses its request into a [`ChatRequest`] and renders a [`Reply`]; the
//! decisions in between (how many tokens, why it stopped, what the usage is, whether it is
//! a tool call) live here only, so the four formats cannot drift apart and a test can rely
//! on "same prompt, same answer, same numbers" across providers.

use std::time::{SystemTime, UNIX_EPOCH};

use super::content::{fnv1a, fragments, mock_reply, prompt_tokens_for, tokens_marker};
use super::options::MockOptions;

/// Output tokens an in-band refusal (Anthropic) reports: the API bills the tokens
/// generated up to the refusal.
pub const REFUSAL_OUTPUT_TOKENS: u64 = 3;

/// What the mock needs from a request, whatever its wire format.
#[derive(Clone, Debug, Default)]
pub(crate) struct ChatRequest {
    /// Upstream model (Azure: deployment id; Gemini: path model).
    pub model: String,
    /// Text of the last user message.
    pub prompt: String,
    /// Total bytes of all message text, system prompt included.
    pub text_bytes: usize,
    /// Message count, a system prompt counting as one.
    pub messages: usize,
    pub stream: bool,
    /// `max_completion_tokens` / `max_tokens` / `maxOutputTokens`.
    pub max_tokens: Option<u64>,
    /// OpenAI `stream_options.include_usage`.
    pub include_usage: bool,
    /// OpenAI `stream_options.include_obfuscation` (default true).
    pub include_obfuscation: bool,
    /// The tool the request forces a call to, if it does.
    pub tool: Option<String>,
}

/// A forced tool call.
#[derive(Clone, Debug)]
pub(crate) struct ToolCall {
    /// Deterministic: a hash of the prompt and tool name.
    pub id_hash: u64,
    pub name: String,
    /// `{"query":"<prompt>"}`.
    pub arguments: String,
    /// `arguments` in the ~8-byte pieces a stream carries them in.
    pub fragments: Vec<String>,
}

#[derive(Clone, Debug)]
pub(crate) enum Output {
    Text(Vec<String>),
    Tool(ToolCall),
    /// Anthropic refusal / Gemini blocked prompt: no content.
    Refused,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Finish {
    Stop,
    Length,
    ToolCalls,
    Refused,
}

/// Provider-neutral token counts; each format maps them to its own accounting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    /// All prompt tokens, cached and cache-written ones included.
    pub prompt: u64,
    /// Content tokens (= content chunks in a stream); reasoning not included.
    pub completion: u64,
    pub cached: u64,
    pub cache_write: u64,
    pub reasoning: u64,
}

#[derive(Clone, Debug)]
pub(crate) struct Reply {
    /// Per-server sequence number; response ids derive from it.
    pub seq: u64,
    /// Unix seconds.
    pub created: u64,
    pub model: String,
    pub output: Output,
    pub finish: Finish,
    pub usage: Usage,
}

/// All prompt tokens of `request`: the [`prompt_tokens_for`] count, grown to at least the
/// configured cached + cache-write tokens so the reported parts never exceed the whole.
pub(crate) fn prompt_tokens(request: &ChatRequest, options: &MockOptions) -> u64 {
    prompt_tokens_for(request.text_bytes, request.messages)
        .max(options.cached_prompt_tokens + options.cache_write_tokens)
}

impl Reply {
    /// Decides the reply to `request`; `refused` when a content-filter fault applies to a
    /// format that reports it inside a 200.
    pub(crate) fn decide(
        request: &ChatRequest,
        options: &MockOptions,
        refused: bool,
        seq: u64,
    ) -> Reply {
        let (output, finish) = if refused {
            (Output::Refused, Finish::Refused)
        } else if let Some(name) = &request.tool {
            let arguments = serde_json::json!({ "query": request.prompt }).to_string();
            let call = ToolCall {
                id_hash: fnv1a(&[request.prompt.as_bytes(), b"\0", name.as_bytes()]),
                name: name.clone(),
                fragments: fragments(&arguments),
                arguments,
            };
            (Output::Tool(call), Finish::ToolCalls)
        } else {
            let wanted = tokens_marker(&request.prompt)
                .unwrap_or_else(|| options.pace(&request.model).tokens_per_reply);
            match request.max_tokens {
                Some(max) if max < wanted as u64 => (
                    Output::Text(mock_reply(&request.prompt, max as usize)),
                    Finish::Length,
                ),
                _ => (
                    Output::Text(mock_reply(&request.prompt, wanted)),
                    Finish::Stop,
                ),
            }
        };
        let completion = match &output {
            Output::Text(tokens) => tokens.len() as u64,
            Output::Tool(call) => call.fragments.len() as u64,
            Output::Refused => REFUSAL_OUTPUT_TOKENS,
        };
        let cached = options.cached_prompt_tokens;
        let cache_write = options.cache_write_tokens;
        let prompt = prompt_tokens(request, options);
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Reply {
            seq,
            created,
            model: request.model.clone(),
            output,
            finish,
            usage: Usage {
                prompt,
                completion,
                cached,
                cache_write,
                reasoning: options.reasoning_tokens,
            },
        }
    }

    /// A forced tool call's arguments, cut before their JSON ends (`{"query":"<prompt>`),
    /// as a provider that streams arguments as text can send them.
    pub(crate) fn break_tool_arguments(&mut self) {
        if let Output::Tool(call) = &mut self.output {
            call.arguments
                .truncate(call.arguments.len().saturating_sub(2));
            call.fragments = fragments(&call.arguments);
            self.usage.completion = call.fragments.len() as u64;
        }
    }

    /// How many content chunks a stream of this reply carries.
    pub(crate) fn content_chunks(&self) -> usize {
        match &self.output {
            Output::Text(tokens) => tokens.len(),
            Output::Tool(call) => call.fragments.len(),
            Output::Refused => 0,
        }
    }
}

/// Text of a JSON message `content` that is either a string or a list of parts/blocks with
/// a `text` field (OpenAI parts, Anthropic blocks, Gemini parts); parts joined with `\n`.
/// Returns the text and its byte count without separators.
pub(crate) fn text_of(content: &serde_json::Value) -> (String, usize) {
    match content {
        serde_json::Value::String(s) => (s.clone(), s.len()),
        serde_json::Value::Array(parts) => {
            let texts: Vec<&str> = parts.iter().filter_map(part_text).collect();
            (texts.join("\n"), texts.iter().map(|t| t.len()).sum())
        }
        _ => (String::new(), 0),
    }
}

fn part_text(part: &serde_json::Value) -> Option<&str> {
    if let Some(text) = part.get("text").and_then(|t| t.as_str()) {
        return Some(text);
    }
    // Anthropic tool_result blocks carry their text in `content`.
    part.get("content").and_then(|c| c.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::content::mock_text;
    use crate::mock::options::ModelBehavior;

    fn request(prompt: &str) -> ChatRequest {
        ChatRequest {
            model: "m".into(),
            prompt: prompt.into(),
            text_bytes: prompt.len(),
            messages: 1,
            ..ChatRequest::default()
        }
    }

    #[test]
    fn tokens_from_options_marker_and_cap() {
        let mut options = MockOptions::default();
        let reply = Reply::decide(&request("hi"), &options, false, 1);
        assert_eq!(reply.finish, Finish::Stop);
        assert_eq!(reply.usage.completion, 12);
        assert_eq!(reply.usage.prompt, prompt_tokens_for(2, 1));
        let Output::Text(tokens) = &reply.output else {
            panic!("text expected")
        };
        assert_eq!(tokens.concat(), mock_text("hi", 12));

        let marked = Reply::decide(&request("x [tokens=40]"), &options, false, 1);
        assert_eq!(marked.usage.completion, 40);

        let mut capped = request("x [tokens=40]");
        capped.max_tokens = Some(5);
        let reply = Reply::decide(&capped, &options, false, 1);
        assert_eq!((reply.usage.completion, reply.finish), (5, Finish::Length));

        options.per_model.insert(
            "m".into(),
            ModelBehavior {
                tokens_per_reply: Some(3),
                ..ModelBehavior::default()
            },
        );
        assert_eq!(
            Reply::decide(&request("hi"), &options, false, 1)
                .usage
                .completion,
            3
        );
    }

    #[test]
    fn cached_tokens_never_exceed_the_prompt() {
        let options = MockOptions {
            cached_prompt_tokens: 1024,
            cache_write_tokens: 10,
            ..MockOptions::default()
        };
        let usage = Reply::decide(&request("short"), &options, false, 1).usage;
        assert_eq!(
            (usage.prompt, usage.cached, usage.cache_write),
            (1034, 1024, 10)
        );
    }

    #[test]
    fn tool_call_is_deterministic() {
        let mut req = request("find \"rust\"");
        req.tool = Some("search".into());
        let a = Reply::decide(&req, &MockOptions::default(), false, 1);
        let b = Reply::decide(&req, &MockOptions::default(), false, 2);
        let (Output::Tool(a_call), Output::Tool(b_call)) = (&a.output, &b.output) else {
            panic!("tool calls expected")
        };
        assert_eq!(a_call.id_hash, b_call.id_hash);
        assert_eq!(a_call.arguments, r#"{"query":"find \"rust\""}"#);
        assert_eq!(a_call.fragments.concat(), a_call.arguments);
        assert_eq!(a.finish, Finish::ToolCalls);
        assert_eq!(a.usage.completion, a_call.fragments.len() as u64);
    }
}
