//! `now` and `dateFormat`: Java SimpleDateFormat patterns (English, US weeks) or the styles
//! `full`, `long`, `medium` (default) and `short`, in an IANA zone (`tz=`, default UTC).

use chrono::{DateTime, Datelike, FixedOffset, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone, Timelike, Utc};
use chrono_tz::{OffsetName, Tz};
use serde_json::Value;

use super::strings::bare_value;
use super::{arity, fail, Args, HelperError, ValueFn};
use crate::render::value::{blank, is_ascii_ws, printed};

const MONTHS: [&str; 12] =
    ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];
const DAYS: [&str; 7] = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];

fn style(name: &str) -> Option<&'static str> {
    match name {
        "full" => Some("EEEE, MMMM d, y"),
        "long" => Some("MMMM d, y"),
        "medium" => Some("MMM d, y"),
        "short" => Some("M/d/yy"),
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Field(char, usize),
    Literal(String),
}

fn tokens(pattern: &str) -> Result<Vec<Token>, HelperError> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            if chars.get(i + 1) == Some(&'\'') {
                out.push(Token::Literal("'".into()));
                i += 2;
                continue;
            }
            let mut lit = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(fail(format!("unterminated quote in date pattern '{pattern}'"))),
                    Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                        lit.push('\'');
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(ch) => {
                        lit.push(*ch);
                        i += 1;
                    }
                }
            }
            out.push(Token::Literal(lit));
        } else if c.is_ascii_alphabetic() {
            let start = i;
            while i < chars.len() && chars[i] == c {
                i += 1;
            }
            out.push(Token::Field(c, i - start));
        } else {
            out.push(Token::Literal(c.to_string()));
            i += 1;
        }
    }
    Ok(out)
}

fn pad(n: i64, width: usize) -> String {
    if n < 0 {
        format!("-{:0width$}", -n, width = width)
    } else {
        format!("{n:0width$}")
    }
}

/// US weeks: Sunday first; week 1 holds January 1. Returns (week year, week of year).
fn us_week(d: NaiveDate) -> (i32, u32) {
    let week_start = d - chrono::Duration::days(i64::from(d.weekday().num_days_from_sunday()));
    let week_end = week_start + chrono::Duration::days(6);
    if week_end.year() > d.year() {
        return (d.year() + 1, 1);
    }
    let jan1 = NaiveDate::from_ymd_opt(d.year(), 1, 1).expect("January 1 exists");
    let offset = jan1.weekday().num_days_from_sunday();
    (d.year(), (d.ordinal0() + offset) / 7 + 1)
}

fn offset_text(secs: i32, colon: bool, minutes: bool) -> String {
    let sign = if secs < 0 { '-' } else { '+' };
    let a = secs.unsigned_abs();
    let (h, m) = (a / 3600, (a % 3600) / 60);
    match (minutes, colon) {
        (false, _) => format!("{sign}{h:02}"),
        (true, true) => format!("{sign}{h:02}:{m:02}"),
        (true, false) => format!("{sign}{h:02}{m:02}"),
    }
}

