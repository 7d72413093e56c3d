//! Tencent Cloud CDN client (`tencent_cdn`, API 2018-06-06): `PushUrlsCache`, `PurgeUrlsCache`,
//! `PurgePathCache`, `DescribePushTasks`/`DescribePurgeTasks` (status and crash reconciliation),
//! `DescribePushQuota`/`DescribePurgeQuota`.
//!
//! Every call is a `POST /` with a JSON body and the action in `X-TC-Action`, signed with
//! TC3-HMAC-SHA256 for service `cdn`, as `tencentcloud-sdk-python-cdn` sends it. Answers are
//! `{"Response": {.., "Error"?: {"Code", "Message"}, "RequestId"}}`, HTTP 200 even for errors.
//!
//! Tencent counts daily quotas per region (`mainland`, `overseas`); the account's `area` picks
//! the region, and the engine's quota bucket carries it.

use std::collections::HashSet;

use chrono_tz::Asia::Shanghai;
use futures_util::future::BoxFuture;
use serde_json::{json, Value};

use super::tasklist::{endpoint_host, number, proof, reports, text, TaskRow};
use super::{
    http_client, retry_after, Accepted, Capabilities, ErrorClass, QuotaReport, SubmitRequest, UrlReport, VendorApi,
    VendorError,
};
use crate::clock::{to_datetime, SharedClock};
use crate::config::{Secret, VendorConfig};
use crate::model::TaskType;
use crate::sign::{self, HttpParts};

pub const VERSION: &str = "2018-06-06";
pub const SERVICE: &str = "cdn";
/// DescribePushTasks / DescribePurgeTasks: Limit up to 100 (push) / 1,000 (purge); 100 for both.
const PAGE_SIZE: u64 = 100;

pub struct TencentCdn {
    http: reqwest::Client,
    endpoint: String,
    host: String,
    secret_id: String,
    secret: Secret,
    region: Option<String>,
    area: Option<String>,
    clock: SharedClock,
}

/// Tencent's query times: `YYYY-MM-DD hh:mm:ss`, Beijing time.
pub fn beijing(ms: i64) -> String {
    to_datetime(ms).with_timezone(&Shanghai).format("%Y-%m-%d %H:%M:%S").to_string()
}

impl TencentCdn {
    pub fn new(c: &VendorConfig, clock: SharedClock) -> anyhow::Result<Self> {
        Ok(TencentCdn {
            http: http_client(c.timeout)?,
            endpoint: c.endpoint.trim_end_matches('/').to_string(),
            host: endpoint_host(&c.name, &c.endpoint)?,
            secret_id: c.access_key_id.clone(),
            secret: c.secret.clone(),
            region: c.options.region.clone(),
            area: c.options.area.clone(),
            clock,
        })
    }

    /// Calls `action` and returns its `Response`, or the vendor's error classified.
    async fn call(&self, action: &str, body: Value) -> Result<Value, VendorError> {
        let sign_err = |e: sign::SignError| VendorError::new(ErrorClass::Fatal, "SigningFailed", e.to_string());
        let mut parts = HttpParts::new("POST", "/");
        parts.set_header("Host", self.host.clone());
        parts.set_header("Content-Type", "application/json");
        parts.body = serde_json::to_vec(&body).expect("JSON values serialize");
        let now = to_datetime(self.clock.now_ms());
        sign::tc3_prepare(&mut parts, action, VERSION, self.region.as_deref(), now).map_err(sign_err)?;
        let auth = sign::tc3_sign(&self.secret_id, self.secret.expose(), SERVICE, &parts).map_err(sign_err)?;
        parts.set_header("Authorization", auth);
        let mut rb = self.http.post(format!("{}/", self.endpoint));
        for (k, v) in parts.headers.iter().filter(|(k, _)| !k.eq_ignore_ascii_case("host")) {
            rb = rb.header(k.as_str(), v.as_str());
        }
        let resp = rb.body(parts.body).send().await.map_err(VendorError::from_reqwest)?;
        let status = resp.status();
        let after = retry_after(resp.headers());
        let reply: Value = match resp.bytes().await {
            Ok(b) => serde_json::from_slice(&b).unwrap_or(Value::Null),
            Err(e) => return Err(VendorError::from_reqwest(e)),
        };
        let response = &reply["Response"];
        let error = &response["Error"];
        match text(&error["Code"]).filter(|c| !c.is_empty()) {
            None if status.is_success() && response.is_object() => Ok(response.clone()),
            code => {
                let code = code.unwrap_or_else(|| format!("HTTP{}", status.as_u16()));
                let message = text(&error["Message"]).unwrap_or_default();
                let mut e = VendorError::new(classify(status.as_u16(), &code), code, message);
                e.retry_after = after;
                Err(e)
            }
        }
    }

