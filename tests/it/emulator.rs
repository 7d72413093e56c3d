//! The vendor emulator over real loopback HTTP: every action of Alibaba Cloud CDN and ESA,
//! Volcengine CDN and Tencent Cloud CDN, signature failures, limits, quotas, task lifecycles,
//! faults and the ledger, signed with `preloadd::sign`; and the official Python SDKs against it
//! (`official_sdks_interoperate`, `official_volcengine_and_tencent_sdks_interoperate`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use preloadd::clock::{to_datetime, Clock, ManualClock};
use preloadd::emulator::{self, EmulatorOptions, EmulatorState, FaultSet, LedgerRecord, LimitOverride};
use preloadd::model::VendorKind;
use preloadd::sign::{self, percent_encode, HttpParts};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::common::T0;

const CDN: &str = "2018-05-10";
const ESA: &str = "2024-09-10";
const AK: &str = "demo-ak";
const SK: &str = "demo-sk";

/// An emulator on 127.0.0.1:0 with a manual clock standing at [`T0`] (2026-11-29T18:00:00Z).
struct Emu {
    addr: SocketAddr,
    state: Arc<EmulatorState>,
    clock: ManualClock,
    http: reqwest::Client,
    nonce: std::sync::atomic::AtomicU64,
}

/// How one request is signed.
#[derive(Clone)]
struct Signing {
    key_id: String,
    secret: String,
    at: Option<DateTime<Utc>>,
    nonce: Option<String>,
    rpc: bool,
    unsigned: bool,
}

impl Default for Signing {
    fn default() -> Self {
        Signing { key_id: AK.into(), secret: SK.into(), at: None, nonce: None, rpc: false, unsigned: false }
    }
}

/// An answer: HTTP status and JSON body.
#[derive(Debug)]
struct Reply {
    status: u16,
    body: Value,
}

impl Reply {
    fn ok(self) -> Value {
        assert_eq!(self.status, 200, "expected success, got {}", self.body);
        self.body
    }

    fn err(&self, status: u16, code: &str) {
        assert_eq!((self.status, self.body["Code"].as_str()), (status, Some(code)), "{}", self.body);
        for field in ["RequestId", "HostId", "Message", "Recommend"] {
            assert!(self.body[field].is_string(), "{field} missing in {}", self.body);
        }
    }
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn urls(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("https://{prefix}/{i}.js")).collect()
}

impl Emu {
    async fn start() -> Emu {
        Emu::with(|_| {}).await
    }

    async fn with(configure: impl FnOnce(&mut EmulatorOptions)) -> Emu {
        let clock = ManualClock::new(T0);
        let mut opts = EmulatorOptions { clock: Arc::new(clock.clone()), ..EmulatorOptions::default() };
        configure(&mut opts);
        let (app, state) = emulator::router(opts).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        Emu { addr, state, clock, http, nonce: Default::default() }
    }

    fn now(&self) -> DateTime<Utc> {
        to_datetime(self.clock.now_ms())
    }

    fn fresh_nonce(&self) -> String {
        format!("nonce-{}", self.nonce.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }

    /// An ACS3-signed POST with every parameter in the query, as the SDKs send them.
    async fn call(&self, version: &str, action: &str, params: &[(&str, &str)]) -> Reply {
        self.send(version, action, pairs(params), Vec::new(), Signing::default()).await.unwrap()
    }

    async fn send(
        &self,
        version: &str,
        action: &str,
        query: Vec<(String, String)>,
        form: Vec<(String, String)>,
        s: Signing,
    ) -> reqwest::Result<Reply> {
        let at = s.at.unwrap_or_else(|| self.now());
        let nonce = s.nonce.clone().unwrap_or_else(|| self.fresh_nonce());
        let mut parts = HttpParts::new("POST", "/");
        parts.query = query;
        parts.set_header("host", self.addr.to_string());
        if !form.is_empty() {
            parts.set_header("content-type", "application/x-www-form-urlencoded");
            parts.body = form_urlencoded::Serializer::new(String::new()).extend_pairs(&form).finish().into_bytes();
        }
        if s.rpc {
            parts.query.splice(0..0, pairs(&[("Action", action), ("Version", version), ("Format", "JSON")]));
            let added = sign::rpc_sign(&s.key_id, &s.secret, &parts, at, &nonce);
            parts.query.extend(added);
        } else {
            sign::acs3_prepare(&mut parts, action, version, at, &nonce).unwrap();
            if !s.unsigned {
                let auth = sign::acs3_sign(&s.key_id, &s.secret, &parts).unwrap();
                parts.set_header("authorization", auth);
            }
        }
        let query: Vec<String> =
            parts.query.iter().map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v))).collect();
        let mut req = self.http.post(format!("http://{}/?{}", self.addr, query.join("&")));
        for (k, v) in parts.headers.iter().filter(|(k, _)| k != "host") {
            req = req.header(k, v);
        }
        let resp = req.body(parts.body).send().await?;
        let status = resp.status().as_u16();
        let body = resp.json().await?;
        Ok(Reply { status, body })
    }

    async fn control(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Reply {
        let mut req = self.http.request(method, format!("http://{}{path}", self.addr));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        Reply { status: resp.status().as_u16(), body: resp.json().await.unwrap() }
    }

    async fn push(&self, paths: &[String]) -> Reply {
        self.call(CDN, "PushObjectCache", &[("ObjectPath", &paths.join("\n"))]).await
    }

    async fn tasks_by_id(&self, ids: &str) -> Vec<Value> {
        let body = self.call(CDN, "DescribeRefreshTaskById", &[("TaskId", ids)]).await.ok();
        assert_eq!(body["TotalCount"].as_u64().unwrap() as usize, body["Tasks"].as_array().unwrap().len());
        body["Tasks"].as_array().unwrap().clone()
    }
}

