//! The daemon loop takes slices ahead of their due time (`dispatch_lead`): on the real clock,
//! with the real loop, requests still never leave before their slice is due, and a plan stopped
//! or moved in the moment between the take and the due instant sends nothing early.

use std::sync::Arc;
use std::time::Duration;

use preloadd::clock::{Clock, SystemClock};
use preloadd::config::PlanSpec;
use preloadd::engine::{Engine, EngineSettings};
use preloadd::ingest;
use preloadd::model::{CatchUp, JobSource, PlanStatus, TaskType};
use preloadd::store::{NewJob, PlanChange, Store};
use preloadd::vendor::Vendors;
use tokio_util::sync::CancellationToken;

use crate::common::{test_settings, webhook_vendor, Receiver};

struct Loop {
    _dir: tempfile::TempDir,
    store: Store,
    engine: Arc<Engine>,
    recv: Receiver,
    cancel: CancellationToken,
    runner: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Loop {
    async fn start(lead: Duration) -> Loop {
        let recv = Receiver::start().await;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_dir(dir.path()).await.unwrap();
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let vendors = Vendors::from_config(&[webhook_vendor("hook", &recv.url(), 100)], clock.clone()).unwrap();
        let settings = EngineSettings { dispatch_lead: lead, ..test_settings() };
        let cancel = CancellationToken::new();
        let engine = Engine::new(store.clone(), vendors, clock, settings, cancel.clone());
        let runner = tokio::spawn(engine.clone().run(Duration::from_secs(5), || {}));
        Loop { _dir: dir, store, engine, recv, cancel, runner }
    }

    /// A job of `n` URLs with one plan: slices of `slice_len` every second from `start`.
    async fn job(&self, n: usize, start: i64, slice_len: i64) -> (i64, i64) {
        let new = NewJob {
            name: "ahead".into(),
            task_type: TaskType::Preload,
            vendors: vec!["hook".into()],
            source: JobSource::Api,
            catch_up: CatchUp::Skip,
        };
        let text: String = (0..n).map(|i| format!("https://cdn.example.com/ahead/{i}.js\n")).collect();
        let now = SystemClock.now_ms();
        let job = ingest::create_job(&self.store, &new, text.as_bytes(), now).await.unwrap().0;
        let spec = PlanSpec { start_time: start, end_time: start + 600_000, interval_ms: 1_000, slice_len };
        let plan = self.store.create_plans(job, &[spec], "api", now).await.unwrap()[0].id;
        self.engine.nudge(); // as the API does after a change
        (job, plan)
    }

    /// Waits (polling the database, 20 ms apart) until the plan has a slice recorded.
    async fn first_slice(&self, plan: i64) -> preloadd::store::Slice {
        let end = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.store.slices_of_plan(plan).await.unwrap().into_iter().next() {
                return s;
            }
            assert!(tokio::time::Instant::now() < end, "no slice was taken");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) {
        self.cancel.cancel();
        self.runner.await.unwrap().unwrap();
        self.store.close().await;
    }
}

#[tokio::test]
async fn slices_taken_ahead_leave_on_their_due_instant_never_before() {
    let l = Loop::start(Duration::from_millis(1_500)).await;
    let start = SystemClock.now_ms() + 2_000;
    let (_, plan) = l.job(6, start, 2).await;
    let hits = l.recv.wait_until("three slices", Duration::from_secs(60), |h| h.len() >= 3).await;
    let slices = l.store.slices_of_plan(plan).await.unwrap();
    assert_eq!(slices.iter().map(|s| s.due_at).collect::<Vec<_>>(), vec![start, start + 1_000, start + 2_000]);
    for hit in &hits {
        let slice = slices.iter().find(|s| s.id == hit.body["slice"].as_i64().unwrap()).expect("a known slice");
        assert!(
            hit.at_ms >= slice.due_at,
            "slice {} arrived {} ms before its due time",
            slice.k,
            slice.due_at - hit.at_ms
        );
    }
    // Lateness is measured at the send: every slice records the instant its request left.
    let end = tokio::time::Instant::now() + Duration::from_secs(30);
    let sent = loop {
        let sent: Vec<Option<i64>> = sqlx::query_scalar("SELECT sent_at FROM slices WHERE k < 3 ORDER BY k")
            .fetch_all(l.store.pool())
            .await
            .unwrap();
        if sent.iter().all(Option::is_some) || tokio::time::Instant::now() > end {
            break sent;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(sent.iter().zip(&slices).all(|(t, s)| t.is_some_and(|t| t >= s.due_at)), "{sent:?}");
    l.stop().await;
}

/// Whether a slice due at `due` was still well ahead at `now`. A machine too slow to take it
/// ahead leaves nothing to withdraw: the test says so and skips.
fn taken_well_ahead(now: i64, due: i64) -> bool {
    let ahead = due - now > 200;
    if !ahead {
        eprintln!("skipped: the slice was taken only {} ms ahead", due - now);
    }
    ahead
}

#[tokio::test]
async fn stopping_a_plan_withdraws_a_slice_taken_ahead_and_nothing_is_sent() {
    let l = Loop::start(Duration::from_secs(3)).await;
    let start = SystemClock.now_ms() + 4_000;
    let (job, plan) = l.job(4, start, 2).await;
    let slice = l.first_slice(plan).await;
    assert_eq!(slice.due_at, start);
    let stopped_at = SystemClock.now_ms();
    if !taken_well_ahead(stopped_at, start) {
        l.stop().await;
        return;
    }
    let p = l.store.stop_plan(plan, stopped_at).await.unwrap();
    l.engine.nudge();
    assert_eq!(p.status, PlanStatus::Stopped);
    assert_eq!((p.slices_sent, p.urls_sent), (0, 0), "the withdrawn slice is not counted");
    assert!(l.store.slices_of_plan(plan).await.unwrap().is_empty(), "the slice is withdrawn");
    assert_eq!(l.store.remaining_urls(job).await.unwrap(), 4, "the cursor went back");
    // Past the due instant, with margin: nothing arrived.
    tokio::time::sleep(Duration::from_millis((start + 1_500 - SystemClock.now_ms()).max(0) as u64)).await;
    assert!(l.recv.arrivals().is_empty(), "a stopped plan sent a slice taken ahead");
    // Started again, it sends the whole list from the beginning.
    l.store.start_plan(plan, SystemClock.now_ms()).await.unwrap();
    l.engine.nudge();
    let hits = l.recv.wait_until("the list", Duration::from_secs(60), |h| h.len() >= 2).await;
    assert_eq!(hits[0].urls[0], "https://cdn.example.com/ahead/0.js");
    l.stop().await;
}

#[tokio::test]
async fn moving_the_start_later_withdraws_a_slice_taken_ahead_and_it_goes_at_the_new_start() {
    let l = Loop::start(Duration::from_secs(3)).await;
    let start = SystemClock.now_ms() + 4_000;
    let (_, plan) = l.job(2, start, 2).await;
    l.first_slice(plan).await;
    let now = SystemClock.now_ms();
    if !taken_well_ahead(now, start) {
        l.stop().await;
        return;
    }
    let new_start = start + 2_000;
    let change = PlanChange { start_time: Some(new_start), ..Default::default() };
    l.store.update_plan(plan, &change, now).await.unwrap();
    l.engine.nudge();
    let hits = l.recv.wait_until("the slice", Duration::from_secs(60), |h| !h.is_empty()).await;
    assert!(hits[0].at_ms >= new_start, "sent {} ms before the new start", new_start - hits[0].at_ms);
    let slices = l.store.slices_of_plan(plan).await.unwrap();
    assert_eq!(slices.len(), 1);
    assert_eq!(slices[0].due_at, new_start);
    l.stop().await;
}
