//! The benchmark suite (`cargo bench --bench suite -- [rate|dispatch|throughput|api|idle|alternative|all]`):
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
use rand::{Rng, SeedableRng};
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

/// Slices of one dispatch bench run as they arrived: (slice id, arrival in unix microseconds).
type Arrivals = Arc<std::sync::Mutex<Vec<(i64, i64)>>>;

/// A webhook that answers at once and notes when each slice arrived; its URL.
async fn arrival_webhook() -> (String, Arrivals) {
    let arrivals: Arrivals = Arc::default();
    let hook = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hook", hook.local_addr().unwrap());
    let noted = arrivals.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::Json<serde_json::Value>| {
            let at = SystemClock.now_us();
            noted.lock().unwrap().push((body["slice"].as_i64().unwrap_or(-1), at));
            async { "{}" }
        }),
    );
    tokio::spawn(async move { axum::serve(hook, app).await });
    (hook_url, arrivals)
}

/// Plan `p`'s interval in the dispatch bench: 1–10 s.
fn dispatch_interval(p: usize) -> i64 {
    1_000 * (1 + (p % 10) as i64)
}

/// Plan `p`'s start after the common start: its own phase within its interval, as plans created
/// over time have, so the load is steady from the first second; `aligned`, within one second, so
/// that every plan's first slice falls due in that second (the worst case).
fn dispatch_phase(p: usize, seconds: u64, aligned: bool) -> i64 {
    if aligned {
        (p as i64 * 37) % 1000
    } else {
        (p as i64 * 7_919) % dispatch_interval(p).min(seconds as i64 * 1000)
    }
}

/// How late an arrival at `at_us` (unix µs) is for its due time `due_ms` (unix ms), in ms.
fn late_ms(at_us: i64, due_ms: i64) -> f64 {
    (at_us - due_ms * 1000) as f64 / 1000.0
}

/// Each arrival's lateness in milliseconds, sorted, and its p50, p99, max and early count.
fn lateness(arrivals: &[(i64, i64)], due: impl Fn(i64) -> Option<i64>) -> (Vec<f64>, String) {
    let mut late: Vec<f64> = arrivals.iter().filter_map(|(s, at)| due(*s).map(|d| late_ms(*at, d))).collect();
    late.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let early = late.iter().filter(|l| **l < 0.0).count();
    let text = format!(
        "lateness at the receiver p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms, {early} early",
        percentile(&late, 0.5),
        percentile(&late, 0.99),
        late.last().copied().unwrap_or(0.0)
    );
    (late, text)
}

