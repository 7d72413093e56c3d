//! Group commit: many small write transactions of the engine's hot path share one SQLite
//! transaction and so one fsync.
//!
//! Under `synchronous=FULL` every commit costs an fsync (milliseconds on most disks), and SQLite
//! has one writer: a thousand slices a second, each with two or three state changes, cannot be
//! one commit each. A caller of [`Store::grouped`] hands its writes over as a closure; one
//! committer task takes every closure waiting, runs each inside its own savepoint of a single
//! `BEGIN IMMEDIATE` transaction, commits once, and only then answers each caller. A closure that
//! fails rolls back to its savepoint alone; a commit that fails fails every caller of the batch.
//! A caller's answer therefore always means "durable" (or "not written at all"), exactly as with
//! its own transaction.

use futures_util::future::BoxFuture;
use sqlx::sqlite::SqliteConnection;
use sqlx::{Connection, SqlitePool};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::{Result, Store, StoreError};

/// What the committer calls once the batch's fate is known: `None` when it committed, else why not.
type Completion = Box<dyn FnOnce(Option<&StoreError>) + Send>;

/// One caller's writes: run inside a savepoint; `true` when they succeeded.
pub(super) type GroupOp = Box<dyn for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, (bool, Completion)> + Send>;

/// At most this many callers share one transaction, so a batch never holds the writer long.
const MAX_BATCH: usize = 256;

/// Starts the committer on the current runtime; it ends when every sender is gone.
pub(super) fn start(writer: SqlitePool) -> mpsc::UnboundedSender<GroupOp> {
    let (send, mut recv) = mpsc::unbounded_channel::<GroupOp>();
    tokio::spawn(async move {
        while let Some(first) = recv.recv().await {
            let mut ops = vec![first];
            while ops.len() < MAX_BATCH {
                match recv.try_recv() {
                    Ok(op) => ops.push(op),
                    Err(_) => break,
                }
            }
            run_batch(&writer, ops).await;
        }
    });
    send
}

/// Runs one batch in one transaction and answers every caller after the commit.
async fn run_batch(writer: &SqlitePool, ops: Vec<GroupOp>) {
    let mut done: Vec<Completion> = Vec::with_capacity(ops.len());
    let outcome: Result<(), sqlx::Error> = async {
        let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
        for op in ops {
            let mut savepoint = tx.begin().await?;
            let (ok, completion) = op(&mut savepoint).await;
            done.push(completion);
            if ok {
                savepoint.commit().await?;
            } else {
                savepoint.rollback().await?;
            }
        }
        tx.commit().await
    }
    .await;
    let error = outcome.err().map(|e| {
        warn!(error = %e, callers = done.len(), "group commit failed; no write of the batch was kept");
        StoreError::from(e)
    });
    for completion in done {
        completion(error.as_ref());
    }
}

impl Store {
    /// Runs `f` as part of the next group commit and returns its result once that commit is
    /// durable. `f` sees a connection inside a savepoint of an open write transaction: it must
    /// not commit, and must not wait on anything but the database.
    pub(super) async fn grouped<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        let (answer, answered) = oneshot::channel::<Result<T>>();
        let op: GroupOp = Box::new(move |conn: &mut SqliteConnection| {
            let work = f(conn);
            Box::pin(async move {
                let result = work.await;
                let ok = result.is_ok();
                let completion: Completion = Box::new(move |commit_error: Option<&StoreError>| {
                    let result = match commit_error {
                        None => result,
                        // Each caller gets the batch's error, a full disk still a full disk.
                        Some(StoreError::DiskFull(m)) => Err(StoreError::DiskFull(m.clone())),
                        Some(StoreError::Unwritable(m)) => Err(StoreError::Unwritable(m.clone())),
                        Some(e) => Err(StoreError::Commit(e.to_string())),
                    };
                    let _ = answer.send(result);
                });
                (ok, completion)
            })
        });
        self.group.send(op).map_err(|_| StoreError::Commit("the database is closed".into()))?;
        answered.await.map_err(|_| StoreError::Commit("the write was abandoned before its commit".into()))?
    }
}
