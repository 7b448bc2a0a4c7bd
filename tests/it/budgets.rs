//! Tenant budgets across the fleet, with several real worker processes: hard budgets
//! refuse once spent (overshoot within the stated bound), soft budgets flag, spend is
//! exact across worker and broker restarts and a duplicate count, and a killed worker's
//! reservation comes back.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::StreamExt;
use llmq_runtime::budget::{BudgetStores, Budgets, Periods, Spend, nano_usd, read_spend, usd};
use llmq_runtime::tenants::parse_registry;
use llmq_schemas::{
    BudgetPeriod, ErrorType, Job, OutcomeStatus, PolicyRule, Subjects, Tenant, Timestamp,
    UsageEvent,
};
use llmq_submitter::{Client, ClientOptions, Operator};
use llmq_tests::mock::MockOptions;
use llmq_tests::nats::NatsOptions;
use llmq_tests::stack::{Stack, chat_job, run_job};
use llmq_tests::worker::{WorkerProcess, WorkerSetup, workspace_binary};

/// USD per million tokens, input and output: $0.001 a token, so a job of the mock's (5
/// prompt tokens for "job NN", 12 completion tokens) costs $0.017.
const PRICE: f64 = 1000.0;
/// Completion cap of every job: the reservation is (5 + 20) tokens, $0.025 (the prompt
/// estimate is exact on the mock).
const MAX_TOKENS: u32 = 20;
const ESTIMATE_USD: f64 = (5.0 + MAX_TOKENS as f64) * PRICE / 1e6;

fn setup(stack: &Stack) -> WorkerSetup {
    let mut setup = stack.setup(&format!(
        r#"[providers.mock]
kind = "openai"
base_url = "{{mock}}/v1"
api_key_file = "{{key_file}}"
max_concurrency = 64
timeouts = {{ connect = "2s", first_token = "40s", inter_token = "5s", total = "60s" }}
[models.chat]
deployments = [{{ provider = "mock", model = "m" }}]
[[prices]]
provider = "mock"
model = "m"
input = {PRICE:.1}
output = {PRICE:.1}
"#
    ));
    setup
        .set("limits", "lease", "\"2s\"")
        .set("tenants", "mode", "\"enforced\"");
    setup
}

async fn apply(stack: &Stack, text: &str) {
    let admin = stack.operator().await;
    let entries = parse_registry(text).unwrap();
    let changes = admin.tenants_diff(&entries, true).await.unwrap();
    admin.apply_tenants(&changes, 1).await.unwrap();
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

async fn tenant_client(stack: &Stack, tenant: &str) -> Client {
    stack
        .client_with(ClientOptions {
            check_catalog: false,
            ..ClientOptions::for_tenant(tenant)
        })
        .await
}

fn job(i: usize) -> Job {
    let mut job = chat_job("chat", &format!("job {i:02}"));
    job.request.max_completion_tokens = Some(MAX_TOKENS);
    job
}

async fn spend(stack: &Stack, tenant: &str) -> Spend {
    let js = jetstream::new(stack.nats.client().await);
    let stream = js.get_stream("LLMQ_SPEND").await.unwrap();
    let tenant = Tenant::parse(tenant).unwrap();
    read_spend(
        &stream,
        &Subjects::default(),
        &tenant,
        &Periods::at(Timestamp::now()),
    )
    .await
    .unwrap()
}

/// Every usage event of `tenant` in the usage stream.
pub(crate) async fn usage_events(stack: &Stack, tenant: &str) -> Vec<UsageEvent> {
    let js = jetstream::new(stack.nats.client().await);
    let stream = js.get_stream("LLMQ_USAGE").await.unwrap();
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            ack_policy: jetstream::consumer::AckPolicy::None,
            filter_subject: format!("llmq.usage.{tenant}.*"),
            ..Default::default()
        })
        .await
        .unwrap();
    let pending = consumer.cached_info().num_pending as usize;
    let mut events = Vec::new();
    if pending == 0 {
        return events;
    }
    let mut messages = consumer
        .fetch()
        .max_messages(pending)
        .messages()
        .await
        .unwrap();
    while let Some(message) = messages.next().await {
        events.push(serde_json::from_slice(&message.unwrap().payload).unwrap());
    }
    events
}

