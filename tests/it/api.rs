//! The HTTP API over real HTTP against a daemon on port 0: auth, the seed error codes, paging.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::Receiver;

pub(crate) struct Api {
    pub(crate) base: String,
    recv: Receiver,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Api {
    pub(crate) async fn start() -> Api {
        Api::start_with("requests_per_second = 1000").await
    }

    pub(crate) async fn start_with(api_extra: &str) -> Api {
        let recv = Receiver::start().await;
        let dir = tempfile::tempdir().unwrap();
        crate::common::write_secret(&dir.path().join("token"), "test-token\n");
        let text = format!(
            r#"[daemon]
state_dir = "{state}"
[api]
token_file = "token"
{api_extra}
[[vendor]]
name = "hook"
kind = "webhook"
endpoint = "{endpoint}"
[[job]]
name = "declared"
task_type = "preload"
vendors = ["hook"]
urls = ["https://a.example/1"]
"#,
            state = dir.path().join("state").display(),
            endpoint = recv.url()
        );
        let path = dir.path().join("preloadd.toml");
        std::fs::write(&path, text).unwrap();
        let cfg = preloadd::config::load(&path, &Default::default()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(preloadd::daemon::run(
            cfg,
            listener,
            async move {
                let _ = rx.await;
            },
            Default::default(),
        ));
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        let api = Api { base, recv, http, _dir: dir, stop: Some(tx) };
        // Ready when /readyz answers.
        for _ in 0..200 {
            if let Ok(r) = api.http.get(format!("{}/readyz", api.base)).send().await {
                if r.status().is_success() {
                    return api;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the daemon never became ready");
    }

    pub(crate) async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut rb = self.http.request(method, format!("{}{path}", self.base)).bearer_auth("test-token");
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

use reqwest::Method;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_answer_with_the_seed_codes() {
    let api = Api::start().await;
    // Auth: none, wrong, in the query string.
    let r = api.http.get(format!("{}/v1/jobs", api.base)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "Unauthorized");
    assert!(body["request_id"].is_string());
    let r = api.http.get(format!("{}/v1/jobs", api.base)).bearer_auth("nope").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r =
        api.http.get(format!("{}/v1/jobs?token=test-token", api.base)).bearer_auth("test-token").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);

    // Jobs.
    let (st, b) = api
        .call(
            Method::POST,
            "/v1/jobs",
            Some(json!({"name": "j", "task_type": "preload", "vendors": ["hook"], "urls": []})),
        )
        .await;
    assert_eq!((st, b["code"].as_str()), (400, Some("MissingUrlList")));
    let (st, b) = api
        .call(
            Method::POST,
            "/v1/jobs",
            Some(json!({"name": "j", "task_type": "preload", "vendors": ["hook"], "urls": ["junk"]})),
        )
        .await;
    assert_eq!((st, b["code"].as_str()), (400, Some("MissingUrlList")), "{b}");
    let (st, b) = api
        .call(
            Method::POST,
            "/v1/jobs",
            Some(json!({"name": "j", "task_type": "preload", "vendors": ["nope"], "urls": ["https://a.example/1"]})),
        )
        .await;
    assert_eq!((st, b["code"].as_str()), (400, Some("InvalidParameter")));
    let (st, job) = api
        .call(Method::POST, "/v1/jobs", Some(json!({"name": "j", "task_type": "preload", "vendors": ["hook"], "urls": ["https://a.example/1", "bad", "https://a.example/2", "https://a.example/1"]})))
        .await;
    assert_eq!(st, 201, "{job}");
    assert_eq!((job["url_count"].as_i64(), job["rejected"].as_i64()), (Some(2), Some(1)));
    let id = job["id"].as_i64().unwrap();
    let (st, b) = api.call(Method::GET, "/v1/jobs/99999", None).await;
    assert_eq!((st, b["code"].as_str()), (404, Some("InvalidJob.NotFound")));
    let (st, b) = api.call(Method::GET, "/v1/jobs?page_size=101", None).await;
    assert_eq!((st, b["code"].as_str()), (400, Some("InvalidParameter")));
    let (st, b) = api.call(Method::GET, "/v1/jobs?page_size=1&page_num=2", None).await;
    assert_eq!(st, 200);
    assert_eq!(b["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(b["pagination"]["total"], 2);
    let (_, b) = api.call(Method::GET, "/v1/jobs?page_num=9", None).await;
    assert_eq!(b["jobs"].as_array().unwrap().len(), 0, "a page past the end is empty");

    // Plans (seed 002).
    let plans = json!({"plans": [
        {"start_time": "2030-01-01T00:00:00+08:00", "end_time": "2030-01-01T01:00:00+08:00", "interval": 60, "slice_len": 10},
        {"start_time": "2030-01-02T00:00:00+08:00", "end_time": "2030-01-02T01:00:00+08:00", "interval": "90s", "slice_len": 10}
    ]});
    let (st, b) = api.call(Method::POST, &format!("/v1/jobs/{id}/plans"), Some(plans)).await;
    assert_eq!(st, 201, "{b}");
    let pid = b["plans"][0]["id"].as_i64().unwrap();
    assert_eq!(b["plans"][1]["interval"], 90.0);
    let overlap = json!({"plans": [{"start_time": "2030-01-01T00:30:00+08:00", "end_time": "2030-01-01T02:00:00+08:00", "interval": 60, "slice_len": 10}]});
    let (st, b) = api.call(Method::POST, &format!("/v1/jobs/{id}/plans"), Some(overlap)).await;
    assert_eq!((st, b["code"].as_str()), (400, Some("InvalidParameter")));
    assert!(b["message"].as_str().unwrap().contains(&format!("plan {pid}")), "{b}");
    let bad_time = json!({"plans": [{"start_time": "soon", "end_time": "2030-01-01T02:00:00+08:00", "interval": 60, "slice_len": 10}]});
    let (st, b) = api.call(Method::POST, &format!("/v1/jobs/{id}/plans"), Some(bad_time)).await;
    assert_eq!((st, b["code"].as_str()), (400, Some("TimeParseFailed")));
    let (st, b) = api
        .call(Method::PATCH, &format!("/v1/plans/{pid}"), Some(json!({"end_time": "2029-12-31T00:00:00+08:00"})))
        .await;
    assert_eq!((st, b["code"].as_str()), (400, Some("InvalidEndTime.Mismatch")));
    let (st, b) = api.call(Method::PATCH, "/v1/plans/424242", Some(json!({"interval": 30}))).await;
    assert_eq!((st, b["code"].as_str()), (404, Some("InvalidExecution.NotFound")));
    let (st, b) =
        api.call(Method::PATCH, &format!("/v1/plans/{pid}"), Some(json!({"interval": 30, "slice_len": 5}))).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(
        (b["interval"].as_f64(), b["slice_len"].as_i64(), b["status"].as_str()),
        (Some(30.0), Some(5), Some("waiting"))
    );
    assert!(b["request_id"].is_string());
    let (st, b) = api.call(Method::POST, &format!("/v1/plans/{pid}/stop"), None).await;
    assert_eq!((st, b["status"].as_str()), (200, Some("stopped")));
    let (st, b) = api.call(Method::POST, &format!("/v1/plans/{pid}/start"), None).await;
    assert_eq!((st, b["status"].as_str()), (200, Some("waiting")));
    let (st, _) = api.call(Method::DELETE, &format!("/v1/plans/{pid}"), None).await;
    assert_eq!(st, 200);
    let (st, _) = api.call(Method::GET, &format!("/v1/plans/{pid}"), None).await;
    assert_eq!(st, 404);

    // Declarative jobs are visible and read-only.
    let (_, b) = api.call(Method::GET, "/v1/jobs?name=declared", None).await;
    let declared = &b["jobs"][0];
    assert_eq!(declared["declarative"], true);
    let did = declared["id"].as_i64().unwrap();
    let (st, b) = api.call(Method::POST, &format!("/v1/jobs/{did}/reset"), None).await;
    assert_eq!(st, 400);
    assert!(b["message"].as_str().unwrap().contains("edit the config"));

    // Tasks (seed 001) paging edges and defaults.
    for q in ["page_size=0", "page_size=101", "status=bogus", "task_type=warm"] {
        let (st, b) = api.call(Method::GET, &format!("/v1/tasks?{q}"), None).await;
        assert_eq!((st, b["code"].as_str()), (400, Some("InvalidParameter")), "{q}");
    }
    let (st, b) = api.call(Method::GET, "/v1/tasks?start_time=10&end_time=5", None).await;
    assert_eq!(st, 200);
    assert_eq!(b["pagination"], json!({"page_num": 1, "page_size": 10, "total": 0}));
    let (st, b) = api.call(Method::GET, "/v1/vendors", None).await;
    assert_eq!(st, 200);
    assert_eq!(b["vendors"][0]["capabilities"]["task_status"], "unknown", "no status API is shown as unknown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_plain_stream_creates_a_job_in_one_go() {
    let api = Api::start().await;
    let body = "https://a.example/1\n# comment\nnot a url\nhttps://a.example/2\n";
    let r = api
        .http
        .post(format!("{}/v1/jobs?name=streamed&task_type=preload&vendors=hook", api.base))
        .bearer_auth("test-token")
        .header("content-type", "text/plain")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let b: Value = r.json().await.unwrap();
    assert_eq!((b["url_count"].as_i64(), b["rejected"].as_i64()), (Some(2), Some(1)));
    assert!(b["rejected_lines"].as_str().unwrap().contains("line 3:"), "{b}");
    let id = b["id"].as_i64().unwrap();
    let r = api
        .http
        .post(format!("{}/v1/jobs/{id}/urls", api.base))
        .bearer_auth("test-token")
        .header("content-type", "text/plain")
        .body("https://a.example/2\nhttps://a.example/3\n")
        .send()
        .await
        .unwrap();
    let b: Value = r.json().await.unwrap();
    assert_eq!((b["added"].as_i64(), b["url_count"].as_i64()), (Some(1), Some(3)), "duplicates dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_answers_the_timetable_and_creates_nothing() {
    let api = Api::start().await;
    let urls: Vec<String> = (0..250).map(|i| format!("https://a.example/{i}")).collect();
    let (_, job) = api
        .call(
            Method::POST,
            "/v1/jobs",
            Some(json!({"name": "dry", "task_type": "preload", "vendors": ["hook"], "urls": urls})),
        )
        .await;
    let id = job["id"].as_i64().unwrap();
    let plans = json!({"plans": [{"start_time": "2030-01-01T00:00:00Z", "end_time": "2030-01-01T00:02:00Z", "interval": 60, "slice_len": 100}]});
    let (st, b) = api.call(Method::POST, &format!("/v1/jobs/{id}/plans?dry_run=true"), Some(plans)).await;
    assert_eq!(st, 200, "{b}");
    let p = &b["plans"][0];
    assert_eq!(
        (p["slices"].as_i64(), p["urls"].as_i64(), p["urls_left_after"].as_i64()),
        (Some(2), Some(200), Some(50))
    );
    assert_eq!(p["window_fits_list"], false);
    assert_eq!(p["timetable"][1]["due"], "2030-01-01T00:01:00.000Z");
    assert_eq!(
        (p["vendors"][0]["requests_per_slice"].as_i64(), p["vendors"][0]["requests"].as_i64()),
        (Some(1), Some(2)),
        "the webhook takes 1,000 URLs a request"
    );
    let (_, b) = api.call(Method::GET, &format!("/v1/jobs/{id}/plans"), None).await;
    assert_eq!(b["plans"].as_array().unwrap().len(), 0, "nothing created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_failed_replans_exactly_the_failed_urls() {
    let api = Api::start().await;
    api.recv.script(&[(403, None)]);
    let urls = ["https://a.example/1", "https://a.example/2", "https://a.example/3"];
    let (_, job) = api
        .call(
            Method::POST,
            "/v1/jobs",
            Some(json!({"name": "rf", "task_type": "preload", "vendors": ["hook"], "urls": urls})),
        )
        .await;
    let id = job["id"].as_i64().unwrap();
    let start = chrono::Utc::now();
    let plan = json!({"plans": [{"start_time": start.to_rfc3339(), "end_time": (start + chrono::Duration::hours(1)).to_rfc3339(), "interval": 60, "slice_len": 2}]});
    let (_, b) = api.call(Method::POST, &format!("/v1/jobs/{id}/plans"), Some(plan)).await;
    let pid = b["plans"][0]["id"].as_i64().unwrap();
    // The first slice fails for good (403): the plan fails with the code kept.
    let mut failed = Value::Null;
    for _ in 0..400 {
        let (_, p) = api.call(Method::GET, &format!("/v1/plans/{pid}"), None).await;
        if p["status"] == "failed" {
            failed = p;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(failed["error_info"].as_str().unwrap_or("").contains("HTTP403"), "{failed}");
    let (st, b) = api
        .call(Method::POST, &format!("/v1/jobs/{id}/retry-failed"), Some(json!({"interval": 1, "slice_len": 10})))
        .await;
    assert_eq!(st, 201, "{b}");
    assert_eq!(b["jobs"][0]["name"], "rf.retry1.hook");
    assert_eq!(b["jobs"][0]["urls"], 2, "exactly the two URLs of the failed slice");
    let hits = api.recv.wait_until("the retried URLs", Duration::from_secs(30), |h| !h.is_empty()).await;
    assert_eq!(hits[0].urls, vec!["https://a.example/1", "https://a.example/2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_token_rate_get_429_and_the_daemon_stays_healthy() {
    let api = Api::start_with("requests_per_second = 5").await;
    let mut codes = Vec::new();
    for _ in 0..40 {
        let (st, b) = api.call(Method::GET, "/v1/jobs", None).await;
        codes.push(st);
        if st == 429 {
            assert_eq!(b["code"], "TooManyRequests");
        }
    }
    assert!(codes.iter().filter(|c| **c == 200).count() >= 5);
    assert!(codes.contains(&429), "{codes:?}");
    let r = api.http.get(format!("{}/healthz", api.base)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_lists_are_fetched_safely() {
    // Refused by default: the list's host is loopback.
    let api = Api::start().await;
    let list = format!("http://{}/list.txt", api.recv.addr);
    let (st, b) = api
        .call(
            Method::POST,
            "/v1/jobs",
            Some(json!({"name": "remote", "task_type": "preload", "vendors": ["hook"], "urls_url": list})),
        )
        .await;
    assert_eq!((st, b["code"].as_str()), (400, Some("InvalidParameter")));
    assert!(b["message"].as_str().unwrap().contains("internal address"), "{b}");
    let (st, _) = api.call(Method::POST, "/v1/jobs", Some(json!({"name": "remote", "task_type": "preload", "vendors": ["hook"], "urls_url": "file:///etc/passwd"}))).await;
    assert_eq!(st, 400);

    // Allowed for in-house use: a sitemap index pointing at a gzip sitemap, served on loopback.
    let api = Api::start_with("requests_per_second = 1000\nallow_private_lists = true").await;
    let origin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", origin.local_addr().unwrap());
    let index = format!("<sitemapindex><sitemap><loc>{base}/s1.xml.gz</loc></sitemap></sitemapindex>");
    let sitemap = "<urlset><url><loc>https://www.example.com/a?x=1&amp;y=2</loc></url><url><loc>https://www.example.com/b</loc></url></urlset>";
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, sitemap.as_bytes()).unwrap();
    let gz = gz.finish().unwrap();
    let app = axum::Router::new()
        .route("/index.xml", axum::routing::get(move || async move { index }))
        .route("/s1.xml.gz", axum::routing::get(move || async move { gz }));
    tokio::spawn(async move { axum::serve(origin, app).await });
    let (st, b) = api
        .call(Method::POST, "/v1/jobs", Some(json!({"name": "sitemap", "task_type": "preload", "vendors": ["hook"], "sitemap_url": format!("{base}/index.xml")})))
        .await;
    assert_eq!(st, 201, "{b}");
    assert_eq!(b["url_count"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_is_set_read_and_removed_through_the_api() {
    let api = Api::start().await;
    let (_, job) = api
        .call(
            Method::POST,
            "/v1/jobs",
            Some(json!({"name": "s", "task_type": "preload", "vendors": ["hook"], "urls": ["https://a.example/1"]})),
        )
        .await;
    let id = job["id"].as_i64().unwrap();
    let (st, b) = api.call(Method::GET, &format!("/v1/jobs/{id}/schedule"), None).await;
    assert_eq!((st, b["code"].as_str()), (404, Some("InvalidSchedule.NotFound")));
    let body =
        json!({"cron": "0 0 0 * * ?", "timezone": "Asia/Shanghai", "window": "2h", "interval": 60, "slice_len": 10});
    let (st, b) = api.call(Method::PUT, &format!("/v1/jobs/{id}/schedule"), Some(body)).await;
    assert_eq!(st, 200, "{b}");
    assert!(b["next_fire"].as_str().unwrap().ends_with("T16:00:00.000Z"), "Shanghai midnight: {b}");
    let (st, b) = api
        .call(
            Method::PUT,
            &format!("/v1/jobs/{id}/schedule"),
            Some(json!({"cron": "0 61 * * *", "window": 60, "interval": 60, "slice_len": 1})),
        )
        .await;
    assert_eq!((st, b["code"].as_str()), (400, Some("InvalidParameter")));
    assert!(b["message"].as_str().unwrap().contains("cron"), "{b}");
    let (st, _) = api.call(Method::DELETE, &format!("/v1/jobs/{id}/schedule"), None).await;
    assert_eq!(st, 200);
    let (st, _) = api.call(Method::GET, &format!("/v1/jobs/{id}/schedule"), None).await;
    assert_eq!(st, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_served_and_kept_in_the_repo() {
    let api = Api::start().await;
    let served: Value = reqwest::get(format!("{}/v1/openapi.json", api.base)).await.unwrap().json().await.unwrap();
    assert_eq!(served, preloadd::api::openapi());
    let kept: Value =
        serde_json::from_str(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json")).unwrap())
            .unwrap();
    assert_eq!(kept, served, "openapi.json is stale: run `cargo run -- openapi > openapi.json`");
    // Every documented route answers (here without a token: 401 in the JSON error shape), so the
    // document names only routes that exist.
    for (path, item) in served["paths"].as_object().unwrap() {
        let concrete = path.replace("{id}", "1");
        for method in item.as_object().unwrap().keys() {
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = reqwest::Client::new().request(m, format!("{}{concrete}", api.base)).send().await.unwrap();
            assert_ne!(r.status().as_u16(), 404, "{method} {path} is documented but not routed");
            assert_ne!(r.status().as_u16(), 405, "{method} {path} is documented but not routed");
        }
    }
    assert_eq!(
        served["paths"]["/v1/plans/{id}"]["patch"]["responses"]["404"]["description"],
        "InvalidExecution.NotFound"
    );
}

// ------------------------------------------------------------------ task listing totals

/// Every slice of `jobs` (with each job's task type now) as (created_at, final, task type).
async fn all_slices(f: &crate::common::Fixture, jobs: &[(i64, &'static str)]) -> Vec<(i64, bool, &'static str)> {
    let mut all = Vec::new();
    for (job, ty) in jobs {
        for s in f.store.slices_of_job(*job).await.unwrap() {
            all.push((s.created_at, s.status.is_final(), *ty));
        }
    }
    all
}

/// The listing's total against a count of the slices themselves, for windows cut on and off
/// minute boundaries, shorter and longer than two minutes, and every filter the sum serves.
/// Returns how many slices were executing.
async fn check_totals(f: &crate::common::Fixture, jobs: &[(i64, &'static str)], what: &str) -> usize {
    use crate::common::T0;
    let all = all_slices(f, jobs).await;
    let windows = [
        (T0 - 3_600_000, T0 + 3_600_000),
        (T0, T0 + 60_000),
        (T0 + 1, T0 + 125_001),
        (T0 + 59_999, T0 + 300_000),
        (T0 + 30_000, T0 + 90_000),
        (T0 + 61_234, T0 + 61_235),
        (T0 + 120_000, T0 + 600_000),
        (T0 + 7 * 60_000 + 500, T0 + 11 * 60_000 - 1),
        (1, T0 + 86_400_000),
        (0, T0 + 86_400_000),
    ];
    let mut checked = 0;
    for (start, end) in windows {
        for ty in [None, Some("preload"), Some("refresh_file"), Some("refresh_dir")] {
            for st in [None, Some("executing"), Some("done")] {
                let filter = preloadd::store::TaskFilter {
                    start_ms: start,
                    end_ms: end,
                    task_type: ty.map(Into::into),
                    status: st.map(Into::into),
                    limit: 1,
                    ..Default::default()
                };
                let (_, total) = f.store.list_tasks(&filter).await.unwrap();
                let expected = all
                    .iter()
                    .filter(|(c, done, t)| {
                        *c >= start
                            && *c < end
                            && ty.map_or(true, |x| x == *t)
                            && st.map_or(true, |s| (s == "done") == *done)
                    })
                    .count();
                assert_eq!(total, expected as i64, "{what}: window {start}..{end}, task_type {ty:?}, status {st:?}");
                checked += usize::from(expected > 0);
            }
        }
    }
    assert!(checked > 0 || all.is_empty(), "{what}: some filter must select something");
    all.iter().filter(|(_, done, _)| !done).count()
}

/// `total` is summed from per-minute counts that triggers keep (migration 0008), not counted:
/// after every kind of write — slices taken, calls failing and retried, slices done, a job's task
/// type changed, a plan deleted, a job deleted — it equals a count of the slices themselves.
#[tokio::test]
async fn api_task_totals_match_the_slices_after_every_kind_of_write() {
    use crate::common::{Fixture, T0};
    use preloadd::model::{CatchUp, TaskType};
    let f = Fixture::new(100).await;
    let a = f.job("totals-a", 40).await;
    let b = f.job("totals-b", 40).await;
    let retype = |job: i64, task_type: TaskType| {
        let store = f.store.clone();
        async move {
            let mut tx = store.write().await.unwrap();
            let u = preloadd::store::JobUpdate { task_type, vendors: vec!["hook".into()], catch_up: CatchUp::Skip };
            preloadd::store::update_job(&mut tx, job, &u, T0).await.unwrap();
            tx.commit().await.unwrap();
        }
    };
    retype(b, TaskType::RefreshFile).await;
    let mut jobs = vec![(a, "preload"), (b, "refresh_file")];
    let pa = f.plan(a, T0, T0 + 3_600_000, 50, 2).await;
    let pb = f.plan(b, T0, T0 + 3_600_000, 70, 3).await;
    // Refused calls are retried.
    f.recv.script(&[(503, None), (500, None)]);
    check_totals(&f, &jobs, "before any slice").await;
    let mut executing = 0;
    for s in (0..=12 * 60).step_by(10) {
        let t = T0 + s * 1000;
        if s % 30 == 0 {
            // Slices taken but not sent yet: executing until the engine's next step.
            f.store.take_slices(&[pa, pb], t, t).await.unwrap();
            executing += check_totals(&f, &jobs, &format!("at +{s} s, slices taken")).await;
        }
        f.at(t).await;
        if s % 30 == 0 {
            check_totals(&f, &jobs, &format!("at +{s} s, slices sent")).await;
        }
    }
    assert!(executing > 0, "some checks ran while slices were executing");
    assert!(all_slices(&f, &jobs).await.len() > 20, "slices in many minutes");
    f.at(T0 + 30 * 60_000).await;
    check_totals(&f, &jobs, "all done").await;
    retype(a, TaskType::RefreshDir).await;
    jobs[0].1 = "refresh_dir";
    check_totals(&f, &jobs, "a job's task type changed").await;
    f.store.delete_plan(pb).await.unwrap();
    check_totals(&f, &jobs, "a plan deleted").await;
    f.store.delete_job(a).await.unwrap();
    check_totals(&f, &jobs[1..], "a job deleted").await;
    let filter = preloadd::store::TaskFilter { start_ms: 1, end_ms: T0 + 86_400_000, limit: 1, ..Default::default() };
    assert_eq!(f.store.list_tasks(&filter).await.unwrap().1, 0, "nothing is left");
}

/// Identical listings at the same time share one execution, but never one that started before
/// they were sent: a listing sent after a task appeared counts it, and one sent after its job
/// was deleted does not, however many identical listings run at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_a_listing_sees_every_task_that_appeared_before_it_was_sent() {
    let api = Api::start().await;
    let urls: Vec<String> = (0..3).map(|i| format!("https://fresh.example/{i}.js")).collect();
    let (st, job) = api
        .call(
            Method::POST,
            "/v1/jobs",
            Some(json!({"name": "fresh", "task_type": "preload", "vendors": ["hook"], "urls": urls})),
        )
        .await;
    assert_eq!(st, 201, "{job}");
    let id = job["id"].as_i64().unwrap();
    let totals = || async {
        let calls = (0..20).map(|_| api.call(Method::GET, "/v1/tasks?page_size=1", None));
        futures_util::future::join_all(calls)
            .await
            .into_iter()
            .map(|(st, b)| {
                assert_eq!(st, 200, "{b}");
                b["pagination"]["total"].as_i64().unwrap()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(totals().await, vec![0; 20]);
    let now = chrono::Utc::now();
    let plans = json!({"plans": [{
        "start_time": now.to_rfc3339(), "end_time": (now + chrono::Duration::hours(1)).to_rfc3339(),
        "interval": 1, "slice_len": 1
    }]});
    let (st, b) = api.call(Method::POST, &format!("/v1/jobs/{id}/plans"), Some(plans)).await;
    assert_eq!(st, 201, "{b}");
    for k in 1..=3 {
        api.recv.wait_for("the next slice", Duration::from_secs(20), |r| r.hits().len() >= k).await;
        let seen = totals().await;
        assert!(seen.iter().all(|t| *t >= k as i64), "slice {k} reached the vendor before these listings: {seen:?}");
    }
    let (st, b) = api.call(Method::DELETE, &format!("/v1/jobs/{id}"), None).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(totals().await, vec![0; 20], "the deleted job's tasks are gone from the next listings");
}
