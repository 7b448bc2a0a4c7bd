//! Provider keys never leave the worker: not in outcomes, events, usage, dead letters,
//! logs or metrics, even when the provider quotes the key back in its error message.

use std::time::Duration;

use futures::StreamExt;
use llmq_schemas::{ErrorType, OutcomeStatus};
use llmq_tests::stack::{Stack, chat_job, collect_events};
use llmq_tests::worker::WorkerProcess;

const SECRET: &str = "sk-live-SECRETKEY-0123456789abcdef";

#[tokio::test]
async fn a_rejected_key_appears_nowhere_outside_the_request_header() {
    let stack = Stack::start().await;
    let setup = stack.simple_setup();
    // The worker holds a key the provider rejects, so the provider quotes it back.
    std::fs::write(&setup.key_file, SECRET).unwrap();
    let mut worker = WorkerProcess::spawn(&setup, "secret-holder").await;
    let client = stack.client().await;

    let mut job = chat_job("chat", "leak check");
    job.stream = true;
    let (events, outcome) =
        collect_events(client.submit(job).await.unwrap(), Duration::from_secs(30)).await;
    assert_eq!(outcome.status, OutcomeStatus::Failed);
    let error = outcome.error.clone().unwrap();
    assert_eq!(error.kind, ErrorType::Auth);
    assert!(
        error.message.contains("Incorrect API key provided"),
        "{}",
        error.message
    );

    // The provider did get the key, in the header and nowhere else.
    let request = &stack.mock.requests()[0];
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {SECRET}").as_str())
    );
    assert!(request.query.is_none());
    assert!(!request.body.to_string().contains(SECRET));

    let mut seen = vec![("outcome", serde_json::to_string(&outcome).unwrap())];
    seen.push(("events", serde_json::to_string(&events).unwrap()));
    let js = async_nats::jetstream::new(stack.nats.client().await);
    for stream_name in ["LLMQ_RESULTS", "LLMQ_USAGE", "LLMQ_DLQ"] {
        let stream = js.get_stream(stream_name).await.unwrap();
        let consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::Config {
                ack_policy: async_nats::jetstream::consumer::AckPolicy::None,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut messages = consumer.fetch().max_messages(100).messages().await.unwrap();
        let mut text = String::new();
        while let Some(message) = messages.next().await {
            let message = message.unwrap();
            text.push_str(&String::from_utf8_lossy(&message.payload));
            text.push_str(&format!("{:?}", message.headers));
        }
        seen.push((stream_name, text));
    }
    // The worker's metrics page, found through its start-up log line.
    let metrics = worker.metrics().await;
    assert!(
        metrics.contains("llmq_provider_attempts_total"),
        "{metrics}"
    );
    seen.push(("metrics", metrics));
    let status = worker.terminate(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(0));
    seen.push(("worker log", worker.log()));

    // Neither the key nor the provider's masked quote of it ("sk-live***cdef").
    for (place, text) in &seen {
        assert!(
            !text.contains(SECRET),
            "the key leaked into {place}: {text}"
        );
        assert!(
            !text.contains("sk-liv"),
            "a masked key leaked into {place}: {text}"
        );
    }
    assert!(
        seen.iter().any(|(_, text)| text.contains("[redacted]")),
        "the quote was scrubbed, not lost"
    );
}
