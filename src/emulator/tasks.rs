//! Asynchronous tasks: every submitted URL (or directory, tag, ...) becomes one entry under a
//! vendor task id. An entry is `Refreshing` for `task_ms` on the injected clock, then `Complete`,
//! or `Failed` when [`url_fails`] picks its URL. Entries are visible to the account that
//! submitted them for the vendors' three-day look-back, then forgotten.

use std::collections::VecDeque;

use sha2::{Digest, Sha256};

use super::limits::QuotaKind;
use super::protocol::ApiError;
use super::Ctx;
use crate::model::VendorKind;

/// Both products answer status queries for the last three days only.
pub(super) const LOOKBACK_MS: i64 = 3 * 86_400_000;

/// The failure description the vendors document for an origin that answered 5xx.
const FAILED_DESCRIPTION: &str = "Origin Return StatusCode 5XX";

/// Whether the task of `url` ends `Failed` when a fraction `fraction` of URLs fail. It depends
/// only on the URL (its SHA-256), so tests and demos can predict which URLs fail.
pub fn url_fails(url: &str, fraction: f64) -> bool {
    if fraction <= 0.0 {
        return false;
    }
    let digest = Sha256::digest(url.as_bytes());
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(head) as f64 / u64::MAX as f64) < fraction
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Status {
    Refreshing,
    Complete,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Refreshing => "Refreshing",
            Status::Complete => "Complete",
            Status::Failed => "Failed",
        }
    }

    /// A `Status` filter as the APIs take it.
    pub fn parse(name: &str, value: &str) -> Result<Status, ApiError> {
        match value {
            "Refreshing" => Ok(Status::Refreshing),
            "Complete" => Ok(Status::Complete),
            "Failed" => Ok(Status::Failed),
            _ => Err(ApiError::invalid(name)),
        }
    }
}

/// One URL of one vendor task.
pub(super) struct Entry {
    pub id: String,
    pub vendor: VendorKind,
    pub account: String,
    pub site_id: Option<i64>,
    /// As the status APIs show it: `preload`, `file`, `directory`, ...
    pub object_type: &'static str,
    pub object: String,
    pub created_ms: i64,
    fails: bool,
}

impl Entry {
    pub fn status(&self, now: i64, task_ms: u64) -> Status {
        if now < self.created_ms + task_ms as i64 {
            Status::Refreshing
        } else if self.fails {
            Status::Failed
        } else {
            Status::Complete
        }
    }

    /// Progress as the APIs show it (`"40%"`); a finished task, failed or not, is at 100%.
    pub fn process(&self, now: i64, task_ms: u64) -> String {
        let percent = match self.status(now, task_ms) {
            Status::Refreshing => ((now - self.created_ms).max(0) * 100 / (task_ms.max(1) as i64)).min(99),
            _ => 100,
        };
        format!("{percent}%")
    }

    pub fn description(&self, now: i64, task_ms: u64) -> &'static str {
        if self.status(now, task_ms) == Status::Failed {
            FAILED_DESCRIPTION
        } else {
            ""
        }
    }
}

/// Every entry of the last three days, oldest first.
#[derive(Default)]
pub(super) struct TaskStore {
    entries: VecDeque<Entry>,
}

impl TaskStore {
    fn add(&mut self, entry: Entry, now: i64) {
        while self.entries.front().is_some_and(|e| e.created_ms < now - LOOKBACK_MS) {
            self.entries.pop_front();
        }
        self.entries.push_back(entry);
    }

    /// The entries one account can see, newest first.
    pub fn visible<'a>(
        &'a self,
        account: &'a str,
        vendor: VendorKind,
        now: i64,
    ) -> impl Iterator<Item = &'a Entry> + 'a {
        self.entries
            .iter()
            .rev()
            .filter(move |e| e.vendor == vendor && e.account == account && e.created_ms >= now - LOOKBACK_MS)
    }
}

/// How a submit's URLs map to vendor task ids.
pub(super) enum Grouping {
    /// CDN: one id per accelerated domain name, at most `max` URLs under one id (the API pages
    /// document this merging for tasks submitted together).
    PerDomain { max: usize },
    /// ESA: one id per request.
    One,
}

/// One submit, as an action handler describes it.
pub(super) struct Submit<'a> {
    pub kind: QuotaKind,
    pub object_type: &'static str,
    pub objects: &'a [String],
    pub site_id: Option<i64>,
    pub grouping: Grouping,
    /// The vendor's code and message for an exhausted daily quota.
    pub quota_error: (&'static str, &'static str),
    /// Where the vendor counts daily quotas per region (Tencent), the regions this submit is
    /// charged to (`global` is both); empty for one account-wide counter.
    pub regions: &'a [&'a str],
    /// The vendor's code and message for too many URLs in one request.
    pub batch_error: (&'static str, &'static str),
}

