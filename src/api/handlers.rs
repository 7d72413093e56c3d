//! Route handlers: request and response types of the API, translated to and from the store.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use super::extract::{Json as Body_, Path, Query};
use futures_util::TryStreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_util::io::StreamReader;

use super::{request_id, ApiError, AppState};
use crate::clock::rfc3339;
use crate::config::{parse_duration, parse_time, supports, PlanSpec, UrlSource};
use crate::ingest::{self, IngestError};
use crate::model::{CatchUp, JobSource, TaskType};
use crate::store::{Job, NewJob, Plan, PlanChange, StoreError, TaskFilter};

type ApiResult = Result<Json<Value>, ApiError>;

fn with_id(mut v: Value) -> Json<Value> {
    v["request_id"] = json!(request_id());
    Json(v)
}

fn job_json(j: &Job) -> Value {
    json!({
        "id": j.id, "name": j.name, "task_type": j.task_type, "vendors": j.vendors, "source": j.source,
        "declarative": j.source == JobSource::Config, "catch_up": j.catch_up, "url_count": j.url_count,
        "cursor": j.cursor, "rejected_count": j.rejected_count, "rejected_report": j.rejected_report,
        "created_at": rfc3339(j.created_at), "updated_at": rfc3339(j.updated_at),
    })
}

fn plan_json(p: &Plan) -> Value {
    json!({
        "id": p.id, "job_id": p.job_id, "start_time": rfc3339(p.start_time), "end_time": rfc3339(p.end_time),
        "interval": p.interval_ms as f64 / 1000.0, "slice_len": p.slice_len, "status": p.status,
        "error_info": p.error_info, "slices_sent": p.slices_sent, "urls_sent": p.urls_sent,
        "next_due": p.next_due.map(rfc3339), "source": p.source,
    })
}

fn not_found_plan(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => {
            ApiError::new(StatusCode::NOT_FOUND, "InvalidExecution.NotFound", "the plan (execution) does not exist")
        }
        other => other.into(),
    }
}

fn ingest_error(e: IngestError) -> ApiError {
    match e {
        IngestError::MissingUrlList(_) => ApiError::new(StatusCode::BAD_REQUEST, "MissingUrlList", e.to_string()),
        IngestError::Store(s) => s.into(),
        other => ApiError::invalid(other.to_string()),
    }
}

async fn editable_job(s: &AppState, id: i64) -> Result<Job, ApiError> {
    let job = s.engine.store().job(id).await?;
    if job.source == JobSource::Config {
        return Err(ApiError::invalid(format!(
            "job `{}` is declared in the config file; edit the config and reload instead",
            job.name
        )));
    }
    Ok(job)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateJob {
    name: String,
    task_type: TaskType,
    vendors: Vec<String>,
    #[serde(default)]
    urls: Vec<String>,
    /// A list (one URL a line) for the daemon to fetch.
    urls_url: Option<String>,
    /// A sitemap or sitemap index (gzip accepted) for the daemon to fetch.
    sitemap_url: Option<String>,
    catch_up: Option<CatchUp>,
}

/// Query parameters of a streamed job creation (`Content-Type: text/plain`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateJobQuery {
    name: Option<String>,
    task_type: Option<TaskType>,
    /// Comma-separated vendor account names.
    vendors: Option<String>,
    catch_up: Option<CatchUp>,
}

