//! One conformance suite, run against both store backends: the embedded redb file, a real
//! `redis-server` started for each test, and a three-master Redis Cluster started for each
//! test (the Redis backend in cluster mode).

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use herald::proto::v1::{App, ChannelType, Endpoint, EndpointStatus, EndpointUser};
use herald::store::{embedded::EmbeddedStore, redis::RedisStore, EndpointOp, Store, StoreError};

/// A backend under test and what keeps it alive.
struct Harness {
    store: Arc<dyn Store>,
    /// A second store on the same state (Redis: another connection set, as another daemon
    /// would have; embedded: the same handle).
    other: Arc<dyn Store>,
    redis: Option<common::RedisServer>,
    cluster: Option<common::RedisCluster>,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// The Redis backend, on one server or a cluster.
    fn on_redis(&self) -> bool {
        self.redis.is_some() || self.cluster.is_some()
    }

    /// The Redis keys matching `pattern` (every node's, on a cluster); `None` when embedded.
    fn redis_keys(&self, pattern: &str) -> Option<Vec<String>> {
        match (&self.redis, &self.cluster) {
            (Some(r), _) => Some(r.cli(&["--scan", "--pattern", pattern])),
            (_, Some(c)) => Some(c.scan(pattern)),
            _ => None,
        }
    }
}

async fn embedded() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    Harness { other: store.clone(), store, redis: None, cluster: None, _dir: dir }
}

async fn redis() -> Harness {
    let server = common::RedisServer::start();
    let store: Arc<dyn Store> = Arc::new(RedisStore::connect(&server.url(), 4).await.unwrap());
    let other: Arc<dyn Store> = Arc::new(RedisStore::connect(&server.url(), 4).await.unwrap());
    Harness { store, other, redis: Some(server), cluster: None, _dir: tempfile::tempdir().unwrap() }
}

async fn cluster() -> Harness {
    let cluster = common::RedisCluster::start();
    let store: Arc<dyn Store> = Arc::new(RedisStore::connect_cluster(&cluster.urls()).await.unwrap());
    let other: Arc<dyn Store> = Arc::new(RedisStore::connect_cluster(&cluster.urls()[1..]).await.unwrap());
    Harness { store, other, redis: None, cluster: Some(cluster), _dir: tempfile::tempdir().unwrap() }
}

fn app(id: &str) -> App {
    App { app_id: id.into(), name: format!("app {id}"), creation_date: "2026-01-01T00:00:00.000Z".into(), ..Default::default() }
}

fn ep(id: &str, channel: ChannelType, address: &str, user: Option<&str>) -> Endpoint {
    Endpoint {
        id: id.into(),
        channel_type: channel as i32,
        address: address.into(),
        user: user.map(|u| EndpointUser { user_id: u.into(), ..Default::default() }),
        ..Default::default()
    }
}

fn upsert(writes: Vec<Endpoint>, all_or_nothing: bool) -> EndpointOp {
    upsert_at(writes, all_or_nothing, "2026-01-01T00:00:00.000Z")
}

fn upsert_at(writes: Vec<Endpoint>, all_or_nothing: bool, now: &str) -> EndpointOp {
    EndpointOp::Upsert { writes, all_or_nothing, now: now.into(), request_id: "req".into() }
}

async fn status(s: &dyn Store, app: &str, id: &str) -> EndpointStatus {
    let e = s.get_endpoint(app, id).await.unwrap().unwrap_or_else(|| panic!("{id} missing"));
    EndpointStatus::try_from(e.endpoint_status).unwrap()
}

async fn apps_crud_and_pagination(h: Harness) {
    let s = h.store.as_ref();
    for id in ["a3", "a0", "a4", "a1", "a2"] {
        s.create_app(&app(id)).await.unwrap();
    }
    assert!(matches!(s.create_app(&app("a1")).await, Err(StoreError::AppExists(_))));
    let page: Vec<_> = s.list_apps(None, 2).await.unwrap().into_iter().map(|a| a.app_id).collect();
    assert_eq!(page, ["a0", "a1"]);
    let page: Vec<_> = s.list_apps(Some("a1"), 2).await.unwrap().into_iter().map(|a| a.app_id).collect();
    assert_eq!(page, ["a2", "a3"]);
    let page: Vec<_> = s.list_apps(Some("a3"), 10).await.unwrap().into_iter().map(|a| a.app_id).collect();
    assert_eq!(page, ["a4"]);

    let mut changed = s.get_app("a2").await.unwrap().unwrap();
    changed.name = "renamed".into();
    s.put_app(&changed).await.unwrap();
    assert_eq!(s.get_app("a2").await.unwrap().unwrap().name, "renamed");
    assert!(matches!(s.put_app(&app("zz")).await, Err(StoreError::AppNotFound(_))));

    assert_eq!(s.delete_app("a2").await.unwrap().unwrap().name, "renamed");
    assert!(s.delete_app("a2").await.unwrap().is_none());
    assert!(s.get_app("a2").await.unwrap().is_none());
    assert_eq!(s.list_apps(None, 10).await.unwrap().len(), 4);
}

async fn upserts_merge_into_stored_endpoints(h: Harness) {
    let s = h.store.as_ref();
    s.create_app(&app("app")).await.unwrap();
    let mut first = ep("e1", ChannelType::Email, "ana@example.com", Some("u1"));
    first.attributes.insert("Plan".into(), herald::proto::v1::AttributeValues { values: vec!["Pro".into()] });
    s.write_endpoints("app", upsert_at(vec![first], true, "2026-01-01T00:00:00.000Z")).await.unwrap();
    let partial = Endpoint { id: "e1".into(), metrics: [("Visits".to_string(), 2.0)].into(), ..Default::default() };
    let plan = s.write_endpoints("app", upsert_at(vec![partial], true, "2026-02-01T00:00:00.000Z")).await.unwrap();
    assert!(plan.rejections.is_empty());
    let e = s.get_endpoint("app", "e1").await.unwrap().unwrap();
    assert_eq!(e.address, "ana@example.com");
    assert_eq!(e.attributes["Plan"].values, ["Pro"]);
    assert_eq!(e.metrics["Visits"], 2.0);
    assert_eq!(e.creation_date, "2026-01-01T00:00:00.000Z");
    assert_eq!(e.effective_date, "2026-02-01T00:00:00.000Z");
    assert_eq!(e.application_id, "app");
    assert_eq!(e.cohort_id, herald::domain::endpoint::cohort_id("e1"));
    assert!(s.get_endpoint("app", "nope").await.unwrap().is_none());
    assert!(matches!(s.get_endpoint("ghost", "e1").await, Err(StoreError::AppNotFound(_))));
    assert!(matches!(
        s.write_endpoints("ghost", upsert(vec![ep("x", ChannelType::Sms, "+14155550100", None)], true)).await,
        Err(StoreError::AppNotFound(_))
    ));
}

async fn same_address_makes_the_older_endpoint_inactive(h: Harness) {
    let s = h.store.as_ref();
    s.create_app(&app("app")).await.unwrap();
    s.write_endpoints("app", upsert(vec![ep("e1", ChannelType::Email, "ana@example.com", None)], true)).await.unwrap();
    s.write_endpoints("app", upsert(vec![ep("e2", ChannelType::Email, "ana@example.com", None)], true)).await.unwrap();
    assert_eq!(status(s, "app", "e1").await, EndpointStatus::Inactive);
    assert_eq!(status(s, "app", "e2").await, EndpointStatus::Active);
    // Moving e2 away frees the address: a new e3 there retires nobody.
    s.write_endpoints("app", upsert(vec![ep("e2", ChannelType::Email, "bob@example.com", None)], true)).await.unwrap();
    s.write_endpoints("app", upsert(vec![ep("e3", ChannelType::Email, "ana@example.com", None)], true)).await.unwrap();
    assert_eq!(status(s, "app", "e2").await, EndpointStatus::Active);
    assert_eq!(status(s, "app", "e3").await, EndpointStatus::Active);
    // Deleting e3 cleans the index too.
    s.write_endpoints("app", EndpointOp::Delete { ids: vec!["e3".into()] }).await.unwrap();
    s.write_endpoints("app", upsert(vec![ep("e4", ChannelType::Email, "ana@example.com", None)], true)).await.unwrap();
    s.write_endpoints("app", upsert(vec![ep("e5", ChannelType::Email, "ana@example.com", None)], true)).await.unwrap();
    assert_eq!(status(s, "app", "e4").await, EndpointStatus::Inactive);
    assert_eq!(status(s, "app", "e5").await, EndpointStatus::Active);
}

async fn users_have_at_most_fifteen_active_endpoints(h: Harness) {
    let s = h.store.as_ref();
    s.create_app(&app("app")).await.unwrap();
    for i in 0..15 {
        let (ch, addr) = if i < 3 { (ChannelType::Gcm, format!("token-{i}")) } else { (ChannelType::Email, format!("u{i}@example.com")) };
        let now = format!("2026-01-01T00:00:{i:02}.000Z");
        let plan = s.write_endpoints("app", upsert_at(vec![ep(&format!("e{i}"), ch, &addr, Some("u"))], true, &now)).await.unwrap();
        assert!(plan.rejections.is_empty());
    }
    let plan = s.write_endpoints("app", upsert(vec![ep("mail16", ChannelType::Email, "x16@example.com", Some("u"))], true)).await.unwrap();
    assert_eq!(plan.rejections.len(), 1);
    assert_eq!(plan.rejections[0].violation.field, "user.user_id");
    assert!(s.get_endpoint("app", "mail16").await.unwrap().is_none(), "a rejected write writes nothing");
    let plan = s
        .write_endpoints("app", upsert_at(vec![ep("push16", ChannelType::Apns, "token-16", Some("u"))], true, "2026-01-02T00:00:00.000Z"))
        .await
        .unwrap();
    assert!(plan.rejections.is_empty());
    assert_eq!(status(s, "app", "e0").await, EndpointStatus::Inactive, "the oldest push endpoint retires");
    assert_eq!(status(s, "app", "e1").await, EndpointStatus::Active);
    let all = s.user_endpoints("app", "u").await.unwrap();
    assert_eq!(all.len(), 16);
    assert_eq!(all.iter().filter(|e| e.endpoint_status == EndpointStatus::Active as i32).count(), 15);
    let deleted = s.write_endpoints("app", EndpointOp::DeleteUser { user_id: "u".into() }).await.unwrap();
    assert_eq!(deleted.deleted.len(), 16);
    assert!(s.user_endpoints("app", "u").await.unwrap().is_empty());
    assert!(s.get_endpoint("app", "e5").await.unwrap().is_none());
}

async fn rejected_batches_write_nothing(h: Harness) {
    let s = h.store.as_ref();
    s.create_app(&app("app")).await.unwrap();
    let batch = vec![
        ep("good", ChannelType::Sms, "+14155550100", Some("u")),
        Endpoint { id: "bad".into(), address: "x".into(), ..Default::default() },
    ];
    let plan = s.write_endpoints("app", upsert(batch.clone(), true)).await.unwrap();
    assert_eq!(plan.rejections.len(), 1);
    assert_eq!(plan.rejections[0].index, 1);
    assert!(s.get_endpoint("app", "good").await.unwrap().is_none());
    assert!(s.user_endpoints("app", "u").await.unwrap().is_empty());
    let plan = s.write_endpoints("app", upsert(batch, false)).await.unwrap();
    assert_eq!(plan.written.len(), 1);
    assert!(s.get_endpoint("app", "good").await.unwrap().is_some());
    assert!(s.get_endpoint("app", "bad").await.unwrap().is_none());
}

async fn deleting_an_app_removes_everything_under_it(h: Harness) {
    let s = h.store.as_ref();
    s.create_app(&app("gone")).await.unwrap();
    s.create_app(&app("kept")).await.unwrap();
    for a in ["gone", "kept"] {
        let writes =
            (0..50).map(|i| ep(&format!("e{i}"), ChannelType::Email, &format!("u{i}@example.com"), Some(&format!("u{}", i % 5)))).collect();
        s.write_endpoints(a, upsert(writes, true)).await.unwrap();
    }
    s.delete_app("gone").await.unwrap().unwrap();
    assert!(matches!(s.get_endpoint("gone", "e1").await, Err(StoreError::AppNotFound(_))));
    assert!(matches!(s.user_endpoints("gone", "u1").await, Err(StoreError::AppNotFound(_))));
    s.create_app(&app("gone")).await.unwrap();
    assert!(s.get_endpoint("gone", "e1").await.unwrap().is_none());
    assert!(s.user_endpoints("gone", "u1").await.unwrap().is_empty());
    assert!(s.scan_endpoints("gone", None, 100).await.unwrap().0.is_empty());
    // A fresh endpoint on a reused address retires nobody: the old index is gone too.
    s.write_endpoints("gone", upsert(vec![ep("n1", ChannelType::Email, "u1@example.com", None)], true)).await.unwrap();
    assert_eq!(status(s, "gone", "n1").await, EndpointStatus::Active);
    assert_eq!(s.user_endpoints("kept", "u1").await.unwrap().len(), 10);
    if let Some(keys) = h.redis_keys("herald:{gone}:*") {
        // The new endpoint's record and address in one bucket each, the tables' levels and
        // granules: nothing of the deleted app's.
        let kinds: HashSet<String> = keys.iter().map(|k| k.trim_end_matches(|c: char| c.is_ascii_digit()).to_string()).collect();
        let expected: HashSet<String> =
            ["herald:{gone}:app", "herald:{gone}:epb:", "herald:{gone}:adb:", "herald:{gone}:epix", "herald:{gone}:epgr"]
                .map(String::from)
                .into();
        assert_eq!(kinds, expected);
        assert_eq!(keys.len(), 5, "{keys:?}");
    }
}

