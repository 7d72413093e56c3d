//! Volcengine CDN client (`volcengine_cdn`, API 2021-03-01): `SubmitPreloadTask`,
//! `SubmitRefreshTask` (file and dir), `DescribeContentTasks` (status and crash reconciliation),
//! `DescribeContentQuota`.
//!
//! Every call is a `POST /?Action=..&Version=2021-03-01` with a JSON body, signed with
//! Volcengine's HMAC-SHA256 (V4) for region `cn-north-1` and service `CDN`, as the official
//! `volcengine` SDK's `CDNService` sends it. Answers are `{"ResponseMetadata": {.., "Error"?},
//! "Result": {..}}`.

use std::collections::HashSet;

use futures_util::future::BoxFuture;
use serde_json::{json, Value};

use super::tasklist::{domains, endpoint_host, number, proof, reports, text, TaskRow};
use super::{
    http_client, retry_after, Accepted, Capabilities, ErrorClass, QuotaReport, SubmitRequest, UrlReport, VendorApi,
    VendorError,
};
use crate::clock::{to_datetime, SharedClock};
use crate::config::{Secret, VendorConfig};
use crate::model::TaskType;
use crate::sign::{self, HttpParts};

pub const VERSION: &str = "2021-03-01";
pub const SERVICE: &str = "CDN";
pub const DEFAULT_REGION: &str = "cn-north-1";
/// DescribeContentTasks pages hold at most 100 tasks.
const PAGE_SIZE: u64 = 100;
/// DescribeContentTasks looks back 7 days.
const LOOKBACK_MS: i64 = 7 * 86_400_000;

pub struct VolcengineCdn {
    http: reqwest::Client,
    endpoint: String,
    host: String,
    access_key_id: String,
    secret: Secret,
    region: String,
    area: Option<String>,
    clock: SharedClock,
}

impl VolcengineCdn {
    pub fn new(c: &VendorConfig, clock: SharedClock) -> anyhow::Result<Self> {
        Ok(VolcengineCdn {
            http: http_client(c.timeout)?,
            endpoint: c.endpoint.trim_end_matches('/').to_string(),
            host: endpoint_host(&c.name, &c.endpoint)?,
            access_key_id: c.access_key_id.clone(),
            secret: c.secret.clone(),
            region: c.options.region.clone().unwrap_or_else(|| DEFAULT_REGION.to_string()),
            area: c.options.area.clone(),
            clock,
        })
    }

    /// Calls `action` with a JSON body and returns its `Result`, or the vendor's error classified.
    async fn call(&self, action: &str, body: Value) -> Result<Value, VendorError> {
        let sign_err = |e: sign::SignError| VendorError::new(ErrorClass::Fatal, "SigningFailed", e.to_string());
        let mut parts = HttpParts::new("POST", "/");
        parts.query = vec![("Action".into(), action.into()), ("Version".into(), VERSION.into())];
        parts.set_header("Host", self.host.clone());
        parts.set_header("Content-Type", "application/json");
        parts.body = serde_json::to_vec(&body).expect("JSON values serialize");
        sign::volc_prepare(&mut parts, to_datetime(self.clock.now_ms())).map_err(sign_err)?;
        let auth = sign::volc_sign(&self.access_key_id, self.secret.expose(), &self.region, SERVICE, &parts)
            .map_err(sign_err)?;
        parts.set_header("Authorization", auth);
        let url = format!("{}/?{}", self.endpoint, sign::canonical_query(&parts.query));
        let mut rb = self.http.post(url);
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
        let error = &reply["ResponseMetadata"]["Error"];
        match text(&error["Code"]).filter(|c| !c.is_empty()) {
            None if status.is_success() => Ok(reply["Result"].clone()),
            code => {
                let code = code.unwrap_or_else(|| format!("HTTP{}", status.as_u16()));
                let message = text(&error["Message"]).unwrap_or_default();
                let mut e = VendorError::new(classify(status.as_u16(), &code), code, message);
                e.retry_after = after;
                Err(e)
            }
        }
    }

