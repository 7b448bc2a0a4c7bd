//! What a run prints and writes: aligned text tables for people, one JSON document for
//! machines (`--json-out`), with the same numbers.
//!
//! Every scenario's result is plain serializable data; its `tables()` renders it. The
//! report also carries the functional failures (a job that did not succeed), which decide
//! the exit code; timings never do.

use std::fmt;
use std::path::Path;

use anyhow::Context;
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use super::direct::DirectReport;
use super::e2e::E2eReport;
use super::edge::EdgeReport;
use super::inflight::InflightReport;
use super::jetstream_raw::RawReport;
use super::limits::LimitsReport;
use super::policy::PolicyReport;
use super::scale::ScaleReport;
use super::setup::Env;
use super::stream::StreamReport;

/// Key-value facts in insertion order (serialized as a JSON object).
#[derive(Debug, Clone, Default)]
pub struct Facts(pub Vec<(String, String)>);

impl Facts {
    pub fn add(&mut self, key: impl Into<String>, value: impl fmt::Display) -> &mut Self {
        self.0.push((key.into(), value.to_string()));
        self
    }

    pub fn print(&self, title: &str) {
        println!("{title}");
        let width = self.0.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (key, value) in &self.0 {
            println!("  {key:<width$}  {value}");
        }
        println!();
    }
}

impl Serialize for Facts {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// A text table: a title, headers, rows, notes under it.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub title: String,
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
    pub notes: Vec<String>,
}

impl Table {
    pub fn new(title: impl Into<String>, headers: &[&str]) -> Table {
        Table {
            title: title.into(),
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            ..Table::default()
        }
    }

    pub fn row(&mut self, cells: Vec<String>) -> &mut Self {
        self.rows.push(cells);
        self
    }

    pub fn note(&mut self, note: impl Into<String>) -> &mut Self {
        self.notes.push(note.into());
        self
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            cells
                .iter()
                .enumerate()
                .take(columns)
                .map(|(i, c)| {
                    let pad = widths[i] - c.chars().count();
                    // First column left-aligned (labels), numbers right-aligned.
                    if i == 0 {
                        format!("{c}{}", " ".repeat(pad))
                    } else {
                        format!("{}{c}", " ".repeat(pad))
                    }
                })
                .collect::<Vec<_>>()
                .join("  ")
        };
        writeln!(f, "{}", self.title)?;
        writeln!(f, "  {}", line(&self.headers))?;
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        writeln!(f, "  {}", rule.join("  "))?;
        for row in &self.rows {
            writeln!(f, "  {}", line(row))?;
        }
        for note in &self.notes {
            writeln!(f, "  {note}")?;
        }
        Ok(())
    }
}

/// Microseconds as milliseconds with three decimals (`0.412`).
pub fn ms(us: i64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

/// One percentile of `summary` as [`ms`], or `-` when it has no samples.
pub fn pct(summary: &super::stats::Summary, pick: fn(&super::stats::Summary) -> i64) -> String {
    if summary.count == 0 {
        "-".into()
    } else {
        ms(pick(summary))
    }
}

/// A rate with thousands grouped (`12,345`).
pub fn rate(per_sec: f64) -> String {
    let n = per_sec.round() as i64;
    let digits = n.abs().to_string();
    let mut grouped = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(ch);
    }
    if n < 0 {
        format!("-{grouped}")
    } else {
        grouped
    }
}

pub fn mib(value: f64) -> String {
    format!("{value:.1}")
}

pub fn cores(value: f64) -> String {
    format!("{value:.2}")
}

/// Throughput ratios measured in the same run.
#[derive(Debug, Clone, Serialize)]
pub struct Ratios {
    /// Best e2e closed-loop jobs/s over JetStream async publish msgs/s.
    pub e2e_over_raw_publish: Option<f64>,
    /// Best e2e closed-loop jobs/s over JetStream consume+ack msgs/s.
    pub e2e_over_raw_consume: Option<f64>,
    /// Best e2e closed-loop jobs/s over the best direct req/s.
    pub e2e_over_direct_best: Option<f64>,
    /// Per concurrency: e2e jobs/s over direct req/s.
    pub e2e_over_direct_at: Vec<(usize, f64)>,
}

