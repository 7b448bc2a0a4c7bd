//! `submitter usage`: tokens and cost per tenant and model over a time window.

use clap::Args;
use llmq_schemas::Timestamp;
use llmq_submitter::{BudgetStatus, ClientOptions, Operator, UsageQuery, UsageReport, UsageRow};

use super::print::{note, out, out_json};
use super::table::{Align, Table};
use super::time_arg::parse_instant;
use super::{CliError, Exit};

#[derive(Debug, Args)]
pub struct UsageArgs {
    /// Start of the window: a duration ago (24h, 7d) or an RFC 3339 time.
    #[arg(long, value_name = "WHEN", default_value = "24h", value_parser = parse_instant)]
    pub since: Timestamp,
    /// End of the window (default: now).
    #[arg(long, value_name = "WHEN", value_parser = parse_instant)]
    pub until: Option<Timestamp>,
    /// Every tenant, not just --tenant.
    #[arg(long)]
    pub all_tenants: bool,
    /// Sum per value of a registry label instead of per tenant and model: `label:team`,
    /// `label:cost_centre`.
    #[arg(long, value_name = "label:NAME", value_parser = parse_by)]
    pub by: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: UsageArgs, options: ClientOptions) -> Result<Exit, CliError> {
    let operator = Operator::connect(options).await?;
    let report = operator
        .usage_report(UsageQuery {
            since: args.since,
            until: args.until,
            tenant: None,
            all_tenants: args.all_tenants,
            by_label: args.by.clone(),
        })
        .await?;
    let budgets = budgets(&operator, args.all_tenants).await;
    if args.json {
        print_json(&report, &budgets)?;
        return Ok(Exit::Success);
    }
    let scope = report.tenant.as_deref().unwrap_or("all tenants");
    note(window_line(scope, report.since, report.until));
    if report.rows.is_empty() {
        note("no usage in this window");
        print_budgets(&budgets)?;
        return Ok(Exit::Success);
    }
    out(&table(&report, args.by.as_deref()).render())?;
    print_notes(&report);
    print_budgets(&budgets)?;
    Ok(Exit::Success)
}

/// The report with its budgets, as one JSON object.
fn print_json(report: &UsageReport, budgets: &[BudgetStatus]) -> Result<(), CliError> {
    let mut json = serde_json::to_value(report).map_err(|source| CliError::Json {
        what: "formatting JSON",
        source,
    })?;
    if let Some(object) = json.as_object_mut() {
        object.insert(
            "budgets".into(),
            serde_json::to_value(budgets).unwrap_or_default(),
        );
    }
    out_json(&json)
}

/// One row per (tenant, model) or label value, and the total.
fn table(report: &UsageReport, by: Option<&str>) -> Table {
    let group = match by {
        Some(label) => vec![(label.to_uppercase(), Align::Left)],
        None => vec![
            ("TENANT".into(), Align::Left),
            ("MODEL".into(), Align::Left),
        ],
    };
    let headers: Vec<(&str, Align)> = group
        .iter()
        .map(|(name, align)| (name.as_str(), *align))
        .chain([
            ("JOBS", Align::Right),
            ("SUCCEEDED", Align::Right),
            ("FAILED", Align::Right),
            ("PROMPT", Align::Right),
            ("COMPLETION", Align::Right),
            ("CACHED", Align::Right),
            ("REASONING", Align::Right),
            ("COST USD", Align::Right),
        ])
        .collect();
    let mut table = Table::new(&headers);
    for row in report.rows.iter().chain(std::iter::once(&report.total)) {
        table.row(cells(row, by.is_some()));
    }
    table
}

/// What the table's figures leave out or estimate.
fn print_notes(report: &UsageReport) {
    let total = &report.total;
    if total.has_unknown_prices() {
        note(format!(
            "+ unknown price: {} job processing(s) used models without a price ({}); their cost \
             is not in COST USD",
            total.unknown_price_events,
            total.missing_prices.join(", ")
        ));
    }
    if total.estimated_events > 0 {
        note(format!(
            "{} processing(s) had estimated token counts (the provider reported none)",
            total.estimated_events
        ));
    }
    if total.handed_back > 0 {
        note(format!(
            "{} processing(s) paid for tokens and handed their job back to the queue (every \
             deployment cooling down); their tokens and cost are included",
            total.handed_back
        ));
    }
    if report.undecodable > 0 {
        note(format!(
            "{} undecodable usage message(s) skipped",
            report.undecodable
        ));
    }
}

