//! The tenant registry: one source of truth for who may use what, read by every worker
//! and every producer-side component through this one module.
//!
//! It lives in a NATS KV bucket (no other infrastructure), written by the admin commands
//! from a file teams keep in git ([`parse_registry`]), followed live by every worker
//! ([`Registry`]), and read per tenant by producers ([`read_own`]).

mod file;
mod pattern;
mod registry;
mod store;

pub use file::parse_registry;
pub use pattern::{ModelPattern, PatternError};
pub use registry::{LOAD_TIMEOUT, Lookup, Mode, Registry, RegistryError, TenantPolicy};
pub use store::{
    Change, LiveEntry, StoreError, apply, bucket, config as bucket_config, diff, list, read_own,
    remove,
};
