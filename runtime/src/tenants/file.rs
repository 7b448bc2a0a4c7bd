//! The registry file teams keep in git: one `[tenants.<id>]` table per tenant.
//!
//! ```toml
//! [tenants.acme]
//! name = "Acme search"
//! models = ["chat-*", "gpt-4.1"]
//! tiers = ["interactive", "batch"]
//! max_tokens = 4096
//! over_max_tokens = "clamp"          # or "refuse"
//! max_request_bytes = 1_000_000
//! labels = { team = "search", cost_centre = "cc-42" }
//!
//! [tenants.acme.budget]              # US dollars per calendar day / month, UTC
//! day = { usd = 50, enforce = "hard" }   # "hard" (default): calls refused once spent
//! month = { usd = 800, enforce = "soft" } # "soft": calls go on, flagged over budget
//! ```
//!
//! The whole file is checked before anything is applied, and every problem names its
//! tenant and field, so one run of `submitter tenants apply` tells what to fix. Each
//! tenant table is read on its own, so even a typo'd key is reported with its tenant.

use std::collections::BTreeMap;

use llmq_schemas::{
    BudgetLimit, Enforce, OverMaxTokens, PROTOCOL_VERSION, Subjects, Tenant, TenantBudget,
    TenantEntry, Tier,
};
use serde::Deserialize;

use super::pattern::ModelPattern;
use crate::Problems;
use crate::limits::{self, LimitSpec};

/// One tenant as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantTable {
    #[serde(default)]
    name: String,
    #[serde(default)]
    models: Vec<String>,
    #[serde(default = "all_tiers")]
    tiers: Vec<Tier>,
    /// Signed, so that a negative value is reported as such, with its field.
    #[serde(default)]
    max_tokens: Option<i64>,
    #[serde(default)]
    over_max_tokens: OverMaxTokens,
    #[serde(default)]
    max_request_bytes: Option<i64>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    reply_prefixes: Vec<String>,
    #[serde(default)]
    limits: LimitSpec,
    #[serde(default)]
    model_limits: BTreeMap<String, LimitSpec>,
    #[serde(default, with = "humantime_serde")]
    max_wait: Option<std::time::Duration>,
    #[serde(default)]
    batch_weight: Option<i64>,
    /// Read by [`budget`], so that each problem names its period and field.
    #[serde(default)]
    budget: Option<toml::Value>,
}

fn all_tiers() -> Vec<Tier> {
    Tier::ALL.to_vec()
}

/// Reads a registry file: every tenant, or every problem found.
pub fn parse_registry(text: &str) -> Result<Vec<TenantEntry>, Problems> {
    let mut problems = Problems::default();
    let tables = match top_level(text) {
        Ok(tables) => tables,
        Err(message) => {
            problems.add("file", message);
            return Err(problems);
        }
    };
    let mut entries = Vec::with_capacity(tables.len());
    for (id, value) in tables {
        let field = format!("tenants.{id}");
        match TenantTable::deserialize(value) {
            Ok(table) => {
                if let Some(entry) = entry(&field, &id, table, &mut problems) {
                    entries.push(entry);
                }
            }
            Err(err) => problems.add(&field, err.message()),
        }
    }
    problems.into_result().map(|()| entries)
}

/// The `[tenants.*]` tables; any other top-level key is an error, and so is a tenant
/// defined twice (TOML itself refuses the second table).
fn top_level(text: &str) -> Result<BTreeMap<String, toml::Value>, String> {
    let mut document: toml::Table = toml::from_str(text).map_err(|err| err.to_string())?;
    let tenants = document.remove("tenants");
    if let Some(key) = document.keys().next() {
        return Err(format!(
            "unknown top-level key `{key}`: the file holds only [tenants.<id>] tables"
        ));
    }
    match tenants {
        None => Ok(BTreeMap::new()),
        Some(toml::Value::Table(table)) => Ok(table.into_iter().collect()),
        Some(_) => Err("`tenants` must be a table of [tenants.<id>] tables".into()),
    }
}

