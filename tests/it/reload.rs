//! Live configuration: the worker binary re-reads its config file on SIGHUP and applies
//! it without a restart. New models are served, routing follows the new deployments,
//! jobs in flight finish on the config they started with, a removed model's queued jobs
//! are answered `unknown_model`, and a config that is invalid or changes a restart-only
//! setting is rejected whole while the worker keeps serving the old one.

use std::collections::HashMap;
use std::time::Duration;

use llmq_schemas::{ErrorType, Job, Outcome, OutcomeStatus, Tier};
use llmq_submitter::Client;
use llmq_tests::mock::{MockOptions, ModelBehavior};
use llmq_tests::nats::NatsOptions;
use llmq_tests::stack::{Stack, chat_job, collect_events, eventually, run_job, two_mock_providers};
use llmq_tests::worker::{WorkerProcess, WorkerSetup};

const WAIT: Duration = Duration::from_secs(60);
const APPLIED: &str = "\"config reloaded\"";
const REJECTED: &str = "config reload rejected";

/// `[models.NAME]` with the given deployments (`(provider, upstream model, weight)`).
fn model(name: &str, deployments: &[(&str, &str, u32)]) -> String {
    let deployments: Vec<String> = deployments
        .iter()
        .map(|(provider, upstream, weight)| {
            format!("{{ provider = \"{provider}\", model = \"{upstream}\", weight = {weight} }}")
        })
        .collect();
    format!(
        "[models.{name}]\ndeployments = [{}]\n",
        deployments.join(", ")
    )
}

/// The providers `mock` and `mock2` and `models`.
fn body(models: &[String]) -> String {
    format!("{}\n{}", two_mock_providers(8), models.join("\n"))
}

/// A mock whose `slow-model` waits `delay` before its first token.
async fn stack_with_slow_model(delay: Duration) -> Stack {
    let per_model = HashMap::from([(
        "slow-model".to_owned(),
        ModelBehavior {
            first_token_delay: Some(delay),
            ..ModelBehavior::default()
        },
    )]);
    let mock = MockOptions {
        per_model,
        ..MockOptions::default()
    };
    Stack::start_with(mock, NatsOptions::default()).await
}

/// Rewrites the worker's config file with `setup` and sends SIGHUP; waits until the
/// worker logged the `n`-th reload result containing `needle`.
async fn reload(worker: &WorkerProcess, setup: &WorkerSetup, needle: &str, n: usize) {
    write_and_hang_up(worker, &setup.toml());
    wait_for_lines(worker, needle, n).await;
}

fn write_and_hang_up(worker: &WorkerProcess, text: &str) {
    let next = worker.config_path.with_extension("next");
    std::fs::write(&next, text).unwrap();
    std::fs::rename(&next, &worker.config_path).unwrap();
    worker.hang_up();
}

async fn wait_for_lines(worker: &WorkerProcess, needle: &str, n: usize) {
    let what = format!("{n} log line(s) with {needle}");
    eventually(WAIT, &what, || async {
        (worker.log().matches(needle).count() >= n).then_some(())
    })
    .await;
}

/// The log line of the `n`-th (1-based) event containing `needle`, parsed.
fn nth_line(worker: &WorkerProcess, needle: &str, n: usize) -> serde_json::Value {
    let log = worker.log();
    let line = log
        .lines()
        .filter(|line| line.contains(needle))
        .nth(n - 1)
        .unwrap_or_else(|| panic!("no line {n} with {needle}:\n{log}"));
    serde_json::from_str(line).unwrap()
}

fn upstream(outcome: &Outcome) -> Vec<&str> {
    outcome
        .attempts
        .iter()
        .map(|a| a.upstream_model.as_str())
        .collect()
}

async fn succeeds_on(client: &Client, job: Job, upstream_model: &str) {
    let outcome = run_job(client, job).await;
    assert_eq!(outcome.status, OutcomeStatus::Succeeded, "{outcome:?}");
    assert_eq!(upstream(&outcome), [upstream_model], "{outcome:?}");
}

