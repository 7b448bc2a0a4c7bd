//! Model patterns in a tenant's `models`: an exact name, or `*` for any run of characters.
//!
//! Only `*` is a wildcard. Characters that other glob dialects treat specially (`?`,
//! `[`, `]`, `{`, `}`) are refused rather than taken literally, so a pattern written for
//! another tool never silently matches less (or more) than its author meant.

use std::fmt;

/// A validated model pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPattern {
    text: String,
    /// The literal pieces between the `*`s.
    pieces: Vec<String>,
}

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("a model pattern must not be empty")]
    Empty,
    #[error("{0:?}: only `*` is a wildcard (`?`, `[`, `]`, `{{`, `}}` are not allowed)")]
    OtherWildcard(String),
    #[error("{0:?}: `**` means nothing more than `*`; write one")]
    DoubleStar(String),
    #[error("{0:?}: control characters are not allowed")]
    Control(String),
}

impl ModelPattern {
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        if text.contains(['?', '[', ']', '{', '}']) {
            return Err(PatternError::OtherWildcard(text.to_owned()));
        }
        if text.contains("**") {
            return Err(PatternError::DoubleStar(text.to_owned()));
        }
        if text.chars().any(char::is_control) {
            return Err(PatternError::Control(text.to_owned()));
        }
        Ok(Self {
            text: text.to_owned(),
            pieces: text.split('*').map(str::to_owned).collect(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `model` matches: the first piece is a prefix, the last a suffix, and the
    /// ones between appear in order.
    pub fn matches(&self, model: &str) -> bool {
        let [first, middle @ .., last] = self.pieces.as_slice() else {
            return self.text == model; // one piece: no `*`
        };
        let Some(mut rest) = model.strip_prefix(first.as_str()) else {
            return false;
        };
        for piece in middle {
            match rest.find(piece.as_str()) {
                Some(at) => rest = &rest[at + piece.len()..],
                None => return false,
            }
        }
        rest.len() >= last.len() && rest.ends_with(last.as_str())
    }
}

impl fmt::Display for ModelPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, model: &str) -> bool {
        ModelPattern::parse(pattern).unwrap().matches(model)
    }

    #[test]
    fn exact_names_and_stars() {
        assert!(matches("gpt-4.1", "gpt-4.1"));
        assert!(!matches("gpt-4.1", "gpt-4.1-mini"));
        assert!(matches("*", "anything"));
        assert!(matches("chat-*", "chat-fast"));
        assert!(matches("chat-*", "chat-"));
        assert!(!matches("chat-*", "chat"));
        assert!(matches("*-mini", "gpt-4.1-mini"));
        assert!(matches("gpt-*-mini", "gpt-4.1-mini"));
        assert!(!matches("gpt-*-mini", "gpt-mini"));
        assert!(matches("a*b*c", "abc"));
        assert!(matches("a*b*c", "a-b-b-c"));
        assert!(!matches("a*b*c", "acb"));
        // The suffix may not reuse what the prefix consumed.
        assert!(!matches("ab*ba", "aba"));
    }

    #[test]
    fn other_glob_dialects_are_refused() {
        for bad in ["", "gpt-?", "gpt-[45]", "{a,b}", "a**", "a\u{7}"] {
            assert!(ModelPattern::parse(bad).is_err(), "{bad:?}");
        }
    }
}
