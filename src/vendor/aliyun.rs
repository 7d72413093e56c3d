//! Alibaba Cloud clients: CDN (`aliyun_cdn`, API 2018-05-10) and ESA (`aliyun_esa`, API
//! 2024-09-10), both RPC style over ACS3-HMAC-SHA256 (CDN optionally the legacy HMAC-SHA1).
//!
//! Requests carry their parameters in the query string of a `POST /`, as the official SDKs
//! send them; arrays and objects travel as JSON strings (the SDKs' "shrink" style).

use chrono::SecondsFormat;
use futures_util::future::BoxFuture;
use serde_json::Value;

use super::tasklist::{domains, endpoint_host, number, proof, reports, text, TaskRow};
use super::{
    http_client, retry_after, Accepted, Capabilities, ErrorClass, QuotaReport, SubmitRequest, UrlReport, VendorApi,
    VendorError,
};
use crate::clock::{to_datetime, SharedClock};
use crate::config::{Secret, VendorConfig, VendorOptions};
use crate::model::TaskType;
use crate::sign::{self, HttpParts};

const CDN_VERSION: &str = "2018-05-10";
const ESA_VERSION: &str = "2024-09-10";
/// DescribePreloadTasks / DescribePurgeTasks take PageSize 1 to 50.
const ESA_PAGE_SIZE: u64 = 50;

/// The signed transport shared by both products.
struct Acs {
    http: reqwest::Client,
    endpoint: String,
    host: String,
    access_key_id: String,
    secret: Secret,
    version: &'static str,
    rpc_sha1: bool,
    clock: SharedClock,
}

impl Acs {
    fn new(c: &VendorConfig, version: &'static str, clock: SharedClock) -> anyhow::Result<Acs> {
        let host = endpoint_host(&c.name, &c.endpoint)?;
        Ok(Acs {
            http: http_client(c.timeout)?,
            endpoint: c.endpoint.trim_end_matches('/').to_string(),
            host,
            access_key_id: c.access_key_id.clone(),
            secret: c.secret.clone(),
            version,
            rpc_sha1: c.options.signature.as_deref() == Some("rpc_sha1"),
            clock,
        })
    }

    /// Calls `action` and returns the JSON body, or the vendor's error classified.
    async fn call(&self, action: &str, params: Vec<(String, String)>) -> Result<Value, VendorError> {
        let now = to_datetime(self.clock.now_ms());
        let nonce = hex::encode(rand::random::<[u8; 16]>());
        let mut parts = HttpParts::new("POST", "/");
        parts.query = params;
        parts.set_header("host", self.host.clone());
        let sign_err = |e: sign::SignError| VendorError::new(ErrorClass::Fatal, "SigningFailed", e.to_string());
        let mut headers = Vec::new();
        if self.rpc_sha1 {
            parts.query.push(("Action".into(), action.into()));
            parts.query.push(("Version".into(), self.version.into()));
            parts.query.push(("Format".into(), "JSON".into()));
            let added = sign::rpc_sign(&self.access_key_id, self.secret.expose(), &parts, now, &nonce);
            parts.query.extend(added);
        } else {
            sign::acs3_prepare(&mut parts, action, self.version, now, &nonce).map_err(sign_err)?;
            let auth = sign::acs3_sign(&self.access_key_id, self.secret.expose(), &parts).map_err(sign_err)?;
            parts.set_header("authorization", auth);
            headers = parts.headers.clone();
        }
        let url = format!("{}/?{}", self.endpoint, sign::canonical_query(&parts.query));
        let mut rb = self.http.post(url);
        for (k, v) in headers.iter().filter(|(k, _)| k != "host") {
            rb = rb.header(k.as_str(), v.as_str());
        }
        let resp = rb.send().await.map_err(VendorError::from_reqwest)?;
        let status = resp.status();
        let after = retry_after(resp.headers());
        let body: Value = match resp.bytes().await {
            Ok(b) => serde_json::from_slice(&b).unwrap_or(Value::Null),
            Err(e) => return Err(VendorError::from_reqwest(e)),
        };
        if status.is_success() {
            return Ok(body);
        }
        let code = text(&body["Code"]).unwrap_or_else(|| format!("HTTP{}", status.as_u16()));
        let message = text(&body["Message"]).unwrap_or_default();
        let mut e = VendorError::new(classify(status.as_u16(), &code), code, message);
        e.retry_after = after;
        Err(e)
    }
}

