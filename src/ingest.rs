//! Loading URL lists into jobs: from the config (inline, file), the API (JSON or a text
//! stream), streamed in batches inside one transaction, so a job is created whole or not at
//! all and memory does not grow with the list.

use sha2::{Digest, Sha256};
use tokio::io::AsyncBufRead;
use tracing::{info, warn};

use crate::config::{JobConfig, UrlSource};
use crate::model::JobSource;
use crate::store::{self, NewJob, Store, StoreError, Tx};
use crate::urls::{ListReader, RejectReport};

/// Errors of loading a list into a job.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Not a single valid URL (DESIGN.md: `MissingUrlList`).
    #[error("the list has no valid URL{}", if .0.count > 0 { format!(" ({} lines rejected; first: {})", .0.count, .0.first.first().map(|r| format!("line {}: {}", r.line, r.reason)).unwrap_or_default()) } else { String::new() })]
    MissingUrlList(RejectReport),
    #[error("cannot read the list: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Source(String),
}

/// What loading a list did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestReport {
    /// Valid lines read (including duplicates).
    pub valid: u64,
    /// New URLs kept (duplicates dropped, first kept).
    pub added: u64,
    pub rejected: RejectReport,
    /// SHA-256 of the valid URLs in order, to notice a changed declarative list.
    pub digest: String,
}

/// URLs per batch insert; bounds memory while streaming.
const BATCH: usize = 2_000;

/// Streams a list into job `job_id` inside `tx`.
pub async fn stream_into<R: AsyncBufRead + Unpin>(
    tx: &mut Tx,
    job_id: i64,
    reader: R,
) -> Result<IngestReport, IngestError> {
    let mut list = ListReader::new(reader);
    let mut report = IngestReport::default();
    let mut hasher = Sha256::new();
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(item) = list.next().await? {
        match item {
            Ok(url) => {
                hasher.update(url.as_bytes());
                hasher.update(b"\n");
                report.valid += 1;
                batch.push(url);
                if batch.len() == BATCH {
                    report.added += store::append_urls_tx(tx, job_id, &batch).await?;
                    batch.clear();
                }
            }
            Err(r) => report.rejected.push(r.line, r.reason),
        }
    }
    report.added += store::append_urls_tx(tx, job_id, &batch).await?;
    report.digest = hex::encode(hasher.finalize());
    store::add_rejections(tx, job_id, report.rejected.count, &report.rejected.render(), None).await?;
    Ok(report)
}

/// Inline URLs as a text stream (one a line), so they follow exactly the same rules.
fn inline_text(urls: &[String]) -> Vec<u8> {
    let mut text = Vec::new();
    for u in urls {
        // A newline inside an entry would split it: replace so it is rejected, not split.
        text.extend(u.replace(['\n', '\r'], " ").as_bytes());
        text.push(b'\n');
    }
    text
}

/// Opens a job's list source as a buffered byte stream.
pub async fn open_source(
    source: &UrlSource,
    allow_private: bool,
) -> Result<Box<dyn AsyncBufRead + Unpin + Send>, IngestError> {
    match source {
        UrlSource::Inline(urls) => Ok(Box::new(std::io::Cursor::new(inline_text(urls)))),
        UrlSource::File(path) => {
            let f = tokio::fs::File::open(path)
                .await
                .map_err(|e| IngestError::Source(format!("cannot open {}: {e}", path.display())))?;
            Ok(Box::new(tokio::io::BufReader::with_capacity(64 * 1024, f)))
        }
        UrlSource::Url(u) => {
            let body = crate::remote::fetch(u, allow_private).await.map_err(|e| IngestError::Source(e.to_string()))?;
            Ok(Box::new(std::io::Cursor::new(body)))
        }
        UrlSource::Sitemap(u) => {
            let body =
                crate::remote::fetch_sitemap(u, allow_private).await.map_err(|e| IngestError::Source(e.to_string()))?;
            Ok(Box::new(std::io::Cursor::new(body)))
        }
    }
}

/// Creates a job with its whole list in one transaction. No valid URL: nothing is written and
/// the error is [`IngestError::MissingUrlList`].
pub async fn create_job<R: AsyncBufRead + Unpin>(
    store: &Store,
    new: &NewJob,
    reader: R,
    now: i64,
) -> Result<(i64, IngestReport), IngestError> {
    let mut tx = store.write().await?;
    let id = store::insert_job(&mut tx, new, now).await?;
    let report = stream_into(&mut tx, id, reader).await?;
    if report.added == 0 {
        return Err(IngestError::MissingUrlList(report.rejected));
    }
    store::add_rejections(&mut tx, id, 0, "", Some(&report.digest)).await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok((id, report))
}

/// Applies the config's declarative jobs: creates new ones, updates changed ones (a changed
/// list replaces the old one and starts over), adds new plans; never duplicates on restart.
pub async fn apply_config_jobs(
    store: &Store,
    jobs: &[JobConfig],
    allow_private: bool,
    now: i64,
) -> Result<(), IngestError> {
    for jc in jobs {
        apply_one(store, jc, allow_private, now).await.map_err(|e| match e {
            // The database failing is not the config's fault: keep it apart (exit 1, not 78).
            IngestError::Store(e) => IngestError::Store(e),
            IngestError::MissingUrlList(r) => {
                IngestError::Source(format!("job `{}`: {}", jc.name, IngestError::MissingUrlList(r)))
            }
            other => IngestError::Source(format!("job `{}`: {other}", jc.name)),
        })?;
    }
    Ok(())
}

