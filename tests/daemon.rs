//! The real daemon, started on ephemeral ports against each backend, exercised over gRPC.

#[macro_use]
mod common;

use common::{Backend, Daemon};
use herald::proto::v1::{
    AppSettings, CampaignLimits, ChannelType, DeleteAppRequest, DeleteEndpointRequest, DeleteUserEndpointsRequest, Endpoint,
    EndpointDemographic, EndpointLocation, EndpointStatus, EndpointUser, GetAppRequest, GetEndpointRequest, GetUserEndpointsRequest,
    ImportEndpointsRequest, ListAppsRequest, QuietTime, RemoveAttributesRequest, UpdateAppSettingsRequest, UpdateEndpointRequest,
    UpdateEndpointsBatchRequest,
};
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

fn fields(status: &Status) -> Vec<String> {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let details = status.get_error_details();
    let br = details.bad_request().unwrap_or_else(|| panic!("no BadRequest details in {status:?}"));
    let mut f: Vec<String> = br.field_violations.iter().map(|v| v.field.clone()).collect();
    f.sort();
    f
}

fn email(id: &str, address: &str, user: Option<&str>) -> Endpoint {
    Endpoint {
        id: id.into(),
        channel_type: ChannelType::Email as i32,
        address: address.into(),
        user: user.map(|u| EndpointUser { user_id: u.into(), ..Default::default() }),
        ..Default::default()
    }
}

async fn health_and_reflection_need_no_key(backend: Backend) {
    use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest};
    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
        server_reflection_response::MessageResponse, ServerReflectionRequest,
    };
    let d = Daemon::start(backend);
    let mut health = HealthClient::new(d.channel().await);
    for service in ["", "herald.v1.Apps", "herald.v1.Endpoints"] {
        let r = health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{service}");
    }
    let mut reflection = ServerReflectionClient::new(d.channel().await);
    let requests = vec![
        ServerReflectionRequest { host: String::new(), message_request: Some(MessageRequest::ListServices(String::new())) },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol("herald.v1.Endpoints".into())),
        },
    ];
    let mut answers = reflection.server_reflection_info(tokio_stream::iter(requests)).await.unwrap().into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) = answers.message().await.unwrap().unwrap().message_response else {
        panic!("no service list")
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for n in ["herald.v1.Apps", "herald.v1.Endpoints", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|x| x == n), "{n} not in {names:?}");
    }
    let Some(MessageResponse::FileDescriptorResponse(files)) = answers.message().await.unwrap().unwrap().message_response else {
        panic!("no descriptor")
    };
    assert!(!files.file_descriptor_proto.is_empty());
}

async fn calls_need_a_valid_api_key(backend: Backend) {
    let d = Daemon::start(backend);
    let mut apps = d.apps().await;
    let err = apps.list_apps(Request::new(ListAppsRequest::default())).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let mut wrong = Request::new(ListAppsRequest::default());
    wrong.metadata_mut().insert("authorization", "Bearer not-the-key-0000000000".parse().unwrap());
    assert_eq!(apps.list_apps(wrong).await.unwrap_err().code(), Code::Unauthenticated);
    let mut endpoints = d.endpoints().await;
    let err = endpoints.get_endpoint(Request::new(GetEndpointRequest { app_id: "a".into(), endpoint_id: "e".into() })).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(apps.list_apps(d.req(ListAppsRequest::default())).await.is_ok());
}

