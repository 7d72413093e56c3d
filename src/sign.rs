//! Request signing and server-side verification for the vendor API signature schemes: Alibaba
//! ACS3-HMAC-SHA256 and RPC HMAC-SHA1, Volcengine HMAC-SHA256, Tencent TC3-HMAC-SHA256.
//!
//! Client and emulator share one canonicalisation per scheme, so a change that breaks signing also
//! breaks verification in the same test run. Canonicalisation follows the vendors' official SDKs
//! (alibabacloud_openapi_util, volcengine `SignerV4`, tencentcloud `_get_tc3_signature`), and the
//! tests pin each vendor's published worked example.
//!
//! Nothing here stores a secret: secrets are borrowed for the duration of one call and never reach
//! an error, a `Debug` value or a `Verified`.

use std::fmt::{self, Write as _};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;
type HmacSha1 = Hmac<Sha1>;

const ACS3_ALGORITHM: &str = "ACS3-HMAC-SHA256";
const VOLC_ALGORITHM: &str = "HMAC-SHA256";
const TC3_ALGORITHM: &str = "TC3-HMAC-SHA256";
const ACS3_DATE_FORMAT: &str = "%Y-%m-%dT%H:%M:%SZ";
const VOLC_DATE_FORMAT: &str = "%Y%m%dT%H%M%SZ";
const RPC_SIGNATURE_METHOD: &str = "HMAC-SHA1";
const RPC_SIGNATURE_VERSION: &str = "1.0";
const TC3_UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// One HTTP request as both the signer and the verifier see it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpParts {
    pub method: String,
    /// Decoded path; an empty path signs as `/`.
    pub path: String,
    /// Decoded query pairs, in the order they are (or were) sent.
    pub query: Vec<(String, String)>,
    /// Header names in any case; a name may repeat.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpParts {
    pub fn new(method: &str, path: &str) -> Self {
        Self { method: method.to_string(), path: path.to_string(), ..Self::default() }
    }

    /// First value of a header, matched case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Replaces every header of that name, so re-signing a request never leaves a stale copy.
    pub fn set_header(&mut self, name: &str, value: impl Into<String>) {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self.headers.push((name.to_string(), value.into()));
    }

    fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers.iter().filter(move |(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// The signing schemes, used to pick vendor error codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    Acs3,
    AliyunRpc,
    Volc,
    Tc3,
}

/// What a successful verification proves; staleness and nonce reuse are the caller's to judge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub access_key_id: String,
    pub signed_at: DateTime<Utc>,
    /// `x-acs-signature-nonce` or `SignatureNonce`; Volcengine and TC3 carry none.
    pub nonce: Option<String>,
    /// Credential scope (`date/region/service/request`, `date/service/tc3_request`), so the caller
    /// can refuse a signature made for another region or service.
    pub scope: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignError {
    /// No Authorization header (no `Signature` parameter for RPC).
    MissingAuthorization,
    MalformedAuthorization(&'static str),
    /// A header or parameter the scheme needs is absent; holds its name.
    MissingHeader(String),
    /// A time header or parameter does not parse; holds its name.
    BadTimestamp(String),
    /// The access key id is not known; an id is not a secret, so it is kept for the message.
    UnknownAccessKey(String),
    SignatureMismatch,
    /// Produced by [`check_skew`].
    Expired,
    /// Never produced here: nonce bookkeeping needs state, which the caller owns.
    NonceReused,
}

impl fmt::Display for SignError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingAuthorization => f.write_str("request carries no signature"),
            Self::MalformedAuthorization(why) => write!(f, "malformed authorization: {why}"),
            Self::MissingHeader(name) => write!(f, "required signing input {name} is missing"),
            Self::BadTimestamp(name) => write!(f, "{name} is not a valid timestamp"),
            Self::UnknownAccessKey(id) => write!(f, "access key id {id} is not known"),
            Self::SignatureMismatch => f.write_str("signature does not match"),
            Self::Expired => f.write_str("signature time is outside the allowed skew"),
            Self::NonceReused => f.write_str("signature nonce was already used"),
        }
    }
}

impl std::error::Error for SignError {}

impl SignError {
    /// The error code the vendor answers with, for the emulator's error bodies.
    pub fn vendor_code(&self, scheme: Scheme) -> &'static str {
        match scheme {
            Scheme::Acs3 | Scheme::AliyunRpc => self.alibaba_code(scheme),
            Scheme::Volc => self.volc_code(),
            Scheme::Tc3 => self.tc3_code(),
        }
    }

    fn alibaba_code(&self, scheme: Scheme) -> &'static str {
        match self {
            Self::MissingAuthorization | Self::MalformedAuthorization(_) => "IncompleteSignature",
            // RPC common parameters are ordinary parameters to Alibaba's gateway.
            Self::MissingHeader(_) if scheme == Scheme::AliyunRpc => "MissingParameter",
            Self::MissingHeader(_) => "IncompleteSignature",
            Self::BadTimestamp(_) => "InvalidTimeStamp.Format",
            Self::UnknownAccessKey(_) => "InvalidAccessKeyId.NotFound",
            Self::SignatureMismatch => "SignatureDoesNotMatch",
            Self::Expired => "InvalidTimeStamp.Expired",
            Self::NonceReused => "SignatureNonceUsed",
        }
    }

    fn volc_code(&self) -> &'static str {
        match self {
            Self::MissingAuthorization => "MissingAuthenticationToken",
            Self::MalformedAuthorization(_) => "InvalidAuthorization",
            Self::MissingHeader(_) => "MissingRequestInfo",
            Self::BadTimestamp(_) | Self::Expired => "InvalidTimestamp",
            Self::UnknownAccessKey(_) => "InvalidAccessKey",
            Self::SignatureMismatch | Self::NonceReused => "SignatureDoesNotMatch",
        }
    }

    fn tc3_code(&self) -> &'static str {
        match self {
            Self::MissingAuthorization | Self::MalformedAuthorization(_) => "AuthFailure.InvalidAuthorization",
            Self::MissingHeader(_) => "MissingParameter",
            Self::BadTimestamp(_) => "InvalidParameter",
            Self::UnknownAccessKey(_) => "AuthFailure.SecretIdNotFound",
            Self::SignatureMismatch | Self::NonceReused => "AuthFailure.SignatureFailure",
            Self::Expired => "AuthFailure.SignatureExpire",
        }
    }
}

