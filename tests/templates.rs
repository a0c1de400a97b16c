//! Templates over gRPC on both backends: versions, the active version, validation, previews.

#[macro_use]
mod common;

use common::{Backend, Daemon};
use herald::proto::v1::{
    render_template_request::Recipient, template::Content, AttributeValues, CreateTemplateRequest, DeleteTemplateRequest, EmailTemplate,
    Endpoint, EndpointUser, GetTemplateRequest, ListTemplateVersionsRequest, ListTemplatesRequest, RenderTemplateRequest, SmsTemplate,
    Template, TemplateType, UpdateEndpointRequest, UpdateTemplateActiveVersionRequest, UpdateTemplateRequest,
};
use tonic::Code;
use tonic_types::StatusExt;

fn email(name: &str, subject: &str, html: &str) -> Template {
    Template {
        name: name.into(),
        default_substitutions: r#"{"User.UserAttributes.FirstName": "friend"}"#.into(),
        content: Some(Content::Email(EmailTemplate {
            subject: subject.into(),
            html_part: html.into(),
            text_part: "Hi {{User.UserAttributes.FirstName}}".into(),
            list_unsubscribe_url: "https://shop.example/unsubscribe/{{Id}}".into(),
        })),
        ..Default::default()
    }
}

fn sms(name: &str, body: &str) -> Template {
    Template { name: name.into(), content: Some(Content::Sms(SmsTemplate { body: body.into() })), ..Default::default() }
}

fn render_req(
    app: &str,
    name: &str,
    version: i32,
    recipient: Option<Recipient>,
    substitutions: std::collections::HashMap<String, AttributeValues>,
) -> RenderTemplateRequest {
    RenderTemplateRequest { app_id: app.to_string(), name: name.into(), version, recipient, substitutions }
}

