//! The OpenAI chat-completions request body a job carries, as producers already write it.
//!
//! Fields llmq reads or translates for other providers are typed; every other field is
//! kept in `extra` and forwarded untouched to OpenAI-compatible upstreams, so a producer
//! can use a new OpenAI parameter the day it ships without waiting for llmq.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `POST /v1/chat/completions` body. `model`, `stream` and `stream_options` are decided by
/// the job and the worker, so they are accepted here but replaced before forwarding.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    /// Ignored: the job's `model` (a logical model) decides where the job runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    /// Deprecated by OpenAI in favour of `max_completion_tokens`; still honoured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    /// `{"type":"text"}`, `{"type":"json_object"}` or `{"type":"json_schema",...}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<Value>,
    /// Ignored: the job's `stream` flag decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Ignored: the worker always asks for usage on streams it can.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<Value>,
    /// Every other OpenAI field (`logit_bias`, `reasoning_effort`, `user`, ...), forwarded as is.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatRequest {
    /// A request with one user message.
    pub fn user(prompt: impl Into<String>) -> Self {
        Self {
            messages: vec![Message::text(Role::User, prompt)],
            ..Self::default()
        }
    }

    /// The completion-token cap, whichever of the two OpenAI fields carried it.
    pub fn max_output_tokens(&self) -> Option<u32> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    /// What makes the request impossible to mean, if anything, naming the field: no
    /// messages, a message without content where its role needs some (OpenAI refuses
    /// those too), a tool result without its call id. Producers and workers check the
    /// same rules, so a job is refused before it reaches the queue.
    pub fn problem(&self) -> Option<String> {
        if self.messages.is_empty() {
            return Some("request.messages must not be empty".into());
        }
        self.messages.iter().enumerate().find_map(|(i, message)| {
            message
                .problem()
                .map(|p| format!("request.messages[{i}]: {p}"))
        })
    }
}

/// `stop`: one sequence or a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Stop::One(one) => vec![one.clone()],
            Stop::Many(many) => many.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::System => "system",
            Role::Developer => "developer",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

/// One chat message. A struct rather than one enum per role: producers send loosely
/// shaped messages, and the worker's validation gives a better error than serde would.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Message {
    pub role: Role,
    /// Text or content parts; absent on assistant messages that only call tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Assistant messages: the tool calls the model made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// Tool messages: which call this is the result of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Message {
    pub fn text(role: Role, text: impl Into<String>) -> Self {
        Self {
            role,
            content: Some(Content::Text(text.into())),
            name: None,
            tool_calls: None,
            tool_call_id: None,
            extra: Map::new(),
        }
    }

    /// Why this message cannot be sent, if it cannot.
    fn problem(&self) -> Option<String> {
        let role = self.role.as_str();
        let empty = match &self.content {
            None => Some("null"),
            Some(Content::Parts(parts)) if parts.is_empty() => Some("an empty array"),
            Some(_) => None,
        };
        match self.role {
            Role::System | Role::Developer | Role::User => {
                empty.map(|got| format!("a {role} message needs content (got {got})"))
            }
            Role::Tool if self.tool_call_id.is_none() => {
                Some("a tool message needs tool_call_id".into())
            }
            Role::Tool => empty.map(|got| format!("a tool message needs content (got {got})")),
            Role::Assistant => {
                let calls = self.tool_calls.as_ref().is_some_and(|c| !c.is_empty())
                    || ["function_call", "refusal", "audio"]
                        .iter()
                        .any(|key| self.extra.get(*key).is_some_and(|v| !v.is_null()));
                (empty.is_some() && !calls)
                    .then(|| "an assistant message needs content or tool_calls".to_owned())
            }
        }
    }

    /// The message's text: the string content, or its text parts joined.
    pub fn text_content(&self) -> String {
        self.content
            .as_ref()
            .map(Content::joined_text)
            .unwrap_or_default()
    }
}

/// Message content: a plain string or a list of typed parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

