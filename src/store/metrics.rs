//! Read-only aggregates for `/metrics` and the systemd `STATUS=` line. Each is one grouped
//! query over the state tables, so the numbers are the database's, not a second bookkeeping.

use super::{Result, Store};

/// Upper bounds (seconds) of the slice lateness histogram buckets.
pub const LATENESS_BUCKETS: &[f64] = &[0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0];

/// A histogram read from the database: cumulative counts per bucket bound, sum and count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

/// Everything `/metrics` reads from the database, at one instant.
#[derive(Debug, Clone, Default)]
pub struct MetricsSnapshot {
    /// (vendor, task type, submit status, subtasks, URLs accepted by the vendor).
    pub subtasks: Vec<(String, String, String, i64, i64)>,
    /// (vendor, task type, URL outcome, URLs).
    pub outcomes: Vec<(String, String, String, i64)>,
    /// (vendor, error code, failed subtasks).
    pub failures: Vec<(String, String, i64)>,
    /// (plan status, plans).
    pub plans: Vec<(String, i64)>,
    pub jobs: i64,
    /// (vendor, bucket, quota, remaining, used) for one vendor day.
    pub quota: Vec<(String, String, i64, i64, i64)>,
    /// (vendor, pending subtasks paused until the quota resets).
    pub quota_waits: Vec<(String, i64)>,
    /// How late each slice's first request left: sent_at (or created_at before any send) − due_at.
    pub lateness: Histogram,
    /// Bytes of the database file (pages in use) and of its write-ahead log.
    pub db_bytes: i64,
    pub wal_bytes: i64,
}

/// The numbers of the one-line systemd status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusSummary {
    pub plans_running: i64,
    pub slices_due: i64,
    pub quota_waits: i64,
}

impl Store {
    /// The aggregates of `/metrics`; quota counters of vendor day `day`.
    pub async fn metrics_snapshot(&self, day: &str) -> Result<MetricsSnapshot> {
        let pool = self.pool();
        let subtasks = sqlx::query_as(
            "SELECT st.vendor, j.task_type, st.status, COUNT(*), COALESCE(SUM(st.urls_sent), 0) \
             FROM subtasks st JOIN slices s ON s.id = st.slice_id JOIN jobs j ON j.id = s.job_id \
             GROUP BY st.vendor, j.task_type, st.status ORDER BY 1, 2, 3",
        )
        .fetch_all(pool)
        .await?;
        let outcomes = sqlx::query_as(
            "SELECT st.vendor, j.task_type, o.status, COUNT(*) \
             FROM url_outcomes o JOIN subtasks st ON st.id = o.subtask_id JOIN slices s ON s.id = st.slice_id \
             JOIN jobs j ON j.id = s.job_id GROUP BY st.vendor, j.task_type, o.status ORDER BY 1, 2, 3",
        )
        .fetch_all(pool)
        .await?;
        let failures = sqlx::query_as(
            "SELECT vendor, error_code, COUNT(*) FROM subtasks WHERE status = 'failed' \
             GROUP BY vendor, error_code ORDER BY 1, 2",
        )
        .fetch_all(pool)
        .await?;
        let plans =
            sqlx::query_as("SELECT status, COUNT(*) FROM plans GROUP BY status ORDER BY 1").fetch_all(pool).await?;
        let jobs = sqlx::query_scalar("SELECT COUNT(*) FROM jobs").fetch_one(pool).await?;
        let quota = sqlx::query_as(
            "SELECT vendor, bucket, quota, remaining, used FROM quota_usage WHERE day = ? ORDER BY 1, 2",
        )
        .bind(day)
        .fetch_all(pool)
        .await?;
        let quota_waits = sqlx::query_as(
            "SELECT vendor, COUNT(*) FROM subtasks WHERE status = 'pending' AND wait_reason LIKE 'quota:%' \
             GROUP BY vendor ORDER BY 1",
        )
        .fetch_all(pool)
        .await?;
        let lateness = self.lateness_histogram().await?;
        let page_count: i64 = sqlx::query_scalar("PRAGMA page_count").fetch_one(pool).await?;
        let page_size: i64 = sqlx::query_scalar("PRAGMA page_size").fetch_one(pool).await?;
        let mut wal = self.path().as_os_str().to_owned();
        wal.push("-wal");
        let wal_bytes = std::fs::metadata(&wal).map(|m| m.len() as i64).unwrap_or(0);
        Ok(MetricsSnapshot {
            subtasks,
            outcomes,
            failures,
            plans,
            jobs,
            quota,
            quota_waits,
            lateness,
            db_bytes: page_count * page_size,
            wal_bytes,
        })
    }

    /// Slice lateness (sent_at, else created_at, − due_at) over every slice, bucketed in SQL.
    async fn lateness_histogram(&self) -> Result<Histogram> {
        let mut sql = String::from("SELECT COUNT(*), COALESCE(SUM(MAX(COALESCE(sent_at, created_at) - due_at, 0)), 0)");
        for b in LATENESS_BUCKETS {
            sql.push_str(&format!(
                ", COALESCE(SUM(COALESCE(sent_at, created_at) - due_at <= {}), 0)",
                (b * 1000.0) as i64
            ));
        }
        sql.push_str(" FROM slices");
        let row = sqlx::query(&sql).fetch_one(self.pool()).await?;
        use sqlx::Row;
        let count: i64 = row.get(0);
        let sum_ms: i64 = row.get(1);
        let buckets = LATENESS_BUCKETS.iter().enumerate().map(|(i, b)| (*b, row.get::<i64, _>(i + 2) as u64)).collect();
        Ok(Histogram { buckets, sum: sum_ms as f64 / 1000.0, count: count as u64 })
    }

    /// Plans running, plans with a slice due now, subtasks paused for a quota reset.
    pub async fn status_summary(&self, now: i64) -> Result<StatusSummary> {
        let (plans_running, slices_due, quota_waits): (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM plans WHERE status = 'running'), \
                    (SELECT COUNT(*) FROM plans WHERE status = 'running' AND next_due <= ?), \
                    (SELECT COUNT(*) FROM subtasks WHERE status = 'pending' AND wait_reason LIKE 'quota:%')",
        )
        .bind(now)
        .fetch_one(self.pool())
        .await?;
        Ok(StatusSummary { plans_running, slices_due, quota_waits })
    }

    /// Every job's name and vendor accounts (a reload must not remove an account still in use).
    pub async fn job_vendors(&self) -> Result<Vec<(String, Vec<String>)>> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT name, vendors FROM jobs ORDER BY name").fetch_all(self.pool()).await?;
        Ok(rows.into_iter().map(|(n, v)| (n, serde_json::from_str(&v).unwrap_or_default())).collect())
    }
}
