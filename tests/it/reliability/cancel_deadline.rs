//! Deadlines and cancellation.

use std::time::{Duration, Instant};

use llmq_schemas::{ErrorType, OutcomeStatus, Timestamp};
use llmq_submitter::{CancelStatus, ClientOptions};
use llmq_tests::mock::{Fault, MockOptions, ModelBehavior};
use llmq_tests::nats::NatsOptions;
use llmq_tests::stack::{Stack, chat_job, run_job};

#[tokio::test]
async fn a_job_past_its_deadline_expires_without_a_provider_call() {
    let stack = Stack::start().await;
    let worker = stack.worker(&stack.simple_setup()).await;
    let client = stack.client().await;
    // The submitter refuses a deadline that has passed; a producer in another language
    // might not, and a queued job's deadline can pass while it waits.
    let mut job = chat_job("chat", "too late");
    job.deadline = Some(Timestamp::from_unix_millis(
        Timestamp::now().unix_millis() - 1000,
    ));
    let job_id = job.id;
    let js = async_nats::jetstream::new(stack.nats.client().await);
    js.publish(
        "llmq.jobs.chat.interactive.default",
        serde_json::to_vec(&job).unwrap().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let outcome = client
        .wait_outcome(job_id, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(outcome.status, OutcomeStatus::Expired);
    assert_eq!(outcome.error.unwrap().kind, ErrorType::DeadlineExceeded);
    assert!(outcome.attempts.is_empty());
    assert_eq!(stack.mock.request_count(), 0);
    worker.stop().await;
}

#[tokio::test]
async fn retries_stop_at_the_deadline() {
    let mut options = MockOptions::default();
    options.per_model.insert(
        "mock-model".into(),
        ModelBehavior {
            always: Some(Fault::ServerError),
            ..ModelBehavior::default()
        },
    );
    let stack = Stack::start_with(options, NatsOptions::default()).await;
    let mut setup = stack.simple_setup();
    // Backoff of 400 ms, 800 ms, ... and 10 retries: far more than 1 s allows.
    setup
        .set("retry", "base_delay", "\"400ms\"")
        .set("retry", "max_delay", "\"2s\"")
        .set("retry", "max_attempts", "20")
        .set("retry.per_class", "server", "10");
    let worker = stack.worker(&setup).await;
    let client = stack.client().await;
    let mut job = chat_job("chat", "against the clock");
    job.deadline = Some(Timestamp::now().plus(Duration::from_secs(1)));
    let started = Instant::now();
    let outcome = run_job(&client, job).await;
    assert_eq!(outcome.status, OutcomeStatus::Expired, "{outcome:?}");
    let error = outcome.error.unwrap();
    assert_eq!(error.kind, ErrorType::DeadlineExceeded);
    assert!(error.message.contains("last error"), "{}", error.message);
    assert!(
        outcome.attempts.len() >= 2 && outcome.attempts.len() < 5,
        "{}",
        outcome.attempts.len()
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    worker.stop().await;
}

#[tokio::test]
async fn a_queued_job_cancelled_before_any_worker_runs_ends_cancelled_without_a_call() {
    let stack = Stack::start().await;
    // A worker creates the streams and buckets, then goes away.
    let worker = stack.worker(&stack.simple_setup()).await;
    worker.stop().await;
    let client = stack
        .client_with(ClientOptions {
            check_catalog: false,
            ..ClientOptions::default()
        })
        .await;
    let job = chat_job("chat", "never mind");
    let job_id = job.id;
    let handle = client.submit(job).await.unwrap();
    assert!(matches!(
        client
            .cancel(job_id, Some("changed my mind".into()))
            .await
            .unwrap(),
        CancelStatus::Requested { .. }
    ));
    let worker = stack.worker(&stack.simple_setup()).await;
    let outcome = handle
        .outcome_within(Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(outcome.status, OutcomeStatus::Cancelled);
    assert!(outcome.attempts.is_empty());
    assert_eq!(stack.mock.request_count(), 0);
    // Cancelling a finished job says so.
    assert_eq!(
        client.cancel(job_id, None).await.unwrap(),
        CancelStatus::AlreadyFinished(OutcomeStatus::Cancelled)
    );
    worker.stop().await;
}

#[tokio::test]
async fn cancelling_a_running_job_aborts_the_upstream_request() {
    let stack = Stack::start_with(
        MockOptions {
            first_token_delay: Duration::from_millis(200),
            token_interval: Duration::from_millis(200),
            tokens_per_reply: 100,
            ..MockOptions::default()
        },
        NatsOptions::default(),
    )
    .await;
    let worker = stack.worker(&stack.simple_setup()).await;
    let client = stack.client().await;
    let mut job = chat_job("chat", "a very long essay");
    job.stream = true;
    let job_id = job.id;
    let mut handle = client.submit(job).await.unwrap();
    // Wait for output to flow, then cancel.
    loop {
        match handle.next_event().await {
            Some(Ok(llmq_schemas::ReplyEvent::Delta(_))) => break,
            Some(Ok(_)) => continue,
            other => panic!("expected deltas, got {other:?}"),
        }
    }
    assert!(matches!(
        client.cancel(job_id, None).await.unwrap(),
        CancelStatus::Requested { .. }
    ));
    let outcome = handle
        .outcome_within(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(outcome.status, OutcomeStatus::Cancelled);
    assert_eq!(
        outcome.attempts.last().unwrap().error,
        Some(ErrorType::Cancelled)
    );
    assert!(
        stack
            .mock
            .wait_for_disconnects(1, Duration::from_secs(5))
            .await,
        "the provider saw the connection close"
    );
    assert_eq!(stack.mock.in_flight(), 0);
    worker.stop().await;
}
