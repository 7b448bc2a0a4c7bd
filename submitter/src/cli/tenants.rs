//! `submitter tenants`: the tenant registry's admin commands.
//!
//! The registry comes from a file teams keep in git (`tenants.toml`, see
//! `llmq_runtime::tenants`); `apply` checks the whole file first and, on any problem,
//! applies nothing and names every field that is wrong.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use llmq_runtime::tenants::{Change, LiveEntry, parse_registry};
use llmq_schemas::TenantEntry;
use llmq_submitter::{ClientOptions, Operator};
use serde_json::Value;

use super::print::{note, out, out_json, out_line};
use super::table::{Align, Table};
use super::{CliError, Exit};

#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
    /// Check a registry file without connecting.
    Check(FileArgs),
    /// Show what `apply` would change.
    Diff(ApplyArgs),
    /// Make the registry hold the file's tenants (every worker picks the change up within
    /// seconds).
    Apply(ApplyArgs),
    /// List the registry's tenants.
    List(ListArgs),
    /// Print one tenant's entry.
    Show(ShowArgs),
    /// Remove a tenant: its jobs are refused from then on (registry enforced).
    Remove(ShowArgs),
}

#[derive(Debug, Args)]
pub struct FileArgs {
    /// The registry file (TOML, `[tenants.<id>]` tables).
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub file: FileArgs,
    /// Also remove the registry's tenants that are not in the file.
    #[arg(long)]
    pub prune: bool,
    /// Replicas of the registry bucket, if this creates it; 0 (the default): as many as
    /// the job stream has (the workers' jetstream.replicas), 1 before any worker ran. An
    /// existing registry keeps its own.
    #[arg(long, default_value_t = 0)]
    pub replicas: usize,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print the entries as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The tenant id.
    pub id: String,
}

pub async fn run(command: TenantsCommand, options: ClientOptions) -> Result<Exit, CliError> {
    if let TenantsCommand::Check(args) = &command {
        let entries = read_file(&args.file)?;
        note(format!(
            "{}: {} tenant(s), no problem found",
            args.file.display(),
            entries.len()
        ));
        return Ok(Exit::Success);
    }
    let operator = Operator::connect(options).await?;
    match command {
        TenantsCommand::Check(_) => Ok(Exit::Success),
        TenantsCommand::Diff(args) => diff(&operator, &args).await,
        TenantsCommand::Apply(args) => apply(&operator, &args).await,
        TenantsCommand::List(args) => list(&operator, &args).await,
        TenantsCommand::Show(args) => show(&operator, &args.id).await,
        TenantsCommand::Remove(args) => remove(&operator, &args.id).await,
    }
}

/// The file's tenants, or every problem in it (a usage error: nothing is applied).
pub(super) fn read_file(path: &PathBuf) -> Result<Vec<TenantEntry>, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| CliError::Usage(format!("cannot read {}: {err}", path.display())))?;
    parse_registry(&text).map_err(|problems| {
        CliError::Usage(format!(
            "{} is not a valid registry file ({} problem(s); nothing was applied):\n{problems}",
            path.display(),
            problems.len()
        ))
    })
}

async fn diff(operator: &Operator, args: &ApplyArgs) -> Result<Exit, CliError> {
    let file = read_file(&args.file.file)?;
    let changes = operator.tenants_diff(&file, args.prune).await?;
    print_changes(&changes)?;
    if changes.is_empty() {
        note("the registry already holds the file's tenants");
    }
    Ok(Exit::Success)
}