/// The floor of dispatch precision on this machine, run beside [`dispatch`]: the same due
/// instants, each plan a task that sleeps until its slice's due microsecond and posts it to the
/// same webhook with a bare HTTP client — no database, no state, nothing recorded.
async fn dispatch_bare(plans: usize, seconds: u64, aligned: bool) {
    let (url, arrivals) = arrival_webhook().await;
    let http = reqwest::Client::new();
    let start = SystemClock.now_ms() + 2_000;
    let end = start + seconds as i64 * 1000;
    let mut due = HashMap::new();
    let cpu0 = cpu_seconds();
    let mut tasks = Vec::new();
    for p in 0..plans {
        let mut at = start + dispatch_phase(p, seconds, aligned);
        let mut mine = Vec::new();
        while at < end {
            let id = (p * 1_000 + mine.len()) as i64;
            due.insert(id, at);
            mine.push((id, at));
            at += dispatch_interval(p);
        }
        let (http, url) = (http.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            for (id, at) in mine {
                let early = at * 1000 - SystemClock.now_us();
                if early > 0 {
                    tokio::time::sleep(Duration::from_micros(early as u64)).await;
                }
                let body = serde_json::json!({
                    "slice": id, "plan": p, "urls": [format!("https://bench.example.com/d{p}/{id}.js")]
                });
                let _ = http.post(&url).json(&body).send().await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let cpu = cpu_seconds() - cpu0;
    let arrivals = arrivals.lock().unwrap().clone();
    let (late, text) = lateness(&arrivals, |s| due.get(&s).copied());
    println!(
        "dispatch baseline (a timer and an HTTP client, nothing recorded): {plans} plans{}, {} of {} slices: {text}; \
         {:.3} CPU s per 1,000 slices",
        if aligned { " (all starting in one second)" } else { "" },
        late.len(),
        due.len(),
        cpu * 1000.0 / late.len().max(1) as f64
    );
}

/// Dispatch precision: `plans` plans of one URL a slice, intervals 1–10 s, for `seconds`, on
/// the real engine loop; lateness of each slice's request at the receiving webhook against its
/// due time, and CPU per 1,000 slices (the whole process: engine, SQLite and the webhook).
async fn dispatch(plans: usize, seconds: u64, aligned: bool) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_dir(dir.path()).await.unwrap();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (hook_url, arrivals) = arrival_webhook().await;
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
    let interval = dispatch_interval;
    let phase = |p: usize| dispatch_phase(p, seconds, aligned);
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
                start_time: start + phase(p),
                end_time: start + seconds as i64 * 1000,
                interval_ms: interval(p),
                slice_len: 1,
            };
            preloadd::store::insert_plan(&mut tx, j, &spec, "api", now).await.unwrap();
        }
        tx.commit().await.unwrap();
    }
    let expected: i64 = (0..plans)
        .map(|p| {
            let window = seconds as i64 * 1000 - phase(p);
            (window + interval(p) - 1) / interval(p)
        })
        .sum();
    let wait = Duration::from_millis((start - clock.now_ms()).max(0) as u64 + seconds * 1000 + 2_000);
    if std::env::var_os("PRELOADD_BENCH_DETAIL").is_some() {
        println!("  set-up done {} ms before the first plan starts", start - clock.now_ms());
    }
    let runner = tokio::spawn(engine.clone().run(Duration::from_secs(5), || {}));
    let cpu0 = cpu_seconds();
    let probe = std::env::var_os("PRELOADD_BENCH_PROBE").map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            let (mut n, mut wake_us, mut due_us) = (0u32, 0u128, 0u128);
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let t = Instant::now();
                let _ = store.next_wake().await;
                wake_us += t.elapsed().as_micros();
                let t = Instant::now();
                let _ = store.due_plans(SystemClock.now_ms() + 1_500).await;
                due_us += t.elapsed().as_micros();
                n += 1;
                if n % 25 == 0 {
                    println!(
                        "  probe: next_wake {} µs, due_plans {} µs (mean of {n})",
                        wake_us / n as u128,
                        due_us / n as u128
                    );
                }
            }
        })
    });
    tokio::time::sleep(wait).await;
    if let Some(p) = probe {
        p.abort();
    }
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
    let (late, text) = lateness(&arrivals, |s| due.get(&s).map(|(d, _)| *d));
    if std::env::var_os("PRELOADD_BENCH_DETAIL").is_some() {
        // Per second of due time: slices, late > 20 ms, p99 lateness, and how far ahead of
        // their due time the slices were taken (p1): a take that fell behind shows there.
        let t0 = due.values().map(|(d, _)| *d).min().unwrap_or(0);
        let mut by_sec: std::collections::BTreeMap<i64, (Vec<f64>, Vec<f64>)> = Default::default();
        for (s, at) in &arrivals {
            if let Some((d, c)) = due.get(s) {
                let e = by_sec.entry((d - t0) / 1000).or_default();
                e.0.push(late_ms(*at, *d));
                e.1.push((d - c) as f64);
            }
        }
        for (sec, (mut late, mut ahead)) in by_sec {
            late.sort_by(|a, b| a.partial_cmp(b).unwrap());
            ahead.sort_by(|a, b| a.partial_cmp(b).unwrap());
            println!(
                "  second {sec}: {} slices, {} late > 20 ms, p99 {:.2} ms; taken ahead p1 {:.0} ms",
                late.len(),
                late.iter().filter(|l| **l > 20.0).count(),
                percentile(&late, 0.99),
                percentile(&ahead, 0.01)
            );
        }
    }
    let mut ahead: Vec<f64> = due.values().map(|(d, c)| (d - c) as f64).collect();
    ahead.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "dispatch: {plans} plans{}, {} slices arrived of {expected} due in {seconds} s: {text}; \
         taken ahead by p50 {:.0} ms; {:.3} CPU s per 1,000 slices",
        if aligned { " (all starting in one second)" } else { "" },
        late.len(),
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

