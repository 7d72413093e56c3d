//! Failpoints (the `failpoints` feature): the real daemon aborts at each named crash point
//! (`FAILPOINTS=NAME=return`), the database file passes `PRAGMA integrity_check`, and the
//! restarted daemon takes the one recovery path ARCHITECTURE.md ("Failpoints") documents for
//! that point — judged from the emulator's ledger, the webhook receivers and the database.

#![cfg(feature = "failpoints")]

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use preloadd::emulator::{self, EmulatorOptions, EmulatorState, LimitOverride};
use preloadd::model::VendorKind;
use serde_json::Value;

use crate::common::Receiver;

const BIN: &str = env!("CARGO_BIN_EXE_preloadd");
/// Generous: a loaded 2-core machine may build or test other things meanwhile.
const DEADLINE: Duration = Duration::from_secs(90);
/// SIGABRT: what `std::process::abort()` dies of.
const SIGABRT: i32 = 6;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The daemon as a child process; killed if a test fails while it runs.
struct Daemon {
    child: Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One test's directory: the config, the state database and each run's stderr.
struct Run {
    dir: tempfile::TempDir,
    cfg: PathBuf,
}

impl Run {
    /// A config with `[daemon]` and `[api]` written for this directory, then `body`.
    fn new(body: &str) -> Run {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[daemon]\nstate_dir = \"{}\"\nshutdown_timeout = \"5s\"\n[api]\nlisten = \"127.0.0.1:0\"\n{body}",
            dir.path().join("state").display()
        );
        let cfg = dir.path().join("preloadd.toml");
        std::fs::write(&cfg, text).unwrap();
        Run { dir, cfg }
    }

