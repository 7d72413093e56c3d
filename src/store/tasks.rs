//! The task view of slices (seed 001, ListContentTasks): filters, paging, subtasks, and totals
//! summed from per-minute counts (`slice_minutes`, migration 0008).

use std::collections::HashMap;

use sqlx::{Row, SqliteConnection};

use super::work::{slice_from_row, subtask_from_row, SUBTASK_COLS};
use super::{Result, Slice, Store, Subtask};

/// Filters of `GET /v1/tasks`. Times are unix milliseconds, already defaulted by the caller.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    pub task_id: Option<i64>,
    pub task_type: Option<String>,
    pub start_ms: i64,
    pub end_ms: i64,
    pub domain: Option<String>,
    pub url: Option<String>,
    /// `executing` or `done`.
    pub status: Option<String>,
    pub offset: i64,
    pub limit: i64,
}

/// A slice with its job's task type, its subtasks and its URLs.
#[derive(Debug, Clone)]
pub struct TaskView {
    pub slice: Slice,
    pub task_type: String,
    pub subtasks: Vec<Subtask>,
    pub urls: Vec<String>,
}

/// Width of a `slice_minutes` bucket (migration 0008).
const MINUTE_MS: i64 = 60_000;

/// The slices holding a URL (`?`) created in a window (`?`, `?`), as `s2.id`, from indexes only:
/// the URL's (job, seq) pairs from (job_id, url), one probe per job, then the slices holding
/// that seq from (job_id, first_seq, last_seq, created_at). CROSS JOIN fixes that order: left to
/// itself the planner scans the whole (job_id, url) index for the URL, or every slice.
const URL_SLICES: &str = "SELECT s2.id FROM jobs jj CROSS JOIN urls u ON u.job_id = jj.id AND u.url = ? \
     CROSS JOIN slices s2 ON s2.job_id = u.job_id AND s2.first_seq <= u.seq AND s2.first_seq > u.seq - jj.max_slice \
     AND s2.last_seq >= u.seq AND s2.created_at >= ? AND s2.created_at < ?";

/// Only a URL (and the window) filters: counted and paged from [`URL_SLICES`] alone.
fn url_only(f: &TaskFilter) -> bool {
    f.url.is_some() && f.task_id.is_none() && f.task_type.is_none() && f.status.is_none() && f.domain.is_none()
}

fn bind_url_slices<'q>(q: Query<'q>, f: &TaskFilter) -> Query<'q> {
    q.bind(f.url.clone().unwrap_or_default()).bind(f.start_ms).bind(f.end_ms)
}

