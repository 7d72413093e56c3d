//! The writes of the slice state machine, run synchronously on the writer's handle (see `raw`):
//! the take of due slices, and each step of a subtask (`submitting`, accepted, deferred, failed,
//! polled), the latter through the group commit.
//!
//! Architecture Invariant (with `work`): a slice claims its URLs (the job's cursor moves past
//! them) in the same transaction that records it; a slice's status is derived from its
//! subtasks' (`refresh_slice`) in the transaction that changes one of them.

use std::collections::HashSet;

use rusqlite::{params, Connection, OptionalExtension};

use super::raw::with_raw;
use super::work::{next_due_after, Slice, SliceStart, Subtask, SubtaskWork};
use super::{Result, Store, StoreError};
use crate::failpoint::failpoint;
use crate::model::{CatchUp, SubmitStatus, TaskType, UrlStatus};

impl Store {
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
        self.take_slices_marking(plan_ids, now, horizon, &HashSet::new()).await
    }

    /// [`Store::take_slices`], recording the subtasks of the vendor accounts in `send_at_once`
    /// (those with no daily quota to reserve first) as `submitting` already, as
    /// [`Store::mark_submitting`] would: the engine then sends them at their due instant with no
    /// write in between. Each [`SliceStart`] carries its subtasks' [`SubtaskWork`].
    pub async fn take_slices_marking(
        &self,
        plan_ids: &[i64],
        now: i64,
        horizon: i64,
        send_at_once: &HashSet<String>,
    ) -> Result<Vec<SliceStart>> {
        let mut tx = self.write().await?;
        let out = with_raw(&mut tx, |db| {
            let mut out = Vec::new();
            for &plan_id in plan_ids {
                if let Some(s) = take_slice_raw(db, plan_id, now, horizon, send_at_once)? {
                    out.push(s);
                }
            }
            Ok(out)
        })
        .await?;
        tx.commit().await?;
        Ok(out)
    }

    /// Step 1 of a vendor request: `submitting`, committed before the call goes out.
    pub async fn mark_submitting(&self, id: i64, now: i64) -> Result<()> {
        self.grouped(move |db| {
            let slice_id: i64 = db
                .prepare_cached(
                    "UPDATE subtasks SET status = 'submitting', attempts = attempts + 1, submitting_at = ?1, \
                     wait_until = NULL, wait_reason = '' WHERE id = ?2 RETURNING slice_id",
                )?
                .query_row(params![now, id], |r| r.get(0))?;
            // A slice with a subtask submitting is submitting (what `refresh_slice` derives).
            db.prepare_cached("UPDATE slices SET status = 'submitting' WHERE id = ?1")?.execute([slice_id])?;
            Ok(())
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
        self.grouped(move |db| {
            // Outcomes the vendor reported in its answer (a vendor that does the work in the call).
            set_url_outcomes(db, id, &outcomes)?;
            let (slice_id, urls_sent, known_ids, url_count): (i64, i64, String, i64) = db
                .prepare_cached(
                    "SELECT st.slice_id, st.urls_sent, st.vendor_task_ids, s.url_count \
                     FROM subtasks st JOIN slices s ON s.id = st.slice_id WHERE st.id = ?1",
                )?
                .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
            let mut ids: Vec<String> = serde_json::from_str(&known_ids).unwrap_or_default();
            ids.extend(task_ids);
            let sent = (urls_sent + n).min(url_count);
            let complete = sent >= url_count;
            let status = match (complete, first_poll) {
                (false, _) => SubmitStatus::Submitting,
                (true, Some(_)) => SubmitStatus::Submitted,
                (true, None) => SubmitStatus::Done,
            };
            db.prepare_cached(
                "UPDATE subtasks SET status = ?1, urls_sent = ?2, vendor_task_ids = ?3, error_code = '', \
                 error_message = '', submitted_at = CASE WHEN ?4 THEN ?5 ELSE submitted_at END, \
                 done_at = CASE WHEN ?1 = 'done' THEN ?5 ELSE done_at END, next_poll_at = ?6 WHERE id = ?7",
            )?
            .execute(params![
                status.as_str(),
                sent,
                serde_json::to_string(&ids).expect("strings serialize"),
                complete,
                now,
                if complete { first_poll } else { None },
                id
            ])?;
            if status == SubmitStatus::Done {
                db.prepare_cached("UPDATE url_outcomes SET status = ?1 WHERE subtask_id = ?2 AND status = 'pending'")?
                    .execute(params![outcome_without_status.as_str(), id])?;
            }
            // When the slice's first request left: what its lateness is measured by.
            db.prepare_cached("UPDATE slices SET sent_at = MIN(COALESCE(sent_at, ?1), ?1) WHERE id = ?2")?
                .execute(params![sent_at, slice_id])?;
            refresh_slice(db, slice_id, now)?;
            // The crash comes before the group's commit: nothing of this batch is kept.
            failpoint!("store::record_accepted::before_commit");
            Ok(complete)
        })
        .await
    }

    /// Puts a subtask back to `pending`, optionally paused until `until` (quota wait, backoff,
    /// shutdown between requests). The progress already accepted is kept.
    pub async fn defer_subtask(&self, id: i64, until: Option<i64>, reason: &str, now: i64) -> Result<()> {
        let reason = reason.to_string();
        self.grouped(move |db| {
            db.prepare_cached(
                "UPDATE subtasks SET status = 'pending', wait_until = ?1, wait_reason = ?2 WHERE id = ?3",
            )?
            .execute(params![until, reason, id])?;
            refresh_slice_of(db, id, now)
        })
        .await
    }

    /// A definitive failure: the vendor's code and message are kept, pending URL outcomes fail.
    /// When every subtask of the slice failed, the plan fails (semantics 3) and the cursor goes
    /// back to the slice, so the job's next plan sends those URLs again.
    pub async fn fail_subtask(&self, id: i64, code: &str, message: &str, now: i64) -> Result<()> {
        let (code, message) = (code.to_string(), message.to_string());
        self.grouped(move |db| {
            db.prepare_cached(
                "UPDATE subtasks SET status = 'failed', error_code = ?1, error_message = ?2, done_at = ?3, \
                 wait_until = NULL, wait_reason = '' WHERE id = ?4",
            )?
            .execute(params![code, message, now, id])?;
            db.prepare_cached(
                "UPDATE url_outcomes SET status = 'failed', detail = ?1 WHERE subtask_id = ?2 AND status = 'pending'",
            )?
            .execute(params![code, id])?;
            refresh_slice_of(db, id, now)
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
        self.grouped(move |db| {
            set_url_outcomes(db, id, &outcomes)?;
            let pending: i64 = db
                .prepare_cached("SELECT COUNT(*) FROM url_outcomes WHERE subtask_id = ?1 AND status = 'pending'")?
                .query_row([id], |r| r.get(0))?;
            let done = pending == 0;
            db.prepare_cached(
                "UPDATE subtasks SET status = CASE WHEN ?1 THEN 'done' ELSE status END, \
                 done_at = CASE WHEN ?1 THEN ?2 ELSE done_at END, next_poll_at = CASE WHEN ?1 THEN NULL ELSE ?3 END \
                 WHERE id = ?4",
            )?
            .execute(params![done, now, next_poll, id])?;
            refresh_slice_of(db, id, now)?;
            Ok(done)
        })
        .await
    }
}

/// What the take reads of a plan.
struct PlanRow {
    job_id: i64,
    running: bool,
    next_due: Option<i64>,
    end_time: i64,
    slice_len: i64,
    slices_sent: i64,
    interval_ms: i64,
}

/// The body of [`Store::take_slices_marking`] for one plan, inside the caller's transaction.
fn take_slice_raw(
    db: &Connection,
    plan_id: i64,
    now: i64,
    horizon: i64,
    send_at_once: &HashSet<String>,
) -> Result<Option<SliceStart>> {
    // A plan deleted since it was found due is simply not taken.
    let plan = db
        .prepare_cached(
            "SELECT job_id, status, next_due, end_time, slice_len, slices_sent, interval_ms FROM plans WHERE id = ?1",
        )?
        .query_row([plan_id], |r| {
            Ok(PlanRow {
                job_id: r.get(0)?,
                running: r.get::<_, String>(1)? == "running",
                next_due: r.get(2)?,
                end_time: r.get(3)?,
                slice_len: r.get(4)?,
                slices_sent: r.get(5)?,
                interval_ms: r.get(6)?,
            })
        })
        .optional()?;
    let Some(PlanRow { job_id, running, next_due, end_time, slice_len, slices_sent, interval_ms }) = plan else {
        return Ok(None);
    };
    let Some(due) = next_due.filter(|d| *d <= horizon && running) else {
        return Ok(None);
    };
    if due > now && due >= end_time {
        // Not due yet, and not inside the window when it is: the plan closes at its end.
        return Ok(None);
    }
    // The job's state and whether a slice of it is still in flight.
    let (cursor, vendors, catch_up, job_name, task_type, inflight): (i64, String, String, String, String, bool) = db
        .prepare_cached(
            "SELECT cursor, vendors, catch_up, name, task_type, EXISTS (SELECT 1 FROM slices s WHERE s.job_id = j.id \
             AND s.status IN ('pending', 'submitting')) FROM jobs j WHERE j.id = ?1",
        )?
        .query_row([job_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))?;
    if inflight {
        return Ok(None);
    }
    if now >= end_time {
        finish_plan(db, plan_id, now)?;
        return Ok(None);
    }
    let vendors: Vec<String> = serde_json::from_str(&vendors).unwrap_or_default();
    let catch_up: CatchUp = catch_up.parse().unwrap_or(CatchUp::Skip);
    // The slice's URLs, and whether any URL follows them.
    let urls: Vec<(i64, String)> = db
        .prepare_cached("SELECT seq, url FROM urls WHERE job_id = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3")?
        .query_map(params![job_id, cursor, slice_len], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let (Some(&(first, _)), Some(&(last, _))) = (urls.first(), urls.last()) else {
        finish_plan(db, plan_id, now)?;
        return Ok(None);
    };
    let more: bool = db
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM urls WHERE job_id = ?1 AND seq > ?2)")?
        .query_row(params![job_id, last], |r| r.get(0))?;
    let count = urls.len() as i64;
    let marked = |v: &String| send_at_once.contains(v);
    let slice_status = if vendors.iter().any(marked) { SubmitStatus::Submitting } else { SubmitStatus::Pending };
    db.prepare_cached(
        "INSERT INTO slices (plan_id, job_id, k, due_at, first_seq, last_seq, url_count, status, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![plan_id, job_id, slices_sent, due, first, last, count, slice_status.as_str(), now])?;
    let slice = Slice {
        id: db.last_insert_rowid(),
        plan_id,
        job_id,
        k: slices_sent,
        due_at: due,
        first_seq: first,
        last_seq: last,
        url_count: count,
        status: slice_status,
        created_at: now,
        recorded_at: None,
        done_at: None,
    };
    let task_type: TaskType = task_type.parse().unwrap_or(TaskType::Preload);
    let mut work = Vec::with_capacity(vendors.len());
    for vendor in &vendors {
        let (status, attempts, submitting_at) =
            if marked(vendor) { (SubmitStatus::Submitting, 1, Some(now)) } else { (SubmitStatus::Pending, 0, None) };
        db.prepare_cached(
            "INSERT INTO subtasks (slice_id, vendor, status, attempts, submitting_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![slice.id, vendor, status.as_str(), attempts, submitting_at])?;
        let id = db.last_insert_rowid();
        db.prepare_cached(
            "INSERT INTO url_outcomes (subtask_id, seq, status) \
             SELECT ?1, seq, 'pending' FROM urls WHERE job_id = ?2 AND seq BETWEEN ?3 AND ?4",
        )?
        .execute(params![id, job_id, first, last])?;
        let subtask = Subtask {
            id,
            slice_id: slice.id,
            vendor: vendor.clone(),
            status,
            urls_sent: 0,
            vendor_task_ids: Vec::new(),
            attempts,
            error_code: String::new(),
            error_message: String::new(),
            submitting_at,
            submitted_at: None,
            done_at: None,
            next_poll_at: None,
            wait_until: None,
            wait_reason: String::new(),
        };
        work.push(SubtaskWork {
            subtask,
            slice: slice.clone(),
            job_name: job_name.clone(),
            task_type,
            urls: urls.clone(),
        });
    }
    // With nothing left, the plan is due again at once and finishes as soon as this slice
    // is recorded, instead of waiting an interval to find the list empty.
    let next_due = if more { next_due_after(due, interval_ms, now, catch_up) } else { now };
    db.prepare_cached("UPDATE jobs SET cursor = ?1, max_slice = MAX(max_slice, ?2), updated_at = ?3 WHERE id = ?4")?
        .execute(params![last + 1, count, now, job_id])?;
    db.prepare_cached(
        "UPDATE plans SET slices_sent = slices_sent + 1, urls_sent = urls_sent + ?1, next_due = ?2, updated_at = ?3 \
         WHERE id = ?4",
    )?
    .execute(params![count, next_due, now, plan_id])?;
    let subtask_ids = work.iter().map(|w| w.subtask.id).collect();
    Ok(Some(SliceStart { slice, subtask_ids, work }))
}

fn finish_plan(db: &Connection, plan_id: i64, now: i64) -> Result<()> {
    db.prepare_cached(
        "UPDATE plans SET status = 'finished', next_due = NULL, updated_at = ?1 WHERE id = ?2 AND status = 'running'",
    )?
    .execute(params![now, plan_id])?;
    Ok(())
}

/// Records per-URL outcomes `(seq, status, detail)` of one subtask.
fn set_url_outcomes(db: &Connection, subtask_id: i64, outcomes: &[(i64, UrlStatus, String)]) -> Result<()> {
    let mut update =
        db.prepare_cached("UPDATE url_outcomes SET status = ?1, detail = ?2 WHERE subtask_id = ?3 AND seq = ?4")?;
    for (seq, status, detail) in outcomes {
        update.execute(params![status.as_str(), detail, subtask_id, seq])?;
    }
    Ok(())
}

/// [`refresh_slice`] for the slice of subtask `subtask_id`.
fn refresh_slice_of(db: &Connection, subtask_id: i64, now: i64) -> Result<()> {
    let slice_id: i64 = db
        .prepare_cached("SELECT slice_id FROM subtasks WHERE id = ?1")?
        .query_row([subtask_id], |r| r.get(0))
        .optional()?
        .ok_or(StoreError::NotFound)?;
    refresh_slice(db, slice_id, now)
}

/// Derives a slice's status from its subtasks, and fails the plan when every vendor failed it.
fn refresh_slice(db: &Connection, slice_id: i64, now: i64) -> Result<()> {
    let rows: Vec<(String, i64)> = db
        .prepare_cached("SELECT status, COUNT(*) FROM subtasks WHERE slice_id = ?1 GROUP BY status")?
        .query_map([slice_id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
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
    let (before, plan_id, job_id, first_seq): (String, i64, i64, i64) = db
        .prepare_cached("SELECT status, plan_id, job_id, first_seq FROM slices WHERE id = ?1")?
        .query_row([slice_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .optional()?
        .ok_or(StoreError::NotFound)?;
    db.prepare_cached(
        "UPDATE slices SET status = ?1, recorded_at = CASE WHEN ?2 THEN COALESCE(recorded_at, ?4) ELSE recorded_at END, \
         done_at = CASE WHEN ?3 THEN COALESCE(done_at, ?4) ELSE done_at END WHERE id = ?5",
    )?
    .execute(params![status.as_str(), status.is_recorded(), status.is_final(), now, slice_id])?;
    if status == SubmitStatus::Failed && before != SubmitStatus::Failed.as_str() {
        let errors: Vec<String> = db
            .prepare_cached("SELECT vendor, error_code, error_message FROM subtasks WHERE slice_id = ?1 ORDER BY id")?
            .query_map([slice_id], |r| {
                Ok(format!("{}: {}: {}", r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        db.prepare_cached(
            "UPDATE plans SET status = 'failed', error_info = ?1, next_due = NULL, updated_at = ?2 \
             WHERE id = ?3 AND status IN ('running', 'waiting', 'stopped', 'finished')",
        )?
        .execute(params![errors.join("; "), now, plan_id])?;
        db.prepare_cached("UPDATE jobs SET cursor = MIN(cursor, ?1) WHERE id = ?2")?
            .execute(params![first_seq, job_id])?;
    }
    Ok(())
}
