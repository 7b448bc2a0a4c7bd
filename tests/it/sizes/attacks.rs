//! Blobs kept to their tenant, tried as the attacking tenant on the credentials
//! `submitter auth generate` makes: beta cannot read acme's answer's blob, cannot write
//! under acme's blob subjects, cannot have a worker read acme's request blob for it, and
//! cannot, by filling the request blob stream, stop acme's large answers from being
//! stored.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::{Event, ServerError, jetstream};
use bytes::Bytes;
use llmq_runtime::blob::{self, BlobError, WriteOptions};
use llmq_runtime::{Budget, PublishFailure};
use llmq_schemas::{BlobRef, ChatRequest, ErrorType, Job, OutcomeStatus, ReplyEvent};
use llmq_submitter::{Client, ClientOptions, NatsOptions, SubmitError};
use llmq_tests::mock::{MockOptions, mock_text};
use llmq_tests::nats::NatsOptions as ServerOptions;
use llmq_tests::stack::{Stack, chat_job, run_job};
use llmq_tests::worker::{TestWorker, workspace_binary};
use serde_json::json;
use tokio::sync::mpsc;

use super::{MIB, request_messages};

const REGISTRY: &str = "[tenants.acme]\nmodels = [\"chat\"]\n[tenants.beta]\nmodels = [\"chat\"]\n";

/// A 1 MiB broker running the generated authorization, a worker on the worker's key.
struct Secured {
    stack: Stack,
    keys: PathBuf,
    _dir: tempfile::TempDir,
    worker: TestWorker,
}

impl Secured {
    async fn start(jetstream: &[(&str, &str)]) -> Secured {
        let dir = tempfile::tempdir().unwrap();
        let registry = dir.path().join("tenants.toml");
        std::fs::write(&registry, REGISTRY).unwrap();
        let keys = dir.path().join("auth");
        let generate = std::process::Command::new(workspace_binary("submitter"))
            .args(["auth", "generate", registry.to_str().unwrap(), "--out"])
            .arg(&keys)
            .output()
            .unwrap();
        assert!(generate.status.success(), "{generate:?}");
        let server = ServerOptions {
            extra_config: std::fs::read_to_string(keys.join("auth.conf")).unwrap(),
            ..ServerOptions::default_max_payload()
        };
        let stack = Stack::start_with(MockOptions::default(), server).await;
        let key = |user: &str| keys.join(format!("{user}.nk")).display().to_string();
        let mut setup = stack.simple_setup();
        setup.set("tenants", "mode", "\"enforced\"").set(
            "nats",
            "nkey_file",
            &format!("{:?}", key("worker")),
        );
        for (name, value) in jetstream {
            setup.set("jetstream", name, value);
        }
        let apply = tokio::process::Command::new(workspace_binary("submitter"))
            .args(["--url", &stack.nats.url(), "--nkey-file", &key("admin")])
            .args(["tenants", "apply", registry.to_str().unwrap()])
            .output()
            .await
            .unwrap();
        assert!(apply.status.success(), "{apply:?}");
        let worker = stack.worker(&setup).await;
        Secured {
            stack,
            keys,
            _dir: dir,
            worker,
        }
    }

    fn seed(&self, tenant: &str) -> String {
        let path = self.keys.join(format!("tenant-{tenant}.nk"));
        std::fs::read_to_string(path).unwrap().trim().to_owned()
    }

    /// The tenant's producer library, on its own key.
    async fn client(&self, tenant: &str) -> Client {
        let options = ClientOptions {
            nats: NatsOptions {
                nkey_file: Some(self.keys.join(format!("tenant-{tenant}.nk"))),
                ..NatsOptions::with_url(self.stack.nats.url())
            },
            check_catalog: false,
            ..ClientOptions::for_tenant(tenant)
        };
        Client::connect(options).await.unwrap()
    }

    /// A plain NATS connection on the tenant's key, as any client of theirs would make.
    async fn raw(&self, tenant: &str) -> async_nats::Client {
        self.watched(tenant).await.0
    }

