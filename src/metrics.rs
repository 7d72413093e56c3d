//! `/metrics`: the Prometheus text exposition format (version 0.0.4), rendered from one
//! database snapshot ([`crate::store::MetricsSnapshot`]) plus the in-process vendor and reload
//! counters. No metrics crate: the format is a few lines of text.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::model::PlanStatus;
use crate::store::{Histogram, MetricsSnapshot};
use crate::vendor::Vendors;

/// Counters of the daemon itself (config reloads).
#[derive(Debug, Default)]
pub struct DaemonStats {
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    /// Unix ms of the config in force (start, or the last good reload).
    pub config_loaded_at_ms: AtomicI64,
}

/// The Content-Type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn histogram(&mut self, name: &str, h: &Histogram) {
        for (le, n) in &h.buckets {
            self.sample(&format!("{name}_bucket"), &[("le", &le.to_string())], n);
        }
        self.sample(&format!("{name}_bucket"), &[("le", "+Inf")], h.count);
        self.sample(&format!("{name}_sum"), &[], h.sum);
        self.sample(&format!("{name}_count"), &[], h.count);
    }
}

/// Label values escape `\`, `"` and newlines.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Renders every metric.
pub fn render(db: &MetricsSnapshot, vendors: &Vendors, daemon: &DaemonStats) -> String {
    let mut o = Out(String::with_capacity(8 * 1024));
    o.family("preloadd_build_info", "gauge", "Version of the running daemon.");
    o.sample("preloadd_build_info", &[("version", env!("CARGO_PKG_VERSION"))], 1);

    o.family(
        "preloadd_slices",
        "gauge",
        "Slices per vendor account (subtasks), by task type and submit status (pending, submitting, submitted, done, failed).",
    );
    for (vendor, task_type, status, n, _) in &db.subtasks {
        o.sample("preloadd_slices", &[("vendor", vendor), ("task_type", task_type), ("status", status)], n);
    }
    o.family("preloadd_urls_submitted_total", "counter", "URLs the vendor accepted, by vendor account and task type.");
    let mut accepted: Vec<(&str, &str, i64)> = Vec::new();
    for (vendor, task_type, _, _, urls) in &db.subtasks {
        match accepted.iter_mut().find(|(v, t, _)| v == vendor && t == task_type) {
            Some(a) => a.2 += urls,
            None => accepted.push((vendor, task_type, *urls)),
        }
    }
    for (vendor, task_type, urls) in accepted {
        o.sample("preloadd_urls_submitted_total", &[("vendor", vendor), ("task_type", task_type)], urls);
    }
    o.family(
        "preloadd_urls",
        "gauge",
        "URLs in slices per vendor account, by task type and outcome (pending, done, failed, unknown).",
    );
    for (vendor, task_type, outcome, n) in &db.outcomes {
        o.sample("preloadd_urls", &[("vendor", vendor), ("task_type", task_type), ("outcome", outcome)], n);
    }
    o.family("preloadd_slice_failures", "gauge", "Failed slices per vendor account by the vendor's error code.");
    for (vendor, code, n) in &db.failures {
        o.sample("preloadd_slice_failures", &[("vendor", vendor), ("code", code)], n);
    }

    let accounts: Vec<_> = vendors.iter().collect();
    o.family("preloadd_vendor_calls_total", "counter", "Vendor API calls since the daemon started.");
    for a in &accounts {
        o.sample("preloadd_vendor_calls_total", &[("vendor", a.name())], a.stats.calls.load(Ordering::Relaxed));
    }
    o.family("preloadd_vendor_errors_total", "counter", "Vendor API errors since the daemon started, by error code.");
    for a in &accounts {
        for (code, n) in a.stats.errors_by_code() {
            o.sample("preloadd_vendor_errors_total", &[("vendor", a.name()), ("code", &code)], n);
        }
    }
    o.family("preloadd_vendor_retries_total", "counter", "Vendor calls retried after a retryable error.");
    for a in &accounts {
        o.sample("preloadd_vendor_retries_total", &[("vendor", a.name())], a.stats.retries.load(Ordering::Relaxed));
    }
    o.family("preloadd_vendor_limiter_waits_total", "counter", "Vendor calls that waited for the rate limiter.");
    for a in &accounts {
        let n = a.stats.limiter_waits.load(Ordering::Relaxed);
        o.sample("preloadd_vendor_limiter_waits_total", &[("vendor", a.name())], n);
    }

    o.family("preloadd_quota_limit", "gauge", "Today's daily quota (URLs) per vendor account and bucket.");
    for (vendor, bucket, quota, _, _) in &db.quota {
        o.sample("preloadd_quota_limit", &[("vendor", vendor), ("bucket", bucket)], quota);
    }
    o.family("preloadd_quota_remaining", "gauge", "URLs left in today's daily quota per vendor account and bucket.");
    for (vendor, bucket, _, remaining, _) in &db.quota {
        o.sample("preloadd_quota_remaining", &[("vendor", vendor), ("bucket", bucket)], remaining);
    }
    o.family("preloadd_quota_waiting_slices", "gauge", "Slices paused until the vendor's daily quota resets.");
    for (vendor, n) in &db.quota_waits {
        o.sample("preloadd_quota_waiting_slices", &[("vendor", vendor)], n);
    }

    o.family(
        "preloadd_slice_lateness_seconds",
        "histogram",
        "How late each slice's first vendor request left, against its due time.",
    );
    o.histogram("preloadd_slice_lateness_seconds", &db.lateness);

    o.family("preloadd_plans", "gauge", "Plans by status.");
    for status in PlanStatus::ALL {
        let n = db.plans.iter().find(|(s, _)| s == status.as_str()).map_or(0, |(_, n)| *n);
        o.sample("preloadd_plans", &[("status", status.as_str())], n);
    }
    o.family("preloadd_jobs", "gauge", "Jobs.");
    o.sample("preloadd_jobs", &[], db.jobs);
    o.family("preloadd_database_size_bytes", "gauge", "Size of the SQLite database (pages in use).");
    o.sample("preloadd_database_size_bytes", &[], db.db_bytes);
    o.family("preloadd_database_wal_size_bytes", "gauge", "Size of the SQLite write-ahead log file.");
    o.sample("preloadd_database_wal_size_bytes", &[], db.wal_bytes);

    o.family("preloadd_config_reloads_total", "counter", "Config reloads (SIGHUP) by result.");
    o.sample("preloadd_config_reloads_total", &[("result", "ok")], daemon.reloads_ok.load(Ordering::Relaxed));
    o.sample("preloadd_config_reloads_total", &[("result", "failed")], daemon.reloads_failed.load(Ordering::Relaxed));
    o.family("preloadd_config_loaded_timestamp_seconds", "gauge", "When the config in force was loaded.");
    let at = daemon.config_loaded_at_ms.load(Ordering::Relaxed) as f64 / 1000.0;
    o.sample("preloadd_config_loaded_timestamp_seconds", &[], at);
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