/// The tenants' budgets as the fleet counts them (empty, with a note, if unreadable).
async fn budgets(operator: &Operator, all_tenants: bool) -> Vec<BudgetStatus> {
    operator
        .budget_status(all_tenants)
        .await
        .unwrap_or_else(|err| {
            note(format!("budgets not shown: {err}"));
            Vec::new()
        })
}

/// Spend against budget this UTC day and month.
fn print_budgets(budgets: &[BudgetStatus]) -> Result<(), CliError> {
    if budgets.is_empty() {
        return Ok(());
    }
    let mut table = Table::new(&[
        ("TENANT", Align::Left),
        ("BUDGET", Align::Left),
        ("ENFORCE", Align::Left),
        ("SPENT USD", Align::Right),
        ("IN FLIGHT USD", Align::Right),
        ("BUDGET USD", Align::Right),
        ("REMAINING USD", Align::Right),
        ("", Align::Left),
    ]);
    for b in budgets {
        let enforce = match b.enforce {
            llmq_schemas::Enforce::Hard => "hard",
            llmq_schemas::Enforce::Soft => "soft",
        };
        table.row(vec![
            b.tenant.clone(),
            format!("{} {}", b.period, &b.key[1..]),
            enforce.to_owned(),
            format!("{:.6}", b.spent_usd),
            format!("{:.6}", b.reserved_usd),
            format!("{:.6}", b.budget_usd),
            format!("{:.6}", b.remaining_usd),
            if b.over {
                "OVER".to_owned()
            } else {
                String::new()
            },
        ]);
    }
    out(&table.render())
}

/// The header: both ends of the window to the second, so they read alike (`--since 24h`
/// is computed to the millisecond, the default end is now to the nanosecond).
fn window_line(scope: &str, since: Timestamp, until: Timestamp) -> String {
    let to_second =
        |at: Timestamp| Timestamp::from_unix_millis(at.unix_millis().div_euclid(1000) * 1000);
    format!(
        "usage of {scope} from {} to {}",
        to_second(since),
        to_second(until)
    )
}

/// `label:<name>` -> the label's name.
fn parse_by(text: &str) -> Result<String, String> {
    match text.strip_prefix("label:") {
        Some(name) if !name.is_empty() => Ok(name.to_owned()),
        _ => Err(format!(
            "expected label:<name> (e.g. label:team), got {text:?}"
        )),
    }
}

fn cells(row: &UsageRow, by_label: bool) -> Vec<String> {
    let cost = if row.has_unknown_prices() {
        format!("{:.6} + unknown price", row.cost_usd)
    } else {
        format!("{:.6}", row.cost_usd)
    };
    let group = match (by_label, &row.label) {
        (true, Some(label)) => vec![label.clone()],
        (true, None) => vec!["*".to_owned()],
        (false, _) => vec![row.tenant.clone(), row.model.clone()],
    };
    group
        .into_iter()
        .chain([
            row.jobs.to_string(),
            row.succeeded.to_string(),
            row.failed.to_string(),
            row.prompt_tokens.to_string(),
            row.completion_tokens.to_string(),
            row.cached_prompt_tokens.to_string(),
            row.reasoning_tokens.to_string(),
            cost,
        ])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_shows_both_ends_to_the_second() {
        let since = Timestamp::parse("2026-11-24T10:00:00.123Z").unwrap();
        let until = Timestamp::parse("2026-11-25T10:00:00.123456789Z").unwrap();
        assert_eq!(
            window_line("acme", since, until),
            "usage of acme from 2026-11-24T10:00:00Z to 2026-11-25T10:00:00Z"
        );
    }
}
