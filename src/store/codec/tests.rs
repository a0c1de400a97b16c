//! The stored forms read back as written, earlier releases' forms still read, and corrupt
//! bytes refused.

use super::*;
use crate::proto::v1::{AttributeValues, EndpointUser};

#[test]
fn timestamps_round_trip_and_only_herald_s_form_is_packed() {
    for ms in [0u64, 1, 86_399_999, 951_782_400_000, 1_796_682_830_217, 4_102_444_799_999, 253_402_300_799_999] {
        let s = format_millis(ms);
        assert_eq!(parse_millis(&s), Some(ms), "{s}");
    }
    // Checked against Python: datetime.fromtimestamp(1796682830.217, timezone.utc).
    assert_eq!(format_millis(1_796_682_830_217), "2026-12-07T22:33:50.217Z");
    assert_eq!(parse_millis("2000-02-29T00:00:00.000Z"), Some(951_782_400_000));
    let now = chrono::Utc::now();
    assert_eq!(format_millis(parse_millis(&crate::domain::timestamp(now)).unwrap()), crate::domain::timestamp(now));
    for other in [
        "2026-12-06T22:33:50Z",
        "2026-12-06T22:33:50.217+00:00",
        "2026-02-29T00:00:00.000Z",
        "1969-12-31T23:59:59.999Z",
        "",
        "2026-13-01T00:00:00.000Z",
    ] {
        assert_eq!(parse_millis(other), None, "{other}");
    }
}

fn endpoint() -> Endpoint {
    Endpoint {
        id: "ep-1".into(),
        application_id: "7d9150b0a90743e5b071f749857b5b22".into(),
        address: "a@example.com".into(),
        attributes: [("Plan".to_string(), AttributeValues { values: vec!["Pro".into()] })].into(),
        user: Some(EndpointUser { user_id: "u1".into(), ..Default::default() }),
        effective_date: "2026-12-06T22:33:50.217Z".into(),
        creation_date: "2026-12-06T22:33:50.217Z".into(),
        last_activity_date: "2026-12-06T22:40:00Z".into(),
        request_id: "03690135e02840b88cf7272ab19085e2".into(),
        cohort_id: 17,
        ..Default::default()
    }
}

#[test]
fn endpoints_read_back_as_written_and_earlier_values_still_read() {
    let app = "7d9150b0a90743e5b071f749857b5b22";
    let e = endpoint();
    let before = e.clone();
    let stored = encode_endpoint(app, &e);
    assert_eq!(e, before, "the endpoint is given back whole");
    assert!(stored.len() + 60 < e.encode_to_vec().len(), "{} against {}", stored.len(), e.encode_to_vec().len());
    assert_eq!(decode_endpoint(app, &stored).unwrap(), before);
    // A request id that is not hex, another app's id: kept as they are.
    let odd = Endpoint { request_id: "req-1".into(), application_id: "other".into(), ..endpoint() };
    let want = odd.clone();
    assert_eq!(decode_endpoint(app, &encode_endpoint(app, &odd)).unwrap(), want);
    assert_eq!(decode_endpoint(app, &before.encode_to_vec()).unwrap(), before, "plain protobuf");
    assert!(decode_endpoint(app, &[0]).is_err());
    assert!(decode_endpoint(app, &stored[..stored.len() - 30]).is_err() || stored.len() < 30);
}

