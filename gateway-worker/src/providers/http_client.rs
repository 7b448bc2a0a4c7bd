//! One pooled HTTP client per provider.
//!
//! Per provider, because the connect timeout, the pool size and the HTTP version are per
//! provider; pooled keep-alive connections because a TLS handshake per job would cost more
//! than the gateway's whole overhead budget. HTTP/2 (negotiated in the TLS handshake by
//! default) multiplexes every request in flight over one connection: with HTTP/1.1 each
//! in-flight request holds a connection and its buffers (~16 KiB each in hyper).

use std::sync::Once;
use std::time::Duration;

use crate::config::{HttpVersion, ProviderConfig};

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
    let builder = match config.http {
        HttpVersion::Auto => reqwest::Client::builder(),
        HttpVersion::Http1 => reqwest::Client::builder().http1_only(),
        HttpVersion::Http2 => reqwest::Client::builder()
            .http2_prior_knowledge()
            // Streams are many and small: let flow-control windows grow with demand.
            .http2_adaptive_window(true),
    };
    builder
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
