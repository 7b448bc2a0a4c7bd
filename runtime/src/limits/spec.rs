//! What a limit says: concurrent requests, requests and tokens per window.
//!
//! The same shape configures a provider, a deployment (worker config), a tenant and a
//! tenant's model (registry), so every limit is validated by one function that names its
//! field.

use std::time::Duration;

pub use llmq_schemas::limits::{LimitSpec, MAX_WINDOW};

use crate::Problems;

/// Records every problem with `spec` at `field`.
pub fn validate(spec: &LimitSpec, field: &str, problems: &mut Problems) {
    for (name, value, max) in [
        ("concurrency", spec.concurrency, i64::from(u32::MAX)),
        ("rpm", spec.rpm, i64::MAX),
        ("tpm", spec.tpm, i64::MAX),
    ] {
        if let Some(value) = value {
            problems.check(
                (1..=max).contains(&value),
                format!("{field}.{name}"),
                format!("must be at least 1 (got {value}); leave it out for no limit"),
            );
        }
    }
    if let Some(window) = spec.window {
        problems.check(
            (Duration::from_secs(1)..=MAX_WINDOW).contains(&window),
            format!("{field}.window"),
            format!(
                "must be from 1s to 1h (got {})",
                humantime::format_duration(window)
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(spec: LimitSpec) -> Vec<String> {
        let mut problems = Problems::default();
        validate(&spec, "providers.openai.limits", &mut problems);
        problems.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn zero_negative_and_short_windows_are_named() {
        let bad = LimitSpec {
            concurrency: Some(0),
            rpm: Some(-5),
            tpm: None,
            window: Some(Duration::from_millis(500)),
        };
        let found = problems(bad);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(
            found[0].starts_with("providers.openai.limits.concurrency: must be at least 1 (got 0)")
        );
        assert!(found[1].starts_with("providers.openai.limits.rpm: must be at least 1 (got -5)"));
        assert!(found[2].starts_with("providers.openai.limits.window: must be from 1s to 1h"));
        assert!(problems(LimitSpec::default()).is_empty());
    }

    #[test]
    fn non_numeric_values_and_unknown_keys_do_not_parse() {
        assert!(toml::from_str::<LimitSpec>("rpm = \"lots\"").is_err());
        assert!(toml::from_str::<LimitSpec>("rps = 5").is_err());
        let spec: LimitSpec = toml::from_str("rpm = 20\nwindow = \"10s\"").unwrap();
        assert_eq!(spec.requests(), Some(20));
        assert_eq!(spec.window(), Duration::from_secs(10));
    }
}