fn statuses(tasks: &[Value]) -> Vec<&str> {
    tasks.iter().map(|t| t["Status"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn cdn_actions_answer_like_the_vendor() {
    let emu = Emu::start().await;
    let paths = ["https://a.example.com/1.js", "https://a.example.com/2.js", "b.example.com/3.js"];
    let push = emu
        .call(
            CDN,
            "PushObjectCache",
            &[("ObjectPath", &paths.join("\r\n")), ("Area", "domestic"), ("L2Preload", "true")],
        )
        .await
        .ok();
    assert!(push["RequestId"].is_string());
    // One task id per accelerated domain name, comma-separated.
    let push_ids: Vec<&str> = push["PushTaskId"].as_str().unwrap().split(',').collect();
    assert_eq!(push_ids.len(), 2, "{push}");

    let refresh = emu
        .call(CDN, "RefreshObjectCaches", &[("ObjectPath", "https://a.example.com/dir/"), ("ObjectType", "Directory")])
        .await
        .ok();
    let refresh_id = refresh["RefreshTaskId"].as_str().unwrap().to_string();

    let all = format!("{},{refresh_id}", push_ids.join(","));
    let tasks = emu.tasks_by_id(&all).await;
    assert_eq!(tasks.len(), 4);
    let dir = tasks.iter().find(|t| t["TaskId"] == refresh_id.as_str()).unwrap();
    assert_eq!(dir["ObjectType"], "directory");
    assert_eq!(dir["ObjectPath"], "https://a.example.com/dir/");
    assert_eq!(dir["CreationTime"], "2026-11-29T18:00:00Z");
    assert_eq!(dir["Status"], "Refreshing");
    assert_eq!(dir["Process"], "0%");
    assert_eq!(dir["Description"], "");

    let listed = emu.call(CDN, "DescribeRefreshTasks", &[("ObjectType", "preload"), ("PageSize", "2")]).await.ok();
    assert_eq!(
        (listed["TotalCount"].as_u64(), listed["PageNumber"].as_u64(), listed["PageSize"].as_u64()),
        (Some(3), Some(1), Some(2))
    );
    assert_eq!(listed["Tasks"]["CDNTask"].as_array().unwrap().len(), 2);
    let page2 = emu
        .call(CDN, "DescribeRefreshTasks", &[("ObjectType", "preload"), ("PageSize", "2"), ("PageNumber", "2")])
        .await
        .ok();
    assert_eq!(page2["Tasks"]["CDNTask"].as_array().unwrap().len(), 1);
    let by_domain =
        emu.call(CDN, "DescribeRefreshTasks", &[("ObjectType", "preload"), ("DomainName", "b.example.com")]).await.ok();
    assert_eq!(by_domain["Tasks"]["CDNTask"][0]["ObjectPath"], "b.example.com/3.js");
    let by_path = emu.call(CDN, "DescribeRefreshTasks", &[("ObjectPath", "https://a.example.com/2.js")]).await.ok();
    assert_eq!(by_path["TotalCount"], 1);

    // Quotas are strings, as in the SDK model.
    let quota = emu.call(CDN, "DescribeRefreshQuota", &[]).await.ok();
    assert_eq!((quota["PreloadQuota"].as_str(), quota["PreloadRemain"].as_str()), (Some("1000"), Some("997")));
    assert_eq!((quota["DirQuota"].as_str(), quota["DirRemain"].as_str()), (Some("100"), Some("99")));
    assert_eq!((quota["UrlQuota"].as_str(), quota["UrlRemain"].as_str()), (Some("10000"), Some("10000")));
    for field in [
        "RegexQuota",
        "RegexRemain",
        "IgnoreParamsQuota",
        "IgnoreParamsRemain",
        "BlockQuota",
        "BlockRemain",
        "PreloadEdgeQuota",
        "PreloadEdgeRemain",
    ] {
        assert!(quota[field].is_string(), "{field}: {quota}");
    }
}

#[tokio::test]
async fn cdn_validates_parameters_as_documented() {
    let emu = Emu::start().await;
    emu.call(CDN, "PushObjectCache", &[]).await.err(400, "MissingParameter");
    emu.call(CDN, "RefreshObjectCaches", &[("ObjectPath", "a.example.com/x"), ("ObjectType", "Folder")])
        .await
        .err(400, "InvalidObjectType.Malformed");
    let too_long = format!("https://a.example.com/{}", "x".repeat(1_100));
    emu.call(CDN, "PushObjectCache", &[("ObjectPath", &too_long)]).await.err(400, "InvalidObjectPath.Malformed");
    let eleven: Vec<String> = (1..=11).map(|i| i.to_string()).collect();
    emu.call(CDN, "DescribeRefreshTaskById", &[("TaskId", &eleven.join(","))]).await.err(400, "InvalidTaskId");
    emu.call(CDN, "DescribeRefreshTasks", &[("Status", "Complete")]).await.err(400, "MissingParameter.ObjectType");
    emu.call(CDN, "DescribeRefreshTasks", &[("StartTime", "2026-11-29T10:00:00Z")])
        .await
        .err(400, "MissingTimeParameter");
    emu.call(
        CDN,
        "DescribeRefreshTasks",
        &[("StartTime", "2026-11-29T10:00:00Z"), ("EndTime", "2026-11-29T09:00:00Z")],
    )
    .await
    .err(400, "InvalidEndTime.Mismatch");
    emu.call(
        CDN,
        "DescribeRefreshTasks",
        &[("StartTime", "2026-11-20T10:00:00Z"), ("EndTime", "2026-11-29T09:00:00Z")],
    )
    .await
    .err(400, "InvalidTime");
    emu.call(CDN, "DescribeRefreshTasks", &[("PageSize", "101")]).await.err(400, "InvalidParameter");
    emu.call(CDN, "DescribeCdnDomainDetail", &[]).await.err(404, "InvalidAction.NotFound");
    emu.call("2099-01-01", "PushObjectCache", &[]).await.err(400, "InvalidVersion");
    assert!(emu.state.ledger().is_empty());
}

#[tokio::test]
async fn rpc_signing_with_parameters_in_query_and_form_body() {
    let emu = Emu::start().await;
    let rpc = Signing { rpc: true, ..Signing::default() };
    // As the SDK's RPC mode sends RefreshObjectCaches: ObjectPath and ObjectType in the body.
    let reply = emu
        .send(
            CDN,
            "RefreshObjectCaches",
            Vec::new(),
            pairs(&[
                ("ObjectPath", "https://a.example.com/x y.js\nhttps://a.example.com/z.js"),
                ("ObjectType", "File"),
            ]),
            rpc.clone(),
        )
        .await
        .unwrap()
        .ok();
    let id = reply["RefreshTaskId"].as_str().unwrap();
    let tasks = emu.tasks_by_id(id).await;
    assert_eq!(tasks.len(), 2, "a path with a space is one path: {tasks:?}");
    let ledger = emu.state.ledger();
    assert_eq!(ledger[0].urls, vec!["https://a.example.com/x y.js", "https://a.example.com/z.js"]);

    let wrong = Signing { secret: "nope".into(), ..rpc.clone() };
    emu.send(CDN, "DescribeRefreshQuota", Vec::new(), Vec::new(), wrong)
        .await
        .unwrap()
        .err(400, "SignatureDoesNotMatch");
    // ESA's gateway takes the legacy scheme too.
    emu.send(ESA, "GetPurgeQuota", pairs(&[("SiteId", "1")]), Vec::new(), rpc).await.unwrap().ok();
}

#[tokio::test]
async fn signature_failures_get_alibaba_codes() {
    let emu = Emu::start().await;
    let quota = |s: Signing| emu.send(CDN, "DescribeRefreshQuota", Vec::new(), Vec::new(), s);

    quota(Signing { key_id: "nobody".into(), ..Signing::default() })
        .await
        .unwrap()
        .err(404, "InvalidAccessKeyId.NotFound");
    quota(Signing { secret: "wrong".into(), ..Signing::default() }).await.unwrap().err(400, "SignatureDoesNotMatch");
    quota(Signing { unsigned: true, ..Signing::default() }).await.unwrap().err(400, "IncompleteSignature");

    let stale = emu.now() - TimeDelta::minutes(16);
    quota(Signing { at: Some(stale), ..Signing::default() }).await.unwrap().err(400, "InvalidTimeStamp.Expired");
    let early = emu.now() + TimeDelta::minutes(16);
    quota(Signing { at: Some(early), ..Signing::default() }).await.unwrap().err(400, "InvalidTimeStamp.Expired");
    let rpc_stale = Signing { at: Some(stale), rpc: true, ..Signing::default() };
    quota(rpc_stale).await.unwrap().err(400, "InvalidTimeStamp.Expired");

    let once = Signing { nonce: Some("same-nonce".into()), ..Signing::default() };
    assert_eq!(quota(once.clone()).await.unwrap().status, 200);
    quota(once.clone()).await.unwrap().err(400, "SignatureNonceUsed");
    let rpc_once = Signing { rpc: true, ..once };
    quota(rpc_once).await.unwrap().err(400, "SignatureNonceUsed");
    // Signed 14 minutes ago is still good.
    quota(Signing { at: Some(emu.now() - TimeDelta::minutes(14)), ..Signing::default() }).await.unwrap().ok();
}

#[tokio::test]
async fn per_request_url_limits() {
    let emu = Emu::start().await;
    emu.push(&urls("a.example.com", 101)).await.err(400, "SingleRequest.OverLimit");
    emu.push(&urls("a.example.com", 100)).await.ok();
    let dirs: Vec<String> = (0..101).map(|i| format!("https://a.example.com/d{i}/")).collect();
    emu.call(CDN, "RefreshObjectCaches", &[("ObjectPath", &dirs.join("\n")), ("ObjectType", "Directory")])
        .await
        .err(400, "SingleRequest.OverLimit");
    let content = serde_json::to_string(&urls("www.example.com", 101)).unwrap();
    emu.call(ESA, "PreloadCaches", &[("SiteId", "7"), ("Content", &content)]).await.err(400, "SingleRequest.OverLimit");
    assert_eq!(emu.state.ledger().len(), 1, "refused requests leave no trace");
}

#[tokio::test]
async fn more_calls_than_the_rate_in_one_second_are_throttled() {
    let limits = HashMap::from([(VendorKind::AliyunCdn, LimitOverride { qps: Some(3), ..LimitOverride::default() })]);
    let emu = Emu::with(|o| o.limits = limits).await;
    for i in 0..3 {
        emu.push(&[format!("https://a.example.com/{i}.js")]).await.ok();
        emu.clock.advance(100);
    }
    emu.push(&["https://a.example.com/x.js".to_string()]).await.err(400, "Throttling.User");
    // Another action, and the other vendor, have their own budgets.
    emu.call(CDN, "DescribeRefreshQuota", &[]).await.ok();
    emu.call(ESA, "GetPurgeQuota", &[("SiteId", "7")]).await.ok();
    // 1 s after the first call, one slot is free again, and only one.
    emu.clock.set(T0 + 1_000);
    emu.push(&["https://a.example.com/y.js".to_string()]).await.ok();
    emu.push(&["https://a.example.com/z.js".to_string()]).await.err(400, "Throttling.User");
    assert_eq!(emu.state.ledger().len(), 4);
}

#[tokio::test]
async fn daily_quota_resets_at_shanghai_midnight() {
    let limits = HashMap::from([
        (VendorKind::AliyunCdn, LimitOverride { daily_quota: Some(5), ..LimitOverride::default() }),
        (VendorKind::AliyunEsa, LimitOverride { daily_quota: Some(2), ..LimitOverride::default() }),
    ]);
    let emu = Emu::with(|o| o.limits = limits).await;
    // 23:59:00 in Shanghai.
    let late = preloadd::config::parse_time("2026-11-24T23:59:00+08:00").unwrap();
    emu.clock.set(late);
    emu.push(&urls("a.example.com", 3)).await.ok();
    emu.push(&urls("b.example.com", 3)).await.err(400, "QuotaExceeded.Preload");
    emu.push(&urls("c.example.com", 2)).await.ok();
    emu.push(&urls("d.example.com", 1)).await.err(400, "QuotaExceeded.Preload");
    let quota = emu.call(CDN, "DescribeRefreshQuota", &[]).await.ok();
    assert_eq!((quota["PreloadQuota"].as_str(), quota["PreloadRemain"].as_str()), (Some("5"), Some("0")));
    // Refresh has its own counter.
    emu.call(CDN, "RefreshObjectCaches", &[("ObjectPath", "https://a.example.com/0.js")]).await.ok();

    let files = json!({"Files": ["https://www.example.com/a", "https://www.example.com/b"]}).to_string();
    emu.call(ESA, "PurgeCaches", &[("SiteId", "7"), ("Type", "file"), ("Content", &files)]).await.ok();
    emu.call(ESA, "PurgeCaches", &[("SiteId", "7"), ("Type", "file"), ("Content", &files)])
        .await
        .err(400, "QuotaExceeded.Purge");

    emu.clock.set(preloadd::quota::next_vendor_day(late));
    emu.push(&urls("d.example.com", 5)).await.ok();
    let quota = emu.call(CDN, "DescribeRefreshQuota", &[]).await.ok();
    assert_eq!(quota["PreloadRemain"], "0");
    emu.call(ESA, "PurgeCaches", &[("SiteId", "7"), ("Type", "file"), ("Content", &files)]).await.ok();
    let esa = emu.call(ESA, "GetPurgeQuota", &[("SiteId", "7"), ("Type", "file")]).await.ok();
    assert_eq!((esa["Quota"].as_str(), esa["Usage"].as_str()), (Some("2"), Some("2")));
}

#[tokio::test]
async fn tasks_refresh_then_complete_on_the_injected_clock() {
    let emu = Emu::with(|o| o.task_ms = 2_000).await;
    let id = emu.push(&urls("a.example.com", 2)).await.ok()["PushTaskId"].as_str().unwrap().to_string();
    let tasks = emu.tasks_by_id(&id).await;
    assert_eq!(statuses(&tasks), ["Refreshing", "Refreshing"]);
    emu.clock.advance(1_000);
    let tasks = emu.tasks_by_id(&id).await;
    assert_eq!((tasks[0]["Status"].as_str(), tasks[0]["Process"].as_str()), (Some("Refreshing"), Some("50%")));
    let refreshing =
        emu.call(CDN, "DescribeRefreshTasks", &[("ObjectType", "preload"), ("Status", "Refreshing")]).await.ok();
    assert_eq!(refreshing["TotalCount"], 2);
    emu.clock.advance(1_000);
    let tasks = emu.tasks_by_id(&id).await;
    assert_eq!(statuses(&tasks), ["Complete", "Complete"]);
    assert_eq!(tasks[0]["Process"], "100%");
    // The three-day look-back: older tasks are gone.
    emu.clock.advance(3 * 86_400_000);
    assert!(emu.tasks_by_id(&id).await.is_empty());
}

#[tokio::test]
async fn a_predictable_fraction_of_urls_fails() {
    let emu = Emu::with(|o| {
        o.fail_fraction = 0.5;
        o.task_ms = 1_000;
    })
    .await;
    let list = urls("a.example.com", 40);
    emu.push(&list).await.ok();
    emu.clock.advance(1_000);
    let listed = emu.call(CDN, "DescribeRefreshTasks", &[("ObjectType", "preload"), ("PageSize", "100")]).await.ok();
    let tasks = listed["Tasks"]["CDNTask"].as_array().unwrap();
    assert_eq!(tasks.len(), 40);
    let mut failed = 0;
    for t in tasks {
        let url = t["ObjectPath"].as_str().unwrap();
        if emulator::url_fails(url, 0.5) {
            failed += 1;
            assert_eq!(
                (t["Status"].as_str(), t["Description"].as_str()),
                (Some("Failed"), Some("Origin Return StatusCode 5XX"))
            );
        } else {
            assert_eq!((t["Status"].as_str(), t["Description"].as_str()), (Some("Complete"), Some("")));
        }
    }
    assert!(failed > 0 && failed < 40, "{failed} of 40 failed");
    let only_failed = emu
        .call(CDN, "DescribeRefreshTasks", &[("ObjectType", "preload"), ("Status", "Failed"), ("PageSize", "100")])
        .await
        .ok();
    assert_eq!(only_failed["TotalCount"], failed);
}

#[tokio::test]
async fn esa_actions_answer_like_the_vendor() {
    let emu = Emu::start().await;
    let content = json!(["https://www.example.com/a.png", "https://www.example.com/b.png?v=1"]).to_string();
    let headers = json!({"Accept-Encoding": "gzip"}).to_string();
    let preload =
        emu.call(ESA, "PreloadCaches", &[("SiteId", "42"), ("Content", &content), ("Headers", &headers)]).await.ok();
    let preload_id = preload["TaskId"].as_str().unwrap().to_string();

    let files =
        json!({"Files": ["https://www.example.com/a.png", {"Url": "https://www.example.com/c.png", "Headers": {}}]});
    let purge = emu
        .call(
            ESA,
            "PurgeCaches",
            &[("SiteId", "42"), ("Type", "file"), ("Content", &files.to_string()), ("Force", "false")],
        )
        .await
        .ok();
    let dirs = json!({"Directories": ["https://www.example.com/img/"]}).to_string();
    emu.call(ESA, "PurgeCaches", &[("SiteId", "42"), ("Type", "directory"), ("Content", &dirs)]).await.ok();
    emu.call(ESA, "PurgeCaches", &[("SiteId", "42"), ("Type", "file"), ("Content", &dirs)])
        .await
        .err(400, "MissingParameter");
    emu.call(ESA, "PurgeCaches", &[("SiteId", "42"), ("Type", "everything"), ("Content", &dirs)])
        .await
        .err(400, "InvalidParameter");
    emu.call(ESA, "PreloadCaches", &[("SiteId", "42"), ("Content", "not json")]).await.err(400, "InvalidParameter");

    let listed = emu.call(ESA, "DescribePreloadTasks", &[("SiteId", "42")]).await.ok();
    assert_eq!(listed["TotalCount"], 2);
    let task = &listed["Tasks"][0];
    assert_eq!(task["TaskId"], preload_id.as_str());
    assert_eq!(task["CreateTime"], "2026-11-29 18:00:00");
    assert_eq!((task["Status"].as_str(), task["Process"].as_str()), (Some("Refreshing"), Some("0%")));
    assert!(task.get("Type").is_none());
    let other_site = emu.call(ESA, "DescribePreloadTasks", &[("SiteId", "43")]).await.ok();
    assert_eq!(other_site["TotalCount"], 0);

    emu.call(ESA, "DescribePurgeTasks", &[]).await.err(400, "MissingParameter");
    let purges = emu.call(ESA, "DescribePurgeTasks", &[("SiteId", "42"), ("Type", "file")]).await.ok();
    assert_eq!(purges["TotalCount"], 2);
    assert_eq!(purges["Tasks"][0]["TaskId"], purge["TaskId"]);
    assert_eq!(purges["Tasks"][0]["Type"], "file");
    assert_eq!(purges["Tasks"][0]["CreateTime"], "2026-11-29T18:00:00Z");
    let exact = emu
        .call(ESA, "DescribePurgeTasks", &[("SiteId", "42"), ("Content", "https://www.example.com/c.png")])
        .await
        .ok();
    assert_eq!(exact["TotalCount"], 1);
    emu.clock.advance(2_000);
    let done = emu.call(ESA, "DescribePurgeTasks", &[("SiteId", "42"), ("Status", "Complete")]).await.ok();
    assert_eq!(done["TotalCount"], 3);
    emu.call(ESA, "DescribePurgeTasks", &[("SiteId", "42"), ("PageSize", "51")]).await.err(400, "InvalidParameter");

    let quota = emu.call(ESA, "GetPurgeQuota", &[("SiteId", "42"), ("Type", "file")]).await.ok();
    assert_eq!((quota["Quota"].as_str(), quota["Usage"].as_str()), (Some("10000"), Some("2")));
    let dir_quota = emu.call(ESA, "GetPurgeQuota", &[("SiteId", "42"), ("Type", "directory")]).await.ok();
    assert_eq!(dir_quota["Usage"], "1");
}

#[tokio::test]
async fn ledger_lines_match_accepted_requests() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.jsonl");
    let file = path.clone();
    let emu = Emu::with(move |o| o.ledger = Some(file)).await;
    let push = emu.push(&urls("a.example.com", 2)).await.ok();
    emu.clock.advance(1_234);
    let content = json!(["https://www.example.com/p"]).to_string();
    let preload = emu.call(ESA, "PreloadCaches", &[("SiteId", "9"), ("Content", &content)]).await.ok();
    emu.push(&urls("a.example.com", 101)).await.err(400, "SingleRequest.OverLimit");
    emu.call(CDN, "DescribeRefreshQuota", &[]).await.ok();

    let lines: Vec<LedgerRecord> =
        std::fs::read_to_string(&path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "only accepted submits are recorded");
    assert_eq!(
        lines[0],
        LedgerRecord {
            vendor: VendorKind::AliyunCdn,
            action: "PushObjectCache".into(),
            account: AK.into(),
            urls: urls("a.example.com", 2),
            received_at: "2026-11-29T18:00:00.000Z".into(),
            task_ids: vec![push["PushTaskId"].as_str().unwrap().to_string()],
        }
    );
    assert_eq!(lines[1].vendor, VendorKind::AliyunEsa);
    assert_eq!(lines[1].received_at, "2026-11-29T18:00:01.234Z");
    assert_eq!(lines[1].task_ids, vec![preload["TaskId"].as_str().unwrap().to_string()]);
    assert_eq!(emu.state.ledger(), lines);
    let over_http = emu.control(reqwest::Method::GET, "/_emulator/requests", None).await.body;
    assert_eq!(serde_json::from_value::<Vec<LedgerRecord>>(over_http).unwrap(), lines);
    let raw = std::fs::read_to_string(&path).unwrap();
    assert!(raw.lines().next().unwrap().contains(r#""vendor":"aliyun_cdn""#), "{raw}");
}

#[tokio::test]
async fn faults_set_over_http() {
    let emu = Emu::start().await;
    let set = emu
        .control(reqwest::Method::POST, "/_emulator/faults", Some(json!({"vendor": "aliyun_cdn", "error_rate": 1.0})))
        .await;
    assert_eq!(set.status, 200);
    assert_eq!(set.body["aliyun_cdn"]["error_rate"], 1.0);
    emu.push(&urls("a.example.com", 1)).await.err(503, "ServiceUnavailable");
    emu.call(ESA, "GetPurgeQuota", &[("SiteId", "1")]).await.ok();
    let shown = emu.control(reqwest::Method::GET, "/_emulator/faults", None).await.body;
    assert_eq!(
        (shown["aliyun_cdn"]["error_rate"].as_f64(), shown["aliyun_esa"]["error_rate"].as_f64()),
        (Some(1.0), Some(0.0))
    );

    // `all` (the default scope) replaces both vendors' faults.
    emu.control(reqwest::Method::POST, "/_emulator/faults", Some(json!({"throttle": true}))).await;
    emu.push(&urls("a.example.com", 1)).await.err(400, "Throttling.User");
    emu.call(ESA, "GetPurgeQuota", &[("SiteId", "1")]).await.err(400, "Throttling.User");

    emu.control(reqwest::Method::POST, "/_emulator/faults", Some(json!({"vendor": "aliyun_esa", "down": true}))).await;
    // Down refuses before anything else, bad signatures included.
    let bad = Signing { secret: "wrong".into(), ..Signing::default() };
    emu.send(ESA, "GetPurgeQuota", pairs(&[("SiteId", "1")]), Vec::new(), bad)
        .await
        .unwrap()
        .err(503, "ServiceUnavailable");

    let refused = emu.control(reqwest::Method::POST, "/_emulator/faults", Some(json!({"latency": 5}))).await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    emu.control(reqwest::Method::DELETE, "/_emulator/faults", None).await;
    emu.push(&urls("a.example.com", 1)).await.ok();
    emu.call(ESA, "GetPurgeQuota", &[("SiteId", "1")]).await.ok();
    assert_eq!(emu.state.ledger().len(), 1);
}

#[tokio::test]
async fn latency_fault_delays_answers() {
    let emu = Emu::start().await;
    emu.state.set_faults(Some(VendorKind::AliyunCdn), FaultSet { latency_ms: 300, ..FaultSet::default() });
    let started = Instant::now();
    emu.call(CDN, "DescribeRefreshQuota", &[]).await.ok();
    assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
    assert_eq!(emu.state.faults(VendorKind::AliyunCdn).latency_ms, 300);
    assert_eq!(emu.state.faults(VendorKind::AliyunEsa), FaultSet::default());
}

#[tokio::test]
async fn dropped_answers_still_create_tasks() {
    let emu = Emu::start().await;
    emu.state.set_faults(None, FaultSet { drop_after_accept_rate: 1.0, ..FaultSet::default() });
    let paths = urls("a.example.com", 2);
    let lost = emu
        .send(CDN, "PushObjectCache", pairs(&[("ObjectPath", &paths.join("\n"))]), Vec::new(), Signing::default())
        .await;
    assert!(lost.is_err(), "the client must see no answer: {lost:?}");
    let ledger = emu.state.ledger();
    assert_eq!(ledger.len(), 1, "the request was carried out exactly once");
    emu.state.clear_faults();
    let tasks = emu.tasks_by_id(&ledger[0].task_ids.join(",")).await;
    assert_eq!(tasks.len(), 2);
    let quota = emu.call(CDN, "DescribeRefreshQuota", &[]).await.ok();
    assert_eq!(quota["PreloadRemain"], "998", "the lost request was charged");
}

// ------------------------------------------------------------------ official SDKs

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn str_pairs(v: &Value) -> Vec<(String, String)> {
    v.as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())).collect()
}

/// The SDK's signer and `preloadd::sign` agree on the inputs the script printed, and our
/// verifier accepts what the SDK signs on the wire (it also signs `accept` and `user-agent`).
fn check_signers(signer: &Value) {
    let mut parts = HttpParts::new(signer["method"].as_str().unwrap(), signer["path"].as_str().unwrap());
    parts.query = str_pairs(&signer["query"]);
    parts.headers = str_pairs(&signer["headers"]);
    assert_eq!(sign::acs3_sign(AK, SK, &parts).unwrap(), signer["acs3"].as_str().unwrap());

    parts.headers = str_pairs(&signer["all_headers"]);
    parts.set_header("Authorization", signer["acs3_all_headers"].as_str().unwrap());
    let verified = sign::acs3_verify(&parts, |id| (id == AK).then(|| SK.to_string())).unwrap();
    assert_eq!(verified.access_key_id, AK);

    let params = str_pairs(&signer["rpc_params"]);
    assert_eq!(sign::rpc_signature(SK, "POST", &params), signer["rpc"].as_str().unwrap());
}

#[tokio::test]
async fn official_sdks_interoperate() {
    let python = repo_root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/python-env.sh to install the official Alibaba Cloud SDKs",
        python.display()
    );
    // The SDKs sign with the real time, so this emulator runs on the system clock.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(emulator::serve(listener, EmulatorOptions::default(), async {
        let _ = stopped.await;
    }));

    let run = tokio::process::Command::new(&python)
        .arg(repo_root().join("tests/sdk/aliyun_sdk.py"))
        .arg(addr.to_string())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run).await.expect("the SDK script timed out").unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report: Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: stdout {stdout}\nstderr {stderr}"));
    assert!(output.status.success() && report["ok"] == true, "SDK run failed:\n{stdout}\n{stderr}");

    for mode in ["cdn", "cdn_rpc"] {
        let cdn = &report[mode];
        assert_eq!(cdn["PushObjectCache"]["PushTaskId"].as_str().unwrap().split(',').count(), 2, "{cdn}");
        assert!(cdn["RefreshObjectCaches"]["RefreshTaskId"].is_string());
        assert_eq!(cdn["DescribeRefreshTaskById"]["TotalCount"], 4, "{cdn}");
        assert_eq!(cdn["DescribeRefreshTaskById"]["Tasks"][0]["Status"], "Refreshing");
        assert!(cdn["DescribeRefreshTasks"]["Tasks"]["CDNTask"].as_array().unwrap().len() >= 3);
        assert!(cdn["DescribeRefreshQuota"]["PreloadRemain"].is_string());
    }
    assert_eq!(report["cdn_rpc"]["DescribeRefreshQuota"]["PreloadRemain"], "994");
    for mode in ["esa", "esa_rpc"] {
        let esa = &report[mode];
        assert!(esa["PreloadCaches"]["TaskId"].is_string(), "{esa}");
        assert!(esa["PurgeCaches"]["TaskId"].is_string());
        assert!(esa["DescribePreloadTasks"]["TotalCount"].as_u64().unwrap() >= 2);
        assert!(esa["DescribePurgeTasks"]["Tasks"][0]["Type"] == "file");
        assert!(esa["GetPurgeQuota"]["Quota"].is_string());
    }
    assert_eq!(report["esa_rpc"]["GetPurgeQuota"]["Usage"], "4");
    assert_eq!(report["wrong_secret"]["code"], "SignatureDoesNotMatch");
    check_signers(&report["signer"]);

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

