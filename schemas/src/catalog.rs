//! The live model catalog: which logical models running workers serve.
//!
//! Each worker keeps one entry in the catalog KV bucket (key: its worker id), refreshed on
//! a heartbeat; the bucket's max age drops the entries of workers that died. A producer
//! reads it to refuse a job for a model nobody serves at submit time, instead of letting
//! the job sit in the queue.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::job::Tier;
use crate::timestamp::Timestamp;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CatalogEntry {
    pub v: u32,
    pub worker_id: String,
    /// The worker's software version.
    pub version: String,
    pub started_at: Timestamp,
    pub heartbeat_at: Timestamp,
    pub models: Vec<CatalogModel>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CatalogModel {
    pub name: String,
    pub tiers: Vec<Tier>,
    pub deployments: Vec<CatalogDeployment>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallbacks: Vec<String>,
}

/// A deployment, as much of it as producers may see: never a key or a base URL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CatalogDeployment {
    pub provider: String,
    pub kind: String,
    pub upstream_model: String,
    pub weight: u32,
}
