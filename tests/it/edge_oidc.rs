//! Sign-in with an OIDC identity provider at the edge, as the provider and as attackers.
//!
//! The test is the identity provider: it generates an RSA and a P-256 key, serves its
//! discovery document and JWKS over HTTP, and signs tokens with the `jsonwebtoken`
//! library. Every refusal a gateway must make is tried with a token an attacker could
//! build: expired, for another audience or issuer, `alg: none`, HS256 "signed" with the
//! provider's public key, a `kid` the provider never published, a tenant the registry does
//! not have.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use llmq_edge::config::OidcConfig;
use llmq_runtime::tenants::parse_registry;
use llmq_tests::edge::{TestEdge, edge_config};
use llmq_tests::stack::{Stack, eventually};
use llmq_tests::worker::TestWorker;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::EncodePublicKey;
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};

use crate::budgets::usage_events;
use crate::edge_batches::create_batch;

const AUDIENCE: &str = "llmq-gateway";

/// A signing key of the test's identity provider.
struct SigningKey {
    kid: String,
    algorithm: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

impl SigningKey {
    fn rsa(kid: &str) -> (SigningKey, Vec<u8>) {
        let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let public = private.to_public_key();
        let jwk = json!({
            "kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
            "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
        });
        let der = private.to_pkcs1_der().unwrap();
        let key = SigningKey {
            kid: kid.into(),
            algorithm: Algorithm::RS256,
            encoding: EncodingKey::from_rsa_der(der.as_bytes()),
            jwk,
        };
        let public_der = public.to_public_key_der().unwrap().as_bytes().to_vec();
        (key, public_der)
    }