/// The Python script a user would run instead (`benches/alt/cron_preload.py`) and the venv that
/// holds its SDK, or `None` when `scripts/python-env.sh` has not been run.
fn alt_python() -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv/bin/python");
    python.exists().then(|| (python, root.join("benches/alt/cron_preload.py")))
}

/// What one child process used, from `wait4`: its own CPU (user + system) and peak RSS.
struct Usage {
    cpu: f64,
    max_rss_kib: i64,
    exit: Option<i32>,
}

/// Reaps `child` and returns its own resource usage (not its siblings', unlike RUSAGE_CHILDREN).
fn wait_usage(child: std::process::Child) -> Usage {
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for the pid we spawned and have not reaped.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    assert_eq!(reaped, pid, "wait4: {}", std::io::Error::last_os_error());
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Usage {
        cpu: secs(ru.ru_utime) + secs(ru.ru_stime),
        max_rss_kib: ru.ru_maxrss,
        exit: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
    }
}

/// User + system CPU seconds of a running process, from /proc (100 ticks a second on Linux).
fn proc_cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn signal(child: &std::process::Child, sig: libc::c_int) {
    // SAFETY: a signal to a child we spawned and have not reaped yet.
    unsafe { libc::kill(child.id() as libc::pid_t, sig) };
}

/// An emulator with every Alibaba CDN limit lifted but the 100 URLs per request of PushObjectCache.
async fn alt_emulator() -> (String, String, Arc<emulator::EmulatorState>) {
    let mut opts = EmulatorOptions::with_keys(vec![("alt-ak".into(), "alt-sk".into())]);
    opts.limits.insert(
        VendorKind::AliyunCdn,
        LimitOverride { qps: Some(1_000_000), daily_quota: Some(1 << 40), max_urls_per_request: Some(100) },
    );
    let (app, state) = emulator::router(opts).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), addr, state)
}

/// URLs the emulator accepted: how many distinct, and how many submissions beyond the first.
fn ledger_counts(emu: &emulator::EmulatorState) -> HashMap<String, usize> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for r in emu.ledger() {
        for u in r.urls {
            *seen.entry(u).or_default() += 1;
        }
    }
    seen
}

fn alt_list(dir: &std::path::Path, name: &str, n: usize) -> (std::path::PathBuf, Vec<String>) {
    let urls: Vec<String> = (0..n).map(|i| format!("https://alt.example.com/{name}/{i}.js")).collect();
    let path = dir.join(format!("{name}.txt"));
    std::fs::write(&path, urls.iter().map(|u| format!("{u}\n")).collect::<String>()).unwrap();
    (path, urls)
}

/// One invocation of the Python script: `--loop` for the long-running variant.
fn alt_script(
    py: &(std::path::PathBuf, std::path::PathBuf),
    addr: &str,
    list: &std::path::Path,
    looping: bool,
) -> std::process::Command {
    let mut c = std::process::Command::new(&py.0);
    c.arg(&py.1)
        .arg("--list")
        .arg(list)
        .arg("--progress")
        .arg(list.with_extension("offset"))
        .args(["--slice", &ALT_SLICE.to_string(), "--endpoint", addr, "--protocol", "http"])
        .env("ALIBABA_CLOUD_ACCESS_KEY_ID", "alt-ak")
        .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "alt-sk")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    if looping {
        c.args(["--loop", "--interval", "0"]);
    }
    c
}

