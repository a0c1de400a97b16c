//! The gRPC connection of the terminal client.

use clap::Args;
use tonic::transport::{Channel, Endpoint};
use tonic::Request;

use crate::proto::v1::{apps_client::AppsClient, endpoints_client::EndpointsClient};

#[derive(Debug, Clone, Args)]
pub struct ConnArgs {
    /// The daemon's gRPC address.
    #[arg(long, env = "HERALD_ADDR", default_value = "http://127.0.0.1:50051", global = true)]
    pub addr: String,
    /// API key sent as `authorization: Bearer <key>`.
    #[arg(long, env = "HERALD_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,
}

impl ConnArgs {
    pub async fn channel(&self) -> anyhow::Result<Channel> {
        let addr = if self.addr.contains("://") { self.addr.clone() } else { format!("http://{}", self.addr) };
        let endpoint = Endpoint::from_shared(addr.clone())?.tcp_nodelay(true);
        endpoint.connect().await.map_err(|e| anyhow::anyhow!("cannot connect to {addr}: {e}"))
    }

    pub async fn apps(&self) -> anyhow::Result<AppsClient<Channel>> {
        Ok(AppsClient::new(self.channel().await?))
    }

    pub async fn endpoints(&self) -> anyhow::Result<EndpointsClient<Channel>> {
        Ok(EndpointsClient::new(self.channel().await?)
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024))
    }

    /// Wraps a message with the API key, if any.
    pub fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(key) = &self.api_key {
            if let Ok(v) = format!("Bearer {key}").parse() {
                request.metadata_mut().insert("authorization", v);
            }
        }
        request
    }
}

/// A client error for a person: the status message and, for bad requests, each bad field.
pub fn describe(e: &anyhow::Error) -> String {
    use tonic_types::StatusExt;
    match e.downcast_ref::<tonic::Status>() {
        Some(status) => {
            let mut out = format!("{:?}: {}", status.code(), status.message());
            if let Some(br) = status.get_error_details().bad_request() {
                for v in &br.field_violations {
                    out.push_str(&format!("\n  {}: {}", v.field, v.description));
                }
            }
            out
        }
        None => format!("{e:#}"),
    }
}
