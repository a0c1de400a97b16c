//! The `Channels` service: per-app channel settings (email, custom, APNs, FCM, SMS). Secrets
//! are write-only: sealed before they are stored, never returned (`has_*` says whether one is
//! set), never logged; an update that leaves a secret empty keeps the stored one.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{check_app_id, invalid, observe, store_status};
use crate::channels::settings::{self, ChannelSettings};
use crate::domain;
use crate::proto::v1::{
    channels_server, ApnsChannel, ChannelSummary, ChannelsResponse, CustomChannel, EmailChannel, GcmChannel, GetChannelRequest, SmsChannel,
    UpdateApnsChannelRequest, UpdateCustomChannelRequest, UpdateEmailChannelRequest, UpdateGcmChannelRequest, UpdateSmsChannelRequest,
};
use crate::secrets::Sealer;
use crate::store::Store;

pub const EMAIL: &str = <EmailChannel as ChannelSettings>::NAME;
pub const CUSTOM: &str = <CustomChannel as ChannelSettings>::NAME;

pub struct ChannelsService {
    store: Arc<dyn Store>,
    sealer: Arc<Sealer>,
}

impl ChannelsService {
    pub fn new(store: Arc<dyn Store>, sealer: Arc<Sealer>) -> Self {
        Self { store, sealer }
    }

    async fn update<C: ChannelSettings>(&self, app_id: &str, c: Option<C>) -> Result<C, Status> {
        check_app_id(app_id)?;
        if self.store.get_app(app_id).await.map_err(store_status)?.is_none() {
            return Err(Status::not_found(format!("app {app_id} not found")));
        }
        let mut c = c.unwrap_or_default();
        let old = match settings::load::<C>(self.store.as_ref(), &self.sealer, app_id).await {
            Some(Ok(old)) => Some(old),
            // Secrets that no longer open are replaced by whatever this update gives.
            Some(Err(e)) => {
                tracing::warn!(app = %app_id, channel = C::LABEL, error = %e, "Stored channel secrets do not open.");
                None
            }
            None => None,
        };
        settings::keep_secrets(&mut c, old);
        let violations = c.validate();
        if !violations.is_empty() {
            return Err(invalid(violations));
        }
        c.complete();
        c.set_modified(domain::timestamp(chrono::Utc::now()));
        let mut stored = c.clone();
        settings::seal(&self.sealer, app_id, &mut stored);
        self.store.put_channel(app_id, C::NAME, &stored.encode_to_vec()).await.map_err(store_status)?;
        Ok(c.shown())
    }

    async fn get<C: ChannelSettings>(&self, app_id: &str) -> Result<C, Status> {
        check_app_id(app_id)?;
        let raw = self.store.get_channel(app_id, C::NAME).await.map_err(store_status)?;
        raw.map(|b| C::decode(b.as_slice()).map_err(|_| Status::internal("stored channel settings could not be read")))
            .transpose()?
            .map(|c| c.shown())
            .ok_or_else(|| Status::not_found(format!("app {app_id} has no {} channel", C::LABEL)))
    }

    /// `C`'s summary, if the app has settings for it.
    async fn summary<C: ChannelSettings>(&self, app_id: &str) -> Result<Option<ChannelSummary>, Status> {
        let raw = self.store.get_channel(app_id, C::NAME).await.map_err(store_status)?;
        Ok(raw.and_then(|b| C::decode(b.as_slice()).ok()).map(|c| {
            let (enabled, modified) = c.summary();
            ChannelSummary { enabled, last_modified_date: modified.to_string() }
        }))
    }

    async fn delete<C: ChannelSettings>(&self, app_id: &str) -> Result<C, Status> {
        check_app_id(app_id)?;
        let old = self.store.delete_channel(app_id, C::NAME).await.map_err(store_status)?;
        old.and_then(|b| C::decode(b.as_slice()).ok())
            .map(|c| c.shown())
            .ok_or_else(|| Status::not_found(format!("app {app_id} has no {} channel", C::LABEL)))
    }
}

/// The service: three calls per channel, and GetChannels over them all.
macro_rules! channel_service {
    ($(($ty:ty, $key:literal, $req:ty, $update:ident, $get:ident, $delete:ident, $un:literal, $gn:literal, $dn:literal)),* $(,)?) => {
        #[tonic::async_trait]
        impl channels_server::Channels for ChannelsService {
            async fn get_channels(&self, request: Request<GetChannelRequest>) -> Result<Response<ChannelsResponse>, Status> {
                observe("GetChannels", async {
                    let app = request.into_inner().app_id;
                    check_app_id(&app)?;
                    if self.store.get_app(&app).await.map_err(store_status)?.is_none() {
                        return Err(Status::not_found(format!("app {app} not found")));
                    }
                    let mut channels = std::collections::HashMap::new();
                    $(
                        if let Some(s) = self.summary::<$ty>(&app).await? {
                            channels.insert($key.to_string(), s);
                        }
                    )*
                    Ok(Response::new(ChannelsResponse { channels }))
                })
                .await
            }
            $(
                async fn $update(&self, request: Request<$req>) -> Result<Response<$ty>, Status> {
                    observe($un, async {
                        let req = request.into_inner();
                        self.update::<$ty>(&req.app_id, req.channel).await.map(Response::new)
                    })
                    .await
                }

                async fn $get(&self, request: Request<GetChannelRequest>) -> Result<Response<$ty>, Status> {
                    observe($gn, async { self.get::<$ty>(&request.into_inner().app_id).await.map(Response::new) }).await
                }

                async fn $delete(&self, request: Request<GetChannelRequest>) -> Result<Response<$ty>, Status> {
                    observe($dn, async { self.delete::<$ty>(&request.into_inner().app_id).await.map(Response::new) }).await
                }
            )*
        }
    };
}

channel_service!(
    (
        EmailChannel,
        "EMAIL",
        UpdateEmailChannelRequest,
        update_email_channel,
        get_email_channel,
        delete_email_channel,
        "UpdateEmailChannel",
        "GetEmailChannel",
        "DeleteEmailChannel"
    ),
    (
        CustomChannel,
        "CUSTOM",
        UpdateCustomChannelRequest,
        update_custom_channel,
        get_custom_channel,
        delete_custom_channel,
        "UpdateCustomChannel",
        "GetCustomChannel",
        "DeleteCustomChannel"
    ),
    (
        ApnsChannel,
        "APNS",
        UpdateApnsChannelRequest,
        update_apns_channel,
        get_apns_channel,
        delete_apns_channel,
        "UpdateApnsChannel",
        "GetApnsChannel",
        "DeleteApnsChannel"
    ),
    (
        GcmChannel,
        "GCM",
        UpdateGcmChannelRequest,
        update_gcm_channel,
        get_gcm_channel,
        delete_gcm_channel,
        "UpdateGcmChannel",
        "GetGcmChannel",
        "DeleteGcmChannel"
    ),
    (
        SmsChannel,
        "SMS",
        UpdateSmsChannelRequest,
        update_sms_channel,
        get_sms_channel,
        delete_sms_channel,
        "UpdateSmsChannel",
        "GetSmsChannel",
        "DeleteSmsChannel"
    ),
);