fn read_offset(list: &std::path::Path) -> usize {
    std::fs::read_to_string(list.with_extension("offset")).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

const ALT_SLICE: usize = 100;

/// The alternative a user would run (issue 10, item 7): a cron-driven Python script with the
/// official `alibabacloud-cdn20180510` SDK, against the same emulator, the same list and the same
/// slices as preloadd. CPU and peak RSS of each submitter's own processes (`wait4`); the emulator
/// runs in this process and is counted for neither. Then `kill -9` at random moments, lost and
/// duplicated URLs counted at the emulator's ledger.
async fn alternative(urls: usize, cron_runs: usize, kills: usize) {
    let Some(py) = alt_python() else {
        println!("alternative: skipped: run scripts/python-env.sh (the official SDK lives in .venv)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();

    // (a) preloadd: the real daemon (`serve`), a declarative job from the same list file, one
    // slice of 100 URLs per millisecond, one request per slice, limits lifted (status polls at
    // the vendor's 30 a second: preloadd also polls every task until its URLs are done, which
    // the script does not do).
    let (endpoint, _, emu) = alt_emulator().await;
    let (list, _) = alt_list(dir.path(), "list", urls);
    std::fs::write(dir.path().join("secret"), "alt-sk").unwrap();
    std::fs::set_permissions(dir.path().join("secret"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let config = format!(
        r#"[daemon]
state_dir = "{state}"
[api]
listen = "127.0.0.1:0"
[[vendor]]
name = "cdn"
kind = "aliyun_cdn"
endpoint = "{endpoint}"
access_key_id = "alt-ak"
access_key_secret_file = "secret"
requests_per_second = 100000
max_urls_per_request = {ALT_SLICE}
daily_quota = 1000000000000
# DescribeRefreshTaskById is limited to 30 calls a second (the emulator, like the vendor); the
# default of 5 would let the backlog of status polls hold every concurrency permit and pace the
# submits (see BENCHMARKS.md).
status_requests_per_second = 30
[[job]]
name = "alt"
task_type = "preload"
vendors = ["cdn"]
urls_file = "{list}"
[[job.plan]]
start_time = "{s}"
end_time = "{e}"
interval = "1ms"
slice_len = {ALT_SLICE}
"#,
        state = dir.path().join("state").display(),
        list = list.display(),
        s = preloadd::clock::rfc3339(now),
        e = preloadd::clock::rfc3339(now + 3_600_000),
    );
    let cfg = dir.path().join("preloadd.toml");
    std::fs::write(&cfg, config).unwrap();
    let requests = urls.div_ceil(ALT_SLICE);
    let t0 = Instant::now();
    let daemon = std::process::Command::new(env!("CARGO_BIN_EXE_preloadd"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("daemon.log")).unwrap())
        .spawn()
        .unwrap();
    let mut daemon = daemon;
    while emu.ledger_len() < requests {
        let log = || std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();
        assert!(daemon.try_wait().unwrap().is_none(), "preloadd exited: {}", log());
        assert!(t0.elapsed() < Duration::from_secs(600), "preloadd did not finish: {}", log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu_sent = proc_cpu(daemon.id());
    // Then until every URL's outcome is recorded: one status poll per slice, 5 s after it was
    // accepted. The script never learns outcomes; this is what knowing them costs.
    let db = rusqlite::Connection::open_with_flags(
        dir.path().join("state").join(preloadd::store::DB_FILE),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let pending = || -> i64 {
        db.query_row("SELECT COUNT(*) FROM url_outcomes WHERE status = 'pending'", [], |r| r.get(0)).unwrap_or(-1)
    };
    while pending() != 0 {
        assert!(t0.elapsed() < Duration::from_secs(900), "preloadd did not record every outcome");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let wall_done = t0.elapsed().as_secs_f64();
    signal(&daemon, libc::SIGTERM);
    let d = tokio::task::spawn_blocking(move || wait_usage(daemon)).await.unwrap();
    let sent = ledger_counts(&emu);
    assert_eq!(sent.len(), urls, "preloadd sent every URL");
    println!(
        "alternative: preloadd serve, {urls} URLs in slices of {ALT_SLICE}: {wall:.1} s to the last URL accepted, \
         {:.1} CPU s per million URLs by then; {wall_done:.1} s until every URL's outcome was recorded, {:.1} CPU s \
         per million URLs in all (the daemon's whole life: start-up, ingest, SQLite, signing, HTTP, status polls, \
         shutdown); peak RSS {:.1} MiB; exit {:?}",
        cpu_sent * 1e6 / urls as f64,
        d.cpu * 1e6 / urls as f64,
        d.max_rss_kib as f64 / 1024.0,
        d.exit
    );

    // (b) the script as cron runs it, once per slice, back to back (waiting a minute between
    // runs would change nothing a run costs). A sample of runs when `cron_runs` is smaller than
    // the number of slices: each run costs the same (it reads the whole list every time).
    let (_, addr, emu) = alt_emulator().await;
    let (list, _) = alt_list(dir.path(), "cron", urls);
    let runs = cron_runs.min(requests);
    let (mut cpu, mut rss, mut walls) = (0.0, Vec::new(), Vec::new());
    for _ in 0..runs {
        let t = Instant::now();
        let child = alt_script(&py, &addr, &list, false).spawn().unwrap();
        let u = tokio::task::spawn_blocking(move || wait_usage(child)).await.unwrap();
        assert_eq!(u.exit, Some(0), "a cron run failed");
        walls.push(t.elapsed().as_secs_f64());
        cpu += u.cpu;
        rss.push(u.max_rss_kib as f64 / 1024.0);
    }
    let sent = ledger_counts(&emu).len();
    assert_eq!(sent, (runs * ALT_SLICE).min(urls));
    rss.sort_by(|a, b| a.partial_cmp(b).unwrap());
    walls.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let cron_wall = percentile(&walls, 0.5);
    if runs > 0 {
        println!(
        "alternative: python cron_preload.py once per slice, {runs} runs ({sent} of the {urls} URLs): {:.3} CPU s per run, \
         {:.0} CPU s per million URLs; max RSS per run p50 {:.1} MiB, max {:.1} MiB; {:.2} s a run (p50)",
        cpu / runs as f64,
        cpu * 1e6 / sent as f64,
        percentile(&rss, 0.5),
        rss.last().copied().unwrap_or(0.0),
        cron_wall
    );
    }

    // (b') the same script as one long-running process (`--loop --interval 0`).
    let (_, addr, emu) = alt_emulator().await;
    let (list, _) = alt_list(dir.path(), "loop", urls);
    let t = Instant::now();
    let child = alt_script(&py, &addr, &list, true).spawn().unwrap();
    let u = tokio::task::spawn_blocking(move || wait_usage(child)).await.unwrap();
    assert_eq!(u.exit, Some(0), "the loop failed");
    assert_eq!(ledger_counts(&emu).len(), urls);
    println!(
        "alternative: python cron_preload.py --loop (one process), {urls} URLs: {:.1} s; {:.2} CPU s per million URLs; peak RSS {:.1} MiB",
        t.elapsed().as_secs_f64(),
        u.cpu * 1e6 / urls as f64,
        u.max_rss_kib as f64 / 1024.0
    );

    // Kill test, cron form: SIGKILL at a random moment of a run. Every other kill is aimed at the
    // window that matters: 0–5 ms after the emulator accepted the run's call (the SDK call
    // returning, the offset being written); the others at a uniformly random moment of the run.
    if kills == 0 {
        return;
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(10);
    let (_, addr, emu) = alt_emulator().await;
    // Each killed run submits at most one slice; the rest is left for the resumed runs.
    let n = (kills + kills / 2 + 2) * ALT_SLICE;
    let (list, all) = alt_list(dir.path(), "killcron", n);
    let (mut before_call, mut saved, mut unsaved, mut finished) = (0, 0, 0, 0);
    for k in 0..kills {
        let (ledger0, offset0) = (emu.ledger_len(), read_offset(&list));
        let mut child = alt_script(&py, &addr, &list, false).spawn().unwrap();
        if k % 2 == 0 {
            let deadline = Instant::now() + Duration::from_secs(30);
            while emu.ledger_len() == ledger0 && child.try_wait().unwrap().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_micros(100));
            }
            std::thread::sleep(Duration::from_micros(rng.gen_range(0..5_000)));
        } else {
            std::thread::sleep(Duration::from_secs_f64(rng.gen_range(0.0..cron_wall.max(0.1))));
        }
        let exited = child.try_wait().unwrap().is_some();
        signal(&child, libc::SIGKILL);
        let _ = child.wait();
        match (exited, emu.ledger_len() > ledger0, read_offset(&list) > offset0) {
            (true, _, _) => finished += 1,
            (false, false, _) => before_call += 1,
            (false, true, true) => saved += 1,
            (false, true, false) => unsaved += 1,
        }
    }
    let mut resumed = 0;
    while read_offset(&list) < n && resumed < 3 * n / ALT_SLICE {
        let u = wait_usage(alt_script(&py, &addr, &list, false).spawn().unwrap());
        assert_eq!(u.exit, Some(0), "a cron run after the kills failed");
        resumed += 1;
    }
    let counts = ledger_counts(&emu);
    let lost = all.iter().filter(|u| !counts.contains_key(*u)).count();
    let dup: usize = counts.values().map(|c| c - 1).sum();
    println!(
        "alternative: kill -9 of cron runs, {kills} kills over {n} URLs ({} aimed 0-5 ms after the emulator accepted the call, \
         {} at a random moment of a run): {before_call} before the call, {saved} after the offset was saved, \
         {unsaved} between the accepted call and the offset write, {finished} after the run ended; resumed with {resumed} runs: \
         {lost} URLs lost, {dup} duplicated submissions",
        kills.div_ceil(2),
        kills / 2
    );

    // Kill test, long-running form: SIGKILL 0–50 ms after the process's first accepted call.
    let (_, addr, emu) = alt_emulator().await;
    let n = (kills * 10 + 10) * ALT_SLICE;
    let (list, all) = alt_list(dir.path(), "killloop", n);
    for _ in 0..kills {
        let ledger0 = emu.ledger_len();
        let mut child = alt_script(&py, &addr, &list, true).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while emu.ledger_len() == ledger0 && child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(100));
        }
        std::thread::sleep(Duration::from_micros(rng.gen_range(0..50_000)));
        signal(&child, libc::SIGKILL);
        let _ = child.wait();
    }
    let u = wait_usage(alt_script(&py, &addr, &list, true).spawn().unwrap());
    assert_eq!(u.exit, Some(0), "the loop after the kills failed");
    let counts = ledger_counts(&emu);
    let lost = all.iter().filter(|u| !counts.contains_key(*u)).count();
    let dup: usize = counts.values().map(|c| c - 1).sum();
    println!(
        "alternative: kill -9 of the --loop process, {kills} kills 0-50 ms after its first accepted call, {n} URLs, then resumed: \
         {lost} URLs lost, {dup} duplicated submissions; preloadd under the same test: see the crash soak (tests/it/soak.rs)"
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
            // PRELOADD_DISPATCH_PLANS=1000,3000 picks the sizes; a trailing `a` aligns the starts.
            let sizes = std::env::var("PRELOADD_DISPATCH_PLANS").unwrap_or_else(|_| "1000,10000,10000a".into());
            for size in sizes.split(',').map(str::trim) {
                let aligned = size.ends_with('a');
                if let Ok(plans) = size.trim_end_matches('a').parse() {
                    dispatch_bare(plans, 20, aligned).await;
                    dispatch(plans, 20, aligned).await;
                }
            }
        } else {
            dispatch_bare(5, 2, false).await;
            dispatch(5, 2, false).await
        }
    }
    if want("api") {
        if bench {
            api(1_000_000, 20).await
        } else {
            api(2_000, 1).await
        }
    }
    if want("alternative") {
        if bench {
            let env =
                |name: &str, default: usize| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
            alternative(
                env("PRELOADD_ALT_URLS", 100_000),
                env("PRELOADD_ALT_CRON_RUNS", 200),
                env("PRELOADD_ALT_KILLS", 20),
            )
            .await
        } else {
            alternative(300, 1, 0).await
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