#[test]
fn records_packed_with_their_app_s_dictionary_unpack_as_written_and_only_with_it() {
    let app = "7d9150b0a90743e5b071f749857b5b22";
    let records: Vec<Endpoint> = (0..40)
        .map(|i| Endpoint {
            id: format!("ep-{i}"),
            address: format!("user{i}@example.com"),
            attributes: [("Plan".to_string(), AttributeValues { values: vec![["Pro", "Free"][i % 2].into()] })].into(),
            ..endpoint()
        })
        .collect();
    let stored: Vec<Vec<u8>> = records.iter().map(|e| encode_endpoint(app, e)).collect();
    assert!(EndpointDict::from_records(stored[..DICT_RECORDS - 1].iter().map(Vec::as_slice)).is_none(), "too few records");
    let dict = EndpointDict::from_records(stored.iter().map(Vec::as_slice)).unwrap();
    assert_eq!(dict.bytes.len(), stored[..DICT_RECORDS].iter().map(Vec::len).sum::<usize>());
    assert_eq!(dict, EndpointDict::new(dict.bytes.clone()), "the id is the bytes' hash");
    for (e, s) in records.iter().zip(&stored).skip(DICT_RECORDS) {
        let packed = dict.pack(s.clone());
        assert!(packed.len() * 2 < s.len(), "{} bytes packed from {}", packed.len(), s.len());
        assert_eq!(packed_with(&packed), Some(dict.id));
        assert_eq!(&unpack_endpoint(Some(&dict), packed.clone()).unwrap(), s);
        assert_eq!(&decode_endpoint(app, &unpack_endpoint(Some(&dict), packed.clone()).unwrap()).unwrap(), e);
        // Without the dictionary, or with another, it is refused, never misread.
        assert!(unpack_endpoint(None, packed.clone()).is_err());
        let other = EndpointDict::new(stored[20..].concat());
        assert!(unpack_endpoint(Some(&other), packed.clone()).is_err());
        assert!(decode_endpoint(app, &packed).is_err(), "a packed record is not read as a plain one");
        // Cut short or claiming an impossible length: an error.
        assert!(unpack_endpoint(Some(&dict), packed[..packed.len() - 3].to_vec()).is_err());
        let mut huge = packed[..5].to_vec();
        prost::encoding::encode_varint(1 << 40, &mut huge);
        assert!(unpack_endpoint(Some(&dict), huge).is_err());
    }
    // Unpacked records pass through; one that would not shrink is kept as it is.
    assert_eq!(unpack_endpoint(None, stored[0].clone()).unwrap(), stored[0]);
    assert_eq!(dict.pack(vec![MARK, 0, 9]), vec![MARK, 0, 9]);
}

