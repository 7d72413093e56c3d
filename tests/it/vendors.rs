//! The Alibaba Cloud clients against the emulator, through the engine, over loopback HTTP.

use std::sync::Arc;

use preloadd::clock::{Clock, ManualClock};
use preloadd::config::{PlanSpec, Secret, VendorConfig, VendorOptions};
use preloadd::emulator::{self, EmulatorOptions, EmulatorState, FaultSet};
use preloadd::engine::Engine;
use preloadd::model::{CatchUp, JobSource, PlanStatus, SubmitStatus, TaskType, UrlStatus, VendorKind};
use preloadd::store::{NewJob, Store};
use preloadd::vendor::Vendors;
use tokio_util::sync::CancellationToken;

use crate::common::{test_settings, T0};

struct World {
    _dir: tempfile::TempDir,
    store: Store,
    clock: ManualClock,
    engine: Arc<Engine>,
    emu: Arc<EmulatorState>,
}

async fn world(kind: VendorKind, secret: &str, fail_fraction: f64) -> World {
    world_with(kind, secret, |o| o.fail_fraction = fail_fraction, |_| {}).await
}

/// A world whose emulator options and vendor account the test adjusts.
async fn world_with(
    kind: VendorKind,
    secret: &str,
    emu_opts: impl FnOnce(&mut EmulatorOptions),
    account: impl FnOnce(&mut VendorConfig),
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
    let mut vc = VendorConfig {
        name: "ali".into(),
        kind,
        endpoint,
        access_key_id: "demo-ak".into(),
        secret: Secret::new(secret),
        requests_per_second: 20,
        status_requests_per_second: 20,
        max_urls_per_request: 100,
        daily_quota: Some(1_000),
        concurrency: 2,
        timeout: std::time::Duration::from_secs(5),
        max_retries: 3,
        options: VendorOptions { site_id: Some("1234".into()), ..Default::default() },
    };
    account(&mut vc);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_dir(dir.path()).await.unwrap();
    let vendors = Vendors::from_config(&[vc], Arc::new(clock.clone())).unwrap();
    let engine =
        Engine::new(store.clone(), vendors, Arc::new(clock.clone()), test_settings(), CancellationToken::new());
    World { _dir: dir, store, clock, engine, emu }
}

fn urls(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("https://img.example.com/p/{i}.jpg")).collect()
}

impl World {
    async fn job(&self, n: usize, slice_len: i64) -> (i64, i64) {
        let new = NewJob {
            name: "ali".into(),
            task_type: TaskType::Preload,
            vendors: vec!["ali".into()],
            source: JobSource::Api,
            catch_up: CatchUp::Skip,
        };
        let text: String = urls(n).iter().map(|u| format!("{u}\n")).collect();
        let (job, _) = preloadd::ingest::create_job(&self.store, &new, text.as_bytes(), T0).await.unwrap();
        let spec = PlanSpec { start_time: T0, end_time: T0 + 3_600_000, interval_ms: 60_000, slice_len };
        let plan = self.store.create_plans(job, &[spec], "api", T0).await.unwrap()[0].id;
        (job, plan)
    }

    async fn at(&self, t: i64) {
        self.clock.set(t);
        self.engine.step().await.unwrap();
    }
}

