//! Alibaba Cloud CDN (API 2018-05-10): `PushObjectCache`, `RefreshObjectCaches`,
//! `DescribeRefreshTasks`, `DescribeRefreshTaskById`, `DescribeRefreshQuota`. Field names, types
//! (quotas are strings, counts integers) and error codes follow the official SDK models and the
//! API pages.

use serde_json::{json, Value};

use super::limits::QuotaKind;
use super::protocol::ApiError;
use super::tasks::{self, domain_of, Entry, Grouping, Status, Submit};
use super::Ctx;

/// Each path may be up to 1,024 characters (PushObjectCache page).
const MAX_PATH_LEN: usize = 1_024;
/// Merging limits of task ids per domain, from the response field docs.
const PUSH_IDS_MERGE: usize = 500;
const REFRESH_IDS_MERGE: usize = 2_000;
/// DescribeRefreshTaskById takes up to 10 ids.
const MAX_TASK_IDS: usize = 10;

const QUOTA_PRELOAD: (&str, &str) = ("QuotaExceeded.Preload", "Your refresh attempts have exceeded the daily limit.");
const QUOTA_REFRESH: (&str, &str) = ("QuotaExceeded.Refresh", "Your refresh attempts have exceeded the daily limit.");

pub(super) fn dispatch(ctx: &Ctx<'_>) -> Result<Value, ApiError> {
    match ctx.call.action {
        "PushObjectCache" => push_object_cache(ctx),
        "RefreshObjectCaches" => refresh_object_caches(ctx),
        "DescribeRefreshTasks" => describe_refresh_tasks(ctx),
        "DescribeRefreshTaskById" => describe_refresh_task_by_id(ctx),
        _ => describe_refresh_quota(ctx),
    }
}

/// `ObjectPath`: paths separated by `\n` or `\r\n`; blank lines are ignored.
fn object_paths(ctx: &Ctx<'_>) -> Result<Vec<String>, ApiError> {
    let raw = ctx.call.params.required("ObjectPath")?;
    let paths: Vec<String> =
        raw.split('\n').map(|l| l.trim_end_matches('\r').trim()).filter(|l| !l.is_empty()).map(String::from).collect();
    if paths.is_empty() || paths.iter().any(|p| p.len() > MAX_PATH_LEN) {
        return Err(ApiError::bad_request("InvalidObjectPath.Malformed", "The specified ObjectPath is invalid."));
    }
    Ok(paths)
}

fn push_object_cache(ctx: &Ctx<'_>) -> Result<Value, ApiError> {
    let params = &ctx.call.params;
    let paths = object_paths(ctx)?;
    if let Some(area) = params.get("Area") {
        if !matches!(area, "domestic" | "overseas" | "global") {
            return Err(ApiError::bad_request("InvalidArea.ValueNotSupported", "The specified Area is not supported."));
        }
    }
    params.flag("L2Preload")?;
    params.flag("QueryHashkey")?;
    params.flag("ConsistencyHash")?;
    // WithHeader is a JSON object of headers the vendor adds to its origin requests.
    if !matches!(params.json("WithHeader")?, None | Some(Value::Object(_))) {
        return Err(ApiError::invalid("WithHeader"));
    }
    let ids = tasks::accept(
        ctx,
        Submit {
            kind: QuotaKind::Preload,
            object_type: "preload",
            objects: &paths,
            site_id: None,
            grouping: Grouping::PerDomain { max: PUSH_IDS_MERGE },
            quota_error: QUOTA_PRELOAD,
            regions: &[],
            batch_error: tasks::ALI_BATCH_ERROR,
        },
    )?;
    Ok(json!({ "PushTaskId": ids.join(",") }))
}

