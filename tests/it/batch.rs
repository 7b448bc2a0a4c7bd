//! `submitter batch` against a real worker: a file in, one results line per input line,
//! every bad line reported before anything runs, reruns that publish only what is
//! missing and never pay for a line twice, and a cancel that ends queued lines without
//! provider calls.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use llmq_schemas::{BatchRecord, BatchStatus};
use llmq_submitter::{BatchOptions, Client, ClientOptions};
use llmq_tests::mock::{Fault, MockOptions, ModelBehavior, mock_text};
use llmq_tests::nats::NatsOptions;
use llmq_tests::stack::{Stack, eventually};
use llmq_tests::worker::{
    TestWorker, WorkerProcess, WorkerSetup, openai_mock_provider, workspace_binary,
};
use serde_json::{Value, json};

use crate::auth::Secured;

const TOKENS: usize = 4;

/// A stack whose mock answers after `delay`; models `chat` (works) and `bad` (400s).
async fn stack(delay: Duration) -> (Stack, TestWorker) {
    stack_with(delay, |_| {}).await
}

/// [`stack`] with the worker's config changed by `configure` too.
async fn stack_with(
    delay: Duration,
    configure: impl FnOnce(&mut WorkerSetup),
) -> (Stack, TestWorker) {
    let mut mock = MockOptions {
        tokens_per_reply: TOKENS,
        first_token_delay: delay,
        ..MockOptions::default()
    };
    mock.per_model.insert(
        "broken".into(),
        ModelBehavior {
            always: Some(Fault::BadRequest),
            ..ModelBehavior::default()
        },
    );
    let stack = Stack::start_with(mock, NatsOptions::default()).await;
    let mut setup = stack.setup(&format!(
        "{}\n[models.chat]\ndeployments = [{{ provider = \"mock\", model = \"mock-model\" }}]\n[models.bad]\ndeployments = [{{ provider = \"mock\", model = \"broken\" }}]\n",
        openai_mock_provider(64)
    ));
    // Few batch slots: a cancel test's lines must still be queued when its cancel comes,
    // however slowly this machine starts the CLI.
    setup
        .set("jetstream", "duplicate_window", "\"1s\"")
        .set("worker", "max_inflight", "16");
    configure(&mut setup);
    let worker = stack.worker(&setup).await;
    (stack, worker)
}

