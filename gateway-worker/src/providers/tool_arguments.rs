//! Tool-call arguments: one rule for what a provider produces and what a history sends
//! back.
//!
//! OpenAI streams a tool call's arguments as text and does not promise that the text is
//! JSON; Anthropic and Gemini take only an object. Left alone, broken arguments from a
//! provider end `succeeded`, and the producer's next turn, which holds that call, is
//! refused. So:
//!
//! - **Produced.** A tool call's arguments must be a JSON object; empty text counts as
//!   `{}` and is returned as `{}`. Anything else makes the attempt fail
//!   `malformed_response`, with a message naming the call, so it is retried on the same
//!   deployment (`[retry.per_class]`) and then falls back like any malformed answer. A
//!   model with `invalid_tool_arguments = "pass_through"` gets the arguments unchanged
//!   instead, as OpenAI returns them, and the attempt carries the warning
//!   `invalid_tool_arguments`. The whole answer is checked (a stream once it ended), every
//!   choice.
//! - **Sent back.** An assistant tool call in a job's history is accepted by every provider
//!   kind, whatever its arguments. OpenAI-format providers get the text as written;
//!   Anthropic and Gemini get an object: empty text -> `{}`, an object -> itself, anything
//!   else -> `{"_raw_arguments": "<the text>"}`.

use llmq_schemas::AttemptWarning;
use serde_json::{Map, Value};

use super::{Completion, ProviderError};
use crate::config::InvalidToolArguments;

/// The key that carries arguments that are not a JSON object to Anthropic and Gemini.
pub const RAW_ARGUMENTS_KEY: &str = "_raw_arguments";

/// Applies the rule to every tool call of `completion` (empty arguments become `{}`).
/// Returns the warnings to put on the attempt, or the error that fails it.
pub fn check(
    completion: &mut Completion,
    policy: InvalidToolArguments,
) -> Result<Vec<AttemptWarning>, ProviderError> {
    let mut passed_through = false;
    for choice in &mut completion.response.choices {
        for (index, call) in choice.message.tool_calls.iter_mut().flatten().enumerate() {
            if call.function.arguments.trim().is_empty() {
                call.function.arguments = "{}".to_owned();
                continue;
            }
            let Err(problem) = parse_object(&call.function.arguments) else {
                continue;
            };
            match policy {
                InvalidToolArguments::Fail => {
                    return Err(ProviderError::malformed(format!(
                        "tool call {index} ({}, id {}): arguments are not a JSON object: {problem}",
                        call.function.name, call.id
                    )));
                }
                InvalidToolArguments::PassThrough => passed_through = true,
            }
        }
    }
    Ok(if passed_through {
        vec![AttemptWarning::InvalidToolArguments]
    } else {
        Vec::new()
    })
}

/// A history's tool-call arguments as the object Anthropic and Gemini take.
pub fn as_object(arguments: &str) -> Value {
    if arguments.trim().is_empty() {
        return Value::Object(Map::new());
    }
    match parse_object(arguments) {
        Ok(object) => Value::Object(object),
        Err(_) => {
            let mut object = Map::new();
            object.insert(
                RAW_ARGUMENTS_KEY.to_owned(),
                Value::String(arguments.to_owned()),
            );
            Value::Object(object)
        }
    }
}

fn parse_object(text: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(Value::Array(_)) => Err("an array".to_owned()),
        Ok(_) => Err("a JSON scalar".to_owned()),
        Err(err) => Err(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use llmq_schemas::{
        ChatCompletion, Choice, ErrorType, FunctionCall, ResponseMessage, ToolCall,
    };
    use serde_json::json;

    use super::*;

    fn completion(arguments: &[&str]) -> Completion {
        let calls = arguments
            .iter()
            .enumerate()
            .map(|(n, arguments)| ToolCall {
                id: format!("call_{n}"),
                kind: "function".into(),
                function: FunctionCall {
                    name: "lookup".into(),
                    arguments: (*arguments).into(),
                },
            })
            .collect();
        Completion {
            response: ChatCompletion {
                id: "c".into(),
                object: "chat.completion".into(),
                created: 0,
                model: "m".into(),
                choices: vec![Choice {
                    index: 0,
                    message: ResponseMessage {
                        role: "assistant".into(),
                        content: None,
                        tool_calls: Some(calls),
                        refusal: None,
                        reasoning_content: None,
                        extra: Map::new(),
                    },
                    finish_reason: Some("tool_calls".into()),
                    logprobs: None,
                }],
                usage: None,
                system_fingerprint: None,
                service_tier: None,
                extra: Map::new(),
            },
            usage: None,
        }
    }

    fn arguments(completion: &Completion) -> Vec<String> {
        completion.response.choices[0]
            .message
            .tool_calls
            .iter()
            .flatten()
            .map(|call| call.function.arguments.clone())
            .collect()
    }

    #[test]
    fn objects_pass_and_empty_arguments_become_an_empty_object() {
        let mut done = completion(&[r#"{"q": 1}"#, "", "  "]);
        let warnings = check(&mut done, InvalidToolArguments::Fail).unwrap();
        assert!(warnings.is_empty());
        assert_eq!(arguments(&done), [r#"{"q": 1}"#, "{}", "{}"]);
    }

    #[test]
    fn arguments_that_are_not_an_object_fail_the_attempt_naming_the_call() {
        for broken in [r#"{"q": "unterminated"#, "[1, 2]", "\"text\"", "null"] {
            let mut done = completion(&["{}", broken]);
            let err = check(&mut done, InvalidToolArguments::Fail).unwrap_err();
            assert_eq!(err.class, ErrorType::MalformedResponse, "{broken}");
            assert!(err.is_retryable() && err.allows_fallback());
            assert!(
                err.message.starts_with("tool call 1 (lookup, id call_1): "),
                "{}",
                err.message
            );
        }
    }

    #[test]
    fn pass_through_keeps_the_text_and_warns() {
        let mut done = completion(&["", r#"{"q": "unterminated"#]);
        let warnings = check(&mut done, InvalidToolArguments::PassThrough).unwrap();
        assert_eq!(warnings, [AttemptWarning::InvalidToolArguments]);
        assert_eq!(arguments(&done), ["{}", r#"{"q": "unterminated"#]);
        let mut valid = completion(&["{}"]);
        assert!(
            check(&mut valid, InvalidToolArguments::PassThrough)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_history_s_arguments_always_become_an_object() {
        assert_eq!(as_object(""), json!({}));
        assert_eq!(as_object(" {\"a\":1} "), json!({"a": 1}));
        assert_eq!(as_object("[1]"), json!({"_raw_arguments": "[1]"}));
        assert_eq!(
            as_object("{\"a\": tru"),
            json!({"_raw_arguments": "{\"a\": tru"})
        );
    }
}