/// Checks one tenant's table; `None` if it has problems (recorded).
fn entry(field: &str, id: &str, table: TenantTable, p: &mut Problems) -> Option<TenantEntry> {
    let before = p.len();
    if let Err(err) = Tenant::parse(id) {
        p.add(field, format!("{err} (a tenant id is a subject token)"));
    }
    p.check(
        table.name.chars().count() <= 200,
        format!("{field}.name"),
        "at most 200 characters",
    );
    for (i, model) in table.models.iter().enumerate() {
        if let Err(err) = ModelPattern::parse(model) {
            p.add(format!("{field}.models[{i}]"), err);
        }
    }
    p.check(
        !table.tiers.is_empty(),
        format!("{field}.tiers"),
        "at least one tier",
    );
    let max_tokens = positive(
        p,
        &format!("{field}.max_tokens"),
        table.max_tokens,
        u32::MAX.into(),
    );
    let max_request_bytes = positive(
        p,
        &format!("{field}.max_request_bytes"),
        table.max_request_bytes,
        i64::MAX,
    );
    let batch_weight = positive(
        p,
        &format!("{field}.batch_weight"),
        table.batch_weight,
        MAX_BATCH_WEIGHT,
    );
    labels(field, &table.labels, p);
    reply_prefixes(field, &table.reply_prefixes, p);
    limits::validate(&table.limits, &format!("{field}.limits"), p);
    for (model, spec) in &table.model_limits {
        limits::validate(spec, &format!("{field}.model_limits.{model}"), p);
    }
    let budget = table
        .budget
        .as_ref()
        .map(|value| budget(&format!("{field}.budget"), value, p))
        .unwrap_or_default();
    if p.len() > before {
        return None;
    }
    Some(TenantEntry {
        v: PROTOCOL_VERSION,
        id: id.to_owned(),
        name: table.name,
        models: table.models,
        tiers: table.tiers,
        max_tokens: max_tokens.and_then(|n| u32::try_from(n).ok()),
        over_max_tokens: table.over_max_tokens,
        max_request_bytes: max_request_bytes.and_then(|n| u64::try_from(n).ok()),
        labels: table.labels,
        reply_prefixes: table.reply_prefixes,
        limits: table.limits,
        model_limits: table.model_limits,
        max_wait: table.max_wait,
        batch_weight: batch_weight.and_then(|n| u32::try_from(n).ok()),
        budget,
        updated_at: None,
    })
}

fn positive(p: &mut Problems, field: &str, value: Option<i64>, max: i64) -> Option<i64> {
    let value = value?;
    p.check(
        value >= 1,
        field,
        format!("must be at least 1 (got {value})"),
    );
    p.check(
        value <= max,
        field,
        format!("must be at most {max} (got {value})"),
    );
    Some(value)
}

/// The largest batch weight: a tenant may take 1000 jobs per turn for every one of a
/// weight-1 tenant, which is already all of a worker's batch slots.
const MAX_BATCH_WEIGHT: i64 = 1000;

/// The most a budget may say: far above any real one, far below where dollars stop
/// fitting the spend counters (nano-dollars in 64 bits).
const MAX_BUDGET_USD: f64 = 1e9;

/// `[tenants.<id>.budget]`: `day` and `month`, each `{ usd, enforce }`.
fn budget(field: &str, value: &toml::Value, p: &mut Problems) -> TenantBudget {
    let mut budget = TenantBudget::default();
    let Some(table) = value.as_table() else {
        p.add(
            field,
            "must be a table: day = { usd = .. }, month = { usd = .. }",
        );
        return budget;
    };
    for (key, value) in table {
        let field = format!("{field}.{key}");
        let limit = budget_limit(&field, value, p);
        match key.as_str() {
            "day" => budget.day = limit,
            "month" => budget.month = limit,
            _ => p.add(&field, "unknown budget period: day or month"),
        }
    }
    budget
}

