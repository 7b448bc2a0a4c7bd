//! Dead letters: what cannot run is kept with its reason, and can be replayed.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use llmq_schemas::{DlqReason, OutcomeStatus, ReplyEvent};
use llmq_submitter::{Operator, WaitError};
use llmq_tests::mock::MockOptions;
use llmq_tests::stack::{Stack, chat_job, eventually};
use llmq_tests::worker::WorkerProcess;

#[tokio::test]
async fn a_job_from_a_newer_protocol_is_dead_lettered_and_its_producer_told() {
    let stack = Stack::start().await;
    let worker = stack.worker(&stack.simple_setup()).await;
    let nats = stack.nats.client().await;
    let mut replies = nats.subscribe("_INBOX_test.v2").await.unwrap();
    let job_id = uuid::Uuid::now_v7();
    let payload = serde_json::json!({
        "v": 2, "id": job_id, "model": "chat", "reply_to": "_INBOX_test.v2",
        "request": {"messages": [{"role": "user", "content": "from the future"}]},
        "priority": "high"
    });
    let js = async_nats::jetstream::new(nats.clone());
    js.publish(
        "llmq.jobs.chat.interactive.default",
        Bytes::from(payload.to_string()),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(10), replies.next())
        .await
        .unwrap()
        .unwrap();
    let event: ReplyEvent = serde_json::from_slice(&reply.payload).unwrap();
    let ReplyEvent::DeadLettered(dead) = event else {
        panic!("{event:?}")
    };
    assert_eq!(dead.job_id, job_id);
    assert_eq!(dead.reason, DlqReason::UnsupportedVersion);
    let operator = stack.operator().await;
    let letters = operator.dlq_list().await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(
        letters[0].reason_kind(),
        Some(DlqReason::UnsupportedVersion)
    );
    assert_eq!(letters[0].job_id, Some(job_id));
    assert_eq!(stack.mock.request_count(), 0);
    worker.stop().await;
}

#[tokio::test]
async fn a_job_past_max_deliver_is_dead_lettered_and_a_replay_runs_it() {
    let stack = Stack::with_slow_mock(Duration::from_secs(20)).await;
    let mut setup = stack.simple_setup();
    setup
        .set("jetstream", "ack_wait", "\"1s\"")
        .set("jetstream", "max_deliver", "2");
    let client = stack.client().await;
    let mut first = WorkerProcess::spawn(&setup, "crash-1").await;
    let job = chat_job("chat", "poison");
    let job_id = job.id;
    let handle = client.submit(job).await.unwrap();
    // Two deliveries, each killing the worker that holds it.
    assert!(
        stack
            .mock
            .wait_for_requests(1, Duration::from_secs(10))
            .await
    );
    first.kill().await;
    let mut second = WorkerProcess::spawn(&setup, "crash-2").await;
    assert!(
        stack
            .mock
            .wait_for_requests(2, Duration::from_secs(10))
            .await
    );
    second.kill().await;
    // The third delivery is over the limit: dead-lettered without a provider call.
    let worker = stack.worker(&setup).await;
    match handle.outcome_within(Duration::from_secs(20)).await {
        Err(WaitError::DeadLettered { reason, .. }) => assert_eq!(reason, DlqReason::MaxDeliveries),
        other => panic!("expected the dead-letter notice, got {other:?}"),
    }
    let operator = Operator::from_client(&client);
    let letters = operator.dlq_list().await.unwrap();
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.reason_kind(), Some(DlqReason::MaxDeliveries));
    // Counted as configured: two deliveries, both processed (the consumer's own
    // max_deliver is one higher, and that last delivery only moves the job).
    assert_eq!(letter.deliveries, Some(2));
    let detail = letter.detail.as_deref().unwrap_or_default();
    assert!(detail.contains("processed 2 times"), "{detail}");
    assert_eq!(letter.job_id, Some(job_id));
    assert_eq!(stack.mock.request_count(), 2);

    // The CLI says where the job went instead of "not found".
    let cli = std::process::Command::new(llmq_tests::worker::workspace_binary("submitter"))
        .args(["--url", &stack.nats.url(), "result", &job_id.to_string()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&cli.stderr);
    assert_eq!(cli.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("dlq replay"), "{stderr}");

    // The provider is healthy again: replay it.
    stack.mock.set_options(MockOptions::default());
    operator.dlq_replay(letter.seq).await.unwrap();
    let outcome = client
        .wait_outcome(job_id, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    assert!(
        operator.dlq_list().await.unwrap().is_empty(),
        "replayed letters leave the DLQ"
    );
    worker.stop().await;
}

#[tokio::test]
async fn the_max_deliveries_advisory_moves_a_stuck_job_to_the_dead_letters() {
    let stack = Stack::start().await;
    let mut setup = stack.simple_setup();
    setup.set("worker", "sweep_interval", "\"1h\"");
    let worker = stack.worker(&setup).await;
    let nats = stack.nats.client().await;
    let js = async_nats::jetstream::new(nats.clone());
    // A job nobody consumes (no worker serves `parked`; the sweeper is off), standing in for
    // a job the server stopped delivering after max_deliver.
    let job = chat_job("parked", "stuck");
    let ack = js
        .publish(
            "llmq.jobs.parked.interactive.default",
            Bytes::from(serde_json::to_vec(&job).unwrap()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let advisory = serde_json::json!({
        "type": "io.nats.jetstream.advisory.v1.max_deliver",
        "id": "x", "timestamp": "2026-01-01T00:00:00Z",
        "stream": "LLMQ_JOBS", "consumer": "interactive-parked",
        "stream_seq": ack.sequence, "deliveries": 6
    });
    nats.publish(
        "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.LLMQ_JOBS.interactive-parked",
        Bytes::from(advisory.to_string()),
    )
    .await
    .unwrap();
    let operator = stack.operator().await;
    let letters = eventually(Duration::from_secs(10), "the dead letter", || {
        let operator = operator.clone();
        async move { operator.dlq_list().await.ok().filter(|l| !l.is_empty()) }
    })
    .await;
    assert_eq!(letters[0].reason_kind(), Some(DlqReason::MaxDeliveries));
    // The server delivered it max_deliver + 1 = 6 times; the last only moves it.
    assert_eq!(letters[0].deliveries, Some(5));
    assert_eq!(letters[0].job_id, Some(job.id));
    let jobs = js.get_stream("LLMQ_JOBS").await.unwrap();
    eventually(Duration::from_secs(5), "the job to leave the queue", || {
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
    worker.stop().await;
}
