//! `policy`: what the tenant policy check costs per job.
//!
//! Two llmq side by side under the `e2e` load (closed loop, one job in flight and more):
//! one worker in `[tenants] mode = "open"` with no registry, and one in `"enforced"` with
//! a registry whose tenant has model globs, tiers, a `max_tokens` ceiling below what the
//! job asks (so every job is clamped) and labels (so every outcome and usage event carries
//! them). The producer submits as that tenant in both, so the only difference is the
//! policy: the worker's check (and the clamp and the labels it adds to what it writes),
//! and the submitter's own pre-check on its cached entry. Each enforced outcome must show
//! the clamp and the labels, or the run fails: the bench would be measuring nothing.
//! Steps alternate between the two ([`super::ab`]).

use serde::Serialize;

use super::ab::{self, Arm, Delta, Step};
use super::e2e::worker_spec;
use super::load::Window;
use super::report::{Facts, Report, Table};
use super::setup::{Env, Llmq, MockChild, MockSpec, Variant, job_payload};
use super::{Options, print_setup};

/// The producer's tenant, in both variants.
pub const TENANT: &str = "bench-team";

/// The registry of the enforced variant: the job (model `bench`, interactive, 64 tokens
/// asked) is allowed, and clamped to 32.
pub const REGISTRY: &str = r#"
[tenants.bench-team]
name = "Benchmark team"
models = ["chat-*", "bench*", "gpt-4.1"]
tiers = ["interactive", "batch"]
max_tokens = 32
over_max_tokens = "clamp"
max_request_bytes = 1_000_000
labels = { team = "bench", cost_centre = "cc-42" }

[tenants.other-team]
models = ["chat-*"]
"#;

#[derive(Debug, Serialize)]
pub struct PolicyReport {
    pub setup: Facts,
    pub steps: Vec<Step>,
    pub deltas: Vec<Delta>,
}

impl PolicyReport {
    pub fn tables(&self) -> Vec<Table> {
        let mut deltas = ab::deltas_table(
            "policy: what enforcing costs per job (enforced - open, same run)",
            &self.deltas,
        );
        deltas.note(
            "µs/job (1/jobs/s) = the machine's time per job enforced minus open; at one job in \
             flight it equals the added latency",
        );
        vec![
            ab::steps_table(
                "policy: open (no registry) vs enforced (registry, clamp, labels)",
                &self.steps,
            ),
            deltas,
        ]
    }
}

/// The enforced variant's outcomes show the policy applied: clamped, labelled.
fn clamped_and_labelled(outcome: &llmq_schemas::Outcome) -> Result<(), String> {
    if outcome.clamped.is_none() {
        return Err("enforced but not clamped to max_tokens 32".into());
    }
    if outcome.labels.get("team").map(String::as_str) != Some("bench") {
        return Err(format!("enforced but labels are {:?}", outcome.labels));
    }
    Ok(())
}

pub async fn run(options: &Options, env: &mut Env, report: &mut Report) -> anyhow::Result<()> {
    let spec = MockSpec::instant();
    let mock = MockChild::spawn(spec).await?;
    let worker = worker_spec(options);
    let open = Llmq::start_with(
        &mock.url,
        worker,
        1,
        &Variant {
            tenant: Some(TENANT),
            configure: Some(&|s| {
                s.set("tenants", "mode", "\"open\"");
            }),
            ..Variant::default()
        },
    )
    .await?;
    let enforced = Llmq::start_with(
        &mock.url,
        worker,
        1,
        &Variant {
            registry: Some(REGISTRY),
            tenant: Some(TENANT),
            configure: Some(&|s| {
                s.set("tenants", "mode", "\"enforced\"");
            }),
        },
    )
    .await?;
    env.nats_server = open.world.nats_version().await;
    let mut setup = Facts::default();
    setup
        .add("payload", format!("{} bytes per job, max_completion_tokens 64", job_payload().len()))
        .add("mock", format!("{} (lean mode)", spec.describe()))
        .add("worker", worker.describe())
        .add("open", "[tenants] mode = \"open\", no registry")
        .add(
            "enforced",
            "[tenants] mode = \"enforced\", registry of 2 tenants; the producer's: models = \
             [\"chat-*\", \"bench*\", \"gpt-4.1\"], both tiers, max_tokens 32 (clamp: every \
             job is clamped from 64), max_request_bytes, 2 labels",
        )
        .add("producer", format!("tenant {TENANT} in both (llmq_submitter, catalog check on)"))
        .add("closed loop", format!("concurrency {:?}", options.policy_concurrency))
        .add(
            "rounds",
            format!(
                "{} per step, open and enforced alternated (ABBA); median round by jobs/s",
                options.rounds
            ),
        )
        .add("duration", format!("{:?} per step after {:?} warm-up", options.duration, options.warmup))
        .add(
            "processes",
            "each variant: own nats-server and worker process; one mock process; producer: this process",
        );
    print_setup("policy", env, &setup);

    let warm = if options.quick { 3 } else { 50 };
    open.warm_up(warm, false).await?;
    enforced.warm_up(warm, false).await?;
    let arms = vec![
        Arm::new("open", open, mock.pid, ab::any_outcome)?,
        Arm::new("enforced", enforced, mock.pid, clamped_and_labelled)?,
    ];
    let window = Window {
        warmup: options.warmup,
        duration: options.duration,
    };
    let steps = ab::alternate(&arms, &options.policy_concurrency, options.rounds, window).await;
    println!();
    let stopped = ab::stop(arms, "policy").await;
    mock.stop().await;
    let deltas = steps
        .chunks(2)
        .filter_map(|pair| match pair {
            [open, enforced] => Some(Delta::between(open, enforced)),
            _ => None,
        })
        .collect();
    let result = PolicyReport {
        setup,
        steps,
        deltas,
    };
    for table in result.tables() {
        println!("{table}");
    }
    for s in &result.steps {
        report.fail(
            "policy",
            &format!("{} c={}", s.variant, s.concurrency),
            &s.failures,
        );
    }
    report.failures.extend(stopped);
    report.policy = Some(result);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use llmq_runtime::policy::{JobFacts, check};
    use llmq_runtime::tenants::{Lookup, TenantPolicy, parse_registry};
    use llmq_schemas::{Tenant, Tier};

    use super::*;
    use crate::bench::setup::{PROMPT, job};

    #[test]
    fn the_registry_lets_the_bench_job_run_clamped_and_labelled() {
        let entries = parse_registry(REGISTRY).unwrap();
        let entry = entries.into_iter().find(|e| e.id == TENANT).unwrap();
        let lookup = Lookup::Known(Arc::new(TenantPolicy::new(entry).unwrap()));
        let tenant = Tenant::parse(TENANT).unwrap();
        let job = job(PROMPT, false);
        let facts = JobFacts {
            tenant: &tenant,
            tier: Tier::Interactive,
            job: &job,
            payload_bytes: job_payload().len(),
        };
        let allowed = check(&lookup, facts).unwrap();
        assert!(allowed.clamped.is_some(), "every job is clamped");
        assert_eq!(allowed.labels["team"], "bench");
    }
}
