//! `all`: every scenario in one run, then the same-run ratios, one JSON file and the
//! chart. A scenario that breaks is recorded as a failure and the others still run, so
//! one broken part does not hide the rest of the picture.

use std::path::PathBuf;

use super::report::{Ratios, Report};
use super::setup::Env;
use super::{Options, Scenario, chart, run_one};
use crate::nats::workspace_root;

pub async fn run(options: &Options, env: &mut Env, report: &mut Report) -> anyhow::Result<()> {
    for scenario in Scenario::EACH {
        if let Err(err) = run_one(scenario, options, env, report).await {
            let message = format!("{}: {err:#}", scenario.name());
            eprintln!("bench: {message}");
            report.failures.push(message);
        }
    }
    report.env = env.clone();
    let ratios = ratios(report);
    println!("{}", ratios.table());
    report.ratios = Some(ratios);

    let chart_path = options
        .chart
        .clone()
        .unwrap_or_else(|| default_output("e2e-latency.svg"));
    match &report.e2e {
        Some(e2e) => match chart::latency_vs_load(e2e, env, &chart_path) {
            Ok(()) => println!("chart: {}", chart_path.display()),
            Err(err) => report.failures.push(format!("chart: {err:#}")),
        },
        None => report.failures.push("chart: no e2e results".into()),
    }
    Ok(())
}

/// Where `all` writes when no path is given: `target/bench/` in the workspace.
pub fn default_output(name: &str) -> PathBuf {
    workspace_root().join("target/bench").join(name)
}

fn ratios(report: &Report) -> Ratios {
    let e2e_best = report.e2e.as_ref().and_then(|e| e.best());
    let raw = report.jetstream_raw.as_ref().map(|r| r.median);
    let direct = report
        .direct
        .as_ref()
        .or_else(|| report.e2e.as_ref().and_then(|e| e.direct_baseline.as_ref()));
    let over = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let e2e_over_direct_at = match (&report.e2e, direct) {
        (Some(e2e), Some(direct)) => e2e
            .closed
            .iter()
            .filter_map(|s| {
                let d = direct.at(s.concurrency)?;
                (d.requests_per_sec > 0.0)
                    .then(|| (s.concurrency, s.jobs_per_sec / d.requests_per_sec))
            })
            .collect(),
        _ => Vec::new(),
    };
    Ratios {
        e2e_over_raw_publish: over(e2e_best, raw.map(|r| r.publish_per_sec)),
        e2e_over_raw_consume: over(e2e_best, raw.map(|r| r.consume_ack_per_sec)),
        e2e_over_direct_best: over(e2e_best, direct.and_then(|d| d.best())),
        e2e_over_direct_at,
    }
}
