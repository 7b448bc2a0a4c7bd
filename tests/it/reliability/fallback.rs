//! Retries, fallbacks and cooldowns.

use std::time::{Duration, Instant};

use llmq_schemas::{AttemptRoute, ErrorType, OutcomeStatus, Tier, UsageSource, UsageStatus};
use llmq_tests::mock::{Fault, MockOptions, ModelBehavior, RetryHint, ScriptedFault, mock_text};
use llmq_tests::nats::NatsOptions;
use llmq_tests::stack::{Stack, chat_job, eventually, run_job, two_mock_providers};

fn routes(outcome: &llmq_schemas::Outcome) -> Vec<(AttemptRoute, String, Option<ErrorType>)> {
    outcome
        .attempts
        .iter()
        .map(|a| (a.route, a.upstream_model.clone(), a.error))
        .collect()
}

#[tokio::test]
async fn a_transient_server_error_is_retried_on_the_same_deployment() {
    let stack = Stack::start().await;
    let worker = stack.worker(&stack.simple_setup()).await;
    let client = stack.client().await;
    stack
        .mock
        .push_faults([ScriptedFault::any(Fault::ServiceUnavailable)]);
    let outcome = run_job(&client, chat_job("chat", "retry me")).await;
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    assert_eq!(
        routes(&outcome),
        vec![
            (
                AttemptRoute::Primary,
                "mock-model".into(),
                Some(ErrorType::Server)
            ),
            (AttemptRoute::Retry, "mock-model".into(), None),
        ]
    );
    assert_eq!(outcome.attempts[0].http_status, Some(503));
    assert_eq!(outcome.text(), Some(mock_text("retry me", 12).as_str()));
    worker.stop().await;
}

#[tokio::test]
async fn a_rate_limited_deployment_hands_over_at_once_and_cools_down() {
    let stack = Stack::start().await;
    let setup = stack.setup(&format!(
        r#"{}
[models.chat]
deployments = [
  {{ provider = "mock", model = "primary", weight = 100 }},
  {{ provider = "mock2", model = "secondary", weight = 0 }},
]
"#,
        two_mock_providers(8)
    ));
    let worker = stack.worker(&setup).await;
    let client = stack.client().await;
    stack.mock.push_faults([ScriptedFault::for_model(
        "primary",
        Fault::RateLimited(RetryHint::RetryAfterSecs(30)),
    )]);
    let started = Instant::now();
    let outcome = run_job(&client, chat_job("chat", "limited")).await;
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    assert_eq!(
        routes(&outcome),
        vec![
            (
                AttemptRoute::Primary,
                "primary".into(),
                Some(ErrorType::RateLimited)
            ),
            (AttemptRoute::DeploymentFallback, "secondary".into(), None),
        ]
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no waiting for the retry-after"
    );
    // While `primary` cools down, jobs go straight to `secondary`.
    for i in 0..5 {
        let outcome = run_job(&client, chat_job("chat", &format!("next {i}"))).await;
        assert_eq!(
            routes(&outcome),
            vec![(AttemptRoute::DeploymentFallback, "secondary".into(), None)]
        );
    }
    let primary_calls = stack
        .mock
        .requests()
        .iter()
        .filter(|r| r.model == "primary")
        .count();
    assert_eq!(primary_calls, 1);
    worker.stop().await;
}

#[tokio::test]
async fn an_overloaded_model_falls_back_to_the_next_model_after_its_retries() {
    let mut options = MockOptions::default();
    options.per_model.insert(
        "flaky".into(),
        ModelBehavior {
            always: Some(Fault::Overloaded),
            ..ModelBehavior::default()
        },
    );
    let stack = Stack::start_with(options, NatsOptions::default()).await;
    let setup = stack.setup(&format!(
        r#"{}
[models.chat]
deployments = [{{ provider = "mock", model = "flaky" }}]
fallbacks = ["backup"]
[models.backup]
deployments = [{{ provider = "mock2", model = "steady" }}]
"#,
        two_mock_providers(8)
    ));
    let worker = stack.worker(&setup).await;
    let client = stack.client().await;
    let outcome = run_job(&client, chat_job("chat", "fall back")).await;
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    // The mock answers `Overloaded` as a 503 in the OpenAI format: class server, 2 retries.
    assert_eq!(
        routes(&outcome),
        vec![
            (
                AttemptRoute::Primary,
                "flaky".into(),
                Some(ErrorType::Server)
            ),
            (AttemptRoute::Retry, "flaky".into(), Some(ErrorType::Server)),
            (AttemptRoute::Retry, "flaky".into(), Some(ErrorType::Server)),
            (AttemptRoute::ModelFallback, "steady".into(), None),
        ]
    );
    assert_eq!(outcome.attempts[3].model, "backup");
    assert_eq!(
        outcome.model, "chat",
        "the outcome names the model the job asked for"
    );
    worker.stop().await;
}

