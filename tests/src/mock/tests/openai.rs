//! OpenAI wire format over HTTP.

use serde_json::{Value, json};

use super::{chat, client, header, json_body, read_stream, sse};
use crate::mock::{
    Fault, MockOptions, MockProvider, RetryHint, ScriptedFault, WireFormat, mock_text,
    prompt_tokens_for,
};

fn data_events(text: &str) -> Vec<String> {
    sse(text).into_iter().map(|e| e.data).collect()
}

#[tokio::test]
async fn non_streaming_body_and_usage() {
    let mock = MockProvider::start(MockOptions {
        reasoning_tokens: 5,
        cached_prompt_tokens: 4,
        ..MockOptions::default()
    })
    .await;
    let body = json!({
        "model": "gpt-4o-mini",
        "messages": [
            { "role": "system", "content": "Be brief." },
            { "role": "user", "content": [{ "type": "text", "text": "Hello" }, { "type": "text", "text": "there" }] }
        ]
    });
    let response = client(&mock).openai(&body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-type"), Some("application/json"));
    assert!(header(&response, "x-request-id").is_some_and(|id| id.starts_with("req_")));
    assert!(header(&response, "x-mock-service-us").is_some_and(|us| us.parse::<u64>().is_ok()));
    assert_eq!(
        header(&response, "x-ratelimit-remaining-requests"),
        Some("9999")
    );
    let v = json_body(response).await;
    let prompt = "Hello\nthere";
    let prompt_tokens = prompt_tokens_for("Be brief.".len() + "Hellothere".len(), 2);
    assert_eq!(v["object"], "chat.completion");
    assert!(
        v["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("chatcmpl-"))
    );
    assert_eq!(v["model"], "gpt-4o-mini");
    let choice = &v["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], mock_text(prompt, 12));
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(
        v["usage"],
        json!({
            "prompt_tokens": prompt_tokens, "completion_tokens": 17, "total_tokens": prompt_tokens + 17,
            "prompt_tokens_details": { "cached_tokens": 4, "audio_tokens": 0 },
            "completion_tokens_details": { "reasoning_tokens": 5, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0 }
        })
    );
    let recorded = mock.requests();
    assert_eq!(recorded.len(), 1);
    let r = &recorded[0];
    assert_eq!(
        (r.format, r.model.as_str(), r.prompt.as_str(), r.stream),
        (WireFormat::OpenAi, "gpt-4o-mini", prompt, false)
    );
    assert_eq!(r.header("authorization"), Some("Bearer test-key"));
    assert_eq!(r.path, "/v1/chat/completions");
    assert_eq!(r.body, body);
    assert_eq!(r.fault, None);
}

#[tokio::test]
async fn stream_framing_with_usage_chunk() {
    let mock = MockProvider::start(MockOptions::default()).await;
    let mut body = chat("gpt-4o-mini", "stream me", true);
    body["stream_options"] = json!({ "include_usage": true });
    let response = client(&mock).openai(&body).await;
    assert_eq!(
        header(&response, "content-type"),
        Some("text/event-stream; charset=utf-8")
    );
    let (text, broken) = read_stream(response).await;
    assert!(!broken);
    assert!(text.ends_with("data: [DONE]\n\n") && !text.contains('\r'));
    let data = data_events(&text);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).expect("json chunk"))
        .collect();
    // role, 12 tokens, finish, usage
    assert_eq!(chunks.len(), 15);
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({ "role": "assistant", "content": "", "refusal": null })
    );
    let content: String = chunks[1..13]
        .iter()
        .map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .expect("content")
        })
        .collect();
    assert_eq!(content, mock_text("stream me", 12));
    assert!(chunks[1..13].iter().all(|c| c["obfuscation"].is_string()));
    let finish = &chunks[13];
    assert_eq!(finish["choices"][0]["delta"], json!({}));
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let usage = &chunks[14];
    assert_eq!(usage["choices"], json!([]));
    let expected = prompt_tokens_for("stream me".len(), 1);
    assert_eq!(usage["usage"]["prompt_tokens"], expected);
    assert_eq!(usage["usage"]["completion_tokens"], 12);
    for chunk in &chunks {
        assert_eq!(chunk["id"], chunks[0]["id"]);
        assert_eq!(chunk["created"], chunks[0]["created"]);
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert!(
            chunk.as_object().is_some_and(|o| o.contains_key("usage")),
            "usage key on every chunk"
        );
    }
    assert!(chunks[..14].iter().all(|c| c["usage"].is_null()));
    assert!(
        chunks[..13]
            .iter()
            .all(|c| c["choices"][0]["finish_reason"].is_null())
    );
}

