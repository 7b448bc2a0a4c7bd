//! Where a job's attempts go: which deployments, in which order, and which to skip.

mod cooldown;
mod router;

pub use cooldown::Cooldowns;
pub use router::{Candidate, Deployment, ModelRoute, ProviderHandle, RouteError, Router};
