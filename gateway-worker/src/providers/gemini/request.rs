//! OpenAI chat request -> `GenerateContentRequest`.

use llmq_schemas::{ChatRequest, Content, Message, Role, ToolChoice};
use serde::Serialize;
use serde_json::{Value, json};

use super::signature::signature_of;
use crate::providers::ProviderError;
use crate::providers::convert::{
    Speaker, content_items, data_url, function_tools, invalid, split_turns,
};
use crate::providers::tool_arguments::as_object;

// ---- request wire types -----------------------------------------------------------------

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct GenerateRequest<'a> {
    contents: Vec<WireContent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<SystemInstruction>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<Value>,
    #[serde(skip_serializing_if = "GenerationConfig::is_empty")]
    generation_config: GenerationConfig<'a>,
}

#[derive(Debug, Serialize)]
struct SystemInstruction {
    parts: Vec<Part>,
}

#[derive(Debug, Serialize)]
struct WireContent {
    role: &'static str,
    parts: Vec<Part>,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct Part {
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    inline_data: Option<InlineData>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file_data: Option<FileData>,
    #[serde(skip_serializing_if = "Option::is_none")]
    function_call: Option<OutgoingCall>,
    #[serde(skip_serializing_if = "Option::is_none")]
    function_response: Option<FunctionResponse>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thought_signature: Option<String>,
}

impl Part {
    fn text(text: String) -> Self {
        Self {
            text: Some(text),
            ..Self::default()
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct InlineData {
    mime_type: String,
    data: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct FileData {
    #[serde(skip_serializing_if = "Option::is_none")]
    mime_type: Option<&'static str>,
    file_uri: String,
}

#[derive(Debug, Serialize)]
struct OutgoingCall {
    name: String,
    args: Value,
}

#[derive(Debug, Serialize)]
struct FunctionResponse {
    name: String,
    response: Value,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct WireTool<'a> {
    function_declarations: Vec<FunctionDeclaration<'a>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct FunctionDeclaration<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters_json_schema: Option<&'a Value>,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    candidate_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_mime_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_json_schema: Option<&'a Value>,
}

impl GenerationConfig<'_> {
    fn is_empty(&self) -> bool {
        self.temperature.is_none()
            && self.top_p.is_none()
            && self.top_k.is_none()
            && self.max_output_tokens.is_none()
            && self.stop_sequences.is_empty()
            && self.candidate_count.is_none()
            && self.seed.is_none()
            && self.presence_penalty.is_none()
            && self.frequency_penalty.is_none()
            && self.response_mime_type.is_none()
            && self.response_json_schema.is_none()
    }
}

// ---- conversions ------------------------------------------------------------------------

pub(super) fn generate_request(
    request: &ChatRequest,
) -> Result<GenerateRequest<'_>, ProviderError> {
    let (system_instruction, contents) = contents(&request.messages)?;
    let tools = function_declarations(request)?;
    Ok(GenerateRequest {
        contents,
        system_instruction,
        tool_config: tool_config(request)?,
        tools: if tools.is_empty() {
            Vec::new()
        } else {
            vec![WireTool {
                function_declarations: tools,
            }]
        },
        generation_config: generation_config(request),
    })
}

fn generation_config(request: &ChatRequest) -> GenerationConfig<'_> {
    let response_format = request.response_format.as_ref();
    let format_type = response_format
        .and_then(|f| f.get("type"))
        .and_then(Value::as_str);
    let json_output = matches!(format_type, Some("json_object" | "json_schema"));
    GenerationConfig {
        temperature: request.temperature,
        top_p: request.top_p,
        top_k: request.extra.get("top_k"),
        max_output_tokens: request.max_output_tokens(),
        stop_sequences: request
            .stop
            .as_ref()
            .map(|stop| stop.to_vec())
            .unwrap_or_default(),
        candidate_count: request.n,
        seed: request.seed,
        presence_penalty: request.presence_penalty,
        frequency_penalty: request.frequency_penalty,
        response_mime_type: json_output.then_some("application/json"),
        response_json_schema: response_format
            .filter(|_| format_type == Some("json_schema"))
            .and_then(|f| f.pointer("/json_schema/schema")),
    }
}

/// The system instruction and the user/model turns.
fn contents(
    messages: &[Message],
) -> Result<(Option<SystemInstruction>, Vec<WireContent>), ProviderError> {
    let conversation = split_turns(messages, |speaker, at, message| {
        Ok(match speaker {
            Speaker::User => ("user", content_parts(message.content.as_ref(), at)?),
            Speaker::Assistant => ("model", model_parts(message, at)?),
            Speaker::Tool => ("user", vec![function_response(messages, at)?]),
        })
    })?;
    let system = (!conversation.system.is_empty()).then(|| SystemInstruction {
        parts: conversation.system.into_iter().map(Part::text).collect(),
    });
    let contents = conversation
        .turns
        .into_iter()
        .map(|(role, parts)| WireContent { role, parts })
        .collect();
    Ok((system, contents))
}

fn content_parts(content: Option<&Content>, at: usize) -> Result<Vec<Part>, ProviderError> {
    content_items(content, at, "Gemini", Part::text, image_part)
}

fn image_part(url: &str, at: usize) -> Result<Part, ProviderError> {
    if let Some((mime_type, data)) = data_url(url) {
        return Ok(Part {
            inline_data: Some(InlineData {
                mime_type: mime_type.to_owned(),
                data: data.to_owned(),
            }),
            ..Part::default()
        });
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(Part {
            file_data: Some(FileData {
                mime_type: mime_from_extension(url),
                file_uri: url.to_owned(),
            }),
            ..Part::default()
        });
    }
    Err(invalid(format!(
        "messages[{at}]: an image must be a base64 data: URL or an http(s) URL"
    )))
}

fn mime_from_extension(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let extension = path.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match extension.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        _ => return None,
    })
}

