//! Pinpoint's helper set on handlebars-rust, with handlebars.js semantics (see
//! `shared/reference/pinpoint-helpers.md`, restated in README).

mod conditionals;
mod dates;
mod math;
mod strings;

use handlebars::{Context, Handlebars, Helper, HelperDef, HelperResult, Output, RenderContext, RenderError, RenderErrorReason, ScopedJson};
use serde_json::Value;

use super::value::printed;

/// Every helper name a template may call (the compiler leaves these alone).
pub const NAMES: &[&str] = &[
    "if",
    "unless",
    "each",
    "with",
    "lookup",
    "and",
    "or",
    "eq",
    "neq",
    "gt",
    "gte",
    "lt",
    "lte",
    "not",
    "abbreviate",
    "capitalize",
    "capitalizeFirst",
    "center",
    "cut",
    "inflect",
    "join",
    "ljust",
    "lower",
    "ordinalize",
    "replace",
    "rjust",
    "slugify",
    "stripTags",
    "substring",
    "upper",
    "yesno",
    "add",
    "ceiling",
    "decode64",
    "divide",
    "encode64",
    "floor",
    "md5",
    "modulo",
    "multiply",
    "round",
    "sha256",
    "sha512",
    "subtract",
    "uuid",
    "now",
    "dateFormat",
];

/// The internal helper that prints a plain `{{value}}` the way handlebars.js does.
pub const PRINT: &str = "__herald_print";

pub fn register(hb: &mut Handlebars<'static>) {
    hb.register_helper(PRINT, Box::new(Print));
    conditionals::register(hb);
    strings::register(hb);
    math::register(hb);
    dates::register(hb);
}

pub(crate) fn fail(msg: impl Into<String>) -> RenderError {
    RenderErrorReason::Other(msg.into()).into()
}

/// Positional argument `i`, or null.
pub(crate) fn arg<'a>(h: &'a Helper<'_>, i: usize) -> &'a Value {
    static NULL: Value = Value::Null;
    h.param(i).map(|p| p.value()).unwrap_or(&NULL)
}

pub(crate) fn hash<'a>(h: &'a Helper<'_>, key: &str) -> Option<&'a Value> {
    h.hash_get(key).map(|p| p.value()).filter(|v| !v.is_null())
}

pub(crate) fn arity(h: &Helper<'_>, allowed: std::ops::RangeInclusive<usize>) -> Result<(), RenderError> {
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

/// Writes a helper result as `{{ }}` prints it (escaped unless in `{{{ }}}`).
pub(crate) fn write_value(v: &Value, r: &Handlebars<'_>, rc: &RenderContext<'_, '_>, out: &mut dyn Output) -> HelperResult {
    let owned;
    let s = match v {
        Value::String(s) => s.as_str(),
        Value::Null => return Ok(()),
        other => {
            owned = printed(other);
            owned.as_str()
        }
    };
    if rc.is_disable_escape() || !s.contains(['&', '<', '>', '"', '\'', '`', '=']) {
        out.write(s)?;
    } else {
        out.write(&r.get_escape_fn()(s))?;
    }
    Ok(())
}

/// The function behind a [`ValueHelper`].
pub(crate) type HelperFn = fn(&Helper<'_>) -> Result<Value, RenderError>;

/// A helper computed from its arguments alone: `{{h ...}}` prints its value, `(h ...)` passes it on.
pub(crate) struct ValueHelper(pub HelperFn);

impl HelperDef for ValueHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        (self.0)(h).map(ScopedJson::Derived)
    }

    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        _: &'rc Context,
        rc: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        write_value(&(self.0)(h)?, r, rc, out)
    }
}

struct Print;

impl HelperDef for Print {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        _: &'rc Context,
        rc: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        write_value(arg(h, 0), r, rc, out)
    }
}
