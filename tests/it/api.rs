//! The HTTP API over real HTTP against a daemon on port 0: auth, the seed error codes, paging.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::Receiver;

struct Api {
    base: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Api {
    async fn start() -> Api {
        let recv = Receiver::start().await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "test-token\n").unwrap();
        let text = format!(
            r#"[daemon]
state_dir = "{state}"
[api]
token_file = "token"
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
        let api = Api { base, http, _dir: dir, stop: Some(tx) };
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

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
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
