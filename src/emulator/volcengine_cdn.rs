//! Volcengine CDN (API 2021-03-01): `SubmitPreloadTask`, `SubmitRefreshTask`,
//! `DescribeContentTasks`, `DescribeContentQuota`. Parameters come as the JSON body of a
//! `POST /?Action=..&Version=2021-03-01`; results go under `Result`. Field names follow the API
//! pages (docs 6454/70436, 70438, 70439) and the official `volcengine` SDK's `CDNService`.
//!
//! Task statuses are `running`, `complete`, `failed`. The daily-quota error code is not
//! published; `QuotaExceeded.*` is chosen, as are the parameter error codes' suffixes.

use serde_json::{json, Value};

use super::aliyun_cdn::page_of;
use super::limits::QuotaKind;
use super::protocol::ApiError;
use super::tasks::{self, domain_of, Entry, Grouping, Status, Submit};
use super::Ctx;
use crate::model::VendorKind;

const VENDOR: VendorKind = VendorKind::VolcengineCdn;
const BATCH_ERROR: (&str, &str) = ("InvalidParameter.UrlsExceedLimit", "Too many URLs in one task");
const QUOTA_PRELOAD: (&str, &str) = ("QuotaExceeded.Preload", "The daily preload quota is used up.");
const QUOTA_REFRESH: (&str, &str) = ("QuotaExceeded.Refresh", "The daily refresh quota is used up.");
/// ConcurrentLimit takes 1 to 1,000; RequestHeaderInstances at most 10 headers.
const MAX_CONCURRENT: i64 = 1_000;
const MAX_HEADERS: usize = 10;

pub(super) fn dispatch(ctx: &Ctx<'_>) -> Result<Value, ApiError> {
    match ctx.call.action {
        "SubmitPreloadTask" => submit_preload_task(ctx),
        "SubmitRefreshTask" => submit_refresh_task(ctx),
        "DescribeContentTasks" => describe_content_tasks(ctx),
        _ => describe_content_quota(ctx),
    }
}

fn field<'a>(ctx: &'a Ctx<'_>, name: &str) -> Option<&'a Value> {
    ctx.call.json.get(name).filter(|v| !v.is_null())
}

fn string(ctx: &Ctx<'_>, name: &str) -> Result<Option<String>, ApiError> {
    match field(ctx, name) {
        None => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::invalid_for(VENDOR, name)),
    }
}

/// An integer parameter; the SDK sends JSON numbers, some clients strings.
fn int(ctx: &Ctx<'_>, name: &str, default: i64, range: std::ops::RangeInclusive<i64>) -> Result<i64, ApiError> {
    let n = match field(ctx, name) {
        None => return Ok(default),
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        Some(_) => None,
    };
    n.filter(|n| range.contains(n)).ok_or_else(|| ApiError::invalid_for(VENDOR, name))
}

/// `Urls`: one or more URLs separated by `\n`, each starting with `http://` or `https://`.
fn urls(ctx: &Ctx<'_>) -> Result<Vec<String>, ApiError> {
    let raw = string(ctx, "Urls")?.ok_or_else(|| ApiError::missing_for(VENDOR, "Urls"))?;
    let urls: Vec<String> =
        raw.split('\n').map(|l| l.trim_end_matches('\r').trim()).filter(|l| !l.is_empty()).map(String::from).collect();
    if urls.is_empty() || urls.iter().any(|u| !(u.starts_with("http://") || u.starts_with("https://"))) {
        return Err(ApiError::invalid_for(VENDOR, "Urls"));
    }
    Ok(urls)
}

fn submit(
    ctx: &Ctx<'_>,
    kind: QuotaKind,
    object_type: &'static str,
    quota: (&'static str, &'static str),
) -> Result<Value, ApiError> {
    let urls = urls(ctx)?;
    let ids = tasks::accept(
        ctx,
        Submit {
            kind,
            object_type,
            objects: &urls,
            site_id: None,
            grouping: Grouping::One,
            quota_error: quota,
            regions: &[],
            batch_error: BATCH_ERROR,
        },
    )?;
    Ok(json!({ "TaskID": ids.first().cloned().unwrap_or_default() }))
}

fn submit_preload_task(ctx: &Ctx<'_>) -> Result<Value, ApiError> {
    if let Some(area) = string(ctx, "Area")? {
        if !matches!(area.as_str(), "chinese_mainland" | "outside_chinese_mainland" | "global") {
            return Err(ApiError::invalid_for(VENDOR, "Area"));
        }
    }
    int(ctx, "ConcurrentLimit", 10, 1..=MAX_CONCURRENT)?;
    match field(ctx, "RequestHeaderInstances") {
        None => {}
        Some(Value::Array(h)) if h.len() <= MAX_HEADERS => {}
        Some(_) => return Err(ApiError::invalid_for(VENDOR, "RequestHeaderInstances")),
    }
    submit(ctx, QuotaKind::Preload, "preload", QUOTA_PRELOAD)
}