/// The usage events' costs, summed as the spend counters sum them (nano-dollars, each
/// event rounded once).
fn summed(events: &[UsageEvent]) -> u64 {
    events
        .iter()
        .map(|e| nano_usd(e.cost.total_usd().unwrap_or(0.0)))
        .sum()
}

#[tokio::test]
async fn a_hard_budget_refuses_new_jobs_once_spent_and_overshoots_by_less_than_one_reservation() {
    let stack = Stack::with_slow_mock(Duration::from_millis(200)).await;
    apply(
        &stack,
        "[tenants.acme]\nmodels = [\"chat\"]\n[tenants.acme.budget]\nday = { usd = 0.2 }\n",
    )
    .await;
    let fleet = workers(&setup(&stack), 3, "hard").await;
    let client = tenant_client(&stack, "acme").await;
    // 30 jobs at once, $0.51 if all ran: the budget binds while many are in flight.
    let mut handles = Vec::new();
    for i in 0..30 {
        handles.push(client.submit(job(i)).await.unwrap());
    }
    let mut outcomes = Vec::new();
    for handle in handles {
        outcomes.push(
            handle
                .outcome_within(Duration::from_secs(60))
                .await
                .unwrap(),
        );
    }
    // Then one at a time (nothing in flight) until the spend alone refuses.
    let mut last = None;
    for i in 30..50 {
        let outcome = run_job(&client, job(i)).await;
        let refused = outcome.status == OutcomeStatus::Failed;
        outcomes.push(outcome.clone());
        if refused && outcome.error.as_ref().unwrap().retry_after_ms > Some(1_000) {
            last = Some(outcome);
            break;
        }
    }
    let succeeded = outcomes
        .iter()
        .filter(|o| o.status == OutcomeStatus::Succeeded)
        .count();
    let refused: Vec<_> = outcomes
        .iter()
        .filter(|o| o.status != OutcomeStatus::Succeeded)
        .collect();
    for outcome in &refused {
        let error = outcome.error.as_ref().unwrap();
        assert_eq!(outcome.status, OutcomeStatus::Failed);
        assert_eq!(error.kind, ErrorType::BudgetExceeded, "{error:?}");
        assert_eq!(error.rule, Some(PolicyRule::DayBudget));
        assert!(outcome.attempts.is_empty(), "no provider call");
    }
    assert_eq!(
        stack.mock.request_count(),
        succeeded,
        "refused jobs never reached the provider"
    );
    let last = last.expect("the spend alone refused a job");
    let retry_after = last.error.unwrap().retry_after_ms.unwrap();
    assert!(
        retry_after <= 24 * 3600 * 1000,
        "retry after the day ends: {retry_after}"
    );
    let spent = spend(&stack, "acme").await;
    let events = usage_events(&stack, "acme").await;
    assert_eq!(
        spent.day,
        summed(&events),
        "spend = the usage events' costs"
    );
    let (budget, bound) = (nano_usd(0.2), nano_usd(ESTIMATE_USD));
    println!(
        "budgets: {succeeded} jobs ran, {} refused; spend ${:.6} of $0.2 (bound: budget + one reservation, ${:.6})",
        refused.len(),
        usd(spent.day),
        usd(budget + bound)
    );
    assert!(spent.day >= budget, "the budget was reached");
    assert!(
        spent.day < budget + bound,
        "overshoot {} nano-USD",
        spent.day - budget
    );
    assert!(
        refused.len() > 1,
        "jobs were refused while others were in flight"
    );
    stop(fleet).await;
}

