//! The proof: thousands of jobs through a random mix of provider faults, a worker killed
//! with SIGKILL and restarted, and a broker restart. Afterwards every job has exactly one
//! outcome, every answer is exactly what the provider generated, fallbacks were taken
//! where the primary could not succeed, and no usage event is duplicated.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use llmq_schemas::{AttemptRoute, Job, Outcome, OutcomeStatus, ReplyEvent, UsageEvent};
use llmq_submitter::{Client, Operator, StreamText};
use llmq_tests::mock::{Fault, MockOptions, ModelBehavior, RandomFaults, RetryHint, mock_text};
use llmq_tests::nats::NatsOptions;
use llmq_tests::stack::{Stack, chat_job, two_mock_providers};
use llmq_tests::worker::WorkerProcess;
use tokio::sync::Semaphore;

const JOBS: usize = 2_000;
const TOKENS: usize = 12;

fn fault_mix(seed: u64) -> RandomFaults {
    RandomFaults {
        seed,
        probability: 0.15,
        faults: vec![
            (Fault::RateLimited(RetryHint::RetryAfterMs(100)), 3),
            (
                Fault::RateLimited(RetryHint::ResetRequests("150ms".into())),
                1,
            ),
            (Fault::ServerError, 3),
            (Fault::ServiceUnavailable, 2),
            (Fault::Overloaded, 2),
            (Fault::DropConnection, 2),
            (Fault::SlowFirstToken(Duration::from_millis(200)), 2),
            (Fault::CutMidStream { after_tokens: 3 }, 3),
            (
                Fault::StallMidStream {
                    after_tokens: 2,
                    stall: Duration::from_secs(5),
                },
                1,
            ),
            (Fault::MalformedChunk { after_tokens: 2 }, 2),
            (Fault::InStreamError { after_tokens: 4 }, 2),
            (Fault::GarbageBody, 1),
        ],
    }
}

struct Tally {
    outcomes: Vec<(Job, Outcome)>,
    stream_checked: usize,
    restarts_seen: usize,
}

type Ran = Result<(Job, Outcome, Option<(String, u32, String)>), (Job, String)>;

