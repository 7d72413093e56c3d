//! The vendors' wire protocols as the emulator receives them: which vendor, action and signature
//! scheme a request uses, its parameters, and the JSON bodies of answers and errors.
//!
//! One listener serves every vendor, told apart by the request's shape, as the official SDKs
//! send it: Tencent Cloud names the action in an `X-TC-Action` header; Volcengine puts `Action`
//! and `Version` (2021-03-01) in the query and signs with `Authorization: HMAC-SHA256 ...`;
//! everything else is Alibaba Cloud (ACS3 headers, or RPC parameters), told apart by `Version`.
//! Alibaba parameters are the query and a form body merged; Volcengine and Tencent parameters
//! are the JSON body.

use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::model::VendorKind;
use crate::sign::{HttpParts, Scheme, SignError};

pub(super) const CDN_VERSION: &str = "2018-05-10";
pub(super) const ESA_VERSION: &str = "2024-09-10";
pub(super) const VOLC_VERSION: &str = crate::vendor::VOLC_VERSION;
pub(super) const TENCENT_VERSION: &str = crate::vendor::TENCENT_VERSION;
/// What Volcengine's answers name as service and region.
pub(super) const VOLC_SERVICE: &str = "CDN";
pub(super) const VOLC_REGION: &str = "cn-north-1";

const CDN_ACTIONS: &[&str] = &[
    "PushObjectCache",
    "RefreshObjectCaches",
    "DescribeRefreshTasks",
    "DescribeRefreshTaskById",
    "DescribeRefreshQuota",
];
const ESA_ACTIONS: &[&str] =
    &["PreloadCaches", "PurgeCaches", "DescribePreloadTasks", "DescribePurgeTasks", "GetPurgeQuota"];
const VOLC_ACTIONS: &[&str] =
    &["SubmitPreloadTask", "SubmitRefreshTask", "DescribeContentTasks", "DescribeContentQuota"];
const TENCENT_ACTIONS: &[&str] = &[
    "PushUrlsCache",
    "PurgeUrlsCache",
    "PurgePathCache",
    "DescribePushTasks",
    "DescribePurgeTasks",
    "DescribePushQuota",
    "DescribePurgeQuota",
];

/// One vendor request, identified but not yet authenticated.
pub(super) struct Call {
    pub request_id: String,
    pub vendor: VendorKind,
    /// One of the emulated actions; anything else was refused while parsing.
    pub action: &'static str,
    pub scheme: Scheme,
    pub parts: HttpParts,
    pub params: Params,
    /// The JSON body of a Volcengine or Tencent request (`Null` for Alibaba).
    pub json: Value,
}

/// A request refused before it was identified as a call: the vendor whose error shape to use.
pub(super) type Refusal = (VendorKind, ApiError);

