//! The `Channels` service: per-app email and custom channel settings, with write-only secrets.

use std::sync::Arc;

use prost::Message as _;
use tonic::{Request, Response, Status};

use super::{check_app_id, invalid, observe, store_status};
use crate::domain::{self, FieldViolation};
use crate::proto::v1::{
    channels_server, CustomChannel, EmailChannel, GetChannelRequest, TlsMode, UpdateCustomChannelRequest, UpdateEmailChannelRequest,
};
use crate::store::Store;

pub const EMAIL: &str = "email";
pub const CUSTOM: &str = "custom";

pub struct ChannelsService {
    store: Arc<dyn Store>,
}

impl ChannelsService {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    async fn load<M: prost::Message + Default>(&self, app_id: &str, channel: &str) -> Result<Option<M>, Status> {
        check_app_id(app_id)?;
        let raw = self.store.get_channel(app_id, channel).await.map_err(store_status)?;
        raw.map(|b| M::decode(b.as_slice()).map_err(|_| Status::internal("stored channel settings could not be read"))).transpose()
    }
}

/// What callers may see: no secrets.
fn shown_email(mut c: EmailChannel) -> EmailChannel {
    c.has_password = !c.password.is_empty();
    c.password.clear();
    c
}

fn shown_custom(mut c: CustomChannel) -> CustomChannel {
    c.has_signing_secret = !c.signing_secret.is_empty();
    c.signing_secret.clear();
    c
}

fn validate_email(c: &EmailChannel) -> Vec<FieldViolation> {
    let mut out = Vec::new();
    if !c.from_address.is_empty() && crate::render::mime::Sender::new(&c.from_address, None).is_err() {
        out.push(FieldViolation::new("channel.from_address", "is not an email address (Name <address> or address)"));
    }
    if !c.relay_host.is_empty() && !(1..=65_535).contains(&c.relay_port) {
        out.push(FieldViolation::new("channel.relay_port", "must be 1 to 65535 with a relay_host"));
    }
    if !(0..=256).contains(&c.pool_size) {
        out.push(FieldViolation::new("channel.pool_size", "must be 0 (default) to 256"));
    }
    if c.messages_per_connection < 0 {
        out.push(FieldViolation::new("channel.messages_per_connection", "must not be negative"));
    }
    if TlsMode::try_from(c.tls_mode).is_err() {
        out.push(FieldViolation::new("channel.tls_mode", "must be TLS_MODE_NONE, TLS_MODE_STARTTLS or TLS_MODE_TLS"));
    } else if c.tls_mode != TlsMode::None as i32 && c.relay_host.is_empty() {
        out.push(FieldViolation::new("channel.tls_mode", "applies to the app's relay_host, which is empty"));
    }
    if !c.ca_certificate.is_empty() {
        if let Err(e) = crate::channels::email::tls::parse_certificates(&c.ca_certificate) {
            out.push(FieldViolation::new("channel.ca_certificate", e.to_string()));
        }
    }
    out
}

#[tonic::async_trait]
impl channels_server::Channels for ChannelsService {
    async fn update_email_channel(&self, request: Request<UpdateEmailChannelRequest>) -> Result<Response<EmailChannel>, Status> {
        observe("UpdateEmailChannel", async {
            let req = request.into_inner();
            let mut c = req.channel.unwrap_or_default();
            let violations = validate_email(&c);
            if !violations.is_empty() {
                return Err(invalid(violations));
            }
            // An update without a password keeps the stored one.
            if c.password.is_empty() {
                if let Some(old) = self.load::<EmailChannel>(&req.app_id, EMAIL).await? {
                    c.password = old.password;
                }
            }
            check_app_id(&req.app_id)?;
            c.has_password = false;
            c.last_modified_date = domain::timestamp(chrono::Utc::now());
            self.store.put_channel(&req.app_id, EMAIL, &c.encode_to_vec()).await.map_err(store_status)?;
            Ok(Response::new(shown_email(c)))
        })
        .await
    }

    async fn get_email_channel(&self, request: Request<GetChannelRequest>) -> Result<Response<EmailChannel>, Status> {
        observe("GetEmailChannel", async {
            let app_id = request.into_inner().app_id;
            let c = self
                .load::<EmailChannel>(&app_id, EMAIL)
                .await?
                .ok_or_else(|| Status::not_found(format!("app {app_id} has no email channel")))?;
            Ok(Response::new(shown_email(c)))
        })
        .await
    }

    async fn delete_email_channel(&self, request: Request<GetChannelRequest>) -> Result<Response<EmailChannel>, Status> {
        observe("DeleteEmailChannel", async {
            let app_id = request.into_inner().app_id;
            check_app_id(&app_id)?;
            let old = self.store.delete_channel(&app_id, EMAIL).await.map_err(store_status)?;
            let c = old
                .and_then(|b| EmailChannel::decode(b.as_slice()).ok())
                .ok_or_else(|| Status::not_found(format!("app {app_id} has no email channel")))?;
            Ok(Response::new(shown_email(c)))
        })
        .await
    }

    async fn update_custom_channel(&self, request: Request<UpdateCustomChannelRequest>) -> Result<Response<CustomChannel>, Status> {
        observe("UpdateCustomChannel", async {
            let req = request.into_inner();
            let mut c = req.channel.unwrap_or_default();
            if !c.delivery_url.is_empty() {
                if let Err(why) = crate::domain::endpoint::validate_address(crate::proto::v1::ChannelType::Custom, &c.delivery_url) {
                    return Err(invalid(vec![FieldViolation::new("channel.delivery_url", why)]));
                }
            }
            if c.signing_secret.is_empty() {
                if let Some(old) = self.load::<CustomChannel>(&req.app_id, CUSTOM).await? {
                    c.signing_secret = old.signing_secret;
                }
            }
            check_app_id(&req.app_id)?;
            c.has_signing_secret = false;
            c.last_modified_date = domain::timestamp(chrono::Utc::now());
            self.store.put_channel(&req.app_id, CUSTOM, &c.encode_to_vec()).await.map_err(store_status)?;
            Ok(Response::new(shown_custom(c)))
        })
        .await
    }

    async fn get_custom_channel(&self, request: Request<GetChannelRequest>) -> Result<Response<CustomChannel>, Status> {
        observe("GetCustomChannel", async {
            let app_id = request.into_inner().app_id;
            let c = self
                .load::<CustomChannel>(&app_id, CUSTOM)
                .await?
                .ok_or_else(|| Status::not_found(format!("app {app_id} has no custom channel")))?;
            Ok(Response::new(shown_custom(c)))
        })
        .await
    }

    async fn delete_custom_channel(&self, request: Request<GetChannelRequest>) -> Result<Response<CustomChannel>, Status> {
        observe("DeleteCustomChannel", async {
            let app_id = request.into_inner().app_id;
            check_app_id(&app_id)?;
            let old = self.store.delete_channel(&app_id, CUSTOM).await.map_err(store_status)?;
            let c = old
                .and_then(|b| CustomChannel::decode(b.as_slice()).ok())
                .ok_or_else(|| Status::not_found(format!("app {app_id} has no custom channel")))?;
            Ok(Response::new(shown_custom(c)))
        })
        .await
    }
}
