//! Seeing and tightening the fleet's limits: a provider's own rate-limit headers pause a
//! deployment fleet-wide, the limit metrics, and `submitter limits`, with several real
//! worker processes.

use std::process::Output;
use std::time::{Duration, Instant};

use llmq_runtime::tenants::parse_registry;
use llmq_schemas::{ErrorType, Outcome, OutcomeStatus, Tier};
use llmq_submitter::{Client, ClientOptions, JobHandle};
use llmq_tests::mock::{MockOptions, Quota};
use llmq_tests::nats::NatsOptions;
use llmq_tests::stack::{Stack, chat_job, eventually, run_job};
use llmq_tests::worker::{WorkerProcess, WorkerSetup, workspace_binary};

/// Workers with one model `chat` on deployment `mock/m` (`limits` its inline table).
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
    // 4 batch slots per worker: the first worker to see a small batch takes as many of its
    // jobs as it has free slots, and these tests need every worker of the fleet to have some.
    setup
        .set("limits", "lease", "\"2s\"")
        .set("limits", "interactive_max_wait", "\"300ms\"")
        .set("worker", "max_inflight", "8");
    setup
}

async fn stack_with_quota(requests: u64, window: Duration) -> Stack {
    let mock = MockOptions {
        quota: Some(Quota { requests, window }),
        ..MockOptions::default()
    };
    Stack::start_with(mock, NatsOptions::default()).await
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

async fn submit_batch(client: &Client, n: usize) -> Vec<JobHandle> {
    let mut handles = Vec::new();
    for i in 0..n {
        let mut job = chat_job("chat", &format!("limited {i}"));
        job.tier = Tier::Batch;
        handles.push(client.submit(job).await.unwrap());
    }
    handles
}

async fn outcomes(handles: Vec<JobHandle>) -> Vec<Outcome> {
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

/// The sum of a metric's samples whose labels include every one of `labels`
/// (`name="value"`), over the pages; `None` when no sample matches.
fn metric(pages: &[String], name: &str, labels: &[&str]) -> Option<f64> {
    let mut found = None;
    for line in pages.iter().flat_map(|page| page.lines()) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        if labels.iter().all(|label| rest.contains(label)) {
            let value: f64 = rest.rsplit(' ').next().unwrap().parse().unwrap();
            *found.get_or_insert(0.0) += value;
        }
    }
    found
}

async fn pages(fleet: &[WorkerProcess]) -> Vec<String> {
    let mut pages = Vec::new();
    for worker in fleet {
        pages.push(worker.metrics().await);
    }
    pages
}

#[tokio::test]
async fn a_provider_reporting_nothing_left_pauses_the_deployment_across_the_fleet_until_its_reset()
{
    // The provider allows 4 requests per 3 s window and says so in its headers.
    let stack = stack_with_quota(4, Duration::from_secs(3)).await;
    let fleet = workers(&setup(&stack, "concurrency = 1"), 2, "hint").await;
    let client = stack.client().await;
    let started = Instant::now();
    let outcomes = outcomes(submit_batch(&client, 12).await).await;
    let took = started.elapsed();
    assert!(
        outcomes
            .iter()
            .all(|o| o.status == OutcomeStatus::Succeeded && o.delivery == 1),
        "{:?}",
        outcomes
            .iter()
            .map(|o| (o.status, o.delivery))
            .collect::<Vec<_>>()
    );
    let requests = stack.mock.requests();
    let refused = requests.iter().filter(|r| r.fault.is_some()).count();
    println!(
        "ops_limits: 12 jobs, provider quota 4 per 3 s, 2 workers: {} calls, {refused} met a 429, took {took:?}",
        requests.len()
    );
    // A call made before a reset would have met the provider's 429.
    assert_eq!(
        refused, 0,
        "no worker called the deployment before its reset"
    );
    assert_eq!(requests.len(), 12, "one call per job");
    assert!(
        took >= Duration::from_secs(6),
        "12 calls at 4 per window need 3 windows, so two waits for a reset: {took:?}"
    );
    let served: std::collections::HashSet<&str> =
        outcomes.iter().map(|o| o.worker_id.as_str()).collect();
    assert_eq!(served.len(), 2, "both workers called, and both paused");

    // The window's last call reported nothing left: an interactive job, whose max_wait
    // (300 ms) ends before the reset, fails rate_limited at once with a retry-after (the
    // reset) instead of sitting out its max_wait first.
    let asked = Instant::now();
    let outcome = run_job(&client, chat_job("chat", "interactive")).await;
    let took = asked.elapsed();
    assert!(took < Duration::from_millis(300), "{took:?}");
    let error = outcome.error.expect("held by the pause");
    assert_eq!(
        (outcome.status, error.kind),
        (OutcomeStatus::Failed, ErrorType::RateLimited)
    );
    let retry_after = error.retry_after_ms.expect("a retry-after");
    assert!((1..=3_000).contains(&retry_after), "{retry_after}");
    assert_eq!(stack.mock.request_count(), 12, "the pause held it back");

    let pages = pages(&fleet).await;
    let deployment = [
        "scope=\"deployment\"",
        "provider=\"mock\"",
        "deployment=\"m\"",
    ];
    let pauses = metric(&pages, "llmq_limit_pauses_total", &deployment[1..]).unwrap_or(0.0);
    assert!(pauses >= 3.0, "one pause per window at least: {pauses}");
    let admitted = [deployment.as_slice(), &["result=\"admitted\""]].concat();
    let waits = metric(&pages, "llmq_limit_waits_total", &admitted).unwrap_or(0.0);
    assert!(waits >= 2.0, "jobs waited for the resets: {waits}");
    let waited = metric(&pages, "llmq_limit_wait_seconds_sum", &deployment).unwrap_or(0.0);
    assert!(waited >= 1.0, "seconds waited: {waited}");
    let gave_up = [deployment.as_slice(), &["result=\"gave_up\""]].concat();
    assert_eq!(
        metric(&pages, "llmq_limit_waits_total", &gave_up),
        Some(1.0)
    );
    let limit = [deployment.as_slice(), &["limit=\"concurrency\""]].concat();
    assert_eq!(
        metric(&pages, "llmq_limit_max", &limit),
        Some(2.0),
        "1 on each"
    );
    assert!(metric(&pages, "llmq_limit_permits_in_use", &deployment).is_some());
    stop(fleet).await;
}

async fn submitter(stack: &Stack, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(workspace_binary("submitter"));
    command.env("LLMQ__NATS__URL", stack.nats.url()).args(args);
    tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("the CLI finished")
        .expect("the CLI ran")
}

#[tokio::test]
async fn submitter_limits_shows_each_limit_its_use_who_waits_and_the_pauses() {
    // 2 calls per 4 s: after two calls, the deployment pauses and jobs queue up behind
    // the tenant's concurrency and the pause.
    let stack = stack_with_quota(2, Duration::from_secs(4)).await;
    let admin = stack.operator().await;
    let registry = "[tenants.acme]\nmodels = [\"chat\"]\n[tenants.acme.limits]\nconcurrency = 2\nrpm = 100\nwindow = \"10s\"\n";
    let changes = admin
        .tenants_diff(&parse_registry(registry).unwrap(), true)
        .await
        .unwrap();
    admin.apply_tenants(&changes, 1).await.unwrap();
    let mut setup = setup(&stack, "concurrency = 4");
    setup.set("tenants", "mode", "\"enforced\"");
    let fleet = workers(&setup, 2, "ops").await;
    let client = stack
        .client_with(ClientOptions {
            check_catalog: false,
            ..ClientOptions::for_tenant("acme")
        })
        .await;
    let handles = submit_batch(&client, 8).await;
    let text = eventually(
        Duration::from_secs(20),
        "a paused fleet with waiting jobs",
        || async {
            let out = submitter(&stack, &["limits"]).await;
            assert!(out.status.success(), "{out:?}");
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let tenant = text.lines().find(|l| l.starts_with("tenant acme  "))?;
            let waiting_on_tenant = !tenant.trim_end().ends_with(" 0");
            let deployment = text
                .lines()
                .find(|l| l.starts_with("deployment mock/m  concurrency"))?;
            let waiting_on_pause = !deployment.trim_end().ends_with(" 0");
            let both = text.contains("2 live workers reporting");
            (text.contains("Paused by the provider's rate-limit headers")
                && waiting_on_tenant
                && waiting_on_pause
                && both)
                .then_some(text)
        },
    )
    .await;
    println!("ops_limits: submitter limits printed:\n{text}");
    let line = |start: &str, has: &str| {
        text.lines()
            .find(|l| l.starts_with(start) && l.contains(has))
            .unwrap_or_else(|| panic!("no {start:?} line with {has:?} in:\n{text}"))
            .to_owned()
    };
    assert!(text.starts_with("SCOPE"), "{text}");
    let tenant = line("tenant acme", "concurrency 2");
    assert!(tenant.contains("2 held ("), "{tenant}");
    assert!(tenant.contains("ops-"), "who holds and who waits: {tenant}");
    let window = line("tenant acme", "100 requests / 10s");
    assert!(window.contains("window ends in"), "{window}");
    line("deployment mock/m", "concurrency 4");
    let pause = line("deployment mock/m", "requests remaining 0");
    assert!(pause.contains("(in ") && pause.contains("ops-"), "{pause}");
    assert!(text.contains("2 live workers reporting"), "{text}");
    let json = submitter(&stack, &["limits", "--json"]).await;
    let status: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(
        status["workers"].as_array().map(Vec::len),
        Some(2),
        "{status}"
    );

    // The tenant's held jobs show on the workers' metrics as well.
    let held = eventually(
        Duration::from_secs(10),
        "jobs held on the metrics",
        || async {
            let pages = pages(&fleet).await;
            metric(&pages, "llmq_tenant_jobs_held", &["tenant=\"acme\""]).filter(|n| *n > 0.0)
        },
    )
    .await;
    println!("ops_limits: llmq_tenant_jobs_held{{tenant=\"acme\"}} {held}");

    // Without the quota the rest runs once the pause ends; nothing failed (with two
    // calls in flight at once, one may still meet the 429 the other's answer foretold,
    // and is retried: the bound README states).
    stack.mock.set_options(MockOptions::default());
    let outcomes = outcomes(handles).await;
    assert!(
        outcomes
            .iter()
            .all(|o| o.status == OutcomeStatus::Succeeded),
        "{outcomes:?}"
    );
    stop(fleet).await;
}
