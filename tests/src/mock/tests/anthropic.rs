//! Anthropic wire format over HTTP, checked against the official SDK's recorded streams.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::{Event, client, header, json_body, read_stream, sse};
use crate::mock::{
    Fault, MockOptions, MockProvider, REFUSAL_OUTPUT_TOKENS, RetryHint, ScriptedFault, mock_text,
    prompt_tokens_for,
};

const BASIC: &str = include_str!("../../../fixtures/anthropic/basic_response.txt");
const TOOL_USE: &str = include_str!("../../../fixtures/anthropic/tool_use_response.txt");

fn messages(prompt: &str, stream: bool) -> Value {
    json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "messages": [{ "role": "user", "content": prompt }],
        "stream": stream
    })
}

/// Every key path of a JSON value, plus the value of each `type` discriminator.
fn shape(value: &Value) -> BTreeSet<String> {
    fn walk(value: &Value, path: &str, out: &mut BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    let path = format!("{path}.{key}");
                    if key == "type" {
                        out.insert(format!("{path}={}", child.as_str().unwrap_or("?")));
                    }
                    out.insert(path.clone());
                    walk(child, &path, out);
                }
            }
            Value::Array(items) => items
                .iter()
                .for_each(|item| walk(item, &format!("{path}[]"), out)),
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    walk(value, "", &mut out);
    out
}

/// Event names with runs of the same name collapsed (token counts differ, order must not).
fn sequence(events: &[Event]) -> Vec<String> {
    let mut names: Vec<String> = events
        .iter()
        .map(|e| e.event.clone().unwrap_or_default())
        .collect();
    names.dedup();
    names
}

fn first<'a>(events: &'a [Event], name: &str) -> &'a Event {
    events
        .iter()
        .find(|e| e.event.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no {name} event"))
}

async fn stream(mock: &MockProvider, body: &Value) -> Vec<Event> {
    let response = client(mock).anthropic(body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "content-type"),
        Some("text/event-stream; charset=utf-8")
    );
    let (text, broken) = read_stream(response).await;
    assert!(!broken && !text.contains("[DONE]"));
    sse(&text)
}