#[tokio::test]
async fn cdn_and_esa_submit_split_slices_and_track_every_url_to_its_outcome() {
    for kind in [VendorKind::AliyunCdn, VendorKind::AliyunEsa] {
        let w = world(kind, "demo-sk", 0.1).await;
        let (_, plan) = w.job(150, 150).await;
        w.at(T0).await;
        let ledger = w.emu.ledger();
        assert_eq!(
            ledger.iter().map(|r| r.urls.len()).collect::<Vec<_>>(),
            vec![100, 50],
            "{kind}: split to 100 a request"
        );
        assert_eq!(ledger.iter().flat_map(|r| r.urls.clone()).collect::<Vec<_>>(), urls(150));
        let slice = &w.store.slices_of_plan(plan).await.unwrap()[0];
        let st = &w.store.subtasks_of_slice(slice.id).await.unwrap()[0];
        assert_eq!(st.status, SubmitStatus::Submitted);
        // Polled while the vendor still works, then after its tasks end.
        w.at(T0 + 1_000).await;
        assert_eq!(w.store.subtask(st.id).await.unwrap().status, SubmitStatus::Submitted);
        w.at(T0 + 5_000).await;
        let st = w.store.subtask(st.id).await.unwrap();
        assert_eq!(st.status, SubmitStatus::Done, "{kind}");
        let outcomes = w.store.outcomes(st.id).await.unwrap();
        for o in &outcomes {
            let want = if emulator::url_fails(&o.url, 0.1) { UrlStatus::Failed } else { UrlStatus::Done };
            assert_eq!(o.status, want, "{kind} {}", o.url);
        }
        assert!(
            outcomes.iter().any(|o| o.status == UrlStatus::Failed && !o.detail.is_empty()),
            "{kind}: failures keep the vendor's description"
        );
        let quota = w.store.quota_state("ali", &preloadd::quota::vendor_day(w.clock.now_ms())).await.unwrap();
        assert_eq!(quota[0].3, 150, "{kind}: quota use tracked");
    }
}

#[tokio::test]
async fn a_bad_secret_fails_the_subtask_and_the_plan_with_the_vendor_code() {
    let w = world(VendorKind::AliyunCdn, "wrong-secret", 0.0).await;
    let (_, plan) = w.job(10, 10).await;
    w.at(T0).await;
    let p = w.store.plan(plan).await.unwrap();
    assert_eq!(p.status, PlanStatus::Failed);
    assert!(p.error_info.contains("SignatureDoesNotMatch"), "{}", p.error_info);
    assert!(!p.error_info.contains("wrong-secret"), "the secret never leaks");
    assert!(w.emu.ledger().is_empty());
}

#[tokio::test]
async fn a_connection_dropped_after_acceptance_is_reconciled_without_resending() {
    let w = world(VendorKind::AliyunCdn, "demo-sk", 0.0).await;
    w.emu.set_faults(Some(VendorKind::AliyunCdn), FaultSet { drop_after_accept_rate: 1.0, ..Default::default() });
    let (_, plan) = w.job(20, 20).await;
    w.at(T0).await;
    let ledger = w.emu.ledger();
    assert_eq!(ledger.len(), 1, "the vendor's task list proved the submission; nothing sent twice");
    let slice = &w.store.slices_of_plan(plan).await.unwrap()[0];
    let st = &w.store.subtasks_of_slice(slice.id).await.unwrap()[0];
    assert_eq!(st.status, SubmitStatus::Submitted);
    assert!(!st.vendor_task_ids.is_empty(), "the task ids found in the task list are kept");
}

#[tokio::test]
async fn a_vendor_that_stays_throttled_fails_with_its_code_after_the_retries() {
    let w = world(VendorKind::AliyunCdn, "demo-sk", 0.0).await;
    w.emu.set_faults(Some(VendorKind::AliyunCdn), FaultSet { throttle: true, ..Default::default() });
    let (_, plan) = w.job(10, 10).await;
    w.at(T0).await;
    let slice = &w.store.slices_of_plan(plan).await.unwrap()[0];
    let st = &w.store.subtasks_of_slice(slice.id).await.unwrap()[0];
    assert_eq!((st.status, st.error_code.as_str()), (SubmitStatus::Failed, "Throttling.User"));
    assert!(w.emu.ledger().is_empty());
}