/// One record of every kind under `a`, through the store's own calls.
async fn fill_app(s: &dyn Store, a: &str) {
    use herald::proto::v1::{DeliveryStatus, Event, MessageOutcome, MessageSource, Suppression};
    s.write_endpoints(a, upsert(vec![ep("e1", ChannelType::Email, "x@example.com", Some("u1"))], true)).await.unwrap();
    s.write_template(a, &template("t1", "hi"), herald::store::TemplateWrite::Create).await.unwrap();
    s.set_template_use(a, "t1", "campaign c1", true).await.unwrap();
    s.put_suppressions(a, &[Suppression { address: "x@example.com".into(), ..Default::default() }]).await.unwrap();
    assert_eq!(s.take_quota(a, "EMAIL", 1, None, Some(1), 100).await.unwrap(), 1);
    let outcome = MessageOutcome {
        message_id: herald::domain::new_message_id(),
        app_id: a.into(),
        source: MessageSource::Campaign as i32,
        request_id: "c1:000000".into(),
        endpoint_id: "e1".into(),
        channel: "EMAIL".into(),
        delivery_status: DeliveryStatus::Successful as i32,
        updated_date: "2026-11-22T01:00:00.000Z".into(),
        ..Default::default()
    };
    let event = Event { event_type: "_email.send".into(), message_id: outcome.message_id.clone(), app_id: a.into(), ..Default::default() };
    s.record_outcomes(a, &[outcome], &[event], 3_600).await.unwrap();
    s.write_record(a, "segment", "s1", 0, 1, b"segment").await.unwrap();
    s.set_record_use(a, "segment", "s1", "campaign c1", true).await.unwrap();
    s.put_blob(a, "import-job", "j1", b"job").await.unwrap();
    s.add_members(a, "set1", &["e1".to_string()]).await.unwrap();
    assert_eq!(s.take_endpoint_caps(a, "c1", &["e1".to_string()], None, Some(1), 100).await.unwrap(), vec![true]);
    assert!(s.try_lease(a, "run:1", "d1", 60_000).await.unwrap());
    s.put_channel(a, "email", b"sealed settings").await.unwrap();
    assert_eq!(s.claim_idempotency(a, "k1", 3_600).await.unwrap(), herald::store::Idempotency::Claimed);
    s.complete_idempotency(a, "k1", b"response", 3_600).await.unwrap();
    let rule = herald::store::Reentry { cap: 1, interval_secs: 0 };
    assert_eq!(s.journey_enter(a, "j1", &["e1".to_string()], "0a", 100, rule, 100).await.unwrap(), [herald::store::Entry::Entered(1)]);
}

async fn every_kind_of_record_is_gone_after_delete_app(h: Harness) {
    use herald::store::{Idempotency, OutcomeIndex};
    let s = h.store.as_ref();
    for a in ["gone", "kept"] {
        s.create_app(&app(a)).await.unwrap();
        fill_app(s, a).await;
    }
    s.delete_app("gone").await.unwrap().unwrap();
    s.create_app(&app("gone")).await.unwrap();
    for (a, present) in [("gone", false), ("kept", true)] {
        let what = |kind: &str| format!("{kind} of {a}");
        assert_eq!(s.get_endpoint(a, "e1").await.unwrap().is_some(), present, "{}", what("endpoint"));
        assert_eq!(s.user_endpoints(a, "u1").await.unwrap().len(), usize::from(present), "{}", what("user"));
        assert_eq!(
            s.endpoint_by_address(a, ChannelType::Email as i32, "x@example.com").await.unwrap().is_some(),
            present,
            "{}",
            what("address index")
        );
        assert_eq!(s.get_template(a, "t1", None).await.unwrap().is_some(), present, "{}", what("template"));
        assert_eq!(s.get_suppressions(a, &["x@example.com".to_string()]).await.unwrap()[0].is_some(), present, "{}", what("suppression"));
        // The quota counted before is gone with the app: a fresh app gets its total again.
        assert_eq!(s.take_quota(a, "EMAIL", 1, None, Some(1), 100).await.unwrap(), u64::from(!present), "{}", what("quota"));
        assert_eq!(
            s.list_outcomes(a, &OutcomeIndex::Request("c1:000000".into()), 0, 10).await.unwrap().len(),
            usize::from(present),
            "{}",
            what("outcomes by request")
        );
        assert_eq!(
            s.list_outcomes(a, &OutcomeIndex::Endpoint("e1".into()), 0, 10).await.unwrap().len(),
            usize::from(present),
            "{}",
            what("outcomes by endpoint")
        );
        assert_eq!(
            s.run_outcomes(a, "c1:000000", &["e1".to_string()], Some(0)).await.unwrap()[0].is_some(),
            present,
            "{}",
            what("run index")
        );
        assert_eq!(!s.outcome_counts(a, "2026-11-22").await.unwrap().is_empty(), present, "{}", what("counts"));
        assert_eq!(s.read_events(a, None, 10).await.unwrap().len(), usize::from(present), "{}", what("events"));
        assert_eq!(s.get_record(a, "segment", "s1", None).await.unwrap().is_some(), present, "{}", what("record"));
        assert_eq!(s.get_blob(a, "import-job", "j1").await.unwrap().is_some(), present, "{}", what("blob"));
        assert_eq!(s.count_members(a, "set1").await.unwrap(), u64::from(present), "{}", what("member set"));
        assert_eq!(
            s.take_endpoint_caps(a, "c1", &["e1".to_string()], None, Some(1), 100).await.unwrap(),
            vec![!present],
            "{}",
            what("caps")
        );
        assert_eq!(s.try_lease(a, "run:1", "d2", 60_000).await.unwrap(), !present, "{}", what("lease"));
        assert_eq!(s.get_channel(a, "email").await.unwrap().is_some(), present, "{}", what("channel settings"));
        let idem = s.claim_idempotency(a, "k1", 3_600).await.unwrap();
        assert_eq!(matches!(idem, Idempotency::Done(_)), present, "{}", what("idempotency key"));
        assert_eq!(s.journey_counters(a, "j1").await.unwrap().0, u64::from(present), "{}", what("journey participants"));
    }
    // A record in use by a gone campaign does not block deleting it in the new app.
    s.write_record("gone", "segment", "s1", 0, 1, b"segment").await.unwrap();
    s.delete_record("gone", "segment", "s1").await.unwrap();
    s.write_template("gone", &template("t1", "hi"), herald::store::TemplateWrite::Create).await.unwrap();
    s.delete_template("gone", "t1", None).await.unwrap();
}

async fn runs_index_their_members_outcomes(h: Harness) {
    use herald::proto::v1::{DeliveryStatus, MessageOutcome, MessageSource};
    let s = h.store.as_ref();
    s.create_app(&app("app")).await.unwrap();
    let outcome = |endpoint: &str, run: &str, source: MessageSource, status: DeliveryStatus| MessageOutcome {
        message_id: herald::domain::new_message_id(),
        app_id: "app".into(),
        source: source as i32,
        request_id: run.into(),
        endpoint_id: endpoint.into(),
        channel: "EMAIL".into(),
        delivery_status: status as i32,
        updated_date: "2026-11-22T01:00:00.000Z".into(),
        ..Default::default()
    };
    let batch = vec![
        outcome("a", "r1", MessageSource::Campaign, DeliveryStatus::Successful),
        outcome("b", "r1", MessageSource::Campaign, DeliveryStatus::PermanentFailure),
        outcome("c", "r2", MessageSource::Campaign, DeliveryStatus::Successful),
        // A transactional send is not part of any run.
        outcome("d", "r1", MessageSource::Transactional, DeliveryStatus::Successful),
    ];
    s.record_outcomes("app", &batch, &[], 3_600).await.unwrap();
    // A campaign run asks with its start: its messages are no older.
    let since = Some(chrono::Utc::now().timestamp() - 300);
    let ids: Vec<String> = ["a", "b", "c", "d", "e"].map(String::from).into();
    let got = s.run_outcomes("app", "r1", &ids, since).await.unwrap();
    assert_eq!(got, vec![Some(DeliveryStatus::Successful as i32), Some(DeliveryStatus::PermanentFailure as i32), None, None, None]);
    assert_eq!(s.run_outcomes("app", "r2", &ids, since).await.unwrap()[2], Some(DeliveryStatus::Successful as i32));
    assert!(s.run_outcomes("app", "r3", &[], since).await.unwrap().is_empty());
    // An outcome recorded again (its status changed) reads back with its last status.
    let mut bounced = batch[0].clone();
    bounced.delivery_status = DeliveryStatus::PermanentFailure as i32;
    s.record_outcomes("app", &[bounced], &[], 3_600).await.unwrap();
    assert_eq!(s.run_outcomes("app", "r1", &ids, since).await.unwrap()[0], Some(DeliveryStatus::PermanentFailure as i32));
    // Messages sent before the run started are not the run's.
    let later = Some(chrono::Utc::now().timestamp() + 3_600);
    if h.redis.is_some() || h.cluster.is_some() {
        assert_eq!(s.run_outcomes("app", "r1", &ids, later).await.unwrap(), vec![None; 5]);
    }
    // A journey activity's entry asks without a start.
    let journey = vec![
        outcome("a", "j1:act:1", MessageSource::Journey, DeliveryStatus::Successful),
        outcome("e", "j1:act:1", MessageSource::Journey, DeliveryStatus::Throttled),
    ];
    s.record_outcomes("app", &journey, &[], 3_600).await.unwrap();
    let got = s.run_outcomes("app", "j1:act:1", &ids, None).await.unwrap();
    assert_eq!(got, vec![Some(DeliveryStatus::Successful as i32), None, None, None, Some(DeliveryStatus::Throttled as i32)]);
}

async fn scans_visit_every_endpoint_once(h: Harness) {
    h.store.create_app(&app("app")).await.unwrap();
    scans_visit_every_endpoint_once_while_the_app_grows(h).await;
}

