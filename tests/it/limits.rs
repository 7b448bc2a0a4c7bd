//! Fleet-wide limits, measured where they matter: at the upstream, with several real
//! worker processes sharing them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, UNIX_EPOCH};

use futures::StreamExt;
use llmq_schemas::{ErrorType, OutcomeStatus, Tier};
use llmq_submitter::ClientOptions;
use llmq_tests::mock::MockOptions;
use llmq_tests::stack::{Stack, chat_job, run_job};
use llmq_tests::worker::{WorkerProcess, WorkerSetup};

fn setup(stack: &Stack, deployment_limits: &str) -> WorkerSetup {
    let mut setup = stack.setup(&format!(
        r#"[providers.mock]
kind = "openai"
base_url = "{{mock}}/v1"
api_key_file = "{{key_file}}"
max_concurrency = 64
timeouts = {{ connect = "2s", first_token = "20s", inter_token = "5s", total = "40s" }}
[models.chat]
deployments = [{{ provider = "mock", model = "m", limits = {{ {deployment_limits} }} }}]
"#
    ));
    setup.set("limits", "lease", "\"2s\"");
    setup
}

async fn workers(setup: &WorkerSetup, n: usize, name: &str) -> Vec<WorkerProcess> {
    let mut workers = Vec::new();
    for i in 0..n {
        let setup = setup.clone().with_id(&format!("{name}-{i}"));
        workers.push(WorkerProcess::spawn(&setup, &format!("{name}-{i}")).await);
    }
    workers
}

async fn stop(workers: Vec<WorkerProcess>) {
    for mut worker in workers {
        assert_eq!(
            worker.terminate(Duration::from_secs(30)).await.code(),
            Some(0)
        );
    }
}

/// Submits `n` jobs at once and waits for every outcome.
async fn run_all(
    client: &llmq_submitter::Client,
    n: usize,
    tier: Tier,
) -> Vec<llmq_schemas::Outcome> {
    let mut handles = Vec::new();
    for i in 0..n {
        let mut job = chat_job("chat", &format!("limited {i}"));
        job.tier = tier;
        handles.push(client.submit(job).await.unwrap());
    }
    let mut outcomes = Vec::new();
    for handle in handles {
        outcomes.push(
            handle
                .outcome_within(Duration::from_secs(120))
                .await
                .unwrap(),
        );
    }
    outcomes
}

#[tokio::test]
async fn four_workers_never_put_more_than_a_deployments_concurrency_on_it() {
    let stack = Stack::with_slow_mock(Duration::from_millis(300)).await;
    let setup = setup(&stack, "concurrency = 8");
    let fleet = workers(&setup, 4, "conc").await;
    let client = stack.client().await;
    let outcomes = run_all(&client, 64, Tier::Interactive).await;
    assert!(
        outcomes
            .iter()
            .all(|o| o.status == OutcomeStatus::Succeeded),
        "{:?}",
        outcomes
            .iter()
            .find(|o| o.status != OutcomeStatus::Succeeded)
    );
    let peak = stack.mock.peak_concurrency();
    println!("limits: peak concurrency {peak} (limit 8, 4 workers, 64 jobs)");
    assert!(peak <= 8, "the upstream saw {peak} requests at once");
    assert!(
        peak >= 6,
        "the limit was reached ({peak}), else the test proves nothing"
    );
    let served: std::collections::HashSet<String> =
        outcomes.iter().map(|o| o.worker_id.clone()).collect();
    assert!(
        served.len() >= 2,
        "several workers shared the limit: {served:?}"
    );
    stop(fleet).await;
}

#[tokio::test]
async fn a_tenants_rate_holds_across_the_fleet_and_batch_jobs_wait_in_the_queue() {
    let stack = Stack::start().await;
    stack.apply_registry(
        "[tenants.acme]\nmodels = [\"chat\"]\n[tenants.acme.limits]\nrpm = 10\nwindow = \"2s\"\n",
    )
    .await;
    let mut setup = setup(&stack, "");
    setup
        .set("tenants", "mode", "\"enforced\"")
        .set("jetstream", "max_deliver", "2");
    let fleet = workers(&setup, 3, "rate").await;
    let client = stack
        .client_with(ClientOptions {
            check_catalog: false,
            ..ClientOptions::for_tenant("acme")
        })
        .await;
    let started = Instant::now();
    let outcomes = run_all(&client, 35, Tier::Batch).await;
    let took = started.elapsed();
    assert!(
        outcomes
            .iter()
            .all(|o| o.status == OutcomeStatus::Succeeded)
    );
    // Waiting for the limit neither burned a delivery nor handed a job back.
    assert!(
        outcomes.iter().all(|o| o.delivery == 1),
        "{:?}",
        outcomes.iter().map(|o| o.delivery).collect::<Vec<_>>()
    );
    let calls = calls_per_window(&stack, 2000, None);
    let granted = granted_per_window(&stack, "rate.t.acme.").await;
    println!(
        "limits: 35 jobs at 10 per 2 s over 3 workers took {took:?}; granted per window \
         {granted:?}, calls per window (the mock's clock) {calls:?}"
    );
    // Counted in the windows the fleet granted them in (see
    // a_tenants_limit_on_one_model_leaves_its_other_models_alone).
    assert!(granted.values().all(|n| *n <= 10), "{granted:?}");
    assert!(
        granted.values().sum::<u64>() >= 35,
        "every call granted: {granted:?}"
    );
    assert_eq!(stack.mock.request_count(), 35, "one call per job");
    assert!(
        granted.len() >= 4,
        "35 jobs need at least 4 windows: {granted:?}"
    );
    stop(fleet).await;
}