#[test]
fn outcomes_read_back_as_written_and_earlier_values_still_read() {
    let app = "7d9150b0a90743e5b071f749857b5b22";
    let campaign = "13690135e02840b88cf7272ab19085e2";
    let created = chrono::Utc::now();
    let o = MessageOutcome {
        message_id: crate::domain::new_message_id(),
        app_id: app.into(),
        request_id: format!("{campaign}:000003"),
        campaign_id: campaign.into(),
        endpoint_id: "ep-1".into(),
        address: "a@example.com".into(),
        channel: "EMAIL".into(),
        delivery_status: 1,
        status_code: 250,
        status_message: "2.0.0 Ok".into(),
        created_date: crate::domain::timestamp(created),
        updated_date: crate::domain::timestamp(created + chrono::Duration::milliseconds(1_234)),
        context: [("k".to_string(), "v".to_string())].into(),
        ..Default::default()
    };
    let stored = encode_outcome(app, &o);
    // The message id (its key holds it), the run's request id (the campaign's and a
    // suffix) and the update time (2 bytes after the creation time) take no room.
    assert!(stored.len() + 150 < o.encode_to_vec().len(), "{} against {}", stored.len(), o.encode_to_vec().len());
    assert!(!stored.windows(6).any(|w| w == &o.message_id.as_bytes()[..6]), "the message id is not stored");
    assert_eq!(decode_outcome(app, &o.message_id, &stored).unwrap(), o);
    // A transactional request's id (hex, no campaign), an update time before the creation
    // time, ids and times not of Herald's form, another app: each read back as written.
    let transactional = MessageOutcome {
        request_id: "03690135e02840b88cf7272ab19085e2".into(),
        campaign_id: String::new(),
        updated_date: crate::domain::timestamp(created - chrono::Duration::seconds(5)),
        ..o.clone()
    };
    assert_eq!(decode_outcome(app, &transactional.message_id, &encode_outcome(app, &transactional)).unwrap(), transactional);
    let odd = MessageOutcome {
        message_id: "m-1".into(),
        app_id: "other".into(),
        journey_id: "J".into(),
        request_id: campaign.into(),
        created_date: "yesterday".into(),
        ..o.clone()
    };
    assert_eq!(decode_outcome(app, "m-1", &encode_outcome(app, &odd)).unwrap(), odd);
    // A channel not among the usual names, an event-triggered run's suffix, a creation time
    // before the second its message id carries.
    let unusual = MessageOutcome {
        channel: "PIGEON".into(),
        request_id: format!("{campaign}:e00000000000000000123"),
        created_date: crate::domain::timestamp(created - chrono::Duration::seconds(90)),
        ..o.clone()
    };
    assert_eq!(decode_outcome(app, &o.message_id, &encode_outcome(app, &unusual)).unwrap(), unusual);
    for channel in CHANNELS {
        let c = MessageOutcome { channel: channel.into(), ..o.clone() };
        assert_eq!(decode_outcome(app, &o.message_id, &encode_outcome(app, &c)).unwrap(), c);
    }
    assert!(encode_outcome(app, &o).len() + 5 < encode_outcome(app, &unusual).len(), "the usual forms are the small ones");
    assert_eq!(decode_outcome(app, &o.message_id, &o.encode_to_vec()).unwrap(), o, "plain protobuf");
    // An earlier release's stored form: the message id and request id inside, both times
    // absolute (flags 0x1f: created, updated, message, request, campaign).
    let mut earlier = vec![0, 0x1f];
    let ms = |t: &str| chrono::DateTime::parse_from_rfc3339(t).unwrap().timestamp_millis() as u64;
    prost::encoding::encode_varint(ms(&transactional.created_date), &mut earlier);
    prost::encoding::encode_varint(ms(&transactional.updated_date), &mut earlier);
    for id in [&transactional.message_id, &transactional.request_id, &o.campaign_id] {
        earlier.extend(pack_id(id).unwrap());
    }
    let body = MessageOutcome {
        message_id: String::new(),
        app_id: app.into(),
        request_id: String::new(),
        campaign_id: String::new(),
        created_date: String::new(),
        updated_date: String::new(),
        ..transactional.clone()
    };
    earlier.extend(body.encode_to_vec());
    let want = MessageOutcome { campaign_id: o.campaign_id.clone(), ..transactional.clone() };
    assert_eq!(decode_outcome(app, "ignored when the value holds it", &earlier).unwrap(), want);
    // Cut short anywhere in its header: an error, never a wrong outcome.
    for cut in 1..8 {
        assert!(decode_outcome(app, &o.message_id, &stored[..cut]).is_err(), "cut at {cut}");
    }
}
#[test]
fn events_read_back_as_written_and_earlier_values_still_read() {
    let app = "7d9150b0a90743e5b071f749857b5b22";
    let now = crate::domain::timestamp(chrono::Utc::now());
    let e = Event {
        event_type: "_email.send".into(),
        event_timestamp: now.clone(),
        arrival_timestamp: now.clone(),
        app_id: app.into(),
        client_id: "ep-1".into(),
        attributes: [("campaign_id".to_string(), "95c5eb3a52954f908bb3b9b6c5e47e13".to_string())].into(),
        message_id: crate::domain::new_message_id(),
        ..Default::default()
    };
    let stored = encode_event(app, &e);
    assert!(stored.len() + 80 < e.encode_to_vec().len(), "{} against {}", stored.len(), e.encode_to_vec().len());
    assert_eq!(decode_event(app, &stored).unwrap(), e);
    let later = Event { arrival_timestamp: crate::domain::timestamp(chrono::Utc::now() + chrono::Duration::seconds(3)), ..e.clone() };
    assert_eq!(decode_event(app, &encode_event(app, &later)).unwrap(), later);
    let reported = Event { event_timestamp: "2026-12-06T22:00:00Z".into(), message_id: String::new(), app_id: "x".into(), ..e.clone() };
    assert_eq!(decode_event(app, &encode_event(app, &reported)).unwrap(), reported);
    let none = Event { event_timestamp: String::new(), arrival_timestamp: String::new(), ..e.clone() };
    assert_eq!(decode_event(app, &encode_event(app, &none)).unwrap(), none);
    assert_eq!(decode_event(app, &e.encode_to_vec()).unwrap(), e, "plain protobuf");
}

