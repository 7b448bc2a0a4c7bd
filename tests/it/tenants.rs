//! The tenant registry and its policy: applied whole or not at all, followed live by every
//! worker, enforced before any provider call whatever path a job came by.

use std::time::{Duration, Instant};

use futures::StreamExt;
use llmq_runtime::tenants::{Lookup, Mode, Registry};
use llmq_schemas::{ErrorType, Job, Outcome, OutcomeStatus, PolicyRule, Tenant, Tier};
use llmq_submitter::{ClientOptions, Operator, SubmitError};
use llmq_tests::nats::NatsOptions;
use llmq_tests::stack::{Stack, chat_job, eventually, run_job};
use llmq_tests::worker::{WorkerProcess, WorkerSetup, openai_mock_provider, workspace_binary};
use tokio_util::sync::CancellationToken;

const REGISTRY: &str = r#"
[tenants.acme]
name = "Acme search"
models = ["chat", "chat-*"]
tiers = ["interactive"]
max_tokens = 50
max_request_bytes = 4000
labels = { team = "search", cost_centre = "cc-42" }

[tenants.strict]
models = ["chat"]
max_tokens = 50
over_max_tokens = "refuse"
"#;

/// A stack with models `chat` and `other`, one worker enforcing the registry.
async fn enforced(stack: &Stack) -> WorkerSetup {
    let mut setup = stack.setup(&format!(
        "{}\n[models.chat]\ndeployments = [{{ provider = \"mock\", model = \"m\" }}]\n\
         [models.other]\ndeployments = [{{ provider = \"mock\", model = \"m\" }}]\n",
        openai_mock_provider(16)
    ));
    setup.set("tenants", "mode", "\"enforced\"");
    setup
}

fn tenant_client_options(tenant: &str) -> ClientOptions {
    ClientOptions {
        check_catalog: false,
        ..ClientOptions::for_tenant(tenant)
    }
}

/// Publishes `job` as `tenant` by raw JetStream, as a producer in another language would
/// (no submitter pre-check), and waits for its outcome.
async fn raw_job(stack: &Stack, tenant: &str, tier: Tier, job: &Job) -> Outcome {
    let js = async_nats::jetstream::new(stack.nats.client().await);
    let subject = format!(
        "llmq.jobs.{}.{}.{tenant}",
        llmq_schemas::ModelName::parse(&job.model).unwrap().token(),
        tier
    );
    js.publish(subject, serde_json::to_vec(job).unwrap().into())
        .await
        .unwrap()
        .await
        .unwrap();
    let reader = stack.client_with(tenant_client_options(tenant)).await;
    reader
        .wait_outcome(job.id, Duration::from_secs(20))
        .await
        .unwrap()
}

fn denied_rule(outcome: &Outcome) -> Option<PolicyRule> {
    let error = outcome.error.as_ref()?;
    assert_eq!(outcome.status, OutcomeStatus::Failed);
    assert!(error.message.contains("rule"), "{}", error.message);
    error.rule
}

