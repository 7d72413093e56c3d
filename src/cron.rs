//! Owns cron rules for recurring schedules: parsing, display, and DST-correct firing times.
//!
//! Rules are evaluated against local wall-clock time, as ISC (Vixie) cron does, then mapped to
//! UTC instants. Daylight-saving policy:
//!
//! * A matching wall-clock time that does not exist (spring-forward gap, e.g. 02:30 on
//!   2026-03-08 in America/New_York) fires once, at the instant the gap ends (03:00 local).
//!   Every matching time inside one gap collapses into that single firing, which also coincides
//!   with (rather than adds to) a firing at the end-of-gap time itself. ISC cron catches up on
//!   skipped fixed-time jobs the same way; unlike ISC, wildcard rules (`0 * 2 * * *`) also get
//!   that one catch-up firing, so no rule silently loses a day.
//! * A matching wall-clock time that occurs twice (fall-back overlap) fires at its first
//!   occurrence only, for fixed-time rules (`0 30 1 * * *`).
//! * Rules whose minute or hour field is `*`-based (`*`, `*/15`) are "wildcard" rules in ISC's
//!   terms (`MIN_STAR | HR_STAR`). ISC keeps running those through the repeated hour, so here they
//!   fire at both occurrences: `0 */15 * * * *` keeps a 15-minute cadence in real time instead of
//!   pausing for an hour.
//!
//! Day-of-month / day-of-week follow Vixie's OR rule when both are restricted. One deliberate
//! divergence: Vixie treats any field *starting* with `*` (e.g. `*/2`) as unrestricted, which
//! silently turns "every other day of the month on Mondays" into an AND; here only a bare `*` or
//! `?` is unrestricted.

use std::fmt;
use std::str::FromStr;

use chrono::{
    DateTime, Datelike, Days, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeDelta, TimeZone, Timelike,
    Utc,
};
use chrono_tz::Tz;

/// How far ahead of `after` the search goes before declaring a rule unsatisfiable. Eight years
/// rather than five because `0 0 0 29 2 *` has an eight-year gap around 2100 (not a leap year);
/// rules that can never fire (`0 0 0 30 2 *`) still give up after cheap month/day skipping.
const HORIZON_DAYS: u64 = 366 * 8;

/// Longest error token echoed back, so fuzzed megabyte inputs do not produce megabyte messages.
const MAX_TOKEN_CHARS: usize = 64;

/// Why an expression was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CronErrorKind {
    /// The expression has no fields at all.
    Empty,
    /// Not 5 or 6 fields; holds the number found.
    FieldCount(usize),
    /// A list has an empty element, e.g. `1,,2` or a trailing comma.
    EmptyListItem,
    /// A value is neither a number nor, in this field, a name.
    NotANumber,
    /// An alphabetic value that is not one of the field's names.
    UnknownName {
        /// The names the field accepts, e.g. `JAN-DEC`.
        expected: &'static str,
    },
    /// A value outside the field's range.
    OutOfRange {
        /// Smallest accepted value.
        min: u32,
        /// Largest accepted value.
        max: u32,
    },
    /// A step that is missing, zero, not a number or wider than the field.
    BadStep {
        /// Largest accepted step.
        max: u32,
    },
    /// A range whose start is after its end, e.g. `5-1`.
    ReversedRange,
    /// `?` in a field other than day-of-month or day-of-week.
    QuestionMarkNotAllowed,
    /// `?` combined with a list, range or step.
    QuestionMarkNotAlone,
}

/// A rejected cron expression: which field, which token, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronError {
    field: Option<&'static str>,
    token: String,
    kind: CronErrorKind,
}

impl CronError {
    fn new(field: Option<&'static str>, token: &str, kind: CronErrorKind) -> Self {
        let mut chars = token.chars();
        let mut token: String = chars.by_ref().take(MAX_TOKEN_CHARS).collect();
        if chars.next().is_some() {
            token.push('…');
        }
        CronError { field, token, kind }
    }

    /// The field's name (`"hour"`, `"day-of-week"`, …), or `None` for whole-expression errors.
    pub fn field(&self) -> Option<&'static str> {
        self.field
    }

    /// The offending text (truncated if very long).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Why it was rejected.
    pub fn kind(&self) -> &CronErrorKind {
        &self.kind
    }
}

impl fmt::Display for CronError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let token = &self.token;
        match &self.kind {
            CronErrorKind::Empty => return f.write_str("empty cron expression"),
            CronErrorKind::FieldCount(n) => {
                write!(f, "expected 5 or 6 fields ([sec] min hour day-of-month month day-of-week), found {n}")?;
                if *n == 7 {
                    f.write_str(" (a year field is not supported)")?;
                }
                return Ok(());
            }
            _ => {}
        }
        write!(f, "{}: ", self.field.unwrap_or("expression"))?;
        match &self.kind {
            CronErrorKind::Empty | CronErrorKind::FieldCount(_) => Ok(()),
            CronErrorKind::EmptyListItem => write!(f, "empty list element in `{token}`"),
            CronErrorKind::NotANumber => write!(f, "`{token}` is not a number"),
            CronErrorKind::UnknownName { expected } => {
                write!(f, "unknown name `{token}` (expected {expected})")
            }
            CronErrorKind::OutOfRange { min, max } => {
                write!(f, "`{token}` is out of range {min}-{max}")
            }
            CronErrorKind::BadStep { max } => {
                write!(f, "bad step in `{token}`: must be a number from 1 to {max}")
            }
            CronErrorKind::ReversedRange => write!(f, "range `{token}` starts after it ends"),
            CronErrorKind::QuestionMarkNotAllowed => f.write_str("`?` is only allowed in day-of-month or day-of-week"),
            CronErrorKind::QuestionMarkNotAlone => {
                write!(f, "`?` must be the whole field, found `{token}`")
            }
        }
    }
}

