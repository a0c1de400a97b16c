//! Every field of every request message, found by walking the descriptors the daemon reflects
//! (from each method's input type through every message-typed field), either has a test that
//! sets it and looks at what it did, or stands on the refused list — and then the daemon
//! really refuses it.
//!
//! The evidence for a field is, in this order:
//! - a test that sets it and asserts what follows: a struct literal of its message naming the
//!   field (`Type { field: …`), an assignment to it (`.field =`), or for a oneof member its
//!   variant (`Oneof::Variant(`), in a test of `tests/*.rs` or a unit test under `src/` (or in
//!   a helper such a test calls); or its Pinpoint member name set in a REST fixture
//!   (`tests/fixtures/pinpoint/*.py`), a JSON fixture or a JSON literal of a test;
//! - a line of `tests/fixtures/field-ledger.txt` naming `Message.field` and the test function
//!   that checks it (the function must exist and mention the field), or `refused` and why.
//!
//! Refused fields are then sent, one at a time, to the first method that reaches them, set to
//! a non-default value in a request for a real app: the answer must be INVALID_ARGUMENT with a
//! field violation naming the field.

#[macro_use]
mod common;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use common::{Backend, Daemon};
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor, Value};
use tonic::Code;

fn pool() -> DescriptorPool {
    DescriptorPool::decode(herald::proto::FILE_DESCRIPTOR_SET).unwrap()
}

/// A request field, and the first way from a method's input down to it.
struct Reached {
    message: MessageDescriptor,
    field: FieldDescriptor,
    method: MethodDescriptor,
    /// Field names from the method's input to the field's message (map values included).
    path: Vec<FieldDescriptor>,
}

/// Every field of every message reachable from a method's input, keyed `Message.field`.
fn request_fields(pool: &DescriptorPool) -> BTreeMap<String, Reached> {
    let mut out = BTreeMap::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut queue: VecDeque<(MessageDescriptor, MethodDescriptor, Vec<FieldDescriptor>)> = VecDeque::new();
    for s in pool.services() {
        for m in s.methods() {
            queue.push_back((m.input(), m.clone(), Vec::new()));
        }
    }
    while let Some((msg, method, path)) = queue.pop_front() {
        if !seen.insert(msg.full_name().to_string()) || msg.package_name() != "herald.v1" {
            continue;
        }
        for f in msg.fields() {
            let key = format!("{}.{}", msg.name(), f.name());
            let mut to = path.clone();
            to.push(f.clone());
            let inner = match f.kind() {
                Kind::Message(m) if m.is_map_entry() => match m.map_entry_value_field().kind() {
                    Kind::Message(v) => Some(v),
                    _ => None,
                },
                Kind::Message(m) => Some(m),
                _ => None,
            };
            if let Some(inner) = inner {
                queue.push_back((inner, method.clone(), to));
            }
            out.entry(key).or_insert(Reached { message: msg.clone(), field: f, method: method.clone(), path: path.clone() });
        }
    }
    out
}

/// The test functions of `tests/*.rs`: (file::name, body).
fn test_functions() -> Vec<(String, String)> {
    let mut files = Vec::new();
    let mut dirs = vec![std::path::PathBuf::from("tests"), std::path::PathBuf::from("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() && !p.ends_with("fixtures") {
                dirs.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") && !p.ends_with("field_ledger.rs") {
                files.push(p);
            }
        }
    }
    let mut out = Vec::new();
    for p in files {
        let text = std::fs::read_to_string(&p).unwrap();
        // Under src/, only the unit tests.
        let text = if p.starts_with("src") {
            match text.find("#[cfg(test)]") {
                Some(i) => text[i..].to_string(),
                None => continue,
            }
        } else {
            text
        };
        let file = p.with_extension("").to_string_lossy().trim_start_matches("tests/").to_string();
        let mut at = 0;
        while let Some(i) = text[at..].find("fn ") {
            let start = at + i;
            at = start + 3;
            let name: String = text[at..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            let Some(open) = text[at..].find('{').map(|o| at + o) else { break };
            let end = closing(&text, open).unwrap_or(text.len() - 1);
            out.push((format!("{file}::{name}"), text[start..=end].to_string()));
        }
    }
    out
}

