//! The durable slice state machine: slices, subtasks and per-URL outcomes — their types, the
//! engine loop's reads, and the withdrawal of a slice taken ahead. Its writes are in `steps`.
//!
//! Architecture Invariant: a slice claims its URLs (the job's cursor moves past them) in the same
//! transaction that records it, so a URL is always either before the cursor inside a recorded
//! slice, or after the cursor; no crash can lose one. A job has at most one slice that is not
//! yet recorded by every vendor, which keeps URLs in order and makes "the slice in flight" a
//! single, well-defined thing.

use sqlx::sqlite::SqliteConnection;
use sqlx::Row;

use super::{found, Result, Store};
use crate::model::{CatchUp, PlanStatus, SubmitStatus, TaskType, UrlStatus};

#[derive(Debug, Clone, PartialEq)]
pub struct Slice {
    pub id: i64,
    pub plan_id: i64,
    pub job_id: i64,
    pub k: i64,
    pub due_at: i64,
    pub first_seq: i64,
    pub last_seq: i64,
    pub url_count: i64,
    pub status: SubmitStatus,
    pub created_at: i64,
    pub recorded_at: Option<i64>,
    pub done_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Subtask {
    pub id: i64,
    pub slice_id: i64,
    pub vendor: String,
    pub status: SubmitStatus,
    pub urls_sent: i64,
    pub vendor_task_ids: Vec<String>,
    pub attempts: i64,
    pub error_code: String,
    pub error_message: String,
    pub submitting_at: Option<i64>,
    pub submitted_at: Option<i64>,
    pub done_at: Option<i64>,
    pub next_poll_at: Option<i64>,
    pub wait_until: Option<i64>,
    pub wait_reason: String,
}

/// Everything a worker needs to submit or poll one subtask.
#[derive(Debug, Clone)]
pub struct SubtaskWork {
    pub subtask: Subtask,
    pub slice: Slice,
    pub job_name: String,
    pub task_type: TaskType,
    /// The slice's URLs with their sequence numbers, in order.
    pub urls: Vec<(i64, String)>,
}

/// A slice just taken by [`Store::take_slice`] or [`Store::take_slices_marking`].
#[derive(Debug, Clone)]
pub struct SliceStart {
    pub slice: Slice,
    pub subtask_ids: Vec<i64>,
    /// Each subtask as a worker needs it, as recorded by the take.
    pub work: Vec<SubtaskWork>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UrlOutcome {
    pub seq: i64,
    pub url: String,
    pub status: UrlStatus,
    pub detail: String,
}

const SLICE_COLS: &str =
    "id, plan_id, job_id, k, due_at, first_seq, last_seq, url_count, status, created_at, recorded_at, done_at";
pub(super) const SUBTASK_COLS: &str =
    "id, slice_id, vendor, status, urls_sent, vendor_task_ids, attempts, error_code, error_message, \
     submitting_at, submitted_at, done_at, next_poll_at, wait_until, wait_reason";

fn status_of(s: String) -> SubmitStatus {
    s.parse().unwrap_or(SubmitStatus::Failed)
}

pub(super) fn slice_from_row(r: &sqlx::sqlite::SqliteRow) -> Slice {
    Slice {
        id: r.get("id"),
        plan_id: r.get("plan_id"),
        job_id: r.get("job_id"),
        k: r.get("k"),
        due_at: r.get("due_at"),
        first_seq: r.get("first_seq"),
        last_seq: r.get("last_seq"),
        url_count: r.get("url_count"),
        status: status_of(r.get("status")),
        created_at: r.get("created_at"),
        recorded_at: r.get("recorded_at"),
        done_at: r.get("done_at"),
    }
}

pub(super) fn subtask_from_row(r: &sqlx::sqlite::SqliteRow) -> Subtask {
    Subtask {
        id: r.get("id"),
        slice_id: r.get("slice_id"),
        vendor: r.get("vendor"),
        status: status_of(r.get("status")),
        urls_sent: r.get("urls_sent"),
        vendor_task_ids: serde_json::from_str(&r.get::<String, _>("vendor_task_ids")).unwrap_or_default(),
        attempts: r.get("attempts"),
        error_code: r.get("error_code"),
        error_message: r.get("error_message"),
        submitting_at: r.get("submitting_at"),
        submitted_at: r.get("submitted_at"),
        done_at: r.get("done_at"),
        next_poll_at: r.get("next_poll_at"),
        wait_until: r.get("wait_until"),
        wait_reason: r.get("wait_reason"),
    }
}

/// When the slice after one due at `due` goes: on the grid, unless the grid point has already
/// passed (downtime, a slow vendor) — then one interval from now, so missed slices are not
/// burst out (DESIGN.md semantics 5) unless the job opted into `catch_up = "burst"`.
pub fn next_due_after(due: i64, interval_ms: i64, now: i64, catch_up: CatchUp) -> i64 {
    let on_grid = due + interval_ms;
    if catch_up == CatchUp::Burst || on_grid > now {
        on_grid
    } else {
        now + interval_ms
    }
}

impl Store {
    /// Moves waiting plans whose start has come to running, and closes plans whose window has
    /// passed. Returns the ids of plans that changed status.
    pub async fn advance_plans(&self, now: i64) -> Result<Vec<(i64, PlanStatus)>> {
        self.advance_plans_until(now, now).await
    }

