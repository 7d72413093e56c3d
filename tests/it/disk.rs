//! The state directory on a small tmpfs, with the real daemon process: a full disk (a clear
//! 507 `InsufficientStorage`, nothing half-written, the daemon stays up, and once space is
//! freed every URL still goes out), and a read-only one (a clear refusal to start naming the
//! path, then a normal start once it is writable again). Mounting needs root (CAP_SYS_ADMIN);
//! without it those tests say why and return. And a vendor answer that cannot be recorded (the
//! database locked by another process past `busy_timeout`) is reconciled without a restart.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::Receiver;

const BIN: &str = env!("CARGO_BIN_EXE_preloadd");

/// A tmpfs mounted for one test, unmounted when dropped (even when the test fails).
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// `None`, with the reason printed, where this process may not mount.
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(dir).output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir: dir.to_path_buf() }),
            Ok(o) => {
                println!("SKIPPED: cannot mount a tmpfs (needs root): {}", String::from_utf8_lossy(&o.stderr).trim());
                None
            }
            Err(e) => {
                println!("SKIPPED: cannot run mount: {e}");
                None
            }
        }
    }

    fn remount(&self, mode: &str) {
        let out = Command::new("mount").args(["-o", &format!("remount,{mode}")]).arg(&self.dir).output().unwrap();
        assert!(out.status.success(), "remount {mode}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy, so a daemon still holding files (a failed test) cannot keep it mounted.
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Fills the file system holding `dir` with one file; returns its path.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0xA5u8; 64 * 1024];
    loop {
        if let Err(e) = f.write_all(&chunk).and_then(|()| f.sync_data()) {
            assert_eq!(e.raw_os_error(), Some(28), "filling stops at ENOSPC: {e}");
            break;
        }
    }
    // Whatever part of a chunk still fitted was written: the disk is full to the byte.
    path
}

