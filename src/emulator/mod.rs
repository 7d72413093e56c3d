//! The vendor emulator: Alibaba Cloud CDN (API 2018-05-10) and ESA (API 2024-09-10), Volcengine
//! CDN (API 2021-03-01) and Tencent Cloud CDN (API 2018-06-06) served on one loopback listener
//! with their real wire protocols, so tests, benchmarks and `preloadd demo` exercise
//! the same requests, signatures, limits and errors a real account would see.
//!
//! # Layout
//! - this file: [`EmulatorOptions`], [`EmulatorState`] (the Rust handle tests hold), the router,
//!   [`serve`] and [`run_cli`] (`preloadd emulator`).
//! - `protocol`: one incoming request → vendor (by the request's shape), action, parameters; the
//!   vendors' answer and error bodies.
//! - `auth`: ACS3-HMAC-SHA256, RPC HMAC-SHA1, Volcengine HMAC-SHA256 and TC3-HMAC-SHA256
//!   verification (through [`crate::sign`]), clock skew and nonce replay.
//! - `limits`: per-action calls per second, URLs per request, URLs per vendor day.
//! - `tasks`: the asynchronous tasks and their life on the injected clock.
//! - `aliyun_cdn`, `aliyun_esa`, `volcengine_cdn`, `tencent_cdn`: the actions.
//! - `faults`, `ledger`: fault injection and the record of accepted requests.
//!
//! # Fidelity
//! Request shapes, parameter placement and response fields follow the official Python SDKs
//! (`alibabacloud-cdn20180510`, `alibabacloud-esa20240910`, `volcengine`,
//! `tencentcloud-sdk-python-cdn`), which `tests/sdk/aliyun_sdk.py` and
//! `tests/sdk/volc_tencent_sdk.py` run against the emulator. Limits default to the documented
//! numbers where the vendor publishes them (see `limits`); every number the vendor does not
//! publish is marked "chosen" there.
//!
//! Architecture Invariant: every vendor request is authenticated before it can touch a limit, a
//! quota, a task or the ledger, and only a request that the vendor would have accepted reaches
//! the ledger.

mod aliyun_cdn;
mod aliyun_esa;
mod auth;
mod faults;
mod ledger;
mod limits;
pub(crate) mod protocol;
mod tasks;
mod tencent_cdn;
mod volcengine_cdn;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use serde_json::Value;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use crate::clock::{SharedClock, SystemClock};
use crate::model::VendorKind;

pub use faults::FaultSet;
pub use ledger::LedgerRecord;
pub use limits::LimitOverride;
pub use tasks::url_fails;

use protocol::{ApiError, Call};

/// The key pair the emulator accepts when none is configured.
pub const DEMO_ACCESS_KEY_ID: &str = "demo-ak";
pub const DEMO_ACCESS_KEY_SECRET: &str = "demo-sk";

/// What the emulator serves and how its vendors behave.
#[derive(Clone)]
pub struct EmulatorOptions {
    /// Access key id and secret pairs; each key is its own account (limits and quotas count per
    /// key). Empty means `demo-ak`/`demo-sk`.
    pub keys: Vec<(String, String)>,
    /// Appends one JSON line per accepted request when set.
    pub ledger: Option<PathBuf>,
    /// How long a task stays `Refreshing` (on the injected clock) before it ends.
    pub task_ms: u64,
    /// The fraction of URLs whose task ends `Failed`; which URLs is fixed by [`url_fails`].
    pub fail_fraction: f64,
    /// Per vendor kind overrides of the default limits.
    pub limits: HashMap<VendorKind, LimitOverride>,
    /// Time as the emulator sees it: signature skew, rate windows, vendor days, task ages.
    pub clock: SharedClock,
}

impl Default for EmulatorOptions {
    fn default() -> Self {
        EmulatorOptions {
            keys: Vec::new(),
            ledger: None,
            task_ms: 2_000,
            fail_fraction: 0.0,
            limits: HashMap::new(),
            clock: Arc::new(SystemClock),
        }
    }
}

impl EmulatorOptions {
    /// The defaults with these keys (the `demo-ak` pair when `keys` is empty).
    pub fn with_keys(keys: Vec<(String, String)>) -> Self {
        EmulatorOptions { keys, ..EmulatorOptions::default() }
    }
}

/// Everything the emulator knows, shared by every request; tests hold it to read the ledger and
/// set faults without going through HTTP.
pub struct EmulatorState {
    keys: HashMap<String, String>,
    clock: SharedClock,
    task_ms: u64,
    fail_fraction: f64,
    limits: limits::Limits,
    /// One lock for the small, fast bookkeeping; it is never held across an await.
    books: Mutex<Books>,
    faults: Mutex<faults::Faults>,
    ledger: ledger::Ledger,
    next_task_id: AtomicU64,
}

