//! The gRPC connection of the terminal client.

use clap::Args;
use tonic::transport::{Channel, Endpoint};
use tonic::Request;

use crate::proto::v1::{apps_client::AppsClient, endpoints_client::EndpointsClient};

#[derive(Debug, Clone, Args)]
pub struct ConnArgs {
    /// The daemon's gRPC address: `http://host:port`, or `https://host:port` for TLS.
    #[arg(long, env = "HERALD_ADDR", default_value = "http://127.0.0.1:50051", global = true)]
    pub addr: String,
    /// CA certificates (PEM) the daemon's certificate is checked against (default: the
    /// system's roots). Implies https.
    #[arg(long, env = "HERALD_CA_FILE", value_name = "PEM", global = true)]
    pub ca_file: Option<std::path::PathBuf>,
    /// A client certificate (PEM) for a daemon that asks for one (mutual TLS), with --key-file.
    #[arg(long, env = "HERALD_CERT_FILE", value_name = "PEM", global = true, requires = "key_file")]
    pub cert_file: Option<std::path::PathBuf>,
    #[arg(long, env = "HERALD_KEY_FILE", value_name = "PEM", global = true, requires = "cert_file")]
    pub key_file: Option<std::path::PathBuf>,
    /// API key sent as `authorization: Bearer <key>`.
    #[arg(long, env = "HERALD_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,
}

impl ConnArgs {
    pub async fn channel(&self) -> anyhow::Result<Channel> {
        let tls = self.ca_file.is_some() || self.cert_file.is_some();
        let addr = match self.addr.split_once("://") {
            Some(("http", rest)) if tls => format!("https://{rest}"),
            Some(_) => self.addr.clone(),
            None if tls => format!("https://{}", self.addr),
            None => format!("http://{}", self.addr),
        };
        let mut endpoint = Endpoint::from_shared(addr.clone())?.tcp_nodelay(true);
        if addr.starts_with("https://") {
            endpoint = endpoint.tls_config(crate::tls::client_config(
                self.ca_file.as_deref(),
                self.cert_file.as_deref(),
                self.key_file.as_deref(),
            )?)?;
        }
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
