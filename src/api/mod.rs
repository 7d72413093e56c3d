//! The HTTP API (axum): routes, bearer-token authentication, request ids and the mapping of
//! errors to the seeds' codes. Handlers translate between API types and the store; no SQL here.

mod coalesce;
mod handlers;
mod reports;
pub mod server;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::config::Secret;
use crate::engine::Engine;
use crate::store::StoreError;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    /// Swapped by a config reload.
    pub access: Arc<RwLock<Access>>,
    pub stats: Arc<crate::metrics::DaemonStats>,
    /// Requests per second for the token (one token, so one direct limiter).
    pub limiter: Arc<governor::DefaultDirectRateLimiter>,
    pub allow_private_lists: bool,
    pub max_report_subscriptions: usize,
    /// Identical task listings waiting at the same time run once; at most half of the store's
    /// connections serve listings, so the engine always finds one.
    pub(crate) task_listings: Arc<coalesce::Coalesce<handlers::TaskQuery, TaskPage>>,
}

/// One page of `GET /v1/tasks` as built once for every request that shared its execution.
pub(crate) type TaskPage = Result<Arc<serde_json::Value>, ApiError>;

/// Who may call the API: the bearer token, and whether `/metrics` is open beyond loopback.
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub token: Option<Secret>,
    pub metrics_public: bool,
}

impl AppState {
    pub fn new(engine: Arc<Engine>, api: &crate::config::ApiConfig) -> Self {
        let rate = std::num::NonZeroU32::new(api.requests_per_second).unwrap_or(std::num::NonZeroU32::MIN);
        AppState {
            access: Arc::new(RwLock::new(Access { token: api.token.clone(), metrics_public: api.metrics_public })),
            stats: Arc::default(),
            limiter: Arc::new(governor::RateLimiter::direct(governor::Quota::per_second(rate))),
            allow_private_lists: api.allow_private_lists,
            max_report_subscriptions: api.max_report_subscriptions,
            task_listings: Arc::new(coalesce::Coalesce::new(
                engine.store().pool().options().get_max_connections() as usize / 2,
            )),
            engine,
        }
    }

    fn access(&self) -> Access {
        self.access.read().expect("access lock").clone()
    }
}

/// One documented `/v1` route: the router and the OpenAPI document are both built from
/// [`v1_routes`], so the published document cannot drift from what is served.
pub struct RouteDoc {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    /// A JSON body the route takes, by its API type name (for the document).
    pub body: Option<&'static str>,
    /// Query parameters.
    pub query: &'static [&'static str],
    /// Error codes the route answers, besides `Unauthorized` and `TooManyRequests`.
    pub errors: &'static [&'static str],
}

const fn doc(method: &'static str, path: &'static str, summary: &'static str) -> RouteDoc {
    RouteDoc { method, path, summary, body: None, query: &[], errors: &[] }
}

