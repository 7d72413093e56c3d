//! Vendor days: daily quotas reset at midnight in the vendor's time zone (Asia/Shanghai for the
//! Chinese clouds), not at UTC midnight.

use chrono::{Duration, TimeZone};
use chrono_tz::Asia::Shanghai;

/// The vendor day of `now_ms`, as `YYYY-MM-DD` in Asia/Shanghai.
pub fn vendor_day(now_ms: i64) -> String {
    crate::clock::to_datetime(now_ms).with_timezone(&Shanghai).format("%Y-%m-%d").to_string()
}

/// The instant (unix ms) the next vendor day starts: the next Asia/Shanghai midnight.
pub fn next_vendor_day(now_ms: i64) -> i64 {
    let local = crate::clock::to_datetime(now_ms).with_timezone(&Shanghai);
    let tomorrow = local.date_naive() + Duration::days(1);
    let midnight = tomorrow.and_hms_opt(0, 0, 0).expect("midnight exists");
    Shanghai.from_local_datetime(&midnight).earliest().map(|t| t.timestamp_millis()).unwrap_or(now_ms + 86_400_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shanghai_midnight() {
        // 2026-11-23T15:59:59Z is 23:59:59 in Shanghai; the next day starts one second later.
        let t = crate::config::parse_time("2026-11-23T15:59:59Z").unwrap();
        assert_eq!(vendor_day(t), "2026-11-23");
        assert_eq!(next_vendor_day(t), t + 1000);
        assert_eq!(vendor_day(t + 1000), "2026-11-24");
    }
}
