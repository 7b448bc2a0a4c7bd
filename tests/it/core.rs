//! The core path: a job in, a streamed answer out, on real JetStream.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use llmq_schemas::{ErrorType, Job, OutcomeStatus, ReplyEvent, UsageEvent, UsageSource};
use llmq_submitter::{ClientOptions, Operator, SubmitError};
use llmq_tests::mock::{MockOptions, mock_text, prompt_tokens_for};
use llmq_tests::nats::NatsOptions;
use llmq_tests::stack::{Stack, chat_job, eventually, run_job};
use llmq_tests::worker::{WorkerProcess, openai_mock_provider};

#[tokio::test]
async fn a_non_streaming_job_succeeds_with_the_upstream_answer() {
    let stack = Stack::start().await;
    let worker = stack.worker(&stack.simple_setup()).await;
    let client = stack.client().await;

    let mut job = chat_job("chat", "What is NATS?");
    job.custom_id = Some("req-1".into());
    job.metadata = Some(
        serde_json::json!({"team": "search"})
            .as_object()
            .unwrap()
            .clone(),
    );
    let outcome = run_job(&client, job).await;

    assert_eq!(outcome.status, OutcomeStatus::Succeeded, "{outcome:?}");
    assert_eq!(
        outcome.text(),
        Some(mock_text("What is NATS?", 12).as_str())
    );
    assert_eq!(outcome.custom_id.as_deref(), Some("req-1"));
    assert_eq!(outcome.metadata.as_ref().unwrap()["team"], "search");
    assert_eq!(outcome.tenant, "default");
    assert_eq!(outcome.attempts.len(), 1);
    assert_eq!(outcome.attempts[0].provider, "mock");
    assert_eq!(outcome.attempts[0].upstream_model, "mock-model");
    let usage = outcome.usage.unwrap();
    assert_eq!(usage.completion_tokens, 12);
    assert_eq!(
        usage.prompt_tokens,
        prompt_tokens_for("What is NATS?".len(), 1)
    );
    assert!(outcome.timings.queued_ms.is_some());

    // The upstream saw the upstream model name, the key in the header, no stream flag.
    let requests = stack.mock.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].body["model"], "mock-model");
    assert!(!requests[0].stream);
    let auth = requests[0]
        .headers
        .iter()
        .find(|(name, _)| name == "authorization")
        .map(|(_, value)| value.as_str());
    assert_eq!(auth, Some("Bearer test-key"));
    worker.stop().await;
}

#[tokio::test]
async fn streamed_deltas_arrive_in_order_and_concatenate_to_the_final_content() {
    let stack = Stack::start_with(
        MockOptions {
            tokens_per_reply: 40,
            token_interval: Duration::from_millis(2),
            ..MockOptions::default()
        },
        NatsOptions::default(),
    )
    .await;
    let worker = stack.worker(&stack.simple_setup()).await;
    let client = stack.client().await;

    let mut job = chat_job("chat", "stream me a story");
    job.stream = true;
    let mut handle = client.submit(job).await.unwrap();
    let mut text = String::new();
    let mut seqs = Vec::new();
    let mut started = 0;
    let outcome = loop {
        let event = tokio::time::timeout(Duration::from_secs(30), handle.next_event())
            .await
            .expect("events keep coming")
            .expect("a final event")
            .expect("no wait error");
        match event {
            ReplyEvent::Started(_) => started += 1,
            ReplyEvent::Delta(delta) => {
                seqs.push(delta.seq);
                text.push_str(delta.content.as_deref().unwrap_or(""));
            }
            ReplyEvent::Final(outcome) => break outcome,
            other => panic!("unexpected event {other:?}"),
        }
    };
    assert_eq!(started, 1);
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    let expected = mock_text("stream me a story", 40);
    assert_eq!(text, expected);
    assert_eq!(outcome.text(), Some(expected.as_str()));
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "in order, no gaps"
    );
    assert!(
        seqs.len() >= 40,
        "one delta per token at least: {}",
        seqs.len()
    );
    assert!(outcome.timings.ttft_ms.is_some());
    // The worker asked for usage in the stream.
    let request = &stack.mock.requests()[0];
    assert!(request.stream);
    assert_eq!(request.body["stream_options"]["include_usage"], true);
    assert_eq!(outcome.usage.unwrap().completion_tokens, 40);
    worker.stop().await;
}

