//! The typed configuration: one TOML file, validated once, errors that name file, line and key.
//!
//! Loading goes: defaults, then the file, then environment overrides, then flags. `serve` and
//! `check-config` share this code path, so whatever `check-config` accepts, `serve` runs.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::model::{CatchUp, TaskType, VendorKind};

/// The largest slice: a million URLs per tick is far past any vendor's daily quota.
pub const MAX_SLICE_LEN: i64 = 1_000_000;
/// The longest interval or window: a year.
pub const MAX_SPAN_MS: i64 = 366 * 24 * 3600 * 1000;

/// The most connections `[api] max_connections` may allow (each holds a file descriptor).
pub const MAX_CONNECTIONS: usize = 100_000;

/// The default config path, overridden by `--config` or `PRELOADD_CONFIG`.
pub const DEFAULT_PATH: &str = "/etc/preloadd/preloadd.toml";

/// A configuration error: where (file and line), which key, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}: ", self.file.display(), self.line)?;
        } else {
            write!(f, "{}: ", self.file.display())?;
        }
        if !self.key.is_empty() {
            write!(f, "`{}`: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// A secret read from a file or the environment. Its `Debug` never shows it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub daemon: DaemonConfig,
    pub api: ApiConfig,
    pub vendors: Vec<VendorConfig>,
    pub jobs: Vec<JobConfig>,
    /// `[smtp]`: how report mails are sent.
    pub smtp: Option<SmtpConfig>,
    /// `[[report]]`: declarative report subscriptions, applied at start.
    pub reports: Vec<ReportConfig>,
}

/// The SMTP relay report mails go through.
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    pub user: Option<String>,
    pub password: Option<Secret>,
    /// The sender, `Name <addr>` or `addr`.
    pub from: String,
    pub timeout: Duration,
}

/// `starttls` (default, port 587), `tls` (implicit TLS, port 465) or `none` (port 25, local relays).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    Starttls,
    Tls,
    None,
}

/// One `[[report]]`: a subscription the config declares.
pub type ReportConfig = crate::reports::SubscriptionSpec;

#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub state_dir: PathBuf,
    pub database_url: Option<String>,
    pub log_format: LogFormat,
    /// How long SIGTERM waits for in-flight vendor calls.
    pub shutdown_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Auto,
    Json,
}

#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    pub token: Option<Secret>,
    /// API requests per second per token (governor); beyond it, 429 `TooManyRequests`.
    pub requests_per_second: u32,
    /// Remote URL lists (`urls_url`, `sitemap_url`) may point at private addresses.
    pub allow_private_lists: bool,
    /// Report subscriptions at most (`DeliverExceedLimit` beyond).
    pub max_report_subscriptions: usize,
    /// `/metrics` without a token from anywhere; by default only loopback peers (or a bearer
    /// token) may read it.
    pub metrics_public: bool,
    /// The drop-in ESA scheduled-preload facade (`[api.compat]`), when configured.
    pub compat: Option<CompatConfig>,
    /// Slow-client limits of the API's listeners (and `[api.compat]`'s).
    pub limits: HttpLimits,
}

/// What a client may take of the server: `[api] header_timeout`, `body_idle_timeout`,
/// `body_min_rate`, `max_connections`. Slowloris-style clients are cut off by these, so a
/// handful of sockets cannot hold the API (or a text/plain upload's write transaction) forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// The request line and headers must arrive whole within this, or the connection is closed.
    /// An idle keep-alive connection is closed after it too.
    pub header_timeout: Duration,
    /// The longest silence while a request body is read: beyond it, 408 `RequestTimeout`.
    pub body_idle_timeout: Duration,
    /// The slowest average body rate kept up, in bytes per second of waiting for the client,
    /// once the first `body_idle_timeout` of waiting is used up: slower, 408 `RequestTimeout`.
    pub body_min_rate: u64,
    /// Connections open at once; more wait in the listen backlog until one closes.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout: Duration::from_secs(10),
            body_idle_timeout: Duration::from_secs(30),
            body_min_rate: 1024,
            max_connections: 512,
        }
    }
}

