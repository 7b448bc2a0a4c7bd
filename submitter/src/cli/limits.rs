//! `submitter limits`: each fleet-wide limit, its use now, who waits, and the pauses a
//! provider's own rate-limit headers started.
//!
//! Everything comes from the limits bucket: live workers publish the limits they enforce
//! and how many of their jobs wait on each (with a lease, like their permits), next to
//! the shared holdings and window counters, so this needs nothing but NATS.

use std::fmt::Write as _;
use std::time::Duration;

use clap::Args;
use llmq_runtime::limits::{FleetStatus, Pause, Scope, ScopeStatus};
use llmq_submitter::{ClientOptions, Operator};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::print::{note, out, out_json};
use super::table::{Align, Table};
use super::{CliError, Exit};

#[derive(Debug, Args)]
pub struct LimitsArgs {
    /// Print the status as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: LimitsArgs, options: ClientOptions) -> Result<Exit, CliError> {
    let operator = Operator::connect(options).await?;
    let status = operator.limits().await?;
    if args.json {
        out_json(&status)?;
        return Ok(Exit::Success);
    }
    if status.scopes.is_empty() && status.pauses.is_empty() {
        note(format!(
            "no limits in use: no live worker of prefix '{}' has enforced one yet",
            operator.subjects().prefix()
        ));
        return Ok(Exit::Success);
    }
    out(&render(&status))?;
    Ok(Exit::Success)
}

/// The limits table, then the pauses table if any.
fn render(status: &FleetStatus) -> String {
    let mut table = Table::new(&[
        ("SCOPE", Align::Left),
        ("LIMIT", Align::Left),
        ("USED NOW", Align::Left),
        ("WAITING", Align::Left),
    ]);
    for scope in &status.scopes {
        for (i, (limit, used)) in rows(scope, status.at_ms).into_iter().enumerate() {
            let waiting = if i == 0 {
                waiting(scope)
            } else {
                String::new()
            };
            table.row(vec![name(&scope.scope), limit, used, waiting]);
        }
    }
    let mut text = table.render();
    let _ = write!(text, "\n{} live workers reporting\n", status.workers.len());
    if !status.pauses.is_empty() {
        text.push_str("\nPaused by the provider's rate-limit headers:\n");
        text.push_str(&pauses(&status.pauses, status.at_ms).render());
    }
    text
}

/// One row per limit of the scope: what it allows, and its use now.
fn rows(scope: &ScopeStatus, now_ms: u64) -> Vec<(String, String)> {
    let spec = scope.spec;
    let mut rows = Vec::new();
    if let Some(limit) = spec.concurrency() {
        let held: u32 = scope.holders.values().sum();
        let by: Vec<String> = scope
            .holders
            .iter()
            .map(|(worker, n)| format!("{worker} {n}"))
            .collect();
        let used = if by.is_empty() {
            "0 held".to_owned()
        } else {
            format!("{held} held ({})", by.join(", "))
        };
        rows.push((format!("concurrency {limit}"), used));
    }
    let window = humantime::format_duration(spec.window()).to_string();
    let ends = scope.window.map_or(String::new(), |w| {
        format!(
            " (window ends in {})",
            short(w.ends_ms.saturating_sub(now_ms))
        )
    });
    if let Some(limit) = spec.requests() {
        let used = scope.window.map_or(0, |w| w.requests);
        rows.push((
            format!("{limit} requests / {window}"),
            format!("{used}{ends}"),
        ));
    }
    if let Some(limit) = spec.tokens() {
        let used = scope.window.map_or(0, |w| w.tokens);
        rows.push((
            format!("{limit} tokens / {window}"),
            format!("{used}{ends}"),
        ));
    }
    if rows.is_empty() {
        rows.push(("-".to_owned(), "-".to_owned()));
    }
    rows
}

fn waiting(scope: &ScopeStatus) -> String {
    let total: usize = scope.waiting.values().sum();
    if total == 0 {
        return "0".to_owned();
    }
    let by: Vec<String> = scope
        .waiting
        .iter()
        .map(|(worker, n)| format!("{worker} {n}"))
        .collect();
    format!("{total} ({})", by.join(", "))
}

fn pauses(pauses: &[Pause], now_ms: u64) -> Table {
    let mut table = Table::new(&[
        ("SCOPE", Align::Left),
        ("UNTIL", Align::Left),
        ("REASON", Align::Left),
        ("REPORTED BY", Align::Left),
    ]);
    for pause in pauses {
        let until = format!(
            "{} (in {})",
            rfc3339(pause.until_ms),
            short(pause.until_ms.saturating_sub(now_ms))
        );
        table.row(vec![
            name(&pause.scope),
            until,
            pause.reason.clone(),
            pause.by.clone(),
        ]);
    }
    table
}

/// `deployment mock/gpt-4.1`, `tenant acme`, `tenant acme, model chat`.
fn name(scope: &Scope) -> String {
    scope.to_string()
}

/// A delay to a tenth of a second (`4.2s`), or to the second past a minute (`6m 3s`).
fn short(ms: u64) -> String {
    let tenths = ms.div_ceil(100);
    let (secs, tenth) = (tenths / 10, tenths % 10);
    if secs >= 60 {
        humantime::format_duration(Duration::from_secs(secs)).to_string()
    } else {
        format!("{secs}.{tenth}s")
    }
}

fn rfc3339(epoch_ms: u64) -> String {
    let nanos = i128::from(epoch_ms) * 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|at| at.replace_millisecond(0).ok())
        .and_then(|at| at.format(&Rfc3339).ok())
        .unwrap_or_else(|| epoch_ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmq_runtime::limits::{LimitSpec, WindowUse};
    use std::collections::BTreeMap;

    #[test]
    fn each_limit_is_a_row_with_its_use_and_the_waiting_workers() {
        let scope = ScopeStatus {
            scope: Scope::Tenant("acme".into()),
            spec: LimitSpec {
                concurrency: Some(2),
                rpm: Some(20),
                tpm: None,
                window: Some(Duration::from_secs(10)),
            },
            holders: BTreeMap::from([("w-0".to_owned(), 2)]),
            window: Some(WindowUse {
                requests: 12,
                tokens: 900,
                ends_ms: 5_250,
            }),
            waiting: BTreeMap::from([("w-0".to_owned(), 3), ("w-1".to_owned(), 1)]),
        };
        let pause = Pause {
            scope: Scope::Deployment {
                provider: "mock".into(),
                model: "m".into(),
            },
            until_ms: 2_500,
            reason: "requests remaining 0".into(),
            by: "w-1".into(),
        };
        let status = FleetStatus {
            at_ms: 1_000,
            scopes: vec![scope],
            pauses: vec![pause],
            workers: vec!["w-0".into(), "w-1".into()],
        };
        let text = render(&status);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("SCOPE"), "{text}");
        assert!(
            lines[1].contains("tenant acme")
                && lines[1].contains("concurrency 2")
                && lines[1].contains("2 held (w-0 2)")
                && lines[1].contains("4 (w-0 3, w-1 1)"),
            "{text}"
        );
        assert!(
            lines[2].contains("20 requests / 10s") && lines[2].contains("12 (window ends in 4.3s)"),
            "{text}"
        );
        assert!(text.contains("2 live workers reporting"), "{text}");
        assert!(
            text.contains("deployment mock/m")
                && text.contains("(in 1.5s)")
                && text.contains("requests remaining 0"),
            "{text}"
        );
        assert_eq!(short(61_000), "1m 1s");
        assert_eq!(rfc3339(1_500), "1970-01-01T00:00:01Z");
    }
}