fn submit_refresh_task(ctx: &Ctx<'_>) -> Result<Value, ApiError> {
    let (kind, object_type) = match string(ctx, "Type")?.as_deref().unwrap_or("file") {
        "file" => (QuotaKind::File, "refresh_file"),
        "dir" => (QuotaKind::Directory, "refresh_dir"),
        "regex" => (QuotaKind::Regex, "refresh_regex"),
        _ => return Err(ApiError::invalid_for(VENDOR, "Type")),
    };
    submit(ctx, kind, object_type, QUOTA_REFRESH)
}

pub(super) fn status_name(s: Status) -> &'static str {
    match s {
        Status::Refreshing => "running",
        Status::Complete => "complete",
        Status::Failed => "failed",
    }
}

fn task_json(ctx: &Ctx<'_>, e: &Entry) -> Value {
    let task_ms = ctx.state.task_ms;
    json!({
        "TaskID": e.id,
        "Url": e.object,
        "TaskType": e.object_type,
        "Status": status_name(e.status(ctx.now, task_ms)),
        "CreateTime": e.created_ms / 1000,
        "Process": e.process(ctx.now, task_ms),
        "Description": e.description(ctx.now, task_ms),
    })
}

fn describe_content_tasks(ctx: &Ctx<'_>) -> Result<Value, ApiError> {
    let task_type = string(ctx, "TaskType")?.ok_or_else(|| ApiError::missing_for(VENDOR, "TaskType"))?;
    if !matches!(task_type.as_str(), "refresh_file" | "refresh_dir" | "preload" | "refresh_regex") {
        return Err(ApiError::invalid_for(VENDOR, "TaskType"));
    }
    let status = match string(ctx, "Status")?.as_deref() {
        None => None,
        Some("running") => Some(Status::Refreshing),
        Some("complete") => Some(Status::Complete),
        Some("failed") => Some(Status::Failed),
        Some(_) => return Err(ApiError::invalid_for(VENDOR, "Status")),
    };
    let start = int(ctx, "StartTime", 0, 0..=i64::MAX)? * 1000;
    let end = int(ctx, "EndTime", i64::MAX / 1000, 0..=i64::MAX)?.saturating_mul(1000);
    if end < start {
        return Err(ApiError::invalid_for(VENDOR, "EndTime"));
    }
    let page_num = int(ctx, "PageNum", 1, 1..=100_000)?;
    let page_size = int(ctx, "PageSize", 100, 1..=100)?;
    let (task_id, url) = (string(ctx, "TaskID")?, string(ctx, "Url")?);
    let domain = string(ctx, "DomainName")?.map(|d| d.to_ascii_lowercase());
    let task_ms = ctx.state.task_ms;
    let books = ctx.state.books();
    let matching: Vec<&Entry> = books
        .tasks
        .visible(ctx.account, VENDOR, ctx.now)
        .filter(|e| e.object_type == task_type)
        .filter(|e| task_id.as_ref().map_or(true, |t| *t == e.id))
        .filter(|e| url.as_ref().map_or(true, |u| *u == e.object))
        .filter(|e| domain.as_ref().map_or(true, |d| *d == domain_of(&e.object)))
        .filter(|e| status.map_or(true, |s| e.status(ctx.now, task_ms) == s))
        .filter(|e| e.created_ms >= start && e.created_ms <= end)
        .collect();
    let data: Vec<Value> = page_of(&matching, page_num, page_size).iter().map(|e| task_json(ctx, e)).collect();
    Ok(json!({ "Data": data, "PageNum": page_num, "PageSize": page_size, "Total": matching.len() }))
}

fn describe_content_quota(ctx: &Ctx<'_>) -> Result<Value, ApiError> {
    let books = ctx.state.books();
    let triple = |kind: QuotaKind| {
        let limit = ctx.state.limits.submit(VENDOR, kind);
        let used = books.usage.used(ctx.account, VENDOR, kind, ctx.now);
        (limit.daily, limit.max_urls, limit.daily.saturating_sub(used))
    };
    let (pq, pl, pr) = triple(QuotaKind::Preload);
    let (rq, rl, rr) = triple(QuotaKind::File);
    let (dq, dl, dr) = triple(QuotaKind::Directory);
    let (xq, xl, xr) = triple(QuotaKind::Regex);
    // Blocking is not emulated: its quota is reported untouched, with the API page's numbers.
    Ok(json!({
        "PreloadQuota": pq, "PreloadLimit": pl, "PreloadRemain": pr,
        "RefreshQuota": rq, "RefreshQuotaLimit": rl, "RefreshRemain": rr,
        "RefreshDirQuota": dq, "RefreshDirLimit": dl, "RefreshDirRemain": dr,
        "RefreshRegexQuota": xq, "RefreshRegexLimit": xl, "RefreshRegexRemain": xr,
        "BlockQuota": 3000, "BlockLimit": 100, "BlockRemain": 3000,
        "UnblockQuota": 3000, "UnblockLimit": 100, "UnblockRemain": 3000,
    }))
}