async fn scans_visit_every_endpoint_once_while_the_app_grows(h: Harness) {
    let s = h.store.as_ref();
    for chunk in 0..5 {
        let writes = (0..500).map(|i| ep(&format!("e{chunk}-{i}"), ChannelType::Gcm, &format!("t{chunk}-{i}"), None)).collect();
        s.write_endpoints("app", upsert(writes, true)).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut added = 0;
    loop {
        let (page, next) = s.scan_endpoints("app", cursor, 300).await.unwrap();
        assert!(page.len() <= 300);
        seen.extend(page.into_iter().map(|e| e.id));
        // Writers go on between pages: the app grows to six times its size (on Redis its
        // buckets split many times over), and the scan still returns each endpoint once.
        if added < 25 {
            let writes = (0..500).map(|i| ep(&format!("n{added}-{i}"), ChannelType::Gcm, &format!("tn{added}-{i}"), None)).collect();
            s.write_endpoints("app", upsert(writes, true)).await.unwrap();
            added += 1;
        }
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    // Every endpoint there from the start exactly once, and none twice (the pages of a
    // segment scan never repeat one).
    let distinct: HashSet<&String> = seen.iter().collect();
    assert_eq!(distinct.len(), seen.len(), "no endpoint twice");
    let original = seen.iter().filter(|id| id.starts_with('e')).count();
    assert_eq!(original, 2500);
}

async fn split_scans_read_every_endpoint_once(h: Harness) {
    let s = h.store.as_ref();
    s_create(&h).await;
    for chunk in 0..12 {
        let writes = (0..1_000)
            .map(|i| ep(&format!("p{chunk:02}-{i:04}"), ChannelType::Email, &format!("p{chunk}-{i}@example.com"), None))
            .collect();
        s.write_endpoints("app", upsert(writes, true)).await.unwrap();
    }
    let ids: Vec<String> = (0..12_000).filter(|i| i % 4 == 0).map(|i| format!("p{:02}-{:04}", i / 1000, i % 1000)).collect();
    s.add_members("app", "quarter", &ids).await.unwrap();
    for (set, expected) in [(None, 12_000), (Some("quarter"), 3_000)] {
        let cuts = s.scan_splits("app", set, 4).await.unwrap();
        if h.on_redis() && set.is_none() {
            assert_eq!(cuts.len(), 3, "four ranges of a large index");
        }
        let mut bounds: Vec<Option<String>> = vec![None];
        bounds.extend(cuts.into_iter().map(Some));
        bounds.push(None);
        let mut seen = Vec::new();
        for w in bounds.windows(2) {
            let mut cursor = None;
            loop {
                let (page, next) = s.scan_encoded("app", set, cursor, (w[0].as_deref(), w[1].as_deref()), 700).await.unwrap();
                for raw in page {
                    seen.push(herald::store::codec::decode_endpoint("app", &raw).unwrap().id);
                }
                match next {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
        }
        let distinct: HashSet<&String> = seen.iter().collect();
        assert_eq!((seen.len(), distinct.len()), (expected, expected), "every endpoint once ({set:?})");
    }
}

async fn endpoint_caps_and_leases(h: Harness) {
    let s = h.store.as_ref();
    s_create(&h).await;
    let ids: Vec<String> = ["a", "b", "a"].map(String::from).to_vec();
    let now = 1_800_000_000;
    // Total 2: a, b, then a again in the same batch; then a is spent.
    assert_eq!(s.take_endpoint_caps("app", "c1", &ids, None, Some(2), now).await.unwrap(), vec![true, true, true]);
    assert_eq!(s.take_endpoint_caps("app", "c1", &ids, None, Some(2), now).await.unwrap(), vec![false, true, false]);
    assert_eq!(s.take_endpoint_caps("app", "c2", &ids[..1], None, Some(2), now).await.unwrap(), vec![true], "scopes are apart");
    // Daily 1: one per rolling 24 hours.
    let one = vec!["d".to_string()];
    assert_eq!(s.take_endpoint_caps("app", "c3", &one, Some((1, 86_400)), None, now).await.unwrap(), vec![true]);
    assert_eq!(s.take_endpoint_caps("app", "c3", &one, Some((1, 86_400)), None, now + 86_000).await.unwrap(), vec![false]);
    assert_eq!(s.take_endpoint_caps("app", "c3", &one, Some((1, 86_400)), None, now + 86_401).await.unwrap(), vec![true]);
    // Concurrent takers never overshoot a total.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = h.store.clone();
            tokio::spawn(async move { store.take_endpoint_caps("app", "c4", &["x".to_string()], None, Some(3), now).await.unwrap()[0] })
        })
        .collect();
    let mut granted = 0;
    for t in tasks {
        granted += usize::from(t.await.unwrap());
    }
    assert_eq!(granted, 3);
    // Leases: one holder; renewals by the holder; free after release or expiry.
    assert!(s.try_lease("app", "run:1", "d1", 60_000).await.unwrap());
    assert!(!s.try_lease("app", "run:1", "d2", 60_000).await.unwrap());
    assert!(s.try_lease("app", "run:1", "d1", 60_000).await.unwrap());
    s.release_lease("app", "run:1", "d2").await.unwrap();
    assert!(!s.try_lease("app", "run:1", "d2", 60_000).await.unwrap(), "only the holder releases");
    s.release_lease("app", "run:1", "d1").await.unwrap();
    assert!(s.try_lease("app", "run:1", "d2", 50).await.unwrap());
    tokio::time::sleep(std::time::Duration::from_millis(120)).await;
    assert!(s.try_lease("app", "run:1", "d1", 60_000).await.unwrap(), "an expired lease is free");
}

async fn records_blobs_and_member_sets(h: Harness) {
    let s = h.store.as_ref();
    s_create(&h).await;
    // Versioned records with compare-and-set on the latest version.
    s.write_record("app", "segment", "b", 0, 1, b"b1").await.unwrap();
    s.write_record("app", "segment", "a", 0, 1, b"a1").await.unwrap();
    assert!(matches!(s.write_record("app", "segment", "a", 0, 1, b"again").await, Err(StoreError::Exists(_))));
    assert!(matches!(s.write_record("app", "segment", "zz", 1, 2, b"x").await, Err(StoreError::NotFound(_))));
    s.write_record("app", "segment", "a", 1, 2, b"a2").await.unwrap();
    assert!(matches!(s.write_record("app", "segment", "a", 1, 2, b"stale").await, Err(StoreError::Contention)));
    s.write_record("app", "segment", "a", 2, 2, b"a2'").await.unwrap();
    assert_eq!(s.get_record("app", "segment", "a", None).await.unwrap().unwrap(), b"a2'");
    assert_eq!(s.get_record("app", "segment", "a", Some(1)).await.unwrap().unwrap(), b"a1");
    assert!(s.get_record("app", "segment", "a", Some(3)).await.unwrap().is_none());
    assert!(s.get_record("app", "campaign", "a", None).await.unwrap().is_none(), "kinds are apart");
    assert_eq!(s.list_records("app", "segment", None, 10).await.unwrap(), vec![b"a2'".to_vec(), b"b1".to_vec()]);
    assert_eq!(s.list_records("app", "segment", Some("a"), 10).await.unwrap(), vec![b"b1".to_vec()]);
    assert_eq!(s.list_record_versions("app", "segment", "a", 1, 10).await.unwrap(), vec![b"a2'".to_vec()]);
    assert!(matches!(s.write_record("nope", "segment", "a", 0, 1, b"x").await, Err(StoreError::AppNotFound(_))));
    // A record in use cannot be deleted.
    s.set_record_use("app", "segment", "a", "campaign:c1", true).await.unwrap();
    assert!(matches!(s.set_record_use("app", "segment", "zz", "campaign:c1", true).await, Err(StoreError::NotFound(_))));
    match s.delete_record("app", "segment", "a").await {
        Err(StoreError::Precondition(m)) => assert!(m.contains("campaign:c1"), "{m}"),
        other => panic!("{other:?}"),
    }
    s.set_record_use("app", "segment", "a", "campaign:c1", false).await.unwrap();
    assert_eq!(s.delete_record("app", "segment", "a").await.unwrap(), Some(2));
    assert_eq!(s.delete_record("app", "segment", "a").await.unwrap(), None);
    assert!(s.get_record("app", "segment", "a", Some(1)).await.unwrap().is_none());
    assert_eq!(s.list_records("app", "segment", None, 10).await.unwrap().len(), 1);
    // Blobs.
    s.put_blob("app", "import-job", "j1", b"running").await.unwrap();
    s.put_blob("app", "import-job", "j1", b"done").await.unwrap();
    assert_eq!(s.get_blob("app", "import-job", "j1").await.unwrap().unwrap(), b"done");
    // Member sets: paged in id order through the endpoints that exist.
    let writes = (0..30).map(|i| ep(&format!("e{i:02}"), ChannelType::Email, &format!("m{i}@example.com"), None)).collect();
    s.write_endpoints("app", upsert(writes, true)).await.unwrap();
    let ids: Vec<String> = (0..30).filter(|i| i % 3 == 0).map(|i| format!("e{i:02}")).chain(["ghost".to_string()]).collect();
    s.add_members("app", "seg:1", &ids).await.unwrap();
    s.add_members("app", "seg:1", &ids[..2]).await.unwrap();
    assert_eq!(s.count_members("app", "seg:1").await.unwrap(), 11);
    let (mut found, mut cursor) = (Vec::new(), None);
    loop {
        let (page, next) = s.scan_members("app", "seg:1", cursor, 4).await.unwrap();
        found.extend(page.into_iter().map(|e| e.id));
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let expected: Vec<String> = (0..30).filter(|i| i % 3 == 0).map(|i| format!("e{i:02}")).collect();
    assert_eq!(found, expected, "members without an endpoint are skipped");
    let probe = vec!["e03".to_string(), "e04".to_string(), "ghost".to_string()];
    assert_eq!(s.members_contain("app", "seg:1", &probe).await.unwrap(), vec![true, false, true]);
    assert_eq!(s.members_contain("app", "seg:2", &probe).await.unwrap(), vec![false, false, false]);
    s.delete_members("app", "seg:1").await.unwrap();
    assert_eq!(s.count_members("app", "seg:1").await.unwrap(), 0);
    // Deleting the app takes everything with it.
    s.write_record("app", "segment", "c", 0, 1, b"c1").await.unwrap();
    s.add_members("app", "seg:9", &ids).await.unwrap();
    s.delete_app("app").await.unwrap();
    s_create(&h).await;
    assert!(s.get_record("app", "segment", "c", None).await.unwrap().is_none());
    assert!(s.get_blob("app", "import-job", "j1").await.unwrap().is_none());
    assert_eq!(s.count_members("app", "seg:9").await.unwrap(), 0);
}

async fn concurrent_writers_never_lose_a_write(h: Harness) {
    s_create(&h).await;
    // Forty writers on two daemons' connections add push endpoints to one user at once: the
    // user list must hold every one of them, and at most 15 may be ACTIVE.
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = if i % 2 == 0 { h.store.clone() } else { h.other.clone() };
        tasks.push(tokio::spawn(async move {
            let now = format!("2026-01-01T00:{:02}:00.000Z", i);
            let plan = store
                .write_endpoints("app", upsert_at(vec![ep(&format!("p{i}"), ChannelType::Gcm, &format!("tok{i}"), Some("u"))], true, &now))
                .await
                .unwrap();
            assert!(plan.rejections.is_empty());
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let all = h.store.user_endpoints("app", "u").await.unwrap();
    assert_eq!(all.len(), 40);
    assert_eq!(all.iter().filter(|e| e.endpoint_status == EndpointStatus::Active as i32).count(), 15);
}

fn template(name: &str, subject: &str) -> herald::proto::v1::Template {
    use herald::proto::v1::{template::Content, EmailTemplate, TemplateType};
    herald::proto::v1::Template {
        name: name.into(),
        template_type: TemplateType::Email as i32,
        description: format!("{name} {subject}"),
        last_modified_date: "2026-01-01T00:00:00.000Z".into(),
        content: Some(Content::Email(EmailTemplate { subject: subject.into(), html_part: "<p>{{Id}}</p>".into(), ..Default::default() })),
        ..Default::default()
    }
}

fn subject(t: &herald::proto::v1::Template) -> String {
    match &t.content {
        Some(herald::proto::v1::template::Content::Email(e)) => e.subject.clone(),
        _ => panic!("not an email template"),
    }
}

async fn templates_are_versioned(h: Harness) {
    use herald::proto::v1::{template::Content, SmsTemplate, TemplateType};
    use herald::store::TemplateWrite::{Create, NewVersion, OverwriteLatest};
    let s = h.store.as_ref();
    s.create_app(&app("app")).await.unwrap();
    assert!(matches!(s.write_template("ghost", &template("t1", "a"), Create).await, Err(StoreError::AppNotFound(_))));
    let v1 = s.write_template("app", &template("t1", "one"), Create).await.unwrap();
    assert_eq!((v1.version, v1.active_version, v1.latest_version, v1.app_id.as_str()), (1, 1, 1, "app"));
    assert!(matches!(s.write_template("app", &template("t1", "x"), Create).await, Err(StoreError::Exists(_))));
    assert!(matches!(s.write_template("app", &template("nope", "x"), NewVersion).await, Err(StoreError::NotFound(_))));
    let v2 = s.write_template("app", &template("t1", "two"), NewVersion).await.unwrap();
    assert_eq!((v2.version, v2.active_version, v2.latest_version), (2, 1, 2));
    assert_eq!(subject(&s.get_template("app", "t1", None).await.unwrap().unwrap()), "one", "sends use the active version");
    s.write_template("app", &template("t1", "two, fixed"), OverwriteLatest).await.unwrap();
    let got = s.get_template("app", "t1", Some(2)).await.unwrap().unwrap();
    assert_eq!((subject(&got), got.active_version, got.latest_version), ("two, fixed".to_string(), 1, 2));
    assert!(s.get_template("app", "t1", Some(3)).await.unwrap().is_none());
    let mut sms = template("t1", "x");
    sms.template_type = TemplateType::Sms as i32;
    sms.content = Some(Content::Sms(SmsTemplate { body: "hi".into() }));
    assert!(matches!(s.write_template("app", &sms, NewVersion).await, Err(StoreError::Precondition(_))));

    let versions: Vec<i32> = s.list_template_versions("app", "t1", 0, 10).await.unwrap().iter().map(|t| t.version).collect();
    assert_eq!(versions, [1, 2]);
    assert_eq!(s.list_template_versions("app", "t1", 1, 10).await.unwrap().len(), 1);
    let active = s.set_active_template_version("app", "t1", None).await.unwrap();
    assert_eq!((active.version, active.active_version), (2, 2));
    assert_eq!(subject(&s.get_template("app", "t1", None).await.unwrap().unwrap()), "two, fixed");
    assert!(matches!(s.set_active_template_version("app", "t1", Some(7)).await, Err(StoreError::NotFound(_))));
    assert!(matches!(s.delete_template("app", "t1", Some(2)).await, Err(StoreError::Precondition(_))));
    assert_eq!(s.delete_template("app", "t1", Some(1)).await.unwrap(), 1);
    assert_eq!(s.write_template("app", &template("t1", "three"), NewVersion).await.unwrap().version, 3, "version numbers are never reused");

    sms.name = "t0".into();
    s.write_template("app", &sms, Create).await.unwrap();
    s.write_template("app", &template("t2", "other"), Create).await.unwrap();
    let names: Vec<String> = s.list_templates("app", None, 10).await.unwrap().into_iter().map(|t| t.name).collect();
    assert_eq!(names, ["t0", "t1", "t2"]);
    let page: Vec<String> = s.list_templates("app", Some("t0"), 1).await.unwrap().into_iter().map(|t| t.name).collect();
    assert_eq!(page, ["t1"]);
    // A template a campaign uses cannot be deleted, whole or a version at a time.
    s.set_template_use("app", "t1", "campaign-7", true).await.unwrap();
    assert!(matches!(s.delete_template("app", "t1", None).await, Err(StoreError::Precondition(m)) if m.contains("campaign-7")));
    assert!(matches!(s.delete_template("app", "t1", Some(2)).await, Err(StoreError::Precondition(_))));
    assert!(matches!(s.set_template_use("app", "nope", "campaign-7", true).await, Err(StoreError::NotFound(_))));
    s.set_template_use("app", "t1", "campaign-7", false).await.unwrap();
    assert_eq!(s.delete_template("app", "t1", None).await.unwrap(), 2);
    assert!(s.get_template("app", "t1", None).await.unwrap().is_none());
    assert_eq!(s.list_templates("app", None, 10).await.unwrap().len(), 2);

    s.delete_app("app").await.unwrap();
    s.create_app(&app("app")).await.unwrap();
    assert!(s.list_templates("app", None, 10).await.unwrap().is_empty());
    assert!(s.get_template("app", "t2", None).await.unwrap().is_none());
}

async fn quotas_never_overshoot(h: Harness) {
    h.store.create_app(&app("app")).await.unwrap();
    // Two daemons' connections take batches concurrently from one daily quota of exactly 100,
    // then from a total quota of 57 on another channel.
    for (channel, daily, total, limit) in [("EMAIL", Some(100), None, 100u64), ("SMS", None, Some(57), 57)] {
        let mut tasks = Vec::new();
        for t in 0..8u64 {
            let store = if t % 2 == 0 { h.store.clone() } else { h.other.clone() };
            tasks.push(tokio::spawn(async move {
                let mut got = 0;
                let mut zeros = 0;
                let mut n = t;
                while zeros < 3 {
                    n = (n * 7 + 3) % 11;
                    let g = store.take_quota("app", channel, 1 + n % 7, daily, total, 1_000).await.unwrap();
                    assert!(g <= 1 + n % 7);
                    got += g;
                    zeros += u32::from(g == 0);
                }
                got
            }));
        }
        let mut granted = 0;
        for t in tasks {
            granted += t.await.unwrap();
        }
        assert_eq!(granted, limit, "{channel}: exactly the quota, never one more");
    }
    // No limit: everything is granted.
    assert_eq!(h.store.take_quota("app", "CUSTOM", 1_000, None, None, 1_000).await.unwrap(), 1_000);
}

async fn daily_quotas_roll_over_24_hours(h: Harness) {
    let s = h.store.as_ref();
    s.create_app(&app("app")).await.unwrap();
    assert_eq!(s.take_quota("app", "EMAIL", 60, Some(100), None, 500).await.unwrap(), 60);
    assert_eq!(s.take_quota("app", "EMAIL", 60, Some(100), None, 510).await.unwrap(), 40);
    assert_eq!(s.take_quota("app", "EMAIL", 10, Some(100), None, 523).await.unwrap(), 0, "hour 500 still counts at hour 523");
    assert_eq!(s.take_quota("app", "EMAIL", 100, Some(100), None, 524).await.unwrap(), 60, "hour 500 left the window");
    assert_eq!(s.take_quota("app", "EMAIL", 100, Some(100), Some(170), 540).await.unwrap(), 10, "the total counts every hour");
    assert_eq!(s.take_quota("app", "SMS", 5, Some(100), None, 540).await.unwrap(), 5, "channels are separate");
    s.delete_app("app").await.unwrap();
    s.create_app(&app("app")).await.unwrap();
    assert_eq!(s.take_quota("app", "EMAIL", 100, Some(100), Some(170), 540).await.unwrap(), 100, "deleting the app resets its quotas");
}

/// A second's messages-per-second tokens are granted up to the limit, whoever asks, and
/// the next second starts again.
async fn rate_windows_grant_up_to_their_limit(h: Harness) {
    let s = h.store.as_ref();
    assert_eq!(s.take_rate("app", "EMAIL", 100, 8, 20).await.unwrap(), 8);
    assert_eq!(s.take_rate("app", "EMAIL", 100, 8, 20).await.unwrap(), 8);
    assert_eq!(s.take_rate("app", "EMAIL", 100, 8, 20).await.unwrap(), 4, "what is left of the second's 20");
    assert_eq!(s.take_rate("app", "EMAIL", 100, 8, 20).await.unwrap(), 0);
    assert_eq!(s.take_rate("app", "SMS", 100, 8, 20).await.unwrap(), 8, "each channel its own");
    assert_eq!(s.take_rate("other", "EMAIL", 100, 8, 20).await.unwrap(), 8, "each app its own");
    assert_eq!(s.take_rate("app", "EMAIL", 101, 25, 20).await.unwrap(), 20, "a new second, at most the limit");
}

async fn suppression_lists(h: Harness) {
    use herald::proto::v1::{Suppression, SuppressionReason};
    let s = h.store.as_ref();
    let entry = |a: &str| Suppression {
        address: a.into(),
        reason: SuppressionReason::HardBounce as i32,
        created_date: "d".into(),
        note: String::new(),
    };
    assert!(matches!(s.put_suppressions("ghost", &[entry("a@x.example")]).await, Err(StoreError::AppNotFound(_))));
    s.create_app(&app("app")).await.unwrap();
    let many: Vec<_> = (0..2_500).map(|i| entry(&format!("u{i}@x.example"))).collect();
    s.put_suppressions("app", &many).await.unwrap();
    let wanted = ["u7@x.example".to_string(), "nobody@x.example".to_string(), "u2499@x.example".to_string()];
    let found = s.get_suppressions("app", &wanted).await.unwrap();
    assert_eq!(found.iter().map(Option::is_some).collect::<Vec<_>>(), [true, false, true]);
    assert_eq!(found[0].as_ref().unwrap().reason, SuppressionReason::HardBounce as i32);
    assert!(s.remove_suppression("app", "u7@x.example").await.unwrap());
    assert!(!s.remove_suppression("app", "u7@x.example").await.unwrap());
    let mut seen = HashSet::new();
    let mut cursor = None;
    loop {
        let (page, next) = s.list_suppressions("app", cursor, 400).await.unwrap();
        seen.extend(page.into_iter().map(|e| e.address));
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), 2_499);
    s.delete_app("app").await.unwrap();
    s.create_app(&app("app")).await.unwrap();
    assert!(s.get_suppressions("app", &wanted).await.unwrap().iter().all(Option::is_none));
}

async fn outcomes_counters_and_events(h: Harness) {
    use herald::proto::v1::{DeliveryStatus, Event, MessageOutcome};
    let s = h.store.as_ref();
    s.create_app(&app("app")).await.unwrap();
    let base = herald::domain::new_message_id();
    let id = |i: usize| format!("{}{:024x}", &base[..8], i);
    let outcome = |i: usize| MessageOutcome {
        message_id: id(i),
        app_id: "app".into(),
        channel: if i.is_multiple_of(3) { "SMS".into() } else { "EMAIL".into() },
        delivery_status: if i.is_multiple_of(5) { DeliveryStatus::PermanentFailure as i32 } else { DeliveryStatus::Successful as i32 },
        updated_date: if i < 250 { "2026-11-22T01:00:00.000Z".into() } else { "2026-11-23T01:00:00.000Z".into() },
        attempts: 1,
        ..Default::default()
    };
    let event = |i: usize| Event { event_type: "_email.send".into(), message_id: id(i), app_id: "app".into(), ..Default::default() };
    let outcomes: Vec<_> = (0..300).map(outcome).collect();
    let events: Vec<_> = (0..300).map(event).collect();
    for (o, e) in outcomes.chunks(100).zip(events.chunks(100)) {
        s.record_outcomes("app", o, e, 3_600).await.unwrap();
    }
    let m7 = s.get_outcome("app", &id(7)).await.unwrap().unwrap();
    assert_eq!((m7.channel.as_str(), m7.delivery_status), ("EMAIL", DeliveryStatus::Successful as i32));
    assert!(s.get_outcome("app", "nope").await.unwrap().is_none());
    let counts = s.outcome_counts("app", "2026-11-22").await.unwrap();
    let total: u64 = counts.iter().map(|c| c.2).sum();
    assert_eq!(total, 250);
    let sms_failed = counts.iter().find(|c| c.0 == "SMS" && c.1 == DeliveryStatus::PermanentFailure as i32).unwrap().2;
    assert_eq!(sms_failed, (0..250).filter(|i| i % 3 == 0 && i % 5 == 0).count() as u64);
    assert_eq!(s.outcome_counts("app", "2026-11-23").await.unwrap().iter().map(|c| c.2).sum::<u64>(), 50);
    // Events come back in order, page by page.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = s.read_events("app", after.as_deref(), 70).await.unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|e| e.event_id.clone());
        seen.extend(page.into_iter().map(|e| e.message_id));
    }
    assert_eq!(seen, (0..300).map(id).collect::<Vec<_>>());
    // Expired records are gone after a purge (Redis expires them itself).
    s.record_outcomes("app", &[outcome(2_000)], &[], 0).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let purged = s.purge_expired().await.unwrap();
    if !h.on_redis() {
        assert!(purged >= 1, "the embedded store drops expired outcomes");
        assert!(s.get_outcome("app", &id(2_000)).await.unwrap().is_none());
        assert_eq!(s.purge_expired().await.unwrap(), 0, "nothing left to drop");
    }
    // A short TTL still keeps the outcome readable right away (Redis keeps each hour's bucket
    // for the TTL plus an hour; the embedded store checks each record's own expiry).
    s.record_outcomes("app", &[outcome(1_000)], &[], 1).await.unwrap();
    assert!(s.get_outcome("app", &id(1_000)).await.unwrap().is_some());
    s.delete_app("app").await.unwrap();
    s.create_app(&app("app")).await.unwrap();
    assert!(s.get_outcome("app", &id(7)).await.unwrap().is_none());
    assert!(s.read_events("app", None, 10).await.unwrap().is_empty());
    assert!(s.outcome_counts("app", "2026-11-22").await.unwrap().is_empty());
}

async fn outcomes_by_endpoint_newest_first_across_days(h: Harness) {
    use herald::proto::v1::MessageOutcome;
    use herald::store::OutcomeIndex;
    let s = h.store.as_ref();
    s.create_app(&app("app")).await.unwrap();
    let now = chrono::Utc::now().timestamp() as u32;
    // Message ids carry their time: three days, oldest first, two endpoints (one id a prefix
    // of the other's).
    let id = |day: u32, i: usize| format!("{:08x}{:024x}", now - (2 - day) * 86_400 + i as u32, i);
    let mut want_a = Vec::new();
    for day in 0..3 {
        let outcomes: Vec<MessageOutcome> = (0..40)
            .map(|i| {
                let endpoint = if i % 2 == 0 { "ep" } else { "ep-2" };
                MessageOutcome { message_id: id(day, i), app_id: "app".into(), endpoint_id: endpoint.into(), ..Default::default() }
            })
            .collect();
        want_a.extend(outcomes.iter().filter(|o| o.endpoint_id == "ep").map(|o| o.message_id.clone()));
        s.record_outcomes("app", &outcomes, &[], 7 * 86_400).await.unwrap();
    }
    want_a.reverse();
    let ids = |v: Vec<MessageOutcome>| v.into_iter().map(|o| o.message_id).collect::<Vec<_>>();
    let by = OutcomeIndex::Endpoint("ep".into());
    assert_eq!(ids(s.list_outcomes("app", &by, 0, 100).await.unwrap()), want_a, "newest first, only its own");
    assert_eq!(ids(s.list_outcomes("app", &by, 25, 10).await.unwrap()), want_a[25..35].to_vec(), "pages across days");
    assert!(s.list_outcomes("app", &by, 60, 10).await.unwrap().is_empty());
    assert_eq!(s.list_outcomes("app", &OutcomeIndex::Endpoint("ep-2".into()), 0, 100).await.unwrap().len(), 60);
    assert!(s.list_outcomes("app", &OutcomeIndex::Endpoint("e".into()), 0, 100).await.unwrap().is_empty());
}

async fn event_positions_trimming_and_activity(h: Harness) {
    use herald::proto::v1::Event;
    let s = h.store.as_ref();
    s.create_app(&app("app")).await.unwrap();
    assert_eq!(s.last_event("app").await.unwrap(), 0);
    // Whole seconds: stored times keep milliseconds.
    let base = chrono::DateTime::from_timestamp(chrono::Utc::now().timestamp() - 36_000, 0).unwrap();
    // 250 events in batches of 50, arriving a minute apart.
    for batch in 0..5 {
        let events: Vec<Event> = (0..50)
            .map(|i| {
                let n = batch * 50 + i;
                Event {
                    event_type: "x".into(),
                    client_event_id: n.to_string(),
                    arrival_timestamp: herald::domain::timestamp(base + chrono::Duration::minutes(n as i64)),
                    ..Default::default()
                }
            })
            .collect();
        s.record_outcomes("app", &[], &events, 0).await.unwrap();
    }
    assert_eq!(s.last_event("app").await.unwrap(), 250);
    // The first event that arrived at or after minute 120 is number 121.
    let at = herald::events::position_at(s, "app", base + chrono::Duration::minutes(120)).await.unwrap();
    assert_eq!(at, 120);
    assert_eq!(herald::events::position_at(s, "app", base - chrono::Duration::hours(1)).await.unwrap(), 0);
    assert_eq!(herald::events::position_at(s, "app", base + chrono::Duration::hours(9)).await.unwrap(), 250);
    // Trimming below 130 keeps 130 onward (Redis may keep the rest of the batch holding 130).
    s.trim_events("app", 130).await.unwrap();
    let first = s.read_events("app", None, 1).await.unwrap();
    let n: u64 = first[0].event_id.parse().unwrap();
    assert!((101..=130).contains(&n), "oldest kept: {n}");
    let after = s.read_events("app", Some(&herald::events::event_id(129)), 500).await.unwrap();
    assert_eq!(after.len(), 121);
    assert_eq!(after[0].client_event_id, "129");
    assert_eq!(s.last_event("app").await.unwrap(), 250, "numbers go on after a trim");
    // Touch moves an existing endpoint's activity forward only, and skips unknown ids.
    s.write_endpoints("app", upsert(vec![ep("e1", ChannelType::Email, "ana@example.com", None)], true)).await.unwrap();
    let later = "2026-12-01T10:00:00.000Z".to_string();
    let earlier = "2026-11-01T10:00:00.000Z".to_string();
    let plan = s
        .write_endpoints("app", EndpointOp::Touch { activity: vec![("e1".into(), later.clone()), ("nope".into(), later.clone())] })
        .await
        .unwrap();
    assert_eq!(plan.written_endpoints().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["e1"]);
    s.write_endpoints("app", EndpointOp::Touch { activity: vec![("e1".into(), earlier)] }).await.unwrap();
    let e1 = s.get_endpoint("app", "e1").await.unwrap().unwrap();
    assert_eq!(e1.last_activity_date, later);
    assert_eq!(e1.address, "ana@example.com");
    assert!(s.get_endpoint("app", "nope").await.unwrap().is_none());
}

/// KPIs from a scripted history of sends, bounces, opens, clicks and complaints, each value
/// worked out by hand from the script.
async fn kpis_from_counters_kept_while_recording(h: Harness) {
    use herald::kpi::query::{parse, rows, Level};
    use herald::proto::v1::{DeliveryStatus as D, Event, MessageOutcome, MessageSource};
    let s = h.store.as_ref();
    s.create_app(&app("app")).await.unwrap();
    let now = chrono::Utc::now();
    let (d1, d2) = ((now - chrono::Duration::days(1)).format("%Y-%m-%d").to_string(), now.format("%Y-%m-%d").to_string());
    let at = |day: &str| format!("{day}T12:00:00.000Z");
    let outcome =
        |id: String, endpoint: &str, campaign: &str, run: &str, channel: &str, status: D, attempts: i32, day: &str| MessageOutcome {
            message_id: id,
            app_id: "app".into(),
            source: if campaign.is_empty() { MessageSource::Transactional } else { MessageSource::Campaign } as i32,
            request_id: run.into(),
            campaign_id: campaign.into(),
            endpoint_id: endpoint.into(),
            address: format!("{endpoint}@example.com"),
            channel: channel.into(),
            delivery_status: status as i32,
            status_code: if status == D::PermanentFailure && channel == "SMS" { 30003 } else { 0 },
            attempts,
            updated_date: at(day),
            ..Default::default()
        };
    let engagement = |kind: &str, message: &str, run: &str, first: bool, day: &str| Event {
        event_type: kind.into(),
        event_timestamp: at(day),
        message_id: message.into(),
        attributes: [("campaign_id", "c1"), ("campaign_activity_id", &*format!("{run}-0"))]
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect(),
        first_of_message: first,
        ..Default::default()
    };
    // Run r1 on day 1: e0..e7 accepted, e8 refused by the relay, e9 opted out (never sent).
    let mut r1: Vec<MessageOutcome> =
        (0..8).map(|i| outcome(format!("r1m{i}"), &format!("e{i}"), "c1", "r1", "EMAIL", D::Successful, 1, &d1)).collect();
    r1.push(outcome("r1m8".into(), "e8", "c1", "r1", "EMAIL", D::PermanentFailure, 1, &d1));
    r1.push(outcome("r1m9".into(), "e9", "c1", "r1", "EMAIL", D::OptOut, 0, &d1));
    let sends: Vec<Event> =
        r1.iter().map(|o| Event { event_type: "_email.send".into(), message_id: o.message_id.clone(), ..Default::default() }).collect();
    s.record_outcomes("app", &r1, &sends, 3600).await.unwrap();
    // Afterwards: e7 bounces; e0 opens twice and clicks, e1 opens; e2 complains.
    let later = vec![
        engagement("_email.hardbounce", "r1m7", "r1", false, &d1),
        engagement("_email.open", "r1m0", "r1", true, &d1),
        engagement("_email.open", "r1m0", "r1", false, &d1),
        engagement("_email.open", "r1m1", "r1", true, &d1),
        engagement("_email.click", "r1m0", "r1", true, &d1),
        engagement("_email.complaint", "r1m2", "r1", false, &d1),
    ];
    s.record_outcomes("app", &[], &later, 3600).await.unwrap();
    // Run r2 on day 2: e0..e4 accepted. Transactional on day 2: three emails accepted, one
    // failing for now; one SMS accepted, one refused with 30003.
    let r2: Vec<MessageOutcome> =
        (0..5).map(|i| outcome(format!("r2m{i}"), &format!("e{i}"), "c1", "r2", "EMAIL", D::Successful, 1, &d2)).collect();
    s.record_outcomes("app", &r2, &[], 3600).await.unwrap();
    let mut txn: Vec<MessageOutcome> = (0..3).map(|i| outcome(format!("t{i}"), "", "", "", "EMAIL", D::Successful, 1, &d2)).collect();
    txn.push(outcome("t3".into(), "", "", "", "EMAIL", D::TemporaryFailure, 2, &d2));
    txn.push(outcome("s0".into(), "", "", "", "SMS", D::Successful, 1, &d2));
    txn.push(outcome("s1".into(), "", "", "", "SMS", D::PermanentFailure, 1, &d2));
    s.record_outcomes("app", &txn, &[], 3600).await.unwrap();
    let txn_open = Event {
        event_type: "_email.open".into(),
        event_timestamp: at(&d2),
        message_id: "t0".into(),
        first_of_message: true,
        ..Default::default()
    };
    s.record_outcomes("app", &[], &[txn_open], 3600).await.unwrap();

    let days = vec![d1.clone(), d2.clone()];
    let campaign = Level::Campaign("c1".into());
    let get = |level: Level, name: &'static str| {
        let days = days.clone();
        async move {
            let kpi = parse(&level, name).unwrap();
            rows(s, "app", &level, &kpi, &days)
                .await
                .unwrap()
                .into_iter()
                .map(|r| (r.grouped_bys.first().map(|g| g.value.clone()).unwrap_or_default(), r.values[0].value.parse::<f64>().unwrap()))
                .collect::<Vec<(String, f64)>>()
        }
    };
    let one = |v: Vec<(String, f64)>| {
        assert_eq!(v.len(), 1, "{v:?}");
        v[0].1
    };
    // Campaign c1: 14 attempted (9 + 5), 13 accepted, 1 bounced later: 12 delivered.
    assert_eq!(one(get(campaign.clone(), "successful-delivery-rate").await), 12.0 / 14.0);
    assert_eq!(one(get(campaign.clone(), "attempted-deliveries").await), 14.0);
    assert_eq!(one(get(campaign.clone(), "successful-deliveries").await), 12.0);
    assert_eq!(one(get(campaign.clone(), "email-open-rate").await), 2.0 / 12.0);
    assert_eq!(one(get(campaign.clone(), "email-click-rate").await), 1.0 / 12.0);
    assert_eq!(one(get(campaign.clone(), "clicks").await), 1.0);
    assert_eq!(one(get(campaign.clone(), "hard-bounce-rate").await), 2.0 / 14.0);
    assert_eq!(one(get(campaign.clone(), "email-complaint-rate").await), 1.0 / 14.0);
    assert_eq!(one(get(campaign.clone(), "unique-deliveries").await), 8.0);
    assert_eq!(
        get(campaign.clone(), "unique-deliveries-grouped-by-campaign-activity").await,
        vec![("r1-0".into(), 8.0), ("r2-0".into(), 5.0)]
    );
    assert_eq!(
        get(campaign.clone(), "successful-delivery-rate-grouped-by-campaign-activity").await,
        vec![("r1-0".into(), 7.0 / 9.0), ("r2-0".into(), 1.0)]
    );
    // A run that sent and got no opens has 0, not no row.
    assert_eq!(
        get(campaign.clone(), "direct-email-opens-grouped-by-campaign-activity").await,
        vec![("r1-0".into(), 2.0), ("r2-0".into(), 0.0)]
    );
    assert!(get(campaign.clone(), "push-open-rate").await.is_empty(), "no push: no row");
    // The app's campaigns (only c1), by date and by campaign.
    assert_eq!(get(Level::App, "successful-delivery-rate-grouped-by-date").await, vec![(d1.clone(), 7.0 / 9.0), (d2.clone(), 1.0)]);
    assert_eq!(get(Level::App, "unique-deliveries-grouped-by-campaign").await, vec![("c1".into(), 8.0)]);
    assert_eq!(get(Level::App, "unique-deliveries-grouped-by-date").await, vec![(d1.clone(), 8.0), (d2.clone(), 5.0)]);
    assert_eq!(one(get(Level::App, "email-open-rate").await), 2.0 / 12.0);
    // Transactional: 4 emails attempted, 3 delivered, 1 opened; 2 SMS, one failed with 30003.
    assert_eq!(one(get(Level::App, "txn-emails-sent").await), 4.0);
    assert_eq!(one(get(Level::App, "txn-emails-delivery-rate").await), 0.75);
    assert_eq!(one(get(Level::App, "txn-emails-soft-bounced").await), 1.0);
    assert_eq!(one(get(Level::App, "txn-emails-unique-opens").await), 1.0);
    assert_eq!(get(Level::App, "txn-emails-sent-grouped-by-date").await, vec![(d2.clone(), 4.0)]);
    assert_eq!(one(get(Level::App, "txn-sms-delivery-rate").await), 0.5);
    assert_eq!(get(Level::App, "txn-sms-error-distribution").await, vec![("30003".into(), 1.0)]);
    // Another app sees none of it.
    s.create_app(&app("other")).await.unwrap();
    let kpi = parse(&Level::App, "txn-emails-sent").unwrap();
    assert!(rows(s, "other", &Level::App, &kpi, &days).await.unwrap().is_empty());

    // First engagement is decided once, also within one call and from another connection.
    assert_eq!(s.first_engagement("app", &["_email.open:m1".into(), "_email.open:m1".into()], 60).await.unwrap(), [true, false]);
    assert_eq!(h.other.first_engagement("app", &["_email.open:m1".into(), "_email.click:m1".into()], 60).await.unwrap(), [false, true]);
}

async fn journey_participants(h: Harness) {
    use herald::store::{Entry, Participant, Reentry};
    let s = h.store.as_ref();
    s_create(&h).await;
    let ids: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
    let once = Reentry { cap: 1, interval_secs: 0 };
    let now = 1_800_000_000;
    assert_eq!(s.journey_enter("app", "j", &ids, "0a", now, once, now).await.unwrap(), [Entry::Entered(1); 3]);
    // In the journey now: never a second time at once; from another connection too.
    assert_eq!(h.other.journey_enter("app", "j", &ids[..1], "0a", now, once, now).await.unwrap(), [Entry::Active]);
    assert_eq!(s.journey_due("app", "j", now - 1, 10).await.unwrap(), []);
    let due = s.journey_due("app", "j", now, 2).await.unwrap();
    assert_eq!(
        due,
        [
            Participant { endpoint_id: "a".into(), due: now, state: "0a".into(), entries: 1 },
            Participant { endpoint_id: "b".into(), due: now, state: "0a".into(), entries: 1 },
        ]
    );
    // a waits (due later, a new state), b leaves; counters move with them.
    let moves = vec![("a".to_string(), Some((now + 60, "2w;3=m1".to_string()))), ("b".to_string(), None)];
    s.journey_move("app", "j", &moves, &[("ENDPOINT_LEFT".into(), 1), ("w|ENTER_ACTIVITY".into(), 1)]).await.unwrap();
    let due: Vec<(String, i64, String)> =
        s.journey_due("app", "j", now + 60, 10).await.unwrap().into_iter().map(|p| (p.endpoint_id, p.due, p.state)).collect();
    assert_eq!(due, [("c".to_string(), now, "0a".to_string()), ("a".to_string(), now + 60, "2w;3=m1".to_string())], "earliest first");
    let (active, counters) = s.journey_counters("app", "j").await.unwrap();
    assert_eq!(active, 2);
    let c: std::collections::HashMap<String, i64> = counters.into_iter().collect();
    assert_eq!((c["ENDPOINT_ENTERED"], c["ACTIVE_ENDPOINT_REJECTED"], c["ENDPOINT_LEFT"], c["w|ENTER_ACTIVITY"]), (3, 1, 1, 1));
    // b left: its re-entry cap (1) is spent; with cap 2 it enters again (entry 2), once the
    // interval has passed since its last entry.
    assert_eq!(s.journey_enter("app", "j", &ids[1..2], "0a", now, once, now + 10).await.unwrap(), [Entry::CapExceeded]);
    let twice = Reentry { cap: 2, interval_secs: 3_600 };
    assert_eq!(s.journey_enter("app", "j", &ids[1..2], "0a", now, twice, now + 10).await.unwrap(), [Entry::TooSoon]);
    assert_eq!(s.journey_enter("app", "j", &ids[1..2], "0a", now + 3_600, twice, now + 3_600).await.unwrap(), [Entry::Entered(2)]);
    let b = s.journey_due("app", "j", now + 3_600, 10).await.unwrap().into_iter().find(|p| p.endpoint_id == "b").unwrap();
    assert_eq!(b.entries, 2);
    // Large batches (past any chunking of the store's writes), an id given twice.
    let many: Vec<String> = (0..2_500).map(|i| format!("m{i:04}")).chain(["m0007".to_string()]).collect();
    let entered = s.journey_enter("app", "big", &many, "0a", now, once, now).await.unwrap();
    assert!(entered[..2_500].iter().all(|e| *e == Entry::Entered(1)));
    assert_eq!(entered[2_500], Entry::Active, "the second m0007 finds it inside");
    let moves: Vec<_> = many[..2_500]
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), (i % 2 == 0).then(|| (now + 5, "1w".to_string()))))
        .chain([("m0001".to_string(), Some((now + 9, "2w".to_string())))])
        .collect();
    s.journey_move("app", "big", &moves, &[]).await.unwrap();
    let due = s.journey_due("app", "big", now + 10, 5_000).await.unwrap();
    assert_eq!(due.len(), 1_251, "the even ones wait, and m0001 as its last move says");
    assert_eq!(due.last().map(|p| (p.endpoint_id.as_str(), p.due, p.state.as_str())), Some(("m0001", now + 9, "2w")));
    assert_eq!(s.journey_counters("app", "big").await.unwrap().0, 1_251);
    // Unlimited (cap 0); journeys are apart; concurrent entries admit one.
    assert_eq!(
        s.journey_enter("app", "k", &ids[..1], "0a", now, Reentry { cap: 0, interval_secs: 0 }, now).await.unwrap(),
        [Entry::Entered(1)]
    );
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let store = h.store.clone();
            tokio::spawn(async move { store.journey_enter("app", "l", &["x".to_string()], "0a", now, once, now).await.unwrap()[0] })
        })
        .collect();
    let mut entered = 0;
    for t in tasks {
        entered += usize::from(t.await.unwrap() == Entry::Entered(1));
    }
    assert_eq!(entered, 1);
    s.journey_drop("app", "j").await.unwrap();
    assert_eq!(s.journey_counters("app", "j").await.unwrap(), (0, vec![]));
    assert_eq!(s.journey_counters("app", "k").await.unwrap().0, 1);
    // Batch endpoint reads, in order.
    s.write_endpoints("app", upsert(vec![ep("e1", ChannelType::Email, "x@example.com", None)], true)).await.unwrap();
    let got = s.get_endpoints("app", &["nope".to_string(), "e1".to_string()]).await.unwrap();
    assert_eq!((got[0].is_none(), got[1].as_ref().map(|e| e.id.as_str())), (true, Some("e1")));
}

