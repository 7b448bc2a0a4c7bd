//! One run of the real `submitter batch submit --wait --json` on a generated file: its
//! events on stderr timed and each paired with the processes' CPU, its peak RSS polled
//! until it exits, its final record read from stdout.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStderr, Command};

use super::check::{OutputCheck, check_files};
use super::cpu::{Snapshot, phase_cpu, processes};
use super::custom_id;
use super::figures::CliRun;
use crate::bench::procstat::{self, ProcSample, Watched};
use crate::bench::report::{mib, rate};
use crate::bench::setup::{Llmq, MODEL, MockChild, PROMPT, chat_request};

/// How long one CLI run may take before it counts as hung: 900 s, or 5 ms a line for
/// more than 180,000 lines.
fn cli_timeout(lines: usize) -> Duration {
    Duration::from_secs(900)
        .max(Duration::from_millis(5) * u32::try_from(lines).unwrap_or(u32::MAX))
}
/// Between two reads of the CLI's peak RSS.
const POLL_EVERY: Duration = Duration::from_millis(10);
/// Lines of the CLI's stderr kept for an error message.
const STDERR_KEPT: usize = 20;

/// Writes `lines` request lines to `path`, each prompt `pad` bytes longer; returns the
/// file's size.
fn write_input(path: &Path, lines: usize, pad: usize) -> anyhow::Result<u64> {
    let prompt = format!("{PROMPT}{}", " filler".repeat(pad / 7));
    let mut body = serde_json::to_value(chat_request(&prompt))?;
    body.as_object_mut()
        .ok_or_else(|| anyhow!("a chat request is not a JSON object"))?
        .insert("model".into(), Value::from(MODEL));
    let mut file = BufWriter::new(std::fs::File::create(path)?);
    for index in 0..lines {
        writeln!(
            file,
            r#"{{"custom_id":"{}","method":"POST","url":"/v1/chat/completions","body":{body}}}"#,
            custom_id(index)
        )?;
    }
    file.flush()?;
    Ok(std::fs::metadata(path)?.len())
}

/// Runs the CLI on a new `lines`-line file and checks what it wrote.
pub(super) async fn cli_run(
    cli: &Path,
    llmq: &Llmq,
    mock: &MockChild,
    lines: usize,
    pad: usize,
) -> anyhow::Result<CliRun> {
    let dir = llmq.world.dir.path();
    let [input, output, errors] =
        ["in", "out", "err"].map(|name| dir.join(format!("batch-{lines}-{name}.jsonl")));
    let input_bytes = write_input(&input, lines, pad)?;
    let mut child = Command::new(cli)
        .current_dir(dir)
        .env("LLMQ__NATS__URL", llmq.world.nats.url())
        .args(["batch", "submit", "--wait", "--json", "-o"])
        .arg(&output)
        .arg("--errors")
        .arg(&errors)
        .arg(&input)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("start {}", cli.display()))?;
    let pid = child
        .id()
        .ok_or_else(|| anyhow!("the CLI exited at once"))?;
    let procs = processes(Watched::new("submitter", pid), llmq, mock)?;
    let timeout = cli_timeout(lines);
    let (watch, record) = tokio::time::timeout(timeout, follow(&mut child, &procs))
        .await
        .with_context(|| format!("the CLI did not finish {lines} lines within {timeout:?}"))??;
    let check = tokio::task::spawn_blocking(move || check_files(&output, &errors, lines)).await??;
    let run = measure(lines, input_bytes, &watch, &procs, record, check)?;
    println!(
        "  {lines} lines: submit {} lines/s, completion {} jobs/s, CLI peak {} MiB",
        rate(run.submit_per_sec),
        rate(run.completion_per_sec),
        mib(run.peak_rss_mib)
    );
    Ok(run)
}

/// What the CLI said while it ran: its events, each with a snapshot, and its peak RSS.
#[derive(Debug, Default)]
struct Watch {
    events: Vec<(String, Value, Snapshot)>,
    start: Option<Snapshot>,
    exit: Option<Instant>,
    peak_kib: u64,
    stderr: Vec<String>,
}

impl Watch {
    fn event(&self, name: &str) -> anyhow::Result<(&Value, &Snapshot)> {
        self.events
            .iter()
            .find(|(event, _, _)| event == name)
            .map(|(_, value, snapshot)| (value, snapshot))
            .ok_or_else(|| {
                anyhow!(
                    "the CLI printed no {name:?} event; its stderr ended:\n{}",
                    self.stderr.join("\n")
                )
            })
    }

