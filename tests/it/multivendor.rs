//! The Volcengine and Tencent Cloud clients against the emulator, `http_warm` against a local
//! origin, and one job fanned out to several vendors — all through the engine, over loopback.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::Router;
use preloadd::clock::{Clock, ManualClock};
use preloadd::config::{PlanSpec, Secret, VendorConfig, VendorOptions};
use preloadd::emulator::{self, EmulatorOptions, EmulatorState, FaultSet, LimitOverride};
use preloadd::engine::Engine;
use preloadd::model::{CatchUp, JobSource, PlanStatus, SubmitStatus, TaskType, UrlStatus, VendorKind};
use preloadd::store::{NewJob, Store};
use preloadd::vendor::Vendors;
use tokio_util::sync::CancellationToken;

use crate::common::{test_settings, T0};

const CLOUD: [VendorKind; 2] = [VendorKind::VolcengineCdn, VendorKind::TencentCdn];

struct World {
    _dir: tempfile::TempDir,
    store: Store,
    clock: ManualClock,
    engine: Arc<Engine>,
    emu: Arc<EmulatorState>,
}

/// A vendor account of `kind` named after it, with the kind's per-request cap.
fn account(kind: VendorKind, endpoint: &str, secret: &str) -> VendorConfig {
    let (_, _, max_urls, quota) = preloadd::config::kind_defaults(kind);
    VendorConfig {
        name: kind.to_string(),
        kind,
        endpoint: endpoint.to_string(),
        access_key_id: "demo-ak".into(),
        secret: Secret::new(secret),
        requests_per_second: 20,
        status_requests_per_second: 20,
        max_urls_per_request: max_urls,
        daily_quota: quota,
        concurrency: 2,
        timeout: std::time::Duration::from_secs(5),
        max_retries: 3,
        options: VendorOptions::default(),
    }
}

