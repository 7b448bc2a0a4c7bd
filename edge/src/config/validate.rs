//! Whole-config validation, after parsing: every problem, each naming its field, so one
//! run of `llmq-edge --check-config` tells an operator everything to fix.

use std::time::Duration;

use llmq_runtime::{NatsOptions, Problems};
use llmq_schemas::Subjects;

use super::{BatchesConfig, EdgeConfig, HttpConfig, OidcConfig};
use crate::oidc::accepted_algorithm;

/// Checks the whole config; every problem names its field.
pub fn validate(config: &EdgeConfig) -> Result<(), Problems> {
    let mut problems = Problems::default();
    nats(&config.nats, &mut problems);
    if let Err(err) = Subjects::new(&config.jetstream.prefix) {
        problems.add("jetstream.prefix", err);
    }
    http(&config.http, &mut problems);
    batches(&config.batches, &mut problems);
    if let Some(oidc) = &config.oidc {
        self::oidc(oidc, &mut problems);
    }
    problems.into_result()
}

/// What the connection would refuse later, named now.
fn nats(nats: &NatsOptions, p: &mut Problems) {
    p.check(!nats.urls().is_empty(), "nats.url", "must not be empty");
    p.check(
        nats.password.is_none() || nats.user.is_some(),
        "nats.password",
        "needs nats.user",
    );
    p.check(
        nats.tls.cert_file.is_some() == nats.tls.key_file.is_some(),
        "nats.tls",
        "cert_file and key_file go together",
    );
}

fn batches(batches: &BatchesConfig, p: &mut Problems) {
    p.check(
        batches.max_file_bytes > 0,
        "batches.max_file_bytes",
        "must be at least 1",
    );
    p.check(
        batches.runners <= 64,
        "batches.runners",
        "must be at most 64",
    );
    p.check(
        batches.heartbeat >= Duration::from_millis(100),
        "batches.heartbeat",
        "must be at least 100ms",
    );
}

fn oidc(oidc: &OidcConfig, p: &mut Problems) {
    let is_url = |text: &str| text.starts_with("https://") || text.starts_with("http://");
    p.check(
        is_url(&oidc.issuer),
        "oidc.issuer",
        "must be an http(s) URL",
    );
    p.check(
        !oidc.audience.is_empty(),
        "oidc.audience",
        "must not be empty",
    );
    if let Some(url) = &oidc.jwks_url {
        p.check(is_url(url), "oidc.jwks_url", "must be an http(s) URL");
    }
    p.check(
        !oidc.tenant_claim.is_empty(),
        "oidc.tenant_claim",
        "must not be empty",
    );
    p.check(
        !oidc.algorithms.is_empty(),
        "oidc.algorithms",
        "must name at least one",
    );
    for name in &oidc.algorithms {
        p.check(
            accepted_algorithm(name).is_some(),
            "oidc.algorithms",
            format!(
                "{name:?} is not one of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384"
            ),
        );
    }
    for (value, tenant) in &oidc.tenants {
        if let Err(err) = llmq_schemas::Tenant::parse(tenant) {
            p.add(format!("oidc.tenants.{value}"), err);
        }
    }
    p.check(
        oidc.jwks_refetch >= Duration::from_secs(1),
        "oidc.jwks_refetch",
        "must be at least 1s",
    );
}

fn http(http: &HttpConfig, p: &mut Problems) {
    p.check(
        http.max_body_bytes > 0,
        "http.max_body_bytes",
        "must be at least 1",
    );
    let timeouts = [
        ("http.default_timeout", http.default_timeout),
        ("http.read_timeout", http.read_timeout),
        ("http.keep_alive", http.keep_alive),
    ];
    for (field, value) in timeouts {
        p.check(
            value >= Duration::from_millis(1),
            field,
            "must be at least 1ms",
        );
    }
}
