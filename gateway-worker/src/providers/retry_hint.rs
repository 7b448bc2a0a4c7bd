//! Server-directed retry delays, from every header format providers use.
//!
//! Providers disagree on units and formats (milliseconds, seconds, HTTP dates, Go-style
//! durations, RFC 3339 instants), and a gateway that reads only `retry-after` retries too
//! early on OpenAI token limits and too late on Azure. Priority order follows the
//! official SDKs: explicit retry headers first, then rate-limit reset headers.
//!
//! The same reset headers, on any response, also say when a limit is used up
//! ([`openai_exhausted`], [`anthropic_exhausted`]): the worker pauses the deployment
//! fleet-wide until the reset, so the fleet stops before the 429 rather than after.

use std::time::Duration;

use reqwest::header::HeaderMap;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The delay the response asks for, if it asks.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    millis_header(headers, "retry-after-ms")
        .or_else(|| millis_header(headers, "x-ms-retry-after-ms"))
        .or_else(|| header(headers, "retry-after").and_then(parse_retry_after))
        .or_else(|| reset_delay(headers, OPENAI_RESETS))
        .or_else(|| reset_delay(headers, ANTHROPIC_RESETS))
}

/// A limit the upstream reports used up (remaining 0), and when it resets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamExhausted {
    /// The limit's name as the headers spell it (`requests`, `tokens`, `output-tokens`).
    pub limit: String,
    pub resets_in: Duration,
}

/// OpenAI and Azure (`x-ratelimit-remaining-<limit>: 0` with `x-ratelimit-reset-<limit>`).
pub fn openai_exhausted(headers: &HeaderMap) -> Option<UpstreamExhausted> {
    exhausted(headers, OPENAI_RESETS)
}

/// Anthropic (`anthropic-ratelimit-<limit>-remaining: 0` with `...-reset`).
pub fn anthropic_exhausted(headers: &HeaderMap) -> Option<UpstreamExhausted> {
    exhausted(headers, ANTHROPIC_RESETS)
}

/// Among the limits whose remaining is 0, the one that resets last. A limit without a
/// readable reset says nothing of when to resume, so it is not a pause.
fn exhausted(headers: &HeaderMap, scheme: ResetScheme) -> Option<UpstreamExhausted> {
    let mut longest: Option<UpstreamExhausted> = None;
    for (name, value) in headers {
        let Some(limit) = (scheme.limit_of)(name.as_str()) else {
            continue;
        };
        let remaining = header(headers, &(scheme.remaining_header)(limit));
        if remaining.map(str::trim) != Some("0") {
            continue;
        }
        let Some(resets_in) = value.to_str().ok().and_then(scheme.parse) else {
            continue;
        };
        if longest.as_ref().is_none_or(|l| resets_in > l.resets_in) {
            longest = Some(UpstreamExhausted {
                limit: limit.to_owned(),
                resets_in,
            });
        }
    }
    longest
}

/// `x-should-retry: true|false`, sent by the Stainless-generated SDKs' servers.
pub fn should_retry(headers: &HeaderMap) -> Option<bool> {
    match header(headers, "x-should-retry")?.trim() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

fn millis_header(headers: &HeaderMap, name: &str) -> Option<Duration> {
    let millis: f64 = header(headers, name)?.trim().parse().ok()?;
    non_negative_secs(millis / 1000.0)
}

/// `retry-after`: seconds (possibly fractional) or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return non_negative_secs(secs);
    }
    let at = parse_http_date(value)?;
    Some(until(at))
}

/// A rate-limit reset value: Go-style duration (`1s`, `6m0s`, `12ms`, `51.189s`) as
/// OpenAI sends, or plain integer seconds as Azure sends under the same names.
pub fn parse_reset_duration(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return non_negative_secs(secs);
    }
    parse_go_duration(value)
}

/// Go's `time.Duration.String()` format: a sequence of `<number><unit>` with units
/// h, m, s, ms, us/µs, ns.
pub fn parse_go_duration(value: &str) -> Option<Duration> {
    let mut rest = value;
    let mut total = 0.0_f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if number_len == 0 {
            return None;
        }
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    non_negative_secs(total)
}

