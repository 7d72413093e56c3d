//! Vendor accounts behind one trait: what a vendor can do, how its errors are classified, and
//! the per-account object that owns the HTTP client, the rate limiters and the concurrency
//! permits.
//!
//! Architecture Invariant: every call to a vendor goes through [`VendorAccount`], so no code
//! path can skip the rate limiter or the start-up gate that keeps a restart from bursting.

mod aliyun;
mod http_warm;
mod tasklist;
mod tencent;
mod volcengine;
mod webhook;

pub use tencent::VERSION as TENCENT_VERSION;
pub use volcengine::VERSION as VOLC_VERSION;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::Semaphore;

use crate::clock::SharedClock;
use crate::config::VendorConfig;
use crate::model::{TaskType, UrlStatus, VendorKind};

/// One request's worth of a subtask.
#[derive(Debug, Clone, Copy)]
pub struct SubmitRequest<'a> {
    pub task_type: TaskType,
    pub urls: &'a [String],
    pub job: &'a str,
    pub plan_id: i64,
    pub slice_id: i64,
}

/// What the vendor answered to an accepted request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accepted {
    pub task_ids: Vec<String>,
    /// Per-URL outcomes known at submit time, for vendors that do the work inside the call
    /// (`http_warm`). Cloud vendors leave this empty and report through [`VendorApi::task_status`].
    pub outcomes: Vec<UrlReport>,
}

impl Accepted {
    pub fn tasks(task_ids: Vec<String>) -> Self {
        Accepted { task_ids, outcomes: Vec::new() }
    }
}

/// How the engine must treat a vendor error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Timeouts, 5xx, throttling: back off and try again.
    Retryable,
    /// The daily quota is spent: wait for the vendor's next day.
    Quota,
    /// Bad credentials, invalid parameter, domain not owned: the subtask fails.
    Fatal,
}

/// A vendor error with the vendor's own code and message (never a secret or a signed URL).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct VendorError {
    pub class: ErrorClass,
    pub code: String,
    pub message: String,
    pub retry_after: Option<Duration>,
}

impl VendorError {
    pub fn new(class: ErrorClass, code: impl Into<String>, message: impl Into<String>) -> Self {
        VendorError { class, code: code.into(), message: message.into(), retry_after: None }
    }

    /// Transport errors: timeouts and connection failures are retryable. The URL is dropped
    /// from the message because signed URLs carry keys.
    pub fn from_reqwest(e: reqwest::Error) -> Self {
        let code = if e.is_timeout() {
            "Timeout"
        } else if e.is_connect() {
            "ConnectionError"
        } else if e.is_decode() {
            "InvalidResponse"
        } else {
            "TransportError"
        };
        VendorError::new(ErrorClass::Retryable, code, e.without_url().to_string())
    }

    /// Flow control (the vendor is up, we are too fast): backed off, never a reason to open the
    /// circuit breaker.
    pub fn is_throttling(&self) -> bool {
        let c = self.code.to_ascii_lowercase();
        c.contains("throttl")
            || c.contains("toomanyrequests")
            || c.contains("limitexceeded") && c.contains("request")
            || c.contains("flowlimit")
            || c == "http429"
    }

    pub fn unsupported(what: &str) -> Self {
        VendorError::new(ErrorClass::Fatal, "Unsupported", format!("this vendor kind has no {what}"))
    }
}

/// What a vendor kind can do. A missing capability is shown as "unknown", never as success.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Capabilities {
    pub preload: bool,
    pub refresh_file: bool,
    pub refresh_dir: bool,
    /// Per-task status query (polling until done).
    pub task_status: bool,
    /// Daily quota query.
    pub quota: bool,
    /// Task list by URL and time, used to reconcile a crash.
    pub task_list: bool,
}

/// The outcome the vendor reports for one URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlReport {
    pub url: String,
    pub status: UrlStatus,
    pub detail: String,
}

/// Remaining daily quota as the vendor reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaReport {
    pub limit: u64,
    pub remaining: u64,
}

/// One vendor protocol. Implementations are plain clients: no rate limiting, no retries.
pub trait VendorApi: Send + Sync {
    fn capabilities(&self) -> Capabilities;