/// `[api.compat]`: ESA's scheduled-preload OpenAPI on a listener of its own.
#[derive(Debug, Clone)]
pub struct CompatConfig {
    pub listen: SocketAddr,
    pub access_key_id: String,
    pub secret: Secret,
    pub requests_per_second: u32,
    pub max_jobs_per_site: u32,
    /// `SiteId` → vendor accounts.
    pub sites: Vec<(i64, Vec<String>)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VendorConfig {
    pub name: String,
    pub kind: VendorKind,
    pub endpoint: String,
    pub access_key_id: String,
    pub secret: Secret,
    /// Submit calls per second (per action); status calls have their own limit.
    pub requests_per_second: u32,
    pub status_requests_per_second: u32,
    pub max_urls_per_request: u32,
    /// URLs per vendor day, when the account has a daily quota.
    pub daily_quota: Option<u64>,
    pub concurrency: u32,
    pub timeout: Duration,
    pub max_retries: u32,
    /// Kind-specific settings (site, area, region, signing scheme...).
    pub options: VendorOptions,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VendorOptions {
    pub site_id: Option<String>,
    pub area: Option<String>,
    pub region: Option<String>,
    pub l2_preload: Option<bool>,
    pub with_header: Option<String>,
    pub force: Option<bool>,
    /// `aliyun_cdn`: `acs3` (default) or `rpc_sha1`.
    pub signature: Option<String>,
    /// `http_warm`: edge IPs every URL is fetched from (each URL once per IP); empty means
    /// ordinary DNS.
    pub resolve: Vec<std::net::IpAddr>,
    /// `http_warm`: extra request headers, in the order written.
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JobConfig {
    pub name: String,
    pub task_type: TaskType,
    pub vendors: Vec<String>,
    pub source: UrlSource,
    pub catch_up: CatchUp,
    pub plans: Vec<PlanSpec>,
    pub schedule: Option<ScheduleSpec>,
}

/// A recurring schedule (`[job.schedule]`): a fresh plan at every firing of `cron` in `timezone`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleSpec {
    pub cron: String,
    pub timezone: String,
    pub window_ms: i64,
    pub interval_ms: i64,
    pub slice_len: i64,
    pub effective_from: Option<i64>,
    pub effective_until: Option<i64>,
    pub enabled: bool,
    /// `missed = "run_once"` (default): a firing missed while down runs once if its window is
    /// still open; `"skip"`: it does not.
    pub run_missed: bool,
}

impl ScheduleSpec {
    /// The first firing strictly after `after_ms` inside the effective range, or `None`.
    pub fn next_fire(&self, after_ms: i64) -> Option<i64> {
        let rule = crate::cron::Schedule::parse(&self.cron).ok()?;
        let tz: chrono_tz::Tz = self.timezone.parse().ok()?;
        let after = match self.effective_from {
            Some(from) if from - 1 > after_ms => from - 1,
            _ => after_ms,
        };
        let t = rule.next_after(crate::clock::to_datetime(after), tz)?.timestamp_millis();
        match self.effective_until {
            Some(until) if t > until => None,
            _ => Some(t),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UrlSource {
    Inline(Vec<String>),
    File(PathBuf),
    Url(String),
    Sitemap(String),
}

/// One window of a job. Times are unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PlanSpec {
    pub start_time: i64,
    pub end_time: i64,
    pub interval_ms: i64,
    pub slice_len: i64,
}

/// Per-kind defaults from VENDORS.md: (submit rps, status rps, URLs per request, daily quota).
pub fn kind_defaults(kind: VendorKind) -> (u32, u32, u32, Option<u64>) {
    match kind {
        VendorKind::AliyunCdn => (50, 5, 100, Some(1_000)),
        VendorKind::AliyunEsa => (20, 5, 100, Some(1_000)),
        VendorKind::VolcengineCdn => (20, 20, 100, Some(1_000)),
        VendorKind::TencentCdn => (20, 20, 500, Some(1_000)),
        VendorKind::HttpWarm => (10, 10, 100, None),
        VendorKind::Webhook => (10, 10, 1_000, None),
    }
}

// ---- raw file shape -------------------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    daemon: RawDaemon,
    #[serde(default)]
    api: RawApi,
    #[serde(default)]
    vendor: Vec<Spanned<RawVendor>>,
    #[serde(default)]
    job: Vec<Spanned<RawJob>>,
    smtp: Option<Spanned<RawSmtp>>,
    #[serde(default)]
    report: Vec<Spanned<RawReport>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSmtp {
    host: Spanned<String>,
    port: Option<Spanned<u16>>,
    security: Option<Spanned<String>>,
    user: Option<String>,
    password_file: Option<Spanned<PathBuf>>,
    from: Spanned<String>,
    timeout: Option<Spanned<DurationValue>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReport {
    name: Spanned<String>,
    #[serde(default)]
    reports: Vec<Spanned<crate::reports::ReportSelection>>,
    #[serde(default)]
    domain_names: Vec<String>,
    // Not `Spanned`: toml cannot span a table defined by dotted headers.
    deliver: RawDeliver,
    schedule: RawReportSchedule,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeliver {
    email: Option<crate::reports::EmailDeliver>,
    webhook: Option<RawWebhook>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    url: String,
    secret_file: Option<Spanned<PathBuf>>,
    #[serde(default)]
    format: crate::reports::WebhookFormat,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReportSchedule {
    #[serde(default)]
    sched_name: String,
    #[serde(default)]
    description: String,
    crontab: Spanned<String>,
    frequency: Spanned<String>,
    status: Option<Spanned<String>>,
    timezone: Option<Spanned<String>>,
    effective_from: Option<Spanned<String>>,
    effective_end: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    state_dir: Option<Spanned<PathBuf>>,
    /// Accept secret files that group or others can read (refused by default).
    allow_insecure_secret_files: Option<bool>,
    database_url: Option<String>,
    log_format: Option<Spanned<String>>,
    shutdown_timeout: Option<Spanned<DurationValue>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawApi {
    listen: Option<Spanned<String>>,
    token_file: Option<Spanned<PathBuf>>,
    requests_per_second: Option<Spanned<u32>>,
    allow_private_lists: Option<bool>,
    max_report_subscriptions: Option<Spanned<usize>>,
    metrics_public: Option<bool>,
    header_timeout: Option<Spanned<DurationValue>>,
    body_idle_timeout: Option<Spanned<DurationValue>>,
    body_min_rate: Option<Spanned<u64>>,
    max_connections: Option<Spanned<usize>>,
    compat: Option<RawCompat>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCompat {
    listen: Spanned<String>,
    access_key_id: Spanned<String>,
    access_key_secret_file: Spanned<PathBuf>,
    requests_per_second: Option<Spanned<u32>>,
    max_jobs_per_site: Option<Spanned<u32>>,
    #[serde(default)]
    site: Vec<RawSite>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSite {
    id: Spanned<i64>,
    vendors: Spanned<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVendor {
    name: Spanned<String>,
    kind: Spanned<String>,
    endpoint: Option<Spanned<String>>,
    access_key_id: Option<String>,
    access_key_secret_file: Option<Spanned<PathBuf>>,
    access_key_secret_env: Option<Spanned<String>>,
    token_file: Option<Spanned<PathBuf>>,
    requests_per_second: Option<Spanned<u32>>,
    status_requests_per_second: Option<Spanned<u32>>,
    max_urls_per_request: Option<Spanned<u32>>,
    daily_quota: Option<Spanned<u64>>,
    concurrency: Option<Spanned<u32>>,
    timeout: Option<Spanned<DurationValue>>,
    max_retries: Option<u32>,
    site_id: Option<String>,
    area: Option<Spanned<String>>,
    region: Option<String>,
    l2_preload: Option<bool>,
    with_header: Option<String>,
    force: Option<bool>,
    signature: Option<Spanned<String>>,
    resolve: Option<Spanned<Vec<Spanned<String>>>>,
    headers: Option<Spanned<toml::Table>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    name: Spanned<String>,
    task_type: Spanned<String>,
    vendors: Spanned<Vec<Spanned<String>>>,
    urls: Option<Spanned<Vec<String>>>,
    urls_file: Option<Spanned<PathBuf>>,
    urls_url: Option<Spanned<String>>,
    sitemap_url: Option<Spanned<String>>,
    catch_up: Option<Spanned<String>>,
    #[serde(default)]
    plan: Vec<Spanned<RawPlan>>,
    schedule: Option<Spanned<RawSchedule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    cron: Spanned<String>,
    timezone: Option<Spanned<String>>,
    window: Spanned<DurationValue>,
    interval: Spanned<DurationValue>,
    slice_len: Spanned<i64>,
    effective_from: Option<Spanned<String>>,
    effective_until: Option<Spanned<String>>,
    enabled: Option<bool>,
    missed: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    start_time: Spanned<String>,
    end_time: Spanned<String>,
    interval: Spanned<DurationValue>,
    slice_len: Spanned<i64>,
}

/// `90`, `"90s"`, `"2h"`, `"1h30m"`, `"500ms"`.
#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum DurationValue {
    Seconds(i64),
    Text(String),
}

/// Parses a duration as DESIGN.md accepts it: a number of seconds or a humantime string.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(t).map_err(|e| format!("invalid duration `{t}`: {e} (use e.g. 90, \"90s\", \"2h\")"))
}

/// Parses an RFC 3339 time with offset into unix milliseconds.
pub fn parse_time(text: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(text.trim()).map(|t| t.timestamp_millis()).map_err(|e| {
        format!("invalid time `{text}`: {e} (expected RFC 3339 with offset, e.g. 2024-05-31T17:10:48.849+08:00)")
    })
}

// ---- loading ----------------------------------------------------------------------------------

/// Environment overrides applied after the file (flags come after, in the caller).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub state_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
}

impl Overrides {
    pub fn from_env() -> Self {
        Overrides {
            state_dir: std::env::var_os("PRELOADD_STATE_DIR").map(PathBuf::from),
            listen: std::env::var("PRELOADD_LISTEN").ok().and_then(|s| s.parse().ok()),
        }
    }
}

/// Reads and validates the config file at `path`.
pub fn load(path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
    let bytes = std::fs::read(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        line: 0,
        key: String::new(),
        message: format!("cannot read the config file: {e}"),
    })?;
    load_bytes(path, bytes, overrides)
}

/// Validates the raw bytes of a config file (the fuzz target's entry point): invalid UTF-8 is
/// an error naming the line it starts on; `path` is used for messages and relative paths.
pub fn load_bytes(path: &Path, bytes: Vec<u8>, overrides: &Overrides) -> Result<Config, ConfigError> {
    let text = String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        let line = 1 + e.as_bytes()[..offset].iter().filter(|&&b| b == b'\n').count();
        ConfigError {
            file: path.to_path_buf(),
            line,
            key: String::new(),
            message: "the file is not valid UTF-8".into(),
        }
    })?;
    parse(path, &text, overrides)
}

/// Validates config text; `path` is used for messages and to resolve relative paths.
pub fn parse(path: &Path, text: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
    let v = Validator { path, text, allow_insecure_secrets: std::cell::Cell::new(false) };
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        // Some syntax errors (a lone `\r`, say) come without a message: say what is there.
        let message = match e.message().trim() {
            "" => match text.get(span.start..).and_then(|t| t.chars().next()) {
                Some(c) => format!("invalid TOML: unexpected character {c:?}"),
                None => "invalid TOML: unexpected end of the file".to_string(),
            },
            m => m.to_string(),
        };
        v.err_at(span.start, message)
    })?;
    v.build(raw, overrides)
}

/// The longest key an error message repeats (the "key" of a junk line is the whole line).
const MAX_KEY_CHARS: usize = 64;

struct Validator<'a> {
    path: &'a Path,
    text: &'a str,
    allow_insecure_secrets: std::cell::Cell<bool>,
}

impl Validator<'_> {
    fn line_of(&self, offset: usize) -> usize {
        let offset = offset.min(self.text.len());
        1 + self.text.as_bytes()[..offset].iter().filter(|&&b| b == b'\n').count()
    }

    /// The key written on the line holding `offset` (what precedes `=`), for messages.
    fn key_at(&self, offset: usize) -> String {
        let offset = offset.min(self.text.len());
        let start = self.text[..offset].rfind('\n').map_or(0, |i| i + 1);
        let line = self.text[start..].lines().next().unwrap_or("");
        let key = match line.split_once('=') {
            Some((k, _)) => k.trim().trim_matches('"'),
            None => line.trim(),
        };
        // The line may be anything: keep it printable and short.
        let mut shown = String::new();
        for c in key.chars().take(MAX_KEY_CHARS) {
            if c.is_control() {
                shown.extend(c.escape_default());
            } else {
                shown.push(c);
            }
        }
        if key.chars().nth(MAX_KEY_CHARS).is_some() {
            shown.push('…');
        }
        shown
    }

    fn err_at(&self, offset: usize, message: String) -> ConfigError {
        ConfigError { file: self.path.to_path_buf(), line: self.line_of(offset), key: self.key_at(offset), message }
    }

    fn err<T>(&self, spanned: &Spanned<T>, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.path.to_path_buf(),
            line: self.line_of(spanned.span().start),
            key: key.to_string(),
            message: message.into(),
        }
    }

    fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.path.parent().unwrap_or(Path::new(".")).join(p)
        }
    }

    /// Reads a secret file (at most [`MAX_SECRET_BYTES`]: a key, a password or a token, not a
    /// log or a device read by mistake); relative names are looked up in `$CREDENTIALS_DIRECTORY` first
    /// (systemd `LoadCredential=`), then beside the config file.
    fn read_secret(&self, p: &Spanned<PathBuf>, key: &str) -> Result<Secret, ConfigError> {
        let path = match (p.get_ref().is_relative(), std::env::var_os("CREDENTIALS_DIRECTORY")) {
            (true, Some(dir)) if Path::new(&dir).join(p.get_ref()).exists() => Path::new(&dir).join(p.get_ref()),
            _ => self.resolve(p.get_ref()),
        };
        let text = read_bounded(&path, MAX_SECRET_BYTES).map_err(|e| match e {
            Bounded::TooLarge => self.err(
                p,
                key,
                format!(
                    "secret file {} is larger than {} KiB; it must hold the secret alone (is it the right file?)",
                    path.display(),
                    MAX_SECRET_BYTES / 1024
                ),
            ),
            Bounded::Io(e) => self.err(p, key, format!("cannot read secret file {}: {e}", path.display())),
        })?;
        if !self.allow_insecure_secrets.get() {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).map(|m| m.permissions().mode()).unwrap_or(0);
            if mode & 0o077 != 0 {
                return Err(self.err(
                    p,
                    key,
                    format!(
                        "secret file {} can be read by group or others (mode {:o}); run `chmod 600` on it, or set \
                     [daemon] allow_insecure_secret_files = true",
                        path.display(),
                        mode & 0o777
                    ),
                ));
            }
        }
        let secret = text.trim_end_matches(['\r', '\n']).to_string();
        if secret.is_empty() {
            return Err(self.err(p, key, format!("secret file {} is empty", path.display())));
        }
        Ok(Secret(secret))
    }

    fn duration(&self, d: &Spanned<DurationValue>, key: &str) -> Result<Duration, ConfigError> {
        let value = match d.get_ref() {
            DurationValue::Seconds(s) if *s < 0 => return Err(self.err(d, key, "must not be negative")),
            DurationValue::Seconds(s) => Duration::from_secs(*s as u64),
            DurationValue::Text(t) => parse_duration(t).map_err(|m| self.err(d, key, m))?,
        };
        if value.as_millis() > MAX_SPAN_MS as u128 {
            return Err(self.err(d, key, "must be at most a year"));
        }
        Ok(value)
    }

    fn build(&self, raw: RawFile, ov: &Overrides) -> Result<Config, ConfigError> {
        self.allow_insecure_secrets.set(raw.daemon.allow_insecure_secret_files.unwrap_or(false));
        let daemon = self.daemon(&raw.daemon, ov)?;
        let api = self.api(&raw.api, ov)?;
        let mut vendors = Vec::new();
        let mut names = HashSet::new();
        for rv in &raw.vendor {
            let vc = self.vendor(rv.get_ref())?;
            if !names.insert(vc.name.clone()) {
                return Err(self.err(&rv.get_ref().name, "name", format!("duplicate vendor name `{}`", vc.name)));
            }
            vendors.push(vc);
        }
        let mut jobs = Vec::new();
        let mut job_names = HashSet::new();
        for rj in &raw.job {
            let jc = self.job(rj.get_ref(), &vendors)?;
            if !job_names.insert(jc.name.clone()) {
                return Err(self.err(&rj.get_ref().name, "name", format!("duplicate job name `{}`", jc.name)));
            }
            jobs.push(jc);
        }
        let smtp = raw.smtp.as_ref().map(|s| self.smtp(s.get_ref())).transpose()?;
        let mut reports: Vec<ReportConfig> = Vec::new();
        for rr in &raw.report {
            let rc = self.report(rr.get_ref())?;
            if reports.iter().any(|o| o.name == rc.name) {
                return Err(self.err(&rr.get_ref().name, "name", format!("duplicate report name `{}`", rc.name)));
            }
            if matches!(rc.deliver, crate::reports::Deliver::Email(_)) && smtp.is_none() {
                return Err(self.err(
                    &rr.get_ref().name,
                    "deliver",
                    format!("report `{}` is delivered by email but the config has no [smtp] section", rc.name),
                ));
            }
            reports.push(rc);
        }
        let mut api = api;
        api.compat = raw.api.compat.as_ref().map(|c| self.compat(c, &vendors)).transpose()?;
        Ok(Config { path: self.path.to_path_buf(), daemon, api, vendors, jobs, smtp, reports })
    }

    fn smtp(&self, s: &RawSmtp) -> Result<SmtpConfig, ConfigError> {
        let host = s.host.get_ref().trim().to_string();
        if host.is_empty() {
            return Err(self.err(&s.host, "host", "the SMTP host must not be empty"));
        }
        let security = match &s.security {
            None => SmtpSecurity::Starttls,
            Some(x) => match x.get_ref().as_str() {
                "starttls" => SmtpSecurity::Starttls,
                "tls" => SmtpSecurity::Tls,
                "none" => SmtpSecurity::None,
                other => return Err(self.err(x, "security", format!("`{other}`: expected starttls, tls or none"))),
            },
        };
        let port = match &s.port {
            Some(p) if *p.get_ref() == 0 => return Err(self.err(p, "port", "must be 1 to 65535")),
            Some(p) => *p.get_ref(),
            None => match security {
                SmtpSecurity::Starttls => 587,
                SmtpSecurity::Tls => 465,
                SmtpSecurity::None => 25,
            },
        };
        if s.from.get_ref().parse::<lettre::message::Mailbox>().is_err() {
            return Err(self.err(
                &s.from,
                "from",
                format!("`{}` is not a mailbox (`addr` or `Name <addr>`)", s.from.get_ref()),
            ));
        }
        let password = s.password_file.as_ref().map(|p| self.read_secret(p, "password_file")).transpose()?;
        if password.is_some() != s.user.is_some() {
            return Err(self.err(&s.host, "user", "give both user and password_file, or neither"));
        }
        let timeout = match &s.timeout {
            Some(t) => self.duration(t, "timeout")?,
            None => Duration::from_secs(30),
        };
        Ok(SmtpConfig { host, port, security, user: s.user.clone(), password, from: s.from.get_ref().clone(), timeout })
    }

    fn report(&self, r: &RawReport) -> Result<ReportConfig, ConfigError> {
        use crate::reports::{Deliver, Frequency, ReportSchedule, SubscriptionSpec, WebhookDeliver};
        let name = r.name.get_ref().trim().to_string();
        let deliver = match (&r.deliver.email, &r.deliver.webhook) {
            (Some(e), None) => Deliver::Email(e.clone()),
            (None, Some(w)) => Deliver::Webhook(WebhookDeliver {
                url: w.url.clone(),
                secret: w
                    .secret_file
                    .as_ref()
                    .map(|f| self.read_secret(f, "secret_file"))
                    .transpose()?
                    .map(|s| s.expose().to_string()),
                format: w.format,
            }),
            _ => {
                return Err(self.err(
                    &r.name,
                    "deliver",
                    "give exactly one of [report.deliver.email] or [report.deliver.webhook]",
                ))
            }
        };
        let sc = &r.schedule;
        let frequency = match sc.frequency.get_ref().as_str() {
            "h" => Frequency::Hour,
            "d" => Frequency::Day,
            "w" => Frequency::Week,
            other => return Err(self.err(&sc.frequency, "frequency", format!("`{other}`: expected h, d or w"))),
        };
        let enabled = match &sc.status {
            None => true,
            Some(st) => match st.get_ref().as_str() {
                "enable" => true,
                "disable" => false,
                other => return Err(self.err(st, "status", format!("`{other}`: expected enable or disable"))),
            },
        };
        let time = |t: &Option<Spanned<String>>, key: &str| -> Result<Option<i64>, ConfigError> {
            t.as_ref().map(|t| parse_time(t.get_ref()).map_err(|m| self.err(t, key, m))).transpose()
        };
        let spec = SubscriptionSpec {
            name,
            reports: r.reports.iter().map(|s| s.get_ref().clone()).collect(),
            domain_names: r.domain_names.iter().map(|d| d.trim().to_ascii_lowercase()).collect(),
            deliver,
            schedule: ReportSchedule {
                sched_name: sc.sched_name.clone(),
                description: sc.description.clone(),
                crontab: sc.crontab.get_ref().clone(),
                frequency,
                enabled,
                timezone: sc
                    .timezone
                    .as_ref()
                    .map(|t| t.get_ref().clone())
                    .unwrap_or_else(|| crate::reports::DEFAULT_TIMEZONE.to_string()),
                effective_from: time(&sc.effective_from, "effective_from")?,
                effective_end: time(&sc.effective_end, "effective_end")?,
            },
        };
        spec.validate().map_err(|e| {
            let offset = match e.key.as_str() {
                "name" => r.name.span().start,
                "reports" | "conditions" => r.reports.first().map_or(r.name.span().start, |x| x.span().start),
                "deliver" => r.name.span().start,
                "crontab" => sc.crontab.span().start,
                "timezone" => sc.timezone.as_ref().map_or(sc.crontab.span().start, |t| t.span().start),
                "effective_end" => sc.effective_end.as_ref().map_or(sc.crontab.span().start, |t| t.span().start),
                _ => r.name.span().start,
            };
            ConfigError { file: self.path.to_path_buf(), line: self.line_of(offset), key: e.key, message: e.message }
        })?;
        Ok(spec)
    }

    fn compat(&self, c: &RawCompat, vendors: &[VendorConfig]) -> Result<CompatConfig, ConfigError> {
        let listen = c.listen.get_ref().parse().map_err(|e| {
            self.err(&c.listen, "listen", format!("invalid socket address `{}`: {e}", c.listen.get_ref()))
        })?;
        if c.access_key_id.get_ref().is_empty() {
            return Err(self.err(&c.access_key_id, "access_key_id", "must not be empty"));
        }
        let secret = self.read_secret(&c.access_key_secret_file, "access_key_secret_file")?;
        let mut sites = Vec::new();
        for site in &c.site {
            if sites.iter().any(|(id, _)| id == site.id.get_ref()) {
                return Err(self.err(&site.id, "id", format!("duplicate site id {}", site.id.get_ref())));
            }
            if site.vendors.get_ref().is_empty() {
                return Err(self.err(&site.vendors, "vendors", "a site maps to at least one vendor account"));
            }
            let mut names = Vec::new();
            for v in site.vendors.get_ref() {
                let Some(vc) = vendors.iter().find(|c| &c.name == v.get_ref()) else {
                    return Err(self.err(
                        v,
                        "vendors",
                        format!("site {} names unknown vendor `{}`", site.id.get_ref(), v.get_ref()),
                    ));
                };
                if !supports(vc.kind, TaskType::Preload) {
                    return Err(self.err(v, "vendors", format!("vendor `{}` cannot preload", vc.name)));
                }
                names.push(v.get_ref().clone());
            }
            sites.push((*site.id.get_ref(), names));
        }
        let positive = |v: &Option<Spanned<u32>>, key: &str, default: u32| match v {
            Some(x) if *x.get_ref() == 0 => Err(self.err(x, key, "must be at least 1")),
            Some(x) => Ok(*x.get_ref()),
            None => Ok(default),
        };
        Ok(CompatConfig {
            listen,
            access_key_id: c.access_key_id.get_ref().clone(),
            secret,
            requests_per_second: positive(&c.requests_per_second, "requests_per_second", 20)?,
            max_jobs_per_site: positive(&c.max_jobs_per_site, "max_jobs_per_site", 100)?,
            sites,
        })
    }

    fn daemon(&self, d: &RawDaemon, ov: &Overrides) -> Result<DaemonConfig, ConfigError> {
        let state_dir = match (&ov.state_dir, &d.state_dir) {
            (Some(p), _) => p.clone(),
            (None, Some(p)) => self.resolve(p.get_ref()),
            (None, None) => PathBuf::from("/var/lib/preloadd"),
        };
        let log_format = match &d.log_format {
            None => LogFormat::Auto,
            Some(s) => match s.get_ref().as_str() {
                "auto" | "text" => LogFormat::Auto,
                "json" => LogFormat::Json,
                other => {
                    return Err(self.err(
                        s,
                        "log_format",
                        format!("unknown log format `{other}` (expected auto, text or json)"),
                    ))
                }
            },
        };
        let shutdown_timeout = match &d.shutdown_timeout {
            Some(t) => self.duration(t, "shutdown_timeout")?,
            None => Duration::from_secs(30),
        };
        Ok(DaemonConfig { state_dir, database_url: d.database_url.clone(), log_format, shutdown_timeout })
    }

    fn api(&self, a: &RawApi, ov: &Overrides) -> Result<ApiConfig, ConfigError> {
        let listen = match (&ov.listen, &a.listen) {
            (Some(l), _) => *l,
            (None, Some(s)) => s
                .get_ref()
                .parse()
                .map_err(|e| self.err(s, "listen", format!("invalid socket address `{}`: {e}", s.get_ref())))?,
            (None, None) => "127.0.0.1:8790".parse().expect("valid default"),
        };
        let token = a.token_file.as_ref().map(|p| self.read_secret(p, "token_file")).transpose()?;
        let requests_per_second = match &a.requests_per_second {
            Some(r) if *r.get_ref() == 0 => return Err(self.err(r, "requests_per_second", "must be at least 1")),
            Some(r) => *r.get_ref(),
            None => 50,
        };
        let defaults = HttpLimits::default();
        let positive_duration = |d: &Option<Spanned<DurationValue>>, key: &str, default: Duration| match d {
            None => Ok(default),
            Some(d) => match self.duration(d, key)? {
                v if v.is_zero() => Err(self.err(d, key, "must be more than 0")),
                v => Ok(v),
            },
        };
        let limits = HttpLimits {
            header_timeout: positive_duration(&a.header_timeout, "header_timeout", defaults.header_timeout)?,
            body_idle_timeout: positive_duration(
                &a.body_idle_timeout,
                "body_idle_timeout",
                defaults.body_idle_timeout,
            )?,
            body_min_rate: match &a.body_min_rate {
                Some(r) if *r.get_ref() == 0 => {
                    return Err(self.err(r, "body_min_rate", "must be at least 1 (bytes per second)"))
                }
                Some(r) => *r.get_ref(),
                None => defaults.body_min_rate,
            },
            max_connections: match &a.max_connections {
                Some(m) if !(1..=MAX_CONNECTIONS).contains(m.get_ref()) => {
                    return Err(self.err(m, "max_connections", format!("must be between 1 and {MAX_CONNECTIONS}")))
                }
                Some(m) => *m.get_ref(),
                None => defaults.max_connections,
            },
        };
        Ok(ApiConfig {
            listen,
            token,
            limits,
            requests_per_second,
            allow_private_lists: a.allow_private_lists.unwrap_or(false),
            compat: None,
            metrics_public: a.metrics_public.unwrap_or(false),
            max_report_subscriptions: match &a.max_report_subscriptions {
                Some(m) if *m.get_ref() == 0 => {
                    return Err(self.err(m, "max_report_subscriptions", "must be at least 1"))
                }
                Some(m) => *m.get_ref(),
                None => 100,
            },
        })
    }

    fn vendor(&self, v: &RawVendor) -> Result<VendorConfig, ConfigError> {
        let name = v.name.get_ref().trim().to_string();
        if name.is_empty() {
            return Err(self.err(&v.name, "name", "a vendor name must not be empty"));
        }
        let kind: VendorKind = v.kind.get_ref().parse().map_err(|m: String| self.err(&v.kind, "kind", m))?;
        let (rps, status_rps, max_urls, quota) = kind_defaults(kind);
        let endpoint = match &v.endpoint {
            Some(e) => {
                let u = url::Url::parse(e.get_ref())
                    .map_err(|err| self.err(e, "endpoint", format!("invalid endpoint `{}`: {err}", e.get_ref())))?;
                if !matches!(u.scheme(), "http" | "https") {
                    return Err(self.err(e, "endpoint", "the endpoint must be http or https"));
                }
                e.get_ref().trim_end_matches('/').to_string()
            }
            None => match default_endpoint(kind) {
                Some(d) => d.to_string(),
                None => {
                    return Err(self.err(
                        &v.kind,
                        "endpoint",
                        format!("vendor `{name}` of kind {kind} needs an endpoint"),
                    ))
                }
            },
        };
        let secret = match (&v.access_key_secret_file, &v.access_key_secret_env, &v.token_file) {
            (Some(f), None, None) => self.read_secret(f, "access_key_secret_file")?,
            (None, Some(e), None) => match std::env::var(e.get_ref()) {
                Ok(s) if !s.is_empty() => Secret(s),
                _ => {
                    return Err(self.err(
                        e,
                        "access_key_secret_env",
                        format!("environment variable `{}` is not set", e.get_ref()),
                    ))
                }
            },
            (None, None, Some(f)) => self.read_secret(f, "token_file")?,
            (None, None, None) => Secret::default(),
            (Some(f), _, _) | (None, Some(_), Some(f)) => {
                return Err(self.err(
                    f,
                    "access_key_secret_file",
                    "give only one of access_key_secret_file, access_key_secret_env, token_file",
                ))
            }
        };
        let needs_keys = !matches!(kind, VendorKind::Webhook | VendorKind::HttpWarm);
        let access_key_id = v.access_key_id.clone().unwrap_or_default();
        if needs_keys && (access_key_id.is_empty() || secret.is_empty()) {
            return Err(self.err(&v.name, "access_key_id", format!("vendor `{name}` of kind {kind} needs access_key_id and access_key_secret_file (or access_key_secret_env)")));
        }
        let positive = |s: &Option<Spanned<u32>>, key: &str, default: u32| -> Result<u32, ConfigError> {
            match s {
                Some(x) if *x.get_ref() == 0 => Err(self.err(x, key, "must be at least 1")),
                Some(x) => Ok(*x.get_ref()),
                None => Ok(default),
            }
        };
        let requests_per_second = positive(&v.requests_per_second, "requests_per_second", rps)?;
        let status_requests_per_second =
            positive(&v.status_requests_per_second, "status_requests_per_second", status_rps)?;
        let max_urls_per_request = positive(&v.max_urls_per_request, "max_urls_per_request", max_urls)?;
        let concurrency = positive(&v.concurrency, "concurrency", 4)?;
        let daily_quota = match &v.daily_quota {
            Some(q) if *q.get_ref() == 0 => {
                return Err(self.err(q, "daily_quota", "must be at least 1 (leave it out for no quota)"))
            }
            Some(q) => Some(*q.get_ref()),
            None => quota,
        };
        let timeout = match &v.timeout {
            Some(t) => {
                let d = self.duration(t, "timeout")?;
                if d.is_zero() {
                    return Err(self.err(t, "timeout", "must be more than 0"));
                }
                d
            }
            None => Duration::from_secs(10),
        };
        if let Some(sig) = &v.signature {
            if kind != VendorKind::AliyunCdn || !matches!(sig.get_ref().as_str(), "acs3" | "rpc_sha1") {
                return Err(self.err(
                    sig,
                    "signature",
                    "`signature` is `acs3` or `rpc_sha1`, for kind aliyun_cdn only",
                ));
            }
        }
        let (resolve, headers) = self.http_warm_options(v, kind)?;
        if let Some(area) = &v.area {
            let allowed: &[&str] = match kind {
                VendorKind::AliyunCdn => &["domestic", "overseas", "global"],
                VendorKind::VolcengineCdn => &["chinese_mainland", "outside_chinese_mainland", "global"],
                VendorKind::TencentCdn => &["mainland", "overseas", "global"],
                _ => &[],
            };
            if !allowed.contains(&area.get_ref().as_str()) {
                let message = if allowed.is_empty() {
                    format!("kind {kind} takes no `area`")
                } else {
                    format!("area `{}` is not one of {} for kind {kind}", area.get_ref(), allowed.join(", "))
                };
                return Err(self.err(area, "area", message));
            }
        }
        if kind == VendorKind::AliyunEsa && v.site_id.is_none() {
            return Err(self.err(&v.name, "site_id", format!("vendor `{name}` of kind aliyun_esa needs site_id")));
        }
        Ok(VendorConfig {
            name,
            kind,
            endpoint,
            access_key_id,
            secret,
            requests_per_second,
            status_requests_per_second,
            max_urls_per_request,
            daily_quota,
            concurrency,
            timeout,
            max_retries: v.max_retries.unwrap_or(8),
            options: VendorOptions {
                site_id: v.site_id.clone(),
                area: v.area.as_ref().map(|a| a.get_ref().clone()),
                region: v.region.clone(),
                l2_preload: v.l2_preload,
                with_header: v.with_header.clone(),
                force: v.force,
                signature: v.signature.as_ref().map(|s| s.get_ref().clone()),
                resolve,
                headers,
            },
        })
    }

    /// `resolve` (edge IPs) and `headers` (a table of strings): `http_warm` only.
    #[allow(clippy::type_complexity)]
    fn http_warm_options(
        &self,
        v: &RawVendor,
        kind: VendorKind,
    ) -> Result<(Vec<std::net::IpAddr>, Vec<(String, String)>), ConfigError> {
        let only_warm = |key: &str| format!("`{key}` is for kind http_warm only, not {kind}");
        let mut resolve = Vec::new();
        if let Some(list) = &v.resolve {
            if kind != VendorKind::HttpWarm {
                return Err(self.err(list, "resolve", only_warm("resolve")));
            }
            for ip in list.get_ref() {
                let addr = ip.get_ref().trim().parse().map_err(|_| {
                    self.err(ip, "resolve", format!("`{}` is not an IP address (resolve lists edge IPs)", ip.get_ref()))
                })?;
                if !resolve.contains(&addr) {
                    resolve.push(addr);
                }
            }
        }
        let mut headers = Vec::new();
        if let Some(table) = &v.headers {
            if kind != VendorKind::HttpWarm {
                return Err(self.err(table, "headers", only_warm("headers")));
            }
            for (name, value) in table.get_ref() {
                let Some(value) = value.as_str() else {
                    return Err(self.err(table, "headers", format!("header `{name}` must be a string")));
                };
                let valid = reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_ok()
                    && reqwest::header::HeaderValue::from_str(value).is_ok();
                if !valid {
                    return Err(self.err(table, "headers", format!("`{name}: {value}` is not a valid HTTP header")));
                }
                headers.push((name.clone(), value.to_string()));
            }
        }
        Ok((resolve, headers))
    }

    fn job(&self, j: &RawJob, vendors: &[VendorConfig]) -> Result<JobConfig, ConfigError> {
        let name = j.name.get_ref().trim().to_string();
        if name.is_empty() {
            return Err(self.err(&j.name, "name", "a job name must not be empty"));
        }
        let task_type: TaskType =
            j.task_type.get_ref().parse().map_err(|m: String| self.err(&j.task_type, "task_type", m))?;
        if j.vendors.get_ref().is_empty() {
            return Err(self.err(&j.vendors, "vendors", format!("job `{name}` names no vendor")));
        }
        let mut names = Vec::new();
        for v in j.vendors.get_ref() {
            let Some(vc) = vendors.iter().find(|c| &c.name == v.get_ref()) else {
                return Err(self.err(v, "vendors", format!("job `{name}` names unknown vendor `{}`", v.get_ref())));
            };
            if !supports(vc.kind, task_type) {
                return Err(self.err(
                    v,
                    "vendors",
                    format!("vendor `{}` (kind {}) cannot do {task_type}", vc.name, vc.kind),
                ));
            }
            if names.contains(v.get_ref()) {
                return Err(self.err(v, "vendors", format!("vendor `{}` is named twice", v.get_ref())));
            }
            names.push(v.get_ref().clone());
        }
        let mut sources = Vec::new();
        if let Some(u) = &j.urls {
            sources.push((u.span().start, UrlSource::Inline(u.get_ref().clone())));
        }
        if let Some(f) = &j.urls_file {
            sources.push((f.span().start, UrlSource::File(self.resolve(f.get_ref()))));
        }
        if let Some(u) = &j.urls_url {
            sources.push((u.span().start, UrlSource::Url(u.get_ref().clone())));
        }
        if let Some(u) = &j.sitemap_url {
            sources.push((u.span().start, UrlSource::Sitemap(u.get_ref().clone())));
        }
        let source = match sources.len() {
            0 => {
                return Err(self.err(
                    &j.name,
                    "urls",
                    format!("job `{name}` has no URL list: give urls, urls_file, urls_url or sitemap_url"),
                ))
            }
            1 => sources.pop().expect("one").1,
            _ => {
                return Err(self.err_at(
                    sources[1].0,
                    format!(
                    "job `{name}` has more than one URL list; give only one of urls, urls_file, urls_url, sitemap_url"
                ),
                ))
            }
        };
        if let UrlSource::File(p) = &source {
            let f = j.urls_file.as_ref().expect("file source");
            match std::fs::metadata(p).and_then(|m| std::fs::File::open(p).map(|_| m)) {
                Ok(m) if m.is_file() => {}
                Ok(_) => return Err(self.err(f, "urls_file", format!("{} is not a file", p.display()))),
                Err(e) => return Err(self.err(f, "urls_file", format!("cannot read {}: {e}", p.display()))),
            }
        }
        let catch_up = match &j.catch_up {
            None => CatchUp::Skip,
            Some(c) => c.get_ref().parse().map_err(|m: String| self.err(c, "catch_up", m))?,
        };
        let mut plans: Vec<PlanSpec> = Vec::new();
        for p in &j.plan {
            let p = p.get_ref();
            let start_time =
                parse_time(p.start_time.get_ref()).map_err(|m| self.err(&p.start_time, "start_time", m))?;
            let end_time = parse_time(p.end_time.get_ref()).map_err(|m| self.err(&p.end_time, "end_time", m))?;
            if end_time <= start_time {
                return Err(self.err(&p.end_time, "end_time", "end_time must be later than start_time"));
            }
            let interval = self.duration(&p.interval, "interval")?;
            if interval.is_zero() {
                return Err(self.err(&p.interval, "interval", "interval must be at least 1 second"));
            }
            let slice_len = *p.slice_len.get_ref();
            if !(1..=MAX_SLICE_LEN).contains(&slice_len) {
                return Err(self.err(
                    &p.slice_len,
                    "slice_len",
                    format!("slice_len must be between 1 and {MAX_SLICE_LEN}"),
                ));
            }
            let spec = PlanSpec { start_time, end_time, interval_ms: interval.as_millis() as i64, slice_len };
            if let Some(other) = plans.iter().find(|o| o.start_time < spec.end_time && spec.start_time < o.end_time) {
                return Err(self.err(
                    &p.start_time,
                    "start_time",
                    format!(
                        "this plan's window overlaps another plan of job `{name}` ({} to {})",
                        crate::clock::rfc3339(other.start_time),
                        crate::clock::rfc3339(other.end_time)
                    ),
                ));
            }
            plans.push(spec);
        }
        let schedule = j.schedule.as_ref().map(|s| self.schedule(s.get_ref())).transpose()?;
        Ok(JobConfig { name, task_type, vendors: names, source, catch_up, plans, schedule })
    }

    fn schedule(&self, s: &RawSchedule) -> Result<ScheduleSpec, ConfigError> {
        crate::cron::Schedule::parse(s.cron.get_ref()).map_err(|e| self.err(&s.cron, "cron", e.to_string()))?;
        let timezone = match &s.timezone {
            Some(tz) => {
                tz.get_ref()
                    .parse::<chrono_tz::Tz>()
                    .map_err(|_| self.err(tz, "timezone", format!("unknown IANA time zone `{}`", tz.get_ref())))?;
                tz.get_ref().clone()
            }
            None => "UTC".to_string(),
        };
        let window = self.duration(&s.window, "window")?;
        let interval = self.duration(&s.interval, "interval")?;
        if window.is_zero() {
            return Err(self.err(&s.window, "window", "window must be more than 0"));
        }
        if interval.is_zero() {
            return Err(self.err(&s.interval, "interval", "interval must be more than 0"));
        }
        if !(1..=MAX_SLICE_LEN).contains(s.slice_len.get_ref()) {
            return Err(self.err(
                &s.slice_len,
                "slice_len",
                format!("slice_len must be between 1 and {MAX_SLICE_LEN}"),
            ));
        }
        let time = |t: &Option<Spanned<String>>, key: &str| -> Result<Option<i64>, ConfigError> {
            t.as_ref().map(|t| parse_time(t.get_ref()).map_err(|m| self.err(t, key, m))).transpose()
        };
        let effective_from = time(&s.effective_from, "effective_from")?;
        let effective_until = time(&s.effective_until, "effective_until")?;
        if let (Some(f), Some(u), Some(span)) = (effective_from, effective_until, &s.effective_until) {
            if u <= f {
                return Err(self.err(span, "effective_until", "effective_until must be later than effective_from"));
            }
        }
        let run_missed = match &s.missed {
            None => true,
            Some(m) => match m.get_ref().as_str() {
                "run_once" => true,
                "skip" => false,
                other => return Err(self.err(m, "missed", format!("`{other}`: expected run_once or skip"))),
            },
        };
        Ok(ScheduleSpec {
            cron: s.cron.get_ref().clone(),
            timezone,
            window_ms: window.as_millis() as i64,
            interval_ms: interval.as_millis() as i64,
            slice_len: *s.slice_len.get_ref(),
            effective_from,
            effective_until,
            enabled: s.enabled.unwrap_or(true),
            run_missed,
        })
    }
}

