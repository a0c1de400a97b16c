//! handlebars.js value semantics on JSON values: printed forms, truthiness, numbers,
//! equality and ordering, as Pinpoint's helper page defines them.

use std::cmp::Ordering;

use serde_json::Value;

/// What `{{v}}` prints before escaping: strings as is, numbers as JS prints them, lists as
/// their elements' printed forms joined by `,`, objects as `[object Object]`, null as nothing.
pub fn printed(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => js_number(f),
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(printed).collect::<Vec<_>>().join(","),
        Value::Object(_) => "[object Object]".into(),
    }
}

/// A JS-style number: integral values without a fraction, no exponent for ordinary sizes.
pub fn js_number(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        }
    } else if f == f.trunc() && f.abs() < 1e21 {
        format!("{}", f as i128)
    } else {
        let s = format!("{f}");
        s
    }
}

/// handlebars.js truthiness: false for missing, `false`, 0, NaN, "" and [].
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(_) => true,
    }
}

/// Whether a value is missing (absent or null).
pub fn missing(v: &Value) -> bool {
    v.is_null()
}

/// Blank: printed form empty after trimming.
pub fn blank(v: &Value) -> bool {
    printed(v).trim_matches(is_ascii_ws).is_empty()
}

pub fn is_ascii_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\u{b}' | '\u{c}' | '\r')
}

/// Whether `s` (trimmed) is a decimal literal: `[+-]?(D+(\.D*)?|\.D+)([eE][+-]?D+)?`.
fn numeric_text(s: &str) -> Option<f64> {
    let t = s.trim_matches(is_ascii_ws);
    let b = t.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let int_digits = i - int_start;
    let mut frac_digits = 0;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let f = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        frac_digits = i - f;
    }
    if int_digits == 0 && frac_digits == 0 {
        return None;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let e = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == e {
            return None;
        }
    }
    if i != b.len() {
        return None;
    }
    t.trim_start_matches('+').parse::<f64>().ok().filter(|f| f.is_finite())
}

/// The value as a number, when it is numeric: a finite number, or a string (or list) whose
/// printed form is a decimal literal. Booleans and objects never are.
pub fn numeric(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64().filter(|f| f.is_finite()),
        Value::String(_) | Value::Array(_) => numeric_text(&printed(v)),
        _ => None,
    }
}

/// Pinpoint equality: both missing are equal; one missing is not; objects only if
/// identical; numbers compare numerically when both sides are numeric and one is a JSON
/// number; otherwise printed forms compare exactly.
pub fn equal(a: &Value, b: &Value) -> bool {
    match (missing(a), missing(b)) {
        (true, true) => return true,
        (true, false) | (false, true) => return false,
        _ => {}
    }
    if a.is_object() || b.is_object() {
        return a == b;
    }
    if a.is_number() || b.is_number() {
        if let (Some(x), Some(y)) = (numeric(a), numeric(b)) {
            return x == y;
        }
    }
    printed(a) == printed(b)
}

/// Pinpoint ordering: undefined when either side is missing or an object; numeric when both
/// are numeric; otherwise printed forms by code point.
pub fn order(a: &Value, b: &Value) -> Option<Ordering> {
    if missing(a) || missing(b) || a.is_object() || b.is_object() {
        return None;
    }
    if let (Some(x), Some(y)) = (numeric(a), numeric(b)) {
        return x.partial_cmp(&y);
    }
    Some(printed(a).chars().cmp(printed(b).chars()))
}

/// A number as a helper result: integral values become JSON integers so they print as JS
/// does (`12`, not `12.0`).
pub fn number_value(f: f64) -> Value {
    if f == f.trunc() && f.abs() < 9.0e15 {
        Value::from(f as i64)
    } else {
        serde_json::Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn printed_forms_follow_js() {
        assert_eq!(printed(&json!(["a", "b"])), "a,b");
        assert_eq!(printed(&json!(["a", null, "c"])), "a,,c");
        assert_eq!(printed(&json!(12.0)), "12");
        assert_eq!(printed(&json!(59.99)), "59.99");
        assert_eq!(printed(&json!({"a": 1})), "[object Object]");
        assert_eq!(printed(&Value::Null), "");
    }

    #[test]
    fn truthiness_and_numbers() {
        for v in [json!(null), json!(false), json!(0), json!(""), json!([])] {
            assert!(!truthy(&v), "{v}");
        }
        for v in [json!("0"), json!("false"), json!([""]), json!({})] {
            assert!(truthy(&v), "{v}");
        }
        assert_eq!(numeric(&json!(" 12 ")), Some(12.0));
        assert_eq!(numeric(&json!(["22.0"])), Some(22.0));
        assert_eq!(numeric(&json!(".5")), Some(0.5));
        assert_eq!(numeric(&json!("1e3")), Some(1000.0));
        assert_eq!(numeric(&json!("1e")), None);
        assert_eq!(numeric(&json!("12a")), None);
        assert_eq!(numeric(&json!(true)), None);
    }

    #[test]
    fn equality_and_ordering_follow_the_helper_page() {
        assert!(equal(&json!(12), &json!("12")));
        assert!(equal(&json!(["22"]), &json!(22.0)));
        assert!(!equal(&json!("22"), &json!("22.0")));
        assert!(equal(&json!(["red", "blue"]), &json!("red,blue")));
        assert!(equal(&json!(["true"]), &json!(true)));
        assert!(equal(&Value::Null, &Value::Null));
        assert!(!equal(&Value::Null, &json!("")));
        assert_eq!(order(&json!("9"), &json!("17")), Some(Ordering::Less));
        assert_eq!(order(&json!("5"), &json!("5.0")), Some(Ordering::Equal));
        assert_eq!(order(&json!("10a"), &json!("9a")), Some(Ordering::Less));
        assert_eq!(order(&json!("Zoe"), &json!("Zoë")), Some(Ordering::Less));
        assert_eq!(order(&Value::Null, &json!(1)), None);
    }
}
