//! The tenant registry from the producer's side: the admin commands' reads and writes,
//! and the check a producer makes before publishing, so a job its tenant may not run is
//! refused at once (the worker's check stays the authority).

use std::collections::BTreeMap;
use std::time::Duration;

use llmq_runtime::policy::{self, JobFacts};
use llmq_runtime::tenants::{self, Change, LiveEntry, Lookup, TenantPolicy};
use llmq_schemas::{Job, TenantEntry};
use tokio::time::Instant;

use crate::client::Client;
use crate::error::{ClientError, SubmitError};

/// How long a producer trusts the registry entry it read (a change reaches producers
/// within this, workers at once).
pub const POLICY_CACHE: Duration = Duration::from_secs(5);

impl Client {
    /// Every tenant in the registry (an admin read), by id.
    pub async fn tenants(&self) -> Result<BTreeMap<String, LiveEntry>, ClientError> {
        let bucket = self.tenants_bucket(0).await?;
        let name = self.inner.subjects.tenants_bucket();
        let read = tenants::list(&bucket, &self.inner.subjects);
        Ok(self
            .unless_denied(&[&name], read)
            .await
            .map_err(|denied| ClientError::PermissionDenied {
                operation: "reading the tenant registry",
                denied,
            })??)
    }

    /// What applying `file` would change; `prune` also removes tenants not in it.
    pub async fn tenants_diff(
        &self,
        file: &[TenantEntry],
        prune: bool,
    ) -> Result<Vec<Change>, ClientError> {
        let live = self.tenants().await?;
        Ok(tenants::diff(&live, file, prune))
    }

    /// Writes `changes` to the registry, creating it if missing with `replicas` (0: as many
    /// as the job stream has, 1 before any worker ran). An existing registry keeps its own.
    pub async fn apply_tenants(
        &self,
        changes: &[Change],
        replicas: usize,
    ) -> Result<usize, ClientError> {
        let bucket = self.tenants_bucket(replicas).await?;
        Ok(tenants::apply(&bucket, &self.inner.subjects, changes).await?)
    }

    /// Removes a tenant from the registry.
    pub async fn remove_tenant(&self, id: &str) -> Result<(), ClientError> {
        let bucket = self.tenants_bucket(0).await?;
        Ok(tenants::remove(&bucket, &self.inner.subjects, id).await?)
    }

    async fn tenants_bucket(
        &self,
        replicas: usize,
    ) -> Result<async_nats::jetstream::kv::Store, ClientError> {
        let name = self.inner.subjects.tenants_bucket();
        // Opening (or creating) the bucket asks for the account's JetStream info first.
        let open = tenants::bucket(&self.inner.js, &self.inner.subjects, replicas);
        Ok(self
            .unless_denied(&[&name, "$JS.API.INFO"], open)
            .await
            .map_err(|denied| ClientError::PermissionDenied {
                operation: "opening the tenant registry",
                denied,
            })??)
    }

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
            tenant: &self.inner.tenant,
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
    pub(crate) async fn own_lookup(&self) -> Option<Lookup> {
        let cache = &self.inner.policy;
        if let Some((read_at, lookup)) = cache.lock().await.as_ref()
            && read_at.elapsed() < POLICY_CACHE
        {
            return lookup.clone();
        }
        let timeout = self.inner.options.nats.request_timeout;
        let bucket = self.inner.subjects.tenants_bucket();
        let read = tenants::read_own(
            &self.inner.js,
            &self.inner.subjects,
            &self.inner.tenant,
            timeout,
        );
        let lookup = match self.unless_denied(&[&bucket], read).await {
            Err(denied) => {
                tracing::debug!(%denied, "own registry entry not readable; the worker decides");
                None
            }
            Ok(read) => self.lookup_of(read),
        };
        *cache.lock().await = Some((Instant::now(), lookup.clone()));
        lookup
    }

    fn lookup_of(&self, read: Result<Option<LiveEntry>, tenants::StoreError>) -> Option<Lookup> {
        match read {
            Ok(Some(Ok(entry))) => Some(match TenantPolicy::new(entry) {
                Ok(policy) => Lookup::Known(std::sync::Arc::new(policy)),
                Err(reason) => Lookup::Invalid(reason),
            }),
            Ok(Some(Err(reason))) => Some(Lookup::Invalid(reason)),
            Ok(None) => None,
            Err(err) => {
                tracing::debug!(error = %err, "own registry entry not readable; the worker decides");
                None
            }
        }
    }
}
