//! The HTTP edge as a client sees it: a real edge (in-process, as `llmq-edge` starts it;
//! the binary itself at the end), a real worker and the mock, spoken to over HTTP with
//! OpenAI's request and answer formats.

use std::time::Duration;

use llmq_runtime::tenants::parse_registry;
use llmq_tests::edge::{Captured, TestEdge, capture_logs, edge_config};
use llmq_tests::stack::{Stack, eventually};
use llmq_tests::worker::{TestWorker, workspace_binary};
use serde_json::{Value, json};

/// A stack with a worker (models `chat`, `unlisted`, and ones whose upstream misbehaves),
/// tenant `acme` allowed `chat`, `ghost-*` and those, a key for acme, and an edge (its
/// log, at debug, captured). The worker makes one call per job on a 5xx and cools a
/// deployment down (for 3 s) only on a 401, 404 or 429, so each test controls what the
/// mock sees.
struct EdgeStack {
    stack: Stack,
    worker: Option<TestWorker>,
    edge: TestEdge,
    stderr: Captured,
    _logging: tracing::subscriber::DefaultGuard,
    url: String,
    key: String,
    http: reqwest::Client,
}

impl EdgeStack {
    async fn start() -> EdgeStack {
        gateway_worker::providers::http_client::install_crypto_provider();
        let mut per_model = std::collections::HashMap::new();
        per_model.insert(
            "slow-model".to_owned(),
            llmq_tests::mock::ModelBehavior {
                first_token_delay: Some(Duration::from_millis(2500)),
                ..Default::default()
            },
        );
        per_model.insert(
            "cut-model".to_owned(),
            llmq_tests::mock::ModelBehavior {
                always: Some(llmq_tests::mock::Fault::CutMidStream { after_tokens: 3 }),
                ..Default::default()
            },
        );
        per_model.insert(
            "broken-model".to_owned(),
            llmq_tests::mock::ModelBehavior {
                always: Some(llmq_tests::mock::Fault::ServerError),
                ..Default::default()
            },
        );
        per_model.insert(
            "stall-model".to_owned(),
            llmq_tests::mock::ModelBehavior {
                always: Some(llmq_tests::mock::Fault::StallMidStream {
                    after_tokens: 2,
                    stall: Duration::from_millis(2500),
                }),
                ..Default::default()
            },
        );
        let mock = llmq_tests::mock::MockOptions {
            per_model,
            ..Default::default()
        };
        let stack = Stack::start_with(mock, Default::default()).await;
        let admin = stack.operator().await;
        let registry = "[tenants.acme]\nmodels = [\"chat\", \"ghost-*\", \"limited\", \"slow\", \"flaky\", \
                        \"broken\", \"fragile\", \"stalling\", \"org/chat-1.5\"]\n\
                        max_wait = \"200ms\"\n\
                        [tenants.acme.model_limits.limited]\nrpm = 1\nwindow = \"1h\"\n\
                        [tenants.thrifty]\nmodels = [\"chat\"]\n\
                        [tenants.thrifty.budget]\nday = { usd = 0.000001 }\n";
        let changes = admin
            .tenants_diff(&parse_registry(registry).unwrap(), true)
            .await
            .unwrap();
        admin.apply_tenants(&changes, 1).await.unwrap();
        let mut setup = stack.simple_setup();
        setup.body.push_str(
            "[models.unlisted]\ndeployments = [{ provider = \"mock\", model = \"mock-model\" }]\n\
             [models.limited]\ndeployments = [{ provider = \"mock\", model = \"mock-model\" }]\n\
             [models.slow]\ndeployments = [{ provider = \"mock\", model = \"slow-model\" }]\n\
             [models.flaky]\ndeployments = [{ provider = \"mock\", model = \"cut-model\" }]\n\
             fallbacks = [\"chat\"]\n\
             [models.broken]\ndeployments = [{ provider = \"mock\", model = \"broken-model\" }]\n\
             [models.fragile]\ndeployments = [{ provider = \"mock\", model = \"fragile-model\" }]\n\
             [models.stalling]\ndeployments = [{ provider = \"mock\", model = \"stall-model\" }]\n\
             [models.\"org/chat-1.5\"]\ndeployments = [{ provider = \"mock\", model = \"mock-model\" }]\n\
             [[prices]]\nprovider = \"mock\"\nmodel = \"mock-model\"\ninput = 1.0\noutput = 1.0\n",
        );
        setup
            .set("retry.per_class", "server", "0")
            .set("cooldown", "min_calls", "1000")
            .set("cooldown", "duration", "\"3s\"");
        let worker = stack.worker(&setup).await;
        let key = create_key(&stack, &[]).await;
        let (stderr, logging) = capture_logs();
        let mut config = edge_config(&stack.nats.url());
        config.http.max_body_bytes = 65536;
        config.http.keep_alive = Duration::from_secs(1);
        config.http.read_timeout = Duration::from_secs(1);
        let edge = TestEdge::start(config).await;
        let url = edge.url().to_owned();
        let http = reqwest::Client::new();
        EdgeStack {
            stack,
            worker: Some(worker),
            edge,
            stderr,
            _logging: logging,
            url,
            key,
            http,
        }
    }

