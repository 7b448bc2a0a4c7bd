//! Sign-in with the company's identity provider: a JWT in `Authorization: Bearer`,
//! beside llmq API keys.
//!
//! Teams already have identities; handing every person an llmq key to rotate and revoke
//! again is what an internal gateway should spare them. So the edge accepts the tokens
//! the company's OIDC provider signs. What is trusted is the provider's signature only:
//! the algorithm must be one the config accepts (never `none`, never HS*, so a token
//! "signed" with the public key as an HMAC secret is refused before any key is looked
//! at), the key comes from the provider's JWKS ([`Jwks`]), and `iss`, `aud`, `exp` and
//! `nbf` are checked. A claim names the tenant, another may narrow the models, and the
//! token's `sub` is recorded as the user in the job's usage event.

mod claims;
mod jwks;

use std::sync::Arc;

use jsonwebtoken::{Algorithm, Validation, errors::ErrorKind};

pub use claims::Identity;
pub use jwks::Jwks;

use crate::config::OidcConfig;

/// Why a token was refused. Says which check failed and nothing of the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefusal {
    #[error("the token is not a readable JWT")]
    Malformed,
    #[error("the token's signature algorithm is not accepted")]
    Algorithm,
    #[error("the token is signed with a key the identity provider does not publish")]
    UnknownKey,
    #[error("the token's signature is not valid")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token was issued by another identity provider")]
    Issuer,
    #[error("the token is for another audience")]
    Audience,
    #[error("the token names no tenant this gateway knows")]
    NoTenant,
    #[error("the identity provider's keys cannot be fetched; try again")]
    KeysUnavailable,
}

impl TokenRefusal {
    /// The metrics label of the refusal.
    pub fn reason(self) -> &'static str {
        match self {
            TokenRefusal::Malformed => "token_malformed",
            TokenRefusal::Algorithm => "token_algorithm",
            TokenRefusal::UnknownKey => "token_unknown_key",
            TokenRefusal::Signature => "token_signature",
            TokenRefusal::Expired => "token_expired",
            TokenRefusal::NotYetValid => "token_not_yet_valid",
            TokenRefusal::Issuer => "token_issuer",
            TokenRefusal::Audience => "token_audience",
            TokenRefusal::NoTenant => "token_no_tenant",
            TokenRefusal::KeysUnavailable => "token_keys_unavailable",
        }
    }
}

/// Checks tokens against one identity provider.
#[derive(Debug)]
pub struct Verifier {
    config: OidcConfig,
    algorithms: Vec<Algorithm>,
    keys: Arc<Jwks>,
}

/// The algorithm a config name stands for, if llmq accepts it for provider tokens.
pub fn accepted_algorithm(name: &str) -> Option<Algorithm> {
    let algorithm = name.parse::<Algorithm>().ok()?;
    use Algorithm::*;
    matches!(
        algorithm,
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 | ES256 | ES384
    )
    .then_some(algorithm)
}

/// Whether a bearer token is a JWT rather than an llmq API key.
pub fn is_jwt(token: &str) -> bool {
    token.starts_with("eyJ") && token.bytes().filter(|b| *b == b'.').count() == 2
}

impl Verifier {
    pub fn new(config: OidcConfig) -> Verifier {
        let algorithms = config
            .algorithms
            .iter()
            .filter_map(|name| accepted_algorithm(name))
            .collect();
        let keys = Arc::new(Jwks::new(&config));
        Verifier {
            config,
            algorithms,
            keys,
        }
    }

    /// Who the token says the caller is, if its provider signed it and it is valid now.
    pub async fn verify(&self, token: &str) -> Result<Identity, TokenRefusal> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenRefusal::Malformed)?;
        if !self.algorithms.contains(&header.alg) {
            return Err(TokenRefusal::Algorithm);
        }
        let key = self.keys.key(header.kid.as_deref(), header.alg).await?;
        let claims = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            &key,
            &self.validation(header.alg),
        )
        .map_err(|err| refusal(err.kind()))?
        .claims;
        Identity::from_claims(&self.config, &claims)
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = self.config.leeway.as_secs();
        validation
    }
}

fn refusal(kind: &ErrorKind) -> TokenRefusal {
    match kind {
        ErrorKind::ExpiredSignature => TokenRefusal::Expired,
        ErrorKind::ImmatureSignature => TokenRefusal::NotYetValid,
        ErrorKind::InvalidIssuer => TokenRefusal::Issuer,
        ErrorKind::InvalidAudience => TokenRefusal::Audience,
        ErrorKind::InvalidSignature | ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidRsaKey(_) => {
            TokenRefusal::Signature
        }
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => TokenRefusal::Algorithm,
        _ => TokenRefusal::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_asymmetric_provider_algorithms_are_accepted() {
        for name in ["RS256", "RS512", "PS256", "ES256", "ES384"] {
            assert!(accepted_algorithm(name).is_some(), "{name}");
        }
        for name in ["HS256", "HS512", "none", "EdDSA", "rs256", ""] {
            assert!(accepted_algorithm(name).is_none(), "{name}");
        }
    }

    #[test]
    fn a_jwt_is_told_from_an_llmq_key() {
        assert!(is_jwt("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln"));
        assert!(!is_jwt("llmq-0123456789ab-00ff"));
        assert!(!is_jwt("eyJhbGciOiJSUzI1NiJ9.only-two"));
    }
}
