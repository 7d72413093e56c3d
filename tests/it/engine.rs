//! DESIGN.md scheduling semantics, each at chosen instants through the injected clock.

use preloadd::model::{CatchUp, PlanStatus, SubmitStatus, UrlStatus};
use preloadd::store::{PlanChange, StoreError};

use crate::common::{url, Fixture, T0};

const S: i64 = 1000;
const MIN: i64 = 60 * S;

fn urls(job: &str, r: std::ops::Range<usize>) -> Vec<String> {
    r.map(|i| url(job, i)).collect()
}

#[tokio::test]
async fn slices_go_on_the_grid_in_order_and_never_before_start() {
    let f = Fixture::new(100).await;
    let job = f.job("grid", 10).await;
    let plan = f.plan(job, T0, T0 + 10 * MIN, 60, 3).await;
    f.at(T0 - S).await;
    assert_eq!(f.recv.hits().len(), 0, "nothing before start_time");
    assert_eq!(f.store.plan(plan).await.unwrap().status, PlanStatus::Waiting);
    f.at(T0).await;
    assert_eq!(f.recv.urls(), urls("grid", 0..3));
    f.at(T0 + 59 * S).await;
    assert_eq!(f.recv.hits().len(), 1, "slice 1 is not due before start + interval");
    f.at(T0 + 60 * S).await;
    f.at(T0 + 120 * S).await;
    f.at(T0 + 180 * S).await;
    let hits = f.recv.hits();
    assert_eq!(hits.iter().map(|h| h.urls.len()).collect::<Vec<_>>(), vec![3, 3, 3, 1]);
    assert_eq!(f.recv.urls(), urls("grid", 0..10));
    f.at(T0 + 180 * S).await;
    let p = f.store.plan(plan).await.unwrap();
    assert_eq!(p.status, PlanStatus::Finished, "all URLs submitted");
    assert_eq!((p.slices_sent, p.urls_sent), (4, 10));
    let slices = f.store.slices_of_plan(plan).await.unwrap();
    assert_eq!(slices.iter().map(|s| s.due_at).collect::<Vec<_>>(), vec![T0, T0 + MIN, T0 + 2 * MIN, T0 + 3 * MIN]);
    assert!(slices.iter().all(|s| s.status == SubmitStatus::Done));
    // The webhook's body carries the job, plan and slice.
    assert_eq!(hits[0].body["job"], "grid");
    assert_eq!(hits[0].body["plan"], plan);
    assert_eq!(hits[0].body["task_type"], "preload");
    assert_eq!(hits[0].auth.as_deref(), Some("Bearer hook-token"));
}

#[tokio::test]
async fn a_window_that_closes_leaves_urls_for_the_next_plan() {
    let f = Fixture::new(100).await;
    let job = f.job("window", 10).await;
    let p1 = f.plan(job, T0, T0 + 150 * S, 60, 2).await;
    let p2 = f.plan(job, T0 + 5 * MIN, T0 + 20 * MIN, 60, 2).await;
    for t in [T0, T0 + MIN, T0 + 2 * MIN, T0 + 150 * S, T0 + 3 * MIN] {
        f.at(t).await;
    }
    assert_eq!(f.recv.urls(), urls("window", 0..6), "nothing at or after end_time");
    assert_eq!(f.store.plan(p1).await.unwrap().status, PlanStatus::Finished);
    assert_eq!(f.store.job(job).await.unwrap().cursor, 6);
    f.at(T0 + 5 * MIN).await;
    assert_eq!(f.recv.urls(), urls("window", 0..8), "the next plan continues at the cursor");
    assert_eq!(f.store.plan(p2).await.unwrap().status, PlanStatus::Running);
}