#[tokio::test]
async fn context_window_and_content_policy_errors_use_their_own_fallback_lists() {
    let stack = Stack::start().await;
    let setup = stack.setup(&format!(
        r#"{}
[models.chat]
deployments = [{{ provider = "mock", model = "small" }}]
fallbacks = ["general"]
context_window_fallbacks = ["long"]
content_policy_fallbacks = ["lenient"]
[models.general]
deployments = [{{ provider = "mock", model = "general-up" }}]
[models.long]
deployments = [{{ provider = "mock", model = "long-up" }}]
[models.lenient]
deployments = [{{ provider = "mock", model = "lenient-up" }}]
"#,
        llmq_tests::worker::openai_mock_provider(8)
    ));
    let worker = stack.worker(&setup).await;
    let client = stack.client().await;

    stack.mock.push_faults([ScriptedFault::for_model(
        "small",
        Fault::ContextWindowExceeded,
    )]);
    let outcome = run_job(&client, chat_job("chat", "a very long prompt")).await;
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    assert_eq!(
        routes(&outcome),
        vec![
            (
                AttemptRoute::Primary,
                "small".into(),
                Some(ErrorType::ContextWindowExceeded)
            ),
            (AttemptRoute::ContextWindowFallback, "long-up".into(), None),
        ]
    );

    stack
        .mock
        .push_faults([ScriptedFault::for_model("small", Fault::ContentFiltered)]);
    let outcome = run_job(&client, chat_job("chat", "a spicy prompt")).await;
    assert_eq!(
        routes(&outcome),
        vec![
            (
                AttemptRoute::Primary,
                "small".into(),
                Some(ErrorType::ContentFiltered)
            ),
            (
                AttemptRoute::ContentPolicyFallback,
                "lenient-up".into(),
                None
            ),
        ]
    );
    worker.stop().await;
}

#[tokio::test]
async fn an_invalid_request_fails_at_once_and_quota_exhaustion_is_not_retried() {
    let stack = Stack::start().await;
    let setup = stack.setup(&format!(
        r#"{}
[models.chat]
deployments = [
  {{ provider = "mock", model = "main", weight = 1 }},
  {{ provider = "mock2", model = "spare", weight = 0 }},
]
"#,
        two_mock_providers(8)
    ));
    let worker = stack.worker(&setup).await;
    let client = stack.client().await;

    stack
        .mock
        .push_faults([ScriptedFault::any(Fault::BadRequest)]);
    let outcome = run_job(&client, chat_job("chat", "bad")).await;
    assert_eq!(outcome.status, OutcomeStatus::Failed);
    let error = outcome.error.clone().unwrap();
    assert_eq!(error.kind, ErrorType::InvalidRequest);
    assert_eq!(error.provider_status, Some(400));
    assert_eq!(
        outcome.attempts.len(),
        1,
        "another deployment would reject it too"
    );

    stack
        .mock
        .push_faults([ScriptedFault::for_model("main", Fault::QuotaExhausted)]);
    let outcome = run_job(&client, chat_job("chat", "broke")).await;
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    assert_eq!(
        routes(&outcome),
        vec![
            (
                AttemptRoute::Primary,
                "main".into(),
                Some(ErrorType::QuotaExhausted)
            ),
            (AttemptRoute::DeploymentFallback, "spare".into(), None),
        ]
    );
    worker.stop().await;
}