async fn journey_events_are_marked_for_conditions(h: Harness) {
    use herald::proto::v1::{Event, EventOrigin};
    let s = h.store.as_ref();
    s_create(&h).await;
    let journey = |kind: &str, msg: &str, origin: EventOrigin| Event {
        event_type: kind.into(),
        message_id: msg.into(),
        app_id: "app".into(),
        origin: origin as i32,
        attributes: [("journey_id".to_string(), "j1".to_string())].into(),
        ..Default::default()
    };
    let campaign = Event { event_type: "_email.delivered".into(), message_id: "m3".into(), ..Default::default() };
    let reported = journey("_email.delivered", "m4", EventOrigin::PutEvents);
    s.record_outcomes("app", &[], &[journey("_email.delivered", "m1", EventOrigin::Delivery), campaign, reported], 3_600).await.unwrap();
    let keys: Vec<String> =
        ["_email.delivered:m1", "_email.open:m1", "_email.delivered:m3", "_email.delivered:m4"].map(String::from).to_vec();
    assert_eq!(s.engaged("app", &keys).await.unwrap(), [true, false, false, false], "only journey messages' own events are marked");
    assert_eq!(s.first_engagement("app", &["_email.open:m1".to_string()], 60).await.unwrap(), [true]);
    assert_eq!(h.other.engaged("app", &keys[..2]).await.unwrap(), [true, true]);
    // Recorded with their outcomes: marked only for an activity a condition asks about.
    let outcome = |msg: &str, asked: bool| herald::proto::v1::MessageOutcome {
        message_id: msg.into(),
        endpoint_id: "e1".into(),
        journey_id: "j1".into(),
        journey_asked: asked,
        ..Default::default()
    };
    s.record_outcomes(
        "app",
        &[outcome("m5", false), outcome("m6", true)],
        &[journey("_email.send", "m5", EventOrigin::Delivery), journey("_email.send", "m6", EventOrigin::Delivery)],
        3_600,
    )
    .await
    .unwrap();
    let sent = ["_email.send:m5", "_email.send:m6"].map(String::from);
    assert_eq!(s.engaged("app", &sent).await.unwrap(), [false, true]);
}