    fn submit<'a>(&'a self, req: SubmitRequest<'a>) -> BoxFuture<'a, Result<Accepted, VendorError>>;

    /// How long one submit of `urls` URLs may take, given the account's per-call `timeout`. A
    /// cloud API answers one call; a vendor that fetches each URL itself needs longer.
    fn submit_budget(&self, timeout: Duration, _urls: usize) -> Duration {
        timeout
    }

    /// Per-URL status of submitted tasks.
    fn task_status<'a>(
        &'a self,
        _task_type: TaskType,
        _task_ids: &'a [String],
        _urls: &'a [String],
        _since_ms: i64,
    ) -> BoxFuture<'a, Result<Vec<UrlReport>, VendorError>> {
        Box::pin(async { Err(VendorError::unsupported("task status query")) })
    }

    /// Task ids of earlier submissions covering every one of `urls` since `since_ms`, if the
    /// vendor's task list proves them; `None` when it does not.
    fn find_submitted<'a>(
        &'a self,
        _task_type: TaskType,
        _urls: &'a [String],
        _since_ms: i64,
    ) -> BoxFuture<'a, Result<Option<Vec<String>>, VendorError>> {
        Box::pin(async { Ok(None) })
    }

    fn quota<'a>(&'a self, _task_type: TaskType) -> BoxFuture<'a, Result<Option<QuotaReport>, VendorError>> {
        Box::pin(async { Ok(None) })
    }
}

/// Counters the API and metrics show per account. They live as long as the process: a reload
/// that changes an account hands them to its new object, so they only ever grow.
#[derive(Debug, Default)]
pub struct AccountStats {
    pub calls: AtomicU64,
    pub limiter_waits: AtomicU64,
    pub errors: AtomicU64,
    /// Retryable failures that were retried.
    pub retries: AtomicU64,
    /// Errors by the vendor's code (or ours: `Timeout`, `ConnectionError`...).
    pub errors_by_code: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
}

impl AccountStats {
    pub fn errors_by_code(&self) -> Vec<(String, u64)> {
        self.errors_by_code.lock().expect("stats lock").iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

/// The permits a call holds until it ends.
struct Admitted<'a> {
    _gate: Option<tokio::sync::SemaphorePermit<'a>>,
    _permit: tokio::sync::SemaphorePermit<'a>,
}

/// One configured vendor account: its client, limiters, permits and start-up gate.
pub struct VendorAccount {
    pub config: VendorConfig,
    pub api: Box<dyn VendorApi>,
    submit_limiter: DefaultDirectRateLimiter,
    status_limiter: DefaultDirectRateLimiter,
    permits: Semaphore,
    /// Status, task-list and quota calls hold at most half the permits (at least one), so polls
    /// queued behind a slow status limiter never hold every permit and stall submissions.
    status_gate: Semaphore,
    /// No call before this instant: a fresh limiter starts full, and the previous process may
    /// have used the current second's budget just before it died or was reloaded.
    not_before: Instant,
    pub stats: Arc<AccountStats>,
    /// Opens after a run of failures so a vendor that is down is not hammered; see [`Breaker`].
    pub breaker: Breaker,
}

/// A circuit breaker per account, on the engine's clock (unix ms). After
/// [`Breaker::THRESHOLD`] retryable failures in a row it opens for a cool-down that doubles
/// with each consecutive opening (30 s up to 10 min); when the cool-down ends, one call is let
/// through as a probe: a success closes the circuit, a failure opens it again at once.
#[derive(Debug, Default)]
pub struct Breaker {
    state: std::sync::Mutex<BreakerState>,
}

#[derive(Debug, Default, Clone)]
struct BreakerState {
    failures: u32,
    open_until: Option<i64>,
    openings: u32,
    /// The vendor's last error, shown on the subtasks failed while the circuit is open.
    last_error: Option<(String, String)>,
}

impl Breaker {
    pub const THRESHOLD: u32 = 5;
    const BASE_MS: i64 = 30_000;
    const MAX_MS: i64 = 600_000;

    /// `Some(until)` while the circuit is open.
    pub fn open_until(&self, now_ms: i64) -> Option<i64> {
        self.state.lock().expect("breaker lock").open_until.filter(|t| *t > now_ms)
    }