#[tokio::test]
async fn an_interactive_job_waits_a_bounded_time_then_fails_rate_limited_with_a_retry_after() {
    let stack = Stack::start().await;
    stack.apply_registry(
        // Windows are aligned to the clock: a 1-minute window made this test fail when
        // the two jobs fell on either side of a minute's start; an hour's is 60 times
        // less likely to be crossed.
        "[tenants.acme]\nmodels = [\"chat\"]\nmax_wait = \"500ms\"\n[tenants.acme.limits]\nrpm = 1\nwindow = \"1h\"\n",
    )
    .await;
    let mut setup = setup(&stack, "");
    setup.set("tenants", "mode", "\"enforced\"");
    let worker = stack.worker(&setup).await;
    let client = stack
        .client_with(ClientOptions {
            check_catalog: false,
            ..ClientOptions::for_tenant("acme")
        })
        .await;
    assert_eq!(
        run_job(&client, chat_job("chat", "first")).await.status,
        OutcomeStatus::Succeeded
    );
    let started = Instant::now();
    let outcome = run_job(&client, chat_job("chat", "second")).await;
    let error = outcome.error.expect("refused");
    assert_eq!(outcome.status, OutcomeStatus::Failed);
    assert_eq!(error.kind, ErrorType::RateLimited);
    let retry_after = error.retry_after_ms.expect("a retry-after");
    assert!(retry_after > 0 && retry_after <= 3_600_000, "{retry_after}");
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "it waited its max_wait first"
    );
    assert_eq!(stack.mock.request_count(), 1);
    // A deadline shorter than the wait still ends it expired.
    let mut job = chat_job("chat", "third");
    job.deadline = Some(llmq_schemas::Timestamp::now().plus(Duration::from_millis(200)));
    let outcome = run_job(&client, job).await;
    assert_eq!(
        outcome.status,
        OutcomeStatus::Expired,
        "{:?}",
        outcome.error
    );
    worker.stop().await;
}

#[tokio::test]
async fn a_killed_workers_permits_come_back_within_its_lease() {
    let stack = Stack::start_with(
        MockOptions {
            first_token_delay: Duration::from_secs(30),
            ..MockOptions::default()
        },
        Default::default(),
    )
    .await;
    let setup = setup(&stack, "concurrency = 2");
    let mut doomed = WorkerProcess::spawn(&setup.clone().with_id("doomed"), "doomed").await;
    let client = stack.client().await;
    for i in 0..2 {
        client
            .submit_detached(chat_job("chat", &format!("hold {i}")))
            .await
            .unwrap();
    }
    assert!(
        stack
            .mock
            .wait_for_requests(2, Duration::from_secs(10))
            .await
    );
    doomed.kill().await;
    // Another worker's job gets a permit once the dead worker's lease (2 s) ends.
    stack.mock.set_options(MockOptions::default());
    let survivor = stack.worker(&setup.clone().with_id("survivor")).await;
    let killed_at = Instant::now();
    let outcome = run_job(&client, chat_job("chat", "after the crash")).await;
    let waited = killed_at.elapsed();
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    println!("limits: permits of a SIGKILLed worker came back after {waited:?} (lease 2 s)");
    assert!(waited < Duration::from_secs(2 + 3), "took {waited:?}");
    survivor.stop().await;
}