async fn versions_and_the_active_version(backend: Backend) {
    let d = Daemon::start(backend);
    let app = d.create_app("t").await.app_id;
    let mut c = herald::proto::v1::templates_client::TemplatesClient::new(d.channel().await);
    let v1 = c
        .create_template(d.req(CreateTemplateRequest {
            app_id: app.clone(),
            template: Some(email("welcome", "Hey {{User.UserAttributes.FirstName}}", "<p>one</p>")),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((v1.version, v1.active_version, v1.template_type), (1, 1, TemplateType::Email as i32));
    let dup = c
        .create_template(d.req(CreateTemplateRequest { app_id: app.clone(), template: Some(email("welcome", "x", "y")) }))
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Code::AlreadyExists);
    let v2 = c
        .update_template(d.req(UpdateTemplateRequest {
            app_id: app.clone(),
            template: Some(email("welcome", "v2", "<p>two</p>")),
            overwrite_latest: false,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((v2.version, v2.active_version, v2.latest_version), (2, 1, 2));
    let active =
        c.get_template(d.req(GetTemplateRequest { app_id: app.clone(), name: "welcome".into(), version: 0 })).await.unwrap().into_inner();
    assert_eq!(active.version, 1, "a send that names no version uses the active version");
    let err = c
        .update_template(d.req(UpdateTemplateRequest {
            app_id: app.clone(),
            template: Some(sms("welcome", "text")),
            overwrite_latest: false,
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let set = c
        .update_template_active_version(d.req(UpdateTemplateActiveVersionRequest {
            app_id: app.clone(),
            name: "welcome".into(),
            version: "latest".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((set.version, set.active_version), (2, 2));
    let bad = c
        .update_template_active_version(d.req(UpdateTemplateActiveVersionRequest {
            app_id: app.clone(),
            name: "welcome".into(),
            version: "soon".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let versions = c
        .list_template_versions(d.req(ListTemplateVersionsRequest {
            app_id: app.clone(),
            name: "welcome".into(),
            page_size: 1,
            page_token: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(versions.versions.len(), 1);
    let rest = c
        .list_template_versions(d.req(ListTemplateVersionsRequest {
            app_id: app.clone(),
            name: "welcome".into(),
            page_size: 1,
            page_token: versions.next_page_token,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((rest.versions[0].version, rest.next_page_token.as_str()), (2, ""));

    c.create_template(d.req(CreateTemplateRequest { app_id: app.clone(), template: Some(sms("code", "Your code is {{Code}}")) }))
        .await
        .unwrap();
    let all = c.list_templates(d.req(ListTemplatesRequest { app_id: app.clone(), ..Default::default() })).await.unwrap().into_inner();
    assert_eq!(all.templates.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["code", "welcome"]);
    let only_sms = c
        .list_templates(d.req(ListTemplatesRequest { app_id: app.clone(), template_type: TemplateType::Sms as i32, ..Default::default() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(only_sms.templates.len(), 1);

    let err =
        c.delete_template(d.req(DeleteTemplateRequest { app_id: app.clone(), name: "welcome".into(), version: 2 })).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "the active version stays while others remain");
    let gone = c
        .delete_template(d.req(DeleteTemplateRequest { app_id: app.clone(), name: "welcome".into(), version: 0 }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(gone.deleted_versions, 2);
    let missing = c.get_template(d.req(GetTemplateRequest { app_id: app.clone(), name: "welcome".into(), version: 0 })).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
}

async fn bad_templates_are_refused_with_their_position(backend: Backend) {
    let d = Daemon::start(backend);
    let app = d.create_app("t").await.app_id;
    let mut c = herald::proto::v1::templates_client::TemplatesClient::new(d.channel().await);
    let broken = email("broken", "ok", "<p>\n  {{#if x}}never closed\n</p>");
    let err = c.create_template(d.req(CreateTemplateRequest { app_id: app.clone(), template: Some(broken) })).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let details = err.get_error_details();
    let v = &details.bad_request().unwrap().field_violations;
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].field, "template.email.html_part");
    assert!(v[0].description.contains("line") && v[0].description.contains("column"), "{}", v[0].description);
    let err = c
        .create_template(d.req(CreateTemplateRequest { app_id: app.clone(), template: Some(sms("long", &"x".repeat(1601))) }))
        .await
        .unwrap_err();
    assert_eq!(err.get_error_details().bad_request().unwrap().field_violations[0].field, "template.sms.body");
    let err = c.create_template(d.req(CreateTemplateRequest { app_id: "0".repeat(32), template: Some(sms("s", "x")) })).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

async fn previews_render_endpoints_and_report_failures(backend: Backend) {
    let d = Daemon::start(backend);
    let app = d.create_app("t").await.app_id;
    let mut eps = d.endpoints().await;
    let ana = Endpoint {
        channel_type: herald::proto::v1::ChannelType::Email as i32,
        address: "ana@example.com".into(),
        user: Some(EndpointUser {
            user_id: "ana".into(),
            user_attributes: [("FirstName".to_string(), AttributeValues { values: vec!["Ana".into()] })].into(),
        }),
        ..Default::default()
    };
    eps.update_endpoint(d.req(UpdateEndpointRequest { app_id: app.clone(), endpoint_id: "ana".into(), endpoint: Some(ana) }))
        .await
        .unwrap();
    let mut c = herald::proto::v1::templates_client::TemplatesClient::new(d.channel().await);
    let t = email(
        "news",
        "Hey {{User.UserAttributes.FirstName}}, your {{Month}} update is here",
        "<p>{{upper User.UserAttributes.FirstName}}</p>",
    );
    c.create_template(d.req(CreateTemplateRequest { app_id: app.clone(), template: Some(t) })).await.unwrap();
    let subs = [("Month".to_string(), AttributeValues { values: vec!["March".into()] })].into();
    let r =
        c.render_template(d.req(render_req(&app, "news", 0, Some(Recipient::EndpointId("ana".into())), subs))).await.unwrap().into_inner();
    assert!(r.error.is_none(), "{:?}", r.error);
    let part = |n: &str| r.parts.iter().find(|p| p.name == n).map(|p| p.content.clone()).unwrap();
    assert_eq!(part("subject"), "Hey Ana, your March update is here");
    assert_eq!(part("html_part"), "<p>ANA</p>");
    assert_eq!(part("list_unsubscribe_url"), "https://shop.example/unsubscribe/ana");
    assert!(r.mime.contains("multipart/alternative") && r.mime.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"), "{}", r.mime);
    assert!(r.mime.contains("To: ana@example.com"), "{}", r.mime);

    // An inline endpoint with no first name falls back to the default substitution.
    let inline = Endpoint { id: "x".into(), ..Default::default() };
    let r = c
        .render_template(d.req(render_req(&app, "news", 1, Some(Recipient::Endpoint(inline)), Default::default())))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.parts.iter().find(|p| p.name == "subject").unwrap().content, "Hey friend, your  update is here");

    c.create_template(d.req(CreateTemplateRequest {
        app_id: app.clone(),
        template: Some(sms("fails", "Total: {{divide 10 Metrics.zero}} — {{abbreviate Id 2}}")),
    }))
    .await
    .unwrap();
    let r = c
        .render_template(d.req(render_req(&app, "fails", 0, Some(Recipient::EndpointId("ana".into())), Default::default())))
        .await
        .unwrap()
        .into_inner();
    let e = r.error.expect("the render fails");
    assert_eq!(e.part, "body");
    assert!(e.message.contains("abbreviate"), "{}", e.message);
    assert!(r.parts.is_empty());

    c.create_template(
        d.req(CreateTemplateRequest {
            app_id: app.clone(), template: Some(sms("greek", "Γειά σου {{User.UserAttributes.FirstName}} 👋"))
        }),
    )
    .await
    .unwrap();
    let r = c
        .render_template(d.req(render_req(&app, "greek", 0, Some(Recipient::EndpointId("ana".into())), Default::default())))
        .await
        .unwrap()
        .into_inner();
    let shape = r.sms.unwrap();
    assert_eq!((shape.encoding.as_str(), shape.parts), ("UCS2", 1));

    // Each version compiles once however often it renders.
    for _ in 0..5 {
        c.render_template(d.req(render_req(&app, "news", 0, None, Default::default()))).await.unwrap();
    }
    let metrics = d.metrics_text();
    let compiled = metrics.lines().find(|l| l.starts_with("herald_template_compilations_total")).unwrap_or("");
    assert!(compiled.ends_with(" 3"), "news, fails and greek compile once each: {compiled}");
}

on_both_backends!(
    versions_and_the_active_version,
    bad_templates_are_refused_with_their_position,
    previews_render_endpoints_and_report_failures
);