    /// Another edge on the same NATS: edges share nothing else.
    async fn another_edge(&self) -> TestEdge {
        llmq_tests::edge::spawn_edge(&self.stack.nats.url()).await
    }

    /// A chat request to the edge at `url`.
    async fn chat_at(&self, url: &str, key: &str) -> reqwest::StatusCode {
        self.http
            .post(format!("{url}/v1/chat/completions"))
            .bearer_auth(key)
            .json(&hello("chat"))
            .send()
            .await
            .unwrap()
            .status()
    }

    async fn chat(&self, key: Option<&str>, body: Value) -> reqwest::Response {
        let mut request = self
            .http
            .post(format!("{}/v1/chat/completions", self.url))
            .json(&body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send().await.unwrap()
    }

    async fn stop(mut self) {
        self.edge.stop().await;
        if let Some(worker) = self.worker.take() {
            worker.stop().await;
        }
    }
}

async fn create_key(stack: &Stack, extra: &[&str]) -> String {
    create_key_for(stack, "acme", extra).await
}

async fn create_key_for(stack: &Stack, tenant: &str, extra: &[&str]) -> String {
    let out = tokio::process::Command::new(workspace_binary("submitter"))
        .args(["--url", &stack.nats.url(), "keys", "create", tenant])
        .args(extra)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(key.starts_with("llmq-"), "{key}");
    key
}

fn hello(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Hello, edge"}]})
}

async fn error_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (status, body["error"].clone())
}

fn streamed(model: &str) -> Value {
    let mut body = hello(model);
    body["stream"] = json!(true);
    body
}

/// Upstream calls the mock received for `upstream_model`.
fn calls_for(stack: &Stack, upstream_model: &str) -> usize {
    let requests = stack.mock.requests();
    requests
        .iter()
        .filter(|r| r.model == upstream_model)
        .count()
}

/// How many jobs were ever published.
async fn jobs_published(stack: &Stack) -> u64 {
    let js = async_nats::jetstream::new(stack.nats.client().await);
    let mut stream = js.get_stream("LLMQ_JOBS").await.unwrap();
    stream.info().await.unwrap().state.last_sequence
}

/// The stored outcome of the job a request with `x-request-id: request_id` made.
async fn outcome_by_request_id(stack: &Stack, request_id: &str) -> llmq_schemas::Outcome {
    let js = async_nats::jetstream::new(stack.nats.client().await);
    eventually(Duration::from_secs(20), "the job's outcome", || {
        let js = js.clone();
        async move {
            let stream = js.get_stream("LLMQ_RESULTS").await.ok()?;
            let last = stream.get_info().await.ok()?.state.last_sequence;
            for seq in 1..=last {
                let message = stream.get_raw_message(seq).await.ok()?;
                let outcome: llmq_schemas::Outcome =
                    serde_json::from_slice(&message.payload).ok()?;
                if outcome.custom_id.as_deref() == Some(request_id) {
                    return Some(outcome);
                }
            }
            None
        }
    })
    .await
}

