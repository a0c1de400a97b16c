//! Conditionals (`if`, `unless`, `and`, `or`, `eq`, `neq`, `gt`, `gte`, `lt`, `lte`, `not`),
//! each usable as a block with `{{else}}` and inline with `yes=`/`no=`, and `each` capped at
//! 15 items as Pinpoint does.

use std::cmp::Ordering;

use handlebars::{
    BlockContext, BlockParams, Context, Handlebars, Helper, HelperDef, HelperResult, Output, RenderContext, RenderError, Renderable,
    ScopedJson,
};
use serde_json::Value;

use super::{arg, arity, fail, hash, write_value};
use crate::render::value::{equal, order, truthy};

/// Pinpoint's cap on the items `each` iterates.
pub const EACH_LIMIT: usize = 15;

type Condition = fn(&Helper<'_>) -> Result<bool, RenderError>;

struct Conditional(Condition);

fn yes_no(h: &Helper<'_>, holds: bool) -> Value {
    let (key, default) = if holds { ("yes", true) } else { ("no", false) };
    hash(h, key).cloned().unwrap_or(Value::Bool(default))
}

impl HelperDef for Conditional {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        Ok(ScopedJson::Derived(yes_no(h, (self.0)(h)?)))
    }

    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        rc: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        let holds = (self.0)(h)?;
        if h.is_block() {
            let branch = if holds { h.template() } else { h.inverse() };
            if let Some(t) = branch {
                t.render(r, ctx, rc, out)?;
            }
            Ok(())
        } else {
            write_value(&yes_no(h, holds), r, rc, out)
        }
    }
}

fn binary<'a>(h: &'a Helper<'_>) -> Result<(&'a Value, &'a Value), RenderError> {
    arity(h, 2..=2)?;
    Ok((arg(h, 0), arg(h, 1)))
}

fn ordered(h: &Helper<'_>, test: fn(Ordering) -> bool) -> Result<bool, RenderError> {
    let (a, b) = binary(h)?;
    Ok(order(a, b).is_some_and(test))
}

fn variadic<'a>(h: &'a Helper<'_>) -> Result<impl Iterator<Item = bool> + 'a, RenderError> {
    if h.params().len() < 2 {
        return Err(fail(format!("{} takes at least 2 arguments", h.name())));
    }
    Ok(h.params().iter().map(|p| truthy(p.value())))
}

fn if_condition(h: &Helper<'_>) -> Result<bool, RenderError> {
    arity(h, 1..=1)?;
    let v = arg(h, 0);
    let include_zero = hash(h, "includeZero").is_some_and(truthy);
    Ok(truthy(v) || (include_zero && v.as_f64() == Some(0.0)))
}

struct Unless;

impl HelperDef for Unless {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        rc: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        if !h.is_block() {
            return Err(fail("unless is only a block helper: {{#unless v}}...{{/unless}}"));
        }
        let branch = if if_condition(h)? { h.inverse() } else { h.template() };
        if let Some(t) = branch {
            t.render(r, ctx, rc, out)?;
        }
        Ok(())
    }
}

/// handlebars.js `each` over at most [`EACH_LIMIT`] items (`this`, `@index`, `@first`,
/// `@last`, `@key`, block params); missing, empty or not iterable renders the `else` part.
struct Each;

impl HelperDef for Each {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        rc: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        arity(h, 1..=1)?;
        let param = h.param(0).expect("arity checked");
        let Some(template) = h.template() else { return Ok(()) };
        let base_path = param.context_path();
        // Keys and values by reference: values are cloned only when they are not in the
        // context (then the block needs its own copy) or feed block params.
        let items: Vec<(Value, &Value)> = match param.value() {
            Value::Array(list) => list.iter().take(EACH_LIMIT).enumerate().map(|(i, v)| (Value::from(i), v)).collect(),
            Value::Object(map) => map.iter().take(EACH_LIMIT).map(|(k, v)| (Value::from(k.as_str()), v)).collect(),
            _ => Vec::new(),
        };
        if items.is_empty() {
            if let Some(inverse) = h.inverse() {
                inverse.render(r, ctx, rc, out)?;
            }
            return Ok(());
        }
        let is_object = param.value().is_object();
        let mut block = BlockContext::new();
        if let Some(p) = base_path {
            let mut path = Vec::with_capacity(p.len() + 1);
            path.extend(p.iter().cloned());
            path.push(String::new());
            *block.base_path_mut() = path;
        }
        rc.push_block(block);
        let len = items.len();
        for (i, (key, value)) in items.iter().enumerate() {
            if let Some(block) = rc.block_mut() {
                block.set_local_var("first", Value::from(i == 0));
                block.set_local_var("last", Value::from(i == len - 1));
                block.set_local_var("index", Value::from(i));
                if is_object {
                    block.set_local_var("key", key.clone());
                }
                if base_path.is_some() {
                    if let Some(last) = block.base_path_mut().last_mut() {
                        last.clear();
                        match key {
                            Value::String(s) => last.push_str(s),
                            other => last.push_str(&other.to_string()),
                        }
                    }
                } else {
                    block.set_base_value((*value).clone());
                }
                if let Some(name) = h.block_param() {
                    let mut params = BlockParams::new();
                    params.add_value(name, (*value).clone())?;
                    block.set_block_params(params);
                } else if let Some((v_name, k_name)) = h.block_param_pair() {
                    let mut params = BlockParams::new();
                    params.add_value(v_name, (*value).clone())?;
                    params.add_value(k_name, key.clone())?;
                    block.set_block_params(params);
                }
            }
            template.render(r, ctx, rc, out)?;
        }
        rc.pop_block();
        Ok(())
    }
}

pub fn register(hb: &mut Handlebars<'static>) {
    let conditions: [(&str, Condition); 10] = [
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
    for (name, condition) in conditions {
        hb.register_helper(name, Box::new(Conditional(condition)));
    }
    hb.register_helper("unless", Box::new(Unless));
    hb.register_helper("each", Box::new(Each));
}