impl Store {
    pub async fn list_tasks(&self, f: &TaskFilter) -> Result<(Vec<TaskView>, i64)> {
        let filter = where_clause(f);
        // One read transaction: the total and the page come from the same snapshot, and the
        // request takes a pool connection once instead of once per query (under many clients
        // every acquisition waits in the pool's queue again).
        let mut tx = self.pool().begin().await?;
        let total = count_tasks(&mut tx, f, &filter).await?;
        let cols = "SELECT s.id, s.plan_id, s.job_id, s.k, s.due_at, s.first_seq, s.last_seq, s.url_count, s.status, \
                    s.created_at, s.recorded_at, s.done_at, (SELECT task_type FROM jobs WHERE id = s.job_id) AS task_type";
        let rows = if url_only(f) {
            // The page is cut from the URL's slices inside the index; only its rows are read.
            let sql = format!(
                "{cols} FROM slices s WHERE s.id IN ({URL_SLICES} ORDER BY s2.created_at DESC, s2.id DESC LIMIT {} OFFSET {}) \
                 ORDER BY s.created_at DESC, s.id DESC",
                f.limit, f.offset
            );
            bind_url_slices(sqlx::query(&sql), f).fetch_all(&mut *tx).await?
        } else {
            let sql =
                format!("{cols}{filter} ORDER BY s.created_at DESC, s.id DESC LIMIT {} OFFSET {}", f.limit, f.offset);
            bind_filter(sqlx::query(&sql), f).fetch_all(&mut *tx).await?
        };
        let mut out: Vec<TaskView> = rows
            .iter()
            .map(|r| TaskView {
                task_type: r.get("task_type"),
                slice: slice_from_row(r),
                subtasks: Vec::new(),
                urls: Vec::new(),
            })
            .collect();
        if !out.is_empty() {
            // Every subtask of the page in one query.
            let marks = vec!["?"; out.len()].join(", ");
            let sql = format!("SELECT {SUBTASK_COLS} FROM subtasks WHERE slice_id IN ({marks}) ORDER BY slice_id, id");
            let mut q = sqlx::query(&sql);
            for t in &out {
                q = q.bind(t.slice.id);
            }
            let mut by_slice: HashMap<i64, Vec<Subtask>> = HashMap::new();
            for r in q.fetch_all(&mut *tx).await? {
                let st = subtask_from_row(&r);
                by_slice.entry(st.slice_id).or_default().push(st);
            }
            for t in &mut out {
                t.subtasks = by_slice.remove(&t.slice.id).unwrap_or_default();
            }
        }
        for t in &mut out {
            t.urls = sqlx::query_scalar("SELECT url FROM urls WHERE job_id = ? AND seq >= ? ORDER BY seq LIMIT ?")
                .bind(t.slice.job_id)
                .bind(t.slice.first_seq)
                .bind(t.slice.url_count)
                .fetch_all(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok((out, total))
    }
}

/// ` FROM slices s WHERE …` for the filter; its placeholders are bound by [`bind_filter`].
fn where_clause(f: &TaskFilter) -> String {
    // Only `slices` is scanned: every filter is a condition on it (or a sub-select the planner
    // runs once), so the created_at and status indexes carry the range and the ordering.
    let mut filter = String::from(" FROM slices s WHERE s.created_at >= ? AND s.created_at < ?");
    if f.task_id.is_some() {
        filter.push_str(" AND s.id = ?");
    }
    if f.task_type.is_some() {
        // `+` keeps the planner on the created_at index (there are few jobs, many slices).
        filter.push_str(" AND +s.job_id IN (SELECT id FROM jobs WHERE task_type = ?)");
    }
    match f.status.as_deref() {
        Some("executing") => filter.push_str(" AND s.status IN ('pending', 'submitting', 'submitted')"),
        Some("done") => filter.push_str(" AND s.status IN ('done', 'failed')"),
        _ => {}
    }
    if f.url.is_some() {
        filter.push_str(&format!(" AND s.id IN ({URL_SLICES})"));
    }
    if f.domain.is_some() {
        filter.push_str(
            " AND EXISTS (SELECT 1 FROM urls u WHERE u.job_id = s.job_id AND u.seq BETWEEN s.first_seq AND s.last_seq \
             AND (u.url LIKE ? OR u.url LIKE ? OR u.url = ? OR u.url = ? OR u.url LIKE ? OR u.url LIKE ?))",
        );
    }
    filter
}

/// The number of slices the filter selects. Filtered by time, task type and status only (the
/// default listing and its common variants), the whole minutes of the window are summed from
/// `slice_minutes`, which triggers keep exact, and only the partial minutes at both edges are
/// counted in `slices`: a day of a million slices costs a few thousand index entries instead
/// of a million. Any other filter is selective and counted directly.
async fn count_tasks(conn: &mut SqliteConnection, f: &TaskFilter, filter: &str) -> Result<i64> {
    // Buckets hold created_at / 60000 (SQLite truncates): whole minutes from the first one that
    // starts at or after the window's start to the last one that ends at or before its end.
    let (first, last) = ((f.start_ms + MINUTE_MS - 1).div_euclid(MINUTE_MS), f.end_ms.div_euclid(MINUTE_MS));
    let summable = f.task_id.is_none() && f.url.is_none() && f.domain.is_none() && f.start_ms > 0 && first < last;
    if url_only(f) {
        let sql = format!("SELECT COUNT(*) FROM ({URL_SLICES})");
        return Ok(bind_url_slices(sqlx::query(&sql), f).fetch_one(&mut *conn).await?.get(0));
    }
    let count_sql = format!("SELECT COUNT(*){filter}");
    if !summable {
        return Ok(bind_filter(sqlx::query(&count_sql), f).fetch_one(&mut *conn).await?.get(0));
    }
    let mut sql = String::from("SELECT COALESCE(SUM(n), 0) FROM slice_minutes WHERE minute >= ? AND minute < ?");
    if f.task_type.is_some() {
        sql.push_str(" AND task_type = ?");
    }
    let done = match f.status.as_deref() {
        Some("executing") => Some(0),
        Some("done") => Some(1),
        _ => None,
    };
    if done.is_some() {
        sql.push_str(" AND done = ?");
    }
    let mut q = sqlx::query_scalar::<_, i64>(&sql).bind(first).bind(last);
    if let Some(t) = &f.task_type {
        q = q.bind(t.clone());
    }
    if let Some(d) = done {
        q = q.bind(d);
    }
    let mut total = q.fetch_one(&mut *conn).await?;
    // The edges carry the same filters, so `filter` (which depends on which filters are set,
    // not on their values) is their WHERE clause too.
    for (start_ms, end_ms) in [(f.start_ms, first * MINUTE_MS), (last * MINUTE_MS, f.end_ms)] {
        let edge = TaskFilter { start_ms, end_ms, ..f.clone() };
        total += bind_filter(sqlx::query(&count_sql), &edge).fetch_one(&mut *conn).await?.get::<i64, _>(0);
    }
    Ok(total)
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

/// Binds the filter's values in the order `list_tasks` wrote their placeholders.
fn bind_filter<'q>(q: Query<'q>, f: &TaskFilter) -> Query<'q> {
    let mut q = q.bind(f.start_ms).bind(f.end_ms);
    if let Some(id) = f.task_id {
        q = q.bind(id);
    }
    if let Some(t) = &f.task_type {
        q = q.bind(t.clone());
    }
    if let Some(u) = &f.url {
        q = q.bind(u.clone()).bind(f.start_ms).bind(f.end_ms);
    }
    if let Some(d) = &f.domain {
        let d = d.to_ascii_lowercase();
        for pattern in ["http://{d}/%", "https://{d}/%", "http://{d}", "https://{d}", "http://{d}:%", "https://{d}:%"] {
            q = q.bind(pattern.replace("{d}", &d));
        }
    }
    q
}