async fn run_one(client: &Client, job: Job) -> Ran {
    let handle = loop {
        match client.submit(job.clone()).await {
            Ok(handle) => break handle,
            // The broker may be restarting: same job, same id, deduplicated.
            Err(err) if err.is_retryable() => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(err) => panic!("submit {}: {err}", job.id),
        }
    };
    if !job.stream {
        return match handle.outcome_within(Duration::from_secs(90)).await {
            Ok(outcome) => Ok((job, outcome, None)),
            Err(err) => Err((job, err.to_string())),
        };
    }
    let mut handle = handle;
    let mut text = StreamText::new();
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let Ok(event) = tokio::time::timeout_at(deadline, handle.next_event()).await else {
            return Err((job, format!("no final event; saw {seen}")));
        };
        match event {
            Some(Ok(event @ ReplyEvent::Final(_))) => {
                // The final outcome tells how far its processing streamed, so deltas lost
                // in a reconnect show up as missed; the text is checked when none were.
                text.apply(&event);
                let ReplyEvent::Final(outcome) = event else {
                    unreachable!()
                };
                seen.push_str(&format!(
                    "final(d{} seqs {:?}..={:?} attempts {})",
                    outcome.delivery,
                    outcome.first_seq,
                    outcome.last_seq,
                    outcome.attempts.len()
                ));
                let streamed =
                    (text.missed() == 0).then(|| (text.text().to_owned(), text.restarts(), seen));
                return Ok((job, *outcome, streamed));
            }
            Some(Ok(event)) => {
                seen.push_str(&match &event {
                    ReplyEvent::Started(e) => format!("started(d{} a{}) ", e.delivery, e.attempt),
                    ReplyEvent::Delta(e) => {
                        format!("delta(d{} a{} s{}) ", e.delivery, e.attempt, e.seq)
                    }
                    ReplyEvent::Restart(e) => format!("restart(d{} a{}) ", e.delivery, e.attempt),
                    other => format!("{other:?} "),
                });
                text.apply(&event);
            }
            Some(Err(err)) => return Err((job, err.to_string())),
            None => return Err((job, "events ended without an outcome".into())),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_every_job_ends_with_exactly_one_correct_outcome() {
    let mut options = MockOptions {
        tokens_per_reply: TOKENS,
        random_faults: Some(fault_mix(0x11c0)),
        ..MockOptions::default()
    };
    // `doomed`'s primary never works: its jobs must all be served by the fallback model.
    options.per_model.insert(
        "doomed-primary".into(),
        ModelBehavior {
            always: Some(Fault::Overloaded),
            ..ModelBehavior::default()
        },
    );
    let mut stack = Stack::start_with(
        options,
        NatsOptions {
            sync_always: true,
            ..Default::default()
        },
    )
    .await;
    let mut setup = stack.setup(&format!(
        r#"{providers}
[providers.mock.timeouts]
connect = "2s"
first_token = "3s"
inter_token = "500ms"
total = "20s"
[providers.mock2.timeouts]
connect = "2s"
first_token = "3s"
inter_token = "500ms"
total = "20s"
[models.chat]
deployments = [{{ provider = "mock", model = "chat-primary", weight = 4 }}, {{ provider = "mock", model = "chat-secondary", weight = 1 }}]
fallbacks = ["backup"]
[models.doomed]
deployments = [{{ provider = "mock", model = "doomed-primary" }}]
fallbacks = ["backup"]
[models.backup]
deployments = [{{ provider = "mock2", model = "backup-up" }}]
"#,
        providers = two_mock_providers(64).replace(
            "timeouts = { connect = \"2s\", first_token = \"10s\", inter_token = \"5s\", total = \"30s\" }\n",
            ""
        ),
    ));
    setup
        .set("jetstream", "ack_wait", "\"2s\"")
        .set("jetstream", "max_deliver", "20")
        .set("retry", "max_attempts", "10")
        .set("worker", "shutdown_grace", "\"5s\"")
        // Shorter than an interactive job's wait (10 s): a job finding every deployment
        // cooling waits for one instead of failing fast (README, "Outcome guarantees"), so
        // the faults end jobs only when they exhaust the attempts.
        .set("cooldown", "duration", "\"5s\"");
    let mut worker_a = WorkerProcess::spawn(&setup.clone().with_id("chaos-a"), "chaos-a").await;
    let mut worker_b = WorkerProcess::spawn(&setup.clone().with_id("chaos-b"), "chaos-b").await;
    let client = stack.client().await;

    let started = Instant::now();
    let done = Arc::new(AtomicUsize::new(0));
    let in_flight = Arc::new(Semaphore::new(300));
    let mut tasks = Vec::new();
    for i in 0..JOBS {
        let model = if i % 10 == 0 { "doomed" } else { "chat" };
        let mut job = chat_job(model, &format!("chaos job {i}: say something"));
        job.stream = i % 2 == 0;
        let permit = Arc::clone(&in_flight).acquire_owned().await.unwrap();
        let client = client.clone();
        let done = Arc::clone(&done);
        tasks.push(tokio::spawn(async move {
            let result = run_one(&client, job).await;
            done.fetch_add(1, Ordering::Relaxed);
            drop(permit);
            result
        }));
        if i == JOBS / 4 {
            // A worker dies with jobs in flight, and comes back.
            worker_a.kill().await;
            worker_a = WorkerProcess::spawn(&setup.clone().with_id("chaos-a2"), "chaos-a2").await;
        }
        if i == JOBS / 2 {
            stack.nats.restart().await;
        }
    }
    let mut tally = Tally {
        outcomes: Vec::new(),
        stream_checked: 0,
        restarts_seen: 0,
    };
    let mut results = Vec::new();
    let mut missing = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(ran) => results.push(ran),
            Err(lost) => missing.push(lost),
        }
    }
    if !missing.is_empty() {
        panic!("{}", where_are(&stack, &client, &missing).await);
    }
    for (job, outcome, streamed) in results {
        if let Some((text, restarts, seen)) = streamed
            && outcome.status == OutcomeStatus::Succeeded
        {
            assert_eq!(
                Some(text.as_str()),
                outcome.text(),
                "job {}: streamed text; events: {seen}",
                job.id
            );
            tally.stream_checked += 1;
            tally.restarts_seen += restarts as usize;
        }
        tally.outcomes.push((job, outcome));
    }
    let elapsed = started.elapsed();

    // Exactly one stored outcome per job, and it is the one the producer got.
    let js = async_nats::jetstream::new(stack.nats.client().await);
    let mut results = js.get_stream("LLMQ_RESULTS").await.unwrap();
    assert_eq!(
        results.info().await.unwrap().state.messages,
        JOBS as u64,
        "one stored outcome per job"
    );
    let mut by_status: HashMap<OutcomeStatus, usize> = HashMap::new();
    let (mut attempts, mut fallbacks, mut redelivered) = (0, 0, 0);
    for (job, outcome) in &tally.outcomes {
        assert_eq!(outcome.job_id, job.id);
        let stored = client.get_outcome(job.id).await.unwrap().expect("stored");
        assert_eq!(&stored, outcome, "the producer saw the stored outcome");
        *by_status.entry(outcome.status).or_default() += 1;
        attempts += outcome.attempts.len();
        if outcome.delivery > 1 {
            redelivered += 1;
        }
        let last = outcome.attempts.last();
        if outcome.attempts.iter().any(|a| {
            matches!(
                a.route,
                AttemptRoute::ModelFallback | AttemptRoute::DeploymentFallback
            )
        }) {
            fallbacks += 1;
        }
        match outcome.status {
            OutcomeStatus::Succeeded => {
                let prompt = job.request.messages[0].text_content();
                assert_eq!(
                    outcome.text(),
                    Some(mock_text(&prompt, TOKENS).as_str()),
                    "job {}",
                    job.id
                );
                let last = last.expect("a succeeded job made an attempt");
                assert!(last.error.is_none());
                if job.model == "doomed" {
                    // The primary never answers: the answer came from the fallback model.
                    assert_eq!(
                        last.model, "backup",
                        "job {}: {:?}",
                        job.id, outcome.attempts
                    );
                    assert_eq!(last.upstream_model, "backup-up");
                    assert!(
                        outcome
                            .attempts
                            .iter()
                            .any(|a| a.route == AttemptRoute::ModelFallback)
                    );
                }
            }
            OutcomeStatus::Failed => {
                // Only a run of retryable faults on every deployment (or the cooldowns they
                // caused) may fail a job.
                let error = outcome.error.as_ref().unwrap();
                println!(
                    "chaos: job {} failed: {:?} after {:?}",
                    job.id,
                    error.kind,
                    outcome
                        .attempts
                        .iter()
                        .map(|a| (a.route, a.upstream_model.as_str(), a.error))
                        .collect::<Vec<_>>()
                );
                assert!(
                    matches!(
                        error.kind,
                        llmq_schemas::ErrorType::RateLimited
                            | llmq_schemas::ErrorType::Server
                            | llmq_schemas::ErrorType::Overloaded
                            | llmq_schemas::ErrorType::Network
                            | llmq_schemas::ErrorType::Timeout
                            | llmq_schemas::ErrorType::MalformedResponse
                            // Every deployment cooling down after such faults: an
                            // interactive job is not held for the cooldown.
                            | llmq_schemas::ErrorType::Unavailable
                    ),
                    "job {} failed with {error:?}",
                    job.id
                );
            }
            other => panic!("job {} ended {other}: {outcome:?}", job.id),
        }
    }
    let succeeded = by_status
        .get(&OutcomeStatus::Succeeded)
        .copied()
        .unwrap_or(0);
    assert!(succeeded * 100 >= JOBS * 99, "{by_status:?}");

    // No usage event twice; one per processing, each naming a job that exists.
    let usage = js.get_stream("LLMQ_USAGE").await.unwrap();
    let consumer = usage
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            // A reader: nothing to acknowledge, no cap on unacknowledged messages.
            ack_policy: async_nats::jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let total = usage.get_info().await.unwrap().state.messages as usize;
    let mut payloads = Vec::with_capacity(total);
    while payloads.len() < total {
        let mut batch = consumer.fetch().max_messages(500).messages().await.unwrap();
        let before = payloads.len();
        while let Some(message) = batch.next().await {
            payloads.push(message.unwrap().payload.clone());
        }
        assert!(payloads.len() > before, "the usage stream ended early");
    }
    // Provider calls that really happened, per prompt.
    let mut calls: HashMap<String, usize> = HashMap::new();
    for request in stack.mock.requests() {
        *calls.entry(request.prompt).or_default() += 1;
    }
    let prompts: HashMap<uuid::Uuid, String> = tally
        .outcomes
        .iter()
        .map(|(job, _)| (job.id, job.request.messages[0].text_content()))
        .collect();
    let mut ids = HashSet::new();
    let mut billed_calls: HashMap<uuid::Uuid, usize> = HashMap::new();
    let mut events = 0;
    for payload in payloads {
        let event: UsageEvent = serde_json::from_slice(&payload).unwrap();
        assert!(
            ids.insert(event.id),
            "usage event {} stored twice",
            event.id
        );
        assert!(prompts.contains_key(&event.job_id));
        *billed_calls.entry(event.job_id).or_default() += event.attempts.len();
        events += 1;
    }
    assert_eq!(events, total);
    assert!(events >= JOBS, "every job's processing was recorded");
    // A processing can be billed twice only if the provider was called twice (a broker
    // restart can roll a consumer's delivery count back, and a job run again); usage never
    // claims a call that did not happen.
    for (job_id, billed) in &billed_calls {
        let made = calls.get(&prompts[job_id]).copied().unwrap_or(0);
        assert!(
            *billed <= made,
            "job {job_id}: {billed} calls billed, {made} made"
        );
    }

    println!(
        "chaos: {JOBS} jobs in {:.1}s; outcomes {:?}; attempts {attempts} ({:.2}/job); \
         jobs with a fallback {fallbacks}; redelivered {redelivered}; usage events {events}; \
         streamed texts checked {} with {} restarts; mock requests {}",
        elapsed.as_secs_f64(),
        by_status,
        attempts as f64 / JOBS as f64,
        tally.stream_checked,
        tally.restarts_seen,
        stack.mock.request_count(),
    );
    let _ = worker_a.terminate(Duration::from_secs(30)).await;
    let _ = worker_b.terminate(Duration::from_secs(30)).await;
}

