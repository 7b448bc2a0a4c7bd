//! A provider outage longer than `max_deliver` cooldowns: batch jobs wait it out in the
//! worker and all succeed when it ends; none is dead-lettered, none fails. Interactive jobs
//! keep failing fast.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::future::join_all;
use llmq_schemas::{ErrorType, OutcomeStatus, Tier};
use llmq_tests::stack::{Stack, chat_job};
use llmq_tests::worker::WorkerSetup;
use tokio::net::{TcpListener, TcpStream};

/// A TCP front for the mock that can be switched off: while off, it accepts each
/// connection and closes it at once (the provider is unreachable: no HTTP answer at all).
struct Switch {
    up: Arc<AtomicBool>,
    base_url: String,
}

impl Switch {
    async fn start(upstream: std::net::SocketAddr) -> Switch {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let up = Arc::new(AtomicBool::new(true));
        let flag = Arc::clone(&up);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if flag.load(Ordering::SeqCst) {
                    tokio::spawn(forward(client, upstream));
                }
            }
        });
        Switch { up, base_url }
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }
}

async fn forward(mut client: TcpStream, upstream: std::net::SocketAddr) {
    if let Ok(mut server) = TcpStream::connect(upstream).await {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    }
}

/// Model `chat` on the mock behind `switch`; a deployment cools down for 300 ms after
/// two failed calls, retries start at 50 ms.
fn behind(stack: &Stack, switch: &Switch) -> WorkerSetup {
    let mut setup = stack.setup(&format!(
        r#"[providers.mock]
kind = "openai"
base_url = "{}/v1"
api_key_file = "{{key_file}}"
max_concurrency = 64
timeouts = {{ connect = "1s", first_token = "5s", inter_token = "5s", total = "10s" }}

[models.chat]
deployments = [{{ provider = "mock", model = "mock-model" }}]
"#,
        switch.base_url
    ));
    setup
        .set("cooldown", "duration", "\"300ms\"")
        .set("cooldown", "min_calls", "2")
        .set("retry", "base_delay", "\"50ms\"");
    setup
}

#[tokio::test]
async fn an_outage_longer_than_max_deliver_cooldowns_dead_letters_no_batch_job() {
    let stack = Stack::start().await;
    let switch = Switch::start(stack.mock.addr()).await;
    let mut setup = behind(&stack, &switch);
    setup.set("jetstream", "max_deliver", "2");
    let worker = stack.worker(&setup).await;
    let client = stack.client().await;

    switch.set_up(false);
    let mut handles = Vec::new();
    for line in 0..20 {
        let mut job = chat_job("chat", &format!("line {line}"));
        job.tier = Tier::Batch;
        handles.push(client.submit(job).await.unwrap());
    }
    // Interactive jobs still fail fast during the outage (within their limit wait).
    let started = Instant::now();
    let interactive = client
        .submit(chat_job("chat", "someone is waiting"))
        .await
        .unwrap()
        .outcome()
        .await
        .unwrap();
    assert_eq!(interactive.status, OutcomeStatus::Failed, "{interactive:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // Ten times max_deliver × the cooldown: the old hand-backs would have dead-lettered
    // every job three times over.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        stack.mock.request_count(),
        0,
        "the provider was unreachable"
    );
    switch.set_up(true);

    let outcomes = join_all(handles.into_iter().map(|h| h.outcome())).await;
    for outcome in outcomes {
        let outcome = outcome.unwrap();
        assert_eq!(outcome.status, OutcomeStatus::Succeeded, "{outcome:?}");
        assert_eq!(outcome.delivery, 1, "waited without using a delivery");
        let network_errors = outcome
            .attempts
            .iter()
            .filter(|a| a.error == Some(ErrorType::Network))
            .count();
        assert!(network_errors >= 1, "{:?}", outcome.attempts);
    }
    let letters = stack.operator().await.dlq_list().await.unwrap();
    assert!(letters.is_empty(), "{letters:?}");
    worker.stop().await;
}

#[tokio::test]
async fn a_batch_job_whose_deadline_comes_during_an_outage_ends_expired() {
    let stack = Stack::start().await;
    let switch = Switch::start(stack.mock.addr()).await;
    let setup = behind(&stack, &switch);
    let worker = stack.worker(&setup).await;
    let client = stack.client().await;
    switch.set_up(false);
    let mut job = chat_job("chat", "too late");
    job.tier = Tier::Batch;
    job.deadline = Some(llmq_schemas::Timestamp::now().plus(Duration::from_secs(2)));
    let outcome = client.submit(job).await.unwrap().outcome().await.unwrap();
    assert_eq!(outcome.status, OutcomeStatus::Expired, "{outcome:?}");
    assert_eq!(outcome.delivery, 1);
    assert_eq!(
        outcome.error.map(|e| e.kind),
        Some(ErrorType::DeadlineExceeded)
    );
    worker.stop().await;
}
