//! The batch tier is shared between tenants: a tenant that queues behind another's large
//! batch gets its turn at once, by the weights of the registry; the batch tier's shared
//! consumer of earlier versions is replaced.

use std::time::Duration;

use futures::future::join_all;
use llmq_schemas::{Outcome, OutcomeStatus, Tier, Timestamp};
use llmq_submitter::{Client, ClientOptions, JobHandle};
use llmq_tests::stack::{Stack, chat_job, eventually};

/// A stack whose mock answers in 20 ms, and a worker with 4 batch slots.
async fn small_worker() -> (Stack, llmq_tests::worker::TestWorker) {
    let stack = Stack::with_slow_mock(Duration::from_millis(20)).await;
    let mut setup = stack.simple_setup();
    setup
        .set("worker", "max_inflight", "8")
        .set("worker", "fetch_expires", "\"200ms\"");
    let worker = stack.worker(&setup).await;
    (stack, worker)
}

async fn tenant(stack: &Stack, name: &str) -> Client {
    stack
        .client_with(ClientOptions {
            check_catalog: false,
            ..ClientOptions::for_tenant(name)
        })
        .await
}

async fn submit_batch(client: &Client, lines: usize, label: &str) -> Vec<JobHandle> {
    let mut handles = Vec::with_capacity(lines);
    for line in 0..lines {
        let mut job = chat_job("chat", &format!("{label} line {line}"));
        job.tier = Tier::Batch;
        handles.push(client.submit(job).await.unwrap());
    }
    handles
}

async fn outcomes(handles: Vec<JobHandle>) -> Vec<Outcome> {
    let outcomes = join_all(handles.into_iter().map(|h| h.outcome())).await;
    outcomes
        .into_iter()
        .map(|outcome| {
            let outcome = outcome.unwrap();
            assert_eq!(outcome.status, OutcomeStatus::Succeeded, "{outcome:?}");
            outcome
        })
        .collect()
}

fn finished(outcomes: &[Outcome]) -> Vec<Timestamp> {
    let mut at: Vec<Timestamp> = outcomes.iter().map(|o| o.timings.finished_at).collect();
    at.sort();
    at
}

#[tokio::test]
async fn a_tenant_queued_behind_a_large_batch_gets_its_turn_at_once() {
    let (stack, worker) = small_worker().await;
    let acme = tenant(&stack, "acme").await;
    let beta = tenant(&stack, "beta").await;
    let big = submit_batch(&acme, 300, "acme").await;
    // acme's batch is running when beta queues behind it.
    eventually(Duration::from_secs(10), "acme's batch running", || async {
        (stack.mock.request_count() >= 8).then_some(())
    })
    .await;
    let small = submit_batch(&beta, 20, "beta").await;
    let beta_done = finished(&outcomes(small).await);
    let acme_done = finished(&outcomes(big).await);
    let beta_last = *beta_done.last().unwrap();
    let acme_before = acme_done.iter().filter(|at| **at <= beta_last).count();
    println!("{acme_before} of acme's 300 lines ended before beta's last of 20");
    // First come, first served, all 300 of acme's would end first; taking turns, beta's
    // 20 end after about as many more of acme's as it had run when beta queued.
    assert!(
        acme_before < 150,
        "{acme_before} of acme's 300 lines ended before beta's last of 20"
    );
    worker.stop().await;
}

#[tokio::test]
async fn batch_weights_share_the_batch_tier_between_tenants() {
    let stack = Stack::with_slow_mock(Duration::from_millis(20)).await;
    let registry = "[tenants.heavy]\nmodels = [\"*\"]\nbatch_weight = 3\n\n[tenants.light]\nmodels = [\"*\"]\n";
    stack.apply_registry(registry).await;
    let mut setup = stack.simple_setup();
    setup
        .set("worker", "max_inflight", "8")
        .set("worker", "fetch_expires", "\"200ms\"");
    // A worker makes the streams and stops; both tenants queue before the next one
    // starts, so both have backlogs from its first pull.
    stack.worker(&setup).await.stop().await;
    let heavy = tenant(&stack, "heavy").await;
    let light = tenant(&stack, "light").await;
    let heavy_jobs = submit_batch(&heavy, 160, "heavy").await;
    let light_jobs = submit_batch(&light, 160, "light").await;
    let worker = stack.worker(&setup).await;
    let light_done = finished(&outcomes(light_jobs).await);
    let heavy_done = finished(&outcomes(heavy_jobs).await);
    // While both had jobs queued (until the first of them ran out), heavy ran about three
    // for every one of light's.
    let both_until = (*heavy_done.last().unwrap()).min(*light_done.last().unwrap());
    let heavy_n = heavy_done.iter().filter(|at| **at <= both_until).count() as f64;
    let light_n = light_done.iter().filter(|at| **at <= both_until).count() as f64;
    let ratio = heavy_n / light_n;
    println!("while both had jobs queued: heavy {heavy_n}, light {light_n} ({ratio:.2} : 1)");
    assert!(
        (2.0..=4.5).contains(&ratio),
        "heavy {heavy_n} : light {light_n} = {ratio:.2}, weights 3 : 1"
    );
    worker.stop().await;
}

#[tokio::test]
async fn the_batch_tiers_shared_consumer_of_earlier_versions_is_replaced() {
    let stack = Stack::start().await;
    let setup = stack.simple_setup();
    // A worker makes the streams; then the consumer an earlier version made.
    stack.worker(&setup).await.stop().await;
    let js = async_nats::jetstream::new(stack.nats.client().await);
    let jobs = js.get_stream("LLMQ_JOBS").await.unwrap();
    jobs.create_consumer(async_nats::jetstream::consumer::pull::Config {
        durable_name: Some("batch-chat".into()),
        filter_subject: "llmq.jobs.chat.batch.*".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let worker = stack.worker(&setup).await;
    let client = stack.client().await;
    let mut job = chat_job("chat", "after the upgrade");
    job.tier = Tier::Batch;
    let outcome = client
        .submit(job)
        .await
        .unwrap()
        .outcome_within(Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    assert!(jobs.consumer_info("batch-chat").await.is_err(), "replaced");
    assert!(jobs.consumer_info("batch-chat~default").await.is_ok());
    worker.stop().await;
}