impl Call {
    /// Identifies the vendor by the request's shape (see the module doc), then the action.
    pub fn parse(method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Result<Call, Refusal> {
        let parts = http_parts(method, uri, headers, body);
        if parts.header("x-tc-action").is_some() {
            return Self::parse_json(parts, VendorKind::TencentCdn);
        }
        let params = Params::from_parts(&parts);
        let volc_auth = parts.header("authorization").is_some_and(|a| a.starts_with("HMAC-SHA256 "));
        if volc_auth || (params.get("Version") == Some(VOLC_VERSION) && params.get("Signature").is_none()) {
            return Self::parse_json(parts, VendorKind::VolcengineCdn);
        }
        Self::parse_alibaba(parts, params).map_err(|e| (VendorKind::AliyunCdn, e))
    }

    /// ACS3 requests name the action and version in `x-acs-*` headers; RPC (SignatureVersion
    /// 1.0) requests in the `Action` and `Version` parameters. The SDKs send the `x-acs-*`
    /// headers with RPC too, so the scheme is decided by the signature, not by the headers.
    fn parse_alibaba(parts: HttpParts, params: Params) -> Result<Call, ApiError> {
        let scheme = if parts.header("authorization").is_none() && params.get("Signature").is_some() {
            Scheme::AliyunRpc
        } else {
            Scheme::Acs3
        };
        let named = |header: &str, param: &str| match scheme {
            Scheme::AliyunRpc => params.get(param).map(str::to_string),
            _ => parts.header(header).map(str::to_string),
        };
        let version = named("x-acs-version", "Version").ok_or_else(|| ApiError::missing("Version"))?;
        let action = named("x-acs-action", "Action").ok_or_else(|| ApiError::missing("Action"))?;
        let (vendor, actions) = match version.as_str() {
            CDN_VERSION => (VendorKind::AliyunCdn, CDN_ACTIONS),
            ESA_VERSION => (VendorKind::AliyunEsa, ESA_ACTIONS),
            _ => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "InvalidVersion",
                    "Specified parameter Version is not valid.",
                ))
            }
        };
        let action = actions.iter().copied().find(|a| *a == action).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "InvalidAction.NotFound",
                "Specified api is not found, please check your url and method.",
            )
        })?;
        Ok(Call { request_id: crate::api::request_id(), vendor, action, scheme, parts, params, json: Value::Null })
    }

    /// Volcengine (`Action`/`Version` in the query) and Tencent (`X-TC-Action`/`X-TC-Version`
    /// headers): a POST whose JSON body holds the parameters.
    fn parse_json(parts: HttpParts, vendor: VendorKind) -> Result<Call, Refusal> {
        let refuse = |e: ApiError| (vendor, e);
        let params = Params(parts.query.clone());
        let (action, version, wanted, actions, scheme) = match vendor {
            VendorKind::TencentCdn => (
                parts.header("x-tc-action").map(str::to_string),
                parts.header("x-tc-version").map(str::to_string),
                TENCENT_VERSION,
                TENCENT_ACTIONS,
                Scheme::Tc3,
            ),
            _ => (
                params.get("Action").map(str::to_string),
                params.get("Version").map(str::to_string),
                VOLC_VERSION,
                VOLC_ACTIONS,
                Scheme::Volc,
            ),
        };
        let action = action.ok_or_else(|| refuse(ApiError::missing_for(vendor, "Action")))?;
        let version = version.ok_or_else(|| refuse(ApiError::missing_for(vendor, "Version")))?;
        if version != wanted {
            return Err(refuse(ApiError::invalid_action(vendor, &action, &version)));
        }
        let action = actions
            .iter()
            .copied()
            .find(|a| *a == action)
            .ok_or_else(|| refuse(ApiError::invalid_action(vendor, &action, &version)))?;
        let json = if parts.body.iter().all(u8::is_ascii_whitespace) {
            Value::Object(Default::default())
        } else {
            match serde_json::from_slice::<Value>(&parts.body) {
                Ok(v @ Value::Object(_)) => v,
                _ => return Err(refuse(ApiError::invalid_for(vendor, "body (a JSON object)"))),
            }
        };
        Ok(Call { request_id: crate::api::request_id(), vendor, action, scheme, parts, params, json })
    }
}

