//! JSON Schema for every message, for producers and consumers outside Rust.
//!
//! The files in `schemas/json/` are generated from the Rust types; the `json_files_match`
//! test fails when they drift. Regenerate with
//! `UPDATE_SCHEMAS=1 cargo test -p llmq-schemas json_files_match`.

use schemars::{JsonSchema, Schema, generate::SchemaSettings};

use crate::{CancelRequest, CatalogEntry, Job, Outcome, ReplyEvent, UsageEvent};

/// (file name, schema) for every message type on the wire.
pub fn all() -> Vec<(&'static str, Schema)> {
    vec![
        ("job.schema.json", schema::<Job>()),
        ("reply-event.schema.json", schema::<ReplyEvent>()),
        ("outcome.schema.json", schema::<Outcome>()),
        ("usage-event.schema.json", schema::<UsageEvent>()),
        ("cancel-request.schema.json", schema::<CancelRequest>()),
        ("catalog-entry.schema.json", schema::<CatalogEntry>()),
    ]
}

fn schema<T: JsonSchema>() -> Schema {
    SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<T>()
}

/// The pretty-printed file contents for a schema, with a trailing newline.
pub fn render(schema: &Schema) -> String {
    let mut text = serde_json::to_string_pretty(schema).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn json_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("json")
    }

    #[test]
    fn json_files_match() {
        let update = std::env::var_os("UPDATE_SCHEMAS").is_some();
        let mut stale = Vec::new();
        for (name, schema) in all() {
            let path = json_dir().join(name);
            let expected = render(&schema);
            if update {
                std::fs::write(&path, &expected).unwrap();
                continue;
            }
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            if committed != expected {
                stale.push(name);
            }
        }
        assert!(
            stale.is_empty(),
            "schemas/json is out of date for {stale:?}; regenerate with \
             `UPDATE_SCHEMAS=1 cargo test -p llmq-schemas json_files_match` and commit"
        );
    }

    #[test]
    fn job_schema_requires_the_core_fields() {
        let schema = serde_json::to_value(schema::<Job>()).unwrap();
        let required: Vec<&str> = schema["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for field in ["v", "id", "model", "request"] {
            assert!(
                required.contains(&field),
                "{field} missing from {required:?}"
            );
        }
    }
}
