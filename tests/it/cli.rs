//! The `submitter` CLI against a real worker: what operators and scripts rely on.

use std::process::Output;
use std::time::Duration;

use llmq_schemas::{Outcome, OutcomeStatus};
use llmq_tests::mock::{Fault, MockOptions, ModelBehavior, mock_text};
use llmq_tests::nats::NatsOptions;
use llmq_tests::stack::{Stack, eventually};
use llmq_tests::worker::workspace_binary;

async fn submitter(stack: &Stack, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(workspace_binary("submitter"));
    command.env("LLMQ__NATS__URL", stack.nats.url()).args(args);
    tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("the CLI finished")
        .expect("the CLI ran")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn chat_streams_prints_json_reads_results_and_lists_models() {
    let mut options = MockOptions {
        tokens_per_reply: 8,
        ..MockOptions::default()
    };
    options.per_model.insert(
        "broken".into(),
        ModelBehavior {
            always: Some(Fault::BadRequest),
            ..ModelBehavior::default()
        },
    );
    let stack = Stack::start_with(options, NatsOptions::default()).await;
    let setup = stack.setup(&format!(
        "{}\n[models.chat]\ndeployments = [{{ provider = \"mock\", model = \"mock-model\" }}]\n[models.bad]\ndeployments = [{{ provider = \"mock\", model = \"broken\" }}]\n",
        llmq_tests::worker::openai_mock_provider(8)
    ));
    let worker = stack.worker(&setup).await;

    // --stream prints the tokens as they arrive: the answer, then a newline.
    let out = submitter(
        &stack,
        &[
            "chat",
            "--model",
            "chat",
            "--stream",
            "--system",
            "Be brief.",
            "hello there",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim_end(), mock_text("hello there", 8));
    let request = stack.mock.requests().last().unwrap().body.clone();
    assert_eq!(request["messages"][0]["role"], "system");
    assert_eq!(request["messages"][0]["content"], "Be brief.");

    // --json prints the outcome; --max-tokens and --temperature reach the provider.
    let out = submitter(
        &stack,
        &[
            "chat",
            "--model",
            "chat",
            "--json",
            "--max-tokens",
            "5",
            "--temperature",
            "0.2",
            "--custom-id",
            "cli-1",
            "count",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let outcome: Outcome = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    assert_eq!(outcome.custom_id.as_deref(), Some("cli-1"));
    assert_eq!(
        outcome.text(),
        Some(mock_text("count", 5).as_str()),
        "capped at 5 tokens"
    );
    let request = stack.mock.requests().last().unwrap().body.clone();
    assert_eq!(request["max_tokens"], 5);
    assert_eq!(request["temperature"], 0.2);

    // A conversation from a file.
    let conversation = stack.dir.path().join("convo.json");
    std::fs::write(
        &conversation,
        r#"[{"role":"user","content":"first"},{"role":"assistant","content":"ok"},{"role":"user","content":"second"}]"#,
    )
    .unwrap();
    let out = submitter(
        &stack,
        &[
            "chat",
            "--model",
            "chat",
            "--messages-file",
            conversation.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim_end(), mock_text("second", 8));

    // --no-wait prints the job id; result reads the stored outcome.
    let out = submitter(&stack, &["chat", "--model", "chat", "--no-wait", "later"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let job_id = stdout(&out).trim().to_owned();
    let out = submitter(&stack, &["result", &job_id, "--wait", "30s", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let outcome: Outcome = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(outcome.job_id.to_string(), job_id);

    // A job that fails exits 3; an unknown model is refused with 5; bad usage is 2.
    let out = submitter(&stack, &["chat", "--model", "bad", "will fail"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("invalid_request"), "{}", stderr(&out));
    let out = submitter(&stack, &["chat", "--model", "nope", "hi"]).await;
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("chat"),
        "names what is served: {}",
        stderr(&out)
    );
    let out = submitter(
        &stack,
        &["chat", "--temperature", "warm", "--model", "chat", "hi"],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));

    // models lists the live catalog.
    let out = submitter(&stack, &["models", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let models = stdout(&out);
    assert!(
        models.contains("\"chat\"") && models.contains("\"bad\""),
        "{models}"
    );

    // usage sums what ran.
    let out = submitter(&stack, &["usage", "--since", "10m", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let rows = report["rows"].as_array().unwrap();
    let chat = rows
        .iter()
        .find(|r| r["model"] == "chat")
        .expect("a chat row");
    assert_eq!(chat["jobs"], 4);
    assert_eq!(chat["succeeded"], 4);
    worker.stop().await;
}

#[tokio::test]
async fn cancel_and_dead_letter_operations() {
    let stack = Stack::with_slow_mock(Duration::from_secs(20)).await;
    let worker = stack.worker(&stack.simple_setup()).await;

    // cancel a running job.
    let out = submitter(&stack, &["chat", "--model", "chat", "--no-wait", "slow"]).await;
    let job_id = stdout(&out).trim().to_owned();
    assert!(
        stack
            .mock
            .wait_for_requests(1, Duration::from_secs(10))
            .await
    );
    let out = submitter(&stack, &["cancel", &job_id, "--reason", "not needed"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = submitter(&stack, &["result", &job_id, "--wait", "20s", "--json"]).await;
    assert_eq!(
        out.status.code(),
        Some(3),
        "a cancelled job did not succeed: {}",
        stderr(&out)
    );
    let outcome: Outcome = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(outcome.status, OutcomeStatus::Cancelled);
    assert!(
        stack
            .mock
            .wait_for_disconnects(1, Duration::from_secs(5))
            .await
    );

    // A payload that is not a job lands in the DLQ; dlq list shows it, replay sends it back.
    let js = async_nats::jetstream::new(stack.nats.client().await);
    js.publish("llmq.jobs.chat.interactive.default", "not a job".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let listed = eventually(
        Duration::from_secs(20),
        "the dead letter in dlq list",
        || {
            let stack = &stack;
            async move {
                let out = submitter(stack, &["dlq", "list", "--json"]).await;
                let letters: Vec<serde_json::Value> = serde_json::from_str(&stdout(&out)).ok()?;
                (!letters.is_empty()).then_some(letters)
            }
        },
    )
    .await;
    assert_eq!(listed[0]["reason"], "undecodable");
    assert_eq!(listed[0]["payload"], "not a job");
    let out = submitter(&stack, &["dlq", "list"]).await;
    assert!(stdout(&out).contains("undecodable"), "{}", stdout(&out));
    let out = submitter(&stack, &["dlq", "replay", "--all"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Replayed: it is undecodable again, so it comes back to the DLQ as a new letter.
    let relisted = eventually(Duration::from_secs(20), "the replayed letter back", || {
        let stack = &stack;
        let first = listed[0]["seq"].clone();
        async move {
            let out = submitter(stack, &["dlq", "list", "--json"]).await;
            let letters: Vec<serde_json::Value> = serde_json::from_str(&stdout(&out)).ok()?;
            (letters.len() == 1 && letters[0]["seq"] != first).then_some(letters)
        }
    })
    .await;
    assert_eq!(relisted[0]["payload"], "not a job");
    let out = submitter(&stack, &["dlq", "replay", "999999"]).await;
    assert_eq!(
        out.status.code(),
        Some(6),
        "no such dead letter: {}",
        stderr(&out)
    );
    worker.stop().await;
}
