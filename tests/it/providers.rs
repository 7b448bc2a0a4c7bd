//! Every provider kind end to end, with exact usage and cost.

use std::time::Duration;

use llmq_schemas::{
    AttemptRoute, AttemptWarning, ChatRequest, Cost, ErrorType, Job, OutcomeStatus, ReplyEvent,
    Usage, UsageEvent, UsageSource,
};
use llmq_submitter::{Operator, UsageQuery};
use llmq_tests::mock::{
    Fault, MockOptions, ModelBehavior, REFUSAL_OUTPUT_TOKENS, ScriptedFault, WireFormat, mock_text,
    prompt_tokens_for,
};
use llmq_tests::nats::NatsOptions;
use llmq_tests::stack::{Stack, chat_job, collect_events, run_job};

/// One provider of each kind at the mock, one model per kind, with prices.
fn all_kinds() -> String {
    r#"
[providers.oai]
kind = "openai"
base_url = "{mock}/v1"
api_key_file = "{key_file}"
[providers.compat]
kind = "openai_compatible"
base_url = "{mock}/v1"
api_key_file = "{key_file}"
[providers.claude]
kind = "anthropic"
base_url = "{mock}"
api_key_file = "{key_file}"
[providers.azure]
kind = "azure"
base_url = "{mock}"
api_key_file = "{key_file}"
api_version = "2024-10-21"
[providers.gem]
kind = "gemini"
base_url = "{mock}"
api_key_file = "{key_file}"

[models.m-openai]
deployments = [{ provider = "oai", model = "oai-up" }]
[models.m-compat]
deployments = [{ provider = "compat", model = "compat-up" }]
[models.m-anthropic]
deployments = [{ provider = "claude", model = "claude-up" }]
default_max_tokens = 256
[models.m-azure]
deployments = [{ provider = "azure", model = "azure-deployment" }]
[models.m-gemini]
deployments = [{ provider = "gem", model = "gemini-up" }]

[[prices]]
provider = "oai"
model = "oai-up"
input = 2.0
cached_input = 0.5
output = 8.0
[[prices]]
provider = "compat"
model = "compat-up"
input = 1.0
output = 1.0
[[prices]]
provider = "claude"
model = "claude-up"
input = 3.0
cached_input = 0.3
cache_write = 3.75
output = 15.0
[[prices]]
provider = "azure"
model = "azure-deployment"
input = 2.0
cached_input = 0.5
output = 8.0
[[prices]]
provider = "gem"
model = "gemini-up"
input = 0.3
cached_input = 0.075
output = 2.5
"#
    .to_owned()
}

fn usd(cost: &Cost) -> f64 {
    cost.total_usd()
        .unwrap_or_else(|| panic!("unpriced: {cost:?}"))
}

async fn usage_event(stack: &Stack, job_id: uuid::Uuid) -> UsageEvent {
    let mut events = stack.usage_events(job_id).await;
    assert_eq!(events.len(), 1, "one usage event for {job_id}: {events:?}");
    events.remove(0)
}

