//! `submitter chat`: one job, from the command line to the answer.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use llmq_schemas::{ChatRequest, Job, Message, ReplyEvent, Role, Tier, Timestamp};
use llmq_submitter::{Client, ClientOptions, JobHandle, StreamText, TextUpdate, WaitError};

use super::print::{self, Show, note, out};
use super::{CliError, Exit};

#[derive(Debug, Args)]
pub struct ChatArgs {
    /// The logical model to run the job on (see `submitter models`).
    #[arg(long, short)]
    pub model: String,
    /// The user message. Appended after --messages-file's messages, if both are given.
    pub prompt: Option<String>,
    /// A JSON array of OpenAI chat messages; `-` reads it from stdin.
    #[arg(long, value_name = "FILE")]
    pub messages_file: Option<PathBuf>,
    /// A system message, put first.
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,
    /// Cap on completion tokens.
    #[arg(long, value_name = "N")]
    pub max_tokens: Option<u32>,
    /// Sampling temperature (0-2).
    #[arg(long, value_name = "T")]
    pub temperature: Option<f64>,
    #[arg(long, value_enum, default_value_t = TierArg::Interactive)]
    pub tier: TierArg,
    /// The job expires if it has not finished this long after submission.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub deadline: Option<Duration>,
    /// Your own id for the job, echoed back in its outcome.
    #[arg(long, value_name = "ID")]
    pub custom_id: Option<String>,
    /// Print tokens as they arrive.
    #[arg(long, conflicts_with_all = ["json", "no_wait"])]
    pub stream: bool,
    /// Print the whole outcome as JSON instead of the answer.
    #[arg(long, conflicts_with = "no_wait")]
    pub json: bool,
    /// Print the job id and exit without waiting (read it later with `submitter result`).
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for the outcome.
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = humantime::parse_duration, conflicts_with = "no_wait")]
    pub timeout: Duration,
    /// Do not print the summary line on success.
    #[arg(long, short)]
    pub quiet: bool,
    /// Submit even if the catalog says no live worker serves the model.
    #[arg(long)]
    pub no_catalog_check: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TierArg {
    Interactive,
    Batch,
}

impl From<TierArg> for Tier {
    fn from(tier: TierArg) -> Tier {
        match tier {
            TierArg::Interactive => Tier::Interactive,
            TierArg::Batch => Tier::Batch,
        }
    }
}

pub async fn run(args: ChatArgs, mut options: ClientOptions) -> Result<Exit, CliError> {
    let job = build_job(&args)?;
    options.check_catalog = !args.no_catalog_check;
    let client = Client::connect(options).await?;
    if args.no_wait {
        let job_id = client.submit_detached(job).await?;
        print::out_line(job_id)?;
        return Ok(Exit::Success);
    }
    let handle = client.submit(job).await?;
    let job_id = handle.job_id();
    let show = Show {
        json: args.json,
        quiet: args.quiet,
        streamed: args.stream,
    };
    let waited = if args.stream {
        stream(handle, args.timeout).await
    } else {
        handle.outcome_within(args.timeout).await
    };
    match waited {
        Ok(outcome) => print::outcome(&outcome, show),
        Err(WaitError::Timeout { waited }) => Err(CliError::NoOutcome { job_id, waited }),
        Err(err) => Err(err.into()),
    }
}

fn build_job(args: &ChatArgs) -> Result<Job, CliError> {
    let mut messages = Vec::new();
    if let Some(system) = &args.system {
        messages.push(Message::text(Role::System, system));
    }
    if let Some(path) = &args.messages_file {
        messages.extend(read_messages(path)?);
    }
    if let Some(prompt) = &args.prompt {
        messages.push(Message::text(Role::User, prompt));
    }
    if !messages.iter().any(|m| m.role != Role::System) {
        return Err(CliError::Usage(
            "nothing to ask: give a PROMPT or --messages-file".into(),
        ));
    }
    let request = ChatRequest {
        messages,
        max_tokens: args.max_tokens,
        temperature: args.temperature,
        ..ChatRequest::default()
    };
    let mut job = Job::new(args.model.clone(), request);
    job.tier = args.tier.into();
    job.stream = args.stream;
    job.custom_id = args.custom_id.clone();
    job.deadline = args.deadline.map(|d| Timestamp::now().plus(d));
    Ok(job)
}

fn read_messages(path: &PathBuf) -> Result<Vec<Message>, CliError> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    }
    .map_err(|err| CliError::Usage(format!("cannot read {}: {err}", path.display())))?;
    serde_json::from_str(&text).map_err(|err| {
        CliError::Usage(format!(
            "{} is not a JSON array of chat messages: {err}",
            path.display()
        ))
    })
}

