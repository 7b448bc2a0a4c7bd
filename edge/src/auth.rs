//! Who is calling: the llmq API key in `Authorization: Bearer` (OpenAI clients) or
//! `api-key` (Azure OpenAI clients), checked against the keys every edge holds in memory;
//! or, with `[oidc]` configured, a JWT of the company's identity provider in
//! `Authorization: Bearer` ([`crate::oidc`]).

use std::ops::Deref;
use std::sync::Arc;

use axum::http::HeaderMap;
use llmq_runtime::api_keys::{ApiKeyEntry, ApiKeys, KeyRefusal};
use llmq_runtime::tenants::{Lookup, Registry};
use llmq_schemas::{PROTOCOL_VERSION, Tenant, Timestamp};
use secrecy::{ExposeSecret, SecretString};

use crate::oidc::{Identity, TokenRefusal, Verifier, is_jwt};

/// The key a request presents, if any. The value never reaches a log or an error.
pub fn presented(headers: &HeaderMap) -> Option<SecretString> {
    if let Some(value) = headers.get(axum::http::header::AUTHORIZATION)
        && let Ok(text) = value.to_str()
    {
        let token = text
            .strip_prefix("Bearer ")
            .or_else(|| text.strip_prefix("bearer "))
            .unwrap_or(text);
        return Some(SecretString::from(token.trim().to_owned()));
    }
    let value = headers.get("api-key")?.to_str().ok()?;
    Some(SecretString::from(value.trim().to_owned()))
}

/// A request's caller: the entry of its llmq API key, or one made from a signed-in
/// user's token (its tenant and models, no rate of its own), with the user.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key: Arc<ApiKeyEntry>,
    /// The identity provider's `sub` for a signed-in user; `None` for an API key.
    pub user: Option<String>,
}

impl Deref for Caller {
    type Target = ApiKeyEntry;

    fn deref(&self) -> &ApiKeyEntry {
        &self.key
    }
}

/// Why a caller was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(transparent)]
    Key(#[from] KeyRefusal),
    #[error(transparent)]
    Token(#[from] TokenRefusal),
    /// A valid token whose tenant the tenant registry does not have.
    #[error("tenant {0:?} is not in the tenant registry")]
    UnknownTenant(String),
}

impl Refusal {
    /// The metrics label of the refusal.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Key(KeyRefusal::Missing) => "missing",
            Refusal::Key(KeyRefusal::Malformed) => "malformed",
            Refusal::Key(KeyRefusal::Unknown) => "unknown",
            Refusal::Key(KeyRefusal::Revoked) => "revoked",
            Refusal::Key(KeyRefusal::Expired) => "expired",
            Refusal::Key(KeyRefusal::Unreadable) => "unreadable",
            Refusal::Token(token) => token.reason(),
            Refusal::UnknownTenant(_) => "token_unknown_tenant",
        }
    }
}

/// What authentication checks a presented credential against.
pub struct Gate<'a> {
    pub keys: &'a ApiKeys,
    pub oidc: Option<&'a Verifier>,
    pub registry: &'a Registry,
}

/// The caller, by its API key or (with `[oidc]`) its identity provider's token.
pub async fn authenticate(gate: Gate<'_>, headers: &HeaderMap) -> Result<Caller, Refusal> {
    let presented = presented(headers).ok_or(KeyRefusal::Missing)?;
    let token = presented.expose_secret();
    match gate.oidc {
        Some(verifier) if is_jwt(token) => {
            let identity = verifier.verify(token).await?;
            signed_in(gate.registry, identity)
        }
        _ => Ok(Caller {
            key: gate.keys.authenticate(&presented)?,
            user: None,
        }),
    }
}

/// A signed-in user as a caller, if its tenant may use llmq.
fn signed_in(registry: &Registry, identity: Identity) -> Result<Caller, Refusal> {
    let known = Tenant::parse(&identity.tenant)
        .map(|tenant| matches!(registry.lookup(&tenant), Lookup::Open | Lookup::Known(_)))
        .unwrap_or(false);
    if !known {
        return Err(Refusal::UnknownTenant(identity.tenant));
    }
    let key = ApiKeyEntry {
        v: PROTOCOL_VERSION,
        id: "oidc".into(),
        tenant: identity.tenant,
        name: Some(identity.subject.clone()),
        models: identity.models,
        rpm: None,
        created_at: Timestamp::now(),
        expires_at: None,
        revoked_at: None,
        sha256: String::new(),
    };
    Ok(Caller {
        key: Arc::new(key),
        user: Some(identity.subject),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn bearer_and_azure_headers_both_carry_the_key() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Bearer llmq-abc".parse().unwrap());
        assert_eq!(presented(&headers).unwrap().expose_secret(), "llmq-abc");
        let mut azure = HeaderMap::new();
        azure.insert("api-key", "llmq-def".parse().unwrap());
        assert_eq!(presented(&azure).unwrap().expose_secret(), "llmq-def");
        assert!(presented(&HeaderMap::new()).is_none());
    }
}