/// Rejects a signature time further than `max_skew` from `now` in either direction, as the vendors
/// reject clocks running fast as well as slow.
pub fn check_skew(signed_at: DateTime<Utc>, now: DateTime<Utc>, max_skew: TimeDelta) -> Result<(), SignError> {
    let drift = now.signed_duration_since(signed_at);
    if drift > max_skew || drift < -max_skew {
        return Err(SignError::Expired);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Shared encoding and crypto

/// RFC 3986 percent-encoding: only `A-Z a-z 0-9 - _ . ~` stay literal (so space is `%20`, `*` is
/// `%2A`). Use it to build the query string actually sent, so it matches what was signed.
pub fn percent_encode(s: &str) -> String {
    encode_bytes(s, b"-_.~", false)
}

/// The query as ACS3, RPC and Volcengine canonicalise it: sorted by raw key (stable, so repeated
/// keys keep their order), each key and value percent-encoded.
pub fn canonical_query(pairs: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = pairs.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    sorted.iter().map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v))).collect::<Vec<_>>().join("&")
}

fn encode_bytes(s: &str, keep: &[u8], space_as_plus: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || keep.contains(&b) {
            out.push(char::from(b));
        } else if space_as_plus && b == b' ' {
            out.push('+');
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn encode_path(path: &str) -> String {
    if path.is_empty() {
        return "/".to_string();
    }
    encode_bytes(path, b"-_.~/", false)
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(msg);
    mac
}

fn hmac_sha256_bytes(key: &[u8], msg: &[u8]) -> Vec<u8> {
    hmac_sha256(key, msg).finalize().into_bytes().to_vec()
}

/// Compares in constant time through `Mac::verify_slice`. Only lowercase hex is accepted because
/// that is what every one of these vendors emits and compares against.
fn verify_hex(mac: HmacSha256, provided: &str) -> Result<(), SignError> {
    if !provided.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(SignError::SignatureMismatch);
    }
    let tag = hex::decode(provided).map_err(|_| SignError::SignatureMismatch)?;
    mac.verify_slice(&tag).map_err(|_| SignError::SignatureMismatch)
}

fn parse_utc(value: &str, format: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(value, format).ok().map(|naive| naive.and_utc())
}

fn required_header<'a>(parts: &'a HttpParts, name: &str) -> Result<&'a str, SignError> {
    parts.header(name).ok_or_else(|| SignError::MissingHeader(name.to_string()))
}

/// How a scheme turns a header's values into its canonical line.
#[derive(Clone, Copy)]
enum HeaderStyle {
    /// alibabacloud_openapi_util: trim each value, sort, join with `,`.
    Acs3,
    /// volcengine SignerV4: default ports 80/443 are dropped from `host`.
    Volc,
    /// Tencent's doc: names and values lowercased and trimmed.
    Tc3,
}

fn canonical_headers(parts: &HttpParts, names: &[String], style: HeaderStyle) -> Result<String, SignError> {
    let mut out = String::new();
    for name in names {
        let mut values: Vec<String> = parts.header_values(name).map(|v| v.trim().to_string()).collect();
        if values.is_empty() {
            return Err(SignError::MissingHeader(name.clone()));
        }
        match style {
            HeaderStyle::Acs3 => values.sort(),
            HeaderStyle::Volc if name.eq_ignore_ascii_case("host") => {
                values = values.iter().map(|v| strip_default_port(v)).collect();
            }
            HeaderStyle::Volc => {}
            HeaderStyle::Tc3 => values = values.iter().map(|v| v.to_lowercase()).collect(),
        }
        let _ = writeln!(out, "{name}:{}", values.join(","));
    }
    Ok(out)
}

fn strip_default_port(host: &str) -> String {
    match host.split_once(':') {
        Some((name, "80" | "443")) => name.to_string(),
        _ => host.to_string(),
    }
}

/// Lowercased, de-duplicated, sorted names of the headers a client signs.
fn names_to_sign(parts: &HttpParts, wanted: impl Fn(&str) -> bool) -> Vec<String> {
    let mut names: Vec<String> =
        parts.headers.iter().map(|(k, _)| k.to_ascii_lowercase()).filter(|k| wanted(k)).collect();
    names.sort();
    names.dedup();
    names
}

/// Splits `Credential=..., SignedHeaders=..., Signature=...`; ACS3 separates with `,`, Volcengine
/// and TC3 with `, `, so fields are trimmed.
struct AuthFields<'a> {
    credential: &'a str,
    signed_headers: Vec<String>,
    signed_headers_raw: &'a str,
    signature: &'a str,
}

fn parse_auth_fields<'a>(header: &'a str, algorithm: &str) -> Result<AuthFields<'a>, SignError> {
    let rest = header
        .strip_prefix(algorithm)
        .and_then(|r| r.strip_prefix(' '))
        .ok_or(SignError::MalformedAuthorization("unsupported algorithm"))?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for field in rest.split(',') {
        let (key, value) =
            field.trim().split_once('=').ok_or(SignError::MalformedAuthorization("field without '='"))?;
        let slot = match key {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed,
            "Signature" => &mut signature,
            _ => return Err(SignError::MalformedAuthorization("unknown field")),
        };
        if slot.replace(value).is_some() {
            return Err(SignError::MalformedAuthorization("repeated field"));
        }
    }
    let credential =
        credential.filter(|c| !c.is_empty()).ok_or(SignError::MalformedAuthorization("missing Credential"))?;
    let signed_headers_raw = signed.ok_or(SignError::MalformedAuthorization("missing SignedHeaders"))?;
    let signature =
        signature.filter(|s| !s.is_empty()).ok_or(SignError::MalformedAuthorization("missing Signature"))?;
    let signed_headers: Vec<String> = signed_headers_raw.split(';').map(str::to_string).collect();
    if signed_headers.iter().any(String::is_empty) {
        return Err(SignError::MalformedAuthorization("empty SignedHeaders entry"));
    }
    Ok(AuthFields { credential, signed_headers, signed_headers_raw, signature })
}

fn require_signed(fields: &AuthFields<'_>, names: &[&str]) -> Result<(), SignError> {
    if names.iter().all(|n| fields.signed_headers.iter().any(|s| s == n)) {
        Ok(())
    } else {
        Err(SignError::MalformedAuthorization("a header the scheme requires is not signed"))
    }
}

fn lookup(access_key_id: &str, lookup_secret: impl Fn(&str) -> Option<String>) -> Result<String, SignError> {
    lookup_secret(access_key_id).ok_or_else(|| SignError::UnknownAccessKey(access_key_id.to_string()))
}

// ---------------------------------------------------------------------------------------------
// Alibaba ACS3-HMAC-SHA256 (signature V3)

/// Adds the `x-acs-*` headers V3 needs; `host` must already be present because it is signed.
pub fn acs3_prepare(
    parts: &mut HttpParts,
    action: &str,
    version: &str,
    date: DateTime<Utc>,
    nonce: &str,
) -> Result<(), SignError> {
    required_header(parts, "host")?;
    let body_hash = sha256_hex(&parts.body);
    parts.set_header("x-acs-action", action);
    parts.set_header("x-acs-version", version);
    parts.set_header("x-acs-date", date.format(ACS3_DATE_FORMAT).to_string());
    parts.set_header("x-acs-signature-nonce", nonce);
    parts.set_header("x-acs-content-sha256", body_hash);
    Ok(())
}