    /// `preloadd serve`, stderr to `log`, with `FAILPOINTS` set to `failpoints` or unset.
    fn spawn(&self, failpoints: Option<&str>, log: &str) -> Daemon {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--config"])
            .arg(&self.cfg)
            // An abort may leave a core file in the working directory: keep it in the temp dir.
            .current_dir(self.dir.path())
            .env("RUST_LOG", "info")
            .env_remove("FAILPOINTS")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join(log)).unwrap());
        if let Some(f) = failpoints {
            cmd.env("FAILPOINTS", f);
        }
        Daemon { child: cmd.spawn().unwrap() }
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// A plain connection to the state database (no migration, nothing written).
    fn db(&self) -> rusqlite::Connection {
        let db = rusqlite::Connection::open(self.dir.path().join("state").join(preloadd::store::DB_FILE)).unwrap();
        db.busy_timeout(Duration::from_secs(10)).unwrap();
        db
    }

    fn int(&self, sql: &str) -> i64 {
        self.db().query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// Starts the daemon with `point` armed by `actions`, waits for it to abort there, and
    /// checks the database it left.
    async fn crash_at(&self, point: &str, actions: &str) {
        let mut d = self.spawn(Some(&format!("{point}={actions}")), "crash.log");
        let end = tokio::time::Instant::now() + DEADLINE;
        let status = loop {
            if let Some(s) = d.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                tokio::time::Instant::now() < end,
                "the daemon did not crash at {point} within {DEADLINE:?}; its log:\n{}",
                self.log("crash.log")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let log = self.log("crash.log");
        assert_eq!(status.signal(), Some(SIGABRT), "aborted (like kill -9), not exited: {status:?}\n{log}");
        assert!(log.contains(&format!("failpoint {point}: crashing")), "crashed elsewhere:\n{log}");
        let check: String = self.db().query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!(check, "ok", "the database after the crash");
    }

    /// Waits until `pred` holds for the database while `d` runs.
    async fn wait_db(&self, what: &str, d: &mut Daemon, pred: impl Fn(&Run) -> bool) {
        let end = tokio::time::Instant::now() + DEADLINE;
        while !pred(self) {
            if let Some(s) = d.child.try_wait().unwrap() {
                panic!("the daemon exited ({s:?}) before {what}; its log:\n{}", self.log("restart.log"));
            }
            assert!(
                tokio::time::Instant::now() < end,
                "timed out waiting for {what}; the daemon's log:\n{}",
                self.log("restart.log")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM: the recovered daemon still stops cleanly.
    async fn stop(&self, mut d: Daemon) {
        let ok = Command::new("kill").args(["-TERM", &d.child.id().to_string()]).status().unwrap().success();
        assert!(ok, "kill -TERM");
        let end = tokio::time::Instant::now() + DEADLINE;
        let status = loop {
            if let Some(s) = d.child.try_wait().unwrap() {
                break s;
            }
            assert!(tokio::time::Instant::now() < end, "no exit after SIGTERM");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(status.code(), Some(0), "{}", self.log("restart.log"));
    }
}

// ---- the slice state machine, against the emulated Alibaba Cloud CDN -------------------------

/// The slice: 6 URLs, sent as two requests of 3.
const N: usize = 6;

fn url(i: usize) -> String {
    format!("https://crash.example.com/a/{i}.js")
}

fn urls(r: std::ops::Range<usize>) -> Vec<String> {
    r.map(url).collect()
}

/// The emulator on loopback, generous so the ledger shows what the daemon did; tasks end
/// (`Complete`) 300 ms after they are submitted.
async fn emulator() -> (String, Arc<EmulatorState>) {
    let mut opts = EmulatorOptions { task_ms: 300, ..EmulatorOptions::default() };
    opts.limits.insert(
        VendorKind::AliyunCdn,
        LimitOverride { qps: Some(1000), daily_quota: Some(1_000_000), ..Default::default() },
    );
    let (app, emu) = emulator::router(opts).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (endpoint, emu)
}

/// One job of [`N`] URLs to `aliyun_cdn` at the emulator, one slice due now, two requests.
fn cdn_run(endpoint: &str) -> Run {
    let run = Run::new(&format!(
        r#"[[vendor]]
name = "cdn"
kind = "aliyun_cdn"
endpoint = "{endpoint}"
access_key_id = "{ak}"
access_key_secret_file = "secret"
requests_per_second = 50
max_urls_per_request = 3

[[job]]
name = "crash"
task_type = "preload"
vendors = ["cdn"]
urls_file = "list.txt"

[[job.plan]]
start_time = "{start}"
end_time = "{end}"
interval = "1s"
slice_len = {N}
"#,
        ak = emulator::DEMO_ACCESS_KEY_ID,
        start = preloadd::clock::rfc3339(now_ms() - 1_000),
        end = preloadd::clock::rfc3339(now_ms() + 600_000),
    ));
    crate::common::write_secret(&run.dir.path().join("secret"), emulator::DEMO_ACCESS_KEY_SECRET);
    let list: String = (0..N).map(|i| url(i) + "\n").collect();
    std::fs::write(run.dir.path().join("list.txt"), list).unwrap();
    run
}

/// The URLs of every request the vendor accepted, in order.
fn requests(emu: &EmulatorState) -> Vec<Vec<String>> {
    emu.ledger().into_iter().map(|r| r.urls).collect()
}

/// The one subtask: (status, URLs accepted, `submitting` markings, vendor task ids as stored).
fn subtask(run: &Run) -> (String, i64, i64, String) {
    run.db()
        .query_row("SELECT status, urls_sent, attempts, vendor_task_ids FROM subtasks", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .unwrap()
}

fn outcomes(run: &Run, status: &str) -> i64 {
    run.int(&format!("SELECT COUNT(*) FROM url_outcomes WHERE status = '{status}'"))
}

fn recorded(run: &Run) -> bool {
    matches!(subtask(run).0.as_str(), "submitted" | "done")
}

/// engine::after_submitting: the request never left, so the task list cannot have it; it is
/// sent again, once. Armed `1*off->return`: the first request goes out, the crash comes before
/// the second, and only the second is repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_submitting_resends_only_the_request_the_vendor_never_got() {
    let (endpoint, emu) = emulator().await;
    let run = cdn_run(&endpoint);
    run.crash_at("engine::after_submitting", "1*off->return").await;
    assert_eq!(requests(&emu), vec![urls(0..3)]);
    let (status, sent, attempts, _) = subtask(&run);
    assert_eq!((status.as_str(), sent, attempts), ("submitting", 3, 2), "committed before the call");

    let mut d = run.spawn(None, "restart.log");
    run.wait_db("the slice recorded", &mut d, recorded).await;
    assert_eq!(requests(&emu), vec![urls(0..3), urls(3..6)], "every URL reached the vendor exactly once");
    assert!(run.log("restart.log").contains("reconciled: not found at the vendor"), "{}", run.log("restart.log"));
    assert_eq!(subtask(&run).2, 3, "the unsent request was marked again, once");
    run.stop(d).await;
}

/// engine::before_accept: the vendor has the request; reconciliation finds it in the vendor's
/// task list and records it without a second submission.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_before_accept_is_reconciled_from_the_task_list_without_resending() {
    let (endpoint, emu) = emulator().await;
    let run = cdn_run(&endpoint);
    run.crash_at("engine::before_accept", "return").await;
    assert_eq!(requests(&emu), vec![urls(0..3)]);
    let (status, sent, attempts, _) = subtask(&run);
    assert_eq!((status.as_str(), sent, attempts), ("submitting", 0, 1));

    let mut d = run.spawn(None, "restart.log");
    run.wait_db("the slice recorded", &mut d, recorded).await;
    assert_eq!(requests(&emu), vec![urls(0..3), urls(3..6)], "the accepted request was not sent again");
    assert!(run.log("restart.log").contains("reconciled: the vendor has the in-flight request"));
    let (_, sent, attempts, ids) = subtask(&run);
    assert_eq!((sent, attempts), (N as i64, 2), "one marking per request: nothing resent");
    let task_ids: Vec<String> = serde_json::from_str(&ids).unwrap();
    let ledger_ids: Vec<String> = emu.ledger().into_iter().flat_map(|r| r.task_ids).collect();
    assert_eq!(task_ids, ledger_ids, "the vendor's own task ids, the reconciled one included");
    run.stop(d).await;
}

/// store::record_accepted::before_commit: the half-written transaction is gone after the crash
/// (still `submitting`, nothing accepted, no task id); then recovery is as for before_accept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_mid_commit_rolls_back_and_is_reconciled_without_resending() {
    let (endpoint, emu) = emulator().await;
    let run = cdn_run(&endpoint);
    run.crash_at("store::record_accepted::before_commit", "return").await;
    assert_eq!(requests(&emu), vec![urls(0..3)]);
    assert_eq!(subtask(&run), ("submitting".into(), 0, 1, "[]".into()), "the transaction rolled back");
    assert_eq!(outcomes(&run, "pending"), N as i64);

    let mut d = run.spawn(None, "restart.log");
    run.wait_db("the slice recorded", &mut d, recorded).await;
    assert_eq!(requests(&emu), vec![urls(0..3), urls(3..6)], "the accepted request was not sent again");
    assert!(run.log("restart.log").contains("reconciled: the vendor has the in-flight request"));
    assert_eq!(subtask(&run).1, N as i64);
    run.stop(d).await;
}

/// engine::poll::before_record: the status answer is lost with the process; the poll is still
/// due and is asked again; every outcome is recorded once, and nothing is resubmitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_during_polling_polls_again() {
    let (endpoint, emu) = emulator().await;
    let run = cdn_run(&endpoint);
    run.crash_at("engine::poll::before_record", "return").await;
    assert_eq!(requests(&emu), vec![urls(0..3), urls(3..6)]);
    assert_eq!(subtask(&run).0, "submitted");
    assert_eq!(outcomes(&run, "pending"), N as i64, "the answer was not recorded");

    let mut d = run.spawn(None, "restart.log");
    run.wait_db("the subtask done", &mut d, |r| subtask(r).0 == "done").await;
    assert_eq!(outcomes(&run, "done"), N as i64, "every URL's outcome, once");
    assert_eq!(run.int("SELECT COUNT(*) FROM url_outcomes"), N as i64);
    assert_eq!(requests(&emu).len(), 2, "polling never resubmits");
    run.stop(d).await;
}

// ---- schedules ---------------------------------------------------------------------------------

/// store::fire_schedule::before_commit: nothing of the firing survives the crash (no firing
/// row, no plan, `next_fire` unchanged); the next start fires it once: one firing row, one plan,
/// every URL sent once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_mid_firing_leaves_nothing_and_fires_once_after_restart() {
    let recv = Receiver::start().await;
    // A firing once a minute, at the second that comes 3 s from now (UTC).
    let second = (now_ms() / 1000 + 3) % 60;
    let run = Run::new(&format!(
        r#"[[vendor]]
name = "hook"
kind = "webhook"
endpoint = "{endpoint}"
requests_per_second = 50

[[job]]
name = "nightly"
task_type = "preload"
vendors = ["hook"]
urls = ["https://crash.example.com/s/0.js", "https://crash.example.com/s/1.js", "https://crash.example.com/s/2.js"]

[job.schedule]
cron = "{second} * * * * *"
timezone = "UTC"
window = "1h"
interval = "1s"
slice_len = 3
"#,
        endpoint = recv.url()
    ));
    run.crash_at("store::fire_schedule::before_commit", "return").await;
    let fire_at = run.int("SELECT next_fire FROM schedules");
    assert_eq!(fire_at / 1000 % 60, second, "next_fire did not move");
    assert_eq!(run.int("SELECT COUNT(*) FROM schedule_firings"), 0, "no firing row");
    assert_eq!(run.int("SELECT COUNT(*) FROM plans"), 0, "no plan");
    assert!(recv.hits().is_empty());

    let d = run.spawn(None, "restart.log");
    recv.wait_until("the planned URLs", DEADLINE, |h| h.iter().map(|h| h.urls.len()).sum::<usize>() >= 3).await;
    let firings = |sql: &str| run.int(&format!("SELECT COUNT(*) FROM schedule_firings WHERE fire_at = {fire_at}{sql}"));
    assert_eq!(firings(""), 1, "one firing row for the crashed firing");
    assert_eq!(firings(" AND outcome = 'planned'"), 1);
    assert_eq!(run.int(&format!("SELECT COUNT(*) FROM plans WHERE start_time = {fire_at}")), 1, "one plan");
    assert_eq!(recv.urls().len(), 3, "each URL once");
    run.stop(d).await;
}

// ---- report deliveries -------------------------------------------------------------------------

/// Report webhook calls received.
#[derive(Clone, Default)]
struct Reports(Arc<Mutex<Vec<Value>>>);

async fn report_hook(State(r): State<Reports>, Json(body): Json<Value>) -> &'static str {
    r.0.lock().unwrap().push(body);
    "ok"
}

