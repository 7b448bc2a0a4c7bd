//! Checking an input file and naming its batch, before anything is published.
//!
//! The batch id is the digest of what makes the batch (the tenant, the file's bytes, the
//! options that change what runs), so running the same command again finds the same
//! batch and resumes it; `fresh` adds a random part for a second, separate run.

use std::path::{Path, PathBuf};
use std::time::Duration;

use llmq_schemas::{BatchId, ChatRequest, Job, Tier};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::error::BatchError;
use super::input::{self, Checks, LineProblem, Validated};
use super::submit::{Runnable, custom_ids_of};
use crate::Client;

/// The worker's default `max_request_bytes`: no line over it can run anywhere.
const MAX_LINE_BYTES: u64 = 32 * 1024 * 1024;

/// How to run a batch.
#[derive(Debug, Clone)]
pub struct BatchOptions {
    /// Run every line on this model instead of its `body.model`.
    pub model: Option<String>,
    pub tier: Tier,
    /// Lines not run this long after the batch was created end `expired` (OpenAI's
    /// `completion_window`).
    pub completion_window: Duration,
    pub metadata: Option<Map<String, Value>>,
    /// Publish the good lines and leave out the bad ones (listed) instead of refusing.
    pub skip_invalid: bool,
    /// A new batch even if this input ran before with these options.
    pub fresh: bool,
    /// This id rather than one derived from the input (a batch made over HTTP has its
    /// id before its input is read).
    pub id: Option<BatchId>,
}

impl Default for BatchOptions {
    fn default() -> Self {
        Self {
            model: None,
            tier: Tier::Batch,
            completion_window: Duration::from_secs(24 * 3600),
            metadata: None,
            skip_invalid: false,
            fresh: false,
            id: None,
        }
    }
}

/// A checked input file and the batch it makes.
#[derive(Debug, Clone)]
pub struct Plan {
    pub id: BatchId,
    pub path: PathBuf,
    pub options: BatchOptions,
    /// Request lines that will run (bad lines left out with `skip_invalid`).
    pub requests: u64,
    /// The file's SHA-256, hex.
    pub sha256: String,
    /// Lines left out (`skip_invalid`), the first 100.
    pub skipped: Vec<LineProblem>,
    pub skipped_count: u64,
    /// Models the check refused: with `skip_invalid`, their lines are left out.
    pub skipped_models: Vec<String>,
    /// Every model the lines run on.
    pub models: Vec<String>,
    pub(crate) checks: Checks,
}

impl Client {
    /// Reads `path` through, checks every line (and every model named against this
    /// tenant's policy and the live catalog), and names the batch.
    pub async fn batch_plan(&self, path: &Path, options: BatchOptions) -> Result<Plan, BatchError> {
        let checks = self.batch_checks(&options).await;
        let validated = validate(path, checks).await?;
        let mut problems = validated.problems.clone();
        let mut count = validated.problem_count;
        let mut skipped_models = Vec::new();
        for (model, lines) in &validated.models {
            let model = options.model.as_deref().unwrap_or(model);
            if let Err(err) = self.check_batch_model(model, options.tier).await {
                count += lines.lines;
                skipped_models.push(model.to_owned());
                problems.extend(
                    lines
                        .first_line_numbers
                        .iter()
                        .map(|&line_number| LineProblem {
                            line_number,
                            message: err.to_string(),
                        }),
                );
            }
        }
        if let Some(model) = &options.model
            && validated.models.is_empty()
            && let Err(err) = self.check_batch_model(model, options.tier).await
        {
            return Err(BatchError::Submit(err));
        }
        problems.sort_by_key(|p| p.line_number);
        problems.truncate(super::MAX_REPORTED);
        if count > 0 && !options.skip_invalid {
            return Err(BatchError::InvalidInput { problems, count });
        }
        let sha256 = hex(&validated.sha256);
        let models = models_run(&validated, &options);
        let mut plan = Plan {
            id: options
                .id
                .clone()
                .unwrap_or_else(|| batch_id(self.tenant().as_str(), &sha256, &options)),
            path: path.to_owned(),
            options,
            requests: validated.requests,
            sha256,
            skipped: problems,
            skipped_count: count,
            models,
            skipped_models,
            checks,
        };
        if count > 0 {
            plan.requests = runnable_lines(&plan).await?;
        }
        if plan.requests == 0 {
            return Err(BatchError::EmptyInput);
        }
        Ok(plan)
    }

    async fn batch_checks(&self, options: &BatchOptions) -> Checks {
        let tenant_max = self.own_max_request_bytes().await.unwrap_or(MAX_LINE_BYTES);
        Checks {
            max_line_bytes: usize::try_from(tenant_max.min(MAX_LINE_BYTES)).unwrap_or(usize::MAX),
            model_override: options.model.is_some(),
        }
    }

    /// Whether lines on `model` may run: a valid name, allowed by this tenant's policy,
    /// served by a live worker.
    async fn check_batch_model(&self, model: &str, tier: Tier) -> Result<(), crate::SubmitError> {
        let mut job = Job::new(model, ChatRequest::user("x"));
        job.tier = tier;
        llmq_schemas::ModelName::parse(model)
            .map_err(|err| crate::SubmitError::InvalidJob(err.to_string()))?;
        self.check_policy(&job, 0).await?;
        if self.options().check_catalog {
            self.check_model(model, tier).await?;
        }
        Ok(())
    }
}

fn models_run(validated: &Validated, options: &BatchOptions) -> Vec<String> {
    match &options.model {
        Some(model) => vec![model.clone()],
        None => validated.models.keys().cloned().collect(),
    }
}

/// The lines of a plan with bad lines left out, counted by the reader that numbers them
/// for the submit.
async fn runnable_lines(plan: &Plan) -> Result<u64, BatchError> {
    let runnable = Runnable::new(true, plan.options.model.clone(), &plan.skipped_models);
    let (path, checks, sha256) = (plan.path.clone(), plan.checks, plan.sha256.clone());
    let count = tokio::task::spawn_blocking(move || {
        custom_ids_of(&path, (checks, runnable), &sha256, 0..0)
    });
    match count.await {
        Ok(Some((count, _))) => Ok(count),
        _ => Err(BatchError::InputChanged(plan.path.display().to_string())),
    }
}

async fn validate(path: &Path, checks: Checks) -> Result<Validated, BatchError> {
    let owned = path.to_owned();
    let read = tokio::task::spawn_blocking(move || input::validate_path(&owned, &checks));
    let io = |source| BatchError::Io {
        what: "cannot read",
        path: path.display().to_string(),
        source,
    };
    read.await
        .map_err(|err| io(std::io::Error::other(err)))?
        .map_err(io)
}

fn batch_id(tenant: &str, sha256: &str, options: &BatchOptions) -> BatchId {
    let metadata = options
        .metadata
        .as_ref()
        .map(|m| Value::Object(m.clone()).to_string());
    let mut digest = Sha256::new()
        .chain_update(b"llmq-batch-v1\0")
        .chain_update(tenant.as_bytes())
        .chain_update(b"\0")
        .chain_update(sha256.as_bytes())
        .chain_update(format!(
            "\0{:?}\0{}\0{}\0{:?}\0{}",
            options.model,
            options.tier,
            options.completion_window.as_secs(),
            metadata,
            options.skip_invalid
        ));
    if options.fresh {
        digest.update(uuid::Uuid::new_v4().as_bytes());
    }
    let digest = digest.finalize();
    BatchId::from_digest(std::array::from_fn(|i| digest[i]))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