fn line(custom_id: &str, model: &str, prompt: &str) -> String {
    json!({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": prompt}]}})
    .to_string()
}

fn write_input(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

async fn submitter(stack: &Stack, dir: &Path, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(workspace_binary("submitter"));
    command
        .current_dir(dir)
        .env("LLMQ__NATS__URL", stack.nats.url())
        .args(args);
    tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("the CLI finished")
        .expect("the CLI ran")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

async fn client(stack: &Stack) -> Client {
    stack.client_with(ClientOptions::default()).await
}

#[tokio::test]
async fn a_file_runs_to_one_results_line_per_input_line_in_input_order() {
    let (stack, _worker) = stack(Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    // A BOM, CRLF endings, a blank line, no final newline; line 30 fails at the provider.
    let mut lines: Vec<String> = (0..60)
        .map(|i| {
            let model = if i == 30 { "bad" } else { "chat" };
            line(&format!("req-{i}"), model, &format!("prompt {i}"))
        })
        .collect();
    lines.insert(10, String::new());
    let input = format!("\u{feff}{}", lines.join("\r\n"));
    write_input(dir.path(), "in.jsonl", &input);

    let out = submitter(
        &stack,
        dir.path(),
        &[
            "batch",
            "submit",
            "in.jsonl",
            "--wait",
            "-o",
            "out.jsonl",
            "--errors",
            "err.jsonl",
            "--json",
        ],
    )
    .await;
    // One line failed: exit 3, as for a job that did not succeed.
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let record: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(record["status"], "completed");
    assert!(
        record.get("msg_key").is_none(),
        "the key is never shown: {record}"
    );
    let counts = &record["counts"];
    assert_eq!(
        (
            counts["total"].as_u64(),
            counts["succeeded"].as_u64(),
            counts["failed"].as_u64()
        ),
        (Some(60), Some(59), Some(1))
    );

    let output = read_lines(&dir.path().join("out.jsonl"));
    let errors = read_lines(&dir.path().join("err.jsonl"));
    assert_eq!(
        (output.len(), errors.len()),
        (59, 1),
        "counts equal the files"
    );
    let ids: Vec<&str> = output
        .iter()
        .map(|l| l["custom_id"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (0..60)
        .filter(|i| *i != 30)
        .map(|i| format!("req-{i}"))
        .collect();
    assert_eq!(ids, expected, "input order, every custom_id once");
    for line in &output {
        let i: usize = line["custom_id"].as_str().unwrap()[4..].parse().unwrap();
        assert_eq!(line["response"]["status_code"], 200);
        assert!(line["id"].as_str().unwrap().starts_with("batch_req_"));
        assert_eq!(line["error"], Value::Null);
        let content = &line["response"]["body"]["choices"][0]["message"]["content"];
        assert_eq!(
            content.as_str().unwrap(),
            mock_text(&format!("prompt {i}"), TOKENS)
        );
    }
    assert_eq!(errors[0]["custom_id"], "req-30");
    assert_eq!(errors[0]["response"]["status_code"], 400, "{}", errors[0]);
    assert!(errors[0]["response"]["body"]["error"]["message"].is_string());
    assert_eq!(stack.mock.request_count(), 60, "one call per line");

    // Status, list and results from another process agree with the files.
    let id = record["id"].as_str().unwrap();
    let status = submitter(&stack, dir.path(), &["batch", "status", id, "--json"]).await;
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["counts"], record["counts"]);
    let list = submitter(&stack, dir.path(), &["batch", "list"]).await;
    assert!(text(&list.stdout).contains(id), "{}", text(&list.stdout));
    let again = submitter(
        &stack,
        dir.path(),
        &["batch", "results", id, "--completion-order"],
    )
    .await;
    assert_eq!(again.status.code(), Some(3), "{}", text(&again.stderr));
    let by_completion = read_lines(&dir.path().join(format!("{id}_output.jsonl")));
    let set: HashSet<&str> = by_completion
        .iter()
        .map(|l| l["custom_id"].as_str().unwrap())
        .collect();
    assert_eq!(set.len(), 59);

    // A line's request id is its job id: `submitter result` finds it under its batch.
    let request_id = output[5]["response"]["request_id"].as_str().unwrap();
    let result = submitter(&stack, dir.path(), &["result", request_id, "--json"]).await;
    assert_eq!(result.status.code(), Some(0), "{}", text(&result.stderr));
    let outcome: Value = serde_json::from_slice(&result.stdout).unwrap();
    assert_eq!(
        (outcome["custom_id"].as_str(), outcome["job_id"].as_str()),
        (Some("req-5"), Some(request_id))
    );
}

#[tokio::test]
async fn a_batch_larger_than_the_tenants_queue_waits_for_room_and_completes() {
    let (stack, _worker) = stack_with(Duration::from_millis(20), |setup| {
        setup.set("jetstream", "jobs_max_per_subject", "10");
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..80)
        .map(|i| line(&format!("req-{i}"), "chat", &format!("prompt {i}")))
        .collect();
    write_input(dir.path(), "in.jsonl", &lines.join("\n"));
    let out = submitter(
        &stack,
        dir.path(),
        &[
            "batch",
            "submit",
            "in.jsonl",
            "--wait",
            "-o",
            "out.jsonl",
            "--json",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let record: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(record["counts"]["succeeded"], 80, "{record}");
    assert_eq!(read_lines(&dir.path().join("out.jsonl")).len(), 80);
    assert_eq!(stack.mock.request_count(), 80, "one call per line");
}

#[tokio::test]
async fn every_bad_line_is_reported_and_nothing_runs_unless_told_to_skip_them() {
    let (stack, _worker) = stack(Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let input = [
        line("a", "chat", "one"),
        "{not json".to_owned(),
        json!({"method": "POST", "url": "/v1/chat/completions", "body": {"model": "chat", "messages": [{"role": "user", "content": "x"}]}}).to_string(),
        line("a", "chat", "duplicate"),
        json!({"custom_id": "e", "method": "POST", "url": "/v1/embeddings", "body": {"model": "chat", "input": "x"}}).to_string(),
        line("f", "no-such-model", "x"),
        line("g", "chat", "seven"),
    ]
    .join("\n");
    write_input(dir.path(), "in.jsonl", &input);

    let out = submitter(&stack, dir.path(), &["batch", "submit", "in.jsonl"]).await;
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    for expected in [
        "line 2:",
        "line 3:",
        "custom_id",
        "line 4:",
        "duplicate",
        "line 5:",
        "/v1/embeddings",
        "line 6:",
        "no-such-model",
        "nothing was published",
    ] {
        assert!(
            stderr.contains(expected),
            "{expected:?} missing from:\n{stderr}"
        );
    }
    assert!(
        !stderr.contains("line 1:") && !stderr.contains("line 7:"),
        "{stderr}"
    );
    assert!(
        client(&stack).await.batch_list().await.unwrap().is_empty(),
        "no batch was made"
    );
    assert_eq!(stack.mock.request_count(), 0);

    let out = submitter(
        &stack,
        dir.path(),
        &[
            "batch",
            "submit",
            "in.jsonl",
            "--skip-invalid",
            "--wait",
            "-o",
            "out.jsonl",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let ids: Vec<String> = read_lines(&dir.path().join("out.jsonl"))
        .iter()
        .map(|l| l["custom_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["a", "g"]);
    assert_eq!(stack.mock.request_count(), 2);

    // An empty file (a BOM and blank lines) is refused with its own message.
    write_input(dir.path(), "empty.jsonl", "\u{feff}\n\r\n");
    let out = submitter(&stack, dir.path(), &["batch", "submit", "empty.jsonl"]).await;
    assert_eq!(out.status.code(), Some(5));
    assert!(
        text(&out.stderr).contains("no requests"),
        "{}",
        text(&out.stderr)
    );
}

/// The batch is stopped halfway through its submit (as a killed process stops: the
/// future dropped mid-publish), then run again, after the duplicate window, with the
/// record's checkpoint lost too: every line runs exactly once.
#[tokio::test]
async fn a_rerun_publishes_only_what_is_missing_and_no_line_is_paid_twice() {
    let (stack, _worker) = stack(Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..3000)
        .map(|i| line(&format!("r{i}"), "chat", &format!("p{i}")))
        .collect();
    let path = write_input(dir.path(), "in.jsonl", &(lines.join("\n") + "\n"));
    let client = client(&stack).await;
    let plan = client
        .batch_plan(&path, BatchOptions::default())
        .await
        .unwrap();

    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut tx = Some(tx);
    let submit = client.batch_submit(&plan, |p| {
        if p.published >= 1500 {
            tx.take().map(|tx| tx.send(()));
        }
    });
    tokio::select! {
        _ = submit => panic!("the submit finished before it was stopped"),
        _ = rx => {}
    }
    let record = client.batch_record(&plan.id).await.unwrap().unwrap();
    assert!(
        record.published >= 1024 && record.published < 3000,
        "{}",
        record.published
    );
    assert!(!record.submit_done);

    // Past the duplicate window (1 s), every published line finished, the checkpoint
    // rolled back to 0: the rerun publishes everything again.
    eventually(
        Duration::from_secs(60),
        "the first run's lines ran",
        || async { (stack.mock.request_count() as u64 >= record.published).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    rewind_checkpoint(&stack, &record).await;

    let out = submitter(
        &stack,
        dir.path(),
        &["batch", "submit", "in.jsonl", "--wait", "-o", "out.jsonl"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let output = read_lines(&dir.path().join("out.jsonl"));
    assert_eq!(output.len(), 3000);
    let mut calls: HashMap<String, usize> = HashMap::new();
    for request in stack.mock.requests() {
        let prompt = request.body["messages"][0]["content"]
            .as_str()
            .unwrap()
            .to_owned();
        *calls.entry(prompt).or_default() += 1;
    }
    assert_eq!(calls.len(), 3000, "every line was called");
    let twice: Vec<_> = calls.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "lines called twice: {twice:?}");
    // Once finished, the same command publishes nothing and writes the same results.
    let out = submitter(
        &stack,
        dir.path(),
        &["batch", "submit", "in.jsonl", "--wait", "-o", "again.jsonl"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(read_lines(&dir.path().join("again.jsonl")), output);
    assert_eq!(stack.mock.request_count(), 3000);
}

/// A file of `count` lines (`custom_id` and prompt `<prefix><i>`) in `dir`, planned.
async fn planned(
    stack: &Stack,
    dir: &Path,
    count: usize,
    prefix: &str,
) -> (Client, llmq_submitter::Plan) {
    let lines: Vec<String> = (0..count)
        .map(|i| line(&format!("{prefix}{i}"), "chat", &format!("{prefix}{i}")))
        .collect();
    let path = write_input(dir, "in.jsonl", &lines.join("\n"));
    let client = client(stack).await;
    let plan = client
        .batch_plan(&path, BatchOptions::default())
        .await
        .unwrap();
    (client, plan)
}

/// What a lost checkpoint looks like: the record as it was, `published` back to 0.
async fn rewind_checkpoint(stack: &Stack, record: &BatchRecord) {
    let js = async_nats::jetstream::new(async_nats::connect(stack.nats.url()).await.unwrap());
    let bucket = js.get_key_value("LLMQ_BATCHES").await.unwrap();
    let mut rewound = record.clone();
    rewound.published = 0;
    let key = format!("{}.{}", record.tenant, record.id);
    bucket
        .put(key, serde_json::to_vec(&rewound).unwrap().into())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_cancel_ends_the_queued_lines_without_calls_and_the_files_hold_every_line() {
    let (stack, _worker) = stack(Duration::from_millis(300)).await;
    let dir = tempfile::tempdir().unwrap();
    let (client, plan) = planned(&stack, dir.path(), 400, "c").await;
    client.batch_submit(&plan, |_| {}).await.unwrap();

    let out = submitter(
        &stack,
        dir.path(),
        &["batch", "cancel", plan.id.as_str(), "--json"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let record = eventually(
        Duration::from_secs(60),
        "the batch is cancelled",
        || async {
            let record = client.batch_status(&plan.id).await.unwrap();
            (record.status == BatchStatus::Cancelled).then_some(record)
        },
    )
    .await;
    let calls = stack.mock.request_count() as u64;
    let c = &record.counts;
    assert!(c.cancelled > 200, "most lines never ran: {c:?}");
    assert_eq!(
        c.succeeded + c.failed + c.cancelled + c.expired,
        400,
        "{c:?}"
    );
    assert_eq!(
        c.succeeded, calls,
        "a call for each line that ran, none for cancelled ones"
    );

    let out = submitter(
        &stack,
        dir.path(),
        &[
            "batch",
            "results",
            plan.id.as_str(),
            "-o",
            "o.jsonl",
            "--errors",
            "e.jsonl",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let (output, errors) = (
        read_lines(&dir.path().join("o.jsonl")),
        read_lines(&dir.path().join("e.jsonl")),
    );
    assert_eq!(output.len() as u64, c.succeeded);
    assert_eq!(errors.len() as u64, c.cancelled);
    assert!(
        errors
            .iter()
            .all(|e| e["error"]["code"] == "batch_cancelled"),
        "{:?}",
        errors[0]
    );
    let again = submitter(&stack, dir.path(), &["batch", "cancel", plan.id.as_str()]).await;
    assert_eq!(
        again.status.code(),
        Some(5),
        "an ended batch cannot be cancelled"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        stack.mock.request_count() as u64,
        calls,
        "no call after the end"
    );
}

/// Beta, on its generated credentials, against acme's batch: it cannot read, list,
/// rewrite or cancel it, nor read its outcomes; a cancel key of its own with acme's
/// batch id cancels only beta's lines.
#[tokio::test]
async fn another_tenant_can_neither_see_nor_touch_a_batch() {
    let secured = Secured::start().await;
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..20)
        .map(|i| line(&format!("s{i}"), "chat", &format!("acme secret {i}")))
        .collect();
    let path = write_input(dir.path(), "in.jsonl", &lines.join("\n"));
    let out_path = dir.path().join("out.jsonl");
    let err_path = dir.path().join("e.jsonl");
    let args = [
        "batch",
        "submit",
        path.to_str().unwrap(),
        "--wait",
        "--json",
        "-o",
        out_path.to_str().unwrap(),
        "--errors",
        err_path.to_str().unwrap(),
    ];
    let out = secured.cli("tenant-acme", &args).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let record: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = record["id"].as_str().unwrap().to_owned();
    let violations = || secured.stack.nats.permission_violations();
    assert_eq!(
        violations(),
        Vec::<String>::new(),
        "acme's CLI needed nothing it may not do"
    );

    // Through the CLI, acme's batch does not exist for beta.
    let status = secured.cli("tenant-beta", &["batch", "status", &id]).await;
    assert_eq!(status.status.code(), Some(6), "{}", text(&status.stderr));
    let list = secured
        .cli("tenant-beta", &["batch", "list", "--json"])
        .await;
    assert_eq!(text(&list.stdout).trim(), "[]", "{}", text(&list.stderr));

    let mut beta = secured.raw_tenant("beta").await;
    let api = "$JS.API";
    for (what, subject) in [
        (
            "acme's record by direct get",
            format!("{api}.DIRECT.GET.KV_LLMQ_BATCHES.$KV.LLMQ_BATCHES.acme.{id}"),
        ),
        (
            "a consumer on acme's records",
            format!("{api}.CONSUMER.CREATE.KV_LLMQ_BATCHES.x.$KV.LLMQ_BATCHES.acme.>"),
        ),
        (
            "a consumer on every record",
            format!("{api}.CONSUMER.CREATE.KV_LLMQ_BATCHES.x.$KV.LLMQ_BATCHES.>"),
        ),
        (
            "the bucket's info (its subjects)",
            format!("{api}.STREAM.INFO.KV_LLMQ_BATCHES"),
        ),
        (
            "acme's batch outcomes",
            format!("{api}.CONSUMER.CREATE.LLMQ_RESULTS.x.llmq.results.acme.{id}.*"),
        ),
    ] {
        beta.request_denied(what, &subject).await;
    }
    beta.publish_denied(
        "rewriting acme's record",
        &format!("$KV.LLMQ_BATCHES.acme.{id}"),
    )
    .await;
    beta.publish_denied(
        "cancelling acme's batch",
        &format!("$KV.LLMQ_CANCEL.acme.{id}"),
    )
    .await;

    // Its own record may not roll the bucket up.
    let js = async_nats::jetstream::new(beta.nats.clone());
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Rollup", "all");
    let rollup = js
        .publish_with_headers(format!("$KV.LLMQ_BATCHES.beta.{id}"), headers, "{}".into())
        .await
        .unwrap()
        .await;
    assert!(rollup.is_err(), "a rollup on the batches bucket is refused");

    // A cancel under beta's own key with acme's batch id: acme's rerun still runs.
    js.publish(format!("$KV.LLMQ_CANCEL.beta.{id}"), "{}".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let denied_so_far = violations().len();
    let fresh = [
        "batch",
        "submit",
        path.to_str().unwrap(),
        "--wait",
        "--fresh",
        "--json",
        "-o",
        out_path.to_str().unwrap(),
        "--errors",
        err_path.to_str().unwrap(),
    ];
    let out = secured.cli("tenant-acme", &fresh).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(read_lines(&out_path).len(), 20);
    assert_eq!(
        violations().len(),
        denied_so_far,
        "acme's rerun needed nothing denied"
    );
}

/// The CLI killed (SIGKILL) while it submits and again while it collects, a worker
/// killed mid-batch, the broker restarted mid-batch: every line ends with exactly one
/// results line, and the record's counts equal the files'.
#[tokio::test]
async fn killed_cli_killed_worker_and_restarted_broker_lose_no_line() {
    let mut stack = Stack::start_with(
        MockOptions {
            tokens_per_reply: TOKENS,
            first_token_delay: Duration::from_millis(20),
            ..MockOptions::default()
        },
        NatsOptions::default(),
    )
    .await;
    let mut setup = stack.simple_setup();
    setup.set("worker", "max_inflight", "32");
    let mut worker = WorkerProcess::spawn(&setup.clone().with_id("batch-a"), "batch-a").await;
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..3000)
        .map(|i| line(&format!("k{i}"), "chat", &format!("k{i}")))
        .collect();
    let path = write_input(dir.path(), "in.jsonl", &lines.join("\n"));
    let client = client(&stack).await;
    let id = client
        .batch_plan(&path, BatchOptions::default())
        .await
        .unwrap()
        .id;

    // Killed while submitting, once its first checkpoint is in the record.
    let mut cli = spawn_cli(
        &stack,
        dir.path(),
        &["batch", "submit", "in.jsonl", "--wait", "--json"],
    );
    eventually(Duration::from_secs(60), "a checkpoint", || async {
        let record = client.batch_record(&id).await.unwrap();
        record.is_some_and(|r| r.published >= 1024).then_some(())
    })
    .await;
    cli.kill().await.unwrap();
    assert!(
        !client.batch_record(&id).await.unwrap().unwrap().submit_done,
        "killed before the end of the submit"
    );

    // Run again; killed while it collects (every line published, some ended).
    let mut cli = spawn_cli(
        &stack,
        dir.path(),
        &["batch", "submit", "in.jsonl", "--wait", "--json"],
    );
    eventually(Duration::from_secs(60), "the submit's end", || async {
        let record = client.batch_record(&id).await.unwrap().unwrap();
        record.submit_done.then_some(())
    })
    .await;
    cli.kill().await.unwrap();

    // A worker dies with lines in flight; the broker restarts.
    worker.kill().await;
    worker = WorkerProcess::spawn(&setup.clone().with_id("batch-b"), "batch-b").await;
    stack.nats.restart().await;

    let out = submitter(
        &stack,
        dir.path(),
        &[
            "batch",
            "results",
            id.as_str(),
            "--wait",
            "--json",
            "-o",
            "o.jsonl",
            "--errors",
            "e.jsonl",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let output = read_lines(&dir.path().join("o.jsonl"));
    assert!(
        !dir.path().join("e.jsonl").exists(),
        "no errors file when every line succeeded"
    );
    assert_eq!(output.len(), 3000);
    let ids: Vec<&str> = output
        .iter()
        .map(|l| l["custom_id"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (0..3000).map(|i| format!("k{i}")).collect();
    assert_eq!(ids, expected, "each line once, in input order");
    let record = client.batch_status(&id).await.unwrap();
    assert_eq!(record.status, BatchStatus::Completed);
    assert_eq!((record.counts.total, record.counts.succeeded), (3000, 3000));
    drop(worker);
}

fn spawn_cli(stack: &Stack, dir: &Path, args: &[&str]) -> tokio::process::Child {
    tokio::process::Command::new(workspace_binary("submitter"))
        .current_dir(dir)
        .env("LLMQ__NATS__URL", stack.nats.url())
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// README's "Batch pipelines" example, run as written: a stack, a 3-line file, a results file.
#[tokio::test]
async fn the_readme_batch_block_works_as_printed() {
    let output = llmq_tests::readme::run("batch", &["NATS_PORT", "MOCK_PORT"]).await;
    let stdout = text(&output.stdout);
    let all = format!("{stdout}{}", text(&output.stderr));
    assert!(output.status.success(), "{all}");
    assert!(
        all.contains("completed: 3 succeeded, 0 failed")
            && all.contains("wrote 3 line(s) to results.jsonl, no errors"),
        "{all}"
    );
    assert!(
        stdout.contains("\"custom_id\": \"q1\"") && stdout.contains("\"status_code\": 200"),
        "{all}"
    );
    assert!(stdout.contains("\"object\": \"chat.completion\""), "{all}");
    // The id README prints: the same file and options make the same batch.
    assert!(all.contains("batch_6ad5c204fc68129aecc54143"), "{all}");
}

/// A cancel while the lines are still being published: the submit stops at its next
/// checkpoint with the lines in flight accounted for, so every count and both files hold
/// each line exactly once (in either order).
#[tokio::test]
async fn a_cancel_during_the_submit_counts_every_line_once() {
    let (stack, _worker) = stack(Duration::from_millis(50)).await;
    let dir = tempfile::tempdir().unwrap();
    let (client, plan) = planned(&stack, dir.path(), 8000, "m").await;
    let canceller = self::client(&stack).await;
    let id = plan.id.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut tx = Some(tx);
    let submit = client.batch_submit(&plan, |p| {
        if p.published >= 1100 {
            tx.take().map(|tx| tx.send(()));
        }
    });
    let cancel = async {
        rx.await.unwrap();
        canceller.batch_cancel(&id).await.unwrap()
    };
    let (submitted, _) = tokio::join!(submit, cancel);
    let submitted = submitted.unwrap();
    assert!(
        submitted.submit_done && submitted.published < 8000,
        "{}",
        submitted.published
    );
    let record = eventually(
        Duration::from_secs(60),
        "the batch is cancelled",
        || async {
            let record = client.batch_status(&id).await.unwrap();
            (record.status == BatchStatus::Cancelled).then_some(record)
        },
    )
    .await;
    let c = &record.counts;
    assert_eq!(
        c.succeeded + c.failed + c.expired + c.cancelled,
        8000,
        "{c:?}"
    );
    for order in ["input", "completion"] {
        let mut args = vec![
            "batch",
            "results",
            id.as_str(),
            "-o",
            "o.jsonl",
            "--errors",
            "e.jsonl",
            "--input",
            "in.jsonl",
        ];
        if order == "completion" {
            args.push("--completion-order");
        }
        let out = submitter(&stack, dir.path(), &args).await;
        assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
        let mut ids: Vec<String> = [
            read_lines(&dir.path().join("o.jsonl")),
            read_lines(&dir.path().join("e.jsonl")),
        ]
        .concat()
        .iter()
        .map(|l| l["custom_id"].as_str().unwrap().to_owned())
        .collect();
        assert_eq!(ids.len(), 8000, "{order} order");
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 8000, "{order} order: each custom_id once");
    }
}

#[tokio::test]
async fn counting_on_between_polls_reads_only_new_outcomes_and_ends_with_the_full_count() {
    // 8 batch slots against a 40 ms mock: 120 lines take several polls to end.
    let (stack, _worker) = stack(Duration::from_millis(40)).await;
    let dir = tempfile::tempdir().unwrap();
    let (client, plan) = planned(&stack, dir.path(), 120, "poll-").await;
    let record = client.batch_submit(&plan, |_| {}).await.unwrap();
    let mut count = llmq_submitter::BatchCount::default();
    let mut seen_partway = Vec::new();
    let last = loop {
        let polled = client
            .batch_status_counted(&record.id, &mut count)
            .await
            .unwrap();
        if polled.lines_ended() {
            break polled;
        }
        seen_partway.push(polled.counts.succeeded);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        seen_partway.iter().any(|done| *done > 0 && *done < 120),
        "polled while the batch ran: {seen_partway:?}"
    );
    assert!(
        seen_partway.windows(2).all(|pair| pair[0] <= pair[1]),
        "counted on, never back: {seen_partway:?}"
    );
    let whole = client.batch_status(&record.id).await.unwrap();
    assert_eq!(
        last.counts, whole.counts,
        "counting on ends where counting whole does"
    );
    assert_eq!(whole.counts.succeeded, 120);
}
