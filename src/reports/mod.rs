//! Report subscriptions (Alibaba Cloud CDN's DeliverTask, seed 000): what a subscription is, its
//! validation, the period a firing covers, and the delivery loop ([`Reporter`]).
//!
//! The reports themselves are computed by the store (`store::reports`); [`render`] turns them into
//! CSV, HTML, text and chat messages, and [`send`] delivers them by SMTP or webhook.
//!
//! Architecture Invariant: a period is delivered at most once. Its delivery row (unique per
//! subscription and period start) is created in the same transaction that moves `next_run`, and
//! is marked `sending` (committed) before every attempt; a row found `sending` at start was
//! interrupted mid-send and is recorded as failed, never sent again.

pub mod render;
pub mod send;

use std::sync::Arc;
use std::time::Duration;

use chrono::{Datelike, NaiveTime, TimeZone, Timelike};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::clock::{rfc3339, SharedClock};
use crate::config::SmtpConfig;
use crate::failpoint::failpoint;
use crate::store::{self, Store, StoreError};

/// The report ids and their titles.
pub const REPORTS: &[(u32, &str)] = &[
    (1, "Preload and refresh summary per domain and vendor"),
    (2, "Failed URLs"),
    (3, "Quota use per vendor account"),
    (4, "Plans that finished with URLs left or failed"),
];

/// The default time zone of a subscription's crontab and periods (Alibaba Cloud's).
pub const DEFAULT_TIMEZONE: &str = "Asia/Shanghai";
/// At most this many domain names per subscription (seed 000).
pub const MAX_DOMAINS: usize = 500;

/// One report of a subscription, with its filter conditions (seed: ReDatas).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportSelection {
    #[serde(alias = "reportId")]
    pub report_id: u32,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// `field op value[]` (seed: ConDatas). Fields: domain, vendor, task_type, status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    pub field: String,
    pub op: String,
    #[serde(default)]
    pub value: Vec<String>,
}

impl Condition {
    /// Whether `v` passes; conditions on a field a report row does not have are not applied.
    pub fn accepts(&self, v: &str) -> bool {
        let hit = self.value.iter().any(|x| x.eq_ignore_ascii_case(v));
        match self.op.as_str() {
            "not_in" => !hit,
            _ => hit,
        }
    }
}

/// How reports are sent (seed: Deliver). Externally tagged: `{"email": {...}}` or `{"webhook": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Deliver {
    Email(EmailDeliver),
    Webhook(WebhookDeliver),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailDeliver {
    #[serde(default)]
    pub subject: String,
    pub to: Vec<String>,
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookDeliver {
    pub url: String,
    /// Signs the request (generic: `X-Preloadd-Signature`; DingTalk and Feishu: their schemes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    #[serde(default)]
    pub format: WebhookFormat,
}

/// The secret never shows in `Debug` (logs, panics), like [`crate::config::Secret`].
impl std::fmt::Debug for WebhookDeliver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookDeliver")
            .field("url", &"***")
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .field("format", &self.format)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    #[default]
    Generic,
    Dingtalk,
    Feishu,
    Wecom,
    Slack,
}

/// The period a report covers: the previous hour, day or week (seed: frequency h|d|w).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frequency {
    #[serde(rename = "h")]
    Hour,
    #[serde(rename = "d")]
    Day,
    #[serde(rename = "w")]
    Week,
}

/// When a subscription fires (seed: Schedule). Times are unix milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportSchedule {
    #[serde(default)]
    pub sched_name: String,
    #[serde(default)]
    pub description: String,
    pub crontab: String,
    pub frequency: Frequency,
    pub enabled: bool,
    pub timezone: String,
    pub effective_from: Option<i64>,
    pub effective_end: Option<i64>,
}

/// A subscription as validated; what the store keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionSpec {
    pub name: String,
    pub reports: Vec<ReportSelection>,
    pub domain_names: Vec<String>,
    pub deliver: Deliver,
    pub schedule: ReportSchedule,
}

/// Why a subscription is invalid: `key` names the field; `time` marks `TimeParseFailed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub key: String,
    pub message: String,
    pub time: bool,
}