    /// The vendor's last error code and message.
    pub fn last_error(&self) -> (String, String) {
        self.state.lock().expect("breaker lock").last_error.clone().unwrap_or_default()
    }

    /// Records a call's outcome (`None`: success); returns the time the circuit opened until, if
    /// this opened it.
    pub fn record(&self, error: Option<&VendorError>, now_ms: i64) -> Option<i64> {
        let mut st = self.state.lock().expect("breaker lock");
        let Some(e) = error else {
            *st = BreakerState::default();
            return None;
        };
        st.last_error = Some((e.code.clone(), e.message.clone()));
        st.failures += 1;
        let probing = st.open_until.is_some_and(|t| t <= now_ms);
        if st.failures >= Self::THRESHOLD || probing {
            let cool = (Self::BASE_MS << st.openings.min(5)).min(Self::MAX_MS);
            st.openings += 1;
            st.failures = 0;
            st.open_until = Some(now_ms + cool);
            return st.open_until;
        }
        None
    }
}

impl std::fmt::Debug for VendorAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VendorAccount").field("name", &self.config.name).field("kind", &self.config.kind).finish()
    }
}

/// A limiter allowing `rps` calls in any one-second window: burst 1, so the cells are spaced
/// evenly instead of letting twice the rate through around a second boundary.
fn limiter(rps: u32) -> DefaultDirectRateLimiter {
    let rate = NonZeroU32::new(rps.max(1)).expect("at least 1");
    RateLimiter::direct(Quota::per_second(rate).allow_burst(NonZeroU32::MIN))
}

impl VendorAccount {
    pub fn new(config: VendorConfig, api: Box<dyn VendorApi>) -> Self {
        VendorAccount {
            submit_limiter: limiter(config.requests_per_second),
            status_limiter: limiter(config.status_requests_per_second),
            permits: Semaphore::new(config.concurrency as usize),
            status_gate: Semaphore::new((config.concurrency as usize / 2).max(1)),
            not_before: Instant::now() + Duration::from_secs(1),
            api,
            config,
            stats: Arc::default(),
            breaker: Breaker::default(),
        }
    }

    /// Keeps counting into `stats` (an account rebuilt by a reload).
    pub fn with_stats(mut self, stats: Arc<AccountStats>) -> Self {
        self.stats = stats;
        self
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    async fn admit(&self, limiter: &DefaultDirectRateLimiter) -> Admitted<'_> {
        // A status-class call first passes its own gate (see `status_gate`).
        let gate = if std::ptr::eq(limiter, &self.status_limiter) {
            Some(self.status_gate.acquire().await.expect("semaphore never closed"))
        } else {
            None
        };
        let permit = self.permits.acquire().await.expect("semaphore never closed");
        let now = Instant::now();
        if now < self.not_before {
            tokio::time::sleep(self.not_before - now).await;
        }
        if limiter.check().is_err() {
            self.stats.limiter_waits.fetch_add(1, Ordering::Relaxed);
            limiter.until_ready().await;
        }
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        Admitted { _gate: gate, _permit: permit }
    }

    fn count<T>(&self, r: &Result<T, VendorError>) {
        if let Err(e) = r {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            *self.stats.errors_by_code.lock().expect("stats lock").entry(e.code.clone()).or_default() += 1;
        }
    }

    /// One submit request, rate-limited, with the account's timeout.
    pub async fn submit(&self, req: SubmitRequest<'_>) -> Result<Accepted, VendorError> {
        let _permit = self.admit(&self.submit_limiter).await;
        let budget = self.api.submit_budget(self.config.timeout, req.urls.len());
        let r = self.bounded(budget, self.api.submit(req)).await;
        self.count(&r);
        r
    }

    pub async fn task_status(
        &self,
        t: TaskType,
        ids: &[String],
        urls: &[String],
        since_ms: i64,
    ) -> Result<Vec<UrlReport>, VendorError> {
        let _permit = self.admit(&self.status_limiter).await;
        let r = self.with_timeout(self.api.task_status(t, ids, urls, since_ms)).await;
        self.count(&r);
        r
    }

    pub async fn find_submitted(
        &self,
        t: TaskType,
        urls: &[String],
        since: i64,
    ) -> Result<Option<Vec<String>>, VendorError> {
        if !self.api.capabilities().task_list {
            return Ok(None);
        }
        let _permit = self.admit(&self.status_limiter).await;
        let r = self.with_timeout(self.api.find_submitted(t, urls, since)).await;
        self.count(&r);
        r
    }