#[test]
fn cut_fields_are_the_numbers_the_descriptors_give_and_the_bytes_are_those_of_cleared_copies() {
    let pool = prost_reflect::DescriptorPool::decode(crate::proto::FILE_DESCRIPTOR_SET).unwrap();
    for (message, fields) in [
        (
            "Endpoint",
            &[("application_id", 2), ("effective_date", 12), ("creation_date", 14), ("request_id", 15), ("last_activity_date", 16)][..],
        ),
        (
            "MessageOutcome",
            &[
                ("message_id", 1),
                ("app_id", 2),
                ("request_id", 4),
                ("campaign_id", 5),
                ("journey_id", 7),
                ("created_date", 16),
                ("updated_date", 17),
            ],
        ),
        ("Event", &[("event_id", 1), ("event_timestamp", 3), ("arrival_timestamp", 4), ("app_id", 5), ("message_id", 9)]),
    ] {
        let d = pool.get_message_by_name(&format!("herald.v1.{message}")).unwrap();
        for (name, number) in fields {
            assert_eq!(d.get_field_by_name(name).map(|f| f.number()), Some(*number), "{message}.{name}");
        }
    }
    // What earlier releases wrote (a copy with the packed fields cleared, encoded after the
    // header) is what is written now, byte for byte.
    let app = "7d9150b0a90743e5b071f749857b5b22";
    let e = endpoint();
    let mut cleared = Endpoint { application_id: String::new(), effective_date: String::new(), creation_date: String::new(), ..e.clone() };
    cleared.request_id.clear();
    let mut want = vec![MARK, EP_EFFECTIVE | EP_CREATED | EP_REQUEST | EP_APP];
    prost::encoding::encode_varint(parse_millis(&e.effective_date).unwrap(), &mut want);
    prost::encoding::encode_varint(parse_millis(&e.creation_date).unwrap(), &mut want);
    want.extend(parse_hex16(&e.request_id).unwrap());
    cleared.encode_raw(&mut want);
    assert_eq!(encode_endpoint(app, &e), want);
    let now = crate::domain::timestamp(chrono::Utc::now());
    let ev = Event {
        event_id: "e1".into(),
        event_type: "_email.click".into(),
        event_timestamp: now.clone(),
        arrival_timestamp: now,
        app_id: app.into(),
        message_id: crate::domain::new_message_id(),
        attributes: [("link".to_string(), "https://shop.example/".to_string())].into(),
        metrics: [("n".to_string(), 1.5)].into(),
        ..Default::default()
    };
    let cleared = Event {
        event_id: String::new(),
        event_timestamp: String::new(),
        arrival_timestamp: String::new(),
        app_id: String::new(),
        message_id: String::new(),
        attributes: Default::default(),
        ..ev.clone()
    };
    let mut want = vec![MARK, EV_TIME | EV_ARRIVAL_SAME | EV_MESSAGE | EV_APP];
    prost::encoding::encode_varint(parse_millis(&ev.event_timestamp).unwrap(), &mut want);
    want.extend(parse_hex16(&ev.message_id).unwrap());
    cleared.encode_raw(&mut want);
    // The attributes after the rest (in key order: one here).
    Event { attributes: ev.attributes.clone(), ..Default::default() }.encode_raw(&mut want);
    assert_eq!(encode_event(app, &ev), want);
    // Many attributes: in key order, whatever the map's, and read back whole.
    let many = Event { attributes: (0..20).map(|i| (format!("k{i:02}"), format!("v{i}"))).collect(), ..ev.clone() };
    let stored = encode_event(app, &many);
    let at = |k: &str| stored.windows(3).position(|w| w == k.as_bytes()).unwrap();
    assert!((1..20).all(|i| at(&format!("k{:02}", i - 1)) < at(&format!("k{i:02}"))));
    assert_eq!(decode_event(app, &stored).unwrap(), Event { event_id: String::new(), ..many });
}

