//! Synchronous SQLite on the writer connection, for the engine's hot path.
//!
//! sqlx runs every statement on its connection's own thread: each statement is a hand-off there
//! and back (two thread wake-ups), which on a small machine costs far more than the statement
//! itself. The state-machine steps of many slices are a few dozen short statements; run that way,
//! the hand-offs — not SQLite — capped dispatch at about a thousand slices a second. Here a batch
//! takes the connection's handle from sqlx's thread once ([`with_raw`]), runs all its statements
//! directly through rusqlite (prepared once per batch), and gives the handle back. Transactions
//! are still begun and committed through sqlx, on its thread, so the commit's fsync never blocks
//! the async runtime and sqlx's transaction bookkeeping stays true.

use rusqlite::Connection;
use sqlx::sqlite::SqliteConnection;

use super::{StoreError, SQLITE_FULL, SQLITE_IOERR, SQLITE_READONLY};

/// Runs `f` on the connection's SQLite handle, outside sqlx's worker thread. `f` must leave the
/// transaction state as it found it (savepoints released), and must not wait on anything.
pub(super) async fn with_raw<T>(
    conn: &mut SqliteConnection,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let mut handle = conn.lock_handle().await?;
    let raw = handle.as_raw_handle().as_ptr();
    let out = off_the_runtime(|| {
        // SAFETY: `lock_handle` holds sqlx's worker away from the handle until `handle` is
        // dropped, so this thread is its only user meanwhile. `from_handle` does not own the
        // handle (dropping the rusqlite connection finalizes its own statements and never closes
        // the database), and the rusqlite connection is dropped here, before `handle`.
        let db = unsafe { Connection::from_handle(raw) }?;
        f(&db)
    });
    drop(handle);
    out
}

/// Runs `f`, which blocks (a batch of statements, milliseconds for a large one), without
/// holding up the runtime's other tasks: on a multi-threaded runtime the worker's other tasks
/// move to another thread meanwhile, so slices waiting for their due instant still leave on
/// time. A single-threaded runtime (tests) just runs it.
fn off_the_runtime<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

impl From<rusqlite::Error> for StoreError {
    /// The same storage classes as for sqlx's errors, so a full disk reads the same either way.
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::SqliteFailure(f, _) => match f.extended_code & 0xff {
                SQLITE_FULL => StoreError::DiskFull(e.to_string()),
                SQLITE_READONLY | SQLITE_IOERR => StoreError::Unwritable(e.to_string()),
                _ => StoreError::Raw(e.to_string()),
            },
            rusqlite::Error::QueryReturnedNoRows => StoreError::NotFound,
            _ => StoreError::Raw(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[tokio::test]
    async fn raw_statements_join_the_sqlx_transaction_and_storage_errors_keep_their_class() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_dir(dir.path()).await.unwrap();
        let mut tx = store.write().await.unwrap();
        with_raw(&mut tx, |db| {
            db.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1)")?;
            Ok(())
        })
        .await
        .unwrap();
        // sqlx sees the raw statements inside its transaction, and its rollback undoes them.
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t").fetch_one(&mut *tx).await.unwrap();
        assert_eq!(n, 1);
        tx.rollback().await.unwrap();
        assert!(sqlx::query("SELECT * FROM t").fetch_all(store.pool()).await.is_err(), "rolled back");
        // The connection goes on working through sqlx after a raw batch.
        store.check_writable().await.unwrap();
        let mut tx = store.write().await.unwrap();
        let e = with_raw(&mut tx, |db| {
            db.execute_batch("PRAGMA query_only = 1")?;
            let e = db.execute_batch("CREATE TABLE u (x)").map_err(StoreError::from);
            db.execute_batch("PRAGMA query_only = 0")?;
            e
        })
        .await
        .unwrap_err();
        assert!(matches!(e, StoreError::Unwritable(_)), "{e:?}");
        let e = with_raw(&mut tx, |db| Ok(db.query_row("SELECT 1 WHERE 0", [], |r| r.get::<_, i64>(0))?))
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::NotFound), "{e:?}");
        tx.commit().await.unwrap();
    }
}
