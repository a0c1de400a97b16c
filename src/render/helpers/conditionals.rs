//! Conditions: `if`, `and`, `or`, `eq`, `neq`, `gt`, `gte`, `lt`, `lte`, `not`. Each is a
//! block (`{{#eq a b}}...{{else}}...{{/eq}}`) or inline/subexpression with `yes=`/`no=`.

use std::cmp::Ordering;

use serde_json::Value;

use super::{arg, arity, fail, hash, Args, ConditionFn, HelperError};
use crate::render::value::{equal, order, truthy};

/// Pinpoint's cap on the items `each` iterates.
pub const EACH_LIMIT: usize = 15;

fn binary<'a>(h: &'a Args<'_>) -> Result<(&'a Value, &'a Value), HelperError> {
    arity(h, 2..=2)?;
    Ok((arg(h, 0), arg(h, 1)))
}

fn ordered(h: &Args<'_>, test: fn(Ordering) -> bool) -> Result<bool, HelperError> {
    let (a, b) = binary(h)?;
    Ok(order(a, b).is_some_and(test))
}

fn variadic<'a>(h: &'a Args<'_>) -> Result<impl Iterator<Item = bool> + 'a, HelperError> {
    if h.params().len() < 2 {
        return Err(fail(format!("{} takes at least 2 arguments", h.name())));
    }
    Ok(h.params().iter().map(|p| truthy(p.value())))
}

/// `if` (and `unless`): truthy, or 0 with `includeZero=true`.
pub(crate) fn if_condition(h: &Args<'_>) -> Result<bool, HelperError> {
    arity(h, 1..=1)?;
    let v = arg(h, 0);
    let include_zero = hash(h, "includeZero").is_some_and(truthy);
    Ok(truthy(v) || (include_zero && v.as_f64() == Some(0.0)))
}

pub(super) const CONDITIONS: [(&str, ConditionFn); 10] = [
    ("if", if_condition),
    ("eq", |h| binary(h).map(|(a, b)| equal(a, b))),
    ("neq", |h| binary(h).map(|(a, b)| !equal(a, b))),
    ("gt", |h| ordered(h, Ordering::is_gt)),
    ("gte", |h| ordered(h, Ordering::is_ge)),
    ("lt", |h| ordered(h, Ordering::is_lt)),
    ("lte", |h| ordered(h, Ordering::is_le)),
    ("and", |h| Ok(variadic(h)?.all(|t| t))),
    ("or", |h| Ok(variadic(h)?.any(|t| t))),
    ("not", |h| {
        arity(h, 1..=1)?;
        Ok(!truthy(arg(h, 0)))
    }),
];

/// The value of an inline condition: `yes=`/`no=` when given, else the boolean.
pub fn yes_no(h: &Args<'_>, holds: bool) -> Value {
    let (key, default) = if holds { ("yes", true) } else { ("no", false) };
    hash(h, key).cloned().unwrap_or(Value::Bool(default))
}
