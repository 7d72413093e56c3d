//! Daily quota counters per vendor account, bucket and vendor day.

use super::{Result, Store};

/// The answer of a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    Granted {
        remaining: i64,
    },
    /// Not enough left today.
    Exhausted {
        remaining: i64,
    },
    /// No counter for today yet: learn the quota first, then call [`Store::open_quota_day`].
    Unknown,
}

impl Store {
    /// Creates today's counter with what the vendor (or the config) says is left.
    pub async fn open_quota_day(
        &self,
        vendor: &str,
        bucket: &str,
        day: &str,
        quota: i64,
        remaining: i64,
    ) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query("INSERT OR IGNORE INTO quota_usage (vendor, bucket, day, quota, remaining) VALUES (?, ?, ?, ?, ?)")
            .bind(vendor)
            .bind(bucket)
            .bind(day)
            .bind(quota)
            .bind(remaining.max(0))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Takes `n` URLs from today's quota if that many are left, committed before the vendor call.
    pub async fn reserve_quota(&self, vendor: &str, bucket: &str, day: &str, n: i64) -> Result<Reservation> {
        let mut tx = self.write().await?;
        let row: Option<i64> =
            sqlx::query_scalar("SELECT remaining FROM quota_usage WHERE vendor = ? AND bucket = ? AND day = ?")
                .bind(vendor)
                .bind(bucket)
                .bind(day)
                .fetch_optional(&mut *tx)
                .await?;
        let answer = match row {
            None => Reservation::Unknown,
            Some(r) if r < n => Reservation::Exhausted { remaining: r },
            Some(r) => {
                sqlx::query(
                    "UPDATE quota_usage SET remaining = remaining - ?, used = used + ? WHERE vendor = ? AND bucket = ? AND day = ?",
                )
                .bind(n)
                .bind(n)
                .bind(vendor)
                .bind(bucket)
                .bind(day)
                .execute(&mut *tx)
                .await?;
                Reservation::Granted { remaining: r - n }
            }
        };
        tx.commit().await?;
        Ok(answer)
    }

    /// Gives back a reservation the vendor did not use (it refused the request).
    pub async fn refund_quota(&self, vendor: &str, bucket: &str, day: &str, n: i64) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "UPDATE quota_usage SET remaining = remaining + ?, used = used - ? WHERE vendor = ? AND bucket = ? AND day = ?",
        )
        .bind(n)
        .bind(n)
        .bind(vendor)
        .bind(bucket)
        .bind(day)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The vendor said the quota is spent: nothing more today.
    pub async fn exhaust_quota(&self, vendor: &str, bucket: &str, day: &str) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query("UPDATE quota_usage SET remaining = 0 WHERE vendor = ? AND bucket = ? AND day = ?")
            .bind(vendor)
            .bind(bucket)
            .bind(day)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Today's (quota, remaining, used) for each bucket of a vendor account.
    pub async fn quota_state(&self, vendor: &str, day: &str) -> Result<Vec<(String, i64, i64, i64)>> {
        Ok(sqlx::query_as(
            "SELECT bucket, quota, remaining, used FROM quota_usage WHERE vendor = ? AND day = ? ORDER BY bucket",
        )
        .bind(vendor)
        .bind(day)
        .fetch_all(self.pool())
        .await?)
    }
}
