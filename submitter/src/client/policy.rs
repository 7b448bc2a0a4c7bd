//! The check a producer makes before publishing, so a job its tenant may not run is
//! refused at once (the worker's check stays the authority).
//!
//! The tenant's registry entry is read once per [`POLICY_CACHE`], not per job: a submit
//! must not cost a registry read.

use std::time::Duration;

use llmq_runtime::policy::{self, JobFacts};
use llmq_runtime::tenants::Lookup;
use llmq_schemas::Job;
use tokio::time::Instant;

use super::Client;
use crate::error::SubmitError;

/// How long a producer trusts the registry entry it read (a change reaches producers
/// within this, workers at once).
pub const POLICY_CACHE: Duration = Duration::from_secs(5);

/// The tenant's registry entry as last read, and when.
pub(super) type PolicyCache = tokio::sync::Mutex<Option<(Instant, Option<Lookup>)>>;

impl Client {
    /// Refuses a job its tenant's registry entry does not allow. No entry (or none
    /// readable by this producer) lets it through: the worker decides.
    pub(crate) async fn check_policy(
        &self,
        job: &Job,
        payload_bytes: usize,
    ) -> Result<(), SubmitError> {
        let Some(lookup) = self.own_lookup().await else {
            return Ok(());
        };
        let facts = JobFacts {
            tenant: self.tenant(),
            tier: job.tier,
            job,
            payload_bytes,
        };
        policy::check(&lookup, facts)
            .map(|_| ())
            .map_err(|denied| SubmitError::PolicyDenied {
                rule: denied.rule,
                message: denied.to_string(),
            })
    }

    /// This client's tenant's entry, cached for [`POLICY_CACHE`].
    async fn own_lookup(&self) -> Option<Lookup> {
        let cache = &self.inner.policy;
        if let Some((read_at, lookup)) = cache.lock().await.as_ref()
            && read_at.elapsed() < POLICY_CACHE
        {
            return lookup.clone();
        }
        let lookup = self.inner.session.own_entry().await;
        *cache.lock().await = Some((Instant::now(), lookup.clone()));
        lookup
    }
}

impl Client {
    /// The largest request this tenant's registry entry lets through, if it says.
    pub(crate) async fn own_max_request_bytes(&self) -> Option<u64> {
        match self.own_lookup().await {
            Some(Lookup::Known(policy)) => policy.entry.max_request_bytes,
            _ => None,
        }
    }
}
