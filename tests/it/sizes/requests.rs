//! Requests over one message, on every producer path: the library, the CLI, the HTTP
//! edge (and the official openai SDK through it), and a raw NATS producer following the
//! README.

use std::time::Duration;

use bytes::Bytes;
use llmq_schemas::{ChatRequest, Job, OutcomeStatus, ReplyEvent};
use llmq_tests::mock::mock_text;
use llmq_tests::stack::run_job;
use llmq_tests::worker::workspace_binary;
use serde_json::{Value, json};
use sha2::Digest;

use super::{MIB, blobs_deleted, edge, messages_in, request_messages, sized, stack, upstream_got};

/// 1 MiB + 1 and 3.9 MiB: over one message, under the edge's 4 MiB.
const SIZES: [usize; 2] = [MIB + 1, MIB * 39 / 10];

#[tokio::test]
async fn requests_over_one_message_reach_the_provider_whole_from_the_library() {
    let (stack, worker) = stack().await;
    let client = stack.client().await;
    for bytes in SIZES {
        let prompt = format!("library {bytes} [tokens=5]");
        let messages = request_messages(&prompt, bytes);
        let request: ChatRequest = serde_json::from_value(json!({ "messages": messages })).unwrap();
        assert_eq!(serde_json::to_vec(&request).unwrap().len(), bytes);
        let outcome = run_job(&client, Job::new("chat", request)).await;
        assert_eq!(outcome.status, OutcomeStatus::Succeeded, "{outcome:?}");
        assert_eq!(outcome.text(), Some(mock_text(&prompt, 5).as_str()));
        assert!(
            upstream_got(&stack, &messages),
            "{bytes}: the provider got the request whole"
        );
    }
    assert_eq!(stack.mock.request_count(), 2, "one provider call each");
    // A finished job's request blob is deleted.
    blobs_deleted(&stack).await;
    // A small job is published as before: no blob.
    run_job(&client, Job::new("chat", ChatRequest::user("small"))).await;
    assert_eq!(messages_in(&stack, "LLMQ_BLOBS").await, 0);
    worker.stop().await;
}

#[tokio::test]
async fn the_cli_sends_a_request_over_one_message() {
    let (stack, worker) = stack().await;
    let dir = tempfile::tempdir().unwrap();
    for bytes in SIZES {
        let prompt = format!("cli {bytes} [tokens=4]");
        // The file holds the messages; the request is 14 bytes more (`{"messages":}`).
        let messages = request_messages(&prompt, bytes);
        let file = dir.path().join(format!("messages-{bytes}.json"));
        std::fs::write(&file, serde_json::to_vec(&messages).unwrap()).unwrap();
        let out = tokio::process::Command::new(workspace_binary("submitter"))
            .args(["--url", &stack.nats.url(), "chat", "--model", "chat"])
            .arg("--messages-file")
            .arg(&file)
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{bytes}: {stderr}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim_end(),
            mock_text(&prompt, 4)
        );
        assert!(upstream_got(&stack, &messages), "{bytes}");
    }
    blobs_deleted(&stack).await;
    worker.stop().await;
}

#[tokio::test]
async fn the_edge_takes_bodies_up_to_its_limit_and_refuses_larger_ones_with_the_number() {
    let (stack, worker) = stack().await;
    let http = reqwest::Client::new();
    let (_edge, url, key) = edge(&stack).await;
    let chat = format!("{url}/v1/chat/completions");
    let body = |messages: Value| json!({"model": "chat", "messages": messages});
    for bytes in SIZES {
        let prompt = format!("edge {bytes} [tokens=3]");
        let messages = sized(&prompt, bytes, body);
        let sent = serde_json::to_vec(&body(messages.clone())).unwrap();
        assert_eq!(sent.len(), bytes);
        let response = http.post(&chat).bearer_auth(&key).body(sent);
        let response = response
            .header("content-type", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{bytes}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(
            answer["choices"][0]["message"]["content"],
            mock_text(&prompt, 3)
        );
        assert!(upstream_got(&stack, &messages), "{bytes}");
    }
    // One byte over --max-body-bytes (4 MiB): 413, saying the limit.
    let over = body(sized("too big", 4 * MIB + 1, body));
    let response = http
        .post(&chat)
        .bearer_auth(&key)
        .json(&over)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let error: Value = response.json().await.unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("4194304"), "{message}");
    assert_eq!(stack.mock.request_count(), 2);
    blobs_deleted(&stack).await;
    worker.stop().await;
}

