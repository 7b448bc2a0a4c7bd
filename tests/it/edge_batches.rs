//! OpenAI's Files and Batches API at the edge: the official SDKs' calls work unchanged, a
//! tenant sees only its own files and batches, and a batch outlives the edge that took it.

use std::time::Duration;

use llmq_tests::edge::{EdgeProcess, TestEdge, edge_config};
use llmq_tests::mock::{MockOptions, ModelBehavior};
use llmq_tests::stack::{Stack, eventually};
use llmq_tests::worker::{TestWorker, workspace_binary};
use serde_json::{Value, json};

use crate::edge::{run_sdk_check, tool, which};

/// Uploads a batch file of `lines` chat lines on `model` to the edge at `url` and creates
/// a batch of it, as `credential` (a key or a token): the batch's id.
pub(crate) async fn create_batch(
    http: &reqwest::Client,
    url: &str,
    credential: &str,
    model: &str,
    lines: usize,
) -> String {
    let input: String = (0..lines)
        .map(|i| {
            json!({"custom_id": format!("e{i}"), "method": "POST", "url": "/v1/chat/completions",
                "body": {"model": model, "messages": [{"role": "user", "content": format!("edge line {i}")}]}})
            .to_string()
                + "\n"
        })
        .collect();
    let form = reqwest::multipart::Form::new()
        .text("purpose", "batch")
        .part(
            "file",
            reqwest::multipart::Part::bytes(input.into_bytes()).file_name("in.jsonl"),
        );
    let file: Value = http
        .post(format!("{url}/v1/files"))
        .bearer_auth(credential)
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let body = json!({"input_file_id": file["id"], "endpoint": "/v1/chat/completions",
        "completion_window": "24h"});
    let batch: Value = http
        .post(format!("{url}/v1/batches"))
        .bearer_auth(credential)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    batch["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{batch}"))
        .to_owned()
}

/// Tenants acme and beta (enforced), models `chat` and `slow` (1 s), a worker, a key each.
struct BatchStack {
    stack: Stack,
    _worker: TestWorker,
    acme_key: String,
    beta_key: String,
}

impl BatchStack {
    async fn start() -> BatchStack {
        gateway_worker::providers::http_client::install_crypto_provider();
        let mut mock = MockOptions::default();
        mock.per_model.insert(
            "slow-model".into(),
            ModelBehavior {
                first_token_delay: Some(Duration::from_secs(1)),
                ..Default::default()
            },
        );
        let stack = Stack::start_with(mock, Default::default()).await;
        stack
            .apply_registry(
                "[tenants.acme]\nmodels = [\"chat\", \"slow\"]\n[tenants.beta]\nmodels = [\"chat\"]\n",
            )
            .await;
        let mut setup = stack.simple_setup();
        setup.body.push_str(
            "[models.slow]\ndeployments = [{ provider = \"mock\", model = \"slow-model\" }]\n",
        );
        setup.set("worker", "max_inflight", "4");
        let worker = stack.worker(&setup).await;
        let acme_key = key_for(&stack, "acme").await;
        let beta_key = key_for(&stack, "beta").await;
        BatchStack {
            stack,
            _worker: worker,
            acme_key,
            beta_key,
        }
    }

    async fn edge(&self, runners: usize) -> TestEdge {
        let mut config = edge_config(&self.stack.nats.url());
        config.batches.runners = runners;
        config.batches.heartbeat = Duration::from_millis(500);
        TestEdge::start(config).await
    }
}

async fn key_for(stack: &Stack, tenant: &str) -> String {
    let out = tokio::process::Command::new(workspace_binary("submitter"))
        .args(["--url", &stack.nats.url(), "keys", "create", tenant])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn the_official_sdks_files_and_batches_calls_work_unchanged() {
    let batches = BatchStack::start().await;
    let edge = batches.edge(2).await;
    let root = llmq_tests::nats::workspace_root();
    let tools = root.join(".tools");
    let python = tool(tools.join("venv/bin/python"));
    let node_sdk = tool(tools.join("node/node_modules/openai"));
    let node_sdk = node_sdk.display().to_string();
    let env = [
        ("LLMQ_EDGE_URL", edge.url()),
        ("LLMQ_KEY", batches.acme_key.as_str()),
        ("LLMQ_OTHER_KEY", batches.beta_key.as_str()),
        ("LLMQ_OPENAI_NODE", node_sdk.as_str()),
    ];
    for (program, script) in [
        (python, "batch_check.py"),
        (which("node"), "batch_check.cjs"),
    ] {
        run_sdk_check(&root, &program, script, &env).await;
    }
    edge.stop().await;
}

/// The edge that took the batch dies (SIGKILL) halfway; another edge finishes it, and no
/// line is called twice.
#[tokio::test]
async fn a_batch_outlives_the_edge_that_took_it() {
    let batches = BatchStack::start().await;
    let url = batches.stack.nats.url();
    let vars = [
        ("LLMQ__NATS__URL", url.as_str()),
        ("LLMQ__BATCHES__HEARTBEAT", "500ms"),
    ];
    let mut first = EdgeProcess::spawn(&vars, &["--listen", "127.0.0.1:0"]).await;
    let http = reqwest::Client::new();
    let id = create_batch(&http, &first.url, &batches.acme_key, "slow", 24).await;

    // Killed once the first lines ran: mid-batch.
    eventually(Duration::from_secs(30), "lines running", || async {
        (batches.stack.mock.request_count() >= 4).then_some(())
    })
    .await;
    first.kill().await;

    let second = batches.edge(1).await;
    let done: Value = eventually(
        Duration::from_secs(90),
        "the batch finished by the other edge",
        || async {
            let batch: Value = http
                .get(format!("{}/v1/batches/{id}", second.url()))
                .bearer_auth(&batches.acme_key)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (batch["status"] == "completed").then_some(batch)
        },
    )
    .await;
    assert_eq!(
        done["request_counts"],
        json!({"total": 24, "completed": 24, "failed": 0}),
        "{done}"
    );
    let output = http
        .get(format!(
            "{}/v1/files/{}/content",
            second.url(),
            done["output_file_id"].as_str().unwrap()
        ))
        .bearer_auth(&batches.acme_key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let ids: Vec<String> = output
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["custom_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(ids, (0..24).map(|i| format!("e{i}")).collect::<Vec<_>>());
    let mut prompts: Vec<String> = batches
        .stack
        .mock
        .requests()
        .iter()
        .map(|r| {
            r.body["messages"][0]["content"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    prompts.sort();
    prompts.dedup();
    assert_eq!(
        prompts.len(),
        batches.stack.mock.request_count(),
        "no line called twice"
    );
    second.stop().await;
}
