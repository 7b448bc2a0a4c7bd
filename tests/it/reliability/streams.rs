//! Streams that break: cut, stalled, malformed, or carrying an error event. Each is a
//! failed attempt; the producer is told to restart, and the final answer never holds
//! text twice.

use std::time::Duration;

use llmq_schemas::{ErrorType, OutcomeStatus, ReplyEvent};
use llmq_submitter::StreamText;
use llmq_tests::mock::{Fault, MockOptions, ModelBehavior, ScriptedFault, mock_text};
use llmq_tests::nats::NatsOptions;
use llmq_tests::stack::{Stack, chat_job, collect_events};

async fn streamed_through(
    fault: Fault,
    inter_token: &str,
) -> (Vec<ReplyEvent>, llmq_schemas::Outcome, String) {
    let stack = Stack::start_with(
        MockOptions {
            tokens_per_reply: 20,
            ..MockOptions::default()
        },
        NatsOptions::default(),
    )
    .await;
    let setup = stack.setup(&format!(
        r#"[providers.mock]
kind = "openai"
base_url = "{{mock}}/v1"
api_key_file = "{{key_file}}"
timeouts = {{ connect = "2s", first_token = "5s", inter_token = "{inter_token}", total = "30s" }}
[models.chat]
deployments = [{{ provider = "mock", model = "mock-model" }}]
"#
    ));
    let worker = stack.worker(&setup).await;
    let client = stack.client().await;
    stack.mock.push_faults([ScriptedFault::any(fault)]);
    let prompt = "tell me something long";
    let mut job = chat_job("chat", prompt);
    job.stream = true;
    let handle = client.submit(job).await.unwrap();
    let (events, outcome) = collect_events(handle, Duration::from_secs(30)).await;
    worker.stop().await;
    (events, outcome, mock_text(prompt, 20))
}

