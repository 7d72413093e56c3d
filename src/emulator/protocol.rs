//! The Alibaba Cloud wire protocol as the emulator receives it: which product, action and
//! signature scheme a request uses, its parameters (query and form body merged, as the SDKs
//! split them), and the JSON bodies of answers and errors.

use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::model::VendorKind;
use crate::sign::{HttpParts, Scheme, SignError};

pub(super) const CDN_VERSION: &str = "2018-05-10";
pub(super) const ESA_VERSION: &str = "2024-09-10";

const CDN_ACTIONS: &[&str] = &[
    "PushObjectCache",
    "RefreshObjectCaches",
    "DescribeRefreshTasks",
    "DescribeRefreshTaskById",
    "DescribeRefreshQuota",
];
const ESA_ACTIONS: &[&str] =
    &["PreloadCaches", "PurgeCaches", "DescribePreloadTasks", "DescribePurgeTasks", "GetPurgeQuota"];

/// One vendor request, identified but not yet authenticated.
pub(super) struct Call {
    pub request_id: String,
    pub vendor: VendorKind,
    /// One of the emulated actions; anything else was refused while parsing.
    pub action: &'static str,
    pub scheme: Scheme,
    pub parts: HttpParts,
    pub params: Params,
}

impl Call {
    /// ACS3 requests name the action and version in `x-acs-*` headers; RPC (SignatureVersion
    /// 1.0) requests in the `Action` and `Version` parameters. The SDKs send the `x-acs-*`
    /// headers with RPC too, so the scheme is decided by the signature, not by the headers.
    pub fn parse(method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Result<Call, AliError> {
        let parts = http_parts(method, uri, headers, body);
        let params = Params::from_parts(&parts);
        let scheme = if parts.header("authorization").is_none() && params.get("Signature").is_some() {
            Scheme::AliyunRpc
        } else {
            Scheme::Acs3
        };
        let named = |header: &str, param: &str| match scheme {
            Scheme::AliyunRpc => params.get(param).map(str::to_string),
            _ => parts.header(header).map(str::to_string),
        };
        let version = named("x-acs-version", "Version").ok_or_else(|| AliError::missing("Version"))?;
        let action = named("x-acs-action", "Action").ok_or_else(|| AliError::missing("Action"))?;
        let (vendor, actions) = match version.as_str() {
            CDN_VERSION => (VendorKind::AliyunCdn, CDN_ACTIONS),
            ESA_VERSION => (VendorKind::AliyunEsa, ESA_ACTIONS),
            _ => {
                return Err(AliError::new(
                    StatusCode::BAD_REQUEST,
                    "InvalidVersion",
                    "Specified parameter Version is not valid.",
                ))
            }
        };
        let action = actions.iter().copied().find(|a| *a == action).ok_or_else(|| {
            AliError::new(
                StatusCode::NOT_FOUND,
                "InvalidAction.NotFound",
                "Specified api is not found, please check your url and method.",
            )
        })?;
        Ok(Call { request_id: crate::api::request_id(), vendor, action, scheme, parts, params })
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

    pub fn required(&self, name: &str) -> Result<&str, AliError> {
        self.get(name).ok_or_else(|| AliError::missing(name))
    }

    /// A boolean flag; the SDKs send `true`/`false` (Python's `True`/`False` too).
    pub fn flag(&self, name: &str) -> Result<bool, AliError> {
        match self.get(name).map(str::to_ascii_lowercase).as_deref() {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(_) => Err(AliError::invalid(name)),
        }
    }

    /// An integer within `range`, or `default` when absent.
    pub fn int(&self, name: &str, default: i64, range: std::ops::RangeInclusive<i64>) -> Result<i64, AliError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v.trim().parse().ok().filter(|n| range.contains(n)).ok_or_else(|| AliError::invalid(name)),
        }
    }

    /// A `yyyy-MM-ddTHH:mm:ssZ` time (any RFC 3339 time is accepted) as unix milliseconds.
    pub fn time(&self, name: &str) -> Result<Option<i64>, AliError> {
        let Some(v) = self.get(name) else { return Ok(None) };
        chrono::DateTime::parse_from_rfc3339(v)
            .map(|t| t.timestamp_millis())
            .or_else(|_| {
                // The docs' `yyyy-MM-ddTHH:mmZ` form, without seconds.
                let minutes = v.strip_suffix('Z').unwrap_or(v);
                chrono::NaiveDateTime::parse_from_str(minutes, "%Y-%m-%dT%H:%M").map(|t| t.and_utc().timestamp_millis())
            })
            .map(Some)
            .map_err(|_| AliError::invalid(name))
    }

    /// A parameter that carries JSON (array and object parameters: the SDKs send them as JSON
    /// strings).
    pub fn json(&self, name: &str) -> Result<Option<Value>, AliError> {
        self.get(name).map(|v| serde_json::from_str(v).map_err(|_| AliError::invalid(name))).transpose()
    }
}

/// An Alibaba Cloud error: HTTP status, vendor code, message.
#[derive(Debug)]
pub(crate) struct AliError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl AliError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        AliError { status, code, message: message.into() }
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

    pub fn service_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "The request has failed due to a temporary failure of the server.",
        )
    }

    /// The gateway's answer to a signature problem, with Alibaba's messages.
    pub fn from_sign(err: &SignError, scheme: Scheme) -> Self {
        let code = err.vendor_code(scheme);
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

    /// The Alibaba error body: `RequestId`, `HostId`, `Code`, `Message`, `Recommend`.
    pub(super) fn into_response_for(self, call: Option<&Call>) -> Response {
        let request_id = call.map(|c| c.request_id.clone()).unwrap_or_else(crate::api::request_id);
        let (host, product) = match call.map(|c| c.vendor) {
            Some(VendorKind::AliyunEsa) => ("esa.cn-hangzhou.aliyuncs.com", "ESA"),
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
        json_response(self.status, &body, &request_id)
    }
}

/// A success body: the action's fields plus `RequestId`.
pub(super) fn ok_response(mut body: Value, request_id: &str) -> Response {
    if let Value::Object(map) = &mut body {
        map.insert("RequestId".to_string(), Value::String(request_id.to_string()));
    }
    json_response(StatusCode::OK, &body, request_id)
}

fn json_response(status: StatusCode, body: &Value, request_id: &str) -> Response {
    let mut response = (status, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json;charset=utf-8"));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert("x-acs-request-id", v);
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