#[tokio::test]
async fn updating_the_interval_mid_run_applies_to_the_next_slice() {
    let f = Fixture::new(100).await;
    let job = f.job("update", 20).await;
    let plan = f.plan(job, T0, T0 + 30 * MIN, 60, 1).await;
    f.at(T0).await;
    f.clock.set(T0 + 5 * S);
    let change = PlanChange { interval_ms: Some(10 * S), ..Default::default() };
    let p = f.store.update_plan(plan, &change, T0 + 5 * S).await.unwrap();
    assert_eq!(p.next_due, Some(T0 + 10 * S), "interval after the last slice sent");
    f.at(T0 + 9 * S).await;
    assert_eq!(f.recv.hits().len(), 1);
    f.at(T0 + 10 * S).await;
    f.at(T0 + 20 * S).await;
    assert_eq!(f.recv.hits().len(), 3);
    // A later start moves the next slice to the new start.
    let change = PlanChange { start_time: Some(T0 + 10 * MIN), ..Default::default() };
    let p = f.store.update_plan(plan, &change, T0 + 25 * S).await.unwrap();
    assert_eq!(p.status, PlanStatus::Waiting);
    f.at(T0 + 5 * MIN).await;
    assert_eq!(f.recv.hits().len(), 3);
    f.at(T0 + 10 * MIN).await;
    assert_eq!(f.recv.hits().len(), 4);
    // End before start is refused and changes nothing.
    let bad = PlanChange { end_time: Some(T0), ..Default::default() };
    assert!(matches!(f.store.update_plan(plan, &bad, T0 + 10 * MIN).await, Err(StoreError::EndBeforeStart)));
    assert_eq!(f.store.plan(plan).await.unwrap().end_time, T0 + 30 * MIN);
}

#[tokio::test]
async fn stop_then_start_resumes_without_catching_up() {
    let f = Fixture::new(100).await;
    let job = f.job("stop", 10).await;
    let plan = f.plan(job, T0, T0 + 30 * MIN, 60, 1).await;
    f.at(T0).await;
    f.store.stop_plan(plan, T0 + S).await.unwrap();
    f.at(T0 + MIN).await;
    f.at(T0 + 2 * MIN).await;
    assert_eq!(f.recv.hits().len(), 1, "a stopped plan sends nothing");
    assert_eq!(f.store.plan(plan).await.unwrap().status, PlanStatus::Stopped);
    let p = f.store.start_plan(plan, T0 + 200 * S).await.unwrap();
    assert_eq!((p.status, p.next_due), (PlanStatus::Running, Some(T0 + 200 * S)));
    f.at(T0 + 200 * S).await;
    f.at(T0 + 200 * S).await;
    assert_eq!(f.recv.hits().len(), 2, "one slice at once, not a burst");
    f.at(T0 + 260 * S).await;
    assert_eq!(f.recv.urls(), urls("stop", 0..3));
    assert!(matches!(f.store.start_plan(plan, T0 + 261 * S).await, Err(StoreError::Conflict(_))));
}

#[tokio::test]
async fn reset_sends_the_list_again() {
    let f = Fixture::new(100).await;
    let job = f.job("reset", 4).await;
    f.plan(job, T0, T0 + 10 * MIN, 60, 4).await;
    f.at(T0).await;
    f.at(T0 + MIN).await;
    assert_eq!(f.store.job(job).await.unwrap().cursor, 4);
    f.store.reset_job(job, T0 + MIN).await.unwrap();
    assert_eq!(f.store.job(job).await.unwrap().cursor, 0);
    f.plan(job, T0 + 20 * MIN, T0 + 30 * MIN, 60, 4).await;
    f.at(T0 + 20 * MIN).await;
    let mut want = urls("reset", 0..4);
    want.extend(urls("reset", 0..4));
    assert_eq!(f.recv.urls(), want);
}

#[tokio::test]
async fn after_downtime_the_first_missed_slice_goes_then_normal_pace() {
    let f = Fixture::new(100).await;
    let job = f.job("down", 20).await;
    f.plan(job, T0, T0 + 60 * MIN, 60, 1).await;
    f.at(T0).await;
    // "Down" for ten intervals: no step runs.
    f.at(T0 + 10 * MIN + 7 * S).await;
    f.at(T0 + 10 * MIN + 7 * S).await;
    assert_eq!(f.recv.hits().len(), 2, "one missed slice at once, no burst");
    f.at(T0 + 11 * MIN).await;
    assert_eq!(f.recv.hits().len(), 2);
    f.at(T0 + 11 * MIN + 7 * S).await;
    assert_eq!(f.recv.hits().len(), 3, "normal pace from the late slice");
}