impl Content {
    /// All text in the content; non-text parts are skipped.
    pub fn joined_text(&self) -> String {
        match self {
            Content::Text(text) => text.clone(),
            Content::Parts(parts) => parts
                .iter()
                .filter_map(|part| match part {
                    ContentPart::Text { text } => Some(text.as_str()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join(""),
        }
    }
}

/// A content part. Text and images are typed because other providers need them
/// translated; any other part type is kept verbatim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    Text {
        text: String,
    },
    ImageUrl {
        image_url: ImageUrl,
    },
    /// Any other part (`input_audio`, `file`, ...), forwarded as is.
    #[serde(untagged)]
    Other(Map<String, Value>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ImageUrl {
    /// An `https://` URL or a `data:<mime>;base64,<data>` URL.
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A tool the model may call. Only function tools exist in chat completions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Tool {
    /// Always `function`.
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionDef,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FunctionDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A JSON Schema object describing the arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// `tool_choice`: `"none" | "auto" | "required"` or a named function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ToolChoice {
    Mode(String),
    Named(NamedToolChoice),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NamedToolChoice {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: NamedFunction,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NamedFunction {
    pub name: String,
}

/// A tool call made by the model (in a response, or echoed back in a later request).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ToolCall {
    pub id: String,
    /// Always `function`.
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionCall,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FunctionCall {
    pub name: String,
    /// The arguments as a JSON-encoded string, exactly as the model produced them.
    pub arguments: String,
}

/// A fragment of a tool call in a stream: the first fragment of a call carries `id` and
/// `name`, later ones carry pieces of `arguments` to append.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ToolCallDelta {
    pub index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_survive_a_round_trip() {
        let body = json!({
            "model": "ignored",
            "messages": [{"role": "user", "content": "hi", "x_vendor": 1}],
            "reasoning_effort": "low",
            "logit_bias": {"50256": -100},
            "max_completion_tokens": 5
        });
        let request: ChatRequest = serde_json::from_value(body.clone()).unwrap();
        assert_eq!(request.extra["reasoning_effort"], "low");
        assert_eq!(request.messages[0].extra["x_vendor"], 1);
        assert_eq!(request.max_output_tokens(), Some(5));
        assert_eq!(serde_json::to_value(&request).unwrap(), body);
    }

    #[test]
    fn content_parts_keep_unknown_part_types() {
        let body = json!([
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
            {"type": "input_audio", "input_audio": {"data": "AAA", "format": "wav"}}
        ]);
        let content: Content = serde_json::from_value(body.clone()).unwrap();
        let Content::Parts(parts) = &content else {
            panic!("expected parts")
        };
        assert!(matches!(parts[1], ContentPart::ImageUrl { .. }));
        assert!(matches!(parts[2], ContentPart::Other(_)));
        assert_eq!(content.joined_text(), "look");
        assert_eq!(serde_json::to_value(&content).unwrap(), body);
    }

    #[test]
    fn stop_and_tool_choice_accept_both_shapes() {
        let stop: Stop = serde_json::from_value(json!("END")).unwrap();
        assert_eq!(stop.to_vec(), vec!["END"]);
        let stop: Stop = serde_json::from_value(json!(["a", "b"])).unwrap();
        assert_eq!(stop.to_vec(), vec!["a", "b"]);
        let choice: ToolChoice = serde_json::from_value(json!("auto")).unwrap();
        assert_eq!(choice, ToolChoice::Mode("auto".into()));
        let choice: ToolChoice =
            serde_json::from_value(json!({"type": "function", "function": {"name": "f"}})).unwrap();
        assert!(matches!(choice, ToolChoice::Named(_)));
    }

    #[test]
    fn unknown_role_is_rejected() {
        let err = serde_json::from_value::<Message>(json!({"role": "robot", "content": "x"}));
        assert!(err.is_err());
    }

    #[test]
    fn messages_that_cannot_be_meant_are_named() {
        let request = |messages: Value| -> ChatRequest {
            serde_json::from_value(json!({ "messages": messages })).unwrap()
        };
        let problem = |messages: Value| request(messages).problem();
        assert_eq!(
            problem(json!([])).as_deref(),
            Some("request.messages must not be empty")
        );
        assert_eq!(
            problem(json!([{"role": "user", "content": null}])).as_deref(),
            Some("request.messages[0]: a user message needs content (got null)")
        );
        assert_eq!(
            problem(json!([{"role": "system", "content": "s"}, {"role": "user", "content": []}]))
                .as_deref(),
            Some("request.messages[1]: a user message needs content (got an empty array)")
        );
        assert!(problem(json!([{"role": "user"}])).is_some());
        assert!(problem(json!([{"role": "tool", "content": "42"}])).is_some());
        assert!(
            problem(json!([{"role": "user", "content": "q"}, {"role": "assistant"}])).is_some()
        );
        // What OpenAI accepts, llmq accepts.
        for ok in [
            json!([{"role": "user", "content": ""}]),
            json!([{"role": "user", "content": [{"type": "text", "text": "x"}]}]),
            json!([{"role": "user", "content": "q"},
                   {"role": "assistant", "content": null, "tool_calls": [
                       {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                   {"role": "tool", "tool_call_id": "c1", "content": "42"}]),
        ] {
            assert_eq!(problem(ok.clone()), None, "{ok}");
        }
    }
}