/// `POST /v1/jobs`: JSON with `urls`, or a text/plain stream of URLs (one a line) with the job's
/// fields in the query string, loaded in one transaction either way.
pub async fn create_job(
    State(s): State<AppState>,
    Query(q): Query<CreateJobQuery>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let text_plain = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/plain"));
    let (new, reader): (NewJob, Box<dyn tokio::io::AsyncBufRead + Send + Unpin>) = if text_plain {
        let vendors: Vec<String> = q
            .vendors
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(String::from)
            .collect();
        let new = NewJob {
            name: q.name.unwrap_or_default().trim().to_string(),
            task_type: q.task_type.ok_or_else(|| ApiError::invalid("task_type is required"))?,
            vendors,
            source: JobSource::Api,
            catch_up: q.catch_up.unwrap_or(CatchUp::Skip),
        };
        let stream = body.into_data_stream().map_err(std::io::Error::other);
        (new, Box::new(tokio::io::BufReader::new(StreamReader::new(stream))))
    } else {
        let bytes = axum::body::to_bytes(body, 16 << 20)
            .await
            .map_err(|e| ApiError::invalid(format!("the body could not be read: {e}")))?;
        let b: CreateJob =
            serde_json::from_slice(&bytes).map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))?;
        let sources =
            usize::from(!b.urls.is_empty()) + usize::from(b.urls_url.is_some()) + usize::from(b.sitemap_url.is_some());
        if sources == 0 {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "MissingUrlList",
                "give the URLs to preload or refresh in `urls`, `urls_url` or `sitemap_url`",
            ));
        }
        if sources > 1 {
            return Err(ApiError::invalid("give only one of urls, urls_url, sitemap_url"));
        }
        let source = match (&b.urls_url, &b.sitemap_url) {
            (Some(u), _) => UrlSource::Url(u.clone()),
            (_, Some(u)) => UrlSource::Sitemap(u.clone()),
            _ => UrlSource::Inline(b.urls.clone()),
        };
        let reader = ingest::open_source(&source, s.allow_private_lists).await.map_err(ingest_error)?;
        let new = NewJob {
            name: b.name.trim().to_string(),
            task_type: b.task_type,
            vendors: b.vendors,
            source: JobSource::Api,
            catch_up: b.catch_up.unwrap_or(CatchUp::Skip),
        };
        (new, reader)
    };
    check_new_job(&s, &new)?;
    let now = s.engine.now();
    let (id, report) = ingest::create_job(s.engine.store(), &new, reader, now).await.map_err(ingest_error)?;
    let job = s.engine.store().job(id).await?;
    let mut v = job_json(&job);
    v["added"] = json!(report.added);
    v["rejected"] = json!(report.rejected.count);
    v["rejected_lines"] = json!(report.rejected.render());
    Ok((StatusCode::CREATED, with_id(v)))
}

fn check_new_job(s: &AppState, new: &NewJob) -> Result<(), ApiError> {
    if new.name.is_empty() {
        return Err(ApiError::invalid("name must not be empty"));
    }
    if new.vendors.is_empty() {
        return Err(ApiError::invalid("vendors must name at least one vendor account"));
    }
    let vendors = s.engine.vendors();
    for v in &new.vendors {
        let Some(acc) = vendors.get(v) else { return Err(ApiError::invalid(format!("unknown vendor account `{v}`"))) };
        if !supports(acc.config.kind, new.task_type) {
            return Err(ApiError::invalid(format!("vendor `{v}` ({}) cannot do {}", acc.config.kind, new.task_type)));
        }
    }
    Ok(())
}

/// `POST /v1/jobs/{id}/urls`: a text/plain stream, one URL a line, appended in one transaction.
pub async fn append_urls(State(s): State<AppState>, Path(id): Path<i64>, body: Body) -> ApiResult {
    editable_job(&s, id).await?;
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let reader = tokio::io::BufReader::new(StreamReader::new(stream));
    let mut tx = s.engine.store().write().await?;
    let report = ingest::stream_into(&mut tx, id, reader).await.map_err(ingest_error)?;
    tx.commit().await.map_err(StoreError::from)?;
    s.engine.nudge();
    let job = s.engine.store().job(id).await?;
    let mut v = job_json(&job);
    v["added"] = json!(report.added);
    v["rejected"] = json!(report.rejected.count);
    v["rejected_lines"] = json!(report.rejected.render());
    Ok(with_id(v))
}

#[derive(Deserialize)]
pub struct Paging {
    page_num: Option<i64>,
    page_size: Option<i64>,
    name: Option<String>,
}

impl Paging {
    /// `(page_num, page_size)`, checked.
    pub fn pages(&self) -> Result<(i64, i64), ApiError> {
        paging(self.page_num, self.page_size)
    }
}

fn paging(num: Option<i64>, size: Option<i64>) -> Result<(i64, i64), ApiError> {
    let num = num.unwrap_or(1);
    let size = size.unwrap_or(10);
    if num < 1 {
        return Err(ApiError::invalid("page_num must be at least 1"));
    }
    if !(1..=100).contains(&size) {
        return Err(ApiError::invalid("page_size must be between 1 and 100"));
    }
    Ok((num, size))
}

pub async fn list_jobs(State(s): State<AppState>, Query(q): Query<Paging>) -> ApiResult {
    let (num, size) = paging(q.page_num, q.page_size)?;
    let (jobs, total) = s.engine.store().list_jobs(q.name.as_deref(), (num - 1) * size, size).await?;
    Ok(with_id(json!({
        "jobs": jobs.iter().map(job_json).collect::<Vec<_>>(),
        "pagination": {"page_num": num, "page_size": size, "total": total},
    })))
}