#[tokio::test]
async fn catch_up_burst_drains_missed_slices() {
    let f = Fixture::new(100).await;
    let job = f.job_with("burst", 20, CatchUp::Burst).await;
    f.plan(job, T0, T0 + 60 * MIN, 60, 1).await;
    f.at(T0).await;
    for _ in 0..6 {
        f.at(T0 + 5 * MIN + S).await;
    }
    assert_eq!(f.recv.hits().len(), 6, "slices 1..5 were missed and are sent as fast as allowed");
    assert_eq!(f.recv.urls(), urls("burst", 0..6));
}

#[tokio::test]
async fn a_slice_larger_than_the_vendor_limit_is_split() {
    let f = Fixture::new(100).await;
    let job = f.job("split", 250).await;
    let plan = f.plan(job, T0, T0 + 10 * MIN, 60, 250).await;
    f.at(T0).await;
    let sizes: Vec<usize> = f.recv.hits().iter().map(|h| h.urls.len()).collect();
    assert_eq!(sizes, vec![100, 100, 50]);
    assert_eq!(f.recv.urls(), urls("split", 0..250));
    let slice = &f.store.slices_of_plan(plan).await.unwrap()[0];
    let st = &f.store.subtasks_of_slice(slice.id).await.unwrap()[0];
    assert_eq!(st.vendor_task_ids, vec!["t0", "t1", "t2"]);
    assert_eq!(st.urls_sent, 250);
}

