//! Jobs and their ordered, de-duplicated URL lists.

use sqlx::{Row, SqliteConnection};

use super::{found, Result, Store, StoreError, Tx};
use crate::model::{CatchUp, JobSource, TaskType};

#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: i64,
    pub name: String,
    pub task_type: TaskType,
    pub vendors: Vec<String>,
    pub source: JobSource,
    pub catch_up: CatchUp,
    pub cursor: i64,
    pub next_seq: i64,
    pub url_count: i64,
    pub rejected_count: i64,
    pub rejected_report: String,
    pub list_digest: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone)]
pub struct NewJob {
    pub name: String,
    pub task_type: TaskType,
    pub vendors: Vec<String>,
    pub source: JobSource,
    pub catch_up: CatchUp,
}

/// Changes to a declarative job found at start or reload.
#[derive(Debug, Clone)]
pub struct JobUpdate {
    pub task_type: TaskType,
    pub vendors: Vec<String>,
    pub catch_up: CatchUp,
}

const JOB_COLS: &str = "id, name, task_type, vendors, source, catch_up, cursor, next_seq, url_count, \
     rejected_count, rejected_report, list_digest, created_at, updated_at";

fn job_from_row(r: &sqlx::sqlite::SqliteRow) -> Job {
    Job {
        id: r.get("id"),
        name: r.get("name"),
        task_type: r.get::<String, _>("task_type").parse().unwrap_or(TaskType::Preload),
        vendors: serde_json::from_str(&r.get::<String, _>("vendors")).unwrap_or_default(),
        source: r.get::<String, _>("source").parse().unwrap_or(JobSource::Api),
        catch_up: r.get::<String, _>("catch_up").parse().unwrap_or(CatchUp::Skip),
        cursor: r.get("cursor"),
        next_seq: r.get("next_seq"),
        url_count: r.get("url_count"),
        rejected_count: r.get("rejected_count"),
        rejected_report: r.get("rejected_report"),
        list_digest: r.get("list_digest"),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
    }
}

/// Rows per multi-row INSERT: SQLite allows 32766 bound variables; 3 per row.
pub const URL_BATCH: usize = 500;