fn format(dt: &DateTime<Tz>, pattern: &str) -> Result<String, HelperError> {
    let mut out = String::new();
    let offset_secs = dt.offset().fix().local_minus_utc();
    for t in tokens(pattern)? {
        let (c, n) = match t {
            Token::Literal(s) => {
                out.push_str(&s);
                continue;
            }
            Token::Field(c, n) => (c, n),
        };
        let text = match c {
            'G' => if dt.year() > 0 { "AD" } else { "BC" }.to_string(),
            'y' | 'Y' => {
                let year = if c == 'Y' { us_week(dt.date_naive()).0 } else { dt.year() };
                if n == 2 {
                    pad(i64::from(year.rem_euclid(100)), 2)
                } else {
                    pad(i64::from(year), n)
                }
            }
            'M' | 'L' => match n {
                1 | 2 => pad(i64::from(dt.month()), n),
                3 => MONTHS[dt.month0() as usize][..3].to_string(),
                _ => MONTHS[dt.month0() as usize].to_string(),
            },
            'd' => pad(i64::from(dt.day()), n),
            'D' => pad(i64::from(dt.ordinal()), n),
            'F' => pad(i64::from((dt.day() - 1) / 7 + 1), n),
            'w' => pad(i64::from(us_week(dt.date_naive()).1), n),
            'W' => {
                let first = dt.date_naive().with_day(1).expect("day 1 exists");
                pad(i64::from((dt.day() - 1 + first.weekday().num_days_from_sunday()) / 7 + 1), n)
            }
            'E' => {
                let day = DAYS[dt.weekday().num_days_from_sunday() as usize];
                if n <= 3 {
                    day[..3].to_string()
                } else {
                    day.to_string()
                }
            }
            'u' => pad(i64::from(dt.weekday().number_from_monday()), n),
            'a' => if dt.hour() < 12 { "AM" } else { "PM" }.to_string(),
            'H' => pad(i64::from(dt.hour()), n),
            'k' => pad(i64::from(if dt.hour() == 0 { 24 } else { dt.hour() }), n),
            'K' => pad(i64::from(dt.hour() % 12), n),
            'h' => pad(i64::from(if dt.hour().is_multiple_of(12) { 12 } else { dt.hour() % 12 }), n),
            'm' => pad(i64::from(dt.minute()), n),
            's' => pad(i64::from(dt.second()), n),
            'S' => pad(i64::from(dt.timestamp_subsec_millis().min(999)), n),
            'z' if n >= 4 => return Err(fail("zzzz (the zone's long name) is not supported")),
            'z' => dt.offset().abbreviation().map(str::to_string).unwrap_or_else(|| offset_text(offset_secs, false, true)),
            'Z' => offset_text(offset_secs, false, true),
            'X' if n >= 4 => return Err(fail("X takes at most 3 letters")),
            'X' if offset_secs == 0 => "Z".to_string(),
            'X' => offset_text(offset_secs, n == 3, n >= 2),
            other => return Err(fail(format!("'{other}' is not a date pattern letter"))),
        };
        out.push_str(&text);
    }
    Ok(out)
}

/// The zone: blank or missing → UTC; an IANA name, case-insensitively.
fn zone(v: &Value) -> Result<Tz, HelperError> {
    if blank(v) {
        return Ok(Tz::UTC);
    }
    let name = printed(v);
    Tz::from_str_insensitive(name.trim()).map_err(|_| fail(format!("'{name}' is not an IANA time zone")))
}

/// A wall-clock time in a zone: a time in a DST gap moves forward by the gap; an ambiguous
/// one takes the earlier instant.
fn wall_clock(tz: Tz, naive: NaiveDateTime) -> Result<DateTime<Tz>, HelperError> {
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(dt) => Ok(dt),
        LocalResult::Ambiguous(a, b) => Ok(a.min(b)),
        LocalResult::None => {
            // In a gap: the same wall time, read with the offset before the gap.
            let before = tz.offset_from_utc_datetime(&(naive - chrono::Duration::hours(3)));
            let fixed = before.fix();
            let instant = fixed.from_local_datetime(&naive).single().ok_or_else(|| fail("impossible local time"))?;
            Ok(instant.with_timezone(&tz))
        }
    }
}

fn fixed(secs: i32) -> Result<FixedOffset, HelperError> {
    FixedOffset::east_opt(secs).ok_or_else(|| fail("offset out of range"))
}

/// `Z`, `±hh`, `±hhmm`, `±hh:mm`, or `UTC`/`GMT` optionally followed by `±h[h][[:]mm]`;
/// returns the offset in seconds and the bytes used.
fn parse_offset(s: &str) -> Option<(i32, usize)> {
    if s.starts_with('Z') {
        return Some((0, 1));
    }
    let (base, rest) =
        if s.len() >= 3 && (s[..3].eq_ignore_ascii_case("UTC") || s[..3].eq_ignore_ascii_case("GMT")) { (3, &s[3..]) } else { (0, s) };
    let sign = match rest.as_bytes().first() {
        Some(b'+') => 1,
        Some(b'-') => -1,
        _ => return (base == 3).then_some((0, 3)),
    };
    let digits: Vec<u8> = rest[1..].bytes().take_while(|b| b.is_ascii_digit() || *b == b':').collect();
    let text: String = digits.iter().map(|b| *b as char).collect();
    let (h, m, used) = if let Some((h, m)) = text.split_once(':') {
        if m.len() != 2 || h.is_empty() || h.len() > 2 {
            return None;
        }
        (h.parse::<i32>().ok()?, m.parse::<i32>().ok()?, h.len() + 3)
    } else {
        match text.len() {
            1 if base == 3 => (text.parse().ok()?, 0, 1),
            2 => (text.parse().ok()?, 0, 2),
            3 if base == 3 => (text[..1].parse().ok()?, text[1..].parse().ok()?, 3),
            n if n >= 4 => (text[..2].parse().ok()?, text[2..4].parse().ok()?, 4),
            _ => return None,
        }
    };
    if h > 23 || m > 59 {
        return None;
    }
    Some((sign * (h * 3600 + m * 60), base + 1 + used))
}