/// Alibaba error codes by what the engine must do. Throttling and server trouble are retried,
/// a spent quota waits for the vendor's next day, everything else (credentials, parameters,
/// domains not owned) fails the subtask with the vendor's code.
pub fn classify(status: u16, code: &str) -> ErrorClass {
    let lower = code.to_ascii_lowercase();
    if lower.starts_with("throttling") || lower == "toomanyrequests" || lower.contains("serviceunavailable") {
        ErrorClass::Retryable
    } else if lower.contains("quota") {
        ErrorClass::Quota
    } else if status == 429 || status >= 500 || lower == "internalerror" || lower.contains("timeout") {
        ErrorClass::Retryable
    } else {
        ErrorClass::Fatal
    }
}

fn iso(ms: i64) -> String {
    to_datetime(ms).to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn p(k: &str, v: impl Into<String>) -> (String, String) {
    (k.to_string(), v.into())
}

fn options_params(o: &VendorOptions, task: TaskType) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if task == TaskType::Preload {
        if let Some(a) = &o.area {
            out.push(p("Area", a.clone()));
        }
        if let Some(l2) = o.l2_preload {
            out.push(p("L2Preload", l2.to_string()));
        }
        if let Some(h) = &o.with_header {
            out.push(p("WithHeader", h.clone()));
        }
    } else if let Some(f) = o.force {
        out.push(p("Force", f.to_string()));
    }
    out
}

fn collect_ids(v: &Value) -> Vec<String> {
    text(v)
        .map(|s| s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect())
        .unwrap_or_default()
}

// ---- CDN ------------------------------------------------------------------------------------

pub struct AliyunCdn {
    acs: Acs,
    options: VendorOptions,
}

impl AliyunCdn {
    pub fn new(c: &VendorConfig, clock: SharedClock) -> anyhow::Result<Self> {
        Ok(AliyunCdn { acs: Acs::new(c, CDN_VERSION, clock)?, options: c.options.clone() })
    }

    fn object_type(task: TaskType) -> &'static str {
        match task {
            TaskType::Preload => "preload",
            TaskType::RefreshFile => "file",
            TaskType::RefreshDir => "directory",
        }
    }

    /// Tasks of `task` type created since `since_ms` for the URLs' domains (task list,
    /// paged), as (url, task id, status, description).
    async fn list_tasks(&self, task: TaskType, urls: &[String], since_ms: i64) -> Result<Vec<TaskRow>, VendorError> {
        let mut out = Vec::new();
        for domain in domains(urls) {
            for page in 1..=20 {
                let body = self
                    .acs
                    .call(
                        "DescribeRefreshTasks",
                        vec![
                            p("DomainName", domain.clone()),
                            p("ObjectType", Self::object_type(task)),
                            p("StartTime", iso(since_ms)),
                            p("EndTime", iso(self.acs.clock.now_ms() + 60_000)),
                            p("PageNumber", page.to_string()),
                            p("PageSize", "100"),
                        ],
                    )
                    .await?;
                let tasks = body["Tasks"]["CDNTask"].as_array().cloned().unwrap_or_default();
                for t in &tasks {
                    out.push(TaskRow::from_json(t, "ObjectPath", "TaskId"));
                }
                let total = number(&body["TotalCount"]).unwrap_or(0);
                if tasks.is_empty() || (page * 100) as u64 >= total {
                    break;
                }
            }
        }
        Ok(out)
    }
}

