//! Recurring schedules and their firings.

use sqlx::Row;

use super::plans::insert_plan;
use super::{Result, Store, StoreError, Tx};
use crate::config::{PlanSpec, ScheduleSpec};
use crate::failpoint::failpoint;

#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleRow {
    pub id: i64,
    pub job_id: i64,
    pub spec: ScheduleSpec,
    pub next_fire: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Firing {
    pub fire_at: i64,
    pub fired_at: i64,
    pub outcome: String,
    pub plan_id: Option<i64>,
    pub detail: String,
}

/// What a firing did.
#[derive(Debug, Clone, PartialEq)]
pub enum FireOutcome {
    Planned(i64),
    Skipped(String),
    /// Someone else (a previous run) already recorded this firing.
    AlreadyDone,
}

const COLS: &str = "id, job_id, cron, timezone, window_ms, interval_ms, slice_len, effective_from, effective_until, \
     enabled, missed, next_fire";

fn from_row(r: &sqlx::sqlite::SqliteRow) -> ScheduleRow {
    ScheduleRow {
        id: r.get("id"),
        job_id: r.get("job_id"),
        spec: ScheduleSpec {
            cron: r.get("cron"),
            timezone: r.get("timezone"),
            window_ms: r.get("window_ms"),
            interval_ms: r.get("interval_ms"),
            slice_len: r.get("slice_len"),
            effective_from: r.get("effective_from"),
            effective_until: r.get("effective_until"),
            enabled: r.get::<i64, _>("enabled") != 0,
            run_missed: r.get::<String, _>("missed") == "run_once",
        },
        next_fire: r.get("next_fire"),
    }
}

