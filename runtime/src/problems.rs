//! What is wrong with a config or registry file: every problem at once, each naming its
//! field, so one run of a check tells an operator everything to fix.

use std::fmt;

/// One problem: the field's path (`models.chat.deployments[0].provider`) and what is
/// wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub field: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every problem found, in the order found. Validators of each section add to one
/// collector; an empty one means valid.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
pub struct Problems(Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl Problems {
    /// Records a problem with `field` unless `ok`.
    pub fn check(&mut self, ok: bool, field: impl fmt::Display, message: impl fmt::Display) {
        if !ok {
            self.add(field, message);
        }
    }

    pub fn add(&mut self, field: impl fmt::Display, message: impl fmt::Display) {
        self.0.push(Problem {
            field: field.to_string(),
            message: message.to_string(),
        });
    }

    /// Adds every problem of `other`.
    pub fn extend(&mut self, other: Problems) {
        self.0.extend(other.0);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Problem> {
        self.0.iter()
    }

    /// `Ok` when nothing was found.
    pub fn into_result(self) -> Result<(), Problems> {
        if self.is_empty() { Ok(()) } else { Err(self) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_and_prints_one_line_per_problem() {
        let mut problems = Problems::default();
        problems.check(true, "a", "fine");
        assert!(problems.clone().into_result().is_ok());
        problems.check(false, "a.b", "must be at least 1");
        problems.add(format!("c[{}]", 2), "unknown");
        assert_eq!(problems.len(), 2);
        assert_eq!(
            problems.to_string(),
            "a.b: must be at least 1\nc[2]: unknown"
        );
        assert!(problems.into_result().is_err());
    }
}
