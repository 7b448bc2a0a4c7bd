//! A job processed again after part of its answer was streamed (its worker died, or its
//! outcome could not be stored): the second processing's deltas are a new answer, never
//! more of the first. Found when an answer too large to store was streamed five times
//! back to back through the edge with no marker.

use std::time::Duration;

use llmq_tests::mock::{MockOptions, mock_text};
use llmq_tests::nats::NatsOptions;
use llmq_tests::stack::Stack;
use llmq_tests::worker::WorkerProcess;
use serde_json::json;

use super::{edge, read_sse};

#[tokio::test]
async fn a_job_processed_again_after_text_went_out_ends_the_edge_stream_without_more_text() {
    gateway_worker::providers::http_client::install_crypto_provider();
    let mock = MockOptions {
        tokens_per_reply: 60,
        token_interval: Duration::from_millis(50),
        ..MockOptions::default()
    };
    let stack = Stack::start_with(mock, NatsOptions::default()).await;
    let mut setup = stack.simple_setup();
    setup.set("jetstream", "ack_wait", "\"2s\"");
    let mut doomed = WorkerProcess::spawn(&setup.clone().with_id("doomed"), "doomed").await;
    let http = reqwest::Client::new();
    let (_edge, url, key) = edge(&stack).await;
    let prompt = "stream, die, and stream again";
    let body = json!({"model": "chat", "stream": true,
                      "messages": [{"role": "user", "content": prompt}]});
    let mut response = http
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut sse = String::new();
    let whole_events = |sse: &str| sse[..sse.rfind("\n\n").map_or(0, |end| end + 2)].to_owned();
    while read_sse(&whole_events(&sse)).text.is_empty() {
        let chunk = tokio::time::timeout(Duration::from_secs(20), response.chunk()).await;
        let chunk = chunk
            .unwrap()
            .unwrap()
            .expect("the stream ended before any text");
        sse.push_str(&String::from_utf8_lossy(&chunk));
    }
    // Part of the answer went out; its worker dies, and another processes the job again.
    doomed.kill().await;
    let survivor = stack.worker(&setup.clone().with_id("survivor")).await;
    let rest = tokio::time::timeout(Duration::from_secs(60), response.text()).await;
    sse.push_str(&rest.unwrap().unwrap());
    let streamed = read_sse(&sse);
    let expected = mock_text(prompt, 60);
    assert!(
        expected.starts_with(&streamed.text) && streamed.text.len() < expected.len(),
        "the client read more than one answer's text: {:?}",
        streamed.text
    );
    let error = streamed.error.expect("the stream ends with an error chunk");
    assert_eq!(error["code"], "stream_restarted", "{error}");
    assert!(!streamed.done, "an ended stream is not [DONE]");
    assert_eq!(
        stack.mock.request_count(),
        2,
        "the second processing did run"
    );
    survivor.stop().await;
}
