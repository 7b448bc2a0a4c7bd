//! This connection's tenant's own registry entry.
//!
//! A producer checks a job against it before publishing (`client/policy.rs`), and a
//! tenant's budget report starts from it (`operator/budget_report.rs`). It is read with a
//! direct get that names the tenant, which a tenant's credentials allow, rather than
//! through the whole registry, which they do not. Unreadable means unknown, never
//! "refused": the worker's check stays the authority.

use std::sync::Arc;

use llmq_runtime::tenants::{self, LiveEntry, Lookup, StoreError, TenantPolicy};

use crate::session::Session;

impl Session {
    /// This session's tenant's entry as the registry holds it now; `None` when there is
    /// none or it cannot be read.
    pub(crate) async fn own_entry(&self) -> Option<Lookup> {
        let timeout = self.options().nats.request_timeout;
        let bucket = self.subjects().tenants_bucket();
        let read = tenants::read_own(self.js(), self.subjects(), self.tenant(), timeout);
        match self.unless_denied(&[&bucket], read).await {
            Err(denied) => {
                tracing::debug!(%denied, "own registry entry not readable; the worker decides");
                None
            }
            Ok(read) => lookup_of(read),
        }
    }
}

fn lookup_of(read: Result<Option<LiveEntry>, StoreError>) -> Option<Lookup> {
    match read {
        Ok(Some(Ok(entry))) => Some(match TenantPolicy::new(entry) {
            Ok(policy) => Lookup::Known(Arc::new(policy)),
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