async fn api_keys_are_global_and_outlive_delete_app(h: Harness) {
    assert!(h.store.list_api_keys().await.unwrap().is_empty());
    h.store.create_app(&app("keyed")).await.unwrap();
    h.store.put_api_key("bbbb", b"second").await.unwrap();
    h.store.put_api_key("aaaa", b"first").await.unwrap();
    assert_eq!(h.other.get_api_key("aaaa").await.unwrap().as_deref(), Some(&b"first"[..]), "seen by another daemon");
    assert_eq!(h.store.get_api_key("cccc").await.unwrap(), None);
    h.store.put_api_key("aaaa", b"revoked").await.unwrap();
    h.store.delete_app("keyed").await.unwrap();
    assert_eq!(h.other.list_api_keys().await.unwrap(), [b"revoked".to_vec(), b"second".to_vec()], "in key id order, replaced in place");
}

async fn s_create(h: &Harness) {
    h.store.create_app(&app("app")).await.unwrap();
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod embedded_backend {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $case() { super::$case(super::embedded().await).await; })*
        }
        mod redis_backend {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $case() { super::$case(super::redis().await).await; })*
        }
        mod redis_cluster {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $case() { super::$case(super::cluster().await).await; })*
        }
    };
}

conformance!(
    outcomes_by_endpoint_newest_first_across_days,
    apps_crud_and_pagination,
    upserts_merge_into_stored_endpoints,
    same_address_makes_the_older_endpoint_inactive,
    users_have_at_most_fifteen_active_endpoints,
    rejected_batches_write_nothing,
    deleting_an_app_removes_everything_under_it,
    every_kind_of_record_is_gone_after_delete_app,
    runs_index_their_members_outcomes,
    scans_visit_every_endpoint_once,
    records_blobs_and_member_sets,
    split_scans_read_every_endpoint_once,
    endpoint_caps_and_leases,
    concurrent_writers_never_lose_a_write,
    templates_are_versioned,
    quotas_never_overshoot,
    daily_quotas_roll_over_24_hours,
    suppression_lists,
    rate_windows_grant_up_to_their_limit,
    outcomes_counters_and_events,
    event_positions_trimming_and_activity,
    kpis_from_counters_kept_while_recording,
    journey_participants,
    journey_events_are_marked_for_conditions,
    api_keys_are_global_and_outlive_delete_app,
);