impl Store {
    pub async fn job(&self, id: i64) -> Result<Job> {
        let row = sqlx::query(&format!("SELECT {JOB_COLS} FROM jobs WHERE id = ?"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        found(row.as_ref().map(job_from_row))
    }

    pub async fn job_by_name(&self, name: &str) -> Result<Option<Job>> {
        let row = sqlx::query(&format!("SELECT {JOB_COLS} FROM jobs WHERE name = ?"))
            .bind(name)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(job_from_row))
    }

    /// Jobs ordered by id, optionally filtered by a name substring; with the total count.
    pub async fn list_jobs(&self, name_like: Option<&str>, offset: i64, limit: i64) -> Result<(Vec<Job>, i64)> {
        let pattern = format!("%{}%", name_like.unwrap_or("").replace('%', "\\%").replace('_', "\\_"));
        let rows = sqlx::query(&format!(
            "SELECT {JOB_COLS} FROM jobs WHERE name LIKE ? ESCAPE '\\' ORDER BY id LIMIT ? OFFSET ?"
        ))
        .bind(&pattern)
        .bind(limit)
        .bind(offset)
        .fetch_all(self.pool())
        .await?;
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE name LIKE ? ESCAPE '\\'")
            .bind(&pattern)
            .fetch_one(self.pool())
            .await?;
        Ok((rows.iter().map(job_from_row).collect(), total))
    }

    /// URLs of a job in order, from `seq >= from`, at most `limit`.
    pub async fn job_urls(&self, job_id: i64, from: i64, limit: i64) -> Result<Vec<(i64, String)>> {
        let rows = sqlx::query("SELECT seq, url FROM urls WHERE job_id = ? AND seq >= ? ORDER BY seq LIMIT ?")
            .bind(job_id)
            .bind(from)
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    pub async fn delete_job(&self, id: i64) -> Result<()> {
        let mut tx = self.write().await?;
        // Its slices go too, one taken ahead of its due time included: its worker must look.
        self.withdrawals.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let n = sqlx::query("DELETE FROM jobs WHERE id = ?").bind(id).execute(&mut *tx).await?.rows_affected();
        tx.commit().await?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Puts the job's cursor back to the first URL.
    pub async fn reset_job(&self, id: i64, now: i64) -> Result<()> {
        let mut tx = self.write().await?;
        let n = sqlx::query("UPDATE jobs SET cursor = 0, updated_at = ? WHERE id = ?")
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}

/// Inserts a job row inside `tx`; a taken name is a [`StoreError::Conflict`].
pub async fn insert_job(tx: &mut Tx, new: &NewJob, now: i64) -> Result<i64> {
    let taken: Option<i64> =
        sqlx::query_scalar("SELECT id FROM jobs WHERE name = ?").bind(&new.name).fetch_optional(&mut **tx).await?;
    if taken.is_some() {
        return Err(StoreError::Conflict(format!("a job named `{}` already exists", new.name)));
    }
    let id = sqlx::query(
        "INSERT INTO jobs (name, task_type, vendors, source, catch_up, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&new.name)
    .bind(new.task_type.as_str())
    .bind(serde_json::to_string(&new.vendors).expect("strings serialize"))
    .bind(new.source.as_str())
    .bind(new.catch_up.as_str())
    .bind(now)
    .bind(now)
    .execute(&mut **tx)
    .await?
    .last_insert_rowid();
    Ok(id)
}

/// Appends URLs to a job in order, dropping any the job already has. Returns how many were new.
pub async fn append_urls(conn: &mut SqliteConnection, job_id: i64, urls: &[String]) -> Result<u64> {
    if urls.is_empty() {
        return Ok(0);
    }
    let next_seq: i64 =
        sqlx::query_scalar("SELECT next_seq FROM jobs WHERE id = ?").bind(job_id).fetch_one(&mut *conn).await?;
    let mut inserted = 0;
    for (chunk_no, chunk) in urls.chunks(URL_BATCH).enumerate() {
        let mut sql = String::with_capacity(40 + chunk.len() * 10);
        sql.push_str("INSERT OR IGNORE INTO urls (job_id, seq, url) VALUES ");
        for i in 0..chunk.len() {
            sql.push_str(if i == 0 { "(?,?,?)" } else { ",(?,?,?)" });
        }
        let mut q = sqlx::query(&sql);
        let base = next_seq + (chunk_no * URL_BATCH) as i64;
        for (i, u) in chunk.iter().enumerate() {
            q = q.bind(job_id).bind(base + i as i64).bind(u);
        }
        inserted += q.execute(&mut *conn).await?.rows_affected();
    }
    sqlx::query("UPDATE jobs SET next_seq = next_seq + ?, url_count = url_count + ? WHERE id = ?")
        .bind(urls.len() as i64)
        .bind(inserted as i64)
        .bind(job_id)
        .execute(&mut *conn)
        .await?;
    Ok(inserted)
}

/// Records what was rejected while loading a job's list (adds to earlier counts).
pub async fn add_rejections(tx: &mut Tx, job_id: i64, count: u64, report: &str, digest: Option<&str>) -> Result<()> {
    sqlx::query(
        "UPDATE jobs SET rejected_count = rejected_count + ?, rejected_report = rejected_report || ?, \
         list_digest = COALESCE(?, list_digest) WHERE id = ?",
    )
    .bind(count as i64)
    .bind(report)
    .bind(digest)
    .bind(job_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Replaces a declarative job's list: URLs, counts and cursor start over.
pub async fn clear_urls(tx: &mut Tx, job_id: i64) -> Result<()> {
    sqlx::query("DELETE FROM urls WHERE job_id = ?").bind(job_id).execute(&mut **tx).await?;
    sqlx::query(
        "UPDATE jobs SET cursor = 0, next_seq = 0, url_count = 0, rejected_count = 0, rejected_report = '' WHERE id = ?",
    )
    .bind(job_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn update_job(tx: &mut Tx, job_id: i64, u: &JobUpdate, now: i64) -> Result<()> {
    sqlx::query("UPDATE jobs SET task_type = ?, vendors = ?, catch_up = ?, updated_at = ? WHERE id = ?")
        .bind(u.task_type.as_str())
        .bind(serde_json::to_string(&u.vendors).expect("strings serialize"))
        .bind(u.catch_up.as_str())
        .bind(now)
        .bind(job_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// [`append_urls`] inside a write transaction.
pub async fn append_urls_tx(tx: &mut Tx, job_id: i64, urls: &[String]) -> Result<u64> {
    append_urls(&mut *tx, job_id, urls).await
}

/// A job's id, list digest and source by name, inside `tx`.
pub async fn job_id_by_name(tx: &mut Tx, name: &str) -> Result<Option<(i64, String, String)>> {
    Ok(sqlx::query_as("SELECT id, list_digest, source FROM jobs WHERE name = ?")
        .bind(name)
        .fetch_optional(&mut **tx)
        .await?)
}

impl Store {
    /// URLs of a job at or after its cursor: what its next plans will send.
    pub async fn remaining_urls(&self, job_id: i64) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM urls u JOIN jobs j ON j.id = u.job_id WHERE u.job_id = ? AND u.seq >= j.cursor",
        )
        .bind(job_id)
        .fetch_one(self.pool())
        .await?)
    }

    /// Per vendor account, the URLs whose outcome there was `failed` and never `done` since, in
    /// list order.
    pub async fn failed_urls(&self, job_id: i64) -> Result<Vec<(String, String)>> {
        Ok(sqlx::query_as(
            "SELECT st.vendor, u.url FROM url_outcomes o \
             JOIN subtasks st ON st.id = o.subtask_id JOIN slices s ON s.id = st.slice_id \
             JOIN urls u ON u.job_id = s.job_id AND u.seq = o.seq \
             WHERE s.job_id = ? AND o.status = 'failed' AND NOT EXISTS ( \
               SELECT 1 FROM url_outcomes o2 JOIN subtasks st2 ON st2.id = o2.subtask_id \
               JOIN slices s2 ON s2.id = st2.slice_id \
               WHERE s2.job_id = s.job_id AND st2.vendor = st.vendor AND o2.seq = o.seq AND o2.status = 'done') \
             GROUP BY st.vendor, u.seq ORDER BY st.vendor, u.seq",
        )
        .bind(job_id)
        .fetch_all(self.pool())
        .await?)
    }
}

/// Whether a job has a slice not yet recorded by every vendor (its URLs are still needed).
pub async fn job_in_flight(tx: &mut Tx, job_id: i64) -> Result<bool> {
    let n: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM slices WHERE job_id = ? AND status IN ('pending', 'submitting')")
            .bind(job_id)
            .fetch_one(&mut **tx)
            .await?;
    Ok(n > 0)
}