fn model_parts(message: &Message, at: usize) -> Result<Vec<Part>, ProviderError> {
    let mut parts = content_parts(message.content.as_ref(), at)?;
    for call in message.tool_calls.iter().flatten() {
        parts.push(Part {
            function_call: Some(OutgoingCall {
                name: call.function.name.clone(),
                args: as_object(&call.function.arguments),
            }),
            thought_signature: signature_of(&call.id),
            ..Part::default()
        });
    }
    Ok(parts)
}

/// The result of an earlier call, named after it: the latest assistant call with that id.
fn function_response(messages: &[Message], at: usize) -> Result<Part, ProviderError> {
    let message = &messages[at];
    let id = message
        .tool_call_id
        .as_deref()
        .ok_or_else(|| invalid(format!("messages[{at}]: a tool message needs tool_call_id")))?;
    let name = messages[..at]
        .iter()
        .rev()
        .filter(|m| m.role == Role::Assistant)
        .flat_map(|m| m.tool_calls.iter().flatten())
        .find(|call| call.id == id)
        .map(|call| call.function.name.clone())
        .ok_or_else(|| {
            invalid(format!(
                "messages[{at}]: tool_call_id {id:?} matches no earlier assistant tool call"
            ))
        })?;
    Ok(Part {
        function_response: Some(FunctionResponse {
            name,
            response: json!({ "output": message.text_content() }),
        }),
        ..Part::default()
    })
}

fn function_declarations(
    request: &ChatRequest,
) -> Result<Vec<FunctionDeclaration<'_>>, ProviderError> {
    Ok(function_tools(request, "Gemini")?
        .into_iter()
        .map(|function| FunctionDeclaration {
            name: &function.name,
            description: function.description.as_deref(),
            parameters_json_schema: function.parameters.as_ref(),
        })
        .collect())
}

