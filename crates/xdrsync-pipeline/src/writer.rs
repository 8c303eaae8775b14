//! Group commit: one thread owns the store's writes for a pipeline.
//!
//! Every (tenant, stream) task hands its pages to the writer as they are read and goes on
//! reading; the writer commits whatever has queued up meanwhile — pages of many tenants — in one
//! transaction ([`SqliteStore::commit_group`]), so listing, parsing and writing overlap and a pass
//! of hundreds of tenants pays for a handful of WAL syncs instead of one per page. Requests are
//! committed in the order they were sent, so a stream's cursor (its last request) is never
//! written before the versions it covers. Each commit bumps a counter that sinks watch to
//! deliver while a pull is still running.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use xdrsync_store::{CommitRequest, CommitStats, Encoded, Store, StoreError};

/// Versions one transaction takes at most (a few MB of JSON).
const GROUP_VERSIONS: usize = 2000;

type Reply = oneshot::Sender<Result<CommitStats, StoreError>>;

/// The handle to a pipeline's writer thread; the thread stops when the last handle is dropped.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    store: Arc<dyn Store>,
    tx: mpsc::UnboundedSender<(CommitRequest, Encoded, Reply)>,
    commits: watch::Receiver<u64>,
}

/// A commit that was sent and not yet answered.
pub(crate) type Pending = oneshot::Receiver<Result<CommitStats, StoreError>>;

impl Writer {
    /// Starts the writer thread of `store`.
    pub(crate) fn spawn(store: Arc<dyn Store>) -> std::io::Result<Self> {
        let (tx, mut rx) = mpsc::unbounded_channel::<(CommitRequest, Encoded, Reply)>();
        let writes = store.clone();
        let (count, commits) = watch::channel(0u64);
        std::thread::Builder::new()
            .name("xdrsync-store-writer".into())
            .spawn(move || {
                while let Some(first) = rx.blocking_recv() {
                    let mut size = first.0.versions.len();
                    let mut group = vec![first];
                    while size < GROUP_VERSIONS {
                        match rx.try_recv() {
                            Ok(next) => {
                                size += next.0.versions.len();
                                group.push(next);
                            }
                            Err(_) => break,
                        }
                    }
                    let mut requests = Vec::with_capacity(group.len());
                    let mut encoded = Vec::with_capacity(group.len());
                    let mut replies = Vec::with_capacity(group.len());
                    for (request, e, reply) in group {
                        requests.push(request);
                        encoded.push(e);
                        replies.push(reply);
                    }
                    let results = writes.commit_group_encoded(&requests, &encoded);
                    count.send_modify(|n| *n += 1);
                    for (reply, result) in replies.into_iter().zip(results) {
                        // A caller that stopped waiting no longer needs the answer.
                        let _ = reply.send(result);
                    }
                }
            })?;
        Ok(Writer { store, tx, commits })
    }

    /// Compresses `request`'s payloads here, on the caller's thread (so that the writer
    /// thread only inserts), and queues it; the answer comes when its group is committed.
    pub(crate) fn submit(&self, request: CommitRequest) -> Pending {
        let (reply, answer) = oneshot::channel();
        let encoded = self.store.encode(&request.versions);
        // If the thread is gone the reply sender is dropped with the message, and the caller's
        // `wait` reports it.
        let _ = self.tx.send((request, encoded, reply));
        answer
    }

    /// Waits for a submitted commit.
    pub(crate) async fn wait(pending: Pending) -> Result<CommitStats, StoreError> {
        pending.await.unwrap_or_else(|_| {
            Err(StoreError::WriterStopped(
                "the store's writer thread stopped".into(),
            ))
        })
    }

    /// Commits `request` and waits for it.
    pub(crate) async fn commit(&self, request: CommitRequest) -> Result<CommitStats, StoreError> {
        Self::wait(self.submit(request)).await
    }

    /// A counter of group commits so far: it changes after every commit.
    pub(crate) fn commits(&self) -> watch::Receiver<u64> {
        self.commits.clone()
    }
}