pub(crate) fn http_parts(method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> HttpParts {
    let mut parts = HttpParts::new(method.as_str(), &percent_decode(uri.path()));
    parts.query = uri.query().map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
    parts.headers = headers
        .iter()
        .map(|(name, value)| (name.as_str().to_string(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
        .collect();
    parts.body = body.to_vec();
    parts
}

fn percent_decode(path: &str) -> String {
    // form_urlencoded would turn '+' into a space, which is wrong in a path.
    let escaped = path.replace('+', "%2B");
    form_urlencoded::parse(format!("p={escaped}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
}

/// Request parameters: the query first, then a form-encoded body. The SDKs put some parameters
/// in each (CDN `RefreshObjectCaches` sends `ObjectPath` in the body), and the vendor reads both.
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    pub(crate) fn from_parts(parts: &HttpParts) -> Params {
        let mut pairs = parts.query.clone();
        let form = parts
            .header("content-type")
            .is_some_and(|ct| ct.trim_start().to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
        if form {
            pairs.extend(form_urlencoded::parse(&parts.body).into_owned());
        }
        Params(pairs)
    }

    /// The first value of a parameter; an empty value counts as absent, as at the vendor.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
    }

    pub fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.get(name).ok_or_else(|| ApiError::missing(name))
    }

    /// A boolean flag; the SDKs send `true`/`false` (Python's `True`/`False` too).
    pub fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.get(name).map(str::to_ascii_lowercase).as_deref() {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(_) => Err(ApiError::invalid(name)),
        }
    }

    /// An integer within `range`, or `default` when absent.
    pub fn int(&self, name: &str, default: i64, range: std::ops::RangeInclusive<i64>) -> Result<i64, ApiError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v.trim().parse().ok().filter(|n| range.contains(n)).ok_or_else(|| ApiError::invalid(name)),
        }
    }

    /// A `yyyy-MM-ddTHH:mm:ssZ` time (any RFC 3339 time is accepted) as unix milliseconds.
    pub fn time(&self, name: &str) -> Result<Option<i64>, ApiError> {
        let Some(v) = self.get(name) else { return Ok(None) };
        chrono::DateTime::parse_from_rfc3339(v)
            .map(|t| t.timestamp_millis())
            .or_else(|_| {
                // The docs' `yyyy-MM-ddTHH:mmZ` form, without seconds.
                let minutes = v.strip_suffix('Z').unwrap_or(v);
                chrono::NaiveDateTime::parse_from_str(minutes, "%Y-%m-%dT%H:%M").map(|t| t.and_utc().timestamp_millis())
            })
            .map(Some)
            .map_err(|_| ApiError::invalid(name))
    }

    /// A parameter that carries JSON (array and object parameters: the SDKs send them as JSON
    /// strings).
    pub fn json(&self, name: &str) -> Result<Option<Value>, ApiError> {
        self.get(name).map(|v| serde_json::from_str(v).map_err(|_| ApiError::invalid(name))).transpose()
    }
}

/// An Alibaba Cloud error: HTTP status, vendor code, message.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into() }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn missing(name: &str) -> Self {
        Self::bad_request(
            "MissingParameter",
            format!("The input parameter \"{name}\" that is mandatory for processing this request is not supplied."),
        )
    }

    pub fn invalid(name: &str) -> Self {
        Self::bad_request("InvalidParameter", format!("The specified parameter \"{name}\" is not valid."))
    }

    /// The API gateway's flow control, for every action of both products (VENDORS.md).
    pub fn throttled() -> Self {
        Self::bad_request("Throttling.User", "Request was denied due to user flow control.")
    }

    /// Flow control as each vendor answers it: Alibaba `Throttling.User`, Volcengine
    /// `FlowLimitExceeded` (HTTP 429), Tencent `RequestLimitExceeded`.
    pub fn throttled_for(vendor: VendorKind) -> Self {
        match vendor {
            VendorKind::VolcengineCdn => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "FlowLimitExceeded",
                "Your request is denied due to flow limit, please retry later.",
            ),
            VendorKind::TencentCdn => {
                Self::bad_request("RequestLimitExceeded", "Your current request frequency has exceeded the limit.")
            }
            _ => Self::throttled(),
        }
    }

    pub fn service_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "The request has failed due to a temporary failure of the server.",
        )
    }

    /// A vendor that is down: Alibaba and Volcengine answer 503, Tencent `InternalError`.
    pub fn unavailable_for(vendor: VendorKind) -> Self {
        match vendor {
            VendorKind::VolcengineCdn => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailableTemp",
                "The service is temporarily unavailable, please retry later.",
            ),
            VendorKind::TencentCdn => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", "An internal error has occurred.")
            }
            _ => Self::service_unavailable(),
        }
    }

    /// A missing parameter in the vendor's words (Volcengine `MissingParameter`, Tencent
    /// `MissingParameter`).
    pub fn missing_for(vendor: VendorKind, name: &str) -> Self {
        match vendor {
            VendorKind::TencentCdn => {
                Self::bad_request("MissingParameter", format!("The request is missing a required parameter `{name}`."))
            }
            VendorKind::VolcengineCdn => {
                Self::bad_request("MissingParameter", format!("The parameter {name} is required."))
            }
            _ => Self::missing(name),
        }
    }

    /// An invalid parameter in the vendor's words.
    pub fn invalid_for(vendor: VendorKind, name: &str) -> Self {
        match vendor {
            VendorKind::TencentCdn => {
                Self::bad_request("InvalidParameter.CdnParamError", format!("Parameter error: {name}."))
            }
            VendorKind::VolcengineCdn => {
                Self::bad_request("InvalidParameter", format!("The parameter {name} is invalid."))
            }
            _ => Self::invalid(name),
        }
    }

    /// An action (or version) the vendor does not have.
    pub fn invalid_action(vendor: VendorKind, action: &str, version: &str) -> Self {
        match vendor {
            VendorKind::TencentCdn => Self::bad_request(
                "InvalidAction",
                format!("The requested action `{action}` of version `{version}` does not exist."),
            ),
            _ => Self::new(
                StatusCode::NOT_FOUND,
                "InvalidActionOrVersion",
                format!("Could not find operation {action} for version {version}"),
            ),
        }
    }

    /// The gateway's answer to a signature problem, with the vendor's codes and messages.
    pub fn from_sign(err: &SignError, scheme: Scheme) -> Self {
        let code = err.vendor_code(scheme);
        match scheme {
            Scheme::Tc3 => {
                let message = match err {
                    SignError::Expired => "Signature expired, the timestamp is too far from the server time.".into(),
                    SignError::UnknownAccessKey(_) => "The SecretId is not found, please check it.".into(),
                    SignError::SignatureMismatch => {
                        "The provided credentials could not be validated. Please check your signature is correct."
                            .into()
                    }
                    other => format!("The request signature is invalid: {other}."),
                };
                // Tencent answers every error with HTTP 200 and the code in the body.
                return Self::new(StatusCode::OK, code, message);
            }
            Scheme::Volc => {
                let status = match err {
                    SignError::SignatureMismatch | SignError::NonceReused => StatusCode::FORBIDDEN,
                    SignError::MissingHeader(_) => StatusCode::BAD_REQUEST,
                    _ => StatusCode::UNAUTHORIZED,
                };
                let message = match err {
                    SignError::SignatureMismatch => {
                        "The request signature we calculated does not match the signature you provided.".into()
                    }
                    SignError::UnknownAccessKey(_) => "The AccessKey ID you provided is invalid.".into(),
                    SignError::Expired => "The request timestamp is out of range.".into(),
                    other => format!("The request is not properly signed: {other}."),
                };
                return Self::new(status, code, message);
            }
            _ => {}
        }
        let message = match err {
            SignError::UnknownAccessKey(_) => "Specified access key is not found.".to_string(),
            SignError::SignatureMismatch => "Specified signature is not matched with our calculation.".to_string(),
            SignError::Expired => "Specified time stamp or date value is expired.".to_string(),
            SignError::NonceReused => "Specified signature nonce was used already.".to_string(),
            SignError::BadTimestamp(name) => {
                format!("Specified time stamp or date value \"{name}\" is not well formatted.")
            }
            SignError::MissingHeader(name) if scheme == Scheme::AliyunRpc => return Self::missing(name),
            other => format!("The request signature does not conform to Aliyun standards: {other}."),
        };
        let status =
            if matches!(err, SignError::UnknownAccessKey(_)) { StatusCode::NOT_FOUND } else { StatusCode::BAD_REQUEST };
        Self::new(status, code, message)
    }

    /// The error body in the vendor's shape. Alibaba: `RequestId`, `HostId`, `Code`, `Message`,
    /// `Recommend`. Volcengine: `ResponseMetadata` with `Error {Code, Message}`. Tencent:
    /// `Response {Error {Code, Message}, RequestId}`, always HTTP 200.
    pub fn render(self, vendor: VendorKind, request_id: &str, action: &str) -> Response {
        match vendor {
            VendorKind::VolcengineCdn => {
                let mut meta = volc_metadata(request_id, action);
                meta["Error"] =
                    json!({ "CodeN": volc_code_number(self.code), "Code": self.code, "Message": self.message });
                json_response(self.status, &json!({ "ResponseMetadata": meta }), request_id, vendor)
            }
            VendorKind::TencentCdn => {
                let body = json!({ "Response": {
                    "Error": { "Code": self.code, "Message": self.message },
                    "RequestId": request_id,
                }});
                json_response(StatusCode::OK, &body, request_id, vendor)
            }
            _ => {
                let (host, product) = match vendor {
                    VendorKind::AliyunEsa => ("esa.cn-hangzhou.aliyuncs.com", "ESA"),
                    _ => ("cdn.aliyuncs.com", "Cdn"),
                };
                let body = json!({
                    "RequestId": request_id,
                    "HostId": host,
                    "Code": self.code,
                    "Message": self.message,
                    "Recommend": format!(
                        "https://api.aliyun.com/troubleshoot?q={}&product={product}&requestId={request_id}",
                        self.code
                    ),
                });
                json_response(self.status, &body, request_id, vendor)
            }
        }
    }

    /// [`ApiError::render`] for an identified call.
    pub(super) fn into_response_for(self, call: &Call) -> Response {
        self.render(call.vendor, &call.request_id, call.action)
    }
}

