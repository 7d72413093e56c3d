//! Test helpers: a webhook receiver on loopback, an engine fixture on a fresh SQLite file with
//! an injected clock, and waiting on events with a deadline instead of sleeping.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use preloadd::clock::ManualClock;
use preloadd::config::{PlanSpec, Secret, VendorConfig, VendorOptions};
use preloadd::engine::{Engine, EngineSettings};
use preloadd::ingest;
use preloadd::model::{CatchUp, JobSource, TaskType, VendorKind};
use preloadd::store::{NewJob, Store};
use preloadd::vendor::Vendors;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Hit {
    pub at_ms: i64,
    pub urls: Vec<String>,
    pub body: serde_json::Value,
    pub auth: Option<String>,
}

#[derive(Default)]
struct Inner {
    hits: Vec<Hit>,
    /// Arrival time of every request, answered 200 or not.
    arrivals: Vec<i64>,
    /// Statuses to answer, in order, before answering 200.
    script: Vec<(u16, Option<u64>)>,
    /// How long each accepted request takes (a slow vendor keeps calls in flight).
    delay_ms: u64,
}

/// A webhook receiver counting what arrives.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    notify: Arc<Notify>,
}

async fn receive(
    State(r): State<Receiver>,
    headers: HeaderMap,
    Json(body): Json<serde_json::Value>,
) -> (StatusCode, HeaderMap, String) {
    let delay = {
        let mut inner = r.inner.lock().unwrap();
        inner.arrivals.push(chrono::Utc::now().timestamp_millis());
        if inner.script.is_empty() {
            inner.delay_ms
        } else {
            0
        }
    };
    r.notify.notify_waiters();
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let mut inner = r.inner.lock().unwrap();
    let mut out = HeaderMap::new();
    if !inner.script.is_empty() {
        let (status, retry_after) = inner.script.remove(0);
        if let Some(s) = retry_after {
            out.insert("retry-after", s.to_string().parse().unwrap());
        }
        return (StatusCode::from_u16(status).unwrap(), out, "{\"error\":\"scripted\"}".into());
    }
    let urls = body["urls"].as_array().unwrap().iter().map(|u| u.as_str().unwrap().to_string()).collect();
    let n = inner.hits.len();
    inner.hits.push(Hit {
        at_ms: chrono::Utc::now().timestamp_millis(),
        urls,
        body,
        auth: headers.get("authorization").map(|v| v.to_str().unwrap().to_string()),
    });
    drop(inner);
    r.notify.notify_waiters();
    (StatusCode::OK, out, format!("{{\"task_id\":\"t{n}\"}}"))
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let r =
            Receiver { addr: listener.local_addr().unwrap(), inner: Default::default(), notify: Default::default() };
        let app = Router::new().route("/hook", post(receive)).with_state(r.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        r
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// The next requests get these statuses (with an optional Retry-After) before 200s resume.
    pub fn script(&self, answers: &[(u16, Option<u64>)]) {
        self.inner.lock().unwrap().script = answers.to_vec();
    }

    /// Each accepted request takes `ms` before it is answered (and counted as a hit).
    pub fn set_delay(&self, ms: u64) {
        self.inner.lock().unwrap().delay_ms = ms;
    }

    /// Requests received but not answered yet (not meaningful with a script: scripted answers
    /// are not hits).
    pub fn in_flight(&self) -> usize {
        let inner = self.inner.lock().unwrap();
        inner.arrivals.len().saturating_sub(inner.hits.len())
    }

    /// Waits until `pred` holds for the receiver, woken by every arrival and every answer.
    pub async fn wait_for(&self, what: &str, deadline: Duration, pred: impl Fn(&Receiver) -> bool) {
        let end = tokio::time::Instant::now() + deadline;
        loop {
            let notified = self.notify.notified();
            if pred(self) {
                return;
            }
            if tokio::time::timeout_at(end, notified).await.is_err() && !pred(self) {
                panic!("timed out waiting for {what}; {} requests answered", self.hits().len());
            }
        }
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.inner.lock().unwrap().hits.clone()
    }

    pub fn arrivals(&self) -> Vec<i64> {
        self.inner.lock().unwrap().arrivals.clone()
    }

    pub fn urls(&self) -> Vec<String> {
        self.hits().into_iter().flat_map(|h| h.urls).collect()
    }

    /// Waits until `pred` holds for the hits, or panics at the deadline.
    pub async fn wait_until(&self, what: &str, deadline: Duration, pred: impl Fn(&[Hit]) -> bool) -> Vec<Hit> {
        let end = tokio::time::Instant::now() + deadline;
        loop {
            let notified = self.notify.notified();
            let hits = self.hits();
            if pred(&hits) {
                return hits;
            }
            if tokio::time::timeout_at(end, notified).await.is_err() {
                let hits = self.hits();
                if pred(&hits) {
                    return hits;
                }
                panic!(
                    "timed out waiting for {what}; got {} requests with {} URLs",
                    hits.len(),
                    hits.iter().map(|h| h.urls.len()).sum::<usize>()
                );
            }
        }
    }
}

pub fn webhook_vendor(name: &str, endpoint: &str, max_urls: u32) -> VendorConfig {
    VendorConfig {
        name: name.to_string(),
        kind: VendorKind::Webhook,
        endpoint: endpoint.to_string(),
        access_key_id: String::new(),
        secret: Secret::new("hook-token"),
        requests_per_second: 200,
        status_requests_per_second: 200,
        max_urls_per_request: max_urls,
        daily_quota: None,
        concurrency: 4,
        timeout: Duration::from_secs(5),
        max_retries: 4,
        options: VendorOptions::default(),
    }
}

pub fn test_settings() -> EngineSettings {
    EngineSettings {
        retry_base: Duration::from_millis(10),
        retry_cap: Duration::from_millis(200),
        poll_first_ms: 1_000,
        poll_max_ms: 5_000,
        poll_give_up_ms: 3_600_000,
        ..Default::default()
    }
}

/// 2026-11-30T02:00:00+08:00 (18:00 UTC the day before).
pub const T0: i64 = 1_795_975_200_000;

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub store: Store,
    pub clock: ManualClock,
    pub engine: Arc<Engine>,
    pub recv: Receiver,
}