    /// [`raw`](Self::raw), with the permission errors the server sends it.
    async fn watched(&self, tenant: &str) -> (async_nats::Client, Denials) {
        let (tx, denials) = mpsc::unbounded_channel();
        let nats = async_nats::ConnectOptions::with_nkey(self.seed(tenant))
            .custom_inbox_prefix(format!("_INBOX_llmq.{tenant}"))
            .event_callback(move |event| {
                let tx = tx.clone();
                async move {
                    if let Event::ServerError(ServerError::Other(message)) = event {
                        let _ = tx.send(message);
                    }
                }
            })
            .connect(self.stack.nats.url())
            .await
            .unwrap();
        (nats, denials)
    }

    /// JetStream on the admin's key (the operator's view).
    async fn admin(&self) -> jetstream::Context {
        let seed = std::fs::read_to_string(self.keys.join("admin.nk")).unwrap();
        let nats = async_nats::ConnectOptions::with_nkey(seed.trim().to_owned())
            .connect(self.stack.nats.url())
            .await
            .unwrap();
        jetstream::new(nats)
    }
}

type Denials = mpsc::UnboundedReceiver<String>;

/// Whether the server has told the connection it denied something naming `subject`.
fn denied(denials: &mut Denials, subject: &str) -> bool {
    let mut all = Vec::new();
    while let Ok(message) = denials.try_recv() {
        all.push(message);
    }
    let found = all
        .iter()
        .any(|m| m.contains("Permissions Violation") && m.contains(subject));
    assert!(found, "no denial naming {subject} among {all:?}");
    found
}

fn writes() -> WriteOptions<'static> {
    WriteOptions {
        budget: Budget::Attempts(1),
        missing_stream_is_transient: false,
        missing_stream_grace: Duration::ZERO,
        on_retry: None,
    }
}

#[tokio::test]
async fn a_tenant_cannot_read_write_or_borrow_another_tenants_blobs() {
    let secured = Secured::start(&[]).await;
    let acme = secured.client("acme").await;
    // Acme's own large request and large answer work on acme's credentials.
    let messages = request_messages("acme's own large request [tokens=2]", MIB + 1);
    let request: ChatRequest = serde_json::from_value(json!({ "messages": messages })).unwrap();
    let own = run_job(&acme, Job::new("chat", request)).await;
    assert_eq!(own.status, OutcomeStatus::Succeeded, "{:?}", own.error);
    let prompt = "acme's long secret answer [tokens=170000]";
    let outcome = run_job(&acme, chat_job("chat", prompt)).await;
    assert_eq!(
        outcome.status,
        OutcomeStatus::Succeeded,
        "{:?}",
        outcome.error
    );
    assert_eq!(outcome.text(), Some(mock_text(prompt, 170_000).as_str()));

    // Beta asks for acme's stored outcome body: denied by the server.
    let admin = secured.admin().await;
    let results = admin.get_stream("LLMQ_RESULTS").await.unwrap();
    let stub = results
        .direct_get_last_for_subject(format!("llmq.results.acme.{}", outcome.job_id))
        .await
        .unwrap();
    let stub: llmq_schemas::Outcome = serde_json::from_slice(&stub.payload).unwrap();
    let body = stub
        .body_blob
        .expect("the stored outcome names its body blob");
    let (beta, mut denials) = secured.watched("beta").await;
    // A denied request gets no answer: wait a second, not the default five.
    let beta = jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(1))
        .build(beta);
    let base = format!("llmq.results.acme.{}", outcome.job_id);
    let stolen = blob::read(&beta, "LLMQ_RESULTS", &base, &body, Duration::ZERO).await;
    assert!(
        matches!(stolen, Err(BlobError::Unavailable { .. })),
        "{stolen:?}"
    );
    assert!(denied(
        &mut denials,
        &format!("DIRECT.GET.LLMQ_RESULTS.{base}")
    ));

    // Beta writes under acme's blob subjects: denied, nothing stored.
    let forged = blob::write(
        &beta,
        "llmq.blobs.acme",
        Bytes::from_static(b"{}"),
        1024,
        writes(),
    )
    .await;
    assert!(forged.is_err(), "{forged:?}");
    assert!(denied(&mut denials, "llmq.blobs.acme."));
    let blobs = admin.get_stream("LLMQ_BLOBS").await.unwrap();
    assert_eq!(blobs.get_info().await.unwrap().state.messages, 0);

    // Acme stores a request blob; beta names it in a job of its own.
    let secret = "acme's private prompt [tokens=2]";
    let request = serde_json::to_vec(&ChatRequest::user(secret)).unwrap();
    let acme_js = jetstream::new(secured.raw("acme").await);
    let acme_blob = blob::write(
        &acme_js,
        "llmq.blobs.acme",
        Bytes::from(request),
        1024,
        writes(),
    )
    .await
    .unwrap();
    let failed = beta_job_naming(&secured, &acme_blob).await;
    assert_eq!(failed.status, OutcomeStatus::Failed);
    let error = failed.error.unwrap();
    assert_eq!(error.kind, ErrorType::InvalidJob, "{}", error.message);
    assert!(
        error.message.contains("llmq.blobs.beta."),
        "{}",
        error.message
    );
    let leaked = secured
        .stack
        .mock
        .requests()
        .iter()
        .any(|r| r.prompt.contains("private"));
    assert!(!leaked, "acme's request reached a provider for beta");
    // Acme's blob is untouched (the worker read and deleted beta's subjects only).
    let acme_base = "llmq.blobs.acme";
    let kept = blob::read(&admin, "LLMQ_BLOBS", acme_base, &acme_blob, Duration::ZERO).await;
    assert!(kept.is_ok(), "{kept:?}");
    secured.worker.stop().await;
}

