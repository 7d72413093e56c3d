//! Report subscriptions (seed 000: CreateCdnDeliverTask, DescribeCdnDeliverList,
//! UpdateCdnDeliverTask, DeleteCdnDeliverTask). Bodies take the fields as JSON values or, as the
//! seed sends them, as JSON-escaped strings; the seed's camelCase names are accepted too.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Map, Value};

use super::handlers::Paging;
use super::{request_id, ApiError, AppState};
use crate::clock::rfc3339;
use crate::config::parse_time;
use crate::reports::{Deliver, Frequency, ReportSchedule, ReportSelection, SpecError, SubscriptionSpec};
use crate::store::{StoreError, Subscription};

type ApiResult = Result<Json<Value>, ApiError>;

fn not_found() -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "SubscriptionNotFound", "the subscription is not found")
}

fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => not_found(),
        other => other.into(),
    }
}

fn time_error(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "TimeParseFailed", message)
}

fn spec_error(e: SpecError) -> ApiError {
    if e.time {
        time_error(e.to_string())
    } else {
        ApiError::invalid(e.to_string())
    }
}

fn schedule_json(s: &ReportSchedule) -> Value {
    json!({
        "sched_name": s.sched_name, "description": s.description, "crontab": s.crontab,
        "frequency": match s.frequency { Frequency::Hour => "h", Frequency::Day => "d", Frequency::Week => "w" },
        "status": if s.enabled { "enable" } else { "disable" }, "timezone": s.timezone,
        "effective_from": s.effective_from.map(rfc3339), "effective_end": s.effective_end.map(rfc3339),
    })
}

fn deliver_json(d: &Deliver) -> Value {
    match d {
        Deliver::Email(e) => json!({"email": {"subject": e.subject, "to": e.to}}),
        // The secret is write-only.
        Deliver::Webhook(w) => json!({"webhook": {"url": w.url, "format": w.format, "secret_set": w.secret.is_some()}}),
    }
}

fn subscription_json(s: &Subscription) -> Value {
    json!({
        "id": s.id, "name": s.spec.name, "reports": s.spec.reports, "domain_names": s.spec.domain_names,
        "deliver": deliver_json(&s.spec.deliver), "schedule": schedule_json(&s.spec.schedule),
        "source": s.source, "declarative": s.source == "config", "next_run": s.next_run.map(rfc3339),
        "created_at": rfc3339(s.created_at), "updated_at": rfc3339(s.updated_at),
    })
}

/// A field given as a JSON value or as a JSON-escaped string (the seed's form).
fn unescape(v: Value, key: &str) -> Result<Value, ApiError> {
    match v {
        Value::String(s) if key != "domain_names" => {
            serde_json::from_str(&s).map_err(|e| ApiError::invalid(format!("{key}: not valid JSON: {e}")))
        }
        other => Ok(other),
    }
}

/// The body's fields, each optional (create checks the required ones).
#[derive(Default)]
struct Input {
    name: Option<String>,
    reports: Option<Vec<ReportSelection>>,
    domain_names: Option<Vec<String>>,
    deliver: Option<Deliver>,
    schedule: Option<Map<String, Value>>,
}