/// The per-account bookkeeping that must change together.
#[derive(Default)]
struct Books {
    nonces: auth::NonceCache,
    rates: limits::RateWindows,
    usage: limits::Usage,
    tasks: tasks::TaskStore,
}

impl EmulatorState {
    fn new(opts: EmulatorOptions) -> std::io::Result<EmulatorState> {
        let mut keys: HashMap<String, String> = opts.keys.into_iter().collect();
        if keys.is_empty() {
            keys.insert(DEMO_ACCESS_KEY_ID.to_string(), DEMO_ACCESS_KEY_SECRET.to_string());
        }
        let ledger = ledger::Ledger::open(opts.ledger.as_deref())?;
        // Task ids start from the clock so ids stay unique across emulator restarts that share
        // a ledger or a preloadd database.
        let first_id = (opts.clock.now_ms().max(0) as u64 / 1000) * 100;
        Ok(EmulatorState {
            keys,
            clock: opts.clock,
            task_ms: opts.task_ms,
            fail_fraction: opts.fail_fraction.clamp(0.0, 1.0),
            limits: limits::Limits::new(opts.limits),
            books: Mutex::new(Books::default()),
            faults: Mutex::new(faults::Faults::default()),
            ledger,
            next_task_id: AtomicU64::new(first_id),
        })
    }

    /// Every accepted submit so far, oldest first.
    pub fn ledger(&self) -> Vec<LedgerRecord> {
        self.ledger.records()
    }

    /// How many submits were accepted so far, without copying them (for watchers that poll).
    pub fn ledger_len(&self) -> usize {
        self.ledger.len()
    }

    /// Sets the faults of one vendor kind, or of every emulated kind when `vendor` is `None`.
    pub fn set_faults(&self, vendor: Option<VendorKind>, set: FaultSet) {
        lock(&self.faults).set(vendor, set);
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        lock(&self.faults).set(None, FaultSet::default());
    }

    /// The faults in force for one vendor kind.
    pub fn faults(&self, vendor: VendorKind) -> FaultSet {
        lock(&self.faults).get(vendor)
    }

    fn books(&self) -> MutexGuard<'_, Books> {
        lock(&self.books)
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    fn new_task_id(&self) -> String {
        self.next_task_id.fetch_add(1, Ordering::Relaxed).to_string()
    }
}

/// A poisoned lock only means another request panicked mid-update; the bookkeeping is still
/// usable, and refusing every later request would turn one bug into an outage.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The emulator's routes: vendor calls on `/` (as the SDKs send them) and the `/_emulator/`
/// control endpoints.
pub fn router(opts: EmulatorOptions) -> std::io::Result<(Router, Arc<EmulatorState>)> {
    let state = Arc::new(EmulatorState::new(opts)?);
    let app = Router::new()
        .route("/", any(vendor_call))
        .route("/_emulator/faults", get(get_faults).post(post_faults).delete(delete_faults))
        .route("/_emulator/requests", get(get_requests))
        .with_state(state.clone());
    Ok((app, state))
}

/// Serves the emulator on a bound listener until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    opts: EmulatorOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (app, _state) = router(opts)?;
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

/// `preloadd emulator`: serves until SIGTERM or SIGINT. Exit code 0 on a clean stop, 1 when the
/// listener or the ledger file cannot be opened.
pub async fn run_cli(listen: SocketAddr, ledger: Option<PathBuf>, keys: Vec<(String, String)>) -> i32 {
    let listener = match TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("preloadd emulator: cannot listen on {listen}: {e}");
            return 1;
        }
    };
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| listen.to_string());
    let opts = EmulatorOptions { ledger: ledger.clone(), ..EmulatorOptions::with_keys(keys) };
    let (app, state) = match router(opts) {
        Ok(r) => r,
        Err(e) => {
            let path = ledger.map(|p| p.display().to_string()).unwrap_or_default();
            eprintln!("preloadd emulator: cannot open the ledger {path}: {e}");
            return 1;
        }
    };
    let mut ids: Vec<&str> = state.keys.keys().map(String::as_str).collect();
    ids.sort_unstable();
    // Printed as well as logged: scripts that bind port 0 read the address from stdout.
    println!(
        "preloadd emulator listening on http://{addr} (aliyun_cdn 2018-05-10, aliyun_esa 2024-09-10, \
         volcengine_cdn 2021-03-01, tencent_cdn 2018-06-06)"
    );
    info!(listen = %addr, access_keys = ?ids, "emulator is ready");
    match axum::serve(listener, app).with_graceful_shutdown(crate::daemon::shutdown_signal()).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("preloadd emulator: {e}");
            1
        }
    }
}