/// The Authorization value over `host`, `content-type` and every `x-acs-*` header present.
pub fn acs3_sign(access_key_id: &str, secret: &str, parts: &HttpParts) -> Result<String, SignError> {
    required_header(parts, "host")?;
    let names = names_to_sign(parts, |n| n == "host" || n == "content-type" || n.starts_with("x-acs-"));
    let signed = names.join(";");
    let string_to_sign = acs3_string_to_sign(parts, &names, &signed)?;
    let signature = hex::encode(hmac_sha256(secret.as_bytes(), string_to_sign.as_bytes()).finalize().into_bytes());
    Ok(format!("{ACS3_ALGORITHM} Credential={access_key_id},SignedHeaders={signed},Signature={signature}"))
}

/// Checks an ACS3 Authorization header over exactly the SignedHeaders it lists. `host` and every
/// `x-acs-*` header present must be among them, as the V3 doc requires, so an unsigned date or
/// nonce cannot be swapped in by a replayer.
pub fn acs3_verify(parts: &HttpParts, lookup_secret: impl Fn(&str) -> Option<String>) -> Result<Verified, SignError> {
    let header = parts.header("authorization").ok_or(SignError::MissingAuthorization)?;
    let fields = parse_auth_fields(header, ACS3_ALGORITHM)?;
    required_header(parts, "host")?;
    let must_sign = names_to_sign(parts, |n| n == "host" || n.starts_with("x-acs-"));
    let must_sign: Vec<&str> = must_sign.iter().map(String::as_str).collect();
    require_signed(&fields, &must_sign)?;
    let date = required_header(parts, "x-acs-date")?;
    let signed_at =
        parse_utc(date, ACS3_DATE_FORMAT).ok_or_else(|| SignError::BadTimestamp("x-acs-date".to_string()))?;
    let nonce = required_header(parts, "x-acs-signature-nonce")?.to_string();
    let string_to_sign = acs3_string_to_sign(parts, &fields.signed_headers, fields.signed_headers_raw)?;
    let secret = lookup(fields.credential, lookup_secret)?;
    verify_hex(hmac_sha256(secret.as_bytes(), string_to_sign.as_bytes()), fields.signature)?;
    Ok(Verified { access_key_id: fields.credential.to_string(), signed_at, nonce: Some(nonce), scope: None })
}

fn acs3_string_to_sign(parts: &HttpParts, names: &[String], signed: &str) -> Result<String, SignError> {
    // The payload line hashes the body actually carried, so a body that no longer matches its
    // x-acs-content-sha256 header fails as a signature mismatch, as it does at Alibaba.
    let canonical = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        parts.method,
        encode_path(&parts.path),
        canonical_query(&parts.query),
        canonical_headers(parts, names, HeaderStyle::Acs3)?,
        signed,
        sha256_hex(&parts.body),
    );
    Ok(format!("{ACS3_ALGORITHM}\n{}", sha256_hex(canonical.as_bytes())))
}

// ---------------------------------------------------------------------------------------------
// Alibaba RPC HMAC-SHA1 (SignatureVersion 1.0)