#[tokio::test]
async fn every_kind_runs_end_to_end_with_the_same_usage_streaming_or_not() {
    let stack = Stack::start_with(
        MockOptions {
            cached_prompt_tokens: 8,
            cache_write_tokens: 4,
            ..MockOptions::default()
        },
        NatsOptions::default(),
    )
    .await;
    let worker = stack.worker(&stack.setup(&all_kinds())).await;
    let client = stack.client().await;
    let cases = [
        ("m-openai", WireFormat::OpenAi, "oai-up"),
        ("m-compat", WireFormat::OpenAi, "compat-up"),
        ("m-anthropic", WireFormat::Anthropic, "claude-up"),
        ("m-azure", WireFormat::Azure, "azure-deployment"),
        ("m-gemini", WireFormat::Gemini, "gemini-up"),
    ];
    for (model, format, upstream) in cases {
        let prompt = format!("explain queues for {model}");
        let mut usages = Vec::new();
        for stream in [false, true] {
            stack.mock.reset_stats();
            let mut job = Job::new(
                model,
                ChatRequest {
                    messages: vec![
                        llmq_schemas::Message::text(llmq_schemas::Role::System, "Be brief."),
                        llmq_schemas::Message::text(llmq_schemas::Role::User, prompt.clone()),
                    ],
                    ..ChatRequest::default()
                },
            );
            job.stream = stream;
            let outcome = run_job(&client, job).await;
            assert_eq!(
                outcome.status,
                OutcomeStatus::Succeeded,
                "{model} stream={stream}: {outcome:?}"
            );
            assert_eq!(
                outcome.text(),
                Some(mock_text(&prompt, 12).as_str()),
                "{model} stream={stream}"
            );
            let requests = stack.mock.requests();
            assert_eq!(requests.len(), 1, "{model}");
            let request = &requests[0];
            assert_eq!(request.format, format, "{model}");
            assert_eq!(request.model, upstream, "{model}");
            assert_eq!(request.stream, stream, "{model}");
            // The key travels in a header only.
            assert!(
                request
                    .query
                    .as_deref()
                    .is_none_or(|q| !q.contains("test-key")),
                "{model}: {:?}",
                request.query
            );
            let usage = outcome.usage.unwrap();
            let event = usage_event(&stack, outcome.job_id).await;
            assert_eq!(event.usage, usage, "{model}: outcome and usage event agree");
            assert_eq!(
                event.usage_source,
                UsageSource::Reported,
                "{model} stream={stream}"
            );
            assert_eq!(outcome.cost.as_ref(), Some(&event.cost));
            usages.push((usage, usd(&event.cost)));
        }
        assert_eq!(
            usages[0], usages[1],
            "{model}: streaming and non-streaming usage and cost"
        );
        let (usage, cost) = usages[0];
        // The mock's numbers, normalized: prompt includes cached (and, for Anthropic, cache
        // writes); completion is the content tokens.
        let prompt_tokens = prompt_tokens_for("Be brief.".len() + prompt.len(), 2).max(12);
        assert_eq!(usage.prompt_tokens, prompt_tokens, "{model}");
        assert_eq!(usage.completion_tokens, 12, "{model}");
        assert_eq!(usage.total_tokens, prompt_tokens + 12, "{model}");
        assert_eq!(usage.cached_prompt_tokens, 8, "{model}");
        let writes = if format == WireFormat::Anthropic {
            4
        } else {
            0
        };
        assert_eq!(usage.cache_write_tokens, writes, "{model}");
        let expected = match model {
            "m-openai" | "m-azure" => (prompt_tokens - 8) as f64 * 2.0 + 8.0 * 0.5 + 12.0 * 8.0,
            "m-compat" => (prompt_tokens - 8) as f64 + 8.0 + 12.0,
            "m-anthropic" => {
                (prompt_tokens - 12) as f64 * 3.0 + 8.0 * 0.3 + 4.0 * 3.75 + 12.0 * 15.0
            }
            "m-gemini" => (prompt_tokens - 8) as f64 * 0.3 + 8.0 * 0.075 + 12.0 * 2.5,
            _ => unreachable!(),
        } / 1e6;
        assert!(
            (cost - expected).abs() < 1e-12,
            "{model}: cost {cost} expected {expected}"
        );
    }
    worker.stop().await;
}

