//! What the ESA facade keeps beside a job: its SiteId and InsertWay.

use super::{Result, Store, Tx};

pub async fn set_compat_job(tx: &mut Tx, job_id: i64, site_id: i64, insert_way: &str) -> Result<()> {
    sqlx::query("INSERT OR REPLACE INTO compat_jobs (job_id, site_id, insert_way) VALUES (?, ?, ?)")
        .bind(job_id)
        .bind(site_id)
        .bind(insert_way)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl Store {
    /// (site_id, insert_way) of a job made through the facade.
    pub async fn compat_job(&self, job_id: i64) -> Result<Option<(i64, String)>> {
        Ok(sqlx::query_as("SELECT site_id, insert_way FROM compat_jobs WHERE job_id = ?")
            .bind(job_id)
            .fetch_optional(self.pool())
            .await?)
    }

    pub async fn compat_jobs_of_site(&self, site_id: i64) -> Result<Vec<i64>> {
        Ok(sqlx::query_scalar("SELECT job_id FROM compat_jobs WHERE site_id = ? ORDER BY job_id")
            .bind(site_id)
            .fetch_all(self.pool())
            .await?)
    }
}
