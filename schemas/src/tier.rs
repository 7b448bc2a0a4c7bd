//! The scheduling class of a job, apart from the job: batches and limits name it too.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Scheduling class. Workers reserve part of their capacity for `interactive` so that a
/// large batch never starves a person waiting for an answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    #[default]
    Interactive,
    Batch,
}

impl Tier {
    pub const ALL: [Tier; 2] = [Tier::Interactive, Tier::Batch];

    pub fn as_str(&self) -> &'static str {
        match self {
            Tier::Interactive => "interactive",
            Tier::Batch => "batch",
        }
    }

    pub fn parse(text: &str) -> Option<Tier> {
        match text {
            "interactive" => Some(Tier::Interactive),
            "batch" => Some(Tier::Batch),
            _ => None,
        }
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
