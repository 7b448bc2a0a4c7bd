//! `submitter keys`: llmq API keys for the HTTP edge (admin).
//!
//! `create` prints the key once, on stdout alone (so `key=$(submitter keys create ...)`
//! captures it and nothing else); only its hash is stored, so a lost key is revoked and
//! made again, never shown again.

use std::time::Duration;

use clap::{Args, Subcommand};
use llmq_runtime::api_keys::ApiKeyEntry;
use llmq_schemas::Timestamp;
use llmq_submitter::{ClientOptions, Operator};
use secrecy::ExposeSecret;

use super::print::{note, out, out_json, out_line};
use super::table::{Align, Table};
use super::{CliError, Exit};

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make a key for a tenant and print it (the only time it is shown).
    Create(CreateArgs),
    /// List every key (id, tenant, models, state; never a secret).
    List(ListArgs),
    /// Revoke a key: every edge refuses it within seconds.
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The tenant the key belongs to.
    pub tenant: String,
    /// A description for listings ("ci", "search-frontend").
    #[arg(long)]
    pub name: Option<String>,
    /// Narrow the tenant's models to these (exact names or `*` globs), comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "MODELS")]
    pub models: Vec<String>,
    /// Requests per minute for this key alone, across every edge.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub rpm: Option<u32>,
    /// Expire after this long (30d, 12h).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub expires_in: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The key's id (the 12 hex digits after `llmq-`, as `keys list` shows).
    pub id: String,
}

pub async fn run(command: KeysCommand, options: ClientOptions) -> Result<Exit, CliError> {
    let operator = Operator::connect(options).await?;
    match command {
        KeysCommand::Create(args) => create(&operator, args).await,
        KeysCommand::List(args) => list(&operator, &args).await,
        KeysCommand::Revoke(args) => {
            let entry = operator.revoke_api_key(&args.id).await?;
            note(format!(
                "revoked key {} of tenant {}",
                entry.id, entry.tenant
            ));
            Ok(Exit::Success)
        }
    }
}

async fn create(operator: &Operator, args: CreateArgs) -> Result<Exit, CliError> {
    let template = ApiKeyEntry {
        name: args.name,
        models: args.models,
        rpm: args.rpm,
        expires_at: args.expires_in.map(|ttl| Timestamp::now().plus(ttl)),
        ..ApiKeyEntry::template()
    };
    let key = operator.create_api_key(&args.tenant, template).await?;
    out_line(key.key.expose_secret())?;
    note(format!(
        "key {} for tenant {}: shown once, stored only as a hash; keep it in your secret store",
        key.entry.id, key.entry.tenant
    ));
    Ok(Exit::Success)
}

async fn list(operator: &Operator, args: &ListArgs) -> Result<Exit, CliError> {
    let entries = operator.api_keys().await?;
    if args.json {
        let readable: Vec<&ApiKeyEntry> = entries.iter().filter_map(|e| e.as_ref().ok()).collect();
        out_json(&readable)?;
        return Ok(Exit::Success);
    }
    let mut table = Table::new(&[
        ("ID", Align::Left),
        ("TENANT", Align::Left),
        ("NAME", Align::Left),
        ("MODELS", Align::Left),
        ("RPM", Align::Right),
        ("CREATED", Align::Left),
        ("STATE", Align::Left),
    ]);
    for entry in &entries {
        match entry {
            Ok(entry) => table.row(row(entry)),
            Err(reason) => note(format!("unreadable key entry: {reason}")),
        }
    }
    out(&table.render())?;
    Ok(Exit::Success)
}

fn row(entry: &ApiKeyEntry) -> Vec<String> {
    let state = match (entry.revoked_at, entry.expires_at) {
        (Some(at), _) => format!("revoked {at}"),
        (None, Some(at)) if at.has_passed() => format!("expired {at}"),
        (None, Some(at)) => format!("expires {at}"),
        (None, None) => "active".into(),
    };
    vec![
        entry.id.clone(),
        entry.tenant.clone(),
        entry.name.clone().unwrap_or_default(),
        if entry.models.is_empty() {
            "(tenant's)".into()
        } else {
            entry.models.join(",")
        },
        entry.rpm.map_or_else(|| "-".into(), |n| n.to_string()),
        entry.created_at.to_string(),
        state,
    ]
}
