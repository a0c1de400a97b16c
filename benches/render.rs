//! Rendering cost per message: the monthly-newsletter email (subject, html and text parts,
//! 8 variables, one `#if`, one `#each`), with the context built per recipient, alone and with
//! MIME assembly; and the issue's two Pinpoint examples.

use std::collections::HashMap;
use std::sync::Arc;

/// The daemon's allocator (see `src/main.rs`), so the figures are the daemon's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{criterion_group, criterion_main, Criterion};
use herald::proto::v1::{
    template::Content, AttributeValues, ChannelType, EmailTemplate, Endpoint, EndpointLocation, EndpointUser, Template,
};
use herald::render::template::TemplateCache;
use herald::render::{mime, Renderer};

fn newsletter() -> Template {
    Template {
        app_id: "app".into(),
        name: "newsletter".into(),
        version: 1,
        default_substitutions: r#"{"User.UserAttributes.FirstName": "there"}"#.into(),
        content: Some(Content::Email(EmailTemplate {
            subject: "{{User.UserAttributes.FirstName}}, your {{Month}} update from {{Attributes.Brand}}".into(),
            html_part: concat!(
                "<html><body><h1>Hi {{User.UserAttributes.FirstName}}!</h1>",
                "<p>Here is what happened in {{Month}} on your {{Attributes.Plan}} plan.</p>",
                "{{#if Attributes.Coupon}}<p>Your coupon: <b>{{Attributes.Coupon}}</b></p>{{/if}}",
                "<ul>{{#each User.UserAttributes.Interests}}<li>{{this}}</li>{{/each}}</ul>",
                "<p>You visited {{Metrics.Visits}} times from {{Location.City}}.</p>",
                "<p><a href=\"https://example.com/u/{{Id}}\">Unsubscribe</a></p></body></html>"
            )
            .into(),
            text_part: "Hi {{User.UserAttributes.FirstName}}, here is your {{Month}} update: {{Metrics.Visits}} visits. Unsubscribe: https://example.com/u/{{Id}}".into(),
            list_unsubscribe_url: String::new(),
        })),
        ..Default::default()
    }
}

fn endpoint(i: u32) -> Endpoint {
    let one = |v: &str| AttributeValues { values: vec![v.to_string()] };
    Endpoint {
        id: format!("ep-{i}"),
        channel_type: ChannelType::Email as i32,
        address: format!("user{i}@example.com"),
        attributes: [("Plan".to_string(), one("Pro")), ("Brand".to_string(), one("Acme")), ("Coupon".to_string(), one("SAVE10"))].into(),
        metrics: [("Visits".to_string(), 42.0)].into(),
        location: Some(EndpointLocation { city: "Springfield".into(), country: "US".into(), ..Default::default() }),
        user: Some(EndpointUser {
            user_id: format!("u{i}"),
            user_attributes: [
                ("FirstName".to_string(), one("Ana")),
                ("Interests".to_string(), AttributeValues { values: vec!["running".into(), "cooking".into(), "travel".into()] }),
            ]
            .into(),
        }),
        ..Default::default()
    }
}

fn bench(c: &mut Criterion) {
    let cache = TemplateCache::new(Arc::new(Renderer::new()), 16);
    let compiled = cache.get(&newsletter()).unwrap();
    let e = endpoint(7);
    let subs: HashMap<String, Vec<String>> = [("Month".to_string(), vec!["March".to_string()])].into();

    c.bench_function("render/newsletter", |b| {
        b.iter(|| {
            let ctx = compiled.context(Some(&e), &subs);
            compiled.render(cache.renderer(), &ctx).unwrap()
        })
    });
    c.bench_function("render/newsletter_context_only", |b| b.iter(|| compiled.context(Some(&e), &subs)));
    let ctx = compiled.context(Some(&e), &subs);
    c.bench_function("render/newsletter_parts_only", |b| b.iter(|| compiled.render(cache.renderer(), &ctx).unwrap()));
    c.bench_function("render/newsletter_with_mime", |b| {
        b.iter(|| {
            let ctx = compiled.context(Some(&e), &subs);
            let parts = compiled.render(cache.renderer(), &ctx).unwrap();
            let envelope = mime::Envelope {
                from: "Acme <news@acme.example>",
                to: &e.address,
                reply_to: None,
                list_unsubscribe_url: Some("https://acme.example/u"),
            };
            mime::build(&envelope, &parts[0].1, Some(&parts[2].1), Some(&parts[1].1)).unwrap()
        })
    });

    // Tracking: one message's HTML (2 KB) with 10 links, and the same text with none, so the
    // cost per link is (links - none) / 10; the per-message part is the context and pixel.
    let links = herald::tracking::Links::new(&[7u8; 32], "https://t.acme.example", 86_400 * 365);
    let message = herald::tracking::MessageRef {
        app_id: "0123456789abcdef0123456789abcdef".into(),
        message_id: herald::domain::new_message_id(),
        endpoint_id: "ep000007".into(),
        campaign_id: "fedcba9876543210fedcba9876543210".into(),
        treatment_id: 0,
        campaign_activity_id: "fedcba9876543210fedcba9876543210:000000-0".into(),
        ..Default::default()
    };
    let body: String = (0..10)
        .map(|i| format!("<p>Story {i}: a paragraph of news about the product line, with a link.</p><a class=\"cta\" href=\"https://acme.example/stories/{i}?utm_source=newsletter&amp;utm_medium=email\">Read more</a>\n"))
        .collect();
    let html = format!("<html><body><h1>March</h1>{body}</body></html>");
    let plain = html.replace("<a class", "<span class");
    for (name, text) in [("tracking/rewrite_10_links", &html), ("tracking/rewrite_no_links", &plain)] {
        c.bench_function(name, |b| {
            b.iter(|| {
                let m = links.message(&message, 1_800_000_000);
                herald::tracking::rewrite::Rewrite { links: &m, keep: &[], open_pixel: true }.apply(text)
            })
        });
    }

    // A tracked message whole: its HTML rewritten for the recipient (so unique) and encoded,
    // against the same message untracked (one static part every recipient shares).
    let sender = mime::Sender::new::<&str>("Acme <news@acme.example>", &[]).unwrap();
    let text = "March news: ten stories from Acme.";
    c.bench_function("tracking/message_tracked_10_links", |b| {
        let mut k = 0u64;
        b.iter(|| {
            k += 1;
            let m = links.message(&herald::tracking::MessageRef { endpoint_id: format!("ep{k:06}"), ..message.clone() }, 1_800_000_000);
            let tracked = herald::tracking::rewrite::Rewrite { links: &m, keep: &[], open_pixel: true }.apply(&html);
            sender.message_with("ana@example.com", "March", Some(text), Some(&tracked), None, None, false).unwrap()
        })
    });
    c.bench_function("tracking/message_untracked", |b| {
        b.iter(|| sender.message("ana@example.com", "March", Some(text), Some(&html), None, None).unwrap())
    });

    let r = Renderer::new();
    let example = r.compile(r#"{{#and (gte User.UserAttributes.Age.[0] "18") (eq Location.Country "US")}}You are an 18-year-old in the US.{{else}}You aren't an 18-year-old in the US.{{/and}}"#).unwrap();
    let ctx = serde_json::json!({"User": {"UserAttributes": {"Age": ["18"]}}, "Location": {"Country": "US"}});
    c.bench_function("render/pinpoint_and_example", |b| b.iter(|| r.render(&example, &ctx).unwrap()));
}

criterion_group!(benches, bench);
criterion_main!(benches);