/// started(1), deltas, restart(1), started(2), deltas, final; and what a producer that
/// applies the events shows.
fn check_restarted(
    events: &[ReplyEvent],
    outcome: &llmq_schemas::Outcome,
    expected: &str,
    reason: ErrorType,
) {
    assert_eq!(outcome.status, OutcomeStatus::Succeeded, "{outcome:?}");
    assert_eq!(
        outcome.text(),
        Some(expected),
        "the answer holds no text twice"
    );
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| match e {
            ReplyEvent::Started(_) => "started",
            ReplyEvent::Delta(_) => "delta",
            ReplyEvent::Restart(_) => "restart",
            ReplyEvent::Final(_) => "final",
            ReplyEvent::DeadLettered(_) => "dead_lettered",
        })
        .collect();
    let restart_at = kinds
        .iter()
        .position(|k| *k == "restart")
        .expect("a restart event");
    assert_eq!(kinds[0], "started");
    assert!(
        kinds[1..restart_at].iter().all(|k| *k == "delta") && restart_at > 1,
        "{kinds:?}"
    );
    assert_eq!(kinds[restart_at + 1], "started");
    assert_eq!(kinds.last(), Some(&"final"));
    let ReplyEvent::Restart(restart) = &events[restart_at] else {
        unreachable!()
    };
    assert_eq!(restart.attempt, 1);
    assert_eq!(restart.reason, reason);
    // A producer that follows the protocol ends with exactly the final text.
    let mut text = StreamText::new();
    for event in events {
        text.apply(event);
    }
    assert_eq!(text.text(), expected);
    assert_eq!(text.restarts(), 1);
    assert!(text.is_complete());
    // The outcome names the second attempt's deltas, as its `started` event did.
    let ReplyEvent::Started(second) = &events[restart_at + 1] else {
        unreachable!()
    };
    assert_eq!(outcome.first_seq, Some(second.first_seq));
    let ReplyEvent::Delta(last) = &events[events.len() - 2] else {
        panic!("the last event before the final is a delta")
    };
    assert_eq!(outcome.last_seq, Some(last.seq));
    // A producer that lost the second attempt's `started` and first delta can tell.
    let mut lossy = StreamText::new();
    for event in events
        .iter()
        .filter(|e| !std::ptr::eq(*e, &events[restart_at + 1]))
        .filter(|e| !matches!(e, ReplyEvent::Delta(d) if d.seq == second.first_seq))
        .filter(|e| !matches!(e, ReplyEvent::Restart(_)))
    {
        lossy.apply(event);
    }
    assert!(!lossy.is_complete(), "lost deltas must show");
    // Sequence numbers never repeat across attempts.
    let seqs: Vec<u64> = events
        .iter()
        .filter_map(|e| {
            if let ReplyEvent::Delta(d) = e {
                Some(d.seq)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_stream_cut_mid_way_restarts_on_a_new_attempt() {
    let (events, outcome, expected) =
        streamed_through(Fault::CutMidStream { after_tokens: 5 }, "5s").await;
    check_restarted(&events, &outcome, &expected, ErrorType::Network);
    assert_eq!(outcome.attempts.len(), 2);
}

#[tokio::test]
async fn a_stalled_stream_times_out_between_tokens_and_restarts() {
    let (events, outcome, expected) = streamed_through(
        Fault::StallMidStream {
            after_tokens: 4,
            stall: Duration::from_secs(20),
        },
        "300ms",
    )
    .await;
    check_restarted(&events, &outcome, &expected, ErrorType::Timeout);
    assert!(
        outcome.attempts[0]
            .error_message
            .as_deref()
            .unwrap()
            .contains("inter_token")
    );
}

#[tokio::test]
async fn a_malformed_chunk_restarts() {
    let (events, outcome, expected) =
        streamed_through(Fault::MalformedChunk { after_tokens: 3 }, "5s").await;
    check_restarted(&events, &outcome, &expected, ErrorType::MalformedResponse);
}

#[tokio::test]
async fn an_in_stream_error_event_restarts() {
    let (events, outcome, expected) =
        streamed_through(Fault::InStreamError { after_tokens: 6 }, "5s").await;
    assert_eq!(
        outcome.attempts[0].error.map(|e| e.as_str()),
        Some(outcome.attempts[0].error.unwrap().as_str())
    );
    let reason = outcome.attempts[0].error.unwrap();
    assert!(
        matches!(reason, ErrorType::Server | ErrorType::Overloaded),
        "{reason}"
    );
    check_restarted(&events, &outcome, &expected, reason);
}

#[tokio::test]
async fn with_no_attempt_left_the_outcome_is_failed_and_keeps_the_partial_text() {
    let mut options = MockOptions {
        tokens_per_reply: 20,
        ..MockOptions::default()
    };
    options.per_model.insert(
        "mock-model".into(),
        ModelBehavior {
            always: Some(Fault::CutMidStream { after_tokens: 7 }),
            ..ModelBehavior::default()
        },
    );
    let stack = Stack::start_with(options, NatsOptions::default()).await;
    let mut setup = stack.simple_setup();
    setup.set("retry.per_class", "network", "1");
    let worker = stack.worker(&setup).await;
    let client = stack.client().await;
    let prompt = "this will never finish";
    let mut job = chat_job("chat", prompt);
    job.stream = true;
    let (_, outcome) =
        collect_events(client.submit(job).await.unwrap(), Duration::from_secs(30)).await;
    assert_eq!(outcome.status, OutcomeStatus::Failed);
    assert_eq!(outcome.error.as_ref().unwrap().kind, ErrorType::Network);
    assert_eq!(outcome.attempts.len(), 2, "one retry, then nothing left");
    let partial = outcome.partial.as_ref().expect("the partial text");
    assert_eq!(partial.attempt, 2);
    let full = mock_text(prompt, 20);
    assert!(
        !partial.content.is_empty() && full.starts_with(&partial.content),
        "{:?}",
        partial.content
    );
    assert_eq!(
        partial.content,
        llmq_tests::mock::mock_reply(prompt, 20)[..7].concat()
    );
    // Tokens were streamed, so they were paid for: usage is estimated, not zero.
    let usage = outcome.usage.unwrap();
    assert!(usage.completion_tokens > 0);
    worker.stop().await;
}
