//! Who may touch which subject: the nats-server authorization for a tenant registry.
//!
//! The worker's policy check decides what a job may do; this decides what a connection
//! may do, so that a tenant cannot even ask for another tenant's jobs, outcomes, reply
//! events, usage or cancels, whatever client it uses. Every tenant is a *user* of one
//! account, pinned by subject permissions to its own subjects, rather than an account of
//! its own: the workers consume every tenant's jobs from one stream, and per-tenant
//! accounts would need an export and an import per tenant for each of the six streams and
//! buckets, plus a JetStream domain per account, for the same isolation the subjects give.
//!
//! A permission can only pin what the subject of a request names, so the producer side
//! reads only through requests that name their filter: direct gets by subject, consumer
//! creation with the filter in the subject (`CONSUMER.CREATE.<stream>.<name>.<filter>`),
//! cancels published straight to their KV subject. Pulling from a consumer
//! (`CONSUMER.MSG.NEXT.<stream>.<name>`) cannot name a tenant: a tenant may pull from any
//! consumer of the results and usage streams whose random name it knows, and only its own
//! consumers' names ever reach it (listing and advisories are denied).
//!
//! What a permission cannot see (a message's headers, how many consumers a user made),
//! the streams' own settings refuse: see `stream_guards`.

use llmq_schemas::{Subjects, Tenant};

/// The three kinds of NATS users of an llmq installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Everything in the account: setting up streams, the registry, the dead letters.
    Admin,
    /// Consumes every tenant's jobs, writes outcomes, usage, events and the catalog.
    Worker,
    /// The HTTP edge: submits, cancels and reads jobs for every tenant, follows the API
    /// keys and the registry.
    Edge,
    /// Submits, streams, cancels and reads its own jobs, outcomes and usage; may also
    /// receive events on the extra reply prefixes its registry entry grants.
    Tenant {
        tenant: Tenant,
        reply_prefixes: Vec<String>,
    },
}

impl Role {
    /// The user's name in the generated files (`admin`, `worker`, `tenant-<id>`).
    pub fn name(&self) -> String {
        match self {
            Role::Admin => "admin".into(),
            Role::Worker => "worker".into(),
            Role::Edge => "edge".into(),
            Role::Tenant { tenant, .. } => format!("tenant-{}", tenant.as_str()),
        }
    }
}

/// Subjects a user may publish to and subscribe to; everything else is denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
}

/// The narrowest permissions that let `role` do its work with llmq's own clients.
pub fn permissions(subjects: &Subjects, role: &Role) -> Permissions {
    match role {
        Role::Admin => Permissions {
            publish: vec![">".into()],
            subscribe: vec![">".into()],
        },
        Role::Worker => worker(subjects),
        Role::Edge => edge(subjects),
        Role::Tenant {
            tenant,
            reply_prefixes,
        } => tenant_permissions(subjects, tenant, reply_prefixes),
    }
}

fn worker(subjects: &Subjects) -> Permissions {
    let prefix = subjects.prefix();
    Permissions {
        publish: vec![
            format!("{prefix}.>"),
            "$JS.API.>".into(),
            "$JS.ACK.>".into(),
            "$JS.FC.>".into(),
            "$KV.>".into(),
            // Reply events go to the tenants' inboxes; the policy check keeps each job's
            // events in its own tenant's.
            format!("{}.>", Subjects::INBOX_ROOT),
        ],
        subscribe: vec![
            "_INBOX.>".into(),
            // A batch job published while no tenant has batch jobs for its model: what
            // wakes a worker's batch loop (`fair_share`), one message per idle spell.
            format!("{prefix}.jobs.*.batch.*"),
            // The server's word that a job was delivered max_deliver times: the worker
            // moves it to the dead letters (`dlq::watch_max_deliveries`).
            format!(
                "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.*",
                subjects.jobs_stream()
            ),
        ],
    }
}