/// Runs an SDK script from `tests/sdk/` against an emulator on the system clock (the SDKs sign
/// with the real time) and returns its JSON report, failing when `.venv` is missing.
async fn run_sdk_script(script: &str) -> (Value, Vec<LedgerRecord>) {
    let python = repo_root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/python-env.sh to install the vendors' official SDKs",
        python.display()
    );
    let (app, state) = emulator::router(EmulatorOptions::default()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let run = tokio::process::Command::new(&python)
        .arg(repo_root().join("tests/sdk").join(script))
        .arg(addr.to_string())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run).await.expect("the SDK script timed out").unwrap();
    server.abort();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report: Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: stdout {stdout}\nstderr {stderr}"));
    assert!(output.status.success() && report["ok"] == true, "SDK run failed:\n{stdout}\n{stderr}");
    (report, state.ledger())
}

fn signer_parts(signer: &Value) -> HttpParts {
    let mut parts = HttpParts::new(signer["method"].as_str().unwrap(), signer["path"].as_str().unwrap());
    if signer["query"].is_object() {
        parts.query = str_pairs(&signer["query"]);
    }
    parts.headers = str_pairs(&signer["headers"]);
    parts.body = signer["body"].as_str().unwrap().as_bytes().to_vec();
    parts
}

#[tokio::test]
async fn official_volcengine_and_tencent_sdks_interoperate() {
    let (report, ledger) = run_sdk_script("volc_tencent_sdk.py").await;

    // Volcengine CDNService: every emulated action, answers under Result.
    let volc = &report["volcengine"];
    let task_id = volc["SubmitPreloadTask"]["Result"]["TaskID"].as_str().unwrap();
    assert!(volc["SubmitRefreshTask"]["Result"]["TaskID"].is_string(), "{volc}");
    assert!(volc["SubmitRefreshTask_dir"]["Result"]["TaskID"].is_string());
    let tasks = &volc["DescribeContentTasks"]["Result"];
    assert_eq!(tasks["Total"], 3, "{tasks}");
    assert!(tasks["Data"].as_array().unwrap().iter().all(|t| t["TaskID"] == task_id && t["Status"] == "running"));
    assert_eq!(volc["DescribeContentTasks_domain"]["Result"]["Total"], 1);
    let quota = &volc["DescribeContentQuota"]["Result"];
    assert_eq!((quota["PreloadQuota"].as_u64(), quota["PreloadRemain"].as_u64()), (Some(1_000), Some(997)));
    assert_eq!(quota["RefreshDirRemain"], 49);
    assert_eq!(report["volc_wrong_secret"]["Code"], "SignatureDoesNotMatch");

    // Tencent CdnClient: every emulated action; quotas per region.
    let tc = &report["tencent"];
    let push_id = tc["PushUrlsCache"]["TaskId"].as_str().unwrap();
    assert!(tc["PurgeUrlsCache"]["TaskId"].is_string() && tc["PurgePathCache"]["TaskId"].is_string(), "{tc}");
    let logs = tc["DescribePushTasks"]["PushLogs"].as_array().unwrap();
    assert_eq!(logs.len(), 2);
    assert!(logs.iter().all(|l| l["TaskId"] == push_id && l["Status"] == "process"));
    assert_eq!(tc["DescribePurgeTasks"]["TotalCount"], 1, "{tc}");
    let push_quota = tc["DescribePushQuota"]["UrlPush"].as_array().unwrap();
    let available = |area: &str| push_quota.iter().find(|q| q["Area"] == area).unwrap()["Available"].as_u64();
    assert_eq!((available("mainland"), available("overseas")), (Some(1_000), Some(998)), "Area=overseas charged");
    assert_eq!(tc["DescribePurgeQuota"]["PathPurge"][0]["Available"], 99);
    assert_eq!(report["tc_wrong_secret"]["code"], "AuthFailure.SignatureFailure");

    // The ledger holds the accepted submits under each vendor's kind.
    let kinds: Vec<(VendorKind, &str)> = ledger.iter().map(|r| (r.vendor, r.action.as_str())).collect();
    assert_eq!(
        kinds,
        vec![
            (VendorKind::VolcengineCdn, "SubmitPreloadTask"),
            (VendorKind::VolcengineCdn, "SubmitRefreshTask"),
            (VendorKind::VolcengineCdn, "SubmitRefreshTask"),
            (VendorKind::TencentCdn, "PushUrlsCache"),
            (VendorKind::TencentCdn, "PurgeUrlsCache"),
            (VendorKind::TencentCdn, "PurgePathCache"),
        ]
    );

    // The SDKs' signers and preloadd::sign agree on identical inputs, and our verifiers accept
    // what the SDKs signed.
    let signer = &report["volc_signer"];
    let parts = signer_parts(signer);
    let ours = sign::volc_sign(AK, SK, "cn-north-1", "CDN", &parts).unwrap();
    assert_eq!(ours, signer["authorization"].as_str().unwrap());
    let mut signed = parts.clone();
    signed.set_header("Authorization", ours);
    assert_eq!(sign::volc_verify(&signed, |id| (id == AK).then(|| SK.to_string())).unwrap().access_key_id, AK);

    // The documented worked examples, as the SDKs sign them (src/sign.rs pins the same values).
    assert!(
        report["volc_doc_example"]
            .as_str()
            .unwrap()
            .ends_with("Signature=28eeabbbd726b87002e0fe58ad8c1c768e619b06e2646f35b6ad7ed029a6d8a7"),
        "{}",
        report["volc_doc_example"]
    );
    assert_eq!(report["tc_doc_example"], "72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168");

    let signer = &report["tc_signer"];
    let parts = signer_parts(signer);
    let ours = sign::tc3_sign(AK, SK, "cdn", &parts).unwrap();
    assert_eq!(ours, signer["authorization"].as_str().unwrap());
    let mut signed = parts.clone();
    signed.set_header("Authorization", ours);
    assert_eq!(sign::tc3_verify(&signed, |id| (id == AK).then(|| SK.to_string())).unwrap().access_key_id, AK);
}

