//! Alibaba Cloud ESA (API 2024-09-10): `PreloadCaches`, `PurgeCaches`, `DescribePreloadTasks`,
//! `DescribePurgeTasks`, `GetPurgeQuota`. The SDK sends array and object parameters (`Content`,
//! `Headers`) as JSON strings in the query, which is what is parsed here. Any numeric `SiteId`
//! is a site; tasks are listed per site.

use serde_json::{json, Value};

use super::aliyun_cdn::{iso_seconds, page_of, time_range, OptionalFilter};
use super::limits::QuotaKind;
use super::protocol::ApiError;
use super::tasks::{self, Entry, Grouping, Status, Submit};
use super::Ctx;

/// Not published for ESA; the CDN family's codes are used (chosen).
const QUOTA_PRELOAD: (&str, &str) = ("QuotaExceeded.Preload", "Your prefetch attempts have exceeded the daily limit.");
const QUOTA_PURGE: (&str, &str) = ("QuotaExceeded.Purge", "Your purge attempts have exceeded the daily limit.");

/// DescribePreloadTasks / DescribePurgeTasks: PageSize 1 to 50, default 20.
const MAX_PAGE_SIZE: i64 = 50;

pub(super) fn dispatch(ctx: &Ctx<'_>) -> Result<Value, ApiError> {
    match ctx.call.action {
        "PreloadCaches" => preload_caches(ctx),
        "PurgeCaches" => purge_caches(ctx),
        "DescribePreloadTasks" => describe_tasks(ctx, Kind::Preload),
        "DescribePurgeTasks" => describe_tasks(ctx, Kind::Purge),
        _ => get_purge_quota(ctx),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Preload,
    Purge,
}

fn site_id(ctx: &Ctx<'_>, required: bool) -> Result<Option<i64>, ApiError> {
    match ctx.call.params.get("SiteId") {
        None if required => Err(ApiError::missing("SiteId")),
        None => Ok(None),
        Some(v) => v.parse::<i64>().ok().filter(|n| *n > 0).map(Some).ok_or_else(|| ApiError::invalid("SiteId")),
    }
}

/// The purge types, their quota counters and the `Content` field that lists their objects.
fn purge_type(value: &str) -> Result<(QuotaKind, &'static str, &'static str), ApiError> {
    Ok(match value {
        "file" => (QuotaKind::File, "file", "Files"),
        "cachekey" => (QuotaKind::CacheKey, "cachekey", "CacheKeys"),
        "cachetag" => (QuotaKind::CacheTag, "cachetag", "CacheTags"),
        "directory" => (QuotaKind::Directory, "directory", "Directories"),
        "ignoreParams" => (QuotaKind::IgnoreParams, "ignoreParams", "IgnoreParams"),
        "hostname" => (QuotaKind::Hostname, "hostname", "Hostnames"),
        "purgeall" => (QuotaKind::PurgeAll, "purgeall", "PurgeAll"),
        _ => return Err(ApiError::invalid("Type")),
    })
}

/// A string, or an object carrying the string under `Url` (files and cache keys may come with
/// their headers).
fn item_text(item: &Value) -> Option<String> {
    match item {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Object(o) => o.get("Url").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

fn string_list(value: Option<&Value>, name: &str) -> Result<Vec<String>, ApiError> {
    let items = value.and_then(Value::as_array).filter(|a| !a.is_empty()).ok_or_else(|| ApiError::missing(name))?;
    items.iter().map(|i| item_text(i).ok_or_else(|| ApiError::invalid(name))).collect()
}

fn preload_caches(ctx: &Ctx<'_>) -> Result<Value, ApiError> {
    let params = &ctx.call.params;
    let site = site_id(ctx, true)?;
    let content = params.json("Content")?;
    let urls = string_list(content.as_ref(), "Content")?;
    if !matches!(params.json("Headers")?, None | Some(Value::Object(_))) {
        return Err(ApiError::invalid("Headers"));
    }
    let ids = tasks::accept(
        ctx,
        Submit {
            kind: QuotaKind::Preload,
            object_type: "preload",
            objects: &urls,
            site_id: site,
            grouping: Grouping::One,
            quota_error: QUOTA_PRELOAD,
            regions: &[],
            batch_error: tasks::ALI_BATCH_ERROR,
        },
    )?;
    Ok(json!({ "TaskId": ids.join(",") }))
}

fn purge_caches(ctx: &Ctx<'_>) -> Result<Value, ApiError> {
    let params = &ctx.call.params;
    let site = site_id(ctx, true)?;
    let (kind, type_name, field) = purge_type(params.required("Type")?)?;
    params.flag("Force")?;
    params.flag("EdgeComputePurge")?;
    let content = params.json("Content")?;
    let content = content.as_ref().and_then(Value::as_object).ok_or_else(|| ApiError::missing("Content"))?;
    let objects = if kind == QuotaKind::PurgeAll {
        if content.get("PurgeAll").and_then(Value::as_bool) != Some(true) {
            return Err(ApiError::missing("Content.PurgeAll"));
        }
        // The whole site is the one object purged.
        vec![format!("site:{}", site.unwrap_or_default())]
    } else {
        string_list(content.get(field), &format!("Content.{field}"))?
    };
    let ids = tasks::accept(
        ctx,
        Submit {
            kind,
            object_type: type_name,
            objects: &objects,
            site_id: site,
            grouping: Grouping::One,
            quota_error: QUOTA_PURGE,
            regions: &[],
            batch_error: tasks::ALI_BATCH_ERROR,
        },
    )?;
    Ok(json!({ "TaskId": ids.join(",") }))
}

fn describe_tasks(ctx: &Ctx<'_>, kind: Kind) -> Result<Value, ApiError> {
    let params = &ctx.call.params;
    // DescribePurgeTasks documents SiteId as always required; DescribePreloadTasks does not.
    let site = site_id(ctx, kind == Kind::Purge)?;
    let status = params.get("Status").map(|s| Status::parse("Status", s)).transpose()?;
    let type_filter = match (kind, params.get("Type")) {
        (Kind::Purge, Some(t)) => Some(purge_type(t)?.1),
        _ => None,
    };
    let (start, end) = time_range(ctx)?;
    let page_number = params.int("PageNumber", 1, 1..=100_000)?;
    let page_size = params.int("PageSize", 20, 1..=MAX_PAGE_SIZE)?;
    let content = params.get("Content");
    let task_ms = ctx.state.task_ms;

    let books = ctx.state.books();
    let matching: Vec<&Entry> = books
        .tasks
        .visible(ctx.account, ctx.call.vendor, ctx.now)
        .filter(|e| (e.object_type == "preload") == (kind == Kind::Preload))
        .filter(|e| site.is_none() || e.site_id == site)
        .filter(|e| content.is_none_or_eq(&e.object))
        .filter(|e| type_filter.is_none_or_eq(e.object_type))
        .filter(|e| status.map_or(true, |s| e.status(ctx.now, task_ms) == s))
        .filter(|e| start.map_or(true, |s| e.created_ms >= s) && end.map_or(true, |t| e.created_ms <= t))
        .collect();
    let tasks: Vec<Value> = page_of(&matching, page_number, page_size)
        .iter()
        .map(|e| {
            let mut task = json!({
                "TaskId": e.id,
                "Content": e.object,
                "Status": e.status(ctx.now, task_ms).as_str(),
                "Process": e.process(ctx.now, task_ms),
                "Description": e.description(ctx.now, task_ms),
            });
            // The pages differ: preload shows `2023-03-28 14:28:57`, purge an ISO 8601 time.
            task["CreateTime"] = match kind {
                Kind::Preload => crate::clock::to_datetime(e.created_ms).format("%Y-%m-%d %H:%M:%S").to_string(),
                Kind::Purge => iso_seconds(e.created_ms),
            }
            .into();
            if kind == Kind::Purge {
                task["Type"] = e.object_type.into();
            }
            task
        })
        .collect();
    Ok(json!({
        "Tasks": tasks,
        "PageNumber": page_number,
        "PageSize": page_size,
        "TotalCount": matching.len(),
    }))
}

fn get_purge_quota(ctx: &Ctx<'_>) -> Result<Value, ApiError> {
    site_id(ctx, false)?;
    let (kind, _, _) = purge_type(ctx.call.params.get("Type").unwrap_or("file"))?;
    let quota = ctx.state.limits.submit(ctx.call.vendor, kind).daily;
    let used = ctx.state.books().usage.used(ctx.account, ctx.call.vendor, kind, ctx.now);
    // "0" for the 30-day quota means "not configured" (API page).
    Ok(json!({
        "Quota": quota.to_string(),
        "Usage": used.to_string(),
        "Quota30Day": "0",
        "Usage30Day": "0",
    }))
}