#[tokio::test]
async fn the_usage_event_equals_what_the_provider_reported() {
    let stack = Stack::start_with(
        MockOptions {
            cached_prompt_tokens: 8,
            reasoning_tokens: 3,
            ..MockOptions::default()
        },
        NatsOptions::default(),
    )
    .await;
    let worker = stack.worker(&stack.simple_setup()).await;
    let client = stack.client().await;
    let prompt = "count my tokens please, all of them";
    let outcome = run_job(&client, chat_job("chat", prompt)).await;
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);

    let js = async_nats::jetstream::new(stack.nats.client().await);
    let usage_stream = js.get_stream("LLMQ_USAGE").await.unwrap();
    let message = usage_stream
        .direct_get_last_for_subject("llmq.usage.default.chat")
        .await
        .unwrap();
    let event: UsageEvent = serde_json::from_slice(&message.payload).unwrap();
    let msg_id = message.headers.get("Nats-Msg-Id").map(|v| v.to_string());
    assert_eq!(msg_id, Some(event.id.to_string()), "deduplicable by its id");
    assert_eq!(event.job_id, outcome.job_id);
    assert_eq!(event.tenant, "default");
    assert_eq!(event.model, "chat");
    assert_eq!(event.provider.as_deref(), Some("mock"));
    assert_eq!(event.upstream_model.as_deref(), Some("mock-model"));
    assert_eq!(event.status, llmq_schemas::UsageStatus::Succeeded);
    assert_eq!(event.usage_source, UsageSource::Reported);
    let prompt_tokens = prompt_tokens_for(prompt.len(), 1).max(8);
    assert_eq!(event.usage.prompt_tokens, prompt_tokens);
    // OpenAI counts reasoning inside completion_tokens: 12 content + 3 reasoning.
    assert_eq!(event.usage.completion_tokens, 15);
    assert_eq!(event.usage.total_tokens, prompt_tokens + 15);
    assert_eq!(event.usage.cached_prompt_tokens, 8);
    assert_eq!(event.usage.reasoning_tokens, 3);
    assert_eq!(Some(event.usage), outcome.usage);
    assert_eq!(event.attempts.len(), 1);
    // `mock-model` has no price: said out loud, not zero.
    assert!(
        matches!(event.cost, llmq_schemas::Cost::UnknownPrice { .. }),
        "{:?}",
        event.cost
    );
    worker.stop().await;
}

