//! Gemini wire format over HTTP.

use serde_json::{Value, json};

use super::{client, header, json_body, read_stream, sse};
use crate::mock::{
    Fault, MockOptions, MockProvider, RetryHint, ScriptedFault, WireFormat, mock_text,
    prompt_tokens_for,
};

fn contents(prompt: &str) -> Value {
    json!({ "contents": [{ "role": "user", "parts": [{ "text": prompt }] }] })
}

#[tokio::test]
async fn generate_content_body_and_usage() {
    let mock = MockProvider::start(MockOptions {
        cached_prompt_tokens: 3,
        reasoning_tokens: 7,
        ..MockOptions::default()
    })
    .await;
    let mut body = contents("Hi Gemini");
    body["systemInstruction"] = json!({ "parts": [{ "text": "Be brief." }] });
    let response = client(&mock).gemini("gemini-2.5-flash", false, &body).await;
    assert_eq!(response.status(), 200);
    assert!(header(&response, "x-request-id").is_some());
    let v = json_body(response).await;
    let candidate = &v["candidates"][0];
    assert_eq!(candidate["content"]["role"], "model");
    assert_eq!(
        candidate["content"]["parts"],
        json!([{ "text": mock_text("Hi Gemini", 12) }])
    );
    assert_eq!(candidate["finishReason"], "STOP");
    let prompt = prompt_tokens_for(9 + 9, 2);
    let usage = &v["usageMetadata"];
    assert_eq!(usage["promptTokenCount"], prompt);
    assert_eq!(usage["candidatesTokenCount"], 12);
    assert_eq!(usage["cachedContentTokenCount"], 3);
    assert_eq!(usage["thoughtsTokenCount"], 7);
    assert_eq!(usage["totalTokenCount"], prompt + 12 + 7);
    assert_eq!(v["modelVersion"], "gemini-2.5-flash");
    let r = &mock.requests()[0];
    assert_eq!(
        (r.format, r.model.as_str(), r.prompt.as_str()),
        (WireFormat::Gemini, "gemini-2.5-flash", "Hi Gemini")
    );
    assert_eq!(r.header("x-goog-api-key"), Some("test-key"));
}

#[tokio::test]
async fn stream_is_crlf_sse_with_usage_on_the_last_event() {
    let mock = MockProvider::start(MockOptions::default()).await;
    let response = client(&mock)
        .gemini("gemini-2.5-flash", true, &contents("stream gemini"))
        .await;
    assert_eq!(header(&response, "content-type"), Some("text/event-stream"));
    let (text, broken) = read_stream(response).await;
    assert!(!broken);
    assert!(
        text.ends_with("\r\n\r\n") && !text.replace("\r\n", "").contains('\n'),
        "CRLF line ends only"
    );
    let events = sse(&text);
    assert_eq!(events.len(), 12);
    assert!(events.iter().all(|e| e.event.is_none()));
    let chunks: Vec<Value> = events.iter().map(|e| e.json()).collect();
    let streamed: String = chunks
        .iter()
        .map(|c| {
            c["candidates"][0]["content"]["parts"][0]["text"]
                .as_str()
                .expect("text")
                .to_owned()
        })
        .collect();
    assert_eq!(streamed, mock_text("stream gemini", 12));
    for chunk in &chunks[..11] {
        assert!(
            chunk["candidates"][0].get("finishReason").is_none()
                && chunk.get("usageMetadata").is_none()
        );
    }
    let last = &chunks[11];
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert_eq!(last["usageMetadata"]["candidatesTokenCount"], 12);
    assert_eq!(
        last["usageMetadata"]["promptTokenCount"],
        prompt_tokens_for("stream gemini".len(), 1)
    );
}

#[tokio::test]
async fn keys_only_in_the_header() {
    let mock = MockProvider::start(MockOptions::default()).await;
    let client = client(&mock);
    let body = contents("p");
    for path in [
        "/v1beta/models/gemini-2.5-flash:generateContent?key=test-key",
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&key=test-key",
    ] {
        let response = client
            .post(path, &[("x-goog-api-key", "test-key")], &body)
            .await;
        assert_eq!(response.status(), 400, "{path}");
        let v = json_body(response).await;
        assert_eq!(v["error"]["status"], "INVALID_ARGUMENT");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("URL")),
            "{v}"
        );
    }
    let response = client
        .post("/v1beta/models/g:generateContent", &[], &body)
        .await;
    assert_eq!(response.status(), 403);
    assert_eq!(
        json_body(response).await["error"]["status"],
        "PERMISSION_DENIED"
    );
    let response = client
        .post(
            "/v1beta/models/g:generateContent",
            &[("x-goog-api-key", "wrong")],
            &body,
        )
        .await;
    assert_eq!(response.status(), 400);
    let v = json_body(response).await;
    assert_eq!(v["error"]["details"][0]["reason"], "API_KEY_INVALID");
    let response = client
        .post(
            "/v1beta/models/g:streamGenerateContent",
            &[("x-goog-api-key", "test-key")],
            &body,
        )
        .await;
    assert_eq!(response.status(), 400, "only alt=sse streaming");
    let response = client
        .post(
            "/v1beta/models/g:countTokens",
            &[("x-goog-api-key", "test-key")],
            &body,
        )
        .await;
    assert_eq!(response.status(), 404);
    assert_eq!(
        mock.requests().iter().filter(|r| r.fault.is_none()).count(),
        6
    );
}

