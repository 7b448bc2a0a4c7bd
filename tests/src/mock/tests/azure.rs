//! Azure OpenAI wire format over HTTP.

use serde_json::{Value, json};

use super::{client, header, json_body, read_stream, sse};
use crate::mock::{
    Fault, MockOptions, MockProvider, RetryHint, ScriptedFault, WireFormat, mock_text,
};

fn body(prompt: &str, stream: bool) -> Value {
    // Azure ignores `model`; the deployment in the path decides.
    json!({ "messages": [{ "role": "user", "content": prompt }], "stream": stream })
}

#[tokio::test]
async fn deployment_is_the_model_and_filters_are_reported() {
    let mock = MockProvider::start(MockOptions::default()).await;
    let response = client(&mock)
        .azure("my-gpt4o", &body("hi azure", false))
        .await;
    assert_eq!(response.status(), 200);
    assert!(
        header(&response, "apim-request-id").is_some()
            && header(&response, "x-request-id").is_some()
    );
    let v = json_body(response).await;
    assert_eq!(v["model"], "my-gpt4o");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        mock_text("hi azure", 12)
    );
    assert_eq!(
        v["prompt_filter_results"][0]["content_filter_results"]["hate"]["filtered"],
        false
    );
    assert_eq!(
        v["choices"][0]["content_filter_results"]["violence"]["severity"],
        "safe"
    );
    assert_eq!(v["usage"]["completion_tokens"], 12);
    let r = &mock.requests()[0];
    assert_eq!(
        (r.format, r.model.as_str()),
        (WireFormat::Azure, "my-gpt4o")
    );
    assert_eq!(r.query.as_deref(), Some("api-version=2024-10-21"));
    assert_eq!(r.header("api-key"), Some("test-key"));
}

#[tokio::test]
async fn stream_opens_with_prompt_filter_chunk() {
    let mock = MockProvider::start(MockOptions::default()).await;
    let mut request = body("stream azure", true);
    request["stream_options"] = json!({ "include_usage": true });
    let (text, broken) = read_stream(client(&mock).azure("dep", &request).await).await;
    assert!(!broken);
    let events = sse(&text);
    let first = events[0].json();
    assert_eq!(first["choices"], json!([]));
    assert_eq!(
        (first["id"].as_str(), first["model"].as_str()),
        (Some(""), Some(""))
    );
    assert!(first["prompt_filter_results"].is_array());
    assert_eq!(events[1].json()["choices"][0]["delta"]["role"], "assistant");
    let content: String = events[2..14]
        .iter()
        .map(|e| {
            e.json()["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert_eq!(content, mock_text("stream azure", 12));
    assert!(events[2].json()["choices"][0]["content_filter_results"].is_object());
    assert!(events[2].json().get("obfuscation").is_none());
    assert_eq!(events[14].json()["choices"][0]["finish_reason"], "stop");
    assert_eq!(events[15].json()["usage"]["completion_tokens"], 12);
    assert_eq!(events[16].data, "[DONE]");
    assert_eq!(events.len(), 17);
}

#[tokio::test]
async fn azure_specific_errors() {
    let mock = MockProvider::start(MockOptions::default()).await;
    let client = client(&mock);
    // No api-version: Azure answers a bare 404.
    let response = client
        .post(
            "/openai/deployments/dep/chat/completions",
            &[("api-key", "test-key")],
            &body("p", false),
        )
        .await;
    assert_eq!(response.status(), 404);
    assert_eq!(
        json_body(response).await,
        json!({ "error": { "code": "404", "message": "Resource not found" } })
    );
    // The key goes in api-key, not Authorization.
    let path = "/openai/deployments/dep/chat/completions?api-version=2024-10-21";
    let response = client
        .post(
            path,
            &[("authorization", "Bearer test-key")],
            &body("p", false),
        )
        .await;
    assert_eq!(response.status(), 401);
    assert_eq!(json_body(response).await["error"]["code"], "401");

    mock.push_faults([ScriptedFault::for_model("dep", Fault::ContentFiltered)]);
    let response = client.azure("dep", &body("p", false)).await;
    assert_eq!(response.status(), 400);
    let v = json_body(response).await;
    assert_eq!(v["error"]["code"], "content_filter");
    assert_eq!(
        v["error"]["innererror"]["code"],
        "ResponsibleAIPolicyViolation"
    );
    assert_eq!(
        v["error"]["innererror"]["content_filter_result"]["hate"]["filtered"],
        true
    );

    mock.push_faults([ScriptedFault::any(Fault::RateLimited(
        RetryHint::XMsRetryAfterMs(900),
    ))]);
    let response = client.azure("dep", &body("p", false)).await;
    assert_eq!(response.status(), 429);
    assert_eq!(header(&response, "x-ms-retry-after-ms"), Some("900"));
    assert_eq!(json_body(response).await["error"]["code"], "429");

    mock.push_faults([ScriptedFault::any(Fault::NotFound)]);
    let response = client.azure("dep", &body("p", false)).await;
    assert_eq!(response.status(), 404);
    assert_eq!(
        json_body(response).await["error"]["code"],
        "DeploymentNotFound"
    );

    mock.push_faults([ScriptedFault::any(Fault::ContextWindowExceeded)]);
    let response = client.azure("dep", &body("p", false)).await;
    assert_eq!(
        json_body(response).await["error"]["code"],
        "context_length_exceeded"
    );
}
