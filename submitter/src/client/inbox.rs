//! One reply subscription per client, shared by every job it waits on.
//!
//! A subscription per job would cost a SUB and an UNSUB round on the connection for each
//! job and leave the server with one interest entry per job in flight; at thousands of
//! jobs per second that is the bottleneck. Instead every job's `reply_to` is
//! `<inbox prefix>.<client id>.<job id>` under one wildcard subscription, and a dispatcher
//! task routes each message by its last subject token to the job's handle.
//!
//! The dispatcher only looks at the subject: payloads are decoded by the handle, on the
//! caller's task, so one slow or busy caller never holds up the others. Channels are
//! unbounded for the same reason: a full channel would block the dispatcher, and with
//! it every job; a job's events are bounded by the job anyway.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use futures::StreamExt;
use llmq_schemas::JobId;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::error::ConnectError;

type Routes = Mutex<HashMap<JobId, mpsc::UnboundedSender<Bytes>>>;

/// The client's reply inbox: its subscription, routing table and dispatcher task.
pub(crate) struct Inbox {
    /// `<inbox prefix>.<client id>.`
    base: String,
    routes: Arc<Routes>,
    dispatcher: JoinHandle<()>,
}

/// A job id already has a handle on this client.
#[derive(Debug)]
pub(crate) struct AlreadyRegistered;

impl Inbox {
    /// Subscribes to `<prefix>.<client id>.*` and starts the dispatcher.
    pub(crate) async fn open(
        nats: &async_nats::Client,
        prefix: &str,
    ) -> Result<Inbox, ConnectError> {
        let client_id = Uuid::new_v4().simple().to_string();
        let base = format!("{prefix}.{client_id}.");
        let subject = format!("{base}*");
        let subscriber = nats
            .subscribe(subject.clone())
            .await
            .map_err(|source| ConnectError::Subscribe { subject, source })?;
        let routes = Arc::new(Routes::default());
        let dispatcher = tokio::spawn(dispatch(subscriber, Arc::clone(&routes)));
        Ok(Inbox {
            base,
            routes,
            dispatcher,
        })
    }

    /// The reply subject for `job_id`.
    pub(crate) fn reply_subject(&self, job_id: JobId) -> String {
        format!("{}{}", self.base, job_id)
    }

    /// Starts routing `job_id`'s replies to the returned receiver.
    pub(crate) fn register(
        &self,
        job_id: JobId,
    ) -> Result<mpsc::UnboundedReceiver<Bytes>, AlreadyRegistered> {
        let mut routes = lock(&self.routes);
        if routes.contains_key(&job_id) {
            return Err(AlreadyRegistered);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        routes.insert(job_id, tx);
        Ok(rx)
    }

    pub(crate) fn unregister(&self, job_id: JobId) {
        lock(&self.routes).remove(&job_id);
    }

    /// How many jobs are being waited on.
    pub(crate) fn len(&self) -> usize {
        lock(&self.routes).len()
    }
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox")
            .field("subject", &format!("{}*", self.base))
            .field("jobs", &self.len())
            .finish()
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        // Dropping the task's subscriber unsubscribes.
        self.dispatcher.abort();
    }
}

async fn dispatch(mut subscriber: async_nats::Subscriber, routes: Arc<Routes>) {
    while let Some(message) = subscriber.next().await {
        route(&routes, message.subject.as_str(), message.payload);
    }
    // The subscription ended (connection closed): close every channel so that waiting
    // handles notice instead of waiting forever.
    tracing::debug!("reply inbox subscription ended");
    lock(&routes).clear();
}

fn route(routes: &Routes, subject: &str, payload: Bytes) {
    let token = subject.rsplit('.').next().unwrap_or(subject);
    let Ok(job_id) = Uuid::try_parse(token) else {
        tracing::debug!(subject, "reply on the inbox without a job id; dropped");
        return;
    };
    let routes = lock(routes);
    match routes.get(&job_id) {
        // A send fails only if the handle is being dropped; it unregisters itself.
        Some(tx) => {
            let _ = tx.send(payload);
        }
        None => tracing::trace!(%job_id, "reply for a job nobody waits on; dropped"),
    }
}

fn lock(routes: &Routes) -> MutexGuard<'_, HashMap<JobId, mpsc::UnboundedSender<Bytes>>> {
    // The map stays consistent even if a holder panicked: every operation is one call.
    routes.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(ids: &[JobId]) -> (Routes, Vec<mpsc::UnboundedReceiver<Bytes>>) {
        let mut map = HashMap::new();
        let mut receivers = Vec::new();
        for id in ids {
            let (tx, rx) = mpsc::unbounded_channel();
            map.insert(*id, tx);
            receivers.push(rx);
        }
        (Mutex::new(map), receivers)
    }

    #[test]
    fn routes_by_the_last_subject_token() {
        let a = Uuid::now_v7();
        let b = Uuid::now_v7();
        let (routes, mut rx) = table(&[a, b]);
        route(
            &routes,
            &format!("_INBOX_llmq.t.c1.{b}"),
            Bytes::from_static(b"to b"),
        );
        route(
            &routes,
            &format!("_INBOX_llmq.t.c1.{a}"),
            Bytes::from_static(b"to a"),
        );
        route(
            &routes,
            &format!("_INBOX_llmq.t.c1.{b}"),
            Bytes::from_static(b"b again"),
        );
        assert_eq!(rx[0].try_recv().unwrap(), Bytes::from_static(b"to a"));
        assert!(rx[0].try_recv().is_err());
        assert_eq!(rx[1].try_recv().unwrap(), Bytes::from_static(b"to b"));
        assert_eq!(rx[1].try_recv().unwrap(), Bytes::from_static(b"b again"));
    }

    #[test]
    fn drops_replies_for_unknown_jobs_and_garbage_tokens() {
        let a = Uuid::now_v7();
        let (routes, mut rx) = table(&[a]);
        route(
            &routes,
            "_INBOX_llmq.t.c1.not-a-uuid",
            Bytes::from_static(b"x"),
        );
        route(
            &routes,
            &format!("_INBOX_llmq.t.c1.{}", Uuid::now_v7()),
            Bytes::from_static(b"y"),
        );
        route(&routes, "", Bytes::from_static(b"z"));
        assert!(rx[0].try_recv().is_err());
    }

    #[test]
    fn a_dropped_receiver_does_not_disturb_the_others() {
        let a = Uuid::now_v7();
        let b = Uuid::now_v7();
        let (routes, mut rx) = table(&[a, b]);
        drop(rx.remove(0));
        route(&routes, &format!("x.{a}"), Bytes::from_static(b"lost"));
        route(&routes, &format!("x.{b}"), Bytes::from_static(b"kept"));
        assert_eq!(rx[0].try_recv().unwrap(), Bytes::from_static(b"kept"));
    }
}