#[tokio::test]
async fn anthropic_overloaded_falls_back_to_openai() {
    let mut options = MockOptions::default();
    options.per_model.insert(
        "claude-up".into(),
        ModelBehavior {
            always: Some(Fault::Overloaded),
            ..ModelBehavior::default()
        },
    );
    let stack = Stack::start_with(options, NatsOptions::default()).await;
    let body = format!(
        "{}\n[models.smart]\ndeployments = [{{ provider = \"claude\", model = \"claude-up\" }}]\ndefault_max_tokens = 256\nfallbacks = [\"m-openai\"]\n",
        all_kinds()
    );
    let mut setup = stack.setup(&body);
    // Keep the failure-share cooldown out of it: three 529s per job, every job.
    setup.set("cooldown", "min_calls", "1000");
    let worker = stack.worker(&setup).await;
    let client = stack.client().await;
    for stream in [false, true] {
        let mut job = chat_job("smart", "fall back please");
        job.stream = stream;
        let outcome = run_job(&client, job).await;
        assert_eq!(outcome.status, OutcomeStatus::Succeeded, "{outcome:?}");
        let attempts: Vec<(AttemptRoute, &str, Option<ErrorType>, Option<u16>)> = outcome
            .attempts
            .iter()
            .map(|a| (a.route, a.provider.as_str(), a.error, a.http_status))
            .collect();
        assert_eq!(
            attempts,
            vec![
                (
                    AttemptRoute::Primary,
                    "claude",
                    Some(ErrorType::Overloaded),
                    Some(529)
                ),
                (
                    AttemptRoute::Retry,
                    "claude",
                    Some(ErrorType::Overloaded),
                    Some(529)
                ),
                (
                    AttemptRoute::Retry,
                    "claude",
                    Some(ErrorType::Overloaded),
                    Some(529)
                ),
                (AttemptRoute::ModelFallback, "oai", None, Some(200)),
            ],
            "stream={stream}"
        );
        assert_eq!(
            outcome.text(),
            Some(mock_text("fall back please", 12).as_str())
        );
    }
    worker.stop().await;
}

#[tokio::test]
async fn a_stream_without_usage_is_estimated_and_says_so() {
    let stack = Stack::start_with(
        MockOptions {
            omit_stream_usage: true,
            ..MockOptions::default()
        },
        NatsOptions::default(),
    )
    .await;
    let worker = stack.worker(&stack.setup(&all_kinds())).await;
    let client = stack.client().await;
    let mut job = chat_job("m-compat", "abcdefghijklmnop");
    job.stream = true;
    let outcome = run_job(&client, job).await;
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    let event = usage_event(&stack, outcome.job_id).await;
    assert_eq!(event.usage_source, UsageSource::Estimated);
    // The documented estimate: ceil(bytes / 4) + 3 per message, and the output's bytes / 4.
    let output = mock_text("abcdefghijklmnop", 12);
    assert_eq!(
        event.usage,
        Usage::new(16 / 4 + 3, (output.len() as u64).div_ceil(4)),
        "estimate, not zero"
    );
    assert!(event.usage.total_tokens > 0);
    worker.stop().await;
}

#[tokio::test]
async fn anthropic_tool_calls_come_back_in_the_openai_shape() {
    let stack = Stack::start().await;
    let worker = stack.worker(&stack.setup(&all_kinds())).await;
    let client = stack.client().await;
    for stream in [false, true] {
        let request: ChatRequest = serde_json::from_value(serde_json::json!({
            "messages": [{"role": "user", "content": "weather in Paris"}],
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}],
            "tool_choice": "required"
        }))
        .unwrap();
        let mut job = Job::new("m-anthropic", request);
        job.stream = stream;
        let outcome = run_job(&client, job).await;
        assert_eq!(outcome.status, OutcomeStatus::Succeeded, "{outcome:?}");
        let choice = &outcome.response.as_ref().unwrap().choices[0];
        assert_eq!(
            choice.finish_reason.as_deref(),
            Some("tool_calls"),
            "stream={stream}"
        );
        let calls = choice.message.tool_calls.as_ref().expect("tool calls");
        assert_eq!(calls[0].function.name, "get_weather");
        let args: serde_json::Value = serde_json::from_str(&calls[0].function.arguments).unwrap();
        assert_eq!(
            args,
            serde_json::json!({"query": "weather in Paris"}),
            "stream={stream}"
        );
        assert!(calls[0].id.starts_with("toolu_"));
        let sent = stack.mock.requests().last().unwrap().body.clone();
        assert_eq!(sent["tool_choice"]["type"], "any");
        assert_eq!(sent["tools"][0]["name"], "get_weather");
    }
    worker.stop().await;
}