fn budget_limit(field: &str, value: &toml::Value, p: &mut Problems) -> Option<BudgetLimit> {
    let Some(table) = value.as_table() else {
        p.add(field, "must be a table: { usd = 50, enforce = \"hard\" }");
        return None;
    };
    let mut usd = None;
    let mut enforce = Enforce::Hard;
    for (key, value) in table {
        let field = format!("{field}.{key}");
        match (key.as_str(), value) {
            ("usd", toml::Value::Integer(n)) => usd = Some(*n as f64),
            ("usd", toml::Value::Float(x)) => usd = Some(*x),
            ("usd", other) => p.add(
                &field,
                format!("must be a number of US dollars (got {other})"),
            ),
            ("enforce", toml::Value::String(s)) if s == "hard" => enforce = Enforce::Hard,
            ("enforce", toml::Value::String(s)) if s == "soft" => enforce = Enforce::Soft,
            ("enforce", other) => p.add(
                &field,
                format!("must be \"hard\" or \"soft\" (got {other})"),
            ),
            _ => p.add(&field, "unknown key: usd or enforce"),
        }
    }
    let Some(usd) = usd else {
        if !table.contains_key("usd") {
            p.add(format!("{field}.usd"), "missing: the budget in US dollars");
        }
        return None;
    };
    let good = usd.is_finite() && usd > 0.0 && usd <= MAX_BUDGET_USD;
    p.check(
        good,
        format!("{field}.usd"),
        format!("must be more than 0 and at most {MAX_BUDGET_USD} (got {usd}); leave the period out for no budget"),
    );
    good.then_some(BudgetLimit { usd, enforce })
}

/// Label names as Prometheus and most billing tools accept them; values short and
/// printable.
fn labels(field: &str, labels: &BTreeMap<String, String>, p: &mut Problems) {
    for (name, value) in labels {
        let field = format!("{field}.labels.{name}");
        let mut chars = name.chars();
        let good_name = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        p.check(
            good_name,
            &field,
            "a label name is letters, digits and _, not starting with a digit",
        );
        p.check(
            value.chars().count() <= 256 && !value.chars().any(char::is_control),
            &field,
            "a label value is at most 256 printable characters",
        );
    }
}