#[tokio::test]
async fn the_outcome_is_readable_after_the_producer_disconnected() {
    let stack = Stack::with_slow_mock(Duration::from_millis(300)).await;
    let worker = stack.worker(&stack.simple_setup()).await;
    let job = chat_job("chat", "remember me");
    let job_id = job.id;
    {
        let client = stack.client().await;
        client.submit_detached(job).await.unwrap();
        // The producer goes away before the job has run.
    }
    stack
        .mock
        .wait_for_requests(1, Duration::from_secs(10))
        .await;
    let later = stack.client().await;
    let outcome = later
        .wait_outcome(job_id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    assert_eq!(outcome.text(), Some(mock_text("remember me", 12).as_str()));
    let again = later.get_outcome(job_id).await.unwrap().unwrap();
    assert_eq!(again, outcome);
    worker.stop().await;
}

#[tokio::test]
async fn two_workers_share_the_consumer_and_each_job_runs_exactly_once() {
    let stack = Stack::with_slow_mock(Duration::from_millis(20)).await;
    let a = stack
        .worker(&stack.simple_setup().with_id("worker-a"))
        .await;
    let b = stack
        .worker(&stack.simple_setup().with_id("worker-b"))
        .await;
    let client = stack.client().await;

    let jobs: Vec<Job> = (0..100)
        .map(|i| chat_job("chat", &format!("job number {i}")))
        .collect();
    let mut handles = Vec::new();
    for job in jobs {
        handles.push(client.submit(job).await.unwrap());
    }
    let mut workers = HashSet::new();
    for handle in handles {
        let outcome = handle
            .outcome_within(Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(outcome.status, OutcomeStatus::Succeeded);
        workers.insert(outcome.worker_id.clone());
    }
    assert_eq!(
        workers,
        HashSet::from(["worker-a".to_owned(), "worker-b".to_owned()])
    );
    let requests = stack.mock.requests();
    assert_eq!(requests.len(), 100, "each job reached the provider once");
    let prompts: HashSet<String> = requests.iter().map(|r| r.prompt.clone()).collect();
    assert_eq!(prompts.len(), 100);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn provider_concurrency_never_exceeds_its_limit_with_fifty_jobs_in_flight() {
    let stack = Stack::with_slow_mock(Duration::from_millis(40)).await;
    let setup = stack.setup(&format!(
        "{}\n[models.chat]\ndeployments = [{{ provider = \"mock\", model = \"mock-model\" }}]\n",
        openai_mock_provider(4)
    ));
    let worker = stack.worker(&setup).await;
    let client = stack.client().await;
    let mut handles = Vec::new();
    for i in 0..50 {
        let mut job = chat_job("chat", &format!("concurrent {i}"));
        job.stream = i % 2 == 0;
        handles.push(client.submit(job).await.unwrap());
    }
    for handle in handles {
        let outcome = handle
            .outcome_within(Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    }
    assert_eq!(stack.mock.request_count(), 50);
    assert_eq!(
        stack.mock.peak_concurrency(),
        4,
        "the limit was reached and never exceeded"
    );
    worker.stop().await;
}

#[tokio::test]
async fn an_unknown_model_is_refused_at_submit_and_a_job_that_slips_through_fails() {
    let stack = Stack::start().await;
    let worker = stack.worker(&stack.simple_setup()).await;
    let client = stack.client().await;
    match client.submit(chat_job("gpt-9", "hello")).await {
        Err(SubmitError::UnknownModel {
            model, available, ..
        }) => {
            assert_eq!(model, "gpt-9");
            assert_eq!(available, vec!["chat".to_owned()]);
        }
        other => panic!("expected UnknownModel, got {other:?}"),
    }

    // A producer that does not check the catalog (another language, say).
    let unchecked = stack
        .client_with(ClientOptions {
            check_catalog: false,
            ..ClientOptions::default()
        })
        .await;
    let outcome = run_job(&unchecked, chat_job("gpt-9.5", "hello")).await;
    assert_eq!(outcome.status, OutcomeStatus::Failed);
    let error = outcome.error.unwrap();
    assert_eq!(error.kind, ErrorType::UnknownModel);
    assert!(
        error.message.contains("chat"),
        "names what is served: {}",
        error.message
    );
    assert_eq!(stack.mock.request_count(), 0);
    worker.stop().await;
}

#[tokio::test]
async fn a_malformed_payload_is_dead_lettered_and_the_next_job_still_succeeds() {
    let stack = Stack::start().await;
    let worker = stack.worker(&stack.simple_setup()).await;
    let js = async_nats::jetstream::new(stack.nats.client().await);
    let garbage = b"{\"v\":1,\"id\":\"not-a-uuid\",\"model\":\"chat\"".to_vec();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("X-Producer", "legacy-batch");
    js.publish_with_headers(
        "llmq.jobs.chat.interactive.default",
        headers,
        garbage.clone().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();

    let client = stack.client().await;
    let operator = Operator::from_client(&client);
    let letters = eventually(Duration::from_secs(20), "the dead letter", || {
        let operator = operator.clone();
        async move {
            operator
                .dlq_list()
                .await
                .ok()
                .filter(|letters| !letters.is_empty())
        }
    })
    .await;
    let letter = &letters[0];
    assert_eq!(letter.reason.as_deref(), Some("undecodable"));
    assert_eq!(
        letter.payload.as_ref(),
        garbage.as_slice(),
        "original bytes kept"
    );
    assert_eq!(
        letter.original_subject.as_deref(),
        Some("llmq.jobs.chat.interactive.default")
    );
    assert!(
        letter
            .detail
            .as_deref()
            .unwrap_or("")
            .contains("not a valid job")
    );
    assert_eq!(letter.deliveries, Some(1));
    assert_eq!(
        letter
            .headers
            .get("X-Producer")
            .map(|v| v.to_string())
            .as_deref(),
        Some("legacy-batch"),
        "original headers kept"
    );
    // Gone from the queue, and the worker carries on.
    let jobs = js.get_stream("LLMQ_JOBS").await.unwrap();
    eventually(Duration::from_secs(5), "the queue to empty", || {
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
    let outcome = run_job(&client, chat_job("chat", "still alive?")).await;
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    worker.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_lets_an_in_flight_job_finish() {
    let stack = Stack::with_slow_mock(Duration::from_millis(800)).await;
    let mut worker = stack.worker(&stack.simple_setup()).await;
    let client = stack.client().await;
    let handle = client.submit(chat_job("chat", "finish me")).await.unwrap();
    assert!(
        stack
            .mock
            .wait_for_requests(1, Duration::from_secs(10))
            .await
    );
    worker.begin_stop();
    let outcome = handle
        .outcome_within(Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    worker.finished().await;
    // Nothing left behind: the job was acked, not handed back.
    let js = async_nats::jetstream::new(stack.nats.client().await);
    let mut jobs = js.get_stream("LLMQ_JOBS").await.unwrap();
    assert_eq!(jobs.info().await.unwrap().state.messages, 0);
    // And the worker left the catalog.
    let catalog = js.get_key_value("LLMQ_CATALOG").await.unwrap();
    let keys: Vec<String> = catalog
        .keys()
        .await
        .unwrap()
        .filter_map(|k| async { k.ok() })
        .collect()
        .await;
    assert!(keys.is_empty(), "{keys:?}");
}

#[tokio::test]
async fn two_workers_starting_at_the_same_instant_both_come_up() {
    let stack = Stack::start().await;
    let (setup_a, setup_b) = (
        stack.simple_setup().with_id("twin-a"),
        stack.simple_setup().with_id("twin-b"),
    );
    let (a, b) = tokio::join!(stack.worker(&setup_a), stack.worker(&setup_b));
    let client = stack.client().await;
    let outcome = run_job(&client, chat_job("chat", "after a racy start")).await;
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    let catalog = client.catalog().await.unwrap();
    let ids: HashSet<String> = catalog.into_iter().map(|e| e.worker_id).collect();
    assert_eq!(
        ids,
        HashSet::from(["twin-a".to_owned(), "twin-b".to_owned()])
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn health_readiness_and_metrics_are_served_on_the_admin_port() {
    let stack = Stack::with_slow_mock(Duration::from_millis(600)).await;
    let mut worker = stack.worker(&stack.simple_setup()).await;
    let admin = worker.admin_addr().expect("admin endpoint on");
    gateway_worker::providers::http_client::install_crypto_provider();
    let http = reqwest::Client::new();
    let get = |path: &str| {
        let http = http.clone();
        let url = format!("http://{admin}{path}");
        async move {
            let response = http.get(url).send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    assert_eq!(get("/healthz").await.0, 200);
    assert_eq!(get("/readyz").await, (200, "ready\n".to_owned()));
    let client = stack.client().await;

    // Metrics while the worker runs: once it stops, its admin port closes with it.
    let outcome = run_job(&client, chat_job("chat", "measure me")).await;
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    let (_, metrics) = get("/metrics").await;
    for name in [
        "llmq_jobs_received_total",
        "llmq_jobs_finished_total",
        "llmq_provider_attempts_total",
        "llmq_provider_latency_seconds_bucket",
        "llmq_tokens_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    assert!(metrics.contains(r#"model="chat""#));
    // Per-job series carry no tenant (limit and budget series name registry tenants, which
    // configuration bounds; other tests in this process may have made some).
    let per_job = metrics
        .lines()
        .filter(|line| line.starts_with("llmq_jobs_") || line.starts_with("llmq_provider_"));
    for line in per_job {
        assert!(!line.contains("tenant="), "unbounded label: {line}");
    }

    // Draining: not ready for new work, still alive while a job is in flight.
    let handle = client.submit(chat_job("chat", "drain me")).await.unwrap();
    assert!(
        stack
            .mock
            .wait_for_requests(2, Duration::from_secs(10))
            .await
    );
    worker.begin_stop();
    let (status, body) = get("/readyz").await;
    assert_eq!((status, body.as_str()), (503, "draining\n"));
    assert_eq!(get("/healthz").await.0, 200);
    let outcome = handle
        .outcome_within(Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    worker.finished().await;
}

#[tokio::test]
async fn invalid_jobs_fail_with_a_clear_error_and_no_provider_call() {
    let stack = Stack::start().await;
    let worker = stack.worker(&stack.simple_setup()).await;
    let client = stack.client().await;
    let mut job = chat_job("chat", "two answers, streamed");
    job.stream = true;
    job.request.n = Some(2);
    let outcome = run_job(&client, job).await;
    assert_eq!(outcome.status, OutcomeStatus::Failed);
    let error = outcome.error.unwrap();
    assert_eq!(error.kind, ErrorType::InvalidJob);
    assert!(error.message.contains("n > 1"), "{}", error.message);

    // A body whose model disagrees with its subject, published by hand.
    let mut job = chat_job("other-model", "mismatch");
    job.reply_to = None;
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
        .wait_outcome(job.id, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(outcome.error.unwrap().kind, ErrorType::InvalidJob);

    // A reply subject pointing into llmq's own streams is refused.
    let mut job = chat_job("chat", "inject");
    job.reply_to = Some("llmq.jobs.chat.interactive.victim".into());
    js.publish(
        "llmq.jobs.chat.interactive.default",
        serde_json::to_vec(&job).unwrap().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let outcome = client
        .wait_outcome(job.id, Duration::from_secs(20))
        .await
        .unwrap();
    let error = outcome.error.unwrap();
    assert_eq!(error.kind, ErrorType::InvalidJob);
    assert!(error.message.contains("reply_to"), "{}", error.message);
    assert_eq!(stack.mock.request_count(), 0);
    let mut jobs = js.get_stream("LLMQ_JOBS").await.unwrap();
    assert_eq!(
        jobs.info().await.unwrap().state.messages,
        0,
        "nothing was injected"
    );
    worker.stop().await;
}

#[tokio::test]
async fn an_idle_tier_does_not_hold_the_only_job_slot() {
    let stack = Stack::start().await;
    let mut setup = stack.simple_setup();
    setup
        .set("worker", "max_inflight", "1")
        .set("worker", "fetch_expires", "\"5s\"");
    let worker = stack.worker(&setup).await;
    let client = stack.client().await;
    // The batch tier has no jobs: its loop long-polls. Were it holding the one slot while
    // it waits, each interactive job would wait for that poll to expire (5 s), past its
    // deadline.
    for i in 0..10 {
        let mut job = chat_job("chat", &format!("one slot {i}"));
        job.deadline = Some(llmq_schemas::Timestamp::now().plus(Duration::from_secs(5)));
        let outcome = run_job(&client, job).await;
        assert_eq!(
            outcome.status,
            OutcomeStatus::Succeeded,
            "job {i}: {:?}",
            outcome.error
        );
    }
    worker.stop().await;
}

/// Metric series of a `/metrics` page (sample lines, not comments).
fn series(page: &str) -> Vec<&str> {
    page.lines()
        .filter(|line| line.starts_with("llmq_"))
        .map(|line| line.rsplit_once(' ').map_or(line, |(series, _)| series))
        .collect()
}

#[tokio::test]
async fn metric_labels_stay_bounded_whatever_model_names_jobs_carry() {
    let stack = Stack::start().await;
    let mut setup = stack.simple_setup();
    setup.set("worker", "sweep_interval", "\"100ms\"");
    let mut worker = WorkerProcess::spawn(&setup, "labels").await;
    let client = stack
        .client_with(ClientOptions {
            check_catalog: false,
            ..Default::default()
        })
        .await;
    let unknown = |i: usize| chat_job(&format!("made-up-{i}"), "hello?");
    // One served job and one unknown model: every series those produce now exists.
    assert_eq!(
        run_job(&client, chat_job("chat", "known")).await.status,
        OutcomeStatus::Succeeded
    );
    let first = client.submit_detached(unknown(0)).await.unwrap();
    let outcome = client
        .wait_outcome(first, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(outcome.error.unwrap().kind, ErrorType::UnknownModel);
    let before = worker.metrics().await;

    let ids = futures::future::join_all((1..=300).map(|i| client.submit_detached(unknown(i))))
        .await
        .into_iter()
        .map(|id| id.unwrap())
        .collect::<Vec<_>>();
    for id in ids {
        let outcome = client
            .wait_outcome(id, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(outcome.error.unwrap().kind, ErrorType::UnknownModel);
    }
    let after = worker.metrics().await;
    assert!(
        !after.contains("made-up-"),
        "a job's model name became a label"
    );
    assert!(after.contains(r#"model="_other""#), "{after}");
    assert_eq!(
        series(&before).len(),
        series(&after).len(),
        "series grew:\n{}",
        series(&after)
            .into_iter()
            .filter(|s| !series(&before).contains(s))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(
        worker.terminate(Duration::from_secs(20)).await.code(),
        Some(0)
    );
}

#[tokio::test]
async fn messages_without_content_are_refused_by_producer_and_worker() {
    let stack = Stack::start().await;
    let worker = stack.worker(&stack.simple_setup()).await;
    let client = stack.client().await;
    let js = async_nats::jetstream::new(stack.nats.client().await);
    for content in [serde_json::Value::Null, serde_json::json!([])] {
        let mut job = chat_job("chat", "x");
        job.request.messages[0] =
            serde_json::from_value(serde_json::json!({"role": "user", "content": content.clone()}))
                .unwrap();
        // The library refuses it before it reaches the queue...
        match client.submit(job.clone()).await {
            Err(SubmitError::InvalidJob(message)) => {
                assert!(message.contains("messages[0]"), "{message}")
            }
            other => panic!("{content}: expected InvalidJob, got {other:?}"),
        }
        // ...and a producer in another language that sends it anyway gets invalid_job.
        js.publish(
            "llmq.jobs.chat.interactive.default",
            serde_json::to_vec(&job).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
        let outcome = client
            .wait_outcome(job.id, Duration::from_secs(20))
            .await
            .unwrap();
        let error = outcome.error.unwrap();
        assert_eq!(error.kind, ErrorType::InvalidJob, "{content}");
        assert!(error.message.contains("needs content"), "{}", error.message);
    }
    assert_eq!(stack.mock.request_count(), 0, "nothing was forwarded");
    worker.stop().await;
}
