//! Report subscriptions, their deliveries, and the four reports computed over a period.

use std::collections::BTreeMap;

use futures_util::TryStreamExt;
use sqlx::Row;

use super::{found, Result, Store, StoreError};
use crate::clock::rfc3339;
use crate::reports::{Condition, Deliver, ReportSchedule, ReportSelection, SubscriptionSpec, REPORTS};

/// A stored subscription.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    pub id: i64,
    pub spec: SubscriptionSpec,
    /// `api` or `config`.
    pub source: String,
    pub next_run: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One delivery (one period of one subscription).
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub id: i64,
    pub subscription_id: i64,
    pub period_start: i64,
    pub period_end: i64,
    /// `pending`, `sending`, `sent` or `failed`.
    pub status: String,
    pub attempts: i64,
    pub error: String,
    pub next_attempt_at: Option<i64>,
    pub sent_at: Option<i64>,
}

/// A delivery claimed for one attempt, with what it needs.
#[derive(Debug, Clone)]
pub struct DeliveryWork {
    pub id: i64,
    pub subscription: String,
    pub spec: SubscriptionSpec,
    pub period_start: i64,
    pub period_end: i64,
    /// Including this one.
    pub attempts: i64,
}

/// One computed report: a table.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub report_id: u32,
    pub title: String,
    pub columns: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
    /// Rows beyond [`MAX_ROWS`] were left out.
    pub truncated: bool,
}

/// Rows per report at most (a mail with a million failed URLs helps nobody).
pub const MAX_ROWS: usize = 10_000;

const COLS: &str = "id, name, reports, domain_names, deliver, schedule, source, next_run, created_at, updated_at";

fn from_row(r: &sqlx::sqlite::SqliteRow) -> Result<Subscription> {
    let bad =
        |what: &str, e: serde_json::Error| StoreError::Conflict(format!("stored subscription {what} is invalid: {e}"));
    let reports: Vec<ReportSelection> =
        serde_json::from_str(&r.get::<String, _>("reports")).map_err(|e| bad("reports", e))?;
    let domain_names: Vec<String> =
        serde_json::from_str(&r.get::<String, _>("domain_names")).map_err(|e| bad("domain_names", e))?;
    let deliver: Deliver = serde_json::from_str(&r.get::<String, _>("deliver")).map_err(|e| bad("deliver", e))?;
    let schedule: ReportSchedule =
        serde_json::from_str(&r.get::<String, _>("schedule")).map_err(|e| bad("schedule", e))?;
    Ok(Subscription {
        id: r.get("id"),
        spec: SubscriptionSpec { name: r.get("name"), reports, domain_names, deliver, schedule },
        source: r.get("source"),
        next_run: r.get("next_run"),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
    })
}

fn delivery_from_row(r: &sqlx::sqlite::SqliteRow) -> Delivery {
    Delivery {
        id: r.get("id"),
        subscription_id: r.get("subscription_id"),
        period_start: r.get("period_start"),
        period_end: r.get("period_end"),
        status: r.get("status"),
        attempts: r.get("attempts"),
        error: r.get("error"),
        next_attempt_at: r.get("next_attempt_at"),
        sent_at: r.get("sent_at"),
    }
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("plain data serializes")
}

type Tx = super::Tx;

async fn name_taken(tx: &mut Tx, name: &str, except: Option<i64>) -> Result<bool> {
    let id: Option<i64> = sqlx::query_scalar("SELECT id FROM report_subscriptions WHERE name = ?")
        .bind(name)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(id.is_some_and(|id| Some(id) != except))
}