#[tokio::test]
async fn a_broker_restart_while_jobs_wait_on_a_limit_loses_nothing_and_the_fleet_counters_hold() {
    let mut stack = Stack::start_with(
        MockOptions::default(),
        llmq_tests::nats::NatsOptions {
            sync_always: true,
            ..Default::default()
        },
    )
    .await;
    stack.apply_registry(
        "[tenants.acme]\nmodels = [\"chat\"]\n[tenants.acme.limits]\nrpm = 5\nwindow = \"2s\"\n",
    )
    .await;
    let mut setup = setup(&stack, "");
    setup
        .set("tenants", "mode", "\"enforced\"")
        .set("jetstream", "ack_wait", "\"3s\"");
    let fleet = workers(&setup, 2, "restart").await;
    let client = stack
        .client_with(ClientOptions {
            check_catalog: false,
            ..ClientOptions::for_tenant("acme")
        })
        .await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let mut job = chat_job("chat", &format!("waiting {i}"));
        job.tier = Tier::Batch;
        ids.push(client.submit_detached(job).await.unwrap());
    }
    assert!(
        stack
            .mock
            .wait_for_requests(5, Duration::from_secs(10))
            .await
    );
    stack.nats.restart().await;
    for id in &ids {
        let outcome = client
            .wait_outcome(*id, Duration::from_secs(90))
            .await
            .unwrap();
        assert_eq!(
            outcome.status,
            OutcomeStatus::Succeeded,
            "{:?}",
            outcome.error
        );
    }
    let js = async_nats::jetstream::new(stack.nats.client().await);
    let mut results = js.get_stream("LLMQ_RESULTS").await.unwrap();
    assert_eq!(
        results.info().await.unwrap().state.messages,
        20,
        "one outcome per job"
    );
    let mut per_window: BTreeMap<u128, usize> = BTreeMap::new();
    for request in stack.mock.requests() {
        let ms = request
            .received_at_wall
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis();
        *per_window.entry(ms / 2000).or_default() += 1;
    }
    println!("limits: across a broker restart, provider calls per 2 s window {per_window:?}");
    // What the fleet handed out never exceeds the limit in any window, restart or not.
    let kv = js.get_key_value("LLMQ_LIMITS").await.unwrap();
    let first = *per_window.keys().next().unwrap();
    let last = *per_window.keys().last().unwrap();
    for window in first..=last {
        let key = format!("rate.t.acme.{window}");
        if let Some(value) = kv.get(&key).await.unwrap() {
            let used: serde_json::Value = serde_json::from_slice(&value).unwrap();
            assert!(used["req"].as_u64().unwrap() <= 5, "{key}: {used}");
        }
    }
    // At the upstream, a call admitted just before the outage can land after it, in a
    // later window, and a redelivered job may be called twice (at least once): README's
    // bound is twice the limit in any window across a broker outage.
    assert!(per_window.values().all(|n| *n <= 10), "{per_window:?}");
    assert!(
        per_window.values().sum::<usize>() >= 20,
        "every job reached the provider"
    );
    stop(fleet).await;
}

/// Provider calls per clock-aligned window of `window_ms`, by upstream model (`None`: all).
fn calls_per_window(stack: &Stack, window_ms: u128, model: Option<&str>) -> BTreeMap<u128, usize> {
    let mut per_window = BTreeMap::new();
    for request in stack.mock.requests() {
        if model.is_some_and(|m| request.model != m) {
            continue;
        }
        let ms = request
            .received_at_wall
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis();
        *per_window.entry(ms / window_ms).or_default() += 1;
    }
    per_window
}

/// Requests the fleet granted per window of a rate limit, from the limits bucket's
/// `rate.<scope>.<window>` keys under `prefix`.
async fn granted_per_window(stack: &Stack, prefix: &str) -> BTreeMap<u64, u64> {
    let js = async_nats::jetstream::new(stack.nats.client().await);
    let bucket = js.get_key_value("LLMQ_LIMITS").await.unwrap();
    let mut keys = bucket.keys().await.unwrap();
    let mut granted = BTreeMap::new();
    while let Some(key) = keys.next().await {
        let key = key.unwrap();
        let Some(window) = key.strip_prefix(prefix) else {
            continue;
        };
        let value = bucket.get(&key).await.unwrap().unwrap();
        let used: serde_json::Value = serde_json::from_slice(&value).unwrap();
        granted.insert(window.parse().unwrap(), used["req"].as_u64().unwrap());
    }
    granted
}

fn acme_client_options() -> ClientOptions {
    ClientOptions {
        check_catalog: false,
        ..ClientOptions::for_tenant("acme")
    }
}

