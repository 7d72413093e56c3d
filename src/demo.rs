//! `preloadd demo`: the embedded default, end to end. Starts the vendor emulator in-process,
//! writes a throwaway config and SQLite state, runs the real daemon on a job of a few hundred
//! URLs against both Alibaba Cloud kinds, shows progress and prints a summary.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;

use crate::clock::{rfc3339, SystemClock};
use crate::config::{self, Overrides};
use crate::daemon::{self, ServeOptions};
use crate::emulator::{self, EmulatorOptions};
use crate::engine::EngineSettings;
use crate::model::PlanStatus;
use crate::store::{Store, VendorProgress};

const URLS: usize = 400;
const SLICE_LEN: usize = 80;
const JOB: &str = "demo-assets";

fn demo_config(state: &std::path::Path, endpoint: &str, start_ms: i64) -> String {
    format!(
        r#"# The demo's config: the same format `preloadd serve` reads.
[daemon]
state_dir = "{state}"
shutdown_timeout = "5s"

[api]
listen = "127.0.0.1:0"

[[vendor]]
name = "ali-cdn"
kind = "aliyun_cdn"
endpoint = "{endpoint}"
access_key_id = "{ak}"
access_key_secret_file = "demo-secret"
requests_per_second = 10

[[vendor]]
name = "ali-esa"
kind = "aliyun_esa"
endpoint = "{endpoint}"
access_key_id = "{ak}"
access_key_secret_file = "demo-secret"
site_id = "1234567890"
requests_per_second = 10

[[job]]
name = "{JOB}"
task_type = "preload"
vendors = ["ali-cdn", "ali-esa"]
urls_file = "urls.txt"

[[job.plan]]
start_time = "{start}"
end_time = "{end}"
interval = "1s"
slice_len = {SLICE_LEN}
"#,
        state = state.join("state").display(),
        ak = emulator::DEMO_ACCESS_KEY_ID,
        start = rfc3339(start_ms),
        end = rfc3339(start_ms + 300_000),
    )
}

