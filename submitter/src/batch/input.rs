//! Reading an OpenAI Batch API input file (JSONL) for `submitter batch submit`.
//!
//! Why two passes: a batch is refused whole, before any job is queued, when a line is
//! wrong, so the first pass ([`validate_path`]) checks every line and reports every
//! problem at once, as OpenAI's batch validation does; the second ([`requests`]) reads the
//! lines again to submit them. Neither holds the file: a 2 GB file streams through one
//! reused line buffer, a line over the size limit is counted rather than kept, and the one
//! thing that grows with the file is duplicate detection, a 64-bit hash per `custom_id`
//! (8 bytes a line, plus the hash set's slack). When two hashes meet, a short extra pass
//! re-reads the file up to the last such line and compares the ids themselves, so a
//! reported duplicate is never a hash collision's guess.
//!
//! The file may change between the passes: [`Requests::sha256`] is the digest of what the
//! second pass read, to compare with [`Validated::sha256`].
//!
//! Reading is synchronous (`std::io::BufRead`): the caller runs it on a blocking thread.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::fs::File;
use std::hash::{BuildHasherDefault, DefaultHasher, Hash, Hasher};
use std::io::{self, BufRead, BufReader};
use std::path::Path;

use llmq_schemas::ChatRequest;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

/// Problems reported line by line; the rest are only counted.
pub const MAX_REPORTED: usize = 100;
/// OpenAI's limit on a `custom_id`.
pub(crate) const MAX_CUSTOM_ID_BYTES: usize = 512;
/// The one endpoint llmq batches run.
pub(crate) const CHAT_COMPLETIONS_URL: &str = "/v1/chat/completions";
/// Line numbers kept per model, for messages about an unknown model.
const FIRST_LINES_PER_MODEL: usize = 5;
const BOM: &[u8] = b"\xEF\xBB\xBF";
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// One checked request line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct InputLine {
    /// 0-based index among the file's requests (blank lines are not requests).
    pub index: u64,
    /// 1-based line number in the file, for messages.
    pub line_number: u64,
    pub custom_id: String,
    /// `body.model`, if present (the caller may override it). Moved out of `body`, whose
    /// own `model` is always `None`.
    pub model: Option<String>,
    pub body: ChatRequest,
}

/// What a line must satisfy besides the format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Checks {
    /// Longest line accepted, in bytes, without its line ending (the caller passes the
    /// request size limit and says so).
    pub max_line_bytes: usize,
    /// When set, `body.model` may be absent (the caller's model override replaces it).
    pub model_override: bool,
}

/// What is wrong with one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineProblem {
    pub line_number: u64,
    pub message: String,
}

impl fmt::Display for LineProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line_number, self.message)
    }
}

/// What the first pass found.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Validated {
    /// Request lines: every line that is not blank, valid or not.
    pub requests: u64,
    /// SHA-256 of the file's bytes exactly as read (BOM included).
    pub sha256: [u8; 32],
    /// At most [`MAX_REPORTED`], in line order. A line can have two: a duplicate
    /// `custom_id` is reported besides the line's other problem.
    pub problems: Vec<LineProblem>,
    /// All problems, reported or not.
    pub problem_count: u64,
    /// Per model named by a line that passed every check but the duplicate one: how many
    /// lines and the first (up to 5) line numbers.
    pub models: BTreeMap<String, ModelLines>,
}

/// The lines that name one model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ModelLines {
    pub lines: u64,
    pub first_line_numbers: Vec<u64>,
}

impl ModelLines {
    fn add(&mut self, line_number: u64) {
        self.lines += 1;
        if self.first_line_numbers.len() < FIRST_LINES_PER_MODEL {
            self.first_line_numbers.push(line_number);
        }
    }
}

/// Why [`requests`] yielded no line.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// Reading the file failed; the iterator ends after it.
    #[error("cannot read the batch input file: {0}")]
    Io(#[from] io::Error),
    /// A line no longer passes the checks: the file changed since it was validated. The
    /// iterator goes on with the next line.
    #[error("{0} (the file changed since it was validated)")]
    Changed(LineProblem),
}

/// A buffered reader of `path`, for either pass.
pub(crate) fn open(path: &Path) -> io::Result<BufReader<File>> {
    File::open(path).map(|file| BufReader::with_capacity(READ_BUFFER_BYTES, file))
}

/// First pass over a file: every problem, the digest, the models. Opens the file again
/// for a short second pass only when two custom_ids' 64-bit hashes collided, to tell a
/// real duplicate from a hash collision exactly.
pub(crate) fn validate_path(path: &Path, checks: &Checks) -> io::Result<Validated> {
    validate(open(path)?, checks, || open(path))
}

/// [`validate_path`] on any reader; `reopen` gives the same bytes again from the start,
/// and is called only when the duplicate check needs them.
pub(crate) fn validate<R: BufRead, S: BufRead>(
    reader: R,
    checks: &Checks,
    reopen: impl FnOnce() -> io::Result<S>,
) -> io::Result<Validated> {
    validate_with(reader, checks, reopen, id_hash)
}

