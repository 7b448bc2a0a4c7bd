//! The producer library (`llmq-submitter`) against a real nats-server.
//!
//! There is no worker in these tests: `FakeWorker` below plays the protocol's other side
//! by hand (on the streams and buckets the worker's own set-up creates: reads jobs, sends events, stores outcomes,
//! dead-letters and usage), so each test controls exactly what the producer sees.

// Helpers, not only `#[test]` functions, may fail the test loudly.
#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, pull};
use async_nats::jetstream::{self, AckKind, kv};
use futures::StreamExt;
use llmq_schemas::{
    CancelRequest, CatalogEntry, ChatRequest, Job, JobId, ModelName, Outcome, OutcomeStatus,
    ReplyEvent, Subjects, Tenant, Tier, Timestamp, UsageEvent, dlq,
};
use llmq_submitter::{
    CancelStatus, Client, ClientError, ClientOptions, JobHandle, NatsOptions, Operator, StreamText,
    SubmitError, UsageQuery, WaitError,
};
use llmq_tests::nats::{NatsOptions as ServerOptions, TestNats};
use serde_json::json;
use uuid::Uuid;

/// Upper bound for anything the tests wait on; a hang fails instead of blocking CI.
const PATIENCE: Duration = Duration::from_secs(20);

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {PATIENCE:?}"))
}

// ---------------------------------------------------------------------------------------
// The protocol's other side.
// ---------------------------------------------------------------------------------------

/// What gateway-worker does on the NATS side, by hand, except the set-up of streams and
/// buckets, which is the worker's own (`gateway_worker::nats::ensure`).
struct FakeWorker {
    nats: async_nats::Client,
    js: jetstream::Context,
    subjects: Subjects,
    catalog: kv::Store,
    cancels: kv::Store,
    /// One pull subscription for the whole test: a dropped one would leave its pending
    /// pull request on the server, which would swallow the next job until ack_wait.
    jobs: tokio::sync::Mutex<pull::Stream>,
}

#[derive(Default)]
struct Setup {
    /// `max_msgs` of the jobs stream (discard new); `None` = unlimited.
    jobs_max_msgs: Option<i64>,
}

impl FakeWorker {
    async fn setup(server: &TestNats, prefix: &str, setup: Setup) -> FakeWorker {
        let nats = server.client().await;
        let js = jetstream::new(nats.clone());
        let subjects = Subjects::new(prefix).unwrap();
        // The streams and buckets exactly as the worker makes them.
        let config = gateway_worker::config::JetStreamConfig {
            prefix: prefix.to_owned(),
            jobs_max_msgs: setup.jobs_max_msgs.unwrap_or(-1),
            catalog_heartbeat: Duration::from_secs(10),
            ..Default::default()
        };
        let made = gateway_worker::nats::ensure(&js, &subjects, &config)
            .await
            .unwrap();
        let (jobs, catalog, cancels) = (made.jobs, made.catalog, made.cancels);
        let jobs = jobs
            .create_consumer(pull::Config {
                durable_name: Some("fake-worker".into()),
                ack_policy: AckPolicy::Explicit,
                ..Default::default()
            })
            .await
            .unwrap()
            .messages()
            .await
            .unwrap();
        FakeWorker {
            nats,
            js,
            subjects,
            catalog,
            cancels,
            jobs: tokio::sync::Mutex::new(jobs),
        }
    }

    /// Puts a catalog entry for `worker_id`, heartbeat `age` ago.
    async fn announce_aged(&self, worker_id: &str, models: &[(&str, &[Tier])], age: Duration) {
        let heartbeat = Timestamp::from_unix_millis(
            Timestamp::now().unix_millis() - i64::try_from(age.as_millis()).unwrap(),
        );
        let entry: CatalogEntry = serde_json::from_value(json!({
            "v": 1,
            "worker_id": worker_id,
            "version": "fake",
            "started_at": heartbeat,
            "heartbeat_at": heartbeat,
            "models": models.iter().map(|(name, tiers)| json!({
                "name": name,
                "tiers": tiers,
                "deployments": [{"provider": "mock", "kind": "openai", "upstream_model": "m-1", "weight": 1}],
            })).collect::<Vec<_>>(),
        }))
        .unwrap();
        self.catalog
            .put(worker_id, serde_json::to_vec(&entry).unwrap().into())
            .await
            .unwrap();
    }

