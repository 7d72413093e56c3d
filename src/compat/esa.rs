//! The ESA scheduled-preload actions, mapped onto preloadd's jobs (ScheduledPreloadJob) and
//! plans (ScheduledPreloadExecution). Ids are ESA's 24-hex-digit shape around our integer ids.

use axum::http::StatusCode;
use chrono::SecondsFormat;
use serde_json::{json, Value};

use super::CompatState;
use crate::config::{PlanSpec, UrlSource};
use crate::emulator::protocol::{ApiError as AliError, Params};
use crate::ingest::{self, IngestError};
use crate::model::{CatchUp, JobSource, TaskType};
use crate::store::{Job, NewJob, Plan, PlanChange, StoreError};

/// What the facade reports as the account id (`AliUid`).
const ALI_UID: &str = "preloadd";

pub(super) async fn dispatch(s: &CompatState, action: &str, p: &Params) -> Result<Value, AliError> {
    match action {
        "CreateScheduledPreloadJob" => create_job(s, p).await,
        "GetScheduledPreloadJob" => job_body(s, &job_of(s, p).await?).await,
        "ListScheduledPreloadJobs" => list_jobs(s, p).await,
        "DeleteScheduledPreloadJob" => delete_job(s, p).await,
        "ResetScheduledPreloadJob" => {
            let job = job_of(s, p).await?;
            s.engine.store().reset_job(job.id, s.engine.now()).await.map_err(store_error)?;
            job_body(s, &s.engine.store().job(job.id).await.map_err(store_error)?).await
        }
        "CreateScheduledPreloadExecutions" => create_executions(s, p).await,
        "ListScheduledPreloadExecutions" => {
            let job = job_of(s, p).await?;
            let plans = s.engine.store().plans_of_job(job.id).await.map_err(store_error)?;
            Ok(json!({"Executions": plans.iter().map(execution).collect::<Vec<_>>(), "TotalCount": plans.len()}))
        }
        "UpdateScheduledPreloadExecution" => update_execution(s, p).await,
        "StartScheduledPreloadExecution" => {
            let plan = plan_of(s, p).await?;
            let plan = s.engine.store().start_plan(plan.id, s.engine.now()).await.map_err(plan_error)?;
            s.engine.nudge();
            Ok(execution(&plan))
        }
        "StopScheduledPreloadExecution" => {
            let plan = plan_of(s, p).await?;
            let plan = s.engine.store().stop_plan(plan.id, s.engine.now()).await.map_err(plan_error)?;
            Ok(execution(&plan))
        }
        "DeleteScheduledPreloadExecution" => {
            let plan = plan_of(s, p).await?;
            s.engine.store().delete_plan(plan.id).await.map_err(plan_error)?;
            Ok(json!({}))
        }
        _ => Err(AliError::new(
            StatusCode::NOT_FOUND,
            "InvalidAction.NotFound",
            "Specified api is not found, please check your url and method.",
        )),
    }
}

/// ESA ids: 24 hex digits.
pub fn encode_id(id: i64) -> String {
    format!("{id:024x}")
}

fn decode_id(text: &str) -> Result<i64, AliError> {
    if text.len() != 24 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid_object_id());
    }
    i64::from_str_radix(text, 16).map_err(|_| invalid_object_id())
}

fn invalid_object_id() -> AliError {
    AliError::bad_request("InvalidParameter.ObjectId", "Invalid task ID or execution plan ID.")
}

fn job_not_found() -> AliError {
    AliError::new(
        StatusCode::NOT_FOUND,
        "InvalidJob.NotFound",
        "The task does not exist. Check whether the task ID is correct or whether the task has been deleted.",
    )
}

fn execution_not_found() -> AliError {
    AliError::new(
        StatusCode::NOT_FOUND,
        "InvalidExecution.NotFound",
        "The execution plan does not exist. Check whether the parameters such as the execution ID, start time, and end time are correct.",
    )
}

