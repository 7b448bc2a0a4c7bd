//! What every adapter does the same way at the HTTP edge: the headers of a call, the
//! JSON body, URL segments, and the first reading of a response body or stream event.
//!
//! One definition, so the rules hold for every provider alike: a key only ever travels
//! in a header marked sensitive (it never prints), a body that is not the expected JSON
//! is `MalformedResponse` with the start of the body, and a stream that ends before its
//! end marker is a cut stream, not a finished answer.

use llmq_schemas::ErrorType;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::snippet;
use super::{AdapterConfigError, ProviderError, SseEvent};
use crate::config::{ApiKey, ProviderConfig};

/// How a provider takes its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyHeader {
    /// `Authorization: Bearer <key>`.
    Bearer,
    /// The key alone, in the provider's own header (`x-api-key`, `api-key`).
    Named(&'static str),
}

/// The headers every call to one provider carries, read from its config once. The key is
/// not among them: each call brings the one it took at its start (keys rotate while the
/// worker runs, see `crate::keys`).
#[derive(Debug)]
pub(crate) struct CallHeaders {
    /// The configured `headers` and the provider's fixed ones (a version, an organization).
    fixed: HeaderMap,
    key_header: KeyHeader,
}

impl CallHeaders {
    /// The configured extra headers, validated; a call's key goes as `key_header` says.
    pub(crate) fn from_config(
        name: &str,
        config: &ProviderConfig,
        key_header: KeyHeader,
    ) -> Result<Self, AdapterConfigError> {
        let mut fixed = HeaderMap::new();
        for (header, value) in &config.headers {
            let header_name = HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
                AdapterConfigError::HeaderName {
                    provider: name.to_owned(),
                    header: header.clone(),
                }
            })?;
            fixed.insert(
                header_name,
                header_value(name, &format!("headers.{header}"), value)?,
            );
        }
        Ok(Self { fixed, key_header })
    }

    /// Adds a header every call carries.
    pub(crate) fn insert(&mut self, name: HeaderName, value: HeaderValue) {
        self.fixed.insert(name, value);
    }

    /// The headers of one call: the fixed ones, a JSON body, SSE when streaming, `key`.
    pub(crate) fn for_call(
        &self,
        stream: bool,
        key: Option<&ApiKey>,
    ) -> Result<HeaderMap, ProviderError> {
        let mut headers = self.fixed.clone();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if stream {
            headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
        }
        if let Some(key) = key {
            let (name, value) = match self.key_header {
                KeyHeader::Bearer => (
                    AUTHORIZATION,
                    secret_header(&format!("Bearer {}", key.expose()))?,
                ),
                KeyHeader::Named(name) => {
                    (HeaderName::from_static(name), secret_header(key.expose())?)
                }
            };
            headers.insert(name, value);
        }
        Ok(headers)
    }
}

/// A header value from the config; `field` names where it came from.
pub(crate) fn header_value(
    provider: &str,
    field: &str,
    value: &str,
) -> Result<HeaderValue, AdapterConfigError> {
    HeaderValue::from_str(value).map_err(|_| AdapterConfigError::HeaderValue {
        provider: provider.to_owned(),
        field: field.to_owned(),
    })
}