impl Ratios {
    pub fn table(&self) -> Table {
        let mut t = Table::new("Ratios (same run)", &["ratio", "value"]);
        let fmt = |v: Option<f64>| v.map_or_else(|| "n/a".into(), |v| format!("{v:.3}"));
        t.row(vec![
            "e2e best / jetstream-raw publish".into(),
            fmt(self.e2e_over_raw_publish),
        ]);
        t.row(vec![
            "e2e best / jetstream-raw consume+ack".into(),
            fmt(self.e2e_over_raw_consume),
        ]);
        t.row(vec![
            "e2e best / direct best".into(),
            fmt(self.e2e_over_direct_best),
        ]);
        for (c, r) in &self.e2e_over_direct_at {
            t.row(vec![
                format!("e2e / direct at concurrency {c}"),
                format!("{r:.3}"),
            ]);
        }
        t
    }
}

/// Everything one invocation measured.
#[derive(Debug, Serialize)]
pub struct Report {
    pub env: Env,
    pub options: Facts,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jetstream_raw: Option<RawReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direct: Option<DirectReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e2e: Option<E2eReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edge: Option<EdgeReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inflight: Option<InflightReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale: Option<ScaleReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub durability: Option<super::durability::DurabilityReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sizes: Option<super::sizes::SizesReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<super::priority::PriorityReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fairness: Option<super::fairness::FairnessReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_file: Option<super::batch_file::BatchFileReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratios: Option<Ratios>,
    /// Functional failures: any makes the run exit non-zero.
    pub failures: Vec<String>,
}

impl Report {
    pub fn new(env: Env, options: Facts) -> Report {
        Report {
            env,
            options,
            jetstream_raw: None,
            direct: None,
            e2e: None,
            stream: None,
            edge: None,
            inflight: None,
            scale: None,
            policy: None,
            limits: None,
            durability: None,
            sizes: None,
            priority: None,
            fairness: None,
            batch_file: None,
            ratios: None,
            failures: Vec::new(),
        }
    }

    /// Adds `scenario`'s failures (their count and first messages) to the report.
    pub fn fail(&mut self, scenario: &str, what: &str, failures: &super::load::Failures) {
        if failures.count > 0 {
            self.failures.push(format!(
                "{scenario}: {what}: {} failed (first: {})",
                failures.count,
                failures.first.join(" | ")
            ));
        }
    }

    /// Scenarios of `ran` without and with failures. A failure no scenario owns (the
    /// chart) counts as one failed more, so it cannot read as a pass.
    pub fn verdict(&self, ran: &[super::Scenario]) -> (usize, usize) {
        let owned = |name: &str| {
            let prefix = format!("{name}:");
            self.failures
                .iter()
                .filter(move |f| f.starts_with(&prefix))
                .count()
        };
        let failed = ran.iter().filter(|s| owned(s.name()) > 0).count();
        let attributed: usize = ran.iter().map(|s| owned(s.name())).sum();
        let stray = usize::from(attributed < self.failures.len());
        (ran.len() - failed, failed + stray)
    }

    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text + "\n").with_context(|| format!("write {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let mut t = Table::new("T", &["name", "n"]);
        t.row(vec!["a".into(), "1".into()])
            .row(vec!["long name".into(), "12,345".into()]);
        t.note("note");
        let text = t.to_string();
        assert!(text.contains("  a               1\n"), "{text}");
        assert!(text.contains("  long name  12,345\n"), "{text}");
        assert!(text.ends_with("  note\n"));
    }

    #[test]
    fn formats_numbers() {
        assert_eq!(ms(412), "0.412");
        assert_eq!(ms(-1500), "-1.500");
        assert_eq!(rate(1234567.4), "1,234,567");
        assert_eq!(rate(999.0), "999");
        assert_eq!(rate(-1000.0), "-1,000");
    }

    #[test]
    fn verdict_counts_scenarios_and_stray_failures() {
        use super::super::Scenario;
        let env = crate::bench::setup::Env::probe();
        let mut report = Report::new(env, Facts::default());
        let all = Scenario::EACH;
        let n = all.len();
        assert_eq!(report.verdict(&all), (n, 0));
        report
            .failures
            .push("e2e: closed loop c=1: 2 failed".into());
        report
            .failures
            .push("e2e: open loop 100/s: 1 failed".into());
        assert_eq!(report.verdict(&all), (n - 1, 1));
        report.failures.push("chart: no e2e results".into());
        assert_eq!(report.verdict(&all), (n - 1, 2));
        assert_eq!(report.verdict(&[Scenario::Direct]), (1, 1));
    }

    #[test]
    fn facts_serialize_in_order() {
        let mut facts = Facts::default();
        facts.add("z", 1).add("a", "x");
        assert_eq!(
            serde_json::to_string(&facts).unwrap(),
            r#"{"z":"1","a":"x"}"#
        );
    }
}