/// The index of the `}` closing the `{` at `open`, skipping braces in strings, character
/// literals and comments.
fn closing(text: &str, open: usize) -> Option<usize> {
    let b = text.as_bytes();
    let (mut depth, mut i) = (0usize, open);
    while i < b.len() {
        match b[i] {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'r' if matches!(b.get(i + 1), Some(b'#') | Some(b'"'))
                && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) =>
            {
                let hashes = b[i + 1..].iter().take_while(|c| **c == b'#').count();
                if b.get(i + 1 + hashes) == Some(&b'"') {
                    let end = format!("\"{}", "#".repeat(hashes));
                    i = text[i + 2 + hashes..].find(&end).map_or(b.len(), |e| i + 2 + hashes + e + end.len() - 1);
                }
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            // A character literal ('{', '\'', '\n'), not a lifetime.
            b'\'' if b.get(i + 2) == Some(&b'\'') => i += 2,
            b'\'' if b.get(i + 1) == Some(&b'\\') => {
                i += 2;
                while i < b.len() && b[i] != b'\'' {
                    i += 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// The balanced-brace bodies of every `Type {` literal in `text`.
fn literals<'a>(text: &'a str, ty: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let needle = format!("{ty} {{");
    let mut at = 0;
    while let Some(i) = text[at..].find(&needle) {
        let start = at + i;
        at = start + needle.len();
        let before = text[..start].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(end) = closing(text, at - 1) {
            out.push(&text[at..end]);
        }
    }
    out
}

fn camel(snake: &str) -> String {
    snake.split('_').filter(|w| !w.is_empty()).map(|w| w[..1].to_uppercase() + &w[1..]).collect()
}

/// Whether `body` sets `field` of a message named `ty`.
fn sets(body: &str, ty: &str, field: &FieldDescriptor) -> bool {
    let name = field.name();
    if let Some(oneof) = field.containing_oneof().filter(|o| !o.name().starts_with('_')) {
        if body.contains(&format!("{}::{}(", camel(oneof.name()), camel(name))) {
            return true;
        }
    }
    let named = |lit: &str| {
        lit.match_indices(name).any(|(i, _)| {
            let before = lit[..i].chars().last();
            let after = lit[i + name.len()..].trim_start();
            before.is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == '.'))
                && (after.starts_with(':') && !after.starts_with("::") || after.starts_with(',') || after.is_empty())
        })
    };
    literals(body, ty).into_iter().any(named)
        || body.contains(&format!(".{name} ="))
        || body.contains(&format!(".{name}.insert("))
        || body.contains(&format!(".{name}.push("))
}

struct Ledger {
    /// `Message.field` → (tests named, or None for refused; line number).
    entries: BTreeMap<String, (Option<Vec<String>>, usize)>,
}

fn ledger() -> Ledger {
    let text = std::fs::read_to_string("tests/fixtures/field-ledger.txt").unwrap();
    let mut entries = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let (what, why) = rest.trim().split_once(char::is_whitespace).unwrap_or((rest.trim(), ""));
        let (key, why) = (key.to_string(), why.trim());
        assert!(!why.is_empty(), "field-ledger.txt:{}: say why or what the test sees: {line}", n + 1);
        let tests = match what {
            "refused" => None,
            // Set by Herald; what a request gives is replaced by Herald's value.
            "output" => Some(Vec::new()),
            _ => Some(what.split(',').map(str::to_string).collect()),
        };
        assert!(entries.insert(key.clone(), (tests, n + 1)).is_none(), "field-ledger.txt:{}: {key} twice", n + 1);
    }
    Ledger { entries }
}

#[test]
fn every_request_field_has_a_test_or_is_refused() {
    let pool = pool();
    let fields = request_fields(&pool);
    assert!(fields.len() > 500, "{} fields", fields.len());
    let functions = test_functions();
    // Pinpoint's JSON, as the REST fixtures, the CLI files and the JSON literals of the tests
    // write it.
    let mut fixtures: Vec<String> = std::fs::read_dir("tests/fixtures/pinpoint")
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
        .collect();
    fixtures.extend(std::fs::read_dir("tests/fixtures").unwrap().filter_map(|e| {
        let p = e.unwrap().path();
        p.extension().is_some_and(|x| x == "json").then(|| std::fs::read_to_string(p).unwrap())
    }));
    fixtures.extend(functions.iter().map(|(_, body)| body.clone()));
    let ledger = ledger();
    let mut missing = Vec::new();
    for (key, r) in &fields {
        let ty = r.message.name().to_string();
        // A test that sets it and asserts, or calls a helper that sets it.
        let asserts = |body: &str| body.contains("assert");
        let by_test = functions.iter().filter(|(_, body)| sets(body, &ty, &r.field)).any(|(name, body)| {
            let short = name.rsplit("::").next().unwrap_or(name);
            asserts(body) || functions.iter().any(|(_, caller)| asserts(caller) && caller.contains(&format!("{short}(")))
        });
        let member = camel(r.field.name());
        let by_fixture = fixtures
            .iter()
            .any(|f| f.contains(&format!("'{member}':")) || f.contains(&format!("\"{member}\":")) || f.contains(&format!("{member}=")));
        match ledger.entries.get(key) {
            Some((Some(tests), line)) => {
                for t in tests {
                    let body = functions.iter().find(|(n, _)| n == t).map(|(_, b)| b);
                    let body = body.unwrap_or_else(|| panic!("field-ledger.txt:{line}: no test function {t}"));
                    assert!(
                        body.contains(r.field.name()) || body.contains(&member),
                        "field-ledger.txt:{line}: {t} does not mention {}",
                        r.field.name()
                    );
                }
            }
            Some((None, _)) => {}
            None if by_test || by_fixture => {}
            None => missing.push(key.clone()),
        }
    }
    let stale: Vec<&String> = ledger.entries.keys().filter(|k| !fields.contains_key(*k)).collect();
    assert!(stale.is_empty(), "field-ledger.txt names fields no request has: {stale:?}");
    assert!(
        missing.is_empty(),
        "{} request fields have no test that sets them and are not refused (add a test, or a line to tests/fixtures/field-ledger.txt):\n{}",
        missing.len(),
        missing.join("\n")
    );
}

/// A value that is not the field's default.
fn non_default(f: &FieldDescriptor) -> Value {
    let one = match f.kind() {
        Kind::String => Value::String("x".into()),
        Kind::Bytes => Value::Bytes(vec![1u8].into()),
        Kind::Bool => Value::Bool(true),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(1),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(1),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(1),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(1),
        Kind::Float => Value::F32(1.0),
        Kind::Double => Value::F64(1.0),
        Kind::Enum(e) => Value::EnumNumber(e.values().map(|v| v.number()).find(|n| *n != 0).unwrap_or(0)),
        Kind::Message(m) if m.is_map_entry() => {
            let key = m.map_entry_key_field();
            let value = non_default(&m.map_entry_value_field());
            let k = match key.kind() {
                Kind::String => prost_reflect::MapKey::String("x".into()),
                _ => prost_reflect::MapKey::I32(1),
            };
            return Value::Map([(k, value)].into());
        }
        Kind::Message(m) => Value::Message(DynamicMessage::new(m)),
    };
    if f.is_list() {
        Value::List(vec![one])
    } else {
        one
    }
}

/// `msg` with `path` then `field` set, every message on the way present (a map's entry, a
/// list's first element).
fn set_along(msg: &mut DynamicMessage, path: &[FieldDescriptor], field: &FieldDescriptor) {
    let Some((first, rest)) = path.split_first() else {
        msg.set_field(field, non_default(field));
        return;
    };
    let mut child = match first.kind() {
        Kind::Message(m) if m.is_map_entry() => match m.map_entry_value_field().kind() {
            Kind::Message(v) => DynamicMessage::new(v),
            _ => unreachable!("paths go through messages"),
        },
        Kind::Message(m) => DynamicMessage::new(m),
        _ => unreachable!("paths go through messages"),
    };
    set_along(&mut child, rest, field);
    let value = if first.is_map() {
        Value::Map([(prost_reflect::MapKey::String("x".into()), Value::Message(child))].into())
    } else if first.is_list() {
        Value::List(vec![Value::Message(child)])
    } else {
        Value::Message(child)
    };
    msg.set_field(first, value);
}

/// The fields a status's BadRequest details name.
fn violations(s: &tonic::Status) -> Vec<String> {
    tonic_types::StatusExt::get_details_bad_request(s)
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

async fn refused_fields_are_refused(backend: Backend) {
    let pool = pool();
    let fields = request_fields(&pool);
    let d = Daemon::start(backend);
    let app = d.create_app("refusals").await.app_id;
    let mut wrong = Vec::new();
    let mut checked = 0;
    for (key, (tests, line)) in ledger().entries {
        if tests.is_some() {
            continue;
        }
        let Some(r) = fields.get(&key) else { continue };
        let mut req = DynamicMessage::new(r.method.input());
        if let Some(a) = r.method.input().get_field_by_name("app_id") {
            req.set_field(&a, Value::String(app.clone()));
        }
        set_along(&mut req, &r.path, &r.field);
        let path = format!("/{}/{}", r.method.parent_service().full_name(), r.method.name());
        let answer = common::raw::call(
            d.channel().await,
            d.req(()),
            &path,
            r.method.is_client_streaming(),
            r.method.is_server_streaming(),
            req.encode_to_vec(),
        )
        .await;
        checked += 1;
        match answer {
            Err(s) if s.code() == Code::InvalidArgument && violations(&s).iter().any(|v| v.contains(r.field.name())) => {}
            Err(s) => wrong.push(format!("field-ledger.txt:{line}: {key} via {path}: {:?} {} {:?}", s.code(), s.message(), violations(&s))),
            Ok(()) => wrong.push(format!("field-ledger.txt:{line}: {key} via {path}: accepted")),
        }
    }
    assert!(checked > 0, "no refused field was tried");
    assert!(wrong.is_empty(), "refused fields that the daemon does not refuse:\n{}", wrong.join("\n"));
}

on_both_backends!(refused_fields_are_refused);
