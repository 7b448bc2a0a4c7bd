//! Provider keys rotate without a restart: a changed `api_key_file` is re-read on the
//! worker's interval or at once on SIGHUP; calls in flight finish with the old key, new
//! calls send the new one, no job fails, and no log line holds either key.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use llmq_schemas::OutcomeStatus;
use llmq_submitter::Client;
use llmq_tests::mock::RecordedRequest;
use llmq_tests::stack::{Stack, chat_job, eventually, run_job};
use llmq_tests::worker::{WorkerProcess, WorkerSetup};
use tokio_util::sync::CancellationToken;

const OLD: &str = "rotation-old-7f3a9c51";
const NEW: &str = "rotation-new-2b8e4d07";
const WAIT: Duration = Duration::from_secs(30);
/// Producers submitting one job after another, at once.
const LANES: usize = 4;

/// One job a lane ran.
#[derive(Debug, Clone)]
struct Ran {
    lane: usize,
    prompt: String,
    submitted: Instant,
    finished: Instant,
    status: OutcomeStatus,
}

/// A worker setup whose key file holds `OLD`, re-read every `interval`.
fn rotating_setup(stack: &Stack, interval: &str) -> WorkerSetup {
    let mut setup = stack.simple_setup();
    setup.set("worker", "key_reload_interval", &format!("{interval:?}"));
    setup.rotate_key(OLD);
    stack.mock.accept_keys(&[OLD]);
    setup
}

/// Runs jobs one after another until `stop`, recording each.
async fn lane(client: Client, lane: usize, ran: Arc<Mutex<Vec<Ran>>>, stop: CancellationToken) {
    let mut n = 0;
    while !stop.is_cancelled() {
        let prompt = format!("lane {lane} job {n}");
        let submitted = Instant::now();
        let outcome = run_job(&client, chat_job("chat", &prompt)).await;
        ran.lock().unwrap().push(Ran {
            lane,
            prompt,
            submitted,
            finished: Instant::now(),
            status: outcome.status,
        });
        n += 1;
    }
}

/// Whether every lane has finished a job submitted after `instant` (a lane runs one job
/// at a time, so all its earlier jobs are done too).
fn every_lane_past(ran: &Mutex<Vec<Ran>>, instant: Instant) -> bool {
    let ran = ran.lock().unwrap();
    (0..LANES).all(|l| ran.iter().any(|r| r.lane == l && r.submitted > instant))
}

/// The key the one request of the job with `prompt` carried: OLD, NEW or "other" (keys
/// are compared, never printed).
fn key_of<'a>(requests: &'a [RecordedRequest], prompt: &str) -> Vec<&'a str> {
    requests
        .iter()
        .filter(|r| r.prompt == prompt)
        .map(|r| label(r.key.as_deref()))
        .collect()
}

fn label(key: Option<&str>) -> &'static str {
    match key {
        Some(OLD) => "old",
        Some(NEW) => "new",
        Some(_) => "other",
        None => "none",
    }
}

#[tokio::test]
async fn a_rotated_key_file_is_used_by_new_calls_while_calls_in_flight_finish_with_the_old_key() {
    let stack = Stack::with_slow_mock(Duration::from_millis(500)).await;
    let setup = rotating_setup(&stack, "200ms");
    let worker = stack.worker(&setup).await;
    let client = stack.client().await;
    let ran = Arc::new(Mutex::new(Vec::new()));
    let stop = CancellationToken::new();
    let lanes: Vec<_> = (0..LANES)
        .map(|l| tokio::spawn(lane(client.clone(), l, Arc::clone(&ran), stop.clone())))
        .collect();

    // The old key in use, and calls with it in flight: then the rotation, as a provider
    // has it (both keys valid) and as a secret mount does it (a file renamed over).
    assert!(stack.mock.wait_for_requests(2 * LANES, WAIT).await);
    assert!(stack.mock.wait_for_in_flight_at_least(1, WAIT).await);
    stack.mock.accept_keys(&[OLD, NEW]);
    let swapped = Instant::now();
    setup.rotate_key(NEW);
    let new_key_sent = |r: &RecordedRequest| r.key.as_deref() == Some(NEW);
    assert!(
        stack.mock.wait_for_request(new_key_sent, WAIT).await,
        "the new key was never sent"
    );
    let reloaded = Instant::now();
    // Only jobs submitted before the reload can hold the old key: once they are done, the
    // provider revokes it.
    eventually(WAIT, "every lane past the reload", || async {
        every_lane_past(&ran, reloaded).then_some(())
    })
    .await;
    stack.mock.accept_keys(&[NEW]);
    let revoked = Instant::now();
    let seen = stack.mock.request_count();
    assert!(stack.mock.wait_for_requests(seen + 2 * LANES, WAIT).await);
    stop.cancel();
    for lane in lanes {
        lane.await.unwrap();
    }
    worker.stop().await;

    let ran = ran.lock().unwrap().clone();
    let requests = stack.mock.requests();
    let failed = ran
        .iter()
        .filter(|r| r.status != OutcomeStatus::Succeeded)
        .count();
    assert_eq!(failed, 0, "{failed} of {} jobs did not succeed", ran.len());
    for job in &ran {
        assert_eq!(key_of(&requests, &job.prompt).len(), 1, "{}", job.prompt);
    }
    let before: Vec<&str> = requests
        .iter()
        .filter(|r| r.received_at < swapped)
        .map(|r| label(r.key.as_deref()))
        .collect();
    assert!(!before.is_empty());
    assert!(
        before.iter().all(|k| *k == "old"),
        "before the swap: {before:?}"
    );
    let in_flight_finished_old = ran
        .iter()
        .filter(|r| r.finished > swapped && key_of(&requests, &r.prompt) == ["old"])
        .count();
    assert!(
        in_flight_finished_old >= 1,
        "a call in flight at the swap finished with the old key"
    );
    let after: Vec<(&str, Vec<&str>)> = ran
        .iter()
        .filter(|r| r.submitted > reloaded)
        .map(|r| (r.prompt.as_str(), key_of(&requests, &r.prompt)))
        .collect();
    assert!(after.len() >= 2 * LANES, "{after:?}");
    assert!(
        after.iter().all(|(_, keys)| keys == &["new"]),
        "jobs after the reload: {after:?}"
    );
    let after_revoke: Vec<&str> = requests
        .iter()
        .filter(|r| r.received_at > revoked)
        .map(|r| label(r.key.as_deref()))
        .collect();
    assert!(!after_revoke.is_empty());
    assert!(
        after_revoke.iter().all(|k| *k == "new"),
        "after the old key was revoked: {after_revoke:?}"
    );
}