/// Volcengine's `ResponseMetadata` without an error.
fn volc_metadata(request_id: &str, action: &str) -> Value {
    json!({
        "RequestId": request_id,
        "Action": action,
        "Version": VOLC_VERSION,
        "Service": VOLC_SERVICE.to_ascii_lowercase(),
        "Region": VOLC_REGION,
    })
}

/// The numeric `CodeN` Volcengine's gateway adds beside `Code`. The numbers are chosen (not
/// checked against the vendor's error-code page); clients, preloadd's included, read `Code`.
fn volc_code_number(code: &str) -> u32 {
    match code {
        "MissingAuthenticationToken" => 100_009,
        "InvalidAccessKey" => 100_009,
        "SignatureDoesNotMatch" => 100_010,
        "InvalidTimestamp" => 100_006,
        "FlowLimitExceeded" => 100_018,
        "ServiceUnavailableTemp" => 100_024,
        _ => 0,
    }
}

/// A success body in the vendor's shape: Alibaba, the action's fields plus `RequestId`;
/// Volcengine, `{ResponseMetadata, Result}`; Tencent, `{Response: {.., RequestId}}`.
pub(super) fn ok_response(mut body: Value, call: &Call) -> Response {
    let request_id = &call.request_id;
    match call.vendor {
        VendorKind::VolcengineCdn => {
            let wrapped = json!({ "ResponseMetadata": volc_metadata(request_id, call.action), "Result": body });
            json_response(StatusCode::OK, &wrapped, request_id, call.vendor)
        }
        VendorKind::TencentCdn => {
            if let Value::Object(map) = &mut body {
                map.insert("RequestId".to_string(), Value::String(request_id.to_string()));
            }
            json_response(StatusCode::OK, &json!({ "Response": body }), request_id, call.vendor)
        }
        _ => {
            if let Value::Object(map) = &mut body {
                map.insert("RequestId".to_string(), Value::String(request_id.to_string()));
            }
            json_response(StatusCode::OK, &body, request_id, call.vendor)
        }
    }
}

