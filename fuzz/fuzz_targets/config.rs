//! The config loader (`config::load_bytes`, what `serve` and `check-config` run on the file's
//! bytes): it never panics; every error names the file and a line inside the input, with a
//! message; a config it accepts holds what validation promises.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use preloadd::config::{self, Overrides, UrlSource, MAX_SLICE_LEN, MAX_SPAN_MS};

/// Relative secret and list files resolve beside this path, which does not exist.
const PATH: &str = "/nonexistent-preloadd-fuzz/preloadd.toml";

fuzz_target!(|data: &[u8]| {
    // Absolute paths into device and kernel files could block or never end (`/dev/zero` as a
    // secret file): an operator's choice, not the parser's business.
    if [&b"/dev"[..], b"/proc", b"/sys"].iter().any(|p| data.windows(p.len()).any(|w| w == *p)) {
        return;
    }
    let lines = 1 + data.iter().filter(|&&b| b == b'\n').count();
    match config::load_bytes(Path::new(PATH), data.to_vec(), &Overrides::default()) {
        Err(e) => {
            assert!(e.line >= 1 && e.line <= lines, "the error's line {} is in the input ({lines} lines): {e}", e.line);
            assert!(!e.message.trim().is_empty(), "every error says what is wrong: {e:?}");
            assert!(!e.key.chars().any(char::is_control), "the key is printable: {e:?}");
            // At most 64 characters of the line, control characters escaped (`\u{0}`).
            assert!(e.key.chars().count() <= 64 * 8 + 1, "the key is short: {e:?}");
            let shown = e.to_string();
            assert!(shown.starts_with(&format!("{PATH}:{}: ", e.line)), "the error names file and line: {shown}");
            if !e.key.is_empty() {
                assert!(shown.contains(&format!("`{}`", e.key)), "the error names its key: {shown}");
            }
        }
        Ok(c) => {
            for v in &c.vendors {
                assert!(!v.name.is_empty());
                assert!(v.requests_per_second >= 1 && v.max_urls_per_request >= 1 && v.concurrency >= 1);
                assert!(v.daily_quota != Some(0));
                assert!(!v.timeout.is_zero());
            }
            for j in &c.jobs {
                assert!(!j.name.is_empty() && !j.vendors.is_empty());
                assert!(j.vendors.iter().all(|n| c.vendors.iter().any(|v| &v.name == n)), "jobs name known vendors");
                if let UrlSource::File(p) = &j.source {
                    assert!(p.is_absolute(), "list files are resolved against the config's directory");
                }
                for p in &j.plans {
                    assert!(p.end_time > p.start_time);
                    assert!(p.interval_ms >= 1000 && p.interval_ms <= MAX_SPAN_MS);
                    assert!((1..=MAX_SLICE_LEN).contains(&p.slice_len));
                }
                for (i, a) in j.plans.iter().enumerate() {
                    for b in &j.plans[i + 1..] {
                        assert!(a.end_time <= b.start_time || b.end_time <= a.start_time, "plans do not overlap");
                    }
                }
                if let Some(s) = &j.schedule {
                    assert!(s.window_ms > 0 && s.interval_ms > 0);
                    // A schedule that validated has a rule that parses, and fires strictly later.
                    preloadd::cron::Schedule::parse(&s.cron).expect("a validated cron rule parses");
                    for after in [0, 1_795_975_200_000, s.effective_from.unwrap_or(0)] {
                        if let Some(t) = s.next_fire(after) {
                            assert!(t > after, "next_fire({after}) = {t}");
                            assert!(s.effective_until.is_none_or(|u| t <= u));
                        }
                    }
                }
            }
        }
    }
});