// ------------------------------------------------------------------ Volcengine and Tencent

/// How a Volcengine or Tencent request is signed in these tests.
struct JsonSigning<'a> {
    secret: &'a str,
    at: Option<DateTime<Utc>>,
    /// Volcengine region / Tencent service in the credential scope.
    scope: &'a str,
}

impl Default for JsonSigning<'_> {
    fn default() -> Self {
        JsonSigning { secret: SK, at: None, scope: "" }
    }
}

impl Emu {
    /// A Volcengine call as `CDNService` sends it: `POST /?Action&Version`, JSON body, V4 signed.
    async fn volc(&self, action: &str, body: Value, s: JsonSigning<'_>) -> Reply {
        let mut parts = HttpParts::new("POST", "/");
        parts.query = pairs(&[("Action", action), ("Version", "2021-03-01")]);
        parts.set_header("Host", self.addr.to_string());
        parts.set_header("Content-Type", "application/json");
        parts.body = body.to_string().into_bytes();
        sign::volc_prepare(&mut parts, s.at.unwrap_or_else(|| self.now())).unwrap();
        let region = if s.scope.is_empty() { "cn-north-1" } else { s.scope };
        parts.set_header("Authorization", sign::volc_sign(AK, s.secret, region, "CDN", &parts).unwrap());
        let mut req = self.http.post(format!("http://{}/?Action={action}&Version=2021-03-01", self.addr));
        for (k, v) in parts.headers.iter().filter(|(k, _)| k != "Host") {
            req = req.header(k, v);
        }
        let resp = req.body(parts.body).send().await.unwrap();
        Reply { status: resp.status().as_u16(), body: resp.json().await.unwrap() }
    }