async fn insert_tx(tx: &mut Tx, spec: &SubscriptionSpec, source: &str, next_run: Option<i64>, now: i64) -> Result<i64> {
    Ok(sqlx::query(
        "INSERT INTO report_subscriptions (name, reports, domain_names, deliver, schedule, enabled, source, next_run, \
         created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&spec.name)
    .bind(json(&spec.reports))
    .bind(json(&spec.domain_names))
    .bind(json(&spec.deliver))
    .bind(json(&spec.schedule))
    .bind(spec.schedule.enabled)
    .bind(source)
    .bind(next_run)
    .bind(now)
    .bind(now)
    .execute(&mut **tx)
    .await?
    .last_insert_rowid())
}

async fn update_tx(tx: &mut Tx, id: i64, spec: &SubscriptionSpec, next_run: Option<i64>, now: i64) -> Result<()> {
    sqlx::query(
        "UPDATE report_subscriptions SET name = ?, reports = ?, domain_names = ?, deliver = ?, schedule = ?, \
         enabled = ?, next_run = ?, updated_at = ? WHERE id = ?",
    )
    .bind(&spec.name)
    .bind(json(&spec.reports))
    .bind(json(&spec.domain_names))
    .bind(json(&spec.deliver))
    .bind(json(&spec.schedule))
    .bind(spec.schedule.enabled)
    .bind(next_run)
    .bind(now)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    /// Creates a subscription; `NameExists` if the name is taken, `LimitExceeded` beyond `max`.
    pub async fn insert_subscription(
        &self,
        spec: &SubscriptionSpec,
        source: &str,
        max: usize,
        now: i64,
    ) -> Result<Subscription> {
        let mut tx = self.write().await?;
        if name_taken(&mut tx, &spec.name, None).await? {
            return Err(StoreError::NameExists(spec.name.clone()));
        }
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM report_subscriptions").fetch_one(&mut *tx).await?;
        if count as usize >= max {
            return Err(StoreError::LimitExceeded(max));
        }
        let id = insert_tx(&mut tx, spec, source, spec.schedule.next_run(now), now).await?;
        tx.commit().await?;
        self.subscription(id).await
    }

    pub async fn subscription(&self, id: i64) -> Result<Subscription> {
        let row = sqlx::query(&format!("SELECT {COLS} FROM report_subscriptions WHERE id = ?"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        from_row(&found(row)?)
    }

    pub async fn list_subscriptions(&self, offset: i64, limit: i64) -> Result<(Vec<Subscription>, i64)> {
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM report_subscriptions").fetch_one(self.pool()).await?;
        let rows = sqlx::query(&format!("SELECT {COLS} FROM report_subscriptions ORDER BY id LIMIT ? OFFSET ?"))
            .bind(limit)
            .bind(offset)
            .fetch_all(self.pool())
            .await?;
        Ok((rows.iter().map(from_row).collect::<Result<_>>()?, total))
    }

    /// Replaces a subscription's spec. `next_run` is recomputed when the schedule changed.
    pub async fn update_subscription(&self, id: i64, spec: &SubscriptionSpec, now: i64) -> Result<Subscription> {
        let old = self.subscription(id).await?;
        let mut tx = self.write().await?;
        if name_taken(&mut tx, &spec.name, Some(id)).await? {
            return Err(StoreError::NameExists(spec.name.clone()));
        }
        let next = if old.spec.schedule == spec.schedule { old.next_run } else { spec.schedule.next_run(now) };
        update_tx(&mut tx, id, spec, next, now).await?;
        tx.commit().await?;
        self.subscription(id).await
    }

    pub async fn delete_subscription(&self, id: i64) -> Result<()> {
        let mut tx = self.write().await?;
        let n = sqlx::query("DELETE FROM report_subscriptions WHERE id = ?").bind(id).execute(&mut *tx).await?;
        if n.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().await?;
        Ok(())
    }

    /// Applies the config's `[[report]]` list: new ones created, changed ones updated, config
    /// subscriptions no longer in the file deleted. A name used by an API subscription is an error.
    pub async fn sync_config_subscriptions(&self, specs: &[SubscriptionSpec], now: i64) -> Result<()> {
        let mut tx = self.write().await?;
        let rows = sqlx::query(&format!("SELECT {COLS} FROM report_subscriptions")).fetch_all(&mut *tx).await?;
        let existing: Vec<Subscription> = rows.iter().map(from_row).collect::<Result<_>>()?;
        for spec in specs {
            match existing.iter().find(|s| s.spec.name == spec.name) {
                Some(s) if s.source != "config" => {
                    return Err(StoreError::Conflict(format!(
                        "report subscription `{}` was created through the API; rename one of them",
                        spec.name
                    )))
                }
                Some(s) if &s.spec == spec => {}
                Some(s) => {
                    let next = if s.spec.schedule == spec.schedule { s.next_run } else { spec.schedule.next_run(now) };
                    update_tx(&mut tx, s.id, spec, next, now).await?;
                }
                None => {
                    insert_tx(&mut tx, spec, "config", spec.schedule.next_run(now), now).await?;
                }
            }
        }
        for s in existing.iter().filter(|s| s.source == "config" && !specs.iter().any(|c| c.name == s.spec.name)) {
            sqlx::query("DELETE FROM report_subscriptions WHERE id = ?").bind(s.id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Enabled subscriptions whose firing has come.
    pub async fn due_subscriptions(&self, now: i64) -> Result<Vec<Subscription>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLS} FROM report_subscriptions WHERE enabled = 1 AND next_run IS NOT NULL AND next_run <= ? \
             ORDER BY next_run"
        ))
        .bind(now)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// In one transaction: moves `next_run` from `expected` to `next` and queues the period
    /// (once: unique per subscription and period start). False if another pass did it already
    /// or the period was queued before.
    pub async fn queue_delivery(
        &self,
        subscription_id: i64,
        expected: i64,
        period_start: i64,
        period_end: i64,
        next: Option<i64>,
        now: i64,
    ) -> Result<bool> {
        let mut tx = self.write().await?;
        let moved = sqlx::query("UPDATE report_subscriptions SET next_run = ? WHERE id = ? AND next_run = ?")
            .bind(next)
            .bind(subscription_id)
            .bind(expected)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if moved == 0 {
            return Ok(false);
        }
        let queued = sqlx::query(
            "INSERT OR IGNORE INTO report_deliveries (subscription_id, period_start, period_end, status, next_attempt_at, \
             created_at, updated_at) VALUES (?, ?, ?, 'pending', ?, ?, ?)",
        )
        .bind(subscription_id)
        .bind(period_start)
        .bind(period_end)
        .bind(now)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(queued == 1)
    }

    /// Pending deliveries whose attempt is due.
    pub async fn due_deliveries(&self, now: i64) -> Result<Vec<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM report_deliveries WHERE status = 'pending' AND next_attempt_at <= ? ORDER BY next_attempt_at, id",
        )
        .bind(now)
        .fetch_all(self.pool())
        .await?)
    }

    /// Marks a pending delivery `sending` (committed before the attempt). `None` if it is not
    /// pending any more.
    pub async fn claim_delivery(&self, id: i64, now: i64) -> Result<Option<DeliveryWork>> {
        let mut tx = self.write().await?;
        let row = sqlx::query(
            "UPDATE report_deliveries SET status = 'sending', attempts = attempts + 1, updated_at = ? \
             WHERE id = ? AND status = 'pending' RETURNING subscription_id, period_start, period_end, attempts",
        )
        .bind(now)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let sub_row = sqlx::query(&format!("SELECT {COLS} FROM report_subscriptions WHERE id = ?"))
            .bind(row.get::<i64, _>("subscription_id"))
            .fetch_one(&mut *tx)
            .await?;
        let sub = from_row(&sub_row)?;
        tx.commit().await?;
        Ok(Some(DeliveryWork {
            id,
            subscription: sub.spec.name.clone(),
            spec: sub.spec,
            period_start: row.get("period_start"),
            period_end: row.get("period_end"),
            attempts: row.get("attempts"),
        }))
    }

    /// Records an attempt: sent (`error` None), to retry at `retry_at`, or failed for good.
    pub async fn finish_delivery(&self, id: i64, error: Option<&str>, retry_at: Option<i64>, now: i64) -> Result<()> {
        let (status, sent_at) = match (error, retry_at) {
            (None, _) => ("sent", Some(now)),
            (Some(_), Some(_)) => ("pending", None),
            (Some(_), None) => ("failed", None),
        };
        let mut tx = self.write().await?;
        sqlx::query(
            "UPDATE report_deliveries SET status = ?, error = ?, next_attempt_at = ?, sent_at = ?, updated_at = ? \
             WHERE id = ? AND status = 'sending'",
        )
        .bind(status)
        .bind(error.unwrap_or(""))
        .bind(retry_at)
        .bind(sent_at)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deliveries left `sending` by a crash become `failed`: they may have gone out.
    pub async fn fail_interrupted_deliveries(&self, now: i64) -> Result<usize> {
        let mut tx = self.write().await?;
        let n = sqlx::query(
            "UPDATE report_deliveries SET status = 'failed', next_attempt_at = NULL, updated_at = ?, \
             error = 'interrupted while sending (the daemon stopped); not sent again, so it is never delivered twice' \
             WHERE status = 'sending'",
        )
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n as usize)
    }

    /// The earliest firing or retry to come.
    pub async fn next_report_wake(&self) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(t) FROM (SELECT MIN(next_run) AS t FROM report_subscriptions WHERE enabled = 1 \
             UNION ALL SELECT MIN(next_attempt_at) FROM report_deliveries WHERE status = 'pending')",
        )
        .fetch_one(self.pool())
        .await?)
    }

    /// The latest deliveries of a subscription, newest first.
    pub async fn deliveries(&self, subscription_id: i64, limit: i64) -> Result<Vec<Delivery>> {
        let rows = sqlx::query(
            "SELECT id, subscription_id, period_start, period_end, status, attempts, error, next_attempt_at, sent_at \
             FROM report_deliveries WHERE subscription_id = ? ORDER BY period_start DESC LIMIT ?",
        )
        .bind(subscription_id)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(delivery_from_row).collect())
    }

    /// Computes one report over `[start, end)`, filtered by its conditions and the domains.
    pub async fn compute_report(
        &self,
        sel: &ReportSelection,
        domains: &[String],
        start: i64,
        end: i64,
    ) -> Result<Report> {
        let title = REPORTS.iter().find(|(id, _)| *id == sel.report_id).map(|(_, t)| t.to_string()).unwrap_or_default();
        let filter = Filter { conditions: &sel.conditions, domains };
        let mut report = match sel.report_id {
            1 => self.summary_report(&filter, start, end).await?,
            2 => self.failed_urls_report(&filter, start, end).await?,
            3 => self.quota_report(&filter, start, end).await?,
            4 => self.plans_report(&filter, start, end).await?,
            other => return Err(StoreError::Conflict(format!("unknown report_id {other}"))),
        };
        report.report_id = sel.report_id;
        report.title = title;
        if report.rows.len() > MAX_ROWS {
            report.rows.truncate(MAX_ROWS);
            report.truncated = true;
        }
        Ok(report)
    }

    /// Streams every URL outcome of the slices taken in the period.
    async fn for_each_outcome(&self, start: i64, end: i64, mut f: impl FnMut(OutcomeRow)) -> Result<()> {
        let mut rows = sqlx::query(
            "SELECT u.url, st.vendor, j.task_type, j.name, o.status, o.detail, st.error_code, st.error_message, \
             s.created_at, st.done_at FROM slices s JOIN jobs j ON j.id = s.job_id JOIN subtasks st ON st.slice_id = s.id \
             JOIN url_outcomes o ON o.subtask_id = st.id JOIN urls u ON u.job_id = s.job_id AND u.seq = o.seq \
             WHERE s.created_at >= ? AND s.created_at < ? ORDER BY s.created_at, s.id, st.id, o.seq",
        )
        .bind(start)
        .bind(end)
        .fetch(self.pool());
        while let Some(r) = rows.try_next().await? {
            let url: String = r.get(0);
            f(OutcomeRow {
                domain: domain_of(&url),
                url,
                vendor: r.get(1),
                task_type: r.get(2),
                job: r.get(3),
                status: r.get(4),
                detail: r.get(5),
                error_code: r.get(6),
                error_message: r.get(7),
                created_at: r.get(8),
                done_at: r.get(9),
            });
        }
        Ok(())
    }

    async fn summary_report(&self, filter: &Filter<'_>, start: i64, end: i64) -> Result<Report> {
        #[derive(Default)]
        struct Group {
            submitted: u64,
            done: u64,
            failed: u64,
            times: Vec<i64>,
        }
        let mut groups: BTreeMap<(String, String, String), Group> = BTreeMap::new();
        self.for_each_outcome(start, end, |o| {
            if !filter.url_row(&o) {
                return;
            }
            let g = groups.entry((o.domain, o.vendor, o.task_type)).or_default();
            g.submitted += 1;
            match o.status.as_str() {
                "done" => {
                    g.done += 1;
                    if let Some(d) = o.done_at {
                        g.times.push(d - o.created_at);
                    }
                }
                "failed" => g.failed += 1,
                _ => {}
            }
        })
        .await?;
        let rows = groups
            .into_iter()
            .map(|((domain, vendor, task_type), mut g)| {
                g.times.sort_unstable();
                vec![
                    domain,
                    vendor,
                    task_type,
                    g.submitted.to_string(),
                    g.done.to_string(),
                    g.failed.to_string(),
                    format!("{:.1}", 100.0 * g.done as f64 / g.submitted.max(1) as f64),
                    percentile(&g.times, 50).map(seconds).unwrap_or_default(),
                    percentile(&g.times, 95).map(seconds).unwrap_or_default(),
                ]
            })
            .collect();
        Ok(Report {
            report_id: 1,
            title: String::new(),
            columns: vec![
                "domain",
                "vendor",
                "task_type",
                "urls_submitted",
                "urls_done",
                "urls_failed",
                "success_rate_percent",
                "median_time_to_done_s",
                "p95_time_to_done_s",
            ],
            rows,
            truncated: false,
        })
    }

    async fn failed_urls_report(&self, filter: &Filter<'_>, start: i64, end: i64) -> Result<Report> {
        let mut rows = Vec::new();
        self.for_each_outcome(start, end, |o| {
            if o.status != "failed" || !filter.url_row(&o) || rows.len() > MAX_ROWS {
                return;
            }
            let message = if o.detail.is_empty() { o.error_message } else { o.detail };
            rows.push(vec![
                rfc3339(o.created_at),
                o.domain,
                o.url,
                o.vendor,
                o.task_type,
                o.job,
                o.error_code,
                message,
            ]);
        })
        .await?;
        Ok(Report {
            report_id: 2,
            title: String::new(),
            columns: vec!["time", "domain", "url", "vendor", "task_type", "job", "error_code", "error_message"],
            rows,
            truncated: false,
        })
    }

    async fn quota_report(&self, filter: &Filter<'_>, start: i64, end: i64) -> Result<Report> {
        // Vendor days (Asia/Shanghai) that overlap the period.
        let mut days = Vec::new();
        let mut t = start;
        while t < end && days.len() < 400 {
            days.push(crate::quota::vendor_day(t));
            t = crate::quota::next_vendor_day(t);
        }
        let (first, last) = match (days.first(), days.last()) {
            (Some(f), Some(l)) => (f.clone(), l.clone()),
            _ => return Ok(empty(3, &QUOTA_COLS)),
        };
        let rows = sqlx::query(
            "SELECT vendor, bucket, day, quota, used, remaining FROM quota_usage WHERE day >= ? AND day <= ? \
             ORDER BY vendor, bucket, day",
        )
        .bind(first)
        .bind(last)
        .fetch_all(self.pool())
        .await?;
        let rows = rows
            .iter()
            .filter_map(|r| {
                let vendor: String = r.get(0);
                let bucket: String = r.get(1);
                let task_type = bucket.split(':').next().unwrap_or("").to_string();
                if !filter.check("vendor", &vendor) || !filter.check("task_type", &task_type) {
                    return None;
                }
                let (quota, used, remaining): (i64, i64, i64) = (r.get(3), r.get(4), r.get(5));
                Some(vec![
                    vendor,
                    bucket,
                    r.get::<String, _>(2),
                    quota.to_string(),
                    used.to_string(),
                    remaining.to_string(),
                    format!("{:.1}", 100.0 * used as f64 / quota.max(1) as f64),
                ])
            })
            .collect();
        Ok(Report { rows, ..empty(3, &QUOTA_COLS) })
    }

    async fn plans_report(&self, filter: &Filter<'_>, start: i64, end: i64) -> Result<Report> {
        let rows = sqlx::query(
            "SELECT p.id, j.name, j.task_type, j.vendors, p.status, p.start_time, p.end_time, p.urls_sent, p.error_info, \
             j.cursor, \
             (SELECT MAX(s.last_seq) FROM slices s WHERE s.plan_id = p.id) AS last_seq, \
             (SELECT COUNT(*) FROM slices s JOIN subtasks st ON st.slice_id = s.id JOIN url_outcomes o ON o.subtask_id = st.id \
              WHERE s.plan_id = p.id AND o.status = 'failed') AS failed \
             FROM plans p JOIN jobs j ON j.id = p.job_id \
             WHERE p.status IN ('finished', 'failed') AND p.updated_at >= ? AND p.updated_at < ? ORDER BY p.updated_at, p.id",
        )
        .bind(start)
        .bind(end)
        .fetch_all(self.pool())
        .await?;
        let mut out = Vec::new();
        for r in &rows {
            let plan_id: i64 = r.get(0);
            let last_seq: Option<i64> = r.get("last_seq");
            let after: i64 = last_seq.map(|l| l + 1).unwrap_or_else(|| r.get("cursor"));
            let left: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM urls WHERE job_id = (SELECT job_id FROM plans WHERE id = ?) AND seq >= ?",
            )
            .bind(plan_id)
            .bind(after)
            .fetch_one(self.pool())
            .await?;
            let failed: i64 = r.get("failed");
            let status: String = r.get("status");
            if status != "failed" && left == 0 && failed == 0 {
                continue;
            }
            let vendors: Vec<String> = serde_json::from_str(&r.get::<String, _>("vendors")).unwrap_or_default();
            let task_type: String = r.get("task_type");
            if !filter.check_any("vendor", &vendors)
                || !filter.check("task_type", &task_type)
                || !filter.check("status", &status)
            {
                continue;
            }
            out.push(vec![
                plan_id.to_string(),
                r.get::<String, _>("name"),
                task_type,
                vendors.join(" "),
                status,
                rfc3339(r.get("start_time")),
                rfc3339(r.get("end_time")),
                r.get::<i64, _>("urls_sent").to_string(),
                left.to_string(),
                failed.to_string(),
                r.get::<String, _>("error_info"),
            ]);
        }
        Ok(Report {
            report_id: 4,
            title: String::new(),
            columns: vec![
                "plan_id",
                "job",
                "task_type",
                "vendors",
                "status",
                "start_time",
                "end_time",
                "urls_sent",
                "urls_left",
                "urls_failed",
                "error_info",
            ],
            rows: out,
            truncated: false,
        })
    }
}