fn edge(subjects: &Subjects) -> Permissions {
    let prefix = subjects.prefix();
    Permissions {
        publish: vec![
            format!("{prefix}.jobs.>"),
            format!("{prefix}.blobs.>"),
            format!("$KV.{}.>", subjects.cancel_bucket()),
            // API keys with a rate (`keys create --rpm`): the key's window counters.
            format!("$KV.{}.>", crate::limits::bucket_config(subjects, 1).bucket),
            // The Files and Batches API: files, batch records, the batches to run and the
            // acknowledgements of running them.
            format!("$O.{}.>", subjects.files_bucket()),
            format!("$KV.{}.>", subjects.batches_bucket()),
            format!("{prefix}.batchruns.>"),
            format!("$JS.ACK.{}.>", subjects.batch_runs_stream()),
            "$JS.API.>".into(),
            "$JS.FC.>".into(),
        ],
        // Its own API replies (`_INBOX`, outside every tenant's), and the tenants' reply
        // inboxes, where its jobs' events arrive.
        subscribe: vec!["_INBOX.>".into(), format!("{}.>", Subjects::INBOX_ROOT)],
    }
}

fn tenant_permissions(subjects: &Subjects, tenant: &Tenant, extra: &[String]) -> Permissions {
    let (prefix, t) = (subjects.prefix(), tenant.as_str());
    let api = "$JS.API";
    let results = subjects.results_stream();
    let usage = subjects.usage_stream();
    let catalog = format!("KV_{}", subjects.catalog_bucket());
    let tenants = subjects.tenants_bucket();
    let spend = crate::budget::spend_stream_config(subjects, 1, Default::default()).name;
    let limits = crate::limits::bucket_config(subjects, 1).bucket;
    let batches = subjects.batches_bucket();
    let publish = vec![
        // Jobs under its own tenant token, any model and tier.
        format!("{prefix}.jobs.*.*.{t}"),
        // Chunks of its own large requests (claim checks; workers read a job's blob
        // under the job subject's tenant). Large outcomes' chunks are read with its
        // outcomes, below.
        format!("{prefix}.blobs.{t}.>"),
        // Its cancels, as KV puts straight to their subject.
        format!("$KV.{}.{t}.>", subjects.cancel_bucket()),
        // Its outcomes: read by subject, watched by a consumer filtered to them.
        format!("{api}.DIRECT.GET.{results}.{prefix}.results.{t}.>"),
        format!("{api}.CONSUMER.CREATE.{results}.*.{prefix}.results.{t}.>"),
        format!("{api}.CONSUMER.MSG.NEXT.{results}.*"),
        // Its usage events.
        format!("{api}.CONSUMER.CREATE.{usage}.*.{prefix}.usage.{t}.*"),
        format!("{api}.CONSUMER.MSG.NEXT.{usage}.*"),
        // Its batch records: written, read by key, listed by a consumer filtered to them.
        format!("$KV.{batches}.{t}.>"),
        format!("{api}.DIRECT.GET.KV_{batches}.$KV.{batches}.{t}.>"),
        format!("{api}.CONSUMER.CREATE.KV_{batches}.*.$KV.{batches}.{t}.>"),
        format!("{api}.CONSUMER.MSG.NEXT.KV_{batches}.*"),
        // Its own registry entry (the submitter's policy pre-check), no other.
        format!("{api}.DIRECT.GET.KV_{tenants}.$KV.{tenants}.{t}"),
        // Its own budget (`submitter usage`): its spend counters, its reservations.
        format!("{api}.DIRECT.GET.{spend}.{prefix}.spend.{t}.*"),
        format!("{api}.DIRECT.GET.KV_{limits}.$KV.{limits}.budget.{t}"),
        // The model catalog: which models live workers serve, the same for everyone.
        format!("{api}.STREAM.INFO.{catalog}"),
        format!("{api}.CONSUMER.CREATE.{catalog}"),
        format!("{api}.DIRECT.GET.{catalog}.>"),
        format!("$JS.FC.{catalog}.>"),
    ];
    let mut subscribe = vec![format!("{}.>", Subjects::tenant_inbox(tenant))];
    subscribe.extend(extra.iter().map(|prefix| format!("{prefix}.>")));
    Permissions { publish, subscribe }
}