#[tokio::test]
async fn when_every_deployment_cools_down_the_job_waits_instead_of_failing() {
    let stack = Stack::start().await;
    let mut setup = stack.simple_setup();
    setup.set("retry", "max_in_worker_wait", "\"200ms\"");
    let worker = stack.worker(&setup).await;
    let client = stack.client().await;
    // A batch job waits in the worker for the cooldown, however long, without going back
    // to the queue (an interactive one waits up to its limit wait, else fails at once;
    // tests/it/edge.rs).
    stack
        .mock
        .push_faults([ScriptedFault::any(Fault::RateLimited(
            RetryHint::RetryAfterMs(1500),
        ))]);
    let started = Instant::now();
    let mut job = chat_job("chat", "patience");
    job.tier = Tier::Batch;
    let outcome = run_job(&client, job).await;
    assert_eq!(outcome.status, OutcomeStatus::Succeeded, "{outcome:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(stack.mock.request_count(), 2);
    assert_eq!(outcome.delivery, 1, "waited in the worker, no hand-back");
    assert_eq!(outcome.attempts.len(), 2);
    assert_eq!(outcome.attempts[0].error, Some(ErrorType::RateLimited));
    assert_eq!(outcome.attempts[1].error, None);

    // A short cooldown is waited out inside the worker.
    stack
        .mock
        .push_faults([ScriptedFault::any(Fault::RateLimited(
            RetryHint::RetryAfterMs(100),
        ))]);
    let outcome = run_job(&client, chat_job("chat", "short wait")).await;
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    assert_eq!(
        routes(&outcome),
        vec![
            (
                AttemptRoute::Primary,
                "mock-model".into(),
                Some(ErrorType::RateLimited)
            ),
            (AttemptRoute::Retry, "mock-model".into(), None),
        ]
    );
    worker.stop().await;
}

#[tokio::test]
async fn a_batch_job_that_paid_for_a_cut_stream_and_waited_out_a_cooldown_is_billed_for_every_call()
{
    let stack = Stack::start().await;
    let mut setup = stack.simple_setup();
    setup.set("retry", "max_in_worker_wait", "\"200ms\"");
    let worker = stack.worker(&setup).await;
    let client = stack.client().await;
    // Five tokens streamed, then the connection cut (paid for, no usage chunk); the retry
    // is rate limited, which cools the only deployment: the job waits for it in the
    // worker and the third call succeeds, all in one processing.
    stack.mock.push_faults([
        ScriptedFault::any(Fault::CutMidStream { after_tokens: 5 }),
        ScriptedFault::any(Fault::RateLimited(RetryHint::RetryAfterMs(1000))),
    ]);
    let mut job = chat_job("chat", "pay for the cut");
    job.stream = true;
    job.tier = Tier::Batch;
    let outcome = run_job(&client, job).await;
    assert_eq!(outcome.status, OutcomeStatus::Succeeded, "{outcome:?}");
    assert_eq!(outcome.delivery, 1, "no hand-back");
    assert_eq!(stack.mock.request_count(), 3);

    let events = eventually(Duration::from_secs(5), "the usage event", || async {
        let events = stack.usage_events(outcome.job_id).await;
        (!events.is_empty()).then_some(events)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events_later = stack.usage_events(outcome.job_id).await;
    assert_eq!(events_later.len(), 1, "{events_later:?}");
    let event = &events[0];
    assert_eq!(event.status, UsageStatus::Succeeded);
    // The cut call and the one that succeeded (the 429 used nothing).
    let numbers: Vec<u32> = event.attempts.iter().map(|a| a.attempt).collect();
    assert_eq!(numbers, [1, 3], "{:?}", event.attempts);
    assert_eq!(outcome.attempts.len(), 3);
    let cut = &event.attempts[0];
    assert_eq!(cut.usage_source, UsageSource::Estimated);
    assert!(cut.usage.completion_tokens >= 5, "{:?}", cut.usage);
    assert!(cut.usage.prompt_tokens > 0, "{:?}", cut.usage);
    assert_eq!(event.usage_source, UsageSource::Estimated);
    assert_eq!(Some(event.usage), outcome.usage);
    let last = &event.attempts[1].usage;
    assert_eq!(
        event.usage.completion_tokens,
        cut.usage.completion_tokens + last.completion_tokens
    );
    worker.stop().await;
}

#[tokio::test]
async fn every_retry_after_format_is_honoured() {
    let stack = Stack::start().await;
    let worker = stack.worker(&stack.simple_setup()).await;
    let client = stack.client().await;
    for (hint, at_least) in [
        (RetryHint::RetryAfterMs(300), 300),
        (RetryHint::RetryAfterSecs(1), 1000),
        (RetryHint::XMsRetryAfterMs(300), 300),
        (RetryHint::ResetRequests("300ms".into()), 300),
        (RetryHint::ResetTokens("0.3s".into()), 300),
        (RetryHint::RetryAfterHttpDate(2), 1000),
    ] {
        stack
            .mock
            .push_faults([ScriptedFault::any(Fault::RateLimited(hint.clone()))]);
        let started = Instant::now();
        let outcome = run_job(&client, chat_job("chat", &format!("{hint:?}"))).await;
        assert_eq!(outcome.status, OutcomeStatus::Succeeded, "{hint:?}");
        assert_eq!(outcome.attempts.len(), 2, "{hint:?}");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(at_least),
            "{hint:?}: retried after {waited:?}"
        );
    }
    worker.stop().await;
}

#[tokio::test]
async fn a_refused_connection_falls_back_to_the_next_deployment() {
    let stack = Stack::start().await;
    // A port nothing listens on: bind one, learn its number, close it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let setup = stack.setup(&format!(
        r#"[providers.dead]
kind = "openai"
base_url = "http://{closed}/v1"
api_key_file = "{{key_file}}"
{}
[models.chat]
deployments = [
  {{ provider = "dead", model = "nowhere", weight = 1 }},
  {{ provider = "mock", model = "somewhere", weight = 0 }},
]
"#,
        llmq_tests::worker::openai_mock_provider(8)
    ));
    let worker = stack.worker(&setup).await;
    let client = stack.client().await;
    let outcome = run_job(&client, chat_job("chat", "knock knock")).await;
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    let first = &outcome.attempts[0];
    assert_eq!(first.upstream_model, "nowhere");
    assert_eq!(first.error, Some(ErrorType::Network));
    assert!(
        first.error_message.as_deref().unwrap().contains("connect"),
        "{first:?}"
    );
    assert_eq!(outcome.attempts.last().unwrap().upstream_model, "somewhere");
    worker.stop().await;
}