    fn area_params(&self, body: &mut Value) {
        if let Some(area) = &self.area {
            body["Area"] = json!(area);
        }
    }

    /// The task list (by task id or by time), paged, as (url, task id, status, description).
    async fn list_tasks(
        &self,
        task: TaskType,
        task_id: Option<&str>,
        since_ms: i64,
    ) -> Result<Vec<TaskRow>, VendorError> {
        let now = self.clock.now_ms();
        let (action, field) = match task {
            TaskType::Preload => ("DescribePushTasks", "PushLogs"),
            _ => ("DescribePurgeTasks", "PurgeLogs"),
        };
        let mut out = Vec::new();
        for page in 0..50u64 {
            let mut body = json!({
                "StartTime": beijing(since_ms),
                "EndTime": beijing(now + 60_000),
                "Offset": page * PAGE_SIZE,
                "Limit": PAGE_SIZE,
            });
            if let Some(id) = task_id {
                body["TaskId"] = json!(id);
            }
            match task {
                TaskType::RefreshFile => body["PurgeType"] = json!("url"),
                TaskType::RefreshDir => body["PurgeType"] = json!("path"),
                TaskType::Preload => self.area_params(&mut body),
            }
            let response = self.call(action, body).await?;
            let logs = response[field].as_array().cloned().unwrap_or_default();
            out.extend(logs.iter().map(|t| TaskRow::from_json(t, "Url", "TaskId")));
            let total = number(&response["TotalCount"]).unwrap_or(0);
            if logs.is_empty() || (page + 1) * PAGE_SIZE >= total {
                break;
            }
        }
        Ok(out)
    }
}

/// Tencent error codes by what the engine must do: `RequestLimitExceeded*` (API throttling) and
/// server trouble are retried; the daily limits (`LimitExceeded.CdnPushExceedDayLimit`, the purge
/// twins) wait for the next vendor day; authentication (`AuthFailure.*`), parameters and batch
/// limits fail the subtask.
pub fn classify(status: u16, code: &str) -> ErrorClass {
    if code.starts_with("RequestLimitExceeded") {
        ErrorClass::Retryable
    } else if code.starts_with("LimitExceeded.") && code.ends_with("DayLimit") {
        ErrorClass::Quota
    } else if code.starts_with("AuthFailure") || code.starts_with("UnauthorizedOperation") {
        ErrorClass::Fatal
    } else if status == 429
        || status >= 500
        || code.starts_with("InternalError")
        || code.starts_with("FailedOperation.CdnSystemError")
        || code == "ResourceUnavailable"
    {
        ErrorClass::Retryable
    } else {
        ErrorClass::Fatal
    }
}

/// The quota of `area` among `[{Area, Batch, Total, Available}]`; `global` counts against both
/// regions, so the tighter one.
fn pick_quota(list: &Value, area: &str) -> Option<QuotaReport> {
    let quotas: Vec<QuotaReport> = list
        .as_array()?
        .iter()
        .filter(|q| area == "global" || q["Area"].as_str() == Some(area))
        .filter_map(|q| Some(QuotaReport { limit: number(&q["Total"])?, remaining: number(&q["Available"])? }))
        .collect();
    quotas.into_iter().min_by_key(|q| q.remaining)
}