fn refresh_object_caches(ctx: &Ctx<'_>) -> Result<Value, ApiError> {
    let params = &ctx.call.params;
    let (kind, object_type) = match params.get("ObjectType").unwrap_or("File").to_ascii_lowercase().as_str() {
        "file" => (QuotaKind::File, "file"),
        "directory" => (QuotaKind::Directory, "directory"),
        "regex" => (QuotaKind::Regex, "regex"),
        // ExQuery is the older name of IgnoreParams.
        "ignoreparams" | "exquery" => (QuotaKind::IgnoreParams, "ignoreParams"),
        _ => return Err(ApiError::bad_request("InvalidObjectType.Malformed", "The specified ObjectType is invalid.")),
    };
    params.flag("Force")?;
    let paths = object_paths(ctx)?;
    let ids = tasks::accept(
        ctx,
        Submit {
            kind,
            object_type,
            objects: &paths,
            site_id: None,
            grouping: Grouping::PerDomain { max: REFRESH_IDS_MERGE },
            quota_error: QUOTA_REFRESH,
            regions: &[],
            batch_error: tasks::ALI_BATCH_ERROR,
        },
    )?;
    Ok(json!({ "RefreshTaskId": ids.join(",") }))
}

fn task_json(ctx: &Ctx<'_>, e: &Entry) -> Value {
    let task_ms = ctx.state.task_ms;
    json!({
        "TaskId": e.id,
        "ObjectPath": e.object,
        "Status": e.status(ctx.now, task_ms).as_str(),
        "Process": e.process(ctx.now, task_ms),
        "ObjectType": e.object_type,
        "CreationTime": iso_seconds(e.created_ms),
        "Description": e.description(ctx.now, task_ms),
    })
}