    fn task_type(task: TaskType) -> &'static str {
        match task {
            TaskType::Preload => "preload",
            TaskType::RefreshFile => "refresh_file",
            TaskType::RefreshDir => "refresh_dir",
        }
    }

    /// DescribeContentTasks, paged, as (url, task id, status, description).
    async fn list_tasks(
        &self,
        task: TaskType,
        filter: (&str, &str),
        since_ms: i64,
    ) -> Result<Vec<TaskRow>, VendorError> {
        let now = self.clock.now_ms();
        let start = since_ms.max(now - LOOKBACK_MS + 60_000) / 1000;
        let mut out = Vec::new();
        for page in 1..=50u64 {
            let mut body = json!({
                "TaskType": Self::task_type(task),
                "StartTime": start,
                "EndTime": now / 1000 + 60,
                "PageNum": page,
                "PageSize": PAGE_SIZE,
            });
            body[filter.0] = json!(filter.1);
            let result = self.call("DescribeContentTasks", body).await?;
            let data = result["Data"].as_array().cloned().unwrap_or_default();
            out.extend(data.iter().map(|t| TaskRow::from_json(t, "Url", "TaskID")));
            let total = number(&result["Total"]).unwrap_or(0);
            if data.is_empty() || page * PAGE_SIZE >= total {
                break;
            }
        }
        Ok(out)
    }
}

/// Volcengine error codes by what the engine must do. The gateway's flow control
/// (`FlowLimitExceeded`, HTTP 429) and server trouble are retried; a spent daily quota waits for
/// the next vendor day; credentials and parameters fail the subtask.
pub fn classify(status: u16, code: &str) -> ErrorClass {
    let lower = code.to_ascii_lowercase();
    if lower.contains("flowlimit") || lower.contains("requestlimit") || lower.contains("throttl") {
        ErrorClass::Retryable
    } else if lower.contains("quota") {
        ErrorClass::Quota
    } else if status == 429
        || status >= 500
        || lower.starts_with("internal")
        || lower.starts_with("serviceunavailable")
        || lower.contains("timeout")
    {
        ErrorClass::Retryable
    } else {
        ErrorClass::Fatal
    }
}

impl VendorApi for VolcengineCdn {
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
            let mut body = json!({ "Urls": req.urls.join("\n") });
            let action = match req.task_type {
                TaskType::Preload => {
                    if let Some(area) = &self.area {
                        body["Area"] = json!(area);
                    }
                    "SubmitPreloadTask"
                }
                TaskType::RefreshFile => {
                    body["Type"] = json!("file");
                    "SubmitRefreshTask"
                }
                TaskType::RefreshDir => {
                    body["Type"] = json!("dir");
                    "SubmitRefreshTask"
                }
            };
            let result = self.call(action, body).await?;
            Ok(Accepted::tasks(text(&result["TaskID"]).into_iter().filter(|s| !s.is_empty()).collect()))
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
                tasks.extend(self.list_tasks(task, ("TaskID", id), since_ms).await?);
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
        Box::pin(async move {
            let mut tasks = Vec::new();
            for domain in domains(urls) {
                tasks.extend(self.list_tasks(task, ("DomainName", &domain), since_ms).await?);
            }
            Ok(proof(urls, &tasks))
        })
    }

    fn quota<'a>(&'a self, task: TaskType) -> BoxFuture<'a, Result<Option<QuotaReport>, VendorError>> {
        Box::pin(async move {
            let result = self.call("DescribeContentQuota", json!({})).await?;
            let (q, r) = match task {
                TaskType::Preload => ("PreloadQuota", "PreloadRemain"),
                TaskType::RefreshFile => ("RefreshQuota", "RefreshRemain"),
                TaskType::RefreshDir => ("RefreshDirQuota", "RefreshDirRemain"),
            };
            Ok(match (number(&result[q]), number(&result[r])) {
                (Some(limit), Some(remaining)) => Some(QuotaReport { limit, remaining }),
                _ => None,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_classified() {
        assert_eq!(classify(429, "FlowLimitExceeded"), ErrorClass::Retryable);
        assert_eq!(classify(500, "InternalError"), ErrorClass::Retryable);
        assert_eq!(classify(503, "ServiceUnavailableTemp"), ErrorClass::Retryable);
        assert_eq!(classify(400, "QuotaExceeded.Preload"), ErrorClass::Quota);
        assert_eq!(classify(403, "SignatureDoesNotMatch"), ErrorClass::Fatal);
        assert_eq!(classify(401, "InvalidAccessKey"), ErrorClass::Fatal);
        assert_eq!(classify(400, "InvalidParameter.Urls"), ErrorClass::Fatal);
    }
}
