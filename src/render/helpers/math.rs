//! Math and encoding helpers: add, subtract, multiply, divide, modulo, ceiling, floor, round,
//! encode64, decode64, md5, sha256, sha512, uuid. Results are rounded half away from zero to
//! 8 decimal places and printed without exponent or trailing zeros.

use base64::Engine as _;
use serde_json::Value;

use super::{arg, arity, fail, Args, HelperError, ValueFn};
use crate::render::value::{blank, missing, number_value, numeric, printed};

/// Reads the operands: a non-blank non-numeric operand is an error; any blank operand makes
/// the result nothing (`None`).
fn operands(h: &Args<'_>, n: usize) -> Result<Option<Vec<f64>>, HelperError> {
    arity(h, n..=n)?;
    let mut out = Vec::with_capacity(n);
    let mut any_blank = false;
    for i in 0..n {
        let v = arg(h, i);
        if blank(v) {
            any_blank = true;
            continue;
        }
        out.push(numeric(v).ok_or_else(|| fail(format!("{} needs numbers, not '{}'", h.name(), printed(v))))?);
    }
    Ok(if any_blank { None } else { Some(out) })
}

/// Rounds half away from zero to 8 decimal places.
fn round8(f: f64) -> f64 {
    let scaled = (f * 1e8).round() / 1e8;
    // Printing through the shortest decimal form removes binary noise (11.499999999999998).
    format!("{scaled:.8}").parse::<f64>().unwrap_or(scaled) + 0.0
}

fn result(f: f64) -> Result<Value, HelperError> {
    if !f.is_finite() {
        return Err(fail("the result is not a finite number"));
    }
    Ok(number_value(round8(f)))
}

fn math(h: &Args<'_>, n: usize, f: fn(&[f64]) -> Result<f64, HelperError>) -> Result<Value, HelperError> {
    match operands(h, n)? {
        None => Ok(Value::String(String::new())),
        Some(ops) => result(f(&ops)?),
    }
}

fn string_arg(h: &Args<'_>) -> Result<Option<String>, HelperError> {
    arity(h, 1..=1)?;
    let v = arg(h, 0);
    Ok((!missing(v)).then(|| printed(v)))
}

fn digest<D: md5::Digest>(h: &Args<'_>) -> Result<Value, HelperError> {
    Ok(Value::String(match string_arg(h)? {
        Some(s) => D::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect(),
        None => String::new(),
    }))
}

fn decode64(h: &Args<'_>) -> Result<Value, HelperError> {
    let Some(s) = string_arg(h)? else { return Ok(Value::String(String::new())) };
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    let bytes = engine.decode(s.as_bytes()).map_err(|e| fail(format!("decode64: not standard Base64: {e}")))?;
    Ok(Value::String(String::from_utf8_lossy(&bytes).into_owned()))
}

pub(super) const HELPERS: [(&str, ValueFn); 14] = [
    ("add", |h| math(h, 2, |o| Ok(o[0] + o[1]))),
    ("subtract", |h| math(h, 2, |o| Ok(o[0] - o[1]))),
    ("multiply", |h| math(h, 2, |o| Ok(o[0] * o[1]))),
    ("divide", |h| math(h, 2, |o| if o[1] == 0.0 { Err(fail("divide by zero")) } else { Ok(o[0] / o[1]) })),
    ("modulo", |h| math(h, 2, |o| if o[1] == 0.0 { Err(fail("modulo by zero")) } else { Ok(o[0] % o[1]) })),
    ("ceiling", |h| math(h, 1, |o| Ok(o[0].ceil()))),
    ("floor", |h| math(h, 1, |o| Ok(o[0].floor()))),
    ("round", |h| math(h, 1, |o| Ok((o[0] + 0.5).floor()))),
    ("encode64", |h| Ok(Value::String(string_arg(h)?.map(|s| base64::engine::general_purpose::STANDARD.encode(s)).unwrap_or_default()))),
    ("decode64", decode64),
    ("md5", digest::<md5::Md5>),
    ("sha256", digest::<sha2::Sha256>),
    ("sha512", digest::<sha2::Sha512>),
    ("uuid", |h| {
        arity(h, 0..=0)?;
        Ok(Value::String(uuid::Uuid::new_v4().hyphenated().to_string()))
    }),
];