#[tokio::test]
async fn stream_usage_variants() {
    let mock = MockProvider::start(MockOptions::default()).await;
    let client = client(&mock);
    let with_usage = {
        let mut b = chat("m", "p", true);
        b["stream_options"] = json!({ "include_usage": true });
        b
    };
    // Not asked for: no usage anywhere.
    let (text, _) = read_stream(client.openai(&chat("m", "p", true)).await).await;
    assert!(!text.contains("\"prompt_tokens\""));
    assert!(text.ends_with("\"usage\":null}\n\ndata: [DONE]\n\n"));

    mock.set_options(MockOptions {
        omit_stream_usage: true,
        ..MockOptions::default()
    });
    let (text, _) = read_stream(client.openai(&with_usage).await).await;
    assert!(
        !text.contains("\"prompt_tokens\""),
        "server without stream_options support"
    );

    mock.set_options(MockOptions {
        usage_on_last_content_chunk: true,
        ..MockOptions::default()
    });
    let (text, _) = read_stream(client.openai(&with_usage).await).await;
    let data = data_events(&text);
    let last: Value = serde_json::from_str(&data[data.len() - 2]).expect("json");
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert_eq!(last["usage"]["completion_tokens"], 12);
    assert!(!text.contains("\"choices\":[]"));
}

#[tokio::test]
async fn length_cap_and_tokens_marker() {
    let mock = MockProvider::start(MockOptions::default()).await;
    let client = client(&mock);
    let mut body = chat("m", "cap me", false);
    body["max_completion_tokens"] = json!(3);
    let v = json_body(client.openai(&body).await).await;
    assert_eq!(
        v["choices"][0]["message"]["content"],
        mock_text("cap me", 3)
    );
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 3);

    let v = json_body(client.openai(&chat("m", "long [tokens=40]", false)).await).await;
    assert_eq!(v["usage"]["completion_tokens"], 40);
    assert_eq!(
        v["choices"][0]["message"]["content"],
        mock_text("long [tokens=40]", 40)
    );
}