/// ISO 8601: `YYYY-MM-DD`, optionally `T`/space + `hh:mm[:ss[.f]]` and then an offset.
fn parse_iso(s: &str, tz: Tz) -> Result<DateTime<Tz>, HelperError> {
    let bad = || fail(format!("'{s}' is not an ISO 8601 date"));
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<u32> {
        let part = s.get(from..from + len)?;
        part.bytes().all(|c| c.is_ascii_digit()).then(|| part.parse().ok()).flatten()
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return Err(bad());
    }
    let date = NaiveDate::from_ymd_opt(num(0, 4).ok_or_else(bad)? as i32, num(5, 2).ok_or_else(bad)?, num(8, 2).ok_or_else(bad)?)
        .ok_or_else(bad)?;
    if b.len() == 10 {
        return wall_clock(tz, date.and_time(NaiveTime::MIN));
    }
    if !(b[10] == b'T' || b[10] == b' ') || b.len() < 16 || b[13] != b':' {
        return Err(bad());
    }
    let (h, m) = (num(11, 2).ok_or_else(bad)?, num(14, 2).ok_or_else(bad)?);
    let mut i = 16;
    let mut sec = 0;
    let mut millis = 0;
    if b.get(i) == Some(&b':') {
        sec = num(i + 1, 2).ok_or_else(bad)?;
        i += 3;
        if b.get(i) == Some(&b'.') {
            let digits = s[i + 1..].bytes().take_while(u8::is_ascii_digit).count();
            if !(1..=9).contains(&digits) {
                return Err(bad());
            }
            let frac = &s[i + 1..i + 1 + digits];
            millis = format!("{:0<3}", &frac[..digits.min(3)]).parse().map_err(|_| bad())?;
            i += 1 + digits;
        }
    }
    let time = NaiveTime::from_hms_milli_opt(h, m, sec, millis).ok_or_else(bad)?;
    let naive = date.and_time(time);
    if i == b.len() {
        return wall_clock(tz, naive);
    }
    let (offset, used) = parse_offset(&s[i..]).filter(|_| !s[i..].starts_with(['U', 'G', 'u', 'g'])).ok_or_else(bad)?;
    if i + used != b.len() {
        return Err(bad());
    }
    Ok(fixed(offset)?.from_local_datetime(&naive).single().ok_or_else(bad)?.with_timezone(&tz))
}

fn is_numeric_field(t: Option<&Token>) -> bool {
    matches!(t, Some(Token::Field(c, n)) if matches!(c, 'y' | 'd' | 'H' | 'k' | 'K' | 'h' | 'm' | 's' | 'S') || (matches!(c, 'M' | 'L') && *n <= 2))
}