async fn apply(operator: &Operator, args: &ApplyArgs) -> Result<Exit, CliError> {
    let file = read_file(&args.file.file)?;
    let changes = operator.tenants_diff(&file, args.prune).await?;
    print_changes(&changes)?;
    let applied = operator.apply_tenants(&changes, args.replicas).await?;
    note(format!(
        "applied {applied} change(s) to the tenant registry ({} tenant(s) in the file)",
        file.len()
    ));
    if !args.prune {
        let live = operator.tenants().await?;
        let extra: Vec<&String> = live
            .keys()
            .filter(|id| !file.iter().any(|e| &e.id == *id))
            .collect();
        if !extra.is_empty() {
            note(format!(
                "in the registry but not in the file (kept; --prune removes them): {}",
                extra
                    .iter()
                    .map(|id| id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    Ok(Exit::Success)
}

fn print_changes(changes: &[Change]) -> Result<(), CliError> {
    for change in changes {
        match change {
            Change::Add(entry) => out_line(format!("+ {} (new)", entry.id))?,
            Change::Remove(id) => out_line(format!("- {id} (removed)"))?,
            Change::Update { live, file } => {
                out_line(format!("~ {}", file.id))?;
                for (field, before, after) in field_changes(live, file) {
                    out_line(format!("    {field}: {before} -> {after}"))?;
                }
            }
        }
    }
    Ok(())
}

/// The fields that differ, as JSON text (`updated_at` aside).
fn field_changes(live: &TenantEntry, file: &TenantEntry) -> Vec<(String, String, String)> {
    let as_map = |entry: &TenantEntry| match serde_json::to_value(entry) {
        Ok(Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    let (before, after) = (as_map(live), as_map(file));
    let mut fields: Vec<&String> = before.keys().chain(after.keys()).collect();
    fields.sort();
    fields.dedup();
    let text = |v: Option<&Value>| v.map_or("(unset)".to_owned(), Value::to_string);
    fields
        .into_iter()
        .filter(|field| field.as_str() != "updated_at" && before.get(*field) != after.get(*field))
        .map(|field| {
            (
                field.clone(),
                text(before.get(field)),
                text(after.get(field)),
            )
        })
        .collect()
}

async fn list(operator: &Operator, args: &ListArgs) -> Result<Exit, CliError> {
    let tenants = operator.tenants().await?;
    if args.json {
        let entries: Vec<Value> = tenants
            .into_iter()
            .map(|(id, entry)| entry_json(&id, entry))
            .collect();
        out_json(&entries)?;
        return Ok(Exit::Success);
    }
    if tenants.is_empty() {
        note("the tenant registry is empty: workers in auto mode run open (any tenant, any model)");
        return Ok(Exit::Success);
    }
    let mut table = Table::new(&[
        ("TENANT", Align::Left),
        ("NAME", Align::Left),
        ("MODELS", Align::Left),
        ("TIERS", Align::Left),
        ("MAX TOKENS", Align::Right),
        ("LABELS", Align::Left),
    ]);
    for (id, entry) in tenants {
        table.row(match entry {
            Ok(entry) => summary_row(entry),
            Err(reason) => vec![
                id,
                format!("UNREADABLE: {reason}"),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ],
        });
    }
    out(&table.render())?;
    Ok(Exit::Success)
}

fn summary_row(entry: TenantEntry) -> Vec<String> {
    let tiers: Vec<&str> = entry.tiers.iter().map(|t| t.as_str()).collect();
    let labels: Vec<String> = entry
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    vec![
        entry.id,
        entry.name,
        if entry.models.is_empty() {
            "(none)".into()
        } else {
            entry.models.join(", ")
        },
        tiers.join(", "),
        entry.max_tokens.map_or("-".into(), |n| n.to_string()),
        labels.join(", "),
    ]
}

fn entry_json(id: &str, entry: LiveEntry) -> Value {
    match entry {
        Ok(entry) => serde_json::to_value(entry).unwrap_or(Value::Null),
        Err(reason) => serde_json::json!({"id": id, "unreadable": reason}),
    }
}

async fn show(operator: &Operator, id: &str) -> Result<Exit, CliError> {
    let mut tenants = operator.tenants().await?;
    match tenants.remove(id) {
        Some(entry) => {
            out_json(&entry_json(id, entry))?;
            Ok(Exit::Success)
        }
        None => Err(CliError::NotFound(format!(
            "tenant {id:?} is not in the registry"
        ))),
    }
}

async fn remove(operator: &Operator, id: &str) -> Result<Exit, CliError> {
    if !operator.tenants().await?.contains_key(id) {
        return Err(CliError::NotFound(format!(
            "tenant {id:?} is not in the registry"
        )));
    }
    operator.remove_tenant(id).await?;
    note(format!("removed tenant {id} from the registry"));
    Ok(Exit::Success)
}