#[tokio::test]
async fn text_stream_matches_the_recorded_sdk_stream() {
    let mock = MockProvider::start(MockOptions::default()).await;
    let ours = stream(&mock, &messages("Hello", true)).await;
    let fixture = sse(BASIC);
    assert_eq!(sequence(&ours), sequence(&fixture));
    for event in &ours {
        // The `event:` line always names the payload's type.
        assert_eq!(event.event.as_deref(), event.json()["type"].as_str());
    }
    for name in [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ] {
        let (expected, got) = (
            shape(&first(&fixture, name).json()),
            shape(&first(&ours, name).json()),
        );
        assert!(
            expected.is_subset(&got),
            "{name}: missing {:?}",
            expected.difference(&got).collect::<Vec<_>>()
        );
    }
    // The newer capture has the full usage block; ours must match it exactly.
    let tool_fixture = sse(TOOL_USE);
    assert_eq!(
        shape(&first(&ours, "message_start").json()),
        shape(&first(&tool_fixture, "message_start").json())
    );
    assert_eq!(
        first(&ours, "ping").data,
        first(&fixture, "ping").data,
        "ping bytes as the API sends them"
    );

    let text: String = ours
        .iter()
        .filter(|e| e.event.as_deref() == Some("content_block_delta"))
        .map(|e| {
            e.json()["delta"]["text"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(text, mock_text("Hello", 12));
    let start = first(&ours, "message_start").json();
    assert_eq!(start["message"]["usage"]["output_tokens"], 1);
    assert_eq!(
        start["message"]["usage"]["input_tokens"],
        prompt_tokens_for(5, 1)
    );
    assert_eq!(
        first(&ours, "message_delta").json()["usage"],
        json!({ "output_tokens": 12 })
    );
    assert_eq!(
        first(&ours, "message_delta").json()["delta"]["stop_reason"],
        "end_turn"
    );
}

#[tokio::test]
async fn tool_use_stream_matches_the_recorded_tool_block() {
    let mock = MockProvider::start(MockOptions::default()).await;
    let mut body = messages("weather in Paris", true);
    body["tools"] = json!([{ "name": "get_weather", "input_schema": { "type": "object" } }]);
    body["tool_choice"] = json!({ "type": "any" });
    let ours = stream(&mock, &body).await;
    // The fixture answers with a text block first; a forced tool choice gets the tool block only.
    let fixture: Vec<Event> = sse(TOOL_USE)
        .into_iter()
        .filter(|e| e.event.as_deref() != Some("ping") && e.json()["index"] != json!(0))
        .collect();
    let without_ping: Vec<Event> = ours
        .iter()
        .filter(|e| e.event.as_deref() != Some("ping"))
        .cloned()
        .collect();
    assert_eq!(sequence(&without_ping), sequence(&fixture));
    assert_eq!(
        ours[2].event.as_deref(),
        Some("ping"),
        "ping right after the first block start"
    );
    for name in [
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
    ] {
        assert_eq!(
            shape(&first(&without_ping, name).json()),
            shape(&first(&fixture, name).json()),
            "{name}"
        );
    }
    let block = &first(&ours, "content_block_start").json()["content_block"];
    assert!(
        block["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("toolu_"))
    );
    assert_eq!(
        (block["name"].as_str(), &block["input"]),
        (Some("get_weather"), &json!({}))
    );
    let fragments: Vec<String> = ours
        .iter()
        .filter(|e| e.event.as_deref() == Some("content_block_delta"))
        .map(|e| {
            e.json()["delta"]["partial_json"]
                .as_str()
                .expect("input_json_delta")
                .to_owned()
        })
        .collect();
    assert_eq!(fragments[0], "", "like the API, an empty fragment first");
    let input: Value = serde_json::from_str(&fragments.concat()).expect("arguments are JSON");
    assert_eq!(input, json!({ "query": "weather in Paris" }));
    assert_eq!(
        first(&ours, "message_delta").json()["delta"]["stop_reason"],
        "tool_use"
    );
}

#[tokio::test]
async fn thinking_tokens_are_inside_output_tokens_and_named_apart() {
    let mock = MockProvider::start(MockOptions {
        reasoning_tokens: 4,
        ..MockOptions::default()
    })
    .await;
    let v = json_body(client(&mock).anthropic(&messages("think", false)).await).await;
    assert_eq!(v["usage"]["output_tokens"], 16);
    assert_eq!(v["usage"]["output_tokens_details"]["thinking_tokens"], 4);
    let events = stream(&mock, &messages("think", true)).await;
    let start = &first(&events, "message_start").json()["message"]["usage"];
    assert!(start.get("output_tokens_details").is_none());
    assert_eq!(
        first(&events, "message_delta").json()["usage"],
        json!({ "output_tokens": 16, "output_tokens_details": { "thinking_tokens": 4 } })
    );
}

#[tokio::test]
async fn invalid_tool_arguments_break_streamed_arguments_only() {
    let mock = MockProvider::start(MockOptions::default()).await;
    let mut body = messages("weather in Paris", true);
    body["tools"] = json!([{ "name": "get_weather", "input_schema": { "type": "object" } }]);
    body["tool_choice"] = json!({ "type": "any" });
    mock.push_faults([ScriptedFault::any(Fault::InvalidToolArguments)]);
    let events = stream(&mock, &body).await;
    let arguments: String = events
        .iter()
        .filter(|e| e.event.as_deref() == Some("content_block_delta"))
        .map(|e| {
            e.json()["delta"]["partial_json"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(arguments, r#"{"query":"weather in Paris"#);
    assert!(serde_json::from_str::<Value>(&arguments).is_err());

    // A non-streaming body carries the input as a JSON value: nothing to break.
    body["stream"] = json!(false);
    mock.push_faults([ScriptedFault::any(Fault::InvalidToolArguments)]);
    let v = json_body(client(&mock).anthropic(&body).await).await;
    assert_eq!(
        v["content"][0]["input"],
        json!({ "query": "weather in Paris" })
    );
}

#[tokio::test]
async fn usage_excludes_cache_reads_and_writes() {
    let options = MockOptions {
        cached_prompt_tokens: 100,
        cache_write_tokens: 20,
        ..MockOptions::default()
    };
    let mock = MockProvider::start(options).await;
    let system = "x".repeat(800);
    let mut body = messages("cached", false);
    body["system"] = json!([{ "type": "text", "text": system }]);
    let prompt = prompt_tokens_for(800 + 6, 2);
    let v = json_body(client(&mock).anthropic(&body).await).await;
    assert_eq!(v["type"], "message");
    assert_eq!(
        v["content"],
        json!([{ "type": "text", "text": mock_text("cached", 12) }])
    );
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(
        v["usage"],
        json!({ "input_tokens": prompt - 120, "cache_creation_input_tokens": 20, "cache_read_input_tokens": 100, "output_tokens": 12, "service_tier": "standard" })
    );
    body["stream"] = json!(true);
    let events = stream(&mock, &body).await;
    let usage = &first(&events, "message_start").json()["message"]["usage"];
    assert_eq!(
        (
            usage["input_tokens"].as_u64(),
            usage["cache_read_input_tokens"].as_u64()
        ),
        (Some(prompt - 120), Some(100))
    );

    body["max_tokens"] = json!(5);
    body["stream"] = json!(false);
    let v = json_body(client(&mock).anthropic(&body).await).await;
    assert_eq!(
        (
            v["stop_reason"].as_str(),
            v["usage"]["output_tokens"].as_u64()
        ),
        (Some("max_tokens"), Some(5))
    );
}

#[tokio::test]
async fn anthropic_errors() {
    let mock = MockProvider::start(MockOptions::default()).await;
    let client = client(&mock);
    let body = messages("p", false);
    let response = client
        .post("/v1/messages", &[("x-api-key", "test-key")], &body)
        .await;
    assert_eq!(response.status(), 400, "anthropic-version is required");
    let request_id = header(&response, "request-id")
        .expect("request-id")
        .to_owned();
    let v = json_body(response).await;
    assert_eq!(
        (v["type"].as_str(), v["error"]["type"].as_str()),
        (Some("error"), Some("invalid_request_error"))
    );
    assert_eq!(v["request_id"], request_id);

    let response = client
        .anthropic(&json!({ "model": "c", "messages": [] }))
        .await;
    assert_eq!(response.status(), 400);
    assert_eq!(
        json_body(response).await["error"]["message"],
        "max_tokens: Field required"
    );

    let response = client
        .post(
            "/v1/messages",
            &[("x-api-key", "bad"), ("anthropic-version", "2023-06-01")],
            &body,
        )
        .await;
    assert_eq!(response.status(), 401);
    assert_eq!(
        json_body(response).await["error"]["type"],
        "authentication_error"
    );

    let cases = [
        (Fault::Overloaded, 529, "overloaded_error"),
        (Fault::QuotaExhausted, 402, "billing_error"),
        (Fault::ServerError, 500, "api_error"),
        (Fault::NotFound, 404, "not_found_error"),
        (Fault::ContextWindowExceeded, 400, "invalid_request_error"),
        (
            Fault::InStreamError { after_tokens: 0 },
            529,
            "overloaded_error",
        ),
    ];
    for (fault, status, kind) in cases {
        mock.push_faults([ScriptedFault::any(fault.clone())]);
        let response = client.anthropic(&body).await;
        assert_eq!(response.status(), status, "{fault:?}");
        let v = json_body(response).await;
        assert_eq!(v["error"]["type"], kind, "{fault:?}");
    }

    mock.push_faults([ScriptedFault::any(Fault::RateLimited(
        RetryHint::AnthropicReset(30),
    ))]);
    let response = client.anthropic(&body).await;
    assert_eq!(response.status(), 429);
    let reset = header(&response, "anthropic-ratelimit-requests-reset").expect("reset header");
    assert!(reset.ends_with('Z') && reset.len() == 20, "{reset}");
    assert_eq!(
        header(&response, "anthropic-ratelimit-requests-remaining"),
        Some("0")
    );
    assert_eq!(
        json_body(response).await["error"]["type"],
        "rate_limit_error"
    );
}

#[tokio::test]
async fn refusal_and_in_stream_error() {
    let mock = MockProvider::start(MockOptions::default()).await;
    mock.push_faults([ScriptedFault::any(Fault::ContentFiltered)]);
    let v = json_body(client(&mock).anthropic(&messages("p", false)).await).await;
    assert_eq!(
        (v["stop_reason"].as_str(), &v["content"]),
        (Some("refusal"), &json!([]))
    );
    assert_eq!(v["stop_details"]["type"], "refusal");
    assert_eq!(v["usage"]["output_tokens"], REFUSAL_OUTPUT_TOKENS);
    assert_eq!(v["usage"]["input_tokens"], prompt_tokens_for(1, 1));

    mock.push_faults([ScriptedFault::any(Fault::ContentFiltered)]);
    let events = stream(&mock, &messages("p", true)).await;
    assert_eq!(
        sequence(&events),
        ["message_start", "ping", "message_delta", "message_stop"]
    );
    let delta = first(&events, "message_delta").json();
    assert_eq!(delta["delta"]["stop_reason"], "refusal");
    assert_eq!(delta["delta"]["stop_details"]["category"], "cyber");
    assert_eq!(delta["usage"]["output_tokens"], REFUSAL_OUTPUT_TOKENS);

    mock.push_faults([ScriptedFault::any(Fault::InStreamError { after_tokens: 2 })]);
    let events = stream(&mock, &messages("p", true)).await;
    let names: Vec<_> = events.iter().filter_map(|e| e.event.as_deref()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "error"
        ]
    );
    assert_eq!(
        events[5].json(),
        json!({ "type": "error", "error": { "type": "overloaded_error", "message": "Overloaded" } })
    );
}
