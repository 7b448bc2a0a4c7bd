//! The tenant registry's admin reads and writes: what `submitter tenants` does.
//!
//! The whole registry is an admin's: listing it, or opening its bucket to write, needs
//! permissions a tenant does not have. A tenant's own entry is read elsewhere
//! (`own_entry.rs`).

use std::collections::BTreeMap;

use async_nats::jetstream::kv;
use llmq_runtime::tenants::{self, Change, LiveEntry};
use llmq_schemas::TenantEntry;

use super::Operator;
use crate::error::ClientError;

impl Operator {
    /// Every tenant in the registry, by id.
    pub async fn tenants(&self) -> Result<BTreeMap<String, LiveEntry>, ClientError> {
        let bucket = self.tenants_bucket(0).await?;
        let session = &self.session;
        let name = session.subjects().tenants_bucket();
        let read = tenants::list(&bucket, session.subjects());
        Ok(session
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
        Ok(tenants::apply(&bucket, self.session.subjects(), changes).await?)
    }

    /// Removes a tenant from the registry.
    pub async fn remove_tenant(&self, id: &str) -> Result<(), ClientError> {
        let bucket = self.tenants_bucket(0).await?;
        Ok(tenants::remove(&bucket, self.session.subjects(), id).await?)
    }

    async fn tenants_bucket(&self, replicas: usize) -> Result<kv::Store, ClientError> {
        let session = &self.session;
        let name = session.subjects().tenants_bucket();
        // Opening (or creating) the bucket asks for the account's JetStream info first.
        let open = tenants::bucket(session.js(), session.subjects(), replicas);
        Ok(session
            .unless_denied(&[&name, "$JS.API.INFO"], open)
            .await
            .map_err(|denied| ClientError::PermissionDenied {
                operation: "opening the tenant registry",
                denied,
            })??)
    }
}