#[tokio::test]
async fn the_official_openai_python_sdk_sends_a_large_image_through_the_edge() {
    let (stack, worker) = stack().await;
    let (_edge, url, key) = edge(&stack).await;
    let root = llmq_tests::nats::workspace_root();
    let python = root.join(".tools/venv/bin/python");
    assert!(
        python.exists(),
        "{} missing: run scripts/install-tools",
        python.display()
    );
    let output = tokio::process::Command::new(python)
        .arg(root.join("tests/sdk/openai_large.py"))
        .env("LLMQ_EDGE_URL", &url)
        .env("LLMQ_KEY", &key)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), output)
        .await
        .unwrap()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{text}");
    assert_eq!(stack.mock.request_count(), 1, "{text}");
    worker.stop().await;
}

/// README, "Requests and answers over one message": chunks first, then the job naming
/// them, from a plain NATS client that knows only the documented format.
#[tokio::test]
async fn a_raw_nats_producer_sends_a_large_request_as_documented() {
    let (stack, worker) = stack().await;
    let nats = stack.nats.client().await;
    let js = async_nats::jetstream::new(nats.clone());
    let prompt = "raw [tokens=6]";
    let messages = request_messages(prompt, 2 * MIB + 77);
    let request = serde_json::to_vec(&json!({ "messages": messages })).unwrap();
    let blob_id = uuid::Uuid::new_v4().simple().to_string();
    let chunk = 512 * 1024;
    let pieces: Vec<&[u8]> = request.chunks(chunk).collect();
    for (n, piece) in pieces.iter().enumerate() {
        let subject = format!("llmq.blobs.default.{blob_id}.{n}");
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", subject.as_str());
        let ack = js
            .publish_with_headers(subject, headers, Bytes::copy_from_slice(piece))
            .await
            .unwrap();
        ack.await.unwrap();
    }
    let digest: String = sha2::Sha256::digest(&request)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let job_id = uuid::Uuid::now_v7();
    let reply_to = format!("_INBOX_llmq.default.raw.{job_id}");
    let mut replies = nats.subscribe(reply_to.clone()).await.unwrap();
    let job = json!({
        "v": 1, "id": job_id, "model": "chat", "reply_to": reply_to,
        "request_blob": {"id": blob_id, "bytes": request.len(), "sha256": digest,
                         "chunks": pieces.len()}
    });
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", job_id.to_string().as_str());
    let job = Bytes::from(serde_json::to_vec(&job).unwrap());
    let ack = js.publish_with_headers("llmq.jobs.chat.interactive.default", headers, job);
    ack.await.unwrap().await.unwrap();
    use futures::StreamExt;
    let reply = tokio::time::timeout(Duration::from_secs(30), replies.next())
        .await
        .unwrap();
    let event: ReplyEvent = serde_json::from_slice(&reply.unwrap().payload).unwrap();
    let ReplyEvent::Final(outcome) = event else {
        panic!("expected the final outcome, got {event:?}")
    };
    assert_eq!(outcome.status, OutcomeStatus::Succeeded, "{outcome:?}");
    assert_eq!(outcome.text(), Some(mock_text(prompt, 6).as_str()));
    assert!(upstream_got(&stack, &messages));
    blobs_deleted(&stack).await;
    worker.stop().await;
}
