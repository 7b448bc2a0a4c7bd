//! `--since 24h` or `--since 2026-11-24T10:00:00Z`: people think in "how long ago",
//! scripts in timestamps; both are accepted.

use llmq_schemas::Timestamp;

/// An RFC 3339 timestamp, `now`, or a duration meaning that long ago.
pub fn parse_instant(text: &str) -> Result<Timestamp, String> {
    let text = text.trim();
    if text == "now" {
        return Ok(Timestamp::now());
    }
    if let Ok(at) = Timestamp::parse(text) {
        return Ok(at);
    }
    match humantime::parse_duration(text) {
        Ok(ago) => {
            let ago = i64::try_from(ago.as_millis()).unwrap_or(i64::MAX);
            Ok(Timestamp::from_unix_millis(
                Timestamp::now().unix_millis().saturating_sub(ago),
            ))
        }
        Err(_) => Err(format!(
            "{text:?} is neither a duration ago (24h, 7d) nor an RFC 3339 time (2026-11-24T10:00:00Z)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_durations_timestamps_and_now() {
        let day_ago = parse_instant("24h").unwrap();
        let expected = Timestamp::now().unix_millis() - 86_400_000;
        assert!((day_ago.unix_millis() - expected).abs() < 5_000);
        let fixed = parse_instant("2026-11-24T10:00:00Z").unwrap();
        assert_eq!(fixed, Timestamp::parse("2026-11-24T10:00:00Z").unwrap());
        assert!(parse_instant("now").is_ok());
        assert!(parse_instant("yesterday-ish").is_err());
    }
}