    fn ec(kid: &str) -> SigningKey {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let point = pair.public_key().as_ref();
        let jwk = json!({
            "kty": "EC", "kid": kid, "use": "sig", "crv": "P-256", "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        });
        SigningKey {
            kid: kid.into(),
            algorithm: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk,
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

/// The test's identity provider: discovery document and JWKS over HTTP.
struct Provider {
    issuer: String,
    jwks: Arc<Mutex<Value>>,
    fetches: Arc<AtomicUsize>,
}

impl Provider {
    async fn start(keys: &[&SigningKey]) -> Provider {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let jwks = Arc::new(Mutex::new(json!({
            "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()
        })));
        let fetches = Arc::new(AtomicUsize::new(0));
        let discovery = json!({"issuer": issuer, "jwks_uri": format!("{issuer}/keys")});
        let (served, counted) = (Arc::clone(&jwks), Arc::clone(&fetches));
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(move || async move { axum::Json(discovery) }),
            )
            .route(
                "/keys",
                axum::routing::get(move || async move {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let set = served.lock().unwrap().clone();
                    axum::Json(set)
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });
        Provider {
            issuer,
            jwks,
            fetches,
        }
    }

    fn publish(&self, key: &SigningKey) {
        let mut jwks = self.jwks.lock().unwrap();
        jwks["keys"].as_array_mut().unwrap().push(key.jwk.clone());
    }

    fn claims(&self, sub: &str, groups: &[&str]) -> Value {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        json!({"iss": self.issuer, "aud": AUDIENCE, "sub": sub, "iat": now, "nbf": now - 5,
            "exp": now + 600, "groups": groups})
    }
}

struct SignIn {
    stack: Stack,
    _worker: TestWorker,
    edge: TestEdge,
    provider: Provider,
    http: reqwest::Client,
}

impl SignIn {
    async fn start(keys: &[&SigningKey]) -> SignIn {
        gateway_worker::providers::http_client::install_crypto_provider();
        let stack = Stack::start().await;
        let admin = stack.operator().await;
        let registry =
            "[tenants.search]\nmodels = [\"chat\"]\n[tenants.ads]\nmodels = [\"chat\"]\n";
        let changes = admin
            .tenants_diff(&parse_registry(registry).unwrap(), true)
            .await
            .unwrap();
        admin.apply_tenants(&changes, 1).await.unwrap();
        let worker = stack.worker(&stack.simple_setup()).await;
        let provider = Provider::start(keys).await;
        let mut config = edge_config(&stack.nats.url());
        config.oidc = Some(OidcConfig {
            issuer: provider.issuer.clone(),
            audience: AUDIENCE.into(),
            jwks_url: None,
            tenant_claim: "groups".into(),
            tenants: [
                ("llm-search", "search"),
                ("llm-ads", "ads"),
                ("llm-ghost", "ghost"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            models_claim: Some("llmq_models".into()),
            algorithms: vec!["RS256".into(), "ES256".into()],
            leeway: Duration::ZERO,
            jwks_ttl: Duration::from_secs(600),
            jwks_refetch: Duration::from_secs(1),
        });
        let edge = TestEdge::start(config).await;
        SignIn {
            stack,
            _worker: worker,
            edge,
            provider,
            http: reqwest::Client::new(),
        }
    }

    /// A chat request with `token`: its status and body.
    async fn chat(&self, token: &str) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}/v1/chat/completions", self.edge.url()))
            .bearer_auth(token)
            .json(&json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test]
async fn a_signed_in_user_runs_as_its_tenant_and_its_usage_names_it() {
    let (rsa_key, _) = SigningKey::rsa("r1");
    let ec_key = SigningKey::ec("e1");
    let sign_in = SignIn::start(&[&rsa_key, &ec_key]).await;
    let provider = &sign_in.provider;

    let token = rsa_key.sign(&provider.claims("ana@example.com", &["staff", "llm-search"]));
    let (status, body) = sign_in.chat(&token).await;
    assert_eq!(status, 200, "{body}");
    let token = ec_key.sign(&provider.claims("bo@example.com", &["llm-ads"]));
    let (status, body) = sign_in.chat(&token).await;
    assert_eq!(status, 200, "ES256 too: {body}");

    let search = usage_events(&sign_in.stack, "search").await;
    let users: Vec<_> = search.iter().map(|e| e.user.as_deref()).collect();
    assert_eq!(
        users,
        [Some("ana@example.com")],
        "the group's tenant, the sub as user"
    );
    let ads = usage_events(&sign_in.stack, "ads").await;
    assert_eq!(ads.len(), 1);
    assert_eq!(ads[0].user.as_deref(), Some("bo@example.com"));

    // A models claim narrows what the user may call, within the tenant's models.
    let mut narrowed = provider.claims("cy@example.com", &["llm-search"]);
    narrowed["llmq_models"] = json!(["embed-*"]);
    let (status, body) = sign_in.chat(&rsa_key.sign(&narrowed)).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "model_not_allowed");

    // A rotated key: published after the edge fetched the set, found on its first token.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (rotated, _) = SigningKey::rsa("r2");
    provider.publish(&rotated);
    let token = rotated.sign(&provider.claims("ana@example.com", &["llm-search"]));
    let (status, body) = sign_in.chat(&token).await;
    assert_eq!(status, 200, "the rotated key is fetched: {body}");

    // A batch a signed-in user creates over HTTP: its lines' usage names the user too.
    let token = ec_key.sign(&provider.claims("di@example.com", &["llm-ads"]));
    let id = create_batch(&sign_in.http, sign_in.edge.url(), &token, "chat", 3).await;
    eventually(Duration::from_secs(60), "the batch completed", || async {
        let batch: Value = sign_in
            .http
            .get(format!("{}/v1/batches/{id}", sign_in.edge.url()))
            .bearer_auth(&token)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (batch["status"] == "completed").then_some(())
    })
    .await;
    let ads = usage_events(&sign_in.stack, "ads").await;
    let by_di = ads
        .iter()
        .filter(|e| e.user.as_deref() == Some("di@example.com"))
        .count();
    assert_eq!(
        by_di, 3,
        "every line's usage event names the user who made the batch"
    );
}

#[tokio::test]
async fn forged_expired_and_misaddressed_tokens_are_refused() {
    let (rsa_key, public_der) = SigningKey::rsa("r1");
    let sign_in = SignIn::start(&[&rsa_key]).await;
    let provider = &sign_in.provider;
    let good = provider.claims("ana@example.com", &["llm-search"]);
    let (status, _) = sign_in.chat(&rsa_key.sign(&good)).await;
    assert_eq!(status, 200, "the provider's own token works");

    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let with = |field: &str, value: Value| {
        let mut claims = good.clone();
        claims[field] = value;
        rsa_key.sign(&claims)
    };
    let refused = [
        ("expired", with("exp", json!(now - 60)), "expired"),
        (
            "not valid yet",
            with("nbf", json!(now + 600)),
            "not valid yet",
        ),
        (
            "another audience",
            with("aud", json!("another-app")),
            "another audience",
        ),
        (
            "another issuer",
            with("iss", json!("https://evil.example")),
            "another identity provider",
        ),
        (
            "no sub",
            {
                let mut claims = good.clone();
                claims.as_object_mut().unwrap().remove("sub");
                rsa_key.sign(&claims)
            },
            "not a readable JWT",
        ),
    ];
    for (what, token, says) in refused {
        let (status, body) = sign_in.chat(&token).await;
        assert_eq!(status, 401, "{what}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{what}: {message}");
        assert!(!message.contains(&token), "{what}: the token is not echoed");
    }

    // `alg: none`: the good claims, no signature.
    let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT","kid":"r1"}"#);
    let payload = URL_SAFE_NO_PAD.encode(good.to_string());
    let (status, body) = sign_in.chat(&format!("{none_header}.{payload}.")).await;
    assert_eq!(status, 401, "alg none: {body}");

    // Key confusion: HS256 with the provider's public key as the HMAC secret.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("r1".into());
    let confused =
        jsonwebtoken::encode(&header, &good, &EncodingKey::from_secret(&public_der)).unwrap();
    let (status, body) = sign_in.chat(&confused).await;
    assert_eq!(status, 401, "HS256 with the public key: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("algorithm")
    );

    // A key the provider never published: refused, and a flood of such tokens costs
    // the provider at most one fetch per refetch interval.
    let (attacker, _) = SigningKey::rsa("attacker");
    let fetches_before = provider.fetches.load(Ordering::SeqCst);
    for _ in 0..20 {
        let (status, body) = sign_in.chat(&attacker.sign(&good)).await;
        assert_eq!(status, 401, "an unpublished kid: {body}");
    }
    let fetched = provider.fetches.load(Ordering::SeqCst) - fetches_before;
    assert!(
        fetched <= 1,
        "{fetched} fetches for 20 forged kids within 1 s"
    );
    let mut forged = Header::new(Algorithm::RS256);
    forged.kid = Some("r1".into());
    let stolen_kid = jsonwebtoken::encode(&forged, &good, &attacker.encoding).unwrap();
    let (status, body) = sign_in.chat(&stolen_kid).await;
    assert_eq!(
        status, 401,
        "the provider's kid, another key's signature: {body}"
    );

    // A valid token for a tenant the registry does not have, or none at all.
    let ghost = rsa_key.sign(&provider.claims("ana@example.com", &["llm-ghost"]));
    let (status, body) = sign_in.chat(&ghost).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "unknown_tenant");
    let nobody = rsa_key.sign(&provider.claims("ana@example.com", &["staff"]));
    let (status, _) = sign_in.chat(&nobody).await;
    assert_eq!(status, 401, "no mapped group: no tenant");
    assert!(
        usage_events(&sign_in.stack, "search").await.len() == 1,
        "only the good token ran a job"
    );
}