#[tokio::test]
async fn a_chat_completion_through_the_edge_is_openais_answer_with_llmqs_headers() {
    let edge = EdgeStack::start().await;
    let response = edge.chat(Some(&edge.key), hello("chat")).await;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert!(
        !body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert!(body["usage"]["total_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        body["model"], "chat",
        "the model asked for, not the upstream's"
    );
    assert_eq!(headers["x-llmq-upstream-model"], "mock-model");
    assert_eq!(headers["x-llmq-provider"], "mock");
    assert_eq!(headers["x-llmq-attempts"], "1");
    assert!(headers.contains_key("x-llmq-overhead-duration-ms"));
    assert_eq!(headers["x-request-id"], headers["x-llmq-job-id"]);

    let echoed = edge
        .http
        .post(format!("{}/v1/chat/completions", edge.url))
        .header("api-key", &edge.key)
        .header("x-request-id", "req-42")
        .json(&hello("chat"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        echoed.status(),
        200,
        "the Azure-style header authenticates too"
    );
    assert_eq!(echoed.headers()["x-request-id"], "req-42");

    let models: Value = edge
        .http
        .get(format!("{}/v1/models", edge.url))
        .bearer_auth(&edge.key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec![
            "broken",
            "chat",
            "flaky",
            "fragile",
            "limited",
            "org/chat-1.5",
            "slow",
            "stalling"
        ],
        "served and allowed: not `unlisted`"
    );
    edge.stop().await;
}

#[tokio::test]
async fn a_streamed_completion_speaks_openais_chunk_format() {
    let edge = EdgeStack::start().await;
    let mut body = hello("chat");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let response = edge.chat(Some(&edge.key), body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let text = response.text().await.unwrap();
    let data: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "{text}");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk"),
        "{text}"
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(!content.is_empty(), "{text}");
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop", "{text}");
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert!(
        usage["usage"]["completion_tokens"].as_u64().unwrap() > 0,
        "{text}"
    );
    let ids: std::collections::HashSet<&str> =
        chunks.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 1, "one id for every chunk");
    assert!(chunks.iter().all(|c| c["model"] == "chat"), "{text}");
    edge.stop().await;
}

#[tokio::test]
async fn bad_input_and_refusals_are_openais_errors_with_the_statuses_sdks_expect() {
    let edge = EdgeStack::start().await;
    let (status, error) = error_of(edge.chat(None, hello("chat")).await).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (401, Some("invalid_api_key"))
    );
    let forged = format!("llmq-{}-{}", "0".repeat(12), "0".repeat(64));
    for key in ["sk-not-ours", forged.as_str()] {
        let (status, error) = error_of(edge.chat(Some(key), hello("chat")).await).await;
        assert_eq!(
            (status, error["code"].as_str()),
            (401, Some("invalid_api_key")),
            "{key}"
        );
    }
    let (status, error) = error_of(edge.chat(Some(&edge.key), hello("unlisted")).await).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (403, Some("model_not_allowed")),
        "{error}"
    );
    let (status, error) = error_of(edge.chat(Some(&edge.key), hello("ghost-model")).await).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (404, Some("model_not_found")),
        "{error}"
    );
    let (status, _) = error_of(
        edge.chat(Some(&edge.key), json!({"model": "chat", "messages": []}))
            .await,
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = error_of(edge.chat(Some(&edge.key), json!({"model": 7})).await).await;
    assert_eq!(status, 400);
    let garbage = edge
        .http
        .post(format!("{}/v1/chat/completions", edge.url))
        .bearer_auth(&edge.key)
        .body("{not json")
        .send()
        .await
        .unwrap();
    let (status, error) = error_of(garbage).await;
    assert_eq!(status, 400, "{error}");
    // A fresh connection: the server answers 413 from the declared length, before reading
    // the body, and closes the connection; a client still writing may see that as a broken
    // pipe instead of reading the answer. Either way the edge did not take the 10 MB.
    let huge = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", edge.url))
        .bearer_auth(&edge.key)
        .body(vec![b' '; 10 * 1024 * 1024])
        .send()
        .await;
    match huge {
        Ok(response) => assert_eq!(response.status(), 413),
        Err(err) => assert!(err.is_request() || err.is_body(), "{err:?}"),
    }
    let small_huge = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", edge.url))
        .bearer_auth(&edge.key)
        .body(vec![b' '; 70 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(small_huge.status(), 413, "just over the 64 KiB limit");
    let unknown = edge
        .http
        .get(format!("{}/v1/nothing", edge.url))
        .send()
        .await
        .unwrap();
    let (status, error) = error_of(unknown).await;
    assert_eq!(
        (status, error["type"].as_str()),
        (404, Some("invalid_request_error"))
    );

    let narrowed = create_key(&edge.stack, &["--models", "ghost-*"]).await;
    let (status, _) = error_of(edge.chat(Some(&narrowed), hello("chat")).await).await;
    assert_eq!(status, 403, "the key narrows the tenant's models");

    let metrics = edge
        .http
        .get(format!("{}/metrics", edge.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("llmq_edge_auth_failures_total"),
        "{metrics}"
    );
    let log = edge.stderr.text();
    assert!(
        !log.contains(&edge.key[5..]),
        "a key reached the edge's log"
    );
    edge.stop().await;
}

#[tokio::test]
async fn a_revoked_key_is_refused_by_every_running_edge_within_seconds() {
    let edge = EdgeStack::start().await;
    assert_eq!(
        edge.chat(Some(&edge.key), hello("chat")).await.status(),
        200
    );
    let second = edge.another_edge().await;
    let second_url = second.url().to_owned();
    assert_eq!(
        edge.chat_at(&second_url, &edge.key).await,
        200,
        "the key works on every edge"
    );
    let id = &edge.key["llmq-".len().."llmq-".len() + 12];
    let out = tokio::process::Command::new(workspace_binary("submitter"))
        .args(["--url", &edge.stack.nats.url(), "keys", "revoke", id])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let revoked_at = std::time::Instant::now();
    eventually(
        Duration::from_secs(5),
        "the edge refuses the revoked key",
        || async {
            (edge.chat(Some(&edge.key), hello("chat")).await.status() == 401).then_some(())
        },
    )
    .await;
    eventually(
        Duration::from_secs(5),
        "the second edge refuses it too",
        || async { (edge.chat_at(&second_url, &edge.key).await == 401).then_some(()) },
    )
    .await;
    second.stop().await;
    println!(
        "edge: a revoked key was refused after {:?}",
        revoked_at.elapsed()
    );
    let listed = tokio::process::Command::new(workspace_binary("submitter"))
        .args(["--url", &edge.stack.nats.url(), "keys", "list"])
        .output()
        .await
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains(id) && listed.contains("revoked"),
        "{listed}"
    );
    assert!(
        !listed.contains(&edge.key[18..]),
        "the list shows no secret"
    );
    edge.stop().await;
}

/// A tool the SDK check needs, or a failure that says how to get it.
pub(crate) fn tool(path: std::path::PathBuf) -> std::path::PathBuf {
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-tools (it installs the pinned openai SDKs from PyPI \
         and npm; it needs python3 and Node.js 20+ with npm)",
        path.display()
    );
    path
}

#[tokio::test]
async fn the_official_openai_sdks_work_unchanged_against_the_edge() {
    let edge = EdgeStack::start().await;
    let narrow = create_key(&edge.stack, &["--models", "ghost-*"]).await;
    let root = llmq_tests::nats::workspace_root();
    let tools = root.join(".tools");
    let python = tool(tools.join("venv/bin/python"));
    let node_sdk = tool(tools.join("node/node_modules/openai"));
    let node_sdk = node_sdk.display().to_string();
    let env = [
        ("LLMQ_EDGE_URL", edge.url.as_str()),
        ("LLMQ_KEY", edge.key.as_str()),
        ("LLMQ_NARROW_KEY", narrow.as_str()),
        ("LLMQ_OPENAI_NODE", node_sdk.as_str()),
    ];
    let mut broken_calls = 0;
    for (program, script) in [
        (python, "openai_check.py"),
        (which("node"), "openai_check.cjs"),
    ] {
        run_sdk_check(&root, &program, script, &env).await;
        let now = calls_for(&edge.stack, "broken-model");
        assert_eq!(
            now,
            broken_calls + 3,
            "{script}: the SDK retried the failed stream twice (one upstream call each)"
        );
        broken_calls = now;
    }
    edge.stop().await;
}

/// Runs `tests/sdk/<script>` with `program` and `env` (within 3 minutes); fails the test,
/// with the script's output, unless it succeeds.
pub(crate) async fn run_sdk_check(
    root: &std::path::Path,
    program: &std::path::Path,
    script: &str,
    env: &[(&str, &str)],
) {
    let mut command = tokio::process::Command::new(program);
    command
        .arg(root.join("tests/sdk").join(script))
        .kill_on_drop(true);
    command.envs(env.iter().copied());
    let output = tokio::time::timeout(Duration::from_secs(180), command.output())
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish within 3 minutes"))
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{script}: {text}");
    println!("{}", text.trim());
}

pub(crate) fn which(program: &str) -> std::path::PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(program))
                .find(|path| path.exists())
        })
        .unwrap_or_else(|| {
            panic!("{program} is not on PATH: install Node.js 20+ (Debian: apt install nodejs npm)")
        })
}

