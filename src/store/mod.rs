//! All SQL lives here: the SQLite pool, its pragmas, migrations, and one small function per use
//! case. Nothing outside this module sees a query or a raw database error.
//!
//! Architecture Invariant: every write transaction starts with `BEGIN IMMEDIATE`, so two writers
//! never deadlock on a lock upgrade; each step of the slice state machine commits before the
//! next side effect.

mod compat;
mod group;
mod jobs;
mod metrics;
mod plans;
mod quota;
mod raw;
mod reports;
mod schedules;
mod steps;
mod tasks;
mod work;

pub use compat::set_compat_job;
pub use jobs::{
    add_rejections, append_urls, append_urls_tx, clear_urls, insert_job, job_id_by_name, job_in_flight, update_job,
    Job, JobUpdate, NewJob,
};
pub use metrics::{Histogram, MetricsSnapshot, StatusSummary, LATENESS_BUCKETS};
pub use plans::{insert_plan, sync_config_plans, Plan, PlanChange};
pub use quota::Reservation;
pub use reports::{Delivery, DeliveryWork, Report, Subscription, MAX_ROWS};
pub use schedules::{delete_schedule_tx, schedule_of_job_tx, upsert_schedule, FireOutcome, Firing, ScheduleRow};
pub use tasks::{TaskFilter, TaskView};
pub use work::{Slice, SliceStart, Subtask, SubtaskWork, UrlOutcome, VendorProgress};

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};

/// Errors at the database boundary.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A rule of the data was broken (overlapping plans, a duplicate name...): the message says which.
    #[error("{0}")]
    Conflict(String),
    /// `InvalidEndTime.Mismatch`: the end of a window is not after its start.
    #[error("the end time is earlier than the start time")]
    EndBeforeStart,
    /// A unique name is taken (`NameAlreadyExists`).
    #[error("the name `{0}` already exists")]
    NameExists(String),
    /// A count limit is reached (`DeliverExceedLimit`): the limit.
    #[error("the limit of {0} is reached")]
    LimitExceeded(usize),
    #[error("the state directory {path} cannot be used: {reason}")]
    StateDir { path: PathBuf, reason: String },
    /// The file system holding the database is full (`SQLITE_FULL`): the transaction was rolled
    /// back whole. Freeing space is enough; nothing needs a restart.
    #[error("the disk holding the database is full; nothing of this write was kept ({0})")]
    DiskFull(String),
    /// The database cannot be written: a read-only file system or an I/O error
    /// (`SQLITE_READONLY`, `SQLITE_IOERR`). The transaction was rolled back whole.
    #[error(
        "the database cannot be written (read-only file system or I/O error); nothing of this write was kept ({0})"
    )]
    Unwritable(String),
    #[error("database error: {0}")]
    Db(sqlx::Error),
    /// A database error on the engine's direct path (see `raw`), as SQLite worded it.
    #[error("database error: {0}")]
    Raw(String),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A grouped write was not committed (the batch's commit failed, or the store closed).
    #[error("database write not committed: {0}")]
    Commit(String),
}

impl From<sqlx::Error> for StoreError {
    /// Storage failures get their own variants, so the API and the log can say what to do.
    fn from(e: sqlx::Error) -> Self {
        let primary = match &e {
            sqlx::Error::Database(db) => db.code().and_then(|c| c.parse::<i32>().ok()).map(|c| c & 0xff),
            _ => None,
        };
        match primary {
            Some(SQLITE_FULL) => StoreError::DiskFull(e.to_string()),
            Some(SQLITE_READONLY | SQLITE_IOERR) => StoreError::Unwritable(e.to_string()),
            _ => StoreError::Db(e),
        }
    }
}

const SQLITE_READONLY: i32 = 8;
const SQLITE_IOERR: i32 = 10;
const SQLITE_FULL: i32 = 13;

