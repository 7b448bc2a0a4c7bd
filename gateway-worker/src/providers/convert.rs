//! Reading OpenAI-format request parts that every non-OpenAI adapter must translate the
//! same way: one definition, so Anthropic and Gemini never disagree on what a producer
//! meant.

use llmq_schemas::{ChatRequest, Content, ContentPart, ErrorType, FunctionDef, Message, Role};
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

/// A message's content as one provider's items: `text` for each text that is not empty,
/// `image` for each image URL (given the message's position, for errors). Any other part
/// type is an error naming it.
pub(crate) fn content_items<T>(
    content: Option<&Content>,
    at: usize,
    provider: &str,
    text: impl Fn(String) -> T,
    image: impl Fn(&str, usize) -> Result<T, ProviderError>,
) -> Result<Vec<T>, ProviderError> {
    match content {
        None => Ok(Vec::new()),
        Some(Content::Text(whole)) if whole.is_empty() => Ok(Vec::new()),
        Some(Content::Text(whole)) => Ok(vec![text(whole.clone())]),
        Some(Content::Parts(parts)) => parts
            .iter()
            .filter_map(|part| match part {
                ContentPart::Text { text: part } if part.is_empty() => None,
                ContentPart::Text { text: part } => Some(Ok(text(part.clone()))),
                ContentPart::ImageUrl { image_url } => Some(image(&image_url.url, at)),
                ContentPart::Other(other) => Some(Err(unsupported_part(other, at, provider))),
            })
            .collect(),
    }
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

/// Who says a message of the conversation (system text is kept apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Speaker {
    User,
    Assistant,
    /// A tool result, which both providers take in a user turn.
    Tool,
}

/// One turn: the provider's name for the role, and the content.
pub(crate) type Turn<T> = (&'static str, Vec<T>);

/// A conversation as Anthropic and Gemini take it.
#[derive(Debug)]
pub(crate) struct Conversation<T> {
    /// The system and developer messages' text, in order.
    pub(crate) system: Vec<String>,
    /// Turns that alternate between roles.
    pub(crate) turns: Vec<Turn<T>>,
}

/// Splits `messages` into a [`Conversation`]. `turn` translates one message (its
/// position, for errors) into its role and content; consecutive turns of one role merge,
/// and a message that says nothing is left out (Anthropic rejects empty content).
pub(crate) fn split_turns<T>(
    messages: &[Message],
    mut turn: impl FnMut(Speaker, usize, &Message) -> Result<Turn<T>, ProviderError>,
) -> Result<Conversation<T>, ProviderError> {
    let mut system = Vec::new();
    let mut turns: Vec<Turn<T>> = Vec::new();
    for (at, message) in messages.iter().enumerate() {
        let speaker = match message.role {
            Role::System | Role::Developer => {
                let text = message.text_content();
                if !text.is_empty() {
                    system.push(text);
                }
                continue;
            }
            Role::User => Speaker::User,
            Role::Assistant => Speaker::Assistant,
            Role::Tool => Speaker::Tool,
        };
        let (role, content) = turn(speaker, at, message)?;
        if content.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((last, merged)) if *last == role => merged.extend(content),
            _ => turns.push((role, content)),
        }
    }
    Ok(Conversation { system, turns })
}

/// `data:<mime>;base64,<data>` split into mime type and data.
pub(crate) fn data_url(url: &str) -> Option<(&str, &str)> {
    let (meta, data) = url.strip_prefix("data:")?.split_once(',')?;
    let mime = meta.strip_suffix(";base64")?;
    (!mime.is_empty()).then_some((mime, data))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn system_text_is_apart_and_same_role_turns_merge() {
        let messages: Vec<Message> = serde_json::from_value(json!([
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "a"},
            {"role": "developer", "content": "Use metric."},
            {"role": "user", "content": ""},
            {"role": "tool", "tool_call_id": "t", "content": "b"},
            {"role": "assistant", "content": "c"},
            {"role": "system", "content": ""}
        ]))
        .unwrap();
        let conversation = split_turns(&messages, |speaker, at, message| {
            let role = if speaker == Speaker::Assistant {
                "model"
            } else {
                "user"
            };
            let text = message.text_content();
            Ok((
                role,
                if text.is_empty() {
                    vec![]
                } else {
                    vec![(at, text)]
                },
            ))
        })
        .unwrap();
        assert_eq!(conversation.system, ["Be brief.", "Use metric."]);
        assert_eq!(
            conversation.turns,
            [
                ("user", vec![(1, "a".to_owned()), (4, "b".to_owned())]),
                ("model", vec![(5, "c".to_owned())])
            ]
        );
        let err =
            split_turns::<()>(&messages, |_, at, _| Err(invalid(format!("at {at}")))).unwrap_err();
        assert_eq!(err.message, "at 1");
    }

    #[test]
    fn content_becomes_items_without_empty_text_and_other_parts_are_refused() {
        let text = |text: String| format!("t:{text}");
        let image = |url: &str, at: usize| Ok(format!("i{at}:{url}"));
        let parts: Content = serde_json::from_value(json!([
            {"type": "text", "text": "a"},
            {"type": "text", "text": ""},
            {"type": "image_url", "image_url": {"url": "https://x/y.png"}}
        ]))
        .unwrap();
        assert_eq!(
            content_items(Some(&parts), 3, "P", text, image).unwrap(),
            ["t:a", "i3:https://x/y.png"]
        );
        let empty = Content::Text(String::new());
        assert!(
            content_items(Some(&empty), 0, "P", text, image)
                .unwrap()
                .is_empty()
        );
        assert!(content_items(None, 0, "P", text, image).unwrap().is_empty());
        let audio: Content =
            serde_json::from_value(json!([{"type": "input_audio", "input_audio": {}}])).unwrap();
        let err = content_items(Some(&audio), 2, "P", text, image).unwrap_err();
        assert_eq!(err.class, ErrorType::InvalidRequest);
        assert_eq!(
            err.message,
            "messages[2]: content part type input_audio is not supported by P"
        );
    }

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