/// The daily-usage key of an account in one region: regions count apart.
pub(super) fn usage_key(account: &str, region: Option<&str>) -> String {
    match region {
        Some(r) => format!("{account}#{r}"),
        None => account.to_string(),
    }
}

/// The Alibaba codes for too many URLs in one request.
pub(super) const ALI_BATCH_ERROR: (&str, &str) =
    ("SingleRequest.OverLimit", "A maximum of URLs per request is exceeded.");

/// Checks the per-request cap, charges the daily quota, creates the tasks and records the
/// ledger line. Returns the task ids, in order of first appearance.
pub(super) fn accept(ctx: &Ctx<'_>, s: Submit<'_>) -> Result<Vec<String>, ApiError> {
    let state = ctx.state;
    let vendor = ctx.call.vendor;
    let limit = state.limits.submit(vendor, s.kind);
    if s.objects.len() > limit.max_urls as usize {
        let message = if s.batch_error == ALI_BATCH_ERROR {
            format!("A maximum of {} URLs are supported for each request.", limit.max_urls)
        } else {
            format!("{} (at most {} per request)", s.batch_error.1, limit.max_urls)
        };
        return Err(ApiError::bad_request(s.batch_error.0, message));
    }
    let ids = {
        let mut books = state.books();
        let keys: Vec<String> = if s.regions.is_empty() {
            vec![ctx.account.to_string()]
        } else {
            s.regions.iter().map(|r| usage_key(ctx.account, Some(r))).collect()
        };
        let n = s.objects.len() as u64;
        // All or nothing across regions: a global submit that does not fit one region is refused.
        if keys.iter().any(|k| books.usage.used(k, vendor, s.kind, ctx.now) + n > limit.daily) {
            return Err(ApiError::bad_request(s.quota_error.0, s.quota_error.1));
        }
        for k in &keys {
            books.usage.charge(k, vendor, s.kind, n, limit.daily, ctx.now).expect("checked above");
        }
        let assigned = assign_ids(state, s.objects, &s.grouping);
        for (object, id) in s.objects.iter().zip(&assigned) {
            let entry = Entry {
                id: id.clone(),
                vendor,
                account: ctx.account.to_string(),
                site_id: s.site_id,
                object_type: s.object_type,
                object: object.clone(),
                created_ms: ctx.now,
                fails: url_fails(object, state.fail_fraction),
            };
            books.tasks.add(entry, ctx.now);
        }
        let mut ids: Vec<String> = Vec::new();
        for id in assigned {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids
    };
    ctx.record(s.objects, &ids);
    Ok(ids)
}

/// The task id of each object, in the objects' order.
fn assign_ids(state: &super::EmulatorState, objects: &[String], grouping: &Grouping) -> Vec<String> {
    match grouping {
        Grouping::One => {
            let id = state.new_task_id();
            vec![id; objects.len()]
        }
        Grouping::PerDomain { max } => {
            // (domain, current id, URLs under it so far)
            let mut open: Vec<(String, String, usize)> = Vec::new();
            objects
                .iter()
                .map(|object| {
                    let domain = domain_of(object);
                    match open.iter_mut().find(|(d, _, n)| *d == domain && n < max) {
                        Some((_, id, n)) => {
                            *n += 1;
                            id.clone()
                        }
                        None => {
                            let id = state.new_task_id();
                            open.retain(|(d, _, _)| *d != domain);
                            open.push((domain, id.clone(), 1));
                            id
                        }
                    }
                })
                .collect()
        }
    }
}

/// The host of `http://host/path`, `https://host/path` or the CDN's scheme-less `host/path`.
pub(super) fn domain_of(object: &str) -> String {
    let rest = object.split_once("://").map_or(object, |(_, r)| r);
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    rest[..end].to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_is_a_pure_function_of_the_url() {
        let urls: Vec<String> = (0..1000).map(|i| format!("https://cdn.example.com/{i}.js")).collect();
        let failing = urls.iter().filter(|u| url_fails(u, 0.3)).count();
        assert!((200..400).contains(&failing), "{failing}");
        assert!(urls.iter().all(|u| url_fails(u, 0.3) == url_fails(u, 0.3)));
        assert!(urls.iter().all(|u| !url_fails(u, 0.0) && url_fails(u, 1.0)));
    }

    #[test]
    fn domains() {
        assert_eq!(domain_of("https://A.example.com/x?y"), "a.example.com");
        assert_eq!(domain_of("example.com/image/1.png"), "example.com");
        assert_eq!(domain_of("example.com"), "example.com");
    }
}