impl StoreError {
    /// Whether the storage (disk full, read-only, I/O) failed rather than the request.
    pub fn is_storage(&self) -> bool {
        matches!(self, StoreError::DiskFull(_) | StoreError::Unwritable(_) | StoreError::StateDir { .. })
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
pub type Tx = Transaction<'static, Sqlite>;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The database file name inside `state_dir`.
pub const DB_FILE: &str = "preloadd.db";

/// The database: a pool of readers, and one writer connection that every write transaction
/// takes in turn (FIFO, no busy-wait sleeps), either directly ([`Store::write`]) or through the
/// group committer ([`Store::grouped`]).
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
    writer: SqlitePool,
    group: tokio::sync::mpsc::UnboundedSender<group::GroupOp>,
    /// Counts slices withdrawn unsent (a plan changed or stopped between the take and the due
    /// instant): a worker about to send checks the database only when it moved (see
    /// [`Store::withdrawals`]).
    withdrawals: std::sync::Arc<std::sync::atomic::AtomicU64>,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the database in `state_dir`, runs migrations and checks the
    /// pragmas took effect.
    pub async fn open_dir(state_dir: &Path) -> Result<Store> {
        prepare_state_dir(state_dir)?;
        Self::open_file(&state_dir.join(DB_FILE)).await
    }

    /// Opens the database at `database_url` (`sqlite://PATH`) when given, else in `state_dir`.
    pub async fn open(state_dir: &Path, database_url: Option<&str>) -> Result<Store> {
        match database_url {
            Some(url) => {
                let path = url
                    .strip_prefix("sqlite://")
                    .or_else(|| url.strip_prefix("sqlite:"))
                    .ok_or_else(|| StoreError::Conflict(format!("database_url `{url}` is not a sqlite:// URL")))?;
                let path = PathBuf::from(path);
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    prepare_state_dir(dir)?;
                }
                Self::open_file(&path).await
            }
            None => Self::open_dir(state_dir).await,
        }
    }

