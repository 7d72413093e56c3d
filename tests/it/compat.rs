//! The ESA scheduled-preload facade driven by the official ESA SDK, unmodified but for the
//! endpoint and keys; and the same jobs seen through the native API.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::common::Receiver;

/// The real daemon with the compatible facades (ESA, Volcengine) on their own listener, a webhook
/// vendor behind ESA site 4242.
struct CompatDaemon {
    _dir: tempfile::TempDir,
    _recv: Receiver,
    api_addr: std::net::SocketAddr,
    compat_addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    daemon: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl CompatDaemon {
    /// Starts it; `api_keys` are added to `[api]` (slow-client limits, say).
    async fn start(api_keys: &str) -> CompatDaemon {
        let recv = Receiver::start().await;
        let dir = tempfile::tempdir().unwrap();
        crate::common::write_secret(&dir.path().join("token"), "test-token");
        crate::common::write_secret(&dir.path().join("compat-secret"), "compat-sk");
        let text = format!(
            r#"[daemon]
state_dir = "{state}"
[api]
token_file = "token"
requests_per_second = 1000
{api_keys}
[api.compat]
listen = "127.0.0.1:0"
access_key_id = "compat-ak"
access_key_secret_file = "compat-secret"
[[api.compat.site]]
id = 4242
vendors = ["hook"]
[[vendor]]
name = "hook"
kind = "webhook"
endpoint = "{endpoint}"
"#,
            state = dir.path().join("state").display(),
            endpoint = recv.url()
        );
        let path = dir.path().join("preloadd.toml");
        std::fs::write(&path, text).unwrap();
        let cfg = preloadd::config::load(&path, &Default::default()).unwrap();
        let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api_addr = api.local_addr().unwrap();
        let compat = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let compat_addr = compat.local_addr().unwrap();
        let opts = preloadd::daemon::ServeOptions { compat_listener: Some(compat), ..Default::default() };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let daemon = tokio::spawn(preloadd::daemon::run(
            cfg,
            api,
            async move {
                let _ = stopped.await;
            },
            opts,
        ));
        CompatDaemon { _dir: dir, _recv: recv, api_addr, compat_addr, stop, daemon }
    }

    /// The native API's job listing for `name`.
    async fn native_jobs(&self, name: &str) -> Value {
        reqwest::Client::new()
            .get(format!("http://{}/v1/jobs?name={name}", self.api_addr))
            .bearer_auth("test-token")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.daemon.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_esa_sdk_drives_scheduled_preload() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/python-env.sh (scripts/test.sh does)", python.display());
    let esa = CompatDaemon::start("").await;
    let compat_addr = esa.compat_addr;

    let script = root.join("tests/sdk/esa_compat.py");
    let run = tokio::process::Command::new(&python)
        .arg(script)
        .args([compat_addr.to_string(), "compat-ak".into(), "compat-sk".into(), "4242".into()])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run).await.expect("the SDK script timed out").unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "SDK run failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_str(&stdout).unwrap();

    let job = &r["CreateScheduledPreloadJob"];
    assert_eq!(
        (job["UrlCount"].as_i64(), job["SiteId"].as_i64(), job["InsertWay"].as_str()),
        (Some(6), Some(4242), Some("textBox"))
    );
    assert_eq!(job["Id"].as_str().unwrap().len(), 24);
    let created = &r["CreateScheduledPreloadExecutions"];
    assert_eq!((created["SuccessCount"].as_i64(), created["TotalCount"].as_i64()), (Some(2), Some(3)), "{created}");
    assert!(created["FailedMessages"][0].as_str().unwrap().contains("overlaps"), "{created}");
    let updated = &r["UpdateScheduledPreloadExecution"];
    assert_eq!((updated["Interval"].as_i64(), updated["SliceLen"].as_i64()), (Some(120), Some(10)));
    assert_eq!(updated["StartTime"], "2031-05-31T17:10:48.849+08:00", "the seed's time shape");
    assert_eq!(r["StopScheduledPreloadExecution"]["Status"], "stopped");
    assert_eq!(r["StartScheduledPreloadExecution"]["Status"], "waiting");
    assert_eq!(r["ListScheduledPreloadExecutions"]["TotalCount"], 2);
    assert_eq!(r["ListScheduledPreloadJobs"]["TotalCount"], 1);
    assert_eq!(r["GetScheduledPreloadJob"]["Name"], "sdk-job");
    let e = &r["errors"];
    for (case, code) in [
        ("end_before_start", "InvalidEndTime.Mismatch"),
        ("bad_object_id", "InvalidParameter.ObjectId"),
        ("unknown_job", "InvalidJob.NotFound"),
        ("unknown_execution", "InvalidExecution.NotFound"),
        ("missing_url_list", "MissingUrlList"),
        ("missing_oss_url", "MissingOssUrl"),
        ("unknown_site", "InvalidUid.PermissionDenied"),
        ("wrong_secret", "SignatureDoesNotMatch"),
    ] {
        assert_eq!(e[case]["code"], code, "{case}: {e}");
    }

    // The same job through the native API.
    let jobs = esa.native_jobs("sdk-job").await;
    let native = &jobs["jobs"][0];
    assert_eq!((native["url_count"].as_i64(), native["vendors"][0].as_str()), (Some(6), Some("hook")));
    assert_eq!(preloadd::compat::encode_id(native["id"].as_i64().unwrap()), r["job_id"].as_str().unwrap());
    esa.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_on_the_esa_listener_gets_408_in_esa_shape_and_writes_nothing() {
    use tokio::io::AsyncWriteExt;
    let esa = CompatDaemon::start("header_timeout = \"5s\"\nbody_idle_timeout = \"1s\"\nbody_min_rate = 1000").await;
    // A signed-looking ESA call whose form body stops a third of the way: the facade reads the
    // body before it can check the signature, so the slow body is what answers.
    let body =
        "Action=CreateScheduledPreloadJob&SiteId=4242&Name=slow&InsertWay=textBox&UrlList=https%3A%2F%2Fa.example%2F1";
    let mut s = tokio::net::TcpStream::connect(esa.compat_addr).await.unwrap();
    let head = format!(
        "POST / HTTP/1.1\r\nHost: esa.cn-hangzhou.aliyuncs.com\r\nx-acs-action: CreateScheduledPreloadJob\r\n\
         x-acs-version: 2024-09-10\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&body.as_bytes()[..body.len() / 3]).await.unwrap();
    let answer = crate::abuse::read_to_close(&mut s).await;
    let (status, json, head) = crate::abuse::parse_answer(&answer);
    assert_eq!(status, 408, "{}", String::from_utf8_lossy(&answer));
    assert_eq!(json["Code"], "RequestTimeout", "{json}");
    assert!(json["RequestId"].is_string(), "{json}");
    assert!(head.contains("connection: close"), "{head}");
    // No job came of it, and the facade's neighbour, the native API, kept answering.
    let jobs = esa.native_jobs("slow").await;
    assert_eq!(jobs["pagination"]["total"], 0, "{jobs}");
    esa.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volcengine_signed_content_tasks_match_the_seed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/python-env.sh (scripts/test.sh does)", python.display());
    let daemon = CompatDaemon::start("").await;
    let compat_addr = daemon.compat_addr;
    let run = |script: &str| {
        tokio::process::Command::new(&python)
            .arg(root.join(script))
            .args([compat_addr.to_string(), "compat-ak".into(), "compat-sk".into()])
            .kill_on_drop(true)
            .output()
    };
    let out = tokio::time::timeout(Duration::from_secs(60), run("tests/sdk/mcdn_compat.py")).await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(r["SubmitPreloadTask"]["status"], 200, "{r}");
    let task_id = r["SubmitPreloadTask"]["body"]["Result"]["TaskId"].as_str().unwrap().to_string();
    assert_eq!(task_id.len(), 24);
    let meta = &r["ListContentTask"]["body"]["ResponseMetadata"];
    assert_eq!(
        (meta["Action"].as_str(), meta["Service"].as_str(), meta["Version"].as_str()),
        (Some("ListContentTask"), Some("mcdn"), Some("2022-03-01"))
    );
    let listed = &r["ListContentTask"]["body"]["Result"];
    assert_eq!(listed["Pagination"], serde_json::json!({"PageSize": 10, "PageNum": 1, "Total": 1}), "{listed}");
    let task = &listed["Tasks"][0];
    assert_eq!(task["TaskType"], "refresh_file");
    let sub = &task["SubTasks"][0];
    for field in [
        "VendorTaskIds",
        "Vendor",
        "SubmitStatus",
        "Description",
        "Url",
        "CloudAccountId",
        "CloudAccountName",
        "ProductType",
        "SubProduct",
    ] {
        assert!(sub.get(field).is_some(), "subtask field {field}: {sub}");
    }
    assert_eq!(sub["Url"], serde_json::json!(["http://www.example.com/home.html"]));
    assert!(task["CreatedAt"].is_i64() && task.get("EndAt").is_some() && task.get("TaskStatus").is_some());
    let by_url = &r["ListContentTasks"]["body"]["Result"];
    assert_eq!(by_url["Tasks"][0]["TaskId"], task_id.as_str(), "the URL filter finds the preload task: {by_url}");
    assert_eq!(r["bad_status"]["body"]["ResponseMetadata"]["Error"]["Code"], "InvalidParameter");
    assert_eq!(r["wrong_secret"]["body"]["ResponseMetadata"]["Error"]["Code"], "SignatureDoesNotMatch", "{r}");
    daemon.stop().await;
}