    /// [`Store::advance_plans`], starting plans whose start is at most `horizon`: the engine
    /// prepares a plan's first slice a moment ahead, so that its request leaves on time.
    pub async fn advance_plans_until(&self, now: i64, horizon: i64) -> Result<Vec<(i64, PlanStatus)>> {
        // Asked on every turn of the engine loop: a read (two index seeks) first, the write
        // transaction only when some plan changes.
        let changes: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM plans WHERE status = 'running' AND end_time <= ?) \
             OR EXISTS (SELECT 1 FROM plans WHERE status = 'waiting' AND (start_time <= ? OR end_time <= ?))",
        )
        .bind(now)
        .bind(horizon)
        .bind(now)
        .fetch_one(self.pool())
        .await?;
        if !changes {
            return Ok(Vec::new());
        }
        let mut tx = self.write().await?;
        let closed: Vec<i64> = sqlx::query_scalar(
            "UPDATE plans SET status = 'finished', next_due = NULL, updated_at = ? \
             WHERE status IN ('waiting', 'running') AND end_time <= ? RETURNING id",
        )
        .bind(now)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        let started: Vec<i64> = sqlx::query_scalar(
            "UPDATE plans SET status = 'running', next_due = start_time, updated_at = ? \
             WHERE status = 'waiting' AND start_time <= ? RETURNING id",
        )
        .bind(now)
        .bind(horizon)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(closed
            .into_iter()
            .map(|id| (id, PlanStatus::Finished))
            .chain(started.into_iter().map(|id| (id, PlanStatus::Running)))
            .collect())
    }