#[tokio::test]
async fn the_usage_report_sums_tokens_and_cost_per_tenant_and_model() {
    let stack = Stack::start().await;
    let worker = stack.worker(&stack.setup(&all_kinds())).await;
    let client = stack.client().await;
    let mut expected = Usage::default();
    let mut cost = 0.0;
    for i in 0..5 {
        let outcome = run_job(&client, chat_job("m-openai", &format!("report {i}"))).await;
        expected.add(&outcome.usage.unwrap());
        cost += usd(outcome.cost.as_ref().unwrap());
    }
    let report = Operator::from_client(&client)
        .usage_report(UsageQuery::last(Duration::from_secs(300)))
        .await
        .unwrap();
    let row = report
        .rows
        .iter()
        .find(|r| r.model == "m-openai")
        .expect("a row for the model");
    assert_eq!(row.tenant, "default");
    assert_eq!(row.jobs, 5);
    assert_eq!(row.succeeded, 5);
    assert_eq!(row.prompt_tokens, expected.prompt_tokens);
    assert_eq!(row.completion_tokens, expected.completion_tokens);
    assert!(
        (row.cost_usd - cost).abs() < 1e-12,
        "{} vs {cost}",
        row.cost_usd
    );
    worker.stop().await;
}

/// `m-anthropic` and `m-gemini` with `content_policy_fallbacks` to `m-openai`.
fn with_policy_fallbacks() -> String {
    format!(
        r#"{}
[models.strict-claude]
deployments = [{{ provider = "claude", model = "claude-up" }}]
default_max_tokens = 256
content_policy_fallbacks = ["m-openai"]
[models.strict-gemini]
deployments = [{{ provider = "gem", model = "gemini-up" }}]
content_policy_fallbacks = ["m-openai"]
"#,
        all_kinds()
    )
}

#[tokio::test]
async fn a_refused_answer_is_billed_and_so_is_its_fallback() {
    let stack = Stack::start().await;
    let worker = stack.worker(&stack.setup(&with_policy_fallbacks())).await;
    let client = stack.client().await;
    let prompt = "something the model refuses";
    let prompt_tokens = prompt_tokens_for(prompt.len(), 1);
    let cases = [
        // Anthropic bills the input and the output generated up to the refusal.
        (
            "strict-claude",
            "claude-up",
            Usage::new(prompt_tokens, REFUSAL_OUTPUT_TOKENS),
        ),
        // Gemini bills a blocked prompt's input.
        ("strict-gemini", "gemini-up", Usage::new(prompt_tokens, 0)),
    ];
    for (model, upstream, refused) in cases {
        for stream in [false, true] {
            stack
                .mock
                .push_faults([ScriptedFault::for_model(upstream, Fault::ContentFiltered)]);
            let mut job = chat_job(model, prompt);
            job.stream = stream;
            let outcome = run_job(&client, job).await;
            let case = format!("{model} stream={stream}");
            assert_eq!(
                outcome.status,
                OutcomeStatus::Succeeded,
                "{case}: {outcome:?}"
            );
            let attempts: Vec<_> = outcome
                .attempts
                .iter()
                .map(|a| (a.route, a.upstream_model.as_str(), a.error))
                .collect();
            assert_eq!(
                attempts,
                [
                    (
                        AttemptRoute::Primary,
                        upstream,
                        Some(ErrorType::ContentFiltered)
                    ),
                    (AttemptRoute::ContentPolicyFallback, "oai-up", None),
                ],
                "{case}"
            );
            assert_eq!(outcome.attempts[0].usage, Some(refused), "{case}");
            let answered = outcome.attempts[1].usage.expect("the fallback's usage");
            let mut total = refused;
            total.add(&answered);
            assert_eq!(outcome.usage, Some(total), "{case}: both attempts billed");

            let event = usage_event(&stack, outcome.job_id).await;
            assert_eq!(event.usage, total, "{case}");
            assert_eq!(event.usage_source, UsageSource::Reported, "{case}");
            let billed: Vec<(u32, &str, Usage, UsageSource)> = event
                .attempts
                .iter()
                .map(|a| {
                    (
                        a.attempt,
                        a.upstream_model.as_str(),
                        a.usage,
                        a.usage_source,
                    )
                })
                .collect();
            assert_eq!(
                billed,
                [
                    (1, upstream, refused, UsageSource::Reported),
                    (2, "oai-up", answered, UsageSource::Reported),
                ],
                "{case}"
            );
            assert!(
                usd(&event.attempts[0].cost) > 0.0,
                "{case}: refused tokens cost"
            );
            assert_eq!(outcome.cost.as_ref(), Some(&event.cost), "{case}");
        }
    }
    worker.stop().await;
}

