//! The results files: written beside as `.partial` and renamed when whole, so a
//! collection killed halfway leaves no file that looks finished (run it again).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use llmq_schemas::BatchRecord;
use llmq_submitter::{Client, OutputOrder, ResultsSummary};
use serde_json::json;

use super::OutputArgs;
use crate::cli::CliError;
use crate::cli::print::note;

/// What was written where.
pub struct Written {
    pub output: PathBuf,
    pub errors: PathBuf,
    pub summary: ResultsSummary,
}

pub async fn write(
    client: &Client,
    record: &BatchRecord,
    files: &OutputArgs,
    input: Option<&Path>,
) -> Result<Written, CliError> {
    let output = files
        .output
        .clone()
        .unwrap_or_else(|| format!("{}_output.jsonl", record.id).into());
    let errors = files
        .errors
        .clone()
        .unwrap_or_else(|| format!("{}_errors.jsonl", record.id).into());
    let (output_partial, errors_partial) = (partial(&output), partial(&errors));
    let mut out = BufWriter::new(create(&output_partial)?);
    let mut err = BufWriter::new(create(&errors_partial)?);
    let order = if files.completion_order {
        OutputOrder::Completion
    } else {
        OutputOrder::Input
    };
    let summary = client
        .batch_results(record, order, input, &mut out, &mut err)
        .await?;
    for (writer, partial, path) in [
        (out, &output_partial, &output),
        (err, &errors_partial, &errors),
    ] {
        finish(writer, partial, path)?;
    }
    if summary.error_lines == 0 {
        // No errors file, as OpenAI's batch then has no error file (a stale one goes too).
        let _ = std::fs::remove_file(&errors);
    }
    Ok(Written {
        output,
        errors,
        summary,
    })
}

pub fn report(written: &Written, json: bool) {
    let s = &written.summary;
    if json {
        note(
            json!({"event": "results", "output": written.output, "output_lines": s.output_lines,
            "errors": written.errors, "error_lines": s.error_lines}),
        );
    } else {
        let errors = match s.error_lines {
            0 => "no errors".to_owned(),
            n => format!("{n} error line(s) to {}", written.errors.display()),
        };
        note(format!(
            "wrote {} line(s) to {}, {errors}",
            s.output_lines,
            written.output.display()
        ));
    }
}

fn partial(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".partial");
    name.into()
}

fn create(path: &Path) -> Result<File, CliError> {
    File::create(path).map_err(|source| CliError::Io {
        what: "creating a results file",
        source,
    })
}

fn finish(mut writer: BufWriter<File>, partial: &Path, path: &Path) -> Result<(), CliError> {
    let io = |source| CliError::Io {
        what: "writing a results file",
        source,
    };
    writer.flush().map_err(io)?;
    writer
        .into_inner()
        .map_err(|e| io(e.into_error()))?
        .sync_all()
        .map_err(io)?;
    std::fs::rename(partial, path).map_err(io)
}