fn parse_input(body: Value) -> Result<Input, ApiError> {
    let Value::Object(map) = body else { return Err(ApiError::invalid("the body must be a JSON object")) };
    let mut input = Input::default();
    for (key, v) in map {
        match key.as_str() {
            "name" | "Name" => {
                input.name =
                    Some(v.as_str().ok_or_else(|| ApiError::invalid("name must be a string"))?.trim().to_string())
            }
            "reports" | "Reports" => {
                input.reports = Some(
                    serde_json::from_value(unescape(v, "reports")?)
                        .map_err(|e| ApiError::invalid(format!("reports: {e}")))?,
                )
            }
            "domain_names" | "domain_name" | "DomainName" => {
                input.domain_names = Some(match v {
                    Value::String(s) => {
                        s.split(',').map(|d| d.trim().to_ascii_lowercase()).filter(|d| !d.is_empty()).collect()
                    }
                    Value::Null => Vec::new(),
                    other => serde_json::from_value::<Vec<String>>(other)
                        .map_err(|e| ApiError::invalid(format!("domain_names: {e}")))?
                        .into_iter()
                        .map(|d| d.trim().to_ascii_lowercase())
                        .collect(),
                })
            }
            "deliver" | "Deliver" => {
                input.deliver = Some(
                    serde_json::from_value(unescape(v, "deliver")?)
                        .map_err(|e| ApiError::invalid(format!("deliver: {e}")))?,
                )
            }
            "schedule" | "Schedule" => match unescape(v, "schedule")? {
                Value::Object(m) => input.schedule = Some(m),
                _ => return Err(ApiError::invalid("schedule must be an object")),
            },
            other => return Err(ApiError::invalid(format!("unknown field `{other}`"))),
        }
    }
    Ok(input)
}

/// Builds a schedule from its JSON fields (snake_case or the seed's camelCase).
fn parse_schedule(m: &Map<String, Value>) -> Result<ReportSchedule, ApiError> {
    let mut sched_name = String::new();
    let mut description = String::new();
    let mut crontab = None;
    let mut frequency = None;
    let mut enabled = true;
    let mut timezone = crate::reports::DEFAULT_TIMEZONE.to_string();
    let (mut from, mut end) = (None, None);
    let text = |k: &str, v: &Value| -> Result<Option<String>, ApiError> {
        match v {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s.clone())),
            _ => Err(ApiError::invalid(format!("schedule.{k} must be a string"))),
        }
    };
    let time = |k: &str, v: &Value| -> Result<Option<i64>, ApiError> {
        match text(k, v)? {
            None => Ok(None),
            Some(s) if s.trim().is_empty() => Ok(None),
            Some(s) => parse_time(&s).map(Some).map_err(|m| time_error(format!("schedule.{k}: {m}"))),
        }
    };
    for (k, v) in m {
        match k.as_str() {
            "sched_name" | "schedName" => sched_name = text(k, v)?.unwrap_or_default(),
            "description" => description = text(k, v)?.unwrap_or_default(),
            "crontab" => crontab = text(k, v)?,
            "frequency" => {
                frequency = Some(match text(k, v)?.as_deref() {
                    Some("h") => Frequency::Hour,
                    Some("d") => Frequency::Day,
                    Some("w") => Frequency::Week,
                    other => {
                        return Err(ApiError::invalid(format!(
                            "schedule.frequency `{}`: expected h, d or w",
                            other.unwrap_or("")
                        )))
                    }
                })
            }
            "status" => {
                enabled = match text(k, v)?.as_deref() {
                    None | Some("enable") => true,
                    Some("disable") => false,
                    Some(other) => {
                        return Err(ApiError::invalid(format!("schedule.status `{other}`: expected enable or disable")))
                    }
                }
            }
            "timezone" => timezone = text(k, v)?.unwrap_or(timezone),
            "effective_from" | "effectiveFrom" => from = time("effective_from", v)?,
            "effective_end" | "effectiveEnd" => end = time("effective_end", v)?,
            other => return Err(ApiError::invalid(format!("unknown field `schedule.{other}`"))),
        }
    }
    Ok(ReportSchedule {
        sched_name,
        description,
        crontab: crontab.ok_or_else(|| ApiError::invalid("schedule.crontab is required"))?,
        frequency: frequency.ok_or_else(|| ApiError::invalid("schedule.frequency is required (h, d or w)"))?,
        enabled,
        timezone,
        effective_from: from,
        effective_end: end,
    })
}

