//! Identity enforced by NATS: a server started with `submitter auth generate`'s output lets
//! each tenant do its own work with the ordinary CLI and denies it everything of another
//! tenant's, each denial read from the server's own permission error.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use async_nats::{Event, ServerError};
use futures::StreamExt;
use llmq_schemas::{JobId, OutcomeStatus};
use llmq_submitter::{Client, ClientOptions, NatsOptions, Operator, SubmitError};
use llmq_tests::mock::{MockOptions, ModelBehavior};
use llmq_tests::nats::NatsOptions as ServerOptions;
use llmq_tests::stack::{Stack, chat_job, eventually};
use llmq_tests::worker::{TestWorker, WorkerSetup, openai_mock_provider, workspace_binary};
use tokio::sync::mpsc;

pub(crate) const REGISTRY: &str = r#"
[tenants.acme]
models = ["chat", "slow"]
labels = { team = "search" }

[tenants.beta]
models = ["chat", "slow"]
"#;

/// What a secured stack starts with.
pub(crate) struct SecuredOptions {
    pub registry: String,
    /// Worker settings besides the defaults: (section, key, TOML value).
    pub settings: Vec<(&'static str, &'static str, String)>,
    /// More worker config (`[[prices]]`, ...), appended to the models.
    pub extra_worker_config: String,
}

impl Default for SecuredOptions {
    fn default() -> Self {
        Self {
            registry: REGISTRY.into(),
            settings: Vec::new(),
            extra_worker_config: String::new(),
        }
    }
}

/// A broker running the generated authorization, a worker on the worker's key, the
/// registry applied by the admin's key.
pub(crate) struct Secured {
    pub stack: Stack,
    keys: PathBuf,
    _keys_dir: tempfile::TempDir,
    worker: Option<TestWorker>,
    pub setup: WorkerSetup,
    generate: Output,
}

impl Secured {
    pub async fn start() -> Secured {
        Self::start_with(SecuredOptions::default()).await
    }

    pub async fn start_with(options: SecuredOptions) -> Secured {
        let keys_dir = tempfile::tempdir().unwrap();
        let registry = keys_dir.path().join("tenants.toml");
        std::fs::write(&registry, &options.registry).unwrap();
        let keys = keys_dir.path().join("auth");
        let generate = std::process::Command::new(workspace_binary("submitter"))
            .args(["auth", "generate", registry.to_str().unwrap(), "--out"])
            .arg(&keys)
            .output()
            .unwrap();
        assert!(generate.status.success(), "{generate:?}");
        // nats-server resolves `include` relative to its config's directory, so the test
        // server gets the generated block itself.
        let include = std::fs::read_to_string(keys.join("auth.conf")).unwrap();
        let mut per_model = HashMap::new();
        per_model.insert(
            "slow-model".to_owned(),
            ModelBehavior {
                first_token_delay: Some(Duration::from_secs(5)),
                ..Default::default()
            },
        );
        let mock = MockOptions {
            per_model,
            ..MockOptions::default()
        };
        let server = ServerOptions {
            extra_config: include,
            ..Default::default()
        };
        let stack = Stack::start_with(mock, server).await;
        let mut setup = stack.setup(&format!(
            "{}\n[models.chat]\ndeployments = [{{ provider = \"mock\", model = \"mock-model\" }}]\n\
             [models.slow]\ndeployments = [{{ provider = \"mock\", model = \"slow-model\" }}]\n{}",
            openai_mock_provider(16),
            options.extra_worker_config
        ));
        setup.set("tenants", "mode", "\"enforced\"").set(
            "nats",
            "nkey_file",
            &format!("{:?}", keys.join("worker.nk").display().to_string()),
        );
        for (section, key, value) in &options.settings {
            setup.set(section, key, value);
        }
        let mut secured = Secured {
            stack,
            keys,
            _keys_dir: keys_dir,
            worker: None,
            setup,
            generate,
        };
        let apply = secured
            .cli("admin", &["tenants", "apply", registry.to_str().unwrap()])
            .await;
        assert!(apply.status.success(), "{apply:?}");
        secured.start_worker().await;
        secured
    }