#[tokio::test]
async fn the_vendors_quota_is_learned_never_exceeded_and_waited_out_until_the_vendor_day_resets() {
    use preloadd::emulator::LimitOverride;
    let w = world_with(
        VendorKind::AliyunCdn,
        "demo-sk",
        |o| {
            o.limits.insert(VendorKind::AliyunCdn, LimitOverride { daily_quota: Some(150), ..Default::default() });
        },
        |_| {},
    )
    .await;
    let (_, plan) = w.job(300, 100).await;
    w.at(T0).await;
    w.at(T0 + 60_000).await;
    assert_eq!(
        w.emu.ledger().iter().map(|r| r.urls.len()).sum::<usize>(),
        100,
        "the second slice would exceed the 150 left"
    );
    let slices = w.store.slices_of_plan(plan).await.unwrap();
    let st = &w.store.subtasks_of_slice(slices[1].id).await.unwrap()[0];
    assert_eq!(st.status, SubmitStatus::Pending);
    assert!(st.wait_reason.starts_with("quota"), "the wait is visible: {}", st.wait_reason);
    let reset = preloadd::quota::next_vendor_day(w.clock.now_ms());
    assert_eq!(st.wait_until, Some(reset));
    let quota = w.store.quota_state("ali", &preloadd::quota::vendor_day(T0)).await.unwrap();
    assert_eq!((quota[0].1, quota[0].2), (150, 50), "quota and remaining learned from DescribeRefreshQuota");
    // The vendor day turns (Asia/Shanghai midnight): the slice goes, the next day's quota is learned.
    w.at(reset).await;
    w.at(reset + 60_000).await;
    let ledger = w.emu.ledger();
    assert_eq!(ledger.iter().map(|r| r.urls.len()).sum::<usize>(), 200);
    assert!(ledger.iter().all(|r| r.urls.len() == 100));
    let day2 = w.store.quota_state("ali", &preloadd::quota::vendor_day(reset)).await.unwrap();
    assert_eq!((day2[0].1, day2[0].2), (150, 50));
}

#[tokio::test]
async fn throttling_backs_off_and_recovers_without_losing_a_url() {
    use preloadd::emulator::LimitOverride;
    // Real time here: the emulator counts calls per second on its clock.
    let mut opts = EmulatorOptions::with_keys(vec![("demo-ak".into(), "demo-sk".into())]);
    opts.limits.insert(VendorKind::AliyunCdn, LimitOverride { qps: Some(2), ..Default::default() });
    let (app, emu) = emulator::router(opts).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let clock: preloadd::clock::SharedClock = Arc::new(preloadd::clock::SystemClock);
    let vc = VendorConfig {
        name: "ali".into(),
        kind: VendorKind::AliyunCdn,
        endpoint,
        access_key_id: "demo-ak".into(),
        secret: Secret::new("demo-sk"),
        requests_per_second: 50, // more than the account really has: the vendor throttles
        status_requests_per_second: 50,
        max_urls_per_request: 100,
        daily_quota: Some(1_000),
        concurrency: 1,
        timeout: std::time::Duration::from_secs(5),
        max_retries: 20,
        options: VendorOptions::default(),
    };
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_dir(dir.path()).await.unwrap();
    let vendors = Vendors::from_config(&[vc], clock.clone()).unwrap();
    let engine = Engine::new(store.clone(), vendors, clock.clone(), test_settings(), CancellationToken::new());
    let new = NewJob {
        name: "ali".into(),
        task_type: TaskType::Preload,
        vendors: vec!["ali".into()],
        source: JobSource::Api,
        catch_up: CatchUp::Skip,
    };
    let text: String = urls(500).iter().map(|u| format!("{u}\n")).collect();
    let now = clock.now_ms();
    let (job, _) = preloadd::ingest::create_job(&store, &new, text.as_bytes(), now).await.unwrap();
    let spec = PlanSpec { start_time: now, end_time: now + 3_600_000, interval_ms: 60_000, slice_len: 500 };
    let plan = store.create_plans(job, &[spec], "api", now).await.unwrap()[0].id;
    engine.step().await.unwrap();
    let ledger = emu.ledger();
    assert_eq!(ledger.iter().flat_map(|r| r.urls.clone()).collect::<Vec<_>>(), urls(500), "every URL once, in order");
    let slice = &store.slices_of_plan(plan).await.unwrap()[0];
    let st = &store.subtasks_of_slice(slice.id).await.unwrap()[0];
    assert_eq!(st.status, SubmitStatus::Submitted);
    assert!(
        engine.vendors().get("ali").unwrap().stats.errors.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "it was throttled"
    );
}