    /// Running plans with a slice due and no slice of their job still in flight.
    pub async fn due_plans(&self, now: i64) -> Result<Vec<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT p.id FROM plans p WHERE p.status = 'running' AND p.next_due <= ? AND NOT EXISTS \
             (SELECT 1 FROM slices s WHERE s.job_id = p.job_id AND s.status IN ('pending', 'submitting')) \
             ORDER BY p.next_due",
        )
        .bind(now)
        .fetch_all(self.pool())
        .await?)
    }

    /// The earliest instant after which there may be engine work: a plan starting or closing, a
    /// slice due, a paused subtask resuming, a poll due.
    pub async fn next_wake(&self) -> Result<Option<i64>> {
        // Each part is one index seek (ORDER BY … LIMIT 1 on an index), whatever the number of
        // plans: the loop asks this on every turn.
        Ok(sqlx::query_scalar(
            "SELECT MIN(t) FROM ( \
               SELECT (SELECT start_time FROM plans WHERE status = 'waiting' ORDER BY start_time LIMIT 1) AS t \
               UNION ALL SELECT (SELECT end_time FROM plans WHERE status = 'running' ORDER BY end_time LIMIT 1) \
               UNION ALL SELECT (SELECT next_due FROM plans p WHERE status = 'running' AND next_due IS NOT NULL \
                 AND NOT EXISTS (SELECT 1 FROM slices s WHERE s.job_id = p.job_id AND s.status IN ('pending', 'submitting')) \
                 ORDER BY next_due LIMIT 1) \
               UNION ALL SELECT (SELECT MIN(COALESCE(wait_until, 0)) FROM subtasks WHERE status = 'pending') \
               UNION ALL SELECT (SELECT next_poll_at FROM subtasks WHERE status = 'submitted' AND next_poll_at IS NOT NULL \
                 ORDER BY next_poll_at LIMIT 1) \
               UNION ALL SELECT (SELECT next_fire FROM schedules WHERE enabled = 1 AND next_fire IS NOT NULL \
                 ORDER BY next_fire LIMIT 1))",
        )
        .fetch_one(self.pool())
        .await?)
    }

    /// Pending subtasks that may go now (not paused by a quota wait or a backoff).
    pub async fn runnable_subtasks(&self, now: i64) -> Result<Vec<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM subtasks WHERE status = 'pending' AND COALESCE(wait_until, 0) <= ? ORDER BY id",
        )
        .bind(now)
        .fetch_all(self.pool())
        .await?)
    }

    /// Subtasks left `submitting` by a crash: they need reconciliation before anything else.
    pub async fn submitting_subtasks(&self) -> Result<Vec<i64>> {
        Ok(sqlx::query_scalar("SELECT id FROM subtasks WHERE status = 'submitting' ORDER BY id")
            .fetch_all(self.pool())
            .await?)
    }

    /// Submitted subtasks whose next status poll is due.
    pub async fn pollable_subtasks(&self, now: i64) -> Result<Vec<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM subtasks WHERE status = 'submitted' AND next_poll_at <= ? ORDER BY next_poll_at",
        )
        .bind(now)
        .fetch_all(self.pool())
        .await?)
    }

    pub async fn subtask(&self, id: i64) -> Result<Subtask> {
        let row = sqlx::query(&format!("SELECT {SUBTASK_COLS} FROM subtasks WHERE id = ?"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        found(row.as_ref().map(subtask_from_row))
    }

    pub async fn subtasks_of_slice(&self, slice_id: i64) -> Result<Vec<Subtask>> {
        let rows = sqlx::query(&format!("SELECT {SUBTASK_COLS} FROM subtasks WHERE slice_id = ? ORDER BY id"))
            .bind(slice_id)
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(subtask_from_row).collect())
    }

    pub async fn slices_of_plan(&self, plan_id: i64) -> Result<Vec<Slice>> {
        let rows = sqlx::query(&format!("SELECT {SLICE_COLS} FROM slices WHERE plan_id = ? ORDER BY k"))
            .bind(plan_id)
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(slice_from_row).collect())
    }

    pub async fn slices_of_job(&self, job_id: i64) -> Result<Vec<Slice>> {
        let rows = sqlx::query(&format!("SELECT {SLICE_COLS} FROM slices WHERE job_id = ? ORDER BY id"))
            .bind(job_id)
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(slice_from_row).collect())
    }

    /// Whether subtask `id` still belongs to `slice` as taken. A withdrawn slice's rows are
    /// deleted and SQLite may give their ids to the next slice, so the id alone proves nothing.
    pub async fn subtask_still_of(&self, id: i64, slice: &Slice) -> Result<bool> {
        let row: Option<(i64, i64, i64)> = sqlx::query_as(
            "SELECT s.id, s.created_at, s.due_at FROM subtasks st JOIN slices s ON s.id = st.slice_id WHERE st.id = ?",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row == Some((slice.id, slice.created_at, slice.due_at)))
    }

    /// Loads a subtask with its slice, job and URLs.
    pub async fn subtask_work(&self, id: i64) -> Result<SubtaskWork> {
        let subtask = self.subtask(id).await?;
        let cols = SLICE_COLS.split(", ").map(|c| format!("s.{c}")).collect::<Vec<_>>().join(", ");
        let row = sqlx::query(&format!(
            "SELECT {cols}, j.name AS job_name, j.task_type FROM slices s JOIN jobs j ON j.id = s.job_id WHERE s.id = ?"
        ))
        .bind(subtask.slice_id)
        .fetch_one(self.pool())
        .await?;
        let slice = slice_from_row(&row);
        let (job_name, task_type): (String, String) = (row.get("job_name"), row.get("task_type"));
        let urls = sqlx::query("SELECT seq, url FROM urls WHERE job_id = ? AND seq BETWEEN ? AND ? ORDER BY seq")
            .bind(slice.job_id)
            .bind(slice.first_seq)
            .bind(slice.last_seq)
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        Ok(SubtaskWork { subtask, slice, job_name, task_type: task_type.parse().unwrap_or(TaskType::Preload), urls })
    }

    /// Per-URL outcomes of one subtask, in URL order.
    pub async fn outcomes(&self, subtask_id: i64) -> Result<Vec<UrlOutcome>> {
        let rows = sqlx::query(
            "SELECT o.seq, u.url, o.status, o.detail FROM url_outcomes o JOIN subtasks st ON st.id = o.subtask_id \
             JOIN slices s ON s.id = st.slice_id JOIN urls u ON u.job_id = s.job_id AND u.seq = o.seq \
             WHERE o.subtask_id = ? ORDER BY o.seq",
        )
        .bind(subtask_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| UrlOutcome {
                seq: r.get(0),
                url: r.get(1),
                status: r.get::<String, _>(2).parse().unwrap_or(UrlStatus::Unknown),
                detail: r.get(3),
            })
            .collect())
    }
}

