//! `herald send` and `herald outcome`: transactional sends and their outcomes from a terminal.

use clap::Args;

use super::client::ConnArgs;
use crate::proto::v1::{
    messages_client::MessagesClient, AddressConfiguration, ChannelType, DeliveryStatus, DirectMessageConfiguration, EmailMessage,
    EndpointSendConfiguration, GetMessageOutcomeRequest, SendMessagesRequest, TemplateConfiguration, TemplateReference,
};

#[derive(Debug, Args)]
pub struct SendArgs {
    #[arg(long)]
    app: String,
    /// An email address to send to (repeatable).
    #[arg(long = "to")]
    to: Vec<String>,
    /// An endpoint id to send to (repeatable).
    #[arg(long = "endpoint")]
    endpoints: Vec<String>,
    /// The sender, `Name <address>` or an address.
    #[arg(long)]
    from: String,
    /// An email template (its active version).
    #[arg(long)]
    template: Option<String>,
    #[arg(long)]
    subject: Option<String>,
    #[arg(long)]
    text: Option<String>,
    #[arg(long)]
    html: Option<String>,
    /// A substitution NAME=VALUE (repeatable).
    #[arg(long = "sub", value_parser = super::endpoints::key_value)]
    substitutions: Vec<(String, String)>,
    /// Repeats with the same key within 24 hours send nothing again.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Everything but the provider call.
    #[arg(long)]
    dry_run: bool,
}

fn status_name(s: i32) -> &'static str {
    DeliveryStatus::try_from(s).map(|s| s.as_str_name().trim_start_matches("DELIVERY_STATUS_")).unwrap_or("?")
}

pub async fn send(conn: ConnArgs, a: SendArgs) -> anyhow::Result<()> {
    let mut subs: std::collections::HashMap<String, crate::proto::v1::AttributeValues> = Default::default();
    for (k, v) in a.substitutions {
        subs.entry(k).or_default().values.push(v);
    }
    let req = SendMessagesRequest {
        app_id: a.app,
        addresses: a
            .to
            .into_iter()
            .map(|t| (t, AddressConfiguration { channel_type: ChannelType::Email as i32, ..Default::default() }))
            .collect(),
        endpoints: a.endpoints.into_iter().map(|e| (e, EndpointSendConfiguration::default())).collect(),
        message_configuration: Some(DirectMessageConfiguration {
            email_message: Some(EmailMessage {
                from_address: a.from,
                subject: a.subject.unwrap_or_default(),
                text_part: a.text.unwrap_or_default(),
                html_part: a.html.unwrap_or_default(),
                substitutions: subs,
                ..Default::default()
            }),
            ..Default::default()
        }),
        template_configuration: a
            .template
            .map(|name| TemplateConfiguration { email_template: Some(TemplateReference { name, version: 0 }), ..Default::default() }),
        dry_run: a.dry_run,
        idempotency_key: a.idempotency_key.unwrap_or_default(),
        ..Default::default()
    };
    let r = MessagesClient::new(conn.channel().await?).send_messages(conn.request(req)).await?.into_inner();
    println!("request {}", r.request_id);
    println!("{:<36} {:<18} {:>5}  {:<32} MESSAGE", "RECIPIENT", "STATUS", "CODE", "MESSAGE ID");
    let rows = r.result.iter().chain(r.endpoint_result.iter());
    for (who, res) in rows {
        println!(
            "{:<36} {:<18} {:>5}  {:<32} {}",
            who,
            status_name(res.delivery_status),
            res.status_code,
            res.message_id,
            res.status_message
        );
    }
    Ok(())
}

pub async fn outcome(conn: ConnArgs, app: String, message_id: String) -> anyhow::Result<()> {
    let o = MessagesClient::new(conn.channel().await?)
        .get_message_outcome(conn.request(GetMessageOutcomeRequest { app_id: app, message_id }))
        .await?
        .into_inner();
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "MessageId": o.message_id, "Status": status_name(o.delivery_status), "StatusCode": o.status_code, "StatusMessage": o.status_message,
            "Channel": o.channel, "Address": o.address, "EndpointId": o.endpoint_id, "RequestId": o.request_id, "Attempts": o.attempts,
            "ProviderMessageId": o.provider_message_id, "CreationDate": o.created_date, "UpdatedDate": o.updated_date, "DryRun": o.dry_run,
        }))?
    );
    Ok(())
}