fn store_error(e: StoreError) -> AliError {
    match e {
        StoreError::NotFound => job_not_found(),
        StoreError::EndBeforeStart => end_mismatch(),
        StoreError::Conflict(m) => AliError::bad_request("InvalidParameter", m),
        other => {
            tracing::error!(error = %other, "compat: internal error");
            AliError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "The request processing has failed due to some unknown error.",
            )
        }
    }
}

fn plan_error(e: StoreError) -> AliError {
    match e {
        StoreError::NotFound => execution_not_found(),
        other => store_error(other),
    }
}

fn end_mismatch() -> AliError {
    AliError::bad_request("InvalidEndTime.Mismatch", "The specified EndTime is earlier than the StartTime.")
}

/// RFC 3339 in Beijing time with milliseconds, as ESA shows times.
fn esa_time(ms: i64) -> String {
    crate::clock::to_datetime(ms)
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .to_rfc3339_opts(SecondsFormat::Millis, false)
}

fn parse_time(p: &Params, name: &str) -> Result<Option<i64>, AliError> {
    p.get(name)
        .map(|t| {
            crate::config::parse_time(t).map_err(|_| {
                AliError::bad_request("InvalidParameter", format!("The specified parameter \"{name}\" is not valid."))
            })
        })
        .transpose()
}

fn site_vendors(s: &CompatState, site: i64) -> Result<&Vec<String>, AliError> {
    s.config.sites.iter().find(|(id, _)| *id == site).map(|(_, v)| v).ok_or_else(|| {
        AliError::new(
            StatusCode::FORBIDDEN,
            "InvalidUid.PermissionDenied",
            "You do not have the permissions to perform this operation on this resource. Check whether the specified UID is correct and has the required permissions.",
        )
    })
}

/// The site a job belongs to: recorded for facade jobs; for native jobs, the site whose vendor
/// accounts are exactly the job's.
async fn site_of(s: &CompatState, job: &Job) -> Option<i64> {
    if let Ok(Some((site, _))) = s.engine.store().compat_job(job.id).await {
        return Some(site);
    }
    let mut mine = job.vendors.clone();
    mine.sort();
    s.config
        .sites
        .iter()
        .find(|(_, v)| {
            let mut v = v.clone();
            v.sort();
            v == mine
        })
        .map(|(id, _)| *id)
}

async fn job_of(s: &CompatState, p: &Params) -> Result<Job, AliError> {
    let id = decode_id(p.required("Id")?)?;
    s.engine.store().job(id).await.map_err(store_error)
}

async fn plan_of(s: &CompatState, p: &Params) -> Result<Plan, AliError> {
    let id = decode_id(p.required("Id")?)?;
    s.engine.store().plan(id).await.map_err(plan_error)
}

async fn job_body(s: &CompatState, job: &Job) -> Result<Value, AliError> {
    let store = s.engine.store();
    let (site, insert_way) = match store.compat_job(job.id).await.map_err(store_error)? {
        Some((site, way)) => (Some(site), way),
        None => (site_of(s, job).await, "textBox".to_string()),
    };
    let slices = store.slices_of_job(job.id).await.map_err(store_error)?;
    let submitted: i64 = slices.iter().filter(|x| x.status.is_recorded()).map(|x| x.url_count).sum();
    let mut domains: Vec<String> = store
        .job_urls(job.id, 0, 1000)
        .await
        .map_err(store_error)?
        .iter()
        .map(|(_, u)| crate::urls::domain_of(u))
        .collect();
    domains.sort();
    domains.dedup();
    let error_info = if job.rejected_count > 0 {
        format!("InvalidUrl: {} lines rejected", job.rejected_count)
    } else {
        String::new()
    };
    Ok(json!({
        "Id": encode_id(job.id), "Name": job.name, "SiteId": site.unwrap_or(0), "InsertWay": insert_way,
        "Domains": domains.join(","), "UrlCount": job.url_count, "UrlSubmitted": submitted,
        "TaskSubmitted": slices.len(), "TaskType": "preload", "ErrorInfo": error_info, "FailedFileOss": "",
        "FileId": "", "CreatedAt": esa_time(job.created_at), "AliUid": ALI_UID,
    }))
}

