//! The results files against the input: every `custom_id` exactly once over the output
//! and errors files (the CLI writes no errors file when every line succeeded), the output
//! in input order, and the CLI's own counts equal to the files'.

use std::io::BufRead;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::line_index;

/// What the results files held, against the input and the CLI's own counts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OutputCheck {
    pub output_lines: u64,
    pub error_lines: u64,
    /// Input `custom_id`s found in neither file, found more than once, and ids no input
    /// line has.
    pub missing: u64,
    pub duplicated: u64,
    pub unknown: u64,
    /// The output file's lines follow the input's order (the CLI's default).
    pub in_input_order: bool,
    /// Problems found, each a functional failure.
    pub problems: Vec<String>,
}

/// The part of a results line the check reads.
#[derive(Deserialize)]
struct ResultLine {
    custom_id: String,
}

/// Reads both results files: every input `custom_id` exactly once over the two, the
/// output file in input order.
pub(super) fn check_files(
    output: &Path,
    errors: &Path,
    lines: usize,
) -> anyhow::Result<OutputCheck> {
    let mut seen = vec![0u32; lines];
    let mut check = OutputCheck {
        in_input_order: true,
        ..OutputCheck::default()
    };
    let mut last = None;
    for (path, is_output) in [(output, true), (errors, false)] {
        // No errors file is written when every line succeeded (as OpenAI's batch has none).
        if !is_output && !path.exists() {
            continue;
        }
        let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
        for line in std::io::BufReader::new(file).lines() {
            let line = line?;
            let index = serde_json::from_str::<ResultLine>(&line)
                .ok()
                .and_then(|l| line_index(&l.custom_id))
                .filter(|&i| i < lines);
            *if is_output {
                &mut check.output_lines
            } else {
                &mut check.error_lines
            } += 1;
            let Some(index) = index else {
                check.unknown += 1;
                continue;
            };
            seen[index] += 1;
            if is_output {
                check.in_input_order &= last.is_none_or(|l| l < index);
                last = Some(index);
            }
        }
    }
    check.missing = seen.iter().filter(|&&n| n == 0).count() as u64;
    check.duplicated = seen.iter().filter(|&&n| n > 1).count() as u64;
    check.files_problems(lines);
    Ok(check)
}

impl OutputCheck {
    /// What the files alone get wrong.
    fn files_problems(&mut self, lines: usize) {
        let written = self.output_lines + self.error_lines;
        let problems = [
            (
                written != lines as u64,
                format!("{written} lines written for {lines} input lines"),
            ),
            (
                self.error_lines > 0,
                format!("{} lines did not succeed", self.error_lines),
            ),
            (
                self.missing > 0,
                format!("{} custom_ids missing", self.missing),
            ),
            (
                self.duplicated > 0,
                format!("{} custom_ids written more than once", self.duplicated),
            ),
            (
                self.unknown > 0,
                format!("{} lines with an unknown custom_id", self.unknown),
            ),
            (
                !self.in_input_order,
                "the output file is not in input order".to_owned(),
            ),
        ];
        self.problems
            .extend(problems.into_iter().filter(|(bad, _)| *bad).map(|(_, p)| p));
    }

    /// The CLI's own counts (its `plan` and `results` events, its final record) against
    /// the files.
    pub(super) fn agree(&mut self, lines: usize, plan: &Value, results: &Value, record: &Value) {
        let counts = &record["counts"];
        let count = |v: &Value| v.as_u64().unwrap_or(u64::MAX);
        let not_ok = ["failed", "expired", "cancelled"]
            .iter()
            .map(|k| count(&counts[*k]))
            .fold(0u64, u64::saturating_add);
        let checks = [
            ("plan requests", count(&plan["requests"]), lines as u64),
            ("record total", count(&counts["total"]), lines as u64),
            (
                "record succeeded",
                count(&counts["succeeded"]),
                self.output_lines,
            ),
            ("record not succeeded", not_ok, self.error_lines),
            (
                "results output_lines",
                count(&results["output_lines"]),
                self.output_lines,
            ),
            (
                "results error_lines",
                count(&results["error_lines"]),
                self.error_lines,
            ),
        ];
        for (what, said, found) in checks {
            if said != found {
                self.problems
                    .push(format!("{what} says {said}, the files hold {found}"));
            }
        }
        if record["status"] != "completed" {
            self.problems.push(format!(
                "the batch ended {}, not completed",
                record["status"]
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::custom_id;
    use super::*;

    fn results_line(index: usize) -> String {
        format!(
            r#"{{"id":"batch_req_x","custom_id":"{}","response":{{}},"error":null}}"#,
            custom_id(index)
        )
    }

    fn check(output: &[usize], errors: &[usize], lines: usize) -> OutputCheck {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, indexes: &[usize]| {
            let path = dir.path().join(name);
            let text: Vec<String> = indexes.iter().map(|&i| results_line(i)).collect();
            std::fs::write(&path, text.join("\n")).unwrap();
            path
        };
        let (out, err) = (write("out", output), write("err", errors));
        check_files(&out, &err, lines).unwrap()
    }

    #[test]
    fn a_whole_file_in_order_has_no_problem() {
        let c = check(&[0, 1, 2, 3], &[], 4);
        assert!(c.problems.is_empty(), "{:?}", c.problems);
        assert!(c.in_input_order);
    }

    #[test]
    fn no_errors_file_is_no_error_line() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::write(&out, format!("{}\n{}\n", results_line(0), results_line(1))).unwrap();
        let c = check_files(&out, &dir.path().join("none"), 2).unwrap();
        assert_eq!((c.output_lines, c.error_lines), (2, 0));
        assert!(c.problems.is_empty(), "{:?}", c.problems);
        assert!(check_files(&dir.path().join("none"), &out, 2).is_err());
    }

    #[test]
    fn missing_twice_unknown_and_disorder_are_each_reported() {
        let c = check(&[0, 2, 2, 9], &[1], 5);
        assert_eq!((c.output_lines, c.error_lines), (4, 1));
        assert_eq!((c.missing, c.duplicated, c.unknown), (2, 1, 1));
        assert!(!c.in_input_order);
        assert_eq!(c.problems.len(), 5, "{:?}", c.problems);
    }

    #[test]
    fn the_record_must_agree_with_the_files() {
        let mut c = check(&[0, 1], &[], 2);
        let plan = serde_json::json!({"event": "plan", "requests": 2});
        let results = serde_json::json!({"output_lines": 2, "error_lines": 0});
        let record = serde_json::json!({"status": "completed",
            "counts": {"total": 2, "succeeded": 1, "failed": 1, "expired": 0, "cancelled": 0}});
        c.agree(2, &plan, &results, &record);
        assert_eq!(c.problems.len(), 2, "{:?}", c.problems);
    }
}