impl Reports {
    async fn start() -> (Reports, String) {
        let r = Reports::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/report", listener.local_addr().unwrap());
        let app = Router::new().route("/report", post(report_hook)).with_state(r.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (r, url)
    }

    /// Calls for the period that starts at `start` (RFC 3339 as the generic webhook sends it).
    fn for_period(&self, start: &str) -> usize {
        self.0.lock().unwrap().iter().filter(|b| b["period_start"] == start).count()
    }
}

/// A subscription firing every second, reporting on yesterday (UTC): every firing of one day
/// is the same period, so the crashed period can never be queued again.
fn report_run(hook: &str) -> Run {
    Run::new(&format!(
        r#"[[vendor]]
name = "hook"
kind = "webhook"
endpoint = "http://127.0.0.1:9/unused"

[[report]]
name = "crash-report"
[report.deliver.webhook]
url = "{hook}"
[report.schedule]
crontab = "* * * * * *"
frequency = "d"
timezone = "UTC"
[[report.reports]]
report_id = 3
"#
    ))
}

/// The one delivery row: (period start, status, error).
fn delivery(run: &Run) -> (i64, String, String) {
    run.db()
        .query_row("SELECT period_start, status, error FROM report_deliveries", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap()
}

/// Restarts after a crash mid-delivery and checks the at-most-once rule: the row left
/// `sending` is recorded as failed (interrupted) and never attempted again; `sent_before` is
/// how many calls the period got before the crash.
async fn restart_after_report_crash(run: &Run, reports: &Reports, sent_before: usize) {
    let (start, status, _) = delivery(run);
    assert_eq!(status, "sending", "committed before the attempt");
    let period = preloadd::clock::rfc3339(start);
    assert_eq!(reports.for_period(&period), sent_before);

    let mut d = run.spawn(None, "restart.log");
    run.wait_db("the interrupted delivery recorded", &mut d, |r| delivery(r).1 != "sending").await;
    let (_, status, error) = delivery(run);
    assert_eq!(status, "failed");
    assert!(error.contains("interrupted"), "{error}");
    // Two more firings: the pass after recovery (queueing, then every due delivery) is over.
    let next = run.int("SELECT next_run FROM report_subscriptions");
    run.wait_db("two more firings", &mut d, |r| r.int("SELECT next_run FROM report_subscriptions") >= next + 2_000)
        .await;
    assert_eq!(reports.for_period(&period), sent_before, "the period is never delivered twice");
    assert_eq!(run.int(&format!("SELECT COUNT(*) FROM report_deliveries WHERE period_start = {start}")), 1);
    assert_eq!(delivery_status(run, start), "failed", "and never attempted again");
    run.stop(d).await;
}

fn delivery_status(run: &Run, start: i64) -> String {
    run.db().query_row("SELECT status FROM report_deliveries WHERE period_start = ?", [start], |r| r.get(0)).unwrap()
}

/// reports::after_send: the report went out, the crash came before it was recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_a_report_was_sent_never_sends_it_twice() {
    let (reports, hook) = Reports::start().await;
    let run = report_run(&hook);
    run.crash_at("reports::after_send", "return").await;
    restart_after_report_crash(&run, &reports, 1).await;
}

/// reports::after_claim: the delivery was committed `sending` and nothing went out; it may not
/// be told apart from a crash mid-send, so it is failed too (at most once, not at least once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_claiming_a_delivery_records_it_failed() {
    let (reports, hook) = Reports::start().await;
    let run = report_run(&hook);
    run.crash_at("reports::after_claim", "return").await;
    restart_after_report_crash(&run, &reports, 0).await;
}

// ---- arming -------------------------------------------------------------------------------------

/// A misspelt point is refused (exit 2) instead of a test that passes without crashing.
#[test]
fn unknown_failpoints_are_refused() {
    let run = Run::new("");
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&run.cfg)
        .env("FAILPOINTS", "engine::after_submiting=return")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("unknown failpoint `engine::after_submiting`"), "{err}");
}
