//! The durable slice state machine: slices, subtasks and per-URL outcomes.
//!
//! Architecture Invariant: a slice claims its URLs (the job's cursor moves past them) in the same
//! transaction that records it, so a URL is always either before the cursor inside a recorded
//! slice, or after the cursor; no crash can lose one. A job has at most one slice that is not
//! yet recorded by every vendor, which keeps URLs in order and makes "the slice in flight" a
//! single, well-defined thing.

use futures_util::FutureExt;
use sqlx::sqlite::SqliteConnection;
use sqlx::Row;

use super::plans::plan_in;
use super::{found, Result, Store, StoreError, Tx};
use crate::failpoint::failpoint;
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

/// A slice just taken by [`Store::take_slice`].
#[derive(Debug, Clone)]
pub struct SliceStart {
    pub slice: Slice,
    pub subtask_ids: Vec<i64>,
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

async fn subtask_in(conn: &mut SqliteConnection, id: i64) -> Result<Subtask> {
    let row = sqlx::query(&format!("SELECT {SUBTASK_COLS} FROM subtasks WHERE id = ?"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    found(row.as_ref().map(subtask_from_row))
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

    /// Takes the next slice of a running plan whose slice is due: claims the next `slice_len`
    /// URLs at the job's cursor, records the slice with one pending subtask per vendor account
    /// and a pending outcome per URL, and moves the cursor — all in one transaction. A plan with
    /// no URL left, or whose window has closed, is finished instead.
    pub async fn take_slice(&self, plan_id: i64, now: i64) -> Result<Option<SliceStart>> {
        Ok(self.take_slices(&[plan_id], now, now).await?.pop())
    }

    /// [`Store::take_slice`] for several plans in one transaction: one commit (one fsync) for
    /// everything due at one instant, so a thousand plans due together are not served one
    /// commit after another.
    ///
    /// Slices due up to `horizon` (≥ `now`) are taken ahead of time: their state is durable
    /// before their due instant, and their workers wait for it before sending.
    pub async fn take_slices(&self, plan_ids: &[i64], now: i64, horizon: i64) -> Result<Vec<SliceStart>> {
        let mut tx = self.write().await?;
        let mut out = Vec::new();
        for &plan_id in plan_ids {
            if let Some(s) = take_slice_in(&mut tx, plan_id, now, horizon).await? {
                out.push(s);
            }
        }
        tx.commit().await?;
        Ok(out)
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

    /// Step 1 of a vendor request: `submitting`, committed before the call goes out.
    pub async fn mark_submitting(&self, id: i64, now: i64) -> Result<()> {
        self.grouped(move |conn| {
            async move {
                let slice_id: i64 = sqlx::query_scalar(
                    "UPDATE subtasks SET status = 'submitting', attempts = attempts + 1, submitting_at = ?, \
                     wait_until = NULL, wait_reason = '' WHERE id = ? RETURNING slice_id",
                )
                .bind(now)
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?
                .ok_or(StoreError::NotFound)?;
                // A slice with a subtask submitting is submitting (what `refresh_slice` derives).
                sqlx::query("UPDATE slices SET status = 'submitting' WHERE id = ?")
                    .bind(slice_id)
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            }
            .boxed()
        })
        .await
    }

    /// Step 2: the vendor accepted `n` more URLs of the slice. When the whole slice is accepted,
    /// the subtask is `submitted` (and polled from `first_poll`), or `done` when the vendor has
    /// no status API — then every URL's outcome is `outcome_without_status`, except those in
    /// `outcomes` (`(seq, status, detail)` reported in the vendor's answer), recorded as given.
    #[allow(clippy::too_many_arguments)] // one step of the state machine, one transaction
    pub async fn record_accepted(
        &self,
        id: i64,
        n: i64,
        task_ids: &[String],
        outcomes: &[(i64, UrlStatus, String)],
        sent_at: i64,
        now: i64,
        first_poll: Option<i64>,
        outcome_without_status: UrlStatus,
    ) -> Result<bool> {
        let task_ids = task_ids.to_vec();
        let outcomes = outcomes.to_vec();
        self.grouped(move |conn| {
            async move {
                // Outcomes the vendor reported in its answer (a vendor that does the work in the call).
                set_url_outcomes(conn, id, &outcomes).await?;
                let (slice_id, urls_sent, known_ids, url_count): (i64, i64, String, i64) = sqlx::query_as(
                    "SELECT st.slice_id, st.urls_sent, st.vendor_task_ids, s.url_count \
                     FROM subtasks st JOIN slices s ON s.id = st.slice_id WHERE st.id = ?",
                )
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?
                .ok_or(StoreError::NotFound)?;
                let mut ids: Vec<String> = serde_json::from_str(&known_ids).unwrap_or_default();
                ids.extend(task_ids);
                let sent = (urls_sent + n).min(url_count);
                let complete = sent >= url_count;
                let status = match (complete, first_poll) {
                    (false, _) => SubmitStatus::Submitting,
                    (true, Some(_)) => SubmitStatus::Submitted,
                    (true, None) => SubmitStatus::Done,
                };
                sqlx::query(
                    "UPDATE subtasks SET status = ?, urls_sent = ?, vendor_task_ids = ?, error_code = '', error_message = '', \
                     submitted_at = CASE WHEN ? THEN ? ELSE submitted_at END, \
                     done_at = CASE WHEN ? = 'done' THEN ? ELSE done_at END, next_poll_at = ? WHERE id = ?",
                )
                .bind(status.as_str())
                .bind(sent)
                .bind(serde_json::to_string(&ids).expect("strings serialize"))
                .bind(complete)
                .bind(now)
                .bind(status.as_str())
                .bind(now)
                .bind(if complete { first_poll } else { None })
                .bind(id)
                .execute(&mut *conn)
                .await?;
                if status == SubmitStatus::Done {
                    sqlx::query("UPDATE url_outcomes SET status = ? WHERE subtask_id = ? AND status = 'pending'")
                        .bind(outcome_without_status.as_str())
                        .bind(id)
                        .execute(&mut *conn)
                        .await?;
                }
                // When the slice's first request left: what its lateness is measured by.
                sqlx::query("UPDATE slices SET sent_at = MIN(COALESCE(sent_at, ?), ?) WHERE id = ?")
                    .bind(sent_at)
                    .bind(sent_at)
                    .bind(slice_id)
                    .execute(&mut *conn)
                    .await?;
                refresh_slice(conn, slice_id, now).await?;
                // The crash comes before the group's commit: nothing of this batch is kept.
                failpoint!("store::record_accepted::before_commit");
                Ok(complete)
            }
            .boxed()
        })
        .await
    }

    /// Puts a subtask back to `pending`, optionally paused until `until` (quota wait, backoff,
    /// shutdown between requests). The progress already accepted is kept.
    pub async fn defer_subtask(&self, id: i64, until: Option<i64>, reason: &str, now: i64) -> Result<()> {
        let reason = reason.to_string();
        self.grouped(move |conn| {
            async move {
                sqlx::query("UPDATE subtasks SET status = 'pending', wait_until = ?, wait_reason = ? WHERE id = ?")
                    .bind(until)
                    .bind(reason)
                    .bind(id)
                    .execute(&mut *conn)
                    .await?;
                refresh_slice_of(conn, id, now).await
            }
            .boxed()
        })
        .await
    }

    /// A definitive failure: the vendor's code and message are kept, pending URL outcomes fail.
    /// When every subtask of the slice failed, the plan fails (semantics 3) and the cursor goes
    /// back to the slice, so the job's next plan sends those URLs again.
    pub async fn fail_subtask(&self, id: i64, code: &str, message: &str, now: i64) -> Result<()> {
        let (code, message) = (code.to_string(), message.to_string());
        self.grouped(move |conn| {
            async move {
                sqlx::query(
                    "UPDATE subtasks SET status = 'failed', error_code = ?, error_message = ?, done_at = ?, \
                     wait_until = NULL, wait_reason = '' WHERE id = ?",
                )
                .bind(&code)
                .bind(&message)
                .bind(now)
                .bind(id)
                .execute(&mut *conn)
                .await?;
                sqlx::query(
                    "UPDATE url_outcomes SET status = 'failed', detail = ? WHERE subtask_id = ? AND status = 'pending'",
                )
                .bind(&code)
                .bind(id)
                .execute(&mut *conn)
                .await?;
                refresh_slice_of(conn, id, now).await
            }
            .boxed()
        })
        .await
    }

    /// Records per-URL outcomes from a status poll; the subtask is `done` once no URL is pending,
    /// else polled again at `next_poll`.
    pub async fn record_poll(
        &self,
        id: i64,
        outcomes: &[(i64, UrlStatus, String)],
        next_poll: i64,
        now: i64,
    ) -> Result<bool> {
        let outcomes = outcomes.to_vec();
        self.grouped(move |conn| {
            async move {
                set_url_outcomes(conn, id, &outcomes).await?;
                let pending: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM url_outcomes WHERE subtask_id = ? AND status = 'pending'")
                        .bind(id)
                        .fetch_one(&mut *conn)
                        .await?;
                let done = pending == 0;
                sqlx::query(
                    "UPDATE subtasks SET status = CASE WHEN ? THEN 'done' ELSE status END, \
                     done_at = CASE WHEN ? THEN ? ELSE done_at END, next_poll_at = CASE WHEN ? THEN NULL ELSE ? END WHERE id = ?",
                )
                .bind(done)
                .bind(done)
                .bind(now)
                .bind(done)
                .bind(next_poll)
                .bind(id)
                .execute(&mut *conn)
                .await?;
                refresh_slice_of(conn, id, now).await?;
                Ok(done)
            }
            .boxed()
        })
        .await
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

/// The body of [`Store::take_slice`], inside the caller's transaction.
async fn take_slice_in(tx: &mut Tx, plan_id: i64, now: i64, horizon: i64) -> Result<Option<SliceStart>> {
    let plan = plan_in(tx, plan_id).await?;
    let Some(due) = plan.next_due.filter(|d| *d <= horizon && plan.status == PlanStatus::Running) else {
        return Ok(None);
    };
    if due > now && due >= plan.end_time {
        // Not due yet, and not inside the window when it is: the plan closes at its end.
        return Ok(None);
    }
    // One round trip for the job's state and whether a slice of it is still in flight.
    let job = sqlx::query(
        "SELECT cursor, vendors, catch_up, EXISTS (SELECT 1 FROM slices s WHERE s.job_id = j.id \
         AND s.status IN ('pending', 'submitting')) AS inflight FROM jobs j WHERE j.id = ?",
    )
    .bind(plan.job_id)
    .fetch_one(&mut **tx)
    .await?;
    if job.get::<bool, _>("inflight") {
        return Ok(None);
    }
    if now >= plan.end_time {
        finish_plan(tx, plan_id, now).await?;
        return Ok(None);
    }
    let cursor: i64 = job.get("cursor");
    let vendors: Vec<String> = serde_json::from_str(&job.get::<String, _>("vendors")).unwrap_or_default();
    let catch_up: CatchUp = job.get::<String, _>("catch_up").parse().unwrap_or(CatchUp::Skip);
    // The slice's URL range, and whether any URL follows it.
    let (count, first, last, more): (i64, Option<i64>, Option<i64>, bool) = sqlx::query_as(
        "SELECT c, f, l, EXISTS (SELECT 1 FROM urls WHERE job_id = ? AND seq > l) FROM \
         (SELECT COUNT(*) AS c, MIN(seq) AS f, MAX(seq) AS l FROM \
          (SELECT seq FROM urls WHERE job_id = ? AND seq >= ? ORDER BY seq LIMIT ?))",
    )
    .bind(plan.job_id)
    .bind(plan.job_id)
    .bind(cursor)
    .bind(plan.slice_len)
    .fetch_one(&mut **tx)
    .await?;
    let (Some(first), Some(last)) = (first, last) else {
        finish_plan(tx, plan_id, now).await?;
        return Ok(None);
    };
    let slice_id = sqlx::query(
        "INSERT INTO slices (plan_id, job_id, k, due_at, first_seq, last_seq, url_count, status, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?)",
    )
    .bind(plan_id)
    .bind(plan.job_id)
    .bind(plan.slices_sent)
    .bind(due)
    .bind(first)
    .bind(last)
    .bind(count)
    .bind(now)
    .execute(&mut **tx)
    .await?
    .last_insert_rowid();
    let mut subtask_ids = Vec::new();
    for vendor in &vendors {
        let id = sqlx::query("INSERT INTO subtasks (slice_id, vendor, status) VALUES (?, ?, 'pending')")
            .bind(slice_id)
            .bind(vendor)
            .execute(&mut **tx)
            .await?
            .last_insert_rowid();
        sqlx::query(
            "INSERT INTO url_outcomes (subtask_id, seq, status) \
             SELECT ?, seq, 'pending' FROM urls WHERE job_id = ? AND seq BETWEEN ? AND ?",
        )
        .bind(id)
        .bind(plan.job_id)
        .bind(first)
        .bind(last)
        .execute(&mut **tx)
        .await?;
        subtask_ids.push(id);
    }
    // With nothing left, the plan is due again at once and finishes as soon as this slice
    // is recorded, instead of waiting an interval to find the list empty.
    let next_due = if more { next_due_after(due, plan.interval_ms, now, catch_up) } else { now };
    sqlx::query("UPDATE jobs SET cursor = ?, max_slice = MAX(max_slice, ?), updated_at = ? WHERE id = ?")
        .bind(last + 1)
        .bind(count)
        .bind(now)
        .bind(plan.job_id)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "UPDATE plans SET slices_sent = slices_sent + 1, urls_sent = urls_sent + ?, next_due = ?, updated_at = ? \
         WHERE id = ?",
    )
    .bind(count)
    .bind(next_due)
    .bind(now)
    .bind(plan_id)
    .execute(&mut **tx)
    .await?;
    let slice = Slice {
        id: slice_id,
        plan_id,
        job_id: plan.job_id,
        k: plan.slices_sent,
        due_at: due,
        first_seq: first,
        last_seq: last,
        url_count: count,
        status: SubmitStatus::Pending,
        created_at: now,
        recorded_at: None,
        done_at: None,
    };
    Ok(Some(SliceStart { slice, subtask_ids }))
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

async fn slice_in(conn: &mut SqliteConnection, id: i64) -> Result<Slice> {
    let row = sqlx::query(&format!("SELECT {SLICE_COLS} FROM slices WHERE id = ?"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    found(row.as_ref().map(slice_from_row))
}

async fn finish_plan(conn: &mut SqliteConnection, plan_id: i64, now: i64) -> Result<()> {
    sqlx::query(
        "UPDATE plans SET status = 'finished', next_due = NULL, updated_at = ? WHERE id = ? AND status = 'running'",
    )
    .bind(now)
    .bind(plan_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Records per-URL outcomes `(seq, status, detail)` of one subtask.
async fn set_url_outcomes(
    conn: &mut SqliteConnection,
    subtask_id: i64,
    outcomes: &[(i64, UrlStatus, String)],
) -> Result<()> {
    for (seq, status, detail) in outcomes {
        sqlx::query("UPDATE url_outcomes SET status = ?, detail = ? WHERE subtask_id = ? AND seq = ?")
            .bind(status.as_str())
            .bind(detail)
            .bind(subtask_id)
            .bind(seq)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// [`refresh_slice`] for the slice of subtask `subtask_id`.
async fn refresh_slice_of(conn: &mut SqliteConnection, subtask_id: i64, now: i64) -> Result<()> {
    let slice_id = subtask_in(conn, subtask_id).await?.slice_id;
    refresh_slice(conn, slice_id, now).await
}

/// Derives a slice's status from its subtasks, and fails the plan when every vendor failed it.
async fn refresh_slice(conn: &mut SqliteConnection, slice_id: i64, now: i64) -> Result<()> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, COUNT(*) FROM subtasks WHERE slice_id = ? GROUP BY status")
            .bind(slice_id)
            .fetch_all(&mut *conn)
            .await?;
    let count = |s: SubmitStatus| rows.iter().find(|(k, _)| k == s.as_str()).map_or(0, |(_, n)| *n);
    let total: i64 = rows.iter().map(|(_, n)| n).sum();
    let status = if count(SubmitStatus::Submitting) > 0 {
        SubmitStatus::Submitting
    } else if count(SubmitStatus::Pending) > 0 {
        SubmitStatus::Pending
    } else if count(SubmitStatus::Failed) == total {
        SubmitStatus::Failed
    } else if count(SubmitStatus::Done) + count(SubmitStatus::Failed) == total {
        SubmitStatus::Done
    } else {
        SubmitStatus::Submitted
    };
    let recorded = status.is_recorded();
    let final_ = status.is_final();
    let before = slice_in(conn, slice_id).await?;
    sqlx::query(
        "UPDATE slices SET status = ?, recorded_at = CASE WHEN ? THEN COALESCE(recorded_at, ?) ELSE recorded_at END, \
         done_at = CASE WHEN ? THEN COALESCE(done_at, ?) ELSE done_at END WHERE id = ?",
    )
    .bind(status.as_str())
    .bind(recorded)
    .bind(now)
    .bind(final_)
    .bind(now)
    .bind(slice_id)
    .execute(&mut *conn)
    .await?;
    if status == SubmitStatus::Failed && before.status != SubmitStatus::Failed {
        let errors: Vec<(String, String, String)> =
            sqlx::query_as("SELECT vendor, error_code, error_message FROM subtasks WHERE slice_id = ? ORDER BY id")
                .bind(slice_id)
                .fetch_all(&mut *conn)
                .await?;
        let info = errors.iter().map(|(v, c, m)| format!("{v}: {c}: {m}")).collect::<Vec<_>>().join("; ");
        sqlx::query(
            "UPDATE plans SET status = 'failed', error_info = ?, next_due = NULL, updated_at = ? \
             WHERE id = ? AND status IN ('running', 'waiting', 'stopped', 'finished')",
        )
        .bind(&info)
        .bind(now)
        .bind(before.plan_id)
        .execute(&mut *conn)
        .await?;
        sqlx::query("UPDATE jobs SET cursor = MIN(cursor, ?) WHERE id = ?")
            .bind(before.first_seq)
            .bind(before.job_id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
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