#[tokio::test]
async fn a_vendor_that_keeps_failing_opens_its_circuit_and_a_probe_closes_it() {
    let w = world_with(VendorKind::AliyunCdn, "demo-sk", |_| {}, |vc| vc.max_retries = 20).await;
    w.emu.set_faults(Some(VendorKind::AliyunCdn), FaultSet { down: true, ..Default::default() });
    let (_, plan) = w.job(30, 10).await;
    w.at(T0).await;
    // Five failures in a row open the circuit: the subtask fails with the vendor's last code,
    // without using its other retries, and the slice is recorded so the job is not stuck.
    let slice = &w.store.slices_of_plan(plan).await.unwrap()[0];
    let st = &w.store.subtasks_of_slice(slice.id).await.unwrap()[0];
    assert_eq!((st.status, st.error_code.as_str()), (SubmitStatus::Failed, "ServiceUnavailable"), "{st:?}");
    assert!(st.error_message.starts_with("circuit open until"), "{}", st.error_message);
    assert_eq!(st.attempts, 1);
    // Its only vendor failed the slice: the plan failed, keeping the vendor's code.
    w.emu.clear_faults();
    let failed = w.store.plan(plan).await.unwrap();
    assert_eq!(failed.status, preloadd::model::PlanStatus::Failed);
    assert!(failed.error_info.contains("ServiceUnavailable"), "{}", failed.error_info);
    assert!(w.emu.ledger().is_empty());
    // After the cool-down, the next plan's first call is the probe: it succeeds and closes it.
    let spec = PlanSpec { start_time: T0 + 30_000, end_time: T0 + 3_600_000, interval_ms: 60_000, slice_len: 10 };
    w.store.create_plans(slice.job_id, &[spec], "api", T0 + 1).await.unwrap();
    w.at(T0 + 30_000).await;
    assert_eq!(w.emu.ledger().len(), 1, "the probe went out and was accepted");
    w.at(T0 + 90_000).await;
    assert_eq!(w.emu.ledger().len(), 2, "closed again: the next slice goes normally");
}

/// A vendor that answers every call at once: only the account's permits and limiters pace it.
struct Instant;

impl preloadd::vendor::VendorApi for Instant {
    fn capabilities(&self) -> preloadd::vendor::Capabilities {
        preloadd::vendor::Capabilities {
            preload: true,
            refresh_file: true,
            refresh_dir: true,
            task_status: true,
            quota: false,
            task_list: false,
        }
    }

    fn submit<'a>(
        &'a self,
        _req: preloadd::vendor::SubmitRequest<'a>,
    ) -> futures_util::future::BoxFuture<'a, Result<preloadd::vendor::Accepted, preloadd::vendor::VendorError>> {
        Box::pin(async { Ok(preloadd::vendor::Accepted::tasks(vec!["t".into()])) })
    }

    fn task_status<'a>(
        &'a self,
        _task_type: TaskType,
        _task_ids: &'a [String],
        _urls: &'a [String],
        _since_ms: i64,
    ) -> futures_util::future::BoxFuture<'a, Result<Vec<preloadd::vendor::UrlReport>, preloadd::vendor::VendorError>>
    {
        Box::pin(async { Ok(Vec::new()) })
    }
}

#[tokio::test]
async fn status_polls_queued_on_their_limiter_never_hold_every_permit_from_submissions() {
    // Four permits, status calls limited to one a second, twenty polls queued before a submit.
    let mut config = crate::common::webhook_vendor("v", "http://127.0.0.1:9/hook", 100);
    config.concurrency = 4;
    config.status_requests_per_second = 1;
    let account = Arc::new(preloadd::vendor::VendorAccount::new(config, Box::new(Instant)));
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut polls = Vec::new();
    for _ in 0..20 {
        let (account, done) = (account.clone(), done.clone());
        polls.push(tokio::spawn(async move {
            account.task_status(TaskType::Preload, &["t".into()], &[], 0).await.unwrap();
            done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }));
    }
    tokio::task::yield_now().await;
    let urls = vec!["https://a.example/1".to_string()];
    let req = preloadd::vendor::SubmitRequest {
        task_type: TaskType::Preload,
        urls: &urls,
        job: "j",
        plan_id: 1,
        slice_id: 1,
    };
    account.submit(req).await.unwrap();
    // Polls go one a second: had they held every permit, the submit would have waited for
    // about sixteen of them.
    let polled = done.load(std::sync::atomic::Ordering::SeqCst);
    assert!(polled <= 5, "the submit waited for {polled} status polls");
    for p in polls {
        p.abort();
    }
}
