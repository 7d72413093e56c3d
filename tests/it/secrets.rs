//! Secrets never leak: a canary secret in the config, a run with errors and retries, then every
//! log line, the database files and every API response are searched for it and for `Signature=`.

use std::process::{Command, Stdio};
use std::time::Duration;

use preloadd::emulator::{self, EmulatorOptions};
use serde_json::Value;

use crate::common::{write_secret, Receiver};

const BIN: &str = env!("CARGO_BIN_EXE_preloadd");
const CANARY: &str = "CANARY-7f3e9b1c-secret-do-not-log";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_secret_appears_in_no_log_row_or_response() {
    // The emulator knows the canary as a good secret for one key and nothing for another.
    let (app, emu) = emulator::router(EmulatorOptions::with_keys(vec![("good-ak".into(), CANARY.into())])).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let recv = Receiver::start().await;
    recv.script(&[(503, None), (503, None)]);

    let dir = tempfile::tempdir().unwrap();
    write_secret(&dir.path().join("canary"), CANARY);
    write_secret(&dir.path().join("token"), CANARY);
    let api_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let start = chrono::Utc::now();
    let text = format!(
        r#"[daemon]
state_dir = "{state}"
[api]
listen = "127.0.0.1:{api_port}"
token_file = "token"
[[vendor]]
name = "good"
kind = "aliyun_cdn"
endpoint = "{endpoint}"
access_key_id = "good-ak"
access_key_secret_file = "canary"
[[vendor]]
name = "bad"
kind = "aliyun_cdn"
endpoint = "{endpoint}"
access_key_id = "unknown-ak"
access_key_secret_file = "canary"
[[vendor]]
name = "hook"
kind = "webhook"
endpoint = "{hook}"
token_file = "canary"
[[job]]
name = "canary"
task_type = "preload"
vendors = ["good", "bad", "hook"]
urls = ["https://a.example/1", "https://a.example/2"]
[[job.plan]]
start_time = "{s}"
end_time = "{e}"
interval = 1
slice_len = 1
"#,
        state = dir.path().join("state").display(),
        hook = recv.url(),
        s = start.to_rfc3339(),
        e = (start + chrono::Duration::hours(1)).to_rfc3339(),
    );
    let cfg = dir.path().join("preloadd.toml");
    std::fs::write(&cfg, text).unwrap();
    // Logs go to a file: a pipe nobody reads would fill and stall the daemon.
    let log_path = dir.path().join("daemon.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "trace")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    // Wait until both slices reached the good vendor and the webhook (after its retries).
    recv.wait_until("both URLs at the webhook", Duration::from_secs(60), |h| h.len() >= 2).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while emu.ledger().len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "the good vendor never got both slices");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let base = format!("http://127.0.0.1:{api_port}");
    let http = reqwest::Client::new();
    let mut bodies = String::new();
    for path in
        ["/v1/jobs", "/v1/jobs/1", "/v1/jobs/1/plans", "/v1/tasks", "/v1/vendors", "/v1/plans/1", "/healthz", "/readyz"]
    {
        let r = http.get(format!("{base}{path}")).bearer_auth(CANARY).send().await.unwrap();
        bodies.push_str(&r.text().await.unwrap());
    }
    let tasks: Value =
        http.get(format!("{base}/v1/tasks")).bearer_auth(CANARY).send().await.unwrap().json().await.unwrap();
    assert!(tasks.to_string().contains("InvalidAccessKeyId.NotFound"), "the failing vendor's code is shown: {tasks}");
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(logs.lines().count() > 20, "trace logs were written");

    let mut db = Vec::new();
    for entry in std::fs::read_dir(dir.path().join("state")).unwrap() {
        // The database, its WAL and anything else the daemon wrote there.
        db.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    let db = String::from_utf8_lossy(&db);
    for (what, text) in [("logs", logs.as_str()), ("database", &db), ("API responses", bodies.as_str())] {
        assert!(!text.contains(CANARY), "the canary secret leaked into the {what}");
        assert!(!text.contains("Signature="), "a signature leaked into the {what}");
    }
    println!(
        "secrets: {} log lines, {} database bytes, {} API bytes searched: 0 hits",
        logs.lines().count(),
        db.len(),
        bodies.len()
    );
}
