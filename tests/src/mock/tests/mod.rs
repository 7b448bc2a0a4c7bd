//! Tests of the mock over real HTTP, one file per wire format plus server behaviour.
//!
//! They talk to a real server with reqwest and parse the bytes that come back, because
//! the bytes are the product: an adapter test that passes against the mock is only
//! worth something if the mock's framing is the provider's.

mod anthropic;
mod azure;
mod gemini;
mod openai;
mod server;

use std::time::Duration;

use serde_json::{Value, json};

use super::MockProvider;

/// Generous bound for conditions that normally hold within milliseconds.
pub(super) const WAIT: Duration = Duration::from_secs(10);

pub(super) const KEY: &str = "test-key";

pub(super) struct Client {
    http: reqwest::Client,
    base: String,
}

/// A client for `mock`. reqwest is built without a TLS crypto provider; install ring (the
/// workspace's) once, although plain http:// never uses it. No proxy: a developer's
/// `HTTP_PROXY` must not intercept loopback traffic.
pub(super) fn client(mock: &MockProvider) -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("reqwest client");
    Client {
        http,
        base: mock.base_url(),
    }
}

impl Client {
    pub(super) async fn post(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: &Value,
    ) -> reqwest::Response {
        self.post_raw(path, headers, body.to_string()).await
    }

    pub(super) async fn post_raw(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: String,
    ) -> reqwest::Response {
        let mut request = self.http.post(format!("{}{path}", self.base)).body(body);
        request = request.header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("request reaches the mock")
    }

    pub(super) async fn openai(&self, body: &Value) -> reqwest::Response {
        self.post(
            "/v1/chat/completions",
            &[("authorization", "Bearer test-key")],
            body,
        )
        .await
    }

    pub(super) async fn anthropic(&self, body: &Value) -> reqwest::Response {
        let headers = [("x-api-key", KEY), ("anthropic-version", "2023-06-01")];
        self.post("/v1/messages", &headers, body).await
    }

    pub(super) async fn azure(&self, deployment: &str, body: &Value) -> reqwest::Response {
        let path =
            format!("/openai/deployments/{deployment}/chat/completions?api-version=2024-10-21");
        self.post(&path, &[("api-key", KEY)], body).await
    }

    pub(super) async fn gemini(
        &self,
        model: &str,
        stream: bool,
        body: &Value,
    ) -> reqwest::Response {
        let path = if stream {
            format!("/v1beta/models/{model}:streamGenerateContent?alt=sse")
        } else {
            format!("/v1beta/models/{model}:generateContent")
        };
        self.post(&path, &[("x-goog-api-key", KEY)], body).await
    }
}

/// A chat-completions body with one user message.
pub(super) fn chat(model: &str, prompt: &str, stream: bool) -> Value {
    json!({ "model": model, "messages": [{ "role": "user", "content": prompt }], "stream": stream })
}

pub(super) async fn json_body(response: reqwest::Response) -> Value {
    let text = response.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The whole body as text, and whether it ended in a transport error.
pub(super) async fn read_stream(mut response: reqwest::Response) -> (String, bool) {
    let mut bytes = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) => return (String::from_utf8_lossy(&bytes).into_owned(), false),
            Err(_) => return (String::from_utf8_lossy(&bytes).into_owned(), true),
        }
    }
}

/// One SSE event.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Event {
    pub event: Option<String>,
    pub data: String,
}

impl Event {
    pub(super) fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("event data not JSON ({e}): {}", self.data))
    }
}

/// Splits an SSE body into events (LF or CRLF line ends), as a conforming client would.
pub(super) fn sse(text: &str) -> Vec<Event> {
    let text = text.replace("\r\n", "\n");
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let mut event = Event {
                event: None,
                data: String::new(),
            };
            for line in block.lines() {
                if let Some(name) = line.strip_prefix("event: ") {
                    event.event = Some(name.to_owned());
                } else if let Some(data) = line.strip_prefix("data: ") {
                    event.data.push_str(data);
                } else {
                    panic!("unexpected SSE line {line:?}");
                }
            }
            event
        })
        .collect()
}

pub(super) fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}