    /// A Tencent call as `CdnClient` sends it: `POST /`, `X-TC-*` headers, JSON body, TC3 signed.
    async fn tc(&self, action: &str, body: Value, s: JsonSigning<'_>) -> Reply {
        let mut parts = HttpParts::new("POST", "/");
        parts.set_header("Host", self.addr.to_string());
        parts.set_header("Content-Type", "application/json");
        parts.body = body.to_string().into_bytes();
        sign::tc3_prepare(&mut parts, action, "2018-06-06", None, s.at.unwrap_or_else(|| self.now())).unwrap();
        let service = if s.scope.is_empty() { "cdn" } else { s.scope };
        parts.set_header("Authorization", sign::tc3_sign(AK, s.secret, service, &parts).unwrap());
        let mut req = self.http.post(format!("http://{}/", self.addr));
        for (k, v) in parts.headers.iter().filter(|(k, _)| k != "Host") {
            req = req.header(k, v);
        }
        let resp = req.body(parts.body).send().await.unwrap();
        Reply { status: resp.status().as_u16(), body: resp.json().await.unwrap() }
    }
}

impl Reply {
    fn volc_result(self) -> Value {
        assert_eq!(self.status, 200, "{}", self.body);
        assert!(self.body["ResponseMetadata"]["Error"].is_null(), "{}", self.body);
        assert!(self.body["ResponseMetadata"]["RequestId"].is_string());
        self.body["Result"].clone()
    }