/// Second pass: the request lines in order. Duplicates are not looked for again: compare
/// [`Requests::sha256`], once the iterator has ended, with the first pass's digest.
pub(crate) fn requests<R: BufRead>(reader: R, checks: &Checks) -> Requests<R> {
    Requests {
        lines: LineReader::new(reader, checks.max_line_bytes),
        checks: *checks,
        next_index: 0,
        failed: false,
    }
}

/// The request lines of a file, in order (see [`requests`]).
#[derive(Debug)]
pub(crate) struct Requests<R> {
    lines: LineReader<R>,
    checks: Checks,
    next_index: u64,
    failed: bool,
}

impl<R> Requests<R> {
    /// SHA-256 of the bytes read so far: the whole file's once the iterator has ended.
    pub(crate) fn sha256(&self) -> [u8; 32] {
        self.lines.digest.clone().finalize().into()
    }
}

impl<R: BufRead> Iterator for Requests<R> {
    type Item = Result<InputLine, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.failed {
            let (number, line) = match self.lines.next_line() {
                Ok(next) => next?,
                Err(err) => {
                    self.failed = true;
                    return Some(Err(err.into()));
                }
            };
            let text = match line {
                Line::Blank => continue,
                Line::TooLong(length) => Err(too_long(length, &self.checks)),
                Line::Text(text) => Ok(text),
            };
            let index = self.next_index;
            self.next_index += 1;
            let line = text.and_then(|text| input_line(index, number, text, &self.checks));
            return Some(line.map_err(|message| ReadError::Changed(problem(number, message))));
        }
        None
    }
}

fn input_line(index: u64, number: u64, text: &[u8], checks: &Checks) -> Result<InputLine, String> {
    let envelope = Envelope::parse(text)?;
    let custom_id = custom_id(&envelope)?;
    let (model, body) = request(&envelope, checks)?;
    Ok(InputLine {
        index,
        line_number: number,
        custom_id,
        model,
        body,
    })
}

/// [`validate`] with the custom_id hash given, so tests can make every id collide.
fn validate_with<R: BufRead, S: BufRead>(
    reader: R,
    checks: &Checks,
    reopen: impl FnOnce() -> io::Result<S>,
    hash: IdHash,
) -> io::Result<Validated> {
    let mut pass = FirstPass::new(*checks, hash);
    let mut lines = LineReader::new(reader, checks.max_line_bytes);
    while let Some((number, line)) = lines.next_line()? {
        pass.line(number, line);
    }
    let sha256 = lines.digest.finalize().into();
    let duplicates = match pass.last_collision {
        Some(last) => confirm_duplicates(reopen()?, checks, &pass.collided, last, hash)?,
        None => Report::default(),
    };
    Ok(pass.finish(sha256, duplicates))
}

/// How a custom_id is reduced to 64 bits for duplicate detection.
type IdHash = fn(&str) -> u64;

/// SipHash with fixed keys: the same in every run, and good enough that a collision
/// between different ids (which costs only a re-read) stays rare.
fn id_hash(id: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    id.hash(&mut hasher);
    hasher.finish()
}

/// A set of hashes, not hashed again.
type HashSet64 = HashSet<u64, BuildHasherDefault<AlreadyHashed>>;

#[derive(Debug, Default)]
struct AlreadyHashed(u64);

impl Hasher for AlreadyHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }
}

/// The first pass's findings so far.
struct FirstPass {
    checks: Checks,
    hash: IdHash,
    seen: HashSet64,
    /// Hashes met more than once, and the last line that met one.
    collided: HashSet64,
    last_collision: Option<u64>,
    report: Report,
    models: BTreeMap<String, ModelLines>,
    requests: u64,
}

impl FirstPass {
    fn new(checks: Checks, hash: IdHash) -> Self {
        Self {
            checks,
            hash,
            seen: HashSet64::default(),
            collided: HashSet64::default(),
            last_collision: None,
            report: Report::default(),
            models: BTreeMap::new(),
            requests: 0,
        }
    }

    fn line(&mut self, number: u64, line: Line<'_>) {
        let checked = match line {
            Line::Blank => return,
            Line::TooLong(length) => Err(too_long(length, &self.checks)),
            Line::Text(text) => self.check(number, text),
        };
        self.requests += 1;
        if let Err(message) = checked {
            self.report.add(number, message);
        }
    }

    /// The same checks as [`input_line`], noting the custom_id as soon as it is known to
    /// be one and the model once the whole line passes.
    fn check(&mut self, number: u64, text: &[u8]) -> Result<(), String> {
        let envelope = Envelope::parse(text)?;
        let id = custom_id(&envelope)?;
        self.note_id(number, &id);
        let (model, _) = request(&envelope, &self.checks)?;
        if let Some(model) = model {
            self.models.entry(model).or_default().add(number);
        }
        Ok(())
    }

