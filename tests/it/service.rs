//! Running as a systemd service: the unit and its friends pass `systemd-analyze`; the real
//! binary speaks sd_notify to a socket the test reads (READY, WATCHDOG, RELOADING/READY,
//! STOPPING); SIGHUP reloads a good config and rejects a bad one without dropping work; SIGTERM
//! in the middle of a busy plan loses nothing; `/metrics` parses and matches the database.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::net::UnixDatagram;

use crate::common::Receiver;

const BIN: &str = env!("CARGO_BIN_EXE_preloadd");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn systemd_tool(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} is missing: install the `systemd` package (apt-get install systemd); .ci/run does");
}

// ---- the unit file and its friends -------------------------------------------------------------

#[test]
fn unit_file_verifies_without_a_single_message() {
    let unit = std::fs::read_to_string(Path::new(ROOT).join("systemd/preloadd.service")).unwrap();
    for line in [
        "Type=notify",
        "ExecStart=/usr/bin/preloadd serve --config /etc/preloadd/preloadd.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "RestartPreventExitStatus=78",
        "DynamicUser=yes",
        "StateDirectory=preloadd",
        "ConfigurationDirectory=preloadd",
    ] {
        assert!(unit.lines().any(|l| l == line), "the unit has `{line}`");
    }
    assert!(unit.lines().any(|l| l.starts_with("WatchdogSec=")), "the unit has WatchdogSec=");
    assert!(unit.lines().any(|l| l.starts_with("LoadCredential=")), "secrets come through LoadCredential=");
    // `verify` checks that ExecStart's binary exists. Where preloadd is not installed, verify the
    // same unit with the path pointing at the binary under test; every other byte is the file's.
    let dir = tempfile::tempdir().unwrap();
    let checked =
        if Path::new("/usr/bin/preloadd").exists() { unit.clone() } else { unit.replace("/usr/bin/preloadd", BIN) };
    let path = dir.path().join("preloadd.service");
    std::fs::write(&path, checked).unwrap();
    let out = Command::new(systemd_tool("systemd-analyze")).arg("verify").arg(&path).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // It exits 0 on unknown keys, so any output at all is a failure.
    assert!(out.status.success() && text.trim().is_empty(), "systemd-analyze verify said:\n{text}");
}

#[test]
fn unit_file_security_exposure_is_at_most_2() {
    // `--threshold` is on systemd's internal 0–100 scale (its default is 100), while the report
    // shows 0.0–10.0: "at most 2.0" is `--threshold=20`. (`--threshold=2` would demand 0.2,
    // which no unit with outbound network access can reach: PrivateNetwork= alone costs 0.5.)
    let out = Command::new(systemd_tool("systemd-analyze"))
        .args(["security", "--offline=true", "--threshold=20", "--no-pager"])
        .arg(Path::new(ROOT).join("systemd/preloadd.service"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let overall = text.lines().find(|l| l.contains("Overall exposure level")).unwrap_or("").to_string();
    println!("{overall}");
    assert!(out.status.success(), "exposure above 2.0:\n{text}{}", String::from_utf8_lossy(&out.stderr));
    let level: f64 = overall
        .split(": ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no overall exposure level in:\n{text}"));
    assert!(level <= 2.0 && overall.contains("OK"), "{overall}");
}

#[test]
fn sysusers_and_tmpfiles_parse() {
    let root = tempfile::tempdir().unwrap();
    for (tool, file, extra) in [
        ("systemd-sysusers", "systemd/preloadd.sysusers", "--dry-run"),
        ("systemd-tmpfiles", "systemd/preloadd.tmpfiles", "--create"),
    ] {
        let file = Path::new(ROOT).join(file);
        let out =
            Command::new(systemd_tool(tool)).arg(extra).arg("--root").arg(root.path()).arg(&file).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        // Parse errors name the file and line; anything else (e.g. no chown as non-root) is
        // about this machine, not the file.
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        assert!(!err.lines().any(|l| l.contains(&format!("{name}:"))), "{tool} rejected {name}:\n{err}");
    }
    assert!(root.path().join("etc/preloadd/credentials").is_dir() || not_root(), "tmpfiles made the dir");
}

fn not_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() != "0").unwrap_or(true)
}

// ---- the daemon under a fake systemd ------------------------------------------------------------

