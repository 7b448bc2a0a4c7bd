//! Reading OpenAI-format request parts that every non-OpenAI adapter must translate the
//! same way: one definition, so Anthropic and Gemini never disagree on what a producer
//! meant.

use llmq_schemas::{ChatRequest, ErrorType, FunctionDef};
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
