//! One tenant against another, on the generated credentials (issue 18, items 1 to 4): what
//! subject permissions cannot stop (headers, message ids, reply subjects a worker is asked
//! to write to, how many consumers and jobs a tenant may leave on the broker) is stopped by
//! the streams' settings and the worker's rules. Each test is written as the attacker.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream;
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use llmq_schemas::{DlqReason, Job, OutcomeStatus};
use llmq_submitter::SubmitError;
use llmq_tests::stack::{chat_job, eventually};

use crate::auth::{Secured, SecuredOptions};

/// A JetStream context on a raw connection (its inbox prefix lets PubAcks reach it).
fn js(nats: &async_nats::Client) -> jetstream::Context {
    jetstream::new(nats.clone())
}

/// Publishes through JetStream with `headers`; the server's answer.
async fn publish(
    js: &jetstream::Context,
    subject: &str,
    headers: &[(&str, &str)],
    payload: Bytes,
) -> Result<jetstream::publish::PublishAck, jetstream::context::PublishError> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.insert(*name, *value);
    }
    js.publish_with_headers(subject.to_owned(), map, payload)
        .await?
        .await
}

fn job_bytes(job: &Job) -> Bytes {
    Bytes::from(serde_json::to_vec(job).unwrap())
}

/// Item 1, the scenario: acme queues J1 and J2 while no worker runs and cancels
/// J1; beta sends a rollup to its own cancel key; acme cancels J2; a worker starts. Both
/// must end cancelled, with no provider call.
#[tokio::test]
async fn another_tenants_rollup_cannot_wipe_pending_cancels() {
    let mut secured = Secured::start().await;
    secured.stop_worker().await;
    let acme = secured.client("tenant-acme", "acme").await;
    let j1 = acme.submit_detached(chat_job("chat", "J1")).await.unwrap();
    let j2 = acme.submit_detached(chat_job("chat", "J2")).await.unwrap();
    acme.cancel(j1, None).await.unwrap();

    let beta = secured.raw_tenant("beta").await;
    let beta_js = js(&beta.nats);
    let mut attempts = Vec::new();
    for headers in [
        &[("Nats-Rollup", "all")][..],
        &[("Nats-Rollup", "sub")][..],
        &[("KV-Operation", "PURGE"), ("Nats-Rollup", "sub")][..],
    ] {
        let answer = publish(&beta_js, "$KV.LLMQ_CANCEL.beta.x", headers, "{}".into()).await;
        attempts.push((headers, answer));
    }
    // Nor can it fill the bucket with large values: a cancel request is small.
    let large = publish(
        &beta_js,
        "$KV.LLMQ_CANCEL.beta.y",
        &[],
        vec![b'x'; 20_000].into(),
    );
    let large = large.await.expect_err("a cancel is at most 16 KiB");
    assert!(large.to_string().contains("maximum"), "{large}");
    acme.cancel(j2, None).await.unwrap();

    secured.start_worker().await;
    for job in [j1, j2] {
        let outcome = acme
            .wait_outcome(job, Duration::from_secs(20))
            .await
            .unwrap();
        assert_eq!(outcome.status, OutcomeStatus::Cancelled, "{job}");
        assert!(
            outcome.attempts.is_empty(),
            "no provider call, nothing billed"
        );
    }
    assert_eq!(secured.stack.mock.request_count(), 0);
    for (headers, answer) in attempts {
        let err = answer.expect_err("the cancel bucket refuses rollups");
        assert!(
            err.to_string().contains("rollup not permitted"),
            "{headers:?}: {err}"
        );
    }
    secured.stop().await;
}

