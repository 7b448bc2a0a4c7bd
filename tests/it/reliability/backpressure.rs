//! A full queue refuses jobs loudly.

use std::time::Duration;

use llmq_submitter::SubmitError;
use llmq_tests::stack::{Stack, chat_job};

#[tokio::test]
async fn submit_fails_with_queue_full_when_the_jobs_stream_is_at_its_limit() {
    let stack = Stack::with_slow_mock(Duration::from_secs(30)).await;
    let mut setup = stack.simple_setup();
    setup.set("jetstream", "jobs_max_msgs", "5");
    setup.set("worker", "max_inflight", "1");
    let worker = stack.worker(&setup).await;
    let client = stack.client().await;
    let mut accepted = Vec::new();
    for i in 0..5 {
        accepted.push(
            client
                .submit(chat_job("chat", &format!("fill {i}")))
                .await
                .unwrap(),
        );
    }
    match client.submit(chat_job("chat", "one too many")).await {
        Err(err @ SubmitError::QueueFull { .. }) => {
            assert!(err.is_retryable());
            assert!(err.to_string().contains("full"), "{err}");
        }
        other => panic!("expected QueueFull, got {:?}", other.map(|h| h.job_id())),
    }
    drop(accepted);
    drop(worker);
}