impl Fixture {
    pub async fn new(max_urls: u32) -> Fixture {
        let recv = Receiver::start().await;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_dir(dir.path()).await.unwrap();
        let clock = ManualClock::new(T0 - 60_000);
        let vendors =
            Vendors::from_config(&[webhook_vendor("hook", &recv.url(), max_urls)], Arc::new(clock.clone())).unwrap();
        let engine =
            Engine::new(store.clone(), vendors, Arc::new(clock.clone()), test_settings(), CancellationToken::new());
        Fixture { dir, store, clock, engine, recv }
    }

    pub async fn job(&self, name: &str, n: usize) -> i64 {
        self.job_with(name, n, CatchUp::Skip).await
    }

    pub async fn job_with(&self, name: &str, n: usize, catch_up: CatchUp) -> i64 {
        let new = NewJob {
            name: name.into(),
            task_type: TaskType::Preload,
            vendors: vec!["hook".into()],
            source: JobSource::Api,
            catch_up,
        };
        let text: String = (0..n).map(|i| format!("https://cdn.example.com/{name}/{i}.js\n")).collect();
        ingest::create_job(&self.store, &new, text.as_bytes(), self.clock_now()).await.unwrap().0
    }

    pub fn clock_now(&self) -> i64 {
        use preloadd::clock::Clock;
        self.clock.now_ms()
    }

    pub async fn plan(&self, job: i64, start: i64, end: i64, interval_s: i64, slice_len: i64) -> i64 {
        let spec = PlanSpec { start_time: start, end_time: end, interval_ms: interval_s * 1000, slice_len };
        self.store.create_plans(job, &[spec], "api", self.clock_now()).await.unwrap()[0].id
    }

    /// Stands at `t` and runs one engine step.
    pub async fn at(&self, t: i64) {
        self.clock.set(t);
        self.engine.step().await.unwrap();
    }
}

pub fn url(job: &str, i: usize) -> String {
    format!("https://cdn.example.com/{job}/{i}.js")
}

/// Writes a secret file readable by its owner only, as the daemon requires.
pub fn write_secret(path: &std::path::Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}
