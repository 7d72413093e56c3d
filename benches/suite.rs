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

/// Dispatch precision: many plans at once with intervals of 1–10 s, start times spread over a
/// second; lateness of each slice's request at the receiving webhook against the slice's due
/// time, and CPU per 1,000 slices (the whole process: engine, SQLite and the webhook).
async fn dispatch(plans: usize, seconds: u64) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_dir(dir.path()).await.unwrap();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    // A webhook that answers at once and notes when each slice arrived.
    let arrivals: Arc<std::sync::Mutex<Vec<(i64, i64)>>> = Arc::default();
    let hook = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hook", hook.local_addr().unwrap());
    let noted = arrivals.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::Json<serde_json::Value>| {
            let at = SystemClock.now_ms();
            noted.lock().unwrap().push((body["slice"].as_i64().unwrap_or(-1), at));
            async { "{}" }
        }),
    );
    tokio::spawn(async move { axum::serve(hook, app).await });
    let mut vc = cdn(&hook_url, 100_000, 1000);
    vc.kind = VendorKind::Webhook;
    vc.daily_quota = None;
    vc.concurrency = 256;
    let vendors = Vendors::from_config(&[vc], clock.clone()).unwrap();
    let cancel = CancellationToken::new();
    let mut settings = EngineSettings::default();
    if let Some(ms) = std::env::var("PRELOADD_DISPATCH_LEAD_MS").ok().and_then(|v| v.parse().ok()) {
        settings.dispatch_lead = Duration::from_millis(ms);
    }
    let engine = Engine::new(store.clone(), vendors, clock.clone(), settings, cancel.clone());
    // Set-up (not measured): the jobs and plans, a thousand to a transaction.
    let now = clock.now_ms();
    let start = now + 5_000 + plans as i64 / 2;
    let per_job = seconds as usize + 2;
    for chunk in (0..plans).collect::<Vec<_>>().chunks(1_000) {
        let mut tx = store.write().await.unwrap();
        for &p in chunk {
            let new = NewJob {
                name: format!("d{p}"),
                task_type: TaskType::Preload,
                vendors: vec!["cdn".into()],
                source: JobSource::Api,
                catch_up: CatchUp::Skip,
            };
            let j = preloadd::store::insert_job(&mut tx, &new, now).await.unwrap();
            let urls: Vec<String> = (0..per_job).map(|i| format!("https://bench.example.com/d{p}/{i}.js")).collect();
            preloadd::store::append_urls_tx(&mut tx, j, &urls).await.unwrap();
            let spec = PlanSpec {
                start_time: start + (p as i64 * 37) % 1000,
                end_time: start + seconds as i64 * 1000,
                interval_ms: 1_000 * (1 + (p % 10) as i64),
                slice_len: 1,
            };
            preloadd::store::insert_plan(&mut tx, j, &spec, "api", now).await.unwrap();
        }
        tx.commit().await.unwrap();
    }
    let expected: i64 = (0..plans)
        .map(|p| {
            let window = seconds as i64 * 1000 - (p as i64 * 37) % 1000;
            let interval = 1_000 * (1 + (p % 10) as i64);
            (window + interval - 1) / interval
        })
        .sum();
    let wait = Duration::from_millis((start - clock.now_ms()).max(0) as u64 + seconds * 1000 + 2_000);
    let runner = tokio::spawn(engine.clone().run(Duration::from_secs(5), || {}));
    let cpu0 = cpu_seconds();
    tokio::time::sleep(wait).await;
    let cpu = cpu_seconds() - cpu0;
    cancel.cancel();
    let _ = runner.await;
    let due: HashMap<i64, (i64, i64)> =
        sqlx::query_as::<_, (i64, i64, i64)>("SELECT id, due_at, created_at FROM slices")
            .fetch_all(store.pool())
            .await
            .unwrap()
            .into_iter()
            .map(|(id, due, created)| (id, (due, created)))
            .collect();
    let arrivals = arrivals.lock().unwrap().clone();
    let mut late: Vec<f64> = arrivals.iter().filter_map(|(s, at)| due.get(s).map(|(d, _)| (at - d) as f64)).collect();
    late.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let early = late.iter().filter(|l| **l < 0.0).count();
    if std::env::var_os("PRELOADD_BENCH_DETAIL").is_some() {
        let t0 = due.values().map(|(d, _)| *d).min().unwrap_or(0);
        let mut by_sec: std::collections::BTreeMap<i64, (usize, usize)> = Default::default();
        for (s, at) in &arrivals {
            if let Some((d, _)) = due.get(s) {
                let e = by_sec.entry((d - t0) / 1000).or_default();
                e.0 += 1;
                if at - d > 20 {
                    e.1 += 1;
                }
            }
        }
        println!("  per due second (slices, late > 20 ms): {by_sec:?}");
    }
    let mut ahead: Vec<f64> = due.values().map(|(d, c)| (d - c) as f64).collect();
    ahead.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "dispatch: {plans} plans, {} slices arrived of {expected} due in {seconds} s: lateness at the receiver p50 {:.1} ms, \
         p99 {:.1} ms, max {:.0} ms, {early} early; taken ahead by p50 {:.0} ms; {:.3} CPU s per 1,000 slices",
        late.len(),
        percentile(&late, 0.5),
        percentile(&late, 0.99),
        late.last().copied().unwrap_or(0.0),
        percentile(&ahead, 0.5),
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

