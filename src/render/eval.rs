//! The evaluator: runs a template parsed by handlebars-rust's parser against a JSON context
//! with handlebars.js semantics and Pinpoint's helpers.
//!
//! Compiling converts the parse tree into [`Node`]s once: every helper name is resolved to its
//! function, every path to its segments, inline partials are collected. Rendering then walks
//! the nodes with a stack of scopes that borrow from the context — no helper registry lookups,
//! no path parsing and no copies of the context on the hot path.

use std::borrow::Cow;
use std::collections::HashMap;

use handlebars::template::{BlockParam, HelperTemplate, Parameter, TemplateElement};
use handlebars::{Path, PathSeg, Template};
use serde_json::Value;

use super::helpers::{self, Arg, Args, Kind, EACH_LIMIT};
use super::value::{printed, truthy};

/// Why a template cannot be compiled, and where.
#[derive(Debug)]
pub struct CompileError {
    pub message: String,
    pub line: usize,
    pub column: usize,
}

/// Why a render failed, and where.
#[derive(Debug)]
pub struct EvalError {
    pub message: String,
    pub line: usize,
    pub column: usize,
}

#[derive(Debug, Clone)]
struct PathRef {
    /// `../` count.
    up: usize,
    /// `@root.`
    root: bool,
    segs: Vec<String>,
    /// As written, for bare words.
    raw: String,
}

#[derive(Debug, Clone)]
enum Expr {
    Lit(Value),
    Path(PathRef),
    /// `@index`, `@first`, `@last`, `@key` (with `../` levels).
    Local {
        level: usize,
        name: String,
    },
    Call(Box<Call>),
}

#[derive(Debug, Clone)]
struct Call {
    name: String,
    kind: Kind,
    params: Vec<Expr>,
    hash: Vec<(String, Expr)>,
}

impl std::fmt::Debug for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Value(_) => "value",
            Kind::Condition(_) => "condition",
            Kind::Unless => "unless",
            Kind::Each => "each",
            Kind::With => "with",
            Kind::Lookup => "lookup",
        })
    }
}

#[derive(Debug, Clone)]
enum Node {
    Raw(String),
    /// `{{expr}}` (escaped) or `{{{expr}}}`.
    Print {
        expr: Expr,
        escape: bool,
        pos: (usize, usize),
    },
    /// `{{#helper ...}}body{{else}}inverse{{/helper}}`, or a section on a value.
    Block {
        call: Call,
        section: bool,
        block_params: Vec<String>,
        body: Vec<Node>,
        inverse: Vec<Node>,
        pos: (usize, usize),
    },
    /// `{{> name}}`, with an optional context argument and the indentation of a standalone tag.
    Partial {
        name: String,
        context: Option<Expr>,
        indent: Option<String>,
        pos: (usize, usize),
    },
}

/// A compiled template part.
#[derive(Debug, Clone)]
pub struct Program {
    nodes: Vec<Node>,
    partials: HashMap<String, Vec<Node>>,
}

fn err(message: impl Into<String>, pos: (usize, usize)) -> CompileError {
    CompileError { message: message.into(), line: pos.0, column: pos.1 }
}

fn path_ref(path: &Path) -> Expr {
    match path {
        Path::Local((level, name, _)) => Expr::Local { level: *level, name: name.clone() },
        Path::Relative((segs, raw)) => {
            let mut p = PathRef { up: 0, root: false, segs: Vec::with_capacity(segs.len()), raw: raw.clone() };
            for seg in segs {
                match seg {
                    PathSeg::Named(n) => p.segs.push(n.clone()),
                    // The grammar's rule names are the only way to tell `../` from `@root`.
                    other => match format!("{other:?}").as_str() {
                        "Ruled(path_up)" => p.up += 1,
                        "Ruled(path_root)" => p.root = true,
                        _ => {}
                    },
                }
            }
            Expr::Path(p)
        }
    }
}

fn name_of(p: &Parameter) -> Option<String> {
    match p {
        Parameter::Name(n) => Some(n.clone()),
        Parameter::Path(Path::Relative((segs, raw))) if segs.len() == 1 && !raw.contains(['.', '/', '[']) => Some(raw.clone()),
        _ => None,
    }
}