#[tokio::test]
async fn reasoning_tokens_are_named_by_every_kind_that_reports_them() {
    let stack = Stack::start_with(
        MockOptions {
            reasoning_tokens: 4,
            ..MockOptions::default()
        },
        NatsOptions::default(),
    )
    .await;
    let worker = stack.worker(&stack.setup(&all_kinds())).await;
    let client = stack.client().await;
    for model in ["m-openai", "m-azure", "m-anthropic", "m-gemini"] {
        for stream in [false, true] {
            let mut job = chat_job(model, "think first");
            job.stream = stream;
            let outcome = run_job(&client, job).await;
            assert_eq!(outcome.status, OutcomeStatus::Succeeded, "{model}");
            let usage = outcome.usage.unwrap();
            // Reasoning is a part of completion_tokens: 12 content tokens + 4 reasoning.
            assert_eq!(
                (usage.completion_tokens, usage.reasoning_tokens),
                (16, 4),
                "{model} stream={stream}"
            );
            let wire = outcome.response.unwrap().usage.unwrap();
            assert_eq!(
                wire.completion_tokens_details.map(|d| d.reasoning_tokens),
                Some(4),
                "{model} stream={stream}"
            );
        }
    }
    worker.stop().await;
}

fn tool_job(model: &str, stream: bool) -> Job {
    let request: ChatRequest = serde_json::from_value(serde_json::json!({
        "messages": [{"role": "user", "content": "weather in Paris"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}],
        "tool_choice": "required"
    }))
    .unwrap();
    let mut job = Job::new(model, request);
    job.stream = stream;
    job
}

const BROKEN_ARGUMENTS: &str = r#"{"query":"weather in Paris"#;

#[tokio::test]
async fn tool_arguments_that_are_not_json_fail_the_attempt_and_the_retry_answers() {
    let stack = Stack::start().await;
    let mut setup = stack.setup(&all_kinds());
    setup.set("cooldown", "min_calls", "1000");
    let worker = stack.worker(&setup).await;
    let client = stack.client().await;
    // Anthropic carries arguments as text only when streaming.
    let cases = [
        ("m-openai", "oai-up", false),
        ("m-openai", "oai-up", true),
        ("m-anthropic", "claude-up", true),
    ];
    for (model, upstream, stream) in cases {
        let case = format!("{model} stream={stream}");
        stack.mock.push_faults([ScriptedFault::for_model(
            upstream,
            Fault::InvalidToolArguments,
        )]);
        let handle = client.submit(tool_job(model, stream)).await.unwrap();
        let (events, outcome) = collect_events(handle, Duration::from_secs(30)).await;
        assert_eq!(
            outcome.status,
            OutcomeStatus::Succeeded,
            "{case}: {outcome:?}"
        );
        let attempts: Vec<_> = outcome
            .attempts
            .iter()
            .map(|a| (a.route, a.error))
            .collect();
        assert_eq!(
            attempts,
            [
                (AttemptRoute::Primary, Some(ErrorType::MalformedResponse)),
                (AttemptRoute::Retry, None),
            ],
            "{case}"
        );
        let message = outcome.attempts[0].error_message.as_deref().unwrap();
        assert!(
            message.starts_with("tool call 0 (get_weather, id "),
            "{case}: {message}"
        );
        assert!(
            outcome.attempts[0].usage.is_some(),
            "{case}: the broken answer is billed"
        );
        let call = &outcome.response.as_ref().unwrap().choices[0]
            .message
            .tool_calls
            .as_ref()
            .unwrap()[0];
        let arguments: serde_json::Value = serde_json::from_str(&call.function.arguments).unwrap();
        assert_eq!(
            arguments,
            serde_json::json!({"query": "weather in Paris"}),
            "{case}"
        );
        let restarts = events
            .iter()
            .filter(|e| matches!(e, ReplyEvent::Restart(_)))
            .count();
        assert_eq!(
            restarts,
            usize::from(stream),
            "{case}: streamed deltas are withdrawn"
        );
    }
    worker.stop().await;
}