/// An RFC 3339 instant (`anthropic-ratelimit-*-reset`) as a delay from now.
pub fn parse_rfc3339_delay(value: &str) -> Option<Duration> {
    let at = OffsetDateTime::parse(value.trim(), &Rfc3339).ok()?;
    Some(until(at))
}

/// A protobuf duration as Gemini's `RetryInfo.retryDelay` carries it: `"28s"`, `"1.5s"`.
pub fn parse_proto_duration(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().strip_suffix('s')?.parse().ok()?;
    non_negative_secs(secs)
}

/// How a provider names its per-limit reset and remaining headers.
#[derive(Clone, Copy)]
struct ResetScheme {
    /// The limit's name from a header name, if it is a reset header.
    limit_of: fn(&str) -> Option<&str>,
    remaining_header: fn(&str) -> String,
    parse: fn(&str) -> Option<Duration>,
}

/// OpenAI and Azure: `x-ratelimit-reset-<limit>` / `x-ratelimit-remaining-<limit>`.
const OPENAI_RESETS: ResetScheme = ResetScheme {
    limit_of: |name| name.strip_prefix("x-ratelimit-reset-"),
    remaining_header: |limit| format!("x-ratelimit-remaining-{limit}"),
    parse: parse_reset_duration,
};

/// Anthropic: `anthropic-ratelimit-<limit>-reset` / `anthropic-ratelimit-<limit>-remaining`.
const ANTHROPIC_RESETS: ResetScheme = ResetScheme {
    limit_of: |name| {
        name.strip_prefix("anthropic-ratelimit-")
            .and_then(|rest| rest.strip_suffix("-reset"))
    },
    remaining_header: |limit| format!("anthropic-ratelimit-{limit}-remaining"),
    parse: parse_rfc3339_delay,
};

/// Among the resets of the limits that are exhausted (remaining 0), the longest; if no
/// limit says it is exhausted, the longest of all resets.
fn reset_delay(headers: &HeaderMap, scheme: ResetScheme) -> Option<Duration> {
    let mut exhausted: Option<Duration> = None;
    let mut any: Option<Duration> = None;
    for (name, value) in headers {
        let Some(limit) = (scheme.limit_of)(name.as_str()) else {
            continue;
        };
        let Some(delay) = value.to_str().ok().and_then(scheme.parse) else {
            continue;
        };
        any = any.max(Some(delay));
        let remaining = header(headers, &(scheme.remaining_header)(limit));
        if remaining.map(str::trim) == Some("0") {
            exhausted = exhausted.max(Some(delay));
        }
    }
    exhausted.or(any)
}

fn until(at: OffsetDateTime) -> Duration {
    Duration::try_from(at - OffsetDateTime::now_utc()).unwrap_or_default()
}