impl VendorApi for AliyunCdn {
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
            let mut params = vec![p("ObjectPath", req.urls.join("\n"))];
            params.extend(options_params(&self.options, req.task_type));
            let (action, field) = match req.task_type {
                TaskType::Preload => ("PushObjectCache", "PushTaskId"),
                TaskType::RefreshFile => {
                    params.push(p("ObjectType", "File"));
                    ("RefreshObjectCaches", "RefreshTaskId")
                }
                TaskType::RefreshDir => {
                    params.push(p("ObjectType", "Directory"));
                    ("RefreshObjectCaches", "RefreshTaskId")
                }
            };
            let body = self.acs.call(action, params).await?;
            Ok(Accepted::tasks(collect_ids(&body[field])))
        })
    }

    fn task_status<'a>(
        &'a self,
        _task: TaskType,
        task_ids: &'a [String],
        urls: &'a [String],
        _since_ms: i64,
    ) -> BoxFuture<'a, Result<Vec<UrlReport>, VendorError>> {
        Box::pin(async move {
            let mut tasks = Vec::new();
            for chunk in task_ids.chunks(10) {
                let body = self.acs.call("DescribeRefreshTaskById", vec![p("TaskId", chunk.join(","))]).await?;
                for t in body["Tasks"].as_array().into_iter().flatten() {
                    tasks.push(TaskRow::from_json(t, "ObjectPath", "TaskId"));
                }
            }
            Ok(reports(urls, &tasks, &task_ids.iter().collect()))
        })
    }

    fn find_submitted<'a>(
        &'a self,
        task: TaskType,
        urls: &'a [String],
        since_ms: i64,
    ) -> BoxFuture<'a, Result<Option<Vec<String>>, VendorError>> {
        Box::pin(async move { Ok(proof(urls, &self.list_tasks(task, urls, since_ms).await?)) })
    }

    fn quota<'a>(&'a self, task: TaskType) -> BoxFuture<'a, Result<Option<QuotaReport>, VendorError>> {
        Box::pin(async move {
            let body = self.acs.call("DescribeRefreshQuota", vec![]).await?;
            let (q, r) = match task {
                TaskType::Preload => ("PreloadQuota", "PreloadRemain"),
                TaskType::RefreshFile => ("UrlQuota", "UrlRemain"),
                TaskType::RefreshDir => ("DirQuota", "DirRemain"),
            };
            Ok(match (number(&body[q]), number(&body[r])) {
                (Some(limit), Some(remaining)) => Some(QuotaReport { limit, remaining }),
                _ => None,
            })
        })
    }
}

// ---- ESA ------------------------------------------------------------------------------------

pub struct AliyunEsa {
    acs: Acs,
    site_id: String,
}

impl AliyunEsa {
    pub fn new(c: &VendorConfig, clock: SharedClock) -> anyhow::Result<Self> {
        let site_id = c.options.site_id.clone().unwrap_or_default();
        Ok(AliyunEsa { acs: Acs::new(c, ESA_VERSION, clock)?, site_id })
    }

