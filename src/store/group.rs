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

use sqlx::SqlitePool;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::raw::with_raw;
use super::{Result, Store, StoreError};

/// What the committer calls once the batch's fate is known: `None` when it committed, else why not.
type Completion = Box<dyn FnOnce(Option<&StoreError>) + Send>;

/// One caller's writes, run synchronously inside a savepoint: `true` when they succeeded.
pub(super) type GroupOp = Box<dyn FnOnce(&rusqlite::Connection) -> (bool, Completion) + Send>;

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

/// Runs one batch in one transaction and answers every caller after the commit. The callers'
/// statements run on the writer's handle in one go (see `raw`): three hand-offs to sqlx's thread
/// per batch (begin, handle, commit), not two per statement.
async fn run_batch(writer: &SqlitePool, ops: Vec<GroupOp>) {
    let mut done: Vec<Completion> = Vec::with_capacity(ops.len());
    let outcome: Result<()> = async {
        let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
        with_raw(&mut tx, |db| {
            for op in ops {
                db.prepare_cached("SAVEPOINT grouped")?.execute([])?;
                let (ok, completion) = op(db);
                done.push(completion);
                if !ok {
                    db.prepare_cached("ROLLBACK TO grouped")?.execute([])?;
                }
                db.prepare_cached("RELEASE grouped")?.execute([])?;
            }
            Ok(())
        })
        .await?;
        Ok(tx.commit().await?)
    }
    .await;
    let error = outcome.err().map(|e| {
        warn!(error = %e, callers = done.len(), "group commit failed; no write of the batch was kept");
        e
    });
    for completion in done {
        completion(error.as_ref());
    }
}

impl Store {
    /// Runs `f` as part of the next group commit and returns its result once that commit is
    /// durable. `f` runs synchronously on the writer's handle inside a savepoint of an open write
    /// transaction: it must not commit, nor end the savepoint.
    pub(super) async fn grouped<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> Result<T> + Send + 'static,
    {
        let (answer, answered) = oneshot::channel::<Result<T>>();
        let op: GroupOp = Box::new(move |db: &rusqlite::Connection| {
            let result = f(db);
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
        });
        self.group.send(op).map_err(|_| StoreError::Commit("the database is closed".into()))?;
        answered.await.map_err(|_| StoreError::Commit("the write was abandoned before its commit".into()))?
    }
}