#[tokio::test]
async fn a_providers_token_rate_holds_across_the_fleet() {
    let stack = Stack::start().await;
    let mut setup = setup(&stack, "");
    setup.body = setup.body.replace(
        "max_concurrency = 64",
        "max_concurrency = 64\nlimits = { tpm = 100, window = \"2s\" }",
    );
    let fleet = workers(&setup, 2, "tpm").await;
    let client = stack.client().await;
    let mut handles = Vec::new();
    for i in 10..34 {
        // "tokens 12" is 9 bytes: 3 tokens + 3 for the message, as the worker estimates and
        // the mock counts; 10 completion tokens, capped. 16 tokens a call: 6 calls a window.
        let mut job = chat_job("chat", &format!("tokens {i}"));
        job.tier = Tier::Batch;
        job.request.max_tokens = Some(10);
        handles.push(client.submit(job).await.unwrap());
    }
    for handle in handles {
        let outcome = handle
            .outcome_within(Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(
            outcome.status,
            OutcomeStatus::Succeeded,
            "{:?}",
            outcome.error
        );
        let usage = outcome.usage.unwrap();
        assert_eq!(usage.prompt_tokens + usage.completion_tokens, 16);
    }
    let per_window = calls_per_window(&stack, 2000, None);
    println!(
        "limits: tpm 100 per 2 s, 16 tokens a call, 2 workers: calls per window {per_window:?}"
    );
    assert!(per_window.values().all(|n| n * 16 <= 100), "{per_window:?}");
    assert!(
        per_window.len() >= 4,
        "the limit spread the calls: {per_window:?}"
    );
    stop(fleet).await;
}

#[tokio::test]
async fn a_tenants_concurrency_holds_across_the_fleet() {
    let stack = Stack::with_slow_mock(Duration::from_millis(300)).await;
    stack
        .apply_registry(
            "[tenants.acme]\nmodels = [\"chat\"]\n[tenants.acme.limits]\nconcurrency = 3\n",
        )
        .await;
    let mut setup = setup(&stack, "");
    setup.set("tenants", "mode", "\"enforced\"");
    let fleet = workers(&setup, 3, "tconc").await;
    let client = stack.client_with(acme_client_options()).await;
    let outcomes = run_all(&client, 24, Tier::Interactive).await;
    assert!(
        outcomes
            .iter()
            .all(|o| o.status == OutcomeStatus::Succeeded)
    );
    let peak = stack.mock.peak_concurrency();
    println!("limits: tenant concurrency 3 over 3 workers, 24 jobs: peak {peak}");
    assert!(peak <= 3, "the upstream saw {peak} of acme's jobs at once");
    assert!(peak >= 2, "the limit was reached ({peak})");
    stop(fleet).await;
}

#[tokio::test]
async fn a_tenants_limit_on_one_model_leaves_its_other_models_alone() {
    let stack = Stack::start().await;
    stack
        .apply_registry(
            "[tenants.acme]\nmodels = [\"chat\", \"other\"]\n\
         [tenants.acme.model_limits.chat]\nrpm = 4\nwindow = \"2s\"\n",
        )
        .await;
    let mut setup = setup(&stack, "");
    setup
        .body
        .push_str("[models.other]\ndeployments = [{ provider = \"mock\", model = \"o\" }]\n");
    setup.set("tenants", "mode", "\"enforced\"");
    let fleet = workers(&setup, 2, "tmodel").await;
    let client = stack.client_with(acme_client_options()).await;
    let mut handles = Vec::new();
    for i in 0..24 {
        let model = if i % 2 == 0 { "chat" } else { "other" };
        let mut job = chat_job(model, &format!("mixed {i}"));
        job.tier = Tier::Batch;
        handles.push(client.submit(job).await.unwrap());
    }
    for handle in handles {
        let outcome = handle
            .outcome_within(Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(
            outcome.status,
            OutcomeStatus::Succeeded,
            "{:?}",
            outcome.error
        );
    }
    let chat = calls_per_window(&stack, 2000, Some("m"));
    let other = calls_per_window(&stack, 2000, Some("o"));
    let granted = granted_per_window(&stack, "rate.tm.acme.chat.").await;
    println!(
        "limits: acme x chat rpm 4 per 2 s: granted {granted:?}; calls chat {chat:?}, other {other:?}"
    );
    // Counted where the fleet counts them, in the windows the workers granted the calls
    // in: the mock's clock puts a call granted just before a window ends (and sent a
    // little later on a loaded machine) in the next window.
    assert!(granted.values().all(|n| *n <= 4), "{granted:?}");
    assert!(
        granted.values().sum::<u64>() >= 12,
        "every call granted: {granted:?}"
    );
    assert!(granted.len() >= 3, "12 calls at 4 per window: {granted:?}");
    assert!(
        other.values().any(|n| *n > 4),
        "other was held too: {other:?}"
    );
    stop(fleet).await;
}