fn json_response(status: StatusCode, body: &Value, request_id: &str, vendor: VendorKind) -> Response {
    let mut response = (status, body.to_string()).into_response();
    let headers = response.headers_mut();
    // Tencent's SDK reads the error out of the body only when the type is exactly
    // `application/json`, as the vendor sends it.
    let (content_type, id_header) = match vendor {
        VendorKind::TencentCdn => ("application/json", None),
        VendorKind::VolcengineCdn => ("application/json; charset=utf-8", Some("x-tt-logid")),
        _ => ("application/json;charset=utf-8", Some("x-acs-request-id")),
    };
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let (Some(name), Ok(v)) = (id_header, HeaderValue::from_str(request_id)) {
        headers.insert(name, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_merge_query_and_form_body() {
        let mut parts = HttpParts::new("POST", "/");
        parts.query = vec![("Action".into(), "RefreshObjectCaches".into()), ("Empty".into(), String::new())];
        parts.set_header("Content-Type", "application/x-www-form-urlencoded");
        parts.body = b"ObjectPath=a.example.com%2Fx%0Ab.example.com%2Fy&Force=True".to_vec();
        let p = Params::from_parts(&parts);
        assert_eq!(p.get("Action"), Some("RefreshObjectCaches"));
        assert_eq!(p.get("ObjectPath"), Some("a.example.com/x\nb.example.com/y"));
        assert_eq!(p.get("Empty"), None);
        assert!(p.flag("Force").unwrap());
        assert!(!p.flag("Absent").unwrap());
    }

    #[test]
    fn times_and_ints() {
        let p = Params(vec![
            ("StartTime".into(), "2024-01-02T03:04:05Z".into()),
            ("Short".into(), "2024-01-02T03:04Z".into()),
            ("PageSize".into(), "101".into()),
        ]);
        assert_eq!(p.time("StartTime").unwrap(), Some(1_704_164_645_000));
        assert_eq!(p.time("Short").unwrap(), Some(1_704_164_640_000));
        assert_eq!(p.int("PageSize", 20, 1..=100).unwrap_err().code, "InvalidParameter");
        assert_eq!(p.int("PageNumber", 1, 1..=100_000).unwrap(), 1);
    }

    #[test]
    fn path_decoding_keeps_plus() {
        assert_eq!(percent_decode("/a%20b+c"), "/a b+c");
    }
}