/// README's edge block, run as written.
#[tokio::test]
async fn the_readme_http_block_works_as_printed() {
    let output =
        llmq_tests::readme::run("http edge", &["NATS_PORT", "MOCK_PORT", "EDGE_PORT"]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let all = format!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{all}");
    assert!(stdout.contains("\"object\":\"chat.completion\""), "{all}");
    assert!(
        stdout.contains("chat.completion.chunk") && stdout.contains("data: [DONE]"),
        "{all}"
    );
    assert!(stdout.contains("\"id\":\"chat-fast\""), "{all}");
}

#[tokio::test]
async fn a_stream_holds_its_head_until_output_and_a_client_that_leaves_first_cancels_its_job() {
    let edge = EdgeStack::start().await;
    // `slow` sends its first token after 2.5 s: until then the client sees nothing (no head,
    // no keep-alive), as for a non-streaming request.
    let request = edge
        .http
        .post(format!("{}/v1/chat/completions", edge.url))
        .bearer_auth(&edge.key)
        .header("x-request-id", "leaves-stream")
        .json(&streamed("slow"))
        .send();
    let waited = tokio::time::timeout(Duration::from_millis(1500), request).await;
    assert!(waited.is_err(), "the head went out before the first token");
    // The client went away (the request future, and its connection, dropped).
    let outcome = outcome_by_request_id(&edge.stack, "leaves-stream").await;
    assert_eq!(outcome.status, llmq_schemas::OutcomeStatus::Cancelled);
    assert!(
        edge.stack.mock.disconnects() >= 1,
        "the worker aborted the upstream request"
    );

    // Once output went out, a stream that waits gets keep-alive comments.
    let response = edge.chat(Some(&edge.key), streamed("stalling")).await;
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let mut seen = String::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        use futures::StreamExt;
        while let Some(chunk) = stream.next().await {
            seen.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        }
    })
    .await;
    assert!(read.is_ok(), "the stream did not end: {seen}");
    let keep_alive = seen
        .find(": keep-alive")
        .expect("a keep-alive during the stall");
    let first_content = seen.find("\"content\":\"").unwrap();
    assert!(first_content < keep_alive, "{seen}");
    assert!(seen.ends_with("data: [DONE]\n\n"), "{seen}");
    edge.stop().await;
}