    fn note_id(&mut self, number: u64, id: &str) {
        let hash = (self.hash)(id);
        if !self.seen.insert(hash) {
            self.collided.insert(hash);
            self.last_collision = Some(number);
        }
    }

    fn finish(self, sha256: [u8; 32], duplicates: Report) -> Validated {
        let report = self.report.merge(duplicates);
        Validated {
            requests: self.requests,
            sha256,
            problems: report.problems,
            problem_count: report.count,
            models: self.models,
        }
    }
}

/// The duplicate custom_ids among the lines whose hashes collided, found by comparing the
/// ids themselves: re-reads the file up to `last_line`, keeping only those ids.
fn confirm_duplicates(
    reader: impl BufRead,
    checks: &Checks,
    collided: &HashSet64,
    last_line: u64,
    hash: IdHash,
) -> io::Result<Report> {
    let mut first_lines: HashMap<String, u64> = HashMap::new();
    let mut report = Report::default();
    let mut lines = LineReader::new(reader, checks.max_line_bytes);
    while let Some((number, line)) = lines.next_line()? {
        if let Some(id) = line_id(line).filter(|id| collided.contains(&hash(id))) {
            match first_lines.entry(id) {
                Entry::Occupied(first) => report.add(number, duplicate(first.key(), *first.get())),
                Entry::Vacant(slot) => drop(slot.insert(number)),
            }
        }
        if number >= last_line {
            break;
        }
    }
    Ok(report)
}

/// The line's custom_id, if it has a valid one.
fn line_id(line: Line<'_>) -> Option<String> {
    let Line::Text(text) = line else {
        return None;
    };
    Envelope::parse(text)
        .and_then(|envelope| custom_id(&envelope))
        .ok()
}

fn duplicate(id: &str, first: u64) -> String {
    format!("duplicate custom_id {id:?} (first on line {first})")
}

/// Problems: the first [`MAX_REPORTED`] by line, and how many there were.
#[derive(Debug, Default)]
struct Report {
    problems: Vec<LineProblem>,
    count: u64,
}

impl Report {
    fn add(&mut self, line_number: u64, message: String) {
        self.count += 1;
        if self.problems.len() < MAX_REPORTED {
            self.problems.push(problem(line_number, message));
        }
    }

    /// Both reports as one: the first [`MAX_REPORTED`] of their problems, in line order.
    fn merge(mut self, other: Report) -> Report {
        self.problems.extend(other.problems);
        self.problems.sort_by_key(|problem| problem.line_number);
        self.problems.truncate(MAX_REPORTED);
        Report {
            problems: self.problems,
            count: self.count + other.count,
        }
    }
}

fn problem(line_number: u64, message: String) -> LineProblem {
    LineProblem {
        line_number,
        message,
    }
}

fn too_long(length: u64, checks: &Checks) -> String {
    let limit = checks.max_line_bytes;
    format!("line is {length} bytes, over the limit of {limit} bytes")
}

/// A file's lines one at a time, through one reused buffer, every byte read hashed.
#[derive(Debug)]
struct LineReader<R> {
    reader: R,
    buf: Vec<u8>,
    max_line_bytes: usize,
    /// Bytes of a line kept in `buf`: the limit, and room for a BOM and a `\r`.
    keep: usize,
    number: u64,
    digest: Sha256,
}

/// One line of the file, without its line ending (and the file's BOM).
enum Line<'a> {
    /// Empty or whitespace only: not a request.
    Blank,
    /// Over the limit, by its length in bytes; not kept.
    TooLong(u64),
    Text(&'a [u8]),
}

/// A line as read: its length without the `\n`, and its last byte before it.
struct RawLine {
    length: u64,
    last: Option<u8>,
}

impl<R: BufRead> LineReader<R> {
    fn new(reader: R, max_line_bytes: usize) -> Self {
        Self {
            reader,
            buf: Vec::new(),
            max_line_bytes,
            keep: max_line_bytes.saturating_add(BOM.len() + 1),
            number: 0,
            digest: Sha256::new(),
        }
    }

    /// The next line and its 1-based number, or `None` at the end of the file.
    fn next_line(&mut self) -> io::Result<Option<(u64, Line<'_>)>> {
        let Some(raw) = self.read_raw()? else {
            return Ok(None);
        };
        self.number += 1;
        let length = self.trim(raw);
        Ok(Some((self.number, self.classify(length))))
    }

    /// Copies the next line, without its `\n`, into `buf`, at most `keep` bytes of it.
    fn read_raw(&mut self) -> io::Result<Option<RawLine>> {
        self.buf.clear();
        let mut raw = RawLine {
            length: 0,
            last: None,
        };
        loop {
            let chunk = match self.reader.fill_buf() {
                Ok(chunk) => chunk,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            };
            if chunk.is_empty() {
                return Ok((raw.length > 0).then_some(raw));
            }
            let newline = chunk.iter().position(|&byte| byte == b'\n');
            let used = newline.map_or(chunk.len(), |at| at + 1);
            let content = &chunk[..newline.unwrap_or(used)];
            let room = self.keep.saturating_sub(self.buf.len()).min(content.len());
            self.buf.extend_from_slice(&content[..room]);
            raw.length += content.len() as u64;
            raw.last = content.last().copied().or(raw.last);
            self.digest.update(&chunk[..used]);
            self.reader.consume(used);
            if newline.is_some() {
                return Ok(Some(raw));
            }
        }
    }