    pub async fn quota(&self, t: TaskType) -> Result<Option<QuotaReport>, VendorError> {
        if !self.api.capabilities().quota {
            return Ok(None);
        }
        let _permit = self.admit(&self.status_limiter).await;
        let r = self.with_timeout(self.api.quota(t)).await;
        self.count(&r);
        r
    }

    async fn with_timeout<T>(&self, fut: BoxFuture<'_, Result<T, VendorError>>) -> Result<T, VendorError> {
        self.bounded(self.config.timeout, fut).await
    }

    async fn bounded<T>(&self, budget: Duration, fut: BoxFuture<'_, Result<T, VendorError>>) -> Result<T, VendorError> {
        // The client has its own timeout; this one also bounds slow bodies and DNS.
        match tokio::time::timeout(budget + Duration::from_secs(1), fut).await {
            Ok(r) => r,
            Err(_) => Err(VendorError::new(ErrorClass::Retryable, "Timeout", "the vendor did not answer in time")),
        }
    }
}

/// Every configured vendor account, by name.
#[derive(Debug, Default, Clone)]
pub struct Vendors {
    by_name: HashMap<String, Arc<VendorAccount>>,
}

impl Vendors {
    pub fn from_config(configs: &[VendorConfig], clock: SharedClock) -> anyhow::Result<Vendors> {
        let mut by_name = HashMap::new();
        for c in configs {
            let api = build_api(c, clock.clone())?;
            by_name.insert(c.name.clone(), Arc::new(VendorAccount::new(c.clone(), api)));
        }
        Ok(Vendors { by_name })
    }

    /// The accounts of a reloaded config. An account whose config did not change is kept as it
    /// is — its limiter state, permits and in-flight calls continue untouched; a changed one is
    /// rebuilt (with a fresh start-up gate, so the change cannot burst) and keeps its counters.
    pub fn reconfigure(&self, configs: &[VendorConfig], clock: SharedClock) -> anyhow::Result<Vendors> {
        let mut by_name = HashMap::new();
        for c in configs {
            let account = match self.by_name.get(&c.name) {
                Some(old) if old.config == *c => old.clone(),
                Some(old) => {
                    Arc::new(VendorAccount::new(c.clone(), build_api(c, clock.clone())?).with_stats(old.stats.clone()))
                }
                None => Arc::new(VendorAccount::new(c.clone(), build_api(c, clock.clone())?)),
            };
            by_name.insert(c.name.clone(), account);
        }
        Ok(Vendors { by_name })
    }

    pub fn insert(&mut self, account: VendorAccount) {
        self.by_name.insert(account.name().to_string(), Arc::new(account));
    }

    pub fn get(&self, name: &str) -> Option<&Arc<VendorAccount>> {
        self.by_name.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<VendorAccount>> {
        let mut v: Vec<_> = self.by_name.values().collect();
        v.sort_by(|a, b| a.name().cmp(b.name()));
        v.into_iter()
    }
}

/// A shared HTTP client with the account's timeout; redirects are not followed (a vendor API
/// never redirects, and a redirect could carry signed headers elsewhere).
pub fn http_client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("preloadd/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

fn build_api(c: &VendorConfig, clock: SharedClock) -> anyhow::Result<Box<dyn VendorApi>> {
    match c.kind {
        VendorKind::Webhook => Ok(Box::new(webhook::Webhook::new(c)?)),
        VendorKind::AliyunCdn => Ok(Box::new(aliyun::AliyunCdn::new(c, clock)?)),
        VendorKind::AliyunEsa => Ok(Box::new(aliyun::AliyunEsa::new(c, clock)?)),
        VendorKind::VolcengineCdn => Ok(Box::new(volcengine::VolcengineCdn::new(c, clock)?)),
        VendorKind::TencentCdn => Ok(Box::new(tencent::TencentCdn::new(c, clock)?)),
        VendorKind::HttpWarm => Ok(Box::new(http_warm::HttpWarm::new(c)?)),
    }
}

/// Reads `Retry-After` (seconds) from a response.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}