#[test]
fn stripping_keeps_every_other_field_of_every_wire_type() {
    // varint 3, fixed64 4, bytes 5 (dropped), fixed32 6, bytes 7.
    let mut buf = vec![9u8];
    for (key, value) in [
        (3u64 << 3, vec![0x96, 0x01]),
        ((4 << 3) | 1, vec![1; 8]),
        ((5 << 3) | 2, vec![2, b'h', b'i']),
        ((6 << 3) | 5, vec![3; 4]),
        ((7 << 3) | 2, vec![1, b'z']),
    ] {
        prost::encoding::encode_varint(key, &mut buf);
        buf.extend(value);
    }
    let mut without = buf.clone();
    strip_fields(&mut without, 1, 1 << 5);
    let mut want = buf.clone();
    let at = want.iter().position(|&b| b == (5 << 3) | 2).unwrap();
    want.drain(at..at + 4);
    assert_eq!(without, want);
    strip_fields(&mut without, 1, 1 << 3 | 1 << 7);
    assert_eq!(without.len(), 1 + 9 + 5);
}

#[test]
fn event_blocks_hold_a_batch_in_order_and_refuse_corrupt_bytes() {
    let app = "7d9150b0a90743e5b071f749857b5b22";
    let event = |i: u32| Event {
        event_type: "_email.send".into(),
        event_timestamp: "2026-12-06T22:33:50.217Z".into(),
        arrival_timestamp: "2026-12-06T22:33:50.217Z".into(),
        app_id: app.into(),
        client_id: format!("ep-{i:09}"),
        message_id: format!("{:032x}", u128::from(i) * 7_919),
        attributes: [
            ("campaign_id".to_string(), "e826da1657d246ad82e44f490c20146f".to_string()),
            ("campaign_activity_id".to_string(), "e826da1657d246ad82e44f490c20146f:000000-0".to_string()),
        ]
        .into(),
        ..Default::default()
    };
    let events: Vec<Event> = (0..200).map(event).collect();
    let block = encode_event_block(app, &events).expect("like events compress");
    let raw: usize = events.iter().map(|e| encode_event(app, e).len()).sum();
    assert!(block.len() * 4 < raw, "{} bytes for {raw}", block.len());
    let opened = EventBlock::open(&block).unwrap();
    assert_eq!(opened.len(), 200);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(&decode_event(app, opened.get(i).unwrap()).unwrap(), e);
    }
    assert!(opened.get(200).is_none());
    // One event is stored as it is.
    assert!(encode_event_block(app, &events[..1]).is_none());
    // Bytes that are not a block written here are refused, never read past or trusted for
    // their size.
    for bad in [&block[..2], &block[..block.len() / 2], &[0xff, 0xff, 0xff, 0x7f, 0][..], &[4, 0, 0, 0, 0x40, 1, 2, 3, 4][..]] {
        assert!(matches!(EventBlock::open(bad), Err(StoreError::Corrupt(_))), "{bad:?}");
    }
}

#[test]
fn an_event_s_attributes_encode_alike_in_any_map_order_and_read_back_whole() {
    let app = "7d9150b0a90743e5b071f749857b5b22";
    let pairs: Vec<(String, String)> =
        (0..12).map(|i| (format!("attr-{}", (i * 7) % 12), "v".repeat(i))).chain([(String::new(), "empty key".into())]).collect();
    let e = Event {
        event_type: "_email.send".into(),
        app_id: app.into(),
        client_id: "ep-1".into(),
        message_id: crate::domain::new_message_id(),
        facets_json: "{}".into(),
        attributes: pairs.iter().cloned().collect(),
        metrics: [("n".to_string(), 2.0)].into(),
        ..Default::default()
    };
    // The same entries, put in the map in the opposite order (a map's capacity and insertion
    // order change its iteration order).
    let mut reversed = std::collections::HashMap::with_capacity(64);
    reversed.extend(pairs.iter().rev().cloned());
    let other = Event { attributes: reversed, ..e.clone() };
    assert_eq!(encode_event(app, &e), encode_event(app, &other));
    assert_eq!(decode_event(app, &encode_event(app, &e)).unwrap(), e);
    // Fields after the attributes in the protobuf (facets, metrics) stay before them, whole.
    let stored = encode_event(app, &e);
    let facets = stored.windows(2).position(|w| w == b"{}").unwrap();
    let first_attr = stored.windows(5).position(|w| w == b"attr-").unwrap();
    assert!(facets < first_attr);
}
