//! Drop-in compatibility: Alibaba Cloud ESA's scheduled-preload OpenAPI (2024-09-10) served on a
//! listener of its own, so code written against the official ESA SDK drives preloadd by changing
//! only the endpoint and the keys. Behind it are the same engine, jobs and plans as the native
//! API: a job made through one is visible through the other.
//!
//! Requests are RPC style (`POST /`, parameters in the query and a form body), signed with
//! ACS3-HMAC-SHA256 (or the legacy HMAC-SHA1) and checked against `[api.compat]`'s key, with the
//! vendor's skew and nonce rules.

mod esa;
mod mcdn;

pub use esa::encode_id;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use serde_json::{json, Value};

use crate::config::CompatConfig;
use crate::emulator::protocol::{http_parts, ApiError as AliError, Params};
use crate::engine::Engine;
use crate::sign::{self, Scheme};

/// How long a signature stays valid and a nonce stays remembered (Alibaba: 15 minutes).
const SKEW_MS: i64 = 15 * 60 * 1000;

#[derive(Clone)]
pub struct CompatState {
    engine: Arc<Engine>,
    config: Arc<CompatConfig>,
    limiter: Arc<governor::DefaultDirectRateLimiter>,
    nonces: Arc<Mutex<HashMap<String, i64>>>,
}

pub fn router(engine: Arc<Engine>, config: CompatConfig) -> Router {
    let rate = NonZeroU32::new(config.requests_per_second).unwrap_or(NonZeroU32::MIN);
    let state = CompatState {
        engine,
        limiter: Arc::new(governor::RateLimiter::direct(governor::Quota::per_second(rate))),
        config: Arc::new(config),
        nonces: Arc::default(),
    };
    Router::new().route("/", any(handle)).layer(axum::extract::DefaultBodyLimit::max(12 << 20)).with_state(state)
}

/// One OpenAPI call: authenticate, rate-limit, dispatch, answer in ESA's shapes.
async fn handle(State(s): State<CompatState>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let request_id = crate::api::request_id();
    let parts = http_parts(&method, &uri, &headers, &body);
    let params = Params::from_parts(&parts);
    if params.get("Version") == Some(mcdn::VERSION)
        && parts.header("authorization").is_some_and(|a| a.starts_with("HMAC-SHA256"))
    {
        return handle_mcdn(&s, &parts, &params, &body, &request_id).await;
    }
    let result = async {
        s.authenticate(&parts, &params)?;
        if s.limiter.check().is_err() {
            return Err(AliError::bad_request("TooManyRequests", "Too many requests.Please try again later."));
        }
        let action = parts
            .header("x-acs-action")
            .or_else(|| params.get("Action"))
            .ok_or_else(|| AliError::missing("Action"))?
            .to_string();
        let version = parts.header("x-acs-version").or_else(|| params.get("Version")).unwrap_or_default();
        if version != "2024-09-10" {
            return Err(AliError::bad_request("InvalidVersion", "Specified parameter Version is not valid."));
        }
        esa::dispatch(&s, &action, &params).await
    }
    .await;
    match result {
        Ok(mut v) => {
            v["RequestId"] = json!(request_id);
            reply(StatusCode::OK, &v, &request_id)
        }
        Err(e) => {
            let body = json!({
                "RequestId": request_id, "HostId": "esa.cn-hangzhou.aliyuncs.com", "Code": e.code, "Message": e.message,
                "Recommend": format!("https://api.aliyun.com/troubleshoot?q={}&product=ESA&requestId={request_id}", e.code),
            });
            reply(e.status, &body, &request_id)
        }
    }
}

/// Volcengine multi-cloud CDN: V4 signature, JSON body, `ResponseMetadata` / `Result` answers.
async fn handle_mcdn(
    s: &CompatState,
    parts: &sign::HttpParts,
    params: &Params,
    body: &[u8],
    request_id: &str,
) -> Response {
    let action = params.get("Action").unwrap_or_default().to_string();
    let result = async {
        let lookup = |ak: &str| (ak == s.config.access_key_id).then(|| s.config.secret.expose().to_string());
        let verified = sign::volc_verify(parts, lookup).map_err(|e| mcdn::VolcError {
            status: StatusCode::UNAUTHORIZED,
            code: e.vendor_code(Scheme::Volc),
            message: e.to_string(),
        })?;
        sign::check_skew(
            verified.signed_at,
            crate::clock::to_datetime(s.engine.now()),
            chrono::TimeDelta::milliseconds(SKEW_MS),
        )
        .map_err(|e| mcdn::VolcError {
            status: StatusCode::UNAUTHORIZED,
            code: e.vendor_code(Scheme::Volc),
            message: e.to_string(),
        })?;
        if s.limiter.check().is_err() {
            return Err(mcdn::VolcError {
                status: StatusCode::TOO_MANY_REQUESTS,
                code: "FlowLimitExceeded",
                message: "Too many requests".into(),
            });
        }
        let json: Value = if body.is_empty() {
            json!({})
        } else {
            serde_json::from_slice(body).map_err(|e| mcdn::VolcError {
                status: StatusCode::BAD_REQUEST,
                code: "InvalidParameter",
                message: format!("the body is not JSON: {e}"),
            })?
        };
        mcdn::dispatch(s, &action, &json).await
    }
    .await;
    let mut meta = json!({"RequestId": request_id, "Action": action, "Version": mcdn::VERSION, "Service": "mcdn", "Region": "cn-north-1"});
    match result {
        Ok(r) => reply(StatusCode::OK, &json!({"ResponseMetadata": meta, "Result": r}), request_id),
        Err(e) => {
            meta["Error"] = json!({"Code": e.code, "Message": e.message});
            reply(e.status, &json!({"ResponseMetadata": meta}), request_id)
        }
    }
}

/// The answer to a request whose body arrived too slowly, in ESA's error shape.
pub fn body_timeout_response() -> Response {
    let request_id = crate::api::request_id();
    let body = json!({
        "RequestId": request_id, "HostId": "esa.cn-hangzhou.aliyuncs.com", "Code": "RequestTimeout",
        "Message": "The request body arrived too slowly.",
    });
    reply(StatusCode::REQUEST_TIMEOUT, &body, &request_id)
}

fn reply(status: StatusCode, body: &Value, request_id: &str) -> Response {
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json;charset=utf-8"));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        r.headers_mut().insert("x-acs-request-id", v);
    }
    r
}

impl CompatState {
    fn authenticate(&self, parts: &sign::HttpParts, params: &Params) -> Result<(), AliError> {
        let lookup = |ak: &str| (ak == self.config.access_key_id).then(|| self.config.secret.expose().to_string());
        let (scheme, verified) = if parts.header("authorization").is_none() && params.get("Signature").is_some() {
            (Scheme::AliyunRpc, sign::rpc_verify(parts, lookup))
        } else {
            (Scheme::Acs3, sign::acs3_verify(parts, lookup))
        };
        let verified = verified.map_err(|e| AliError::from_sign(&e, scheme))?;
        let now = self.engine.now();
        sign::check_skew(verified.signed_at, crate::clock::to_datetime(now), chrono::TimeDelta::milliseconds(SKEW_MS))
            .map_err(|e| AliError::from_sign(&e, scheme))?;
        if let Some(nonce) = verified.nonce {
            let mut seen = self.nonces.lock().expect("nonce lock");
            seen.retain(|_, t| now - *t < SKEW_MS);
            if seen.insert(nonce, now).is_some() {
                return Err(AliError::from_sign(&sign::SignError::NonceReused, scheme));
            }
        }
        Ok(())
    }
}
