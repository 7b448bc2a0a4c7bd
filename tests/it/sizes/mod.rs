//! Requests and answers larger than one NATS message (a fresh nats-server takes 1 MiB):
//! carried as claim checks on every producer path, stored once, streamed once, and kept
//! to their tenant.

mod answers;
mod attacks;
mod requests;
mod restart;

use std::time::Duration;

use async_nats::jetstream;
use llmq_runtime::tenants::parse_registry;
use llmq_tests::edge::TestEdge;
use llmq_tests::mock::MockOptions;
use llmq_tests::nats::NatsOptions;
use llmq_tests::stack::{Stack, eventually};
use llmq_tests::worker::{TestWorker, workspace_binary};
use serde_json::{Value, json};

const MIB: usize = 1024 * 1024;

/// A stack on a nats-server with its default `max_payload` (1 MiB), and a worker serving
/// `chat`, with `worker` settings applied (`key = value` lines).
async fn stack_with(mock: MockOptions, worker: &[(&str, &str)]) -> (Stack, TestWorker) {
    let stack = Stack::start_with(mock, NatsOptions::default_max_payload()).await;
    let max_payload = stack.nats.client().await.server_info().max_payload;
    assert_eq!(max_payload, MIB, "a fresh nats-server's limit");
    let mut setup = stack.simple_setup();
    for (key, value) in worker {
        setup.set("worker", key, value);
    }
    let worker = stack.worker(&setup).await;
    (stack, worker)
}

async fn stack() -> (Stack, TestWorker) {
    stack_with(MockOptions::default(), &[]).await
}

/// Chat messages asking `prompt` of an image, padded so that `wrap(messages)` encodes
/// to exactly `bytes` bytes of JSON.
fn sized(prompt: &str, bytes: usize, wrap: impl Fn(Value) -> Value) -> Value {
    let messages = |padding: &str| {
        json!([{"role": "user", "content": [
            {"type": "text", "text": prompt},
            {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{padding}")}}
        ]}])
    };
    let empty = serde_json::to_vec(&wrap(messages(""))).unwrap().len();
    assert!(
        bytes >= empty,
        "{bytes} is less than the smallest body, {empty}"
    );
    let padded = messages(&"A".repeat(bytes - empty));
    assert_eq!(
        serde_json::to_vec(&wrap(padded.clone())).unwrap().len(),
        bytes
    );
    padded
}

/// Messages whose request body (`{"messages": [...]}`) is `bytes` long.
fn request_messages(prompt: &str, bytes: usize) -> Value {
    sized(prompt, bytes, |messages| json!({ "messages": messages }))
}

/// Whether the mock received a request carrying exactly `messages`.
fn upstream_got(stack: &Stack, messages: &Value) -> bool {
    stack
        .mock
        .requests()
        .iter()
        .any(|request| &request.body["messages"] == messages)
}

/// How many messages a stream holds.
async fn messages_in(stack: &Stack, stream: &str) -> u64 {
    let js = jetstream::new(stack.nats.client().await);
    let mut stream = js.get_stream(stream).await.unwrap();
    stream.info().await.unwrap().state.messages
}

/// Waits until the request blobs of finished jobs are gone.
async fn blobs_deleted(stack: &Stack) {
    eventually(Duration::from_secs(10), "request blobs deleted", || async {
        (messages_in(stack, "LLMQ_BLOBS").await == 0).then_some(())
    })
    .await;
}

/// An edge beside `stack` (default options: 4 MiB bodies) with a key for tenant `acme`,
/// who may use `chat`. Returns the edge, its URL and the key.
async fn edge(stack: &Stack) -> (TestEdge, String, String) {
    gateway_worker::providers::http_client::install_crypto_provider();
    let admin = stack.operator().await;
    let registry = parse_registry("[tenants.acme]\nmodels = [\"chat\"]\n").unwrap();
    let changes = admin.tenants_diff(&registry, true).await.unwrap();
    admin.apply_tenants(&changes, 1).await.unwrap();
    let out = tokio::process::Command::new(workspace_binary("submitter"))
        .args(["--url", &stack.nats.url(), "keys", "create", "acme"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let edge = llmq_tests::edge::spawn_edge(&stack.nats.url()).await;
    let url = edge.url().to_owned();
    (edge, url, key)
}

/// The content and usage chunks of an SSE answer, and the error chunk if one ended it.
#[derive(Debug, Default)]
struct Streamed {
    text: String,
    usage_chunks: usize,
    error: Option<Value>,
    done: bool,
}

fn read_sse(body: &str) -> Streamed {
    let mut streamed = Streamed::default();
    for data in body.lines().filter_map(|line| line.strip_prefix("data: ")) {
        if data == "[DONE]" {
            streamed.done = true;
            continue;
        }
        let chunk: Value = serde_json::from_str(data).unwrap();
        if chunk.get("error").is_some() {
            streamed.error = Some(chunk["error"].clone());
        }
        if chunk.get("usage").is_some_and(|u| !u.is_null()) {
            streamed.usage_chunks += 1;
        }
        if let Some(text) = chunk
            .pointer("/choices/0/delta/content")
            .and_then(Value::as_str)
        {
            streamed.text.push_str(text);
        }
    }
    streamed
}
