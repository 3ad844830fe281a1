//! Command-line options every agent uses to reach the appliance.

use std::path::PathBuf;
use std::time::Duration;

use crate::{load_trust, parse_duration, Client, ClientConfig, ClientError};

#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    /// Appliance URL, e.g. https://10.0.2.2:8443; several nodes of one appliance: their URLs
    /// separated by commas (tried in turn when one cannot be reached)
    #[arg(long, env = "FERRY_APPLIANCE")]
    pub appliance: String,
    /// The appliance's ca.pem (pins its CA and its manifest signing key)
    #[arg(long, env = "FERRY_CA")]
    pub ca: PathBuf,
    /// Access token (`appliance token create`); FERRY_TOKEN keeps it out of the process list
    #[arg(long, env = "FERRY_TOKEN", hide_env_values = true)]
    pub token: String,
    /// How long to keep retrying when the appliance is unreachable (900, 90s, 15m)
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    pub retry_window: Duration,
}

impl ConnectArgs {
    pub fn client(&self, connections: usize) -> Result<Client, ClientError> {
        Client::new(ClientConfig {
            url: self.appliance.clone(),
            trust: load_trust(&self.ca)?,
            token: self.token.clone(),
            retry_window: self.retry_window,
            connections,
        })
    }
}
