//! Identity enforced by NATS: a server started with `submitter auth generate`'s output lets
//! each tenant do its own work with the ordinary CLI and denies it everything of another
//! tenant's, each denial read from the server's own permission error.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use async_nats::{Event, ServerError};
use llmq_schemas::{JobId, OutcomeStatus};
use llmq_submitter::{Client, ClientOptions, NatsOptions, SubmitError};
use llmq_tests::mock::{MockOptions, ModelBehavior};
use llmq_tests::nats::NatsOptions as ServerOptions;
use llmq_tests::stack::{Stack, chat_job};
use llmq_tests::worker::{TestWorker, openai_mock_provider, workspace_binary};
use tokio::sync::mpsc;

const REGISTRY: &str = r#"
[tenants.acme]
models = ["chat", "slow"]
labels = { team = "search" }

[tenants.beta]
models = ["chat", "slow"]
"#;

/// A broker running the generated authorization, a worker on the worker's key, the
/// registry applied by the admin's key.
struct Secured {
    stack: Stack,
    keys: PathBuf,
    _keys_dir: tempfile::TempDir,
    worker: Option<TestWorker>,
    generate: Output,
}

impl Secured {
    async fn start() -> Secured {
        let keys_dir = tempfile::tempdir().unwrap();
        let registry = keys_dir.path().join("tenants.toml");
        std::fs::write(&registry, REGISTRY).unwrap();
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
        let mut secured = Secured {
            stack,
            keys,
            _keys_dir: keys_dir,
            worker: None,
            generate,
        };
        let mut setup = secured.stack.setup(&format!(
            "{}\n[models.chat]\ndeployments = [{{ provider = \"mock\", model = \"mock-model\" }}]\n\
             [models.slow]\ndeployments = [{{ provider = \"mock\", model = \"slow-model\" }}]\n",
            openai_mock_provider(16)
        ));
        setup.set("tenants", "mode", "\"enforced\"").set(
            "nats",
            "nkey_file",
            &format!("{:?}", secured.key("worker")),
        );
        let apply = secured
            .cli("admin", &["tenants", "apply", registry.to_str().unwrap()])
            .await;
        assert!(apply.status.success(), "{apply:?}");
        secured.worker = Some(secured.stack.worker(&setup).await);
        secured
    }

    fn key(&self, user: &str) -> String {
        self.keys.join(format!("{user}.nk")).display().to_string()
    }

    fn seed(&self, user: &str) -> String {
        std::fs::read_to_string(self.key(user))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// The CLI as `user` (`admin`, `worker`, `tenant-<id>`), tenant taken from the name.
    async fn cli(&self, user: &str, args: &[&str]) -> Output {
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

    async fn client(&self, user: &str, tenant: &str) -> Client {
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

    async fn stop(mut self) {
        if let Some(worker) = self.worker.take() {
            worker.stop().await;
        }
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

#[tokio::test]
async fn generated_credentials_let_a_tenant_use_the_ordinary_cli() {
    let secured = Secured::start().await;
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
    let usage = assert_ok(&secured.cli(acme, &["usage", "--since", "1h"]).await);
    assert!(usage.contains("acme") && usage.contains("chat"), "{usage}");
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
    secured.stop().await;
}

/// A raw connection that reports each permission error the server sends it.
struct Watched {
    nats: async_nats::Client,
    denials: mpsc::UnboundedReceiver<String>,
}

impl Watched {
    async fn connect(url: &str, seed: &str) -> Watched {
        let (tx, denials) = mpsc::unbounded_channel();
        let nats = async_nats::ConnectOptions::with_nkey(seed.to_owned())
            .custom_inbox_prefix("_INBOX_llmq.beta")
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
    async fn denied(&mut self, what: &str, subject: &str) {
        let message = tokio::time::timeout(Duration::from_secs(5), self.denials.recv())
            .await
            .unwrap_or_else(|_| panic!("{what}: no permission error from the server"))
            .unwrap();
        assert!(
            message.contains("Permissions Violation") && message.contains(subject),
            "{what}: {message}"
        );
    }

    async fn publish_denied(&mut self, what: &str, subject: &str) {
        self.nats
            .publish(subject.to_owned(), "{}".into())
            .await
            .unwrap();
        self.nats.flush().await.unwrap();
        self.denied(what, subject).await;
    }

    /// An API request: denied before any answer, so the request itself times out.
    async fn request_denied(&mut self, what: &str, subject: &str) {
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

    let mut beta = Watched::connect(&secured.stack.nats.url(), &secured.seed("tenant-beta")).await;
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

/// The edge on its own generated credentials: keys and the registry readable, jobs for a
/// tenant submitted and answered.
#[tokio::test]
async fn the_edge_runs_on_its_generated_credentials() {
    gateway_worker::providers::http_client::install_crypto_provider();
    let secured = Secured::start().await;
    let created = secured.cli("admin", &["keys", "create", "acme"]).await;
    let key = assert_ok(&created).trim().to_owned();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut edge = tokio::process::Command::new(workspace_binary("submitter"))
        .args([
            "--url",
            &secured.stack.nats.url(),
            "--nkey-file",
            &secured.key("edge"),
        ])
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    llmq_tests::stack::eventually(Duration::from_secs(20), "the edge is ready", || {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let ready = http.get(format!("{url}/readyz")).send().await;
            ready.is_ok_and(|r| r.status() == 200).then_some(())
        }
    })
    .await;
    let response = http
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(&key)
        .json(
            &serde_json::json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body = response.text().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("chat.completion"), "{body}");
    let _ = edge.kill().await;
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
