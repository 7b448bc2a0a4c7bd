//! OpenAI chat request -> Messages request.

use crate::providers::convert::{
    Speaker, content_items, data_url, function_tools, invalid, split_turns,
};
use crate::providers::tool_arguments::as_object;
use llmq_schemas::{ChatRequest, Content, Message, ToolChoice};
use serde::Serialize;
use serde_json::{Value, json};

use super::FALLBACK_MAX_TOKENS;
use crate::providers::{CallSpec, ProviderError};

// ---- request wire types -----------------------------------------------------------------

#[derive(Debug, Serialize)]
pub(super) struct MessagesRequest<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<String>,
    messages: Vec<Turn>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<&'a Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<ToolDef<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_config: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<&'a Value>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
}

#[derive(Debug, Serialize)]
struct Turn {
    role: &'static str,
    content: Vec<Block>,
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block {
    Text {
        text: String,
    },
    Image {
        source: ImageSource,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    ToolResult {
        tool_use_id: String,
        content: ToolResultContent,
    },
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum ToolResultContent {
    Text(String),
    Blocks(Vec<Block>),
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ImageSource {
    Base64 { media_type: String, data: String },
    Url { url: String },
}

#[derive(Debug, Serialize)]
struct ToolDef<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    input_schema: Value,
}
// ---- conversions ------------------------------------------------------------------------

pub(super) fn messages_request<'a>(
    call: &CallSpec<'a>,
) -> Result<MessagesRequest<'a>, ProviderError> {
    let request = call.request;
    if request.n.is_some_and(|n| n > 1) {
        return Err(invalid(
            "Anthropic returns one answer per request: n > 1 is not supported",
        ));
    }
    let (system, messages) = turns(&request.messages)?;
    Ok(MessagesRequest {
        model: call.upstream_model,
        max_tokens: request
            .max_output_tokens()
            .or(call.default_max_tokens)
            .unwrap_or(FALLBACK_MAX_TOKENS),
        system,
        messages,
        temperature: request.temperature,
        top_p: request.top_p,
        top_k: request.extra.get("top_k"),
        stop_sequences: request
            .stop
            .as_ref()
            .map(|stop| stop.to_vec())
            .unwrap_or_default(),
        tools: tool_defs(request)?,
        tool_choice: tool_choice(request)?,
        metadata: ["user", "safety_identifier"]
            .iter()
            .find_map(|field| request.extra.get(*field).and_then(Value::as_str))
            .map(|user| json!({ "user_id": user })),
        output_config: output_config(request.response_format.as_ref()),
        thinking: request.extra.get("thinking"),
        stream: call.stream,
    })
}

/// The `system` text and the user/assistant turns.
fn turns(messages: &[Message]) -> Result<(Option<String>, Vec<Turn>), ProviderError> {
    let conversation = split_turns(messages, |speaker, at, message| {
        Ok(match speaker {
            Speaker::User => ("user", content_blocks(message.content.as_ref(), at)?),
            Speaker::Assistant => ("assistant", assistant_blocks(message, at)?),
            Speaker::Tool => ("user", vec![tool_result(message, at)?]),
        })
    })?;
    let system = (!conversation.system.is_empty()).then(|| conversation.system.join("\n\n"));
    let turns = conversation
        .turns
        .into_iter()
        .map(|(role, content)| Turn { role, content })
        .collect();
    Ok((system, turns))
}

fn content_blocks(content: Option<&Content>, at: usize) -> Result<Vec<Block>, ProviderError> {
    content_items(
        content,
        at,
        "Anthropic",
        |text| Block::Text { text },
        image_block,
    )
}

fn image_block(url: &str, at: usize) -> Result<Block, ProviderError> {
    let source = if let Some((media_type, data)) = data_url(url) {
        ImageSource::Base64 {
            media_type: media_type.to_owned(),
            data: data.to_owned(),
        }
    } else if url.starts_with("https://") || url.starts_with("http://") {
        ImageSource::Url {
            url: url.to_owned(),
        }
    } else {
        return Err(invalid(format!(
            "messages[{at}]: an image must be a base64 data: URL or an http(s) URL"
        )));
    };
    Ok(Block::Image { source })
}

fn assistant_blocks(message: &Message, at: usize) -> Result<Vec<Block>, ProviderError> {
    let mut blocks = content_blocks(message.content.as_ref(), at)?;
    for call in message.tool_calls.iter().flatten() {
        blocks.push(Block::ToolUse {
            id: call.id.clone(),
            name: call.function.name.clone(),
            input: as_object(&call.function.arguments),
        });
    }
    Ok(blocks)
}

fn tool_result(message: &Message, at: usize) -> Result<Block, ProviderError> {
    let tool_use_id = message
        .tool_call_id
        .clone()
        .ok_or_else(|| invalid(format!("messages[{at}]: a tool message needs tool_call_id")))?;
    let content = match &message.content {
        None => ToolResultContent::Text(String::new()),
        Some(Content::Text(text)) => ToolResultContent::Text(text.clone()),
        Some(parts) => ToolResultContent::Blocks(content_blocks(Some(parts), at)?),
    };
    Ok(Block::ToolResult {
        tool_use_id,
        content,
    })
}

fn tool_defs(request: &ChatRequest) -> Result<Vec<ToolDef<'_>>, ProviderError> {
    Ok(function_tools(request, "Anthropic")?
        .into_iter()
        .map(|function| ToolDef {
            name: &function.name,
            description: function.description.as_deref(),
            input_schema: function
                .parameters
                .clone()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
        })
        .collect())
}

