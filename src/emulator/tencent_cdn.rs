//! Tencent Cloud CDN (API 2018-06-06): `PushUrlsCache`, `PurgeUrlsCache`, `PurgePathCache`,
//! `DescribePushTasks`, `DescribePurgeTasks`, `DescribePushQuota`, `DescribePurgeQuota`.
//! Parameters come as the JSON body of a `POST /` whose action is in `X-TC-Action`; answers go
//! under `Response`, errors too (HTTP 200). Field names follow `tencentcloud-sdk-python-cdn`'s
//! models; error codes its `errorcodes.py`.
//!
//! Daily quotas count per region (`mainland`, `overseas`); a `global` submit is charged to both
//! and refused when either is short. A submit without `Area` is charged to `mainland` (the
//! vendor uses the domain's own area, which the emulator does not know: chosen).

use chrono_tz::Asia::Shanghai;
use serde_json::{json, Value};

use super::aliyun_cdn::page_of;
use super::limits::QuotaKind;
use super::protocol::ApiError;
use super::tasks::{self, domain_of, usage_key, Entry, Grouping, Status, Submit};
use super::Ctx;
use crate::model::VendorKind;

const VENDOR: VendorKind = VendorKind::TencentCdn;
const REGIONS: [&str; 2] = ["mainland", "overseas"];
/// DescribePushTasks: Limit 1 to 100 (default 20); DescribePurgeTasks: 1 to 1,000.
const MAX_PUSH_LIMIT: i64 = 100;
const MAX_PURGE_LIMIT: i64 = 1_000;