    fn volc_err(&self, status: u16, code: &str) {
        let error = &self.body["ResponseMetadata"]["Error"];
        assert_eq!((self.status, error["Code"].as_str()), (status, Some(code)), "{}", self.body);
        assert!(error["Message"].is_string());
    }

    fn tc_response(self) -> Value {
        assert_eq!(self.status, 200);
        let r = self.body["Response"].clone();
        assert!(r["Error"].is_null(), "{}", self.body);
        assert!(r["RequestId"].is_string());
        r
    }

    fn tc_err(&self, code: &str) {
        assert_eq!(self.status, 200, "Tencent answers errors with HTTP 200");
        assert_eq!(self.body["Response"]["Error"]["Code"].as_str(), Some(code), "{}", self.body);
    }
}

#[tokio::test]
async fn volcengine_tasks_limits_and_errors() {
    let emu = Emu::with(|o| {
        o.task_ms = 3_000;
        o.limits.insert(VendorKind::VolcengineCdn, LimitOverride { daily_quota: Some(150), ..Default::default() });
    })
    .await;
    let d = JsonSigning::default;
    let list = urls("v.example.com", 100);
    let id = emu.volc("SubmitPreloadTask", json!({ "Urls": list.join("\n") }), d()).await.volc_result()["TaskID"]
        .as_str()
        .unwrap()
        .to_string();
    let query = json!({ "TaskType": "preload", "TaskID": id, "PageSize": 100 });
    let tasks = emu.volc("DescribeContentTasks", query.clone(), d()).await.volc_result();
    assert_eq!(tasks["Total"], 100);
    assert!(tasks["Data"].as_array().unwrap().iter().all(|t| t["Status"] == "running"));
    emu.clock.advance(3_000);
    let tasks = emu.volc("DescribeContentTasks", query, d()).await.volc_result();
    assert!(tasks["Data"].as_array().unwrap().iter().all(|t| t["Status"] == "complete"));
    // Per-request cap, daily quota (all or nothing), quota report.
    let over = urls("v.example.com", 101).join("\n");
    emu.volc("SubmitPreloadTask", json!({ "Urls": over }), d()).await.volc_err(400, "InvalidParameter.UrlsExceedLimit");
    let sixty = urls("w.example.com", 60).join("\n");
    emu.volc("SubmitPreloadTask", json!({ "Urls": sixty }), d()).await.volc_err(400, "QuotaExceeded.Preload");
    let quota = emu.volc("DescribeContentQuota", json!({}), d()).await.volc_result();
    assert_eq!((quota["PreloadQuota"].as_u64(), quota["PreloadRemain"].as_u64()), (Some(150), Some(50)));
    // Parameters.
    emu.volc("SubmitRefreshTask", json!({ "Type": "bogus", "Urls": "https://v.example.com/" }), d())
        .await
        .volc_err(400, "InvalidParameter");
    emu.volc("SubmitPreloadTask", json!({ "Urls": "v.example.com/no-scheme" }), d())
        .await
        .volc_err(400, "InvalidParameter");
    emu.volc("DescribeContentTasks", json!({}), d()).await.volc_err(400, "MissingParameter");
    // Signatures: wrong secret, wrong region in the scope, stale X-Date.
    let bad = JsonSigning { secret: "nope", ..d() };
    emu.volc("DescribeContentQuota", json!({}), bad).await.volc_err(403, "SignatureDoesNotMatch");
    let elsewhere = JsonSigning { scope: "ap-singapore-1", ..d() };
    emu.volc("DescribeContentQuota", json!({}), elsewhere).await.volc_err(403, "SignatureDoesNotMatch");
    let stale = JsonSigning { at: Some(emu.now() - TimeDelta::minutes(16)), ..d() };
    emu.volc("DescribeContentQuota", json!({}), stale).await.volc_err(401, "InvalidTimestamp");
    // Faults answer as Volcengine does.
    emu.state.set_faults(Some(VendorKind::VolcengineCdn), FaultSet { throttle: true, ..Default::default() });
    emu.volc("DescribeContentQuota", json!({}), d()).await.volc_err(429, "FlowLimitExceeded");
    emu.state.set_faults(Some(VendorKind::VolcengineCdn), FaultSet { down: true, ..Default::default() });
    emu.volc("DescribeContentQuota", json!({}), d()).await.volc_err(503, "ServiceUnavailableTemp");
    assert_eq!(emu.state.ledger().len(), 1, "only the accepted submit is in the ledger");
    assert_eq!(emu.state.ledger()[0].vendor, VendorKind::VolcengineCdn);
}

