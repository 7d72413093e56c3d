//! `preloadd serve` as a child process against a webhook receiver: on time, in order, exactly
//! once; SIGTERM exits 0; kill -9 in a loop loses nothing.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::Receiver;

const BIN: &str = env!("CARGO_BIN_EXE_preloadd");

fn config(
    dir: &Path,
    recv: &Receiver,
    n: usize,
    start_ms: i64,
    interval: &str,
    slice_len: usize,
) -> std::path::PathBuf {
    let list: String = (0..n).map(|i| format!("https://cdn.example.com/e2e/{i}.png\n")).collect();
    std::fs::write(dir.join("list.txt"), list).unwrap();
    let start = preloadd::clock::rfc3339(start_ms);
    let end = preloadd::clock::rfc3339(start_ms + 600_000);
    let text = format!(
        r#"[daemon]
state_dir = "{state}"
shutdown_timeout = "5s"

[api]
listen = "127.0.0.1:0"

[[vendor]]
name = "hook"
kind = "webhook"
endpoint = "{endpoint}"
requests_per_second = 50
timeout = "5s"

[[job]]
name = "e2e"
task_type = "preload"
vendors = ["hook"]
urls_file = "list.txt"

[[job.plan]]
start_time = "{start}"
end_time = "{end}"
interval = "{interval}"
slice_len = {slice_len}
"#,
        state = dir.join("state").display(),
        endpoint = recv.url(),
    );
    let path = dir.join("preloadd.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn spawn(config: &Path) -> Child {
    Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_submits_every_url_once_in_order_on_the_interval() {
    let recv = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let start = now_ms() + 3_000;
    let cfg = config(dir.path(), &recv, 23, start, "1s", 5);
    let mut child = spawn(&cfg);
    let hits = recv
        .wait_until("all 23 URLs", Duration::from_secs(60), |h| h.iter().map(|h| h.urls.len()).sum::<usize>() >= 23)
        .await;
    let want: Vec<String> = (0..23).map(|i| format!("https://cdn.example.com/e2e/{i}.png")).collect();
    assert_eq!(recv.urls(), want, "every URL exactly once, in order");
    assert_eq!(hits.iter().map(|h| h.urls.len()).collect::<Vec<_>>(), vec![5, 5, 5, 5, 3]);
    assert!(hits[0].at_ms >= start, "never before start_time ({} < {start})", hits[0].at_ms);
    // Slice k is due at start + k × 1 s: never earlier (a little clock slack between processes),
    // and the pace over the run is the interval, with room for a loaded CI machine.
    for (k, h) in hits.iter().enumerate() {
        assert!(h.at_ms >= start + k as i64 * 1_000 - 50, "slice {k} came before its due time");
    }
    let mean_gap = (hits[4].at_ms - hits[0].at_ms) / 4;
    assert!((950..=2_500).contains(&mean_gap), "slices spaced by the 1 s interval, mean gap {mean_gap} ms");
    sigterm(&child);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "SIGTERM exits 0");
}

fn sigterm(child: &Child) {
    let ok = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success();
    assert!(ok, "kill -TERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_a_loop_loses_no_url_and_repeats_only_in_flight_slices() {
    let recv = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let n = 120;
    let slice_len = 2;
    let cfg = config(dir.path(), &recv, n, now_ms(), "100ms", slice_len);
    let kills = 20;
    for round in 0..kills {
        let before = recv.hits().len();
        let mut child = spawn(&cfg);
        // Kill at a varying moment after the daemon has made progress.
        recv.wait_until("progress", Duration::from_secs(30), |h| h.len() > before + (round % 3)).await;
        if round % 2 == 1 {
            tokio::time::sleep(Duration::from_millis(37 * (round as u64 % 5))).await;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let store = preloadd::store::Store::open_dir(&dir.path().join("state")).await.unwrap();
        store.integrity_check().await.unwrap();
        store.close().await;
    }
    let mut child = spawn(&cfg);
    recv.wait_until("every URL", Duration::from_secs(120), |h| {
        let got: std::collections::HashSet<&String> = h.iter().flat_map(|h| &h.urls).collect();
        got.len() >= n
    })
    .await;
    sigterm(&child);
    assert_eq!(child.wait().unwrap().code(), Some(0));

    let hits = recv.hits();
    let mut first_seen = Vec::new();
    for u in hits.iter().flat_map(|h| &h.urls) {
        if !first_seen.contains(u) {
            first_seen.push(u.clone());
        }
    }
    let want: Vec<String> = (0..n).map(|i| format!("https://cdn.example.com/e2e/{i}.png")).collect();
    assert_eq!(first_seen, want, "every URL arrived, first arrivals in order");
    // A repeat is a whole slice sent again; at most one slice is in flight at each kill.
    let mut seen = std::collections::HashSet::new();
    let repeated_requests = hits.iter().filter(|h| !h.urls.iter().all(|u| seen.insert(u.clone()))).count();
    assert!(repeated_requests <= kills, "{repeated_requests} repeated slices for {kills} kills");
    println!("crash loop: {kills} kills, {n} URLs, {} requests, {repeated_requests} repeated slices", hits.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_copies_the_database_while_the_daemon_runs() {
    let recv = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &recv, 40, now_ms(), "100ms", 2);
    let mut child = spawn(&cfg);
    recv.wait_until("some progress", Duration::from_secs(30), |h| h.len() >= 3).await;
    let dest = dir.path().join("backup.db");
    let out = Command::new(BIN).args(["backup"]).arg(&dest).arg("--config").arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let again = Command::new(BIN).args(["backup"]).arg(&dest).arg("--config").arg(&cfg).output().unwrap();
    assert_eq!(again.status.code(), Some(1), "an existing file is never overwritten");
    sigterm(&child);
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let copy = preloadd::store::Store::open_file(&dest).await.unwrap();
    copy.integrity_check().await.unwrap();
    let job = copy.job_by_name("e2e").await.unwrap().expect("the job is in the backup");
    assert_eq!(job.url_count, 40);
    assert!(!copy.slices_of_job(job.id).await.unwrap().is_empty());
}