#[tokio::test]
async fn forced_tool_calls() {
    let mock = MockProvider::start(MockOptions::default()).await;
    let client = client(&mock);
    let tools = json!([
        { "type": "function", "function": { "name": "search", "parameters": {} } },
        { "type": "function", "function": { "name": "lookup", "parameters": {} } }
    ]);
    let mut body = chat("m", "weather in Paris", false);
    body["tools"] = tools.clone();
    body["tool_choice"] = json!("required");
    let v = json_body(client.openai(&body).await).await;
    let message = &v["choices"][0]["message"];
    assert!(message["content"].is_null());
    let call = &message["tool_calls"][0];
    assert!(
        call["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("call_"))
    );
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "search");
    assert_eq!(
        call["function"]["arguments"],
        r#"{"query":"weather in Paris"}"#
    );
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");

    body["tool_choice"] = json!({ "type": "function", "function": { "name": "lookup" } });
    let named = json_body(client.openai(&body).await).await;
    assert_eq!(
        named["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "lookup"
    );

    body["tool_choice"] = json!({ "type": "function", "function": { "name": "search" } });
    body["stream"] = json!(true);
    let (text, _) = read_stream(client.openai(&body).await).await;
    let data = data_events(&text);
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).expect("json"))
        .collect();
    let head = &chunks[0]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(head["index"], 0);
    assert_eq!(head["id"], call["id"], "deterministic id");
    assert_eq!(
        head["function"],
        json!({ "name": "search", "arguments": "" })
    );
    let arguments: String = chunks[1..chunks.len() - 1]
        .iter()
        .map(|c| {
            c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .expect("fragment")
        })
        .collect();
    assert_eq!(arguments, r#"{"query":"weather in Paris"}"#);
    assert!(chunks.len() > 4, "arguments arrive in several fragments");
    assert_eq!(
        chunks.last().expect("finish")["choices"][0]["finish_reason"],
        "tool_calls"
    );

    // Arguments cut before their JSON ends, streaming or not.
    mock.push_faults([ScriptedFault::any(Fault::InvalidToolArguments)]);
    let (text, _) = read_stream(client.openai(&body).await).await;
    let data = data_events(&text);
    let arguments: String = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str::<Value>(d).expect("json"))
        .filter_map(|c| {
            c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(arguments, r#"{"query":"weather in Paris"#);
    body["stream"] = json!(false);
    mock.push_faults([ScriptedFault::any(Fault::InvalidToolArguments)]);
    let v = json_body(client.openai(&body).await).await;
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
        r#"{"query":"weather in Paris"#
    );
}

#[tokio::test]
async fn rate_limits_carry_each_retry_hint() {
    let mock = MockProvider::start(MockOptions::default()).await;
    let client = client(&mock);
    let cases: Vec<(RetryHint, &str, Option<&str>)> = vec![
        (RetryHint::RetryAfterSecs(7), "retry-after", Some("7")),
        (
            RetryHint::RetryAfterMs(1500),
            "retry-after-ms",
            Some("1500"),
        ),
        (RetryHint::RetryAfterHttpDate(30), "retry-after", None),
        (
            RetryHint::XMsRetryAfterMs(250),
            "x-ms-retry-after-ms",
            Some("250"),
        ),
        (
            RetryHint::ResetRequests("1s".into()),
            "x-ratelimit-reset-requests",
            Some("1s"),
        ),
        (
            RetryHint::ResetTokens("6m0s".into()),
            "x-ratelimit-reset-tokens",
            Some("6m0s"),
        ),
        (
            RetryHint::AnthropicReset(60),
            "anthropic-ratelimit-requests-reset",
            None,
        ),
    ];
    for (hint, name, value) in cases {
        mock.push_faults([ScriptedFault::any(Fault::RateLimited(hint.clone()))]);
        let response = client.openai(&chat("m", "p", false)).await;
        assert_eq!(response.status(), 429, "{hint:?}");
        let got = header(&response, name)
            .unwrap_or_else(|| panic!("{name} missing for {hint:?}"))
            .to_owned();
        match value {
            Some(value) => assert_eq!(got, value),
            None if name == "retry-after" => assert!(got.ends_with(" GMT"), "HTTP date: {got}"),
            None => assert!(got.ends_with('Z') && got.contains('T'), "RFC 3339: {got}"),
        }
        assert_eq!(
            header(&response, "x-ratelimit-remaining-requests"),
            Some("0")
        );
        let v = json_body(response).await;
        assert_eq!(v["error"]["code"], "rate_limit_exceeded");
        assert_eq!(v["error"]["type"], "requests");
    }
    mock.push_faults([ScriptedFault::any(Fault::RateLimited(RetryHint::None))]);
    let response = client.openai(&chat("m", "p", false)).await;
    assert_eq!(response.status(), 429);
    assert!(
        header(&response, "retry-after").is_none() && header(&response, "retry-after-ms").is_none()
    );
}

#[tokio::test]
async fn wrong_or_missing_key_is_401_and_consumes_no_fault() {
    let mock = MockProvider::start(MockOptions::default()).await;
    let client = client(&mock);
    mock.push_faults([ScriptedFault::any(Fault::ServerError)]);
    let body = chat("m", "p", false);
    let response = client
        .post(
            "/v1/chat/completions",
            &[("authorization", "Bearer nope")],
            &body,
        )
        .await;
    assert_eq!(response.status(), 401);
    assert_eq!(
        json_body(response).await["error"]["code"],
        "invalid_api_key"
    );
    let response = client.post("/v1/chat/completions", &[], &body).await;
    assert_eq!(response.status(), 401);
    let v = json_body(response).await;
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["code"].is_null());
    assert_eq!(
        client.openai(&body).await.status(),
        500,
        "the scripted fault is still queued"
    );
    let faults: Vec<_> = mock.requests().into_iter().map(|r| r.fault).collect();
    assert_eq!(faults, vec![None, None, Some(Fault::ServerError)]);
}