fn non_negative_secs(secs: f64) -> Option<Duration> {
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(86_400.0 * 365.0)))
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` (IMF-fixdate, the only format servers may send).
fn parse_http_date(value: &str) -> Option<OffsetDateTime> {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::PrimitiveDateTime::parse(value, &format)
        .ok()
        .map(time::PrimitiveDateTime::assume_utc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn secs(headers_: &[(&str, &str)]) -> f64 {
        retry_after(&headers(headers_)).unwrap().as_secs_f64()
    }

    #[test]
    fn millisecond_headers_win() {
        assert_eq!(
            secs(&[("retry-after", "46"), ("retry-after-ms", "45190")]),
            45.19
        );
        assert_eq!(
            secs(&[("x-ms-retry-after-ms", "1500"), ("retry-after", "9")]),
            1.5
        );
    }

    #[test]
    fn retry_after_seconds_and_http_date() {
        assert_eq!(secs(&[("retry-after", "7")]), 7.0);
        assert_eq!(secs(&[("retry-after", "0.5")]), 0.5);
        let at = OffsetDateTime::now_utc() + time::Duration::seconds(30);
        let format = time::macros::format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        );
        let date = at.format(&format).unwrap();
        let delay = secs(&[("retry-after", &date)]);
        assert!((28.0..=30.0).contains(&delay), "{delay} from {date}");
        let past = "Sun, 06 Nov 1994 08:49:37 GMT";
        assert_eq!(secs(&[("retry-after", past)]), 0.0);
        assert!(retry_after(&headers(&[("retry-after", "soon")])).is_none());
    }

    #[test]
    fn openai_go_durations_prefer_the_exhausted_limit() {
        let h = [
            ("x-ratelimit-remaining-requests", "59"),
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ];
        assert_eq!(secs(&h), 360.0);
        let h = [
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "12ms"),
            ("x-ratelimit-remaining-tokens", "100"),
            ("x-ratelimit-reset-tokens", "51.189s"),
        ];
        assert_eq!(secs(&h), 0.012);
        assert_eq!(secs(&[("x-ratelimit-reset-tokens", "51.189s")]), 51.189);
    }

    #[test]
    fn azure_integer_second_resets() {
        assert_eq!(secs(&[("x-ratelimit-reset-requests", "10")]), 10.0);
    }

    #[test]
    fn anthropic_rfc3339_resets() {
        let at = OffsetDateTime::now_utc() + time::Duration::seconds(20);
        let h = [
            ("anthropic-ratelimit-output-tokens-remaining", "0"),
            (
                "anthropic-ratelimit-output-tokens-reset",
                &at.format(&Rfc3339).unwrap(),
            ),
            ("anthropic-ratelimit-requests-remaining", "10"),
            ("anthropic-ratelimit-requests-reset", "2020-01-01T00:00:00Z"),
        ];
        let delay = secs(&h);
        assert!((18.0..=20.0).contains(&delay), "{delay}");
    }

    #[test]
    fn exhausted_limits_are_those_at_zero_with_a_reset() {
        let h = headers(&[
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "1.5s"),
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ]);
        assert_eq!(
            openai_exhausted(&h),
            Some(UpstreamExhausted {
                limit: "tokens".into(),
                resets_in: Duration::from_secs(360)
            })
        );
        let left = headers(&[
            ("x-ratelimit-remaining-requests", "3"),
            ("x-ratelimit-reset-requests", "1s"),
        ]);
        assert_eq!(openai_exhausted(&left), None, "something left: no pause");
        let no_reset = headers(&[("x-ratelimit-remaining-requests", "0")]);
        assert_eq!(openai_exhausted(&no_reset), None, "no reset: no pause");
        // Azure: integer seconds under the same names.
        let azure = headers(&[
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "4"),
        ]);
        assert_eq!(
            openai_exhausted(&azure).map(|e| e.resets_in),
            Some(Duration::from_secs(4))
        );
        let at = OffsetDateTime::now_utc() + time::Duration::seconds(20);
        let anthropic = headers(&[
            ("anthropic-ratelimit-requests-remaining", "0"),
            (
                "anthropic-ratelimit-requests-reset",
                &at.format(&Rfc3339).unwrap(),
            ),
            ("anthropic-ratelimit-tokens-remaining", "5000"),
            ("anthropic-ratelimit-tokens-reset", "2020-01-01T00:00:00Z"),
        ]);
        let found = anthropic_exhausted(&anthropic).unwrap();
        assert_eq!(found.limit, "requests");
        assert!((18..=20).contains(&found.resets_in.as_secs()), "{found:?}");
        assert_eq!(
            openai_exhausted(&anthropic),
            None,
            "each provider its own names"
        );
    }

    #[test]
    fn go_duration_grammar() {
        assert_eq!(parse_go_duration("1h2m3s"), Some(Duration::from_secs(3723)));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("250us"), Some(Duration::from_micros(250)));
        assert_eq!(parse_go_duration("5x"), None);
        assert_eq!(parse_go_duration(""), None);
        assert_eq!(parse_go_duration("s"), None);
    }

    #[test]
    fn proto_durations() {
        assert_eq!(parse_proto_duration("28s"), Some(Duration::from_secs(28)));
        assert_eq!(
            parse_proto_duration("0.25s"),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_proto_duration("28"), None);
    }

    #[test]
    fn should_retry_header() {
        assert_eq!(
            should_retry(&headers(&[("x-should-retry", "false")])),
            Some(false)
        );
        assert_eq!(
            should_retry(&headers(&[("x-should-retry", "true")])),
            Some(true)
        );
        assert_eq!(should_retry(&headers(&[])), None);
    }
}
