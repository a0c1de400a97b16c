//! String helpers: abbreviate, capitalize, capitalizeFirst, center, cut, inflect, join, ljust,
//! lower, ordinalize, replace, rjust, slugify, stripTags, substring, upper, yesno. A missing
//! value prints nothing; lengths and offsets count code points.

use serde_json::Value;

use super::{arg, arity, fail, hash, Args, HelperError, ValueFn};
use crate::render::value::{blank, is_ascii_ws, missing, numeric, printed};

/// An integer argument: an integral number, or a printed form matching `[+-]?D+`.
pub(crate) fn integer(v: &Value, what: &str) -> Result<i64, HelperError> {
    if let Some(i) = v.as_i64() {
        return Ok(i);
    }
    if let Some(f) = v.as_f64() {
        if f == f.trunc() {
            return Ok(f as i64);
        }
    }
    let p = printed(v);
    let t = p.trim_matches(is_ascii_ws);
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(i) = t.trim_start_matches('+').parse::<i64>() {
            return Ok(i);
        }
    }
    Err(fail(format!("{what} must be an integer, not '{p}'")))
}

/// A bare word (`{{inflect 3 apple apples}}`, `tz=America/Los_Angeles`): a simple path that
/// resolves to nothing stands for its own text. Dotted, bracketed, `@`, `../` and `this`
/// paths are always lookups.
pub(crate) fn bare_value(p: Option<&super::Arg<'_>>) -> Value {
    match p {
        Some(p) if p.value().is_null() => match p.relative_path() {
            Some(path) if !path.contains(['.', '[', '@']) && !path.starts_with("this") => Value::String(path.to_string()),
            _ => Value::Null,
        },
        Some(p) => p.value().clone(),
        None => Value::Null,
    }
}

pub(crate) fn bare(h: &Args<'_>, i: usize) -> Value {
    bare_value(h.param(i))
}

fn text(s: String) -> Result<Value, HelperError> {
    Ok(Value::String(s))
}

fn nothing() -> Result<Value, HelperError> {
    Ok(Value::String(String::new()))
}

fn abbreviate(h: &Args<'_>) -> Result<Value, HelperError> {
    arity(h, 2..=2)?;
    if missing(arg(h, 0)) {
        return nothing();
    }
    let width = integer(arg(h, 1), "abbreviate's width")?;
    if width < 4 {
        return Err(fail("abbreviate's width must be at least 4"));
    }
    let s = printed(arg(h, 0));
    let width = width as usize;
    if s.chars().count() <= width {
        text(s)
    } else {
        text(s.chars().take(width - 3).chain("...".chars()).collect())
    }
}