fn expr(p: &Parameter, pos: (usize, usize)) -> Result<Expr, CompileError> {
    Ok(match p {
        Parameter::Literal(v) => Expr::Lit(v.clone()),
        Parameter::Path(path) => path_ref(path),
        Parameter::Name(n) => match helpers::kind(n) {
            // A helper name with no arguments used as an argument: a call (`(uuid)`).
            Some(kind) => Expr::Call(Box::new(Call { name: n.clone(), kind, params: Vec::new(), hash: Vec::new() })),
            None => match Path::parse(n) {
                Ok(path) => path_ref(&path),
                Err(_) => return Err(err(format!("'{n}' is not a path"), pos)),
            },
        },
        Parameter::Subexpression(sub) => match sub.element.as_ref() {
            TemplateElement::Expression(ht) => {
                call(ht, pos)?.map(|c| Expr::Call(Box::new(c))).ok_or_else(|| err("a subexpression must call a helper", pos))?
            }
            _ => return Err(err("unsupported subexpression", pos)),
        },
        _ => return Err(err("unsupported expression", pos)),
    })
}

/// The helper call a tag makes, or `None` when its name is not a helper.
fn call(ht: &HelperTemplate, pos: (usize, usize)) -> Result<Option<Call>, CompileError> {
    let Some(name) = name_of(&ht.name) else { return Ok(None) };
    let Some(kind) = helpers::kind(&name) else {
        if ht.params.is_empty() && ht.hash.is_empty() {
            return Ok(None);
        }
        return Err(err(format!("unknown helper '{name}'"), pos));
    };
    let params = ht.params.iter().map(|p| expr(p, pos)).collect::<Result<Vec<_>, _>>()?;
    let mut hash: Vec<(String, Expr)> = ht.hash.iter().map(|(k, v)| Ok((k.clone(), expr(v, pos)?))).collect::<Result<_, CompileError>>()?;
    hash.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Some(Call { name, kind, params, hash }))
}

fn block_params(bp: &Option<BlockParam>) -> Vec<String> {
    let name = |p: &Parameter| name_of(p).unwrap_or_default();
    match bp {
        Some(BlockParam::Single(p)) => vec![name(p)],
        Some(BlockParam::Pair((a, b))) => vec![name(a), name(b)],
        _ => Vec::new(),
    }
}

/// Converts a parsed template; inline partials go to `partials`.
fn nodes(t: &Template, partials: &mut HashMap<String, Vec<Node>>) -> Result<Vec<Node>, CompileError> {
    let mut out = Vec::with_capacity(t.elements.len());
    for (i, element) in t.elements.iter().enumerate() {
        let pos = t.mapping.get(i).map(|m| (m.0, m.1)).unwrap_or((0, 0));
        match element {
            TemplateElement::RawString(s) => {
                if !s.is_empty() {
                    out.push(Node::Raw(s.clone()));
                }
            }
            TemplateElement::Comment(_) => {}
            TemplateElement::Expression(ht) | TemplateElement::HtmlExpression(ht) => {
                let escape = matches!(element, TemplateElement::Expression(_));
                let e = match call(ht, pos)? {
                    Some(c) => Expr::Call(Box::new(c)),
                    None => expr(&ht.name, pos)?,
                };
                out.push(Node::Print { expr: e, escape, pos });
            }
            TemplateElement::HelperBlock(ht) => {
                let body = match &ht.template {
                    Some(t) => nodes(t, partials)?,
                    None => Vec::new(),
                };
                let inverse = match &ht.inverse {
                    Some(t) => nodes(t, partials)?,
                    None => Vec::new(),
                };
                let (call, section) = match call(ht, pos)? {
                    Some(c) => (c, false),
                    // `{{#value}}...{{/value}}`: a section on a value.
                    None => (Call { name: String::new(), kind: Kind::With, params: vec![expr(&ht.name, pos)?], hash: Vec::new() }, true),
                };
                if matches!(call.kind, Kind::Value(_) | Kind::Lookup) {
                    return Err(err(format!("'{}' is not a block helper", call.name), pos));
                }
                out.push(Node::Block { call, section, block_params: block_params(&ht.block_param), body, inverse, pos });
            }
            TemplateElement::DecoratorBlock(d) => {
                let is_inline = matches!(&d.name, Parameter::Name(n) if n == "inline");
                let name = match d.params.first() {
                    Some(Parameter::Literal(Value::String(s))) if is_inline => s.clone(),
                    _ => return Err(err("only inline partials ({{#*inline \"name\"}}) are supported", pos)),
                };
                let body = match &d.template {
                    Some(t) => nodes(t, partials)?,
                    None => Vec::new(),
                };
                partials.insert(name, body);
            }
            TemplateElement::PartialExpression(d) => {
                let name = match &d.name {
                    Parameter::Name(n) => n.clone(),
                    Parameter::Literal(Value::String(s)) => s.clone(),
                    Parameter::Path(p) => match p {
                        Path::Relative((_, raw)) | Path::Local((_, _, raw)) => raw.clone(),
                    },
                    _ => return Err(err("dynamic partial names are not supported", pos)),
                };
                let context = d.params.first().map(|p| expr(p, pos)).transpose()?;
                out.push(Node::Partial { name, context, indent: d.indent.clone(), pos });
            }
            _ => return Err(err("decorators and partial blocks are not supported", pos)),
        }
    }
    Ok(out)
}