/// Prints deltas as they come and returns the outcome.
async fn stream(
    mut handle: JobHandle,
    timeout: Duration,
) -> Result<llmq_schemas::Outcome, WaitError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut text = StreamText::new();
    let mut warned_gap = false;
    // Whether the current attempt has put text on stdout (a restart then starts a new line).
    let mut printed = false;
    loop {
        let event = match tokio::time::timeout_at(deadline, handle.next_event()).await {
            Err(_) => return Err(WaitError::Timeout { waited: timeout }),
            Ok(None) => return Err(WaitError::Closed),
            Ok(Some(Err(WaitError::Decode(err)))) => {
                note(format!("[llmq] skipping an undecodable event: {err}"));
                continue;
            }
            Ok(Some(Err(err))) => return Err(err),
            Ok(Some(Ok(event))) => event,
        };
        match text.apply(&event) {
            TextUpdate::Appended(content) => {
                write(content);
                printed |= !content.is_empty();
            }
            TextUpdate::Gap { content, .. } => {
                if !warned_gap {
                    note("\n[llmq] some tokens were lost in transit; the complete answer follows");
                    warned_gap = true;
                }
                write(content);
                printed |= !content.is_empty();
            }
            TextUpdate::Restarted {
                failed_attempt,
                reason,
                message,
            } => {
                let why = match (reason, message) {
                    (Some(reason), Some(message)) => format!(" ({reason}: {message})"),
                    _ => String::new(),
                };
                if printed {
                    write("\n");
                }
                note(format!(
                    "[llmq] attempt {failed_attempt} failed{why}; retrying. Discard the text above."
                ));
                write(text.text());
                printed = !text.text().is_empty();
            }
            TextUpdate::Unchanged | TextUpdate::Finished => {}
        }
        match event {
            ReplyEvent::Final(outcome) => {
                finish_stream(&text, &outcome, warned_gap);
                return Ok(*outcome);
            }
            ReplyEvent::DeadLettered(dead) => {
                return Err(WaitError::DeadLettered {
                    job_id: dead.job_id,
                    reason: dead.reason,
                    message: dead.message,
                });
            }
            _ => {}
        }
    }
}

/// Completes the streamed output (see [`closing`]).
fn finish_stream(text: &StreamText, outcome: &llmq_schemas::Outcome, warned_gap: bool) {
    let closing = closing(text, outcome);
    if let Some(notice) = closing.notice
        && !warned_gap
    {
        note(notice);
    }
    write(&closing.output);
}

/// What ends a streamed answer on the terminal.
#[derive(Debug, PartialEq)]
struct Closing {
    /// Said on stderr first.
    notice: Option<&'static str>,
    /// Written to stdout.
    output: String,
}

/// A newline after a complete stream; the stored text (with a notice) whenever the
/// stream did not carry all of it: deltas lost in transit, or a provider that did not
/// stream. The outcome says what was streamed, so this never prints part of an answer
/// as the whole.
fn closing(text: &StreamText, outcome: &llmq_schemas::Outcome) -> Closing {
    let streamed = text.text();
    let newline = if streamed.is_empty() || streamed.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    let stored = outcome
        .text()
        .or_else(|| outcome.partial.as_ref().map(|p| p.content.as_str()));
    let complete = text.is_complete();
    match stored {
        Some(full) if complete && full == streamed => Closing {
            notice: None,
            output: newline.to_owned(),
        },
        // Nothing was streamed (a provider that does not stream): just the answer.
        Some(full) if complete && streamed.is_empty() => Closing {
            notice: None,
            output: print::with_newline(full),
        },
        Some(full) => Closing {
            notice: Some(
                "[llmq] the stream did not carry the whole answer; the complete stored text follows",
            ),
            output: format!("{newline}{}", print::with_newline(full)),
        },
        None => Closing {
            notice: (!complete)
                .then_some("[llmq] the stream was incomplete and the outcome holds no text"),
            output: newline.to_owned(),
        },
    }
}

