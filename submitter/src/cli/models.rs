//! `submitter models`: what can be run right now, according to the live catalog.

use std::collections::{BTreeMap, BTreeSet};

use clap::Args;
use llmq_schemas::CatalogEntry;
use llmq_submitter::{Client, ClientOptions, is_live};
use serde::Serialize;

use super::print::{note, out, out_json};
use super::table::{Align, Table};
use super::{CliError, Exit};

#[derive(Debug, Args)]
pub struct ModelsArgs {
    /// Print the catalog entries (live and stale) as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Default, Serialize)]
struct ModelView {
    tiers: BTreeSet<String>,
    workers: BTreeSet<String>,
    deployments: BTreeSet<String>,
    fallbacks: BTreeSet<String>,
}

pub async fn run(args: ModelsArgs, mut options: ClientOptions) -> Result<Exit, CliError> {
    options.check_catalog = false;
    let client = Client::connect(options).await?;
    let entries = client.catalog().await?;
    if args.json {
        out_json(&entries)?;
        return Ok(Exit::Success);
    }
    let (live, stale): (Vec<&CatalogEntry>, Vec<&CatalogEntry>) =
        entries.iter().partition(|e| is_live(e));
    if live.is_empty() {
        note(format!(
            "no live workers for prefix '{}'{}",
            client.subjects().prefix(),
            stale_note(stale.len())
        ));
        return Ok(Exit::Success);
    }
    let mut table = Table::new(&[
        ("MODEL", Align::Left),
        ("TIERS", Align::Left),
        ("WORKERS", Align::Right),
        ("DEPLOYMENTS", Align::Left),
        ("FALLBACKS", Align::Left),
    ]);
    for (name, view) in models(&live) {
        table.row(vec![
            name,
            join(&view.tiers),
            view.workers.len().to_string(),
            join(&view.deployments),
            join(&view.fallbacks),
        ]);
    }
    out(&table.render())?;
    if !stale.is_empty() {
        note(stale_note(stale.len()).trim_start_matches("; "));
    }
    Ok(Exit::Success)
}

fn models(live: &[&CatalogEntry]) -> BTreeMap<String, ModelView> {
    let mut models: BTreeMap<String, ModelView> = BTreeMap::new();
    for entry in live {
        for model in &entry.models {
            let view = models.entry(model.name.clone()).or_default();
            view.tiers
                .extend(model.tiers.iter().map(|t| t.as_str().to_owned()));
            view.workers.insert(entry.worker_id.clone());
            view.deployments.extend(
                model
                    .deployments
                    .iter()
                    .map(|d| format!("{}/{} (w {})", d.provider, d.upstream_model, d.weight)),
            );
            view.fallbacks.extend(model.fallbacks.iter().cloned());
        }
    }
    models
}

fn join(items: &BTreeSet<String>) -> String {
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}

fn stale_note(stale: usize) -> String {
    if stale == 0 {
        String::new()
    } else {
        format!("; {stale} stale catalog entries (no heartbeat for over a minute) ignored")
    }
}