#[tokio::test]
async fn passed_through_tool_arguments_are_flagged_and_the_history_goes_to_every_kind() {
    let stack = Stack::start().await;
    let body = format!(
        "{}\n[models.lenient]\ndeployments = [{{ provider = \"oai\", model = \"oai-up\" }}]\ninvalid_tool_arguments = \"pass_through\"\n",
        all_kinds()
    );
    let worker = stack.worker(&stack.setup(&body)).await;
    let client = stack.client().await;
    stack.mock.push_faults([ScriptedFault::for_model(
        "oai-up",
        Fault::InvalidToolArguments,
    )]);
    let outcome = run_job(&client, tool_job("lenient", true)).await;
    assert_eq!(outcome.status, OutcomeStatus::Succeeded, "{outcome:?}");
    assert_eq!(outcome.attempts.len(), 1);
    assert_eq!(
        outcome.attempts[0].warnings,
        [AttemptWarning::InvalidToolArguments]
    );
    let assistant = outcome.response.unwrap().choices[0].message.clone();
    let call = assistant.tool_calls.as_ref().unwrap()[0].clone();
    assert_eq!(
        call.function.arguments, BROKEN_ARGUMENTS,
        "passed through unchanged"
    );

    // The next turn holds that call; every provider kind takes it.
    for (model, format) in [
        ("m-anthropic", WireFormat::Anthropic),
        ("m-gemini", WireFormat::Gemini),
        ("m-openai", WireFormat::OpenAi),
    ] {
        let request: ChatRequest = serde_json::from_value(serde_json::json!({
            "messages": [
                {"role": "user", "content": "weather in Paris"},
                serde_json::to_value(&assistant).unwrap(),
                {"role": "tool", "tool_call_id": call.id, "content": "18C"},
                {"role": "user", "content": "and tomorrow?"}
            ],
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
        }))
        .unwrap();
        let outcome = run_job(&client, Job::new(model, request)).await;
        assert_eq!(
            outcome.status,
            OutcomeStatus::Succeeded,
            "{model}: {outcome:?}"
        );
        let sent = stack.mock.requests().last().unwrap().clone();
        assert_eq!(sent.format, format);
        let arguments = match format {
            WireFormat::Anthropic => sent.body["messages"][1]["content"][0]["input"].clone(),
            WireFormat::Gemini => {
                sent.body["contents"][1]["parts"][0]["functionCall"]["args"].clone()
            }
            _ => sent.body["messages"][1]["tool_calls"][0]["function"]["arguments"].clone(),
        };
        let expected = match format {
            WireFormat::OpenAi => serde_json::json!(BROKEN_ARGUMENTS),
            _ => serde_json::json!({"_raw_arguments": BROKEN_ARGUMENTS}),
        };
        assert_eq!(arguments, expected, "{model}");
    }
    worker.stop().await;
}
