//! What a limit applies to, and the KV keys and metric labels that name it.
//!
//! Every scope comes from configuration (a provider, a deployment), the registry (a
//! tenant, a tenant's model) or the API keys an admin made, never from what a job says,
//! so metric labels built from scopes stay bounded by configuration.

use std::fmt;

use llmq_schemas::{ModelName, Tenant};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Provider(String),
    /// A provider and an upstream model.
    Deployment {
        provider: String,
        model: String,
    },
    Tenant(String),
    /// A tenant and a logical model.
    TenantModel {
        tenant: String,
        model: String,
    },
    /// One llmq API key of the HTTP edge (its id).
    ApiKey(String),
}

impl Scope {
    pub fn tenant(tenant: &Tenant) -> Self {
        Scope::Tenant(tenant.as_str().to_owned())
    }

    /// The scope's part of a KV key: letters, digits, `-` and `_` only (model names are
    /// encoded as in subjects).
    pub fn key(&self) -> String {
        match self {
            Scope::Provider(name) => format!("p.{}", token(name)),
            Scope::Deployment { provider, model } => {
                format!("d.{}.{}", token(provider), token(model))
            }
            Scope::Tenant(id) => format!("t.{}", token(id)),
            Scope::TenantModel { tenant, model } => {
                format!("tm.{}.{}", token(tenant), token(model))
            }
            Scope::ApiKey(id) => format!("k.{}", token(id)),
        }
    }

    /// The `scope` metric label's kind: `provider`, `deployment`, `tenant`, `tenant_model`.
    pub fn kind(&self) -> &'static str {
        match self {
            Scope::Provider(_) => "provider",
            Scope::Deployment { .. } => "deployment",
            Scope::Tenant(_) => "tenant",
            Scope::TenantModel { .. } => "tenant_model",
            Scope::ApiKey(_) => "api_key",
        }
    }
}

/// `text` as one KV key token (encoded as model names are in subjects).
pub(crate) fn token(text: &str) -> String {
    match ModelName::parse(text) {
        Ok(name) => name.token(),
        Err(_) => "_".to_owned(),
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Provider(name) => write!(f, "provider {name}"),
            Scope::Deployment { provider, model } => write!(f, "deployment {provider}/{model}"),
            Scope::Tenant(id) => write!(f, "tenant {id}"),
            Scope::TenantModel { tenant, model } => write!(f, "tenant {tenant}, model {model}"),
            Scope::ApiKey(id) => write!(f, "API key {id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_kv_safe_and_distinct() {
        let scopes = [
            Scope::Provider("openai".into()),
            Scope::Deployment {
                provider: "openai".into(),
                model: "gpt-4.1".into(),
            },
            Scope::Tenant("acme".into()),
            Scope::TenantModel {
                tenant: "acme".into(),
                model: "gpt-4.1".into(),
            },
        ];
        let keys: Vec<String> = scopes.iter().map(Scope::key).collect();
        assert_eq!(
            keys,
            [
                "p.openai",
                "d.openai.gpt-4_2e1",
                "t.acme",
                "tm.acme.gpt-4_2e1"
            ]
        );
        for key in &keys {
            assert!(
                key.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
                "{key}"
            );
        }
    }
}