/// Takes back a slice of the plan that the engine took ahead of its due time and that has not
/// been sent yet (due after `now`, no request accepted): its rows go, the job's cursor and the
/// plan's counters return to before it. Called when a plan is changed or stopped in the moment
/// between the take and the due instant; the slice's worker finds its subtask gone and sends
/// nothing.
pub(super) async fn withdraw_unsent_slice(conn: &mut SqliteConnection, plan_id: i64, now: i64) -> Result<bool> {
    let slice: Option<(i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT s.id, s.job_id, s.first_seq, s.url_count FROM slices s WHERE s.plan_id = ? AND s.due_at > ? \
         AND s.sent_at IS NULL AND s.status IN ('pending', 'submitting') \
         AND NOT EXISTS (SELECT 1 FROM subtasks st WHERE st.slice_id = s.id AND st.urls_sent > 0)",
    )
    .bind(plan_id)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((slice_id, job_id, first_seq, url_count)) = slice else { return Ok(false) };
    sqlx::query("DELETE FROM url_outcomes WHERE subtask_id IN (SELECT id FROM subtasks WHERE slice_id = ?)")
        .bind(slice_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM subtasks WHERE slice_id = ?").bind(slice_id).execute(&mut *conn).await?;
    sqlx::query("DELETE FROM slices WHERE id = ?").bind(slice_id).execute(&mut *conn).await?;
    sqlx::query("UPDATE jobs SET cursor = MIN(cursor, ?) WHERE id = ?")
        .bind(first_seq)
        .bind(job_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("UPDATE plans SET slices_sent = slices_sent - 1, urls_sent = urls_sent - ? WHERE id = ?")
        .bind(url_count)
        .bind(plan_id)
        .execute(&mut *conn)
        .await?;
    Ok(true)
}

/// Per vendor account progress of a job: what was accepted and how each URL ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VendorProgress {
    pub vendor: String,
    pub urls_accepted: i64,
    pub pending: i64,
    pub done: i64,
    pub failed: i64,
    pub unknown: i64,
    pub subtasks: i64,
    pub subtasks_final: i64,
    pub waiting: String,
}

impl Store {
    pub async fn vendor_progress(&self, job_id: i64) -> Result<Vec<VendorProgress>> {
        let rows = sqlx::query(
            "SELECT st.vendor, SUM(st.urls_sent) AS sent, COUNT(*) AS n, \
             SUM(st.status IN ('done', 'failed')) AS fin, MAX(st.wait_reason) AS waiting \
             FROM subtasks st JOIN slices s ON s.id = st.slice_id WHERE s.job_id = ? GROUP BY st.vendor ORDER BY st.vendor",
        )
        .bind(job_id)
        .fetch_all(self.pool())
        .await?;
        let mut out: Vec<VendorProgress> = rows
            .iter()
            .map(|r| VendorProgress {
                vendor: r.get("vendor"),
                urls_accepted: r.get("sent"),
                subtasks: r.get("n"),
                subtasks_final: r.get("fin"),
                waiting: r.get::<Option<String>, _>("waiting").unwrap_or_default(),
                ..Default::default()
            })
            .collect();
        let outcomes: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT st.vendor, o.status, COUNT(*) FROM url_outcomes o JOIN subtasks st ON st.id = o.subtask_id \
             JOIN slices s ON s.id = st.slice_id WHERE s.job_id = ? GROUP BY st.vendor, o.status",
        )
        .bind(job_id)
        .fetch_all(self.pool())
        .await?;
        for (vendor, status, n) in outcomes {
            if let Some(p) = out.iter_mut().find(|p| p.vendor == vendor) {
                match status.as_str() {
                    "pending" => p.pending = n,
                    "done" => p.done = n,
                    "failed" => p.failed = n,
                    _ => p.unknown = n,
                }
            }
        }
        Ok(out)
    }
}
