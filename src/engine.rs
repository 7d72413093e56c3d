//! The engine: turns plans into slices on time and drives each subtask through the durable
//! state machine `pending → submitting → submitted → done | failed`.
//!
//! The work is split into step functions that tests call directly — [`Engine::tick`] (plans and
//! due slices), [`Engine::run_subtask`] (vendor submission with retries) and
//! [`Engine::poll_subtask`] (status tracking) — and one loop, [`Engine::run`], that calls them
//! when something is due and sleeps otherwise (no busy polling).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rand::Rng;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::clock::SharedClock;
use crate::failpoint::failpoint;
use crate::model::{SubmitStatus, UrlStatus};
use crate::store::{Reservation, Store, StoreError, SubtaskWork};
use crate::vendor::{Accepted, ErrorClass, SubmitRequest, VendorAccount, VendorError, Vendors};

/// Slices taken in one transaction (see [`Engine::tick_until`]). Taking touches each slice's
/// plan and job rows, scattered over the tables' pages: one commit for many slices writes each
/// page once (ten thousand plans due in one second: p99 lateness 50 ms with 512, 340–520 ms
/// with 64).
const TAKE_BATCH: usize = 512;

/// How long the loop gathers nudges before a turn (see [`Engine::run`]).
const NUDGE_GATHER: Duration = Duration::from_millis(10);

/// A turn of the loop takes what falls due this much past the lead as well (see
/// [`Engine::dispatch`]), so that under load one turn serves many plans, and a burst (ten
/// thousand plans starting in the same second) is taken before its first request is due instead
/// of competing with its sends (100 ms: p99 21–50 ms, now and then 500 ms; 500 ms: p99 3.4–3.9 ms).
const TAKE_WINDOW_MS: i64 = 500;

/// How far before a request's recorded start the vendor's task list is searched for it.
const RECONCILE_MARGIN_MS: i64 = 5_000;

/// Tunables of the engine; the defaults suit production, tests shorten them.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// First retry delay; doubles per attempt, with full jitter, up to `retry_cap`.
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// First status poll after submission, doubling up to `poll_max`.
    pub poll_first_ms: i64,
    pub poll_max_ms: i64,
    /// Vendors forget tasks after a while (Alibaba 3 days): stop polling then, outcome unknown.
    pub poll_give_up_ms: i64,
    /// The longest the loop sleeps with nothing due: it calls `on_loop` at least this often
    /// (the systemd watchdog is fed from there).
    pub max_idle: Duration,
    /// How far ahead of its due time the daemon loop takes a slice and commits its state
    /// (`submitting`, quota), so that the request itself leaves on the due instant instead of
    /// after a round of fsyncs. Requests never leave before their due time.
    pub dispatch_lead: Duration,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            retry_base: Duration::from_millis(500),
            retry_cap: Duration::from_secs(60),
            poll_first_ms: 5_000,
            poll_max_ms: 60_000,
            poll_give_up_ms: 3 * 24 * 3600 * 1000,
            max_idle: Duration::from_secs(30),
            dispatch_lead: Duration::from_secs(1),
        }
    }
}

pub struct Engine {
    store: Store,
    vendors: RwLock<Arc<Vendors>>,
    clock: SharedClock,
    settings: EngineSettings,
    /// Subtasks a worker currently owns, so a tick never starts a second worker for one.
    busy: Mutex<HashSet<i64>>,
    /// A subtask worker failed on the database (a full disk, say): its subtask may be left
    /// `submitting`, to be reconciled as at a start once writes succeed again.
    reconcile: AtomicBool,
    wake: Notify,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

/// Removes a subtask from the busy set when its worker ends, however it ends.
struct BusyGuard<'a>(&'a Engine, i64);

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.0.busy.lock().expect("busy lock").remove(&self.1);
        self.0.wake.notify_one();
    }
}