#[tokio::test]
async fn a_request_timeout_becomes_the_jobs_deadline() {
    let edge = EdgeStack::start().await;
    let response = edge
        .http
        .post(format!("{}/v1/chat/completions", edge.url))
        .bearer_auth(&edge.key)
        .header("x-llmq-timeout", "1s")
        .json(&hello("slow"))
        .send()
        .await
        .unwrap();
    let (status, error) = error_of(response).await;
    assert_eq!(
        (status, error["type"].as_str()),
        (504, Some("timeout")),
        "{error}"
    );
    let (status, _) = error_of(
        edge.http
            .post(format!("{}/v1/chat/completions", edge.url))
            .bearer_auth(&edge.key)
            .header("x-llmq-timeout", "soon")
            .json(&hello("chat"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400, "a timeout that is not a duration");
    edge.stop().await;
}

#[tokio::test]
async fn a_thousand_bad_keys_are_counted_and_do_not_slow_a_good_one() {
    let edge = EdgeStack::start().await;
    let started = std::time::Instant::now();
    let bad = futures::future::join_all((0..1000).map(|i| {
        let key = format!("llmq-{i:012x}-{}", "f".repeat(64));
        let edge = &edge;
        async move { edge.chat(Some(&key), hello("chat")).await.status().as_u16() }
    }))
    .await;
    assert!(bad.iter().all(|status| *status == 401));
    let bad_took = started.elapsed();
    let good = std::time::Instant::now();
    assert_eq!(
        edge.chat(Some(&edge.key), hello("chat")).await.status(),
        200
    );
    println!(
        "edge: 1000 bad keys answered in {bad_took:?}; a good request after them took {:?}",
        good.elapsed()
    );
    let metrics = edge
        .http
        .get(format!("{}/metrics", edge.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let unknown = metrics
        .lines()
        .find(|line| line.starts_with("llmq_edge_auth_failures_total{reason=\"unknown\"}"))
        .unwrap_or_default()
        .to_owned();
    assert!(unknown.ends_with(" 1000"), "{unknown}\n{metrics}");
    edge.stop().await;
}

#[tokio::test]
async fn a_restart_after_text_went_out_ends_the_stream_with_an_error_not_a_splice() {
    let edge = EdgeStack::start().await;
    let mut body = hello("flaky");
    body["stream"] = json!(true);
    let response = edge.chat(Some(&edge.key), body).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let data: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "stream_restarted", "{text}");
    assert!(!text.contains("[DONE]"), "{text}");
    let deltas = data
        .iter()
        .filter(|d| d.contains("\"content\"") && !d.contains("\"role\""))
        .count();
    assert_eq!(deltas, 3, "only the first attempt's text went out: {text}");
    edge.stop().await;
}

#[tokio::test]
async fn slow_clients_are_cut_off_and_do_not_hold_the_edge() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let edge = EdgeStack::start().await;
    let addr = edge.url.trim_start_matches("http://").to_owned();
    // Headers one piece, then nothing: the connection is closed after the read timeout.
    let mut loris = tokio::net::TcpStream::connect(&addr).await.unwrap();
    loris
        .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: edge\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), loris.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "a client that never finishes its headers is cut off"
    );
    println!("edge: slow headers cut off after {:?}", started.elapsed());
    // The body announced, a tenth of it sent: 408.
    let mut slow_body = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: edge\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"model\":",
        edge.key
    );
    slow_body.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 512];
    let read = tokio::time::timeout(Duration::from_secs(5), slow_body.read(&mut answer))
        .await
        .expect("the edge answers a body that stalls")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    // Meanwhile, and after, the edge serves everyone else.
    assert_eq!(
        edge.chat(Some(&edge.key), hello("chat")).await.status(),
        200
    );
    edge.stop().await;
}

#[tokio::test]
async fn a_keys_own_rate_refuses_with_429_and_a_retry_after() {
    let edge = EdgeStack::start().await;
    let limited = create_key(&edge.stack, &["--rpm", "2"]).await;
    for _ in 0..2 {
        assert_eq!(edge.chat(Some(&limited), hello("chat")).await.status(), 200);
    }
    let response = edge.chat(Some(&limited), hello("chat")).await;
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(response.headers().contains_key("x-request-id"));
    assert!(response.headers().contains_key("retry-after-ms"));
    let (status, error) = error_of(response).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (429, Some("rate_limit_exceeded")),
        "{error}"
    );
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(
        edge.chat(Some(&edge.key), hello("chat")).await.status(),
        200,
        "another key of the same tenant is not held"
    );
    edge.stop().await;
}

