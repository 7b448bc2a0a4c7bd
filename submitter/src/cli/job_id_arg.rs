//! A job id argument: a parse error says what a job id is and where to get one, instead
//! of the UUID parser's `invalid character: found 'n' at 0`.

use llmq_schemas::JobId;

/// Parses a job id (a UUID) for `result` and `cancel`.
pub fn parse_job_id(text: &str) -> Result<JobId, String> {
    JobId::parse_str(text.trim()).map_err(|_| {
        format!(
            "not a job id: {text:?} (a job id is a UUID, as printed by `submitter chat --no-wait`)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_uuids_and_explains_anything_else() {
        let id = "0193a3c2-6c2e-7cc3-9c1d-3f1d2c4b5a69";
        assert_eq!(parse_job_id(id).unwrap().to_string(), id);
        let err = parse_job_id("not-a-uuid").unwrap_err();
        assert!(err.starts_with("not a job id: \"not-a-uuid\""), "{err}");
        assert!(err.contains("submitter chat --no-wait"), "{err}");
    }
}
