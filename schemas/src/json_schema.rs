//! JSON Schema for every message, for producers and consumers outside Rust.
//!
//! The files in `schemas/json/` are generated from the Rust types; the `json_files_match`
//! test fails when they drift. Regenerate with
//! `UPDATE_SCHEMAS=1 cargo test -p llmq-schemas json_files_match`.

use schemars::{JsonSchema, Schema, generate::SchemaSettings};

use crate::{
    BatchRecord, BlobRef, CancelRequest, CatalogEntry, Job, Outcome, OutcomeBody, ReplyEvent,
    TenantEntry, UsageEvent,
};

/// (file name, schema) for every message type on the wire.
pub fn all() -> Vec<(&'static str, Schema)> {
    vec![
        ("job.schema.json", schema::<Job>()),
        ("reply-event.schema.json", schema::<ReplyEvent>()),
        ("outcome.schema.json", schema::<Outcome>()),
        ("blob-ref.schema.json", schema::<BlobRef>()),
        ("outcome-body.schema.json", schema::<OutcomeBody>()),
        ("usage-event.schema.json", schema::<UsageEvent>()),
        ("cancel-request.schema.json", schema::<CancelRequest>()),
        ("catalog-entry.schema.json", schema::<CatalogEntry>()),
        ("tenant-entry.schema.json", schema::<TenantEntry>()),
        ("batch-record.schema.json", schema::<BatchRecord>()),
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
        for field in ["v", "id", "model"] {
            assert!(
                required.contains(&field),
                "{field} missing from {required:?}"
            );
        }
        // The request inline or as a claim check: exactly one of the two.
        let one_of = &schema["oneOf"];
        assert_eq!(one_of[0]["required"], serde_json::json!(["request"]));
        assert_eq!(one_of[1]["required"], serde_json::json!(["request_blob"]));
    }

    /// Whether a property's schema admits `null`.
    fn admits_null(property: &serde_json::Value) -> bool {
        let null_type = |v: &serde_json::Value| match v.get("type") {
            Some(serde_json::Value::String(t)) => t == "null",
            Some(serde_json::Value::Array(types)) => types.iter().any(|t| t == "null"),
            _ => false,
        };
        null_type(property)
            || property
                .get("anyOf")
                .and_then(|v| v.as_array())
                .is_some_and(|options| options.iter().any(null_type))
    }

    #[test]
    fn the_job_decoder_takes_null_exactly_where_the_schema_allows_it() {
        let schema = serde_json::to_value(schema::<Job>()).unwrap();
        let minimal = serde_json::json!({
            "v": 1, "id": "0193a3c2-6c2e-7cc3-9c1d-3f1d2c4b5a69", "model": "m",
            "request": {"messages": [{"role": "user", "content": "hi"}]}
        });
        let mut checked = 0;
        for (name, property) in schema["properties"].as_object().unwrap() {
            let mut job = minimal.clone();
            job[name.as_str()] = serde_json::Value::Null;
            let decoded = Job::decode(&serde_json::to_vec(&job).unwrap()).is_ok();
            assert_eq!(
                decoded,
                admits_null(property),
                "{name}: null decodes {decoded}, schema {property}"
            );
            checked += 1;
        }
        assert!(checked >= 10, "{checked} properties");
        // `stream: null` is `false`, as in OpenAI's API.
        let mut job = minimal;
        job["stream"] = serde_json::Value::Null;
        assert!(
            !Job::decode(&serde_json::to_vec(&job).unwrap())
                .unwrap()
                .stream
        );
    }
}
