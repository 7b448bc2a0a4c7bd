//! How a batch's progress is shown: a bar on a terminal, a plain line every few seconds
//! otherwise, JSON lines with `--json`; always on stderr, so stdout holds only results.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use llmq_schemas::BatchRecord;
use llmq_submitter::{BatchProgress, Plan, SubmitProgress};
use serde_json::json;

use crate::cli::print::note;

/// Between two plain or JSON lines.
const LINE_EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    mode: Mode,
    total: u64,
    last_line: Option<Instant>,
}

enum Mode {
    Bar(ProgressBar),
    Lines,
    Json,
}

impl Progress {
    pub fn new(json: bool, total: u64) -> Self {
        let mode = match (json, std::io::stderr().is_terminal()) {
            (true, _) => Mode::Json,
            (false, true) => Mode::Bar(bar(total)),
            (false, false) => Mode::Lines,
        };
        Self {
            mode,
            total,
            last_line: None,
        }
    }

    pub fn started(&mut self, plan: &Plan) {
        let text = format!(
            "batch {}: {} lines from {}",
            plan.id,
            plan.requests,
            plan.path.display()
        );
        match &self.mode {
            Mode::Bar(bar) => bar.println(text),
            Mode::Lines => note(text),
            Mode::Json => note(
                json!({"event": "plan", "batch": plan.id, "requests": plan.requests,
                "skipped": plan.skipped_count}),
            ),
        }
    }

    pub fn submitted(&mut self, p: SubmitProgress) {
        if let Mode::Bar(bar) = &self.mode {
            bar.set_position(p.published);
            bar.set_message(format!("submitting ({} already done)", p.already_done));
            return;
        }
        if self.due() {
            self.line(
                json!({"event": "submit", "published": p.published, "total": p.total,
                "already_done": p.already_done}),
                format!("submitted {}/{}", p.published, p.total),
            );
        }
    }

    pub fn submit_done(&mut self, record: &BatchRecord) {
        let text = format!(
            "submitted {} lines of batch {}",
            record.published, record.id
        );
        match &self.mode {
            Mode::Bar(bar) => {
                bar.println(text);
                bar.set_position(0);
                bar.reset_eta();
            }
            Mode::Lines => note(text),
            Mode::Json => note(json!({"event": "submitted", "batch": record.id,
                "published": record.published})),
        }
        self.last_line = None;
    }

    pub fn waited(&mut self, p: &BatchProgress) {
        let c = &p.counts;
        if let Mode::Bar(bar) = &self.mode {
            bar.set_position(c.ended());
            bar.set_message(format!(
                "{}: {} ok, {} failed",
                p.status,
                c.succeeded,
                c.failed + c.expired + c.cancelled
            ));
            return;
        }
        if self.due() {
            self.line(
                json!({"event": "progress", "status": p.status, "counts": c}),
                format!(
                    "{}: {}/{} done ({} succeeded, {} failed, {} queued)",
                    p.status,
                    c.ended(),
                    self.total,
                    c.succeeded,
                    c.failed + c.expired + c.cancelled,
                    c.queued
                ),
            );
        }
    }

    pub fn finish(&mut self, record: &BatchRecord) {
        if let Mode::Bar(bar) = &self.mode {
            bar.finish_and_clear();
        }
        let c = &record.counts;
        self.line(
            json!({"event": "finished", "status": record.status, "counts": c}),
            format!(
                "batch {} {}: {} succeeded, {} failed",
                record.id,
                record.status,
                c.succeeded,
                c.failed + c.expired + c.cancelled
            ),
        );
    }

    fn due(&mut self) -> bool {
        let due = self.last_line.is_none_or(|at| at.elapsed() >= LINE_EVERY);
        if due {
            self.last_line = Some(Instant::now());
        }
        due
    }

    fn line(&self, json: serde_json::Value, text: String) {
        match self.mode {
            Mode::Json => note(json),
            _ => note(text),
        }
    }
}

fn bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{bar:40} {pos}/{len} {per_sec} eta {eta} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}