impl SpecError {
    fn new(key: &str, message: impl Into<String>) -> Self {
        SpecError { key: key.into(), message: message.into(), time: false }
    }
}

impl std::fmt::Display for SpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl SubscriptionSpec {
    /// Checks every rule shared by the API and the config.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.name.trim().is_empty() || self.name.len() > 128 {
            return Err(SpecError::new("name", "a name of 1 to 128 characters is required"));
        }
        if self.reports.is_empty() {
            return Err(SpecError::new("reports", "give at least one report (report_id 1 to 4)"));
        }
        for r in &self.reports {
            if !REPORTS.iter().any(|(id, _)| *id == r.report_id) {
                return Err(SpecError::new("reports", format!("unknown report_id {} (1 to 4)", r.report_id)));
            }
            for c in &r.conditions {
                if !matches!(c.field.as_str(), "domain" | "vendor" | "task_type" | "status") {
                    return Err(SpecError::new(
                        "conditions",
                        format!("unknown field `{}` (domain, vendor, task_type, status)", c.field),
                    ));
                }
                match c.op.as_str() {
                    "in" | "not_in" if !c.value.is_empty() => {}
                    "eq" if c.value.len() == 1 => {}
                    "eq" => return Err(SpecError::new("conditions", "op `eq` takes exactly one value")),
                    "in" | "not_in" => {
                        return Err(SpecError::new("conditions", format!("op `{}` needs at least one value", c.op)))
                    }
                    other => {
                        return Err(SpecError::new("conditions", format!("unknown op `{other}` (in, not_in, eq)")))
                    }
                }
            }
        }
        if self.domain_names.len() > MAX_DOMAINS {
            return Err(SpecError::new(
                "domain_names",
                format!("at most {MAX_DOMAINS} domain names (got {})", self.domain_names.len()),
            ));
        }
        if let Some(d) = self.domain_names.iter().find(|d| d.is_empty() || d.contains(['/', ' ', ','])) {
            return Err(SpecError::new("domain_names", format!("`{d}` is not a domain name")));
        }
        match &self.deliver {
            Deliver::Email(e) => {
                if e.to.is_empty() {
                    return Err(SpecError::new("deliver", "email needs at least one address in `to`"));
                }
                for a in &e.to {
                    if a.parse::<lettre::Address>().is_err() {
                        return Err(SpecError::new("deliver", format!("`{a}` is not an email address")));
                    }
                }
            }
            Deliver::Webhook(w) => match url::Url::parse(&w.url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => return Err(SpecError::new("deliver", format!("webhook url `{}` is not an http(s) URL", w.url))),
            },
        }
        let s = &self.schedule;
        crate::cron::Schedule::parse(&s.crontab).map_err(|e| SpecError::new("crontab", e.to_string()))?;
        s.timezone
            .parse::<chrono_tz::Tz>()
            .map_err(|_| SpecError::new("timezone", format!("unknown IANA time zone `{}`", s.timezone)))?;
        if let (Some(f), Some(e)) = (s.effective_from, s.effective_end) {
            if e <= f {
                return Err(SpecError {
                    key: "effective_end".into(),
                    message: "effective_end must be later than effective_from".into(),
                    time: true,
                });
            }
        }
        Ok(())
    }
}

impl ReportSchedule {
    fn tz(&self) -> chrono_tz::Tz {
        self.timezone.parse().unwrap_or(chrono_tz::Asia::Shanghai)
    }

    /// The first firing strictly after `after_ms` inside the effective range, if enabled.
    pub fn next_run(&self, after_ms: i64) -> Option<i64> {
        if !self.enabled {
            return None;
        }
        let rule = crate::cron::Schedule::parse(&self.crontab).ok()?;
        let after = match self.effective_from {
            Some(from) if from - 1 > after_ms => from - 1,
            _ => after_ms,
        };
        let t = rule.next_after(crate::clock::to_datetime(after), self.tz())?.timestamp_millis();
        match self.effective_end {
            Some(end) if t > end => None,
            _ => Some(t),
        }
    }