/// `llmq_config_reloads_total{result}` on the worker's `/metrics` page.
async fn reloads(worker: &WorkerProcess, result: &str) -> u64 {
    let metrics = worker.metrics().await;
    let prefix = format!("llmq_config_reloads_total{{result=\"{result}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |value| value.trim().parse().unwrap())
}

#[tokio::test]
async fn sighup_adds_a_model_and_routing_follows_the_new_weights_and_deployments() {
    let stack = Stack::start().await;
    let mut setup = stack.setup(&body(&[model("chat", &[("mock", "first-model", 1)])]));
    let worker = WorkerProcess::spawn(&setup, "reload-add").await;
    let client = stack.client().await;
    succeeds_on(&client, chat_job("chat", "before"), "first-model").await;

    // `chat`: the old deployment kept as a standby (weight 0), a new one on another
    // provider takes all the traffic; a new model `fresh` on that provider, which now
    // sends a header of its own.
    setup.body = body(&[
        model(
            "chat",
            &[("mock", "first-model", 0), ("mock2", "second-model", 1)],
        ),
        model("fresh", &[("mock2", "fresh-model", 1)]),
    ])
    .replace(
        "[providers.mock2]\n",
        "[providers.mock2]\nheaders = { x-llmq-config = \"second\" }\n",
    );
    reload(&worker, &setup, APPLIED, 1).await;
    for n in 0..8 {
        succeeds_on(
            &client,
            chat_job("chat", &format!("after {n}")),
            "second-model",
        )
        .await;
    }
    succeeds_on(&client, chat_job("fresh", "new model"), "fresh-model").await;
    let mut batch = chat_job("fresh", "new model, batch tier");
    batch.tier = Tier::Batch;
    succeeds_on(&client, batch, "fresh-model").await;

    let header = |prompt: &str| {
        let requests = stack.mock.requests();
        let request = requests.iter().find(|r| r.prompt == prompt).unwrap();
        request.header("x-llmq-config").map(str::to_owned)
    };
    assert_eq!(header("before"), None);
    assert_eq!(header("after 0").as_deref(), Some("second"));
    assert_eq!(header("new model").as_deref(), Some("second"));

    let line = nth_line(&worker, APPLIED, 1);
    assert_eq!(line["providers_changed"], "[\"mock2\"]", "{line}");
    assert_eq!(line["models_added"], "[\"fresh\"]", "{line}");
    assert_eq!(line["models_changed"], "[\"chat\"]", "{line}");
    assert_eq!(line["models_removed"], "[]", "{line}");
    assert_eq!(reloads(&worker, "applied").await, 1);
    assert_eq!(reloads(&worker, "rejected").await, 0);
    let mut worker = worker;
    assert_eq!(worker.terminate(WAIT).await.code(), Some(0));
}

#[tokio::test]
async fn an_invalid_or_restart_only_config_is_rejected_whole_and_the_old_one_keeps_serving() {
    let stack = Stack::start().await;
    let old = body(&[model("chat", &[("mock", "first-model", 1)])]);
    let mut setup = stack.setup(&old);
    let worker = WorkerProcess::spawn(&setup, "reload-reject").await;
    let client = stack.client().await;
    // Each rejected file also moves `chat` elsewhere: none of it may apply.
    let moved = body(&[
        model("chat", &[("mock2", "moved-model", 1)]),
        model("fresh", &[("mock2", "fresh-model", 1)]),
    ]);

    // 1. Not TOML.
    write_and_hang_up(&worker, &format!("{}\n[models.broken\n", setup.toml()));
    wait_for_lines(&worker, REJECTED, 1).await;
    succeeds_on(&client, chat_job("chat", "after bad toml"), "first-model").await;

    // 2. Parses, but a deployment names a provider that does not exist.
    setup.body = format!("{moved}\n{}", model("ghost", &[("nobody", "m", 1)]));
    reload(&worker, &setup, REJECTED, 2).await;
    let line = nth_line(&worker, REJECTED, 2);
    let error = line["error"].as_str().unwrap();
    assert!(
        error.contains("models.ghost.deployments[0].provider"),
        "{line}"
    );
    assert_eq!(line["reason"], "invalid", "{line}");
    succeeds_on(&client, chat_job("chat", "after invalid"), "first-model").await;

    // 3. Valid, but changes a setting only a restart applies.
    setup.body = moved.clone();
    setup.set("worker", "max_inflight", "7");
    setup.set("jetstream", "max_deliver", "9");
    reload(&worker, &setup, REJECTED, 3).await;
    let line = nth_line(&worker, REJECTED, 3);
    let error = line["error"].as_str().unwrap();
    assert!(error.contains("need a restart"), "{line}");
    assert!(
        error.contains("jetstream") && error.contains("worker.max_inflight"),
        "{line}"
    );
    assert_eq!(line["reason"], "needs_restart", "{line}");
    succeeds_on(
        &client,
        chat_job("chat", "after restart-only"),
        "first-model",
    )
    .await;
    assert_eq!(reloads(&worker, "rejected").await, 3);
    assert_eq!(reloads(&worker, "applied").await, 0);

    // The same file without the restart-only changes applies.
    let mut fixed = stack.setup(&moved);
    fixed.key_file.clone_from(&setup.key_file);
    reload(&worker, &fixed, APPLIED, 1).await;
    succeeds_on(&client, chat_job("chat", "after the fix"), "moved-model").await;
    assert_eq!(reloads(&worker, "applied").await, 1);
    let mut worker = worker;
    assert_eq!(worker.terminate(WAIT).await.code(), Some(0));
}

#[tokio::test]
async fn a_streaming_job_in_flight_finishes_on_the_deployment_it_started_with() {
    let stack = stack_with_slow_model(Duration::from_secs(3)).await;
    let mut setup = stack.setup(&body(&[model("chat", &[("mock", "slow-model", 1)])]));
    let worker = WorkerProcess::spawn(&setup, "reload-inflight").await;
    let client = stack.client().await;
    let mut job = chat_job("chat", "slow and streaming");
    job.stream = true;
    let handle = client.submit(job).await.unwrap();
    assert!(stack.mock.wait_for_in_flight_at_least(1, WAIT).await);

    // Moved to another provider and model while the call is in flight.
    setup.body = body(&[model("chat", &[("mock2", "fast-model", 1)])]);
    reload(&worker, &setup, APPLIED, 1).await;
    assert_eq!(
        stack.mock.in_flight(),
        1,
        "the slow call must still be running when the reload is applied"
    );
    succeeds_on(&client, chat_job("chat", "after"), "fast-model").await;

    let (events, outcome) = collect_events(handle, WAIT).await;
    assert_eq!(outcome.status, OutcomeStatus::Succeeded, "{outcome:?}");
    assert_eq!(upstream(&outcome), ["slow-model"], "{outcome:?}");
    assert_eq!(outcome.attempts[0].provider, "mock");
    let deltas = events
        .iter()
        .filter(|e| matches!(e, llmq_schemas::ReplyEvent::Delta(_)))
        .count();
    assert!(deltas > 0, "the stream went on: {events:?}");
    let mut worker = worker;
    assert_eq!(worker.terminate(WAIT).await.code(), Some(0));
}

#[tokio::test]
async fn a_removed_models_queued_jobs_are_answered_unknown_model_and_its_in_flight_job_finishes() {
    let stack = stack_with_slow_model(Duration::from_secs(2)).await;
    // `doomed` runs one call at a time (its provider's max_concurrency), so the jobs
    // after the first stay queued.
    let single = two_mock_providers(1).replace("[providers.mock]", "[providers.single]");
    let chat = model("chat", &[("mock2", "chat-model", 1)]);
    let doomed = model("doomed", &[("single", "slow-model", 1)]);
    let mut setup = stack.setup(&format!("{single}\n{chat}\n{doomed}"));
    let worker = WorkerProcess::spawn(&setup, "reload-remove").await;
    let client = stack.client().await;
    let first = client
        .submit(chat_job("doomed", "in flight"))
        .await
        .unwrap();
    assert!(stack.mock.wait_for_in_flight_at_least(1, WAIT).await);
    let mut queued = Vec::new();
    for n in 0..4 {
        let job = chat_job("doomed", &format!("queued {n}"));
        queued.push(client.submit(job).await.unwrap());
    }

    setup.body = format!("{single}\n{chat}");
    reload(&worker, &setup, APPLIED, 1).await;
    let line = nth_line(&worker, APPLIED, 1);
    assert_eq!(line["models_removed"], "[\"doomed\"]", "{line}");

    let first = first.outcome_within(WAIT).await.unwrap();
    assert_eq!(first.status, OutcomeStatus::Succeeded, "{first:?}");
    assert_eq!(upstream(&first), ["slow-model"]);
    // One queued job may have been fetched before the reload (a pull already waiting):
    // it runs as in flight. Every other one is answered as for a model nobody serves.
    let mut unknown = 0;
    for handle in queued {
        let outcome = handle.outcome_within(WAIT).await.unwrap();
        match outcome.status {
            OutcomeStatus::Succeeded => assert_eq!(upstream(&outcome), ["slow-model"]),
            _ => {
                let error = outcome.error.as_ref().expect("an error");
                assert_eq!(error.kind, ErrorType::UnknownModel, "{outcome:?}");
                assert!(outcome.attempts.is_empty(), "{outcome:?}");
                unknown += 1;
            }
        }
    }
    assert!(
        unknown >= 3,
        "{unknown} of 4 queued jobs answered unknown_model"
    );
    wait_for_lines(&worker, "no live worker serves it", 1).await;
    succeeds_on(&client, chat_job("chat", "still served"), "chat-model").await;
    let mut worker = worker;
    assert_eq!(worker.terminate(WAIT).await.code(), Some(0));
}

#[tokio::test]
async fn with_watch_config_a_changed_file_is_applied_without_a_signal() {
    let stack = Stack::start().await;
    let mut setup = stack.setup(&body(&[model("chat", &[("mock", "first-model", 1)])]));
    let args = ["--watch-config", "200ms"];
    let worker = WorkerProcess::spawn_with_args(&setup, "reload-watch", &args).await;
    let client = stack.client().await;
    succeeds_on(&client, chat_job("chat", "before"), "first-model").await;

    setup.body = body(&[
        model("chat", &[("mock", "first-model", 1)]),
        model("fresh", &[("mock2", "fresh-model", 1)]),
    ]);
    let next = worker.config_path.with_extension("next");
    std::fs::write(&next, setup.toml()).unwrap();
    std::fs::rename(&next, &worker.config_path).unwrap();
    wait_for_lines(&worker, APPLIED, 1).await;
    assert!(worker.log().contains("config file changed"));
    assert!(!worker.log().contains("SIGHUP received"));
    succeeds_on(&client, chat_job("fresh", "watched"), "fresh-model").await;
    assert_eq!(reloads(&worker, "applied").await, 1);
    let mut worker = worker;
    assert_eq!(worker.terminate(WAIT).await.code(), Some(0));
}