pub async fn get_job(State(s): State<AppState>, Path(id): Path<i64>) -> ApiResult {
    let job = s.engine.store().job(id).await?;
    let plans = s.engine.store().plans_of_job(id).await?;
    let progress = s.engine.store().vendor_progress(id).await?;
    let mut v = job_json(&job);
    v["submitted_count"] = json!(progress.iter().map(|p| p.urls_accepted).min().unwrap_or(0));
    v["plans"] = json!(plans.iter().map(plan_json).collect::<Vec<_>>());
    v["vendors_progress"] = json!(progress
        .iter()
        .map(|p| json!({"vendor": p.vendor, "urls_accepted": p.urls_accepted, "pending": p.pending, "done": p.done,
                        "failed": p.failed, "unknown": p.unknown, "waiting": p.waiting}))
        .collect::<Vec<_>>());
    Ok(with_id(v))
}

pub async fn delete_job(State(s): State<AppState>, Path(id): Path<i64>) -> ApiResult {
    editable_job(&s, id).await?;
    let inflight = s.engine.store().slices_of_job(id).await?.iter().any(|sl| !sl.status.is_recorded());
    if inflight {
        return Err(ApiError::invalid("the job has a slice in flight; stop its plans and retry when it is recorded"));
    }
    s.engine.store().delete_job(id).await?;
    Ok(with_id(json!({"id": id, "deleted": true})))
}

pub async fn reset_job(State(s): State<AppState>, Path(id): Path<i64>) -> ApiResult {
    editable_job(&s, id).await?;
    s.engine.store().reset_job(id, s.engine.now()).await?;
    Ok(with_id(job_json(&s.engine.store().job(id).await?)))
}

#[derive(Deserialize)]
#[serde(untagged)]
pub enum Seconds {
    Number(f64),
    Text(String),
}

impl Seconds {
    fn millis(&self, key: &str) -> Result<i64, ApiError> {
        let ms = match self {
            Seconds::Number(n) if n.is_finite() && *n > 0.0 => (n * 1000.0).min(i64::MAX as f64) as i64,
            Seconds::Text(t) => {
                parse_duration(t).map_err(|m| ApiError::invalid(format!("{key}: {m}")))?.as_millis() as i64
            }
            _ => 0,
        };
        if ms <= 0 || ms > crate::config::MAX_SPAN_MS {
            return Err(ApiError::invalid(format!("{key} must be more than 0 and at most a year")));
        }
        Ok(ms)
    }
}