    /// Starts a worker on the worker's key (streams and buckets are set up by it).
    pub async fn start_worker(&mut self) {
        assert!(self.worker.is_none(), "one worker at a time");
        self.worker = Some(self.stack.worker(&self.setup).await);
    }

    /// Stops the worker: jobs published now stay queued.
    pub async fn stop_worker(&mut self) {
        if let Some(worker) = self.worker.take() {
            worker.stop().await;
        }
    }

    pub fn key(&self, user: &str) -> String {
        self.keys.join(format!("{user}.nk")).display().to_string()
    }

    pub fn seed(&self, user: &str) -> String {
        std::fs::read_to_string(self.key(user))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// The CLI as `user` (`admin`, `worker`, `tenant-<id>`), tenant taken from the name.
    pub async fn cli(&self, user: &str, args: &[&str]) -> Output {
        let tenant = user.strip_prefix("tenant-").unwrap_or("default");
        self.cli_as(user, tenant, args).await
    }

    async fn cli_as(&self, user: &str, tenant: &str, args: &[&str]) -> Output {
        tokio::process::Command::new(workspace_binary("submitter"))
            .args(["--url", &self.stack.nats.url(), "--tenant", tenant])
            .args(["--nkey-file", &self.key(user)])
            .args(args)
            .output()
            .await
            .unwrap()
    }

    pub async fn client(&self, user: &str, tenant: &str) -> Client {
        let options = ClientOptions {
            nats: NatsOptions {
                nkey_file: Some(self.key(user).into()),
                ..NatsOptions::with_url(self.stack.nats.url())
            },
            check_catalog: false,
            ..ClientOptions::for_tenant(tenant)
        };
        Client::connect(options).await.unwrap()
    }

    /// An operator as `user`, reporting on `tenant` by default.
    pub async fn operator(&self, user: &str, tenant: &str) -> Operator {
        let options = ClientOptions {
            nats: NatsOptions {
                nkey_file: Some(self.key(user).into()),
                ..NatsOptions::with_url(self.stack.nats.url())
            },
            ..ClientOptions::for_tenant(tenant)
        };
        Operator::connect(options).await.unwrap()
    }

    /// A raw connection as `tenant-<tenant>` (with its inbox prefix, so that JetStream
    /// answers reach it), reporting the server's permission errors.
    pub async fn raw_tenant(&self, tenant: &str) -> Watched {
        let prefix = format!("_INBOX_llmq.{tenant}");
        let seed = self.seed(&format!("tenant-{tenant}"));
        Watched::connect(&self.stack.nats.url(), &seed, &prefix).await
    }

    /// A raw connection as the admin.
    pub async fn raw_admin(&self) -> async_nats::Client {
        async_nats::ConnectOptions::with_nkey(self.seed("admin"))
            .connect(self.stack.nats.url())
            .await
            .unwrap()
    }

    pub async fn stop(mut self) {
        self.stop_worker().await;
    }
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn assert_ok(output: &Output) -> String {
    assert!(output.status.success(), "{}", text(output));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A registry that uses every tenant feature: limits, a budget, labels.
const FEATURES_REGISTRY: &str = r#"
[tenants.acme]
models = ["chat", "slow", "parked"]
labels = { team = "search" }
[tenants.acme.limits]
concurrency = 8
rpm = 1000
[tenants.acme.budget]
day = { usd = 50 }

[tenants.beta]
models = ["chat", "slow"]
"#;

/// Issue 18, item 5: every feature on the credentials `auth generate` writes (the worker,
/// the edge with a rate-limited key, tenants with limits and a budget, dead letters by
/// both paths, the admin's reports), and not one permission violation in the server's log.
#[tokio::test]
async fn every_feature_runs_on_the_generated_credentials_without_a_permission_violation() {
    let secured = Secured::start_with(SecuredOptions {
        registry: FEATURES_REGISTRY.into(),
        // The max-deliveries test below parks a job for a model nobody serves.
        settings: vec![("worker", "sweep_interval", "\"1h\"".into())],
        extra_worker_config: "[[prices]]\nprovider = \"mock\"\nmodel = \"mock-model\"\n\
                              input = 1.0\noutput = 2.0\n"
            .into(),
    })
    .await;
    generated_files_hold_no_printed_secret(&secured);
    a_tenant_uses_the_ordinary_cli(&secured).await;
    dead_letters_reach_their_tenant_by_both_paths(&secured).await;
    the_admin_reads_every_report(&secured).await;
    a_key_with_a_rate_is_served_by_the_edge(&secured).await;
    let beta = secured
        .cli("tenant-beta", &["chat", "--model", "chat", "hi"])
        .await;
    assert_ok(&beta);
    let violations = secured.stack.nats.permission_violations();
    assert!(violations.is_empty(), "{violations:#?}");
    secured.stop().await;
}

fn generated_files_hold_no_printed_secret(secured: &Secured) {
    let printed = text(&secured.generate);
    for user in ["admin", "worker", "edge", "tenant-acme", "tenant-beta"] {
        assert!(printed.contains(user), "{printed}");
        assert!(!printed.contains(&secured.seed(user)), "a seed was printed");
        let mode = std::fs::metadata(secured.key(user)).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o077,
            0
        );
    }
}

/// Jobs (under the tenant's limits and budget), streaming, waiting, the catalog, usage
/// with the tenant's own budget, a cancel.
async fn a_tenant_uses_the_ordinary_cli(secured: &Secured) {
    let acme = "tenant-acme";
    let answer = assert_ok(
        &secured
            .cli(acme, &["chat", "--model", "chat", "hello"])
            .await,
    );
    assert!(!answer.trim().is_empty());
    let streamed = assert_ok(
        &secured
            .cli(acme, &["chat", "--model", "chat", "--stream", "stream me"])
            .await,
    );
    assert!(!streamed.trim().is_empty());
    let queued = assert_ok(
        &secured
            .cli(acme, &["chat", "--model", "chat", "--no-wait", "later"])
            .await,
    );
    let job_id = queued.split_whitespace().last().unwrap().to_owned();
    JobId::parse_str(&job_id).expect("--no-wait prints the job id");
    let result = secured
        .cli(acme, &["result", &job_id, "--wait", "20s"])
        .await;
    assert_ok(&result);
    let models = assert_ok(&secured.cli(acme, &["models"]).await);
    assert!(models.contains("chat"), "{models}");
    let usage = secured.cli(acme, &["usage", "--since", "1h"]).await;
    let usage_text = assert_ok(&usage);
    assert!(
        usage_text.contains("acme") && usage_text.contains("chat"),
        "{usage_text}"
    );
    assert!(
        usage_text.contains("BUDGET") && usage_text.contains("day"),
        "{usage_text}"
    );
    assert!(!text(&usage).contains("not shown"), "{}", text(&usage));
    let by_team = assert_ok(
        &secured
            .cli(acme, &["usage", "--since", "1h", "--by", "label:team"])
            .await,
    );
    assert!(
        by_team.contains("TEAM") && by_team.contains("search"),
        "{by_team}"
    );

    let slow = assert_ok(
        &secured
            .cli(acme, &["chat", "--model", "slow", "--no-wait", "cancel me"])
            .await,
    );
    let slow_id = slow.split_whitespace().last().unwrap().to_owned();
    assert_ok(&secured.cli(acme, &["cancel", &slow_id]).await);
    let client = secured.client(acme, "acme").await;
    let outcome = client
        .wait_outcome(JobId::parse_str(&slow_id).unwrap(), Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(outcome.status, OutcomeStatus::Cancelled);
}

/// A job that cannot be decoded (the worker's own path, its tenant notified) and one the
/// server stopped delivering (the max-deliveries advisory the worker listens to).
async fn dead_letters_reach_their_tenant_by_both_paths(secured: &Secured) {
    let acme = secured.raw_tenant("acme").await;
    let mut inbox = acme.nats.subscribe("_INBOX_llmq.acme.app.>").await.unwrap();
    acme.nats.flush().await.unwrap();
    let garbage =
        serde_json::json!({"id": uuid::Uuid::now_v7(), "reply_to": "_INBOX_llmq.acme.app.1"});
    let js = async_nats::jetstream::new(acme.nats.clone());
    let subject = "llmq.jobs.chat.interactive.acme";
    js.publish(subject, garbage.to_string().into())
        .await
        .unwrap()
        .await
        .unwrap();
    let notice = tokio::time::timeout(Duration::from_secs(10), inbox.next())
        .await
        .expect("the dead-letter notice")
        .unwrap();
    assert!(String::from_utf8_lossy(&notice.payload).contains("dead_lettered"));

    let tenant = secured.client("tenant-acme", "acme").await;
    let parked = tenant
        .submit_detached(chat_job("parked", "nobody serves me"))
        .await
        .unwrap();
    let admin = secured.raw_admin().await;
    let jobs = async_nats::jetstream::new(admin.clone())
        .get_stream("LLMQ_JOBS")
        .await
        .unwrap();
    let stored = jobs
        .get_last_raw_message_by_subject("llmq.jobs.parked.interactive.acme")
        .await
        .unwrap();
    let advisory = serde_json::json!({
        "type": "io.nats.jetstream.advisory.v1.max_deliver",
        "id": "x", "timestamp": "2026-01-01T00:00:00Z",
        "stream": "LLMQ_JOBS", "consumer": "interactive-parked",
        "stream_seq": stored.sequence, "deliveries": 6
    });
    let subject = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.LLMQ_JOBS.interactive-parked";
    admin
        .publish(subject, advisory.to_string().into())
        .await
        .unwrap();
    let reader = secured.operator("admin", "acme").await;
    eventually(Duration::from_secs(10), "the max-deliveries letter", || {
        let reader = reader.clone();
        async move {
            let letters = reader.dlq_list().await.ok()?;
            letters
                .iter()
                .any(|l| l.job_id == Some(parked))
                .then_some(())
        }
    })
    .await;
}

/// `submitter limits`, `status`, `dlq list`, `usage --all-tenants` and `tenants list`.
async fn the_admin_reads_every_report(secured: &Secured) {
    // Workers publish what they enforce when it changes: under load, a moment after start.
    eventually(
        Duration::from_secs(10),
        "the fleet's limits to list acme",
        || async {
            let limits = assert_ok(&secured.cli("admin", &["limits"]).await);
            limits.contains("tenant acme").then_some(())
        },
    )
    .await;
    assert_ok(&secured.cli("admin", &["status"]).await);
    let letters = assert_ok(&secured.cli("admin", &["dlq", "list"]).await);
    assert!(letters.contains("max_deliveries"), "{letters}");
    let usage = assert_ok(
        &secured
            .cli("admin", &["usage", "--since", "1h", "--all-tenants"])
            .await,
    );
    assert!(usage.contains("BUDGET"), "{usage}");
    assert_ok(&secured.cli("admin", &["tenants", "list"]).await);
}

/// The edge on its own credentials, with a key that has a rate of its own (its window
/// counters live in the limits bucket), streaming and not.
async fn a_key_with_a_rate_is_served_by_the_edge(secured: &Secured) {
    gateway_worker::providers::http_client::install_crypto_provider();
    let created = secured
        .cli("admin", &["keys", "create", "acme", "--rpm", "100"])
        .await;
    let key = assert_ok(&created).trim().to_owned();
    let http = reqwest::Client::new();
    let mut config = llmq_tests::edge::edge_config(&secured.stack.nats.url());
    config.nats.nkey_file = Some(secured.key("edge").into());
    let edge = llmq_tests::edge::spawn_edge_with(config).await;
    let url = edge.url().to_owned();
    for stream in [false, true] {
        let body = serde_json::json!({"model": "chat", "stream": stream,
            "messages": [{"role": "user", "content": "hi"}]});
        let response = http
            .post(format!("{url}/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        assert_eq!(status, 200, "stream {stream}: {body}");
        let expected = if stream { "[DONE]" } else { "chat.completion" };
        assert!(body.contains(expected), "{body}");
    }
    edge.stop().await;
}

/// A raw connection that reports each permission error the server sends it.
pub(crate) struct Watched {
    pub nats: async_nats::Client,
    denials: mpsc::UnboundedReceiver<String>,
}

impl Watched {
    async fn connect(url: &str, seed: &str, inbox_prefix: &str) -> Watched {
        let (tx, denials) = mpsc::unbounded_channel();
        let nats = async_nats::ConnectOptions::with_nkey(seed.to_owned())
            .custom_inbox_prefix(inbox_prefix)
            .event_callback(move |event| {
                let tx = tx.clone();
                async move {
                    if let Event::ServerError(ServerError::Other(message)) = event {
                        let _ = tx.send(message);
                    }
                }
            })
            .connect(url)
            .await
            .unwrap();
        Watched { nats, denials }
    }

    /// The server's next permission error, which must name `subject`.
    pub(crate) async fn denied(&mut self, what: &str, subject: &str) {
        let message = tokio::time::timeout(Duration::from_secs(5), self.denials.recv())
            .await
            .unwrap_or_else(|_| panic!("{what}: no permission error from the server"))
            .unwrap();
        assert!(
            message.contains("Permissions Violation") && message.contains(subject),
            "{what}: {message}"
        );
    }

    pub(crate) async fn publish_denied(&mut self, what: &str, subject: &str) {
        self.nats
            .publish(subject.to_owned(), "{}".into())
            .await
            .unwrap();
        self.nats.flush().await.unwrap();
        self.denied(what, subject).await;
    }

    /// An API request: denied before any answer, so the request itself times out.
    pub(crate) async fn request_denied(&mut self, what: &str, subject: &str) {
        let request = self.nats.request(subject.to_owned(), "{}".into());
        let _ = tokio::time::timeout(Duration::from_millis(500), request).await;
        self.denied(what, subject).await;
    }

    async fn subscribe_denied(&mut self, what: &str, subject: &str) {
        let _subscription = self.nats.subscribe(subject.to_owned()).await.unwrap();
        self.nats.flush().await.unwrap();
        self.denied(what, subject).await;
    }
}

#[tokio::test]
async fn another_tenant_is_denied_each_thing_by_the_server_itself() {
    let secured = Secured::start().await;
    let acme = secured.client("tenant-acme", "acme").await;
    let mut job = chat_job("slow", "acme's secret prompt");
    job.reply_to = None;
    let acme_job = acme.submit_detached(job).await.unwrap();
    let done = acme
        .submit_detached(chat_job("chat", "acme's finished job"))
        .await
        .unwrap();
    acme.wait_outcome(done, Duration::from_secs(20))
        .await
        .unwrap();

    let mut beta = secured.raw_tenant("beta").await;
    let api = "$JS.API";
    beta.publish_denied("a job under acme", "llmq.jobs.chat.interactive.acme")
        .await;
    beta.subscribe_denied("acme's outcomes", "llmq.results.acme.>")
        .await;
    beta.subscribe_denied("acme's reply inbox", "_INBOX_llmq.acme.>")
        .await;
    for (what, subject) in [
        (
            "an outcome of acme by direct get",
            format!("{api}.DIRECT.GET.LLMQ_RESULTS.llmq.results.acme.{done}"),
        ),
        (
            "outcomes by message get",
            format!("{api}.STREAM.MSG.GET.LLMQ_RESULTS"),
        ),
        (
            "a consumer on acme's outcomes",
            format!("{api}.CONSUMER.CREATE.LLMQ_RESULTS.x.llmq.results.acme.>"),
        ),
        (
            "an unfiltered consumer on outcomes",
            format!("{api}.CONSUMER.CREATE.LLMQ_RESULTS"),
        ),
        (
            "acme's usage",
            format!("{api}.CONSUMER.CREATE.LLMQ_USAGE.x.llmq.usage.acme.*"),
        ),
        ("all usage", format!("{api}.CONSUMER.CREATE.LLMQ_USAGE")),
        (
            "usage by message get",
            format!("{api}.STREAM.MSG.GET.LLMQ_USAGE"),
        ),
        (
            "the dead letters",
            format!("{api}.CONSUMER.CREATE.LLMQ_DLQ"),
        ),
        ("a dead letter", format!("{api}.DIRECT.GET.LLMQ_DLQ")),
        (
            "acme's registry entry",
            format!("{api}.DIRECT.GET.KV_LLMQ_TENANTS.$KV.LLMQ_TENANTS.acme"),
        ),
        (
            "the registry",
            format!("{api}.CONSUMER.CREATE.KV_LLMQ_TENANTS"),
        ),
        ("the jobs stream", format!("{api}.STREAM.INFO.LLMQ_JOBS")),
        ("the stream list", format!("{api}.STREAM.LIST")),
        (
            "deleting a stream",
            format!("{api}.STREAM.DELETE.LLMQ_RESULTS"),
        ),
    ] {
        beta.request_denied(what, &subject).await;
    }
    beta.publish_denied(
        "cancelling acme's job",
        &format!("$KV.LLMQ_CANCEL.acme.{acme_job}"),
    )
    .await;
    beta.publish_denied("writing the registry", "$KV.LLMQ_TENANTS.beta")
        .await;
    beta.publish_denied("writing the live catalog", "$KV.LLMQ_CATALOG.forged-worker")
        .await;

    // The submitter with beta's key, pretending to be acme: the permission error, at once.
    let pretender = secured.client("tenant-beta", "acme").await;
    let started = Instant::now();
    let refused = pretender.submit_detached(chat_job("chat", "as acme")).await;
    assert!(
        matches!(refused, Err(SubmitError::PermissionDenied(_))),
        "{refused:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let cli = secured
        .cli_as(
            "tenant-beta",
            "acme",
            &["chat", "--model", "chat", "as acme"],
        )
        .await;
    assert_eq!(cli.status.code(), Some(7), "{}", text(&cli));
    assert!(
        text(&cli).contains("Permissions Violation"),
        "{}",
        text(&cli)
    );
    for args in [
        &["dlq", "list"][..],
        &["usage", "--all-tenants"][..],
        &["tenants", "list"][..],
    ] {
        let out = secured.cli("tenant-beta", args).await;
        assert_eq!(out.status.code(), Some(7), "{args:?}: {}", text(&out));
    }

    // The server logged each denial: what the every-feature test counts must be there.
    let logged = secured.stack.nats.permission_violations();
    assert!(
        logged
            .iter()
            .any(|line| line.contains("llmq.results.acme.>")),
        "{logged:#?}"
    );

    // Beta's own cancel naming acme's job lands in beta's namespace and cancels nothing.
    let beta_client = secured.client("tenant-beta", "beta").await;
    beta_client.cancel(acme_job, None).await.unwrap();
    let outcome = acme
        .wait_outcome(acme_job, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    secured.stop().await;
}

/// README's recipe, run as written: two tenants from an empty directory.
#[tokio::test]
async fn the_readme_recipe_for_two_tenants_works_as_written() {
    let output = llmq_tests::readme::run("two tenants", &["NATS_PORT", "MOCK_PORT"]).await;
    let all = text(&output);
    assert!(output.status.success(), "{all}");
    assert!(all.contains("beta refused with exit 7"), "{all}");
    assert!(all.contains("Permissions Violation"), "{all}");
    assert!(all.contains("TEAM") && all.contains("search"), "{all}");
}

/// What the permission set costs a producer: the same job-sized JetStream publish, awaited
/// one at a time, as a tenant (a dozen pinned subjects to check) and as the admin (`>`), on
/// one server. Printed for the note; a timing never fails the test.
#[tokio::test]
async fn the_cost_of_a_tenants_permissions_per_publish_is_measured() {
    let secured = Secured::start().await;
    let payload = bytes::Bytes::from(vec![b'x'; 1024]);
    let mut medians = Vec::new();
    for (user, tenant) in [
        ("admin", "acme"),
        ("tenant-acme", "acme"),
        ("admin", "acme"),
    ] {
        let nats = async_nats::ConnectOptions::with_nkey(secured.seed(user))
            .custom_inbox_prefix("_INBOX_llmq.acme")
            .connect(secured.stack.nats.url())
            .await
            .unwrap();
        let js = async_nats::jetstream::new(nats);
        let subject = format!("llmq.jobs.bench.batch.{tenant}");
        let mut took = Vec::with_capacity(300);
        for _ in 0..300 {
            let started = Instant::now();
            js.publish(subject.clone(), payload.clone())
                .await
                .unwrap()
                .await
                .unwrap();
            took.push(started.elapsed());
        }
        took.sort();
        medians.push((user, took[took.len() / 2]));
    }
    println!("auth: publish+PubAck p50, one at a time, 1 KiB: {medians:?}");
    assert_eq!(medians.len(), 3);
    secured.stop().await;
}

/// The alternative not taken: a tenant as an account of its own, its jobs reaching the
/// llmq account's stream through a service import (so that PubAcks find their way back).
/// Same publish as above; printed for ARCHITECTURE.md's figures.
#[tokio::test]
async fn the_cost_of_an_account_per_tenant_is_measured() {
    let config = r#"
accounts {
  LLMQ {
    jetstream: enabled
    users: [{ user: worker, password: worker }]
    exports: [{ service: "llmq.jobs.*.*.acme" }]
  }
  ACME {
    users: [{ user: acme, password: acme }]
    imports: [{ service: { account: LLMQ, subject: "llmq.jobs.*.*.acme" } }]
  }
}
"#;
    let nats = llmq_tests::nats::TestNats::start_with(ServerOptions {
        extra_config: config.into(),
        ..Default::default()
    })
    .await;
    let connect = |user: &'static str| {
        let url = nats.url();
        async move {
            async_nats::ConnectOptions::with_user_and_password(user.into(), user.into())
                .connect(url)
                .await
                .unwrap()
        }
    };
    let worker = async_nats::jetstream::new(connect("worker").await);
    worker
        .create_stream(async_nats::jetstream::stream::Config {
            name: "JOBS".into(),
            subjects: vec!["llmq.jobs.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let payload = bytes::Bytes::from(vec![b'x'; 1024]);
    let mut medians = Vec::new();
    for (label, user) in [
        ("same account", "worker"),
        ("own account", "acme"),
        ("same account", "worker"),
    ] {
        let js = async_nats::jetstream::new(connect(user).await);
        let mut took = Vec::with_capacity(300);
        for _ in 0..300 {
            let started = Instant::now();
            js.publish("llmq.jobs.bench.batch.acme", payload.clone())
                .await
                .unwrap()
                .await
                .unwrap();
            took.push(started.elapsed());
        }
        took.sort();
        medians.push((label, took[took.len() / 2]));
    }
    println!("auth: publish+PubAck p50 by where the tenant lives: {medians:?}");
    let stored = worker
        .get_stream("JOBS")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages;
    assert_eq!(
        stored, 900,
        "every publish, from either account, reached the stream"
    );
}
