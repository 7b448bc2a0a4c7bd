//! The admin side of llmq API keys (see `llmq_runtime::api_keys`).

use llmq_runtime::api_keys::{self, ApiKeyEntry, NewKey};

use super::Operator;
use crate::error::ClientError;

impl Operator {
    /// Makes a key for `tenant` from `template` (models, rpm, name, expiry) and stores its
    /// entry; the returned key is the only copy of its secret.
    pub async fn create_api_key(
        &self,
        tenant: &str,
        template: ApiKeyEntry,
    ) -> Result<NewKey, ClientError> {
        llmq_schemas::Tenant::parse(tenant).map_err(|err| ClientError::NotFound {
            what: format!("tenant {tenant:?} ({err})"),
        })?;
        let bucket = api_keys::bucket(self.session.js(), self.session.subjects(), 0).await?;
        let key = ApiKeyEntry::generate(tenant, template);
        api_keys::create(&bucket, &key).await?;
        Ok(key)
    }

    /// Every key's entry (never a secret).
    pub async fn api_keys(&self) -> Result<Vec<Result<ApiKeyEntry, String>>, ClientError> {
        let bucket = api_keys::bucket(self.session.js(), self.session.subjects(), 0).await?;
        Ok(api_keys::list(&bucket).await?)
    }

    /// Revokes a key: every edge refuses it from then on.
    pub async fn revoke_api_key(&self, id: &str) -> Result<ApiKeyEntry, ClientError> {
        let bucket = api_keys::bucket(self.session.js(), self.session.subjects(), 0).await?;
        Ok(api_keys::revoke(&bucket, id).await?)
    }
}
