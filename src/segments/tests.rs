//! The evaluator by tables: tests/fixtures/segments.json's endpoints and definitions, matched
//! in memory (the daemon-level test runs the same fixture through both stores).

use std::collections::{HashMap, HashSet};

use super::json::definition;
use super::rule::{self, parse_instant, Rule};
use crate::domain::import::json_line;
use crate::proto::v1::{Endpoint, Segment, SegmentType};

const FIXTURE: &str = include_str!("../../tests/fixtures/segments.json");

fn fixture() -> (Vec<Endpoint>, serde_json::Value) {
    let v: serde_json::Value = serde_json::from_str(FIXTURE).unwrap();
    let now = crate::domain::timestamp(chrono::Utc::now());
    let endpoints = v["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let mut ep = json_line(&e.to_string()).unwrap();
            if ep.effective_date.is_empty() {
                ep.effective_date = now.clone();
            }
            ep
        })
        .collect();
    (endpoints, v)
}

#[test]
fn every_fixture_case_matches_its_members() {
    let (endpoints, v) = fixture();
    let mut segments: HashMap<String, Segment> = HashMap::new();
    let mut imported: HashMap<String, HashSet<String>> = HashMap::new();
    let mut checked = 0;
    for case in v["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap().to_string();
        let expected: Vec<&str> = case["members"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
        let segment = if case["import_csv"].is_string() {
            imported.insert(rule::member_set(&name, 1), expected.iter().map(|s| s.to_string()).collect());
            Segment { id: name.clone(), version: 1, segment_type: SegmentType::Import as i32, ..Default::default() }
        } else {
            // References name the case directly here.
            let text = case["segment"].to_string().replace("\"@", "\"");
            let def = definition(&text).unwrap();
            let violations = super::validate::definition(def.dimensions.as_ref(), def.segment_groups.as_ref());
            assert!(violations.is_empty(), "{name}: {violations:?}");
            Segment { id: name.clone(), version: 1, dimensions: def.dimensions, segment_groups: def.segment_groups, ..Default::default() }
        };
        let mut sources = HashMap::new();
        for (id, s) in &segments {
            sources.insert((id.clone(), 0), s.clone());
            sources.insert((id.clone(), 1), s.clone());
        }
        let rule: Rule = rule::compile(&segment, &sources).unwrap();
        let now = chrono::Utc::now();
        let got: Vec<&str> = endpoints.iter().filter(|e| rule.matches(e, now, &imported)).map(|e| e.id.as_str()).collect();
        assert_eq!(got, expected, "case {name}");
        segments.insert(name, segment);
        checked += 1;
    }
    assert_eq!(checked, 42);
}

#[test]
fn instants_parse_in_the_iso_8601_shapes_pinpoint_accepts() {
    let t = |s: &str| parse_instant(s).map(|d| d.to_rfc3339());
    assert_eq!(t("2026-01-15T10:00:00Z").unwrap(), "2026-01-15T10:00:00+00:00");
    assert_eq!(t("2026-01-15T12:00:00+02:00").unwrap(), "2026-01-15T10:00:00+00:00");
    assert_eq!(t("2026-01-15T10:00:00.250Z").unwrap(), "2026-01-15T10:00:00.250+00:00");
    assert_eq!(t("2026-01-15T10:00:00").unwrap(), "2026-01-15T10:00:00+00:00");
    assert_eq!(t("2026-01-15").unwrap(), "2026-01-15T00:00:00+00:00");
    assert!(t("yesterday").is_none());
    assert!(t("2026-13-01").is_none());
}

#[test]
fn narrow_scans_and_member_sets() {
    let imported = Segment { id: "imp".into(), version: 3, segment_type: SegmentType::Import as i32, ..Default::default() };
    let rule = rule::compile(&imported, &HashMap::new()).unwrap();
    assert_eq!(rule.narrowest_set(), Some("imp:3"));
    assert_eq!(rule.member_sets(), vec!["imp:3".to_string()]);
    let text = r#"{"SegmentGroups": {"Include": "ANY", "Groups": [{"SourceSegments": [{"Id": "imp"}]}, {"Dimensions": [{}]}]}}"#;
    let def = definition(text).unwrap();
    let any = Segment { id: "x".into(), version: 1, segment_groups: def.segment_groups, ..Default::default() };
    let sources = HashMap::from([(("imp".to_string(), 0), imported)]);
    let rule = rule::compile(&any, &sources).unwrap();
    assert_eq!(rule.narrowest_set(), None, "ANY over groups must walk every endpoint");
    assert_eq!(rule.member_sets(), vec!["imp:3".to_string()]);
}
