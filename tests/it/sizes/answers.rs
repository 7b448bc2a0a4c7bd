//! Answers over one message: stored once (the provider paid once), streamed once, and
//! read back whole by the library, the CLI and the edge. And answers over what a worker
//! reads at all: a typed failure, not a worker holding them.

use std::time::Duration;

use llmq_schemas::{ErrorType, Outcome, OutcomeStatus, ReplyEvent};
use llmq_submitter::StreamText;
use llmq_tests::mock::{MockOptions, mock_text};
use llmq_tests::stack::{Stack, chat_job, collect_events, run_job};
use serde_json::json;

use super::{MIB, edge, read_sse, stack, stack_with};

/// Tokens of the mock's answer that make more than 1 MiB of text.
const TOKENS: usize = 170_000;

/// The outcome message as stored in the results stream (not resolved by the library).
async fn stored_outcome(stack: &Stack, outcome: &Outcome) -> (usize, Outcome) {
    let js = async_nats::jetstream::new(stack.nats.client().await);
    let results = js.get_stream("LLMQ_RESULTS").await.unwrap();
    let subject = format!("llmq.results.{}.{}", outcome.tenant, outcome.job_id);
    let message = results.direct_get_last_for_subject(subject).await.unwrap();
    let stored = serde_json::from_slice(&message.payload).unwrap();
    (message.payload.len(), stored)
}

#[tokio::test]
async fn an_answer_over_one_message_is_paid_for_once_and_stored_once() {
    let (stack, worker) = stack().await;
    let client = stack.client().await;
    let prompt = format!("a very long answer [tokens={TOKENS}]");
    let expected = mock_text(&prompt, TOKENS);
    assert!(expected.len() > MIB, "{}", expected.len());
    let outcome = run_job(&client, chat_job("chat", &prompt)).await;
    assert_eq!(
        outcome.status,
        OutcomeStatus::Succeeded,
        "{:?}",
        outcome.error
    );
    assert_eq!(outcome.text(), Some(expected.as_str()));
    assert_eq!(outcome.delivery, 1, "stored by the first processing");
    assert_eq!(stack.mock.request_count(), 1, "the provider is paid once");
    assert_eq!(stack.usage_events(outcome.job_id).await.len(), 1);
    // What is stored is the outcome with its body beside it, in one small message.
    let (bytes, stored) = stored_outcome(&stack, &outcome).await;
    assert!(bytes < 64 * 1024, "{bytes}");
    assert!(stored.response.is_none() && stored.body_blob.is_some());
    // Read again later (get_outcome, as `submitter result` does): whole.
    let again = client.get_outcome(outcome.job_id).await.unwrap().unwrap();
    assert_eq!(again.text(), Some(expected.as_str()));
    assert_eq!(again.body_blob, None);
    // Streamed: every token once, one processing, nothing to restart.
    let mut job = chat_job("chat", &prompt);
    job.stream = true;
    let handle = client.submit(job).await.unwrap();
    let (events, streamed) = collect_events(handle, Duration::from_secs(120)).await;
    assert_eq!(streamed.status, OutcomeStatus::Succeeded);
    let mut text = StreamText::new();
    for event in &events {
        text.apply(event);
    }
    assert_eq!(text.text(), expected, "the stream carried the answer once");
    assert!(text.is_complete() && text.restarts() == 0);
    let starts = events
        .iter()
        .filter(|e| matches!(e, ReplyEvent::Started(_)));
    assert_eq!(starts.count(), 1);
    assert_eq!(streamed.text(), Some(expected.as_str()));
    assert_eq!(stack.mock.request_count(), 2, "one call per job");
    assert_eq!(stack.usage_events(streamed.job_id).await.len(), 1);
    worker.stop().await;
}

#[tokio::test]
async fn an_edge_client_gets_an_answer_over_one_message_once_streamed_or_not() {
    let (stack, worker) = stack().await;
    let http = reqwest::Client::new();
    let (_edge, url, key) = edge(&stack).await;
    let chat = format!("{url}/v1/chat/completions");
    let prompt = format!("long through the edge [tokens={TOKENS}]");
    let expected = mock_text(&prompt, TOKENS);
    let messages = json!([{"role": "user", "content": prompt}]);
    let body = json!({"model": "chat", "messages": messages});
    let response = http
        .post(&chat)
        .bearer_auth(&key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        expected.as_str()
    );
    let streamed = json!({"model": "chat", "messages": messages, "stream": true,
                          "stream_options": {"include_usage": true}});
    let response = http
        .post(&chat)
        .bearer_auth(&key)
        .json(&streamed)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let sse = read_sse(&response.text().await.unwrap());
    assert_eq!(sse.error, None);
    assert!(sse.done);
    assert!(
        sse.text == expected,
        "the text once ({} bytes, expected {})",
        sse.text.len(),
        expected.len()
    );
    assert_eq!(sse.usage_chunks, 1);
    assert_eq!(
        stack.mock.request_count(),
        2,
        "one provider call per request"
    );
    worker.stop().await;
}

#[tokio::test]
async fn an_answer_over_what_a_worker_reads_fails_the_attempt_with_its_type() {
    let mock = MockOptions::default();
    let (stack, worker) = stack_with(mock, &[("max_response_bytes", "65536")]).await;
    let client = stack.client().await;
    let prompt = "too long to keep [tokens=20000]";
    for stream in [false, true] {
        let mut job = chat_job("chat", prompt);
        job.stream = stream;
        let outcome = run_job(&client, job).await;
        assert_eq!(outcome.status, OutcomeStatus::Failed, "stream={stream}");
        let error = outcome.error.unwrap();
        assert_eq!(error.kind, ErrorType::ResponseTooLarge, "{}", error.message);
        assert!(error.message.contains("65536"), "{}", error.message);
        assert_eq!(outcome.attempts.len(), 1, "not retried, no fallback");
    }
    assert_eq!(stack.mock.request_count(), 2);
    worker.stop().await;
}