/// A header value holding a key: marked sensitive so it never prints.
fn secret_header(value: &str) -> Result<HeaderValue, ProviderError> {
    let mut value = HeaderValue::from_str(value).map_err(|_| {
        ProviderError::new(
            ErrorType::Auth,
            "the configured key is not a valid header value",
        )
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// The JSON body of a call.
pub(crate) fn json_body(request: &impl Serialize) -> Result<Vec<u8>, ProviderError> {
    serde_json::to_vec(request).map_err(|err| {
        ProviderError::new(
            ErrorType::InvalidRequest,
            format!("cannot encode request: {err}"),
        )
    })
}

/// Percent-encodes everything but RFC 3986 unreserved characters, for one path segment
/// or query value.
pub(crate) fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A 2xx body: the answer `T`; else the provider's error body `E` (some servers answer
/// an error with a 2xx), classified; else malformed, naming `what` was expected.
pub(crate) fn parse_body<T: DeserializeOwned, E: DeserializeOwned>(
    body: &[u8],
    what: &str,
    classify: impl FnOnce(E) -> ProviderError,
) -> Result<T, ProviderError> {
    serde_json::from_slice::<T>(body).map_err(|err| match serde_json::from_slice::<E>(body) {
        Ok(error) => classify(error),
        Err(_) => not_a(what, &err, body),
    })
}

/// A body that is not the `what` it should be.
pub(crate) fn not_a(what: &str, err: &serde_json::Error, body: &[u8]) -> ProviderError {
    ProviderError::malformed(format!("not a {what} ({err}): {}", snippet(body)))
}

/// A non-2xx response, read as the provider's error body `E` when it is one.
pub(crate) fn error_response<E: DeserializeOwned>(
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
    classify: impl FnOnce(E) -> ProviderError,
) -> ProviderError {
    let parsed = serde_json::from_slice::<E>(body).ok().map(classify);
    ProviderError::from_response(status, headers, body, parsed)
}

/// A stream event's JSON as the provider's `what` (`chunk`, `event`); `None` for an
/// event without data.
pub(crate) fn event_json<T: DeserializeOwned>(
    event: &SseEvent,
    what: &str,
) -> Result<Option<T>, ProviderError> {
    let data = event.data.trim();
    if data.is_empty() {
        return Ok(None);
    }
    serde_json::from_str(data).map(Some).map_err(|err| {
        ProviderError::malformed(format!(
            "malformed stream {what} ({err}): {}",
            snippet(data.as_bytes())
        ))
    })
}

/// The verdict at the end of a stream's body: complete only if `marker`, the stream's
/// end, was seen.
pub(crate) fn stream_end(seen: bool, marker: &str) -> Result<(), ProviderError> {
    if seen {
        Ok(())
    } else {
        Err(ProviderError::network(format!(
            "stream ended before {marker}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProviderKind;

    fn config() -> ProviderConfig {
        let mut config = ProviderConfig::new(ProviderKind::OpenaiCompatible, "http://x", None);
        config
            .headers
            .insert("Content-Type".into(), "text/plain".into());
        config.headers.insert("X-Team".into(), "a".into());
        config
    }

    #[test]
    fn every_call_carries_json_sse_when_streaming_and_the_key_marked_sensitive() {
        let key = ApiKey::new("k-123");
        let headers = CallHeaders::from_config("p", &config(), KeyHeader::Named("x-api-key"))
            .unwrap()
            .for_call(true, Some(&key))
            .unwrap();
        assert_eq!(headers.get(CONTENT_TYPE).unwrap(), "application/json");
        assert_eq!(headers.get(ACCEPT).unwrap(), "text/event-stream");
        assert_eq!(headers.get("x-team").unwrap(), "a");
        let sent = headers.get("x-api-key").unwrap();
        assert!(sent.is_sensitive());
        assert_eq!(sent, "k-123");
        let bearer = CallHeaders::from_config("p", &config(), KeyHeader::Bearer).unwrap();
        let headers = bearer.for_call(false, Some(&key)).unwrap();
        assert!(headers.get(ACCEPT).is_none());
        assert_eq!(headers.get(AUTHORIZATION).unwrap(), "Bearer k-123");
        let rotated = ApiKey::new("k-456");
        let headers = bearer.for_call(false, Some(&rotated)).unwrap();
        assert_eq!(headers.get(AUTHORIZATION).unwrap(), "Bearer k-456");
        let headers = bearer.for_call(false, None).unwrap();
        assert!(headers.get(AUTHORIZATION).is_none());
    }

    #[test]
    fn bad_configured_headers_are_typed_errors_naming_the_field() {
        let mut bad_name = config();
        bad_name.headers.insert("bad header".into(), "v".into());
        let err = CallHeaders::from_config("p", &bad_name, KeyHeader::Bearer).unwrap_err();
        assert_eq!(
            err,
            AdapterConfigError::HeaderName {
                provider: "p".into(),
                header: "bad header".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "providers.p.headers: invalid header name \"bad header\""
        );
        let mut bad_value = config();
        bad_value.headers.insert("X-Team".into(), "a\nb".into());
        let err = CallHeaders::from_config("p", &bad_value, KeyHeader::Bearer).unwrap_err();
        assert_eq!(
            err,
            AdapterConfigError::HeaderValue {
                provider: "p".into(),
                field: "headers.X-Team".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "providers.p.headers.X-Team: invalid header value"
        );
    }

    #[test]
    fn a_key_that_is_no_header_value_is_an_auth_error() {
        let key = ApiKey::new("k\n1");
        let err = CallHeaders::from_config("p", &config(), KeyHeader::Bearer)
            .unwrap()
            .for_call(false, Some(&key))
            .unwrap_err();
        assert_eq!(err.class, ErrorType::Auth);
        assert!(!err.message.contains("k\n1"));
    }

    #[test]
    fn percent_encoding_keeps_only_unreserved_characters() {
        assert_eq!(percent_encode("gpt-4.1_mini~x"), "gpt-4.1_mini~x");
        assert_eq!(percent_encode("a b/c?d&é"), "a%20b%2Fc%3Fd%26%C3%A9");
    }

    #[test]
    fn stream_events_without_data_are_skipped_and_bad_json_is_malformed() {
        let event = |data: &str| SseEvent {
            event: None,
            data: data.into(),
        };
        assert_eq!(
            event_json::<serde_json::Value>(&event(" \n"), "chunk").unwrap(),
            None
        );
        let err = event_json::<serde_json::Value>(&event("{oops"), "chunk").unwrap_err();
        assert_eq!(err.class, ErrorType::MalformedResponse);
        assert!(
            err.message.starts_with("malformed stream chunk ("),
            "{}",
            err.message
        );
        assert!(stream_end(true, "[DONE]").is_ok());
        let err = stream_end(false, "[DONE]").unwrap_err();
        assert_eq!(
            (err.class, err.message.as_str()),
            (ErrorType::Network, "stream ended before [DONE]")
        );
    }
}