impl std::error::Error for CronError {}

/// Static description of one cron field.
struct FieldSpec {
    name: &'static str,
    min: u32,
    /// Largest value that may be written (day-of-week accepts 7 for Sunday).
    max: u32,
    /// Largest value covered by `*` and open-ended `a/n`; for day-of-week 6, so `1/2` does not
    /// wrap round to Sunday through the alias 7.
    star_max: u32,
    names: &'static [&'static str],
    names_label: &'static str,
    /// Value of `names[0]`.
    first_name_value: u32,
    allows_question: bool,
}

impl FieldSpec {
    fn error(&self, token: &str, kind: CronErrorKind) -> CronError {
        CronError::new(Some(self.name), token, kind)
    }

    fn star_bits(&self) -> u64 {
        range_bits(self.min, self.star_max, 1)
    }
}

const MONTH_NAMES: &[&str] = &["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"];
const DAY_NAMES: &[&str] = &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

const fn numeric(name: &'static str, min: u32, max: u32) -> FieldSpec {
    FieldSpec {
        name,
        min,
        max,
        star_max: max,
        names: &[],
        names_label: "",
        first_name_value: 0,
        allows_question: false,
    }
}

const SECOND: FieldSpec = numeric("second", 0, 59);
const MINUTE: FieldSpec = numeric("minute", 0, 59);
const HOUR: FieldSpec = numeric("hour", 0, 23);
const DAY_OF_MONTH: FieldSpec = FieldSpec { allows_question: true, ..numeric("day-of-month", 1, 31) };
const MONTH: FieldSpec =
    FieldSpec { names: MONTH_NAMES, names_label: "JAN-DEC", first_name_value: 1, ..numeric("month", 1, 12) };
const DAY_OF_WEEK: FieldSpec = FieldSpec {
    name: "day-of-week",
    min: 0,
    max: 7,
    star_max: 6,
    names: DAY_NAMES,
    names_label: "SUN-SAT",
    first_name_value: 0,
    allows_question: true,
};

/// The set of values one field matches, as a bitset (all fields fit in 0..=59).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Field {
    bits: u64,
    /// `Some(n)` when written as `*` (n = 1), `?` (n = 1) or `*/n`: drives both the dom/dow OR
    /// rule and ISC's wildcard treatment of repeated hours, and lets Display round-trip it.
    star_step: Option<u32>,
}

impl Field {
    fn contains(self, value: u32) -> bool {
        value < 64 && self.bits & (1 << value) != 0
    }

    fn next_from(self, value: u32) -> Option<u32> {
        if value >= 64 {
            return None;
        }
        let rest = self.bits & (u64::MAX << value);
        (rest != 0).then(|| rest.trailing_zeros())
    }

    fn first(self) -> u32 {
        self.bits.trailing_zeros()
    }

    fn is_unrestricted(self) -> bool {
        self.star_step == Some(1)
    }
}

fn range_bits(lo: u32, hi: u32, step: u32) -> u64 {
    (lo..=hi.min(63)).step_by(step.max(1) as usize).fold(0, |bits, v| bits | (1 << v))
}

/// A parsed cron rule. Build it with [`Schedule::parse`]; `Display` gives the normalised
/// six-field form, which parses back to an equal `Schedule`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    second: Field,
    minute: Field,
    hour: Field,
    day_of_month: Field,
    month: Field,
    day_of_week: Field,
}

impl Schedule {
    /// Parses `sec min hour dom month dow`, or the classic five-field `min hour dom month dow`
    /// (seconds = 0).
    pub fn parse(expr: &str) -> Result<Schedule, CronError> {
        let fields: Vec<&str> = expr.split_whitespace().collect();
        let [sec, min, hour, dom, month, dow] = match fields.as_slice() {
            [] => return Err(CronError::new(None, expr, CronErrorKind::Empty)),
            &[min, hour, dom, month, dow] => ["0", min, hour, dom, month, dow],
            &[sec, min, hour, dom, month, dow] => [sec, min, hour, dom, month, dow],
            other => return Err(CronError::new(None, expr, CronErrorKind::FieldCount(other.len()))),
        };
        Ok(Schedule {
            second: parse_field(sec, &SECOND)?,
            minute: parse_field(min, &MINUTE)?,
            hour: parse_field(hour, &HOUR)?,
            day_of_month: parse_field(dom, &DAY_OF_MONTH)?,
            month: parse_field(month, &MONTH)?,
            day_of_week: parse_field(dow, &DAY_OF_WEEK)?,
        })
    }

    /// The first firing strictly after `after`, evaluating the rule in `tz` (see the module docs
    /// for DST handling). `None` if the rule cannot fire within the search horizon (~8 years).
    pub fn next_after(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let start = local_of(tz, after)?.with_nanosecond(0)?;
        let until = start.date().checked_add_days(Days::new(HORIZON_DAYS)).unwrap_or(NaiveDate::MAX);
        let first = self.next_first_occurrence(start, after, tz, until);
        let repeat = if self.is_wildcard() { self.next_repeat_in_overlap(start, after, tz, until) } else { None };
        match (first, repeat) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Up to `n` consecutive firings strictly after `after`, fewer if the rule runs out.
    pub fn upcoming(&self, after: DateTime<Utc>, tz: Tz, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n.min(1024));
        let mut cursor = after;
        while out.len() < n {
            match self.next_after(cursor, tz) {
                Some(next) => {
                    out.push(next);
                    cursor = next;
                }
                None => break,
            }
        }
        out
    }

