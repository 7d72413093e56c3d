//! The benchmark suite (`cargo bench --bench suite -- [rate|dispatch|throughput|api|idle|all]`):
//! each figure is printed beside a baseline measured in the same run. Under `cargo test` (no
//! `--bench`) every part runs at a tiny size as a smoke test, and nothing is judged on speed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use preloadd::clock::{Clock, SystemClock};
use preloadd::config::{PlanSpec, Secret, VendorConfig, VendorOptions};
use preloadd::emulator::{self, EmulatorOptions, LimitOverride};
use preloadd::engine::{Engine, EngineSettings};
use preloadd::model::{CatchUp, JobSource, TaskType, VendorKind};
use preloadd::store::{NewJob, Store};
use preloadd::vendor::Vendors;
use tokio_util::sync::CancellationToken;

fn cpu_seconds() -> f64 {
    // utime + stime of this process, in clock ticks (100 Hz on Linux).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 =
        f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0) + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn emulator(qps: u32) -> (String, Arc<emulator::EmulatorState>) {
    let mut opts = EmulatorOptions::with_keys(vec![("bench-ak".into(), "bench-sk".into())]);
    opts.limits.insert(
        VendorKind::AliyunCdn,
        LimitOverride { qps: Some(qps), daily_quota: Some(1 << 40), max_urls_per_request: Some(1000) },
    );
    let (app, state) = emulator::router(opts).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (endpoint, state)
}

fn cdn(endpoint: &str, rps: u32, per_request: u32) -> VendorConfig {
    VendorConfig {
        name: "cdn".into(),
        kind: VendorKind::AliyunCdn,
        endpoint: endpoint.into(),
        access_key_id: "bench-ak".into(),
        secret: Secret::new("bench-sk"),
        requests_per_second: rps,
        status_requests_per_second: rps,
        max_urls_per_request: per_request,
        daily_quota: Some(1 << 40),
        concurrency: 8,
        timeout: Duration::from_secs(10),
        max_retries: 3,
        options: VendorOptions::default(),
    }
}

async fn job(store: &Store, name: &str, n: usize, now: i64) -> i64 {
    let new = NewJob {
        name: name.into(),
        task_type: TaskType::Preload,
        vendors: vec!["cdn".into()],
        source: JobSource::Api,
        catch_up: CatchUp::Skip,
    };
    let text: String = (0..n).map(|i| format!("https://bench.example.com/{name}/{i}.js\n")).collect();
    preloadd::ingest::create_job(store, &new, text.as_bytes(), now).await.unwrap().0
}

/// Rate fidelity: one vendor limited to N calls a second with a large backlog; the achieved rate
/// and the seconds above N, counted at the emulator's ledger.
async fn rate(n: u32, requests: usize) {
    let (endpoint, emu) = emulator(100_000).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_dir(dir.path()).await.unwrap();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let vendors = Vendors::from_config(&[cdn(&endpoint, n, 10)], clock.clone()).unwrap();
    let engine =
        Engine::new(store.clone(), vendors, clock.clone(), EngineSettings::default(), CancellationToken::new());
    let now = clock.now_ms();
    let j = job(&store, "rate", requests * 10, now).await;
    store
        .create_plans(
            j,
            &[PlanSpec {
                start_time: now,
                end_time: now + 3_600_000,
                interval_ms: 60_000,
                slice_len: (requests * 10) as i64,
            }],
            "api",
            now,
        )
        .await
        .unwrap();
    engine.step().await.unwrap();
    let times: Vec<i64> = emu.ledger().iter().map(|r| preloadd::config::parse_time(&r.received_at).unwrap()).collect();
    let span = (times.last().unwrap() - times.first().unwrap()) as f64 / 1000.0;
    let achieved = (times.len() - 1) as f64 / span;
    let mut per_second: HashMap<i64, usize> = HashMap::new();
    for t in &times {
        *per_second.entry(t.div_euclid(1000)).or_default() += 1;
    }
    let violations = per_second.values().filter(|c| **c > n as usize).count();
    println!(
        "rate fidelity: limit {n}/s, {} requests over {span:.1} s: achieved {achieved:.2}/s = {:.3} of the limit; {violations} seconds above it",
        times.len(),
        achieved / n as f64
    );
}