fn v1_routes() -> Vec<(RouteDoc, axum::routing::MethodRouter<AppState>)> {
    use axum::routing::{delete, patch, put};
    const PAGE: &[&str] = &["page_num", "page_size"];
    vec![
        (
            RouteDoc {
                body: Some("CreateJob"),
                query: &["name", "task_type", "vendors", "catch_up"],
                errors: &["InvalidParameter", "MissingUrlList"],
                ..doc(
                    "post",
                    "/v1/jobs",
                    "Create a job from `urls`, `urls_url`, `sitemap_url` (JSON) or a text/plain stream",
                )
            },
            post(handlers::create_job),
        ),
        (
            RouteDoc {
                query: &["name", "page_num", "page_size"],
                errors: &["InvalidParameter"],
                ..doc("get", "/v1/jobs", "List jobs, paged, with a name filter")
            },
            get(handlers::list_jobs),
        ),
        (
            RouteDoc {
                errors: &["InvalidJob.NotFound"],
                ..doc("get", "/v1/jobs/{id}", "Show a job: URL count, cursor, plans, progress per vendor")
            },
            get(handlers::get_job),
        ),
        (
            RouteDoc {
                errors: &["InvalidJob.NotFound", "InvalidParameter"],
                ..doc("delete", "/v1/jobs/{id}", "Delete a job with its plans and history (nothing may be in flight)")
            },
            delete(handlers::delete_job),
        ),
        (
            RouteDoc {
                errors: &["InvalidJob.NotFound", "InvalidParameter"],
                ..doc("post", "/v1/jobs/{id}/reset", "Put the job's cursor back to the first URL")
            },
            post(handlers::reset_job),
        ),
        (
            RouteDoc {
                errors: &["InvalidJob.NotFound", "InvalidParameter"],
                ..doc("post", "/v1/jobs/{id}/urls", "Append URLs (text/plain, one a line, streamed)")
            },
            post(handlers::append_urls),
        ),
        (
            RouteDoc {
                body: Some("RetryFailed"),
                errors: &["InvalidJob.NotFound", "MissingUrlList", "InvalidEndTime.Mismatch", "TimeParseFailed"],
                ..doc("post", "/v1/jobs/{id}/retry-failed", "A new plan over exactly the URLs that failed, per vendor")
            },
            post(handlers::retry_failed),
        ),
        (
            RouteDoc {
                errors: &["InvalidJob.NotFound", "InvalidSchedule.NotFound"],
                ..doc("get", "/v1/jobs/{id}/schedule", "The job's recurring schedule")
            },
            get(handlers::get_schedule),
        ),
        (
            RouteDoc {
                body: Some("ScheduleInput"),
                errors: &["InvalidJob.NotFound", "InvalidParameter", "TimeParseFailed", "InvalidEndTime.Mismatch"],
                ..doc("put", "/v1/jobs/{id}/schedule", "Create or replace the job's recurring schedule")
            },
            put(handlers::put_schedule),
        ),
        (
            RouteDoc {
                errors: &["InvalidJob.NotFound"],
                ..doc("delete", "/v1/jobs/{id}/schedule", "Remove the job's schedule")
            },
            delete(handlers::delete_schedule),
        ),
        (
            RouteDoc {
                body: Some("CreatePlans"),
                query: &["dry_run"],
                errors: &["InvalidJob.NotFound", "InvalidParameter", "TimeParseFailed", "InvalidEndTime.Mismatch"],
                ..doc(
                    "post",
                    "/v1/jobs/{id}/plans",
                    "Create several plans at once, or preview their timetable with dry_run=true",
                )
            },
            post(handlers::create_plans),
        ),
        (
            RouteDoc { errors: &["InvalidJob.NotFound"], ..doc("get", "/v1/jobs/{id}/plans", "List the job's plans") },
            get(handlers::list_plans),
        ),
        (
            RouteDoc { errors: &["InvalidExecution.NotFound"], ..doc("get", "/v1/plans/{id}", "Show a plan") },
            get(handlers::get_plan),
        ),
        (
            RouteDoc {
                body: Some("PlanPatch"),
                errors: &[
                    "InvalidExecution.NotFound",
                    "InvalidEndTime.Mismatch",
                    "TimeParseFailed",
                    "InvalidParameter",
                ],
                ..doc(
                    "patch",
                    "/v1/plans/{id}",
                    "Update a plan; every field optional (seed 002); answers the updated plan",
                )
            },
            patch(handlers::update_plan),
        ),
        (
            RouteDoc {
                errors: &["InvalidExecution.NotFound", "InvalidParameter"],
                ..doc("delete", "/v1/plans/{id}", "Delete a plan")
            },
            delete(handlers::delete_plan),
        ),
        (
            RouteDoc {
                errors: &["InvalidExecution.NotFound", "InvalidParameter"],
                ..doc("post", "/v1/plans/{id}/start", "Resume a stopped plan")
            },
            post(handlers::start_plan),
        ),
        (
            RouteDoc {
                errors: &["InvalidExecution.NotFound", "InvalidParameter"],
                ..doc("post", "/v1/plans/{id}/stop", "Pause a waiting or running plan")
            },
            post(handlers::stop_plan),
        ),
        (
            RouteDoc {
                query: &[
                    "task_id",
                    "task_type",
                    "start_time",
                    "end_time",
                    "domain",
                    "url",
                    "status",
                    "page_num",
                    "page_size",
                ],
                errors: &["InvalidParameter"],
                ..doc("get", "/v1/tasks", "Tasks (slices) with per-vendor subtasks (seed 001); default the past 24 h")
            },
            get(handlers::list_tasks),
        ),
        (
            doc("get", "/v1/vendors", "Vendor accounts: capabilities, health, circuit, limiter and quota state"),
            get(handlers::list_vendors),
        ),
        (
            RouteDoc {
                body: Some("Subscription"),
                errors: &["NameAlreadyExists", "DeliverExceedLimit", "TimeParseFailed", "InvalidParameter"],
                ..doc("post", "/v1/report-subscriptions", "Create a report subscription (seed 000)")
            },
            post(reports::create),
        ),
        (
            RouteDoc { query: PAGE, ..doc("get", "/v1/report-subscriptions", "List report subscriptions") },
            get(reports::list),
        ),
        (
            RouteDoc {
                errors: &["SubscriptionNotFound"],
                ..doc("get", "/v1/report-subscriptions/{id}", "Show a report subscription")
            },
            get(reports::get),
        ),
        (
            RouteDoc {
                body: Some("Subscription"),
                errors: &["SubscriptionNotFound", "NameAlreadyExists", "TimeParseFailed", "InvalidParameter"],
                ..doc("patch", "/v1/report-subscriptions/{id}", "Update a report subscription; every field optional")
            },
            patch(reports::update),
        ),
        (
            RouteDoc {
                errors: &["SubscriptionNotFound"],
                ..doc("delete", "/v1/report-subscriptions/{id}", "Delete a report subscription")
            },
            delete(reports::delete),
        ),
    ]
}

