//! The HTTP API (axum): routes, authentication, request ids and the error mapping to the seed
//! error codes. Handlers translate between API types and the store; no SQL here.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::engine::Engine;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
}

pub fn router(state: AppState) -> Router {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).with_state(state)
}

/// A fresh request id (the seeds use UUID-like ids; ours are random hex).
pub fn request_id() -> String {
    let bytes: [u8; 16] = rand::random();
    let h = hex::encode_upper(bytes);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// An API error: the seed code, its HTTP status and a message.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"code": self.code, "message": self.message, "request_id": request_id()});
        (self.status, Json(body)).into_response()
    }
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "alive", "request_id": request_id()}))
}

async fn readyz(State(s): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    s.engine.store().check_writable().await.map_err(|e| ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        code: "NotReady",
        message: format!("the database is not writable: {e}"),
    })?;
    Ok(Json(json!({"status": "ready", "request_id": request_id()})))
}