/// Where jobs without an outcome are: for the failure message.
async fn where_are(stack: &Stack, client: &Client, missing: &[(Job, String)]) -> String {
    let js = async_nats::jetstream::new(stack.nats.client().await);
    let mut report = format!("{} job(s) without an outcome:\n", missing.len());
    let letters = Operator::from_client(client)
        .dlq_list()
        .await
        .unwrap_or_default();
    for (job, error) in missing {
        let stored = client
            .get_outcome(job.id)
            .await
            .ok()
            .flatten()
            .map(|o| o.status);
        let letter = letters
            .iter()
            .find(|l| l.job_id == Some(job.id))
            .map(|l| (l.reason.clone(), l.deliveries));
        let requests = stack
            .mock
            .requests()
            .iter()
            .filter(|r| r.prompt == job.request.messages[0].text_content())
            .count();
        report.push_str(&format!(
            "  {} ({}, stream {}): {error}; stored outcome {stored:?}; dead letter {letter:?}; provider calls {requests}\n",
            job.id, job.model, job.stream
        ));
    }
    if let Ok(mut jobs) = js.get_stream("LLMQ_JOBS").await {
        if let Ok(info) = jobs.info().await {
            report.push_str(&format!(
                "  jobs stream: {} messages\n",
                info.state.messages
            ));
        }
        let mut names = jobs.consumer_names();
        while let Some(Ok(name)) = names.next().await {
            if let Ok(mut consumer) = jobs
                .get_consumer::<async_nats::jetstream::consumer::pull::Config>(&name)
                .await
                && let Ok(info) = consumer.info().await
            {
                report.push_str(&format!(
                    "  consumer {name}: pending {}, ack pending {}, redelivered {}, waiting {}\n",
                    info.num_pending, info.num_ack_pending, info.num_redelivered, info.num_waiting
                ));
            }
        }
    }
    report
}
