//! The task view of slices (seed 001, ListContentTasks): filters, paging, subtasks.

use sqlx::Row;

use super::work::{slice_from_row, subtask_from_row};
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

impl Store {
    pub async fn list_tasks(&self, f: &TaskFilter) -> Result<(Vec<TaskView>, i64)> {
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
            // The URL's (job, seq) pairs come from the (job_id, url) index, one probe per job; then
            // the slices holding that seq from (job_id, first_seq).
            filter.push_str(
                " AND s.id IN (SELECT s2.id FROM jobs jj JOIN urls u ON u.job_id = jj.id AND u.url = ? \
                 JOIN slices s2 ON s2.job_id = u.job_id AND s2.first_seq <= u.seq AND s2.first_seq > u.seq - jj.max_slice \
                 AND s2.last_seq >= u.seq)",
            );
        }
        if f.domain.is_some() {
            filter.push_str(
                " AND EXISTS (SELECT 1 FROM urls u WHERE u.job_id = s.job_id AND u.seq BETWEEN s.first_seq AND s.last_seq \
                 AND (u.url LIKE ? OR u.url LIKE ? OR u.url = ? OR u.url = ? OR u.url LIKE ? OR u.url LIKE ?))",
            );
        }
        let count_sql = format!("SELECT COUNT(*){filter}");
        let total: i64 = bind_filter(sqlx::query(&count_sql), f).fetch_one(self.pool()).await?.get(0);
        let rows_sql = format!(
            "SELECT s.id, s.plan_id, s.job_id, s.k, s.due_at, s.first_seq, s.last_seq, s.url_count, s.status, s.created_at, \
             s.recorded_at, s.done_at, (SELECT task_type FROM jobs WHERE id = s.job_id) AS task_type{filter} ORDER BY s.created_at DESC, s.id DESC LIMIT {} OFFSET {}",
            f.limit, f.offset
        );
        let rows = bind_filter(sqlx::query(&rows_sql), f).fetch_all(self.pool()).await?;
        let mut out = Vec::new();
        for r in &rows {
            let slice = slice_from_row(r);
            let subtasks = sqlx::query(
                "SELECT id, slice_id, vendor, status, urls_sent, vendor_task_ids, attempts, error_code, error_message, \
                 submitting_at, submitted_at, done_at, next_poll_at, wait_until, wait_reason FROM subtasks WHERE slice_id = ? ORDER BY id",
            )
            .bind(slice.id)
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(subtask_from_row)
            .collect();
            let urls = self
                .job_urls(slice.job_id, slice.first_seq, slice.url_count)
                .await?
                .into_iter()
                .map(|(_, u)| u)
                .collect();
            out.push(TaskView { task_type: r.get("task_type"), slice, subtasks, urls });
        }
        Ok((out, total))
    }
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
        q = q.bind(u.clone());
    }
    if let Some(d) = &f.domain {
        let d = d.to_ascii_lowercase();
        for pattern in ["http://{d}/%", "https://{d}/%", "http://{d}", "https://{d}", "http://{d}:%", "https://{d}:%"] {
            q = q.bind(pattern.replace("{d}", &d));
        }
    }
    q
}