    /// ISC's `MIN_STAR | HR_STAR`: such rules keep firing through a repeated (fall-back) hour.
    fn is_wildcard(&self) -> bool {
        self.minute.star_step.is_some() || self.hour.star_step.is_some()
    }

    /// Smallest firing > `after` that uses each wall-clock time's first (or only) instant, or the
    /// gap end for a missing one. That mapping is monotonic in wall-clock time, so scanning
    /// matches upward from `after`'s own wall-clock time finds the minimum.
    fn next_first_occurrence(
        &self,
        from: NaiveDateTime,
        after: DateTime<Utc>,
        tz: Tz,
        until: NaiveDate,
    ) -> Option<DateTime<Utc>> {
        let mut wall = from;
        loop {
            wall = self.next_wall_match(wall, until)?;
            let next = match tz.from_local_datetime(&wall) {
                LocalResult::Single(at) if at > after => return Some(at.to_utc()),
                LocalResult::Ambiguous(at, _) if at > after => return Some(at.to_utc()),
                // `after` is in the repeated pass, so every first pass of this overlap is behind
                // it: jump past the overlap rather than re-checking it second by second.
                LocalResult::Ambiguous(earliest, latest) => overlap_around(tz, earliest.to_utc(), latest.to_utc())
                    .filter(|overlap| after >= overlap.transition)
                    .map(|overlap| overlap.end),
                LocalResult::None => match gap_end(tz, wall) {
                    Some(at) if at > after => return Some(at),
                    _ => None,
                },
                LocalResult::Single(_) => None,
            };
            let step = wall.checked_add_signed(TimeDelta::seconds(1))?;
            wall = next.map_or(step, |end| end.max(step));
        }
    }

    /// For wildcard rules: the second occurrence of a repeated wall-clock time that falls after
    /// `after`. Only the overlap containing `after` can supply one earlier than the
    /// first-occurrence candidate, because any later overlap's first occurrences come sooner.
    fn next_repeat_in_overlap(
        &self,
        start: NaiveDateTime,
        after: DateTime<Utc>,
        tz: Tz,
        until: NaiveDate,
    ) -> Option<DateTime<Utc>> {
        let LocalResult::Ambiguous(earliest, latest) = tz.from_local_datetime(&start) else {
            return None;
        };
        let overlap = overlap_around(tz, earliest.to_utc(), latest.to_utc())?;
        // Before the transition every repeat lies ahead; after it, only later wall times do.
        let from =
            if after < overlap.transition { overlap.start } else { start.checked_add_signed(TimeDelta::seconds(1))? };
        let wall = self.next_wall_match(from, until)?;
        if wall >= overlap.end {
            return None;
        }
        tz.from_local_datetime(&wall).latest().map(|d| d.to_utc())
    }

    /// First wall-clock time >= `from` (and on or before `until`) that the rule matches,
    /// skipping whole months and days that cannot match.
    fn next_wall_match(&self, from: NaiveDateTime, until: NaiveDate) -> Option<NaiveDateTime> {
        let mut date = from.date();
        let mut floor = from.time();
        while date <= until {
            if !self.month.contains(date.month()) {
                date = first_of_next_month(date)?;
                floor = NaiveTime::MIN;
                continue;
            }
            if self.day_matches(date) {
                if let Some(time) = self.first_time_from(floor) {
                    return Some(date.and_time(time));
                }
            }
            date = date.succ_opt()?;
            floor = NaiveTime::MIN;
        }
        None
    }

    /// Vixie's rule: if either day field is unrestricted both must match (the unrestricted one
    /// always does); if both are restricted, either one suffices.
    fn day_matches(&self, date: NaiveDate) -> bool {
        let dom = self.day_of_month.contains(date.day());
        let dow = self.day_of_week.contains(date.weekday().num_days_from_sunday());
        if self.day_of_month.is_unrestricted() || self.day_of_week.is_unrestricted() {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// First matching time of day >= `floor`, carrying into the next minute or hour when the
    /// current one has nothing left.
    fn first_time_from(&self, floor: NaiveTime) -> Option<NaiveTime> {
        let (h0, m0, s0) = (floor.hour(), floor.minute(), floor.second());
        let (first_minute, first_second) = (self.minute.first(), self.second.first());
        if self.hour.contains(h0) {
            if self.minute.contains(m0) {
                if let Some(s) = self.second.next_from(s0) {
                    return NaiveTime::from_hms_opt(h0, m0, s);
                }
            }
            if let Some(m) = self.minute.next_from(m0 + 1) {
                return NaiveTime::from_hms_opt(h0, m, first_second);
            }
        }
        let h = self.hour.next_from(h0 + 1)?;
        NaiveTime::from_hms_opt(h, first_minute, first_second)
    }
}

impl FromStr for Schedule {
    type Err = CronError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Schedule::parse(s)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fields = [self.second, self.minute, self.hour, self.day_of_month, self.month, self.day_of_week];
        for (i, field) in fields.into_iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write_field(f, field)?;
        }
        Ok(())
    }
}

fn write_field(f: &mut fmt::Formatter<'_>, field: Field) -> fmt::Result {
    match field.star_step {
        Some(1) => return f.write_str("*"),
        Some(step) => return write!(f, "*/{step}"),
        None => {}
    }
    // Runs of three or more become ranges; `?` and names normalise to `*` and numbers.
    let mut value = 0;
    let mut first = true;
    while let Some(start) = field.next_from(value) {
        let mut end = start;
        while field.contains(end + 1) {
            end += 1;
        }
        if !first {
            f.write_str(",")?;
        }
        first = false;
        match end - start {
            0 => write!(f, "{start}")?,
            1 => write!(f, "{start},{end}")?,
            _ => write!(f, "{start}-{end}")?,
        }
        value = end + 1;
    }
    Ok(())
}

