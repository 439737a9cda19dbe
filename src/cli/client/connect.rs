//! The flags every client subcommand takes: where the servers are and how
//! to authenticate to them.

use std::path::PathBuf;

use clap::Args;
use distlog_client::Client;

#[derive(Args, Clone, Debug)]
pub struct ConnectArgs {
    /// A server's URL: any cluster member, a standalone node or a replica (repeat for more
    /// seeds; DISTLOG_URL takes a comma-separated list).
    #[arg(
        long = "url",
        env = "DISTLOG_URL",
        value_name = "URL",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:8080",
        help_heading = "Connection"
    )]
    pub urls: Vec<String>,

    /// A bearer token sent with every request.
    #[arg(
        long,
        env = "DISTLOG_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true,
        help_heading = "Connection"
    )]
    pub token: Option<String>,

    /// A CA certificate (PEM) to trust for https:// servers.
    #[arg(long, value_name = "PATH", help_heading = "Connection")]
    pub ca: Option<PathBuf>,

    /// A client certificate (PEM) for mutual TLS; with --key.
    #[arg(long, value_name = "PATH", requires = "key", help_heading = "Connection")]
    pub cert: Option<PathBuf>,

    /// The client certificate's private key (PEM); with --cert.
    #[arg(long, value_name = "PATH", requires = "cert", help_heading = "Connection")]
    pub key: Option<PathBuf>,

    /// A named log to produce to and consume from (its /logs/NAME/ routes) rather than the default log.
    #[arg(long, env = "DISTLOG_LOG", value_name = "NAME", help_heading = "Connection")]
    pub log: Option<String>,

    /// How long to keep retrying while no server answers or no leader is known (1s, 30s).
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = crate::cli::units::millis, help_heading = "Connection")]
    pub retry_for: u64,
}

impl ConnectArgs {
    pub fn client(&self) -> anyhow::Result<Client> {
        let mut builder = Client::builder()
            .seeds(self.urls.iter().map(|u| u.trim().to_string()))
            .retry_for(std::time::Duration::from_millis(self.retry_for));
        if let Some(token) = &self.token {
            builder = builder.token(token.trim());
        }
        if let Some(log) = &self.log {
            builder = builder.log(log);
        }
        if let Some(ca) = &self.ca {
            builder = builder.ca(ca);
        }
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            builder = builder.identity(cert, key);
        }
        Ok(builder.build()?)
    }
}
