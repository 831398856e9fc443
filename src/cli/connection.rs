//! How the admin commands reach a server: address, TLS, timeout and admin credentials, shared by every
//! client subcommand, and how a failed call becomes the message the CLI exits with.

use std::{path::PathBuf, sync::Arc, time::Duration};

use clap::Args;
use secrecy::{ExposeSecret as _, SecretString};
use tonic::{
    Request, Status,
    metadata::MetadataValue,
    transport::{Certificate, ClientTlsConfig, Endpoint, Identity},
};
use tonic_types::StatusExt as _;

use super::output::OutputFormat;
use crate::{
    error::code_name,
    replicas::{Configure, ReplicaConfig, Replicas, RetryUnsent},
    server::StartupError,
};

/// Where the server is and how to talk to it.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Server address; `https://` (or any TLS flag) means TLS. Several replicas, comma-separated
    /// (or one name resolving to several addresses), are balanced over those that are serving.
    #[arg(long, env = "APIKEYS_SERVER", default_value = "http://127.0.0.1:50051", global = true)]
    pub server: String,
    /// PEM CA bundle to verify the server's certificate (TLS).
    #[arg(long, env = "APIKEYS_CA_CERT", value_name = "FILE", global = true)]
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate, for servers that require mutual TLS (needs --client-key).
    #[arg(long, env = "APIKEYS_CLIENT_CERT", value_name = "FILE", global = true)]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(long, env = "APIKEYS_CLIENT_KEY", value_name = "FILE", global = true)]
    pub client_key: Option<PathBuf>,
    /// Seconds to wait for the connection and for each call.
    #[arg(long, env = "APIKEYS_TIMEOUT_SECS", default_value_t = 10, global = true)]
    pub timeout_secs: u64,
    /// Allow sending credentials over plain HTTP to a host that is not this machine. Anyone on the
    /// network path can read them: use only inside a trusted network.
    #[arg(long, env = "APIKEYS_INSECURE_PLAINTEXT", global = true)]
    pub insecure_plaintext: bool,
    /// Output for people (aligned table, local times) or for scripts (JSON, stable field names).
    #[arg(long, short, value_enum, env = "APIKEYS_OUTPUT", default_value = "table", global = true)]
    pub output: OutputFormat,
}

/// Admin credentials: a token of a key holding `api_keys_admin`. Its `Debug` hides the token.
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// Admin token (`apk_...`). Prefer --token-file or the environment variable: arguments are visible
    /// to other local users.
    #[arg(long, env = "APIKEYS_TOKEN", hide_env_values = true, global = true, conflicts_with = "token_file")]
    pub token: Option<SecretString>,
    /// File holding the admin token (e.g. the bootstrap-token file).
    #[arg(long, env = "APIKEYS_TOKEN_FILE", value_name = "FILE", global = true)]
    pub token_file: Option<PathBuf>,
}

fn read(path: &PathBuf, what: &str) -> Result<Vec<u8>, StartupError> {
    std::fs::read(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()).into())
}

/// What a command sends besides its request: whether a credential (admin token, or a credential to
/// check) travels with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sends {
    /// Only public requests (catalog, health).
    Nothing,
    /// A token or secret.
    Credentials,
}

/// Whether `host` (as written in a URL) names this machine without a DNS lookup: `localhost` or a
/// loopback address.
fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl ClientArgs {
    /// Checks the connection settings before anything is sent: TLS flags need an `https://` URL, and
    /// credentials go over plain HTTP only to this machine unless `--insecure-plaintext` says so.
    ///
    /// # Errors
    /// A message saying which setting to change.
    pub fn check_transport(&self, sends: Sends) -> Result<(), StartupError> {
        self.servers().try_for_each(|server| self.check_server(server, sends))
    }

    fn servers(&self) -> impl Iterator<Item = &str> {
        self.server.split(',').map(str::trim).filter(|s| !s.is_empty())
    }

    fn check_server(&self, server: &str, sends: Sends) -> Result<(), StartupError> {
        let uri: http::Uri = server.parse().map_err(|e| format!("invalid --server {server:?}: {e}"))?;
        let tls_flags = self.ca_cert.is_some() || self.client_cert.is_some() || self.client_key.is_some();
        match uri.scheme_str() {
            Some("https") => Ok(()),
            Some("http") if tls_flags => Err(format!(
                "--ca-cert, --client-cert and --client-key need TLS, but --server {server:?} is plain http://; \
                 use https://"
            )
            .into()),
            Some("http") => {
                let host = uri.host().unwrap_or_default();
                if sends == Sends::Credentials && !is_loopback_host(host) && !self.insecure_plaintext {
                    return Err(format!(
                        "refusing to send credentials in clear text to {host}: use an https:// --server, or \
                         --insecure-plaintext inside a trusted network"
                    )
                    .into());
                }
                Ok(())
            }
            _ => Err(format!("--server {server:?} must start with http:// or https://").into()),
        }
    }

    /// The TLS settings of the flags, for a server named `host`.
    fn tls(&self, host: &str) -> Result<ClientTlsConfig, StartupError> {
        let mut tls = ClientTlsConfig::new().domain_name(host);
        if let Some(path) = &self.ca_cert {
            tls = tls.ca_certificate(Certificate::from_pem(read(path, "CA certificate")?));
        }
        match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                tls = tls.identity(Identity::from_pem(read(cert, "client certificate")?, read(key, "client key")?));
            }
            (None, None) => {}
            _ => return Err("--client-cert and --client-key go together".into()),
        }
        Ok(tls)
    }

    /// Connects to the server (eagerly, so an unreachable server fails here with a clear message),
    /// after [`ClientArgs::check_transport`]; to several, once one of them is serving.
    ///
    /// # Errors
    /// A refused transport, a bad address, unreadable TLS files, or a failed connection.
    pub async fn connect(&self, sends: Sends) -> Result<RetryUnsent, StartupError> {
        self.check_transport(sends)?;
        let timeout = Duration::from_secs(self.timeout_secs);
        let servers: Vec<String> = self.servers().map(str::to_owned).collect();
        if let [server] = servers.as_slice() {
            let uri: http::Uri = server.parse().map_err(|e| format!("invalid --server {server:?}: {e}"))?;
            let mut endpoint = Endpoint::from(uri.clone()).connect_timeout(timeout).timeout(timeout);
            if uri.scheme_str() == Some("https") {
                let tls = self.tls(uri.host().unwrap_or_default())?;
                endpoint = endpoint.tls_config(tls).map_err(|e| format!("TLS setup failed: {}", chain(&e)))?;
            }
            let channel = endpoint.connect().await.map_err(|e| format!("cannot connect to {server}: {}", chain(&e)))?;
            return Ok(channel.into());
        }
        // Read once: the TLS files are the same for every replica.
        let tls = if servers.iter().any(|s| s.starts_with("https://")) { Some(self.tls("")?) } else { None };
        let configure: Arc<Configure> = Arc::new(move |endpoint: Endpoint, host: &str| match &tls {
            Some(tls) if endpoint.uri().scheme_str() == Some("https") => {
                endpoint.tls_config(tls.clone().domain_name(host))
            }
            _ => Ok(endpoint),
        });
        let config = ReplicaConfig { connect_timeout: timeout, timeout: Some(timeout), ..ReplicaConfig::default() };
        let replicas = Replicas::connect(&servers, config, configure).await.map_err(|e| chain(&e))?;
        Ok(replicas.channel())
    }
}