    /// The period a firing at `fire_ms` reports on: the last whole hour, day (midnight to
    /// midnight) or week (Monday to Monday) before the firing, in the subscription's time zone.
    pub fn period(&self, fire_ms: i64) -> (i64, i64) {
        let tz = self.tz();
        let local = crate::clock::to_datetime(fire_ms).with_timezone(&tz).naive_local();
        let at = |naive: chrono::NaiveDateTime| -> i64 {
            // A midnight that does not exist (a DST gap) starts at the end of the gap.
            tz.from_local_datetime(&naive)
                .earliest()
                .or_else(|| tz.from_local_datetime(&(naive + chrono::Duration::hours(1))).earliest())
                .map(|t| t.timestamp_millis())
                .unwrap_or(fire_ms)
        };
        match self.frequency {
            Frequency::Hour => {
                let end = local.date().and_time(NaiveTime::from_hms_opt(local.hour(), 0, 0).unwrap_or_default());
                let end_ms = at(end).min(fire_ms);
                (end_ms - 3_600_000, end_ms)
            }
            Frequency::Day => {
                let end = local.date();
                let start = end.pred_opt().unwrap_or(end);
                (at(start.and_time(NaiveTime::MIN)), at(end.and_time(NaiveTime::MIN)))
            }
            Frequency::Week => {
                let back = local.date().weekday().num_days_from_monday() as u64;
                let end = local.date().checked_sub_days(chrono::Days::new(back)).unwrap_or(local.date());
                let start = end.checked_sub_days(chrono::Days::new(7)).unwrap_or(end);
                (at(start.and_time(NaiveTime::MIN)), at(end.and_time(NaiveTime::MIN)))
            }
        }
    }
}

/// Settings of the delivery loop; tests shorten the backoff.
#[derive(Debug, Clone)]
pub struct ReporterSettings {
    /// First retry delay after a failed delivery; doubles per attempt up to `retry_cap`.
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// Attempts before a delivery is recorded as failed for good.
    pub max_attempts: i64,
    /// Timeout of one webhook call.
    pub timeout: Duration,
}

impl Default for ReporterSettings {
    fn default() -> Self {
        ReporterSettings {
            retry_base: Duration::from_secs(60),
            retry_cap: Duration::from_secs(3600),
            max_attempts: 8,
            timeout: Duration::from_secs(30),
        }
    }
}

/// What one pass of [`Reporter::deliver_due`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryPass {
    /// New periods queued for delivery.
    pub queued: usize,
    pub sent: usize,
    pub failed: usize,
}

/// Delivers due report subscriptions: a loop around [`Reporter::deliver_due`], on the injected clock.
pub struct Reporter {
    store: Store,
    clock: SharedClock,
    smtp: Option<SmtpConfig>,
    http: reqwest::Client,
    settings: ReporterSettings,
}

