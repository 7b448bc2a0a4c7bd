//! Output conventions: results on stdout (so they pipe), everything about them on stderr.
//!
//! Writes go through these helpers rather than `println!`, which panics when stdout is a
//! closed pipe (`submitter ... | head -1`).

use std::fmt::Display;
use std::io::Write;

use llmq_schemas::{Cost, Outcome, OutcomeStatus};
use serde::Serialize;

use super::{CliError, Exit};

/// Writes `text` to stdout as is, flushed (streamed tokens).
pub fn out(text: &str) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|source| CliError::Io {
            what: "writing to stdout",
            source,
        })
}

/// Writes `text` and a newline to stdout.
pub fn out_line(text: impl Display) -> Result<(), CliError> {
    out(&format!("{text}\n"))
}

/// Pretty JSON to stdout.
pub fn out_json(value: &impl Serialize) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value).map_err(|source| CliError::Json {
        what: "formatting JSON",
        source,
    })?;
    out_line(text)
}

/// A line on stderr; a failure to write it is ignored (there is nowhere left to say so).
pub fn note(text: impl Display) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

/// How to show an outcome.
#[derive(Debug, Clone, Copy)]
pub struct Show {
    pub json: bool,
    pub quiet: bool,
    /// The answer was already streamed to stdout.
    pub streamed: bool,
}

/// Prints `outcome` and returns the exit code its status calls for.
pub fn outcome(outcome: &Outcome, show: Show) -> Result<Exit, CliError> {
    let succeeded = outcome.status == OutcomeStatus::Succeeded;
    if show.json {
        out_json(outcome)?;
    } else if succeeded && !show.streamed {
        out(&with_newline(&answer(outcome)))?;
    }
    if !succeeded {
        note(failure_line(outcome));
    } else if !show.quiet {
        note(summary_line(outcome));
    }
    Ok(if succeeded {
        Exit::Success
    } else {
        Exit::JobNotSucceeded
    })
}

/// The answer's text, or its tool calls as JSON when it has no text.
fn answer(outcome: &Outcome) -> String {
    let Some(response) = &outcome.response else {
        return String::new();
    };
    let text = response.text();
    if !text.is_empty() {
        return text.to_owned();
    }
    response
        .choices
        .first()
        .and_then(|choice| choice.message.tool_calls.as_ref())
        .and_then(|calls| serde_json::to_string_pretty(calls).ok())
        .unwrap_or_default()
}

pub fn with_newline(text: &str) -> String {
    if text.is_empty() || text.ends_with('\n') {
        text.to_owned()
    } else {
        format!("{text}\n")
    }
}

fn summary_line(outcome: &Outcome) -> String {
    let mut parts = vec![format!(
        "job {} {} in {} ms",
        outcome.job_id, outcome.status, outcome.timings.total_ms
    )];
    if let Some(last) = outcome.attempts.last() {
        parts.push(format!(
            "{} via {}/{}",
            outcome.model, last.provider, last.upstream_model
        ));
    }
    if let Some(usage) = &outcome.usage {
        parts.push(format!(
            "{} prompt + {} completion tokens",
            usage.prompt_tokens, usage.completion_tokens
        ));
    }
    match &outcome.cost {
        Some(Cost::Priced(cost)) => parts.push(format!("${:.6}", cost.total)),
        Some(Cost::UnknownPrice { missing }) => parts.push(format!(
            "cost unknown (no price for {})",
            missing.join(", ")
        )),
        None => {}
    }
    parts.join(" · ")
}

fn failure_line(outcome: &Outcome) -> String {
    let mut line = format!("job {} {}", outcome.job_id, outcome.status);
    if let Some(error) = &outcome.error {
        line.push_str(&format!(": {error}"));
        if let Some(status) = error.provider_status {
            line.push_str(&format!(" (provider HTTP {status})"));
        }
    }
    if let Some(partial) = &outcome.partial {
        line.push_str(&format!(
            "; attempt {} had produced {} characters before failing (in --json output)",
            partial.attempt,
            partial.content.chars().count()
        ));
    }
    line
}
