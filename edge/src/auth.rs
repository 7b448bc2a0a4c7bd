//! Who is calling: the llmq API key in `Authorization: Bearer` (OpenAI clients) or
//! `api-key` (Azure OpenAI clients), checked against the keys every edge holds in memory.

use std::sync::Arc;

use axum::http::HeaderMap;
use llmq_runtime::api_keys::{ApiKeyEntry, ApiKeys, KeyRefusal};
use secrecy::SecretString;

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

/// The caller's key entry.
pub fn authenticate(keys: &ApiKeys, headers: &HeaderMap) -> Result<Arc<ApiKeyEntry>, KeyRefusal> {
    let key = presented(headers).ok_or(KeyRefusal::Missing)?;
    keys.authenticate(&key)
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
