//! Pinpoint's helper set with handlebars.js semantics (see
//! `shared/reference/pinpoint-helpers.md`, restated in README). Helpers are plain functions of
//! their evaluated arguments; the evaluator ([`super::eval`]) resolves each name once, when a
//! template is compiled.

mod conditionals;
mod dates;
mod math;
mod strings;

use std::borrow::Cow;

use serde_json::Value;

pub(crate) use conditionals::if_condition;
pub use conditionals::{yes_no, EACH_LIMIT};

/// A helper's failure: fails the render of that message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HelperError(pub String);

pub(crate) fn fail(msg: impl Into<String>) -> HelperError {
    HelperError(msg.into())
}

/// One evaluated argument: its value and, for a path, the path as written (bare words).
#[derive(Debug, Clone)]
pub struct Arg<'a> {
    pub value: Cow<'a, Value>,
    pub path: Option<&'a str>,
}

impl Arg<'_> {
    pub fn value(&self) -> &Value {
        &self.value
    }

    pub fn relative_path(&self) -> Option<&str> {
        self.path
    }
}

/// A helper call's evaluated arguments.
#[derive(Debug, Clone)]
pub struct Args<'a> {
    pub name: &'a str,
    pub params: Vec<Arg<'a>>,
    pub hash: Vec<(&'a str, Arg<'a>)>,
}

impl Args<'_> {
    pub fn name(&self) -> &str {
        self.name
    }

    pub fn params(&self) -> &[Arg<'_>] {
        &self.params
    }

    pub fn param(&self, i: usize) -> Option<&Arg<'_>> {
        self.params.get(i)
    }

    pub fn hash_get(&self, key: &str) -> Option<&Arg<'_>> {
        self.hash.iter().find(|(k, _)| *k == key).map(|(_, a)| a)
    }
}

pub(crate) type ValueFn = fn(&Args<'_>) -> Result<Value, HelperError>;
pub(crate) type ConditionFn = fn(&Args<'_>) -> Result<bool, HelperError>;

/// What a helper name means.
#[derive(Clone, Copy)]
pub enum Kind {
    /// Computes a value from its arguments.
    Value(ValueFn),
    /// A condition: a block renders its body or its `else`; inline it yields `yes=`/`no=`.
    Condition(ConditionFn),
    /// `unless`: a block only.
    Unless,
    /// `each`, capped at [`EACH_LIMIT`] items.
    Each,
    /// `with`: renders its body with the argument as context.
    With,
    /// `lookup obj key`.
    Lookup,
}

/// The helper a name calls, if any.
pub fn kind(name: &str) -> Option<Kind> {
    match name {
        "unless" => return Some(Kind::Unless),
        "each" => return Some(Kind::Each),
        "with" => return Some(Kind::With),
        "lookup" => return Some(Kind::Lookup),
        _ => {}
    }
    if let Some((_, f)) = conditionals::CONDITIONS.iter().find(|(n, _)| *n == name) {
        return Some(Kind::Condition(*f));
    }
    strings::HELPERS.iter().chain(math::HELPERS.iter()).chain(dates::HELPERS.iter()).find(|(n, _)| *n == name).map(|(_, f)| Kind::Value(*f))
}

/// Positional argument `i`, or null.
pub(crate) fn arg<'a>(h: &'a Args<'_>, i: usize) -> &'a Value {
    static NULL: Value = Value::Null;
    h.param(i).map(|p| p.value()).unwrap_or(&NULL)
}

pub(crate) fn hash<'a>(h: &'a Args<'_>, key: &str) -> Option<&'a Value> {
    h.hash_get(key).map(|p| p.value()).filter(|v| !v.is_null())
}

pub(crate) fn arity(h: &Args<'_>, allowed: std::ops::RangeInclusive<usize>) -> Result<(), HelperError> {
    let n = h.params().len();
    if allowed.contains(&n) {
        Ok(())
    } else {
        let want = if allowed.start() == allowed.end() {
            allowed.start().to_string()
        } else {
            format!("{} to {}", allowed.start(), allowed.end())
        };
        Err(fail(format!("{} takes {want} arguments, not {n}", h.name())))
    }
}