/// The public endpoint of each cloud vendor; `webhook` and `http_warm` have none.
pub fn default_endpoint(kind: VendorKind) -> Option<&'static str> {
    match kind {
        VendorKind::AliyunCdn => Some("https://cdn.aliyuncs.com"),
        VendorKind::AliyunEsa => Some("https://esa.cn-hangzhou.aliyuncs.com"),
        VendorKind::VolcengineCdn => Some("https://cdn.volcengineapi.com"),
        VendorKind::TencentCdn => Some("https://cdn.tencentcloudapi.com"),
        VendorKind::HttpWarm => Some("http://unused.invalid"),
        VendorKind::Webhook => None,
    }
}

/// Whether a vendor kind can do a task type (purge on `http_warm` cannot).
pub fn supports(kind: VendorKind, task: TaskType) -> bool {
    !(kind == VendorKind::HttpWarm && task != TaskType::Preload)
}

/// The largest secret file read: keys, passwords and tokens are far smaller.
const MAX_SECRET_BYTES: u64 = 64 * 1024;

enum Bounded {
    TooLarge,
    Io(std::io::Error),
}

/// Reads a UTF-8 file of at most `max` bytes, without reading more than `max + 1` of it.
fn read_bounded(path: &Path, max: u64) -> Result<String, Bounded> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(Bounded::Io)?;
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes).map_err(Bounded::Io)?;
    if bytes.len() as u64 > max {
        return Err(Bounded::TooLarge);
    }
    String::from_utf8(bytes).map_err(|_| {
        Bounded::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, "stream did not contain valid UTF-8"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Config, ConfigError> {
        parse(Path::new("/tmp/t.toml"), text, &Overrides::default())
    }

    const GOOD: &str = r#"
[daemon]
state_dir = "/tmp/x"

[[vendor]]
name = "hook"
kind = "webhook"
endpoint = "http://127.0.0.1:9/hook"

[[job]]
name = "j"
task_type = "preload"
vendors = ["hook"]
urls = ["https://a.example/1"]

[[job.plan]]
start_time = "2026-11-24T02:00:00+08:00"
end_time = "2026-11-24T04:00:00+08:00"
interval = "90s"
slice_len = 100
"#;

    #[test]
    fn metrics_public_is_an_api_key_defaulting_to_false() {
        assert!(!parse_str(GOOD).unwrap().api.metrics_public);
        let c = parse_str(&GOOD.replace("[daemon]", "[api]\nmetrics_public = true\n\n[daemon]")).unwrap();
        assert!(c.api.metrics_public);
        let e = parse_str(&GOOD.replace("[daemon]", "[api]\nmetrics_publik = true\n\n[daemon]")).unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(e.to_string().contains("metrics_publik"), "{e}");
    }

    #[test]
    fn slow_client_limits_have_defaults_and_are_checked() {
        assert_eq!(parse_str(GOOD).unwrap().api.limits, HttpLimits::default());
        let with = |keys: &str| parse_str(&GOOD.replace("[daemon]", &format!("[api]\n{keys}\n\n[daemon]")));
        let l = with("header_timeout = \"2s\"\nbody_idle_timeout = 5\nbody_min_rate = 10\nmax_connections = 3")
            .unwrap()
            .api
            .limits;
        assert_eq!(
            l,
            HttpLimits {
                header_timeout: Duration::from_secs(2),
                body_idle_timeout: Duration::from_secs(5),
                body_min_rate: 10,
                max_connections: 3
            }
        );
        for (bad, key) in [
            ("header_timeout = 0", "header_timeout"),
            ("header_timeout = \"soon\"", "header_timeout"),
            ("body_idle_timeout = \"0s\"", "body_idle_timeout"),
            ("body_min_rate = 0", "body_min_rate"),
            ("body_min_rate = -1", "body_min_rate"),
            ("max_connections = 0", "max_connections"),
            ("max_connections = 1000000", "max_connections"),
        ] {
            let e = with(bad).unwrap_err();
            assert_eq!((e.line, e.key.as_str()), (3, key), "{bad}: {e}");
        }
    }

    #[test]
    fn junk_lines_get_a_message_and_a_short_printable_key() {
        // Found by the `config` fuzz target: a lone `\r` before NULs gave an empty message and
        // echoed the NULs as the key.
        let e = parse_str("[daemon]\nstate_dir = \"/x\"\n\r\0\0\0\n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(!e.message.is_empty(), "{e:?}");
        assert!(!e.key.chars().any(char::is_control), "{e:?}");
        let e = parse_str(&format!("{}\n", "x".repeat(10_000))).unwrap_err();
        assert!(e.key.chars().count() <= 65, "{e:?}");
    }

    #[test]
    fn good_config_parses() {
        let c = parse_str(GOOD).unwrap();
        assert_eq!(c.jobs[0].plans[0].interval_ms, 90_000);
        assert_eq!(c.vendors[0].requests_per_second, 10);
    }

    #[test]
    fn errors_name_line_and_key() {
        let e = parse_str(&GOOD.replace("slice_len = 100", "slice_len = 100\nbogus = 1")).unwrap_err();
        assert_eq!(e.line, 21, "{e}");
        assert!(e.to_string().contains("bogus"), "{e}");
        let e = parse_str(&GOOD.replace("vendors = [\"hook\"]", "vendors = [\"nope\"]")).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (13, "vendors"), "{e}");
        let e = parse_str(&GOOD.replace("end_time = \"2026-11-24T04", "end_time = \"2026-11-24T01")).unwrap_err();
        assert_eq!(e.key, "end_time");
        let e = parse_str(&GOOD.replace("interval = \"90s\"", "interval = 0")).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (19, "interval"), "{e}");
        let e = parse_str(&GOOD.replace("slice_len = 100", "slice_len = 0")).unwrap_err();
        assert_eq!(e.key, "slice_len");
        let e =
            parse_str(&format!("{GOOD}\n[[vendor]]\nname = \"hook\"\nkind = \"webhook\"\nendpoint = \"http://x\"\n"))
                .unwrap_err();
        assert!(e.message.contains("duplicate vendor"), "{e}");
        let e = parse_str(&GOOD.replace("interval = \"90s\"", "interval = \"soon\"")).unwrap_err();
        assert_eq!(e.key, "interval");
    }

    const REPORT: &str = r#"
[smtp]
host = "smtp.example.com"
from = "preloadd <reports@example.com>"

[[report]]
name = "daily"
domain_names = ["CDN.example.com"]

[report.deliver.email]
subject = "Daily"
to = ["ops@example.com"]

[report.schedule]
crontab = "0 0 8 * * ?"
frequency = "d"

[[report.reports]]
report_id = 1
conditions = [{ field = "vendor", op = "in", value = ["hook"] }]
"#;

    #[test]
    fn reports_and_smtp_parse() {
        let c = parse_str(&format!("{GOOD}{REPORT}")).unwrap();
        let smtp = c.smtp.unwrap();
        assert_eq!((smtp.port, smtp.security), (587, SmtpSecurity::Starttls));
        let r = &c.reports[0];
        assert_eq!(r.domain_names, ["cdn.example.com"]);
        assert_eq!(r.schedule.timezone, "Asia/Shanghai");
        assert_eq!(r.reports[0].conditions[0].value, ["hook"]);
    }

    #[test]
    fn report_errors_name_line_and_key() {
        let base = format!("{GOOD}{REPORT}");
        let line_of = |needle: &str| 1 + base[..base.find(needle).unwrap()].matches('\n').count();
        let e = parse_str(&base.replace("frequency = \"d\"", "frequency = \"m\"")).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (line_of("frequency"), "frequency"), "{e}");
        let e = parse_str(&base.replace("crontab = \"0 0 8 * * ?\"", "crontab = \"0 0 25 * * ?\"")).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (line_of("crontab"), "crontab"), "{e}");
        let e = parse_str(&base.replace("report_id = 1", "report_id = 1\nbogus = 2")).unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        assert_eq!(e.line, line_of("report_id") + 1, "{e}");
        let e = parse_str(&base.replace("host = ", "hots = ")).unwrap_err();
        assert!(e.to_string().contains("hots"), "{e}");
        let e = parse_str(
            &base.replace("[smtp]\nhost = \"smtp.example.com\"\nfrom = \"preloadd <reports@example.com>\"\n", ""),
        )
        .unwrap_err();
        assert_eq!(e.key, "deliver", "{e}");
        assert!(e.message.contains("[smtp]"), "{e}");
        let e =
            parse_str(&base.replace("security", "x").replace("host = ", "security = \"ssl\"\nhost = ")).unwrap_err();
        assert_eq!(e.key, "security", "{e}");
        let e = parse_str(&format!("{base}\n[[report]]\nname = \"daily\"\n[report.deliver.webhook]\nurl = \"http://x.example/\"\n[report.schedule]\ncrontab = \"0 0 8 * * ?\"\nfrequency = \"d\"\n[[report.reports]]\nreport_id = 2\n"))
            .unwrap_err();
        assert!(e.message.contains("duplicate report"), "{e}");
        let e = parse_str(&format!("{GOOD}[api]\nmax_report_subscriptions = 0\n")).unwrap_err();
        assert_eq!(e.key, "max_report_subscriptions", "{e}");
    }

    const WARM: &str = r#"