fn parse_field(text: &str, spec: &FieldSpec) -> Result<Field, CronError> {
    if text.contains('?') {
        if !spec.allows_question {
            return Err(spec.error(text, CronErrorKind::QuestionMarkNotAllowed));
        }
        if text != "?" {
            return Err(spec.error(text, CronErrorKind::QuestionMarkNotAlone));
        }
        return Ok(Field { bits: spec.star_bits(), star_step: Some(1) });
    }
    let mut bits = 0;
    for item in text.split(',') {
        bits |= parse_item(item, spec)?;
    }
    // Sunday may be written 7; store it once, as 0.
    if spec.max == 7 && bits & (1 << 7) != 0 {
        bits = (bits & !(1 << 7)) | 1;
    }
    Ok(Field { bits, star_step: star_step_of(text, spec)? })
}

/// `Some(step)` when the whole field is `*` or `*/step`.
fn star_step_of(text: &str, spec: &FieldSpec) -> Result<Option<u32>, CronError> {
    match text.split_once('/') {
        _ if text == "*" => Ok(Some(1)),
        Some(("*", step)) if !text.contains(',') => parse_step(step, text, spec).map(Some),
        _ => Ok(None),
    }
}

fn parse_item(item: &str, spec: &FieldSpec) -> Result<u64, CronError> {
    if item.is_empty() {
        return Err(spec.error(item, CronErrorKind::EmptyListItem));
    }
    let (base, step) = match item.split_once('/') {
        Some((base, step)) => (base, Some(parse_step(step, item, spec)?)),
        None => (item, None),
    };
    let (lo, hi) = if base == "*" {
        (spec.min, spec.star_max)
    } else if let Some((a, b)) = base.split_once('-') {
        let (lo, hi) = (parse_value(a, spec)?, parse_value(b, spec)?);
        if lo > hi {
            return Err(spec.error(base, CronErrorKind::ReversedRange));
        }
        (lo, hi)
    } else {
        let value = parse_value(base, spec)?;
        // Quartz's `a/n` means "from a to the end of the field".
        let hi = if step.is_some() { spec.star_max.max(value) } else { value };
        (value, hi)
    };
    Ok(range_bits(lo, hi, step.unwrap_or(1)))
}

fn parse_step(step: &str, item: &str, spec: &FieldSpec) -> Result<u32, CronError> {
    let max = spec.star_max - spec.min + 1;
    match parse_digits(step) {
        Some(Some(n)) if (1..=max).contains(&n) => Ok(n),
        _ => Err(spec.error(item, CronErrorKind::BadStep { max })),
    }
}

fn parse_value(text: &str, spec: &FieldSpec) -> Result<u32, CronError> {
    let out_of_range = || spec.error(text, CronErrorKind::OutOfRange { min: spec.min, max: spec.max });
    if let Some(number) = parse_digits(text) {
        return number.filter(|n| (spec.min..=spec.max).contains(n)).ok_or_else(out_of_range);
    }
    if !spec.names.is_empty() && !text.is_empty() && text.chars().all(char::is_alphabetic) {
        let upper = text.to_ascii_uppercase();
        return match spec.names.iter().position(|name| *name == upper) {
            Some(index) => Ok(spec.first_name_value + index as u32),
            None => Err(spec.error(text, CronErrorKind::UnknownName { expected: spec.names_label })),
        };
    }
    Err(spec.error(text, CronErrorKind::NotANumber))
}

/// `None` if `text` is not all ASCII digits; `Some(None)` if it is but overflows. Rust's own
/// `parse` would also accept a leading `+`.
fn parse_digits(text: &str) -> Option<Option<u32>> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.parse().ok())
}

fn first_of_next_month(date: NaiveDate) -> Option<NaiveDate> {
    match date.month() {
        12 => NaiveDate::from_ymd_opt(date.year().checked_add(1)?, 1, 1),
        m => NaiveDate::from_ymd_opt(date.year(), m + 1, 1),
    }
}

/// Wall-clock time of `instant` in `tz`; `None` instead of chrono's panic at the ends of time.
fn local_of(tz: Tz, instant: DateTime<Utc>) -> Option<NaiveDateTime> {
    let utc = instant.naive_utc();
    utc.checked_add_offset(tz.offset_from_utc_datetime(&utc).fix())
}

fn local_at(tz: Tz, timestamp: i64) -> Option<NaiveDateTime> {
    local_of(tz, DateTime::from_timestamp(timestamp, 0)?)
}

/// The instant a spring-forward gap containing the non-existent `wall` ends: the first instant
/// whose wall-clock time is past `wall`. 26 hours either side brackets every offset tzdata has.
fn gap_end(tz: Tz, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
    const WINDOW: i64 = 26 * 3600;
    let base = wall.and_utc().timestamp();
    let past_wall = |ts: i64| local_at(tz, ts).map(|local| local > wall);
    let end = first_true(base.checked_sub(WINDOW)?, base.checked_add(WINDOW)?, past_wall)?;
    DateTime::from_timestamp(end, 0)
}

/// A fall-back overlap: wall-clock times in `start..end` occur twice, the second time from
/// `transition` on.
struct Overlap {
    transition: DateTime<Utc>,
    start: NaiveDateTime,
    end: NaiveDateTime,
}

