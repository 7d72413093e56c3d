//! Plans: the time windows of a job, their status and pace.

use sqlx::Row;

use super::work::withdraw_unsent_slice;
use super::{found, Result, Store, StoreError, Tx};
use crate::config::PlanSpec;
use crate::model::PlanStatus;

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub id: i64,
    pub job_id: i64,
    pub start_time: i64,
    pub end_time: i64,
    pub interval_ms: i64,
    pub slice_len: i64,
    pub status: PlanStatus,
    pub error_info: String,
    pub next_due: Option<i64>,
    pub slices_sent: i64,
    pub urls_sent: i64,
    pub source: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A partial update of a plan (seed 002: every field optional).
#[derive(Debug, Clone, Default)]
pub struct PlanChange {
    pub start_time: Option<i64>,
    pub end_time: Option<i64>,
    pub interval_ms: Option<i64>,
    pub slice_len: Option<i64>,
}

const PLAN_COLS: &str = "id, job_id, start_time, end_time, interval_ms, slice_len, status, error_info, next_due, \
     slices_sent, urls_sent, source, created_at, updated_at";

pub(super) fn plan_from_row(r: &sqlx::sqlite::SqliteRow) -> Plan {
    Plan {
        id: r.get("id"),
        job_id: r.get("job_id"),
        start_time: r.get("start_time"),
        end_time: r.get("end_time"),
        interval_ms: r.get("interval_ms"),
        slice_len: r.get("slice_len"),
        status: r.get::<String, _>("status").parse().unwrap_or(PlanStatus::Failed),
        error_info: r.get("error_info"),
        next_due: r.get("next_due"),
        slices_sent: r.get("slices_sent"),
        urls_sent: r.get("urls_sent"),
        source: r.get("source"),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
    }
}

pub(super) async fn plan_in(tx: &mut Tx, id: i64) -> Result<Plan> {
    let row =
        sqlx::query(&format!("SELECT {PLAN_COLS} FROM plans WHERE id = ?")).bind(id).fetch_optional(&mut **tx).await?;
    found(row.as_ref().map(plan_from_row))
}

/// When a plan's last slice went (or, taken ahead, will go): what "the next slice is due
/// `interval` after the last one sent" counts from.
const LAST_SENT: &str = "SELECT MAX(COALESCE(sent_at, MAX(created_at, due_at))) FROM slices WHERE plan_id = ?";

/// Fails with a message naming the other plan when `[start, end)` overlaps an open plan of the job.
async fn check_overlap(tx: &mut Tx, job_id: i64, start: i64, end: i64, except: Option<i64>) -> Result<()> {
    let other: Option<(i64, i64, i64)> = sqlx::query_as(
        "SELECT id, start_time, end_time FROM plans WHERE job_id = ? AND id != ? \
         AND status IN ('waiting', 'running', 'stopped') AND start_time < ? AND ? < end_time LIMIT 1",
    )
    .bind(job_id)
    .bind(except.unwrap_or(-1))
    .bind(end)
    .bind(start)
    .fetch_optional(&mut **tx)
    .await?;
    match other {
        Some((id, s, e)) => Err(StoreError::Conflict(format!(
            "the window overlaps plan {id} of the same job ({} to {})",
            crate::clock::rfc3339(s),
            crate::clock::rfc3339(e)
        ))),
        None => Ok(()),
    }
}

/// Inserts a plan inside `tx`, refusing overlaps with the job's open plans.
pub async fn insert_plan(tx: &mut Tx, job_id: i64, spec: &PlanSpec, source: &str, now: i64) -> Result<Plan> {
    if spec.end_time <= spec.start_time {
        return Err(StoreError::EndBeforeStart);
    }
    check_overlap(tx, job_id, spec.start_time, spec.end_time, None).await?;
    let id = sqlx::query(
        "INSERT INTO plans (job_id, start_time, end_time, interval_ms, slice_len, status, source, created_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, 'waiting', ?, ?, ?)",
    )
    .bind(job_id)
    .bind(spec.start_time)
    .bind(spec.end_time)
    .bind(spec.interval_ms)
    .bind(spec.slice_len)
    .bind(source)
    .bind(now)
    .bind(now)
    .execute(&mut **tx)
    .await?
    .last_insert_rowid();
    plan_in(tx, id).await
}

