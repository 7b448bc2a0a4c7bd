//! Wall-clock instants on the wire.
//!
//! RFC 3339 strings in UTC: readable in `nats stream view`, parseable by every language's
//! standard library, and unambiguous across time zones, which Unix integers are too but
//! without the readability.

use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// An instant, serialized as an RFC 3339 string (`2026-11-24T10:00:00.123Z`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(OffsetDateTime);

impl Timestamp {
    pub fn now() -> Self {
        Self(OffsetDateTime::now_utc())
    }

    pub fn from_unix_millis(millis: i64) -> Self {
        let nanos = i128::from(millis) * 1_000_000;
        Self(OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH))
    }

    pub fn unix_millis(&self) -> i64 {
        i64::try_from(self.0.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
    }

    pub fn as_offset(&self) -> OffsetDateTime {
        self.0
    }

    /// Parses an RFC 3339 string.
    pub fn parse(text: &str) -> Result<Self, time::error::Parse> {
        OffsetDateTime::parse(text, &Rfc3339).map(|t| Self(t.to_offset(time::UtcOffset::UTC)))
    }

    /// `self + duration`, saturating at the far future.
    pub fn plus(&self, duration: std::time::Duration) -> Self {
        Self(
            self.0
                .checked_add(time::Duration::try_from(duration).unwrap_or(time::Duration::MAX))
                .unwrap_or(self.0),
        )
    }

    /// How long from now until this instant; zero if it has passed.
    pub fn remaining(&self) -> std::time::Duration {
        let left = self.0 - OffsetDateTime::now_utc();
        std::time::Duration::try_from(left).unwrap_or_default()
    }

    /// Microseconds since this instant, negative if it is in the future (another
    /// machine's clock ahead of this one's).
    pub fn micros_ago(&self) -> i64 {
        let ago = (OffsetDateTime::now_utc() - self.0).whole_microseconds();
        i64::try_from(ago).unwrap_or(if ago < 0 { i64::MIN } else { i64::MAX })
    }

    /// How long ago this instant was; zero if it is in the future.
    pub fn elapsed(&self) -> std::time::Duration {
        let ago = OffsetDateTime::now_utc() - self.0;
        std::time::Duration::try_from(ago).unwrap_or_default()
    }

    pub fn has_passed(&self) -> bool {
        self.0 <= OffsetDateTime::now_utc()
    }
}

impl From<OffsetDateTime> for Timestamp {
    fn from(value: OffsetDateTime) -> Self {
        Self(value.to_offset(time::UtcOffset::UTC))
    }
}

impl From<std::time::SystemTime> for Timestamp {
    fn from(value: std::time::SystemTime) -> Self {
        Self(OffsetDateTime::from(value))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.format(&Rfc3339) {
            Ok(text) => f.write_str(&text),
            Err(_) => write!(f, "{}", self.0),
        }
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = self.0.format(&Rfc3339).map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&text).map_err(|err| {
            serde::de::Error::custom(format!("invalid RFC 3339 timestamp {text:?}: {err}"))
        })
    }
}

impl JsonSchema for Timestamp {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Timestamp".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "format": "date-time",
            "description": "An RFC 3339 timestamp, e.g. 2026-11-24T10:00:00.123Z"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_json() {
        let ts = Timestamp::parse("2026-11-24T10:00:00.123+01:00").unwrap();
        let json = serde_json::to_string(&ts).unwrap();
        assert_eq!(json, "\"2026-11-24T09:00:00.123Z\"");
        let back: Timestamp = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ts);
    }

    #[test]
    fn rejects_garbage_with_the_value_in_the_message() {
        let err = serde_json::from_str::<Timestamp>("\"tomorrow\"").unwrap_err();
        assert!(err.to_string().contains("tomorrow"), "{err}");
    }

    #[test]
    fn millis_round_trip() {
        let ts = Timestamp::from_unix_millis(1_790_000_000_123);
        assert_eq!(ts.unix_millis(), 1_790_000_000_123);
    }
}