/// Beta publishes, on its own subject and key, a job whose `request_blob` is `blob`; its
/// outcome.
async fn beta_job_naming(secured: &Secured, blob: &BlobRef) -> llmq_schemas::Outcome {
    let nats = secured.raw("beta").await;
    let job_id = uuid::Uuid::now_v7();
    let reply_to = format!("_INBOX_llmq.beta.attack.{job_id}");
    let mut replies = nats.subscribe(reply_to.clone()).await.unwrap();
    let mut job = Job::new("chat", ChatRequest::default());
    job.id = job_id;
    job.reply_to = Some(reply_to);
    job.request_blob = Some(blob.clone());
    let payload = Bytes::from(serde_json::to_vec(&job).unwrap());
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", job_id.to_string().as_str());
    let js = jetstream::new(nats.clone());
    let ack = js.publish_with_headers("llmq.jobs.chat.interactive.beta", headers, payload);
    ack.await.unwrap().await.unwrap();
    use futures::StreamExt;
    let reply = tokio::time::timeout(Duration::from_secs(30), replies.next())
        .await
        .unwrap();
    match serde_json::from_slice(&reply.unwrap().payload).unwrap() {
        ReplyEvent::Final(outcome) => *outcome,
        other => panic!("expected the final outcome, got {other:?}"),
    }
}

#[tokio::test]
async fn a_tenant_filling_the_request_blob_stream_cannot_stop_another_tenants_answer() {
    let bound = (3 * MIB).to_string();
    let secured = Secured::start(&[("blobs_max_bytes", &bound)]).await;
    // Beta fills every byte the request blobs may take.
    let beta = jetstream::new(secured.raw("beta").await);
    let mut written = 0;
    let full = loop {
        let piece = Bytes::from(vec![b'x'; 900 * 1024]);
        match blob::write(&beta, "llmq.blobs.beta", piece, 900 * 1024, writes()).await {
            Ok(_) => written += 1,
            Err(err) => break err,
        }
        assert!(written < 10, "the blob stream took more than its bound");
    };
    assert!(
        matches!(
            full,
            BlobError::Write {
                source: PublishFailure::Full { .. },
                ..
            }
        ),
        "{full:?}"
    );
    let acme = secured.client("acme").await;
    // Acme's large answer is still stored, once.
    let prompt = "long answer while beta floods [tokens=170000]";
    let outcome = run_job(&acme, chat_job("chat", prompt)).await;
    assert_eq!(
        outcome.status,
        OutcomeStatus::Succeeded,
        "{:?}",
        outcome.error
    );
    assert_eq!(outcome.text(), Some(mock_text(prompt, 170_000).as_str()));
    assert_eq!(secured.stack.mock.request_count(), 1);
    // Acme's large request is refused at submit, visibly, without a provider call.
    let messages = request_messages("big while full", 2 * MIB);
    let request: ChatRequest = serde_json::from_value(json!({ "messages": messages })).unwrap();
    let refused = acme.submit(Job::new("chat", request)).await;
    assert!(
        matches!(&refused, Err(SubmitError::QueueFull { stream, .. }) if stream == "LLMQ_BLOBS"),
        "{refused:?}"
    );
    assert_eq!(secured.stack.mock.request_count(), 1);
    secured.worker.stop().await;
}