pub(super) fn dispatch(ctx: &Ctx<'_>) -> Result<Value, ApiError> {
    match ctx.call.action {
        "PushUrlsCache" => push_urls_cache(ctx),
        "PurgeUrlsCache" => purge_urls_cache(ctx),
        "PurgePathCache" => purge_path_cache(ctx),
        "DescribePushTasks" => describe_tasks(ctx, true),
        "DescribePurgeTasks" => describe_tasks(ctx, false),
        "DescribePushQuota" => describe_push_quota(ctx),
        _ => describe_purge_quota(ctx),
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

fn int(ctx: &Ctx<'_>, name: &str, default: i64, range: std::ops::RangeInclusive<i64>) -> Result<i64, ApiError> {
    match field(ctx, name) {
        None => Ok(default),
        Some(v) => v.as_i64().filter(|n| range.contains(n)).ok_or_else(|| ApiError::invalid_for(VENDOR, name)),
    }
}

fn string_list(ctx: &Ctx<'_>, name: &str) -> Result<Vec<String>, ApiError> {
    let items = field(ctx, name).ok_or_else(|| ApiError::missing_for(VENDOR, name))?;
    let items = items.as_array().filter(|a| !a.is_empty()).ok_or_else(|| ApiError::invalid_for(VENDOR, name))?;
    items
        .iter()
        .map(|v| match v.as_str().map(str::trim) {
            Some(u) if u.starts_with("http://") || u.starts_with("https://") => Ok(u.to_string()),
            _ => Err(ApiError::invalid_for(VENDOR, name)),
        })
        .collect()
}

/// The regions a submit is charged to.
fn regions(ctx: &Ctx<'_>) -> Result<&'static [&'static str], ApiError> {
    match string(ctx, "Area")?.as_deref() {
        None | Some("mainland") => Ok(&REGIONS[..1]),
        Some("overseas") => Ok(&REGIONS[1..]),
        Some("global") => Ok(&REGIONS),
        Some(_) => Err(ApiError::invalid_for(VENDOR, "Area")),
    }
}

fn submit(
    ctx: &Ctx<'_>,
    kind: QuotaKind,
    object_type: &'static str,
    objects: &[String],
    batch: (&'static str, &'static str),
    day: (&'static str, &'static str),
) -> Result<Value, ApiError> {
    let ids = tasks::accept(
        ctx,
        Submit {
            kind,
            object_type,
            objects,
            site_id: None,
            grouping: Grouping::One,
            quota_error: day,
            regions: regions(ctx)?,
            batch_error: batch,
        },
    )?;
    Ok(json!({ "TaskId": ids.first().cloned().unwrap_or_default() }))
}

fn push_urls_cache(ctx: &Ctx<'_>) -> Result<Value, ApiError> {
    let urls = string_list(ctx, "Urls")?;
    if let Some(layer) = string(ctx, "Layer")? {
        if layer != "middle" {
            return Err(ApiError::invalid_for(VENDOR, "Layer"));
        }
    }
    submit(
        ctx,
        QuotaKind::Preload,
        "push",
        &urls,
        ("LimitExceeded.CdnPushExceedBatchLimit", "Push URLs exceed the batch limit"),
        ("LimitExceeded.CdnPushExceedDayLimit", "Push URLs exceed the daily limit."),
    )
}

fn purge_urls_cache(ctx: &Ctx<'_>) -> Result<Value, ApiError> {
    let urls = string_list(ctx, "Urls")?;
    submit(
        ctx,
        QuotaKind::File,
        "url",
        &urls,
        ("LimitExceeded.CdnPurgeUrlExceedBatchLimit", "Purge URLs exceed the batch limit"),
        ("LimitExceeded.CdnPurgeUrlExceedDayLimit", "Purge URLs exceed the daily limit."),
    )
}

fn purge_path_cache(ctx: &Ctx<'_>) -> Result<Value, ApiError> {
    let paths = string_list(ctx, "Paths")?;
    match string(ctx, "FlushType")?.as_deref() {
        Some("flush" | "delete") => {}
        None => return Err(ApiError::missing_for(VENDOR, "FlushType")),
        Some(_) => return Err(ApiError::invalid_for(VENDOR, "FlushType")),
    }
    submit(
        ctx,
        QuotaKind::Directory,
        "path",
        &paths,
        ("LimitExceeded.CdnPurgePathExceedBatchLimit", "Purge paths exceed the batch limit"),
        ("LimitExceeded.CdnPurgePathExceedDayLimit", "Purge paths exceed the daily limit."),
    )
}

/// `YYYY-MM-DD hh:mm:ss`, Beijing time, as the task APIs take and show times.
fn beijing(ms: i64) -> String {
    crate::clock::to_datetime(ms).with_timezone(&Shanghai).format("%Y-%m-%d %H:%M:%S").to_string()
}

fn parse_beijing(ctx: &Ctx<'_>, name: &str) -> Result<Option<i64>, ApiError> {
    let Some(v) = string(ctx, name)? else { return Ok(None) };
    let local = chrono::NaiveDateTime::parse_from_str(&v, "%Y-%m-%d %H:%M:%S")
        .map_err(|_| ApiError::invalid_for(VENDOR, name))?;
    let at = local.and_local_timezone(Shanghai).single().ok_or_else(|| ApiError::invalid_for(VENDOR, name))?;
    Ok(Some(at.timestamp_millis()))
}

/// Push and purge tasks share `process`, `done`, `fail` (push adds `invalid`, never emulated).
fn status_name(s: Status) -> &'static str {
    match s {
        Status::Refreshing => "process",
        Status::Complete => "done",
        Status::Failed => "fail",
    }
}

fn describe_tasks(ctx: &Ctx<'_>, push: bool) -> Result<Value, ApiError> {
    let (start, end) = (parse_beijing(ctx, "StartTime")?, parse_beijing(ctx, "EndTime")?);
    let task_id = string(ctx, "TaskId")?;
    if task_id.is_none() && (start.is_none() || end.is_none()) {
        // Either a task id, or a time range, is required.
        return Err(ApiError::missing_for(VENDOR, "StartTime"));
    }
    let types: &[&str] = if push {
        &["push"]
    } else {
        match string(ctx, "PurgeType")?.as_deref() {
            None if task_id.is_some() => &["url", "path"],
            None => return Err(ApiError::missing_for(VENDOR, "PurgeType")),
            Some("url") => &["url"],
            Some("path") => &["path"],
            Some(_) => return Err(ApiError::invalid_for(VENDOR, "PurgeType")),
        }
    };
    let status = match string(ctx, "Status")?.as_deref() {
        None => None,
        Some("process") => Some(Status::Refreshing),
        Some("done") => Some(Status::Complete),
        Some("fail") => Some(Status::Failed),
        Some("invalid") if push => return Ok(json!({ "PushLogs": [], "TotalCount": 0 })),
        Some(_) => return Err(ApiError::invalid_for(VENDOR, "Status")),
    };
    let offset = int(ctx, "Offset", 0, 0..=i64::MAX)?;
    let limit = int(ctx, "Limit", 20, 1..=if push { MAX_PUSH_LIMIT } else { MAX_PURGE_LIMIT })?;
    // Keyword: a domain name, or a full URL.
    let keyword = string(ctx, "Keyword")?;
    let task_ms = ctx.state.task_ms;
    let books = ctx.state.books();
    let matching: Vec<&Entry> = books
        .tasks
        .visible(ctx.account, VENDOR, ctx.now)
        .filter(|e| types.contains(&e.object_type))
        .filter(|e| task_id.as_ref().map_or(true, |t| *t == e.id))
        .filter(|e| keyword.as_ref().map_or(true, |k| *k == e.object || k.to_ascii_lowercase() == domain_of(&e.object)))
        .filter(|e| status.map_or(true, |s| e.status(ctx.now, task_ms) == s))
        .filter(|e| start.map_or(true, |s| e.created_ms >= s) && end.map_or(true, |t| e.created_ms <= t))
        .collect();
    let page_num = offset / limit + 1;
    let page = if offset % limit == 0 {
        page_of(&matching, page_num, limit)
    } else {
        let from = (offset as usize).min(matching.len());
        &matching[from..(from + limit as usize).min(matching.len())]
    };
    let logs: Vec<Value> = page
        .iter()
        .map(|e| {
            let st = e.status(ctx.now, task_ms);
            if push {
                json!({
                    "TaskId": e.id, "Url": e.object, "Status": status_name(st),
                    "Percent": e.process(ctx.now, task_ms).trim_end_matches('%').parse::<i64>().unwrap_or(0),
                    "CreateTime": beijing(e.created_ms), "Area": "mainland",
                    "UpdateTime": beijing(ctx.now.min(e.created_ms + task_ms as i64)),
                })
            } else {
                json!({
                    "TaskId": e.id, "Url": e.object, "Status": status_name(st),
                    "PurgeType": e.object_type, "FlushType": "flush", "CreateTime": beijing(e.created_ms),
                })
            }
        })
        .collect();
    let field = if push { "PushLogs" } else { "PurgeLogs" };
    Ok(json!({ field: logs, "TotalCount": matching.len() }))
}

/// `[{Area, Batch, Total, Available}]` for both regions.
fn quotas(ctx: &Ctx<'_>, kind: QuotaKind) -> Value {
    let books = ctx.state.books();
    let limit = ctx.state.limits.submit(VENDOR, kind);
    let list: Vec<Value> = REGIONS
        .iter()
        .map(|r| {
            let used = books.usage.used(&usage_key(ctx.account, Some(r)), VENDOR, kind, ctx.now);
            json!({
                "Area": r, "Batch": limit.max_urls, "Total": limit.daily,
                "Available": limit.daily.saturating_sub(used),
            })
        })
        .collect();
    Value::Array(list)
}

fn describe_push_quota(ctx: &Ctx<'_>) -> Result<Value, ApiError> {
    Ok(json!({ "UrlPush": quotas(ctx, QuotaKind::Preload) }))
}

fn describe_purge_quota(ctx: &Ctx<'_>) -> Result<Value, ApiError> {
    Ok(json!({ "UrlPurge": quotas(ctx, QuotaKind::File), "PathPurge": quotas(ctx, QuotaKind::Directory) }))
}
