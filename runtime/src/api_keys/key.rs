//! One key: how it is made, what is stored of it, and how a presented key is checked.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use llmq_schemas::{PROTOCOL_VERSION, Timestamp};

use crate::tenants::ModelPattern;

/// Every key starts with this, so that it is recognisable in a leak scan.
pub const PRESENTED_PREFIX: &str = "llmq-";

/// What the bucket holds of a key: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyEntry {
    pub v: u32,
    /// Twelve hex digits, also inside the key: how a presented key is found.
    pub id: String,
    pub tenant: String,
    /// A description for listings ("ci", "search-frontend").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Models this key may use, within the tenant's (exact names and `*` globs); empty:
    /// the tenant's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// Requests per minute for this key alone, across every edge (a fleet-wide limit, as
    /// `llmq_runtime::limits` keeps them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u32>,
    pub created_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<Timestamp>,
    /// SHA-256 of the secret part, hex.
    pub sha256: String,
}

/// A key just made: its entry, and the key itself, to show once.
#[derive(Debug)]
pub struct NewKey {
    pub entry: ApiKeyEntry,
    pub key: SecretString,
}

/// Why a presented key does not authenticate its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyRefusal {
    #[error("no API key was given (Authorization: Bearer <key>, or api-key: <key>)")]
    Missing,
    #[error("this is not an llmq API key")]
    Malformed,
    #[error("unknown API key")]
    Unknown,
    #[error("this API key was revoked")]
    Revoked,
    #[error("this API key has expired")]
    Expired,
    #[error("this API key's entry cannot be read; ask an admin to re-create it")]
    Unreadable,
}

impl ApiKeyEntry {
    /// A new key for `tenant`, with a random id and secret.
    pub fn generate(tenant: &str, template: ApiKeyEntry) -> NewKey {
        let id = hex(&rand::random::<[u8; 6]>());
        let secret = hex(&rand::random::<[u8; 32]>());
        let entry = ApiKeyEntry {
            v: PROTOCOL_VERSION,
            id: id.clone(),
            tenant: tenant.to_owned(),
            created_at: Timestamp::now(),
            revoked_at: None,
            sha256: digest(&secret),
            ..template
        };
        NewKey {
            entry,
            key: SecretString::from(format!("{PRESENTED_PREFIX}{id}-{secret}")),
        }
    }

    /// Whether `secret` is this key's, in constant time.
    pub fn matches(&self, secret: &str) -> bool {
        digest(secret)
            .as_bytes()
            .ct_eq(self.sha256.as_bytes())
            .into()
    }

    /// Whether the key may be used now.
    pub fn usable(&self) -> Result<(), KeyRefusal> {
        if self.revoked_at.is_some() {
            return Err(KeyRefusal::Revoked);
        }
        if self.expires_at.is_some_and(|at| at.has_passed()) {
            return Err(KeyRefusal::Expired);
        }
        Ok(())
    }

    /// Whether this key (not its tenant: the policy decides that) allows `model`.
    pub fn allows_model(&self, model: &str) -> bool {
        self.models.is_empty()
            || self
                .models
                .iter()
                .filter_map(|pattern| ModelPattern::parse(pattern).ok())
                .any(|pattern| pattern.matches(model))
    }

    /// An entry template with nothing set (for [`generate`](Self::generate)).
    pub fn template() -> Self {
        Self {
            v: PROTOCOL_VERSION,
            id: String::new(),
            tenant: String::new(),
            name: None,
            models: Vec::new(),
            rpm: None,
            created_at: Timestamp::now(),
            expires_at: None,
            revoked_at: None,
            sha256: String::new(),
        }
    }
}

/// `llmq-<id>-<secret>` -> (id, secret).
pub fn parse_presented(key: &SecretString) -> Result<(String, SecretString), KeyRefusal> {
    let text = key.expose_secret().trim();
    let rest = text
        .strip_prefix(PRESENTED_PREFIX)
        .ok_or(KeyRefusal::Malformed)?;
    let (id, secret) = rest.split_once('-').ok_or(KeyRefusal::Malformed)?;
    let hexlike = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !hexlike(id, 12) || !hexlike(secret, 64) {
        return Err(KeyRefusal::Malformed);
    }
    Ok((id.to_owned(), SecretString::from(secret.to_owned())))
}

fn digest(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_found_by_its_id_and_checked_by_its_secret() {
        let new = ApiKeyEntry::generate("acme", ApiKeyEntry::template());
        let (id, secret) = parse_presented(&new.key).unwrap();
        assert_eq!(id, new.entry.id);
        assert!(new.entry.matches(secret.expose_secret()));
        assert!(!new.entry.matches(&"0".repeat(64)));
        let stored = serde_json::to_string(&new.entry).unwrap();
        assert!(!stored.contains(secret.expose_secret()), "{stored}");
        assert!(!format!("{new:?}").contains(secret.expose_secret()));
    }

    #[test]
    fn garbage_is_malformed_and_revoked_or_expired_keys_are_refused() {
        for bad in [
            "",
            "sk-abc",
            "llmq-",
            "llmq-zz-zz",
            "llmq-0123456789ab-short",
        ] {
            let refused = parse_presented(&SecretString::from(bad.to_owned()));
            assert_eq!(refused.err(), Some(KeyRefusal::Malformed), "{bad:?}");
        }
        let mut entry = ApiKeyEntry::generate("acme", ApiKeyEntry::template()).entry;
        assert_eq!(entry.usable(), Ok(()));
        entry.expires_at = Some(Timestamp::from_unix_millis(1));
        assert_eq!(entry.usable(), Err(KeyRefusal::Expired));
        entry.revoked_at = Some(Timestamp::now());
        assert_eq!(entry.usable(), Err(KeyRefusal::Revoked));
    }

    #[test]
    fn a_key_narrows_models_and_an_empty_list_narrows_nothing() {
        let mut entry = ApiKeyEntry::template();
        assert!(entry.allows_model("anything"));
        entry.models = vec!["chat-*".into()];
        assert!(entry.allows_model("chat-fast"));
        assert!(!entry.allows_model("gpt-4.1"));
    }
}