pub async fn create(State(s): State<AppState>, Json(body): Json<Value>) -> Result<(StatusCode, Json<Value>), ApiError> {
    let input = parse_input(body)?;
    let schedule = parse_schedule(&input.schedule.ok_or_else(|| ApiError::invalid("schedule is required"))?)?;
    let spec = SubscriptionSpec {
        name: input.name.ok_or_else(|| ApiError::invalid("name is required"))?,
        reports: input.reports.ok_or_else(|| ApiError::invalid("reports is required"))?,
        domain_names: input.domain_names.unwrap_or_default(),
        deliver: input.deliver.ok_or_else(|| ApiError::invalid("deliver is required"))?,
        schedule,
    };
    spec.validate().map_err(spec_error)?;
    let now = s.engine.now();
    let sub = s.engine.store().insert_subscription(&spec, "api", s.max_report_subscriptions, now).await?;
    let mut v = subscription_json(&sub);
    v["request_id"] = json!(request_id());
    Ok((StatusCode::CREATED, Json(v)))
}

pub async fn list(State(s): State<AppState>, Query(q): Query<Paging>) -> ApiResult {
    let (page_num, page_size) = q.pages()?;
    let (subs, total) = s.engine.store().list_subscriptions((page_num - 1) * page_size, page_size).await?;
    Ok(Json(json!({
        "report_subscriptions": subs.iter().map(subscription_json).collect::<Vec<_>>(),
        "pagination": {"page_num": page_num, "page_size": page_size, "total": total},
        "request_id": request_id(),
    })))
}

pub async fn get(State(s): State<AppState>, Path(id): Path<i64>) -> ApiResult {
    let store = s.engine.store();
    let sub = store.subscription(id).await.map_err(store_error)?;
    let deliveries = store.deliveries(id, 20).await?;
    let mut v = subscription_json(&sub);
    v["deliveries"] = deliveries
        .iter()
        .map(|d| {
            json!({
                "period_start": rfc3339(d.period_start), "period_end": rfc3339(d.period_end), "status": d.status,
                "attempts": d.attempts, "error": d.error, "next_attempt_at": d.next_attempt_at.map(rfc3339),
                "sent_at": d.sent_at.map(rfc3339),
            })
        })
        .collect();
    v["request_id"] = json!(request_id());
    Ok(Json(v))
}

async fn editable(s: &AppState, id: i64) -> Result<Subscription, ApiError> {
    let sub = s.engine.store().subscription(id).await.map_err(store_error)?;
    if sub.source == "config" {
        return Err(ApiError::invalid(format!(
            "report subscription `{}` is declared in the config file; edit the config and restart instead",
            sub.spec.name
        )));
    }
    Ok(sub)
}

/// Every field optional (seed: UpdateCdnDeliverTask); `schedule` fields merge into the current ones.
pub async fn update(State(s): State<AppState>, Path(id): Path<i64>, Json(body): Json<Value>) -> ApiResult {
    let sub = editable(&s, id).await?;
    let input = parse_input(body)?;
    let mut spec = sub.spec.clone();
    if let Some(n) = input.name {
        spec.name = n;
    }
    if let Some(r) = input.reports {
        spec.reports = r;
    }
    if let Some(d) = input.domain_names {
        spec.domain_names = d;
    }
    if let Some(d) = input.deliver {
        spec.deliver = d;
    }
    if let Some(patch) = input.schedule {
        let Value::Object(mut current) = schedule_json(&spec.schedule) else { unreachable!("an object") };
        for (k, v) in patch {
            let k = match k.as_str() {
                "schedName" => "sched_name".to_string(),
                "effectiveFrom" => "effective_from".to_string(),
                "effectiveEnd" => "effective_end".to_string(),
                _ => k,
            };
            current.insert(k, v);
        }
        spec.schedule = parse_schedule(&current)?;
    }
    spec.validate().map_err(spec_error)?;
    let sub = s.engine.store().update_subscription(id, &spec, s.engine.now()).await.map_err(store_error)?;
    let mut v = subscription_json(&sub);
    v["request_id"] = json!(request_id());
    Ok(Json(v))
}

pub async fn delete(State(s): State<AppState>, Path(id): Path<i64>) -> ApiResult {
    editable(&s, id).await?;
    s.engine.store().delete_subscription(id).await.map_err(store_error)?;
    Ok(Json(json!({"request_id": request_id()})))
}