    /// Strips a `\r` before the `\n` and, on the first line, a BOM; the length left.
    fn trim(&mut self, raw: RawLine) -> u64 {
        let mut length = raw.length;
        if raw.last == Some(b'\r') {
            if self.buf.len() as u64 == length {
                self.buf.pop();
            }
            length -= 1;
        }
        if self.number == 1 && self.buf.starts_with(BOM) {
            self.buf.drain(..BOM.len());
            length -= BOM.len() as u64;
        }
        length
    }

    /// A line within the limit is whole in `buf`.
    fn classify(&self, length: u64) -> Line<'_> {
        if length > self.max_line_bytes as u64 {
            Line::TooLong(length)
        } else if self.buf.iter().all(u8::is_ascii_whitespace) {
            Line::Blank
        } else {
            Line::Text(&self.buf)
        }
    }
}

/// A request line's top-level fields, borrowed from the line. A field that is present is
/// `Some`, even when null, so messages can say what was there. Unknown keys are ignored.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(skip)]
    text: &'a str,
    #[serde(borrow, default, deserialize_with = "present")]
    custom_id: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    method: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    url: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    body: Option<&'a RawValue>,
}

fn present<'de, D: Deserializer<'de>>(value: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(value).map(Some)
}

impl<'a> Envelope<'a> {
    /// The line as a JSON object, or why it is not one.
    fn parse(line: &'a [u8]) -> Result<Self, String> {
        let text =
            std::str::from_utf8(line).map_err(|err| format!("line is not valid UTF-8: {err}"))?;
        if !text.trim_start().starts_with('{') {
            return Err(not_an_object(text));
        }
        let mut envelope: Envelope<'a> = serde_json::from_str(text).map_err(|err| {
            let what = match err.classify() {
                serde_json::error::Category::Data => "line is not a valid request",
                _ => "line is not valid JSON",
            };
            format!("{what}: {}", json_message(&err, 0))
        })?;
        envelope.text = text;
        Ok(envelope)
    }

    /// Where `value` starts in the line, in bytes.
    fn offset(&self, value: &RawValue) -> usize {
        (value.get().as_ptr() as usize).saturating_sub(self.text.as_ptr() as usize)
    }
}

fn not_an_object(text: &str) -> String {
    match serde_json::from_str::<&RawValue>(text) {
        Ok(value) => format!("line must be a JSON object, not {}", kind(value)),
        Err(err) => format!("line is not valid JSON: {}", json_message(&err, 0)),
    }
}

/// serde_json's message, its position counted in columns of the line (`offset` is where
/// the parsed text starts in it).
fn json_message(err: &serde_json::Error, offset: usize) -> String {
    let message = err.to_string();
    let position = format!(" at line {} column {}", err.line(), err.column());
    match message.strip_suffix(&position) {
        Some(message) => format!("{message} at column {}", offset + err.column()),
        None => message,
    }
}

/// What kind of JSON value `value` is, for messages.
fn kind(value: &RawValue) -> &'static str {
    match value.get().as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

fn custom_id(envelope: &Envelope<'_>) -> Result<String, String> {
    let value = envelope
        .custom_id
        .ok_or_else(|| "custom_id is missing".to_owned())?;
    let id: String = serde_json::from_str(value.get())
        .map_err(|_| format!("custom_id must be a string, not {}", kind(value)))?;
    if id.is_empty() {
        return Err("custom_id must not be empty".into());
    }
    if id.len() > MAX_CUSTOM_ID_BYTES {
        let length = id.len();
        return Err(format!(
            "custom_id is {length} bytes, over the limit of {MAX_CUSTOM_ID_BYTES} bytes"
        ));
    }
    Ok(id)
}

/// The line's model and body, once its method, url and body pass.
fn request(
    envelope: &Envelope<'_>,
    checks: &Checks,
) -> Result<(Option<String>, ChatRequest), String> {
    check_method(envelope.method)?;
    check_url(envelope.url)?;
    let mut body = body(envelope)?;
    let model = take_model(&mut body, checks)?;
    Ok((model, body))
}