/// Parses `input` with a SimpleDateFormat pattern; the whole input must be consumed.
fn parse_pattern(input: &str, pattern: &str, tz: Tz) -> Result<DateTime<Tz>, HelperError> {
    let toks = tokens(pattern)?;
    let bad = |why: &str| fail(format!("'{input}' does not match '{pattern}': {why}"));
    let (mut year, mut month, mut day, mut hour, mut minute, mut second, mut milli) = (1970i32, 1u32, 1u32, 0u32, 0u32, 0u32, 0u32);
    let mut two_digit_year = false;
    let mut pm: Option<bool> = None;
    let mut twelve_hour = false;
    let mut offset: Option<i32> = None;
    let mut rest = input;
    for (idx, t) in toks.iter().enumerate() {
        match t {
            Token::Literal(l) => rest = rest.strip_prefix(l.as_str()).ok_or_else(|| bad(&format!("expected '{l}'")))?,
            Token::Field(c, n) => {
                let numeric = is_numeric_field(Some(t));
                if numeric {
                    let fixed_width = is_numeric_field(toks.get(idx + 1));
                    let avail = rest.bytes().take_while(u8::is_ascii_digit).count();
                    let take = if fixed_width { *n } else { avail };
                    if take == 0 || avail < take {
                        return Err(bad(&format!("expected {} digits for '{c}'", take.max(1))));
                    }
                    let v: u32 = rest[..take].parse().map_err(|_| bad("number too large"))?;
                    match c {
                        'y' => {
                            year = v as i32;
                            two_digit_year = take == 2 && *n <= 2;
                        }
                        'M' | 'L' => month = v,
                        'd' => day = v,
                        'H' => hour = v,
                        'k' => hour = if v == 24 { 0 } else { v },
                        'K' => {
                            hour = v;
                            twelve_hour = true;
                        }
                        'h' => {
                            hour = if v == 12 { 0 } else { v };
                            twelve_hour = true;
                        }
                        'm' => minute = v,
                        's' => second = v,
                        _ => milli = v,
                    }
                    rest = &rest[take..];
                    continue;
                }
                match c {
                    'M' | 'L' => {
                        let found = MONTHS.iter().enumerate().find_map(|(i, m)| {
                            let full = rest.len() >= m.len() && rest[..m.len()].eq_ignore_ascii_case(m);
                            let short = rest.len() >= 3 && rest.is_char_boundary(3) && rest[..3].eq_ignore_ascii_case(&m[..3]);
                            if full {
                                Some((i, m.len()))
                            } else if short {
                                Some((i, 3))
                            } else {
                                None
                            }
                        });
                        let (i, used) = found.ok_or_else(|| bad("expected a month name"))?;
                        month = i as u32 + 1;
                        rest = &rest[used..];
                    }
                    'E' => {
                        let used = DAYS
                            .iter()
                            .find_map(|d| {
                                if rest.len() >= d.len() && rest[..d.len()].eq_ignore_ascii_case(d) {
                                    Some(d.len())
                                } else if rest.len() >= 3 && rest.is_char_boundary(3) && rest[..3].eq_ignore_ascii_case(&d[..3]) {
                                    Some(3)
                                } else {
                                    None
                                }
                            })
                            .ok_or_else(|| bad("expected a day name"))?;
                        rest = &rest[used..];
                    }
                    'a' => {
                        let marker = rest.get(..2).map(str::to_ascii_uppercase);
                        pm = match marker.as_deref() {
                            Some("AM") => Some(false),
                            Some("PM") => Some(true),
                            _ => return Err(bad("expected AM or PM")),
                        };
                        rest = &rest[2..];
                    }
                    'G' => rest = rest.strip_prefix("AD").ok_or_else(|| bad("expected AD"))?,
                    'z' | 'Z' | 'X' => {
                        let (o, used) = parse_offset(rest).ok_or_else(|| bad("expected a zone offset"))?;
                        offset = Some(o);
                        rest = &rest[used..];
                    }
                    other => return Err(fail(format!("'{other}' cannot be used in inputFormat"))),
                }
            }
        }
    }
    if !rest.is_empty() {
        return Err(bad(&format!("'{rest}' is left over")));
    }
    if twelve_hour && pm == Some(true) {
        hour += 12;
    }
    if two_digit_year {
        let now_year = Utc::now().with_timezone(&tz).year();
        let base = now_year - 80;
        let mut y = base - base.rem_euclid(100) + year;
        if y < base {
            y += 100;
        }
        year = y;
    }
    let date = NaiveDate::from_ymd_opt(year, month, day).ok_or_else(|| bad("no such date"))?;
    let time = NaiveTime::from_hms_milli_opt(hour, minute, second, milli).ok_or_else(|| bad("no such time"))?;
    let naive = date.and_time(time);
    match offset {
        Some(o) => Ok(fixed(o)?.from_local_datetime(&naive).single().ok_or_else(|| bad("no such time"))?.with_timezone(&tz)),
        None => wall_clock(tz, naive),
    }
}

fn epoch_millis(ms: i64, tz: Tz) -> Result<DateTime<Tz>, HelperError> {
    DateTime::from_timestamp_millis(ms).map(|d| d.with_timezone(&tz)).ok_or_else(|| fail("epoch milliseconds out of range"))
}

fn hash_bare(h: &Args<'_>, key: &str) -> Value {
    bare_value(h.hash_get(key))
}

/// The output pattern: a style name or a pattern; blank means `medium`.
fn output_pattern(v: &Value) -> String {
    let p = printed(v);
    if p.trim().is_empty() {
        return style("medium").unwrap_or_default().to_string();
    }
    style(p.trim()).map(str::to_string).unwrap_or(p)
}

fn first_present(values: [Value; 3]) -> Value {
    values.into_iter().find(|v| !blank(v)).unwrap_or(Value::Null)
}

fn now(h: &Args<'_>) -> Result<Value, HelperError> {
    arity(h, 0..=1)?;
    let tz = zone(&hash_bare(h, "tz"))?;
    let pattern = output_pattern(&first_present([bare_value(h.param(0)), hash_bare(h, "outputFormat"), hash_bare(h, "format")]));
    Ok(Value::String(format(&Utc::now().with_timezone(&tz), &pattern)?))
}

