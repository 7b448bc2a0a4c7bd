//! Workers that die: their jobs are redelivered and end with exactly one outcome.

use std::time::Duration;

use bytes::Bytes;
use llmq_schemas::{Outcome, OutcomeStatus, PROTOCOL_VERSION, Tier, Timestamp, Timings};
use llmq_tests::stack::{Stack, chat_job};
use llmq_tests::worker::WorkerProcess;

async fn results_for(stack: &Stack, job_id: uuid::Uuid) -> u64 {
    let js = async_nats::jetstream::new(stack.nats.client().await);
    let results = js.get_stream("LLMQ_RESULTS").await.unwrap();
    let mut subjects = results
        .info_with_subjects(format!("llmq.results.default.{job_id}"))
        .await
        .unwrap();
    use futures::StreamExt;
    let mut total = 0;
    while let Some(Ok((_, count))) = subjects.next().await {
        total += count as u64;
    }
    total
}

#[tokio::test]
async fn a_job_on_a_killed_worker_is_redelivered_and_completed_by_another() {
    let stack = Stack::with_slow_mock(Duration::from_millis(1500)).await;
    let mut setup = stack.simple_setup();
    setup.set("jetstream", "ack_wait", "\"2s\"");
    let mut doomed = WorkerProcess::spawn(&setup.clone().with_id("doomed"), "doomed").await;
    let client = stack.client().await;
    let job = chat_job("chat", "survive a crash");
    let job_id = job.id;
    let handle = client.submit(job).await.unwrap();
    assert!(
        stack
            .mock
            .wait_for_requests(1, Duration::from_secs(10))
            .await
    );
    doomed.kill().await;

    let survivor = stack.worker(&setup.clone().with_id("survivor")).await;
    let outcome = handle
        .outcome_within(Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    assert_eq!(outcome.worker_id, "survivor");
    assert_eq!(
        stack.mock.request_count(),
        2,
        "the killed attempt, then the redelivery"
    );
    assert_eq!(
        results_for(&stack, job_id).await,
        1,
        "exactly one stored outcome"
    );
    survivor.stop().await;
}

#[tokio::test]
async fn a_generation_longer_than_ack_wait_is_kept_alive_and_not_redelivered() {
    let stack = Stack::with_slow_mock(Duration::from_millis(3500)).await;
    let mut setup = stack.simple_setup();
    setup.set("jetstream", "ack_wait", "\"1s\"");
    let a = stack.worker(&setup.clone().with_id("a")).await;
    let b = stack.worker(&setup.clone().with_id("b")).await;
    let client = stack.client().await;
    let outcome = client
        .submit(chat_job("chat", "take your time"))
        .await
        .unwrap()
        .outcome_within(Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    assert!(outcome.timings.total_ms >= 3500);
    assert_eq!(
        stack.mock.request_count(),
        1,
        "never redelivered to the other worker"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_redelivered_job_that_already_has_an_outcome_is_answered_from_it() {
    let stack = Stack::with_slow_mock(Duration::from_secs(5)).await;
    let mut setup = stack.simple_setup();
    setup.set("jetstream", "ack_wait", "\"1s\"");
    let mut doomed = WorkerProcess::spawn(&setup.clone().with_id("doomed"), "doomed").await;
    let client = stack.client().await;
    let job = chat_job("chat", "answered before the crash");
    let job_id = job.id;
    let handle = client.submit(job).await.unwrap();
    assert!(
        stack
            .mock
            .wait_for_requests(1, Duration::from_secs(10))
            .await
    );
    // The worker stored its outcome and died before acking: play that stored outcome.
    let stored = Outcome {
        v: PROTOCOL_VERSION,
        job_id,
        status: OutcomeStatus::Succeeded,
        model: "chat".into(),
        tenant: "default".into(),
        tier: Tier::Interactive,
        custom_id: None,
        metadata: None,
        batch: None,
        response: None,
        error: None,
        partial: None,
        body_blob: None,
        attempts: vec![],
        usage: None,
        cost: None,
        timings: Timings {
            queued_ms: None,
            ttft_ms: None,
            total_ms: 1,
            started_at: Timestamp::now(),
            finished_at: Timestamp::now(),
        },
        worker_id: "doomed-before-ack".into(),
        delivery: 1,
        last_seq: None,
        first_seq: None,
        processing: None,
        labels: Default::default(),
        clamped: None,
    };
    let js = async_nats::jetstream::new(stack.nats.client().await);
    js.publish(
        format!("llmq.results.default.{job_id}"),
        Bytes::from(serde_json::to_vec(&stored).unwrap()),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    doomed.kill().await;

    let survivor = stack.worker(&setup.clone().with_id("survivor")).await;
    let outcome = handle
        .outcome_within(Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        outcome.worker_id, "doomed-before-ack",
        "the stored outcome, re-sent"
    );
    assert_eq!(
        stack.mock.request_count(),
        1,
        "the provider was not paid twice"
    );
    assert_eq!(results_for(&stack, job_id).await, 1);
    // The job left the queue.
    let mut jobs = js.get_stream("LLMQ_JOBS").await.unwrap();
    llmq_tests::stack::eventually(Duration::from_secs(5), "the queue to empty", || {
        let mut jobs = jobs.clone();
        async move {
            jobs.info()
                .await
                .ok()
                .filter(|i| i.state.messages == 0)
                .map(|_| ())
        }
    })
    .await;
    assert_eq!(jobs.info().await.unwrap().state.messages, 0);
    survivor.stop().await;
}

#[tokio::test]
async fn sigterm_drains_then_exits_zero() {
    let stack = Stack::with_slow_mock(Duration::from_millis(800)).await;
    let setup = stack.simple_setup();
    let mut worker = WorkerProcess::spawn(&setup, "graceful").await;
    let client = stack.client().await;
    let handle = client
        .submit(chat_job("chat", "finish before exit"))
        .await
        .unwrap();
    assert!(
        stack
            .mock
            .wait_for_requests(1, Duration::from_secs(10))
            .await
    );
    let status = worker.terminate(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(0), "{}", worker.log());
    let outcome = handle.outcome_within(Duration::from_secs(5)).await.unwrap();
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);
}

#[tokio::test]
async fn sigterm_ends_within_the_grace_period_even_when_the_broker_is_gone() {
    // An orchestrator losing a node stops the broker and the worker together.
    let mut stack = Stack::start_with(
        llmq_tests::mock::MockOptions {
            first_token_delay: Duration::from_secs(30),
            ..Default::default()
        },
        llmq_tests::nats::NatsOptions {
            sync_always: true,
            ..Default::default()
        },
    )
    .await;
    let mut setup = stack.simple_setup();
    setup.set("worker", "shutdown_grace", "\"2s\"");
    let mut worker = WorkerProcess::spawn(&setup, "orphaned").await;
    let client = stack.client().await;
    let job = chat_job("chat", "never finishes here");
    let job_id = client.submit_detached(job).await.unwrap();
    assert!(
        stack
            .mock
            .wait_for_requests(1, Duration::from_secs(10))
            .await
    );
    stack.nats.kill().await;
    let began = std::time::Instant::now();
    let status = worker.terminate(Duration::from_secs(30)).await;
    let took = began.elapsed();
    assert_eq!(status.code(), Some(0), "{}", worker.log());
    // The grace period plus the documented margin (SHUTDOWN_MARGIN, 3 s) for the steps
    // after it, and a little for the process to exit.
    assert!(
        took < Duration::from_secs(2 + 3 + 2),
        "shutdown took {took:?}:\n{}",
        worker.log()
    );

    // The job it could not hand back is redelivered once the broker is back.
    stack.nats.restart().await;
    stack
        .mock
        .set_options(llmq_tests::mock::MockOptions::default());
    let mut setup = setup.clone();
    setup.set("jetstream", "ack_wait", "\"2s\"");
    let survivor = stack.worker(&setup.with_id("after-the-outage")).await;
    let outcome = client
        .wait_outcome(job_id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    assert_eq!(results_for(&stack, job_id).await, 1);
    survivor.stop().await;
}