#[tokio::test]
async fn error_faults_use_openai_error_bodies() {
    let mock = MockProvider::start(MockOptions::default()).await;
    let client = client(&mock);
    let cases = [
        (Fault::QuotaExhausted, 429, Some("insufficient_quota")),
        (Fault::ServerError, 500, None),
        (Fault::ServiceUnavailable, 503, None),
        (Fault::Overloaded, 503, None),
        (Fault::BadRequest, 400, None),
        (
            Fault::ContextWindowExceeded,
            400,
            Some("context_length_exceeded"),
        ),
        (Fault::ContentFiltered, 400, Some("content_filter")),
        (Fault::Unauthorized, 401, Some("invalid_api_key")),
        (Fault::NotFound, 404, Some("model_not_found")),
        (Fault::InStreamError { after_tokens: 1 }, 500, None),
    ];
    for (fault, status, code) in cases {
        mock.push_faults([ScriptedFault::any(fault.clone())]);
        let response = client.openai(&chat("gpt-x", "p", false)).await;
        assert_eq!(response.status(), status, "{fault:?}");
        assert!(header(&response, "x-request-id").is_some());
        let v = json_body(response).await;
        let error = v["error"]
            .as_object()
            .unwrap_or_else(|| panic!("{fault:?}: {v}"));
        for key in ["message", "type", "param", "code"] {
            assert!(error.contains_key(key), "{fault:?} lacks {key}: {v}");
        }
        assert_eq!(v["error"]["code"].as_str(), code, "{fault:?}");
    }
}

#[tokio::test]
async fn cut_mid_stream_aborts_after_n_chunks() {
    let mock = MockProvider::start(MockOptions::default()).await;
    mock.push_faults([ScriptedFault::any(Fault::CutMidStream { after_tokens: 3 })]);
    let (text, broken) = read_stream(client(&mock).openai(&chat("m", "cut", true)).await).await;
    assert!(
        broken,
        "the body must end in a transport error, not a clean end"
    );
    let data = data_events(&text);
    assert_eq!(
        data.len(),
        4,
        "role chunk + 3 content chunks, nothing after: {text}"
    );
    assert!(!text.contains("[DONE]") && !text.contains("finish_reason\":\"stop"));
    assert_eq!(
        mock.disconnects(),
        0,
        "an intended cut is not a client disconnect"
    );

    // Non-streaming: half a body, then the abort.
    mock.push_faults([ScriptedFault::any(Fault::CutMidStream { after_tokens: 3 })]);
    let (text, broken) = read_stream(client(&mock).openai(&chat("m", "cut", false)).await).await;
    assert!(broken && serde_json::from_str::<Value>(&text).is_err());
}

#[tokio::test]
async fn malformed_chunk_and_in_stream_error() {
    let mock = MockProvider::start(MockOptions::default()).await;
    let client = client(&mock);
    mock.push_faults([ScriptedFault::any(Fault::MalformedChunk {
        after_tokens: 2,
    })]);
    let (text, broken) = read_stream(client.openai(&chat("m", "bad", true)).await).await;
    assert!(!broken);
    let data = data_events(&text);
    let bad: Vec<_> = data
        .iter()
        .filter(|d| *d != "[DONE]" && serde_json::from_str::<Value>(d).is_err())
        .collect();
    assert_eq!(bad.len(), 1);
    assert_eq!(
        data.iter().position(|d| d == bad[0]),
        Some(3),
        "after role + 2 content chunks"
    );
    assert_eq!(
        data.last().map(String::as_str),
        Some("[DONE]"),
        "then the stream continues"
    );

    mock.push_faults([ScriptedFault::any(Fault::InStreamError { after_tokens: 2 })]);
    let (text, broken) = read_stream(client.openai(&chat("m", "err", true)).await).await;
    assert!(!broken);
    let data = data_events(&text);
    assert_eq!(data.len(), 4);
    let error: Value = serde_json::from_str(&data[3]).expect("json error event");
    assert_eq!(error["error"]["type"], "server_error");
    assert!(!text.contains("[DONE]"));

    mock.push_faults([ScriptedFault::any(Fault::GarbageBody)]);
    let response = client.openai(&chat("m", "garbage", true)).await;
    assert_eq!(
        (
            response.status().as_u16(),
            header(&response, "content-type")
        ),
        (200, Some("application/json"))
    );
    assert!(serde_json::from_str::<Value>(&response.text().await.expect("body")).is_err());
}

#[tokio::test]
async fn invalid_requests_are_400() {
    let mock = MockProvider::start(MockOptions::default()).await;
    let client = client(&mock);
    let response = client
        .post_raw(
            "/v1/chat/completions",
            &[("authorization", "Bearer test-key")],
            "{not json".into(),
        )
        .await;
    assert_eq!(response.status(), 400);
    assert_eq!(
        json_body(response).await["error"]["type"],
        "invalid_request_error"
    );
    let response = client.openai(&json!({ "model": "m" })).await;
    assert_eq!(response.status(), 400);
    assert_eq!(json_body(response).await["error"]["param"], "messages");
    assert_eq!(mock.request_count(), 2);
}