fn execution(p: &Plan) -> Value {
    json!({
        "Id": encode_id(p.id), "JobId": encode_id(p.job_id), "StartTime": esa_time(p.start_time),
        "EndTime": esa_time(p.end_time), "Interval": p.interval_ms / 1000, "SliceLen": p.slice_len,
        "Status": p.status.as_str(), "AliUid": ALI_UID,
    })
}

async fn create_job(s: &CompatState, p: &Params) -> Result<Value, AliError> {
    let name = p.required("Name")?.trim().to_string();
    let site: i64 = p.required("SiteId")?.trim().parse().map_err(|_| AliError::invalid("SiteId"))?;
    let vendors = site_vendors(s, site)?.clone();
    let store = s.engine.store();
    if store.compat_jobs_of_site(site).await.map_err(store_error)?.len() >= s.config.max_jobs_per_site as usize {
        return Err(AliError::bad_request(
            "InvalidJob.JobCountOfSiteFull",
            "The maximum number of prefetch tasks for the website has been reached. Delete some unwanted ones and try again.",
        ));
    }
    let insert_way = p.get("InsertWay").unwrap_or("textBox");
    let source = match insert_way {
        "textBox" => {
            let list = p
                .get("UrlList")
                .ok_or_else(|| AliError::bad_request("MissingUrlList", "Enter the URLs you want to prefetch."))?;
            // ESA separates URLs by spaces or newlines.
            UrlSource::Inline(list.split_whitespace().map(String::from).collect())
        }
        "oss" => UrlSource::Url(
            p.get("OssUrl")
                .ok_or_else(|| {
                    AliError::bad_request(
                        "MissingOssUrl",
                        "OssUrl missing. Specify a valid URL of the OSS object that stores URLs to prefetch.",
                    )
                })?
                .to_string(),
        ),
        _ => return Err(AliError::invalid("InsertWay")),
    };
    let reader = ingest::open_source(&source, false).await.map_err(ingest_error)?;
    let new = NewJob { name, task_type: TaskType::Preload, vendors, source: JobSource::Api, catch_up: CatchUp::Skip };
    let now = s.engine.now();
    let mut tx = store.write().await.map_err(store_error)?;
    let id = crate::store::insert_job(&mut tx, &new, now).await.map_err(store_error)?;
    let report = ingest::stream_into(&mut tx, id, reader).await.map_err(ingest_error)?;
    if report.added == 0 {
        return Err(AliError::bad_request("MissingUrlList", "Enter the URLs you want to prefetch."));
    }
    crate::store::set_compat_job(&mut tx, id, site, insert_way).await.map_err(store_error)?;
    tx.commit().await.map_err(|e| store_error(e.into()))?;
    job_body(s, &store.job(id).await.map_err(store_error)?).await
}

fn ingest_error(e: IngestError) -> AliError {
    match e {
        IngestError::MissingUrlList(_) => {
            AliError::bad_request("MissingUrlList", "Enter the URLs you want to prefetch.")
        }
        IngestError::Store(e) => store_error(e),
        other => AliError::bad_request("InvalidParameter", other.to_string()),
    }
}

async fn list_jobs(s: &CompatState, p: &Params) -> Result<Value, AliError> {
    let site: Option<i64> =
        p.get("SiteId").map(|v| v.trim().parse().map_err(|_| AliError::invalid("SiteId"))).transpose()?;
    if let Some(site) = site {
        site_vendors(s, site)?;
    }
    let page = p.int("PageNumber", 1, 1..=100_000)?;
    let size = p.int("PageSize", 20, 1..=500)?;
    let store = s.engine.store();
    let (jobs, _) = store.list_jobs(None, 0, 100_000).await.map_err(store_error)?;
    let mut mine = Vec::new();
    for job in jobs {
        let js = site_of(s, &job).await;
        if js.is_some() && (site.is_none() || js == site) {
            mine.push(job);
        }
    }
    let total = mine.len();
    let mut out = Vec::new();
    for job in mine.iter().skip(((page - 1) * size) as usize).take(size as usize) {
        let mut v = job_body(s, job).await?;
        v["ExecutionCount"] = json!(store.plans_of_job(job.id).await.map_err(store_error)?.len());
        out.push(v);
    }
    Ok(json!({"Jobs": out, "TotalCount": total, "PageNumber": page, "PageSize": size}))
}