/// Throughput ceiling: limits lifted, URLs per second end to end to the emulator over loopback.
async fn throughput(urls: usize) {
    let (endpoint, emu) = emulator(1_000_000).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_dir(dir.path()).await.unwrap();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let vendors = Vendors::from_config(&[cdn(&endpoint, 100_000, 1000)], clock.clone()).unwrap();
    let engine =
        Engine::new(store.clone(), vendors, clock.clone(), EngineSettings::default(), CancellationToken::new());
    let now = clock.now_ms();
    let j = job(&store, "tp", urls, now).await;
    store
        .create_plans(
            j,
            &[PlanSpec { start_time: now, end_time: now + 3_600_000, interval_ms: 1, slice_len: 1000 }],
            "api",
            now,
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_100)).await; // past the start-up gate
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    loop {
        engine.step().await.unwrap();
        let sent: usize = emu.ledger().iter().map(|r| r.urls.len()).sum();
        if sent >= urls {
            break;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    println!(
        "throughput: {urls} URLs in {secs:.2} s = {:.0} URLs/s end to end (signing, HTTP, SQLite, emulator in the same process); {:.2} CPU s per million URLs",
        urls as f64 / secs,
        cpu * 1e6 / urls as f64
    );
}

/// Dispatch precision: many plans at once with intervals of 1–10 s; lateness of each slice
/// against its due time, and CPU per 1,000 slices.
async fn dispatch(plans: usize, seconds: u64) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_dir(dir.path()).await.unwrap();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    // A webhook that answers at once: the dispatch path is measured, not a vendor.
    let hook = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hook", hook.local_addr().unwrap());
    let app = axum::Router::new().route("/hook", axum::routing::post(|| async { "{}" }));
    tokio::spawn(async move { axum::serve(hook, app).await });
    let mut vc = cdn(&hook_url, 100_000, 1000);
    vc.kind = VendorKind::Webhook;
    vc.daily_quota = None;
    vc.concurrency = 64;
    let vendors = Vendors::from_config(&[vc], clock.clone()).unwrap();
    let cancel = CancellationToken::new();
    let engine = Engine::new(store.clone(), vendors, clock.clone(), EngineSettings::default(), cancel.clone());
    let now = clock.now_ms();
    let start = now + 2_000;
    for p in 0..plans {
        let j = job(&store, &format!("d{p}"), 100, now).await;
        let interval = 1_000 * (1 + (p % 10) as i64);
        store
            .create_plans(
                j,
                &[PlanSpec {
                    start_time: start + (p as i64 * 37) % 1000,
                    end_time: start + seconds as i64 * 1000,
                    interval_ms: interval,
                    slice_len: 1,
                }],
                "api",
                now,
            )
            .await
            .unwrap();
    }
    let runner = tokio::spawn(engine.clone().run(Duration::from_secs(5), || {}));
    let cpu0 = cpu_seconds();
    tokio::time::sleep(Duration::from_millis(2_000 + seconds * 1000)).await;
    let cpu = cpu_seconds() - cpu0;
    cancel.cancel();
    let _ = runner.await;
    let mut late: Vec<f64> = sqlx::query_scalar::<_, i64>("SELECT created_at - due_at FROM slices")
        .fetch_all(store.pool())
        .await
        .unwrap()
        .into_iter()
        .map(|v| v as f64)
        .collect();
    late.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "dispatch: {plans} plans, {} slices in {seconds} s: lateness p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; {:.3} CPU s per 1,000 slices",
        late.len(),
        percentile(&late, 0.5),
        percentile(&late, 0.99),
        late.last().copied().unwrap_or(0.0),
        cpu * 1000.0 / late.len().max(1) as f64
    );
}

/// Idle cost: plans waiting far in the future, nothing due: CPU used by the engine loop.
async fn idle(plans: usize, seconds: u64) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_dir(dir.path()).await.unwrap();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut vc = cdn("http://127.0.0.1:9/hook", 10, 100);
    vc.kind = VendorKind::Webhook;
    let vendors = Vendors::from_config(&[vc], clock.clone()).unwrap();
    let cancel = CancellationToken::new();
    let engine = Engine::new(store.clone(), vendors, clock.clone(), EngineSettings::default(), cancel.clone());
    let now = clock.now_ms();
    for p in 0..plans {
        let j = job(&store, &format!("i{p}"), 10, now).await;
        store
            .create_plans(
                j,
                &[PlanSpec {
                    start_time: now + 86_400_000,
                    end_time: now + 2 * 86_400_000,
                    interval_ms: 60_000,
                    slice_len: 10,
                }],
                "api",
                now,
            )
            .await
            .unwrap();
    }
    let runner = tokio::spawn(engine.clone().run(Duration::from_secs(5), || {}));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu0 = cpu_seconds();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let cpu = cpu_seconds() - cpu0;
    cancel.cancel();
    let _ = runner.await;
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        })
        .unwrap_or_default();
    println!(
        "idle: {plans} waiting plans, {seconds} s: {cpu:.3} CPU s used ({:.4} CPU s/min); RSS {} MiB",
        cpu * 60.0 / seconds as f64,
        rss.parse::<u64>().unwrap_or(0) / 1024
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bench = args.iter().any(|a| a == "--bench");
    let which: Vec<&str> = args.iter().filter(|a| !a.starts_with('-')).map(String::as_str).collect();
    let all = which.is_empty() || which.contains(&"all");
    let want = |name: &str| all || which.contains(&name);
    if want("rate") {
        if bench {
            rate(50, 1_000).await
        } else {
            rate(50, 20).await
        }
    }
    if want("throughput") {
        if bench {
            throughput(200_000).await
        } else {
            throughput(2_000).await
        }
    }
    if want("dispatch") {
        if bench {
            dispatch(1_000, 20).await
        } else {
            dispatch(5, 2).await
        }
    }
    if want("idle") {
        if bench {
            idle(1_000, 60).await
        } else {
            idle(10, 1).await
        }
    }
}
