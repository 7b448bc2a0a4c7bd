//! One test's world: a nats-server, a mock provider, a temp dir, and helpers to start
//! workers and producers against them.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use llmq_schemas::{ChatRequest, Job, JobId, Outcome, UsageEvent};
use llmq_submitter::{Client, ClientOptions, NatsOptions, Operator};

use crate::mock::{MockOptions, MockProvider};
use crate::nats::{NatsOptions as ServerOptions, TestNats};
use crate::worker::{TestWorker, WorkerSetup, openai_mock_provider};

#[derive(Debug)]
pub struct Stack {
    pub nats: TestNats,
    pub mock: MockProvider,
    pub dir: tempfile::TempDir,
}

impl Stack {
    pub async fn start() -> Stack {
        Self::start_with(MockOptions::default(), ServerOptions::default()).await
    }

    pub async fn start_with(mock: MockOptions, server: ServerOptions) -> Stack {
        let nats = TestNats::start_with(server).await;
        let mock = MockProvider::start(mock).await;
        let dir = tempfile::Builder::new()
            .prefix("llmq-test-")
            .tempdir()
            .expect("temp dir");
        Stack { nats, mock, dir }
    }

    /// A stack whose mock waits `first_token_delay` before every answer: jobs that stay
    /// running while a test cancels, drains or kills them.
    pub async fn with_slow_mock(first_token_delay: Duration) -> Stack {
        Self::start_with(
            MockOptions {
                first_token_delay,
                ..MockOptions::default()
            },
            ServerOptions::default(),
        )
        .await
    }

    /// A worker setup with `body` (providers and models) against this stack.
    pub fn setup(&self, body: &str) -> WorkerSetup {
        WorkerSetup::new(
            self.dir.path(),
            &self.nats.url(),
            &self.mock.base_url(),
            body,
        )
    }

    /// One OpenAI-format provider at the mock (`max_concurrency` 64) and one model `chat`.
    pub fn simple_setup(&self) -> WorkerSetup {
        self.setup(&format!(
            "{}\n[models.chat]\ndeployments = [{{ provider = \"mock\", model = \"mock-model\" }}]\n",
            openai_mock_provider(64)
        ))
    }

    pub async fn worker(&self, setup: &WorkerSetup) -> TestWorker {
        TestWorker::start(setup.config()).await
    }

    /// A producer for tenant `default`.
    pub async fn client(&self) -> Client {
        self.client_with(ClientOptions::default()).await
    }

    /// An operator (registry, keys, dead letters, reports) as tenant `default`.
    pub async fn operator(&self) -> Operator {
        let options = ClientOptions {
            nats: NatsOptions::with_url(self.nats.url()),
            ..ClientOptions::default()
        };
        Operator::connect(options)
            .await
            .unwrap_or_else(|err| panic!("operator cannot connect: {err}"))
    }

    /// Applies a tenant registry file, as `submitter tenants apply --prune` does.
    pub async fn apply_registry(&self, text: &str) {
        let admin = self.operator().await;
        let entries = llmq_runtime::tenants::parse_registry(text)
            .unwrap_or_else(|problems| panic!("test registry is invalid:\n{problems}"));
        let changes = admin.tenants_diff(&entries, true).await.unwrap();
        admin.apply_tenants(&changes, 1).await.unwrap();
    }

    /// Every usage event stored for `job_id`, in stream order.
    pub async fn usage_events(&self, job_id: JobId) -> Vec<UsageEvent> {
        let js = async_nats::jetstream::new(self.nats.client().await);
        let stream = js.get_stream("LLMQ_USAGE").await.expect("usage stream");
        let total = stream.get_info().await.expect("stream info").state.messages as usize;
        if total == 0 {
            return Vec::new();
        }
        let consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::Config {
                // A reader: nothing to acknowledge, no cap on unacknowledged messages.
                ack_policy: async_nats::jetstream::consumer::AckPolicy::None,
                ..Default::default()
            })
            .await
            .expect("usage reader");
        let mut messages = consumer
            .fetch()
            .max_messages(total)
            .messages()
            .await
            .expect("fetch usage");
        let mut events = Vec::new();
        while let Some(message) = messages.next().await {
            let message = message.expect("usage message");
            let event: UsageEvent =
                serde_json::from_slice(&message.payload).expect("a usage event");
            if event.job_id == job_id {
                events.push(event);
            }
        }
        events
    }

    pub async fn client_with(&self, mut options: ClientOptions) -> Client {
        options.nats = NatsOptions {
            url: self.nats.url(),
            ..options.nats
        };
        Client::connect(options)
            .await
            .unwrap_or_else(|err| panic!("producer cannot connect: {err}"))
    }
}

/// An interactive job with one user message.
pub fn chat_job(model: &str, prompt: &str) -> Job {
    Job::new(model, ChatRequest::user(prompt))
}

/// Submits and waits for the outcome (60 s at most).
pub async fn run_job(client: &Client, job: Job) -> Outcome {
    let handle = client
        .submit(job)
        .await
        .unwrap_or_else(|err| panic!("submit failed: {err}"));
    handle
        .outcome_within(Duration::from_secs(60))
        .await
        .unwrap_or_else(|err| panic!("no outcome: {err}"))
}

/// Waits until `probe` returns `Some`, checking every 10 ms; panics with `what` after
/// `timeout`. For state that has no notification to wait on.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every event of a job, in order, up to and including the final outcome.
pub async fn collect_events(
    mut handle: llmq_submitter::JobHandle,
    timeout: Duration,
) -> (Vec<llmq_schemas::ReplyEvent>, Outcome) {
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let next = tokio::time::timeout_at(deadline, handle.next_event())
            .await
            .unwrap_or_else(|_| panic!("no final event within {timeout:?}; got {events:?}"));
        match next {
            Some(Ok(llmq_schemas::ReplyEvent::Final(outcome))) => {
                events.push(llmq_schemas::ReplyEvent::Final(outcome.clone()));
                return (events, *outcome);
            }
            Some(Ok(event)) => events.push(event),
            Some(Err(err)) => panic!("waiting for events: {err}"),
            None => panic!("events ended without a final outcome: {events:?}"),
        }
    }
}

/// Two OpenAI-format providers at the mock, `mock` and `mock2`, each with `max_concurrency`.
pub fn two_mock_providers(max_concurrency: usize) -> String {
    format!(
        "{}\n{}",
        crate::worker::openai_mock_provider(max_concurrency),
        crate::worker::openai_mock_provider(max_concurrency)
            .replace("[providers.mock]", "[providers.mock2]")
    )
}
