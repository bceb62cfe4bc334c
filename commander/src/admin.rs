//! The operator CLI's connection to a running commander: the admin service
//! over mutual TLS with the admin credentials from the data dir. The CLI
//! never opens the state database itself.

use std::path::Path;

use ark_proto::admin_client::AdminClient;
use tonic::transport::Channel;

use crate::{pki, server, Result};

/// Connects to the commander whose data dir is `data` (or to `url`).
pub fn connect(data: &Path, url: Option<&str>) -> Result<AdminClient<Channel>> {
    ark_link::tls::install_crypto_provider();
    let url = match url {
        Some(url) => url.to_string(),
        None => server::endpoint(data)?,
    };
    let credentials = pki::admin_credentials(data)?;
    let channel = ark_link::tls::channel(&url, ark_link::tls::mtls_client_config(&credentials)?)?;
    Ok(AdminClient::new(channel))
}
