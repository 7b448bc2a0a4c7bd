//! What `batch-file` measured, and the tables it prints.

use serde::Serialize;

use super::check::OutputCheck;
use super::cpu::PhaseCpu;
use super::{GOAL_PEAK_BYTES, GOAL_SUBMIT_PER_SEC};
use crate::bench::load::Failures;
use crate::bench::report::{Facts, Table, cores, mib, rate};

/// One `submitter batch submit --wait` run.
#[derive(Debug, Clone, Serialize)]
pub struct CliRun {
    pub lines: usize,
    pub input_bytes: u64,
    /// Start to `plan` (process start, connect, the file read and checked).
    pub validate_s: f64,
    /// `plan` to `submitted` (every line published).
    pub submit_s: f64,
    pub submit_per_sec: f64,
    /// Start to `finished` (every line has an outcome).
    pub completion_s: f64,
    pub completion_per_sec: f64,
    /// `plan` to `finished`: the completion rate without the file's check.
    pub from_plan_per_sec: f64,
    /// `finished` to `results` (both files written).
    pub results_s: f64,
    /// Start to exit.
    pub total_s: f64,
    pub peak_rss_mib: f64,
    pub cpu: Vec<PhaseCpu>,
    pub check: OutputCheck,
}

/// The same jobs through `Client::submit_detached`, until the queue is empty.
#[derive(Debug, Clone, Serialize)]
pub struct LibraryRun {
    pub jobs: usize,
    pub publish_s: f64,
    pub publish_per_sec: f64,
    pub completion_s: f64,
    pub completion_per_sec: f64,
    pub cpu: Vec<PhaseCpu>,
}

#[derive(Debug, Serialize)]
pub struct BatchFileReport {
    pub setup: Facts,
    /// The small file first, then the large one.
    pub cli: Vec<CliRun>,
    pub library: LibraryRun,
    /// `/proc/loadavg` before and after: other work on the machine moves every figure.
    pub load_before: String,
    pub load_after: String,
    pub failures: Failures,
}

impl BatchFileReport {
    pub fn tables(&self) -> Vec<Table> {
        vec![
            self.cli_table(),
            self.rate_table(),
            self.cpu_table(),
            self.check_table(),
        ]
    }

    fn cli_table(&self) -> Table {
        let mut t = Table::new(
            "batch-file: `submitter batch submit FILE --wait --json -o OUT --errors ERR`",
            &[
                "lines",
                "validate s",
                "submit s",
                "submit lines/s",
                "completion s",
                "jobs/s",
                "results s",
                "total s",
                "CLI peak RSS MiB",
            ],
        );
        for r in &self.cli {
            t.row(vec![
                r.lines.to_string(),
                format!("{:.2}", r.validate_s),
                format!("{:.2}", r.submit_s),
                rate(r.submit_per_sec),
                format!("{:.2}", r.completion_s),
                rate(r.completion_per_sec),
                format!("{:.2}", r.results_s),
                format!("{:.2}", r.total_s),
                mib(r.peak_rss_mib),
            ]);
        }
        t.note(format!(
            "goals: submit >= {} lines/s; CLI peak RSS < 100 MB ({} MiB), flat in the lines",
            rate(GOAL_SUBMIT_PER_SEC),
            mib(GOAL_PEAK_BYTES / 1_048_576.0)
        ));
        if let [small, large] = self.cli.as_slice() {
            t.note(format!(
                "peak RSS {} MiB at {} lines, {} MiB at {} lines; the large file {} MiB",
                mib(small.peak_rss_mib),
                rate(small.lines as f64),
                mib(large.peak_rss_mib),
                rate(large.lines as f64),
                mib(large.input_bytes as f64 / 1_048_576.0)
            ));
        }
        t
    }

    fn rate_table(&self) -> Table {
        let mut t = Table::new(
            "batch-file: the same jobs, CLI against the library",
            &["path", "jobs", "publish lines/s", "s", "jobs/s"],
        );
        if let Some(r) = self.cli.last() {
            t.row(vec![
                "CLI, start -> finished".into(),
                r.lines.to_string(),
                rate(r.submit_per_sec),
                format!("{:.2}", r.completion_s),
                rate(r.completion_per_sec),
            ]);
            t.row(vec![
                "CLI, plan -> finished (no file check)".into(),
                r.lines.to_string(),
                rate(r.submit_per_sec),
                format!("{:.2}", r.completion_s - r.validate_s),
                rate(r.from_plan_per_sec),
            ]);
        }
        let l = &self.library;
        t.row(vec![
            "library submit_detached, 256 in flight -> queue empty".into(),
            l.jobs.to_string(),
            rate(l.publish_per_sec),
            format!("{:.2}", l.completion_s),
            rate(l.completion_per_sec),
        ]);
        if let Some(r) = self.cli.last().filter(|_| l.completion_per_sec > 0.0) {
            t.note(format!(
                "CLI / library jobs/s: {:.2} from the start, {:.2} from the plan",
                r.completion_per_sec / l.completion_per_sec,
                r.from_plan_per_sec / l.completion_per_sec
            ));
        }
        t
    }

    fn cpu_table(&self) -> Table {
        let mut t = Table::new(
            "batch-file: CPU per phase (cores; the producer is the CLI or this process)",
            &[
                "run",
                "phase",
                "s",
                "producer",
                "worker",
                "nats-server",
                "mock",
                "all",
                "producer µs/line",
            ],
        );
        let large = self.cli.last().map(|r| ("CLI", r.lines, &r.cpu));
        let library = Some(("library", self.library.jobs, &self.library.cpu));
        for (run, lines, phases) in large.into_iter().chain(library) {
            for p in phases {
                let mut row = vec![format!("{run} {lines}"), p.phase.clone()];
                row.push(format!("{:.2}", p.seconds));
                row.extend(p.cores.iter().map(|(_, c)| cores(*c)));
                row.push(cores(p.cores.iter().map(|(_, c)| c).sum()));
                let producer = p.cores.first().map_or(0.0, |(_, c)| *c);
                row.push(format!("{:.1}", producer * p.seconds / lines as f64 * 1e6));
                t.row(row);
            }
        }
        t.note(format!(
            "load average (1, 5, 15 min) before: {}; after: {}",
            self.load_before, self.load_after
        ));
        t
    }

    fn check_table(&self) -> Table {
        let mut t = Table::new(
            "batch-file: the results files",
            &[
                "lines",
                "output",
                "errors",
                "missing",
                "twice",
                "unknown",
                "input order",
                "problems",
            ],
        );
        for r in &self.cli {
            let c = &r.check;
            t.row(vec![
                r.lines.to_string(),
                c.output_lines.to_string(),
                c.error_lines.to_string(),
                c.missing.to_string(),
                c.duplicated.to_string(),
                c.unknown.to_string(),
                if c.in_input_order { "yes" } else { "no" }.into(),
                if c.problems.is_empty() {
                    "none".into()
                } else {
                    c.problems.join("; ")
                },
            ]);
        }
        t
    }
}