async fn delete_job(s: &CompatState, p: &Params) -> Result<Value, AliError> {
    let job = job_of(s, p).await?;
    let inflight =
        s.engine.store().slices_of_job(job.id).await.map_err(store_error)?.iter().any(|x| !x.status.is_recorded());
    if inflight {
        return Err(AliError::bad_request(
            "InvalidParameter",
            "the job has a batch in flight; stop its executions and retry",
        ));
    }
    s.engine.store().delete_job(job.id).await.map_err(store_error)?;
    Ok(json!({}))
}

/// `Executions` is a JSON list of {StartTime, EndTime, Interval, SliceLen}; each is created or
/// reported failed on its own, as ESA answers (`SuccessExecutions`, `FailedExecutions`).
async fn create_executions(s: &CompatState, p: &Params) -> Result<Value, AliError> {
    let job = job_of(s, p).await?;
    let list = p.json("Executions")?.ok_or_else(|| AliError::missing("Executions"))?;
    let items = list.as_array().ok_or_else(|| AliError::invalid("Executions"))?;
    let store = s.engine.store();
    let now = s.engine.now();
    let (mut ok, mut failed, mut messages) = (Vec::new(), Vec::new(), Vec::new());
    for item in items {
        let text = |k: &str| item[k].as_str().map(str::to_string);
        let num = |k: &str| item[k].as_i64().or_else(|| item[k].as_str().and_then(|t| t.parse().ok()));
        let spec = match (text("StartTime"), text("EndTime"), num("Interval"), num("SliceLen")) {
            (Some(st), Some(et), Some(i), Some(l)) if i > 0 && l > 0 => {
                match (crate::config::parse_time(&st), crate::config::parse_time(&et)) {
                    (Ok(a), Ok(b)) => Ok(PlanSpec { start_time: a, end_time: b, interval_ms: i * 1000, slice_len: l }),
                    _ => Err("InvalidParameter: StartTime or EndTime is not a valid time".to_string()),
                }
            }
            _ => Err("InvalidParameter: StartTime, EndTime, Interval and SliceLen are required".to_string()),
        };
        let created = match spec {
            Ok(spec) => store.create_plans(job.id, &[spec], "api", now).await.map_err(|e| match e {
                StoreError::EndBeforeStart => {
                    "InvalidEndTime.Mismatch: The specified EndTime is earlier than the StartTime.".to_string()
                }
                other => format!("InvalidParameter: {other}"),
            }),
            Err(m) => Err(m),
        };
        match created {
            Ok(plans) => ok.push(execution(&plans[0])),
            Err(m) => {
                failed.push(item.clone());
                messages.push(m);
            }
        }
    }
    s.engine.nudge();
    Ok(json!({
        "SuccessCount": ok.len(), "TotalCount": items.len(), "SuccessExecutions": ok,
        "FailedExecutions": failed, "FailedMessages": messages,
    }))
}

/// Seed 002: every field optional; the answer is the updated execution.
async fn update_execution(s: &CompatState, p: &Params) -> Result<Value, AliError> {
    let plan = plan_of(s, p).await?;
    let positive = |name: &str| -> Result<Option<i64>, AliError> {
        match p.get(name) {
            None => Ok(None),
            Some(v) => v.trim().parse::<i64>().ok().filter(|n| *n > 0).map(Some).ok_or_else(|| AliError::invalid(name)),
        }
    };
    let change = PlanChange {
        start_time: parse_time(p, "StartTime")?,
        end_time: parse_time(p, "EndTime")?,
        interval_ms: positive("Interval")?.map(|i| i * 1000),
        slice_len: positive("SliceLen")?,
    };
    let updated = s.engine.store().update_plan(plan.id, &change, s.engine.now()).await.map_err(plan_error)?;
    s.engine.nudge();
    Ok(execution(&updated))
}