/// `yyyy-MM-ddTHH:mm:ssZ`, the APIs' time format.
pub(super) fn iso_seconds(ms: i64) -> String {
    crate::clock::to_datetime(ms).format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The documented checks on a StartTime/EndTime pair: both or neither, in order, and within the
/// three-day look-back.
pub(super) fn time_range(ctx: &Ctx<'_>) -> Result<(Option<i64>, Option<i64>), ApiError> {
    let params = &ctx.call.params;
    let (start, end) = (params.time("StartTime")?, params.time("EndTime")?);
    match (start, end) {
        (Some(_), None) | (None, Some(_)) => {
            Err(ApiError::bad_request("MissingTimeParameter", "The StartTime and EndTime must be both specified."))
        }
        (Some(s), Some(e)) if e < s => Err(ApiError::bad_request(
            "InvalidEndTime.Mismatch",
            "The specified EndTime is earlier than the StartTime.",
        )),
        (Some(s), Some(_)) if s < ctx.now - tasks::LOOKBACK_MS => {
            Err(ApiError::bad_request("InvalidTime", "The query time cannot exceed the last 3 days."))
        }
        range => Ok(range),
    }
}

fn describe_refresh_tasks(ctx: &Ctx<'_>) -> Result<Value, ApiError> {
    let params = &ctx.call.params;
    let object_type = params.get("ObjectType").map(str::to_string);
    if object_type.is_none() && (params.get("DomainName").is_some() || params.get("Status").is_some()) {
        return Err(ApiError::bad_request(
            "MissingParameter.ObjectType",
            "The ObjectType parameter is required if DomainName or Status is specified.",
        ));
    }
    let status = params.get("Status").map(|s| Status::parse("Status", s)).transpose()?;
    let (start, end) = time_range(ctx)?;
    let page_number = params.int("PageNumber", 1, 1..=100_000)?;
    let page_size = params.int("PageSize", 20, 1..=100)?;
    let (task_id, object_path) = (params.get("TaskId"), params.get("ObjectPath"));
    let domain = params.get("DomainName").map(str::to_ascii_lowercase);
    let task_ms = ctx.state.task_ms;

    let books = ctx.state.books();
    let matching: Vec<&Entry> = books
        .tasks
        .visible(ctx.account, ctx.call.vendor, ctx.now)
        .filter(|e| task_id.is_none_or_eq(&e.id))
        .filter(|e| object_path.is_none_or_eq(&e.object))
        .filter(|e| object_type.as_deref().is_none_or_eq(e.object_type))
        .filter(|e| domain.as_deref().is_none_or_eq(&domain_of(&e.object)))
        .filter(|e| status.map_or(true, |s| e.status(ctx.now, task_ms) == s))
        .filter(|e| start.map_or(true, |s| e.created_ms >= s) && end.map_or(true, |t| e.created_ms <= t))
        .collect();
    let page: Vec<Value> = page_of(&matching, page_number, page_size).iter().map(|e| task_json(ctx, e)).collect();
    Ok(json!({
        "Tasks": { "CDNTask": page },
        "PageNumber": page_number,
        "PageSize": page_size,
        "TotalCount": matching.len(),
    }))
}

/// One page (1-based) of a list.
pub(super) fn page_of<T>(items: &[T], page_number: i64, page_size: i64) -> &[T] {
    let start = ((page_number - 1) * page_size).min(items.len() as i64) as usize;
    let end = (start + page_size as usize).min(items.len());
    &items[start..end]
}

fn describe_refresh_task_by_id(ctx: &Ctx<'_>) -> Result<Value, ApiError> {
    let raw = ctx.call.params.required("TaskId")?;
    let ids: Vec<&str> = raw.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    if ids.len() > MAX_TASK_IDS {
        return Err(ApiError::bad_request("InvalidTaskId", "The maximum number of taskIds is 10."));
    }
    if ids.is_empty() || ids.iter().any(|id| !id.bytes().all(|b| b.is_ascii_digit())) {
        return Err(ApiError::bad_request("InvalidTaskId.Malformed", "The specified TaskId is invalid."));
    }
    let books = ctx.state.books();
    let tasks: Vec<Value> = books
        .tasks
        .visible(ctx.account, ctx.call.vendor, ctx.now)
        .filter(|e| ids.contains(&e.id.as_str()))
        .map(|e| task_json(ctx, e))
        .collect();
    Ok(json!({ "Tasks": tasks, "TotalCount": tasks.len() }))
}

fn describe_refresh_quota(ctx: &Ctx<'_>) -> Result<Value, ApiError> {
    let books = ctx.state.books();
    let pair = |kind: QuotaKind| {
        let quota = ctx.state.limits.submit(ctx.call.vendor, kind).daily;
        let used = books.usage.used(ctx.account, ctx.call.vendor, kind, ctx.now);
        (quota.to_string(), quota.saturating_sub(used).to_string())
    };
    let (url_quota, url_remain) = pair(QuotaKind::File);
    let (dir_quota, dir_remain) = pair(QuotaKind::Directory);
    let (preload_quota, preload_remain) = pair(QuotaKind::Preload);
    let (regex_quota, regex_remain) = pair(QuotaKind::Regex);
    let (ignore_quota, ignore_remain) = pair(QuotaKind::IgnoreParams);
    // Blocking and L1 (edge) preload are not emulated: their quotas are reported untouched,
    // with the numbers of the API page's example.
    Ok(json!({
        "UrlQuota": url_quota, "UrlRemain": url_remain,
        "DirQuota": dir_quota, "DirRemain": dir_remain,
        "PreloadQuota": preload_quota, "PreloadRemain": preload_remain,
        "RegexQuota": regex_quota, "RegexRemain": regex_remain,
        "IgnoreParamsQuota": ignore_quota, "IgnoreParamsRemain": ignore_remain,
        "BlockQuota": "300", "BlockRemain": "300",
        "PreloadEdgeQuota": "20", "PreloadEdgeRemain": "20",
    }))
}

/// `None` matches everything; `Some(x)` only `x`.
pub(super) trait OptionalFilter {
    fn is_none_or_eq(&self, value: &str) -> bool;
}

impl OptionalFilter for Option<&str> {
    fn is_none_or_eq(&self, value: &str) -> bool {
        self.map_or(true, |v| v == value)
    }
}