async fn apply_one(store: &Store, jc: &JobConfig, allow_private: bool, now: i64) -> Result<(), IngestError> {
    let new = NewJob {
        name: jc.name.clone(),
        task_type: jc.task_type,
        vendors: jc.vendors.clone(),
        source: JobSource::Config,
        catch_up: jc.catch_up,
    };
    let mut tx = store.write().await?;
    let job_id = match store::job_id_by_name(&mut tx, &jc.name).await? {
        None => {
            let id = store::insert_job(&mut tx, &new, now).await?;
            let report = stream_into(&mut tx, id, open_source(&jc.source, allow_private).await?).await?;
            if report.added == 0 {
                return Err(IngestError::MissingUrlList(report.rejected));
            }
            store::add_rejections(&mut tx, id, 0, "", Some(&report.digest)).await?;
            log_report(&jc.name, &report);
            id
        }
        Some((id, digest, source)) => {
            if source != JobSource::Config.as_str() {
                return Err(IngestError::Source(format!(
                    "a job named `{}` was created through the API; rename one of them",
                    jc.name
                )));
            }
            store::update_job(
                &mut tx,
                id,
                &store::JobUpdate { task_type: jc.task_type, vendors: jc.vendors.clone(), catch_up: jc.catch_up },
                now,
            )
            .await?;
            // Read the list in a scratch job to learn its digest without disturbing the live one.
            let digest_now = scan_with(&jc.source, allow_private).await?.digest;
            if digest_now != digest && store::job_in_flight(&mut tx, id).await? {
                // The slice in flight still needs its URLs (a worker or the next start reads
                // them): replacing the list now would strand it. The change waits.
                warn!(job = %jc.name, "the URL list changed in the config, but a slice is in flight; \
                      the new list is applied at the next reload or restart");
            } else if digest_now != digest {
                warn!(job = %jc.name, "the URL list changed in the config; replacing it and starting over");
                store::clear_urls(&mut tx, id).await?;
                let report = stream_into(&mut tx, id, open_source(&jc.source, allow_private).await?).await?;
                if report.added == 0 {
                    return Err(IngestError::MissingUrlList(report.rejected));
                }
                store::add_rejections(&mut tx, id, 0, "", Some(&report.digest)).await?;
                log_report(&jc.name, &report);
            }
            id
        }
    };
    store::sync_config_plans(&mut tx, job_id, &jc.plans, now).await?;
    sync_schedule(&mut tx, job_id, jc.schedule.as_ref(), now).await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(())
}

fn log_report(job: &str, r: &IngestReport) {
    info!(job, valid = r.valid, added = r.added, rejected = r.rejected.count, "URL list loaded");
    if r.rejected.count > 0 {
        warn!(job, "rejected lines:\n{}", r.rejected.render());
    }
}

/// Reads a local list without storing it: counts and the digest (for `check-config`). Remote
/// lists are fetched by the daemon, not by a config check.
pub async fn scan(source: &UrlSource) -> Result<IngestReport, IngestError> {
    if let UrlSource::Url(u) | UrlSource::Sitemap(u) = source {
        return Err(IngestError::Source(format!("{u} is fetched when the daemon starts")));
    }
    scan_with(source, false).await
}

/// Reads a list without storing it: counts and the digest (to notice a changed list).
pub async fn scan_with(source: &UrlSource, allow_private: bool) -> Result<IngestReport, IngestError> {
    let mut list = ListReader::new(open_source(source, allow_private).await?);
    let mut report = IngestReport::default();
    let mut hasher = Sha256::new();
    while let Some(item) = list.next().await? {
        match item {
            Ok(url) => {
                hasher.update(url.as_bytes());
                hasher.update(b"\n");
                report.valid += 1;
            }
            Err(r) => report.rejected.push(r.line, r.reason),
        }
    }
    report.digest = hex::encode(hasher.finalize());
    Ok(report)
}

/// Makes a declarative job's schedule match the config. An unchanged schedule keeps its stored
/// next firing (so a restart neither repeats nor loses one); a new or changed one starts from now.
async fn sync_schedule(
    tx: &mut Tx,
    job_id: i64,
    spec: Option<&crate::config::ScheduleSpec>,
    now: i64,
) -> Result<(), IngestError> {
    let existing = store::schedule_of_job_tx(tx, job_id).await?;
    match (spec, existing) {
        (None, Some(_)) => store::delete_schedule_tx(tx, job_id).await?,
        (None, None) => {}
        (Some(spec), Some(row)) if &row.spec == spec => {}
        (Some(spec), _) => store::upsert_schedule(tx, job_id, spec, spec.next_fire(now), now).await?,
    }
    Ok(())
}

/// Checks what [`apply_config_jobs`] would trip over, without writing: every list readable with
/// at least one valid URL, and no declarative name taken by an API job. A reload runs this
/// first, so a bad list rejects the whole new config instead of applying half of it.
pub async fn check_config_jobs(store: &Store, jobs: &[JobConfig]) -> Result<(), IngestError> {
    for jc in jobs {
        let report = scan(&jc.source).await.map_err(|e| IngestError::Source(format!("job `{}`: {e}", jc.name)))?;
        if report.valid == 0 {
            return Err(IngestError::Source(format!(
                "job `{}`: {}",
                jc.name,
                IngestError::MissingUrlList(report.rejected)
            )));
        }
        if let Some(job) = store.job_by_name(&jc.name).await? {
            if job.source != JobSource::Config {
                return Err(IngestError::Source(format!(
                    "job `{}`: a job of that name was created through the API; rename one of them",
                    jc.name
                )));
            }
        }
    }
    Ok(())
}
