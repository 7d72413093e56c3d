//! Volcengine multi-cloud CDN content tasks (service `mcdn`, 2022-03-01; seed 001):
//! `ListContentTasks` (and the deprecated `ListContentTask`) over preloadd's tasks, and
//! `SubmitPreloadTask` / `SubmitRefreshTask` creating a one-slice job at once. Signed with
//! Volcengine's HMAC-SHA256; answers in `ResponseMetadata` / `Result` shape.

use axum::http::StatusCode;
use serde_json::{json, Value};

use super::CompatState;
use crate::config::{supports, PlanSpec};
use crate::model::{CatchUp, JobSource, SubmitStatus, TaskType, VendorKind};
use crate::store::{NewJob, TaskFilter};

pub const VERSION: &str = "2022-03-01";

/// A Volcengine error: HTTP status, code, message.
pub struct VolcError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl VolcError {
    fn invalid(message: impl Into<String>) -> Self {
        VolcError { status: StatusCode::BAD_REQUEST, code: "InvalidParameter", message: message.into() }
    }
}

/// The `Vendor` word of a subtask, as MCDN names the clouds.
fn vendor_word(kind: Option<VendorKind>) -> &'static str {
    match kind {
        Some(VendorKind::AliyunCdn | VendorKind::AliyunEsa) => "aliyun",
        Some(VendorKind::VolcengineCdn) => "volcengine",
        Some(VendorKind::TencentCdn) => "tencent",
        Some(VendorKind::HttpWarm) => "http",
        Some(VendorKind::Webhook) => "webhook",
        None => "unknown",
    }
}

fn sub_product(kind: Option<VendorKind>) -> &'static str {
    match kind {
        Some(VendorKind::AliyunEsa) => "esa",
        _ => "cdn",
    }
}

pub(super) async fn dispatch(s: &CompatState, action: &str, body: &Value) -> Result<Value, VolcError> {
    match action {
        "ListContentTasks" | "ListContentTask" => list(s, body).await,
        "SubmitPreloadTask" => submit(s, body, TaskType::Preload).await,
        "SubmitRefreshTask" => {
            let kind = match body["Type"].as_str().unwrap_or("file") {
                "file" => TaskType::RefreshFile,
                "dir" | "directory" => TaskType::RefreshDir,
                other => return Err(VolcError::invalid(format!("Type `{other}` is not one of file, dir"))),
            };
            submit(s, body, kind).await
        }
        _ => Err(VolcError {
            status: StatusCode::NOT_FOUND,
            code: "InvalidActionOrVersion",
            message: format!("Could not find operation {action} for version {VERSION}"),
        }),
    }
}

