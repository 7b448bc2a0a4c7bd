//! What a verified token's claims say about the caller: its tenant, its models, its user.

use serde_json::{Map, Value};

use super::TokenRefusal;
use crate::config::OidcConfig;

/// A caller signed in by its identity provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub tenant: String,
    /// Models the token allows (names and `*` globs); empty: its tenant's.
    pub models: Vec<String>,
    /// The token's `sub`: the user its usage is recorded under.
    pub subject: String,
}

impl Identity {
    /// The caller a valid token's claims describe, under `config`'s mapping.
    pub fn from_claims(
        config: &OidcConfig,
        claims: &Map<String, Value>,
    ) -> Result<Identity, TokenRefusal> {
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|sub| !sub.is_empty())
            .ok_or(TokenRefusal::Malformed)?;
        let tenant =
            tenant(config, claims.get(&config.tenant_claim)).ok_or(TokenRefusal::NoTenant)?;
        let models = config
            .models_claim
            .as_ref()
            .and_then(|claim| claims.get(claim))
            .map(strings)
            .unwrap_or_default();
        Ok(Identity {
            tenant,
            models,
            subject: subject.to_owned(),
        })
    }
}

/// The tenant a claim names: through the config's map when it has one (the first value
/// of a list found there), else the claim's one value itself.
fn tenant(config: &OidcConfig, claim: Option<&Value>) -> Option<String> {
    let values = strings(claim?);
    let tenant = if config.tenants.is_empty() {
        match values.as_slice() {
            [only] => only.clone(),
            _ => return None,
        }
    } else {
        values
            .iter()
            .find_map(|value| config.tenants.get(value))?
            .clone()
    };
    llmq_schemas::Tenant::parse(&tenant).ok()?;
    Some(tenant)
}

/// A claim's strings: a list's, or a string's space-separated words (as `scope` is).
fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::String(text) => text.split_whitespace().map(str::to_owned).collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    fn config(tenants: &[(&str, &str)]) -> OidcConfig {
        OidcConfig {
            issuer: "https://idp.example".into(),
            audience: "llmq".into(),
            jwks_url: None,
            tenant_claim: "groups".into(),
            tenants: tenants
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            models_claim: Some("llmq_models".into()),
            algorithms: vec!["RS256".into()],
            leeway: Duration::ZERO,
            jwks_ttl: Duration::from_secs(60),
            jwks_refetch: Duration::from_secs(10),
        }
    }

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn a_mapped_group_names_the_tenant_and_the_models_claim_narrows() {
        let config = config(&[("llm-search", "search"), ("llm-ads", "ads")]);
        let identity = Identity::from_claims(
            &config,
            &claims(json!({"sub": "ana", "groups": ["staff", "llm-ads", "llm-search"], "llmq_models": "gpt-4o-mini embed-*"})),
        )
        .unwrap();
        assert_eq!(identity.tenant, "ads", "the first mapped value wins");
        assert_eq!(identity.models, ["gpt-4o-mini", "embed-*"]);
        assert_eq!(identity.subject, "ana");
    }

    #[test]
    fn without_a_map_the_claim_must_name_one_valid_tenant() {
        let config = config(&[]);
        let of = |groups: Value| {
            Identity::from_claims(&config, &claims(json!({"sub": "ana", "groups": groups})))
        };
        assert_eq!(of(json!("search")).unwrap().tenant, "search");
        assert_eq!(of(json!(["search"])).unwrap().tenant, "search");
        assert_eq!(of(json!(["search", "ads"])), Err(TokenRefusal::NoTenant));
        assert_eq!(of(json!("bad.tenant")), Err(TokenRefusal::NoTenant));
        assert_eq!(of(json!(42)), Err(TokenRefusal::NoTenant));
        let unmapped = Identity::from_claims(&config, &claims(json!({"sub": "ana"})));
        assert_eq!(unmapped, Err(TokenRefusal::NoTenant));
        let no_sub = Identity::from_claims(&config, &claims(json!({"groups": "search"})));
        assert_eq!(no_sub, Err(TokenRefusal::Malformed));
    }
}
