//! `herald keys`: API keys kept in the store (create shows the secret once, list, revoke),
//! and `hash`, which makes a `[[keys]]` entry for the configuration file without a daemon.

use clap::{Args, Subcommand};

use super::client::ConnArgs;
use crate::proto::v1::{keys_client::KeysClient, ApiKey, CreateKeyRequest, ListKeysRequest, RevokeKeyRequest};

/// What a key is: its name, scopes and apps.
#[derive(Debug, Args)]
pub struct KeyDef {
    /// Written in audit lines as the caller.
    #[arg(long)]
    name: String,
    /// admin, write, send or read (repeatable, or comma-separated).
    #[arg(long = "scope", value_delimiter = ',', required = true)]
    scopes: Vec<String>,
    /// An app the key may touch (repeatable; none: every app).
    #[arg(long = "app")]
    apps: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key on the daemon; its secret is printed once, on the first line.
    Create {
        #[command(flatten)]
        key: KeyDef,
        /// Calls per second on each daemon (0: no limit).
        #[arg(long, default_value_t = 0)]
        rate_per_second: u32,
        #[arg(long, default_value_t = 0)]
        burst: u32,
    },
    /// List keys (never their secrets).
    List {
        /// Revoked keys too.
        #[arg(long)]
        all: bool,
    },
    /// Revoke a store key: refused from its next call on, on every daemon.
    Revoke { key_id: String },
    /// Make a new secret and the `[[keys]]` entry holding its hash (no daemon needed): the
    /// secret goes to the caller, the entry to the configuration file.
    Hash {
        #[command(flatten)]
        key: KeyDef,
        /// Hash this secret instead of making one (read from the HERALD_NEW_KEY variable, so
        /// it stays out of the shell history).
        #[arg(long, env = "HERALD_NEW_KEY", hide_env_values = true)]
        secret: Option<String>,
    },
}

fn show(k: &ApiKey) {
    let apps = if k.app_ids.is_empty() { "*".to_string() } else { k.app_ids.join(",") };
    let rate = if k.rate_per_second == 0 { "-".to_string() } else { format!("{}/s", k.rate_per_second) };
    let state = if k.revoked_at.is_empty() { "active".to_string() } else { format!("revoked {}", k.revoked_at) };
    println!("{:<24} {:<20} {:<20} {:<8} {:<6} {:<24} {}", k.key_id, k.name, k.scopes.join(","), rate, k.source, apps, state);
}

pub async fn run(conn: ConnArgs, command: KeysCommand) -> anyhow::Result<()> {
    if let KeysCommand::Hash { key: KeyDef { name, scopes, apps }, secret } = &command {
        let bad = crate::access::check_key(name, scopes, apps);
        if let Some((field, why)) = bad.first() {
            anyhow::bail!("{field}: {why}");
        }
        let secret = match secret {
            Some(s) if s.len() >= 16 => s.clone(),
            Some(_) => anyhow::bail!("a secret must be at least 16 characters"),
            None => crate::access::new_secret().1,
        };
        println!("secret: {secret}");
        println!();
        println!("[[keys]]");
        println!("name = {}", toml::Value::String(name.clone()));
        println!("sha256 = \"{}\"", crate::access::hash_secret(&secret));
        println!("scopes = {}", toml::Value::Array(scopes.iter().cloned().map(toml::Value::String).collect()));
        if !apps.is_empty() {
            println!("apps = {}", toml::Value::Array(apps.iter().cloned().map(toml::Value::String).collect()));
        }
        return Ok(());
    }
    let mut client = KeysClient::new(conn.channel().await?);
    match command {
        KeysCommand::Create { key: KeyDef { name, scopes, apps }, rate_per_second, burst } => {
            let created = client
                .create_key(conn.request(CreateKeyRequest { name, scopes, app_ids: apps, rate_per_second, burst }))
                .await?
                .into_inner();
            println!("{}", created.secret);
            if let Some(k) = &created.key {
                eprintln!("key {} ({}) created; the secret above is shown this once.", k.key_id, k.name);
            }
        }
        KeysCommand::List { all } => {
            let keys = client.list_keys(conn.request(ListKeysRequest { include_revoked: all })).await?.into_inner().keys;
            println!("{:<24} {:<20} {:<20} {:<8} {:<6} {:<24} STATE", "KEY ID", "NAME", "SCOPES", "RATE", "SOURCE", "APPS");
            keys.iter().for_each(show);
        }
        KeysCommand::Revoke { key_id } => {
            let k = client.revoke_key(conn.request(RevokeKeyRequest { key_id })).await?.into_inner();
            println!("revoked {} ({}) at {}", k.key_id, k.name, k.revoked_at);
        }
        KeysCommand::Hash { .. } => unreachable!("handled above"),
    }
    Ok(())
}