/// The common parameters SignatureVersion 1.0 adds besides `Signature`; `Action`, `Version` and
/// `Format` are the caller's.
pub fn rpc_common_params(access_key_id: &str, date: DateTime<Utc>, nonce: &str) -> Vec<(String, String)> {
    [
        ("AccessKeyId", access_key_id.to_string()),
        ("SignatureMethod", RPC_SIGNATURE_METHOD.to_string()),
        ("SignatureNonce", nonce.to_string()),
        ("SignatureVersion", RPC_SIGNATURE_VERSION.to_string()),
        ("Timestamp", date.format(ACS3_DATE_FORMAT).to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Base64 HMAC-SHA1 over every parameter except `Signature`, keyed with `secret + "&"`.
pub fn rpc_signature(secret: &str, method: &str, params: &[(String, String)]) -> String {
    BASE64.encode(rpc_mac(secret, method, params).finalize().into_bytes())
}

/// The parameters to add to a request (query or form body, the signature is the same): the
/// common ones from [`rpc_common_params`] followed by `Signature`. Signs the query plus, for a
/// form-encoded body, the body's parameters.
pub fn rpc_sign(
    access_key_id: &str,
    secret: &str,
    parts: &HttpParts,
    date: DateTime<Utc>,
    nonce: &str,
) -> Vec<(String, String)> {
    let mut added = rpc_common_params(access_key_id, date, nonce);
    let mut all = rpc_params(parts);
    all.extend(added.iter().cloned());
    added.push(("Signature".to_string(), rpc_signature(secret, &parts.method, &all)));
    added
}

/// Checks a SignatureVersion 1.0 request, whose signature and common parameters travel in the
/// query or in a form-encoded body.
pub fn rpc_verify(parts: &HttpParts, lookup_secret: impl Fn(&str) -> Option<String>) -> Result<Verified, SignError> {
    let params = rpc_params(parts);
    let get = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let need = |name: &str| get(name).ok_or_else(|| SignError::MissingHeader(name.to_string()));
    let signature = get("Signature").ok_or(SignError::MissingAuthorization)?;
    let access_key_id = need("AccessKeyId")?;
    if need("SignatureMethod")? != RPC_SIGNATURE_METHOD {
        return Err(SignError::MalformedAuthorization("unsupported SignatureMethod"));
    }
    if need("SignatureVersion")? != RPC_SIGNATURE_VERSION {
        return Err(SignError::MalformedAuthorization("unsupported SignatureVersion"));
    }
    let signed_at = parse_utc(need("Timestamp")?, ACS3_DATE_FORMAT)
        .ok_or_else(|| SignError::BadTimestamp("Timestamp".to_string()))?;
    let nonce = need("SignatureNonce")?.to_string();
    let secret = lookup(access_key_id, lookup_secret)?;
    let tag = BASE64.decode(signature).map_err(|_| SignError::SignatureMismatch)?;
    rpc_mac(&secret, &parts.method, &params).verify_slice(&tag).map_err(|_| SignError::SignatureMismatch)?;
    Ok(Verified { access_key_id: access_key_id.to_string(), signed_at, nonce: Some(nonce), scope: None })
}

fn rpc_string_to_sign(method: &str, params: &[(String, String)]) -> String {
    let unsigned: Vec<(String, String)> = params.iter().filter(|(k, _)| k != "Signature").cloned().collect();
    format!("{method}&{}&{}", percent_encode("/"), percent_encode(&canonical_query(&unsigned)))
}

fn rpc_mac(secret: &str, method: &str, params: &[(String, String)]) -> HmacSha1 {
    let key = format!("{secret}&");
    let mut mac = HmacSha1::new_from_slice(key.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(rpc_string_to_sign(method, params).as_bytes());
    mac
}

fn rpc_params(parts: &HttpParts) -> Vec<(String, String)> {
    let mut params = parts.query.clone();
    let form =
        parts.header("content-type").is_some_and(|ct| ct.trim_start().starts_with("application/x-www-form-urlencoded"));
    if form {
        params.extend(form_urlencoded::parse(&parts.body).into_owned());
    }
    params
}

// ---------------------------------------------------------------------------------------------
// Volcengine HMAC-SHA256

/// Adds `X-Date` and `X-Content-Sha256`; `Host` must already be present because it is signed.
pub fn volc_prepare(parts: &mut HttpParts, date: DateTime<Utc>) -> Result<(), SignError> {
    required_header(parts, "host")?;
    let body_hash = sha256_hex(&parts.body);
    parts.set_header("X-Date", date.format(VOLC_DATE_FORMAT).to_string());
    parts.set_header("X-Content-Sha256", body_hash);
    Ok(())
}

/// The Authorization value, signing what SignerV4 signs: `Content-Type`, `Content-Md5`, `Host`
/// and every `X-*` header present.
pub fn volc_sign(
    access_key_id: &str,
    secret: &str,
    region: &str,
    service: &str,
    parts: &HttpParts,
) -> Result<String, SignError> {
    required_header(parts, "host")?;
    let x_date = required_header(parts, "X-Date")?;
    let date = volc_short_date(x_date)?;
    let scope = format!("{date}/{region}/{service}/request");
    let names = names_to_sign(parts, |n| matches!(n, "content-type" | "content-md5" | "host") || n.starts_with("x-"));
    let signed = names.join(";");
    let string_to_sign = volc_string_to_sign(parts, &names, &signed, x_date, &scope)?;
    let key = volc_signing_key(secret, date, region, service);
    let signature = hex::encode(hmac_sha256(&key, string_to_sign.as_bytes()).finalize().into_bytes());
    Ok(format!(
        "{VOLC_ALGORITHM} Credential={access_key_id}/{scope}, \
         SignedHeaders={signed}, Signature={signature}"
    ))
}

/// Checks a Volcengine Authorization header over exactly the SignedHeaders it lists, which must
/// include `host` and `x-date`.
pub fn volc_verify(parts: &HttpParts, lookup_secret: impl Fn(&str) -> Option<String>) -> Result<Verified, SignError> {
    let header = parts.header("authorization").ok_or(SignError::MissingAuthorization)?;
    let fields = parse_auth_fields(header, VOLC_ALGORITHM)?;
    let (access_key_id, date, region, service) = match fields.credential.split('/').collect::<Vec<_>>().as_slice() {
        [ak, date, region, service, "request"] if !ak.is_empty() => (*ak, *date, *region, *service),
        _ => return Err(SignError::MalformedAuthorization("bad Credential scope")),
    };
    require_signed(&fields, &["host", "x-date"])?;
    let x_date = required_header(parts, "X-Date")?;
    let signed_at = parse_utc(x_date, VOLC_DATE_FORMAT).ok_or_else(|| SignError::BadTimestamp("X-Date".to_string()))?;
    if volc_short_date(x_date)? != date {
        return Err(SignError::SignatureMismatch);
    }
    let scope = format!("{date}/{region}/{service}/request");
    let string_to_sign = volc_string_to_sign(parts, &fields.signed_headers, fields.signed_headers_raw, x_date, &scope)?;
    let secret = lookup(access_key_id, lookup_secret)?;
    let key = volc_signing_key(&secret, date, region, service);
    verify_hex(hmac_sha256(&key, string_to_sign.as_bytes()), fields.signature)?;
    Ok(Verified { access_key_id: access_key_id.to_string(), signed_at, nonce: None, scope: Some(scope) })
}

fn volc_short_date(x_date: &str) -> Result<&str, SignError> {
    x_date
        .get(..8)
        .filter(|d| d.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| SignError::BadTimestamp("X-Date".to_string()))
}

fn volc_string_to_sign(
    parts: &HttpParts,
    names: &[String],
    signed: &str,
    x_date: &str,
    scope: &str,
) -> Result<String, SignError> {
    let canonical = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        parts.method,
        encode_path(&parts.path),
        canonical_query(&parts.query),
        canonical_headers(parts, names, HeaderStyle::Volc)?,
        signed,
        sha256_hex(&parts.body),
    );
    Ok(format!("{VOLC_ALGORITHM}\n{x_date}\n{scope}\n{}", sha256_hex(canonical.as_bytes())))
}

fn volc_signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k_date = hmac_sha256_bytes(secret.as_bytes(), date.as_bytes());
    let k_region = hmac_sha256_bytes(&k_date, region.as_bytes());
    let k_service = hmac_sha256_bytes(&k_region, service.as_bytes());
    hmac_sha256_bytes(&k_service, b"request")
}

// ---------------------------------------------------------------------------------------------
// Tencent TC3-HMAC-SHA256

/// Adds the `X-TC-*` common headers and, if absent, the Content-Type the SDK would send (JSON for
/// POST, form for GET); `Host` must already be present because it is signed.
pub fn tc3_prepare(
    parts: &mut HttpParts,
    action: &str,
    version: &str,
    region: Option<&str>,
    timestamp: DateTime<Utc>,
) -> Result<(), SignError> {
    required_header(parts, "host")?;
    if parts.header("content-type").is_none() {
        let content_type = if parts.method.eq_ignore_ascii_case("GET") {
            "application/x-www-form-urlencoded"
        } else {
            "application/json; charset=utf-8"
        };
        parts.set_header("Content-Type", content_type);
    }
    parts.set_header("X-TC-Action", action);
    parts.set_header("X-TC-Version", version);
    parts.set_header("X-TC-Timestamp", timestamp.timestamp().to_string());
    if let Some(region) = region {
        parts.set_header("X-TC-Region", region);
    }
    Ok(())
}

/// The Authorization value over `content-type;host`, as the official SDKs sign.
pub fn tc3_sign(secret_id: &str, secret: &str, service: &str, parts: &HttpParts) -> Result<String, SignError> {
    let (timestamp, signed_at) = tc3_timestamp(parts)?;
    let date = signed_at.format("%Y-%m-%d").to_string();
    let names = ["content-type".to_string(), "host".to_string()];
    let signed = names.join(";");
    let string_to_sign = tc3_string_to_sign(parts, &names, &signed, timestamp, &date, service)?;
    let key = tc3_signing_key(secret, &date, service);
    let signature = hex::encode(hmac_sha256(&key, string_to_sign.as_bytes()).finalize().into_bytes());
    Ok(format!(
        "{TC3_ALGORITHM} Credential={secret_id}/{date}/{service}/tc3_request, \
         SignedHeaders={signed}, Signature={signature}"
    ))
}

/// Checks a TC3 Authorization header over exactly the SignedHeaders it lists, which must include
/// `content-type` and `host`. The credential date must be the UTC date of `X-TC-Timestamp`.
pub fn tc3_verify(parts: &HttpParts, lookup_secret: impl Fn(&str) -> Option<String>) -> Result<Verified, SignError> {
    let header = parts.header("authorization").ok_or(SignError::MissingAuthorization)?;
    let fields = parse_auth_fields(header, TC3_ALGORITHM)?;
    let (secret_id, date, service) = match fields.credential.split('/').collect::<Vec<_>>().as_slice() {
        [id, date, service, "tc3_request"] if !id.is_empty() => (*id, *date, *service),
        _ => return Err(SignError::MalformedAuthorization("bad Credential scope")),
    };
    require_signed(&fields, &["content-type", "host"])?;
    let (timestamp, signed_at) = tc3_timestamp(parts)?;
    if signed_at.format("%Y-%m-%d").to_string() != date {
        return Err(SignError::SignatureMismatch);
    }
    let string_to_sign =
        tc3_string_to_sign(parts, &fields.signed_headers, fields.signed_headers_raw, timestamp, date, service)?;
    let secret = lookup(secret_id, lookup_secret)?;
    let key = tc3_signing_key(&secret, date, service);
    verify_hex(hmac_sha256(&key, string_to_sign.as_bytes()), fields.signature)?;
    Ok(Verified {
        access_key_id: secret_id.to_string(),
        signed_at,
        nonce: None,
        scope: Some(format!("{date}/{service}/tc3_request")),
    })
}

fn tc3_timestamp(parts: &HttpParts) -> Result<(&str, DateTime<Utc>), SignError> {
    let raw = required_header(parts, "X-TC-Timestamp")?;
    let bad = || SignError::BadTimestamp("X-TC-Timestamp".to_string());
    let secs: i64 = raw.parse().map_err(|_| bad())?;
    let at = DateTime::from_timestamp(secs, 0).ok_or_else(bad)?;
    Ok((raw, at))
}

fn tc3_string_to_sign(
    parts: &HttpParts,
    names: &[String],
    signed: &str,
    timestamp: &str,
    date: &str,
    service: &str,
) -> Result<String, SignError> {
    let unsigned = parts.header("X-TC-Content-SHA256").is_some_and(|v| v == TC3_UNSIGNED_PAYLOAD);
    let payload_hash = if unsigned { sha256_hex(TC3_UNSIGNED_PAYLOAD.as_bytes()) } else { sha256_hex(&parts.body) };
    let canonical = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        parts.method,
        encode_path(&parts.path),
        tc3_query(&parts.query),
        canonical_headers(parts, names, HeaderStyle::Tc3)?,
        signed,
        payload_hash,
    );
    Ok(format!("{TC3_ALGORITHM}\n{timestamp}\n{date}/{service}/tc3_request\n{}", sha256_hex(canonical.as_bytes())))
}

/// TC3 signs the query string as sent, which the SDK builds with Python's `urlencode`: original
/// order, `quote_plus` encoding (space as `+`). preloadd only POSTs, where the query is empty.
fn tc3_query(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode_bytes(k, b"-_.~", true), encode_bytes(v, b"-_.~", true)))
        .collect::<Vec<_>>()
        .join("&")
}

