//! Server behaviour shared by all formats: concurrency, disconnects, faults, lean mode.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::{WAIT, chat, client, header, json_body, read_stream, sse};
use crate::mock::{
    Fault, MockOptions, MockProvider, ModelBehavior, RandomFaults, ScriptedFault, WireFormat,
    mock_text,
};

#[tokio::test]
async fn peak_concurrency_counts_ten_slow_requests() {
    let mock = MockProvider::start(MockOptions {
        first_token_delay: Duration::from_secs(60),
        ..MockOptions::default()
    })
    .await;
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let client = client(&mock);
            tokio::spawn(
                async move { client.openai(&chat("m", &format!("slow {i}"), false)).await },
            )
        })
        .collect();
    assert!(
        mock.wait_for_in_flight(10, WAIT).await,
        "in flight: {}",
        mock.in_flight()
    );
    assert_eq!(mock.peak_concurrency(), 10);
    assert!(mock.wait_for_requests(10, WAIT).await);
    // Clients give up: every one of them is a disconnect, and nothing stays in flight.
    tasks.iter().for_each(|t| t.abort());
    assert!(
        mock.wait_for_disconnects(10, WAIT).await,
        "disconnects: {}",
        mock.disconnects()
    );
    assert!(mock.wait_for_in_flight(0, WAIT).await);
    assert_eq!(mock.peak_concurrency(), 10);
    mock.reset_stats();
    assert_eq!(
        (
            mock.peak_concurrency(),
            mock.disconnects(),
            mock.request_count()
        ),
        (0, 0, 0)
    );
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn dropping_a_stream_midway_is_a_disconnect() {
    let options = MockOptions {
        token_interval: Duration::from_millis(20),
        ..MockOptions::default()
    };
    let mock = MockProvider::start(options).await;
    let client = client(&mock);
    // A stream read to the end is not a disconnect.
    let (_, broken) =
        read_stream(client.openai(&chat("m", "complete [tokens=3]", true)).await).await;
    assert!(!broken);
    assert!(mock.wait_for_in_flight(0, WAIT).await);
    assert_eq!(mock.disconnects(), 0);

    let mut response = client.openai(&chat("m", "long [tokens=500]", true)).await;
    for _ in 0..3 {
        assert!(response.chunk().await.expect("chunk").is_some());
    }
    assert_eq!(mock.in_flight(), 1);
    drop(response);
    assert!(mock.wait_for_disconnects(1, WAIT).await);
    assert!(mock.wait_for_in_flight(0, WAIT).await);
}

#[tokio::test]
async fn drop_connection_answers_nothing() {
    let mock = MockProvider::start(MockOptions::default()).await;
    mock.push_faults([ScriptedFault::any(Fault::DropConnection)]);
    let client = client(&mock);
    let result = client
        .http
        .post(format!("{}/v1/chat/completions", mock.base_url()))
        .header("authorization", "Bearer test-key")
        .body(chat("m", "p", false).to_string())
        .send()
        .await;
    let err = result.expect_err("no response at all");
    assert!(!err.is_status() && !err.is_timeout(), "{err:?}");
    assert_eq!(mock.requests()[0].fault, Some(Fault::DropConnection));
    assert!(mock.wait_for_in_flight(0, WAIT).await);
    assert_eq!(mock.disconnects(), 0, "dropped on purpose");
    assert_eq!(
        client.openai(&chat("m", "p", false)).await.status(),
        200,
        "server still serves"
    );
}