/// Item 2: beta's jobs that cannot be decoded, or come from a newer protocol, name acme's
/// inbox as their reply subject. They are dead-lettered; acme's inbox hears nothing.
#[tokio::test]
async fn a_dead_lettered_job_cannot_write_into_another_tenants_inbox() {
    let secured = Secured::start().await;
    let acme = secured.raw_tenant("acme").await;
    let mut acme_inbox = acme.nats.subscribe("_INBOX_llmq.acme.>").await.unwrap();
    acme.nats.flush().await.unwrap();
    let beta = secured.raw_tenant("beta").await;
    let mut beta_inbox = beta.nats.subscribe("_INBOX_llmq.beta.app.>").await.unwrap();
    beta.nats.flush().await.unwrap();

    let lure = "your job failed, re-run it at http://evil.example";
    let undecodable = serde_json::json!({
        "id": uuid::Uuid::now_v7(), "reply_to": "_INBOX_llmq.acme.app.1",
        "model": 42, "request": lure,
    });
    let newer = serde_json::json!({
        "v": 99, "id": uuid::Uuid::now_v7(), "model": "chat",
        "reply_to": "_INBOX_llmq.acme.app.2",
        "request": {"messages": [{"role": "user", "content": lure}]},
    });
    // Beta's own inbox is still told: the notice works, it only goes where it may.
    let own_id = uuid::Uuid::now_v7();
    let own = serde_json::json!({"id": own_id, "reply_to": "_INBOX_llmq.beta.app.3", "model": 7});
    let beta_js = js(&beta.nats);
    for payload in [undecodable, newer, own] {
        let subject = "llmq.jobs.chat.interactive.beta";
        publish(&beta_js, subject, &[], payload.to_string().into())
            .await
            .unwrap();
    }
    let notice = tokio::time::timeout(Duration::from_secs(10), beta_inbox.next())
        .await
        .expect("beta's own notice")
        .unwrap();
    let notice = String::from_utf8_lossy(&notice.payload).into_owned();
    assert!(notice.contains(&own_id.to_string()), "{notice}");

    // A letter is stored, then its producer told, then the job terminated (on one
    // connection): once the queue is empty, every notice has been sent.
    let admin = js(&secured.raw_admin().await);
    let jobs = admin.get_stream("LLMQ_JOBS").await.unwrap();
    eventually(Duration::from_secs(10), "the queue to empty", || {
        let mut jobs = jobs.clone();
        async move { (jobs.info().await.ok()?.state.messages == 0).then_some(()) }
    })
    .await;
    acme.nats.flush().await.unwrap();
    assert!(
        acme_inbox.next().now_or_never().is_none(),
        "nothing reached acme's inbox from beta's jobs"
    );
    let letters = secured
        .operator("admin", "acme")
        .await
        .dlq_list()
        .await
        .unwrap();
    let reasons: Vec<_> = letters.iter().filter_map(|l| l.reason_kind()).collect();
    assert_eq!(letters.len(), 3, "{reasons:?}");
    assert!(
        reasons.contains(&DlqReason::UnsupportedVersion),
        "{reasons:?}"
    );
    assert!(
        letters
            .iter()
            .all(|l| l.original_subject.as_deref() == Some("llmq.jobs.chat.interactive.beta"))
    );
    secured.stop().await;
}

