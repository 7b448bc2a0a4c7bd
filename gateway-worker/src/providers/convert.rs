//! Reading OpenAI-format request parts that every non-OpenAI adapter must translate the
//! same way: one definition, so Anthropic and Gemini never disagree on what a producer
//! meant.

use llmq_schemas::{ChatRequest, ErrorType, FunctionDef, ToolCall};
use serde_json::{Map, Value};

use super::ProviderError;

/// A request this provider cannot take as written: the producer's error, not retryable.
pub(crate) fn invalid(message: impl Into<String>) -> ProviderError {
    ProviderError::new(ErrorType::InvalidRequest, message)
}

/// A content part (audio, file, ...) `provider` has no equivalent for.
pub(crate) fn unsupported_part(
    part: &Map<String, Value>,
    at: usize,
    provider: &str,
) -> ProviderError {
    let kind = part.get("type").and_then(Value::as_str).unwrap_or("(none)");
    invalid(format!(
        "messages[{at}]: content part type {kind} is not supported by {provider}"
    ))
}

/// The request's tools as function definitions; other tool types (OpenAI's built-ins)
/// have no equivalent at `provider`.
pub(crate) fn function_tools<'a>(
    request: &'a ChatRequest,
    provider: &str,
) -> Result<Vec<&'a FunctionDef>, ProviderError> {
    request
        .tools
        .iter()
        .flatten()
        .map(|tool| {
            if tool.kind == "function" {
                Ok(&tool.function)
            } else {
                Err(invalid(format!(
                    "tool type {} is not supported by {provider}",
                    tool.kind
                )))
            }
        })
        .collect()
}

/// `data:<mime>;base64,<data>` split into mime type and data.
pub(crate) fn data_url(url: &str) -> Option<(&str, &str)> {
    let (meta, data) = url.strip_prefix("data:")?.split_once(',')?;
    let mime = meta.strip_suffix(";base64")?;
    (!mime.is_empty()).then_some((mime, data))
}

/// A tool call's arguments as the JSON object providers want (`""` means no arguments).
pub(crate) fn tool_arguments(call: &ToolCall) -> Result<Value, ProviderError> {
    let text = call.function.arguments.trim();
    if text.is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    match serde_json::from_str::<Value>(text) {
        Ok(value @ Value::Object(_)) => Ok(value),
        _ => Err(invalid(format!(
            "tool call {}: arguments are not a JSON object",
            call.id
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmq_schemas::FunctionCall;

    #[test]
    fn data_urls_split_into_mime_and_data() {
        assert_eq!(
            data_url("data:image/png;base64,AAAA"),
            Some(("image/png", "AAAA"))
        );
        assert_eq!(data_url("data:;base64,AAAA"), None);
        assert_eq!(
            data_url("data:image/png,AAAA"),
            None,
            "only base64 data URLs"
        );
        assert_eq!(data_url("https://x/y.png"), None);
    }

    #[test]
    fn tool_arguments_must_be_an_object() {
        let call = |arguments: &str| ToolCall {
            id: "call_1".into(),
            kind: "function".into(),
            function: FunctionCall {
                name: "f".into(),
                arguments: arguments.into(),
            },
        };
        assert_eq!(tool_arguments(&call("")).unwrap(), serde_json::json!({}));
        assert_eq!(
            tool_arguments(&call(" {\"a\":1} ")).unwrap(),
            serde_json::json!({"a": 1})
        );
        assert_eq!(
            tool_arguments(&call("[1]")).unwrap_err().class,
            ErrorType::InvalidRequest
        );
        assert_eq!(
            tool_arguments(&call("{oops")).unwrap_err().class,
            ErrorType::InvalidRequest
        );
    }
}