async fn apps_lifecycle(backend: Backend) {
    let d = Daemon::start(backend);
    let mut apps = d.apps().await;
    let mut ids: Vec<String> = Vec::new();
    for name in ["one", "two", "three"] {
        let app = d.create_app(name).await;
        assert_eq!(app.app_id.len(), 32);
        assert!(!app.creation_date.is_empty());
        ids.push(app.app_id);
    }
    ids.sort();
    let first = apps.list_apps(d.req(ListAppsRequest { page_size: 2, page_token: String::new() })).await.unwrap().into_inner();
    assert_eq!(first.apps.len(), 2);
    assert!(!first.next_page_token.is_empty());
    let second = apps.list_apps(d.req(ListAppsRequest { page_size: 2, page_token: first.next_page_token })).await.unwrap().into_inner();
    assert_eq!(second.apps.len(), 1);
    assert!(second.next_page_token.is_empty());
    let listed: Vec<_> = first.apps.iter().chain(&second.apps).map(|a| a.app_id.clone()).collect();
    assert_eq!(listed, ids);

    let err =
        apps.create_app(d.req(herald::proto::v1::CreateAppRequest { name: String::new(), tags: Default::default() })).await.unwrap_err();
    assert_eq!(fields(&err), ["name"]);

    let settings = AppSettings {
        limits: Some(CampaignLimits {
            daily: Some(5),
            total: Some(20),
            messages_per_second: Some(100),
            maximum_duration: Some(3600),
            session: None,
        }),
        quiet_time: Some(QuietTime { start: "22:00".into(), end: "07:00".into() }),
        ..Default::default()
    };
    let app = apps
        .update_app_settings(d.req(UpdateAppSettingsRequest { app_id: ids[0].clone(), settings: Some(settings) }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(app.settings.as_ref().unwrap().limits.unwrap().daily, Some(5));
    let got = apps.get_app(d.req(GetAppRequest { app_id: ids[0].clone() })).await.unwrap().into_inner();
    assert_eq!(got.settings.unwrap().quiet_time.unwrap().end, "07:00");
    let bad = AppSettings {
        limits: Some(CampaignLimits { daily: Some(101), messages_per_second: Some(0), ..Default::default() }),
        quiet_time: Some(QuietTime { start: "25:00".into(), end: "07:00".into() }),
        ..Default::default()
    };
    let err = apps.update_app_settings(d.req(UpdateAppSettingsRequest { app_id: ids[0].clone(), settings: Some(bad) })).await.unwrap_err();
    assert_eq!(fields(&err), ["settings.limits.daily", "settings.limits.messages_per_second", "settings.quiet_time.start"]);

    apps.delete_app(d.req(DeleteAppRequest { app_id: ids[1].clone() })).await.unwrap();
    assert_eq!(apps.get_app(d.req(GetAppRequest { app_id: ids[1].clone() })).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(apps.delete_app(d.req(DeleteAppRequest { app_id: ids[1].clone() })).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(apps.get_app(d.req(GetAppRequest { app_id: "no such app!".into() })).await.unwrap_err().code(), Code::InvalidArgument);
}

async fn bad_endpoints_are_refused_field_by_field(backend: Backend) {
    let d = Daemon::start(backend);
    let app = d.create_app("v").await.app_id;
    let mut eps = d.endpoints().await;
    let mut e = email("", "not an address", None);
    e.location = Some(EndpointLocation { country: "XX".into(), latitude: Some(120.0), ..Default::default() });
    e.demographic = Some(EndpointDemographic { timezone: "Moon/Base".into(), ..Default::default() });
    let err = eps
        .update_endpoint(d.req(UpdateEndpointRequest { app_id: app.clone(), endpoint_id: "e1".into(), endpoint: Some(e) }))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["endpoint.demographic.timezone", "endpoint.location.country", "endpoint.location.latitude"]);
    let err = eps
        .update_endpoint(d.req(UpdateEndpointRequest {
            app_id: app.clone(),
            endpoint_id: "e1".into(),
            endpoint: Some(email("", "bad@", None)),
        }))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["endpoint.address"]);
    let sms = Endpoint { id: "s".into(), channel_type: ChannelType::Sms as i32, address: "555-0100".into(), ..Default::default() };
    let custom = Endpoint { id: "c".into(), channel_type: ChannelType::Custom as i32, address: "ftp://x".into(), ..Default::default() };
    let err = eps
        .update_endpoints_batch(
            d.req(UpdateEndpointsBatchRequest { app_id: app.clone(), endpoints: vec![email("ok", "ok@example.com", None), sms, custom] }),
        )
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["endpoints[1].address", "endpoints[2].address"]);
    let missing = eps.get_endpoint(d.req(GetEndpointRequest { app_id: app.clone(), endpoint_id: "ok".into() })).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "a rejected batch writes nothing");
    let too_many: Vec<_> = (0..10_001).map(|i| email(&format!("e{i}"), &format!("u{i}@example.com"), None)).collect();
    let err =
        eps.update_endpoints_batch(d.req(UpdateEndpointsBatchRequest { app_id: app.clone(), endpoints: too_many })).await.unwrap_err();
    assert_eq!(fields(&err), ["endpoints"]);
    let err = eps
        .update_endpoint(d.req(UpdateEndpointRequest {
            app_id: "0".repeat(32),
            endpoint_id: "e1".into(),
            endpoint: Some(email("", "a@example.com", None)),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

async fn endpoints_lifecycle(backend: Backend) {
    let d = Daemon::start(backend);
    let app = d.create_app("e").await.app_id;
    let mut eps = d.endpoints().await;
    let batch: Vec<_> =
        (0..10_000).map(|i| email(&format!("e{i}"), &format!("u{i}@example.com"), Some(&format!("user{}", i % 2000)))).collect();
    let written = eps
        .update_endpoints_batch(d.req(UpdateEndpointsBatchRequest { app_id: app.clone(), endpoints: batch }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(written.endpoints.len(), 10_000);
    let got = eps.get_endpoint(d.req(GetEndpointRequest { app_id: app.clone(), endpoint_id: "e42".into() })).await.unwrap().into_inner();
    assert_eq!(got.address, "u42@example.com");
    assert_eq!(got.endpoint_status, EndpointStatus::Active as i32);
    assert_eq!(got.cohort_id, herald::domain::endpoint::cohort_id("e42"));
    let user = eps
        .get_user_endpoints(d.req(GetUserEndpointsRequest { app_id: app.clone(), user_id: "user42".into() }))
        .await
        .unwrap()
        .into_inner();
    let mut ids: Vec<_> = user.endpoints.iter().map(|e| e.id.clone()).collect();
    ids.sort();
    assert_eq!(ids, ["e2042", "e4042", "e42", "e6042", "e8042"]);
    // Same address on a new endpoint retires the old one.
    let newer = eps
        .update_endpoint(d.req(UpdateEndpointRequest {
            app_id: app.clone(),
            endpoint_id: "fresh".into(),
            endpoint: Some(email("", "u42@example.com", None)),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(newer.endpoint_status, EndpointStatus::Active as i32);
    let old = eps.get_endpoint(d.req(GetEndpointRequest { app_id: app.clone(), endpoint_id: "e42".into() })).await.unwrap().into_inner();
    assert_eq!(old.endpoint_status, EndpointStatus::Inactive as i32);

    eps.delete_endpoint(d.req(DeleteEndpointRequest { app_id: app.clone(), endpoint_id: "e42".into() })).await.unwrap();
    assert_eq!(
        eps.get_endpoint(d.req(GetEndpointRequest { app_id: app.clone(), endpoint_id: "e42".into() })).await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(
        eps.delete_endpoint(d.req(DeleteEndpointRequest { app_id: app.clone(), endpoint_id: "e42".into() })).await.unwrap_err().code(),
        Code::NotFound
    );
    let deleted = eps
        .delete_user_endpoints(d.req(DeleteUserEndpointsRequest { app_id: app.clone(), user_id: "user42".into() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.endpoints.len(), 4);
    assert_eq!(
        eps.get_user_endpoints(d.req(GetUserEndpointsRequest { app_id: app.clone(), user_id: "user42".into() })).await.unwrap_err().code(),
        Code::NotFound
    );
}

async fn imports_write_good_rows_and_report_bad_ones(backend: Backend) {
    let d = Daemon::start(backend);
    let app = d.create_app("i").await.app_id;
    let mut eps = d.endpoints().await;
    let bad_at = [7u64, 1500, 2499];
    let mut messages = vec![ImportEndpointsRequest { app_id: app.clone(), endpoints: vec![] }];
    let mut all: Vec<Endpoint> = (0..2500u64)
        .map(|i| {
            if bad_at.contains(&i) {
                Endpoint { id: format!("b{i}"), channel_type: ChannelType::Sms as i32, address: "12".into(), ..Default::default() }
            } else {
                email(&format!("i{i}"), &format!("i{i}@example.com"), None)
            }
        })
        .collect();
    while !all.is_empty() {
        let rest = all.split_off(all.len().min(700));
        messages.push(ImportEndpointsRequest { app_id: String::new(), endpoints: std::mem::replace(&mut all, rest) });
    }
    let r = eps.import_endpoints(d.req(tokio_stream::iter(messages))).await.unwrap().into_inner();
    assert_eq!((r.received, r.written, r.rejected_count), (2500, 2497, 3));
    let mut indexes: Vec<_> = r.rejected.iter().map(|x| (x.index, x.endpoint_id.clone(), x.field.clone())).collect();
    indexes.sort();
    assert_eq!(indexes, bad_at.iter().map(|i| (*i, format!("b{i}"), "address".to_string())).collect::<Vec<_>>());
    assert!(eps.get_endpoint(d.req(GetEndpointRequest { app_id: app.clone(), endpoint_id: "i2498".into() })).await.is_ok());

    let unknown = vec![ImportEndpointsRequest { app_id: "f".repeat(32), endpoints: vec![email("x", "x@example.com", None)] }];
    assert_eq!(eps.import_endpoints(d.req(tokio_stream::iter(unknown))).await.unwrap_err().code(), Code::NotFound);
    let anonymous = vec![ImportEndpointsRequest { app_id: String::new(), endpoints: vec![email("x", "x@example.com", None)] }];
    assert_eq!(fields(&eps.import_endpoints(d.req(tokio_stream::iter(anonymous))).await.unwrap_err()), ["app_id"]);
}

async fn metrics_count_calls(backend: Backend) {
    let d = Daemon::start(backend);
    let app = d.create_app("m").await.app_id;
    let mut eps = d.endpoints().await;
    eps.update_endpoint(d.req(UpdateEndpointRequest {
        app_id: app.clone(),
        endpoint_id: "e1".into(),
        endpoint: Some(email("", "a@example.com", None)),
    }))
    .await
    .unwrap();
    let _ = eps.get_endpoint(d.req(GetEndpointRequest { app_id: app.clone(), endpoint_id: "nope".into() })).await;
    let text = d.metrics_text();
    assert!(text.contains(r#"herald_grpc_requests_total{method="GetEndpoint",code="NOT_FOUND"} 1"#), "{text}");
    assert!(text.contains(r#"herald_grpc_requests_total{method="CreateApp",code="OK"} 1"#), "{text}");
    assert!(text.contains("herald_endpoints_written_total 1"), "{text}");
    assert!(text.contains("herald_grpc_request_duration_seconds_bucket"), "{text}");
    assert!(text.contains(r#"herald_store_operation_duration_seconds_bucket{backend="#) && text.contains(r#"op="get_endpoint""#), "{text}");
    let backend_label = if backend == Backend::Redis { "redis" } else { "embedded" };
    assert!(text.contains(&format!(r#"backend="{backend_label}""#)), "{text}");
}

async fn sigterm_exits_cleanly_and_state_survives(backend: Backend) {
    let d = Daemon::start(backend);
    let app = d.create_app("persist").await.app_id;
    let mut eps = d.endpoints().await;
    eps.update_endpoint(d.req(UpdateEndpointRequest {
        app_id: app.clone(),
        endpoint_id: "keep".into(),
        endpoint: Some(email("", "keep@example.com", Some("u"))),
    }))
    .await
    .unwrap();
    let d = d.restart();
    let mut eps = d.endpoints().await;
    let e = eps.get_endpoint(d.req(GetEndpointRequest { app_id: app.clone(), endpoint_id: "keep".into() })).await.unwrap().into_inner();
    assert_eq!(e.address, "keep@example.com");
    let apps = d.apps().await.list_apps(d.req(ListAppsRequest::default())).await.unwrap().into_inner();
    assert_eq!(apps.apps.len(), 1);
}

async fn suppression_lists_over_grpc(backend: Backend) {
    use herald::proto::v1::{
        suppressions_client::SuppressionsClient, AddSuppressionsRequest, CheckSuppressionRequest, ListSuppressionsRequest,
        RemoveSuppressionRequest, Suppression, SuppressionReason,
    };
    let d = Daemon::start(backend);
    let app = d.create_app("s").await.app_id;
    let mut c = SuppressionsClient::new(d.channel().await);
    let entry = |a: &str, reason: SuppressionReason| Suppression { address: a.into(), reason: reason as i32, ..Default::default() };
    let r = c
        .add_suppressions(d.req(AddSuppressionsRequest {
            app_id: app.clone(),
            suppressions: vec![
                entry("Ana@Example.COM", SuppressionReason::Complaint),
                entry("+14155550100", SuppressionReason::Unspecified),
            ],
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.added, 2);
    let ana = c
        .check_suppression(d.req(CheckSuppressionRequest { app_id: app.clone(), address: "ana@example.com".into() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((ana.address.as_str(), ana.reason), ("ana@example.com", SuppressionReason::Complaint as i32));
    assert!(!ana.created_date.is_empty());
    let phone = c
        .check_suppression(d.req(CheckSuppressionRequest { app_id: app.clone(), address: "+14155550100".into() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(phone.reason, SuppressionReason::Manual as i32, "unspecified reasons are manual");
    let err =
        c.check_suppression(d.req(CheckSuppressionRequest { app_id: app.clone(), address: "bob@example.com".into() })).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = c
        .add_suppressions(d.req(AddSuppressionsRequest {
            app_id: app.clone(),
            suppressions: vec![entry("ok@example.com", SuppressionReason::Manual), entry("", SuppressionReason::Manual)],
        }))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["suppressions[1].address"]);
    assert_eq!(
        c.check_suppression(d.req(CheckSuppressionRequest { app_id: app.clone(), address: "ok@example.com".into() }))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound,
        "a rejected batch writes nothing"
    );
    let list = c
        .list_suppressions(d.req(ListSuppressionsRequest { app_id: app.clone(), page_size: 10, page_token: String::new() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.suppressions.len(), 2);
    c.remove_suppression(d.req(RemoveSuppressionRequest { app_id: app.clone(), address: "ANA@example.com".into() })).await.unwrap();
    let err =
        c.remove_suppression(d.req(RemoveSuppressionRequest { app_id: app.clone(), address: "ana@example.com".into() })).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = c
        .list_suppressions(d.req(ListSuppressionsRequest { app_id: "0".repeat(32), page_size: 10, page_token: String::new() }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

/// RemoveAttributes as Pinpoint documents it: the endpoints keep their values, and no write
/// (single, batch, import) captures new or changed values of a removed name or pattern.
async fn removed_attributes_are_no_longer_captured(backend: Backend) {
    let d = Daemon::start(backend);
    let app = d.create_app("attrs").await.app_id;
    let mut eps = d.endpoints().await;
    let v = |s: &str| herald::proto::v1::AttributeValues { values: vec![s.into()] };
    let with = |id: &str, interest: &str, colour: &str, plan: &str, cart: f64, visits: f64, name: &str| Endpoint {
        attributes: [("Interests".into(), v(interest)), ("FavColour".into(), v(colour)), ("Plan".into(), v(plan))].into(),
        metrics: [("cart".into(), cart), ("visits".into(), visits)].into(),
        user: Some(EndpointUser { user_id: "u1".into(), user_attributes: [("FirstName".into(), v(name))].into() }),
        ..email(id, &format!("{id}@example.com"), None)
    };
    let update = |e: Endpoint| UpdateEndpointRequest { app_id: app.clone(), endpoint_id: e.id.clone(), endpoint: Some(e) };
    eps.update_endpoint(d.req(update(with("e1", "hiking", "red", "free", 2.0, 1.0, "Ana")))).await.unwrap();

    let remove = |kind: &str, names: &[&str]| RemoveAttributesRequest {
        app_id: app.clone(),
        attribute_type: kind.into(),
        blacklist: names.iter().map(|n| n.to_string()).collect(),
    };
    let err = eps.remove_attributes(d.req(remove("endpoint-attributes", &[]))).await.unwrap_err();
    assert_eq!(fields(&err), ["attribute_type", "blacklist"]);
    let mut unknown = remove("endpoint-custom-attributes", &["x"]);
    unknown.app_id = "f".repeat(32);
    assert_eq!(eps.remove_attributes(d.req(unknown)).await.unwrap_err().code(), Code::NotFound);
    let r = eps.remove_attributes(d.req(remove("endpoint-custom-attributes", &["Interests", "Fav*"]))).await.unwrap().into_inner();
    assert_eq!(
        (r.app_id.as_str(), r.attribute_type.as_str(), r.attributes.clone()),
        (app.as_str(), "endpoint-custom-attributes", vec!["Interests".to_string(), "Fav*".into()])
    );
    eps.remove_attributes(d.req(remove("endpoint-metric-attributes", &["cart"]))).await.unwrap();
    eps.remove_attributes(d.req(remove("endpoint-user-attributes", &["First?ame"]))).await.unwrap();

    // The stored values stay; the changed ones of removed attributes are not captured.
    let e1 = eps.update_endpoint(d.req(update(with("e1", "chess", "blue", "pro", 5.0, 9.0, "Bo")))).await.unwrap().into_inner();
    assert_eq!((e1.attributes["Interests"].values[0].as_str(), e1.attributes["FavColour"].values[0].as_str()), ("hiking", "red"));
    assert_eq!(e1.attributes["Plan"].values, ["pro"], "other attributes change as usual");
    assert_eq!((e1.metrics["cart"], e1.metrics["visits"]), (2.0, 9.0));
    assert_eq!(e1.user.as_ref().unwrap().user_attributes["FirstName"].values, ["Ana"]);
    // New endpoints, by batch and by import, do not get them at all.
    eps.update_endpoints_batch(
        d.req(UpdateEndpointsBatchRequest { app_id: app.clone(), endpoints: vec![with("e2", "chess", "blue", "pro", 5.0, 9.0, "Bo")] }),
    )
    .await
    .unwrap();
    let msgs = vec![ImportEndpointsRequest { app_id: app.clone(), endpoints: vec![with("e3", "golf", "green", "team", 1.0, 1.0, "Cy")] }];
    assert_eq!(eps.import_endpoints(d.req(tokio_stream::iter(msgs))).await.unwrap().into_inner().written, 1);
    for id in ["e2", "e3"] {
        let e = eps.get_endpoint(d.req(GetEndpointRequest { app_id: app.clone(), endpoint_id: id.into() })).await.unwrap().into_inner();
        assert_eq!(e.attributes.keys().collect::<Vec<_>>(), ["Plan"], "{id}");
        assert_eq!(e.metrics.keys().collect::<Vec<_>>(), ["visits"], "{id}");
        assert!(e.user.unwrap().user_attributes.is_empty(), "{id}");
    }
    // It holds for the next daemon too (the list is in the store).
    let d = d.restart();
    let mut eps = d.endpoints().await;
    let e1 = eps.update_endpoint(d.req(update(with("e1", "golf", "pink", "team", 7.0, 3.0, "Di")))).await.unwrap().into_inner();
    assert_eq!((e1.attributes["Interests"].values[0].as_str(), e1.attributes["Plan"].values[0].as_str()), ("hiking", "team"));
}

on_both_backends!(
    health_and_reflection_need_no_key,
    calls_need_a_valid_api_key,
    apps_lifecycle,
    bad_endpoints_are_refused_field_by_field,
    endpoints_lifecycle,
    imports_write_good_rows_and_report_bad_ones,
    metrics_count_calls,
    sigterm_exits_cleanly_and_state_survives,
    suppression_lists_over_grpc,
    removed_attributes_are_no_longer_captured,
);