impl Reporter {
    pub fn new(store: Store, clock: SharedClock, smtp: Option<SmtpConfig>, settings: ReporterSettings) -> Arc<Self> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a TLS backend is compiled in");
        Arc::new(Reporter { store, clock, smtp, http, settings })
    }

    /// At start: deliveries left `sending` by a crash may or may not have gone out; they are
    /// recorded as failed and never sent again (a period is delivered at most once).
    pub async fn recover(&self) -> Result<usize, StoreError> {
        let n = self.store.fail_interrupted_deliveries(self.clock.now_ms()).await?;
        if n > 0 {
            warn!(deliveries = n, "report deliveries interrupted by a restart are not sent again");
        }
        Ok(n)
    }

    /// One pass: queues the period of every subscription whose firing has come (missed firings
    /// collapse into the latest), then attempts every delivery whose time has come.
    pub async fn deliver_due(&self) -> Result<DeliveryPass, StoreError> {
        let now = self.clock.now_ms();
        let mut pass = DeliveryPass::default();
        for sub in self.store.due_subscriptions(now).await? {
            let Some(expected) = sub.next_run else { continue };
            let sched = &sub.spec.schedule;
            let mut latest = expected;
            for _ in 0..100_000 {
                match sched.next_run(latest) {
                    Some(n) if n <= now => latest = n,
                    _ => break,
                }
            }
            let (start, end) = sched.period(latest);
            let next = sched.next_run(now);
            if self.store.queue_delivery(sub.id, expected, start, end, next, now).await? {
                pass.queued += 1;
                info!(subscription = %sub.spec.name, period_start = %rfc3339(start), period_end = %rfc3339(end), "report queued");
            }
        }
        for d in self.store.due_deliveries(now).await? {
            let Some(claimed) = self.store.claim_delivery(d, now).await? else { continue };
            failpoint!("reports::after_claim");
            let result = self.attempt(&claimed).await;
            if result.is_ok() {
                failpoint!("reports::after_send");
            }
            let now = self.clock.now_ms();
            match result {
                Ok(()) => {
                    self.store.finish_delivery(claimed.id, None, None, now).await?;
                    pass.sent += 1;
                    info!(subscription = %claimed.subscription, period_start = %rfc3339(claimed.period_start), "report delivered");
                }
                Err(e) => {
                    let give_up = claimed.attempts >= self.settings.max_attempts;
                    let retry_at = (!give_up).then(|| now + self.backoff(claimed.attempts));
                    warn!(subscription = %claimed.subscription, attempt = claimed.attempts, error = %e, give_up, "report delivery failed");
                    self.store.finish_delivery(claimed.id, Some(&e), retry_at, now).await?;
                    pass.failed += 1;
                }
            }
        }
        Ok(pass)
    }

    fn backoff(&self, attempt: i64) -> i64 {
        let base = self.settings.retry_base.as_millis() as i64;
        let cap = self.settings.retry_cap.as_millis() as i64;
        base.saturating_mul(1i64 << (attempt - 1).clamp(0, 20)).min(cap)
    }

    async fn attempt(&self, d: &store::DeliveryWork) -> Result<(), String> {
        let spec = &d.spec;
        let mut reports = Vec::new();
        for sel in &spec.reports {
            let r = self
                .store
                .compute_report(sel, &spec.domain_names, d.period_start, d.period_end)
                .await
                .map_err(|e| format!("computing report {}: {e}", sel.report_id))?;
            reports.push(r);
        }
        let doc = render::Document::new(spec, d.period_start, d.period_end, reports);
        match &spec.deliver {
            Deliver::Email(e) => {
                let Some(smtp) = &self.smtp else {
                    return Err("no [smtp] section in the config: email cannot be sent".into());
                };
                send::email(smtp, e, &doc).await
            }
            Deliver::Webhook(w) => send::webhook(&self.http, w, &doc, self.clock.now_ms()).await,
        }
    }

    /// When the loop should look again.
    async fn next_wake(&self) -> Option<i64> {
        self.store.next_report_wake().await.ok().flatten()
    }

    /// The loop: recover, then deliver what is due, sleeping until the next firing or retry
    /// (at most 10 s, so API changes are seen soon), until cancelled.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        if let Err(e) = self.recover().await {
            warn!(error = %e, "report delivery recovery failed");
        }
        loop {
            if cancel.is_cancelled() {
                break;
            }
            if let Err(e) = self.deliver_due().await {
                warn!(error = %e, "report delivery step failed; retrying shortly");
            }
            let now = self.clock.now_ms();
            let wait = match self.next_wake().await {
                Some(t) if t > now => Duration::from_millis((t - now) as u64),
                Some(_) => Duration::from_millis(200),
                None => Duration::from_secs(10),
            }
            .min(Duration::from_secs(10));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = cancel.cancelled() => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_time;

    fn sched(frequency: Frequency, tz: &str) -> ReportSchedule {
        ReportSchedule {
            sched_name: String::new(),
            description: String::new(),
            crontab: "0 0 8 * * ?".into(),
            frequency,
            enabled: true,
            timezone: tz.into(),
            effective_from: None,
            effective_end: None,
        }
    }

    fn t(s: &str) -> i64 {
        parse_time(s).unwrap()
    }

    #[test]
    fn periods_are_whole_local_hours_days_and_weeks() {
        let day = sched(Frequency::Day, "Asia/Shanghai");
        assert_eq!(
            day.period(t("2026-12-01T08:00:00+08:00")),
            (t("2026-11-30T00:00:00+08:00"), t("2026-12-01T00:00:00+08:00"))
        );
        // The day the clocks go back in Berlin has 25 hours.
        let berlin = sched(Frequency::Day, "Europe/Berlin");
        let (a, b) = berlin.period(t("2026-10-26T08:00:00+01:00"));
        assert_eq!((a, b), (t("2026-10-25T00:00:00+02:00"), t("2026-10-26T00:00:00+01:00")));
        assert_eq!(b - a, 25 * 3_600_000);
        let week = sched(Frequency::Week, "Asia/Shanghai");
        assert_eq!(
            week.period(t("2026-12-02T09:00:00+08:00")),
            (t("2026-11-23T00:00:00+08:00"), t("2026-11-30T00:00:00+08:00"))
        );
        let hour = sched(Frequency::Hour, "Asia/Kolkata");
        assert_eq!(
            hour.period(t("2026-12-01T08:20:00+05:30")),
            (t("2026-12-01T07:00:00+05:30"), t("2026-12-01T08:00:00+05:30"))
        );
    }

    #[test]
    fn next_run_respects_status_and_effective_range() {
        let mut s = sched(Frequency::Day, "Asia/Shanghai");
        assert_eq!(s.next_run(t("2026-12-01T08:00:00+08:00")), Some(t("2026-12-02T08:00:00+08:00")));
        s.effective_from = Some(t("2026-12-10T00:00:00+08:00"));
        assert_eq!(s.next_run(t("2026-12-01T08:00:00+08:00")), Some(t("2026-12-10T08:00:00+08:00")));
        s.effective_end = Some(t("2026-12-10T07:00:00+08:00"));
        assert_eq!(s.next_run(t("2026-12-01T08:00:00+08:00")), None);
        s.effective_end = None;
        s.enabled = false;
        assert_eq!(s.next_run(t("2026-12-01T08:00:00+08:00")), None);
    }

    #[test]
    fn validation_names_the_field() {
        let good = SubscriptionSpec {
            name: "n".into(),
            reports: vec![ReportSelection { report_id: 1, conditions: vec![] }],
            domain_names: vec![],
            deliver: Deliver::Email(EmailDeliver { subject: "s".into(), to: vec!["a@example.com".into()] }),
            schedule: sched(Frequency::Day, "Asia/Shanghai"),
        };
        assert_eq!(good.validate(), Ok(()));
        let cond = |field: &str, op: &str, n: usize| Condition {
            field: field.into(),
            op: op.into(),
            value: (0..n).map(|i| i.to_string()).collect(),
        };
        type Change = Box<dyn Fn(&mut SubscriptionSpec)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|s| s.reports.clear()), "reports"),
            (Box::new(|s| s.reports[0].report_id = 5), "reports"),
            (Box::new(move |s| s.reports[0].conditions = vec![cond("prov", "in", 1)]), "conditions"),
            (Box::new(move |s| s.reports[0].conditions = vec![cond("domain", "eq", 2)]), "conditions"),
            (Box::new(move |s| s.reports[0].conditions = vec![cond("domain", "like", 1)]), "conditions"),
            (Box::new(|s| s.domain_names = (0..501).map(|i| format!("d{i}.example.com")).collect()), "domain_names"),
            (
                Box::new(|s| s.deliver = Deliver::Email(EmailDeliver { subject: "s".into(), to: vec!["nope".into()] })),
                "deliver",
            ),
            (Box::new(|s| s.schedule.crontab = "0 0 25 * * *".into()), "crontab"),
            (Box::new(|s| s.schedule.timezone = "Mars/Base".into()), "timezone"),
        ];
        for (change, key) in cases {
            let mut s = good.clone();
            change(&mut s);
            assert_eq!(s.validate().unwrap_err().key, key);
        }
        let mut s = good.clone();
        s.schedule.effective_from = Some(10);
        s.schedule.effective_end = Some(5);
        let e = s.validate().unwrap_err();
        assert!(e.time && e.key == "effective_end", "{e}");
        let w = WebhookDeliver {
            url: "https://oapi.dingtalk.com/robot/send?access_token=tok".into(),
            secret: Some("SECret".into()),
            format: WebhookFormat::Dingtalk,
        };
        let shown = format!("{w:?}");
        assert!(!shown.contains("SECret") && !shown.contains("tok"), "{shown}");
    }
}
