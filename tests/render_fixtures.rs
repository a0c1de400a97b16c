//! Herald's renderer against handlebars.js: every case in tests/fixtures/render-cases.json was
//! rendered by handlebars.js 4.x with Pinpoint's helpers written in JavaScript from Pinpoint's
//! documentation (scripts/render-fixtures); Herald must produce the same bytes, or fail where
//! it failed.

use herald::render::{context, Renderer};
use serde_json::Value;

#[test]
fn renders_as_handlebars_js_does() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/render-cases.json")).expect("fixtures");
    let fixtures: Value = serde_json::from_str(&text).unwrap();
    let cases = fixtures["cases"].as_array().expect("cases");
    assert!(cases.len() >= 80, "the fixture file lost its cases");
    let renderer = Renderer::new();
    let mut mismatches = Vec::new();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let template = case["template"].as_str().unwrap();
        let mut ctx = case["context"].as_object().cloned().unwrap_or_default();
        if let Some(defaults) = case["defaults"].as_object() {
            for (path, value) in defaults {
                context::apply_default(&mut ctx, &context::path_segments(path), value.as_str().unwrap());
            }
        }
        let result = renderer
            .compile(template)
            .map_err(|e| e.to_string())
            .and_then(|part| renderer.render(&part, &Value::Object(ctx)).map_err(|e| e.message));
        match (case.get("output").and_then(Value::as_str), result) {
            (Some(want), Ok(got)) if want == got => {}
            (None, Err(_)) => {}
            (want, got) => mismatches.push(format!(
                "{name}: {template}\n  handlebars.js: {:?}\n  herald:        {got:?}",
                want.map_or_else(|| format!("error ({})", case["error"]), str::to_string)
            )),
        }
    }
    assert!(mismatches.is_empty(), "{} of {} cases differ:\n{}", mismatches.len(), cases.len(), mismatches.join("\n"));
}
