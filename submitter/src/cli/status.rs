//! `submitter status`: what the queue is doing, at a glance (admin).

use std::time::Duration;

use clap::Args;
use llmq_submitter::{ClientOptions, Operator, Status};

use super::print::{out, out_json};
use super::table::{Align, Table};
use super::{CliError, Exit};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print the status as JSON.
    #[arg(long, conflicts_with = "watch")]
    pub json: bool,
    /// Refresh every interval until interrupted (on a terminal: in place).
    #[arg(long, value_name = "DURATION", num_args = 0..=1, default_missing_value = "2s", value_parser = humantime::parse_duration)]
    pub watch: Option<Duration>,
}

pub async fn run(args: StatusArgs, options: ClientOptions) -> Result<Exit, CliError> {
    let operator = Operator::connect(options).await?;
    loop {
        let status = operator.status().await?;
        if args.json {
            out_json(&status)?;
            return Ok(Exit::Success);
        }
        let Some(every) = args.watch else {
            out(&render(&status))?;
            return Ok(Exit::Success);
        };
        if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            out("\x1b[2J\x1b[H")?; // clear, home
        }
        out(&render(&status))?;
        tokio::time::sleep(every).await;
    }
}

fn render(status: &Status) -> String {
    let mut queues = Table::new(&[
        ("MODEL", Align::Left),
        ("TIER", Align::Left),
        ("QUEUED", Align::Right),
        ("OLDEST", Align::Right),
        ("IN FLIGHT", Align::Right),
        ("REDELIVERED", Align::Right),
        ("PULLS WAITING", Align::Right),
    ]);
    for q in &status.queues {
        queues.row(vec![
            q.model.clone(),
            q.tier.as_str().to_owned(),
            q.queued.to_string(),
            q.oldest_ms
                .map_or_else(|| "-".into(), |ms| format!("{:.1}s", ms as f64 / 1000.0)),
            q.in_flight.to_string(),
            q.redelivered.to_string(),
            q.waiting_pulls.to_string(),
        ]);
    }
    let mut workers = Table::new(&[
        ("WORKER", Align::Left),
        ("VERSION", Align::Left),
        ("UPTIME", Align::Right),
        ("LIVE", Align::Left),
        ("MODELS", Align::Left),
    ]);
    for w in &status.workers {
        workers.row(vec![
            w.id.clone(),
            w.version.clone(),
            humantime::format_duration(Duration::from_secs(w.uptime_s)).to_string(),
            if w.live { "yes" } else { "no" }.into(),
            w.models.join(", "),
        ]);
    }
    let mut streams = Table::new(&[
        ("STREAM", Align::Left),
        ("MESSAGES", Align::Right),
        ("LEADER", Align::Left),
        ("REPLICAS (current, lag)", Align::Left),
    ]);
    for s in &status.streams {
        let replicas: Vec<String> = s
            .replicas
            .iter()
            .map(|(name, current, lag)| {
                format!(
                    "{name} ({}, {lag})",
                    if *current { "current" } else { "behind" }
                )
            })
            .collect();
        streams.row(vec![
            s.name.clone(),
            s.messages.to_string(),
            s.leader.clone().unwrap_or_else(|| "-".into()),
            if replicas.is_empty() {
                "-".into()
            } else {
                replicas.join(", ")
            },
        ]);
    }
    let dead: Vec<String> = status
        .dead_letters
        .iter()
        .map(|(reason, n)| format!("{reason}: {n}"))
        .collect();
    format!(
        "status at {}\n\n{}\n{}\ndead letters: {}\n\n{}",
        status.at,
        queues.render(),
        workers.render(),
        if dead.is_empty() {
            "none".into()
        } else {
            dead.join(", ")
        },
        streams.render()
    )
}