/// A `preloadd serve` child with `NOTIFY_SOCKET` pointing at a datagram socket we read.
struct Daemon {
    child: Child,
    sock: UnixDatagram,
    /// Every notification so far, in order.
    log: Vec<String>,
    addr: Option<String>,
}

impl Daemon {
    fn spawn(dir: &Path, config: &Path, watchdog_usec: Option<u64>) -> Daemon {
        Self::spawn_with(dir, config, watchdog_usec, &[], Stdio::null())
    }

    fn spawn_with(
        dir: &Path,
        config: &Path,
        watchdog_usec: Option<u64>,
        env: &[(&str, String)],
        stderr: Stdio,
    ) -> Daemon {
        let sock_path = dir.join(format!("notify-{}.sock", rand_suffix()));
        let sock = UnixDatagram::bind(&sock_path).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--config"])
            .arg(config)
            .env("NOTIFY_SOCKET", &sock_path)
            .env("RUST_LOG", "warn")
            .env_remove("WATCHDOG_PID")
            .env_remove("WATCHDOG_USEC")
            .env_remove("JOURNAL_STREAM")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(stderr);
        if let Some(u) = watchdog_usec {
            cmd.env("WATCHDOG_USEC", u.to_string());
        }
        Daemon { child: cmd.spawn().unwrap(), sock, log: Vec::new(), addr: None }
    }

