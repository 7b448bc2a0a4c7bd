//! Thought signatures carried in tool-call ids (why: see the Gemini module docs).

/// Between a generated tool-call id and the thought signature it carries.
const SIGNATURE_SEPARATOR: &str = "__sig_";

/// The id of the `n`th call of an answer, carrying its thought signature if it has one.
pub(super) fn call_id(n: usize, signature: Option<&str>) -> String {
    match signature.filter(|s| !s.is_empty()) {
        Some(signature) => {
            let safe: String = signature
                .trim_end_matches('=')
                .chars()
                .map(|c| match c {
                    '+' => '-',
                    '/' => '_',
                    c => c,
                })
                .collect();
            format!("call_{n}{SIGNATURE_SEPARATOR}{safe}")
        }
        None => format!("call_{n}"),
    }
}

/// The thought signature carried in a tool-call id, in standard base64 as received.
pub(super) fn signature_of(id: &str) -> Option<String> {
    let (_, safe) = id.split_once(SIGNATURE_SEPARATOR)?;
    let mut signature: String = safe
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    while !signature.len().is_multiple_of(4) {
        signature.push('=');
    }
    Some(signature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thought_signatures_survive_the_round_trip_through_tool_call_ids() {
        let signature = "CiQB0e2Kb+/9zAbc/def+g==";
        let id = call_id(3, Some(signature));
        assert!(id.starts_with("call_3__sig_"));
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
            "{id}"
        );
        assert_eq!(signature_of(&id).as_deref(), Some(signature));
        assert_eq!(call_id(1, None), "call_1");
        assert_eq!(call_id(1, Some("")), "call_1");
        assert_eq!(signature_of("call_1"), None);
        assert_eq!(signature_of("toolu_01A09q90qw90lq917835lq9"), None);
    }
}