    pub async fn open_file(path: &Path) -> Result<Store> {
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            .pragma("temp_store", "memory")
            // Checkpoints run beside the writer (see `checkpointer`), never inside a commit.
            .pragma("wal_autocheckpoint", "0");
        let open_error = |e: sqlx::Error| StoreError::StateDir { path: path.to_path_buf(), reason: explain(&e) };
        // One writer connection: SQLite has one writer anyway, and waiting in the pool's FIFO
        // queue wakes a writer the moment the previous one commits, where SQLite's busy handler
        // would sleep and poll. A long write (a ten-million-URL upload) is waited for.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(300))
            // A transaction SQLite rolled back by itself (disk full) leaves sqlx's connection
            // unusable for the next `BEGIN`: such a connection is closed, and a new one opened.
            .after_release(|conn, _| Box::pin(async move { Ok(still_usable(conn).await) }))
            .connect_with(options.clone())
            .await
            .map_err(open_error)?;
        MIGRATOR.run(&writer).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(db) => open_error(db),
            other => StoreError::Migrate(other),
        })?;
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            .connect_with(options)
            .await
            .map_err(open_error)?;
        let group = group::start(writer.clone());
        tokio::spawn(checkpointer(pool.clone(), wal_path(path)));
        let store = Store { pool, writer, group, withdrawals: Default::default(), path: path.to_path_buf() };
        store.check_pragmas().await?;
        Ok(store)
    }

    async fn check_pragmas(&self) -> Result<()> {
        self.check_pragmas_of(&self.pool).await?;
        self.check_pragmas_of(&self.writer).await
    }

    async fn check_pragmas_of(&self, pool: &SqlitePool) -> Result<()> {
        let mut conn = pool.acquire().await?;
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&mut *conn).await?;
        let sync: i64 = sqlx::query_scalar("PRAGMA synchronous").fetch_one(&mut *conn).await?;
        let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys").fetch_one(&mut *conn).await?;
        if journal != "wal" || sync != 2 || fk != 1 {
            return Err(StoreError::Conflict(format!(
                "SQLite pragmas did not take effect (journal_mode={journal}, synchronous={sync}, foreign_keys={fk})"
            )));
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Starts a write transaction with `BEGIN IMMEDIATE`.
    pub async fn write(&self) -> Result<Tx> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// How many slices were withdrawn unsent so far (counted before the withdrawal commits). A
    /// worker that took a slice ahead of time and finds this unchanged at its due instant knows
    /// the slice was not withdrawn, without a query.
    pub fn withdrawals(&self) -> u64 {
        self.withdrawals.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Proves the database is writable (for `/readyz`): a write transaction that changes nothing.
    pub async fn check_writable(&self) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query("UPDATE jobs SET id = id WHERE 0").execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// `PRAGMA integrity_check`; `Ok(())` when the answer is `ok`.
    pub async fn integrity_check(&self) -> Result<()> {
        let rows: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check").fetch_all(&self.pool).await?;
        if rows.len() == 1 && rows[0] == "ok" {
            Ok(())
        } else {
            Err(StoreError::Conflict(format!("integrity check failed: {}", rows.join("; "))))
        }
    }

    /// An online copy of the database (`VACUUM INTO`), safe while the daemon runs.
    pub async fn backup_to(&self, dest: &Path) -> Result<()> {
        if dest.exists() {
            return Err(StoreError::Conflict(format!("{} already exists", dest.display())));
        }
        sqlx::query("VACUUM INTO ?").bind(dest.to_string_lossy().into_owned()).execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
        self.writer.close().await;
    }
}

/// The write-ahead log beside the database file.
fn wal_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// WAL size past which the checkpointer copies it into the database (SQLite's own default is
/// 1,000 pages, about 4 MiB).
const CHECKPOINT_WAL_BYTES: u64 = 4 << 20;

/// Moves the write-ahead log into the database file from a reader connection, beside the
/// writer. SQLite's automatic checkpoint would run inside whichever commit crosses the limit
/// and stall every writer behind it for the database file's fsync (hundreds of milliseconds
/// under load); a passive checkpoint here never blocks the writer. Looks every two seconds (one
/// `stat`), and ends when the store is closed.
async fn checkpointer(readers: SqlitePool, wal: PathBuf) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The WAL file keeps its size after a checkpoint (SQLite reuses it from the start), so its
    // size alone would mean a checkpoint every turn of an idle daemon: only a WAL written since
    // the last checkpoint counts.
    let mut checkpointed: Option<std::time::SystemTime> = None;
    loop {
        tick.tick().await;
        if readers.is_closed() {
            return;
        }
        let written = std::fs::metadata(&wal)
            .ok()
            .filter(|m| m.len() > CHECKPOINT_WAL_BYTES)
            .and_then(|m| m.modified().ok())
            .filter(|t| Some(*t) != checkpointed);
        if let Some(modified) = written {
            checkpointed = Some(modified);
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&readers).await {
                if !readers.is_closed() {
                    tracing::warn!(error = %e, "WAL checkpoint failed; will retry");
                }
                checkpointed = None;
            }
        }
    }
}

/// Whether a connection going back to the pool can take the next transaction.
///
/// A write that fails with `SQLITE_FULL` or an I/O error (a full disk) may make SQLite roll the
/// whole transaction back by itself; sqlx's own ROLLBACK then fails and it goes on counting the
/// connection as inside a transaction, so every later `BEGIN IMMEDIATE` on it would fail
/// ("attempted to call begin_with at non-zero transaction depth") long after space is freed.
/// Such a connection is closed (which rolls back anything left) and the pool opens a new one.
async fn still_usable(conn: &mut sqlx::SqliteConnection) -> bool {
    use sqlx::Connection;
    // A dropped transaction's rollback is queued on the connection: let it run first.
    if conn.ping().await.is_err() {
        return false;
    }
    if conn.is_in_transaction() {
        tracing::warn!("closing a database connection left inside a failed transaction");
        return false;
    }
    true
}