#[tokio::test]
async fn rate_limit_retry_info_and_quota() {
    let mock = MockProvider::start(MockOptions::default()).await;
    let client = client(&mock);
    let retry_info = |v: &Value| {
        v["error"]["details"]
            .as_array()
            .and_then(|d| {
                d.iter()
                    .find(|x| x["@type"] == "type.googleapis.com/google.rpc.RetryInfo")
            })
            .map(|x| x["retryDelay"].clone())
    };
    mock.push_faults([ScriptedFault::any(Fault::RateLimited(
        RetryHint::GeminiRetryDelay("28s".into()),
    ))]);
    let response = client.gemini("g", false, &contents("p")).await;
    assert_eq!(response.status(), 429);
    let v = json_body(response).await;
    assert_eq!(
        (v["error"]["code"].as_u64(), v["error"]["status"].as_str()),
        (Some(429), Some("RESOURCE_EXHAUSTED"))
    );
    assert_eq!(retry_info(&v), Some(json!("28s")));

    mock.push_faults([ScriptedFault::any(Fault::RateLimited(
        RetryHint::RetryAfterSecs(4),
    ))]);
    let response = client.gemini("g", true, &contents("p")).await;
    assert_eq!(
        (response.status().as_u16(), header(&response, "retry-after")),
        (429, Some("4"))
    );
    assert_eq!(retry_info(&json_body(response).await), None);

    mock.push_faults([ScriptedFault::any(Fault::QuotaExhausted)]);
    let response = client.gemini("g", false, &contents("p")).await;
    assert_eq!(response.status(), 429);
    let v = json_body(response).await;
    assert_eq!(v["error"]["status"], "RESOURCE_EXHAUSTED");
    assert_eq!(retry_info(&v), None);

    for (fault, status, code) in [
        (Fault::Overloaded, 503, "UNAVAILABLE"),
        (Fault::ServerError, 500, "INTERNAL"),
        (Fault::ContextWindowExceeded, 400, "INVALID_ARGUMENT"),
        (Fault::NotFound, 404, "NOT_FOUND"),
        (Fault::Unauthorized, 400, "INVALID_ARGUMENT"),
    ] {
        mock.push_faults([ScriptedFault::any(fault.clone())]);
        let response = client.gemini("g", false, &contents("p")).await;
        assert_eq!(response.status(), status, "{fault:?}");
        assert_eq!(
            json_body(response).await["error"]["status"],
            code,
            "{fault:?}"
        );
    }
}

#[tokio::test]
async fn blocked_prompt_tool_call_and_length() {
    let mock = MockProvider::start(MockOptions::default()).await;
    let client = client(&mock);
    mock.push_faults([ScriptedFault::any(Fault::ContentFiltered)]);
    let v = json_body(client.gemini("g", false, &contents("p")).await).await;
    assert_eq!(v["promptFeedback"]["blockReason"], "SAFETY");
    assert!(v.get("candidates").is_none());
    assert!(v["usageMetadata"]["promptTokenCount"].is_u64());

    let mut body = contents("find rust");
    body["tools"] =
        json!([{ "functionDeclarations": [{ "name": "search" }, { "name": "other" }] }]);
    body["toolConfig"] = json!({ "functionCallingConfig": { "mode": "ANY" } });
    let v = json_body(client.gemini("g", false, &body).await).await;
    assert_eq!(
        v["candidates"][0]["content"]["parts"][0]["functionCall"],
        json!({ "name": "search", "args": { "query": "find rust" } })
    );
    assert_eq!(v["candidates"][0]["finishReason"], "STOP");
    let (text, _) = read_stream(client.gemini("g", true, &body).await).await;
    let events = sse(&text);
    assert_eq!(events.len(), 1, "a whole functionCall part in one event");
    assert_eq!(
        events[0].json()["candidates"][0]["content"]["parts"][0]["functionCall"]["name"],
        "search"
    );

    let mut body = contents("short");
    body["generationConfig"] = json!({ "maxOutputTokens": 4 });
    let v = json_body(client.gemini("g", false, &body).await).await;
    assert_eq!(v["candidates"][0]["finishReason"], "MAX_TOKENS");
    assert_eq!(v["usageMetadata"]["candidatesTokenCount"], 4);
}

#[tokio::test]
async fn in_stream_error_is_a_data_event() {
    let mock = MockProvider::start(MockOptions::default()).await;
    mock.push_faults([ScriptedFault::any(Fault::InStreamError { after_tokens: 2 })]);
    let (text, broken) = read_stream(client(&mock).gemini("g", true, &contents("p")).await).await;
    assert!(!broken);
    let events = sse(&text);
    assert_eq!(events.len(), 3);
    assert_eq!(events[2].json()["error"]["status"], "UNAVAILABLE");
}