    fn line(&mut self, line: String, procs: &[Watched]) {
        let event = serde_json::from_str::<Value>(&line)
            .ok()
            .and_then(|v| Some((v.get("event")?.as_str()?.to_owned(), v)));
        match event {
            Some((name, value)) => {
                let snapshot = Snapshot::take(procs);
                self.peak(snapshot.samples.first().copied().flatten());
                self.events.push((name, value, snapshot));
            }
            None => {
                if self.stderr.len() == STDERR_KEPT {
                    self.stderr.remove(0);
                }
                self.stderr.push(line);
            }
        }
    }

    fn peak(&mut self, sample: Option<ProcSample>) {
        if let Some(sample) = sample {
            self.peak_kib = self.peak_kib.max(sample.hwm_kib);
        }
    }
}

/// Follows the CLI until it exits: its stderr events, its peak RSS, its stdout (the
/// final record, parsed). A non-zero exit is an error.
async fn follow(child: &mut Child, procs: &[Watched]) -> anyhow::Result<(Watch, Value)> {
    let stderr = child.stderr.take().ok_or_else(|| anyhow!("CLI stderr"))?;
    let mut stdout = child.stdout.take().ok_or_else(|| anyhow!("CLI stdout"))?;
    let mut out = String::new();
    let (mut watch, _) =
        tokio::try_join!(watch_stderr(stderr, procs), stdout.read_to_string(&mut out))?;
    let status = child.wait().await?;
    watch.exit = Some(Instant::now());
    if !status.success() {
        bail!(
            "the CLI exited with {status}; its stderr ended:\n{}",
            watch.stderr.join("\n")
        );
    }
    let record = serde_json::from_str(&out)
        .with_context(|| format!("the CLI's stdout is not the batch record: {out:?}"))?;
    Ok((watch, record))
}

async fn watch_stderr(stderr: ChildStderr, procs: &[Watched]) -> std::io::Result<Watch> {
    let pid = procs.first().map_or(0, |p| p.pid);
    let mut watch = Watch {
        start: Some(Snapshot::take(procs)),
        ..Watch::default()
    };
    let mut lines = BufReader::new(stderr).lines();
    let mut tick = tokio::time::interval(POLL_EVERY);
    loop {
        tokio::select! {
            line = lines.next_line() => match line? {
                Some(line) => watch.line(line, procs),
                None => return Ok(watch),
            },
            _ = tick.tick() => watch.peak(procstat::sample(pid)),
        }
    }
}

/// The run's figures from the CLI's events.
fn measure(
    lines: usize,
    input_bytes: u64,
    watch: &Watch,
    procs: &[Watched],
    record: Value,
    mut check: OutputCheck,
) -> anyhow::Result<CliRun> {
    let start = watch.start.as_ref().ok_or_else(|| anyhow!("no start"))?;
    let (plan, at_plan) = watch.event("plan")?;
    let (_, at_submitted) = watch.event("submitted")?;
    let (_, at_finished) = watch.event("finished")?;
    let (results, at_results) = watch.event("results")?;
    check.agree(lines, plan, results, &record);
    let per_sec = |secs: f64| lines as f64 / secs.max(1e-9);
    let submit_s = at_submitted.secs_since(at_plan);
    let completion_s = at_finished.secs_since(start);
    Ok(CliRun {
        lines,
        input_bytes,
        validate_s: at_plan.secs_since(start),
        submit_s,
        submit_per_sec: per_sec(submit_s),
        completion_s,
        completion_per_sec: per_sec(completion_s),
        from_plan_per_sec: per_sec(at_finished.secs_since(at_plan)),
        results_s: at_results.secs_since(at_finished),
        total_s: watch
            .exit
            .map_or(0.0, |exit| exit.duration_since(start.at).as_secs_f64()),
        peak_rss_mib: watch.peak_kib as f64 / 1024.0,
        cpu: vec![
            phase_cpu("validate", procs, start, at_plan),
            phase_cpu("submit", procs, at_plan, at_submitted),
            phase_cpu("wait", procs, at_submitted, at_finished),
            phase_cpu("results", procs, at_finished, at_results),
        ],
        check,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_lines_parse_as_the_cli_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        write_input(&path, 3, 0).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2]["custom_id"], "req-2");
        assert_eq!(lines[0]["body"]["model"], MODEL);
        assert_eq!(
            lines[0]["body"]["messages"].as_array().map(Vec::len),
            Some(2)
        );
    }
}
