//! `submitter status` against a live queue: what waits, for how long, who serves it.

use std::time::Duration;

use llmq_schemas::Tier;
use llmq_tests::stack::{Stack, chat_job};
use llmq_tests::worker::workspace_binary;
use serde_json::Value;

#[tokio::test]
async fn status_shows_queued_jobs_their_age_workers_and_dead_letters() {
    let stack = Stack::with_slow_mock(Duration::from_secs(3)).await;
    let mut setup = stack.simple_setup();
    setup.body = setup
        .body
        .replace("max_concurrency = 64", "max_concurrency = 1");
    setup.set("worker", "max_inflight", "2");
    let worker = stack.worker(&setup).await;
    // One undecodable payload, dead-lettered by the worker.
    let js = async_nats::jetstream::new(stack.nats.client().await);
    js.publish("llmq.jobs.chat.batch.default", "not a job".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let dead = stack.operator().await;
    llmq_tests::stack::eventually(Duration::from_secs(10), "the dead letter", || {
        let dead = dead.clone();
        async move { dead.dlq_list().await.ok().filter(|l| !l.is_empty()) }
    })
    .await;
    let client = stack.client().await;
    for i in 0..12 {
        let mut job = chat_job("chat", &format!("queued {i}"));
        job.tier = Tier::Batch;
        client.submit_detached(job).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let run = |args: &[&str]| {
        std::process::Command::new(workspace_binary("submitter"))
            .args(["--url", &stack.nats.url(), "status"])
            .args(args)
            .output()
            .unwrap()
    };
    let json = run(&["--json"]);
    assert!(json.status.success(), "{json:?}");
    let status: Value = serde_json::from_slice(&json.stdout).unwrap();
    let batch = status["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["model"] == "chat" && q["tier"] == "batch")
        .expect("the chat/batch queue");
    let queued = batch["queued"].as_u64().unwrap();
    let in_flight = batch["in_flight"].as_u64().unwrap();
    assert!(queued >= 8, "{batch}");
    assert!(in_flight >= 1, "{batch}");
    assert!(batch["oldest_ms"].as_u64().unwrap() >= 1000, "{batch}");
    assert_eq!(status["workers"][0]["id"], worker.id());
    assert_eq!(
        status["dead_letters"]["undecodable"], 1,
        "{}",
        status["dead_letters"]
    );
    let text = run(&[]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("chat") && text.contains("QUEUED") && text.contains(worker.id()),
        "{text}"
    );
    assert!(text.contains("undecodable: 1"), "{text}");
    worker.stop().await;
}