/// Prefixes a worker may publish a tenant's events to: literal subjects outside llmq's
/// own subjects and the `$` namespaces.
fn reply_prefixes(field: &str, prefixes: &[String], p: &mut Problems) {
    let subjects = Subjects::default();
    for (i, prefix) in prefixes.iter().enumerate() {
        p.check(
            !prefix.is_empty() && subjects.is_safe_reply_to(&format!("{prefix}.x")),
            format!("{field}.reply_prefixes[{i}]"),
            "must be a literal subject prefix outside llmq's subjects and $-subjects",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        match parse_registry(text) {
            Ok(entries) => panic!("accepted: {entries:?}"),
            Err(problems) => problems.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn a_full_tenant_reads_as_its_entry() {
        let entries = parse_registry(
            r#"
[tenants.acme]
name = "Acme search"
models = ["chat-*", "gpt-4.1"]
tiers = ["batch"]
max_tokens = 4096
over_max_tokens = "refuse"
max_request_bytes = 1_000_000
labels = { team = "search", cost_centre = "cc-42" }

[tenants.beta]
"#,
        )
        .unwrap();
        assert_eq!(entries.len(), 2);
        let acme = &entries[0];
        assert_eq!(acme.id, "acme");
        assert_eq!(acme.models, vec!["chat-*", "gpt-4.1"]);
        assert_eq!(acme.tiers, vec![Tier::Batch]);
        assert_eq!(acme.max_tokens, Some(4096));
        assert_eq!(acme.over_max_tokens, OverMaxTokens::Refuse);
        assert_eq!(acme.max_request_bytes, Some(1_000_000));
        assert_eq!(acme.labels["cost_centre"], "cc-42");
        let beta = &entries[1];
        assert!(beta.models.is_empty(), "no model unless listed");
        assert_eq!(beta.tiers, Tier::ALL.to_vec());
        assert!(parse_registry("").unwrap().is_empty());
    }

    #[test]
    fn every_problem_names_its_tenant_and_field() {
        let found = problems(
            r#"
[tenants.acme]
modles = ["chat"]

[tenants."a.b"]

[tenants.gamma]
models = ["chat-[12]", "ok"]
max_tokens = 0
max_request_bytes = -5
labels = { "cost centre" = "x" }
reply_prefixes = ["llmq.results"]
"#,
        );
        let has = |needle: &str| found.iter().any(|p| p.contains(needle));
        assert!(has("tenants.acme: unknown field `modles`"), "{found:#?}");
        assert!(has("tenants.a.b: "), "{found:#?}");
        assert!(has("tenants.gamma.models[0]: "), "{found:#?}");
        assert!(!has("tenants.gamma.models[1]"), "{found:#?}");
        assert!(
            has("tenants.gamma.max_tokens: must be at least 1 (got 0)"),
            "{found:#?}"
        );
        assert!(
            has("tenants.gamma.max_request_bytes: must be at least 1 (got -5)"),
            "{found:#?}"
        );
        assert!(has("tenants.gamma.labels.cost centre: "), "{found:#?}");
        assert!(has("tenants.gamma.reply_prefixes[0]: "), "{found:#?}");
        assert_eq!(found.len(), 7, "{found:#?}");
    }

    #[test]
    fn budgets_read_per_period_and_bad_values_name_their_field() {
        let entries = parse_registry(
            "[tenants.acme.budget]\nday = { usd = 50 }\nmonth = { usd = 800.5, enforce = \"soft\" }\n",
        )
        .unwrap();
        let budget = entries[0].budget;
        assert_eq!(
            budget.day,
            Some(BudgetLimit {
                usd: 50.0,
                enforce: Enforce::Hard
            })
        );
        assert_eq!(budget.month.map(|b| b.enforce), Some(Enforce::Soft));
        let found = problems(
            r#"
[tenants.a.budget]
day = { usd = -1 }
month = { usd = "lots" }
[tenants.b.budget]
day = { usd = 0, enforce = "strict" }
week = { usd = 5 }
[tenants.c.budget]
day = { usd = 5, limit = 3 }
month = { enforce = "soft" }
"#,
        );
        let has = |needle: &str| found.iter().any(|p| p.starts_with(needle));
        assert!(
            has("tenants.a.budget.day.usd: must be more than 0"),
            "{found:#?}"
        );
        assert!(
            has("tenants.a.budget.month.usd: must be a number"),
            "{found:#?}"
        );
        assert!(
            has("tenants.b.budget.day.enforce: must be \"hard\" or \"soft\""),
            "{found:#?}"
        );
        assert!(
            has("tenants.b.budget.day.usd: must be more than 0 and at most 1000000000 (got 0)"),
            "{found:#?}"
        );
        assert!(
            has("tenants.b.budget.week: unknown budget period"),
            "{found:#?}"
        );
        assert!(has("tenants.c.budget.day.limit: unknown key"), "{found:#?}");
        assert!(has("tenants.c.budget.month.usd: missing"), "{found:#?}");
        assert_eq!(found.len(), 7, "{found:#?}");
    }

    #[test]
    fn a_tenant_defined_twice_and_stray_keys_are_refused() {
        let twice = problems("[tenants.acme]\nname = \"a\"\n[tenants.acme]\nname = \"b\"\n");
        assert!(
            twice[0].contains("duplicate") || twice[0].contains("acme"),
            "{twice:?}"
        );
        let stray = problems("tenant = 1\n");
        assert!(
            stray[0].contains("unknown top-level key `tenant`"),
            "{stray:?}"
        );
        let tier = problems("[tenants.acme]\ntiers = [\"urgent\"]\n");
        assert!(tier[0].starts_with("tenants.acme: "), "{tier:?}");
    }
}
