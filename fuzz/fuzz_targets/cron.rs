//! The cron parser and firing times (`cron::Schedule`): parsing never panics and its errors are
//! short; a rule that parses prints in a form that parses back to the same rule; its next
//! firing after any instant, in any time zone (DST gaps and overlaps included), is strictly
//! later, whole-second, and the firings after it keep increasing.

#![no_main]

use chrono::{DateTime, Timelike, Utc};
use chrono_tz::Tz;
use libfuzzer_sys::fuzz_target;
use preloadd::cron::Schedule;

/// Zones with the odd transitions: half-hour DST, a skipped day, negative DST, 2-hour DST.
const ZONES: [Tz; 12] = [
    Tz::UTC,
    Tz::Asia__Shanghai,
    Tz::America__New_York,
    Tz::Europe__Berlin,
    Tz::Australia__Lord_Howe,
    Tz::Pacific__Apia,
    Tz::Europe__Dublin,
    Tz::Antarctica__Troll,
    Tz::America__St_Johns,
    Tz::Asia__Kathmandu,
    Tz::Pacific__Chatham,
    Tz::America__Santiago,
];

/// The horizon `next_after` searches, plus slack for the zone's offsets and a DST gap.
const HORIZON_SECS: i64 = (366 * 8 + 3) * 86_400;

fuzz_target!(|data: &[u8]| {
    if data.len() < 10 {
        return;
    }
    let (head, expr) = data.split_at(10);
    let expr = String::from_utf8_lossy(expr);
    let schedule = match Schedule::parse(&expr) {
        Ok(s) => s,
        Err(e) => {
            let shown = e.to_string();
            assert!(!shown.is_empty() && shown.chars().count() < 400, "errors stay short: {shown}");
            return;
        }
    };
    let printed = schedule.to_string();
    assert_eq!(Schedule::parse(&printed).as_ref(), Ok(&schedule), "`{expr}` prints as `{printed}`");

    let tz = ZONES[head[0] as usize % ZONES.len()];
    let raw = i64::from_le_bytes(head[1..9].try_into().expect("8 bytes"));
    // Mostly instants between 1900 and 2200 (where transitions are), sometimes any at all.
    let secs = if head[9] & 1 == 0 { raw.rem_euclid(300 * 365 * 86_400) - 70 * 365 * 86_400 } else { raw };
    let nanos = (head[9] as u32 >> 1) * 7_812_500;
    let Some(after) = DateTime::<Utc>::from_timestamp(secs, nanos) else { return };
    let Some(next) = schedule.next_after(after, tz) else { return };
    assert!(next > after, "`{printed}` in {tz}: next_after({after}) = {next}");
    assert_eq!(next.nanosecond(), 0, "firings are on whole seconds");
    assert!(next.timestamp() - after.timestamp() <= HORIZON_SECS, "within the search horizon");
    let upcoming = schedule.upcoming(after, tz, 4);
    assert_eq!(upcoming.first(), Some(&next), "upcoming starts with next_after");
    for w in upcoming.windows(2) {
        assert!(w[1] > w[0], "`{printed}` in {tz}: firings increase: {upcoming:?}");
    }
});