/// Creates `dir` if missing and proves it is writable, with a message that says what to fix.
fn prepare_state_dir(dir: &Path) -> Result<()> {
    let fail = |reason: String| StoreError::StateDir { path: dir.to_path_buf(), reason };
    std::fs::create_dir_all(dir).map_err(|e| fail(format!("cannot create it: {e}")))?;
    let probe = dir.join(".preloadd-write-test");
    std::fs::write(&probe, b"ok").map_err(|e| fail(format!("cannot write in it: {e}")))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// A database error at open, with what to do about it: a damaged file is restored from a
/// backup, never silently recreated (that would lose every job and its history).
fn explain(e: &sqlx::Error) -> String {
    let text = e.to_string();
    let lower = text.to_ascii_lowercase();
    if lower.contains("not a database") || lower.contains("malformed") || lower.contains("corrupt") {
        format!(
            "{text}: the database file is damaged. Stop the daemon, move the file (and its -wal and -shm) \
             aside, and restore the latest copy made with `preloadd backup`; see README, Operations"
        )
    } else if lower.contains("locked") || lower.contains("busy") {
        format!("{text}: another process holds the database; is a second preloadd running on the same state_dir?")
    } else {
        text
    }
}

/// Maps "no row" to [`StoreError::NotFound`].
fn found<T>(row: Option<T>) -> Result<T> {
    row.ok_or(StoreError::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_transaction_sqlite_ended_by_itself_does_not_poison_the_pool() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_dir(dir.path()).await.unwrap();
        for _ in 0..3 {
            let mut tx = store.write().await.unwrap();
            // What SQLITE_FULL at COMMIT does on a full disk: SQLite ends the transaction
            // itself, the COMMIT fails, and sqlx still counts the transaction as open.
            sqlx::query("ROLLBACK").execute(&mut *tx).await.unwrap();
            assert!(tx.commit().await.is_err());
        }
        // Every connection the pool hands out again can begin a write transaction.
        for _ in 0..8 {
            store.check_writable().await.expect("no connection stuck inside a transaction");
        }
    }

    #[tokio::test]
    async fn storage_failures_are_told_apart_from_other_database_errors() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_dir(dir.path()).await.unwrap();
        let mut conn = store.pool().acquire().await.unwrap();
        // SQLITE_READONLY, as a read-only file system gives.
        sqlx::query("PRAGMA query_only = 1").execute(&mut *conn).await.unwrap();
        let e = sqlx::query("CREATE TABLE t (x)").execute(&mut *conn).await.unwrap_err();
        let e = StoreError::from(e);
        assert!(matches!(e, StoreError::Unwritable(_)) && e.is_storage(), "{e:?}");
        assert!(e.to_string().contains("cannot be written"), "{e}");
        // SQLITE_FULL, as a full disk gives.
        sqlx::query("PRAGMA query_only = 0").execute(&mut *conn).await.unwrap();
        let pages: i64 = sqlx::query_scalar("PRAGMA page_count").fetch_one(&mut *conn).await.unwrap();
        sqlx::query(&format!("PRAGMA max_page_count = {pages}")).execute(&mut *conn).await.unwrap();
        let e = sqlx::query("CREATE TABLE t (x); INSERT INTO t SELECT zeroblob(100000)")
            .execute(&mut *conn)
            .await
            .unwrap_err();
        let e = StoreError::from(e);
        assert!(matches!(e, StoreError::DiskFull(_)) && e.is_storage(), "{e:?}");
        assert!(e.to_string().contains("disk holding the database is full"), "{e}");
        conn.close().await.unwrap();
        let e = StoreError::from(sqlx::Error::RowNotFound);
        assert!(matches!(e, StoreError::Db(_)) && !e.is_storage(), "{e:?}");
    }
}