fn tc3_signing_key(secret: &str, date: &str, service: &str) -> Vec<u8> {
    let k_date = hmac_sha256_bytes(format!("TC3{secret}").as_bytes(), date.as_bytes());
    let k_service = hmac_sha256_bytes(&k_date, service.as_bytes());
    hmac_sha256_bytes(&k_service, b"tc3_request")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    fn keys(ak: &str) -> Option<String> {
        (ak == "AK1").then(|| "s3cr3t-value".to_string())
    }

    fn no_keys(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn percent_encoding_is_rfc3986() {
        assert_eq!(percent_encode("AZaz09-_.~"), "AZaz09-_.~");
        assert_eq!(percent_encode("a b*c/d=e&é"), "a%20b%2Ac%2Fd%3De%26%C3%A9");
        assert_eq!(encode_path("/a b/c~"), "/a%20b/c~");
        assert_eq!(encode_path(""), "/");
        assert_eq!(canonical_query(&pairs(&[("b", "2"), ("a", "x y"), ("b", "1")])), "a=x%20y&b=2&b=1");
    }

    // ------------------------------------------------------------------ ACS3

    /// The "Fixed parameter values" example of Alibaba's "Request syntax and signature method
    /// V3" page (alibabacloud.com/help/en/sdk/product-overview/v3-request-structure-and-signature).
    fn acs3_doc_request() -> HttpParts {
        let mut parts = HttpParts::new("POST", "/");
        parts.query =
            pairs(&[("ImageId", "win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd"), ("RegionId", "cn-shanghai")]);
        parts.set_header("host", "ecs.cn-shanghai.aliyuncs.com");
        acs3_prepare(
            &mut parts,
            "RunInstances",
            "2014-05-26",
            utc(2023, 10, 26, 10, 22, 32),
            "3156853299f313e23d1673dc12e1703d",
        )
        .unwrap();
        parts
    }

    #[test]
    fn acs3_matches_the_documented_example() {
        let parts = acs3_doc_request();
        let names = names_to_sign(&parts, |n| n == "host" || n.starts_with("x-acs-"));
        let string_to_sign = acs3_string_to_sign(&parts, &names, &names.join(";")).unwrap();
        assert_eq!(
            string_to_sign,
            "ACS3-HMAC-SHA256\n7ea06492da5221eba5297e897ce16e55f964061054b7695beedaac1145b1e259"
        );
        assert_eq!(
            acs3_sign("YourAccessKeyId", "YourAccessKeySecret", &parts).unwrap(),
            "ACS3-HMAC-SHA256 Credential=YourAccessKeyId,SignedHeaders=host;x-acs-action;\
             x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,\
             Signature=06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"
        );
    }

    fn acs3_signed() -> HttpParts {
        let mut parts = HttpParts::new("POST", "/");
        parts.query = pairs(&[("DomainName", "cdn.example.com"), ("Area", "domestic")]);
        parts.set_header("Host", "cdn.aliyuncs.com");
        parts.set_header("Content-Type", "application/x-www-form-urlencoded");
        parts.body = b"ObjectPath=https%3A%2F%2Fcdn.example.com%2Fa.js".to_vec();
        acs3_prepare(&mut parts, "PushObjectCache", "2018-05-10", utc(2024, 1, 2, 3, 4, 5), "n-1").unwrap();
        let auth = acs3_sign("AK1", "s3cr3t-value", &parts).unwrap();
        parts.set_header("Authorization", auth);
        parts
    }

    #[test]
    fn acs3_round_trip() {
        let verified = acs3_verify(&acs3_signed(), keys).unwrap();
        assert_eq!(verified.access_key_id, "AK1");
        assert_eq!(verified.signed_at, utc(2024, 1, 2, 3, 4, 5));
        assert_eq!(verified.nonce.as_deref(), Some("n-1"));
        assert!(acs3_verify(&acs3_doc_signed(), |ak| {
            (ak == "YourAccessKeyId").then(|| "YourAccessKeySecret".to_string())
        })
        .is_ok());
    }

    fn acs3_doc_signed() -> HttpParts {
        let mut parts = acs3_doc_request();
        let auth = acs3_sign("YourAccessKeyId", "YourAccessKeySecret", &parts).unwrap();
        parts.set_header("authorization", auth);
        parts
    }

    #[test]
    fn acs3_rejects_tampering() {
        let mut body = acs3_signed();
        body.body.push(b'x');
        assert_eq!(acs3_verify(&body, keys), Err(SignError::SignatureMismatch));

        let mut query = acs3_signed();
        query.query[1].1 = "overseas".to_string();
        assert_eq!(acs3_verify(&query, keys), Err(SignError::SignatureMismatch));

        let mut header = acs3_signed();
        header.set_header("x-acs-signature-nonce", "n-2");
        assert_eq!(acs3_verify(&header, keys), Err(SignError::SignatureMismatch));

        assert_eq!(acs3_verify(&acs3_signed(), no_keys), Err(SignError::UnknownAccessKey("AK1".to_string())));
        assert_eq!(acs3_verify(&acs3_signed(), |_| Some("other".to_string())), Err(SignError::SignatureMismatch));
    }

    #[test]
    fn acs3_reports_missing_and_malformed_inputs() {
        let mut none = acs3_signed();
        none.headers.retain(|(k, _)| k != "Authorization");
        assert_eq!(acs3_verify(&none, keys), Err(SignError::MissingAuthorization));

        let mut date = acs3_signed();
        date.headers.retain(|(k, _)| k != "x-acs-date");
        // An x-acs-date listed in SignedHeaders but absent is reported by name.
        assert_eq!(acs3_verify(&date, keys), Err(SignError::MissingHeader("x-acs-date".to_string())));

        let mut unsigned = acs3_signed();
        unsigned.set_header("x-acs-extra", "1");
        assert!(matches!(acs3_verify(&unsigned, keys), Err(SignError::MalformedAuthorization(_))));

        let mut garbled = acs3_signed();
        garbled.set_header("Authorization", "ACS3-HMAC-SHA256 Credential=AK1");
        assert!(matches!(acs3_verify(&garbled, keys), Err(SignError::MalformedAuthorization(_))));

        let mut wrong_alg = acs3_signed();
        wrong_alg.set_header("Authorization", "HMAC-SHA256 Credential=AK1");
        assert!(matches!(acs3_verify(&wrong_alg, keys), Err(SignError::MalformedAuthorization(_))));

        let mut upper = acs3_signed();
        let auth = upper.header("authorization").unwrap().to_string();
        let (head, sig) = auth.split_once("Signature=").unwrap();
        upper.set_header("Authorization", format!("{head}Signature={}", sig.to_uppercase()));
        assert_eq!(acs3_verify(&upper, keys), Err(SignError::SignatureMismatch));
    }

    // ------------------------------------------------------------------ RPC HMAC-SHA1

    /// The DescribeRegions example of Alibaba's "Request signatures" (RPC, SignatureVersion 1.0)
    /// page: GET http://ecs.aliyuncs.com/?Timestamp=2016-02-23T12:46:24Z&Format=XML&...
    fn rpc_doc_params() -> Vec<(String, String)> {
        pairs(&[
            ("Timestamp", "2016-02-23T12:46:24Z"),
            ("Format", "XML"),
            ("AccessKeyId", "testid"),
            ("Action", "DescribeRegions"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"),
            ("Version", "2014-05-26"),
            ("SignatureVersion", "1.0"),
        ])
    }

    #[test]
    fn rpc_matches_the_documented_example() {
        let params = rpc_doc_params();
        assert_eq!(
            rpc_string_to_sign("GET", &params),
            "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions%26Format%3DXML\
             %26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf\
             %26SignatureVersion%3D1.0%26Timestamp%3D2016-02-23T12%253A46%253A24Z\
             %26Version%3D2014-05-26"
        );
        assert_eq!(rpc_signature("testsecret", "GET", &params), "OLeaidS1JvxuMvnyHOwuJ+uX5qY=");

        let mut parts = HttpParts::new("GET", "/");
        parts.query = pairs(&[("Action", "DescribeRegions"), ("Format", "XML"), ("Version", "2014-05-26")]);
        let added = rpc_sign(
            "testid",
            "testsecret",
            &parts,
            utc(2016, 2, 23, 12, 46, 24),
            "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf",
        );
        assert_eq!(added.last().unwrap(), &("Signature".to_string(), "OLeaidS1JvxuMvnyHOwuJ+uX5qY=".to_string()));
    }

    fn rpc_signed_form() -> HttpParts {
        let mut parts = HttpParts::new("POST", "/");
        parts.query = pairs(&[("Action", "PushObjectCache"), ("Version", "2018-05-10")]);
        parts.set_header("Content-Type", "application/x-www-form-urlencoded");
        parts.body = b"ObjectPath=https%3A%2F%2Fcdn.example.com%2Fa+b.js&Area=domestic".to_vec();
        let added = rpc_sign("AK1", "s3cr3t-value", &parts, utc(2024, 1, 2, 3, 4, 5), "n-9");
        parts.query.extend(added);
        parts
    }

    #[test]
    fn rpc_round_trip() {
        let verified = rpc_verify(&rpc_signed_form(), keys).unwrap();
        assert_eq!(verified.access_key_id, "AK1");
        assert_eq!(verified.signed_at, utc(2024, 1, 2, 3, 4, 5));
        assert_eq!(verified.nonce.as_deref(), Some("n-9"));

        let mut doc = HttpParts::new("GET", "/");
        doc.query = rpc_doc_params();
        doc.query.push(("Signature".to_string(), "OLeaidS1JvxuMvnyHOwuJ+uX5qY=".to_string()));
        let verified = rpc_verify(&doc, |ak| (ak == "testid").then(|| "testsecret".to_string()));
        assert_eq!(verified.unwrap().signed_at, utc(2016, 2, 23, 12, 46, 24));
    }

    #[test]
    fn rpc_rejects_tampering() {
        let mut body = rpc_signed_form();
        body.body.extend_from_slice(b"&Force=true");
        assert_eq!(rpc_verify(&body, keys), Err(SignError::SignatureMismatch));

        let mut query = rpc_signed_form();
        query.query[0].1 = "RefreshObjectCaches".to_string();
        assert_eq!(rpc_verify(&query, keys), Err(SignError::SignatureMismatch));

        let mut method = rpc_signed_form();
        method.method = "GET".to_string();
        assert_eq!(rpc_verify(&method, keys), Err(SignError::SignatureMismatch));

        assert_eq!(rpc_verify(&rpc_signed_form(), no_keys), Err(SignError::UnknownAccessKey("AK1".to_string())));

        let mut unsigned = rpc_signed_form();
        unsigned.query.retain(|(k, _)| k != "Signature");
        assert_eq!(rpc_verify(&unsigned, keys), Err(SignError::MissingAuthorization));

        let mut no_time = rpc_signed_form();
        no_time.query.retain(|(k, _)| k != "Timestamp");
        assert_eq!(rpc_verify(&no_time, keys), Err(SignError::MissingHeader("Timestamp".to_string())));

        let mut bad_time = rpc_signed_form();
        for (k, v) in &mut bad_time.query {
            if k == "Timestamp" {
                *v = "yesterday".to_string();
            }
        }
        assert_eq!(rpc_verify(&bad_time, keys), Err(SignError::BadTimestamp("Timestamp".to_string())));
    }

    // ------------------------------------------------------------------ Volcengine

    /// The IAM ListUsers example of Volcengine's signature doc (volcengine.com/docs/6369/67270),
    /// with the doc's keys; intermediate values as reproduced by third-party signer tests.
    fn volc_doc_request() -> HttpParts {
        let mut parts = HttpParts::new("GET", "/");
        parts.query = pairs(&[("Action", "ListUsers"), ("Version", "2018-01-01"), ("Limit", "10"), ("Offset", "0")]);
        parts.set_header("Host", "iam.volcengineapi.com");
        parts.set_header("Content-Type", "application/x-www-form-urlencoded; charset=utf-8");
        volc_prepare(&mut parts, utc(2020, 12, 30, 8, 18, 5)).unwrap();
        parts
    }

    const VOLC_DOC_AK: &str = "AKLTMjI2ODVlYzI3ZGY1NGU4ZjhjYWRjMTlmNTM5OTZkYzE";
    const VOLC_DOC_SK: &str = "TnpCak5XWXpZV1U0WkRaaE5ERmxaR0ZpTmpjeVkyUXlZek0wTWpJMU1qWQ==";

    #[test]
    fn volc_matches_the_documented_example() {
        let parts = volc_doc_request();
        let names = names_to_sign(&parts, |_| true);
        let string_to_sign = volc_string_to_sign(
            &parts,
            &names,
            &names.join(";"),
            "20201230T081805Z",
            "20201230/cn-north-1/iam/request",
        )
        .unwrap();
        assert_eq!(
            string_to_sign,
            "HMAC-SHA256\n20201230T081805Z\n20201230/cn-north-1/iam/request\n\
             3a4d4dee07c3308a52da01bc12d7a83c3705bfa543f51648f46de880bb2a7447"
        );
        assert_eq!(
            volc_sign(VOLC_DOC_AK, VOLC_DOC_SK, "cn-north-1", "iam", &parts).unwrap(),
            "HMAC-SHA256 Credential=AKLTMjI2ODVlYzI3ZGY1NGU4ZjhjYWRjMTlmNTM5OTZkYzE/20201230/\
             cn-north-1/iam/request, SignedHeaders=content-type;host;x-content-sha256;x-date, \
             Signature=28eeabbbd726b87002e0fe58ad8c1c768e619b06e2646f35b6ad7ed029a6d8a7"
        );
    }

    fn volc_signed() -> HttpParts {
        let mut parts = HttpParts::new("POST", "/");
        parts.query = pairs(&[("Action", "SubmitPreloadTask"), ("Version", "2021-03-01")]);
        parts.set_header("Host", "cdn.volcengineapi.com:443");
        parts.set_header("Content-Type", "application/json");
        parts.body = br#"{"Urls":"https://cdn.example.com/a.js"}"#.to_vec();
        volc_prepare(&mut parts, utc(2024, 1, 2, 3, 4, 5)).unwrap();
        let auth = volc_sign("AK1", "s3cr3t-value", "cn-north-1", "CDN", &parts).unwrap();
        parts.set_header("Authorization", auth);
        parts
    }

    #[test]
    fn volc_round_trip() {
        let verified = volc_verify(&volc_signed(), keys).unwrap();
        assert_eq!(verified.access_key_id, "AK1");
        assert_eq!(verified.signed_at, utc(2024, 1, 2, 3, 4, 5));
        assert_eq!(verified.scope.as_deref(), Some("20240102/cn-north-1/CDN/request"));
        assert_eq!(verified.nonce, None);

        // SignerV4 drops the default port, so a proxy that removes it must not break the check.
        let mut no_port = volc_signed();
        no_port.set_header("Host", "cdn.volcengineapi.com");
        assert!(volc_verify(&no_port, keys).is_ok());
    }

    #[test]
    fn volc_rejects_tampering() {
        let mut body = volc_signed();
        body.body[3] = b'u';
        assert_eq!(volc_verify(&body, keys), Err(SignError::SignatureMismatch));

        let mut query = volc_signed();
        query.query.push(("Extra".to_string(), "1".to_string()));
        assert_eq!(volc_verify(&query, keys), Err(SignError::SignatureMismatch));

        let mut date = volc_signed();
        date.set_header("X-Date", "20240102T030406Z");
        assert_eq!(volc_verify(&date, keys), Err(SignError::SignatureMismatch));

        assert_eq!(volc_verify(&volc_signed(), no_keys), Err(SignError::UnknownAccessKey("AK1".to_string())));

        let mut no_date = volc_signed();
        no_date.headers.retain(|(k, _)| k != "X-Date");
        assert_eq!(volc_verify(&no_date, keys), Err(SignError::MissingHeader("X-Date".to_string())));

        let mut scope = volc_signed();
        let auth = scope.header("authorization").unwrap().replace("/request,", "/req,");
        scope.set_header("Authorization", auth);
        assert!(matches!(volc_verify(&scope, keys), Err(SignError::MalformedAuthorization(_))));
    }

    // ------------------------------------------------------------------ Tencent TC3

    /// The CVM DescribeInstances example of Tencent Cloud's "Signature v3" page; the payload keeps
    /// the doc's literal `\u` escapes.
    fn tc3_doc_request() -> HttpParts {
        let mut parts = HttpParts::new("POST", "/");
        parts.set_header("Content-Type", "application/json; charset=utf-8");
        parts.set_header("Host", "cvm.tencentcloudapi.com");
        parts.body =
            concat!(r#"{"Limit": 1, "Filters": [{"Values": ["\u672a\u547d\u540d"], "#, r#""Name": "instance-name"}]}"#)
                .as_bytes()
                .to_vec();
        tc3_prepare(
            &mut parts,
            "DescribeInstances",
            "2017-03-12",
            Some("ap-guangzhou"),
            DateTime::from_timestamp(1_551_113_065, 0).unwrap(),
        )
        .unwrap();
        parts
    }

    #[test]
    fn tc3_matches_the_documented_example() {
        let parts = tc3_doc_request();
        assert_eq!(sha256_hex(&parts.body), "35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064");
        let names = ["content-type".to_string(), "host".to_string()];
        let string_to_sign =
            tc3_string_to_sign(&parts, &names, "content-type;host", "1551113065", "2019-02-25", "cvm").unwrap();
        assert_eq!(
            string_to_sign,
            "TC3-HMAC-SHA256\n1551113065\n2019-02-25/cvm/tc3_request\n\
             5ffe6a04c0664d6b969fab9a13bdab201d63ee709638e2749d62a09ca18d7031"
        );
        assert_eq!(
            tc3_sign("AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE", "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE", "cvm", &parts)
                .unwrap(),
            "TC3-HMAC-SHA256 Credential=AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE/2019-02-25/cvm/\
             tc3_request, SignedHeaders=content-type;host, \
             Signature=72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
        );
    }

    fn tc3_signed() -> HttpParts {
        let mut parts = HttpParts::new("POST", "/");
        parts.set_header("Host", "cdn.tencentcloudapi.com");
        parts.body = br#"{"Urls":["https://cdn.example.com/a.js"]}"#.to_vec();
        tc3_prepare(&mut parts, "PushUrlsCache", "2018-06-06", None, utc(2024, 1, 2, 23, 59, 59)).unwrap();
        let auth = tc3_sign("AK1", "s3cr3t-value", "cdn", &parts).unwrap();
        parts.set_header("Authorization", auth);
        parts
    }

    #[test]
    fn tc3_round_trip() {
        let parts = tc3_signed();
        assert_eq!(parts.header("content-type"), Some("application/json; charset=utf-8"));
        let verified = tc3_verify(&parts, keys).unwrap();
        assert_eq!(verified.access_key_id, "AK1");
        assert_eq!(verified.signed_at, utc(2024, 1, 2, 23, 59, 59));
        assert_eq!(verified.scope.as_deref(), Some("2024-01-02/cdn/tc3_request"));

        let mut doc = tc3_doc_request();
        let auth =
            tc3_sign("AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE", "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE", "cvm", &doc).unwrap();
        doc.set_header("Authorization", auth);
        assert!(tc3_verify(&doc, |_| Some("Gu5t9xGARNpq86cd98joQYCN3EXAMPLE".to_string())).is_ok());
    }

    #[test]
    fn tc3_rejects_tampering() {
        let mut body = tc3_signed();
        body.body.pop();
        assert_eq!(tc3_verify(&body, keys), Err(SignError::SignatureMismatch));

        let mut query = tc3_signed();
        query.query.push(("a".to_string(), "b".to_string()));
        assert_eq!(tc3_verify(&query, keys), Err(SignError::SignatureMismatch));

        // Moving the timestamp a second past midnight changes the credential date.
        let mut day = tc3_signed();
        day.set_header("X-TC-Timestamp", (utc(2024, 1, 3, 0, 0, 0).timestamp()).to_string());
        assert_eq!(tc3_verify(&day, keys), Err(SignError::SignatureMismatch));

        assert_eq!(tc3_verify(&tc3_signed(), no_keys), Err(SignError::UnknownAccessKey("AK1".to_string())));

        let mut bad_time = tc3_signed();
        bad_time.set_header("X-TC-Timestamp", "soon");
        assert_eq!(tc3_verify(&bad_time, keys), Err(SignError::BadTimestamp("X-TC-Timestamp".to_string())));

        let mut narrow = tc3_signed();
        let auth =
            narrow.header("authorization").unwrap().replace("SignedHeaders=content-type;host", "SignedHeaders=host");
        narrow.set_header("Authorization", auth);
        assert!(matches!(tc3_verify(&narrow, keys), Err(SignError::MalformedAuthorization(_))));
    }

    #[test]
    fn tc3_unsigned_payload_hashes_the_marker() {
        let mut parts = tc3_signed();
        parts.set_header("X-TC-Content-SHA256", TC3_UNSIGNED_PAYLOAD);
        let auth = tc3_sign("AK1", "s3cr3t-value", "cdn", &parts).unwrap();
        parts.set_header("Authorization", auth);
        parts.body = b"anything".to_vec();
        assert!(tc3_verify(&parts, keys).is_ok());
    }

    // ------------------------------------------------------------------ errors

    #[test]
    fn vendor_codes() {
        let mismatch = SignError::SignatureMismatch;
        assert_eq!(mismatch.vendor_code(Scheme::Acs3), "SignatureDoesNotMatch");
        assert_eq!(mismatch.vendor_code(Scheme::Volc), "SignatureDoesNotMatch");
        assert_eq!(mismatch.vendor_code(Scheme::Tc3), "AuthFailure.SignatureFailure");
        let unknown = SignError::UnknownAccessKey("x".to_string());
        assert_eq!(unknown.vendor_code(Scheme::AliyunRpc), "InvalidAccessKeyId.NotFound");
        assert_eq!(unknown.vendor_code(Scheme::Volc), "InvalidAccessKey");
        assert_eq!(unknown.vendor_code(Scheme::Tc3), "AuthFailure.SecretIdNotFound");
        assert_eq!(SignError::MissingAuthorization.vendor_code(Scheme::Acs3), "IncompleteSignature");
        assert_eq!(
            SignError::MissingHeader("Timestamp".to_string()).vendor_code(Scheme::AliyunRpc),
            "MissingParameter"
        );
        assert_eq!(SignError::Expired.vendor_code(Scheme::Tc3), "AuthFailure.SignatureExpire");
        assert_eq!(SignError::NonceReused.vendor_code(Scheme::Acs3), "SignatureNonceUsed");
    }

    #[test]
    fn errors_never_carry_the_secret() {
        let outcomes = [
            acs3_verify(&acs3_signed(), |_| Some("wrong".to_string())).unwrap_err(),
            rpc_verify(&rpc_signed_form(), no_keys).unwrap_err(),
            volc_verify(&volc_signed(), |_| Some("wrong".to_string())).unwrap_err(),
            tc3_verify(&tc3_signed(), no_keys).unwrap_err(),
        ];
        for err in outcomes {
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains("s3cr3t"), "{shown}");
        }
        let shown = format!("{:?}", acs3_verify(&acs3_signed(), keys).unwrap());
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }

    #[test]
    fn skew_is_checked_both_ways() {
        let now = utc(2024, 1, 2, 3, 4, 5);
        let max = TimeDelta::minutes(15);
        assert_eq!(check_skew(now - max, now, max), Ok(()));
        assert_eq!(check_skew(now + max, now, max), Ok(()));
        let late = now - max - TimeDelta::seconds(1);
        assert_eq!(check_skew(late, now, max), Err(SignError::Expired));
        let early = now + max + TimeDelta::seconds(1);
        assert_eq!(check_skew(early, now, max), Err(SignError::Expired));
    }
}