#[tokio::test]
async fn stalls_and_slow_first_tokens_delay_what_they_say() {
    let options = MockOptions {
        record_token_times: true,
        ..MockOptions::default()
    };
    let mock = MockProvider::start(options).await;
    let client = client(&mock);
    let stall = Duration::from_millis(300);
    mock.push_faults([ScriptedFault::any(Fault::StallMidStream {
        after_tokens: 2,
        stall,
    })]);
    let (text, broken) = read_stream(client.openai(&chat("m", "stall", true)).await).await;
    assert!(
        !broken && text.ends_with("data: [DONE]\n\n"),
        "the stream resumes after the stall"
    );
    assert!(mock.wait_for_in_flight(0, WAIT).await);
    let times = mock.token_times();
    assert_eq!(times.len(), 1);
    let (prompt, instants) = &times[0];
    assert_eq!((prompt.as_str(), instants.len()), ("stall", 12));
    // The silence sits exactly between content chunks 2 and 3 (a misplaced stall would
    // leave that gap near zero); only a lower bound, so a loaded machine cannot flake it.
    assert!(
        instants[2] - instants[1] >= stall,
        "gap {:?}",
        instants[2] - instants[1]
    );

    mock.push_faults([ScriptedFault::any(Fault::SlowFirstToken(
        Duration::from_millis(200),
    ))]);
    let started = Instant::now();
    assert_eq!(client.openai(&chat("m", "slow", false)).await.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn per_model_faults_and_seeded_random_faults() {
    let mut options = MockOptions::default();
    options.per_model.insert(
        "broken".into(),
        ModelBehavior {
            always: Some(Fault::ServerError),
            ..ModelBehavior::default()
        },
    );
    let mock = MockProvider::start(options.clone()).await;
    let client = client(&mock);
    assert_eq!(
        client.openai(&chat("broken", "p", false)).await.status(),
        500
    );
    assert_eq!(client.openai(&chat("fine", "p", false)).await.status(), 200);

    options.random_faults = Some(RandomFaults {
        seed: 9,
        probability: 0.5,
        faults: vec![(Fault::ServiceUnavailable, 1)],
    });
    let run = |mock: &MockProvider| {
        let mock_options = options.clone();
        mock.set_options(mock_options);
        async {
            let mut statuses = Vec::new();
            for i in 0..40 {
                statuses.push(
                    client
                        .openai(&chat("fine", &format!("r{i}"), false))
                        .await
                        .status()
                        .as_u16(),
                );
            }
            statuses
        }
    };
    let first = run(&mock).await;
    let second = run(&mock).await;
    assert_eq!(first, second, "same seed, same faults");
    let failures = first.iter().filter(|s| **s == 503).count();
    assert!((8..=32).contains(&failures), "{failures} of 40 at p=0.5");
    assert!(first.iter().all(|s| *s == 200 || *s == 503));
    let recorded = mock
        .requests()
        .iter()
        .filter(|r| r.fault == Some(Fault::ServiceUnavailable))
        .count();
    assert_eq!(recorded, failures * 2);
}

#[tokio::test]
async fn lean_mode_skips_recording_and_reuses_rendered_replies() {
    let options = MockOptions {
        lean: true,
        ..MockOptions::default()
    };
    let mock = MockProvider::start(options).await;
    let client = client(&mock);
    let a = client.openai(&chat("m", "bench", false)).await;
    assert!(header(&a, "x-mock-service-us").is_some_and(|v| v.parse::<u64>().is_ok()));
    let (a, b) = (
        json_body(a).await,
        json_body(client.openai(&chat("m", "bench", false)).await).await,
    );
    assert_eq!(a, b, "identical requests, one pre-rendered body");
    assert_eq!(
        a["choices"][0]["message"]["content"],
        mock_text("bench", 12)
    );
    let c = json_body(client.openai(&chat("m", "other", false)).await).await;
    assert_eq!(
        c["choices"][0]["message"]["content"],
        mock_text("other", 12)
    );
    let (text, _) = read_stream(client.openai(&chat("m", "bench", true)).await).await;
    let streamed: String = sse(&text)
        .iter()
        .filter(|e| e.data != "[DONE]")
        .filter_map(|e| {
            e.json()["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(streamed, mock_text("bench", 12));
    assert_eq!(mock.request_count(), 4);
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn unknown_routes_are_recorded_404s() {
    let mock = MockProvider::start(MockOptions::default()).await;
    let response = client(&mock)
        .post("/v1/completions", &[], &chat("m", "p", false))
        .await;
    assert_eq!(response.status(), 404);
    let v: Value = json_body(response).await;
    assert_eq!(v["error"]["code"], "unknown_url");
    let r = &mock.requests()[0];
    assert_eq!(
        (r.path.as_str(), r.format, r.model.as_str()),
        ("/v1/completions", WireFormat::OpenAi, "m")
    );
    assert!(
        !mock.wait_for_requests(2, Duration::from_millis(20)).await,
        "times out when nothing comes"
    );
}

#[tokio::test]
async fn dropping_the_mock_closes_open_streams() {
    let options = MockOptions {
        token_interval: Duration::from_millis(50),
        ..MockOptions::default()
    };
    let mock = MockProvider::start(options).await;
    let client = client(&mock);
    let mut response = client
        .openai(&chat("m", "forever [tokens=10000]", true))
        .await;
    assert!(response.chunk().await.expect("first chunk").is_some());
    let base = mock.base_url();
    drop(mock);
    let (text, broken) = read_stream(response).await;
    assert!(broken && !text.contains("[DONE]"));
    let again = client
        .http
        .post(format!("{base}/v1/chat/completions"))
        .send()
        .await;
    assert!(again.is_err(), "nothing listens any more");
}

/// A request in `format` carrying `key`; its status.
async fn with_key(client: &super::Client, format: WireFormat, key: &str) -> u16 {
    let bearer = format!("Bearer {key}");
    let prompt = serde_json::json!([{ "role": "user", "content": "p" }]);
    let (path, headers, body) = match format {
        WireFormat::OpenAi => (
            "/v1/chat/completions",
            vec![("authorization", bearer.as_str())],
            chat("m", "p", false),
        ),
        WireFormat::Azure => (
            "/openai/deployments/d/chat/completions?api-version=2024-10-21",
            vec![("api-key", key)],
            chat("d", "p", false),
        ),
        WireFormat::Anthropic => (
            "/v1/messages",
            vec![("x-api-key", key), ("anthropic-version", "2023-06-01")],
            serde_json::json!({ "model": "m", "max_tokens": 16, "messages": prompt }),
        ),
        WireFormat::Gemini => (
            "/v1beta/models/m:generateContent",
            vec![("x-goog-api-key", key)],
            serde_json::json!({ "contents": [{ "role": "user", "parts": [{ "text": "p" }] }] }),
        ),
    };
    client.post(path, &headers, &body).await.status().as_u16()
}

#[tokio::test]
async fn during_a_rotation_both_keys_pass_and_each_request_records_its_key() {
    let mock = MockProvider::start(MockOptions::default()).await;
    let client = client(&mock);
    for format in [
        WireFormat::OpenAi,
        WireFormat::Azure,
        WireFormat::Anthropic,
        WireFormat::Gemini,
    ] {
        mock.reset_stats();
        mock.accept_keys(&["old-key", "new-key"]);
        assert_eq!(
            with_key(&client, format, "old-key").await,
            200,
            "{format:?}"
        );
        assert_eq!(
            with_key(&client, format, "new-key").await,
            200,
            "{format:?}"
        );
        mock.accept_keys(&["new-key"]);
        assert_eq!(
            with_key(&client, format, "new-key").await,
            200,
            "{format:?}"
        );
        let refused = with_key(&client, format, "old-key").await;
        assert!(refused == 401 || refused == 400, "{format:?}: {refused}");
        let keys: Vec<Option<String>> = mock.requests().into_iter().map(|r| r.key).collect();
        let expected = ["old-key", "new-key", "new-key", "old-key"].map(|k| Some(k.to_owned()));
        assert!(keys == expected, "{format:?}: the recorded keys differ");
    }
}

#[tokio::test]
async fn a_quota_is_reported_in_each_formats_headers_and_enforced_with_its_429() {
    use gateway_worker::providers::retry_hint::{anthropic_exhausted, openai_exhausted};
    let mock = MockProvider::start(MockOptions {
        quota: Some(crate::mock::Quota {
            requests: 2,
            window: Duration::from_secs(30),
        }),
        ..MockOptions::default()
    })
    .await;
    let client = client(&mock);
    let body = chat("m", "hi", false);
    let anthropic_body = serde_json::json!({
        "model": "claude", "max_tokens": 16, "messages": [{ "role": "user", "content": "hi" }]
    });
    // OpenAI: Go durations; Azure: integer seconds; Anthropic: an RFC 3339 instant.
    let first = client.openai(&body).await;
    assert_eq!(header(&first, "x-ratelimit-remaining-requests"), Some("1"));
    assert_eq!(header(&first, "x-ratelimit-limit-requests"), Some("2"));
    assert!(openai_exhausted(first.headers()).is_none(), "one left");
    let last = client.openai(&body).await;
    assert_eq!(last.status(), 200);
    let reset = header(&last, "x-ratelimit-reset-requests")
        .unwrap()
        .to_owned();
    assert!(reset.ends_with('s') && !reset.ends_with("ms"), "{reset}");
    let hint = openai_exhausted(last.headers()).expect("remaining 0 with a reset");
    assert_eq!(hint.limit, "requests");
    assert!((29..=30).contains(&hint.resets_in.as_secs()), "{hint:?}");
    let over = client.openai(&body).await;
    assert_eq!(over.status(), 429);
    let azure = [
        client.azure("d", &body).await,
        client.azure("d", &body).await,
    ];
    assert_eq!(header(&azure[1], "x-ratelimit-reset-requests"), Some("30"));
    assert!(openai_exhausted(azure[1].headers()).is_some());
    let anthropic = [
        client.anthropic(&anthropic_body).await,
        client.anthropic(&anthropic_body).await,
    ];
    assert_eq!(
        header(&anthropic[0], "anthropic-ratelimit-requests-remaining"),
        Some("1")
    );
    let hint = anthropic_exhausted(anthropic[1].headers()).expect("an RFC 3339 reset");
    assert!((28..=30).contains(&hint.resets_in.as_secs()), "{hint:?}");
    let faults: Vec<_> = mock.requests().into_iter().map(|r| r.fault).collect();
    assert_eq!(
        faults.iter().filter(|f| f.is_some()).count(),
        1,
        "{faults:?}"
    );
}