fn int(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

async fn list(s: &CompatState, b: &Value) -> Result<Value, VolcError> {
    let page_num = int(&b["Pagination"]["PageNum"]).unwrap_or(1);
    let page_size = int(&b["Pagination"]["PageSize"]).unwrap_or(10);
    if page_num < 1 || !(1..=100).contains(&page_size) {
        return Err(VolcError::invalid("Pagination: PageNum from 1, PageSize from 1 to 100"));
    }
    let now = s.engine.now();
    // Without a valid range, or with an invalid one: the past 24 hours (seed 001).
    let (start_ms, end_ms) = match (int(&b["StartTime"]), int(&b["EndTime"])) {
        (Some(a), Some(z)) if a >= 0 && a < z => (a * 1000, z * 1000),
        _ => (now - 86_400_000, now + 1),
    };
    let task_type = match b["TaskType"].as_str() {
        None | Some("") => None,
        Some(t) => Some(t.parse::<TaskType>().map_err(VolcError::invalid)?.to_string()),
    };
    let status = match b["TaskStatus"].as_str() {
        None | Some("") => None,
        Some(st @ ("executing" | "done")) => Some(st.to_string()),
        Some(other) => return Err(VolcError::invalid(format!("TaskStatus `{other}` is not executing or done"))),
    };
    let task_id = match b["TaskId"].as_str().filter(|t| !t.is_empty()) {
        None => None,
        Some(t) => Some(i64::from_str_radix(t, 16).map_err(|_| VolcError::invalid("TaskId is not a task id"))?),
    };
    let filter = TaskFilter {
        task_id,
        task_type,
        start_ms,
        end_ms,
        domain: b["Domain"].as_str().filter(|d| !d.is_empty()).map(String::from),
        url: b["Url"].as_str().filter(|u| !u.is_empty()).map(String::from),
        status,
        offset: (page_num - 1) * page_size,
        limit: page_size,
    };
    let (tasks, total) = s.engine.store().list_tasks(&filter).await.map_err(|e| VolcError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        code: "InternalError",
        message: e.to_string(),
    })?;
    let vendors = s.engine.vendors();
    let tasks: Vec<Value> = tasks
        .iter()
        .map(|t| {
            let subtasks: Vec<Value> = t
                .subtasks
                .iter()
                .map(|st| {
                    let kind = vendors.get(&st.vendor).map(|a| a.config.kind);
                    let submit = match st.status {
                        SubmitStatus::Submitted | SubmitStatus::Done => "success",
                        SubmitStatus::Failed => "failed",
                        _ => "pending",
                    };
                    let description = if st.error_code.is_empty() {
                        st.wait_reason.clone()
                    } else {
                        format!("{}: {}", st.error_code, st.error_message)
                    };
                    json!({
                        "VendorTaskIds": st.vendor_task_ids, "Vendor": vendor_word(kind), "SubmitStatus": submit,
                        "Description": description, "Url": t.urls, "CloudAccountId": st.vendor,
                        "CloudAccountName": st.vendor, "ProductType": "cdn", "SubProduct": sub_product(kind),
                    })
                })
                .collect();
            json!({
                "TaskId": super::encode_id(t.slice.id), "Vendor": "", "TaskType": t.task_type, "SubTasks": subtasks,
                "CreatedAt": t.slice.created_at / 1000,
                "TaskStatus": if t.slice.status.is_final() { "done" } else { "executing" },
                "EndAt": t.slice.done_at.map(|d| d / 1000).unwrap_or(0),
            })
        })
        .collect();
    Ok(json!({"Tasks": tasks, "Pagination": {"PageSize": page_size, "PageNum": page_num, "Total": total}}))
}

/// A one-slice job at once, to every vendor account of the compat sites that can do it.
async fn submit(s: &CompatState, b: &Value, task_type: TaskType) -> Result<Value, VolcError> {
    let urls: Vec<String> = match &b["Urls"] {
        Value::Array(a) => a.iter().filter_map(|u| u.as_str().map(String::from)).collect(),
        Value::String(t) => t.split_whitespace().map(String::from).collect(),
        _ => Vec::new(),
    };
    if urls.is_empty() {
        return Err(VolcError::invalid("Urls is required"));
    }
    if urls.len() > 1000 {
        return Err(VolcError::invalid("at most 1000 URLs per task"));
    }
    let all = s.engine.vendors();
    let mut vendors: Vec<String> = Vec::new();
    for (_, names) in &s.config.sites {
        for n in names {
            if !vendors.contains(n) && all.get(n).is_some_and(|a| supports(a.config.kind, task_type)) {
                vendors.push(n.clone());
            }
        }
    }
    if vendors.is_empty() {
        return Err(VolcError::invalid(format!("no configured vendor account can do {task_type}")));
    }
    let now = s.engine.now();
    let store = s.engine.store();
    let new = NewJob {
        name: format!("mcdn-{}-{}", now, hex::encode(rand::random::<[u8; 4]>())),
        task_type,
        vendors,
        source: JobSource::Api,
        catch_up: CatchUp::Skip,
    };
    let text: String = urls.iter().map(|u| format!("{}\n", u.replace(['\n', '\r'], " "))).collect();
    let (job, report) = crate::ingest::create_job(store, &new, text.as_bytes(), now)
        .await
        .map_err(|e| VolcError::invalid(e.to_string()))?;
    let spec =
        PlanSpec { start_time: now, end_time: now + 3_600_000, interval_ms: 1_000, slice_len: report.added as i64 };
    let plan = store.create_plans(job, &[spec], "api", now).await.map_err(|e| VolcError::invalid(e.to_string()))?;
    // Take the slice now, so the task id answered is the one ListContentTasks shows.
    s.engine.tick().await.map_err(|e| VolcError::invalid(e.to_string()))?;
    s.engine.nudge();
    let slice = store.slices_of_plan(plan[0].id).await.map_err(|e| VolcError::invalid(e.to_string()))?;
    let task_id = slice.first().map(|x| super::encode_id(x.id)).unwrap_or_default();
    Ok(json!({"TaskId": task_id}))
}