impl AdminArgs {
    /// The `authorization` metadata value for the admin token.
    ///
    /// # Errors
    /// No token given, or the token file cannot be read.
    pub fn authorization(&self) -> Result<MetadataValue<tonic::metadata::Ascii>, StartupError> {
        let token = match (&self.token, &self.token_file) {
            (Some(token), _) => token.expose_secret().trim().to_owned(),
            (None, Some(path)) => String::from_utf8(read(path, "token file")?)
                .map_err(|_| format!("token file {} is not text", path.display()))?
                .trim()
                .to_owned(),
            (None, None) => return Err("admin credentials needed: give --token-file, --token or APIKEYS_TOKEN".into()),
        };
        let mut value = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| "the admin token contains characters a token cannot have")?;
        // Kept out of HPACK tables and h2 trace logs.
        value.set_sensitive(true);
        Ok(value)
    }
}

/// `message` with the admin `authorization` metadata.
pub fn authed<T>(message: T, authorization: &MetadataValue<tonic::metadata::Ascii>) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", authorization.clone());
    request
}

/// An error and its causes, one after another (transport errors hide the useful part in the chain).
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The message the CLI exits with for a failed call: code and message, the AIP-193 reason, and each
/// field violation on its own line.
pub fn describe_status(status: &Status) -> String {
    let mut text = format!("{}: {}", code_name(status.code()), status.message());
    if let Some(info) = status.get_details_error_info() {
        text.push_str(&format!(" (reason {})", info.reason));
    }
    if let Some(bad_request) = status.get_details_bad_request() {
        for violation in bad_request.field_violations {
            text.push_str(&format!("\n  {}: {}", violation.field, violation.description));
        }
    }
    if let Some(source) = std::error::Error::source(status) {
        text.push_str(&format!(" ({})", chain(source)));
    }
    text
}

/// Turns a failed call into the CLI's error.
pub fn failed(status: Status) -> StartupError {
    describe_status(&status).into()
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::{ClientArgs, Sends};

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        client: ClientArgs,
    }

    fn check(args: &[&str], sends: Sends) -> Result<(), String> {
        let cli = Cli::try_parse_from(std::iter::once("t").chain(args.iter().copied())).unwrap();
        cli.client.check_transport(sends).map_err(|e| e.to_string())
    }

    #[test]
    fn credentials_stay_off_plain_http_to_other_hosts() {
        for local in ["http://127.0.0.1:50051", "http://localhost:1", "http://[::1]:1", "http://127.8.9.10:1"] {
            assert!(check(&["--server", local], Sends::Credentials).is_ok(), "{local}");
        }
        let refused = check(&["--server", "http://apikeys.internal:50051"], Sends::Credentials).unwrap_err();
        assert!(refused.contains("--insecure-plaintext"), "{refused}");
        assert!(check(&["--server", "http://10.0.0.1:50051"], Sends::Credentials).is_err());
        assert!(check(&["--server", "http://apikeys.internal:50051"], Sends::Nothing).is_ok(), "health, catalog");
        assert!(check(&["--server", "http://apikeys.internal:1", "--insecure-plaintext"], Sends::Credentials).is_ok());
        assert!(check(&["--server", "https://apikeys.internal:1"], Sends::Credentials).is_ok());
    }

    #[test]
    fn tls_flags_need_https() {
        let error = check(&["--server", "http://127.0.0.1:1", "--ca-cert", "ca.pem"], Sends::Nothing).unwrap_err();
        assert!(error.contains("https://"), "{error}");
        assert!(check(&["--server", "https://127.0.0.1:1", "--ca-cert", "ca.pem"], Sends::Nothing).is_ok());
        assert!(check(&["--server", "ftp://x"], Sends::Nothing).is_err());
    }
}