const QUOTA_COLS: [&str; 7] = ["vendor", "bucket", "day", "quota", "used", "remaining", "use_rate_percent"];

fn empty(id: u32, cols: &[&'static str]) -> Report {
    Report { report_id: id, title: String::new(), columns: cols.to_vec(), rows: Vec::new(), truncated: false }
}

struct OutcomeRow {
    url: String,
    domain: String,
    vendor: String,
    task_type: String,
    job: String,
    status: String,
    detail: String,
    error_code: String,
    error_message: String,
    created_at: i64,
    done_at: Option<i64>,
}

/// A report's conditions and the subscription's domains.
struct Filter<'a> {
    conditions: &'a [Condition],
    domains: &'a [String],
}

impl Filter<'_> {
    /// Every condition on `field` accepts `value`.
    fn check(&self, field: &str, value: &str) -> bool {
        self.conditions.iter().filter(|c| c.field == field).all(|c| c.accepts(value))
    }

    /// For a multi-valued field (a plan's vendors): `in`/`eq` need one value in the list,
    /// `not_in` needs none.
    fn check_any(&self, field: &str, values: &[String]) -> bool {
        self.conditions.iter().filter(|c| c.field == field).all(|c| match c.op.as_str() {
            "not_in" => values.iter().all(|v| c.accepts(v)),
            _ => values.iter().any(|v| c.accepts(v)),
        })
    }

    fn url_row(&self, o: &OutcomeRow) -> bool {
        (self.domains.is_empty() || self.domains.iter().any(|d| d.eq_ignore_ascii_case(&o.domain)))
            && self.check("domain", &o.domain)
            && self.check("vendor", &o.vendor)
            && self.check("task_type", &o.task_type)
            && self.check("status", &o.status)
    }
}

fn domain_of(url: &str) -> String {
    url::Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_ascii_lowercase)).unwrap_or_default()
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[i64], p: usize) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    Some(sorted[rank - 1])
}

fn seconds(ms: i64) -> String {
    format!("{:.3}", ms as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<i64> = (1..=20).collect();
        assert_eq!(percentile(&v, 50), Some(10));
        assert_eq!(percentile(&v, 95), Some(19));
        assert_eq!(percentile(&[7], 95), Some(7));
        assert_eq!(percentile(&[], 50), None);
        assert_eq!(domain_of("https://CDN.example.com:8443/a"), "cdn.example.com");
    }
}