pub fn router(state: AppState) -> Router {
    let mut v1 = Router::new();
    for (d, handler) in v1_routes() {
        v1 = v1.route(d.path, handler);
    }
    let v1 = v1.route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .merge(v1)
        .route("/v1/openapi.json", get(|| async { Json(openapi()) }))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(axum::extract::DefaultBodyLimit::max(1 << 20))
        .layer(middleware::from_fn(close_after_refused_body))
        .with_state(state)
}

/// A request refused with a 4xx while it carried a body may not have been read to its end (a
/// body over the limit, broken JSON): the answer says `Connection: close`, so the client does not
/// send its next request down a connection the server is about to close.
async fn close_after_refused_body(req: axum::extract::Request, next: middleware::Next) -> axum::response::Response {
    let has_body = req.headers().contains_key(axum::http::header::CONTENT_LENGTH)
        || req.headers().contains_key(axum::http::header::TRANSFER_ENCODING);
    let mut response = next.run(req).await;
    if has_body && response.status().is_client_error() {
        response.headers_mut().insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
    }
    response
}

/// The OpenAPI 3.1 document of the API, built from the same route list the router serves.
pub fn openapi() -> serde_json::Value {
    let error = json!({"$ref": "#/components/schemas/Error"});
    let mut paths = serde_json::Map::new();
    for (d, _) in v1_routes() {
        let mut params: Vec<serde_json::Value> = d
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "integer"}}))
            .collect();
        params.extend(
            d.query.iter().map(|q| json!({"name": q, "in": "query", "required": false, "schema": {"type": "string"}})),
        );
        let mut responses = serde_json::Map::new();
        responses.insert("200".into(), json!({"description": "the resource (or list) with `request_id`"}));
        let mut codes: Vec<&str> = vec!["Unauthorized", "TooManyRequests"];
        if matches!(d.method, "post" | "put" | "patch") {
            codes.push("RequestTimeout");
        }
        if d.method != "get" {
            codes.extend(["StorageUnavailable", "InsufficientStorage"]);
        }
        codes.extend(d.errors.iter().copied());
        for code in codes {
            let status = error_status(code);
            let entry = responses.entry(status.to_string()).or_insert_with(
                || json!({"description": "", "content": {"application/json": {"schema": error.clone()}}}),
            );
            let desc = entry["description"].as_str().unwrap_or("").to_string();
            entry["description"] = json!(if desc.is_empty() { code.to_string() } else { format!("{desc}, {code}") });
        }
        let mut op =
            json!({"summary": d.summary, "parameters": params, "responses": responses, "security": [{"bearer": []}]});
        if let Some(body) = d.body {
            op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"type": "object", "title": body}}}});
        }
        paths.entry(d.path.to_string()).or_insert_with(|| json!({}))[d.method] = op;
    }
    for (path, summary) in [
        ("/healthz", "Alive"),
        ("/readyz", "Database writable and config loaded"),
        ("/metrics", "Prometheus text (loopback, a token, or metrics_public)"),
    ] {
        paths.insert(path.into(), json!({"get": {"summary": summary, "responses": {"200": {"description": "ok"}}}}));
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "preloadd", "version": env!("CARGO_PKG_VERSION"), "description": "Scheduled CDN preload and purge across vendors"},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": {"type": "object", "required": ["code", "message", "request_id"], "properties": {
                "code": {"type": "string"}, "message": {"type": "string"}, "request_id": {"type": "string"}}}},
        },
    })
}