#[tokio::test]
async fn tencent_tasks_regional_quotas_limits_and_errors() {
    let emu = Emu::with(|o| {
        o.task_ms = 3_000;
        o.limits.insert(VendorKind::TencentCdn, LimitOverride { daily_quota: Some(100), ..Default::default() });
    })
    .await;
    let d = JsonSigning::default;
    let list = urls("t.example.com", 80);
    let push = emu.tc("PushUrlsCache", json!({ "Urls": list, "Area": "mainland" }), d()).await.tc_response();
    let id = push["TaskId"].as_str().unwrap().to_string();
    let logs = emu.tc("DescribePushTasks", json!({ "TaskId": id, "Limit": 100 }), d()).await.tc_response();
    assert_eq!(logs["TotalCount"], 80);
    assert!(logs["PushLogs"].as_array().unwrap().iter().all(|l| l["Status"] == "process"));
    emu.clock.advance(3_000);
    let logs = emu.tc("DescribePushTasks", json!({ "TaskId": id, "Offset": 40, "Limit": 50 }), d()).await.tc_response();
    assert_eq!(logs["PushLogs"].as_array().unwrap().len(), 40, "offset paging");
    assert!(logs["PushLogs"].as_array().unwrap().iter().all(|l| l["Status"] == "done"));
    // Quotas count per region: mainland has 20 left, overseas all 100; global needs both.
    let thirty = urls("u.example.com", 30);
    emu.tc("PushUrlsCache", json!({ "Urls": thirty, "Area": "mainland" }), d())
        .await
        .tc_err("LimitExceeded.CdnPushExceedDayLimit");
    emu.tc("PushUrlsCache", json!({ "Urls": thirty, "Area": "global" }), d())
        .await
        .tc_err("LimitExceeded.CdnPushExceedDayLimit");
    emu.tc("PushUrlsCache", json!({ "Urls": thirty, "Area": "overseas" }), d()).await.tc_response();
    let quota = emu.tc("DescribePushQuota", json!({}), d()).await.tc_response();
    let available: HashMap<&str, u64> = quota["UrlPush"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| (q["Area"].as_str().unwrap(), q["Available"].as_u64().unwrap()))
        .collect();
    assert_eq!(available, HashMap::from([("mainland", 20), ("overseas", 70)]));
    // Per-request caps.
    let many = urls("t.example.com", 501);
    emu.tc("PushUrlsCache", json!({ "Urls": many }), d()).await.tc_err("LimitExceeded.CdnPushExceedBatchLimit");
    // Purges: URLs and paths, listed by type and time (Beijing time).
    emu.tc("PurgeUrlsCache", json!({ "Urls": ["https://t.example.com/1.js"] }), d()).await.tc_response();
    emu.tc("PurgePathCache", json!({ "Paths": ["https://t.example.com/d/"], "FlushType": "flush" }), d())
        .await
        .tc_response();
    emu.tc("PurgePathCache", json!({ "Paths": ["https://t.example.com/d/"] }), d()).await.tc_err("MissingParameter");
    let window = json!({
        "PurgeType": "path", "StartTime": "2026-11-30 01:00:00", "EndTime": "2026-11-30 03:00:00",
    });
    let purges = emu.tc("DescribePurgeTasks", window, d()).await.tc_response();
    assert_eq!(purges["TotalCount"], 1, "{purges}");
    assert_eq!(purges["PurgeLogs"][0]["PurgeType"], "path");
    emu.tc("DescribePurgeTasks", json!({ "PurgeType": "url" }), d()).await.tc_err("MissingParameter");
    // Signatures: wrong secret, another service's scope, a timestamp 6 minutes off.
    emu.tc("DescribePushQuota", json!({}), JsonSigning { secret: "nope", ..d() })
        .await
        .tc_err("AuthFailure.SignatureFailure");
    emu.tc("DescribePushQuota", json!({}), JsonSigning { scope: "cvm", ..d() })
        .await
        .tc_err("AuthFailure.SignatureFailure");
    emu.tc("DescribePushQuota", json!({}), JsonSigning { at: Some(emu.now() + TimeDelta::minutes(6)), ..d() })
        .await
        .tc_err("AuthFailure.SignatureExpire");
    emu.state.set_faults(Some(VendorKind::TencentCdn), FaultSet { throttle: true, ..Default::default() });
    emu.tc("DescribePushQuota", json!({}), d()).await.tc_err("RequestLimitExceeded");
    let actions: Vec<String> = emu.state.ledger().into_iter().map(|r| r.action).collect();
    assert_eq!(actions, ["PushUrlsCache", "PushUrlsCache", "PurgeUrlsCache", "PurgePathCache"]);
}