#[tokio::test]
async fn meta_headers_become_the_jobs_metadata() {
    let edge = EdgeStack::start().await;
    let response = edge
        .http
        .post(format!("{}/v1/chat/completions", edge.url))
        .bearer_auth(&edge.key)
        .header("x-llmq-meta-priority", "high")
        .header("x-llmq-meta-cost-centre", "cc-42")
        .json(&hello("chat"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let job_id = response.headers()["x-llmq-job-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let client = edge
        .stack
        .client_with(llmq_submitter::ClientOptions::for_tenant("acme"))
        .await;
    let outcome = client
        .get_outcome(job_id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let metadata = outcome.metadata.unwrap();
    assert_eq!(metadata["priority"], "high");
    assert_eq!(metadata["cost-centre"], "cc-42");
    edge.stop().await;
}

/// Every message of `stream`, as text.
async fn stream_text(js: &async_nats::jetstream::Context, stream: &str) -> String {
    let mut out = String::new();
    let stream = js.get_stream(stream).await.unwrap();
    let last = stream.get_info().await.unwrap().state.last_sequence;
    for seq in 1..=last {
        if let Ok(message) = stream.get_raw_message(seq).await {
            out.push_str(&String::from_utf8_lossy(&message.payload));
            out.push_str(&format!("{:?}", message.headers));
        }
    }
    out
}

#[tokio::test]
async fn an_api_key_appears_nowhere_but_in_its_request_header() {
    let edge = EdgeStack::start().await;
    let secret = edge.key["llmq-".len() + 13..].to_owned();
    assert_eq!(secret.len(), 64);
    let mut near_miss = edge.key.clone();
    near_miss.replace_range(
        near_miss.len() - 1..,
        if edge.key.ends_with('0') { "1" } else { "0" },
    );
    let mut seen = String::new();
    for (key, stream) in [(&edge.key, false), (&edge.key, true), (&near_miss, false)] {
        let mut body = hello("chat");
        body["stream"] = json!(stream);
        seen.push_str(&edge.chat(Some(key), body).await.text().await.unwrap());
    }
    seen.push_str(
        &edge
            .chat(Some(&edge.key), hello("unlisted"))
            .await
            .text()
            .await
            .unwrap(),
    );
    seen.push_str(
        &edge
            .http
            .get(format!("{}/metrics", edge.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    let js = async_nats::jetstream::new(edge.stack.nats.client().await);
    for stream in ["LLMQ_JOBS", "LLMQ_RESULTS", "LLMQ_USAGE", "KV_LLMQ_KEYS"] {
        seen.push_str(&stream_text(&js, stream).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await; // the edge's last log lines
    seen.push_str(&edge.stderr.text());
    assert!(
        seen.contains("debug") || seen.contains("DEBUG"),
        "the edge logged at debug"
    );
    let near = &near_miss[near_miss.len() - 64..];
    for (what, text) in [
        ("the key's secret", secret.as_str()),
        ("a near-miss key's secret", near),
    ] {
        assert!(
            !seen.contains(text),
            "{what} reached an answer, a metric, a stream or a log"
        );
    }
    edge.stop().await;
}

#[tokio::test]
async fn a_non_streaming_client_that_leaves_cancels_its_job_and_an_expired_key_is_refused() {
    let edge = EdgeStack::start().await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(700))
        .build()
        .unwrap();
    let gone = impatient
        .post(format!("{}/v1/chat/completions", edge.url))
        .bearer_auth(&edge.key)
        .header("x-request-id", "leaves-early")
        .json(&hello("slow"))
        .send()
        .await;
    assert!(gone.is_err(), "the client gave up before the answer");
    let outcome = outcome_by_request_id(&edge.stack, "leaves-early").await;
    assert_eq!(outcome.status, llmq_schemas::OutcomeStatus::Cancelled);

    let expiring = create_key(&edge.stack, &["--expires-in", "1s"]).await;
    assert_eq!(
        edge.chat(Some(&expiring), hello("chat")).await.status(),
        200
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, error) = error_of(edge.chat(Some(&expiring), hello("chat")).await).await;
    assert_eq!(status, 401, "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("expired"),
        "{error}"
    );
    edge.stop().await;
}

#[tokio::test]
async fn a_tenant_over_its_budget_gets_429_insufficient_quota() {
    let edge = EdgeStack::start().await;
    let key = create_key_for(&edge.stack, "thrifty", &[]).await;
    let first = edge.chat(Some(&key), hello("chat")).await;
    assert_eq!(first.status(), 200, "the first job spends the budget");

    let response = eventually(Duration::from_secs(10), "a refusal once spent", || {
        let (edge, key) = (&edge, key.clone());
        async move {
            let response = edge.chat(Some(&key), hello("chat")).await;
            (response.status() == 429).then_some(response)
        }
    })
    .await;
    assert!(response.headers().contains_key("retry-after"));
    let (_, error) = error_of(response).await;
    assert_eq!(error["code"], "insufficient_quota", "{error}");
    assert_eq!(error["type"], "insufficient_quota", "{error}");
    edge.stop().await;
}

#[tokio::test]
async fn errors_before_the_first_token_of_a_stream_are_real_http_statuses() {
    let edge = EdgeStack::start().await;
    // The upstream answers 500: no SSE, but 502 with OpenAI's error body and the job's ids.
    let response = edge.chat(Some(&edge.key), streamed("broken")).await;
    let headers = response.headers().clone();
    let (status, error) = error_of(response).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (502, Some("upstream_error")),
        "{error}"
    );
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["x-request-id"], headers["x-llmq-job-id"]);
    assert_eq!(calls_for(&edge.stack, "broken-model"), 1);

    // The job's deadline before the first token: 504.
    let late = edge
        .http
        .post(format!("{}/v1/chat/completions", edge.url))
        .bearer_auth(&edge.key)
        .header("x-llmq-timeout", "1s")
        .json(&streamed("slow"))
        .send()
        .await
        .unwrap();
    let (status, error) = error_of(late).await;
    assert_eq!(
        (status, error["type"].as_str()),
        (504, Some("timeout")),
        "{error}"
    );

    // `n > 1` cannot be streamed: refused before a job exists.
    let published = jobs_published(&edge.stack).await;
    let mut two = streamed("chat");
    two["n"] = json!(2);
    let response = edge.chat(Some(&edge.key), two).await;
    assert!(!response.headers().contains_key("x-llmq-job-id"));
    let (status, error) = error_of(response).await;
    assert_eq!(status, 400, "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("`n`"),
        "{error}"
    );
    assert_eq!(jobs_published(&edge.stack).await, published, "no job");

    // A stream that works: its head, sent with the first output, names the attempt.
    let response = edge.chat(Some(&edge.key), streamed("chat")).await;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["x-llmq-provider"], "mock");
    assert_eq!(headers["x-llmq-upstream-model"], "mock-model");
    assert_eq!(headers["x-llmq-attempts"], "1");
    assert_eq!(headers["x-request-id"], headers["x-llmq-job-id"]);
    let text = response.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    edge.stop().await;
}

#[tokio::test]
async fn an_interactive_request_for_a_cooling_model_fails_at_once_and_a_batch_job_waits() {
    use llmq_tests::mock::{Fault, ScriptedFault};
    let edge = EdgeStack::start().await;
    // `fragile` has one deployment; a 401 from it cools it down for 3 s.
    let unauthorized = || ScriptedFault::for_model("fragile-model", Fault::Unauthorized);
    edge.stack.mock.push_faults([unauthorized()]);
    let (status, error) = error_of(edge.chat(Some(&edge.key), hello("fragile")).await).await;
    assert_eq!(status, 502, "{error}");
    let calls = calls_for(&edge.stack, "fragile-model");

    // Interactive (acme waits at most 200 ms for a limit): 503 at once, no provider call.
    let started = std::time::Instant::now();
    let response = edge.chat(Some(&edge.key), hello("fragile")).await;
    let took = started.elapsed();
    let headers = response.headers().clone();
    let (status, error) = error_of(response).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (503, Some("service_unavailable")),
        "{error}"
    );
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    let retry_after_ms: u64 = headers["retry-after-ms"].to_str().unwrap().parse().unwrap();
    assert!((1..=3).contains(&retry_after), "{retry_after}");
    assert!((1..=3000).contains(&retry_after_ms), "{retry_after_ms}");
    assert_eq!(
        calls_for(&edge.stack, "fragile-model"),
        calls,
        "no provider call"
    );
    let job_id = headers["x-llmq-job-id"].to_str().unwrap().parse().unwrap();
    let client = edge
        .stack
        .client_with(llmq_submitter::ClientOptions::for_tenant("acme"))
        .await;
    let outcome = client.get_outcome(job_id).await.unwrap().unwrap();
    let job_error = outcome.error.unwrap();
    assert_eq!(job_error.kind, llmq_schemas::ErrorType::Unavailable);
    assert!(job_error.retry_after_ms.is_some());
    assert_eq!(outcome.delivery, 1, "ended on its first delivery");
    assert!(outcome.attempts.is_empty());
    println!(
        "edge: a request for a cooling model was refused in {took:?}, retry-after-ms {retry_after_ms}"
    );

    // A batch job in the same situation waits for the cooldown and succeeds.
    let started = std::time::Instant::now();
    let batch = edge
        .http
        .post(format!("{}/v1/chat/completions", edge.url))
        .bearer_auth(&edge.key)
        .header("x-llmq-tier", "batch")
        .json(&hello("fragile"))
        .send()
        .await
        .unwrap();
    assert_eq!(batch.status(), 200);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1500), "{waited:?}");
    assert_eq!(calls_for(&edge.stack, "fragile-model"), calls + 1);

    // The Python SDK: 503 at once without retries; with its default retries it waits what
    // the edge told it and gets the answer, with one upstream call.
    edge.stack.mock.push_faults([unauthorized()]);
    let calls = calls_for(&edge.stack, "fragile-model");
    let root = llmq_tests::nats::workspace_root();
    let python = tool(root.join(".tools/venv/bin/python"));
    let output = tokio::process::Command::new(python)
        .arg(root.join("tests/sdk/cooldown_check.py"))
        .env("LLMQ_EDGE_URL", &edge.url)
        .env("LLMQ_KEY", &edge.key)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .expect("cooldown_check.py did not finish within a minute")
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{text}");
    println!("{}", text.trim());
    assert_eq!(
        calls_for(&edge.stack, "fragile-model"),
        calls + 2,
        "the 401 and the answer: the refused requests called nobody"
    );
    edge.stop().await;
}

#[tokio::test]
async fn every_answer_carries_its_ids_and_every_route_answers_in_openais_shape() {
    let edge = EdgeStack::start().await;
    let url = |path: &str| format!("{}{path}", edge.url);
    // Before any job: the caller's request id, else a fresh one.
    let response = edge.chat(None, hello("chat")).await;
    assert!(response.headers().contains_key("x-request-id"));
    assert!(!response.headers().contains_key("x-llmq-job-id"));
    assert_eq!(response.status(), 401);
    let echoed = edge
        .http
        .post(url("/v1/chat/completions"))
        .header("x-request-id", "req-7")
        .json(&hello("chat"))
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "req-7");

    // Unknown routes and methods: OpenAI's error JSON (405 with `Allow`).
    let unknown = edge.http.get(url("/v1/nothing")).send().await.unwrap();
    assert!(unknown.headers().contains_key("x-request-id"));
    assert_eq!(error_of(unknown).await.0, 404);
    let wrong = edge
        .http
        .get(url("/v1/chat/completions"))
        .send()
        .await
        .unwrap();
    assert!(wrong.headers().contains_key("x-request-id"));
    let allow = wrong.headers()["allow"].to_str().unwrap().to_owned();
    let (status, error) = error_of(wrong).await;
    assert_eq!(
        (status, error["type"].as_str()),
        (405, Some("invalid_request_error"))
    );
    assert!(allow.contains("POST"), "{allow}");
    let wrong = edge.http.delete(url("/v1/models")).send().await.unwrap();
    assert!(wrong.headers()["allow"].to_str().unwrap().contains("GET"));
    assert_eq!(error_of(wrong).await.0, 405);

    // After the job was made, its id too (here a 502 from the upstream).
    let response = edge.chat(Some(&edge.key), hello("broken")).await;
    let headers = response.headers().clone();
    assert_eq!(error_of(response).await.0, 502);
    assert_eq!(headers["x-request-id"], headers["x-llmq-job-id"]);

    // A 404 names only models this key may use: never `unlisted` (served, not acme's).
    let (status, error) = error_of(edge.chat(Some(&edge.key), hello("ghost-model")).await).await;
    assert_eq!(status, 404);
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("chat") && !message.contains("unlisted"),
        "{message}"
    );
    let narrowed = create_key(&edge.stack, &["--models", "ghost-*"]).await;
    let (_, error) = error_of(edge.chat(Some(&narrowed), hello("ghost-model")).await).await;
    let message = error["message"].as_str().unwrap();
    assert!(!message.contains("chat"), "{message}");

    // `models.retrieve`, ids with `/` and `.` as they are or percent-encoded.
    for (path, id) in [
        ("/v1/models/chat", "chat"),
        ("/v1/models/org/chat-1.5", "org/chat-1.5"),
        ("/v1/models/org%2Fchat-1.5", "org/chat-1.5"),
    ] {
        let response = edge
            .http
            .get(url(path))
            .bearer_auth(&edge.key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let model: Value = response.json().await.unwrap();
        assert_eq!(
            (model["id"].as_str(), model["object"].as_str()),
            (Some(id), Some("model"))
        );
    }
    for path in ["/v1/models/unlisted", "/v1/models/ghost-model"] {
        let response = edge
            .http
            .get(url(path))
            .bearer_auth(&edge.key)
            .send()
            .await
            .unwrap();
        let (status, error) = error_of(response).await;
        assert_eq!(
            (status, error["code"].as_str()),
            (404, Some("model_not_found")),
            "{path}"
        );
    }
    let anonymous = edge.http.get(url("/v1/models/chat")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    edge.stop().await;
}

#[tokio::test]
async fn unknown_request_fields_reach_an_openai_compatible_provider_untouched() {
    let edge = EdgeStack::start().await;
    let body = json!({
        "model": "chat",
        "messages": [{"role": "user", "content": "keep my fields", "x_vendor": {"a": 1}}],
        "reasoning_effort": "low",
        "logit_bias": {"50256": -100},
        "user": "u-42",
        "stream_options": {"include_usage": true}
    });
    assert_eq!(edge.chat(Some(&edge.key), body).await.status(), 200);
    let sent = edge
        .stack
        .mock
        .requests()
        .into_iter()
        .find(|request| request.prompt == "keep my fields")
        .expect("the provider got the request");
    assert_eq!(sent.body["reasoning_effort"], "low");
    assert_eq!(sent.body["logit_bias"], json!({"50256": -100}));
    assert_eq!(sent.body["user"], "u-42");
    assert_eq!(sent.body["messages"][0]["x_vendor"], json!({"a": 1}));
    assert_eq!(sent.body["model"], "mock-model", "the job's model decides");
    edge.stop().await;
}

/// `llmq-edge` as operators run it: a config it cannot use is exit 2 naming the field, an
/// unreachable NATS exit 4 (the CLI's codes), and SIGTERM lets the request in flight
/// finish before the process exits 0.
#[tokio::test]
async fn the_binary_exits_with_the_clis_codes_and_drains_on_sigterm() {
    use llmq_tests::edge::{EdgeProcess, run_edge_binary};
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("edge.toml");
    std::fs::write(&config, "[http]\nmax_body_bytes = 0\n").unwrap();
    let config = config.to_str().unwrap();
    let out = run_edge_binary(&[], &["--config", config, "--check-config"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("http.max_body_bytes"), "{stderr}");
    let vars = [("LLMQ__HTTP__MAX_BODY_BYTES", "65536")];
    let out = run_edge_binary(&vars, &["--config", config, "--check-config"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("max_body_bytes 65536"), "{stdout}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = format!("nats://{}", closed.local_addr().unwrap());
    drop(closed);
    let vars = [
        ("LLMQ__NATS__URL", nowhere.as_str()),
        ("LLMQ__NATS__CONNECT_TIMEOUT", "1s"),
    ];
    let out = run_edge_binary(&vars, &["--listen", "127.0.0.1:0"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("cannot connect to NATS"), "{stderr}");

    let stack = Stack::with_slow_mock(Duration::from_millis(1500)).await;
    let worker = stack.worker(&stack.simple_setup()).await;
    let key = create_key_for(&stack, "default", &[]).await;
    let url = stack.nats.url();
    let vars = [("LLMQ__NATS__URL", url.as_str())];
    let mut edge = EdgeProcess::spawn(&vars, &["--listen", "127.0.0.1:0"]).await;
    let request = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", edge.url))
        .bearer_auth(&key)
        .json(&hello("chat"))
        .send();
    let in_flight = tokio::spawn(request);
    eventually(
        Duration::from_secs(10),
        "the request at the provider",
        || {
            let called = !stack.mock.requests().is_empty();
            async move { called.then_some(()) }
        },
    )
    .await;
    let status = edge.terminate(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(0), "{}", edge.log());
    let answered = in_flight.await.unwrap().expect("the request was answered");
    assert_eq!(answered.status(), 200, "the request in flight finished");
    assert!(edge.log().contains("edge stopped"), "{}", edge.log());
    worker.stop().await;
}
