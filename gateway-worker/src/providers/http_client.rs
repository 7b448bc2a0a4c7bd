//! One pooled HTTP client per provider.
//!
//! Per provider, because the connect timeout and the pool size are per provider; pooled
//! keep-alive connections because a TLS handshake per job would cost more than the
//! gateway's whole overhead budget.

use std::sync::Once;
use std::time::Duration;

use crate::config::ProviderConfig;

/// Installs ring as the process's rustls crypto provider (once). reqwest is built without
/// a bundled provider (to avoid compiling aws-lc), and refuses to build a client without
/// one. Harmless if the host program installed one already.
pub fn install_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

pub fn build_client(config: &ProviderConfig) -> Result<reqwest::Client, reqwest::Error> {
    install_crypto_provider();
    reqwest::Client::builder()
        .connect_timeout(config.timeouts.connect)
        .pool_max_idle_per_host(config.max_concurrency)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .tcp_keepalive(Duration::from_secs(30))
        .user_agent(concat!("llmq-gateway-worker/", env!("CARGO_PKG_VERSION")))
        // Redirects would resend the key header to wherever the provider points.
        .redirect(reqwest::redirect::Policy::none())
        .build()
}