/// Runs the demo; returns the summary text.
pub async fn run() -> anyhow::Result<()> {
    let started = Instant::now();
    let dir = tempfile::tempdir().context("creating a throwaway state directory")?;
    let clock = Arc::new(SystemClock);

    // The vendors: the emulator, with tasks that take a second and a few URLs that fail at
    // origin, as real ones do.
    let mut eopts = EmulatorOptions::with_keys(vec![(
        emulator::DEMO_ACCESS_KEY_ID.to_string(),
        emulator::DEMO_ACCESS_KEY_SECRET.to_string(),
    )]);
    eopts.task_ms = 1_500;
    eopts.fail_fraction = 0.02;
    let (app, emu) = emulator::router(eopts)?;
    let elistener = TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", elistener.local_addr()?);
    tokio::spawn(async move { axum::serve(elistener, app).await });

    {
        use std::os::unix::fs::PermissionsExt;
        let secret = dir.path().join("demo-secret");
        std::fs::write(&secret, emulator::DEMO_ACCESS_KEY_SECRET)?;
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600))?;
    }
    let list: String = (0..URLS).map(|i| format!("https://static.example.com/assets/{i:04}.js\n")).collect();
    std::fs::write(dir.path().join("urls.txt"), list)?;
    let cfg_path = dir.path().join("preloadd.toml");
    std::fs::write(&cfg_path, demo_config(dir.path(), &endpoint, crate::clock::Clock::now_ms(clock.as_ref())))?;
    let cfg = config::load(&cfg_path, &Overrides::default())?;
    println!("preloadd demo: {URLS} URLs, slices of {SLICE_LEN} every second, to ali-cdn (aliyun_cdn) and ali-esa (aliyun_esa)");
    println!("vendor emulator on {endpoint}; state in {}", dir.path().display());

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let settings = EngineSettings { poll_first_ms: 1_000, poll_max_ms: 2_000, ..Default::default() };
    let opts = ServeOptions { clock: clock.clone(), settings, ..Default::default() };
    let state_dir = cfg.daemon.state_dir.clone();
    // Migrate before the daemon starts, so the watcher below and the daemon never race for it.
    Store::open_dir(&state_dir).await?.close().await;
    let daemon = tokio::spawn(daemon::run(
        cfg,
        listener,
        async move {
            let _ = stop_rx.await;
        },
        opts,
    ));

    // Watch the state database the daemon writes, as `preloadd watch` would.
    let store = loop {
        if let Ok(s) = Store::open_dir(&state_dir).await {
            if s.job_by_name(JOB).await.ok().flatten().is_some() {
                break s;
            }
        }
        if daemon.is_finished() {
            daemon.await.context("daemon task")??;
            anyhow::bail!("the daemon stopped before creating the demo job");
        }
        if started.elapsed() > Duration::from_secs(20) {
            anyhow::bail!("the daemon did not create the demo job");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let job = store.job_by_name(JOB).await?.context("demo job")?;
    let tty = std::io::stdout().is_terminal();
    let deadline = Instant::now() + Duration::from_secs(55);
    let progress = loop {
        let progress = store.vendor_progress(job.id).await?;
        let plans = store.plans_of_job(job.id).await?;
        let plan_done = plans.iter().all(|p| p.status != PlanStatus::Waiting && p.status != PlanStatus::Running);
        let line = progress_line(&progress);
        if tty {
            print!("\r{line}   ");
            let _ = std::io::Write::flush(&mut std::io::stdout());
        } else {
            println!("{line}");
        }
        let all_final = progress.iter().all(|p| p.subtasks == p.subtasks_final && p.pending == 0);
        if (plan_done && all_final && !progress.is_empty()) || Instant::now() > deadline {
            break progress;
        }
        tokio::time::sleep(Duration::from_millis(if tty { 250 } else { 1_000 })).await;
    };
    if tty {
        println!();
    }
    let _ = stop_tx.send(());
    daemon.await.context("daemon task")??;

    let ledger = emu.ledger();
    let mut out = String::new();
    let _ = writeln!(out, "\nsummary after {:.1} s:", started.elapsed().as_secs_f64());
    let _ = writeln!(
        out,
        "  {:<8} {:>9} {:>6} {:>7} {:>8} {:>9}",
        "vendor", "submitted", "done", "failed", "unknown", "requests"
    );
    for p in &progress {
        let kind = if p.vendor == "ali-cdn" {
            crate::model::VendorKind::AliyunCdn
        } else {
            crate::model::VendorKind::AliyunEsa
        };
        let requests = ledger.iter().filter(|r| r.vendor == kind).count();
        let _ = writeln!(
            out,
            "  {:<8} {:>9} {:>6} {:>7} {:>8} {:>9}",
            p.vendor, p.urls_accepted, p.done, p.failed, p.unknown, requests
        );
    }
    let total: i64 = progress.iter().map(|p| p.urls_accepted).sum();
    let _ = writeln!(
        out,
        "  {total} URL submissions in {} vendor requests; failed URLs keep the vendor's reason (e.g. origin 5XX) and can be retried",
        ledger.len()
    );
    print!("{out}");
    if progress.iter().any(|p| p.urls_accepted < URLS as i64) {
        anyhow::bail!("not every URL reached every vendor within the demo's minute");
    }
    Ok(())
}

fn progress_line(progress: &[VendorProgress]) -> String {
    let parts: Vec<String> = progress
        .iter()
        .map(|p| {
            let bar_len = 20;
            let filled = (p.urls_accepted as usize * bar_len / URLS).min(bar_len);
            format!(
                "{} [{}{}] {}/{} submitted, {} done, {} failed",
                p.vendor,
                "#".repeat(filled),
                "-".repeat(bar_len - filled),
                p.urls_accepted,
                URLS,
                p.done,
                p.failed
            )
        })
        .collect();
    if parts.is_empty() {
        "waiting for the first slice...".to_string()
    } else {
        parts.join("  |  ")
    }
}