/// Creates or replaces a job's schedule inside `tx`; `next_fire` is the caller's computation.
pub async fn upsert_schedule(
    tx: &mut Tx,
    job_id: i64,
    spec: &ScheduleSpec,
    next_fire: Option<i64>,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO schedules (job_id, cron, timezone, window_ms, interval_ms, slice_len, effective_from, effective_until, \
         enabled, missed, next_fire, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (job_id) DO UPDATE SET cron = excluded.cron, timezone = excluded.timezone, \
         window_ms = excluded.window_ms, interval_ms = excluded.interval_ms, slice_len = excluded.slice_len, \
         effective_from = excluded.effective_from, effective_until = excluded.effective_until, \
         enabled = excluded.enabled, missed = excluded.missed, next_fire = excluded.next_fire, updated_at = excluded.updated_at",
    )
    .bind(job_id)
    .bind(&spec.cron)
    .bind(&spec.timezone)
    .bind(spec.window_ms)
    .bind(spec.interval_ms)
    .bind(spec.slice_len)
    .bind(spec.effective_from)
    .bind(spec.effective_until)
    .bind(spec.enabled)
    .bind(if spec.run_missed { "run_once" } else { "skip" })
    .bind(next_fire)
    .bind(now)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn delete_schedule_tx(tx: &mut Tx, job_id: i64) -> Result<()> {
    sqlx::query("DELETE FROM schedules WHERE job_id = ?").bind(job_id).execute(&mut **tx).await?;
    Ok(())
}

pub async fn schedule_of_job_tx(tx: &mut Tx, job_id: i64) -> Result<Option<ScheduleRow>> {
    let row = sqlx::query(&format!("SELECT {COLS} FROM schedules WHERE job_id = ?"))
        .bind(job_id)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(row.as_ref().map(from_row))
}

impl Store {
    pub async fn schedule_of_job(&self, job_id: i64) -> Result<Option<ScheduleRow>> {
        let row = sqlx::query(&format!("SELECT {COLS} FROM schedules WHERE job_id = ?"))
            .bind(job_id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(from_row))
    }

    /// Enabled schedules whose next firing has come.
    pub async fn due_schedules(&self, now: i64) -> Result<Vec<ScheduleRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLS} FROM schedules WHERE enabled = 1 AND next_fire IS NOT NULL AND next_fire <= ? ORDER BY next_fire"
        ))
        .bind(now)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(from_row).collect())
    }

    pub async fn next_schedule_fire(&self) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar("SELECT MIN(next_fire) FROM schedules WHERE enabled = 1").fetch_one(self.pool()).await?)
    }

    /// One firing, all in one transaction: the firing row (unique per schedule and time), the
    /// plan — or the reason it was skipped —, the cursor reset, and the next firing time.
    /// `fire` is `None` when nothing fires (a missed firing under `missed = "skip"`, or outside
    /// the effective range): only `next_fire` moves.
    pub async fn fire_schedule(
        &self,
        schedule_id: i64,
        expected_next: i64,
        fire: Option<i64>,
        skip_reason: Option<String>,
        next_fire: Option<i64>,
        now: i64,
    ) -> Result<FireOutcome> {
        let mut tx = self.write().await?;
        let row = sqlx::query(&format!("SELECT {COLS} FROM schedules WHERE id = ?"))
            .bind(schedule_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(s) = row.as_ref().map(from_row) else { return Err(StoreError::NotFound) };
        if s.next_fire != Some(expected_next) {
            return Ok(FireOutcome::AlreadyDone);
        }
        sqlx::query("UPDATE schedules SET next_fire = ?, updated_at = ? WHERE id = ?")
            .bind(next_fire)
            .bind(now)
            .bind(schedule_id)
            .execute(&mut *tx)
            .await?;
        let Some(fire_at) = fire else {
            tx.commit().await?;
            return Ok(FireOutcome::Skipped(skip_reason.unwrap_or_default()));
        };
        let open: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM plans WHERE job_id = ? AND status IN ('waiting', 'running', 'stopped') ORDER BY id LIMIT 1",
        )
        .bind(s.job_id)
        .fetch_optional(&mut *tx)
        .await?;
        let outcome = match (skip_reason, open) {
            (Some(reason), _) => FireOutcome::Skipped(reason),
            (None, Some(plan)) => FireOutcome::Skipped(format!("plan {plan} of the job is still open")),
            (None, None) => {
                sqlx::query("UPDATE jobs SET cursor = 0, updated_at = ? WHERE id = ?")
                    .bind(now)
                    .bind(s.job_id)
                    .execute(&mut *tx)
                    .await?;
                let spec = PlanSpec {
                    start_time: fire_at,
                    end_time: fire_at + s.spec.window_ms,
                    interval_ms: s.spec.interval_ms,
                    slice_len: s.spec.slice_len,
                };
                FireOutcome::Planned(insert_plan(&mut tx, s.job_id, &spec, "schedule", now).await?.id)
            }
        };
        let (kind, plan_id, detail) = match &outcome {
            FireOutcome::Planned(id) => ("planned", Some(*id), String::new()),
            FireOutcome::Skipped(r) => ("skipped", None, r.clone()),
            FireOutcome::AlreadyDone => unreachable!("returned above"),
        };
        let inserted = sqlx::query(
            "INSERT OR IGNORE INTO schedule_firings (schedule_id, fire_at, fired_at, outcome, plan_id, detail) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(schedule_id)
        .bind(fire_at)
        .bind(now)
        .bind(kind)
        .bind(plan_id)
        .bind(&detail)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Ok(FireOutcome::AlreadyDone); // dropped: the transaction rolls back
        }
        failpoint!("store::fire_schedule::before_commit");
        tx.commit().await?;
        Ok(outcome)
    }

    pub async fn firings(&self, schedule_id: i64) -> Result<Vec<Firing>> {
        let rows = sqlx::query(
            "SELECT fire_at, fired_at, outcome, plan_id, detail FROM schedule_firings WHERE schedule_id = ? ORDER BY fire_at",
        )
        .bind(schedule_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| Firing {
                fire_at: r.get(0),
                fired_at: r.get(1),
                outcome: r.get(2),
                plan_id: r.get(3),
                detail: r.get(4),
            })
            .collect())
    }
}