#[tokio::test]
async fn redis_keys_carry_the_app_id_as_a_hash_tag() {
    let h = redis().await;
    h.store.create_app(&app("tagged")).await.unwrap();
    let writes = (0..20).map(|i| ep(&format!("e{i}"), ChannelType::Email, &format!("u{i}@example.com"), Some(&format!("u{i}")))).collect();
    h.store.write_endpoints("tagged", upsert(writes, true)).await.unwrap();
    let keys = h.redis.as_ref().unwrap().cli(&["--scan"]);
    assert!(keys.len() >= 5, "{keys:?}");
    for k in keys {
        assert!(k == "herald:apps" || k == "herald:keys" || k.starts_with("herald:{tagged}:"), "{k} has no app hash tag");
    }
}

/// Endpoint records packed with their app's dictionary: made from the first batch big enough,
/// read back whole by a daemon that has not seen it, and after DeleteApp and the app made
/// again, a daemon still holding the old dictionary neither packs with it nor misreads.
async fn endpoint_records_are_packed_with_their_app_s_dictionary(h: Harness) {
    use herald::proto::v1::AttributeValues;
    let (s, other) = (h.store.as_ref(), h.other.as_ref());
    let batch = |tag: &str, n: usize| -> Vec<Endpoint> {
        (0..n)
            .map(|i| Endpoint {
                attributes: [("Plan".to_string(), AttributeValues { values: vec![format!("{tag}-{}", i % 3)] })].into(),
                ..ep(&format!("{tag}{i:03}"), ChannelType::Email, &format!("{tag}{i}@example.com"), Some(&format!("u{i}")))
            })
            .collect()
    };
    s.create_app(&app("dict")).await.unwrap();
    // A small write makes no dictionary; a batch of 16 or more does.
    s.write_endpoints("dict", upsert(batch("s", 3), true)).await.unwrap();
    let dict_key = "herald:{dict}:epdict";
    assert_eq!(h.redis_keys(dict_key).unwrap().len(), 0);
    s.write_endpoints("dict", upsert(batch("a", 60), true)).await.unwrap();
    assert_eq!(h.redis_keys(dict_key).unwrap(), vec![dict_key.to_string()]);
    if let Some(server) = &h.redis {
        // The batch's records are packed (first byte 1), to under half their size; the first
        // three stay as written.
        use deadpool_redis::redis;
        let mut conn = redis::Client::open(server.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
        let mut sizes: Vec<(u8, usize)> = Vec::new();
        for bucket in server.cli(&["--scan", "--pattern", "herald:{dict}:epb:*"]) {
            let records: Vec<(String, Vec<u8>)> = redis::cmd("HGETALL").arg(&bucket).query_async(&mut conn).await.unwrap();
            sizes.extend(records.iter().map(|(_, v)| (v[0], v.len())));
        }
        assert_eq!(sizes.iter().filter(|(b, _)| *b == 1).count(), 60, "{sizes:?}");
        let packed: Vec<usize> = sizes.iter().filter(|(b, _)| *b == 1).map(|(_, n)| *n).collect();
        let plain: Vec<usize> = sizes.iter().filter(|(b, _)| *b != 1).map(|(_, n)| *n).collect();
        assert!(packed.iter().max().unwrap() * 2 < *plain.iter().min().unwrap(), "{packed:?} against {plain:?}");
    }
    let mut want: Vec<Endpoint> = Vec::new();
    for id in (0..3).map(|i| format!("s{i:03}")).chain((0..60).map(|i| format!("a{i:03}"))) {
        want.push(s.get_endpoint("dict", &id).await.unwrap().unwrap());
    }
    assert_eq!(want[10].attributes["Plan"].values, vec!["a-1".to_string()]);
    // Another daemon reads them (fetching the dictionary), by id, by user and by scan.
    for (w, got) in want.iter().zip(other.get_endpoints("dict", &want.iter().map(|e| e.id.clone()).collect::<Vec<_>>()).await.unwrap()) {
        assert_eq!(Some(w), got.as_ref());
    }
    assert_eq!(other.user_endpoints("dict", "u1").await.unwrap().len(), 2);
    let (page, _) = other.scan_endpoints("dict", None, 1_000).await.unwrap();
    let mut scanned = page.clone();
    scanned.sort_by(|a, b| a.id.cmp(&b.id));
    let mut sorted = want.clone();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(scanned, sorted);
    // An update through the other daemon packs with the same dictionary and reads back.
    let moved = Endpoint { address: "moved@example.com".into(), ..ep("a005", ChannelType::Email, "", None) };
    other.write_endpoints("dict", upsert(vec![moved], true)).await.unwrap();
    assert_eq!(s.get_endpoint("dict", "a005").await.unwrap().unwrap().address, "moved@example.com");
    assert_eq!(s.get_endpoint("dict", "a005").await.unwrap().unwrap().attributes, want[8].attributes);
    // Deleted and made again: the other daemon still holds the old dictionary. Its write of a
    // new first batch is refused by the script, then made with the app's own (new) one.
    s.delete_app("dict").await.unwrap();
    s.create_app(&app("dict")).await.unwrap();
    s.write_endpoints("dict", upsert(batch("b", 40), true)).await.unwrap();
    other.write_endpoints("dict", upsert(batch("c", 30), true)).await.unwrap();
    assert!(other.get_endpoint("dict", "a001").await.unwrap().is_none());
    for (store, id, plan) in [(s, "c004", "c-1"), (other, "b005", "b-2"), (other, "c029", "c-2"), (s, "b039", "b-0")] {
        let e = store.get_endpoint("dict", id).await.unwrap().unwrap();
        assert_eq!(e.attributes["Plan"].values, vec![plan.to_string()], "{id}");
    }
    assert_eq!(s.scan_endpoints("dict", None, 1_000).await.unwrap().0.len(), 70);
    assert_eq!(other.scan_endpoints("dict", None, 1_000).await.unwrap().0.len(), 70);
}

#[tokio::test]
async fn redis_endpoint_records_are_packed_with_their_app_s_dictionary() {
    endpoint_records_are_packed_with_their_app_s_dictionary(redis().await).await;
}

#[tokio::test]
async fn cluster_endpoint_records_are_packed_with_their_app_s_dictionary() {
    endpoint_records_are_packed_with_their_app_s_dictionary(cluster().await).await;
}

#[tokio::test]
async fn redis_event_entries_of_either_form_read_back_in_order() {
    use deadpool_redis::redis;
    use herald::proto::v1::Event;
    use herald::store::codec;
    let h = redis().await;
    let s = h.store.as_ref();
    s.create_app(&app("app")).await.unwrap();
    let event = |i: usize| Event {
        event_type: "_email.send".into(),
        message_id: format!("{:032x}", 1_000 + i),
        client_id: format!("ep-{i:09}"),
        app_id: "app".into(),
        attributes: [("campaign_id".to_string(), "e826da1657d246ad82e44f490c20146f".to_string())].into(),
        ..Default::default()
    };
    // A batch goes in as one compressed block ...
    let first: Vec<Event> = (0..40).map(event).collect();
    s.record_outcomes("app", &[], &first, 3_600).await.unwrap();
    let client = redis::Client::open(h.redis.as_ref().unwrap().url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let stream = "herald:{app}:event-stream";
    type Entry = (String, Vec<(String, Vec<u8>)>);
    let entries: Vec<Entry> = redis::cmd("XRANGE").arg(stream).arg("-").arg("+").query_async(&mut conn).await.unwrap();
    assert_eq!(entries.len(), 1);
    let (field, block) = &entries[0].1[0];
    assert_eq!(field, "z", "a batch of events is one block");
    let raw: usize = first.iter().map(|e| codec::encode_event("app", e).len()).sum();
    assert!(block.len() * 3 < raw, "a block of like events is a third of their size or less: {} of {raw}", block.len());
    // ... an entry as an earlier release wrote it, one field per event, reads on after it ...
    let old: Vec<Vec<u8>> = (40..43).map(|i| codec::encode_event("app", &event(i))).collect();
    let _: u64 = redis::cmd("INCRBY").arg("herald:{app}:event-seq").arg(3).query_async(&mut conn).await.unwrap();
    let mut xadd = redis::cmd("XADD");
    xadd.arg(stream).arg("41-0");
    for v in &old {
        xadd.arg("e").arg(v.as_slice());
    }
    let _: String = xadd.query_async(&mut conn).await.unwrap();
    // ... and so does a lone event (not worth a block) and the next block.
    s.record_outcomes("app", &[], &[event(43)], 3_600).await.unwrap();
    s.record_outcomes("app", &[], &(44..60).map(event).collect::<Vec<_>>(), 3_600).await.unwrap();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = s.read_events("app", after.as_deref(), 7).await.unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|e| e.event_id.clone());
        seen.extend(page);
    }
    assert_eq!(seen.iter().map(|e| e.message_id.clone()).collect::<Vec<_>>(), (0..60).map(|i| event(i).message_id).collect::<Vec<_>>());
    assert_eq!(seen.iter().map(|e| e.event_id.clone()).collect::<Vec<_>>(), (1..=60).map(|n| format!("{n:020}")).collect::<Vec<_>>());
    assert_eq!(seen[50].attributes, event(50).attributes);
    // Trimming keeps the entry that holds the floor, whatever its form.
    s.trim_events("app", 42).await.unwrap();
    let rest = s.read_events("app", Some(&format!("{:020}", 41)), 100).await.unwrap();
    assert_eq!(rest.first().map(|e| e.event_id.as_str()), Some("00000000000000000042"));
    assert_eq!(rest.len(), 19);
}