/// What a field that must be one string held instead.
enum Found {
    Missing,
    Kind(&'static str),
    Other(String),
}

fn expect_string(value: Option<&RawValue>, expected: &str) -> Result<(), Found> {
    let value = value.ok_or(Found::Missing)?;
    let literal = value.get();
    if literal.len() == expected.len() + 2 && literal.get(1..literal.len() - 1) == Some(expected) {
        return Ok(());
    }
    match serde_json::from_str::<String>(literal) {
        Ok(found) if found == expected => Ok(()),
        Ok(found) => Err(Found::Other(found)),
        Err(_) => Err(Found::Kind(kind(value))),
    }
}

fn check_method(value: Option<&RawValue>) -> Result<(), String> {
    expect_string(value, "POST").map_err(|found| match found {
        Found::Missing => r#"method is missing (it must be "POST")"#.to_owned(),
        Found::Kind(kind) => format!(r#"method must be "POST", not {kind}"#),
        Found::Other(method) => format!(r#"method must be "POST", not {method:?}"#),
    })
}

fn check_url(value: Option<&RawValue>) -> Result<(), String> {
    expect_string(value, CHAT_COMPLETIONS_URL).map_err(|found| {
        let only = format!("llmq batches run chat completions only ({CHAT_COMPLETIONS_URL:?})");
        match found {
            Found::Missing => format!("url is missing: {only}"),
            Found::Kind(kind) => format!("url must be a string, not {kind}: {only}"),
            Found::Other(url) => format!("url {url:?} is not supported: {only}"),
        }
    })
}

fn body(envelope: &Envelope<'_>) -> Result<ChatRequest, String> {
    let value = envelope.body.ok_or_else(|| "body is missing".to_owned())?;
    if kind(value) != "an object" {
        return Err(format!("body must be a JSON object, not {}", kind(value)));
    }
    let body: ChatRequest = serde_json::from_str(value.get()).map_err(|err| {
        let message = json_message(&err, envelope.offset(value));
        format!("body is not a chat completions request: {message}")
    })?;
    match body.problem() {
        None => Ok(body),
        Some(problem) => Err(match problem.strip_prefix("request.") {
            Some(rest) => format!("body.{rest}"),
            None => format!("body: {problem}"),
        }),
    }
}

fn take_model(body: &mut ChatRequest, checks: &Checks) -> Result<Option<String>, String> {
    let model = body.model.take().filter(|model| !model.is_empty());
    match model {
        None if !checks.model_override => Err(
            "body.model is missing or empty (name the model, or override it for every line)".into(),
        ),
        model => Ok(model),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const CHECKS: Checks = Checks {
        max_line_bytes: 10_000,
        model_override: false,
    };

    fn line(id: &str) -> String {
        json!({
            "custom_id": id,
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        })
        .to_string()
    }

    fn check_with(bytes: &[u8], checks: &Checks) -> Validated {
        validate(bytes, checks, || Ok(bytes)).unwrap()
    }

    fn check(bytes: &[u8]) -> Validated {
        check_with(bytes, &CHECKS)
    }

    fn read_all(bytes: &[u8], checks: &Checks) -> Vec<Result<InputLine, ReadError>> {
        requests(bytes, checks).collect()
    }

    /// (line number, message) of every reported problem.
    fn problems(validated: &Validated) -> Vec<(u64, &str)> {
        let each = validated.problems.iter();
        each.map(|p| (p.line_number, p.message.as_str())).collect()
    }

    #[test]
    fn bom_crlf_and_no_final_newline() {
        let bytes = format!("\u{feff}{}\r\n{}", line("a"), line("b")).into_bytes();
        let validated = check(&bytes);
        assert_eq!(problems(&validated), []);
        assert_eq!(validated.requests, 2);
        let lines: Vec<_> = read_all(&bytes, &CHECKS)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let ids: Vec<_> = lines
            .iter()
            .map(|l| (l.index, l.line_number, &*l.custom_id))
            .collect();
        assert_eq!(ids, [(0, 1, "a"), (1, 2, "b")]);
        assert_eq!(lines[0].model.as_deref(), Some("m"));
        assert_eq!(lines[0].body.model, None);
        assert_eq!(lines[0].body.messages.len(), 1);
    }

    #[test]
    fn blank_lines_are_not_requests() {
        let bytes = format!("\n  \n{}\n\t\r\n{}\n\n \n", line("a"), line("b"));
        let validated = check(bytes.as_bytes());
        assert_eq!((validated.requests, validated.problem_count), (2, 0));
        let lines = read_all(bytes.as_bytes(), &CHECKS);
        let at: Vec<_> = lines.iter().map(|l| l.as_ref().unwrap()).collect();
        let at: Vec<_> = at.iter().map(|l| (l.index, l.line_number)).collect();
        assert_eq!(at, [(0, 3), (1, 5)]);
        assert_eq!(check(b"").requests, 0);
        assert_eq!(check(b"\xEF\xBB\xBF\r\n").requests, 0);
    }

    #[test]
    fn each_problem_is_named_with_its_line() {
        let valid = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
        let with = |key: &str, value: serde_json::Value| {
            let mut object = json!({"custom_id": "k", "method": "POST",
                "url": "/v1/chat/completions", "body": valid.clone()});
            object[key] = value;
            object.to_string().into_bytes()
        };
        let without = |key: &str| {
            let mut object: serde_json::Value =
                serde_json::from_slice(&with(key, json!(0))).unwrap();
            object.as_object_mut().unwrap().remove(key);
            object.to_string().into_bytes()
        };
        let long_id = "x".repeat(513);
        let cases: Vec<(Vec<u8>, String)> = vec![
            (b"{\"custom_id\": \xff}".to_vec(), "line is not valid UTF-8".into()),
            ("{\"custom_id\": ".into(), "line is not valid JSON: EOF while parsing a value at column 14".into()),
            ("[1, 2]".into(), "line must be a JSON object, not an array".into()),
            ("nope".into(), "line is not valid JSON: expected ident at column 2".into()),
            (r#"{"custom_id": "a", "custom_id": "b"}"#.into(), "line is not a valid request: duplicate field `custom_id`".into()),
            (without("custom_id"), "custom_id is missing".into()),
            (with("custom_id", json!(7)), "custom_id must be a string, not a number".into()),
            (with("custom_id", json!(null)), "custom_id must be a string, not null".into()),
            (with("custom_id", json!("")), "custom_id must not be empty".into()),
            (with("custom_id", json!(long_id)), "custom_id is 513 bytes, over the limit of 512 bytes".into()),
            (without("method"), r#"method is missing (it must be "POST")"#.into()),
            (with("method", json!("GET")), r#"method must be "POST", not "GET""#.into()),
            (with("method", json!(["POST"])), r#"method must be "POST", not an array"#.into()),
            (with("url", json!("/v1/embeddings")), r#"url "/v1/embeddings" is not supported: llmq batches run chat completions only ("/v1/chat/completions")"#.into()),
            (without("url"), "url is missing: llmq batches run chat completions only".into()),
            (without("body"), "body is missing".into()),
            (with("body", json!("hi")), "body must be a JSON object, not a string".into()),
            (with("body", json!({"model": "m"})), "body is not a chat completions request: missing field `messages`".into()),
            (with("body", json!({"model": "m", "messages": []})), "body.messages must not be empty".into()),
            (with("body", json!({"model": "m", "messages": [{"role": "user"}]})), "body.messages[0]: a user message needs content (got null)".into()),
            (with("body", json!({"model": "", "messages": [{"role": "user", "content": "x"}]})), "body.model is missing or empty".into()),
            (with("body", json!({"messages": [{"role": "user", "content": "x"}]})), "body.model is missing or empty".into()),
        ];
        let mut file = b"\xEF\xBB\xBF".to_vec();
        for (text, _) in &cases {
            file.extend_from_slice(text);
            file.extend_from_slice(b"\n");
        }
        let validated = check(&file);
        assert!(validated.models.is_empty());
        // Most lines share custom_id "k"; their duplicates are another test's business.
        let found: Vec<_> = validated
            .problems
            .iter()
            .filter(|p| !p.message.starts_with("duplicate"))
            .collect();
        assert_eq!(found.len(), cases.len());
        for (i, ((_, expected), got)) in cases.iter().zip(found).enumerate() {
            assert_eq!(got.line_number, i as u64 + 1);
            assert!(
                got.message.starts_with(expected.as_str()),
                "{got} should say {expected}"
            );
        }
    }

    #[test]
    fn a_body_error_names_its_column_in_the_line() {
        let text = r#"{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"messages":5}}"#;
        let validated = check(text.as_bytes());
        let message = &validated.problems[0].message;
        let column = text.find("5}").unwrap() + 1;
        assert!(
            message.ends_with(&format!("at column {column}")),
            "{message}"
        );
    }

    #[test]
    fn unknown_keys_are_ignored_and_the_override_allows_no_model() {
        let text = r#"{"x":1,"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"messages":[{"role":"user","content":"q"}]}}"#;
        let checks = Checks {
            model_override: true,
            ..CHECKS
        };
        let validated = check_with(text.as_bytes(), &checks);
        assert_eq!((validated.problem_count, validated.requests), (0, 1));
        assert!(validated.models.is_empty());
        let lines = read_all(text.as_bytes(), &checks);
        assert_eq!(lines[0].as_ref().unwrap().model, None);
    }

    #[test]
    fn lines_over_the_limit_are_counted_not_parsed() {
        let ok = line("a");
        let checks = Checks {
            max_line_bytes: ok.len(),
            ..CHECKS
        };
        // At the limit on the first line, after a BOM and before a CRLF: accepted.
        let long = format!("{}  ", line("b"));
        let bytes = format!("\u{feff}{ok}\r\n{long}\r\n{{{}", "x".repeat(5000));
        let validated = check_with(bytes.as_bytes(), &checks);
        let limit = ok.len();
        let expected = [
            (
                2,
                format!(
                    "line is {} bytes, over the limit of {limit} bytes",
                    long.len()
                ),
            ),
            (
                3,
                format!("line is 5001 bytes, over the limit of {limit} bytes"),
            ),
        ];
        let got: Vec<_> = problems(&validated)
            .into_iter()
            .map(|(n, m)| (n, m.to_owned()))
            .collect();
        assert_eq!(got, expected);
        assert_eq!(validated.requests, 3);
        let lines = read_all(bytes.as_bytes(), &checks);
        assert_eq!(lines[0].as_ref().unwrap().custom_id, "a");
        assert!(matches!(&lines[1], Err(ReadError::Changed(p)) if p.line_number == 2));
    }

    #[test]
    fn duplicates_name_the_first_line() {
        let ids = ["a", "b", "a", "c", "b", "a"];
        let bytes: String = ids.iter().map(|id| line(id) + "\n").collect();
        let validated = check(bytes.as_bytes());
        assert_eq!(
            problems(&validated),
            [
                (3, r#"duplicate custom_id "a" (first on line 1)"#),
                (5, r#"duplicate custom_id "b" (first on line 2)"#),
                (6, r#"duplicate custom_id "a" (first on line 1)"#),
            ]
        );
        assert_eq!(validated.problem_count, 3);
    }

    #[test]
    fn colliding_hashes_of_different_ids_are_not_duplicates() {
        let ids = ["a", "b", "c", "b"];
        let bytes: String = ids.iter().map(|id| line(id) + "\n").collect();
        let reopen = || Ok(bytes.as_bytes());
        let validated = validate_with(bytes.as_bytes(), &CHECKS, reopen, |_| 42).unwrap();
        assert_eq!(
            problems(&validated),
            [(4, r#"duplicate custom_id "b" (first on line 2)"#)]
        );
        let distinct: String = ["a", "b", "c"].iter().map(|id| line(id) + "\n").collect();
        let reopen = || Ok(distinct.as_bytes());
        let validated = validate_with(distinct.as_bytes(), &CHECKS, reopen, |_| 42).unwrap();
        assert_eq!(validated.problem_count, 0);
    }

    #[test]
    fn the_confirmation_pass_compares_ids_and_stops_at_the_last_line() {
        let ids = ["x", "y", "x", "y"];
        let bytes: String = ids.iter().map(|id| line(id) + "\n").collect();
        let collided: HashSet64 = [7].into_iter().collect();
        let report = confirm_duplicates(bytes.as_bytes(), &CHECKS, &collided, 3, |_| 7).unwrap();
        assert_eq!(report.count, 1);
        assert_eq!(report.problems[0], problem(3, duplicate("x", 1)));
    }

    #[test]
    fn a_duplicate_is_reported_besides_the_lines_other_problem() {
        let bad = line("a").replace("POST", "GET");
        let bytes = format!("{}\n{bad}\n", line("a"));
        let validated = check(bytes.as_bytes());
        let lines: Vec<_> = problems(&validated).iter().map(|p| p.0).collect();
        assert_eq!(lines, [2, 2]);
        assert!(validated.problems[1].message.starts_with("duplicate"));
    }

    #[test]
    fn problems_are_capped_but_all_counted() {
        let mut bytes = format!("{}\n{}\n", line("a"), line("a"));
        for _ in 0..198 {
            bytes.push_str("oops\n");
        }
        let validated = check(bytes.as_bytes());
        assert_eq!(validated.problem_count, 199);
        let lines: Vec<_> = validated.problems.iter().map(|p| p.line_number).collect();
        assert_eq!(lines, (2..=101).collect::<Vec<_>>());
        assert!(validated.problems[0].message.starts_with("duplicate"));
    }

    #[test]
    fn the_digest_is_of_the_bytes_as_read() {
        let bytes = format!("\u{feff}{}\r\n\n{}", line("a"), line("b")).into_bytes();
        let expected: [u8; 32] = Sha256::digest(&bytes).into();
        assert_eq!(check(&bytes).sha256, expected);
        let mut second = requests(&bytes[..], &CHECKS);
        assert_eq!(second.by_ref().count(), 2);
        assert_eq!(second.sha256(), expected);
    }

    #[test]
    fn models_count_valid_lines_and_keep_the_first_five() {
        let other = line("z").replace("\"m\"", "\"n\"");
        let mut bytes: String = (0..7).map(|i| line(&i.to_string()) + "\n").collect();
        bytes.push_str(&format!("{other}\noops\n"));
        let validated = check(bytes.as_bytes());
        let m = &validated.models["m"];
        assert_eq!(
            (m.lines, &m.first_line_numbers[..]),
            (7, &[1, 2, 3, 4, 5][..])
        );
        assert_eq!(validated.models["n"].first_line_numbers, [8]);
        assert_eq!(validated.models.len(), 2);
    }

    #[test]
    fn requests_yield_what_validation_accepted() {
        let bytes = format!("{}\noops\n\n{}\n{}\n", line("a"), line(""), line("c"));
        let validated = check(bytes.as_bytes());
        let bad: Vec<_> = validated.problems.iter().map(|p| p.line_number).collect();
        let lines = read_all(bytes.as_bytes(), &CHECKS);
        let got: Vec<_> = lines
            .iter()
            .map(|l| match l {
                Ok(line) => (line.index, line.line_number, true),
                Err(ReadError::Changed(p)) => (u64::MAX, p.line_number, false),
                Err(ReadError::Io(err)) => panic!("{err}"),
            })
            .collect();
        assert_eq!(
            got,
            [
                (0, 1, true),
                (u64::MAX, 2, false),
                (u64::MAX, 4, false),
                (3, 5, true)
            ]
        );
        assert_eq!(bad, [2, 4]);
    }

    struct Failing;

    impl io::Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("disk on fire"))
        }
    }

    #[test]
    fn a_read_error_ends_both_passes() {
        let text = format!("{}\n", line("a"));
        let unfinished = io::Read::chain(text.trim_end().as_bytes(), BufReader::new(Failing));
        let reopen = || Ok(&b""[..]);
        assert!(validate(unfinished, &CHECKS, reopen).is_err());
        let reader = io::Read::chain(text.as_bytes(), BufReader::new(Failing));
        let lines: Vec<_> = requests(reader, &CHECKS).collect();
        assert_eq!(lines.len(), 2);
        assert!(matches!(lines[1], Err(ReadError::Io(_))));
    }

    /// Bytes that are mostly line structure and JSON, sometimes anything.
    fn noise() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            any::<u8>().prop_map(|b| vec![b]),
            Just(b"\n".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"\xEF\xBB\xBF".to_vec()),
            Just(b"{\"custom_id\":\"a\",".to_vec()),
            Just(b"\"method\":\"POST\",\"url\":\"/v1/chat/completions\",".to_vec()),
            Just(
                b"\"body\":{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\""
                    .to_vec()
            ),
            Just(b"\"}]}}".to_vec()),
        ];
        proptest::collection::vec(piece, 0..64).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #[test]
        fn any_bytes_are_read_without_panic(bytes in noise(), max in 0usize..300, chunk in 1usize..8) {
            let checks = Checks { max_line_bytes: max, model_override: max % 2 == 0 };
            let validated = check_with(&bytes, &checks);
            // Read a few bytes at a time, lines, CRLFs and the BOM split anywhere: the same.
            let reopen = || Ok(BufReader::with_capacity(chunk, &bytes[..]));
            prop_assert_eq!(&validate(reopen()?, &checks, reopen)?, &validated);
            prop_assert!(validated.problem_count >= validated.problems.len() as u64);
            prop_assert!(validated.problems.len() <= MAX_REPORTED);
            let numbers: Vec<_> = validated.problems.iter().map(|p| p.line_number).collect();
            prop_assert!(numbers.is_sorted());
            let lines = read_all(&bytes, &checks);
            prop_assert_eq!(lines.len() as u64, validated.requests);
            // Both passes refuse the same lines, duplicates aside.
            let refused: Vec<_> = lines.iter().filter_map(|l| match l {
                Err(ReadError::Changed(p)) => Some(p.clone()),
                _ => None,
            }).collect();
            let found: Vec<_> = validated.problems.iter()
                .filter(|p| !p.message.starts_with("duplicate custom_id"))
                .cloned()
                .collect();
            if validated.problem_count <= MAX_REPORTED as u64 {
                prop_assert_eq!(refused, found);
            }
        }

        #[test]
        fn valid_files_are_read_whole_and_in_order(
            ids in proptest::collection::btree_set("[a-zA-Z0-9 _\"\\\\é\u{1F600}-]{1,24}", 1..40),
            layout in proptest::collection::vec((any::<bool>(), 0usize..3, "[ \t]{0,3}", any::<String>()), 40),
            bom in any::<bool>(),
            final_newline in any::<bool>(),
            chunk in 1usize..64,
        ) {
            let ids: Vec<String> = ids.into_iter().collect();
            let mut file = if bom { "\u{feff}".to_owned() } else { String::new() };
            let mut expected = Vec::new();
            let mut number = 0u64;
            for (i, (id, (crlf, blanks, blank, prompt))) in ids.iter().zip(&layout).enumerate() {
                let ending = if *crlf { "\r\n" } else { "\n" };
                for _ in 0..*blanks {
                    file.push_str(&format!("{blank}{ending}"));
                    number += 1;
                }
                let body = json!({"model": "m", "messages": [{"role": "user", "content": prompt}]});
                let line = json!({"custom_id": id, "method": "POST",
                    "url": "/v1/chat/completions", "body": body});
                file.push_str(&line.to_string());
                number += 1;
                expected.push((i as u64, number, id.clone()));
                if final_newline || i + 1 < ids.len() {
                    file.push_str(ending);
                }
            }
            let validated = check(file.as_bytes());
            prop_assert_eq!(problems(&validated), []);
            prop_assert_eq!(validated.requests, ids.len() as u64);
            let reader = BufReader::with_capacity(chunk, file.as_bytes());
            let got: Vec<_> = requests(reader, &CHECKS)
                .map(|l| l.map(|l| (l.index, l.line_number, l.custom_id)).unwrap())
                .collect();
            prop_assert_eq!(got, expected);
        }
    }
}