/// The HTTP status each error code is answered with (DESIGN.md).
pub fn error_status(code: &str) -> u16 {
    match code {
        "Unauthorized" => 401,
        "RequestTimeout" => 408,
        "TooManyRequests" => 429,
        "StorageUnavailable" => 503,
        "InsufficientStorage" => 507,
        "InvalidJob.NotFound" | "InvalidExecution.NotFound" | "InvalidSchedule.NotFound" => 404,
        _ => 400,
    }
}

/// Every `/v1` route needs `Authorization: Bearer <token>`, compared in constant time. A token
/// in the query string is refused, so it never lands in access logs.
async fn authenticate(State(s): State<AppState>, req: Request, next: Next) -> Result<Response, ApiError> {
    check_token(&s.access(), &req)?;
    if s.limiter.check().is_err() {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "too many requests; please try again later",
        ));
    }
    Ok(next.run(req).await)
}

fn check_token(access: &Access, req: &Request) -> Result<(), ApiError> {
    let Some(token) = &access.token else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "the daemon has no API token configured ([api] token_file)",
        ));
    };
    if req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv.starts_with("token=") || kv.starts_with("access_token=")))
    {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "tokens are accepted only in the Authorization header",
        ));
    }
    let given = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !constant_time_eq(given.as_bytes(), token.expose().as_bytes()) {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized", "a valid bearer token is required"));
    }
    Ok(())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    // Hashing first makes the comparison independent of the lengths too.
    let (ha, hb) = (Sha256::digest(a), Sha256::digest(b));
    ha.iter().zip(hb.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A fresh request id (UUID-shaped random hex, like the seeds' RequestId).
pub fn request_id() -> String {
    let bytes: [u8; 16] = rand::random();
    let h = hex::encode_upper(bytes);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// An API error: the seed code, its HTTP status and a message.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into() }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "InvalidParameter", message)
    }

    /// A 500 whose cause was logged where it happened.
    pub fn internal() -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", "internal error; see the daemon's log")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"code": self.code, "message": self.message, "request_id": request_id()});
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::NotFound => {
                ApiError::new(StatusCode::NOT_FOUND, "InvalidJob.NotFound", "the job does not exist")
            }
            StoreError::EndBeforeStart => ApiError::new(
                StatusCode::BAD_REQUEST,
                "InvalidEndTime.Mismatch",
                "the specified end_time is earlier than the start_time",
            ),
            StoreError::Conflict(m) => ApiError::invalid(m),
            StoreError::NameExists(name) => {
                ApiError::new(StatusCode::BAD_REQUEST, "NameAlreadyExists", format!("the name `{name}` already exists"))
            }
            StoreError::LimitExceeded(max) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "DeliverExceedLimit",
                format!("the maximum number of report subscriptions ({max}) is reached"),
            ),
            StoreError::DiskFull(_) => {
                tracing::error!(error = %e, "a write failed: the state directory's disk is full");
                ApiError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "InsufficientStorage",
                    "the disk holding the state database is full; nothing of this request was written. \
                     Free space in the state directory and send it again (see README, Operations)",
                )
            }
            StoreError::Unwritable(_) => {
                tracing::error!(error = %e, "a write failed: the state database cannot be written");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "StorageUnavailable",
                    "the state database cannot be written (read-only file system or I/O error); nothing of this \
                     request was written. Make the state directory writable and send it again (see README, Operations)",
                )
            }
            other => {
                tracing::error!(error = %other, "internal error");
                ApiError::internal()
            }
        }
    }
}

/// The answer to a request whose body arrived too slowly (see [`server`]).
pub fn body_timeout_response() -> Response {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "RequestTimeout",
        "the request body arrived too slowly ([api] body_idle_timeout, body_min_rate); send it again",
    )
    .into_response()
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "alive", "request_id": request_id()}))
}

async fn readyz(State(s): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    s.engine.store().check_writable().await.map_err(|e| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "NotReady", format!("the database is not writable: {e}"))
    })?;
    // The daemon serves only once a config is loaded; a rejected reload keeps the previous one.
    let loaded = s.stats.config_loaded_at_ms.load(std::sync::atomic::Ordering::Relaxed);
    Ok(Json(json!({
        "status": "ready",
        "config_loaded_at": crate::clock::rfc3339(loaded),
        "config_reloads_failed": s.stats.reloads_failed.load(std::sync::atomic::Ordering::Relaxed),
        "request_id": request_id(),
    })))
}

