//! The human summary `check-config` prints: vendors, jobs, URL counts, rejected lines, plans,
//! report subscriptions.

use std::fmt::Write;

use crate::clock::rfc3339;
use crate::config::{Config, UrlSource};
use crate::ingest::{self, IngestError};

/// Renders the summary, reading every URL list (streaming). An unusable list is an error.
pub async fn render(cfg: &Config) -> Result<String, String> {
    let mut out = String::new();
    let _ = writeln!(out, "configuration {} is valid", cfg.path.display());
    let _ = writeln!(out, "state_dir: {}", cfg.daemon.state_dir.display());
    let _ = writeln!(
        out,
        "api: {}{}{}",
        cfg.api.listen,
        if cfg.api.token.is_some() { " (token set)" } else { " (no token)" },
        if cfg.api.metrics_public { ", /metrics public" } else { ", /metrics loopback or token" }
    );
    let _ = writeln!(out, "vendors ({}):", cfg.vendors.len());
    for v in &cfg.vendors {
        let quota = v.daily_quota.map(|q| format!("{q} URLs/day")).unwrap_or_else(|| "no daily quota".into());
        // http_warm has no endpoint: it fetches the URLs themselves, from DNS or pinned edges.
        let target = match (v.kind, v.options.resolve.is_empty()) {
            (crate::model::VendorKind::HttpWarm, true) => format!("GET each URL, {} at a time", v.concurrency),
            (crate::model::VendorKind::HttpWarm, false) => {
                let edges: Vec<String> = v.options.resolve.iter().map(|ip| ip.to_string()).collect();
                format!("GET each URL from {}, {} at a time", edges.join(" "), v.concurrency)
            }
            _ => v.endpoint.clone(),
        };
        let _ = writeln!(
            out,
            "  {:<16} {:<15} {}  {} req/s, {} URLs/request, {}",
            v.name,
            v.kind.as_str(),
            target,
            v.requests_per_second,
            v.max_urls_per_request,
            quota
        );
    }
    let _ = writeln!(out, "jobs ({}):", cfg.jobs.len());
    for j in &cfg.jobs {
        let from = match &j.source {
            UrlSource::Inline(u) => format!("inline ({} entries)", u.len()),
            UrlSource::File(p) => format!("urls_file {}", p.display()),
            UrlSource::Url(u) => format!("urls_url {u}"),
            UrlSource::Sitemap(u) => format!("sitemap_url {u}"),
        };
        let _ = writeln!(out, "  {} — {} to {} from {from}", j.name, j.task_type, j.vendors.join(", "));
        if let Some(s) = &j.schedule {
            schedule_lines(&mut out, s);
        }
        match ingest::scan(&j.source).await {
            Ok(r) => {
                if r.valid == 0 {
                    return Err(format!(
                        "job `{}`: MissingUrlList: the list has no valid URL ({} lines rejected)\n{}",
                        j.name,
                        r.rejected.count,
                        r.rejected.render()
                    ));
                }
                let _ = writeln!(
                    out,
                    "    {} URLs ({} lines rejected; duplicates are dropped at load)",
                    r.valid, r.rejected.count
                );
                for line in r.rejected.render().lines() {
                    let _ = writeln!(out, "      rejected {line}");
                }
                for p in &j.plans {
                    let slices = ((p.end_time - p.start_time) + p.interval_ms - 1) / p.interval_ms;
                    let capacity = slices * p.slice_len;
                    let fits = if capacity as u64 >= r.valid {
                        "the window fits the list"
                    } else {
                        "the window closes before the list ends"
                    };
                    let _ = writeln!(
                        out,
                        "    plan {} to {}, every {}s, {} URLs a slice: up to {slices} slices, {capacity} URLs ({fits})",
                        rfc3339(p.start_time),
                        rfc3339(p.end_time),
                        p.interval_ms as f64 / 1000.0,
                        p.slice_len
                    );
                }
            }
            Err(IngestError::Source(m)) => {
                let _ = writeln!(out, "    list not checked: {m}");
            }
            Err(e) => return Err(format!("job `{}`: {e}", j.name)),
        }
    }
    if let Some(smtp) = &cfg.smtp {
        let security = format!("{:?}", smtp.security).to_lowercase();
        let _ = writeln!(out, "smtp: {}:{} ({security}), from {}", smtp.host, smtp.port, smtp.from);
    }
    if !cfg.reports.is_empty() {
        let _ = writeln!(out, "report subscriptions ({}):", cfg.reports.len());
    }
    for r in &cfg.reports {
        let to = match &r.deliver {
            crate::reports::Deliver::Email(e) => format!("email to {}", e.to.join(", ")),
            crate::reports::Deliver::Webhook(w) => format!("{:?} webhook", w.format).to_lowercase(),
        };
        let ids: Vec<String> = r.reports.iter().map(|x| x.report_id.to_string()).collect();
        let s = &r.schedule;
        let _ = writeln!(
            out,
            "  {} — reports {} by {to}, `{}` in {}{}",
            r.name,
            ids.join(", "),
            s.crontab,
            s.timezone,
            if s.enabled { "" } else { " (disabled)" }
        );
        match s.next_run(chrono::Utc::now().timestamp_millis()) {
            Some(t) => {
                let (from, to) = s.period(t);
                let _ = writeln!(out, "    next delivery {} covering {} to {}", rfc3339(t), rfc3339(from), rfc3339(to));
            }
            None => {
                let _ = writeln!(out, "    no further delivery");
            }
        }
    }
    Ok(out)
}

/// The schedule line of a job: the rule, its zone and pace, and the next three firings.
fn schedule_lines(out: &mut String, s: &crate::config::ScheduleSpec) {
    let _ = writeln!(
        out,
        "    schedule `{}` in {}: a {}s window every firing, every {}s, {} URLs a slice{}",
        s.cron,
        s.timezone,
        s.window_ms / 1000,
        s.interval_ms as f64 / 1000.0,
        s.slice_len,
        if s.enabled { "" } else { " (disabled)" }
    );
    let tz: chrono_tz::Tz = s.timezone.parse().unwrap_or(chrono_tz::UTC);
    let mut after = chrono::Utc::now().timestamp_millis();
    for _ in 0..3 {
        match s.next_fire(after) {
            Some(t) => {
                let local = crate::clock::to_datetime(t).with_timezone(&tz);
                let _ =
                    writeln!(out, "      next firing {}", local.to_rfc3339_opts(chrono::SecondsFormat::Secs, false));
                after = t;
            }
            None => {
                let _ = writeln!(out, "      no further firing in its effective range");
                break;
            }
        }
    }
}