    async fn announce(&self, worker_id: &str, models: &[(&str, &[Tier])]) {
        self.announce_aged(worker_id, models, Duration::ZERO).await;
    }

    /// The next `n` jobs from the jobs stream (not acked: they stay in the stream).
    async fn take_jobs(&self, n: usize) -> Vec<(Job, jetstream::Message)> {
        let mut messages = self.jobs.lock().await;
        let mut jobs = Vec::with_capacity(n);
        while jobs.len() < n {
            let message = within("a job in the jobs stream", messages.next())
                .await
                .unwrap()
                .unwrap();
            let job: Job = serde_json::from_slice(&message.payload).unwrap();
            jobs.push((job, message));
        }
        jobs
    }

    async fn send(&self, job: &Job, event: serde_json::Value) {
        let reply_to = job.reply_to.clone().expect("job has a reply subject");
        self.nats
            .publish(reply_to, serde_json::to_vec(&event).unwrap().into())
            .await
            .unwrap();
    }

    async fn store_outcome(&self, outcome: &Outcome) {
        let tenant = Tenant::parse(&outcome.tenant).unwrap();
        self.js
            .publish(
                self.subjects.result(&tenant, outcome.job_id),
                serde_json::to_vec(outcome).unwrap().into(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }

    async fn publish_usage(&self, event: &UsageEvent) {
        let tenant = Tenant::parse(&event.tenant).unwrap();
        let model = ModelName::parse(&event.model).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", event.id.to_string());
        self.js
            .publish_with_headers(
                self.subjects.usage(&tenant, &model),
                headers,
                serde_json::to_vec(event).unwrap().into(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }

    /// Copies a job message to the DLQ as the worker does, then terminates it.
    async fn dead_letter(&self, message: &jetstream::Message, reason: &str) -> u64 {
        let info = message.info().unwrap();
        let (stream_seq, delivered) = (info.stream_sequence, info.delivered);
        let parsed = self.subjects.parse_job_subject(&message.subject).unwrap();
        let mut headers = message.headers.clone().unwrap_or_default();
        // The submitter's message id is `<job id>.<private digits>`.
        let msg_id = headers.get("Nats-Msg-Id").unwrap().to_string();
        let job_id = msg_id.split('.').next().unwrap().to_owned();
        headers.insert(dlq::HEADER_REASON, reason);
        headers.insert(dlq::HEADER_DETAIL, "worker kept crashing");
        headers.insert(dlq::HEADER_SUBJECT, message.subject.as_str());
        headers.insert(dlq::HEADER_STREAM_SEQ, stream_seq.to_string());
        headers.insert(dlq::HEADER_DELIVERIES, delivered.to_string());
        headers.insert(dlq::HEADER_JOB_ID, job_id);
        headers.insert(dlq::HEADER_AT, Timestamp::now().to_string());
        headers.insert(dlq::HEADER_WORKER, "fake-1");
        let ack = self
            .js
            .publish_with_headers(
                self.subjects.dlq(&parsed.model_token),
                headers,
                message.payload.clone(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        message.double_ack_with(AckKind::Term).await.unwrap();
        ack.sequence
    }

    async fn stream_messages(&self, name: &str) -> u64 {
        let mut stream = self.js.get_stream(name).await.unwrap();
        stream.info().await.unwrap().state.messages
    }
}

// ---------------------------------------------------------------------------------------
// Builders.
// ---------------------------------------------------------------------------------------

const MODELS: &[(&str, &[Tier])] = &[
    ("chat-fast", &[Tier::Interactive, Tier::Batch]),
    ("gpt-4.1", &[Tier::Interactive]),
];

fn options(server: &TestNats, prefix: &str, tenant: &str) -> ClientOptions {
    ClientOptions {
        nats: NatsOptions::with_url(server.url()),
        prefix: prefix.into(),
        tenant: tenant.into(),
        publish_timeout: Duration::from_secs(2),
        ..ClientOptions::default()
    }
}

async fn client(server: &TestNats, prefix: &str) -> Client {
    Client::connect(options(server, prefix, "acme"))
        .await
        .unwrap()
}

fn job(model: &str, prompt: &str) -> Job {
    Job::new(model, ChatRequest::user(prompt))
}

fn outcome_for(job: &Job, tenant: &str, text: &str) -> Outcome {
    serde_json::from_value(json!({
        "v": 1,
        "job_id": job.id,
        "status": "succeeded",
        "model": job.model,
        "tenant": tenant,
        "tier": job.tier,
        "response": {
            "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "m-1",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]
        },
        "attempts": [],
        "timings": {"total_ms": 5, "started_at": Timestamp::now(), "finished_at": Timestamp::now()},
        "worker_id": "fake-1"
    }))
    .unwrap()
}

fn started(job_id: JobId, attempt: u32) -> serde_json::Value {
    json!({"type": "started", "v": 1, "job_id": job_id, "attempt": attempt,
           "provider": "mock", "upstream_model": "m-1", "model": "chat-fast"})
}

fn delta(job_id: JobId, seq: u64, attempt: u32, content: &str) -> serde_json::Value {
    json!({"type": "delta", "v": 1, "job_id": job_id, "seq": seq, "attempt": attempt, "content": content})
}

fn final_event(outcome: &Outcome) -> serde_json::Value {
    let mut value = serde_json::to_value(outcome).unwrap();
    value["type"] = json!("final");
    value
}

fn usage_event(
    tenant: &str,
    model: &str,
    prompt: u64,
    completion: u64,
    cost: serde_json::Value,
) -> UsageEvent {
    serde_json::from_value(json!({
        "v": 1, "id": Uuid::now_v7(), "job_id": Uuid::now_v7(), "tenant": tenant, "model": model,
        "tier": "interactive", "provider": "mock", "upstream_model": "m-1", "status": "succeeded",
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                  "total_tokens": prompt + completion, "cached_prompt_tokens": 1, "reasoning_tokens": 2},
        "usage_source": "reported", "cost": cost, "attempts": [],
        "timings": {"total_ms": 5, "started_at": Timestamp::now(), "finished_at": Timestamp::now()},
        "worker_id": "fake-1", "at": Timestamp::now()
    }))
    .unwrap()
}

/// Collects a handle's events to the end.
async fn all_events(mut handle: JobHandle) -> Vec<ReplyEvent> {
    let mut events = Vec::new();
    while let Some(event) = within("reply events", handle.next_event()).await {
        events.push(event.unwrap());
    }
    events
}

// ---------------------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn submit_is_acknowledged_and_a_resubmitted_job_id_is_queued_once() {
    let server = TestNats::start().await;
    let worker = FakeWorker::setup(&server, "sub-dedup", Setup::default()).await;
    worker.announce("w1", MODELS).await;
    let client = client(&server, "sub-dedup").await;

    let job = job("gpt-4.1", "hello");
    let id = client.submit_detached(job.clone()).await.unwrap();
    assert_eq!(id, job.id);
    // A retry of the same job (same id), e.g. after a lost PubAck, is dropped by JetStream.
    assert_eq!(client.submit_detached(job.clone()).await.unwrap(), job.id);
    assert_eq!(worker.stream_messages("SUB_DEDUP_JOBS").await, 1);

    let (queued, message) = worker.take_jobs(1).await.remove(0);
    assert_eq!(queued.id, job.id);
    assert_eq!(
        message.subject.as_str(),
        "sub-dedup.jobs.gpt-4_2e1.interactive.acme"
    );
    assert_eq!(
        message
            .headers
            .as_ref()
            .unwrap()
            .get("Nats-Msg-Id")
            .unwrap()
            .as_str()
            .split('.')
            .next(),
        Some(job.id.to_string().as_str()),
        "the job id, then digits no other tenant can guess"
    );
    assert!(queued.submitted_at.is_some());
    assert_eq!(queued.reply_to, None);

    // With a handle, reply_to is the client's per-tenant inbox.
    let handle = client.submit(self::job("chat-fast", "hi")).await.unwrap();
    let (queued, _) = worker.take_jobs(1).await.remove(0);
    let reply_to = queued.reply_to.unwrap();
    assert!(reply_to.starts_with("_INBOX_llmq.acme."), "{reply_to}");
    assert!(
        reply_to.ends_with(&handle.job_id().to_string()),
        "{reply_to}"
    );
    assert_eq!(client.jobs_waiting(), 1);
    drop(handle);
    assert_eq!(client.jobs_waiting(), 0, "dropping a handle unregisters it");
}

#[tokio::test]
async fn events_reach_fifty_concurrent_handles_in_order() {
    let server = TestNats::start().await;
    let worker = FakeWorker::setup(&server, "sub-mux", Setup::default()).await;
    worker.announce("w1", MODELS).await;
    let client = client(&server, "sub-mux").await;

    let submits = (0..50).map(|i| client.submit(job("chat-fast", &format!("question {i}"))));
    let handles: Vec<JobHandle> = futures::future::try_join_all(submits).await.unwrap();
    let collectors: Vec<_> = handles
        .into_iter()
        .map(|handle| tokio::spawn(all_events(handle)))
        .collect();

    let jobs: Vec<Job> = worker
        .take_jobs(50)
        .await
        .into_iter()
        .map(|(job, _)| job)
        .collect();
    // Interleave the jobs' events, as concurrent jobs on a worker would.
    for job in &jobs {
        worker.send(job, started(job.id, 1)).await;
    }
    for seq in 1..=5 {
        for job in &jobs {
            worker
                .send(job, delta(job.id, seq, 1, &format!("{}-{seq} ", job.id)))
                .await;
        }
    }
    for job in &jobs {
        let text: String = (1..=5).map(|seq| format!("{}-{seq} ", job.id)).collect();
        worker
            .send(job, final_event(&outcome_for(job, "acme", &text)))
            .await;
    }

    for collector in collectors {
        let events = within("a handle's events", collector).await.unwrap();
        assert_eq!(events.len(), 7, "{events:?}");
        let job_id = events[0].job_id();
        assert!(matches!(events[0], ReplyEvent::Started(_)));
        let mut text = StreamText::new();
        for (i, event) in events.iter().enumerate() {
            assert_eq!(event.job_id(), job_id);
            if let ReplyEvent::Delta(delta) = event {
                assert_eq!(delta.seq, i as u64, "deltas in order");
            }
            text.apply(event);
        }
        let ReplyEvent::Final(outcome) = &events[6] else {
            panic!("last event is the final: {events:?}");
        };
        assert_eq!(outcome.job_id, job_id);
        assert_eq!(Some(text.text()), outcome.text());
        assert!(text.is_complete());
    }
    assert_eq!(client.jobs_waiting(), 0);
}

#[tokio::test]
async fn a_restart_clears_the_text_streamed_so_far() {
    let server = TestNats::start().await;
    let worker = FakeWorker::setup(&server, "sub-restart", Setup::default()).await;
    worker.announce("w1", MODELS).await;
    let client = client(&server, "sub-restart").await;

    let mut handle = client.submit(job("chat-fast", "hi")).await.unwrap();
    let (job, _) = worker.take_jobs(1).await.remove(0);
    worker.send(&job, started(job.id, 1)).await;
    worker.send(&job, delta(job.id, 1, 1, "a wrong ")).await;
    worker.send(&job, delta(job.id, 2, 1, "start")).await;
    worker
        .send(
            &job,
            json!({"type": "restart", "v": 1, "job_id": job.id, "attempt": 1,
                   "reason": "network", "message": "stream cut"}),
        )
        .await;
    worker.send(&job, started(job.id, 2)).await;
    worker
        .send(&job, delta(job.id, 3, 2, "the right answer"))
        .await;
    worker
        .send(
            &job,
            final_event(&outcome_for(&job, "acme", "the right answer")),
        )
        .await;

    let mut text = StreamText::new();
    let mut saw_restart = false;
    while let Some(event) = within("events", handle.next_event()).await {
        let event = event.unwrap();
        text.apply(&event);
        if matches!(event, ReplyEvent::Restart(_)) {
            saw_restart = true;
            assert_eq!(text.text(), "", "restart discards the first attempt's text");
        }
    }
    assert!(saw_restart);
    assert_eq!(text.text(), "the right answer");
    assert_eq!(text.restarts(), 1);
}

#[tokio::test]
async fn the_outcome_is_read_from_results_when_the_final_event_is_lost() {
    let server = TestNats::start().await;
    let worker = FakeWorker::setup(&server, "sub-lost", Setup::default()).await;
    worker.announce("w1", MODELS).await;
    let client = Client::connect(ClientOptions {
        results_poll_interval: Duration::from_millis(200),
        ..options(&server, "sub-lost", "acme")
    })
    .await
    .unwrap();

    let handle = client.submit(job("chat-fast", "hi")).await.unwrap();
    let (job, _) = worker.take_jobs(1).await.remove(0);
    worker.send(&job, started(job.id, 1)).await;
    worker.send(&job, delta(job.id, 1, 1, "answer")).await;
    // The final event never comes; only the stored outcome.
    worker
        .store_outcome(&outcome_for(&job, "acme", "answer"))
        .await;

    let outcome = handle.outcome_within(PATIENCE).await.unwrap();
    assert_eq!(outcome.job_id, job.id);
    assert_eq!(outcome.text(), Some("answer"));
}

#[tokio::test]
async fn a_reconnect_makes_handles_look_for_missed_outcomes() {
    // sync_always: the stored outcome must survive the server's SIGKILL.
    let mut server = TestNats::start_with(ServerOptions {
        sync_always: true,
        ..Default::default()
    })
    .await;
    let worker = FakeWorker::setup(&server, "sub-reconnect", Setup::default()).await;
    worker.announce("w1", MODELS).await;
    // The poll is far away: only the reconnect can find the outcome in time.
    let client = Client::connect(ClientOptions {
        results_poll_interval: Duration::from_secs(3600),
        ..options(&server, "sub-reconnect", "acme")
    })
    .await
    .unwrap();

    let handle = client.submit(job("chat-fast", "hi")).await.unwrap();
    let (job, _) = worker.take_jobs(1).await.remove(0);
    worker
        .store_outcome(&outcome_for(&job, "acme", "stored"))
        .await;
    let waiting = tokio::spawn(handle.outcome_within(PATIENCE));
    server.restart().await;

    let outcome = within("the outcome after a reconnect", waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome.text(), Some("stored"));
}

#[tokio::test]
async fn get_outcome_and_wait_outcome_read_the_results_stream() {
    let server = TestNats::start().await;
    let worker = FakeWorker::setup(&server, "sub-results", Setup::default()).await;
    worker.announce("w1", MODELS).await;
    let client = client(&server, "sub-results").await;

    let job = job("chat-fast", "hi");
    client.submit_detached(job.clone()).await.unwrap();
    assert!(client.get_outcome(job.id).await.unwrap().is_none());
    assert!(matches!(
        client
            .wait_outcome(job.id, Duration::from_millis(300))
            .await,
        Err(WaitError::Timeout { .. })
    ));

    let waiting = {
        let client = client.clone();
        tokio::spawn(async move { client.wait_outcome(job.id, PATIENCE).await })
    };
    worker
        .store_outcome(&outcome_for(&job, "acme", "later"))
        .await;
    let waited = within("wait_outcome", waiting).await.unwrap().unwrap();
    assert_eq!(waited.text(), Some("later"));

    let got = client.get_outcome(job.id).await.unwrap().unwrap();
    assert_eq!(got, waited);
    // Already stored: returns at once.
    let again = client
        .wait_outcome(job.id, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(again.job_id, job.id);

    // Another tenant does not see it.
    let other = Client::connect(options(&server, "sub-results", "other"))
        .await
        .unwrap();
    assert!(other.get_outcome(job.id).await.unwrap().is_none());
}

#[tokio::test]
async fn a_full_queue_refuses_the_job_with_queue_full() {
    let server = TestNats::start().await;
    let worker = FakeWorker::setup(
        &server,
        "sub-full",
        Setup {
            jobs_max_msgs: Some(2),
        },
    )
    .await;
    worker.announce("w1", MODELS).await;
    let client = client(&server, "sub-full").await;

    client.submit_detached(job("chat-fast", "1")).await.unwrap();
    client.submit_detached(job("chat-fast", "2")).await.unwrap();
    let refused = client.submit(job("chat-fast", "3")).await;
    match refused {
        Err(SubmitError::QueueFull { stream, detail }) => {
            assert_eq!(stream, "SUB_FULL_JOBS");
            assert!(detail.contains("maximum messages"), "{detail}");
        }
        other => panic!("expected QueueFull, got {other:?}"),
    }
    assert_eq!(worker.stream_messages("SUB_FULL_JOBS").await, 2);
    assert_eq!(client.jobs_waiting(), 0, "the refused job's handle is gone");
}

#[tokio::test]
async fn the_catalog_refuses_unknown_models_and_reports_missing_workers() {
    let server = TestNats::start().await;
    let worker = FakeWorker::setup(&server, "sub-catalog", Setup::default()).await;
    let client = client(&server, "sub-catalog").await;

    assert!(matches!(
        client.submit(job("chat-fast", "hi")).await,
        Err(SubmitError::NoWorkers { .. })
    ));
    // A worker that just started is seen at once, though the cached (empty) catalog is
    // fresh: a refusal re-reads it first.
    worker.announce("w1", MODELS).await;
    client
        .submit_detached(job("chat-fast", "hi"))
        .await
        .unwrap();

    match client.submit(job("chat-fats", "hi")).await {
        Err(SubmitError::UnknownModel {
            model,
            tier,
            available,
        }) => {
            assert_eq!(model, "chat-fats");
            assert_eq!(tier, Tier::Interactive);
            assert_eq!(available, vec!["chat-fast", "gpt-4.1"]);
        }
        other => panic!("expected UnknownModel, got {other:?}"),
    }
    let mut batch = job("gpt-4.1", "hi");
    batch.tier = Tier::Batch;
    assert!(matches!(
        client.submit_detached(batch).await,
        Err(SubmitError::UnknownModel {
            tier: Tier::Batch,
            ..
        })
    ));

    // Only a stale worker left: no workers.
    let prefix = "sub-stale";
    let stale = FakeWorker::setup(&server, prefix, Setup::default()).await;
    stale
        .announce_aged("dead", MODELS, Duration::from_secs(120))
        .await;
    let client = Client::connect(options(&server, prefix, "acme"))
        .await
        .unwrap();
    assert!(matches!(
        client.submit_detached(job("chat-fast", "hi")).await,
        Err(SubmitError::NoWorkers { .. })
    ));
    let entries = client.catalog().await.unwrap();
    assert_eq!(entries.len(), 1);
    assert!(!llmq_submitter::is_live(&entries[0]));
}

#[tokio::test]
async fn cancel_writes_the_cancel_key_or_reports_the_finished_status() {
    let server = TestNats::start().await;
    let worker = FakeWorker::setup(&server, "sub-cancel", Setup::default()).await;
    worker.announce("w1", MODELS).await;
    let client = client(&server, "sub-cancel").await;

    let running = job("chat-fast", "long task");
    client.submit_detached(running.clone()).await.unwrap();
    let status = client
        .cancel(running.id, Some("changed my mind".into()))
        .await
        .unwrap();
    assert!(matches!(status, CancelStatus::Requested { .. }));
    let key = Subjects::cancel_key(&Tenant::parse("acme").unwrap(), running.id);
    let stored = worker.cancels.get(&key).await.unwrap().expect("cancel key");
    let request: CancelRequest = serde_json::from_slice(&stored).unwrap();
    assert_eq!(request.job_id, running.id);
    assert_eq!(request.tenant, "acme");
    assert_eq!(request.reason.as_deref(), Some("changed my mind"));

    let done = job("chat-fast", "quick");
    client.submit_detached(done.clone()).await.unwrap();
    worker
        .store_outcome(&outcome_for(&done, "acme", "ok"))
        .await;
    assert_eq!(
        client.cancel(done.id, None).await.unwrap(),
        CancelStatus::AlreadyFinished(OutcomeStatus::Succeeded)
    );
    let key = Subjects::cancel_key(&Tenant::parse("acme").unwrap(), done.id);
    assert!(worker.cancels.get(&key).await.unwrap().is_none());
}

#[tokio::test]
async fn dead_letters_are_listed_and_replayed_with_the_original_bytes() {
    let server = TestNats::start().await;
    let worker = FakeWorker::setup(&server, "sub-dlq", Setup::default()).await;
    worker.announce("w1", MODELS).await;
    let client = client(&server, "sub-dlq").await;
    let operator = Operator::from_client(&client);
    assert!(operator.dlq_list().await.unwrap().is_empty());

    let first = job("gpt-4.1", "one");
    let second = job("chat-fast", "two");
    client.submit_detached(first.clone()).await.unwrap();
    client.submit_detached(second.clone()).await.unwrap();
    let taken = worker.take_jobs(2).await;
    let original_payload = taken[0].1.payload.clone();
    let first_seq = worker.dead_letter(&taken[0].1, "max_deliveries").await;
    let second_seq = worker.dead_letter(&taken[1].1, "undecodable").await;
    assert_eq!(worker.stream_messages("SUB_DLQ_JOBS").await, 0);

    let entries = operator.dlq_list().await.unwrap();
    assert_eq!(entries.len(), 2);
    let entry = &entries[0];
    assert_eq!(entry.seq, first_seq);
    assert_eq!(
        entry.reason_kind(),
        Some(llmq_schemas::DlqReason::MaxDeliveries)
    );
    assert_eq!(entry.job_id, Some(first.id));
    assert_eq!(entry.deliveries, Some(1));
    assert_eq!(
        entry.original_subject.as_deref(),
        Some("sub-dlq.jobs.gpt-4_2e1.interactive.acme")
    );
    assert_eq!(entry.payload, original_payload);
    assert_eq!(entry.subject, "sub-dlq.dlq.gpt-4_2e1");

    let replayed = operator.dlq_replay(first_seq).await.unwrap();
    assert_eq!(replayed.job_id, Some(first.id));
    assert!(
        replayed
            .msg_id
            .starts_with(&format!("{}-replay-{first_seq}.", first.id)),
        "{}",
        replayed.msg_id
    );
    let (again, message) = worker.take_jobs(1).await.remove(0);
    assert_eq!(message.payload, original_payload, "the very same bytes");
    assert_eq!(again.id, first.id);
    assert_eq!(
        message.subject.as_str(),
        "sub-dlq.jobs.gpt-4_2e1.interactive.acme"
    );
    let headers = message.headers.as_ref().unwrap();
    assert_eq!(
        headers.get("Nats-Msg-Id").unwrap().as_str(),
        replayed.msg_id
    );
    assert!(headers.get(dlq::HEADER_REASON).is_none());
    assert!(headers.get(dlq::HEADER_SUBJECT).is_none());
    message.double_ack().await.unwrap();
    let left = operator.dlq_list().await.unwrap();
    assert_eq!(
        left.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![second_seq]
    );

    assert!(matches!(
        operator.dlq_replay(first_seq).await,
        Err(ClientError::NotFound { .. })
    ));
    let all = operator.dlq_replay_all().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].job_id, Some(second.id));
    assert!(operator.dlq_list().await.unwrap().is_empty());
    assert_eq!(worker.stream_messages("SUB_DLQ_JOBS").await, 1);
}

#[tokio::test]
async fn the_usage_report_sums_per_tenant_and_model_and_flags_unknown_prices() {
    let server = TestNats::start().await;
    let worker = FakeWorker::setup(&server, "sub-usage", Setup::default()).await;
    let operator = Operator::from_client(&client(&server, "sub-usage").await);

    // Before the window.
    worker
        .publish_usage(&usage_event("acme", "chat-fast", 1000, 1000, json!({"status": "priced", "input": 0, "cached_input": 0, "cache_write": 0, "output": 0, "total": 9.0})))
        .await;
    let since = Timestamp::now();
    let priced = |total: f64| json!({"status": "priced", "input": 0, "cached_input": 0, "cache_write": 0, "output": total, "total": total});
    worker
        .publish_usage(&usage_event("acme", "chat-fast", 10, 20, priced(0.25)))
        .await;
    worker
        .publish_usage(&usage_event("acme", "chat-fast", 5, 5, priced(0.5)))
        .await;
    worker
        .publish_usage(&usage_event(
            "acme",
            "chat-fast",
            1,
            1,
            json!({"status": "unknown_price", "missing": ["mock/m-new"]}),
        ))
        .await;
    worker
        .publish_usage(&usage_event("acme", "gpt-4.1", 7, 3, priced(1.0)))
        .await;
    worker
        .publish_usage(&usage_event("other", "chat-fast", 100, 100, priced(2.0)))
        .await;

    let report = operator
        .usage_report(UsageQuery {
            since,
            until: None,
            tenant: None,
            all_tenants: false,
            by_label: None,
        })
        .await
        .unwrap();
    assert_eq!(report.tenant.as_deref(), Some("acme"));
    assert_eq!(report.rows.len(), 2, "{report:?}");
    let chat = &report.rows[0];
    assert_eq!(
        (chat.tenant.as_str(), chat.model.as_str()),
        ("acme", "chat-fast")
    );
    assert_eq!((chat.jobs, chat.events, chat.succeeded), (3, 3, 3));
    assert_eq!((chat.prompt_tokens, chat.completion_tokens), (16, 26));
    assert_eq!((chat.cached_prompt_tokens, chat.reasoning_tokens), (3, 6));
    assert!((chat.cost_usd - 0.75).abs() < 1e-9, "{}", chat.cost_usd);
    assert_eq!(chat.unknown_price_events, 1);
    assert_eq!(chat.missing_prices, vec!["mock/m-new"]);
    assert!((report.total.cost_usd - 1.75).abs() < 1e-9);
    assert!(report.total.has_unknown_prices());

    let everyone = operator
        .usage_report(UsageQuery {
            since,
            until: None,
            tenant: None,
            all_tenants: true,
            by_label: None,
        })
        .await
        .unwrap();
    assert_eq!(everyone.rows.len(), 3);
    assert_eq!(everyone.total.prompt_tokens, 123);
    assert!((everyone.total.cost_usd - 3.75).abs() < 1e-9);

    let empty = operator
        .usage_report(UsageQuery {
            since: Timestamp::now().plus(Duration::from_secs(3600)),
            until: None,
            tenant: None,
            all_tenants: true,
            by_label: None,
        })
        .await
        .unwrap();
    assert!(empty.rows.is_empty());
}

#[tokio::test]
async fn without_a_worker_setup_every_call_says_llmq_is_not_set_up() {
    let server = TestNats::start().await;
    let client = Client::connect(ClientOptions {
        check_catalog: false,
        // No stream will answer: do not wait out the grace a cluster's leader election needs.
        missing_stream_grace: Duration::from_millis(300),
        ..options(&server, "sub-none", "acme")
    })
    .await
    .unwrap();
    let id = Uuid::now_v7();
    let not_set_up = |err: &ClientError| matches!(err, ClientError::NotSetUp { prefix, .. } if prefix == "sub-none");

    match client.submit(job("chat-fast", "hi")).await {
        Err(SubmitError::NotSetUp { prefix, missing }) => {
            assert_eq!(prefix, "sub-none");
            assert!(missing.contains("SUB_NONE_JOBS"), "{missing}");
        }
        other => panic!("expected NotSetUp, got {other:?}"),
    }
    assert!(not_set_up(&client.get_outcome(id).await.unwrap_err()));
    assert!(not_set_up(&client.cancel(id, None).await.unwrap_err()));
    assert!(not_set_up(&client.catalog().await.unwrap_err()));
    let operator = Operator::connect(options(&server, "sub-none", "acme"))
        .await
        .unwrap();
    assert!(not_set_up(&operator.dlq_list().await.unwrap_err()));
    assert!(not_set_up(&operator.dlq_replay(1).await.unwrap_err()));
    assert!(not_set_up(
        &operator
            .usage_report(UsageQuery::last(Duration::from_secs(60)))
            .await
            .unwrap_err()
    ));
    assert!(matches!(
        client.wait_outcome(id, Duration::from_secs(5)).await,
        Err(WaitError::Client(ClientError::NotSetUp { .. }))
    ));

    // With the catalog check on, a missing catalog means no workers.
    let checking = client_with_check(&server).await;
    assert!(matches!(
        checking.submit(job("chat-fast", "hi")).await,
        Err(SubmitError::NoWorkers { .. })
    ));
}

async fn client_with_check(server: &TestNats) -> Client {
    Client::connect(options(server, "sub-none", "acme"))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_dead_lettered_event_ends_the_wait() {
    let server = TestNats::start().await;
    let worker = FakeWorker::setup(&server, "sub-dead", Setup::default()).await;
    worker.announce("w1", MODELS).await;
    let client = client(&server, "sub-dead").await;

    let handle = client.submit(job("chat-fast", "hi")).await.unwrap();
    let (job, _) = worker.take_jobs(1).await.remove(0);
    worker
        .send(
            &job,
            json!({"type": "dead_lettered", "v": 1, "job_id": job.id,
                   "reason": "unsupported_version", "message": "v9"}),
        )
        .await;
    match handle.outcome_within(PATIENCE).await {
        Err(WaitError::DeadLettered { job_id, reason, .. }) => {
            assert_eq!(job_id, job.id);
            assert_eq!(reason, llmq_schemas::DlqReason::UnsupportedVersion);
        }
        other => panic!("expected DeadLettered, got {other:?}"),
    }
}
