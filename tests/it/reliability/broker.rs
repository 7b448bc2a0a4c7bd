//! The broker restarts under load; every accepted job still ends with one outcome.

use std::collections::HashSet;
use std::time::Duration;

use llmq_schemas::OutcomeStatus;
use llmq_tests::mock::{MockOptions, mock_text};
use llmq_tests::nats::NatsOptions;
use llmq_tests::stack::{Stack, chat_job};

#[tokio::test]
async fn a_nats_restart_mid_load_loses_no_job() {
    // sync_interval: always, so a SIGKILLed server keeps every acknowledged message.
    let mut stack = Stack::start_with(
        MockOptions {
            first_token_delay: Duration::from_millis(30),
            ..MockOptions::default()
        },
        NatsOptions {
            sync_always: true,
            ..Default::default()
        },
    )
    .await;
    let worker = stack.worker(&stack.simple_setup()).await;
    let client = stack.client().await;
    let mut handles = Vec::new();
    for i in 0..200 {
        let mut job = chat_job("chat", &format!("load {i}"));
        job.stream = i % 3 == 0;
        handles.push((format!("load {i}"), client.submit(job).await.unwrap()));
    }
    assert!(
        stack
            .mock
            .wait_for_requests(40, Duration::from_secs(30))
            .await
    );
    stack.nats.restart().await;
    // And more jobs once it is back.
    for i in 200..230 {
        let job = chat_job("chat", &format!("load {i}"));
        let handle = loop {
            match client.submit(job.clone()).await {
                Ok(handle) => break handle,
                Err(err) if err.is_retryable() => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(err) => panic!("submit after restart: {err}"),
            }
        };
        handles.push((format!("load {i}"), handle));
    }
    let mut ids = HashSet::new();
    for (prompt, handle) in handles {
        let outcome = handle
            .outcome_within(Duration::from_secs(90))
            .await
            .unwrap();
        assert_eq!(outcome.status, OutcomeStatus::Succeeded, "{outcome:?}");
        assert_eq!(outcome.text(), Some(mock_text(&prompt, 12).as_str()));
        assert!(ids.insert(outcome.job_id));
    }
    assert_eq!(ids.len(), 230);
    let js = async_nats::jetstream::new(stack.nats.client().await);
    let mut results = js.get_stream("LLMQ_RESULTS").await.unwrap();
    assert_eq!(
        results.info().await.unwrap().state.messages,
        230,
        "one outcome per job"
    );
    worker.stop().await;
}