impl VendorApi for TencentCdn {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            preload: true,
            refresh_file: true,
            refresh_dir: true,
            task_status: true,
            quota: true,
            task_list: true,
        }
    }

    fn submit<'a>(&'a self, req: SubmitRequest<'a>) -> BoxFuture<'a, Result<Accepted, VendorError>> {
        Box::pin(async move {
            let (action, mut body) = match req.task_type {
                TaskType::Preload => ("PushUrlsCache", json!({ "Urls": req.urls })),
                TaskType::RefreshFile => ("PurgeUrlsCache", json!({ "Urls": req.urls })),
                TaskType::RefreshDir => ("PurgePathCache", json!({ "Paths": req.urls, "FlushType": "flush" })),
            };
            self.area_params(&mut body);
            let response = self.call(action, body).await?;
            Ok(Accepted::tasks(text(&response["TaskId"]).into_iter().filter(|s| !s.is_empty()).collect()))
        })
    }

    fn task_status<'a>(
        &'a self,
        task: TaskType,
        task_ids: &'a [String],
        urls: &'a [String],
        since_ms: i64,
    ) -> BoxFuture<'a, Result<Vec<UrlReport>, VendorError>> {
        Box::pin(async move {
            let mut tasks = Vec::new();
            for id in task_ids {
                tasks.extend(self.list_tasks(task, Some(id), since_ms).await?);
            }
            Ok(reports(urls, &tasks, &task_ids.iter().collect::<HashSet<_>>()))
        })
    }

    fn find_submitted<'a>(
        &'a self,
        task: TaskType,
        urls: &'a [String],
        since_ms: i64,
    ) -> BoxFuture<'a, Result<Option<Vec<String>>, VendorError>> {
        Box::pin(async move { Ok(proof(urls, &self.list_tasks(task, None, since_ms).await?)) })
    }

    fn quota<'a>(&'a self, task: TaskType) -> BoxFuture<'a, Result<Option<QuotaReport>, VendorError>> {
        Box::pin(async move {
            let area = self.area.as_deref().unwrap_or("mainland");
            let (action, field) = match task {
                TaskType::Preload => ("DescribePushQuota", "UrlPush"),
                TaskType::RefreshFile => ("DescribePurgeQuota", "UrlPurge"),
                TaskType::RefreshDir => ("DescribePurgeQuota", "PathPurge"),
            };
            let response = self.call(action, json!({})).await?;
            Ok(pick_quota(&response[field], area))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_classified() {
        assert_eq!(classify(200, "RequestLimitExceeded"), ErrorClass::Retryable);
        assert_eq!(classify(200, "RequestLimitExceeded.UinLimitExceeded"), ErrorClass::Retryable);
        assert_eq!(classify(200, "LimitExceeded.CdnPushExceedDayLimit"), ErrorClass::Quota);
        assert_eq!(classify(200, "LimitExceeded.CdnPurgeUrlExceedDayLimit"), ErrorClass::Quota);
        assert_eq!(classify(200, "LimitExceeded.CdnPurgePathExceedDayLimit"), ErrorClass::Quota);
        assert_eq!(classify(200, "LimitExceeded.CdnPushExceedBatchLimit"), ErrorClass::Fatal);
        assert_eq!(classify(200, "AuthFailure.SignatureFailure"), ErrorClass::Fatal);
        assert_eq!(classify(200, "AuthFailure.SecretIdNotFound"), ErrorClass::Fatal);
        assert_eq!(classify(200, "InternalError"), ErrorClass::Retryable);
        assert_eq!(classify(503, "HTTP503"), ErrorClass::Retryable);
    }

    #[test]
    fn quotas_are_per_region() {
        let list = json!([
            {"Area": "mainland", "Batch": 500, "Total": 1000, "Available": 700},
            {"Area": "overseas", "Batch": 500, "Total": 1000, "Available": 400},
        ]);
        assert_eq!(pick_quota(&list, "mainland"), Some(QuotaReport { limit: 1000, remaining: 700 }));
        assert_eq!(pick_quota(&list, "overseas"), Some(QuotaReport { limit: 1000, remaining: 400 }));
        assert_eq!(pick_quota(&list, "global"), Some(QuotaReport { limit: 1000, remaining: 400 }));
        assert_eq!(beijing(0), "1970-01-01 08:00:00");
    }
}