impl Program {
    pub fn compile(t: &Template) -> Result<Self, CompileError> {
        let mut partials = HashMap::new();
        let nodes = nodes(t, &mut partials)?;
        let program = Self { nodes, partials };
        program.check_partials(&program.nodes)?;
        Ok(program)
    }

    fn check_partials(&self, nodes: &[Node]) -> Result<(), CompileError> {
        for n in nodes {
            match n {
                Node::Partial { name, pos, .. } if !self.partials.contains_key(name) => {
                    return Err(err(format!("partial '{name}' is not defined (only inline partials are available)"), *pos));
                }
                Node::Block { body, inverse, .. } => {
                    self.check_partials(body)?;
                    self.check_partials(inverse)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Renders against `root`.
    pub fn render(&self, root: &Value, out: &mut String) -> Result<(), EvalError> {
        let mut scopes = vec![Scope { value: Cow::Borrowed(root), locals: Locals::default(), params: Vec::new() }];
        Eval { program: self }.nodes(&self.nodes, &mut scopes, out)
    }
}

#[derive(Default, Clone)]
struct Locals {
    index: Option<usize>,
    first: bool,
    last: bool,
    key: Option<String>,
}

struct Scope<'a> {
    value: Cow<'a, Value>,
    locals: Locals,
    /// Block params (`as |item key|`) visible from this scope inward.
    params: Vec<(&'a str, Cow<'a, Value>)>,
}

struct Eval<'a> {
    program: &'a Program,
}

static NULL: Value = Value::Null;

fn navigate<'v>(mut v: &'v Value, segs: &[String]) -> Option<&'v Value> {
    for s in segs {
        v = match v {
            Value::Object(m) => m.get(s)?,
            Value::Array(a) => a.get(s.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

fn html_escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            '`' => out.push_str("&#x60;"),
            '=' => out.push_str("&#x3D;"),
            c => out.push(c),
        }
    }
}

fn write_printed(v: &Value, escape: bool, out: &mut String) {
    match v {
        Value::Null => {}
        Value::String(s) if escape => html_escape(s, out),
        Value::String(s) => out.push_str(s),
        other => {
            let p = printed(other);
            if escape {
                html_escape(&p, out)
            } else {
                out.push_str(&p)
            }
        }
    }
}

impl<'a> Eval<'a> {
    fn resolve<'s>(&self, p: &'a PathRef, scopes: &'s [Scope<'a>]) -> Cow<'a, Value> {
        // Block params shadow context paths (innermost first).
        if !p.root && p.up == 0 {
            if let Some(first) = p.segs.first() {
                for scope in scopes.iter().rev() {
                    if let Some((_, v)) = scope.params.iter().find(|(n, _)| n == first) {
                        return match v {
                            Cow::Borrowed(v) => Cow::Borrowed(navigate(v, &p.segs[1..]).unwrap_or(&NULL)),
                            Cow::Owned(v) => Cow::Owned(navigate(v, &p.segs[1..]).cloned().unwrap_or(Value::Null)),
                        };
                    }
                }
            }
        }
        let scope = if p.root { scopes.first() } else { scopes.len().checked_sub(1 + p.up).and_then(|i| scopes.get(i)) };
        match scope.map(|s| &s.value) {
            Some(Cow::Borrowed(v)) => Cow::Borrowed(navigate(v, &p.segs).unwrap_or(&NULL)),
            Some(Cow::Owned(v)) => Cow::Owned(navigate(v, &p.segs).cloned().unwrap_or(Value::Null)),
            None => Cow::Borrowed(&NULL),
        }
    }

    fn local(&self, level: usize, name: &str, scopes: &[Scope<'a>]) -> Value {
        let Some(scope) = scopes.len().checked_sub(1 + level).and_then(|i| scopes.get(i)) else { return Value::Null };
        let l = &scope.locals;
        match name {
            "index" => l.index.map(Value::from).unwrap_or(Value::Null),
            "first" if l.index.is_some() => Value::Bool(l.first),
            "last" if l.index.is_some() => Value::Bool(l.last),
            "key" => l.key.clone().map(Value::String).unwrap_or(Value::Null),
            _ => Value::Null,
        }
    }

    fn eval(&self, e: &'a Expr, scopes: &[Scope<'a>], pos: (usize, usize)) -> Result<Cow<'a, Value>, EvalError> {
        match e {
            Expr::Lit(v) => Ok(Cow::Borrowed(v)),
            Expr::Path(p) => Ok(self.resolve(p, scopes)),
            Expr::Local { level, name } => Ok(Cow::Owned(self.local(*level, name, scopes))),
            Expr::Call(c) => self.call(c, scopes, pos).map(Cow::Owned),
        }
    }

    fn args(&self, c: &'a Call, scopes: &[Scope<'a>], pos: (usize, usize)) -> Result<Args<'a>, EvalError> {
        let arg = |e: &'a Expr| -> Result<Arg<'a>, EvalError> {
            let path = match e {
                Expr::Path(p) => Some(p.raw.as_str()),
                _ => None,
            };
            Ok(Arg { value: self.eval(e, scopes, pos)?, path })
        };
        Ok(Args {
            name: &c.name,
            params: c.params.iter().map(arg).collect::<Result<_, _>>()?,
            hash: c.hash.iter().map(|(k, v)| Ok((k.as_str(), arg(v)?))).collect::<Result<_, EvalError>>()?,
        })
    }

    fn failed(&self, e: helpers::HelperError, pos: (usize, usize)) -> EvalError {
        EvalError { message: e.0, line: pos.0, column: pos.1 }
    }

    /// An inline or subexpression call's value.
    fn call(&self, c: &'a Call, scopes: &[Scope<'a>], pos: (usize, usize)) -> Result<Value, EvalError> {
        let args = self.args(c, scopes, pos)?;
        match c.kind {
            Kind::Value(f) => f(&args).map_err(|e| self.failed(e, pos)),
            Kind::Condition(f) => f(&args).map(|holds| helpers::yes_no(&args, holds)).map_err(|e| self.failed(e, pos)),
            Kind::Lookup => {
                if args.params.len() != 2 {
                    return Err(self.failed(helpers::HelperError("lookup takes 2 arguments".into()), pos));
                }
                let key = printed(args.params[1].value());
                Ok(match args.params[0].value() {
                    Value::Object(m) => m.get(&key).cloned().unwrap_or(Value::Null),
                    Value::Array(a) => key.parse::<usize>().ok().and_then(|i| a.get(i)).cloned().unwrap_or(Value::Null),
                    _ => Value::Null,
                })
            }
            Kind::Unless | Kind::Each | Kind::With => {
                Err(self.failed(helpers::HelperError(format!("{} is only a block helper", c.name)), pos))
            }
        }
    }

    fn nodes(&self, nodes: &'a [Node], scopes: &mut Vec<Scope<'a>>, out: &mut String) -> Result<(), EvalError> {
        for node in nodes {
            match node {
                Node::Raw(s) => out.push_str(s),
                Node::Print { expr, escape, pos } => {
                    let v = self.eval(expr, scopes, *pos)?;
                    write_printed(&v, *escape, out);
                }
                Node::Block { call, section, block_params, body, inverse, pos } => {
                    self.block(call, *section, block_params, body, inverse, *pos, scopes, out)?
                }
                Node::Partial { name, context, indent, pos } => {
                    let partial = self.program.partials.get(name).ok_or_else(|| EvalError {
                        message: format!("partial '{name}' not found"),
                        line: pos.0,
                        column: pos.1,
                    })?;
                    let pushed = match context {
                        Some(e) => {
                            let v = self.eval(e, scopes, *pos)?;
                            scopes.push(Scope { value: v, locals: Locals::default(), params: Vec::new() });
                            true
                        }
                        None => false,
                    };
                    // A standalone partial tag indents every line of its output; the parser also
                    // records the whitespace before a tag that shares its line with text.
                    let standalone = out.is_empty() || out.ends_with('\n');
                    let result = match indent.as_ref().filter(|_| standalone) {
                        Some(prefix) => {
                            let mut inner = String::new();
                            let r = self.nodes(partial, scopes, &mut inner);
                            for (i, line) in inner.split_inclusive('\n').enumerate() {
                                if i > 0 || !line.is_empty() {
                                    out.push_str(prefix);
                                }
                                out.push_str(line);
                            }
                            r
                        }
                        None => self.nodes(partial, scopes, out),
                    };
                    if pushed {
                        scopes.pop();
                    }
                    result?;
                }
            }
        }
        Ok(())
    }

    /// Renders `body` once per item (or once for `with`), each in its own scope.
    fn iterate(
        &self,
        items: Vec<(Locals, Cow<'a, Value>, Value)>,
        block_params: &'a [String],
        body: &'a [Node],
        scopes: &mut Vec<Scope<'a>>,
        out: &mut String,
    ) -> Result<(), EvalError> {
        for (locals, value, key) in items {
            let mut params = Vec::new();
            if let Some(name) = block_params.first() {
                params.push((name.as_str(), value.clone()));
            }
            if let Some(name) = block_params.get(1) {
                params.push((name.as_str(), Cow::Owned(key)));
            }
            scopes.push(Scope { value, locals, params });
            let r = self.nodes(body, scopes, out);
            scopes.pop();
            r?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn block(
        &self,
        c: &'a Call,
        section: bool,
        block_params: &'a [String],
        body: &'a [Node],
        inverse: &'a [Node],
        pos: (usize, usize),
        scopes: &mut Vec<Scope<'a>>,
        out: &mut String,
    ) -> Result<(), EvalError> {
        let args = self.args(c, scopes, pos)?;
        match c.kind {
            Kind::Condition(f) => {
                let holds = f(&args).map_err(|e| self.failed(e, pos))?;
                self.nodes(if holds { body } else { inverse }, scopes, out)
            }
            Kind::Unless => {
                let holds = helpers::if_condition(&args).map_err(|e| self.failed(e, pos))?;
                self.nodes(if holds { inverse } else { body }, scopes, out)
            }
            Kind::Each | Kind::With => {
                if args.params.len() != 1 {
                    return Err(self.failed(helpers::HelperError(format!("{} takes 1 argument", c.name)), pos));
                }
                let value = args.params.into_iter().next().expect("one argument").value;
                let is_each = matches!(c.kind, Kind::Each);
                let items: Vec<(Locals, Cow<'a, Value>, Value)> = match (&value, is_each || section) {
                    (Cow::Borrowed(Value::Array(list)), true) => {
                        let n = list.len().min(EACH_LIMIT);
                        list.iter()
                            .take(n)
                            .enumerate()
                            .map(|(i, v)| {
                                (Locals { index: Some(i), first: i == 0, last: i + 1 == n, key: None }, Cow::Borrowed(v), Value::from(i))
                            })
                            .collect()
                    }
                    (Cow::Owned(Value::Array(list)), true) => {
                        let n = list.len().min(EACH_LIMIT);
                        list.iter()
                            .take(n)
                            .enumerate()
                            .map(|(i, v)| {
                                (
                                    Locals { index: Some(i), first: i == 0, last: i + 1 == n, key: None },
                                    Cow::Owned(v.clone()),
                                    Value::from(i),
                                )
                            })
                            .collect()
                    }
                    (v, _) if is_each && v.is_object() => {
                        let map = v.as_object().expect("an object");
                        let n = map.len().min(EACH_LIMIT);
                        let item = |i: usize, k: &String, val: Cow<'a, Value>| {
                            (
                                Locals { index: Some(i), first: i == 0, last: i + 1 == n, key: Some(k.clone()) },
                                val,
                                Value::String(k.clone()),
                            )
                        };
                        match &value {
                            Cow::Borrowed(Value::Object(m)) => {
                                m.iter().take(n).enumerate().map(|(i, (k, v))| item(i, k, Cow::Borrowed(v))).collect()
                            }
                            _ => map.iter().take(n).enumerate().map(|(i, (k, v))| item(i, k, Cow::Owned(v.clone()))).collect(),
                        }
                    }
                    (v, _) if !is_each && truthy(v) => {
                        // `with`, or a section on a value: once, with the value as context (a
                        // section on `true` keeps the current context).
                        let ctx = if matches!(v.as_ref(), Value::Bool(true)) {
                            match &scopes.last().expect("the root scope").value {
                                Cow::Borrowed(b) => Cow::Borrowed(*b),
                                Cow::Owned(o) => Cow::Owned(o.clone()),
                            }
                        } else {
                            value.clone()
                        };
                        vec![(Locals::default(), ctx, Value::Null)]
                    }
                    _ => Vec::new(),
                };
                if items.is_empty() {
                    self.nodes(inverse, scopes, out)
                } else {
                    self.iterate(items, block_params, body, scopes, out)
                }
            }
            Kind::Value(_) | Kind::Lookup => Err(self.failed(helpers::HelperError(format!("'{}' is not a block helper", c.name)), pos)),
        }
    }
}