impl Store {
    pub async fn plan(&self, id: i64) -> Result<Plan> {
        let row = sqlx::query(&format!("SELECT {PLAN_COLS} FROM plans WHERE id = ?"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        found(row.as_ref().map(plan_from_row))
    }

    pub async fn plans_of_job(&self, job_id: i64) -> Result<Vec<Plan>> {
        let rows = sqlx::query(&format!("SELECT {PLAN_COLS} FROM plans WHERE job_id = ? ORDER BY start_time, id"))
            .bind(job_id)
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(plan_from_row).collect())
    }

    pub async fn create_plans(&self, job_id: i64, specs: &[PlanSpec], source: &str, now: i64) -> Result<Vec<Plan>> {
        let mut tx = self.write().await?;
        let exists: Option<i64> =
            sqlx::query_scalar("SELECT id FROM jobs WHERE id = ?").bind(job_id).fetch_optional(&mut *tx).await?;
        found(exists)?;
        let mut out = Vec::new();
        for spec in specs {
            out.push(insert_plan(&mut tx, job_id, spec, source, now).await?);
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Applies a partial update (DESIGN.md semantics 4): the remaining slices follow the new
    /// values at once — the next slice is due `interval` after the last one sent, or at the new
    /// start if that is later.
    pub async fn update_plan(&self, id: i64, change: &PlanChange, now: i64) -> Result<Plan> {
        let mut tx = self.write().await?;
        let plan = plan_in(&mut tx, id).await?;
        if !plan.status.is_open() {
            return Err(StoreError::Conflict(format!("plan {id} is {} and can no longer be changed", plan.status)));
        }
        let start = change.start_time.unwrap_or(plan.start_time);
        let end = change.end_time.unwrap_or(plan.end_time);
        let interval = change.interval_ms.unwrap_or(plan.interval_ms);
        let slice_len = change.slice_len.unwrap_or(plan.slice_len);
        if end <= start {
            return Err(StoreError::EndBeforeStart);
        }
        if interval <= 0 || slice_len <= 0 {
            return Err(StoreError::Conflict("interval and slice_len must be at least 1".into()));
        }
        check_overlap(&mut tx, plan.job_id, start, end, Some(id)).await?;
        // A slice taken ahead of its due time and not sent yet follows the new values too.
        if withdraw_unsent_slice(&mut tx, id, now).await? {
            self.withdrawals.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        let last_sent: Option<i64> = sqlx::query_scalar(LAST_SENT).bind(id).fetch_one(&mut *tx).await?;
        let mut status = plan.status;
        let mut next_due = plan.next_due;
        if plan.status == PlanStatus::Running || (plan.status == PlanStatus::Waiting && start <= now) {
            let after_last = last_sent.map(|t| t + interval).unwrap_or(start);
            next_due = Some(after_last.max(start));
        }
        if plan.status == PlanStatus::Running && start > now {
            // Moved into the future: it waits again for its new start.
            status = PlanStatus::Waiting;
            next_due = None;
        }
        sqlx::query(
            "UPDATE plans SET start_time = ?, end_time = ?, interval_ms = ?, slice_len = ?, status = ?, next_due = ?, \
             updated_at = ? WHERE id = ?",
        )
        .bind(start)
        .bind(end)
        .bind(interval)
        .bind(slice_len)
        .bind(status.as_str())
        .bind(next_due)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let plan = plan_in(&mut tx, id).await?;
        tx.commit().await?;
        Ok(plan)
    }

    /// Pauses a running or waiting plan.
    pub async fn stop_plan(&self, id: i64, now: i64) -> Result<Plan> {
        let mut tx = self.write().await?;
        let plan = plan_in(&mut tx, id).await?;
        if !matches!(plan.status, PlanStatus::Running | PlanStatus::Waiting) {
            return Err(StoreError::Conflict(format!(
                "plan {id} is {}; only a waiting or running plan can be stopped",
                plan.status
            )));
        }
        // A slice taken ahead of its due time and not sent yet is not sent.
        if withdraw_unsent_slice(&mut tx, id, now).await? {
            self.withdrawals.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        sqlx::query("UPDATE plans SET status = 'stopped', next_due = NULL, updated_at = ? WHERE id = ?")
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let plan = plan_in(&mut tx, id).await?;
        tx.commit().await?;
        Ok(plan)
    }

    /// Resumes a stopped plan: the next slice goes `interval` after the last one, or at once.
    pub async fn start_plan(&self, id: i64, now: i64) -> Result<Plan> {
        let mut tx = self.write().await?;
        let plan = plan_in(&mut tx, id).await?;
        if plan.status != PlanStatus::Stopped {
            return Err(StoreError::Conflict(format!(
                "plan {id} is {}; only a stopped plan can be started",
                plan.status
            )));
        }
        let last_sent: Option<i64> = sqlx::query_scalar(LAST_SENT).bind(id).fetch_one(&mut *tx).await?;
        let (status, next_due) = if now < plan.start_time {
            (PlanStatus::Waiting, None)
        } else if now >= plan.end_time {
            (PlanStatus::Finished, None)
        } else {
            (PlanStatus::Running, Some(last_sent.map(|t| (t + plan.interval_ms).max(now)).unwrap_or(now)))
        };
        sqlx::query("UPDATE plans SET status = ?, next_due = ?, updated_at = ? WHERE id = ?")
            .bind(status.as_str())
            .bind(next_due)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let plan = plan_in(&mut tx, id).await?;
        tx.commit().await?;
        Ok(plan)
    }

    /// Deletes a plan with its history; refused while one of its slices is in flight.
    pub async fn delete_plan(&self, id: i64) -> Result<()> {
        let mut tx = self.write().await?;
        plan_in(&mut tx, id).await?;
        let inflight: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM slices WHERE plan_id = ? AND status IN ('pending', 'submitting')")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
        if inflight > 0 {
            return Err(StoreError::Conflict(format!(
                "plan {id} has a slice in flight; stop it and retry when it is recorded"
            )));
        }
        sqlx::query("DELETE FROM plans WHERE id = ?").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Makes a declarative job's config plans match the config: plans new in the config are added,
/// waiting ones no longer in it are removed; running and past plans are history and stay.
pub async fn sync_config_plans(tx: &mut Tx, job_id: i64, specs: &[PlanSpec], now: i64) -> Result<()> {
    let rows = sqlx::query(&format!("SELECT {PLAN_COLS} FROM plans WHERE job_id = ? AND source = 'config'"))
        .bind(job_id)
        .fetch_all(&mut **tx)
        .await?;
    let existing: Vec<Plan> = rows.iter().map(plan_from_row).collect();
    let same = |p: &Plan, s: &PlanSpec| {
        p.start_time == s.start_time
            && p.end_time == s.end_time
            && p.interval_ms == s.interval_ms
            && p.slice_len == s.slice_len
    };
    for p in existing.iter().filter(|p| p.status == PlanStatus::Waiting && !specs.iter().any(|s| same(p, s))) {
        sqlx::query("DELETE FROM plans WHERE id = ?").bind(p.id).execute(&mut **tx).await?;
    }
    for s in specs.iter().filter(|s| !existing.iter().any(|p| same(p, s))) {
        if s.end_time <= now {
            continue; // a window wholly in the past would only be created to be finished
        }
        insert_plan(tx, job_id, s, "config", now).await?;
    }
    Ok(())
}