fn write(text: &str) {
    if let Err(err) = out(text) {
        note(format!("[llmq] {err}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<ChatArgs, clap::Error> {
        #[derive(Parser)]
        struct Wrap {
            #[command(flatten)]
            chat: ChatArgs,
        }
        let mut all = vec!["chat"];
        all.extend_from_slice(args);
        Wrap::try_parse_from(all).map(|w| w.chat)
    }

    #[test]
    fn builds_a_job_from_flags() {
        let args = parse(&[
            "--model",
            "gpt-4.1",
            "--system",
            "be brief",
            "--max-tokens",
            "50",
            "--tier",
            "batch",
            "--deadline",
            "30s",
            "--custom-id",
            "c1",
            "hello",
        ])
        .unwrap();
        let job = build_job(&args).unwrap();
        assert_eq!(job.model, "gpt-4.1");
        assert_eq!(job.tier, Tier::Batch);
        assert_eq!(job.request.messages.len(), 2);
        assert_eq!(job.request.messages[0].role, Role::System);
        assert_eq!(job.request.messages[1].text_content(), "hello");
        assert_eq!(job.request.max_tokens, Some(50));
        assert_eq!(job.custom_id.as_deref(), Some("c1"));
        let left = job.deadline.unwrap().remaining();
        assert!(left > Duration::from_secs(25) && left <= Duration::from_secs(30));
    }

    #[test]
    fn a_job_needs_something_to_ask() {
        let args = parse(&["--model", "m", "--system", "only a system prompt"]).unwrap();
        assert!(matches!(build_job(&args), Err(CliError::Usage(_))));
    }

    #[test]
    fn messages_file_is_read_and_the_prompt_appended() {
        let path = std::env::temp_dir().join(format!("llmq-msgs-{}.json", uuid::Uuid::new_v4()));
        std::fs::write(
            &path,
            r#"[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]"#,
        )
        .unwrap();
        let args = parse(&[
            "--model",
            "m",
            "--messages-file",
            path.to_str().unwrap(),
            "and?",
        ])
        .unwrap();
        let job = build_job(&args).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(job.request.messages.len(), 3);
        assert_eq!(job.request.messages[2].text_content(), "and?");

        let args = parse(&["--model", "m", "--messages-file", "/nonexistent/x.json"]).unwrap();
        assert!(matches!(build_job(&args), Err(CliError::Usage(_))));
    }

    #[test]
    fn conflicting_output_modes_are_usage_errors() {
        for bad in [
            &["--model", "m", "--stream", "--json", "x"][..],
            &["--model", "m", "--no-wait", "--stream", "x"][..],
            &["--model", "m", "--tier", "urgent", "x"][..],
            &["--model", "m", "--timeout", "soon", "x"][..],
        ] {
            let err = parse(bad).err().unwrap();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
    }

    fn outcome_with(text: &str, first_seq: u64, last_seq: u64) -> llmq_schemas::Outcome {
        serde_json::from_value(serde_json::json!({
            "v": 1, "job_id": uuid::Uuid::nil(), "status": "succeeded", "model": "m",
            "tenant": "t", "tier": "interactive", "worker_id": "w", "delivery": 1,
            "first_seq": first_seq, "last_seq": last_seq,
            "response": {"id": "c", "object": "chat.completion", "created": 0, "model": "u",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop"}]},
            "timings": {"total_ms": 1, "started_at": "2026-01-01T00:00:00Z",
                "finished_at": "2026-01-01T00:00:00Z"}
        }))
        .unwrap()
    }

    fn event(value: serde_json::Value) -> ReplyEvent {
        serde_json::from_value(value).unwrap()
    }

    fn delta(seq: u64, attempt: u32, text: &str) -> ReplyEvent {
        event(
            serde_json::json!({"type": "delta", "v": 1, "job_id": uuid::Uuid::nil(),
            "delivery": 1, "seq": seq, "attempt": attempt, "content": text}),
        )
    }

    #[test]
    fn an_incomplete_stream_ends_with_the_stored_text_and_a_notice() {
        let outcome = outcome_with("abcdef", 1, 3);
        let mut text = StreamText::new();
        // Attempt 2's start and first delta were lost.
        text.apply(&delta(2, 2, "cd"));
        text.apply(&delta(3, 2, "ef"));
        text.apply(&ReplyEvent::Final(Box::new(outcome.clone())));
        let closing = closing(&text, &outcome);
        assert!(closing.notice.is_some());
        assert_eq!(closing.output, "\nabcdef\n");
    }

    #[test]
    fn a_complete_stream_ends_with_a_newline_only() {
        let outcome = outcome_with("abcd", 1, 2);
        let mut text = StreamText::new();
        text.apply(&delta(1, 1, "ab"));
        text.apply(&delta(2, 1, "cd"));
        text.apply(&ReplyEvent::Final(Box::new(outcome.clone())));
        assert_eq!(
            closing(&text, &outcome),
            Closing {
                notice: None,
                output: "\n".into()
            }
        );
        // Nothing streamed at all (the provider did not stream): the answer, no notice.
        let outcome = outcome_with("abcd", 1, 0);
        let mut text = StreamText::new();
        text.apply(&ReplyEvent::Final(Box::new(outcome.clone())));
        assert_eq!(
            closing(&text, &outcome),
            Closing {
                notice: None,
                output: "abcd\n".into()
            }
        );
    }
}