/// API: task listing with filters over many tasks, 50 concurrent clients over loopback HTTP;
/// baseline: the same store query called directly in the same process (no HTTP, no JSON).
async fn api(tasks: i64, seconds: u64) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_dir(dir.path()).await.unwrap();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let now = clock.now_ms();
    let j = job(&store, "api", 1_000, now).await;
    let plan = store
        .create_plans(
            j,
            &[PlanSpec { start_time: now - 3_600_000, end_time: now + 3_600_000, interval_ms: 1000, slice_len: 10 }],
            "api",
            now,
        )
        .await
        .unwrap()[0]
        .id;
    // Tasks spread over the past 20 hours, ten URLs each, one subtask each.
    let t0 = Instant::now();
    let mut tx = store.write().await.unwrap();
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?) \
         INSERT INTO slices (plan_id, job_id, k, due_at, first_seq, last_seq, url_count, status, created_at, recorded_at, done_at) \
         SELECT ?, ?, i, ? - i * ?, (i % 100) * 10, (i % 100) * 10 + 9, 10, CASE WHEN i % 7 = 0 THEN 'submitted' ELSE 'done' END, \
                ? - i * ?, ? - i * ?, ? - i * ? FROM n",
    )
    .bind(tasks)
    .bind(plan)
    .bind(j)
    .bind(now)
    .bind(72_000_000 / tasks.max(1))
    .bind(now)
    .bind(72_000_000 / tasks.max(1))
    .bind(now)
    .bind(72_000_000 / tasks.max(1))
    .bind(now)
    .bind(72_000_000 / tasks.max(1))
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query("UPDATE jobs SET max_slice = 10").execute(&mut *tx).await.unwrap();
    sqlx::query("INSERT INTO subtasks (slice_id, vendor, status, urls_sent, vendor_task_ids) SELECT id, 'cdn', 'done', 10, '[\"t\"]' FROM slices")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let loaded = t0.elapsed().as_secs_f64();
    let mut vc = cdn("http://127.0.0.1:9/hook", 10, 100);
    vc.kind = VendorKind::Webhook;
    let vendors = Vendors::from_config(&[vc], clock.clone()).unwrap();
    let engine =
        Engine::new(store.clone(), vendors, clock.clone(), EngineSettings::default(), CancellationToken::new());
    let mut api_cfg = preloadd::config::load(std::path::Path::new("/dev/null"), &Default::default())
        .map(|c| c.api)
        .unwrap_or_else(|_| panic!("an empty config loads"));
    api_cfg.token = Some(Secret::new("bench-token"));
    api_cfg.requests_per_second = 1_000_000;
    let app = preloadd::api::router(preloadd::api::AppState::new(engine, &api_cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>()).await
    });
    let queries = [
        "/v1/tasks?page_size=10".to_string(),
        "/v1/tasks?status=executing&page_size=20".to_string(),
        "/v1/tasks?task_type=preload&page_num=50".to_string(),
        "/v1/tasks?url=https://bench.example.com/api/505.js".to_string(),
        format!("/v1/tasks?start_time={}&end_time={}", (now - 7_200_000) / 1000, (now - 3_600_000) / 1000),
    ];
    // Baseline: the store query alone, same filters, sequential.
    let mut base_lat = Vec::new();
    for k in 0..50 {
        let f = preloadd::store::TaskFilter {
            start_ms: now - 86_400_000,
            end_ms: now + 1,
            offset: (k % 5) * 10,
            limit: 10,
            ..Default::default()
        };
        let t = Instant::now();
        store.list_tasks(&f).await.unwrap();
        base_lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    base_lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    // Each filter once, to see which one costs what.
    let day = (now - 86_400_000, now + 1);
    let variants: Vec<(&str, preloadd::store::TaskFilter)> = vec![
        (
            "status",
            preloadd::store::TaskFilter {
                status: Some("executing".into()),
                start_ms: day.0,
                end_ms: day.1,
                limit: 20,
                ..Default::default()
            },
        ),
        (
            "task_type",
            preloadd::store::TaskFilter {
                task_type: Some("preload".into()),
                start_ms: day.0,
                end_ms: day.1,
                offset: 490,
                limit: 10,
                ..Default::default()
            },
        ),
        (
            "url",
            preloadd::store::TaskFilter {
                url: Some("https://bench.example.com/api/505.js".into()),
                start_ms: day.0,
                end_ms: day.1,
                limit: 10,
                ..Default::default()
            },
        ),
        (
            "range",
            preloadd::store::TaskFilter {
                start_ms: now - 7_200_000,
                end_ms: now - 3_600_000,
                limit: 10,
                ..Default::default()
            },
        ),
    ];
    for (name, f) in variants {
        let t = Instant::now();
        store.list_tasks(&f).await.unwrap();
        println!("api: filter {name}: {:.1} ms", t.elapsed().as_secs_f64() * 1000.0);
    }
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut handles = Vec::new();
    for c in 0..50usize {
        let http = http.clone();
        let base = base.clone();
        let queries = queries.clone();
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = c;
            while Instant::now() < deadline {
                let t = Instant::now();
                let r = http
                    .get(format!("{base}{}", queries[i % queries.len()]))
                    .bearer_auth("bench-token")
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success(), "{}", r.status());
                let _ = r.bytes().await.unwrap();
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
                i += 1;
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for h in handles {
        lat.extend(h.await.unwrap());
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "api: {tasks} tasks (loaded in {loaded:.1} s), 50 clients for {seconds} s: {} requests, p50 {:.1} ms, p99 {:.1} ms; \
         baseline (store query alone, default filter) p50 {:.1} ms, p99 {:.1} ms",
        lat.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        percentile(&base_lat, 0.5),
        percentile(&base_lat, 0.99)
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
            // PRELOADD_DISPATCH_PLANS=1000,3000 picks the sizes (default 1,000 and 10,000).
            let sizes = std::env::var("PRELOADD_DISPATCH_PLANS").unwrap_or_else(|_| "1000,10000".into());
            for plans in sizes.split(',').filter_map(|n| n.trim().parse().ok()) {
                dispatch(plans, 20).await;
            }
        } else {
            dispatch(5, 2).await
        }
    }
    if want("api") {
        if bench {
            api(1_000_000, 20).await
        } else {
            api(2_000, 1).await
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