#[tokio::test]
async fn reload_keys_swaps_a_changed_key_and_keeps_it_when_the_file_is_unusable() {
    let stack = Stack::start().await;
    let setup = rotating_setup(&stack, "1h");
    let worker = stack.worker(&setup).await;
    let client = stack.client().await;
    stack.mock.accept_keys(&[OLD, NEW]);

    setup.rotate_key(&format!("{NEW}\n"));
    let reload = worker.reload_keys().await;
    assert_eq!(reload.changed, vec!["mock".to_owned()]);
    assert!(reload.kept.is_empty());
    let outcome = run_job(&client, chat_job("chat", "rotated")).await;
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);

    setup.rotate_key("");
    let reload = worker.reload_keys().await;
    assert!(reload.changed.is_empty());
    assert_eq!(reload.kept, vec!["mock".to_owned()]);
    let outcome = run_job(&client, chat_job("chat", "kept")).await;
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    let requests = stack.mock.requests();
    assert_eq!(key_of(&requests, "rotated"), ["new"]);
    assert_eq!(key_of(&requests, "kept"), ["new"]);
    worker.stop().await;
}

#[tokio::test]
async fn sighup_rereads_the_key_file_without_waiting_for_the_interval() {
    let stack = Stack::start().await;
    let setup = rotating_setup(&stack, "1h");
    let mut worker = WorkerProcess::spawn(&setup, "hung-up").await;
    let client = stack.client().await;
    let outcome = run_job(&client, chat_job("chat", "before")).await;
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);

    stack.mock.accept_keys(&[OLD, NEW]);
    setup.rotate_key(NEW);
    worker.hang_up();
    worker.wait_for_log("provider key reloaded", WAIT).await;
    stack.mock.accept_keys(&[NEW]);
    let outcome = run_job(&client, chat_job("chat", "after")).await;
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    let requests = stack.mock.requests();
    assert_eq!(key_of(&requests, "before"), ["old"]);
    assert_eq!(key_of(&requests, "after"), ["new"]);

    assert_eq!(worker.terminate(WAIT).await.code(), Some(0));
    let log = worker.log();
    let line = log
        .lines()
        .find(|line| line.contains("provider key reloaded"))
        .expect("the reload's line");
    let event: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(event["provider"], "mock", "{line}");
    assert!(log.contains("SIGHUP received"), "{log}");
    assert!(
        !log.contains(OLD) && !log.contains(NEW),
        "a key is in the worker's log"
    );
}

#[tokio::test]
async fn an_empty_key_file_keeps_the_key_in_use_and_the_warning_names_the_file() {
    let stack = Stack::start().await;
    let setup = rotating_setup(&stack, "200ms");
    let mut worker = WorkerProcess::spawn(&setup, "emptied").await;
    let client = stack.client().await;

    setup.rotate_key("\n");
    worker
        .wait_for_log("provider key file not usable", WAIT)
        .await;
    let outcome = run_job(&client, chat_job("chat", "still old")).await;
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    assert_eq!(key_of(&stack.mock.requests(), "still old"), ["old"]);

    // The file comes back with a new key: it is used, and the empty file was warned
    // about once, however many times it was read.
    stack.mock.accept_keys(&[OLD, NEW]);
    setup.rotate_key(NEW);
    worker.wait_for_log("provider key reloaded", WAIT).await;
    assert_eq!(worker.terminate(WAIT).await.code(), Some(0));
    let log = worker.log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("provider key file not usable"))
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let event: serde_json::Value = serde_json::from_str(warnings[0]).unwrap();
    assert_eq!(event["level"], "WARN", "{}", warnings[0]);
    assert_eq!(event["provider"], "mock", "{}", warnings[0]);
    assert_eq!(
        event["path"],
        setup.key_file.display().to_string(),
        "{}",
        warnings[0]
    );
    assert_eq!(event["error"], "it is empty", "{}", warnings[0]);
    assert!(log.contains("provider key file usable again"), "{log}");
    assert!(
        !log.contains(OLD) && !log.contains(NEW),
        "a key is in the worker's log"
    );
}
