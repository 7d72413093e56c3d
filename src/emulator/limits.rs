//! The vendors' limits: calls per second per action, URLs per request and URLs per vendor day,
//! each counted per account (access key).
//!
//! Defaults, per account. "doc" numbers are the vendors' published defaults (VENDORS.md and the
//! API pages); "chosen" numbers are not published and were picked to be plausible.
//!
//! | vendor | action / kind | calls/s | URLs/request | URLs/day |
//! |---|---|---|---|---|
//! | aliyun_cdn | PushObjectCache (preload) | 50 doc | 100 doc | 1,000 doc |
//! | aliyun_cdn | RefreshObjectCaches File | 50 doc | 1,000 doc | 10,000 doc |
//! | aliyun_cdn | RefreshObjectCaches Directory | 50 doc | 100 doc | 100 doc |
//! | aliyun_cdn | RefreshObjectCaches Regex | 50 doc | 1 doc | 20 doc |
//! | aliyun_cdn | RefreshObjectCaches IgnoreParams | 50 doc | 100 chosen | 100 doc |
//! | aliyun_cdn | DescribeRefreshTasks | 10 doc (older page; newer says 5) | | |
//! | aliyun_cdn | DescribeRefreshTaskById | 30 doc | | |
//! | aliyun_cdn | DescribeRefreshQuota | 20 doc | | |
//! | aliyun_esa | PreloadCaches | 50 chosen | 100 chosen | 1,000 chosen |
//! | aliyun_esa | PurgeCaches file, cachekey | 50 chosen | 1,000 doc (console) | 10,000 doc (Basic plan) |
//! | aliyun_esa | PurgeCaches directory, cachetag, hostname | 50 chosen | 100 chosen | 100 chosen |
//! | aliyun_esa | PurgeCaches ignoreParams | 50 chosen | 100 doc (console) | 100 chosen |
//! | aliyun_esa | PurgeCaches purgeall | 50 chosen | 1 | 50 doc (Basic plan) |
//! | aliyun_esa | DescribePreloadTasks, DescribePurgeTasks | 10 chosen | | |
//! | aliyun_esa | GetPurgeQuota | 20 chosen | | |
//! | volcengine_cdn | SubmitPreloadTask | 20 doc | 100 doc | 1,000 doc |
//! | volcengine_cdn | SubmitRefreshTask file | 20 doc | 100 doc | 10,000 doc (another page: 1,000) |
//! | volcengine_cdn | SubmitRefreshTask dir | 20 doc | 100 doc | 50 doc |
//! | volcengine_cdn | SubmitRefreshTask regex | 20 doc | 10 doc | 20 doc |
//! | volcengine_cdn | DescribeContentTasks, DescribeContentQuota | 20 doc | | |
//! | tencent_cdn | PushUrlsCache | 20 doc | 500 doc | 1,000 doc, per region |
//! | tencent_cdn | PurgeUrlsCache | 20 doc | 1,000 doc | 10,000 doc, per region |
//! | tencent_cdn | PurgePathCache | 20 doc | 500 chosen | 100 doc, per region |
//! | tencent_cdn | Describe*Tasks, Describe*Quota | 20 doc | | |
//!
//! A [`LimitOverride`] for a vendor kind replaces these for every submit action of that kind:
//! `qps` for each submit action, `max_urls_per_request` and `daily_quota` for every task kind.
//! Status and quota queries keep their own rates.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::protocol::ApiError;
use crate::model::VendorKind;
use crate::quota::vendor_day;

/// Overrides of the default limits of one vendor kind; `None` keeps the default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitOverride {
    pub qps: Option<u32>,
    pub max_urls_per_request: Option<u32>,
    pub daily_quota: Option<u64>,
}

/// What a submit asks of the vendor; each kind has its own daily counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum QuotaKind {
    Preload,
    File,
    Directory,
    Regex,
    IgnoreParams,
    CacheKey,
    CacheTag,
    Hostname,
    PurgeAll,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct SubmitLimit {
    pub max_urls: u32,
    pub daily: u64,
}

pub(super) struct Limits {
    overrides: HashMap<VendorKind, LimitOverride>,
}

pub(super) const SUBMIT_ACTIONS: &[&str] = &[
    "PushObjectCache",
    "RefreshObjectCaches",
    "PreloadCaches",
    "PurgeCaches",
    "SubmitPreloadTask",
    "SubmitRefreshTask",
    "PushUrlsCache",
    "PurgeUrlsCache",
    "PurgePathCache",
];

impl Limits {
    pub fn new(overrides: HashMap<VendorKind, LimitOverride>) -> Limits {
        Limits { overrides }
    }

    fn overridden(&self, vendor: VendorKind) -> LimitOverride {
        self.overrides.get(&vendor).copied().unwrap_or_default()
    }

    /// Calls per second allowed for one action of one account.
    pub fn qps(&self, vendor: VendorKind, action: &str) -> u32 {
        let default = match (vendor, action) {
            (VendorKind::VolcengineCdn | VendorKind::TencentCdn, _) => 20,
            (_, "PushObjectCache" | "RefreshObjectCaches" | "PreloadCaches" | "PurgeCaches") => 50,
            (_, "DescribeRefreshTaskById") => 30,
            (_, "DescribeRefreshQuota" | "GetPurgeQuota") => 20,
            _ => 10,
        };
        match self.overridden(vendor).qps {
            Some(qps) if SUBMIT_ACTIONS.contains(&action) => qps,
            _ => default,
        }
    }