[[vendor]]
name = "warm"
kind = "http_warm"
resolve = ["203.0.113.7", "2001:db8::1"]
headers = { "User-Agent" = "preloadd-warm", "Accept-Encoding" = "gzip" }
concurrency = 8
timeout = "20s"

[[job]]
name = "j"
task_type = "preload"
vendors = ["warm"]
urls = ["https://a.example/1"]
"#;

    #[test]
    fn http_warm_keys() {
        let c = parse_str(WARM).unwrap();
        let o = &c.vendors[0].options;
        assert_eq!(o.resolve, vec!["203.0.113.7".parse::<std::net::IpAddr>().unwrap(), "2001:db8::1".parse().unwrap()]);
        assert!(o.headers.contains(&("User-Agent".to_string(), "preloadd-warm".to_string())));
        assert_eq!((c.vendors[0].concurrency, c.vendors[0].timeout), (8, Duration::from_secs(20)));

        let e = parse_str(&WARM.replace("2001:db8::1", "edge-1")).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (5, "resolve"), "{e}");
        let e = parse_str(&WARM.replace("\"gzip\"", "1")).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (6, "headers"), "{e}");
        let e = parse_str(&WARM.replace("\"User-Agent\"", "\"Bad Name\"")).unwrap_err();
        assert_eq!(e.key, "headers", "{e}");
        let e = parse_str(&WARM.replace("task_type = \"preload\"", "task_type = \"refresh_file\"")).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (13, "vendors"), "{e}");
        assert!(e.message.contains("cannot do refresh_file"), "{e}");
        let e = parse_str(&WARM.replace("concurrency = 8", "resolv = []")).unwrap_err();
        assert!(e.message.contains("unknown field"), "{e}");
        let hook = GOOD
            .replace("endpoint = \"http://127.0.0.1:9/hook\"", "endpoint = \"http://x\"\nresolve = [\"127.0.0.1\"]");
        let e = parse_str(&hook).unwrap_err();
        assert_eq!(e.key, "resolve", "{e}");
        assert!(e.message.contains("http_warm only"), "{e}");
    }

    #[test]
    fn areas_are_checked_per_kind() {
        let tc = |area: &str| {
            format!(
                "[[vendor]]\nname = \"tc\"\nkind = \"tencent_cdn\"\naccess_key_id = \"AKID\"\n\
                 access_key_secret_env = \"PATH\"\narea = \"{area}\"\n"
            )
        };
        assert_eq!(parse_str(&tc("overseas")).unwrap().vendors[0].options.area.as_deref(), Some("overseas"));
        let e = parse_str(&tc("domestic")).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (6, "area"), "{e}");
        assert!(e.message.contains("mainland, overseas, global"), "{e}");
    }
}
