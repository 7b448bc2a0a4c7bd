//! The identity provider's signing keys (its JWKS).
//!
//! Fetched on the first token, kept for `jwks_ttl`, and fetched again at once when a
//! token names a key id not in the set: providers rotate keys by publishing the new one
//! and signing with it soon after. A forged `kid` must not make the edge hammer the
//! provider, so a fetch happens at most every `jwks_refetch`, one at a time. When a fetch
//! fails the keys already held stay in use. Symmetric (`oct`) and encryption keys are
//! never taken from the set.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use tokio::time::Instant;

use super::TokenRefusal;
use crate::config::OidcConfig;

/// The largest JWKS or discovery document read.
const MOST_BYTES: usize = 1024 * 1024;
/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// One provider's keys, by key id.
pub struct Jwks {
    issuer: String,
    url: Option<String>,
    http: reqwest::Client,
    ttl: Duration,
    refetch: Duration,
    cache: Mutex<Cache>,
    /// One fetch at a time; the others wait for its keys rather than fetch again.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Cache {
    /// Keyed by `kid` ("" for a key published without one).
    keys: HashMap<String, Arc<DecodingKey>>,
    fetched_at: Option<Instant>,
    tried_at: Option<Instant>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("issuer", &self.issuer)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Jwks {
    pub fn new(config: &OidcConfig) -> Jwks {
        static INSTALL: std::sync::Once = std::sync::Once::new();
        INSTALL.call_once(|| {
            let _ = rustls::crypto::ring::default_provider().install_default();
        });
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .user_agent(concat!("llmq-edge/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Jwks {
            issuer: config.issuer.trim_end_matches('/').to_owned(),
            url: config.jwks_url.clone(),
            http,
            ttl: config.jwks_ttl,
            refetch: config.jwks_refetch,
            cache: Mutex::new(Cache::default()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// The key a token's header names, fetching the set again if it is not known.
    pub async fn key(
        &self,
        kid: Option<&str>,
        algorithm: Algorithm,
    ) -> Result<Arc<DecodingKey>, TokenRefusal> {
        if let Some(key) = self.cached(kid, false) {
            return Ok(key);
        }
        self.refresh().await?;
        let key = self.cached(kid, true).ok_or(TokenRefusal::UnknownKey)?;
        tracing::debug!(
            kid = kid.unwrap_or(""),
            ?algorithm,
            "identity provider key found after a fetch"
        );
        Ok(key)
    }

    /// The held key for `kid` (a token without one: the set's only key); `None` once the
    /// set is older than its TTL unless `stale` is fine.
    fn cached(&self, kid: Option<&str>, stale: bool) -> Option<Arc<DecodingKey>> {
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let fresh = cache.fetched_at.is_some_and(|at| at.elapsed() < self.ttl);
        if !fresh && !stale {
            return None;
        }
        match kid {
            Some(kid) => cache.keys.get(kid).cloned(),
            None if cache.keys.len() == 1 => cache.keys.values().next().cloned(),
            None => cache.keys.get("").cloned(),
        }
    }

    /// Fetches the set unless a fetch was tried within `refetch`. An error only when no
    /// keys are held at all.
    async fn refresh(&self) -> Result<(), TokenRefusal> {
        let _one = self.fetching.lock().await;
        if !self.may_try() {
            return self.held();
        }
        match self.fetch().await {
            Ok(keys) => {
                let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
                cache.keys = keys;
                cache.fetched_at = Some(Instant::now());
                Ok(())
            }
            Err(problem) => {
                tracing::warn!(issuer = %self.issuer, %problem, "cannot fetch the identity provider's keys");
                self.held()
            }
        }
    }

    /// Marks a fetch as tried now, if none was within `refetch`.
    fn may_try(&self) -> bool {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.tried_at.is_some_and(|at| at.elapsed() < self.refetch) {
            return false;
        }
        cache.tried_at = Some(Instant::now());
        true
    }

    fn held(&self) -> Result<(), TokenRefusal> {
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        match cache.fetched_at {
            Some(_) => Ok(()),
            None => Err(TokenRefusal::KeysUnavailable),
        }
    }

    async fn fetch(&self) -> Result<HashMap<String, Arc<DecodingKey>>, String> {
        let url = match &self.url {
            Some(url) => url.clone(),
            None => self.discover().await?,
        };
        let set = self.get_json(&url).await?;
        let keys = set["keys"]
            .as_array()
            .ok_or_else(|| format!("{url} has no \"keys\" list"))?;
        Ok(keys.iter().filter_map(signing_key).collect())
    }

    /// The `jwks_uri` of the issuer's OpenID configuration.
    async fn discover(&self) -> Result<String, String> {
        let url = format!("{}/.well-known/openid-configuration", self.issuer);
        let document = self.get_json(&url).await?;
        document["jwks_uri"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("{url} names no jwks_uri"))
    }

    async fn get_json(&self, url: &str) -> Result<Value, String> {
        let mut response = self
            .http
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|err| format!("{url}: {err}"))?;
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|err| format!("{url}: {err}"))?
        {
            if body.len() + chunk.len() > MOST_BYTES {
                return Err(format!("{url}: larger than {MOST_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|err| format!("{url}: not JSON: {err}"))
    }
}

/// A published key a token may be signed with: RSA or EC, not marked for encryption.
fn signing_key(value: &Value) -> Option<(String, Arc<DecodingKey>)> {
    if value["use"].as_str().is_some_and(|usage| usage != "sig") {
        return None;
    }
    let jwk: Jwk = serde_json::from_value(value.clone()).ok()?;
    if !matches!(
        jwk.algorithm,
        AlgorithmParameters::RSA(_) | AlgorithmParameters::EllipticCurve(_)
    ) {
        return None;
    }
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    Some((jwk.common.key_id.unwrap_or_default(), Arc::new(key)))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_rsa_and_ec_signing_keys_are_taken_from_a_set() {
        let rsa = json!({"kty": "RSA", "kid": "r1", "use": "sig", "n": "sXch", "e": "AQAB"});
        let enc = json!({"kty": "RSA", "kid": "r2", "use": "enc", "n": "sXch", "e": "AQAB"});
        let oct = json!({"kty": "oct", "kid": "h1", "k": "c2VjcmV0"});
        let odd = json!({"kty": "XYZ", "kid": "x1"});
        assert_eq!(signing_key(&rsa).map(|(kid, _)| kid).as_deref(), Some("r1"));
        assert!(signing_key(&enc).is_none());
        assert!(
            signing_key(&oct).is_none(),
            "a symmetric key is never a provider key"
        );
        assert!(signing_key(&odd).is_none());
    }
}
