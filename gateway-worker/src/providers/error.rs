//! The one provider error type, with its retry classification on it.
//!
//! Every adapter turns whatever its provider sent (status, headers, body, a broken
//! stream) into a `ProviderError` with one [`ErrorType`] class. The retry module and the
//! router decide only from the class and the hints here, so provider quirks stay in the
//! adapters and the policy stays in one place.

use std::fmt;
use std::time::Duration;

use llmq_schemas::{ErrorType, Usage};

/// Which timeout fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutKind {
    Connect,
    FirstToken,
    InterToken,
    Total,
}

impl TimeoutKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            TimeoutKind::Connect => "connect",
            TimeoutKind::FirstToken => "first_token",
            TimeoutKind::InterToken => "inter_token",
            TimeoutKind::Total => "total",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProviderError {
    pub class: ErrorType,
    /// Safe to show to producers: built from the provider's error message, never from
    /// request headers.
    pub message: String,
    /// HTTP status, when the provider answered.
    pub status: Option<u16>,
    /// The provider's own error code or type (`insufficient_quota`, `overloaded_error`).
    pub code: Option<String>,
    /// Server-directed delay before trying this deployment again.
    pub retry_after: Option<Duration>,
    /// `x-should-retry`, which overrides the class's default when present.
    pub should_retry: Option<bool>,
    pub timeout: Option<TimeoutKind>,
    /// Usage the provider reported with the failure (a refusal's or a blocked prompt's
    /// body): it charged for those tokens, so they are billed like any other. Boxed to
    /// keep the error, which every fallible adapter function returns, small.
    pub usage: Option<Box<Usage>>,
}

impl ProviderError {
    pub fn new(class: ErrorType, message: impl Into<String>) -> Self {
        Self {
            class,
            message: message.into(),
            status: None,
            code: None,
            retry_after: None,
            should_retry: None,
            timeout: None,
            usage: None,
        }
    }

    pub fn timeout(kind: TimeoutKind, after: Duration) -> Self {
        Self {
            timeout: Some(kind),
            ..Self::new(
                ErrorType::Timeout,
                format!(
                    "{} timeout after {}",
                    kind.as_str(),
                    humantime::format_duration(after)
                ),
            )
        }
    }