fn upper_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn capitalize(h: &Args<'_>) -> Result<Value, HelperError> {
    arity(h, 1..=1)?;
    if missing(arg(h, 0)) {
        return nothing();
    }
    let mut out = String::new();
    let mut at_word_start = true;
    for c in printed(arg(h, 0)).chars() {
        if at_word_start && !is_ascii_ws(c) {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        at_word_start = is_ascii_ws(c);
    }
    text(out)
}

fn capitalize_first(h: &Args<'_>) -> Result<Value, HelperError> {
    arity(h, 1..=1)?;
    if missing(arg(h, 0)) {
        return nothing();
    }
    text(upper_first(&printed(arg(h, 0))))
}

#[derive(Clone, Copy)]
enum Align {
    Center,
    Left,
    Right,
}

fn pad_run(pad: &[char], n: usize) -> String {
    pad.iter().cycle().take(n).collect()
}

fn justify(h: &Args<'_>, align: Align) -> Result<Value, HelperError> {
    arity(h, 1..=2)?;
    if missing(arg(h, 0)) {
        return nothing();
    }
    let width = match h.param(1) {
        Some(p) => p.value().clone(),
        None => hash(h, "size").cloned().ok_or_else(|| fail(format!("{} needs a width (second argument or size=)", h.name())))?,
    };
    let width = integer(&width, "the width")?;
    if width < 0 {
        return Err(fail("the width must not be negative"));
    }
    let s = printed(arg(h, 0));
    let len = s.chars().count();
    let width = width as usize;
    if len >= width {
        return text(s);
    }
    let pad: Vec<char> = hash(h, "pad").map(printed).filter(|p| !p.is_empty()).unwrap_or_else(|| " ".into()).chars().collect();
    let total = width - len;
    let (left, right) = match align {
        Align::Center => (total / 2, total - total / 2),
        Align::Left => (0, total),
        Align::Right => (total, 0),
    };
    text(format!("{}{s}{}", pad_run(&pad, left), pad_run(&pad, right)))
}

fn cut(h: &Args<'_>) -> Result<Value, HelperError> {
    arity(h, 1..=2)?;
    if missing(arg(h, 0)) {
        return nothing();
    }
    let target = h.param(1).map(|p| printed(p.value())).unwrap_or_else(|| " ".into());
    let s = printed(arg(h, 0));
    text(if target.is_empty() { s } else { s.replace(&target, "") })
}

fn inflect(h: &Args<'_>) -> Result<Value, HelperError> {
    arity(h, 3..=3)?;
    let count = arg(h, 0);
    if blank(count) {
        return nothing();
    }
    let n = numeric(count).ok_or_else(|| fail(format!("inflect's count must be a number, not '{}'", printed(count))))?;
    let word = printed(&bare(h, if n == 1.0 { 1 } else { 2 }));
    let include = hash(h, "includeCount").is_some_and(|v| v.as_bool() == Some(true) || printed(v) == "true");
    text(if include { format!("{} {word}", printed(count).trim_matches(is_ascii_ws)) } else { word })
}

fn join(h: &Args<'_>) -> Result<Value, HelperError> {
    let n = h.params().len();
    if n < 2 {
        return Err(fail("join takes a list and a separator"));
    }
    let first = arg(h, 0);
    let empty = missing(first) || matches!(first, Value::String(s) if s.is_empty()) || matches!(first, Value::Array(a) if a.is_empty());
    if empty {
        return nothing();
    }
    let joined = match first {
        Value::Array(items) => items.iter().map(printed).collect::<Vec<_>>().join(&printed(arg(h, 1))),
        _ => {
            let sep = printed(arg(h, n - 1));
            (0..n - 1).map(|i| printed(arg(h, i))).collect::<Vec<_>>().join(&sep)
        }
    };
    let prefix = hash(h, "prefix").map(printed).unwrap_or_default();
    let suffix = hash(h, "suffix").map(printed).unwrap_or_default();
    text(format!("{prefix}{joined}{suffix}"))
}

fn case(h: &Args<'_>, upper: bool) -> Result<Value, HelperError> {
    arity(h, 1..=1)?;
    if missing(arg(h, 0)) {
        return nothing();
    }
    let s = printed(arg(h, 0));
    text(if upper { s.to_uppercase() } else { s.to_lowercase() })
}

fn ordinalize(h: &Args<'_>) -> Result<Value, HelperError> {
    arity(h, 1..=1)?;
    if blank(arg(h, 0)) {
        return nothing();
    }
    let n = integer(arg(h, 0), "ordinalize's argument")?;
    let abs = n.unsigned_abs();
    let suffix = if (11..=13).contains(&(abs % 100)) {
        "th"
    } else {
        match abs % 10 {
            1 => "st",
            2 => "nd",
            3 => "rd",
            _ => "th",
        }
    };
    text(format!("{n}{suffix}"))
}

fn replace(h: &Args<'_>) -> Result<Value, HelperError> {
    arity(h, 3..=3)?;
    if missing(arg(h, 0)) {
        return nothing();
    }
    let (s, target, with) = (printed(arg(h, 0)), printed(arg(h, 1)), printed(arg(h, 2)));
    text(if target.is_empty() { s } else { s.replace(&target, &with) })
}

fn slugify(h: &Args<'_>) -> Result<Value, HelperError> {
    arity(h, 1..=1)?;
    if missing(arg(h, 0)) {
        return nothing();
    }
    let kept: String =
        printed(arg(h, 0)).chars().filter(|c| c.is_alphabetic() || c.is_numeric() || *c == '_' || *c == '-' || c.is_whitespace()).collect();
    let lowered = kept.trim().to_lowercase();
    let mut out = String::with_capacity(lowered.len());
    let mut in_run = false;
    for c in lowered.chars() {
        if c == '-' || c.is_whitespace() {
            if !in_run {
                out.push('-');
            }
            in_run = true;
        } else {
            out.push(c);
            in_run = false;
        }
    }
    text(out)
}

fn strip_tags(h: &Args<'_>) -> Result<Value, HelperError> {
    arity(h, 1..=1)?;
    if missing(arg(h, 0)) {
        return nothing();
    }
    let s = printed(arg(h, 0));
    let mut out = String::with_capacity(s.len());
    let mut rest = s.as_str();
    while let Some(open) = rest.find('<') {
        match rest[open..].find('>') {
            Some(close) => {
                out.push_str(&rest[..open]);
                rest = &rest[open + close + 1..];
            }
            None => break,
        }
    }
    out.push_str(rest);
    text(out)
}

fn substring(h: &Args<'_>) -> Result<Value, HelperError> {
    arity(h, 2..=3)?;
    if missing(arg(h, 0)) {
        return nothing();
    }
    let s: Vec<char> = printed(arg(h, 0)).chars().collect();
    let start = integer(arg(h, 1), "substring's start")?;
    let end = match h.param(2) {
        Some(p) => integer(p.value(), "substring's end")?,
        None => s.len() as i64,
    };
    if start < 0 || end < 0 {
        return Err(fail("substring's offsets must not be negative"));
    }
    let (start, end) = ((start as usize).min(s.len()), (end as usize).min(s.len()));
    text(if end <= start { String::new() } else { s[start..end].iter().collect() })
}

fn yesno(h: &Args<'_>) -> Result<Value, HelperError> {
    arity(h, 1..=1)?;
    let v = arg(h, 0);
    let pick = |key: &str, default: &str| hash(h, key).map(printed).unwrap_or_else(|| default.to_string());
    if let Value::Bool(b) = v {
        return text(if *b { pick("yes", "yes") } else { pick("no", "no") });
    }
    if blank(v) {
        return text(pick("maybe", "maybe"));
    }
    match printed(v).trim_matches(is_ascii_ws).to_ascii_lowercase().as_str() {
        "true" => text(pick("yes", "yes")),
        "false" => text(pick("no", "no")),
        other => Err(fail(format!("yesno needs true or false, not '{other}'"))),
    }
}

pub(super) const HELPERS: [(&str, ValueFn); 17] = [
    ("abbreviate", abbreviate),
    ("capitalize", capitalize),
    ("capitalizeFirst", capitalize_first),
    ("center", |h| justify(h, Align::Center)),
    ("ljust", |h| justify(h, Align::Left)),
    ("rjust", |h| justify(h, Align::Right)),
    ("cut", cut),
    ("inflect", inflect),
    ("join", join),
    ("lower", |h| case(h, false)),
    ("upper", |h| case(h, true)),
    ("ordinalize", ordinalize),
    ("replace", replace),
    ("slugify", slugify),
    ("stripTags", strip_tags),
    ("substring", substring),
    ("yesno", yesno),
];