#[tokio::test]
async fn embedded_data_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = EmbeddedStore::open(dir.path()).unwrap();
        s.create_app(&app("app")).await.unwrap();
        s.write_endpoints("app", upsert(vec![ep("e1", ChannelType::Email, "ana@example.com", Some("u"))], true)).await.unwrap();
    }
    let s = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(s.get_endpoint("app", "e1").await.unwrap().unwrap().address, "ana@example.com");
    assert_eq!(s.user_endpoints("app", "u").await.unwrap().len(), 1);
}

/// A day's endpoint index of an app with more endpoints than one listpack holds is cut into
/// buckets, a power of two fixed at the day's first message; every read finds each entry, and
/// another daemon (a second store) uses the same count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_endpoint_index_is_cut_into_buckets_by_the_apps_size() {
    use deadpool_redis::redis;
    use herald::proto::v1::{MessageOutcome, MessageSource};
    use herald::store::OutcomeIndex;
    let h = redis().await;
    let s = h.store.as_ref();
    s.create_app(&app("app")).await.unwrap();
    let endpoints: Vec<Endpoint> =
        (0..300).map(|i| ep(&format!("e{i:03}"), ChannelType::Email, &format!("u{i}@example.com"), None)).collect();
    s.write_endpoints("app", upsert(endpoints, true)).await.unwrap();
    let run = "e826da1657d246ad82e44f490c20146f:000000";
    let outcome = |endpoint: String| MessageOutcome {
        message_id: herald::domain::new_message_id(),
        app_id: "app".into(),
        source: MessageSource::Campaign as i32,
        request_id: run.into(),
        campaign_id: "e826da1657d246ad82e44f490c20146f".into(),
        endpoint_id: endpoint,
        channel: "EMAIL".into(),
        delivery_status: 1,
        updated_date: herald::domain::timestamp(chrono::Utc::now()),
        ..Default::default()
    };
    let first: Vec<MessageOutcome> = (0..300).map(|i| outcome(format!("e{i:03}"))).collect();
    s.record_outcomes("app", &first[..150], &[], 3_600).await.unwrap();
    // The other daemon records the rest, and a second message to e007.
    h.other.record_outcomes("app", &first[150..], &[], 3_600).await.unwrap();
    let second = outcome("e007".into());
    h.other.record_outcomes("app", std::slice::from_ref(&second), &[], 3_600).await.unwrap();
    let client = redis::Client::open(h.redis.as_ref().unwrap().url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let day = chrono::Utc::now().timestamp() / 86_400;
    let count: u32 = redis::cmd("GET").arg(format!("herald:{{app}}:epmsg-n:{day}")).query_async(&mut conn).await.unwrap();
    assert_eq!(count, 8, "300 endpoints, about 64 a bucket, a power of two");
    let plain: bool = redis::cmd("EXISTS").arg(format!("herald:{{app}}:epmsg:{day}")).query_async(&mut conn).await.unwrap();
    assert!(!plain, "no single hash for the day");
    let mut held = 0;
    for b in 0..count {
        let key = format!("herald:{{app}}:epmsg:{day}:{b}");
        let n: usize = redis::cmd("HLEN").arg(&key).query_async(&mut conn).await.unwrap();
        let encoding: String = redis::cmd("OBJECT").arg("ENCODING").arg(&key).query_async(&mut conn).await.unwrap();
        assert_eq!(encoding, "listpack", "{key} holds {n}");
        held += n;
    }
    assert_eq!(held, 300, "each endpoint in one bucket");
    for (i, o) in first.iter().enumerate() {
        let mut listed: Vec<String> = s
            .list_outcomes("app", &OutcomeIndex::Endpoint(o.endpoint_id.clone()), 0, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.message_id)
            .collect();
        // (Two ids of one second list in their bytes' order.)
        listed.sort();
        let mut want = if i == 7 { vec![second.message_id.clone(), o.message_id.clone()] } else { vec![o.message_id.clone()] };
        want.sort();
        assert_eq!(listed, want, "{}", o.endpoint_id);
    }
    let members: Vec<String> = (0..301).map(|i| format!("e{i:03}")).collect();
    let statuses = h.other.run_outcomes("app", run, &members, Some(chrono::Utc::now().timestamp() - 300)).await.unwrap();
    assert_eq!(statuses.iter().filter(|s| **s == Some(1)).count(), 300);
    assert_eq!(statuses[300], None, "e300 is nobody's");
    // DeleteApp takes the buckets and their count.
    s.delete_app("app").await.unwrap();
    let left: Vec<String> = redis::cmd("KEYS").arg("herald:{app}:epmsg*").query_async(&mut conn).await.unwrap();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn redis_outcomes_and_their_indexes_of_either_form_read_back() {
    use deadpool_redis::redis;
    use herald::proto::v1::MessageOutcome;
    use herald::store::{codec, OutcomeIndex};
    use prost::Message as _;
    let h = redis().await;
    let s = h.store.as_ref();
    s.create_app(&app("app")).await.unwrap();
    let campaign = "e826da1657d246ad82e44f490c20146f";
    let run = format!("{campaign}:000001");
    let now = chrono::Utc::now().timestamp() as u32;
    let outcome = |id: String| MessageOutcome {
        message_id: id,
        app_id: "app".into(),
        source: herald::proto::v1::MessageSource::Campaign as i32,
        request_id: run.clone(),
        campaign_id: campaign.into(),
        endpoint_id: "ep".into(),
        address: "a@example.com".into(),
        channel: "EMAIL".into(),
        delivery_status: 1,
        created_date: herald::domain::timestamp(chrono::Utc::now()),
        updated_date: herald::domain::timestamp(chrono::Utc::now()),
        ..Default::default()
    };
    let id = |i: u32| format!("{:08x}{:024x}", now - 10 + i, i);
    let client = redis::Client::open(h.redis.as_ref().unwrap().url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    // An earlier release's forms: the outcome as plain protobuf under its id's text, the
    // request's list holding the id's text, the day's sorted set of `{endpoint}\0{16 bytes}`.
    let old = outcome(id(0));
    let (hour, day) = (u64::from(now - 10) / 3_600, u64::from(now - 10) / 86_400);
    let _: () = redis::cmd("HSET")
        .arg(format!("herald:{{app}}:out:{hour}"))
        .arg(&old.message_id)
        .arg(old.encode_to_vec())
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("RPUSH").arg(format!("herald:{{app}}:byreq:{run}")).arg(&old.message_id).query_async(&mut conn).await.unwrap();
    let member = [b"ep\0".as_slice(), &codec::pack_id(&old.message_id).unwrap()].concat();
    let _: () = redis::cmd("ZADD").arg(format!("herald:{{app}}:byep:{day}")).arg(0).arg(member).query_async(&mut conn).await.unwrap();
    let _: () = redis::cmd("ZADD").arg("herald:{app}:byep-days").arg(day).arg(day).query_async(&mut conn).await.unwrap();
    // The release between: the outcome under the id's 16 bytes.
    let between = MessageOutcome { request_id: "another".into(), ..outcome(id(9)) };
    let _: () = redis::cmd("HSET")
        .arg(format!("herald:{{app}}:out:{}", u64::from(now - 1) / 3_600))
        .arg(codec::pack_id(&between.message_id).unwrap().as_slice())
        .arg(between.encode_to_vec())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(s.get_outcome("app", &between.message_id).await.unwrap(), Some(between));
    // This release's: two batches (the endpoint's entry appended to), and a message id that is
    // not one of Herald's, 16 characters long like a packed id.
    let new: Vec<MessageOutcome> = (1..4).map(|i| outcome(id(i))).collect();
    s.record_outcomes("app", &new[..2], &[], 3_600).await.unwrap();
    s.record_outcomes("app", &new[2..], &[], 3_600).await.unwrap();
    let odd = outcome("message-00000001".into());
    s.record_outcomes("app", std::slice::from_ref(&odd), &[], 3_600).await.unwrap();
    let ids = |v: Vec<MessageOutcome>| v.into_iter().map(|o| o.message_id).collect::<Vec<_>>();
    let by_request = ids(s.list_outcomes("app", &OutcomeIndex::Request(run.clone()), 0, 10).await.unwrap());
    assert_eq!(by_request, vec![id(0), id(1), id(2), id(3), odd.message_id.clone()], "in the order recorded");
    let by_endpoint = ids(s.list_outcomes("app", &OutcomeIndex::Endpoint("ep".into()), 0, 10).await.unwrap());
    // Herald's ids newest first, day by day; the odd id carries no time (day 0).
    assert_eq!(by_endpoint, vec![id(3), id(2), id(1), id(0), odd.message_id.clone()]);
    for o in new.iter().chain([&old, &odd]) {
        assert_eq!(s.get_outcome("app", &o.message_id).await.unwrap().as_ref(), Some(o), "{}", o.message_id);
    }
    // The compact forms: 16 bytes per id in the request's list and the endpoint's entry, and
    // an outcome value holding neither its message id nor the run's request id as text.
    let listed: Vec<Vec<u8>> =
        redis::cmd("LRANGE").arg(format!("herald:{{app}}:byreq:{run}")).arg(1).arg(3).query_async(&mut conn).await.unwrap();
    assert!(listed.iter().all(|i| i.len() == 16), "{listed:?}");
    let entry: Vec<u8> = redis::cmd("HGET").arg(format!("herald:{{app}}:epmsg:{day}")).arg("ep").query_async(&mut conn).await.unwrap();
    assert_eq!(entry, new.iter().flat_map(|o| codec::pack_id(&o.message_id).unwrap()).collect::<Vec<u8>>());
    let value: Vec<u8> = redis::cmd("HGET")
        .arg(format!("herald:{{app}}:out:{}", u64::from(now - 9) / 3_600))
        .arg(&codec::pack_id(&new[0].message_id).unwrap()[4..])
        .query_async(&mut conn)
        .await
        .unwrap();
    let packed = codec::pack_id(&new[0].message_id).unwrap();
    assert!(!value.windows(16).any(|w| w == packed), "the message id is its field's alone");
    assert!(!value.windows(campaign.len()).any(|w| w == campaign.as_bytes()), "no id as text");
    // An outcome recorded again as feedback changes it (no request), alone and twice in one
    // batch: its endpoint lists it once.
    let changed = MessageOutcome { delivery_status: 4, request_id: String::new(), ..new[1].clone() };
    s.record_outcomes("app", std::slice::from_ref(&changed), &[], 3_600).await.unwrap();
    s.record_outcomes("app", &[changed.clone(), changed.clone()], &[], 3_600).await.unwrap();
    // So is the earlier release's message recorded again, now in both forms of its day.
    s.record_outcomes("app", &[MessageOutcome { request_id: String::new(), ..old.clone() }], &[], 3_600).await.unwrap();
    let again = ids(s.list_outcomes("app", &OutcomeIndex::Endpoint("ep".into()), 0, 10).await.unwrap());
    // (The odd id's day, 1970, is past the retention a later write trims the days to.)
    assert_eq!(again, by_endpoint[..4]);
    assert_eq!(s.get_outcome("app", &changed.message_id).await.unwrap(), Some(changed));
    // A campaign run's outcomes are found through the endpoint index: the per-run hash holds
    // only the message whose id is not Herald's; one an earlier release wrote is still read.
    let runout = format!("herald:{{app}}:runout:{run}");
    let indexed = MessageOutcome { endpoint_id: "ep2".into(), delivery_status: 3, ..outcome(id(5)) };
    s.record_outcomes("app", std::slice::from_ref(&indexed), &[], 3_600).await.unwrap();
    let held: Vec<String> = redis::cmd("HKEYS").arg(&runout).query_async(&mut conn).await.unwrap();
    assert_eq!(held, vec!["ep".to_string()], "only the odd id's endpoint");
    let _: () = redis::cmd("HSET").arg(&runout).arg("old-ep").arg(2).query_async(&mut conn).await.unwrap();
    let members: Vec<String> = ["old-ep", "ep2", "nobody"].map(String::from).into();
    let statuses = s.run_outcomes("app", &run, &members, Some(i64::from(now) - 60)).await.unwrap();
    assert_eq!(statuses, vec![Some(2), Some(3), None]);
}

#[tokio::test]
async fn redis_endpoint_tables_are_bucketed_listpacks_that_split_as_the_app_grows() {
    use deadpool_redis::redis;
    let h = redis().await;
    let s = h.store.as_ref();
    s.create_app(&app("app")).await.unwrap();
    // An app's tables start at 2^16 buckets and split past 48 endpoints a bucket (about 3
    // million endpoints); started here at 4 buckets, they split as an app that large does.
    seed_level(&h, "app", 2).await;
    // Two writers, so buckets split under both.
    for chunk in 0..10 {
        let writer = if chunk % 2 == 0 { h.store.as_ref() } else { h.other.as_ref() };
        let writes = (0..500)
            .map(|i| {
                let n = chunk * 500 + i;
                ep(&format!("ep-{n:09}"), ChannelType::Email, &format!("user{n}@example.com"), Some(&format!("user-{}", n / 2)))
            })
            .collect();
        writer.write_endpoints("app", upsert(writes, true)).await.unwrap();
    }
    let client = redis::Client::open(h.redis.as_ref().unwrap().url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let (level, split, n): (u32, u64, u64) =
        redis::cmd("HMGET").arg("herald:{app}:epix").arg("L").arg("S").arg("n").query_async(&mut conn).await.unwrap();
    let buckets = (1u64 << level) + split;
    assert_eq!(n, 5_000);
    assert!((5_000 / 48..=5_000 / 48 + 1).contains(&buckets), "about 48 endpoints a bucket: {buckets}");
    for (table, entries) in [("epb", 5_000), ("adb", 5_000), ("usb", 2_500)] {
        let mut total = 0;
        for b in 0..buckets {
            let key = format!("herald:{{app}}:{table}:{b}");
            let len: u64 = redis::cmd("HLEN").arg(&key).query_async(&mut conn).await.unwrap();
            total += len;
            if table != "epb" {
                let encoding: String = redis::cmd("OBJECT").arg("ENCODING").arg(&key).query_async(&mut conn).await.unwrap();
                assert_eq!(encoding, "listpack", "{key} ({len} entries)");
            }
        }
        assert_eq!(total, entries, "every {table} entry in one bucket");
        let beyond: u64 = redis::cmd("EXISTS").arg(format!("herald:{{app}}:{table}:{buckets}")).query_async(&mut conn).await.unwrap();
        assert_eq!(beyond, 0);
    }
    // Everything reads back through its bucket, after every split.
    let ids: Vec<String> = (0..5_000).map(|n| format!("ep-{n:09}")).collect();
    let found = h.other.get_endpoints("app", &ids).await.unwrap();
    assert!(found.iter().zip(&ids).all(|(e, id)| e.as_ref().is_some_and(|e| &e.id == id)));
    for n in [0, 1, 2_499, 4_999] {
        let id = s.endpoint_by_address("app", ChannelType::Email as i32, &format!("user{n}@example.com")).await.unwrap();
        assert_eq!(id, Some(format!("ep-{n:09}")));
        let mut users: Vec<String> = s.user_endpoints("app", &format!("user-{}", n / 2)).await.unwrap().into_iter().map(|e| e.id).collect();
        users.sort();
        assert_eq!(users, vec![format!("ep-{:09}", n / 2 * 2), format!("ep-{:09}", n / 2 * 2 + 1)]);
    }
    // A delete leaves its bucket and the count.
    s.write_endpoints("app", EndpointOp::Delete { ids: vec!["ep-000000007".into()] }).await.unwrap();
    let n: u64 = redis::cmd("HGET").arg("herald:{app}:epix").arg("n").query_async(&mut conn).await.unwrap();
    assert_eq!(n, 4_999);
    assert!(s.get_endpoint("app", "ep-000000007").await.unwrap().is_none());
    assert_eq!(s.endpoint_by_address("app", ChannelType::Email as i32, "user7@example.com").await.unwrap(), None);
}

/// Sets an app's endpoint tables to `2^level` buckets (before it holds any endpoint).
async fn seed_level(h: &Harness, app_id: &str, level: u32) {
    use deadpool_redis::redis;
    let client = redis::Client::open(h.redis.as_ref().unwrap().url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let () = redis::cmd("HSET")
        .arg(format!("herald:{{{app_id}}}:epix"))
        .arg("L")
        .arg(level)
        .arg("S")
        .arg(0)
        .query_async(&mut conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn redis_scans_return_each_endpoint_once_while_buckets_split() {
    let h = redis().await;
    // Started at 4 buckets, the tables split many times over between the scan's pages.
    h.store.create_app(&app("app")).await.unwrap();
    seed_level(&h, "app", 2).await;
    scans_visit_every_endpoint_once_while_the_app_grows(h).await;
}

#[tokio::test]
async fn redis_scans_of_a_small_app_read_only_its_occupied_buckets() {
    use deadpool_redis::redis;
    let h = redis().await;
    let s = h.store.as_ref();
    s.create_app(&app("small")).await.unwrap();
    let writes = (0..40).map(|i| ep(&format!("s{i}"), ChannelType::Gcm, &format!("t{i}"), None)).collect();
    s.write_endpoints("small", upsert(writes, true)).await.unwrap();
    s.write_endpoints("small", EndpointOp::Delete { ids: (0..10).map(|i| format!("s{i}")).collect() }).await.unwrap();
    let client = redis::Client::open(h.redis.as_ref().unwrap().url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let info = |conn: &mut redis::aio::MultiplexedConnection| {
        let mut conn = conn.clone();
        async move {
            let text: String = redis::cmd("INFO").arg("commandstats").query_async(&mut conn).await.unwrap();
            text.lines()
                .find(|l| l.starts_with("cmdstat_hgetall:"))
                .and_then(|l| l.split("calls=").nth(1)?.split(',').next()?.parse::<u64>().ok())
                .unwrap_or(0)
        }
    };
    let mut ids = Vec::new();
    let mut cursor = None;
    let before = info(&mut conn).await;
    let mut pages = 0;
    loop {
        pages += 1;
        let (page, next) = s.scan_endpoints("small", cursor, 7).await.unwrap();
        ids.extend(page.into_iter().map(|e| e.id));
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let read = info(&mut conn).await - before;
    ids.sort();
    let mut expected: Vec<String> = (10..40).map(|i| format!("s{i}")).collect();
    expected.sort();
    assert_eq!(ids, expected, "every endpoint once");
    // At most forty buckets were ever occupied (of 65,536): the scan read those, not the
    // others (a page reads a few buckets ahead, at most its size and one, which the next
    // page reads again).
    assert!(read <= 40 + pages * 8, "{read} buckets read in {pages} pages");
    // The emptied ones were cleared on the way: the next scan reads only the thirty left.
    let before = info(&mut conn).await;
    let (page, _) = s.scan_endpoints("small", None, 100).await.unwrap();
    assert_eq!(page.len(), 30);
    let read = info(&mut conn).await - before;
    assert!((1..=30).contains(&read), "{read} buckets read");
}

#[tokio::test]
async fn redis_endpoints_of_an_earlier_release_move_into_the_buckets() {
    use deadpool_redis::redis;
    use herald::store::codec;
    let h = redis().await;
    let s = h.store.as_ref();
    s.create_app(&app("old")).await.unwrap();
    // The earlier release's layout: a key per endpoint, address and user, and the id index.
    let client = redis::Client::open(h.redis.as_ref().unwrap().url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut pipe = redis::pipe();
    for n in 0..1_200 {
        let mut e = ep(&format!("e{n}"), ChannelType::Email, &format!("u{n}@example.com"), Some(&format!("user{}", n / 3)));
        e.application_id = "old".into();
        e.endpoint_status = EndpointStatus::Active as i32;
        pipe.set(format!("herald:{{old}}:ep:e{n}"), codec::encode_endpoint("old", &e)).ignore();
        pipe.set(format!("herald:{{old}}:addr:1:u{n}@example.com"), format!("e{n}")).ignore();
        pipe.zadd("herald:{old}:eps", format!("e{n}"), 0).ignore();
        if n % 3 == 0 {
            pipe.set(format!("herald:{{old}}:user:user{}", n / 3), format!("e{n}\ne{}\ne{}", n + 1, n + 2)).ignore();
        }
    }
    let _: () = pipe.query_async(&mut conn).await.unwrap();
    let store = RedisStore::connect(&h.redis.as_ref().unwrap().url(), 2).await.unwrap();
    assert_eq!(store.migrate_endpoints().await.unwrap(), 1_200);
    // A second daemon starting at the same time finds nothing left to move.
    assert_eq!(store.migrate_endpoints().await.unwrap(), 0);
    let left = h.redis.as_ref().unwrap().cli(&["--scan", "--pattern", "herald:{old}:*"]);
    assert!(left.iter().all(|k| !k.contains(":ep:") && !k.contains(":addr:") && !k.contains(":user:") && !k.ends_with(":eps")), "{left:?}");
    // The records moved packed with the dictionary their first chunk made.
    assert!(left.contains(&"herald:{old}:epdict".to_string()), "{left:?}");
    let mut packed = 0;
    for bucket in left.iter().filter(|k| k.contains(":epb:")) {
        let records: Vec<(String, Vec<u8>)> = redis::cmd("HGETALL").arg(bucket).query_async(&mut conn).await.unwrap();
        packed += records.iter().filter(|(_, v)| codec::packed_with(v).is_some()).count();
    }
    assert_eq!(packed, 1_200);
    assert_eq!(s.get_endpoint("old", "e17").await.unwrap().unwrap().address, "u17@example.com");
    assert_eq!(s.endpoint_by_address("old", ChannelType::Email as i32, "u1199@example.com").await.unwrap().as_deref(), Some("e1199"));
    assert_eq!(s.user_endpoints("old", "user5").await.unwrap().len(), 3);
    let (mut cursor, mut seen) = (None, 0);
    loop {
        let (page, next) = s.scan_endpoints("old", cursor, 500).await.unwrap();
        seen += page.len();
        cursor = match next {
            Some(c) => Some(c),
            None => break,
        };
    }
    assert_eq!(seen, 1_200);
    // The planner sees the moved address index: a new endpoint on a moved address retires the
    // one that held it.
    s.write_endpoints("old", upsert(vec![ep("fresh", ChannelType::Email, "u3@example.com", None)], true)).await.unwrap();
    assert_eq!(s.endpoint_by_address("old", ChannelType::Email as i32, "u3@example.com").await.unwrap().as_deref(), Some("fresh"));
}