fn tool_config(request: &ChatRequest) -> Result<Option<Value>, ProviderError> {
    if request.tools.as_ref().is_none_or(Vec::is_empty) {
        return Ok(None);
    }
    let config = match &request.tool_choice {
        None => return Ok(None),
        Some(ToolChoice::Mode(mode)) => match mode.as_str() {
            "auto" => json!({"mode": "AUTO"}),
            "required" => json!({"mode": "ANY"}),
            "none" => json!({"mode": "NONE"}),
            other => return Err(invalid(format!("unknown tool_choice {other:?}"))),
        },
        Some(ToolChoice::Named(named)) => {
            json!({"mode": "ANY", "allowedFunctionNames": [named.function.name]})
        }
    };
    Ok(Some(json!({ "functionCallingConfig": config })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Adapter;
    use crate::providers::gemini::signature::call_id;
    use crate::providers::gemini::tests::{adapter, spec};
    use llmq_schemas::ErrorType;

    fn request(value: Value) -> ChatRequest {
        serde_json::from_value(value).unwrap()
    }

    fn body_of(request: &ChatRequest) -> Value {
        let call = adapter().build(&spec(request, false)).unwrap();
        serde_json::from_slice(&call.body).unwrap()
    }

    #[test]
    fn translates_a_rich_request_exactly() {
        let signed_id = call_id(0, Some("CiQB0e2Kb+sig/x="));
        let request = request(json!({
            "model": "gemini-flash",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": "Use metric units."},
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather in Paris? See the photos."},
                    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/paris.PNG?size=large"}}
                ]},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"id": signed_id, "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_1", "type": "function", "function": {"name": "get_time", "arguments": ""}}
                ]},
                {"role": "tool", "tool_call_id": signed_id, "content": "18C"},
                {"role": "tool", "tool_call_id": "call_1", "content": "noon"},
                {"role": "user", "content": "And tomorrow?"}
            ],
            "max_tokens": 200,
            "temperature": 0.3,
            "top_p": 0.8,
            "n": 2,
            "seed": 11,
            "stop": "END",
            "tools": [
                {"type": "function", "function": {"name": "get_weather", "description": "Weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": false}}},
                {"type": "function", "function": {"name": "get_time"}}
            ],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}},
            "logit_bias": {"1": 1},
            "user": "u-1",
            "reasoning_effort": "high"
        }));
        let expected = json!({
            "contents": [
                {"role": "user", "parts": [
                    {"text": "Weather in Paris? See the photos."},
                    {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/4AAQ"}},
                    {"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/paris.PNG?size=large"}}
                ]},
                {"role": "model", "parts": [
                    {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "CiQB0e2Kb+sig/x="},
                    {"functionCall": {"name": "get_time", "args": {}}}
                ]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"output": "18C"}}},
                    {"functionResponse": {"name": "get_time", "response": {"output": "noon"}}},
                    {"text": "And tomorrow?"}
                ]}
            ],
            "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Use metric units."}]},
            "tools": [{"functionDeclarations": [
                {"name": "get_weather", "description": "Weather",
                 "parametersJsonSchema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": false}},
                {"name": "get_time"}
            ]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}},
            "generationConfig": {
                "temperature": 0.3, "topP": 0.8, "maxOutputTokens": 200, "stopSequences": ["END"],
                "candidateCount": 2, "seed": 11,
                "responseMimeType": "application/json", "responseJsonSchema": {"type": "object"}
            }
        });
        assert_eq!(body_of(&request), expected);
    }

    #[test]
    fn tool_choice_modes_json_mode_and_a_bare_request() {
        let with = |choice: &str| {
            body_of(&request(json!({
                "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"type": "function", "function": {"name": "f"}}],
                "tool_choice": choice
            })))["toolConfig"]["functionCallingConfig"]["mode"]
                .clone()
        };
        assert_eq!(with("auto"), "AUTO");
        assert_eq!(with("required"), "ANY");
        assert_eq!(with("none"), "NONE");
        let body = body_of(&request(json!({
            "messages": [{"role": "user", "content": "hi"}],
            "response_format": {"type": "json_object"}
        })));
        assert_eq!(
            body["generationConfig"],
            json!({"responseMimeType": "application/json"})
        );
        // The model's default_max_tokens is for Anthropic only; Gemini has its own default.
        let body = body_of(&ChatRequest::user("hi"));
        assert_eq!(
            body,
            json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
        );
    }

    #[test]
    fn a_history_s_tool_arguments_are_always_sent_as_an_object() {
        let body = body_of(&request(json!({"messages": [
            {"role": "assistant", "tool_calls": [
                {"id": "call_0", "type": "function", "function": {"name": "f", "arguments": "{\"q\": \"cut"}},
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "nope"}}]}]})));
        assert_eq!(
            body["contents"][0]["parts"],
            json!([
                {"functionCall": {"name": "f", "args": {"_raw_arguments": "{\"q\": \"cut"}}},
                {"functionCall": {"name": "f", "args": {"_raw_arguments": "nope"}}}
            ])
        );
    }

    #[test]
    fn untranslatable_requests_are_invalid() {
        let cases = [
            json!({"messages": [{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "call_9", "content": "x"}]}),
            json!({"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "f"}}]}]}),
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "file:///etc/x.png"}}]}]}),
        ];
        for case in cases {
            let err = adapter()
                .build(&spec(&request(case.clone()), false))
                .unwrap_err();
            assert_eq!(err.class, ErrorType::InvalidRequest, "{case}");
        }
    }
}