fn time(key: &str, t: &str) -> Result<i64, ApiError> {
    parse_time(t).map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "TimeParseFailed", format!("{key}: {m}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanInput {
    start_time: String,
    end_time: String,
    interval: Seconds,
    slice_len: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePlans {
    plans: Vec<PlanInput>,
}

#[derive(Deserialize)]
pub struct DryRun {
    #[serde(default)]
    dry_run: bool,
}

pub async fn create_plans(
    State(s): State<AppState>,
    Path(id): Path<i64>,
    Query(q): Query<DryRun>,
    Body_(b): Body_<CreatePlans>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let job = editable_job(&s, id).await?;
    if b.plans.is_empty() {
        return Err(ApiError::invalid("plans must hold at least one plan"));
    }
    let mut specs = Vec::new();
    for p in &b.plans {
        let spec = PlanSpec {
            start_time: time("start_time", &p.start_time)?,
            end_time: time("end_time", &p.end_time)?,
            interval_ms: p.interval.millis("interval")?,
            slice_len: p.slice_len,
        };
        if !(1..=crate::config::MAX_SLICE_LEN).contains(&spec.slice_len) {
            return Err(ApiError::invalid("slice_len must be between 1 and 1000000"));
        }
        specs.push(spec);
    }
    if q.dry_run {
        return Ok((StatusCode::OK, with_id(dry_run(&s, &job, &specs).await?)));
    }
    let plans = s.engine.store().create_plans(id, &specs, "api", s.engine.now()).await?;
    s.engine.nudge();
    Ok((StatusCode::CREATED, with_id(json!({"plans": plans.iter().map(plan_json).collect::<Vec<_>>()}))))
}

pub async fn list_plans(State(s): State<AppState>, Path(id): Path<i64>) -> ApiResult {
    s.engine.store().job(id).await?;
    let plans = s.engine.store().plans_of_job(id).await?;
    let n = plans.len();
    Ok(with_id(json!({
        "plans": plans.iter().map(plan_json).collect::<Vec<_>>(),
        "pagination": {"page_num": 1, "page_size": n, "total": n},
    })))
}

pub async fn get_plan(State(s): State<AppState>, Path(id): Path<i64>) -> ApiResult {
    let plan = s.engine.store().plan(id).await.map_err(not_found_plan)?;
    Ok(with_id(plan_json(&plan)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanPatch {
    start_time: Option<String>,
    end_time: Option<String>,
    interval: Option<Seconds>,
    slice_len: Option<i64>,
}

async fn editable_plan(s: &AppState, id: i64) -> Result<Plan, ApiError> {
    let plan = s.engine.store().plan(id).await.map_err(not_found_plan)?;
    editable_job(s, plan.job_id).await?;
    Ok(plan)
}

/// Seed 002 (UpdateScheduledPreloadExecution): every field optional; the answer is the plan.
pub async fn update_plan(State(s): State<AppState>, Path(id): Path<i64>, Body_(b): Body_<PlanPatch>) -> ApiResult {
    editable_plan(&s, id).await?;
    let change = PlanChange {
        start_time: b.start_time.as_deref().map(|t| time("start_time", t)).transpose()?,
        end_time: b.end_time.as_deref().map(|t| time("end_time", t)).transpose()?,
        interval_ms: b.interval.as_ref().map(|i| i.millis("interval")).transpose()?,
        slice_len: b.slice_len,
    };
    if change.slice_len.is_some_and(|n| !(1..=crate::config::MAX_SLICE_LEN).contains(&n)) {
        return Err(ApiError::invalid("slice_len must be between 1 and 1000000"));
    }
    let plan = s.engine.store().update_plan(id, &change, s.engine.now()).await.map_err(not_found_plan)?;
    s.engine.nudge();
    Ok(with_id(plan_json(&plan)))
}

pub async fn start_plan(State(s): State<AppState>, Path(id): Path<i64>) -> ApiResult {
    editable_plan(&s, id).await?;
    let plan = s.engine.store().start_plan(id, s.engine.now()).await.map_err(not_found_plan)?;
    s.engine.nudge();
    Ok(with_id(plan_json(&plan)))
}

pub async fn stop_plan(State(s): State<AppState>, Path(id): Path<i64>) -> ApiResult {
    editable_plan(&s, id).await?;
    let plan = s.engine.store().stop_plan(id, s.engine.now()).await.map_err(not_found_plan)?;
    Ok(with_id(plan_json(&plan)))
}

pub async fn delete_plan(State(s): State<AppState>, Path(id): Path<i64>) -> ApiResult {
    editable_plan(&s, id).await?;
    s.engine.store().delete_plan(id).await.map_err(not_found_plan)?;
    Ok(with_id(json!({"id": id, "deleted": true})))
}

/// The query of `GET /v1/tasks` as asked: also the key under which identical listings share one
/// execution (the default window is computed when that execution starts).
#[derive(Deserialize, Clone, PartialEq, Eq, Hash)]
pub struct TaskQuery {
    task_id: Option<i64>,
    task_type: Option<String>,
    start_time: Option<i64>,
    end_time: Option<i64>,
    domain: Option<String>,
    url: Option<String>,
    status: Option<String>,
    page_num: Option<i64>,
    page_size: Option<i64>,
}

/// Seed 001 (ListContentTasks): without a valid time range, the past 24 hours.
pub async fn list_tasks(State(s): State<AppState>, Query(q): Query<TaskQuery>) -> ApiResult {
    let (num, size) = paging(q.page_num, q.page_size)?;
    if let Some(t) = &q.task_type {
        t.parse::<TaskType>().map_err(ApiError::invalid)?;
    }
    if let Some(st) = &q.status {
        if st != "executing" && st != "done" {
            return Err(ApiError::invalid("status is executing or done"));
        }
    }
    let state = s.clone();
    let page = s
        .task_listings
        .run(q.clone(), move || async move { task_page(&state, q, num, size).await.map(Arc::new) })
        .await
        .unwrap_or_else(|| Err(ApiError::internal()))?;
    Ok(with_id((*page).clone()))
}

/// One page of tasks with its pagination, read when the (possibly shared) execution starts.
async fn task_page(s: &AppState, q: TaskQuery, num: i64, size: i64) -> Result<Value, ApiError> {
    let now = s.engine.now();
    let (start_ms, end_ms) = match (q.start_time, q.end_time) {
        (Some(a), Some(b)) if a >= 0 && a < b => (a * 1000, b * 1000),
        _ => (now - 86_400_000, now + 1),
    };
    let filter = TaskFilter {
        task_id: q.task_id,
        task_type: q.task_type,
        start_ms,
        end_ms,
        domain: q.domain,
        url: q.url,
        status: q.status,
        offset: (num - 1) * size,
        limit: size,
    };
    let vendors = s.engine.vendors();
    let (tasks, total) = s.engine.store().list_tasks(&filter).await?;
    let tasks: Vec<Value> = tasks
        .iter()
        .map(|t| {
            let status = if t.slice.status.is_final() { "done" } else { "executing" };
            json!({
                "task_id": t.slice.id.to_string(), "task_type": t.task_type, "created_at": t.slice.created_at / 1000,
                "end_at": t.slice.done_at.map(|d| d / 1000), "task_status": status, "job_id": t.slice.job_id,
                "plan_id": t.slice.plan_id,
                "subtasks": t.subtasks.iter().map(|st| json!({
                    "vendor": vendors.get(&st.vendor).map(|a| a.config.kind.as_str()).unwrap_or("unknown"),
                    "account": st.vendor, "product_type": "cdn", "vendor_task_ids": st.vendor_task_ids,
                    "submit_status": st.status, "description": if st.error_code.is_empty() { st.wait_reason.clone() } else { format!("{}: {}", st.error_code, st.error_message) },
                    "urls": t.urls,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(json!({"tasks": tasks, "pagination": {"page_num": num, "page_size": size, "total": total}}))
}

pub async fn list_vendors(State(s): State<AppState>) -> ApiResult {
    let day = crate::quota::vendor_day(s.engine.now());
    let reset = rfc3339(crate::quota::next_vendor_day(s.engine.now()));
    let mut out = Vec::new();
    for acc in s.engine.vendors().iter() {
        let caps = acc.api.capabilities();
        let known = |b: bool| if b { json!(true) } else { json!("unknown") };
        let quota = s.engine.store().quota_state(acc.name(), &day).await?;
        let stats = &acc.stats;
        out.push(json!({
            "name": acc.name(), "kind": acc.config.kind, "endpoint": acc.config.endpoint,
            "requests_per_second": acc.config.requests_per_second,
            "max_urls_per_request": acc.config.max_urls_per_request, "daily_quota": acc.config.daily_quota,
            "capabilities": {"preload": caps.preload, "refresh_file": caps.refresh_file, "refresh_dir": caps.refresh_dir,
                             "task_status": known(caps.task_status), "quota": known(caps.quota)},
            "health": {"calls": stats.calls.load(std::sync::atomic::Ordering::Relaxed),
                       "errors": stats.errors.load(std::sync::atomic::Ordering::Relaxed),
                       "limiter_waits": stats.limiter_waits.load(std::sync::atomic::Ordering::Relaxed),
                       "circuit": acc.breaker.open_until(s.engine.now()).map(|t| format!("open until {}", rfc3339(t))).unwrap_or_else(|| "closed".into())},
            "quota": quota.iter().map(|(b, q, r, u)| json!({"bucket": b, "quota": q, "remaining": r, "used": u, "resets_at": reset})).collect::<Vec<_>>(),
        }));
    }
    Ok(with_id(json!({"vendors": out})))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RetryFailed {
    start_time: Option<String>,
    end_time: Option<String>,
    interval: Option<Seconds>,
    slice_len: Option<i64>,
}

/// `POST /v1/jobs/{id}/retry-failed`: for each vendor account with failed URLs, a new job of
/// exactly those URLs at that vendor, with a plan in the given window and pace (defaults: the
/// job's last plan's pace and window length, starting now).
pub async fn retry_failed(
    State(s): State<AppState>,
    Path(id): Path<i64>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    // The body is optional: without one, the job's last window and pace are used.
    let b: RetryFailed = if body.iter().all(u8::is_ascii_whitespace) {
        RetryFailed::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))?
    };
    let store = s.engine.store();
    let job = store.job(id).await?;
    let failed = store.failed_urls(id).await?;
    if failed.is_empty() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "MissingUrlList", "no URL of this job has failed"));
    }
    let now = s.engine.now();
    let last = store.plans_of_job(id).await?.into_iter().max_by_key(|p| p.start_time);
    let start = b.start_time.as_deref().map(|t| time("start_time", t)).transpose()?.unwrap_or(now);
    let window = last.as_ref().map_or(3_600_000, |p| p.end_time - p.start_time);
    let spec = PlanSpec {
        start_time: start,
        end_time: b.end_time.as_deref().map(|t| time("end_time", t)).transpose()?.unwrap_or(start + window),
        interval_ms: match &b.interval {
            Some(i) => i.millis("interval")?,
            None => last.as_ref().map_or(60_000, |p| p.interval_ms),
        },
        slice_len: b.slice_len.or(last.as_ref().map(|p| p.slice_len)).unwrap_or(100),
    };
    if !(1..=crate::config::MAX_SLICE_LEN).contains(&spec.slice_len) {
        return Err(ApiError::invalid("slice_len must be between 1 and 1000000"));
    }
    if spec.end_time <= spec.start_time {
        return Err(StoreError::EndBeforeStart.into());
    }
    let (_, existing) = store.list_jobs(Some(&format!("{}.retry", job.name)), 0, 1).await?;
    let mut created = Vec::new();
    let mut vendors: Vec<&String> = failed.iter().map(|(v, _)| v).collect();
    vendors.dedup();
    for vendor in vendors {
        let text: String = failed.iter().filter(|(v, _)| v == vendor).map(|(_, u)| format!("{u}\n")).collect();
        let new = NewJob {
            name: format!("{}.retry{}.{vendor}", job.name, existing + 1),
            task_type: job.task_type,
            vendors: vec![vendor.clone()],
            source: JobSource::Api,
            catch_up: job.catch_up,
        };
        let (jid, report) = ingest::create_job(store, &new, text.as_bytes(), now).await.map_err(ingest_error)?;
        let plans = store.create_plans(jid, &[spec], "api", now).await?;
        let mut v = job_json(&store.job(jid).await?);
        v["urls"] = json!(report.added);
        v["plans"] = json!(plans.iter().map(plan_json).collect::<Vec<_>>());
        created.push(v);
    }
    s.engine.nudge();
    Ok((StatusCode::CREATED, with_id(json!({"jobs": created}))))
}

/// The timetable a set of plans would follow, without creating anything (`?dry_run=true`).
async fn dry_run(s: &AppState, job: &Job, specs: &[PlanSpec]) -> Result<Value, ApiError> {
    let store = s.engine.store();
    let mut left = store.remaining_urls(job.id).await?;
    let vendors = s.engine.vendors();
    let day = crate::quota::vendor_day(s.engine.now());
    let mut plans = Vec::new();
    for spec in specs {
        let slots = (spec.end_time - spec.start_time + spec.interval_ms - 1) / spec.interval_ms;
        let urls = left.min(slots * spec.slice_len);
        let slices = (urls + spec.slice_len - 1) / spec.slice_len;
        let timetable: Vec<Value> = (0..slices.min(100))
            .map(|k| {
                json!({"slice": k, "due": rfc3339(spec.start_time + k * spec.interval_ms),
                       "urls": (urls - k * spec.slice_len).min(spec.slice_len)})
            })
            .collect();
        let mut per_vendor = Vec::new();
        for name in &job.vendors {
            let Some(acc) = vendors.get(name) else { continue };
            let per_request = acc.config.max_urls_per_request as i64;
            let mut v = json!({
                "vendor": name,
                "requests_per_slice": (spec.slice_len + per_request - 1) / per_request,
                "requests": (0..slices).map(|k| ((urls - k * spec.slice_len).min(spec.slice_len) + per_request - 1) / per_request).sum::<i64>(),
            });
            if let Some(q) = acc.config.daily_quota {
                let today = store.quota_state(name, &day).await?;
                let bucket = job.task_type.to_string();
                let remaining = today.iter().find(|(b, ..)| *b == bucket).map_or(q as i64, |(_, _, r, _)| *r);
                let days = (urls + q as i64 - 1) / q as i64;
                v["daily_quota"] = json!(q);
                v["quota_left_today"] = json!(remaining);
                v["quota_needed"] = json!(urls);
                v["quota_note"] = json!(format!(
                    "needs {urls} URLs of {} quota on {name}: {days} vendor-day(s) at {q}/day; {remaining} left today",
                    job.task_type
                ));
            }
            per_vendor.push(v);
        }
        plans.push(json!({
            "start_time": rfc3339(spec.start_time), "end_time": rfc3339(spec.end_time),
            "interval": spec.interval_ms as f64 / 1000.0, "slice_len": spec.slice_len,
            "slices": slices, "urls": urls, "window_fits_list": urls == left,
            "urls_left_after": left - urls, "timetable": timetable, "vendors": per_vendor,
        }));
        left -= urls;
    }
    Ok(json!({"dry_run": true, "plans": plans}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleInput {
    cron: String,
    timezone: Option<String>,
    window: Seconds,
    interval: Seconds,
    slice_len: i64,
    effective_from: Option<String>,
    effective_until: Option<String>,
    enabled: Option<bool>,
    /// `run_once` (default) or `skip`.
    missed: Option<String>,
}

fn schedule_json(job_id: i64, row: &crate::store::ScheduleRow) -> Value {
    let s = &row.spec;
    json!({
        "job_id": job_id, "cron": s.cron, "timezone": s.timezone, "window": s.window_ms as f64 / 1000.0,
        "interval": s.interval_ms as f64 / 1000.0, "slice_len": s.slice_len,
        "effective_from": s.effective_from.map(rfc3339), "effective_until": s.effective_until.map(rfc3339),
        "enabled": s.enabled, "missed": if s.run_missed { "run_once" } else { "skip" },
        "next_fire": row.next_fire.map(rfc3339),
    })
}

pub async fn get_schedule(State(s): State<AppState>, Path(id): Path<i64>) -> ApiResult {
    s.engine.store().job(id).await?;
    match s.engine.store().schedule_of_job(id).await? {
        Some(row) => Ok(with_id(schedule_json(id, &row))),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, "InvalidSchedule.NotFound", "the job has no schedule")),
    }
}

/// `PUT /v1/jobs/{id}/schedule`: creates or replaces the job's recurring schedule.
pub async fn put_schedule(State(s): State<AppState>, Path(id): Path<i64>, Body_(b): Body_<ScheduleInput>) -> ApiResult {
    editable_job(&s, id).await?;
    crate::cron::Schedule::parse(&b.cron).map_err(|e| ApiError::invalid(format!("cron: {e}")))?;
    let timezone = b.timezone.unwrap_or_else(|| "UTC".into());
    timezone
        .parse::<chrono_tz::Tz>()
        .map_err(|_| ApiError::invalid(format!("timezone: unknown IANA time zone `{timezone}`")))?;
    let spec = crate::config::ScheduleSpec {
        cron: b.cron,
        timezone,
        window_ms: b.window.millis("window")?,
        interval_ms: b.interval.millis("interval")?,
        slice_len: b.slice_len,
        effective_from: b.effective_from.as_deref().map(|t| time("effective_from", t)).transpose()?,
        effective_until: b.effective_until.as_deref().map(|t| time("effective_until", t)).transpose()?,
        enabled: b.enabled.unwrap_or(true),
        run_missed: match b.missed.as_deref() {
            None | Some("run_once") => true,
            Some("skip") => false,
            Some(other) => return Err(ApiError::invalid(format!("missed: `{other}`: expected run_once or skip"))),
        },
    };
    if !(1..=crate::config::MAX_SLICE_LEN).contains(&spec.slice_len) {
        return Err(ApiError::invalid("slice_len must be between 1 and 1000000"));
    }
    if let (Some(f), Some(u)) = (spec.effective_from, spec.effective_until) {
        if u <= f {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "InvalidEndTime.Mismatch",
                "effective_until is not after effective_from",
            ));
        }
    }
    let now = s.engine.now();
    let mut tx = s.engine.store().write().await?;
    crate::store::upsert_schedule(&mut tx, id, &spec, spec.next_fire(now), now).await?;
    tx.commit().await.map_err(StoreError::from)?;
    s.engine.nudge();
    let row = s.engine.store().schedule_of_job(id).await?.ok_or(StoreError::NotFound)?;
    Ok(with_id(schedule_json(id, &row)))
}

pub async fn delete_schedule(State(s): State<AppState>, Path(id): Path<i64>) -> ApiResult {
    editable_job(&s, id).await?;
    let mut tx = s.engine.store().write().await?;
    crate::store::delete_schedule_tx(&mut tx, id).await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(with_id(json!({"job_id": id, "deleted": true})))
}