fn cli(stack: &Stack, args: &[&str]) -> std::process::Output {
    std::process::Command::new(workspace_binary("submitter"))
        .args(["--url", &stack.nats.url()])
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test]
async fn a_registry_file_is_applied_whole_or_not_at_all() {
    let stack = Stack::start().await;
    let dir = stack.dir.path();
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[tenants.acme]\nmodels = [\"chat\"]\n[tenants.beta]\nmodels = [\"gpt-[4]\"]\nmax_request_bytes = -1\n",
    )
    .unwrap();
    let out = cli(&stack, &["tenants", "apply", bad.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("nothing was applied"), "{stderr}");
    assert!(stderr.contains("tenants.beta.models[0]"), "{stderr}");
    assert!(
        stderr.contains("tenants.beta.max_request_bytes"),
        "{stderr}"
    );
    let admin = stack.operator().await;
    assert!(
        admin.tenants().await.unwrap().is_empty(),
        "acme was not applied alone"
    );

    let good = dir.join("tenants.toml");
    std::fs::write(&good, REGISTRY).unwrap();
    let diff = cli(&stack, &["tenants", "diff", good.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&diff.stdout).contains("+ acme (new)"));
    let out = cli(&stack, &["tenants", "apply", good.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = cli(&stack, &["tenants", "list"]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains("acme") && listed.contains("team=search"),
        "{listed}"
    );
    let shown = cli(&stack, &["tenants", "show", "strict"]);
    let entry: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(entry["over_max_tokens"], "refuse");
    // Applying again changes nothing; a changed file shows its field.
    let again = cli(&stack, &["tenants", "diff", good.to_str().unwrap()]);
    assert!(
        again.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    std::fs::write(
        &good,
        REGISTRY.replace(
            "max_tokens = 50\nmax_request_bytes",
            "max_tokens = 60\nmax_request_bytes",
        ),
    )
    .unwrap();
    let changed = cli(&stack, &["tenants", "diff", good.to_str().unwrap()]);
    let changed = String::from_utf8_lossy(&changed.stdout);
    assert!(
        changed.contains("~ acme") && changed.contains("max_tokens: 50 -> 60"),
        "{changed}"
    );
    let removed = cli(&stack, &["tenants", "remove", "strict"]);
    assert_eq!(removed.status.code(), Some(0));
    assert_eq!(
        cli(&stack, &["tenants", "show", "strict"]).status.code(),
        Some(6)
    );
}

#[tokio::test]
async fn policy_refuses_before_any_provider_call_whatever_path_the_job_came_by() {
    let stack = Stack::start().await;
    stack.apply_registry(REGISTRY).await;
    let worker = stack.worker(&enforced(&stack).await).await;
    let acme = chat_job("other", "may not");
    let mut too_big = chat_job("chat", &"x".repeat(5000));
    too_big.id = uuid::Uuid::now_v7();
    let mut greedy = chat_job("chat", "long answer please");
    greedy.request.max_tokens = Some(500);
    let cases = [
        ("acme", Tier::Interactive, acme, PolicyRule::ModelNotAllowed),
        (
            "acme",
            Tier::Batch,
            chat_job("chat", "batch?"),
            PolicyRule::TierNotAllowed,
        ),
        (
            "acme",
            Tier::Interactive,
            too_big,
            PolicyRule::RequestTooLarge,
        ),
        ("strict", Tier::Interactive, greedy, PolicyRule::MaxTokens),
        (
            "nobody",
            Tier::Interactive,
            chat_job("chat", "who?"),
            PolicyRule::UnknownTenant,
        ),
    ];
    for (tenant, tier, job, rule) in cases {
        let outcome = raw_job(&stack, tenant, tier, &job).await;
        assert_eq!(
            denied_rule(&outcome),
            Some(rule),
            "{tenant}: {:?}",
            outcome.error
        );
        assert_eq!(outcome.error.unwrap().kind, ErrorType::PolicyDenied);
        assert!(outcome.attempts.is_empty());
        let usage = stack.usage_events(job.id).await;
        assert!(
            usage
                .iter()
                .all(|e| e.cost.total_usd() == Some(0.0) || e.attempts.is_empty()),
            "{usage:?}"
        );
    }
    assert_eq!(stack.mock.request_count(), 0, "no provider was called");

    // The submitter refuses the same jobs at once, naming the rule, and so does the CLI.
    let client = stack.client_with(tenant_client_options("acme")).await;
    match client.submit(chat_job("other", "may not")).await {
        Err(SubmitError::PolicyDenied { rule, message }) => {
            assert_eq!(rule, PolicyRule::ModelNotAllowed);
            assert!(message.contains("other"), "{message}");
        }
        other => panic!("expected PolicyDenied, got {other:?}"),
    }
    let out = cli(
        &stack,
        &[
            "--tenant",
            "acme",
            "chat",
            "--model",
            "other",
            "--no-catalog-check",
            "hi",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("model_not_allowed"), "{stderr}");
    assert_eq!(stack.mock.request_count(), 0);
    worker.stop().await;
}

#[tokio::test]
async fn an_allowed_job_runs_clamped_to_its_ceiling_and_carries_its_labels() {
    let stack = Stack::start().await;
    stack.apply_registry(REGISTRY).await;
    let worker = stack.worker(&enforced(&stack).await).await;
    let client = stack.client_with(tenant_client_options("acme")).await;
    let mut job = chat_job("chat", "as long as you like");
    job.request.max_tokens = Some(500);
    let outcome = run_job(&client, job.clone()).await;
    assert_eq!(
        outcome.status,
        OutcomeStatus::Succeeded,
        "{:?}",
        outcome.error
    );
    let clamped = outcome.clamped.expect("the outcome says it was clamped");
    assert_eq!((clamped.requested, clamped.allowed), (500, 50));
    assert_eq!(outcome.labels["cost_centre"], "cc-42");
    let sent = &stack.mock.requests()[0];
    assert_eq!(sent.body["max_tokens"], 50, "the provider saw the ceiling");
    let usage = stack.usage_events(job.id).await;
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0].labels["team"], "search");
    // No cap asked: the ceiling is the cap.
    run_job(&client, chat_job("chat-fast", "a model by pattern")).await;
    let sent = stack.mock.requests();
    assert_eq!(
        sent.len(),
        1,
        "chat-fast is allowed by pattern but not served: {sent:?}"
    );
    let outcome = run_job(&client, chat_job("chat", "no cap")).await;
    assert!(outcome.clamped.is_none());
    assert_eq!(stack.mock.requests()[1].body["max_completion_tokens"], 50);
    worker.stop().await;
}

#[tokio::test]
async fn a_job_cannot_make_a_worker_publish_into_another_tenants_inbox() {
    let stack = Stack::start().await;
    stack
        .apply_registry(&format!(
            "{REGISTRY}\n[tenants.beta]\nmodels = [\"chat\"]\n"
        ))
        .await;
    let worker = stack.worker(&enforced(&stack).await).await;
    let nats = stack.nats.client().await;
    let mut spied = nats.subscribe("_INBOX_llmq.acme.spy.>").await.unwrap();
    let mut own_events = nats.subscribe("_INBOX_llmq.acme.me.>").await.unwrap();
    nats.flush().await.unwrap();
    for spy_on in ["_INBOX_llmq.acme.spy.x", "foo.bar", "_INBOX.generic"] {
        let mut job = chat_job("chat", "spy");
        job.reply_to = Some(spy_on.into());
        let outcome = raw_job(&stack, "beta", Tier::Interactive, &job).await;
        let error = outcome.error.unwrap();
        assert_eq!(error.kind, ErrorType::InvalidJob, "{spy_on}");
        assert_eq!(error.rule, Some(PolicyRule::ReplySubject));
    }
    // The worker publishes one job's events before the next job's, on one connection:
    // acme's own job's final arriving first proves no spy event was sent.
    let mut own = chat_job("chat", "mine");
    own.reply_to = Some("_INBOX_llmq.acme.me.1".into());
    let outcome = raw_job(&stack, "acme", Tier::Interactive, &own).await;
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    let first = tokio::time::timeout(Duration::from_secs(10), own_events.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.subject.as_str(), "_INBOX_llmq.acme.me.1");
    use futures::FutureExt;
    assert!(
        spied.next().now_or_never().is_none(),
        "no event reached acme's inbox from beta's job"
    );
    assert_eq!(stack.mock.request_count(), 1, "only acme's job ran");
    worker.stop().await;
}

#[tokio::test]
async fn a_registry_change_reaches_every_running_worker_within_seconds() {
    let stack = Stack::start().await;
    stack.apply_registry(REGISTRY).await;
    let setup = enforced(&stack).await;
    let (setup_a, setup_b) = (setup.clone().with_id("reg-a"), setup.with_id("reg-b"));
    let (a, b) = tokio::join!(stack.worker(&setup_a), stack.worker(&setup_b));
    let beta = stack.client_with(tenant_client_options("beta")).await;
    let refused = run_job(&beta, chat_job("chat", "not yet")).await;
    assert_eq!(denied_rule(&refused), Some(PolicyRule::UnknownTenant));

    let applied = Instant::now();
    stack
        .apply_registry(&format!(
            "{REGISTRY}\n[tenants.beta]\nmodels = [\"chat\"]\n"
        ))
        .await;
    // Every job from now on must run, on whichever worker takes it.
    let mut workers = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut first_success = None;
    while workers.len() < 2 && Instant::now() < deadline {
        let outcome = run_job(&beta, chat_job("chat", "now?")).await;
        if outcome.status == OutcomeStatus::Succeeded {
            first_success.get_or_insert_with(|| applied.elapsed());
            workers.insert(outcome.worker_id.clone());
        } else {
            assert!(
                workers.is_empty(),
                "a worker refused after another had the change"
            );
        }
    }
    assert_eq!(
        workers.len(),
        2,
        "both workers ran beta's jobs: {workers:?}"
    );
    let took = first_success.unwrap();
    println!("tenants: registry change reached the workers within {took:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");

    // Removing a tenant takes effect the same way.
    let admin = stack.operator().await;
    admin.remove_tenant("beta").await.unwrap();
    eventually(Duration::from_secs(5), "beta refused again", || {
        let beta = beta.clone();
        async move {
            let outcome = run_job(&beta, chat_job("chat", "still?")).await;
            (outcome.status == OutcomeStatus::Failed).then_some(())
        }
    })
    .await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn an_unreadable_entry_refuses_that_tenant_only_and_the_worker_says_why() {
    let stack = Stack::start().await;
    stack.apply_registry(REGISTRY).await;
    let js = async_nats::jetstream::new(stack.nats.client().await);
    let bucket = js.get_key_value("LLMQ_TENANTS").await.unwrap();
    bucket.put("gamma", "{not an entry".into()).await.unwrap();
    let mut worker = WorkerProcess::spawn(&enforced(&stack).await, "registry-garbage").await;
    let gamma = stack.client_with(tenant_client_options("gamma")).await;
    match gamma.submit(chat_job("chat", "me?")).await {
        Err(SubmitError::PolicyDenied { rule, .. }) => {
            assert_eq!(rule, PolicyRule::InvalidTenantEntry)
        }
        other => panic!("expected PolicyDenied, got {other:?}"),
    }
    let outcome = raw_job(&stack, "gamma", Tier::Interactive, &chat_job("chat", "me?")).await;
    assert_eq!(denied_rule(&outcome), Some(PolicyRule::InvalidTenantEntry));
    let acme = stack.client_with(tenant_client_options("acme")).await;
    assert_eq!(
        run_job(&acme, chat_job("chat", "fine")).await.status,
        OutcomeStatus::Succeeded
    );
    worker
        .wait_for_log("entry cannot be read", Duration::from_secs(5))
        .await;
    assert!(worker.log().contains("gamma"));
    assert_eq!(
        worker.terminate(Duration::from_secs(20)).await.code(),
        Some(0)
    );
}

#[tokio::test]
async fn an_enforced_worker_that_cannot_read_the_registry_does_not_start() {
    // The worker's NATS user may do everything but read the registry.
    let deny = r#"
authorization {
  users = [
    { user: admin, password: admin }
    { user: worker, password: worker, permissions: {
        publish: { allow: [">"], deny: ["$JS.API.CONSUMER.CREATE.KV_LLMQ_TENANTS", "$JS.API.CONSUMER.CREATE.KV_LLMQ_TENANTS.>"] }
        subscribe: { allow: [">"] } } }
  ]
}"#;
    let stack = Stack::start_with(
        Default::default(),
        NatsOptions {
            extra_config: deny.into(),
            ..Default::default()
        },
    )
    .await;
    let mut setup = enforced(&stack).await;
    setup
        .set("nats", "user", "\"worker\"")
        .set("nats", "password", "\"worker\"")
        .set("nats", "request_timeout", "\"2s\"");
    let toml = setup.toml();
    let path = stack.dir.path().join("unreadable.toml");
    std::fs::write(&path, toml).unwrap();
    let out = tokio::process::Command::new(llmq_tests::worker::worker_binary())
        .arg("--config")
        .arg(&path)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{stderr}");
    assert!(stderr.contains("tenant registry"), "{stderr}");
    assert!(stderr.contains("does not start"), "{stderr}");
}

#[tokio::test]
async fn a_registry_keeps_what_it_saw_while_the_broker_is_away() {
    let mut stack = Stack::start_with(
        Default::default(),
        NatsOptions {
            sync_always: true,
            ..Default::default()
        },
    )
    .await;
    stack.apply_registry(REGISTRY).await;
    let js = async_nats::jetstream::new(stack.nats.client().await);
    let bucket = js.get_key_value("LLMQ_TENANTS").await.unwrap();
    let stop = CancellationToken::new();
    let (registry, following) = Registry::start(bucket, Mode::Auto, stop.clone())
        .await
        .unwrap();
    let follow = tokio::spawn(following);
    let acme = Tenant::parse("acme").unwrap();
    assert!(matches!(registry.lookup(&acme), Lookup::Known(_)));
    stack.nats.kill().await;
    // Gone: still the last registry, not an empty (open) one.
    tokio::task::yield_now().await;
    assert!(registry.is_enforced());
    assert!(matches!(registry.lookup(&acme), Lookup::Known(_)));
    assert!(matches!(
        registry.lookup(&Tenant::parse("beta").unwrap()),
        Lookup::Unknown
    ));
    stack.nats.restart().await;
    // Back: a change made afterwards arrives.
    let admin: Operator = stack.operator().await;
    admin.remove_tenant("acme").await.unwrap();
    eventually(Duration::from_secs(15), "the removal to arrive", || {
        let gone = matches!(registry.lookup(&acme), Lookup::Unknown);
        async move { gone.then_some(()) }
    })
    .await;
    stop.cancel();
    follow.await.unwrap();
}