/// Loopback peers and `metrics_public` need nothing; anyone else the bearer token. An unknown
/// peer (no connection info) counts as remote.
fn metrics_allowed(access: &Access, peer: Option<SocketAddr>, req: &Request) -> Result<(), ApiError> {
    if access.metrics_public || peer.is_some_and(|p| p.ip().is_loopback()) {
        return Ok(());
    }
    check_token(access, req)
}

/// `/metrics`: open to loopback peers (the local Prometheus agent), to anyone with
/// `[api] metrics_public = true`, else only with the bearer token.
async fn metrics(State(s): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    metrics_allowed(&s.access(), peer, &req)?;
    let day = crate::quota::vendor_day(s.engine.now());
    let snapshot = s.engine.store().metrics_snapshot(&day).await?;
    let body = crate::metrics::render(&snapshot, &s.engine.vendors(), &s.stats);
    Ok(([(axum::http::header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_failures_answer_507_or_503_with_what_to_do() {
        let full = ApiError::from(StoreError::DiskFull("database or disk is full".into()));
        assert_eq!((full.status.as_u16(), full.code), (507, "InsufficientStorage"));
        assert!(full.message.contains("full") && full.message.contains("nothing of this request"), "{full:?}");
        let ro = ApiError::from(StoreError::Unwritable("attempt to write a readonly database".into()));
        assert_eq!((ro.status.as_u16(), ro.code), (503, "StorageUnavailable"));
        assert!(ro.message.contains("read-only"), "{ro:?}");
        assert_eq!(error_status("InsufficientStorage"), 507);
        assert_eq!(error_status("StorageUnavailable"), 503);
    }

    #[test]
    fn metrics_are_open_to_loopback_or_when_public_else_need_the_token() {
        let access = Access { token: Some(Secret::new("t")), metrics_public: false };
        let req = |auth: Option<&str>| {
            let mut b = axum::http::Request::builder().uri("/metrics");
            if let Some(a) = auth {
                b = b.header("authorization", a);
            }
            b.body(axum::body::Body::empty()).unwrap()
        };
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let local6: SocketAddr = "[::1]:5000".parse().unwrap();
        let remote: SocketAddr = "10.1.2.3:5000".parse().unwrap();
        assert!(metrics_allowed(&access, Some(local), &req(None)).is_ok());
        assert!(metrics_allowed(&access, Some(local6), &req(None)).is_ok());
        assert_eq!(metrics_allowed(&access, Some(remote), &req(None)).unwrap_err().status, StatusCode::UNAUTHORIZED);
        assert!(metrics_allowed(&access, None, &req(None)).is_err(), "no peer info counts as remote");
        assert!(metrics_allowed(&access, Some(remote), &req(Some("Bearer t"))).is_ok());
        let public = Access { metrics_public: true, ..access };
        assert!(metrics_allowed(&public, Some(remote), &req(None)).is_ok());
    }
}

/// Extractors whose rejections answer in the API's error shape (`InvalidParameter` with the
/// reason) instead of axum's plain-text defaults.
pub mod extract {
    use axum::extract::{FromRequest, FromRequestParts, Request};
    use axum::http::request::Parts;
    use serde::de::DeserializeOwned;

    use super::ApiError;

    pub struct Json<T>(pub T);

    impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
        type Rejection = ApiError;

        async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
            axum::Json::<T>::from_request(req, state)
                .await
                .map(|axum::Json(v)| Json(v))
                .map_err(|e| ApiError::invalid(format!("invalid JSON body: {}", e.body_text())))
        }
    }

    pub struct Query<T>(pub T);

    impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
        type Rejection = ApiError;

        async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
            axum::extract::Query::<T>::from_request_parts(parts, state)
                .await
                .map(|axum::extract::Query(v)| Query(v))
                .map_err(|e| ApiError::invalid(format!("invalid query string: {}", e.body_text())))
        }
    }

    pub struct Path<T>(pub T);

    impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
        type Rejection = ApiError;

        async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
            axum::extract::Path::<T>::from_request_parts(parts, state)
                .await
                .map(|axum::extract::Path(v)| Path(v))
                .map_err(|e| ApiError::invalid(format!("invalid path: {}", e.body_text())))
        }
    }
}