    pub fn network(message: impl Into<String>) -> Self {
        Self::new(ErrorType::Network, message)
    }

    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(ErrorType::MalformedResponse, message)
    }

    pub fn cancelled() -> Self {
        Self::new(ErrorType::Cancelled, "cancelled by the producer")
    }

    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    pub fn with_code(mut self, code: Option<String>) -> Self {
        self.code = code;
        self
    }

    pub fn with_usage(mut self, usage: Option<Usage>) -> Self {
        self.usage = usage.map(Box::new);
        self
    }

    /// See [`ProviderError::usage`].
    pub fn reported_usage(&self) -> Option<Usage> {
        self.usage.as_deref().copied()
    }

    pub fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// Whether trying the same deployment again can help.
    pub fn is_retryable(&self) -> bool {
        if let Some(should_retry) = self.should_retry {
            return should_retry && self.class != ErrorType::Cancelled;
        }
        self.is_transient()
    }

    /// The classes that say the deployment failed for now, not for good.
    fn is_transient(&self) -> bool {
        matches!(
            self.class,
            ErrorType::RateLimited
                | ErrorType::Overloaded
                | ErrorType::Timeout
                | ErrorType::Server
                | ErrorType::Network
                | ErrorType::MalformedResponse
        )
    }

    /// Whether another deployment (or fallback model) may succeed where this one failed.
    /// Request errors would fail everywhere; cancellation ends the job; an answer too
    /// large to keep would be as large, and paid for again, elsewhere.
    pub fn allows_fallback(&self) -> bool {
        !matches!(
            self.class,
            ErrorType::InvalidRequest
                | ErrorType::Cancelled
                | ErrorType::DeadlineExceeded
                | ErrorType::ResponseTooLarge
        )
    }

    /// Whether the error says something about the deployment's health (for cooldowns),
    /// as opposed to the request's content.
    pub fn counts_against_deployment(&self) -> bool {
        self.is_transient()
            || matches!(
                self.class,
                ErrorType::Auth | ErrorType::NotFound | ErrorType::QuotaExhausted
            )
    }

    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The error for a non-2xx response. `parsed` is the adapter's reading of the body,
    /// if it could read it; otherwise the status decides. Every adapter gets the same
    /// status, retry hints from the headers (a hint the body carried wins) and
    /// `x-should-retry` handling from here.
    pub fn from_response(
        status: u16,
        headers: &reqwest::header::HeaderMap,
        body: &[u8],
        parsed: Option<ProviderError>,
    ) -> ProviderError {
        let mut err = parsed.unwrap_or_else(|| {
            ProviderError::new(
                Self::class_for_status(status),
                format!("HTTP {status}: {}", snippet(body)),
            )
        });
        err.status = Some(status);
        err.retry_after = err
            .retry_after
            .or_else(|| super::retry_hint::retry_after(headers));
        err.should_retry = super::retry_hint::should_retry(headers);
        err
    }

    /// The class for an HTTP status when the body says nothing more specific.
    pub fn class_for_status(status: u16) -> ErrorType {
        match status {
            400 | 413 | 422 => ErrorType::InvalidRequest,
            401 | 403 => ErrorType::Auth,
            404 => ErrorType::NotFound,
            408 => ErrorType::Timeout,
            429 => ErrorType::RateLimited,
            529 => ErrorType::Overloaded,
            409 | 500..=599 => ErrorType::Server,
            _ => ErrorType::Server,
        }
    }
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.class)?;
        if let Some(status) = self.status {
            write!(f, " (HTTP {status})")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ProviderError {}

/// The start of a body, on one line, for error messages.
pub(crate) fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
    let mut text = text.replace(['\n', '\r'], " ");
    if body.len() > 300 {
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_class_says_whether_to_retry_fall_back_and_cool_the_deployment_down() {
        use ErrorType::*;
        // (class, retryable, allows fallback, counts against the deployment)
        let cases = [
            (RateLimited, true, true, true),
            (Overloaded, true, true, true),
            (Timeout, true, true, true),
            (Server, true, true, true),
            (Network, true, true, true),
            (MalformedResponse, true, true, true),
            (Auth, false, true, true),
            (NotFound, false, true, true),
            (QuotaExhausted, false, true, true),
            (ContextWindowExceeded, false, true, false),
            (ContentFiltered, false, true, false),
            (UnknownModel, false, true, false),
            (InvalidJob, false, true, false),
            (Internal, false, true, false),
            (InvalidRequest, false, false, false),
            (Cancelled, false, false, false),
            (DeadlineExceeded, false, false, false),
            (ResponseTooLarge, false, false, false),
        ];
        for (class, retryable, fallback, counts) in cases {
            let err = ProviderError::new(class, "x");
            assert_eq!(
                (
                    err.is_retryable(),
                    err.allows_fallback(),
                    err.counts_against_deployment()
                ),
                (retryable, fallback, counts),
                "{class}"
            );
        }
    }

    #[test]
    fn x_should_retry_overrides_the_class() {
        let mut err = ProviderError::new(ErrorType::Server, "x");
        err.should_retry = Some(false);
        assert!(!err.is_retryable());
        let mut err = ProviderError::new(ErrorType::InvalidRequest, "x");
        err.should_retry = Some(true);
        assert!(err.is_retryable());
    }

    #[test]
    fn status_defaults() {
        assert_eq!(ProviderError::class_for_status(429), ErrorType::RateLimited);
        assert_eq!(ProviderError::class_for_status(529), ErrorType::Overloaded);
        assert_eq!(ProviderError::class_for_status(503), ErrorType::Server);
        assert_eq!(ProviderError::class_for_status(403), ErrorType::Auth);
        assert_eq!(
            ProviderError::class_for_status(400),
            ErrorType::InvalidRequest
        );
    }
}