fn overlap_around(tz: Tz, earliest: DateTime<Utc>, latest: DateTime<Utc>) -> Option<Overlap> {
    let offset_at = |ts: i64| {
        let utc = DateTime::from_timestamp(ts, 0)?.naive_utc();
        Some(tz.offset_from_utc_datetime(&utc).fix())
    };
    let before = offset_at(earliest.timestamp())?;
    let changed = |ts: i64| offset_at(ts).map(|offset| offset != before);
    let transition = first_true(earliest.timestamp(), latest.timestamp(), changed)?;
    Some(Overlap {
        transition: DateTime::from_timestamp(transition, 0)?,
        start: local_at(tz, transition)?,
        end: local_at(tz, transition.checked_sub(1)?)?.checked_add_signed(TimeDelta::seconds(1))?,
    })
}

/// Binary search for the smallest `t` in `(lo, hi]` where `pred` flips from false to true;
/// `None` if the bracket does not hold (never for real tzdata) or `pred` fails.
fn first_true(mut lo: i64, mut hi: i64, pred: impl Fn(i64) -> Option<bool>) -> Option<i64> {
    if pred(lo)? || !pred(hi)? {
        return None;
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if pred(mid)? {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::SecondsFormat;
    use chrono_tz::America::New_York;
    use chrono_tz::Asia::Shanghai;
    use chrono_tz::Australia::Lord_Howe;
    use chrono_tz::Europe::Berlin;
    use chrono_tz::UTC;

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339).unwrap().to_utc()
    }

    fn fmt(instant: DateTime<Utc>) -> String {
        instant.to_rfc3339_opts(SecondsFormat::Secs, true)
    }

    fn fires(expr: &str, tz: Tz, after: &str, n: usize) -> Vec<String> {
        Schedule::parse(expr).unwrap().upcoming(at(after), tz, n).into_iter().map(fmt).collect()
    }

    fn err(expr: &str) -> CronError {
        Schedule::parse(expr).expect_err(expr)
    }

    #[test]
    fn daily_two_am_in_shanghai() {
        assert_eq!(
            fires("0 0 2 * * *", Shanghai, "2026-01-01T00:00:00Z", 3),
            ["2026-01-01T18:00:00Z", "2026-01-02T18:00:00Z", "2026-01-03T18:00:00Z"]
        );
    }

    #[test]
    fn seed_rule_midnight_with_question_mark() {
        assert_eq!(
            fires("0 0 0 * * ?", UTC, "2026-01-01T00:00:00Z", 2),
            ["2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z"]
        );
        assert_eq!(fires("0 0 0 * * ?", Shanghai, "2026-01-01T00:00:00Z", 1), ["2026-01-01T16:00:00Z"]);
    }

    #[test]
    fn strictly_after_including_subsecond() {
        assert_eq!(fires("0 0 0 * * *", UTC, "2026-01-02T00:00:00Z", 1), ["2026-01-03T00:00:00Z"]);
        assert_eq!(
            fires("* * * * * *", UTC, "2026-01-02T00:00:00.5Z", 2),
            ["2026-01-02T00:00:01Z", "2026-01-02T00:00:02Z"]
        );
        assert_eq!(fires("0 0 0 * * *", UTC, "2026-01-01T23:59:59.999Z", 1), ["2026-01-02T00:00:00Z"]);
    }

    #[test]
    fn spring_forward_new_york_fires_once_at_gap_end() {
        // 02:30 does not exist on 2026-03-08; the gap ends at 03:00 EDT = 07:00Z.
        assert_eq!(
            fires("0 30 2 * * *", New_York, "2026-03-07T00:00:00Z", 4),
            ["2026-03-07T07:30:00Z", "2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z", "2026-03-10T06:30:00Z"]
        );
    }

    #[test]
    fn spring_forward_berlin_fires_once_at_gap_end() {
        // 02:00 CET jumps to 03:00 CEST at 01:00Z on 2026-03-29.
        assert_eq!(
            fires("0 30 2 * * *", Berlin, "2026-03-28T00:00:00Z", 3),
            ["2026-03-28T01:30:00Z", "2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"]
        );
    }

    #[test]
    fn many_gap_times_collapse_into_one_firing() {
        assert_eq!(
            fires("0 * 2 * * *", New_York, "2026-03-08T06:00:00Z", 2),
            ["2026-03-08T07:00:00Z", "2026-03-09T06:00:00Z"]
        );
        // 02:00 is swallowed by the gap and lands on 03:00, which fires anyway: once, not twice.
        assert_eq!(
            fires("0 0 * * * *", New_York, "2026-03-08T05:30:00Z", 3),
            ["2026-03-08T06:00:00Z", "2026-03-08T07:00:00Z", "2026-03-08T08:00:00Z"]
        );
    }

    #[test]
    fn fall_back_new_york_fixed_time_fires_at_first_occurrence() {
        // 01:30 happens at 05:30Z (EDT) and 06:30Z (EST) on 2026-11-01.
        assert_eq!(
            fires("0 30 1 * * *", New_York, "2026-10-31T00:00:00Z", 3),
            ["2026-10-31T05:30:00Z", "2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"]
        );
        assert_eq!(fires("0 30 1 * * *", New_York, "2026-11-01T05:30:00Z", 1), ["2026-11-02T06:30:00Z"]);
        assert_eq!(fires("0 30 1 * * *", New_York, "2026-11-01T06:00:00Z", 1), ["2026-11-02T06:30:00Z"]);
    }

    #[test]
    fn fall_back_berlin_fixed_time_fires_at_first_occurrence() {
        // 03:00 CEST falls back to 02:00 CET at 01:00Z on 2026-10-25.
        assert_eq!(
            fires("0 30 2 * * *", Berlin, "2026-10-24T00:00:00Z", 3),
            ["2026-10-24T00:30:00Z", "2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]
        );
    }

    #[test]
    fn fall_back_wildcard_rule_fires_in_both_occurrences() {
        let expected = [
            "2026-11-01T05:00:00Z",
            "2026-11-01T05:30:00Z",
            "2026-11-01T06:00:00Z",
            "2026-11-01T06:30:00Z",
            "2026-11-01T07:00:00Z",
        ];
        assert_eq!(fires("0 */30 * * * *", New_York, "2026-11-01T04:45:00Z", 5), expected);
        // Starting inside the first pass, and inside the repeated pass.
        assert_eq!(fires("0 */30 * * * *", New_York, "2026-11-01T05:40:00Z", 1), ["2026-11-01T06:00:00Z"]);
        assert_eq!(fires("0 */30 * * * *", New_York, "2026-11-01T06:10:00Z", 1), ["2026-11-01T06:30:00Z"]);
        // The same wall times, written without `*`, are fixed-time: first occurrence only.
        assert_eq!(
            fires("0 0,30 1 * * *", New_York, "2026-11-01T04:45:00Z", 3),
            ["2026-11-01T05:00:00Z", "2026-11-01T05:30:00Z", "2026-11-02T06:00:00Z"]
        );
    }

    #[test]
    fn five_field_form_means_second_zero() {
        let five = Schedule::parse("30 2 * * *").unwrap();
        assert_eq!(five, Schedule::parse("0 30 2 * * *").unwrap());
        assert_eq!(five.to_string(), "0 30 2 * * *");
        assert_eq!(
            fires("*/20 9 * * *", UTC, "2026-01-01T09:10:00Z", 3),
            ["2026-01-01T09:20:00Z", "2026-01-01T09:40:00Z", "2026-01-02T09:00:00Z"]
        );
    }

    #[test]
    fn month_and_day_names() {
        // 2026-01-02 is a Friday.
        assert_eq!(
            fires("0 0 9 * * MON-FRI", UTC, "2026-01-02T10:00:00Z", 2),
            ["2026-01-05T09:00:00Z", "2026-01-06T09:00:00Z"]
        );
        assert_eq!(Schedule::parse("0 0 9 * * mon-Fri").unwrap(), Schedule::parse("0 0 9 * * 1-5").unwrap());
        assert_eq!(
            fires("0 0 0 1 JAN *", UTC, "2026-01-01T00:00:00Z", 2),
            ["2027-01-01T00:00:00Z", "2028-01-01T00:00:00Z"]
        );
        assert_eq!(Schedule::parse("0 0 0 1 jan,Mar-may *").unwrap().to_string(), "0 0 0 1 1,3-5 *");
    }

    #[test]
    fn sunday_is_zero_or_seven() {
        let sun = Schedule::parse("0 0 0 * * 0").unwrap();
        assert_eq!(sun, Schedule::parse("0 0 0 * * 7").unwrap());
        assert_eq!(sun, Schedule::parse("0 0 0 * * SUN").unwrap());
        assert_eq!(Schedule::parse("0 0 0 * * 5-7").unwrap().to_string(), "0 0 0 * * 0,5,6");
        // 2026-01-04 is a Sunday.
        assert_eq!(fires("0 0 0 * * 7", UTC, "2026-01-01T00:00:00Z", 1), ["2026-01-04T00:00:00Z"]);
    }

    #[test]
    fn dom_and_dow_both_restricted_match_either() {
        // March 2026: Fridays are 6, 13, 20; the 10th is a Tuesday.
        assert_eq!(
            fires("0 0 0 10 * FRI", UTC, "2026-03-01T00:00:00Z", 3),
            ["2026-03-06T00:00:00Z", "2026-03-10T00:00:00Z", "2026-03-13T00:00:00Z"]
        );
        assert_eq!(
            fires("0 0 0 * * FRI", UTC, "2026-03-01T00:00:00Z", 2),
            ["2026-03-06T00:00:00Z", "2026-03-13T00:00:00Z"]
        );
        assert_eq!(
            fires("0 0 0 10 * ?", UTC, "2026-03-01T00:00:00Z", 2),
            ["2026-03-10T00:00:00Z", "2026-04-10T00:00:00Z"]
        );
        assert_eq!(fires("0 0 0 ? * FRI", UTC, "2026-03-01T00:00:00Z", 1), ["2026-03-06T00:00:00Z"]);
        // `*/2` restricts, so the OR rule applies: odd days plus Sundays (1st is a Sunday).
        assert_eq!(
            fires("0 0 0 */2 * SUN", UTC, "2026-03-01T12:00:00Z", 4),
            ["2026-03-03T00:00:00Z", "2026-03-05T00:00:00Z", "2026-03-07T00:00:00Z", "2026-03-08T00:00:00Z"]
        );
    }

    #[test]
    fn steps_ranges_and_lists() {
        assert_eq!(
            Schedule::parse("*/15 0-10/5 1,2,3,8 5/10 */3 *").unwrap().to_string(),
            "*/15 0,5,10 1-3,8 5,15,25 */3 *"
        );
        assert_eq!(
            fires("10-20/5 0 0 * * *", UTC, "2026-01-01T00:00:10Z", 3),
            ["2026-01-01T00:00:15Z", "2026-01-01T00:00:20Z", "2026-01-02T00:00:10Z"]
        );
    }

    #[test]
    fn display_round_trips() {
        for expr in [
            "0 0 0 * * ?",
            "*/1 0-59 * 1-31 * 0-7",
            "0 */15 * * * *",
            "0 0 0 */2 * SUN",
            "0 0 9 * JAN-MAR,DEC MON-FRI",
            "5 4 3 2 1 0",
            "0 30 2 * * *",
            "*,5 0 0 * * *",
            "0 0 0 1,2 * *",
        ] {
            let schedule = Schedule::parse(expr).unwrap();
            let again: Schedule = schedule.to_string().parse().unwrap();
            assert_eq!(schedule, again, "{expr} -> {schedule}");
        }
        assert_eq!(Schedule::parse("0 0 0 * * ?").unwrap().to_string(), "0 0 0 * * *");
        assert_eq!(Schedule::parse("*/1 0-59 * 1-31 * 0-7").unwrap().to_string(), "* 0-59 * 1-31 * 0-6");
    }

    #[test]
    fn leap_day_is_found_quickly_and_impossible_dates_give_up() {
        assert_eq!(
            fires("0 0 0 29 2 *", UTC, "2026-01-01T00:00:00Z", 2),
            ["2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"]
        );
        // 2100 is not a leap year: eight years between leap days.
        assert_eq!(fires("0 0 0 29 2 *", New_York, "2096-03-01T00:00:00Z", 1), ["2104-02-29T05:00:00Z"]);
        let started = std::time::Instant::now();
        for expr in ["0 0 0 30 2 *", "0 0 0 31 4,6,9,11 *", "* * * 31 2 ?"] {
            let schedule = Schedule::parse(expr).unwrap();
            assert_eq!(schedule.next_after(at("2026-01-01T00:00:00Z"), Berlin), None);
            assert!(schedule.upcoming(at("2026-01-01T00:00:00Z"), Berlin, 5).is_empty());
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn upcoming_every_second_is_fast_and_ordered() {
        let schedule = Schedule::parse("* * * * * *").unwrap();
        // Every real second fires through both a repeated hour and a skipped one.
        for (tz, from) in [(New_York, "2026-11-01T05:59:00Z"), (New_York, "2026-03-08T06:59:00Z")] {
            let out = schedule.upcoming(at(from), tz, 5000);
            let expected: Vec<_> = (1..=5000).map(|i| at(from) + TimeDelta::seconds(i)).collect();
            assert_eq!(out, expected, "{from}");
        }
    }

    #[test]
    fn ends_of_time_do_not_panic() {
        let schedule = Schedule::parse("* * * * * *").unwrap();
        for tz in [UTC, New_York, Shanghai, chrono_tz::Pacific::Kiritimati] {
            let _ = schedule.next_after(DateTime::<Utc>::MAX_UTC, tz);
            let _ = schedule.next_after(DateTime::<Utc>::MIN_UTC, tz);
        }
        assert_eq!(schedule.next_after(DateTime::<Utc>::MAX_UTC, UTC), None);
    }

    #[test]
    fn field_count_errors() {
        assert_eq!(err("").kind(), &CronErrorKind::Empty);
        assert_eq!(err("   \t ").to_string(), "empty cron expression");
        assert_eq!(err("* * * *").kind(), &CronErrorKind::FieldCount(4));
        let seven = err("0 0 0 * * * 2026");
        assert_eq!(seven.kind(), &CronErrorKind::FieldCount(7));
        assert_eq!(seven.field(), None);
        assert_eq!(
            seven.to_string(),
            "expected 5 or 6 fields ([sec] min hour day-of-month month day-of-week), found 7 \
             (a year field is not supported)"
        );
    }

    #[test]
    fn range_errors_name_field_and_token() {
        let e = err("0 0 24 * * *");
        assert_eq!(e.field(), Some("hour"));
        assert_eq!(e.token(), "24");
        assert_eq!(e.kind(), &CronErrorKind::OutOfRange { min: 0, max: 23 });
        assert_eq!(e.to_string(), "hour: `24` is out of range 0-23");
        assert_eq!(err("60 * * * * *").field(), Some("second"));
        assert_eq!(err("0 60 * * * *").field(), Some("minute"));
        assert_eq!(err("0 0 0 0 * *").to_string(), "day-of-month: `0` is out of range 1-31");
        assert_eq!(err("0 0 0 32 * *").field(), Some("day-of-month"));
        assert_eq!(err("0 0 0 * 13 *").to_string(), "month: `13` is out of range 1-12");
        assert_eq!(err("0 0 0 * * 8").to_string(), "day-of-week: `8` is out of range 0-7");
        assert_eq!(
            err("0 0 0-99999999999999999999 * * *").to_string(),
            "hour: `99999999999999999999` is out of range 0-23"
        );
    }

    #[test]
    fn syntax_errors() {
        assert_eq!(err("*/0 * * * * *").to_string(), "second: bad step in `*/0`: must be a number from 1 to 60");
        assert_eq!(err("0 0 0 * * */8").kind(), &CronErrorKind::BadStep { max: 7 });
        assert_eq!(err("0 1-5/ * * * *").kind(), &CronErrorKind::BadStep { max: 60 });
        assert_eq!(err("0 */+1 * * * *").kind(), &CronErrorKind::BadStep { max: 60 });
        let reversed = err("0 5-1 * * * *");
        assert_eq!(reversed.to_string(), "minute: range `5-1` starts after it ends");
        assert_eq!(reversed.kind(), &CronErrorKind::ReversedRange);
        assert_eq!(err("0 0 0 * FOO *").to_string(), "month: unknown name `FOO` (expected JAN-DEC)");
        assert_eq!(err("0 0 0 * * MONDAY").kind(), &CronErrorKind::UnknownName { expected: "SUN-SAT" });
        assert_eq!(err("0 0 JAN * * *").to_string(), "hour: `JAN` is not a number");
        assert_eq!(err("0 1,,2 * * * *").to_string(), "minute: empty list element in ``");
        assert_eq!(err("0 1, * * * *").kind(), &CronErrorKind::EmptyListItem);
        for bad in ["0 -1 * * * *", "0 1- * * * *", "0 1-2-3 * * * *", "0 +1 * * * *"] {
            assert_eq!(err(bad).field(), Some("minute"), "{bad}");
        }
    }

    #[test]
    fn question_mark_errors() {
        let e = err("0 0 ? * * *");
        assert_eq!(e.field(), Some("hour"));
        assert_eq!(e.kind(), &CronErrorKind::QuestionMarkNotAllowed);
        assert_eq!(e.to_string(), "hour: `?` is only allowed in day-of-month or day-of-week");
        assert_eq!(err("? 0 0 * * *").field(), Some("second"));
        assert_eq!(err("0 ? 0 * * *").field(), Some("minute"));
        assert_eq!(err("0 0 0 * ? *").field(), Some("month"));
        assert_eq!(err("? 0 * * *").field(), Some("minute"));
        assert_eq!(err("0 0 0 ?/2 * *").to_string(), "day-of-month: `?` must be the whole field, found `?/2`");
        assert_eq!(err("0 0 0 * * ?,1").kind(), &CronErrorKind::QuestionMarkNotAlone);
        assert!(Schedule::parse("0 0 0 ? * ?").is_ok());
    }

    #[test]
    fn unicode_and_junk_do_not_panic() {
        assert_eq!(err("０ ０ ０ * * *").kind(), &CronErrorKind::NotANumber);
        assert_eq!(err("0 0 0 * * é").kind(), &CronErrorKind::UnknownName { expected: "SUN-SAT" });
        assert_eq!(err("0 0 ½ * * *").kind(), &CronErrorKind::NotANumber);
        assert_eq!(err("0 0 0 * ÄPR *").kind(), &CronErrorKind::UnknownName { expected: "JAN-DEC" });
        let long = format!("0 0 {} * * *", "9".repeat(10_000));
        assert!(err(&long).token().chars().count() <= MAX_TOKEN_CHARS + 1);
        for junk in ["*/", "/5", ",", "-", "*-*", "**", "@daily", "\u{0}", "1/2/3"] {
            assert!(Schedule::parse(&format!("{junk} * * * * *")).is_err(), "{junk}");
        }
    }

    #[test]
    fn pseudo_random_inputs_never_panic() {
        const ALPHABET: &[&str] = &[
            "0",
            "1",
            "7",
            "5",
            "23",
            "31",
            "59",
            "60",
            "*",
            "?",
            "/",
            "-",
            ",",
            " ",
            "JAN",
            "sun",
            "é",
            "99999999999",
            "",
        ];
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let zones = [UTC, New_York, Berlin, Lord_Howe];
        let start = at("2026-03-01T00:00:00Z");
        for _ in 0..20_000 {
            let len = (next() % 24) as usize;
            let expr: String = (0..len).map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize]).collect();
            if let Ok(schedule) = Schedule::parse(&expr) {
                let tz = zones[(next() % zones.len() as u64) as usize];
                let out = schedule.upcoming(start, tz, 3);
                assert!(out.windows(2).all(|w| w[0] < w[1]), "{expr}");
                let again: Schedule = schedule.to_string().parse().unwrap();
                assert_eq!(schedule, again, "{expr}");
            }
        }
    }

    /// Independent oracle: walk UTC minute by minute and apply the documented policy directly.
    fn brute_force(schedule: &Schedule, tz: Tz, from: DateTime<Utc>, minutes: i64) -> Vec<String> {
        let matches = |wall: NaiveDateTime| {
            schedule.month.contains(wall.month())
                && schedule.day_matches(wall.date())
                && schedule.hour.contains(wall.hour())
                && schedule.minute.contains(wall.minute())
                && schedule.second.contains(wall.second())
        };
        let mut out = Vec::new();
        for i in 1..=minutes {
            let u = from + TimeDelta::minutes(i);
            let wall = local_of(tz, u).unwrap();
            let prev_end = local_of(tz, u - TimeDelta::minutes(1)).unwrap() + TimeDelta::minutes(1);
            let first = tz.from_local_datetime(&wall).earliest().unwrap().to_utc() == u;
            let mut fire = matches(wall) && (first || schedule.is_wildcard());
            let mut gap = prev_end;
            while gap < wall {
                fire |= matches(gap);
                gap += TimeDelta::minutes(1);
            }
            if fire {
                out.push(fmt(u));
            }
        }
        out
    }

    #[test]
    fn agrees_with_brute_force_across_transitions() {
        let cases = [
            (New_York, "2026-03-07T12:00:00Z"),
            (New_York, "2026-10-31T12:00:00Z"),
            (Berlin, "2026-03-28T12:00:00Z"),
            (Berlin, "2026-10-24T12:00:00Z"),
            // Lord Howe shifts by 30 minutes.
            (Lord_Howe, "2026-04-04T00:00:00Z"),
            (Lord_Howe, "2026-10-03T00:00:00Z"),
        ];
        let rules = [
            "0 30 2 * * *",
            "0 */15 * * * *",
            "0 * 2 * * *",
            "0 0,30 1,2 * * *",
            "0 45 1 * * *",
            "0 0 * * * *",
            "0 */20 1-3 * * *",
            "0 10,40 * * * *",
            "0 0-59/7 1,2 * * *",
        ];
        for (tz, from) in cases {
            for rule in rules {
                let schedule = Schedule::parse(rule).unwrap();
                let window = 48 * 60;
                let expected = brute_force(&schedule, tz, at(from), window);
                let end = at(from) + TimeDelta::minutes(window);
                let actual: Vec<String> = schedule
                    .upcoming(at(from), tz, expected.len() + 1)
                    .into_iter()
                    .take_while(|u| *u <= end)
                    .map(fmt)
                    .collect();
                assert_eq!(actual, expected, "{rule} in {tz} from {from}");
            }
        }
    }
}