/// An emulator on the world's manual clock and one account per kind pointing at it.
async fn world(
    kinds: &[VendorKind],
    emu_opts: impl FnOnce(&mut EmulatorOptions),
    adjust: impl Fn(&mut VendorConfig),
) -> World {
    let clock = ManualClock::new(T0 - 1000);
    let mut opts = EmulatorOptions::with_keys(vec![("demo-ak".into(), "demo-sk".into())]);
    opts.clock = Arc::new(clock.clone());
    opts.task_ms = 3_000;
    emu_opts(&mut opts);
    let (app, emu) = emulator::router(opts).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let configs: Vec<VendorConfig> = kinds
        .iter()
        .map(|k| {
            let mut c = account(*k, &endpoint, "demo-sk");
            adjust(&mut c);
            c
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_dir(dir.path()).await.unwrap();
    let vendors = Vendors::from_config(&configs, Arc::new(clock.clone())).unwrap();
    let engine =
        Engine::new(store.clone(), vendors, Arc::new(clock.clone()), test_settings(), CancellationToken::new());
    World { _dir: dir, store, clock, engine, emu }
}

fn urls(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("https://img.example.com/p/{i}.jpg")).collect()
}

impl World {
    async fn job(&self, vendors: &[VendorKind], task_type: TaskType, list: &[String], slice_len: i64) -> i64 {
        let new = NewJob {
            name: "multi".into(),
            task_type,
            vendors: vendors.iter().map(|v| v.to_string()).collect(),
            source: JobSource::Api,
            catch_up: CatchUp::Skip,
        };
        let text: String = list.iter().map(|u| format!("{u}\n")).collect();
        let (job, _) = preloadd::ingest::create_job(&self.store, &new, text.as_bytes(), T0).await.unwrap();
        let spec = PlanSpec { start_time: T0, end_time: T0 + 3_600_000, interval_ms: 60_000, slice_len };
        self.store.create_plans(job, &[spec], "api", T0).await.unwrap()[0].id
    }

    async fn at(&self, t: i64) {
        self.clock.set(t);
        self.engine.step().await.unwrap();
    }

    fn ledger_of(&self, kind: VendorKind) -> Vec<emulator::LedgerRecord> {
        self.emu.ledger().into_iter().filter(|r| r.vendor == kind).collect()
    }

    async fn only_subtask(&self, plan: i64, k: usize) -> preloadd::store::Subtask {
        let slices = self.store.slices_of_plan(plan).await.unwrap();
        self.store.subtasks_of_slice(slices[k].id).await.unwrap().remove(0)
    }
}

#[tokio::test]
async fn volcengine_and_tencent_split_slices_and_poll_every_url_to_its_outcome() {
    for kind in CLOUD {
        let w = world(&[kind], |o| o.fail_fraction = 0.1, |_| {}).await;
        let cap = preloadd::config::kind_defaults(kind).2 as usize;
        let n = cap + cap / 2;
        let plan = w.job(&[kind], TaskType::Preload, &urls(n), n as i64).await;
        w.at(T0).await;
        let ledger = w.ledger_of(kind);
        assert_eq!(ledger.iter().map(|r| r.urls.len()).collect::<Vec<_>>(), vec![cap, cap / 2], "{kind}: split");
        assert_eq!(ledger.iter().flat_map(|r| r.urls.clone()).collect::<Vec<_>>(), urls(n), "{kind}: in order, once");
        let st = w.only_subtask(plan, 0).await;
        assert_eq!(st.status, SubmitStatus::Submitted, "{kind}");
        assert_eq!(st.vendor_task_ids, ledger.iter().flat_map(|r| r.task_ids.clone()).collect::<Vec<_>>());
        // Polled while the vendor works, then once its tasks end.
        w.at(T0 + 1_000).await;
        assert_eq!(w.store.subtask(st.id).await.unwrap().status, SubmitStatus::Submitted, "{kind}");
        w.at(T0 + 5_000).await;
        assert_eq!(w.store.subtask(st.id).await.unwrap().status, SubmitStatus::Done, "{kind}");
        for o in w.store.outcomes(st.id).await.unwrap() {
            let want = if emulator::url_fails(&o.url, 0.1) { UrlStatus::Failed } else { UrlStatus::Done };
            assert_eq!(o.status, want, "{kind} {}", o.url);
        }
        let day = preloadd::quota::vendor_day(w.clock.now_ms());
        let quota = w.store.quota_state(kind.as_str(), &day).await.unwrap();
        assert_eq!((quota[0].1, quota[0].3), (1_000, n as i64), "{kind}: quota learned and use tracked");
    }
}

#[tokio::test]
async fn refresh_files_and_directories_reach_the_right_actions() {
    for kind in CLOUD {
        for (task_type, action) in [(TaskType::RefreshFile, 0), (TaskType::RefreshDir, 1)] {
            let w = world(&[kind], |_| {}, |_| {}).await;
            let list: Vec<String> = (0..3).map(|i| format!("https://img.example.com/d{i}/")).collect();
            let plan = w.job(&[kind], task_type, &list, 3).await;
            w.at(T0).await;
            let ledger = w.ledger_of(kind);
            let want = match kind {
                VendorKind::VolcengineCdn => ["SubmitRefreshTask", "SubmitRefreshTask"][action],
                _ => ["PurgeUrlsCache", "PurgePathCache"][action],
            };
            assert_eq!((ledger.len(), ledger[0].action.as_str()), (1, want), "{kind} {task_type}");
            w.at(T0 + 5_000).await;
            let st = w.only_subtask(plan, 0).await;
            assert_eq!(st.status, SubmitStatus::Done, "{kind} {task_type}: polled through the purge task list");
        }
    }
}

#[tokio::test]
async fn a_bad_secret_fails_the_plan_with_each_vendors_code() {
    for (kind, code) in
        [(VendorKind::VolcengineCdn, "SignatureDoesNotMatch"), (VendorKind::TencentCdn, "AuthFailure.SignatureFailure")]
    {
        let w = world(&[kind], |_| {}, |c| c.secret = Secret::new("wrong-secret")).await;
        let plan = w.job(&[kind], TaskType::Preload, &urls(10), 10).await;
        w.at(T0).await;
        let p = w.store.plan(plan).await.unwrap();
        assert_eq!(p.status, PlanStatus::Failed, "{kind}");
        assert!(p.error_info.contains(code), "{kind}: {}", p.error_info);
        assert!(!p.error_info.contains("wrong-secret"));
        assert!(w.emu.ledger().is_empty());
    }
}

#[tokio::test]
async fn throttling_that_never_ends_fails_with_each_vendors_code() {
    for (kind, code) in
        [(VendorKind::VolcengineCdn, "FlowLimitExceeded"), (VendorKind::TencentCdn, "RequestLimitExceeded")]
    {
        let w = world(&[kind], |_| {}, |_| {}).await;
        w.emu.set_faults(Some(kind), FaultSet { throttle: true, ..Default::default() });
        let plan = w.job(&[kind], TaskType::Preload, &urls(10), 10).await;
        w.at(T0).await;
        let st = w.only_subtask(plan, 0).await;
        assert_eq!((st.status, st.error_code.as_str()), (SubmitStatus::Failed, code), "{kind}: retried, then failed");
        assert!(w.emu.ledger().is_empty());
    }
}

#[tokio::test]
async fn a_dropped_answer_is_reconciled_from_the_task_list_without_resending() {
    for kind in CLOUD {
        let w = world(&[kind], |_| {}, |_| {}).await;
        w.emu.set_faults(Some(kind), FaultSet { drop_after_accept_rate: 1.0, ..Default::default() });
        let plan = w.job(&[kind], TaskType::Preload, &urls(20), 20).await;
        w.at(T0).await;
        assert_eq!(w.ledger_of(kind).len(), 1, "{kind}: the task list proved the submission");
        let st = w.only_subtask(plan, 0).await;
        assert_eq!(st.status, SubmitStatus::Submitted, "{kind}");
        assert_eq!(st.vendor_task_ids, w.ledger_of(kind)[0].task_ids, "{kind}");
    }
}

#[tokio::test]
async fn daily_quotas_are_learned_and_waited_out_tencent_per_region() {
    for kind in CLOUD {
        let w = world(
            &[kind],
            |o| {
                o.limits.insert(kind, LimitOverride { daily_quota: Some(150), ..Default::default() });
            },
            |c| {
                c.max_urls_per_request = 100;
                if c.kind == VendorKind::TencentCdn {
                    c.options.area = Some("overseas".into());
                }
            },
        )
        .await;
        let plan = w.job(&[kind], TaskType::Preload, &urls(300), 100).await;
        w.at(T0).await;
        w.at(T0 + 60_000).await;
        assert_eq!(w.ledger_of(kind).iter().map(|r| r.urls.len()).sum::<usize>(), 100, "{kind}");
        let st = w.only_subtask(plan, 1).await;
        assert_eq!(st.status, SubmitStatus::Pending, "{kind}");
        assert!(st.wait_reason.starts_with("quota"), "{kind}: {}", st.wait_reason);
        let reset = preloadd::quota::next_vendor_day(w.clock.now_ms());
        assert_eq!(st.wait_until, Some(reset), "{kind}");
        let quota = w.store.quota_state(kind.as_str(), &preloadd::quota::vendor_day(T0)).await.unwrap();
        assert_eq!((quota[0].1, quota[0].2), (150, 50), "{kind}: learned from the quota API");
        if kind == VendorKind::TencentCdn {
            assert_eq!(quota[0].0, "preload:overseas", "the quota bucket is per region");
        }
        w.at(reset).await;
        assert_eq!(w.ledger_of(kind).iter().map(|r| r.urls.len()).sum::<usize>(), 200, "{kind}: sent after the reset");
    }
}

#[tokio::test]
async fn one_failing_vendor_never_holds_back_the_others() {
    let kinds = [VendorKind::AliyunCdn, VendorKind::VolcengineCdn, VendorKind::TencentCdn];
    let w = world(&kinds, |_| {}, |c| c.max_urls_per_request = 100).await;
    w.emu.set_faults(Some(VendorKind::VolcengineCdn), FaultSet { down: true, ..Default::default() });
    let list = urls(150);
    let plan = w.job(&kinds, TaskType::Preload, &list, 50).await;
    for k in 0..3 {
        w.at(T0 + k * 60_000).await;
    }
    let slices = w.store.slices_of_plan(plan).await.unwrap();
    assert_eq!(slices.len(), 3, "every slice taken");
    for (k, s) in slices.iter().enumerate() {
        assert_eq!(s.created_at, T0 + k as i64 * 60_000, "slice {k} on time");
        for st in w.store.subtasks_of_slice(s.id).await.unwrap() {
            if st.vendor == "volcengine_cdn" {
                assert_eq!((st.status, st.error_code.as_str()), (SubmitStatus::Failed, "ServiceUnavailableTemp"));
                assert!(w.store.outcomes(st.id).await.unwrap().iter().all(|o| o.status == UrlStatus::Failed));
            } else {
                assert!(
                    matches!(st.status, SubmitStatus::Submitted | SubmitStatus::Done),
                    "{} slice {k}: {}",
                    st.vendor,
                    st.status
                );
            }
        }
    }
    for healthy in [VendorKind::AliyunCdn, VendorKind::TencentCdn] {
        let sent: Vec<String> = w.ledger_of(healthy).iter().flat_map(|r| r.urls.clone()).collect();
        assert_eq!(sent, list, "{healthy}: every URL once, in order");
    }
    assert!(w.ledger_of(VendorKind::VolcengineCdn).is_empty());
    // The healthy vendors' tasks end; every task is then final (done), the failing vendor's
    // subtasks keep its error code.
    w.at(T0 + 200_000).await;
    for s in w.store.slices_of_plan(plan).await.unwrap() {
        assert_eq!(s.status, SubmitStatus::Done, "slice {}", s.k);
        let subs = w.store.subtasks_of_slice(s.id).await.unwrap();
        let by_vendor: HashMap<_, _> = subs.iter().map(|st| (st.vendor.as_str(), st.status)).collect();
        assert_eq!(by_vendor["aliyun_cdn"], SubmitStatus::Done);
        assert_eq!(by_vendor["tencent_cdn"], SubmitStatus::Done);
        assert_eq!(by_vendor["volcengine_cdn"], SubmitStatus::Failed);
    }
    assert_eq!(w.store.plan(plan).await.unwrap().status, PlanStatus::Finished, "the plan did not fail");
    // The task view (seed 001): one task per slice, one subtask per vendor account.
    let filter =
        preloadd::store::TaskFilter { start_ms: T0 - 1, end_ms: T0 + 3_600_000, limit: 10, ..Default::default() };
    let (tasks, total) = w.store.list_tasks(&filter).await.unwrap();
    assert_eq!(total, 3);
    for t in &tasks {
        let mut vendors: Vec<&str> = t.subtasks.iter().map(|st| st.vendor.as_str()).collect();
        vendors.sort_unstable();
        assert_eq!(vendors, ["aliyun_cdn", "tencent_cdn", "volcengine_cdn"]);
        assert_eq!(t.urls.len(), 50);
    }
}

// ------------------------------------------------------------------ http_warm

#[derive(Clone, Default)]
struct Origin {
    /// (path, Host header, X-Warm header) of every request.
    seen: Arc<Mutex<Vec<(String, String, String)>>>,
    /// Requests in flight now, and the most ever at once.
    in_flight: Arc<Mutex<(usize, usize)>>,
}

async fn serve_origin(
    State(o): State<Origin>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> (StatusCode, HeaderMap, String) {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    o.seen.lock().unwrap().push((name.clone(), header("host"), header("x-warm")));
    let mut out = HeaderMap::new();
    if name.starts_with("slow") {
        {
            let mut f = o.in_flight.lock().unwrap();
            f.0 += 1;
            f.1 = f.1.max(f.0);
        }
        // The origin is slow (server side), so concurrent GETs overlap.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        o.in_flight.lock().unwrap().0 -= 1;
        return (StatusCode::OK, out, "slow".into());
    }
    let (status, body) = match name.as_str() {
        "hit.js" => {
            out.insert("x-cache", "HIT from edge".parse().unwrap());
            out.insert("age", "42".parse().unwrap());
            (StatusCode::OK, "x".repeat(1234))
        }
        "miss.css" => {
            out.insert("cf-cache-status", "MISS".parse().unwrap());
            (StatusCode::OK, "y".repeat(10))
        }
        "moved" => {
            out.insert("location", "/hit.js".parse().unwrap());
            (StatusCode::MOVED_PERMANENTLY, String::new())
        }
        _ => (StatusCode::NOT_FOUND, "gone".to_string()),
    };
    (status, out, body)
}

async fn origin() -> (Origin, u16) {
    let o = Origin::default();
    let app = Router::new().route("/{name}", get(serve_origin)).with_state(o.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (o, port)
}

async fn warm_world(resolve: Vec<std::net::IpAddr>) -> World {
    world(
        &[VendorKind::HttpWarm],
        |_| {},
        move |c| {
            c.endpoint = "http://unused.invalid".into();
            c.options.resolve = resolve.clone();
            c.options.headers = vec![("X-Warm".into(), "preloadd".into())];
        },
    )
    .await
}

#[tokio::test]
async fn http_warm_fetches_each_url_and_keeps_status_bytes_and_cache_headers() {
    let (origin, port) = origin().await;
    let w = warm_world(Vec::new()).await;
    let list: Vec<String> =
        ["hit.js", "miss.css", "moved", "missing.png"].iter().map(|p| format!("http://127.0.0.1:{port}/{p}")).collect();
    let plan = w.job(&[VendorKind::HttpWarm], TaskType::Preload, &list, 4).await;
    w.at(T0).await;
    let st = w.only_subtask(plan, 0).await;
    assert_eq!(st.status, SubmitStatus::Done, "no status API: outcomes recorded at submit time");
    let outcomes = w.store.outcomes(st.id).await.unwrap();
    let got: Vec<(UrlStatus, &str)> = outcomes.iter().map(|o| (o.status, o.detail.as_str())).collect();
    assert_eq!(got[0], (UrlStatus::Done, "200, 1234 bytes, x-cache: HIT from edge, age: 42"));
    assert_eq!(got[1], (UrlStatus::Done, "200, 10 bytes, cf-cache-status: MISS"));
    assert_eq!(got[2], (UrlStatus::Done, "301, 0 bytes"), "a redirect is recorded, not followed");
    assert_eq!(got[3], (UrlStatus::Failed, "404, 4 bytes"));
    let seen = origin.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4, "one GET per URL, no redirect followed");
    assert!(seen.iter().all(|(_, _, warm)| warm == "preloadd"), "custom headers are sent");
}

#[tokio::test]
async fn http_warm_resolve_pins_requests_to_the_edge_ip() {
    let (origin, port) = origin().await;
    let w = warm_world(vec!["127.0.0.1".parse().unwrap()]).await;
    // A host no DNS knows: only the pinned edge IP can answer for it.
    let list = vec![format!("http://cdn.warm.invalid:{port}/hit.js")];
    let plan = w.job(&[VendorKind::HttpWarm], TaskType::Preload, &list, 1).await;
    w.at(T0).await;
    let st = w.only_subtask(plan, 0).await;
    let outcomes = w.store.outcomes(st.id).await.unwrap();
    assert_eq!(outcomes[0].status, UrlStatus::Done, "{}", outcomes[0].detail);
    assert!(outcomes[0].detail.starts_with("127.0.0.1 200, 1234 bytes"), "{}", outcomes[0].detail);
    let seen = origin.seen.lock().unwrap().clone();
    assert_eq!(seen[0].1, format!("cdn.warm.invalid:{port}"), "the URL's host is kept in the Host header");
}

#[tokio::test]
async fn a_throttled_vendor_recovers_without_holding_back_the_others_or_losing_a_url() {
    // Real time: the emulator counts calls per second on its clock.
    let kinds = [VendorKind::AliyunCdn, VendorKind::VolcengineCdn, VendorKind::TencentCdn];
    let mut opts = EmulatorOptions::with_keys(vec![("demo-ak".into(), "demo-sk".into())]);
    opts.limits.insert(VendorKind::TencentCdn, LimitOverride { qps: Some(1), ..Default::default() });
    let (app, emu) = emulator::router(opts).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let clock: preloadd::clock::SharedClock = Arc::new(preloadd::clock::SystemClock);
    let configs: Vec<VendorConfig> = kinds
        .iter()
        .map(|k| {
            let mut c = account(*k, &endpoint, "demo-sk");
            c.max_urls_per_request = 100;
            c.max_retries = 30; // more than the account really has: the vendor throttles
            c
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_dir(dir.path()).await.unwrap();
    let vendors = Vendors::from_config(&configs, clock.clone()).unwrap();
    let engine = Engine::new(store.clone(), vendors, clock.clone(), test_settings(), CancellationToken::new());
    let new = NewJob {
        name: "multi".into(),
        task_type: TaskType::Preload,
        vendors: kinds.iter().map(|k| k.to_string()).collect(),
        source: JobSource::Api,
        catch_up: CatchUp::Skip,
    };
    let list = urls(300);
    let text: String = list.iter().map(|u| format!("{u}\n")).collect();
    let now = clock.now_ms();
    let (job, _) = preloadd::ingest::create_job(&store, &new, text.as_bytes(), now).await.unwrap();
    let spec = PlanSpec { start_time: now, end_time: now + 3_600_000, interval_ms: 60_000, slice_len: 300 };
    let plan = store.create_plans(job, &[spec], "api", now).await.unwrap()[0].id;
    engine.step().await.unwrap();

    let slice = &store.slices_of_plan(plan).await.unwrap()[0];
    let subtasks = store.subtasks_of_slice(slice.id).await.unwrap();
    let submitted_at: HashMap<&str, i64> =
        subtasks.iter().map(|st| (st.vendor.as_str(), st.submitted_at.expect("every vendor got the slice"))).collect();
    assert!(subtasks.iter().all(|st| st.status == SubmitStatus::Submitted && st.error_code.is_empty()));
    for kind in kinds {
        let sent: Vec<String> = emu.ledger().iter().filter(|r| r.vendor == kind).flat_map(|r| r.urls.clone()).collect();
        assert_eq!(sent, list, "{kind}: every URL once, in order");
    }
    // Tencent's three requests needed at least two more seconds; the others did not wait for it.
    let tencent = submitted_at["tencent_cdn"];
    assert!(tencent - submitted_at["aliyun_cdn"] >= 1_500, "{submitted_at:?}");
    assert!(tencent - submitted_at["volcengine_cdn"] >= 1_500, "{submitted_at:?}");
    let throttled =
        engine.vendors().get("tencent_cdn").unwrap().stats.errors.load(std::sync::atomic::Ordering::Relaxed);
    assert!(throttled > 0, "it was throttled");
}

#[tokio::test]
async fn http_warm_keeps_to_its_concurrency() {
    let (origin, port) = origin().await;
    let w = warm_world(Vec::new()).await;
    let list: Vec<String> = (0..8).map(|i| format!("http://127.0.0.1:{port}/slow{i}")).collect();
    let plan = w.job(&[VendorKind::HttpWarm], TaskType::Preload, &list, 8).await;
    w.at(T0).await;
    let st = w.only_subtask(plan, 0).await;
    assert!(w.store.outcomes(st.id).await.unwrap().iter().all(|o| o.status == UrlStatus::Done));
    let (_, most) = *origin.in_flight.lock().unwrap();
    assert_eq!(most, 2, "concurrency = 2: GETs overlap, never more than two");
}