    /// Tasks since `since_ms`, paged until every one of `wanted` has been seen (the list holds
    /// the whole site's tasks; there is no filter by several URLs at once).
    async fn list_tasks(&self, task: TaskType, since_ms: i64, wanted: &[String]) -> Result<Vec<TaskRow>, VendorError> {
        let action = if task == TaskType::Preload { "DescribePreloadTasks" } else { "DescribePurgeTasks" };
        let mut out: Vec<TaskRow> = Vec::new();
        let mut missing: std::collections::HashSet<&str> = wanted.iter().map(String::as_str).collect();
        for page in 1..=20 {
            let mut params = vec![
                p("SiteId", self.site_id.clone()),
                p("StartTime", iso(since_ms)),
                p("EndTime", iso(self.acs.clock.now_ms() + 60_000)),
                p("PageNumber", page.to_string()),
                p("PageSize", ESA_PAGE_SIZE.to_string()),
            ];
            if task != TaskType::Preload {
                params.push(p("Type", if task == TaskType::RefreshDir { "directory" } else { "file" }));
            }
            let body = self.acs.call(action, params).await?;
            let tasks = body["Tasks"].as_array().cloned().unwrap_or_default();
            out.extend(tasks.iter().map(|t| TaskRow::from_json(t, "Content", "TaskId")));
            for t in &tasks {
                if let Some(c) = t["Content"].as_str() {
                    missing.remove(c);
                }
            }
            let total = number(&body["TotalCount"]).unwrap_or(0);
            if tasks.is_empty() || page * ESA_PAGE_SIZE >= total || missing.is_empty() {
                break;
            }
        }
        Ok(out)
    }
}

impl VendorApi for AliyunEsa {
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
            let site = p("SiteId", self.site_id.clone());
            let (action, params) = match req.task_type {
                TaskType::Preload => {
                    ("PreloadCaches", vec![site, p("Content", serde_json::to_string(req.urls).expect("json"))])
                }
                TaskType::RefreshFile => (
                    "PurgeCaches",
                    vec![site, p("Type", "file"), p("Content", serde_json::json!({ "Files": req.urls }).to_string())],
                ),
                TaskType::RefreshDir => (
                    "PurgeCaches",
                    vec![
                        site,
                        p("Type", "directory"),
                        p("Content", serde_json::json!({ "Directories": req.urls }).to_string()),
                    ],
                ),
            };
            let body = self.acs.call(action, params).await?;
            Ok(Accepted::tasks(collect_ids(&body["TaskId"])))
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
            let tasks = self.list_tasks(task, since_ms, urls).await?;
            Ok(reports(urls, &tasks, &task_ids.iter().collect()))
        })
    }

    fn find_submitted<'a>(
        &'a self,
        task: TaskType,
        urls: &'a [String],
        since_ms: i64,
    ) -> BoxFuture<'a, Result<Option<Vec<String>>, VendorError>> {
        Box::pin(async move { Ok(proof(urls, &self.list_tasks(task, since_ms, urls).await?)) })
    }

    fn quota<'a>(&'a self, task: TaskType) -> BoxFuture<'a, Result<Option<QuotaReport>, VendorError>> {
        Box::pin(async move {
            if task == TaskType::Preload {
                return Ok(None); // ESA publishes no preload quota query: the configured quota is used.
            }
            let kind = if task == TaskType::RefreshDir { "directory" } else { "file" };
            let body = self.acs.call("GetPurgeQuota", vec![p("SiteId", self.site_id.clone()), p("Type", kind)]).await?;
            Ok(match (number(&body["Quota"]), number(&body["Usage"])) {
                (Some(limit), Some(used)) => Some(QuotaReport { limit, remaining: limit.saturating_sub(used) }),
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
        assert_eq!(classify(400, "Throttling.User"), ErrorClass::Retryable);
        assert_eq!(classify(503, "Throttling"), ErrorClass::Retryable);
        assert_eq!(classify(400, "TooManyRequests"), ErrorClass::Retryable);
        assert_eq!(classify(500, "InternalError"), ErrorClass::Retryable);
        assert_eq!(classify(400, "QuotaExceed.Preload"), ErrorClass::Quota);
        assert_eq!(classify(400, "PreloadQuotaExceed"), ErrorClass::Quota);
        assert_eq!(classify(404, "InvalidAccessKeyId.NotFound"), ErrorClass::Fatal);
        assert_eq!(classify(400, "SignatureDoesNotMatch"), ErrorClass::Fatal);
        assert_eq!(classify(400, "InvalidDomain.NotFound"), ErrorClass::Fatal);
        assert_eq!(classify(400, "InvalidParameter.ObjectId"), ErrorClass::Fatal);
    }
}