#[tokio::test]
async fn a_soft_budget_lets_jobs_run_and_flags_their_usage_events_and_metrics() {
    let stack = Stack::start().await;
    apply(
        &stack,
        "[tenants.beta]\nmodels = [\"chat\"]\n[tenants.beta.budget]\nmonth = { usd = 0.05, enforce = \"soft\" }\n",
    )
    .await;
    let fleet = workers(&setup(&stack), 2, "soft").await;
    let client = tenant_client(&stack, "beta").await;
    let mut flags = Vec::new();
    for i in 0..5 {
        let outcome = run_job(&client, job(i)).await;
        assert_eq!(outcome.status, OutcomeStatus::Succeeded);
        let event = stack.usage_events(outcome.job_id).await.pop().unwrap();
        flags.push(event.over_budget);
    }
    // $0.017 a job: the third takes the month to $0.051, past $0.05.
    let month = vec![BudgetPeriod::Month];
    assert_eq!(
        flags,
        [vec![], vec![], month.clone(), month.clone(), month],
        "flags per job"
    );
    let served: Vec<String> = {
        let mut all = String::new();
        for worker in &fleet {
            all.push_str(&worker.metrics().await);
        }
        all.lines()
            .filter(|l| l.starts_with("llmq_budget") && l.contains("tenant=\"beta\""))
            .map(str::to_owned)
            .collect()
    };
    let has = |prefix: &str| served.iter().any(|l| l.starts_with(prefix));
    assert!(
        served.iter().any(|l| l.starts_with("llmq_budget_over{")
            && l.contains("period=\"month\"")
            && l.ends_with(" 1")),
        "{served:#?}"
    );
    assert!(has("llmq_budget_remaining_usd{"), "{served:#?}");
    assert!(has("llmq_budget_spend_usd{"), "{served:#?}");
    assert!(has("llmq_budget_limit_usd{"), "{served:#?}");
    assert!(has("llmq_budget_over_events_total{"), "{served:#?}");
    // `submitter usage` shows the month's spend against the budget.
    let status = Operator::from_client(&client)
        .budget_status(false)
        .await
        .unwrap();
    assert_eq!(status.len(), 1, "{status:?}");
    assert_eq!(status[0].period, BudgetPeriod::Month);
    assert!((status[0].spent_usd - 0.085).abs() < 1e-9, "{status:?}");
    assert!(status[0].over);
    let mut cli = tokio::process::Command::new(workspace_binary("submitter"));
    cli.env("LLMQ__NATS__URL", stack.nats.url())
        .env("LLMQ_TENANT", "beta")
        .args(["usage", "--since", "10m"]);
    let out = cli.output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    println!("budgets: submitter usage\n{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("beta") && l.contains("month"))
        .unwrap_or_else(|| panic!("no budget line:\n{text}"));
    assert!(
        line.contains("soft")
            && line.contains("0.085000")
            && line.contains("0.050000")
            && line.contains("OVER"),
        "{line}"
    );
    stop(fleet).await;
}

#[tokio::test]
async fn spend_is_exact_across_worker_and_broker_restarts_and_counts_a_usage_event_once() {
    let mut stack = Stack::start_with(
        MockOptions::default(),
        NatsOptions {
            sync_always: true,
            ..Default::default()
        },
    )
    .await;
    apply(
        &stack,
        "[tenants.gamma]\nmodels = [\"chat\"]\n[tenants.gamma.budget]\nday = { usd = 100 }\nmonth = { usd = 1000, enforce = \"soft\" }\n",
    )
    .await;
    let setup = setup(&stack);
    let mut fleet = workers(&setup, 2, "exact").await;
    let client = tenant_client(&stack, "gamma").await;
    let run_five = |from: usize| {
        let client = client.clone();
        async move {
            for i in from..from + 5 {
                let outcome = run_job(&client, job(i)).await;
                assert_eq!(
                    outcome.status,
                    OutcomeStatus::Succeeded,
                    "{:?}",
                    outcome.error
                );
            }
        }
    };
    run_five(0).await;
    // A worker killed and another started: nothing of the spend was in it.
    fleet[0].kill().await;
    fleet.remove(0);
    fleet.push(WorkerProcess::spawn(&setup.clone().with_id("exact-new"), "exact-new").await);
    run_five(5).await;
    stack.nats.restart().await;
    run_five(10).await;
    // A job caught by the restart may be processed twice: two usage events, both paid.
    let events = usage_events(&stack, "gamma").await;
    assert!(events.len() >= 15, "{}", events.len());
    let spent = spend(&stack, "gamma").await;
    println!(
        "budgets: spend after a worker kill and a broker restart ${:.9}, the {} usage events' costs sum to ${:.9}",
        usd(spent.day),
        events.len(),
        usd(summed(&events))
    );
    assert_eq!(spent.day, summed(&events));
    assert_eq!(spent.month, summed(&events));
    // The same usage events counted again (a retried publish, one from before the broker
    // restart among them) change nothing.
    let js = jetstream::new(stack.nats.client().await);
    let budgets = Budgets::new(
        BudgetStores {
            js: js.clone(),
            spend: js.get_stream("LLMQ_SPEND").await.unwrap(),
            bucket: js.get_key_value("LLMQ_LIMITS").await.unwrap(),
            subjects: Subjects::default(),
            publish: llmq_runtime::Budget::Attempts(3),
        },
        "test",
        Duration::from_secs(2),
    );
    let tenant = Tenant::parse("gamma").unwrap();
    for event in [&events[0], &events[events.len() - 1]] {
        let cost = event.cost.total_usd().unwrap();
        let after = budgets
            .record(&tenant, event.id, cost, Timestamp::now())
            .await
            .unwrap();
        assert_eq!(after, spent, "a duplicate of {} counted once", event.id);
    }
    stop(fleet).await;
}

#[tokio::test]
async fn a_killed_workers_reservation_comes_back_within_its_lease() {
    let stack = Stack::start_with(
        MockOptions {
            first_token_delay: Duration::from_secs(30),
            ..MockOptions::default()
        },
        Default::default(),
    )
    .await;
    // Less than one job's reservation ($0.025): one job in flight blocks every other.
    apply(
        &stack,
        "[tenants.delta]\nmodels = [\"chat\"]\n[tenants.delta.budget]\nday = { usd = 0.02 }\n",
    )
    .await;
    let mut setup = setup(&stack);
    setup.set("jetstream", "ack_wait", "\"60s\"");
    let mut doomed = WorkerProcess::spawn(&setup.clone().with_id("doomed"), "doomed").await;
    let client = tenant_client(&stack, "delta").await;
    client.submit_detached(job(0)).await.unwrap();
    assert!(
        stack
            .mock
            .wait_for_requests(1, Duration::from_secs(10))
            .await
    );
    stack.mock.set_options(MockOptions::default());
    let survivor = WorkerProcess::spawn(&setup.clone().with_id("survivor"), "survivor").await;
    let blocked = run_job(&client, job(1)).await;
    let error = blocked
        .error
        .expect("refused while the reservation is held");
    assert_eq!(error.kind, ErrorType::BudgetExceeded);
    assert_eq!(error.retry_after_ms, Some(1_000), "in flight, not spent");
    doomed.kill().await;
    let killed_at = Instant::now();
    let outcome = loop {
        let outcome = run_job(&client, job(2)).await;
        if outcome.status == OutcomeStatus::Succeeded {
            break outcome;
        }
        assert_eq!(outcome.error.unwrap().kind, ErrorType::BudgetExceeded);
        assert!(
            killed_at.elapsed() < Duration::from_secs(10),
            "never came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let waited = killed_at.elapsed();
    println!(
        "budgets: the reservation of a SIGKILLed worker came back after {waited:?} (lease 2 s)"
    );
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    assert!(waited < Duration::from_secs(2 + 2), "took {waited:?}");
    stop(vec![survivor]).await;
}