/// One vendor API call: identify, apply faults, authenticate, rate-limit, run the action.
async fn vendor_call(
    State(state): State<Arc<EmulatorState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let call = match Call::parse(&method, &uri, &headers, &body) {
        Ok(call) => call,
        Err((vendor, e)) => return e.render(vendor, &crate::api::request_id(), ""),
    };
    let vendor = call.vendor;
    let faults = state.faults(vendor);
    if faults.latency_ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(faults.latency_ms)).await;
    }
    let outcome = answer(&state, &call, &faults);
    match &outcome {
        Ok(_) => debug!(vendor = %vendor, action = call.action, "vendor call accepted"),
        Err(e) => debug!(vendor = %vendor, action = call.action, code = e.code, "vendor call refused"),
    }
    match outcome {
        // Only submissions are dropped: that is the case that can duplicate work (the vendor
        // has the task, the client does not know); a dropped query is just a failed query.
        Ok(_) if is_submit(call.action) && faults::roll(faults.drop_after_accept_rate) => {
            warn!(vendor = %vendor, action = call.action, "fault: dropping the connection after accepting");
            dropped_connection()
        }
        Ok(body) => protocol::ok_response(body, &call),
        Err(e) => e.into_response_for(&call),
    }
}

fn is_submit(action: &str) -> bool {
    limits::SUBMIT_ACTIONS.contains(&action)
}

fn answer(state: &EmulatorState, call: &Call, faults: &FaultSet) -> Result<Value, ApiError> {
    let vendor = call.vendor;
    if faults.down || faults::roll(faults.error_rate) {
        return Err(ApiError::unavailable_for(vendor));
    }
    let account = auth::authenticate(state, call)?;
    if faults.throttle {
        return Err(ApiError::throttled_for(vendor));
    }
    let now = state.now_ms();
    state
        .books()
        .rates
        .admit(&account, vendor, call.action, state.limits.qps(vendor, call.action), now)
        .map_err(|_| ApiError::throttled_for(vendor))?;
    let ctx = Ctx { state, account: &account, call, now };
    match vendor {
        VendorKind::AliyunEsa => aliyun_esa::dispatch(&ctx),
        VendorKind::VolcengineCdn => volcengine_cdn::dispatch(&ctx),
        VendorKind::TencentCdn => tencent_cdn::dispatch(&ctx),
        _ => aliyun_cdn::dispatch(&ctx),
    }
}

/// What an action handler sees.
struct Ctx<'a> {
    state: &'a EmulatorState,
    account: &'a str,
    call: &'a Call,
    now: i64,
}

impl Ctx<'_> {
    /// Records an accepted submit in the ledger.
    fn record(&self, urls: &[String], task_ids: &[String]) {
        let record = LedgerRecord {
            vendor: self.call.vendor,
            action: self.call.action.to_string(),
            account: self.account.to_string(),
            urls: urls.to_vec(),
            received_at: crate::clock::rfc3339(self.now),
            task_ids: task_ids.to_vec(),
        };
        info!(
            vendor = %record.vendor,
            action = %record.action,
            account = %record.account,
            urls = record.urls.len(),
            task_ids = ?record.task_ids,
            "emulator accepted a submit"
        );
        if let Err(e) = self.state.ledger.append(record) {
            // The request was accepted and its tasks exist; a ledger that cannot be written is
            // the operator's problem to see, not a reason to answer the client with an error.
            warn!(error = %e, "cannot append to the emulator ledger");
        }
    }
}

/// A response whose body fails before anything is written: hyper then closes the connection
/// without sending the status line, which is what a client sees when a vendor accepted the
/// request and the answer was lost on the way back.
fn dropped_connection() -> Response {
    let failing = futures_util::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::other("emulator fault: connection dropped after accept"))
    });
    Response::new(Body::from_stream(failing))
}

async fn get_faults(State(state): State<Arc<EmulatorState>>) -> Json<Value> {
    Json(lock(&state.faults).to_json())
}

async fn post_faults(State(state): State<Arc<EmulatorState>>, body: Bytes) -> Response {
    match faults::FaultRequest::parse(&body) {
        Ok(req) => {
            info!(vendor = ?req.vendor, faults = ?req.set, "emulator faults set");
            state.set_faults(req.vendor, req.set);
            Json(lock(&state.faults).to_json()).into_response()
        }
        Err(message) => {
            (StatusCode::BAD_REQUEST, Json(serde_json::json!({"code": "InvalidFaults", "message": message})))
                .into_response()
        }
    }
}

async fn delete_faults(State(state): State<Arc<EmulatorState>>) -> Json<Value> {
    state.clear_faults();
    Json(lock(&state.faults).to_json())
}

async fn get_requests(State(state): State<Arc<EmulatorState>>) -> Json<Vec<LedgerRecord>> {
    Json(state.ledger())
}