/// One user of the generated authorization: its public NKey and its permissions.
#[derive(Debug, Clone)]
pub struct User {
    pub role: Role,
    /// The user's public NKey (`U...`); the seed never enters the server's config.
    pub nkey: String,
}

/// The nats-server `authorization` block for `users`, to `include` from the server's
/// config. It holds public keys only: safe to keep in git beside the registry.
pub fn server_config(subjects: &Subjects, users: &[User]) -> String {
    let mut out = String::from(
        "# Generated by `submitter auth generate`; public NKeys only, no secrets.\n\
         authorization {\n  users = [\n",
    );
    for user in users {
        let p = permissions(subjects, &user.role);
        out.push_str(&format!(
            "    # {}\n    {{\n      nkey: {}\n      permissions: {{\n        \
             publish: {{ allow: {} }}\n        subscribe: {{ allow: {} }}\n      }}\n    }}\n",
            user.role.name(),
            quote(&user.nkey),
            list(&p.publish),
            list(&p.subscribe),
        ));
    }
    out.push_str("  ]\n}\n");
    out
}

fn quote(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_default()
}

fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|item| quote(item)).collect();
    format!("[{}]", quoted.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acme() -> Role {
        Role::Tenant {
            tenant: Tenant::parse("acme").unwrap(),
            reply_prefixes: vec!["acme.replies".into()],
        }
    }

    #[test]
    fn a_tenant_is_pinned_to_its_own_subjects() {
        let subjects = Subjects::new("llmq").unwrap();
        let p = permissions(&subjects, &acme());
        assert!(p.publish.contains(&"llmq.jobs.*.*.acme".to_owned()));
        assert!(p.publish.contains(&"llmq.blobs.acme.>".to_owned()));
        assert!(
            p.publish
                .contains(&"$JS.API.DIRECT.GET.LLMQ_RESULTS.llmq.results.acme.>".to_owned())
        );
        assert_eq!(
            p.subscribe,
            vec!["_INBOX_llmq.acme.>".to_owned(), "acme.replies.>".to_owned()]
        );
        for subject in p.publish.iter().chain(&p.subscribe) {
            assert!(!subject.contains("DLQ"), "{subject}");
            assert!(!subject.ends_with("$JS.API.>"), "{subject}");
            assert_ne!(subject, ">");
        }
        let every_pinned = p
            .publish
            .iter()
            .filter(|s| s.contains("CREATE.LLMQ_") || s.contains("DIRECT.GET.LLMQ_"))
            .all(|s| s.contains(".acme."));
        assert!(every_pinned, "{:?}", p.publish);
    }

    #[test]
    fn the_worker_hears_max_deliveries_and_the_edge_writes_key_limits() {
        let subjects = Subjects::new("llmq").unwrap();
        let worker = permissions(&subjects, &Role::Worker);
        assert!(
            worker
                .subscribe
                .contains(&"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.LLMQ_JOBS.*".to_owned())
        );
        assert!(
            !worker
                .subscribe
                .iter()
                .any(|s| s.starts_with("$JS.EVENT.ADVISORY.>")),
            "no other advisory"
        );
        let edge = permissions(&subjects, &Role::Edge);
        assert!(edge.publish.contains(&"$KV.LLMQ_LIMITS.>".to_owned()));
        assert!(!edge.publish.contains(&"$KV.>".to_owned()));
    }

    #[test]
    fn the_server_config_holds_public_keys_and_quoted_subjects() {
        let subjects = Subjects::new("llmq").unwrap();
        let users = [
            User {
                role: Role::Admin,
                nkey: "UADMIN".into(),
            },
            User {
                role: acme(),
                nkey: "UACME".into(),
            },
        ];
        let config = server_config(&subjects, &users);
        assert!(config.contains("nkey: \"UACME\""), "{config}");
        assert!(config.contains("\"$KV.LLMQ_CANCEL.acme.>\""), "{config}");
        assert!(config.contains("# tenant-acme"), "{config}");
        assert_eq!(config.matches("nkey:").count(), 2);
    }
}