impl Engine {
    pub fn new(
        store: Store,
        vendors: Vendors,
        clock: SharedClock,
        settings: EngineSettings,
        cancel: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Engine {
            store,
            vendors: RwLock::new(Arc::new(vendors)),
            clock,
            settings,
            busy: Mutex::new(HashSet::new()),
            reconcile: AtomicBool::new(false),
            wake: Notify::new(),
            cancel,
            tracker: TaskTracker::new(),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    pub fn vendors(&self) -> Arc<Vendors> {
        self.vendors.read().expect("vendors lock").clone()
    }

    /// Swaps in a new set of vendor accounts (config reload); in-flight calls keep the old ones.
    pub fn set_vendors(&self, vendors: Vendors) {
        *self.vendors.write().expect("vendors lock") = Arc::new(vendors);
        self.wake.notify_one();
    }

    /// Asks the loop to look for work now (after an API change, for instance).
    pub fn nudge(&self) {
        self.wake.notify_one();
    }

    /// Startup reconciliation (DESIGN.md semantics 8): a subtask left `submitting` by a crash is
    /// looked up in the vendor's task list for the URLs of its in-flight request; found, it is
    /// recorded as accepted; not found (or the vendor has no task list), it goes back to pending
    /// and is sent again. [`Engine::run`] also runs it after a subtask worker failed on the
    /// database (a full disk, a lock held too long), skipping subtasks a worker owns.
    pub async fn recover(&self) -> Result<usize, StoreError> {
        self.recover_with(&|| {}).await
    }

    /// [`Engine::recover`], calling `progress` before each subtask: each may wait for a vendor
    /// timeout, and the watchdog must not take a slow reconciliation for a stuck engine.
    async fn recover_with(&self, progress: &(dyn Fn() + Send + Sync)) -> Result<usize, StoreError> {
        let ids = self.store.submitting_subtasks().await?;
        let mut n = 0;
        for id in ids {
            // One a worker owns is in flight, not left behind (none is at a start).
            let Some(_guard) = self.claim(id) else { continue };
            n += 1;
            progress();
            let work = self.store.subtask_work(id).await?;
            let Some(account) = self.vendors().get(&work.subtask.vendor).cloned() else {
                self.store.defer_subtask(id, None, "", self.now()).await?;
                continue;
            };
            let chunk = next_chunk(&work, account.config.max_urls_per_request as usize);
            // The request left after `submitting_at`; a few seconds of margin cover clock
            // differences without widening the task-list scan to unrelated tasks.
            let since = work.subtask.submitting_at.unwrap_or(work.slice.created_at) - RECONCILE_MARGIN_MS;
            match account.find_submitted(work.task_type, &chunk, since).await {
                Ok(Some(task_ids)) => {
                    info!(subtask = id, vendor = %account.name(), "reconciled: the vendor has the in-flight request");
                    let sent_at = work.subtask.submitting_at.unwrap_or(work.slice.due_at);
                    let complete =
                        self.accept(&account, &work, chunk.len(), &Accepted::tasks(task_ids), sent_at).await?;
                    if !complete {
                        // More requests of the slice to send: `record_accepted` left it
                        // `submitting`, which no worker picks up; pending, a worker sends the rest.
                        self.store.defer_subtask(id, None, "", self.now()).await?;
                    }
                }
                Ok(None) => {
                    info!(subtask = id, vendor = %account.name(), "reconciled: not found at the vendor, will resubmit");
                    self.store.defer_subtask(id, None, "", self.now()).await?;
                }
                Err(e) => {
                    warn!(subtask = id, vendor = %account.name(), error = %e, "reconciliation query failed, will resubmit");
                    self.store.defer_subtask(id, None, "", self.now()).await?;
                }
            }
        }
        Ok(n)
    }

    /// Advances plan statuses and takes every due slice. Returns the new slices' subtask ids.
    pub async fn tick(&self) -> Result<Vec<i64>, StoreError> {
        let now = self.now();
        self.tick_until(now, now, &HashSet::new(), |_| {}).await
    }

    /// [`Engine::tick`], also taking the slices due up to `horizon` ahead of time.
    /// Slices are taken `TAKE_BATCH` to a transaction, earliest due first, and `on_taken` hears
    /// of each batch's subtasks at once: when thousands of plans are due together, the first
    /// workers start after one commit, not after all of them. Subtasks of the accounts in
    /// `send_at_once` are taken `submitting` already (see [`Store::take_slices_marking`]).
    async fn tick_until(
        &self,
        now: i64,
        horizon: i64,
        send_at_once: &HashSet<String>,
        mut on_taken: impl FnMut(Vec<SubtaskWork>),
    ) -> Result<Vec<i64>, StoreError> {
        self.fire_schedules(now).await?;
        for (plan, status) in self.store.advance_plans_until(now, horizon).await? {
            info!(plan, status = %status, "plan status changed");
        }
        let mut started = Vec::new();
        let due = self.store.due_plans(horizon).await?;
        for batch in due.chunks(TAKE_BATCH) {
            let mut taken = Vec::new();
            for s in self.store.take_slices_marking(batch, now, horizon, send_at_once).await? {
                info!(
                    plan = s.slice.plan_id,
                    slice = s.slice.id,
                    k = s.slice.k,
                    urls = s.slice.url_count,
                    due_in_ms = s.slice.due_at - now,
                    "slice taken"
                );
                started.extend(s.subtask_ids);
                taken.extend(s.work);
            }
            on_taken(taken);
        }
        Ok(started)
    }

    /// Fires every due schedule once. Firings missed while the daemon was down collapse into
    /// the latest one: under `missed = "run_once"` it runs if its window is still open, else it
    /// is recorded as skipped — never one plan per missed firing.
    pub async fn fire_schedules(&self, now: i64) -> Result<(), StoreError> {
        /// A firing this late is on time (the loop wakes a little after the instant).
        const ON_TIME_MS: i64 = 60_000;
        for s in self.store.due_schedules(now).await? {
            let Some(expected) = s.next_fire else { continue };
            let mut latest = expected;
            for _ in 0..100_000 {
                match s.spec.next_fire(latest) {
                    Some(n) if n <= now => latest = n,
                    _ => break,
                }
            }
            let next = s.spec.next_fire(now);
            let reason = if now - latest <= ON_TIME_MS {
                None
            } else if !s.spec.run_missed {
                Some("missed while the daemon was down (missed = \"skip\")".to_string())
            } else if now >= latest + s.spec.window_ms {
                Some("missed while the daemon was down; its window has closed".to_string())
            } else {
                None
            };
            let outcome = self.store.fire_schedule(s.id, expected, Some(latest), reason, next, now).await?;
            info!(
                job = s.job_id,
                fire_at = %crate::clock::rfc3339(latest),
                next = %next.map(crate::clock::rfc3339).unwrap_or_else(|| "none".into()),
                outcome = ?outcome,
                "schedule fired"
            );
        }
        Ok(())
    }

    /// One pass of everything due now, done inline: plan changes, due slices, their vendor
    /// submissions and due status polls. Tests call this instead of running the loop.
    pub async fn step(&self) -> Result<(), StoreError> {
        self.tick().await?;
        let now = self.now();
        let runnable = self.store.runnable_subtasks(now).await?;
        let polls = self.store.pollable_subtasks(now).await?;
        let subs = runnable.into_iter().map(|id| self.run_subtask(id));
        futures_util::future::try_join_all(subs).await?;
        let polls = polls.into_iter().map(|id| self.poll_subtask(id));
        futures_util::future::try_join_all(polls).await?;
        Ok(())
    }

    fn claim(&self, id: i64) -> Option<BusyGuard<'_>> {
        if self.busy.lock().expect("busy lock").insert(id) {
            Some(BusyGuard(self, id))
        } else {
            None
        }
    }

    /// Records one accepted request of `n` URLs (the subtask's next `n`), with the outcomes the
    /// vendor reported in its answer, in one transaction.
    async fn accept(
        &self,
        account: &VendorAccount,
        work: &SubtaskWork,
        n: usize,
        accepted: &Accepted,
        sent_at: i64,
    ) -> Result<bool, StoreError> {
        let now = self.now();
        let caps = account.api.capabilities();
        let first_poll = caps.task_status.then_some(now + self.settings.poll_first_ms);
        // A webhook's 2xx is its success by definition; a cloud vendor without a status API
        // leaves the outcome unknown, never "done".
        let outcome =
            if account.config.kind == crate::model::VendorKind::Webhook { UrlStatus::Done } else { UrlStatus::Unknown };
        let sent = work.subtask.urls_sent.max(0) as usize;
        let known: Vec<(i64, UrlStatus, String)> = work
            .urls
            .iter()
            .skip(sent)
            .take(n)
            .filter_map(|(seq, url)| {
                accepted.outcomes.iter().find(|r| &r.url == url).map(|r| (*seq, r.status, r.detail.clone()))
            })
            .collect();
        self.store
            .record_accepted(work.subtask.id, n as i64, &accepted.task_ids, &known, sent_at, now, first_poll, outcome)
            .await
    }

    /// Submits what remains of one subtask, one vendor request per `max_urls_per_request` URLs,
    /// each recorded `submitting` before and accepted after (semantics 6 and 8). Retryable
    /// errors back off with full jitter, honouring `Retry-After`; a non-retryable one fails the
    /// subtask with the vendor's code and message.
    pub async fn run_subtask(&self, id: i64) -> Result<(), StoreError> {
        let Some(_guard) = self.claim(id) else { return Ok(()) };
        let withdrawals = self.store.withdrawals();
        let work = self.store.subtask_work(id).await?;
        if work.subtask.status != SubmitStatus::Pending {
            return Ok(());
        }
        self.submit_all(work, withdrawals).await
    }

    /// Submits a subtask as the take recorded it, `submitting` already when its account has no
    /// quota to reserve (the caller owns it in `busy`). `withdrawals` is
    /// [`Store::withdrawals`] from before the take.
    async fn submit_all(&self, work: SubtaskWork, withdrawals: u64) -> Result<(), StoreError> {
        let span = info_span!("slice", job = %work.job_name, plan = work.slice.plan_id, slice = work.slice.id, k = work.slice.k, vendor = %work.subtask.vendor);
        self.submit_requests(work, withdrawals).instrument(span).await
    }

    async fn submit_requests(&self, mut work: SubtaskWork, withdrawals: u64) -> Result<(), StoreError> {
        let id = work.subtask.id;
        // Taken `submitting` (see `Store::take_slices_marking`): the first request needs no
        // write before it leaves.
        let mut marked = work.subtask.status == SubmitStatus::Submitting;
        let Some(account) = self.vendors().get(&work.subtask.vendor).cloned() else {
            let msg = format!("vendor account `{}` is not configured", work.subtask.vendor);
            warn!("{msg}");
            return self.store.fail_subtask(id, "UnknownVendor", &msg, self.now()).await;
        };
        let per_request = account.config.max_urls_per_request as usize;
        loop {
            let chunk = next_chunk(&work, per_request);
            if chunk.is_empty() {
                return Ok(());
            }
            if self.cancel.is_cancelled() {
                return self.store.defer_subtask(id, None, "", self.now()).await;
            }
            let quota = match self.reserve_quota(&account, &work, chunk.len() as i64).await? {
                Ok(q) => q,
                Err(until) => {
                    let reason =
                        format!("quota: daily quota left is below {} URLs; waiting for the reset", chunk.len());
                    warn!(until = %crate::clock::rfc3339(until), "{reason}");
                    return self.store.defer_subtask(id, Some(until), &reason, self.now()).await;
                }
            };
            if !std::mem::take(&mut marked) {
                self.store.mark_submitting(id, self.now()).await?;
            }
            // A slice taken ahead of time has its state committed; the request waits for the
            // due instant.
            let early_us = work.slice.due_at * 1000 - self.clock.now_us();
            if early_us > 0 {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_micros(early_us as u64)) => {}
                    _ = self.cancel.cancelled() => {
                        self.refund(&account, &quota, chunk.len()).await?;
                        return self.store.defer_subtask(id, None, "", self.now()).await;
                    }
                }
                // The plan may have been changed or stopped meanwhile, which withdraws the slice
                // (and counts a withdrawal: without one, there is nothing to look up).
                if self.store.withdrawals() != withdrawals && !self.store.subtask_still_of(id, &work.slice).await? {
                    self.refund(&account, &quota, chunk.len()).await?;
                    info!("slice withdrawn by a plan change before its due time; not sent");
                    return Ok(());
                }
            }
            failpoint!("engine::after_submitting");
            let mut attempt: u32 = 0;
            let mut first_sent: Option<i64> = None;
            let accepted = loop {
                let sent_at = self.now();
                let req = SubmitRequest {
                    task_type: work.task_type,
                    urls: &chunk,
                    job: &work.job_name,
                    plan_id: work.slice.plan_id,
                    slice_id: work.slice.id,
                };
                if let Some(until) = account.breaker.open_until(self.now()) {
                    // The vendor keeps failing: this subtask fails at once with the vendor's
                    // last error, without a call, so the other vendors' slices go on (the cursor
                    // moves when every vendor has the slice recorded). `retry-failed` replays it.
                    self.refund(&account, &quota, chunk.len()).await?;
                    let (code, message) = account.breaker.last_error();
                    let message = format!(
                        "circuit open until {} after repeated failures; last error: {message}",
                        crate::clock::rfc3339(until)
                    );
                    warn!(code = %code, "{message}");
                    return self.store.fail_subtask(id, &code, &message, self.now()).await;
                }
                first_sent.get_or_insert(sent_at);
                let e = match account.submit(req).await {
                    Ok(a) => {
                        account.breaker.record(None, self.now());
                        break a;
                    }
                    Err(e) => e,
                };
                if e.class == ErrorClass::Retryable && !e.is_throttling() {
                    if let Some(until) = account.breaker.record(Some(&e), self.now()) {
                        warn!(code = %e.code, until = %crate::clock::rfc3339(until), "circuit opened for this vendor");
                    }
                }
                match e.class {
                    ErrorClass::Retryable if attempt < account.config.max_retries => {
                        attempt += 1;
                        account.stats.retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let delay = self.backoff(attempt, &e);
                        warn!(code = %e.code, attempt, delay_ms = delay.as_millis() as u64, "vendor call failed, retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = self.cancel.cancelled() => {
                                return self.store.defer_subtask(id, None, "", self.now()).await;
                            }
                        }
                        // The request may have reached the vendor before the error (a dropped
                        // connection, a timeout): ask before sending it again.
                        if is_ambiguous(&e) {
                            let since = sent_at - RECONCILE_MARGIN_MS;
                            if let Ok(Some(ids)) = account.find_submitted(work.task_type, &chunk, since).await {
                                info!("the vendor has the request that failed in transit; not resending");
                                break Accepted::tasks(ids);
                            }
                        }
                    }
                    ErrorClass::Quota => {
                        if let Some((bucket, day)) = &quota {
                            self.store.exhaust_quota(account.name(), bucket, day).await?;
                        }
                        let until = crate::quota::next_vendor_day(self.now());
                        warn!(code = %e.code, until = %crate::clock::rfc3339(until), "daily quota spent; waiting for the reset");
                        return self
                            .store
                            .defer_subtask(id, Some(until), &format!("quota: {}", e.code), self.now())
                            .await;
                    }
                    _ => {
                        self.refund(&account, &quota, chunk.len()).await?;
                        warn!(code = %e.code, message = %e.message, "vendor call failed for good");
                        return self.store.fail_subtask(id, &e.code, &e.message, self.now()).await;
                    }
                }
            };
            let sent_at = first_sent.unwrap_or_else(|| self.now());
            failpoint!("engine::before_accept");
            let complete = self.accept(&account, &work, chunk.len(), &accepted, sent_at).await?;
            info!(
                urls = chunk.len(),
                late_ms = sent_at - work.slice.due_at,
                tasks = accepted.task_ids.len(),
                outcomes = accepted.outcomes.len(),
                complete,
                "vendor accepted"
            );
            if complete {
                return Ok(());
            }
            work.subtask.urls_sent += chunk.len() as i64;
        }
    }

    /// Gives back a reservation of `n` URLs a request did not use.
    async fn refund(
        &self,
        account: &VendorAccount,
        quota: &Option<(String, String)>,
        n: usize,
    ) -> Result<(), StoreError> {
        match quota {
            Some((bucket, day)) => self.store.refund_quota(account.name(), bucket, day, n as i64).await,
            None => Ok(()),
        }
    }

    /// Takes `n` URLs from the account's daily quota before a request. The first use of a
    /// vendor day learns what is left from the vendor's quota API (or the configured
    /// `daily_quota` when the vendor has none). `Err(until)` when the quota would be exceeded.
    async fn reserve_quota(
        &self,
        account: &VendorAccount,
        work: &SubtaskWork,
        n: i64,
    ) -> Result<Result<Option<(String, String)>, i64>, StoreError> {
        let Some(limit) = account.config.daily_quota else { return Ok(Ok(None)) };
        let now = self.now();
        let day = crate::quota::vendor_day(now);
        let bucket = quota_bucket(account, work);
        loop {
            match self.store.reserve_quota(account.name(), &bucket, &day, n).await? {
                Reservation::Granted { remaining } => {
                    debug!(bucket = %bucket, remaining, "quota reserved");
                    return Ok(Ok(Some((bucket, day))));
                }
                Reservation::Exhausted { .. } => return Ok(Err(crate::quota::next_vendor_day(now))),
                Reservation::Unknown => {
                    let (quota, remaining) = match account.quota(work.task_type).await {
                        Ok(Some(q)) => (q.limit as i64, q.remaining as i64),
                        Ok(None) => (limit as i64, limit as i64),
                        Err(e) => {
                            warn!(code = %e.code, "quota query failed; assuming the configured daily_quota");
                            (limit as i64, limit as i64)
                        }
                    };
                    info!(bucket = %bucket, quota, remaining, "daily quota learned");
                    self.store.open_quota_day(account.name(), &bucket, &day, quota, remaining).await?;
                }
            }
        }
    }

    fn backoff(&self, attempt: u32, e: &VendorError) -> Duration {
        let exp = self.settings.retry_base.saturating_mul(1u32 << attempt.min(16)).min(self.settings.retry_cap);
        let jittered = exp.mul_f64(rand::thread_rng().gen_range(0.5..=1.0));
        match e.retry_after {
            Some(after) => jittered.max(after),
            None => jittered,
        }
    }

    /// Asks the vendor how the subtask's URLs are doing and records each URL's outcome.
    pub async fn poll_subtask(&self, id: i64) -> Result<(), StoreError> {
        let Some(_guard) = self.claim(id) else { return Ok(()) };
        let work = self.store.subtask_work(id).await?;
        if work.subtask.status != SubmitStatus::Submitted {
            return Ok(());
        }
        let now = self.now();
        let submitted = work.subtask.submitted_at.unwrap_or(now);
        let age = now - submitted;
        let next = now + (self.settings.poll_first_ms.max(age / 2)).min(self.settings.poll_max_ms);
        let Some(account) = self.vendors().get(&work.subtask.vendor).cloned() else {
            self.store.record_poll(id, &[], next, now).await?;
            return Ok(());
        };
        let pending = self.store.outcomes(id).await?;
        if age > self.settings.poll_give_up_ms {
            let gone: Vec<_> = pending
                .iter()
                .filter(|o| o.status == UrlStatus::Pending)
                .map(|o| (o.seq, UrlStatus::Unknown, "the vendor no longer reports this task".to_string()))
                .collect();
            self.store.record_poll(id, &gone, next, now).await?;
            return Ok(());
        }
        let urls: Vec<String> = work.urls.iter().map(|(_, u)| u.clone()).collect();
        let span = info_span!("poll", job = %work.job_name, slice = work.slice.id, vendor = %work.subtask.vendor);
        let reports = account
            .task_status(work.task_type, &work.subtask.vendor_task_ids, &urls, submitted - 60_000)
            .instrument(span)
            .await;
        failpoint!("engine::poll::before_record");
        let now = self.now();
        match reports {
            Ok(reports) => {
                let mut updates = Vec::new();
                for o in pending.iter().filter(|o| o.status == UrlStatus::Pending) {
                    if let Some(r) = reports.iter().find(|r| r.url == o.url && r.status != UrlStatus::Pending) {
                        updates.push((o.seq, r.status, r.detail.clone()));
                    }
                }
                let done = self.store.record_poll(id, &updates, next, now).await?;
                debug!(subtask = id, updated = updates.len(), done, "polled");
            }
            Err(e) => {
                warn!(subtask = id, code = %e.code, "status poll failed; will poll again");
                self.store.record_poll(id, &[], next, now).await?;
            }
        }
        Ok(())
    }

    /// The daemon loop: reconcile, then repeatedly take due work and hand it to workers, until
    /// cancelled; then wait for in-flight workers up to `grace`.
    pub async fn run(
        self: Arc<Self>,
        grace: Duration,
        on_loop: impl Fn() + Send + Sync + 'static,
    ) -> anyhow::Result<()> {
        self.recover_with(&on_loop).await?;
        loop {
            on_loop();
            if self.cancel.is_cancelled() {
                break;
            }
            if self.reconcile.swap(false, Ordering::Relaxed) {
                match self.recover_with(&on_loop).await {
                    Ok(0) => {}
                    Ok(n) => info!(subtasks = n, "reconciled subtasks a failed database write left submitting"),
                    Err(e) => {
                        self.reconcile.store(true, Ordering::Relaxed);
                        warn!(error = %e, "reconciling subtasks left submitting failed; retrying shortly");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                            _ = self.cancel.cancelled() => break,
                        }
                        continue;
                    }
                }
            }
            if let Err(e) = self.dispatch().await {
                warn!(error = %e, "engine step failed; retrying shortly");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = self.cancel.cancelled() => break,
                }
                continue;
            }
            let now = self.now();
            let lead = self.settings.dispatch_lead.as_millis() as i64;
            let wake_at = self.store.next_wake().await.ok().flatten();
            // Wake `lead` before a slice is due, to take it ahead. What is due within the lead
            // but was not taken (a poll, a paused subtask) is waited for exactly. Work that is
            // due but owned by a worker must not spin the loop: wait for the worker's nudge, or
            // re-check shortly.
            let wait = match wake_at {
                Some(t) if t - lead > now => Duration::from_millis((t - lead - now) as u64),
                Some(t) if t > now => Duration::from_millis((t - now) as u64),
                Some(_) => Duration::from_millis(50),
                None => Duration::from_secs(30),
            }
            .min(self.settings.max_idle);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake.notified() => {
                    // Nudges come in bursts (every worker ends with one): gather them into one
                    // turn, never past the next due instant (slices are taken `lead` ahead).
                    tokio::select! {
                        _ = tokio::time::sleep(NUDGE_GATHER.min(wait)) => {}
                        _ = self.cancel.cancelled() => break,
                    }
                }
                _ = self.cancel.cancelled() => break,
            }
        }
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait()).await.is_err() {
            warn!("in-flight vendor calls did not finish within {grace:?}; they will be reconciled at the next start");
        }
        Ok(())
    }

    async fn dispatch(self: &Arc<Self>) -> Result<(), StoreError> {
        let now = self.now();
        // The loop wakes `dispatch_lead` before the next due instant; what falls due in the
        // following `TAKE_WINDOW_MS` is taken in the same turn, a little further ahead, rather
        // than in a turn (and a commit) of its own a moment later.
        let lead = self.settings.dispatch_lead.as_millis() as i64;
        let horizon = now + if lead > 0 { lead + TAKE_WINDOW_MS } else { 0 };
        // Accounts with no daily quota to reserve: their subtasks are taken `submitting`.
        let send_at_once: HashSet<String> =
            self.vendors().iter().filter(|a| a.config.daily_quota.is_none()).map(|a| a.name().to_string()).collect();
        let withdrawals = self.store.withdrawals();
        let mut unclaimed = Vec::new();
        self.tick_until(now, horizon, &send_at_once, |taken| {
            for work in taken {
                if work.subtask.status != SubmitStatus::Submitting {
                    self.start_worker(work.subtask.id);
                } else if let Err(id) = self.start_taken(work, withdrawals) {
                    unclaimed.push(id);
                }
            }
        })
        .await?;
        // SQLite gave a withdrawn slice's subtask id to a new one while the withdrawn slice's
        // worker still sleeps under it: the new subtask, never sent, goes back to pending and
        // the usual path starts it once that worker has gone.
        for id in unclaimed {
            if let Err(e) = self.store.defer_subtask(id, None, "", self.now()).await {
                // Left `submitting` with no worker: reconciled once writes succeed again.
                self.reconcile.store(true, Ordering::Relaxed);
                return Err(e);
            }
        }
        let now = self.now();
        for id in self.store.runnable_subtasks(now).await? {
            self.start_worker(id);
        }
        for id in self.store.pollable_subtasks(now).await? {
            if self.is_busy(id) {
                continue;
            }
            let me = self.clone();
            self.tracker.spawn(async move {
                if let Err(e) = me.poll_subtask(id).await {
                    warn!(subtask = id, error = %e, "poll worker failed");
                }
            });
        }
        Ok(())
    }

    /// Spawns a submission worker for the subtask unless one already owns it.
    fn start_worker(self: &Arc<Self>, id: i64) {
        if self.is_busy(id) {
            return;
        }
        let me = self.clone();
        self.tracker.spawn(async move {
            if let Err(e) = me.run_subtask(id).await {
                me.worker_failed(id, &e);
            }
        });
    }

    /// Spawns the worker of a subtask the take recorded `submitting`: it owns the subtask from
    /// here (no reconciliation takes it for one left behind), and sends at the due instant.
    /// `Err(id)` when a worker already owns that id.
    fn start_taken(self: &Arc<Self>, work: SubtaskWork, withdrawals: u64) -> Result<(), i64> {
        let id = work.subtask.id;
        if !self.busy.lock().expect("busy lock").insert(id) {
            return Err(id);
        }
        let me = self.clone();
        self.tracker.spawn(async move {
            let _guard = BusyGuard(&me, id);
            if let Err(e) = me.submit_all(work, withdrawals).await {
                me.worker_failed(id, &e);
            }
        });
        Ok(())
    }

    /// A submission worker failed on the database: the vendor may have the request while its
    /// answer was not recorded, so the loop reconciles.
    fn worker_failed(&self, id: i64, e: &StoreError) {
        warn!(subtask = id, error = %e, "subtask worker failed");
        self.reconcile.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }

    fn is_busy(&self, id: i64) -> bool {
        self.busy.lock().expect("busy lock").contains(&id)
    }
}

/// The URLs of the subtask's next vendor request.
fn next_chunk(work: &SubtaskWork, per_request: usize) -> Vec<String> {
    work.urls.iter().skip(work.subtask.urls_sent as usize).take(per_request.max(1)).map(|(_, u)| u.clone()).collect()
}

/// Quotas count per task type, and per area where the vendor counts regions apart.
fn quota_bucket(account: &VendorAccount, work: &SubtaskWork) -> String {
    match &account.config.options.area {
        Some(area) => format!("{}:{area}", work.task_type),
        None => work.task_type.to_string(),
    }
}

/// Errors after which the vendor may or may not have the request.
fn is_ambiguous(e: &VendorError) -> bool {
    matches!(e.code.as_str(), "Timeout" | "TransportError" | "InvalidResponse")
}