/// The daemon as a child process, its JSON log lines collected.
struct Daemon {
    child: Child,
    base: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        let mut rb = http.request(method, format!("{}{path}", self.base)).bearer_auth("test-token");
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    fn stop(mut self) {
        let ok = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap().success();
        assert!(ok);
        assert_eq!(self.child.wait().unwrap().code(), Some(0), "SIGTERM exits 0: {}", self.log_text());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(dir: &Path, state: &Path, recv: &Receiver) -> PathBuf {
    crate::common::write_secret(&dir.join("token"), "test-token\n");
    let text = format!(
        r#"[daemon]
state_dir = "{state}"
log_format = "json"
shutdown_timeout = "5s"
[api]
listen = "127.0.0.1:0"
token_file = "token"
requests_per_second = 1000
[[vendor]]
name = "hook"
kind = "webhook"
endpoint = "{endpoint}"
requests_per_second = 100
timeout = "30s"
"#,
        state = state.display(),
        endpoint = recv.url(),
    );
    let path = dir.join("preloadd.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts `preloadd serve`; `Ok` once it says it is ready, else `Err((exit code, log))`.
async fn start(config: &Path) -> Result<Daemon, (Option<i32>, String)> {
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = tokio::sync::oneshot::channel::<Option<String>>();
    let reader = std::thread::spawn({
        let log = log.clone();
        move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let ready = serde_json::from_str::<Value>(&line)
                    .ok()
                    .filter(|v| v["message"] == "preloadd is ready")
                    .and_then(|v| v["listen"].as_str().map(String::from));
                log.lock().unwrap().push(line);
                if let Some(addr) = ready {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(Some(addr));
                    }
                }
            }
            if let Some(tx) = tx.take() {
                let _ = tx.send(None);
            }
        }
    });
    match tokio::time::timeout(Duration::from_secs(60), rx).await {
        Ok(Ok(Some(addr))) => Ok(Daemon { child, base: format!("http://{addr}"), log }),
        outcome => {
            if outcome.is_err() {
                let _ = child.kill(); // neither ready nor gone within the deadline
            }
            let code = tokio::task::spawn_blocking(move || {
                let code = child.wait().ok().and_then(|s| s.code());
                let _ = reader.join(); // to the end of its stderr
                code
            })
            .await
            .unwrap();
            let text = log.lock().unwrap().join("\n");
            Err((code, text))
        }
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

async fn create_job(d: &Daemon, name: &str, urls: &[String]) -> (u16, Value) {
    let body = json!({"name": name, "task_type": "preload", "vendors": ["hook"], "urls": urls});
    d.call(reqwest::Method::POST, "/v1/jobs", Some(body)).await
}

/// A plan over the whole job from now on: `slice_len` URLs a second.
async fn run_now(d: &Daemon, job: i64, slice_len: i64) {
    let plan = json!({"plans": [{
        "start_time": preloadd::clock::rfc3339(now_ms()),
        "end_time": preloadd::clock::rfc3339(now_ms() + 3_600_000),
        "interval": 1, "slice_len": slice_len,
    }]});
    let (st, b) = d.call(reqwest::Method::POST, &format!("/v1/jobs/{job}/plans"), Some(plan)).await;
    assert_eq!(st, 201, "{b}");
}

async fn job_total(d: &Daemon, name: &str) -> u64 {
    let (st, b) = d.call(reqwest::Method::GET, &format!("/v1/jobs?name={name}"), None).await;
    assert_eq!(st, 200, "{b}");
    b["pagination"]["total"].as_u64().unwrap()
}

fn urls(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("https://cdn.example.com/{prefix}/{i}/some-long-enough-asset-name.js")).collect()
}

/// Waits until the receiver has every one of `want` (repeats allowed: none may be missing).
async fn wait_all_delivered(d: &Daemon, recv: &Receiver, want: &[String]) {
    let all = |h: &[crate::common::Hit]| {
        let got: std::collections::HashSet<&String> = h.iter().flat_map(|h| &h.urls).collect();
        want.iter().all(|u| got.contains(u))
    };
    let waited = tokio::time::timeout(
        Duration::from_secs(180),
        recv.wait_until("every URL of the job", Duration::from_secs(3600), |h| all(h)),
    )
    .await;
    if waited.is_err() {
        let problems: Vec<String> = d.log.lock().unwrap().iter().filter(|l| !l.contains("\"INFO\"")).cloned().collect();
        panic!("{} of {} URLs delivered; the daemon's warnings: {problems:#?}", recv.urls().len(), want.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_a_clear_error_writes_nothing_and_heals_once_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let Some(_fs) = Tmpfs::mount(&state, "64m") else { return };
    let recv = Receiver::start().await;
    let daemon = start(&config(dir.path(), &state, &recv)).await.unwrap_or_else(|(c, log)| panic!("exit {c:?}: {log}"));

    // A job whose plan is under way when the disk fills up.
    let first = urls("first", 60);
    let (st, b) = create_job(&daemon, "first", &first).await;
    assert_eq!(st, 201, "{b}");
    let id = b["id"].as_i64().unwrap();
    run_now(&daemon, id, 3).await;
    recv.wait_until("the first slice", Duration::from_secs(60), |h| !h.is_empty()).await;

    let filler = fill(&state);
    // A big list cannot be written: the API's error shape, naming the disk; nothing is kept.
    let big = urls("big", 50_000);
    let (st, b) = create_job(&daemon, "big", &big).await;
    assert_eq!((st, b["code"].as_str()), (507, Some("InsufficientStorage")), "{b}");
    assert!(b["message"].as_str().is_some_and(|m| m.contains("disk") && m.contains("full")), "{b}");
    assert!(b["request_id"].is_string(), "{b}");
    assert_eq!(job_total(&daemon, "big").await, 0, "nothing of the refused job was written");
    let (st, b) = daemon.call(reqwest::Method::GET, "/healthz", None).await;
    assert_eq!(st, 200, "the daemon stays up: {b}");
    let (_, job) = daemon.call(reqwest::Method::GET, &format!("/v1/jobs/{id}"), None).await;
    assert_eq!(job["url_count"], 60, "{job}");
    assert!(daemon.log_text().contains("disk holding the database is full"), "the log says why");

    // Space freed: no restart needed; every URL of the first job goes out, and the big job fits.
    std::fs::remove_file(&filler).unwrap();
    wait_all_delivered(&daemon, &recv, &first).await;
    let (st, b) = create_job(&daemon, "big", &big).await;
    assert_eq!((st, b["added"].as_u64()), (201, Some(50_000)), "{b}");
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_state_dir_stops_the_start_naming_it_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let Some(fs) = Tmpfs::mount(&state, "16m") else { return };
    let recv = Receiver::start().await;
    let cfg = config(dir.path(), &state, &recv);
    let daemon = start(&cfg).await.unwrap_or_else(|(c, log)| panic!("exit {c:?}: {log}"));
    let kept = urls("kept", 20);
    let (st, b) = create_job(&daemon, "kept", &kept).await;
    assert_eq!(st, 201, "{b}");
    let id = b["id"].as_i64().unwrap();
    daemon.stop();

    // Read-only (a remount while the daemon holds its files open is refused by the kernel, so
    // this is the state a start finds after `errors=remount-ro` or a read-only mount).
    fs.remount("ro");
    let (code, log) = match start(&cfg).await {
        Ok(d) => panic!("the daemon started on a read-only state dir: {}", d.log_text()),
        Err(e) => e,
    };
    assert_eq!(code, Some(1), "a runtime failure, not a config error: {log}");
    let state_name = state.display().to_string();
    assert!(
        log.contains(&state_name) && log.contains("Read-only file system"),
        "the error names the path and the cause: {log}"
    );

    // Writable again: the job is there and its URLs go out.
    fs.remount("rw");
    let daemon = start(&cfg).await.unwrap_or_else(|(c, log)| panic!("exit {c:?}: {log}"));
    let (_, job) = daemon.call(reqwest::Method::GET, &format!("/v1/jobs/{id}"), None).await;
    assert_eq!(job["url_count"], 20, "{job}");
    run_now(&daemon, id, 10).await;
    wait_all_delivered(&daemon, &recv, &kept).await;
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vendor_answer_that_cannot_be_recorded_is_reconciled_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let recv = Receiver::start().await;
    let daemon = start(&config(dir.path(), &state, &recv)).await.unwrap_or_else(|(c, log)| panic!("exit {c:?}: {log}"));
    let list = urls("locked", 8);
    let (st, b) = create_job(&daemon, "locked", &list).await;
    assert_eq!(st, 201, "{b}");
    // One slice, one slow vendor call: while it is in flight, another process takes the
    // database's write lock and keeps it past the daemon's busy_timeout (10 s), so the
    // vendor's answer cannot be recorded and the subtask is left `submitting`.
    recv.set_delay(8_000);
    let id = b["id"].as_i64().unwrap();
    run_now(&daemon, id, 8).await;
    recv.wait_for("the vendor call", Duration::from_secs(60), |r| r.in_flight() > 0).await;
    recv.set_delay(0);
    let db = rusqlite::Connection::open(state.join(preloadd::store::DB_FILE)).unwrap();
    db.busy_timeout(Duration::from_secs(60)).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while !daemon.log_text().contains("subtask worker failed") {
        assert!(tokio::time::Instant::now() < deadline, "the record never failed: {}", daemon.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    db.execute_batch("COMMIT").unwrap();
    drop(db);

    // Once the lock is gone, the engine reconciles the subtask by itself and sends the slice
    // again (a webhook has no task list to find it in): nothing is lost, no restart needed.
    // The first call reached the receiver anyway; what matters is that the daemon records the
    // slice as sent (left `submitting`, it would hold the job until a restart).
    wait_all_delivered(&daemon, &recv, &list).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (_, job) = daemon.call(reqwest::Method::GET, &format!("/v1/jobs/{id}"), None).await;
        if job["submitted_count"] == 8 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the slice was never recorded: {job}\n{}", daemon.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(daemon.log_text().contains("reconciled subtasks a failed database write left submitting"));
    daemon.stop();
}