    /// The next notification, or a panic at the deadline.
    async fn next(&mut self, deadline: Duration) -> String {
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(deadline, self.sock.recv(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no notification within {deadline:?}; so far: {:?}", self.log))
            .unwrap();
        let msg = String::from_utf8_lossy(&buf[..n]).to_string();
        if let Some(rest) = msg.strip_prefix("STATUS=listening on ") {
            self.addr = rest.split(';').next().map(str::to_string);
        }
        self.log.push(msg.clone());
        msg
    }

    /// Reads notifications until one has the line `line`; returns it.
    async fn until(&mut self, line: &str, deadline: Duration) -> String {
        let end = tokio::time::Instant::now() + deadline;
        loop {
            let left = end.saturating_duration_since(tokio::time::Instant::now());
            let msg = self.next(left.max(Duration::from_millis(1))).await;
            if msg.lines().any(|l| l == line) {
                return msg;
            }
        }
    }

    /// Reads notifications until one starts with `prefix`; returns it.
    async fn until_prefix(&mut self, prefix: &str, deadline: Duration) -> String {
        let end = tokio::time::Instant::now() + deadline;
        loop {
            let left = end.saturating_duration_since(tokio::time::Instant::now());
            let msg = self.next(left.max(Duration::from_millis(1))).await;
            if msg.starts_with(prefix) {
                return msg;
            }
        }
    }

    /// The API address, from the first `STATUS=` line.
    async fn base(&mut self) -> String {
        while self.addr.is_none() {
            self.next(Duration::from_secs(30)).await;
        }
        format!("http://{}", self.addr.clone().unwrap())
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap().success();
        assert!(ok, "kill {sig}");
    }

    /// SIGTERM, STOPPING=1, and the exit code.
    async fn stop(mut self) -> Option<i32> {
        self.signal("-TERM");
        self.until("STOPPING=1", Duration::from_secs(30)).await;
        let mut child = self.child;
        tokio::task::spawn_blocking(move || child.wait().unwrap().code()).await.unwrap()
    }
}

fn rand_suffix() -> u64 {
    rand::random::<u64>() % 1_000_000_000
}

/// A config with one webhook vendor per receiver and jobs given as TOML.
fn write_config(dir: &Path, vendors: &[(&str, &Receiver, u32)], jobs: &str, extra_daemon: &str) -> PathBuf {
    crate::common::write_secret(&dir.join("token"), "svc-token\n");
    let mut text = format!(
        "[daemon]\nstate_dir = \"{}\"\nshutdown_timeout = \"10s\"\n{extra_daemon}\n[api]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"token\"\n",
        dir.join("state").display()
    );
    for (name, recv, rps) in vendors {
        text.push_str(&format!(
            "\n[[vendor]]\nname = \"{name}\"\nkind = \"webhook\"\nendpoint = \"{}\"\nrequests_per_second = {rps}\ndaily_quota = 1000\ntimeout = \"5s\"\n",
            recv.url()
        ));
    }
    text.push_str(jobs);
    let path = dir.join("preloadd.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A declarative job with `n` URLs and one plan from `start_ms`.
fn job_toml(dir: &Path, name: &str, vendor: &str, n: usize, start_ms: i64, interval: &str, slice_len: usize) -> String {
    let list: String = (0..n).map(|i| format!("{}\n", url(name, i))).collect();
    std::fs::write(dir.join(format!("{name}.txt")), list).unwrap();
    format!(
        "\n[[job]]\nname = \"{name}\"\ntask_type = \"preload\"\nvendors = [\"{vendor}\"]\nurls_file = \"{name}.txt\"\n\n[[job.plan]]\nstart_time = \"{}\"\nend_time = \"{}\"\ninterval = \"{interval}\"\nslice_len = {slice_len}\n",
        preloadd::clock::rfc3339(start_ms),
        preloadd::clock::rfc3339(start_ms + 3_600_000),
    )
}

fn url(job: &str, i: usize) -> String {
    format!("https://cdn.example.com/{job}/{i}.css")
}

fn urls(job: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| url(job, i)).collect()
}

async fn get(url: &str) -> (u16, String) {
    let r = reqwest::Client::new().get(url).timeout(Duration::from_secs(10)).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sd_notify_ready_watchdog_reload_stopping() {
    let recv = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let jobs =
        "\n[[job]]\nname = \"idle\"\ntask_type = \"preload\"\nvendors = [\"hook\"]\nurls = [\"https://a.example/1\"]\n";
    let cfg = write_config(dir.path(), &[("hook", &recv, 10)], jobs, "");
    let mut d = Daemon::spawn(dir.path(), &cfg, Some(1_000_000));

    // Before READY=1 only start-up progress (STATUS=, EXTEND_TIMEOUT_USEC=); by READY=1
    // migrations ran and the API answers.
    d.until("READY=1", Duration::from_secs(60)).await;
    let (ready_at, before) = d.log.split_last().unwrap();
    assert_eq!(ready_at, "READY=1");
    for m in before {
        assert!(m.starts_with("STATUS=starting") || m.starts_with("EXTEND_TIMEOUT_USEC="), "before READY: {m}");
    }
    assert!(before.iter().any(|m| m.starts_with("EXTEND_TIMEOUT_USEC=")), "start-up asks for time: {before:?}");
    let base = d.base().await;
    let (code, _) = get(&format!("{base}/healthz")).await;
    assert_eq!(code, 200, "/healthz answers at READY");
    let (code, body) = get(&format!("{base}/readyz")).await;
    assert_eq!(code, 200, "/readyz (a write to the migrated schema) answers at READY: {body}");
    let status = d.log.iter().find(|m| m.starts_with("STATUS=listening")).unwrap().clone();
    assert!(status.contains("plans running") && status.contains("slices due") && status.contains("quota"), "{status}");

    // WatchdogSec=1s: the engine loop pings at least every 0.5 s, though nothing is due.
    let mut pings = Vec::new();
    while pings.len() < 5 {
        let m = d.next(Duration::from_secs(5)).await;
        if m == "WATCHDOG=1" {
            pings.push(tokio::time::Instant::now());
        }
    }
    let max_gap = pings.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(max_gap < Duration::from_millis(1_000), "watchdog pings {max_gap:?} apart, WatchdogSec is 1 s");

    // SIGHUP: RELOADING=1 with our CLOCK_MONOTONIC, then READY=1.
    let before = preloadd::notify::monotonic_usec();
    d.signal("-HUP");
    let msg = d.until("RELOADING=1", Duration::from_secs(30)).await;
    let after = preloadd::notify::monotonic_usec();
    let mono: u64 = msg
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .expect("MONOTONIC_USEC with RELOADING=1")
        .parse()
        .unwrap();
    assert!((before..=after).contains(&mono), "MONOTONIC_USEC {mono} not within [{before}, {after}]");
    d.until("READY=1", Duration::from_secs(30)).await;

    assert_eq!(d.stop().await, Some(0), "SIGTERM exits 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_good_config_and_keeps_the_old_one_on_a_bad_one() {
    let recv = Receiver::start().await;
    let recv2 = Receiver::start().await;
    recv.set_delay(50); // calls in flight while the reloads happen
    let dir = tempfile::tempdir().unwrap();
    let n = 30;
    let first = job_toml(dir.path(), "first", "hook", n, now_ms(), "150ms", 2);
    let cfg = write_config(dir.path(), &[("hook", &recv, 50)], &first, "");
    let good_text = std::fs::read_to_string(&cfg).unwrap();
    let mut d = Daemon::spawn(dir.path(), &cfg, None);
    d.until("READY=1", Duration::from_secs(60)).await;
    let base = d.base().await;
    recv.wait_until("progress", Duration::from_secs(30), |h| h.len() >= 2).await;

    // A bad config: logged, rejected, the old one keeps running.
    std::fs::write(&cfg, good_text.replace("shutdown_timeout", "bogus_key = 1\nshutdown_timeout")).unwrap();
    d.signal("-HUP");
    d.until("RELOADING=1", Duration::from_secs(30)).await;
    d.until("READY=1", Duration::from_secs(30)).await;
    let status = loop {
        let m = d.next(Duration::from_secs(30)).await;
        if m.starts_with("STATUS=") {
            break m;
        }
    };
    assert!(status.contains("reload rejected"), "systemctl status tells: {status}");
    let (code, _) = get(&format!("{base}/readyz")).await;
    assert_eq!(code, 200, "still ready with the old config");

    // A list with no valid URL is a bad config too, caught before anything is applied.
    std::fs::write(dir.path().join("empty.txt"), "not a url\n").unwrap();
    let empty_job =
        "\n[[job]]\nname = \"empty\"\ntask_type = \"preload\"\nvendors = [\"hook\"]\nurls_file = \"empty.txt\"\n";
    std::fs::write(&cfg, format!("{good_text}{empty_job}")).unwrap();
    d.signal("-HUP");
    d.until("RELOADING=1", Duration::from_secs(30)).await;
    d.until("READY=1", Duration::from_secs(30)).await;

    // A good config: a second vendor account and job, and a changed limit on the first account
    // (rebuilt while its calls are in flight).
    let second = job_toml(dir.path(), "second", "hook2", 5, now_ms(), "100ms", 5);
    let cfg2 = write_config(dir.path(), &[("hook", &recv, 40), ("hook2", &recv2, 10)], &format!("{first}{second}"), "");
    assert_eq!(cfg2, cfg);
    d.signal("-HUP");
    d.until("RELOADING=1", Duration::from_secs(30)).await;
    d.until("READY=1", Duration::from_secs(30)).await;

    recv2
        .wait_until("the new job's URLs", Duration::from_secs(30), |h| {
            h.iter().map(|h| h.urls.len()).sum::<usize>() >= 5
        })
        .await;
    assert_eq!(recv2.urls(), urls("second", 5));
    recv.wait_until("every URL of the first job", Duration::from_secs(60), |h| {
        h.iter().map(|h| h.urls.len()).sum::<usize>() >= n
    })
    .await;
    assert_eq!(recv.urls(), urls("first", n), "no URL dropped or repeated across three reloads");

    let (_, metrics) = get(&format!("{base}/metrics")).await;
    let m = parse_prometheus(&metrics);
    assert_eq!(m.value("preloadd_config_reloads_total", &[("result", "ok")]), 1.0);
    assert_eq!(m.value("preloadd_config_reloads_total", &[("result", "failed")]), 2.0);
    assert_eq!(d.stop().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_plan_loses_nothing_and_repeats_nothing() {
    let recv = Receiver::start().await;
    recv.set_delay(300);
    let dir = tempfile::tempdir().unwrap();
    let n = 40;
    let jobs = job_toml(dir.path(), "busy", "hook", n, now_ms(), "50ms", 2);
    let cfg = write_config(dir.path(), &[("hook", &recv, 50)], &jobs, "");
    let mut d = Daemon::spawn(dir.path(), &cfg, None);
    d.until("READY=1", Duration::from_secs(60)).await;
    recv.wait_until("progress", Duration::from_secs(30), |h| h.len() >= 3).await;
    // SIGTERM while a vendor call is in flight.
    recv.wait_for("a call in flight", Duration::from_secs(30), |r| r.in_flight() > 0).await;
    let sent_before = recv.arrivals().len();
    assert_eq!(d.stop().await, Some(0), "SIGTERM mid-plan exits 0");
    assert_eq!(recv.in_flight(), 0, "the in-flight call was waited for");
    assert!(recv.urls().len() < n, "stopped mid-plan");

    // Everything is recorded: nothing is left `submitting` for a restart to guess about.
    let store = preloadd::store::Store::open_dir(&dir.path().join("state")).await.unwrap();
    let submitting: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM subtasks WHERE status = 'submitting'")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(submitting, 0, "every vendor call was recorded before exit");
    let accepted: i64 =
        sqlx::query_scalar("SELECT COALESCE(SUM(urls_sent), 0) FROM subtasks").fetch_one(store.pool()).await.unwrap();
    assert_eq!(accepted as usize, recv.urls().len(), "the database knows every URL the vendor got");
    store.close().await;
    assert!(recv.arrivals().len() >= sent_before);

    recv.set_delay(0);
    let mut d = Daemon::spawn(dir.path(), &cfg, None);
    d.until("READY=1", Duration::from_secs(60)).await;
    recv.wait_until("every URL", Duration::from_secs(60), |h| h.iter().map(|h| h.urls.len()).sum::<usize>() >= n).await;
    assert_eq!(recv.urls(), urls("busy", n), "every URL exactly once, in order, across the restart");
    assert_eq!(d.stop().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_journald_friendly_under_systemd_and_json_on_request() {
    use std::os::unix::fs::MetadataExt;
    let recv = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let jobs =
        "\n[[job]]\nname = \"j\"\ntask_type = \"preload\"\nvendors = [\"hook\"]\nurls = [\"https://a.example/1\"]\n";
    let run = |format: &'static str, journal: bool| {
        let dir = dir.path().to_path_buf();
        let recv = recv.clone();
        async move {
            let extra = if format == "json" { "log_format = \"json\"" } else { "" };
            let cfg = write_config(&dir, &[("hook", &recv, 10)], jobs, extra);
            let log = dir.join(format!("{format}-{journal}.log"));
            let file = std::fs::File::create(&log).unwrap();
            let meta = file.metadata().unwrap();
            // systemd names the stream it gave us as stderr; a stale value must not count.
            let stream = if journal { format!("{}:{}", meta.dev(), meta.ino()) } else { "1:1".to_string() };
            let env = [("JOURNAL_STREAM", stream), ("RUST_LOG", "info".to_string())];
            let mut d = Daemon::spawn_with(&dir, &cfg, None, &env, Stdio::from(file));
            d.until("READY=1", Duration::from_secs(60)).await;
            assert_eq!(d.stop().await, Some(0));
            std::fs::read_to_string(log).unwrap()
        }
    };
    let journal = run("auto", true).await;
    let lines: Vec<&str> = journal.lines().collect();
    assert!(lines.iter().any(|l| l.starts_with("<6>") && l.contains("preloadd is ready")), "{journal}");
    for l in &lines {
        assert!(l.starts_with('<') && !l.contains('\u{1b}'), "a priority prefix, no colours: {l}");
        assert!(!l[3..].trim_start().starts_with("20"), "no timestamp (the journal adds one): {l}");
    }
    let plain = run("auto", false).await;
    assert!(plain.lines().all(|l| !l.starts_with('<') && l.trim_start().starts_with("20")), "{plain}");
    let json = run("json", false).await;
    for l in json.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{l}");
    }
    assert!(json.contains("preloadd is ready"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_without_a_valid_url_is_a_config_error_not_restarted() {
    let recv = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.txt"), "# nothing but\nnot-a-url\n").unwrap();
    let jobs = "\n[[job]]\nname = \"bad\"\ntask_type = \"preload\"\nvendors = [\"hook\"]\nurls_file = \"bad.txt\"\n";
    let cfg = write_config(dir.path(), &[("hook", &recv, 10)], jobs, "");
    let mut d = Daemon::spawn(dir.path(), &cfg, None);
    let status = d.until_prefix("STATUS=cannot start", Duration::from_secs(60)).await;
    assert!(status.contains("bad"), "{status}");
    let mut child = d.child;
    let code = tokio::task::spawn_blocking(move || child.wait().unwrap().code()).await.unwrap();
    assert_eq!(code, Some(78), "EX_CONFIG, so RestartPreventExitStatus=78 stops the restart loop");
    assert!(!d.log.iter().any(|m| m == "READY=1"), "never ready: {:?}", d.log);
}

// ---- /metrics ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_match_the_database() {
    let recv = Receiver::start().await;
    recv.script(&[(503, None)]); // one retry, one HTTP503 error
    let dir = tempfile::tempdir().unwrap();
    let n = 25;
    let jobs = job_toml(dir.path(), "m", "hook", n, now_ms() - 1_000, "50ms", 4);
    let cfg_path = write_config(dir.path(), &[("hook", &recv, 100)], &jobs, "");
    let cfg = preloadd::config::load(&cfg_path, &Default::default()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(preloadd::daemon::run(
        cfg,
        listener,
        async move {
            let _ = stopped.await;
        },
        preloadd::daemon::ServeOptions { settings: crate::common::test_settings(), ..Default::default() },
    ));
    recv.wait_until("every URL", Duration::from_secs(60), |h| h.iter().map(|h| h.urls.len()).sum::<usize>() >= n).await;

    let store = preloadd::store::Store::open_dir(&dir.path().join("state")).await.unwrap();
    // Wait for the plan to finish (the last slice recorded) before comparing.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let open: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM plans WHERE status != 'finished'")
            .fetch_one(store.pool())
            .await
            .unwrap();
        if open == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the plan never finished");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let r = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(r.status(), 200, "loopback reads /metrics without a token");
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let text = r.text().await.unwrap();
    let m = parse_prometheus(&text);
    let q = |sql: &'static str| {
        let pool = store.pool().clone();
        async move { sqlx::query_scalar::<_, i64>(sql).fetch_one(&pool).await.unwrap() as f64 }
    };
    let v = |name: &str, labels: &[(&str, &str)]| m.value(name, labels);
    let hook = [("vendor", "hook"), ("task_type", "preload")];

    assert_eq!(v("preloadd_urls_submitted_total", &hook), q("SELECT SUM(urls_sent) FROM subtasks").await);
    assert_eq!(v("preloadd_urls_submitted_total", &hook), n as f64);
    let done = q("SELECT COUNT(*) FROM subtasks WHERE status = 'done'").await;
    assert_eq!(v("preloadd_slices", &[("vendor", "hook"), ("task_type", "preload"), ("status", "done")]), done);
    assert_eq!(done, n.div_ceil(4) as f64);
    let urls_done = q("SELECT COUNT(*) FROM url_outcomes WHERE status = 'done'").await;
    assert_eq!(v("preloadd_urls", &[("vendor", "hook"), ("task_type", "preload"), ("outcome", "done")]), urls_done);
    assert_eq!(
        v("preloadd_plans", &[("status", "finished")]),
        q("SELECT COUNT(*) FROM plans WHERE status = 'finished'").await
    );
    assert_eq!(v("preloadd_plans", &[("status", "running")]), 0.0);
    assert_eq!(v("preloadd_jobs", &[]), q("SELECT COUNT(*) FROM jobs").await);
    // Lateness: one observation per slice, the sum is the database's.
    assert_eq!(v("preloadd_slice_lateness_seconds_count", &[]), q("SELECT COUNT(*) FROM slices").await);
    assert_eq!(v("preloadd_slice_lateness_seconds_bucket", &[("le", "+Inf")]), done);
    let sum_ms = q("SELECT SUM(MAX(COALESCE(sent_at, created_at) - due_at, 0)) FROM slices").await;
    assert!((v("preloadd_slice_lateness_seconds_sum", &[]) - sum_ms / 1000.0).abs() < 1e-6);
    // Quota: the configured daily_quota, minus what was sent today.
    let remaining = q("SELECT remaining FROM quota_usage").await;
    assert_eq!(v("preloadd_quota_remaining", &[("vendor", "hook"), ("bucket", "preload")]), remaining);
    assert_eq!(remaining, (1000 - n) as f64);
    // In-process counters: every call, the one 503 and its retry.
    assert_eq!(v("preloadd_vendor_calls_total", &[("vendor", "hook")]), done + 1.0);
    assert_eq!(v("preloadd_vendor_errors_total", &[("vendor", "hook"), ("code", "HTTP503")]), 1.0);
    assert_eq!(v("preloadd_vendor_retries_total", &[("vendor", "hook")]), 1.0);
    assert!(m.has("preloadd_vendor_limiter_waits_total", &[("vendor", "hook")]));
    let pages = q("SELECT page_count FROM pragma_page_count()").await;
    let page_size = q("SELECT page_size FROM pragma_page_size()").await;
    assert_eq!(v("preloadd_database_size_bytes", &[]), pages * page_size);

    let _ = stop.send(());
    daemon.await.unwrap().unwrap();
    store.close().await;
}

/// A parsed exposition: every sample by name and labels, and each family's type.
struct Exposition {
    samples: BTreeMap<(String, Vec<(String, String)>), f64>,
}

impl Exposition {
    fn key(name: &str, labels: &[(&str, &str)]) -> (String, Vec<(String, String)>) {
        let mut l: Vec<(String, String)> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        l.sort();
        (name.to_string(), l)
    }

    fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.samples.contains_key(&Self::key(name, labels))
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        *self.samples.get(&Self::key(name, labels)).unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
    }
}

fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Label pairs after `{`, up to and including `}`; returns them and the rest of the line.
fn parse_labels(body: &str, at: &str) -> (Vec<(String, String)>, String) {
    let chars: Vec<char> = body.chars().collect();
    let mut i = 0;
    let mut labels = Vec::new();
    loop {
        if chars.get(i) == Some(&'}') {
            i += 1;
            break;
        }
        let start = i;
        while chars.get(i).is_some_and(|c| *c != '=') {
            i += 1;
        }
        let key: String = chars[start..i].iter().collect();
        assert!(valid_name(&key) && !key.starts_with("__"), "label name `{key}`: {at}");
        assert_eq!(chars.get(i + 1), Some(&'"'), "label value not quoted: {at}");
        i += 2;
        let mut value = String::new();
        loop {
            match chars.get(i) {
                Some('\\') => {
                    match chars.get(i + 1) {
                        Some('n') => value.push('\n'),
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        _ => panic!("bad escape: {at}"),
                    }
                    i += 2;
                }
                Some('"') => {
                    i += 1;
                    break;
                }
                Some(c) => {
                    value.push(*c);
                    i += 1;
                }
                None => panic!("unterminated label value: {at}"),
            }
        }
        assert!(!labels.iter().any(|(k, _): &(String, String)| *k == key), "label `{key}` twice: {at}");
        labels.push((key, value));
        match chars.get(i) {
            Some(',') => i += 1,
            Some('}') => {}
            _ => panic!("expected , or }}: {at}"),
        }
    }
    (labels, chars[i..].iter().collect())
}

/// A strict reader of the Prometheus text format 0.0.4: `# HELP`/`# TYPE` before a family's
/// samples, one TYPE per family, valid names, quoted and escaped label values, float values,
/// no duplicate series, histograms with cumulative buckets ending in `+Inf` equal to `_count`.
fn parse_prometheus(text: &str) -> Exposition {
    assert!(text.ends_with('\n'), "the exposition ends with a newline");
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let at = || format!("line {}: {line}", i + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kw, name) = (parts.next().unwrap(), parts.next().unwrap_or(""));
            assert!(valid_name(name), "{}", at());
            match kw {
                "HELP" => assert!(parts.next().is_some_and(|h| !h.is_empty()), "{}", at()),
                "TYPE" => {
                    let t = parts.next().unwrap_or("");
                    assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&t), "{}", at());
                    assert!(types.insert(name.to_string(), t.to_string()).is_none(), "two TYPEs: {}", at());
                }
                _ => {}
            }
            continue;
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(p) => (&line[..p], &line[p..]),
            None => panic!("no value: {}", at()),
        };
        assert!(valid_name(name), "{}", at());
        let (labels, value_text) = match rest.strip_prefix('{') {
            Some(body) => parse_labels(body, &at()),
            None => (Vec::new(), rest.to_string()),
        };
        let value_text = value_text.strip_prefix(' ').unwrap_or_else(|| panic!("{}", at()));
        let value_text = value_text.split(' ').next().unwrap(); // an optional timestamp follows
        let value: f64 = match value_text {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            t => t.parse().unwrap_or_else(|_| panic!("value: {}", at())),
        };
        let family = ["_bucket", "_sum", "_count", "_total"]
            .iter()
            .filter_map(|s| name.strip_suffix(s))
            .find(|f| types.contains_key(*f))
            .unwrap_or(name);
        assert!(types.contains_key(family) || types.contains_key(name), "sample before its TYPE: {}", at());
        let mut sorted = labels.clone();
        sorted.sort();
        assert!(samples.insert((name.to_string(), sorted), value).is_none(), "duplicate series: {}", at());
    }
    // Histograms: cumulative buckets, +Inf == _count.
    for (family, t) in &types {
        if t != "histogram" {
            continue;
        }
        let mut buckets: Vec<(f64, f64)> = samples
            .iter()
            .filter(|((n, _), _)| *n == format!("{family}_bucket"))
            .map(|((_, l), v)| {
                let le = &l.iter().find(|(k, _)| k == "le").expect("le label").1;
                (if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap() }, *v)
            })
            .collect();
        buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
        assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{family}: buckets are cumulative");
        assert_eq!(buckets.last().map(|b| b.0), Some(f64::INFINITY), "{family}: a +Inf bucket");
        let count = samples[&(format!("{family}_count"), vec![])];
        assert_eq!(buckets.last().unwrap().1, count, "{family}: +Inf bucket equals _count");
        assert!(samples.contains_key(&(format!("{family}_sum"), vec![])), "{family}: _sum");
    }
    let names: HashSet<&String> = samples.keys().map(|(n, _)| n).collect();
    assert!(!names.is_empty(), "no samples");
    Exposition { samples }
}

// ---- reload building blocks ------------------------------------------------------------------------

#[tokio::test]
async fn a_changed_list_waits_while_a_slice_of_its_job_is_in_flight() {
    use preloadd::config::{JobConfig, PlanSpec, UrlSource};
    use preloadd::model::{CatchUp, TaskType, UrlStatus};
    let dir = tempfile::tempdir().unwrap();
    let store = preloadd::store::Store::open_dir(dir.path()).await.unwrap();
    let t0 = crate::common::T0;
    let job = |list: &[String]| JobConfig {
        name: "decl".into(),
        task_type: TaskType::Preload,
        vendors: vec!["hook".into()],
        source: UrlSource::Inline(list.to_vec()),
        catch_up: CatchUp::Skip,
        plans: vec![PlanSpec { start_time: t0, end_time: t0 + 3_600_000, interval_ms: 60_000, slice_len: 2 }],
        schedule: None,
    };
    let (a, b) = (urls("a", 4), urls("b", 3));
    let listed = |store: &preloadd::store::Store, id| {
        let store = store.clone();
        async move { store.job_urls(id, 0, 100).await.unwrap().into_iter().map(|(_, u)| u).collect::<Vec<_>>() }
    };
    preloadd::ingest::apply_config_jobs(&store, &[job(&a)], false, t0 - 1_000).await.unwrap();
    let id = store.job_by_name("decl").await.unwrap().unwrap().id;
    let plan = store.plans_of_job(id).await.unwrap()[0].id;
    store.advance_plans(t0).await.unwrap();
    let slice = store.take_slice(plan, t0).await.unwrap().expect("a slice in flight");

    // The list changes while the slice is in flight: the old list stays, the slice keeps its URLs.
    preloadd::ingest::apply_config_jobs(&store, &[job(&b)], false, t0 + 1).await.unwrap();
    assert_eq!(listed(&store, id).await, a, "not replaced under an in-flight slice");
    let sub = slice.subtask_ids[0];
    assert_eq!(store.subtask_work(sub).await.unwrap().urls.len(), 2);

    // Once the slice is recorded, the next apply (reload or restart) replaces the list.
    store.mark_submitting(sub, t0 + 2).await.unwrap();
    store.record_accepted(sub, 2, &[], &[], t0 + 3, t0 + 3, None, UrlStatus::Done).await.unwrap();
    preloadd::ingest::apply_config_jobs(&store, &[job(&b)], false, t0 + 4).await.unwrap();
    assert_eq!(listed(&store, id).await, b, "replaced once nothing is in flight");
    store.close().await;
}

#[test]
fn reconfigure_keeps_unchanged_accounts_and_the_counters_of_changed_ones() {
    use std::sync::Arc;
    let clock: preloadd::clock::SharedClock = Arc::new(preloadd::clock::SystemClock);
    let a = crate::common::webhook_vendor("a", "http://127.0.0.1:9/hook", 10);
    let b = crate::common::webhook_vendor("b", "http://127.0.0.1:9/hook", 10);
    let old = preloadd::vendor::Vendors::from_config(&[a.clone(), b.clone()], clock.clone()).unwrap();
    let mut b2 = b.clone();
    b2.requests_per_second = 3;
    let new = old.reconfigure(&[a, b2], clock).unwrap();
    assert!(Arc::ptr_eq(old.get("a").unwrap(), new.get("a").unwrap()), "unchanged: the same account");
    assert!(!Arc::ptr_eq(old.get("b").unwrap(), new.get("b").unwrap()), "changed: rebuilt");
    assert_eq!(new.get("b").unwrap().config.requests_per_second, 3);
    assert!(Arc::ptr_eq(&old.get("b").unwrap().stats, &new.get("b").unwrap().stats), "its counters carry on");
}
