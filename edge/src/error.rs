//! Why an edge could not start, and the exit code each reason gets.
//!
//! The codes are the `submitter` CLI's (its table in `submitter --help`), not the
//! worker's sysexits: the edge replaced `submitter serve`, and scripts that ran that
//! branch on the same numbers. 2: the command line or config is wrong (fix it, retrying
//! will not help); 4: NATS or llmq's buckets are not usable now (retry later); 1:
//! anything else.

use std::net::SocketAddr;

use llmq_runtime::Problems;
use llmq_runtime::api_keys::KeyStoreError;
use llmq_runtime::live::LiveError;
use llmq_runtime::tenants::{RegistryError, StoreError};

/// Exit code: a usage or config error (clap's own code for bad arguments).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: NATS unreachable, too old, or llmq's buckets cannot be read.
pub const EXIT_UNAVAILABLE: u8 = 4;
/// Exit code: anything else.
pub const EXIT_INTERNAL: u8 = 1;

/// Why an edge could not start.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// One line per problem, each naming its field.
    #[error("invalid config:\n{0}")]
    Config(#[from] Problems),
    #[error(transparent)]
    Connect(#[from] llmq_runtime::ConnectError),
    /// The API keys bucket could not be opened (or created).
    #[error(transparent)]
    KeysBucket(KeyStoreError),
    /// The API keys could not be read into memory.
    #[error(transparent)]
    Keys(LiveError),
    /// The tenant registry's bucket could not be opened (or created).
    #[error(transparent)]
    RegistryBucket(StoreError),
    /// The tenant registry could not be read into memory.
    #[error(transparent)]
    Registry(RegistryError),
    /// The fleet-wide limits' bucket (keys' own rates) could not be opened (or created).
    #[error("cannot open the limits bucket {bucket}: {source}")]
    LimitsBucket {
        bucket: String,
        #[source]
        source: async_nats::jetstream::context::CreateKeyValueError,
    },
    #[error("cannot listen on {addr} (http.listen): {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up the edge's metrics: {0}")]
    Metrics(#[source] metrics_exporter_prometheus::BuildError),
}

impl EdgeError {
    /// The exit code of the `llmq-edge` binary for this error.
    pub fn exit_code(&self) -> u8 {
        use llmq_runtime::ConnectError as Nats;
        match self {
            EdgeError::Config(_)
            | EdgeError::Connect(Nats::InvalidOptions(_))
            | EdgeError::Listen { .. } => EXIT_USAGE,
            EdgeError::Connect(_)
            | EdgeError::KeysBucket(_)
            | EdgeError::Keys(_)
            | EdgeError::RegistryBucket(_)
            | EdgeError::Registry(_)
            | EdgeError::LimitsBucket { .. } => EXIT_UNAVAILABLE,
            EdgeError::Metrics(_) => EXIT_INTERNAL,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_are_2_and_outages_are_4_as_in_the_cli() {
        let mut problems = Problems::default();
        problems.add("http.listen", "x");
        assert_eq!(EdgeError::Config(problems).exit_code(), EXIT_USAGE);
        let bad = llmq_runtime::ConnectError::InvalidOptions("no URL".into());
        assert_eq!(EdgeError::Connect(bad).exit_code(), EXIT_USAGE);
        let old = llmq_runtime::ConnectError::ServerTooOld {
            version: "2.9.0".into(),
            minimum: "2.11.0",
        };
        assert_eq!(EdgeError::Connect(old).exit_code(), EXIT_UNAVAILABLE);
        let keys = KeyStoreError::Nats {
            operation: "opening",
            bucket: "LLMQ_KEYS".into(),
            message: "timed out".into(),
        };
        assert_eq!(EdgeError::KeysBucket(keys).exit_code(), EXIT_UNAVAILABLE);
        let listen = EdgeError::Listen {
            addr: SocketAddr::from(([127, 0, 0, 1], 1)),
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        };
        assert_eq!(listen.exit_code(), EXIT_USAGE);
        assert!(listen.to_string().contains("http.listen"));
    }
}