fn tool_choice(request: &ChatRequest) -> Result<Option<Value>, ProviderError> {
    if request.tools.as_ref().is_none_or(Vec::is_empty) {
        return Ok(None);
    }
    let serial = request.parallel_tool_calls == Some(false);
    let mut choice = match &request.tool_choice {
        None if serial => json!({"type": "auto"}),
        None => return Ok(None),
        Some(ToolChoice::Mode(mode)) => match mode.as_str() {
            "auto" => json!({"type": "auto"}),
            "required" => json!({"type": "any"}),
            "none" => return Ok(Some(json!({"type": "none"}))),
            other => return Err(invalid(format!("unknown tool_choice {other:?}"))),
        },
        Some(ToolChoice::Named(named)) => json!({"type": "tool", "name": named.function.name}),
    };
    if serial {
        choice["disable_parallel_tool_use"] = Value::Bool(true);
    }
    Ok(Some(choice))
}

/// `response_format: json_schema` as Anthropic structured outputs.
fn output_config(format: Option<&Value>) -> Option<Value> {
    let format = format?;
    if format.get("type").and_then(Value::as_str) != Some("json_schema") {
        return None;
    }
    let schema = format.pointer("/json_schema/schema")?;
    Some(json!({"format": {"type": "json_schema", "schema": schema}}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Adapter;
    use crate::providers::anthropic::tests::{adapter, spec};
    use llmq_schemas::ErrorType;

    fn body_of(request: &ChatRequest, stream: bool) -> Value {
        let call = adapter().build(&spec(request, stream)).unwrap();
        serde_json::from_slice(&call.body).unwrap()
    }

    fn request(value: Value) -> ChatRequest {
        serde_json::from_value(value).unwrap()
    }
    #[test]
    fn translates_a_rich_request_exactly() {
        let request = request(json!({
            "model": "chat-smart",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "What is the weather in Paris and Rome?"},
                {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
                {"role": "user", "content": [
                    {"type": "text", "text": "Also look at these."},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"}}
                ]},
                {"role": "assistant", "content": "Checking.", "tool_calls": [
                    {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "toolu_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Rome\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "18C, sunny"},
                {"role": "tool", "tool_call_id": "toolu_2", "content": "24C"},
                {"role": "user", "content": "Thanks. Summarize."}
            ],
            "max_completion_tokens": 300,
            "temperature": 0.2,
            "top_p": 0.9,
            "stop": ["END"],
            "tools": [{"type": "function", "function": {
                "name": "get_weather", "description": "Current weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
            }}],
            "tool_choice": "required",
            "parallel_tool_calls": false,
            "user": "user-42",
            "seed": 7,
            "presence_penalty": 0.5,
            "logit_bias": {"50256": -100},
            "reasoning_effort": "low",
            "store": true
        }));
        let expected = json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 300,
            "system": "Be brief.\n\nUse metric units.",
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "What is the weather in Paris and Rome?"},
                    {"type": "text", "text": "Also look at these."},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}
                ]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Rome"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C, sunny"},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": "24C"},
                    {"type": "text", "text": "Thanks. Summarize."}
                ]}
            ],
            "temperature": 0.2,
            "top_p": 0.9,
            "stop_sequences": ["END"],
            "tools": [{"name": "get_weather", "description": "Current weather",
                       "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "metadata": {"user_id": "user-42"},
            "stream": true
        });
        assert_eq!(body_of(&request, true), expected);
    }

    #[test]
    fn max_tokens_is_never_omitted() {
        let request = ChatRequest::user("hi");
        assert_eq!(body_of(&request, false)["max_tokens"], FALLBACK_MAX_TOKENS);
        let call = adapter()
            .build(&CallSpec {
                default_max_tokens: Some(1024),
                ..spec(&request, false)
            })
            .unwrap();
        let body: Value = serde_json::from_slice(&call.body).unwrap();
        assert_eq!(body["max_tokens"], 1024);
        assert!(body.get("stream").is_none());
        let mut capped = ChatRequest::user("hi");
        capped.max_tokens = Some(77);
        let call = adapter()
            .build(&CallSpec {
                default_max_tokens: Some(1024),
                ..spec(&capped, false)
            })
            .unwrap();
        let body: Value = serde_json::from_slice(&call.body).unwrap();
        assert_eq!(body["max_tokens"], 77);
    }

    #[test]
    fn tool_choice_modes_and_structured_output() {
        let with = |choice: Value| {
            let mut value = json!({
                "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"type": "function", "function": {"name": "f"}}],
                "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
            });
            if !choice.is_null() {
                value["tool_choice"] = choice;
            }
            body_of(&request(value), false)
        };
        assert_eq!(with(json!("auto"))["tool_choice"], json!({"type": "auto"}));
        assert_eq!(with(json!("none"))["tool_choice"], json!({"type": "none"}));
        assert_eq!(
            with(json!({"type": "function", "function": {"name": "f"}}))["tool_choice"],
            json!({"type": "tool", "name": "f"})
        );
        let body = with(Value::Null);
        assert!(body.get("tool_choice").is_none());
        assert_eq!(
            body["tools"],
            json!([{"name": "f", "input_schema": {"type": "object", "properties": {}}}])
        );
        assert_eq!(
            body["output_config"],
            json!({"format": {"type": "json_schema", "schema": {"type": "object"}}})
        );
        let body = body_of(
            &request(json!({
                "messages": [{"role": "user", "content": "hi"}],
                "response_format": {"type": "json_object"},
                "top_k": 5,
                "thinking": {"type": "enabled", "budget_tokens": 2048}
            })),
            false,
        );
        assert!(body.get("output_config").is_none());
        assert_eq!(body["top_k"], 5);
        assert_eq!(body["thinking"]["budget_tokens"], 2048);
    }

    #[test]
    fn untranslatable_requests_are_invalid() {
        let cases = [
            json!({"messages": [{"role": "tool", "content": "x"}]}),
            json!({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}}]}]}),
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]}),
            json!({"messages": [{"role": "user", "content": "hi"}], "n": 2}),
            json!({"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "sometimes"}),
        ];
        for case in cases {
            let err = adapter()
                .build(&spec(&request(case.clone()), false))
                .unwrap_err();
            assert_eq!(err.class, ErrorType::InvalidRequest, "{case}");
        }
    }

    #[test]
    fn a_history_s_tool_arguments_are_always_sent_as_an_object() {
        let body = body_of(
            &request(json!({"messages": [{"role": "assistant", "tool_calls": [
                {"id": "t1", "type": "function", "function": {"name": "f", "arguments": ""}},
                {"id": "t2", "type": "function", "function": {"name": "f", "arguments": "{\"q\": \"cut"}},
                {"id": "t3", "type": "function", "function": {"name": "f", "arguments": "[1]"}},
                {"id": "t4", "type": "function", "function": {"name": "f", "arguments": "{\"q\": 1}"}}]}]})),
            false,
        );
        let inputs: Vec<&Value> = body["messages"][0]["content"]
            .as_array()
            .unwrap()
            .iter()
            .map(|block| &block["input"])
            .collect();
        assert_eq!(
            inputs,
            [
                &json!({}),
                &json!({"_raw_arguments": "{\"q\": \"cut"}),
                &json!({"_raw_arguments": "[1]"}),
                &json!({"q": 1}),
            ]
        );
    }
}