fn date_format(h: &Args<'_>) -> Result<Value, HelperError> {
    arity(h, 1..=2)?;
    let input = h.param(0).map(|p| p.value().clone()).unwrap_or(Value::Null);
    if blank(&input) {
        return Ok(Value::String(String::new()));
    }
    let tz = zone(&hash_bare(h, "tz"))?;
    let pattern = output_pattern(&first_present([hash_bare(h, "outputFormat"), bare_value(h.param(1)), hash_bare(h, "format")]));
    let input_format = hash_bare(h, "inputFormat");
    let dt = match &input {
        Value::Number(n) => epoch_millis(n.as_f64().map(|f| f.trunc() as i64).unwrap_or(0), tz)?,
        _ => {
            let s = printed(&input);
            let s = s.trim_matches(is_ascii_ws);
            let digits = s.strip_prefix('-').unwrap_or(s);
            if !blank(&input_format) {
                parse_pattern(s, &printed(&input_format), tz)?
            } else if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                epoch_millis(s.parse().map_err(|_| fail("epoch milliseconds out of range"))?, tz)?
            } else {
                parse_iso(s, tz)?
            }
        }
    };
    Ok(Value::String(format(&dt, &pattern)?))
}

pub(super) const HELPERS: [(&str, ValueFn); 2] = [("now", now), ("dateFormat", date_format)];

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str, tz: Tz) -> DateTime<Tz> {
        parse_iso(s, tz).unwrap()
    }

    #[test]
    fn patterns_format_like_simple_date_format() {
        let la: Tz = "America/Los_Angeles".parse().unwrap();
        let d = at("2020-09-19T08:05:03.007-07:00", la);
        assert_eq!(format(&d, "EEEE, MMMM d, y").unwrap(), "Saturday, September 19, 2020");
        assert_eq!(format(&d, "MMM d, y").unwrap(), "Sep 19, 2020");
        assert_eq!(format(&d, "M/d/yy").unwrap(), "9/19/20");
        assert_eq!(format(&d, "yyyy-MM-dd'T'HH:mm:ss.SSSXXX").unwrap(), "2020-09-19T08:05:03.007-07:00");
        assert_eq!(format(&d, "h:mm a z Z X XX").unwrap(), "8:05 AM PDT -0700 -07 -0700");
        assert_eq!(format(&d, "D F w W E u k K G ''yy''").unwrap(), "263 3 38 3 Sat 6 8 8 AD '20'");
        assert!(format(&d, "zzzz").is_err() && format(&d, "q").is_err() && format(&d, "XXXX").is_err());
        let utc = at("2026-12-31T00:00:00Z", Tz::UTC);
        assert_eq!(format(&utc, "Y w X").unwrap(), "2027 1 Z");
    }

    #[test]
    fn inputs_parse_strictly() {
        let la: Tz = "America/Los_Angeles".parse().unwrap();
        let d = parse_pattern("09/19/2020", "MM/dd/yyyy", la).unwrap();
        assert_eq!(format(&d, "EEEE, MMMM d, y").unwrap(), "Saturday, September 19, 2020");
        let d = parse_pattern("20200919 0715PM", "yyyyMMdd hhmma", Tz::UTC).unwrap();
        assert_eq!(format(&d, "HH:mm").unwrap(), "19:15");
        let d = parse_pattern("Sep 9 2020 12:00 AM GMT+2", "MMM d yyyy hh:mm a z", Tz::UTC).unwrap();
        assert_eq!(format(&d, "yyyy-MM-dd HH:mm").unwrap(), "2020-09-08 22:00");
        assert!(parse_pattern("02/30/2020", "MM/dd/yyyy", Tz::UTC).is_err());
        assert!(parse_pattern("09/19/2020x", "MM/dd/yyyy", Tz::UTC).is_err());
        assert!(parse_iso("2020-9-19", Tz::UTC).is_err());
        assert!(parse_iso("2020-09-19T25:00", Tz::UTC).is_err());
        // DST: a gap moves forward, an ambiguous time takes the earlier instant.
        let gap = parse_iso("2026-03-08T02:30", la).unwrap();
        assert_eq!(format(&gap, "HH:mm z").unwrap(), "03:30 PDT");
        let ambiguous = parse_iso("2026-11-01T01:30", la).unwrap();
        assert_eq!(format(&ambiguous, "HH:mm z").unwrap(), "01:30 PDT");
    }
}