#[tokio::test]
async fn the_listener_tells_vendors_apart_by_request_shape() {
    let emu = Emu::start().await;
    // The same listener, the same key: Alibaba, Volcengine and Tencent each get their own shape.
    emu.call(CDN, "DescribeRefreshQuota", &[]).await.ok();
    emu.volc("DescribeContentQuota", json!({}), JsonSigning::default()).await.volc_result();
    emu.tc("DescribePushQuota", json!({}), JsonSigning::default()).await.tc_response();
    // Unsigned Volcengine call; unknown Tencent action.
    let resp = emu
        .http
        .post(format!("http://{}/?Action=DescribeContentQuota&Version=2021-03-01", emu.addr))
        .body("{}")
        .send()
        .await
        .unwrap();
    let reply = Reply { status: resp.status().as_u16(), body: resp.json().await.unwrap() };
    reply.volc_err(401, "MissingAuthenticationToken");
    let resp = emu
        .http
        .post(format!("http://{}/", emu.addr))
        .header("X-TC-Action", "DescribeCdnData")
        .header("X-TC-Version", "2018-06-06")
        .body("{}")
        .send()
        .await
        .unwrap();
    Reply { status: resp.status().as_u16(), body: resp.json().await.unwrap() }.tc_err("InvalidAction");
    let faults = emu.control(reqwest::Method::GET, "/_emulator/faults", None).await.body;
    assert!(faults["volcengine_cdn"].is_object() && faults["tencent_cdn"].is_object(), "{faults}");
}