    pub fn submit(&self, vendor: VendorKind, kind: QuotaKind) -> SubmitLimit {
        let (max_urls, daily) = match (vendor, kind) {
            (VendorKind::VolcengineCdn, QuotaKind::Preload) => (100, 1_000),
            (VendorKind::VolcengineCdn, QuotaKind::File) => (100, 10_000),
            (VendorKind::VolcengineCdn, QuotaKind::Regex) => (10, 20),
            (VendorKind::VolcengineCdn, _) => (100, 50),
            (VendorKind::TencentCdn, QuotaKind::Preload) => (500, 1_000),
            (VendorKind::TencentCdn, QuotaKind::File) => (1_000, 10_000),
            (VendorKind::TencentCdn, _) => (500, 100),
            (VendorKind::AliyunEsa, QuotaKind::Preload) => (100, 1_000),
            (VendorKind::AliyunEsa, QuotaKind::File | QuotaKind::CacheKey) => (1_000, 10_000),
            (VendorKind::AliyunEsa, QuotaKind::PurgeAll) => (1, 50),
            (VendorKind::AliyunEsa, _) => (100, 100),
            (_, QuotaKind::Preload) => (100, 1_000),
            (_, QuotaKind::File) => (1_000, 10_000),
            (_, QuotaKind::Regex) => (1, 20),
            (_, _) => (100, 100),
        };
        let o = self.overridden(vendor);
        SubmitLimit { max_urls: o.max_urls_per_request.unwrap_or(max_urls), daily: o.daily_quota.unwrap_or(daily) }
    }
}

/// Accepted calls per (account, vendor, action) in the last second.
#[derive(Default)]
pub(super) struct RateWindows(HashMap<(String, VendorKind, &'static str), VecDeque<i64>>);

impl RateWindows {
    /// Admits a call at `now` when fewer than `qps` calls were admitted in the second before it,
    /// so no one-second window, wherever it starts, holds more than `qps` calls. Refused calls
    /// are not counted: a throttled client is not punished for asking.
    pub fn admit(
        &mut self,
        account: &str,
        vendor: VendorKind,
        action: &'static str,
        qps: u32,
        now: i64,
    ) -> Result<(), ApiError> {
        let window = self.0.entry((account.to_string(), vendor, action)).or_default();
        while window.front().is_some_and(|t| *t <= now - 1_000) {
            window.pop_front();
        }
        if window.len() >= qps as usize {
            return Err(ApiError::throttled());
        }
        window.push_back(now);
        Ok(())
    }
}

/// URLs charged per (account, vendor, kind) on the current vendor day (Asia/Shanghai).
#[derive(Default)]
pub(super) struct Usage(HashMap<(String, VendorKind, QuotaKind), (String, u64)>);

impl Usage {
    pub fn used(&self, account: &str, vendor: VendorKind, kind: QuotaKind, now: i64) -> u64 {
        match self.0.get(&(account.to_string(), vendor, kind)) {
            Some((day, n)) if *day == vendor_day(now) => *n,
            _ => 0,
        }
    }

    /// Charges `n` URLs, all or nothing: a request that does not fit is refused whole, as the
    /// vendors do.
    pub fn charge(
        &mut self,
        account: &str,
        vendor: VendorKind,
        kind: QuotaKind,
        n: u64,
        limit: u64,
        now: i64,
    ) -> Result<(), ()> {
        let used = self.used(account, vendor, kind, now);
        if used + n > limit {
            return Err(());
        }
        self.0.insert((account.to_string(), vendor, kind), (vendor_day(now), used + n));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_window_slides() {
        let mut w = RateWindows::default();
        let cdn = VendorKind::AliyunCdn;
        for t in [0, 10, 20] {
            assert!(w.admit("ak", cdn, "PushObjectCache", 3, t).is_ok());
        }
        assert_eq!(w.admit("ak", cdn, "PushObjectCache", 3, 999).unwrap_err().code, "Throttling.User");
        assert!(w.admit("ak", cdn, "RefreshObjectCaches", 3, 999).is_ok(), "actions count apart");
        assert!(w.admit("other", cdn, "PushObjectCache", 3, 999).is_ok(), "accounts count apart");
        assert!(w.admit("ak", cdn, "PushObjectCache", 3, 1_000).is_ok(), "the call at 0 left the window");
        assert!(w.admit("ak", cdn, "PushObjectCache", 3, 1_005).is_err());
    }

    #[test]
    fn quota_resets_at_shanghai_midnight() {
        let mut u = Usage::default();
        let t = crate::config::parse_time("2026-11-23T15:59:59Z").unwrap();
        let cdn = VendorKind::AliyunCdn;
        assert!(u.charge("ak", cdn, QuotaKind::Preload, 3, 4, t).is_ok());
        assert!(u.charge("ak", cdn, QuotaKind::Preload, 2, 4, t).is_err());
        assert_eq!(u.used("ak", cdn, QuotaKind::Preload, t), 3);
        assert!(u.charge("ak", cdn, QuotaKind::Preload, 4, 4, t + 1_000).is_ok());
    }

    #[test]
    fn overrides_touch_submits_only() {
        let o = LimitOverride { qps: Some(2), max_urls_per_request: Some(5), daily_quota: Some(7) };
        let limits = Limits::new(HashMap::from([(VendorKind::AliyunCdn, o)]));
        assert_eq!(limits.qps(VendorKind::AliyunCdn, "PushObjectCache"), 2);
        assert_eq!(limits.qps(VendorKind::AliyunCdn, "DescribeRefreshTaskById"), 30);
        assert_eq!(limits.qps(VendorKind::AliyunEsa, "PreloadCaches"), 50);
        assert_eq!(limits.submit(VendorKind::AliyunCdn, QuotaKind::Directory), SubmitLimit { max_urls: 5, daily: 7 });
        assert_eq!(
            limits.submit(VendorKind::AliyunEsa, QuotaKind::File),
            SubmitLimit { max_urls: 1_000, daily: 10_000 }
        );
    }
}