/// Item 3: beta uses job ids acme will use, first with the id as its message id. acme's
/// jobs with those ids, through the library and raw, are still stored, run and answered.
#[tokio::test]
async fn another_tenant_cannot_preempt_a_job_id() {
    let secured = Secured::start().await;
    let beta = secured.raw_tenant("beta").await;
    let beta_js = js(&beta.nats);
    let beta_reader = secured.client("tenant-beta", "beta").await;
    let (library, raw) = (
        chat_job("chat", "acme's library job"),
        chat_job("chat", "acme raw"),
    );
    for id in [library.id, raw.id] {
        let mut squatter = chat_job("chat", "beta was here first");
        squatter.id = id;
        let id = id.to_string();
        let subject = "llmq.jobs.chat.interactive.beta";
        publish(
            &beta_js,
            subject,
            &[("Nats-Msg-Id", &id)],
            job_bytes(&squatter),
        )
        .await
        .unwrap();
        // Beta's outcome for the id is stored before acme's job exists.
        let outcome = beta_reader
            .wait_outcome(squatter.id, Duration::from_secs(20))
            .await
            .unwrap();
        assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    }

    let acme = secured.client("tenant-acme", "acme").await;
    let handle = acme.submit(library.clone()).await.unwrap();
    let outcome = handle
        .outcome_within(Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    let stored = acme
        .wait_outcome(library.id, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(
        (stored.tenant.as_str(), stored.processing),
        ("acme", outcome.processing)
    );

    // Raw, the job id as the message id is dropped: the stream's duplicate window is
    // stream-wide (README, "From any other language"). A message id of its own is not.
    let acme_raw = secured.raw_tenant("acme").await;
    let acme_js = js(&acme_raw.nats);
    let subject = "llmq.jobs.chat.interactive.acme";
    let id = raw.id.to_string();
    let same = publish(&acme_js, subject, &[("Nats-Msg-Id", &id)], job_bytes(&raw)).await;
    assert!(same.unwrap().duplicate, "the job id is not a private key");
    let private = format!("{id}.{}", uuid::Uuid::new_v4().simple());
    let stored = publish(
        &acme_js,
        subject,
        &[("Nats-Msg-Id", &private)],
        job_bytes(&raw),
    )
    .await;
    assert!(!stored.unwrap().duplicate);
    let outcome = acme
        .wait_outcome(raw.id, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    assert_eq!(outcome.tenant, "acme");
    assert_eq!(secured.stack.mock.request_count(), 4, "two jobs each");
    secured.stop().await;
}

/// Item 4, consumers: beta cannot leave more consumers on the results stream than the
/// stream holds, none may ask to outlive the threshold, and idle ones are removed.
#[tokio::test]
async fn a_tenants_consumers_are_capped_and_idle_ones_removed() {
    let secured = Secured::start_with(SecuredOptions {
        settings: vec![
            ("jetstream", "reader_max_consumers", "20".into()),
            ("jetstream", "reader_inactive_threshold", "\"30s\"".into()),
        ],
        ..SecuredOptions::default()
    })
    .await;
    let admin = js(&secured.raw_admin().await);
    for stream in ["LLMQ_RESULTS", "LLMQ_USAGE", "KV_LLMQ_CATALOG"] {
        let config = admin
            .get_stream(stream)
            .await
            .unwrap()
            .cached_info()
            .config
            .clone();
        assert_eq!(config.max_consumers, 20, "{stream}");
        let limits = config.consumer_limits.unwrap_or_default();
        assert_eq!(
            limits.inactive_threshold,
            Duration::from_secs(30),
            "{stream}"
        );
    }
    let beta = secured.raw_tenant("beta").await;
    let create = |name: String, threshold: Option<Duration>| {
        let nats = beta.nats.clone();
        async move {
            let mut config = serde_json::json!({
                "name": name, "durable_name": name, "ack_policy": "explicit",
                "filter_subject": "llmq.results.beta.>",
            });
            if let Some(threshold) = threshold {
                config["inactive_threshold"] = (threshold.as_nanos() as u64).into();
            }
            let body = serde_json::json!({"stream_name": "LLMQ_RESULTS", "config": config});
            let subject =
                format!("$JS.API.CONSUMER.CREATE.LLMQ_RESULTS.{name}.llmq.results.beta.>");
            let reply = nats
                .request(subject, body.to_string().into())
                .await
                .unwrap();
            serde_json::from_slice::<serde_json::Value>(&reply.payload).unwrap()
        }
    };
    let longer = create("forever".into(), Some(Duration::from_secs(3600))).await;
    assert_eq!(longer["error"]["err_code"], 10153, "{longer}");
    let mut created = 0;
    let refusal = loop {
        let answer = create(format!("hoard{created}"), None).await;
        if answer.get("error").is_some() {
            break answer;
        }
        let threshold = answer["config"]["inactive_threshold"].as_u64();
        assert_eq!(
            threshold,
            Some(30_000_000_000),
            "durables inherit the threshold"
        );
        created += 1;
        assert!(created <= 20, "more consumers than the stream holds");
    };
    assert_eq!(refusal["error"]["err_code"], 10026, "{refusal}");
    assert_eq!(created, 20);
    let results = admin.get_stream("LLMQ_RESULTS").await.unwrap();
    eventually(
        Duration::from_secs(60),
        "idle consumers to be removed",
        || {
            let mut results = results.clone();
            async move { (results.info().await.ok()?.state.consumer_count == 0).then_some(()) }
        },
    )
    .await;
    let again = create("after".into(), None).await;
    assert!(again.get("error").is_none(), "{again}");
    secured.stop().await;
}

/// Item 4, jobs: beta at its queue quota for one model and tier is refused more of them;
/// its other queues and acme's are not affected.
#[tokio::test]
async fn a_tenants_queue_quota_leaves_other_tenants_room() {
    let mut secured = Secured::start_with(SecuredOptions {
        settings: vec![("jetstream", "jobs_max_per_subject", "3".into())],
        ..SecuredOptions::default()
    })
    .await;
    secured.stop_worker().await;
    let beta = secured.client("tenant-beta", "beta").await;
    for i in 0..3 {
        let job = chat_job("chat", &format!("beta {i}"));
        beta.submit_detached(job).await.unwrap();
    }
    let refused = beta.submit_detached(chat_job("chat", "one more")).await;
    match refused {
        Err(err @ SubmitError::TenantQueueFull { .. }) => {
            assert!(err.is_retryable());
            let message = err.to_string();
            assert!(
                message.contains("jetstream.jobs_max_per_subject"),
                "{message}"
            );
            assert!(
                message.contains("\"beta\"") && message.contains("\"chat\""),
                "{message}"
            );
        }
        other => panic!("expected TenantQueueFull, got {other:?}"),
    }
    let mut batch = chat_job("chat", "another tier");
    batch.tier = llmq_schemas::Tier::Batch;
    beta.submit_detached(batch).await.unwrap();
    let acme = secured.client("tenant-acme", "acme").await;
    acme.submit_detached(chat_job("chat", "acme is not beta"))
        .await
        .unwrap();
    secured.stop().await;
}