#[tokio::test]
async fn overlapping_plans_are_refused_naming_the_other() {
    let f = Fixture::new(100).await;
    let job = f.job("overlap", 3).await;
    let p1 = f.plan(job, T0, T0 + 10 * MIN, 60, 1).await;
    let spec = preloadd::config::PlanSpec {
        start_time: T0 + 5 * MIN,
        end_time: T0 + 20 * MIN,
        interval_ms: 60_000,
        slice_len: 1,
    };
    match f.store.create_plans(job, &[spec], "api", T0).await {
        Err(StoreError::Conflict(m)) => assert!(m.contains(&format!("plan {p1}")), "{m}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(f.store.plans_of_job(job).await.unwrap().len(), 1, "nothing created");
    // Back to back is fine.
    let spec = preloadd::config::PlanSpec { start_time: T0 + 10 * MIN, ..spec };
    f.store.create_plans(job, &[spec], "api", T0).await.unwrap();
}

#[tokio::test]
async fn retryable_errors_back_off_and_honour_retry_after() {
    let f = Fixture::new(100).await;
    let job = f.job("retry", 2).await;
    let plan = f.plan(job, T0, T0 + 10 * MIN, 60, 2).await;
    f.recv.script(&[(503, None), (429, Some(1))]);
    f.at(T0).await;
    let arrivals = f.recv.arrivals();
    assert_eq!(arrivals.len(), 3);
    assert!(arrivals[2] - arrivals[1] >= 950, "Retry-After: 1 was honoured: {arrivals:?}");
    assert_eq!(f.recv.urls(), urls("retry", 0..2));
    let slice = &f.store.slices_of_plan(plan).await.unwrap()[0];
    let st = &f.store.subtasks_of_slice(slice.id).await.unwrap()[0];
    assert_eq!((st.status, st.attempts), (SubmitStatus::Done, 1));
}

#[tokio::test]
async fn a_non_retryable_error_fails_the_subtask_and_the_plan_keeping_the_code() {
    let f = Fixture::new(100).await;
    let job = f.job("fatal", 4).await;
    let plan = f.plan(job, T0, T0 + 10 * MIN, 60, 2).await;
    f.recv.script(&[(403, None)]);
    f.at(T0).await;
    let p = f.store.plan(plan).await.unwrap();
    assert_eq!(p.status, PlanStatus::Failed);
    assert!(p.error_info.contains("hook: HTTP403"), "{}", p.error_info);
    let slice = &f.store.slices_of_plan(plan).await.unwrap()[0];
    let st = &f.store.subtasks_of_slice(slice.id).await.unwrap()[0];
    assert_eq!((st.status, st.error_code.as_str()), (SubmitStatus::Failed, "HTTP403"));
    let outcomes = f.store.outcomes(st.id).await.unwrap();
    assert!(outcomes.iter().all(|o| o.status == UrlStatus::Failed && o.detail == "HTTP403"));
    assert_eq!(f.store.job(job).await.unwrap().cursor, 0, "the failed slice's URLs stay for the next plan");
    f.at(T0 + MIN).await;
    assert!(f.recv.hits().is_empty());
}

#[tokio::test]
async fn a_subtask_left_submitting_by_a_crash_is_resubmitted_once() {
    let f = Fixture::new(100).await;
    let job = f.job("crash", 4).await;
    let plan = f.plan(job, T0, T0 + 10 * MIN, 60, 2).await;
    f.clock.set(T0);
    let subtasks = f.engine.tick().await.unwrap();
    assert_eq!(subtasks.len(), 1);
    // The crash: marked submitting, the call may or may not have gone out, nothing recorded.
    f.store.mark_submitting(subtasks[0], T0).await.unwrap();
    assert_eq!(f.engine.step().await.ok(), Some(()));
    assert!(f.recv.hits().is_empty(), "a submitting subtask is not picked up before reconciliation");
    assert_eq!(f.engine.recover().await.unwrap(), 1);
    f.engine.step().await.unwrap();
    assert_eq!(f.recv.urls(), urls("crash", 0..2));
    let slice = &f.store.slices_of_plan(plan).await.unwrap()[0];
    assert_eq!(slice.status, SubmitStatus::Done);
}

#[tokio::test]
async fn bad_lines_are_rejected_with_their_numbers_and_duplicates_dropped() {
    let f = Fixture::new(100).await;
    let new = preloadd::store::NewJob {
        name: "lines".into(),
        task_type: preloadd::model::TaskType::Preload,
        vendors: vec!["hook".into()],
        source: preloadd::model::JobSource::Api,
        catch_up: CatchUp::Skip,
    };
    let text =
        "https://a.example/1\r\nftp://a.example/2\n# comment\n\nhttps://a.example/1\nhttps://a.example/3\nnot a url\n";
    let (id, report) = preloadd::ingest::create_job(&f.store, &new, text.as_bytes(), T0).await.unwrap();
    assert_eq!((report.valid, report.added, report.rejected.count), (3, 2, 2));
    let job = f.store.job(id).await.unwrap();
    assert_eq!(job.url_count, 2);
    assert!(job.rejected_report.contains("line 2: scheme `ftp`"), "{}", job.rejected_report);
    assert!(job.rejected_report.contains("line 7:"), "{}", job.rejected_report);
    let kept: Vec<String> = f.store.job_urls(id, 0, 10).await.unwrap().into_iter().map(|(_, u)| u).collect();
    assert_eq!(kept, vec!["https://a.example/1", "https://a.example/3"]);

    // No valid line at all: MissingUrlList, and no job is left behind.
    let new = preloadd::store::NewJob { name: "empty".into(), ..new };
    let err = preloadd::ingest::create_job(&f.store, &new, &b"junk\n\xff\n"[..], T0).await.unwrap_err();
    assert!(matches!(err, preloadd::ingest::IngestError::MissingUrlList(ref r) if r.count == 2), "{err}");
    assert!(f.store.job_by_name("empty").await.unwrap().is_none());
}

#[tokio::test]
async fn a_slice_over_the_daily_quota_waits_for_the_vendor_day_to_reset() {
    use preloadd::clock::Clock;
    let recv = crate::common::Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = preloadd::store::Store::open_dir(dir.path()).await.unwrap();
    let clock = preloadd::clock::ManualClock::new(T0);
    let mut vc = crate::common::webhook_vendor("hook", &recv.url(), 100);
    vc.daily_quota = Some(4);
    let vendors = preloadd::vendor::Vendors::from_config(&[vc], std::sync::Arc::new(clock.clone())).unwrap();
    let engine = preloadd::engine::Engine::new(
        store.clone(),
        vendors,
        std::sync::Arc::new(clock.clone()),
        crate::common::test_settings(),
        tokio_util::sync::CancellationToken::new(),
    );
    let new = preloadd::store::NewJob {
        name: "quota".into(),
        task_type: preloadd::model::TaskType::Preload,
        vendors: vec!["hook".into()],
        source: preloadd::model::JobSource::Api,
        catch_up: CatchUp::Skip,
    };
    let text: String = (0..6).map(|i| format!("{}\n", url("quota", i))).collect();
    let (job, _) = preloadd::ingest::create_job(&store, &new, text.as_bytes(), T0).await.unwrap();
    let spec =
        preloadd::config::PlanSpec { start_time: T0, end_time: T0 + 48 * 60 * MIN, interval_ms: MIN, slice_len: 2 };
    let plan = store.create_plans(job, &[spec], "api", T0).await.unwrap()[0].id;
    for t in [T0, T0 + MIN, T0 + 2 * MIN, T0 + 3 * MIN] {
        clock.set(t);
        engine.step().await.unwrap();
    }
    assert_eq!(recv.urls(), urls("quota", 0..4), "4 URLs is the whole day's quota");
    let slices = store.slices_of_plan(plan).await.unwrap();
    let waiting = &store.subtasks_of_slice(slices[2].id).await.unwrap()[0];
    assert_eq!(waiting.status, SubmitStatus::Pending, "late, never dropped");
    assert!(waiting.wait_reason.starts_with("quota"), "{}", waiting.wait_reason);
    let reset = preloadd::quota::next_vendor_day(clock.now_ms());
    assert_eq!(waiting.wait_until, Some(reset));
    assert_eq!(preloadd::clock::rfc3339(reset), "2026-11-30T16:00:00.000Z", "Asia/Shanghai midnight");
    clock.set(reset - 1);
    engine.step().await.unwrap();
    assert_eq!(recv.urls().len(), 4);
    clock.set(reset);
    engine.step().await.unwrap();
    assert_eq!(recv.urls(), urls("quota", 0..6), "sent once the vendor day turned");
}

fn schedule_spec(cron: &str, tz: &str, run_missed: bool) -> preloadd::config::ScheduleSpec {
    preloadd::config::ScheduleSpec {
        cron: cron.into(),
        timezone: tz.into(),
        window_ms: 60 * MIN,
        interval_ms: MIN,
        slice_len: 2,
        effective_from: None,
        effective_until: None,
        enabled: true,
        run_missed,
    }
}

async fn with_schedule(f: &Fixture, job: i64, spec: &preloadd::config::ScheduleSpec, now: i64) {
    let mut tx = f.store.write().await.unwrap();
    preloadd::store::upsert_schedule(&mut tx, job, spec, spec.next_fire(now), now).await.unwrap();
    tx.commit().await.unwrap();
}

/// 2026-11-30T02:00:00+08:00 is T0: a daily 02:00 Asia/Shanghai rule fires at T0, T0 + 1 day...
const DAY: i64 = 24 * 60 * MIN;

#[tokio::test]
async fn a_schedule_fires_a_fresh_plan_daily_and_the_whole_list_goes_again() {
    let f = Fixture::new(100).await;
    let job = f.job("nightly", 4).await;
    let spec = schedule_spec("0 0 2 * * *", "Asia/Shanghai", true);
    with_schedule(&f, job, &spec, T0 - MIN).await;
    assert_eq!(f.store.schedule_of_job(job).await.unwrap().unwrap().next_fire, Some(T0));
    f.at(T0 - 1).await;
    assert!(f.store.plans_of_job(job).await.unwrap().is_empty());
    f.at(T0).await;
    f.at(T0 + MIN).await;
    f.at(T0 + MIN).await;
    assert_eq!(f.recv.urls(), urls("nightly", 0..4));
    let plans = f.store.plans_of_job(job).await.unwrap();
    assert_eq!((plans.len(), plans[0].start_time, plans[0].end_time), (1, T0, T0 + 60 * MIN));
    assert_eq!(plans[0].status, PlanStatus::Finished);
    // The next night: a fresh plan, the cursor back at the start.
    f.at(T0 + DAY).await;
    f.at(T0 + DAY + MIN).await;
    let mut want = urls("nightly", 0..4);
    want.extend(urls("nightly", 0..4));
    assert_eq!(f.recv.urls(), want);
    let sched = f.store.schedule_of_job(job).await.unwrap().unwrap();
    assert_eq!(sched.next_fire, Some(T0 + 2 * DAY), "the next firing is durable");
    let firings = f.store.firings(sched.id).await.unwrap();
    assert_eq!(
        firings.iter().map(|x| (x.fire_at, x.outcome.as_str())).collect::<Vec<_>>(),
        vec![(T0, "planned"), (T0 + DAY, "planned")]
    );
}

#[tokio::test]
async fn firings_missed_while_down_run_once_if_their_window_is_open_never_once_each() {
    let f = Fixture::new(100).await;
    let job = f.job("missed", 4).await;
    with_schedule(&f, job, &schedule_spec("0 0 2 * * *", "Asia/Shanghai", true), T0 - MIN).await;
    // Down for three nights; back 30 minutes into the fourth night's window.
    f.at(T0 + 3 * DAY + 30 * MIN).await;
    let plans = f.store.plans_of_job(job).await.unwrap();
    assert_eq!(plans.len(), 1, "one plan for the latest firing, not one per missed night");
    assert_eq!(plans[0].start_time, T0 + 3 * DAY);
    assert_eq!(f.recv.urls(), urls("missed", 0..2), "it runs at once");
    // Back after the window closed: recorded as skipped, no plan.
    let job2 = f.job("missed2", 4).await;
    with_schedule(&f, job2, &schedule_spec("0 0 2 * * *", "Asia/Shanghai", true), T0 + 3 * DAY).await;
    f.at(T0 + 5 * DAY + 2 * 60 * MIN).await;
    assert!(f.store.plans_of_job(job2).await.unwrap().is_empty());
    let s2 = f.store.schedule_of_job(job2).await.unwrap().unwrap();
    let firings = f.store.firings(s2.id).await.unwrap();
    assert_eq!(firings.len(), 1);
    assert_eq!(firings[0].outcome, "skipped");
    assert!(firings[0].detail.contains("window has closed"), "{}", firings[0].detail);
    assert_eq!(s2.next_fire, Some(T0 + 6 * DAY));
}

#[tokio::test]
async fn missed_skip_policy_and_a_still_running_plan_are_recorded_as_skipped() {
    let f = Fixture::new(100).await;
    let job = f.job("skip", 4).await;
    with_schedule(&f, job, &schedule_spec("0 0 2 * * *", "Asia/Shanghai", false), T0 - MIN).await;
    f.at(T0 + 10 * MIN).await;
    assert!(f.store.plans_of_job(job).await.unwrap().is_empty(), "missed = skip");
    // A long-running API plan when the next firing comes: skipped, named.
    let p = f.plan(job, T0 + DAY - MIN, T0 + DAY + 120 * MIN, 3600, 1).await;
    f.at(T0 + DAY).await;
    let s = f.store.schedule_of_job(job).await.unwrap().unwrap();
    let firings = f.store.firings(s.id).await.unwrap();
    assert_eq!(firings.len(), 2);
    assert_eq!(firings[1].outcome, "skipped");
    assert!(firings[1].detail.contains(&format!("plan {p}")), "{}", firings[1].detail);
}

#[tokio::test]
async fn a_new_york_schedule_fires_once_on_the_spring_forward_night() {
    let f = Fixture::new(100).await;
    let job = f.job("dst", 2).await;
    // 02:30 does not exist on 2026-03-08 in New York: it fires once, at 03:00 EDT (07:00Z).
    let start = preloadd::config::parse_time("2026-03-07T12:00:00-05:00").unwrap();
    let mut spec = schedule_spec("0 30 2 * * *", "America/New_York", true);
    spec.window_ms = 10 * MIN;
    with_schedule(&f, job, &spec, start).await;
    let s = f.store.schedule_of_job(job).await.unwrap().unwrap();
    assert_eq!(s.next_fire.map(preloadd::clock::rfc3339).as_deref(), Some("2026-03-08T07:00:00.000Z"));
    f.at(s.next_fire.unwrap()).await;
    let after = f.store.schedule_of_job(job).await.unwrap().unwrap().next_fire.unwrap();
    assert_eq!(preloadd::clock::rfc3339(after), "2026-03-09T06:30:00.000Z", "then 02:30 EDT the next day");
    assert_eq!(f.store.plans_of_job(job).await.unwrap().len(), 1);
}
