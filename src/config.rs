//! Server configuration: one plain struct with documented defaults ([`ServerConfig`]), and the
//! [`Settings`] layers it is made of. The CLI stacks them with the precedence flags > `APIKEYS_*`
//! environment variables > TOML file (`--config`) > defaults; tests build [`ServerConfig`] directly.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{
    auth::{cache::MAX_TTL, hashing::HashingConfig},
    telemetry::LogFormat,
};

/// A database URL. It may carry a password, so its `Debug` shows it redacted; [`DatabaseUrl::expose`]
/// gives the real value to the code that connects.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// The URL, password included.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", redact_url(&self.0))
    }
}

impl From<String> for DatabaseUrl {
    fn from(url: String) -> Self {
        Self(url)
    }
}

impl From<&str> for DatabaseUrl {
    fn from(url: &str) -> Self {
        Self(url.to_owned())
    }
}

impl std::str::FromStr for DatabaseUrl {
    type Err = std::convert::Infallible;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        Ok(url.into())
    }
}

/// Limits of the gRPC transport: what one client can make the server hold. The `[transport]` table of
/// the config file; every key is optional.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransportConfig {
    /// HTTP/2 streams (RPCs) one connection may have open at once (default 256).
    pub max_concurrent_streams: u32,
    /// RPCs of one connection handled at once; further ones wait (default 128).
    pub concurrency_per_connection: usize,
    /// Streams a client may make the server reset with protocol errors before its connection is
    /// closed (h2's MadeYouReset protection, CVE-2025-8671; default 1024).
    pub max_local_error_reset_streams: usize,
    /// Streams a client may open and reset before the server accepts them (Rapid Reset,
    /// CVE-2023-44487; default 20).
    pub max_pending_accept_reset_streams: usize,
    /// Seconds an RPC may run before it is cancelled; a shorter `grpc-timeout` from the client wins
    /// (default 30).
    pub request_timeout_secs: u64,
    /// Seconds a TLS handshake may take (default 10).
    pub tls_handshake_timeout_secs: u64,
    /// Seconds between HTTP/2 keepalive pings on an idle connection (default 60).
    pub keepalive_interval_secs: u64,
    /// Seconds to wait for a ping's answer before closing the connection (default 20).
    pub keepalive_timeout_secs: u64,
    /// Seconds of TCP idleness before TCP keepalive probes (default 60).
    pub tcp_keepalive_secs: u64,
    /// Largest request message in bytes; larger ones get OUT_OF_RANGE (default 65536).
    pub max_request_bytes: usize,
    /// Largest header block (metadata) of a request in bytes (default 16384).
    pub max_header_list_bytes: u32,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 256,
            concurrency_per_connection: 128,
            max_local_error_reset_streams: 1024,
            max_pending_accept_reset_streams: 20,
            request_timeout_secs: 30,
            tls_handshake_timeout_secs: 10,
            keepalive_interval_secs: 60,
            keepalive_timeout_secs: 20,
            tcp_keepalive_secs: 60,
            max_request_bytes: 64 * 1024,
            max_header_list_bytes: 16 * 1024,
        }
    }
}

impl TransportConfig {
    /// Checks that every limit allows some traffic.
    ///
    /// # Errors
    /// A message naming the first setting that is zero (or too small to carry a request).
    pub fn validate(&self) -> Result<(), String> {
        let zero = [
            ("max_concurrent_streams", u64::from(self.max_concurrent_streams)),
            ("concurrency_per_connection", self.concurrency_per_connection as u64),
            ("request_timeout_secs", self.request_timeout_secs),
            ("tls_handshake_timeout_secs", self.tls_handshake_timeout_secs),
            ("keepalive_interval_secs", self.keepalive_interval_secs),
            ("keepalive_timeout_secs", self.keepalive_timeout_secs),
            ("tcp_keepalive_secs", self.tcp_keepalive_secs),
        ]
        .into_iter()
        .find(|(_, value)| *value == 0);
        if let Some((name, _)) = zero {
            return Err(format!("transport.{name} must be at least 1"));
        }
        if self.max_request_bytes < 1024 || self.max_header_list_bytes < 1024 {
            return Err("transport.max_request_bytes and transport.max_header_list_bytes must be at least 1024".into());
        }
        Ok(())
    }
}

/// Everything `apikeys serve` needs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free one (default 127.0.0.1:50051).
    pub listen: SocketAddr,
    /// Database URL; `None` means the SQLite file `<data_dir>/apikeys.db`.
    pub database_url: Option<DatabaseUrl>,
    /// Directory for the SQLite file and the bootstrap token (default `./data`).
    pub data_dir: PathBuf,
    /// Pool size (default 8).
    pub db_max_connections: u32,
    /// Name of the org created on first start (default `default`).
    pub bootstrap_org: String,
    /// Where the first administrator's token is written (default `<data_dir>/bootstrap-token`).
    pub bootstrap_token_file: Option<PathBuf>,
    /// Replacement permission catalog (TOML); `None` uses the built-in one.
    pub permissions_file: Option<PathBuf>,
    /// argon2 parameters and admission limits.
    pub hashing: HashingConfig,
    /// How long a successful verification is cached (default 60 s; 0 disables the cache).
    pub auth_cache_ttl: Duration,
    /// Most cached verifications (default 10 000).
    pub auth_cache_capacity: usize,
    /// How often the health check pings the database (default 5 s).
    pub health_interval: Duration,
    /// How long in-flight RPCs may take to finish on shutdown (default 10 s).
    pub shutdown_grace: Duration,
    /// Address of the Prometheus `/metrics` HTTP listener; `None` (default) means no listener.
    pub metrics_listen: Option<SocketAddr>,
    /// PEM certificate chain for TLS; with `tls_key`, the gRPC port speaks TLS only (default: none).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle; when set, clients must present a certificate it signed (mutual TLS).
    pub tls_client_ca: Option<PathBuf>,
    /// Transport limits.
    pub transport: TransportConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            database_url: None,
            data_dir: PathBuf::from("data"),
            db_max_connections: 8,
            bootstrap_org: "default".to_owned(),
            bootstrap_token_file: None,
            permissions_file: None,
            hashing: HashingConfig::default(),
            auth_cache_ttl: Duration::from_secs(60),
            auth_cache_capacity: 10_000,
            health_interval: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(10),
            metrics_listen: None,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            transport: TransportConfig::default(),
        }
    }
}

impl ServerConfig {
    /// The database URL in effect.
    pub fn database_url(&self) -> String {
        self.database_url
            .as_ref()
            .map(|url| url.expose().to_owned())
            .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", self.data_dir.join("apikeys.db").display()))
    }

    /// Checks the settings that could not take effect or would fail later.
    ///
    /// # Errors
    /// A message naming the setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.auth_cache_ttl > MAX_TTL {
            return Err(format!(
                "auth_cache_ttl_secs is {}; at most {} (a day) is allowed",
                self.auth_cache_ttl.as_secs(),
                MAX_TTL.as_secs()
            ));
        }
        self.transport.validate()
    }

    /// The bootstrap token path in effect.
    pub fn bootstrap_token_path(&self) -> PathBuf {
        self.bootstrap_token_file.clone().unwrap_or_else(|| self.data_dir.join("bootstrap-token"))
    }
}

/// One layer of settings: what a TOML file, or the flags and environment variables, say. Every field
/// is optional; a missing one falls through to the layer below. Keys are the flag names with `_`
/// instead of `-`; unknown keys are rejected.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// See [`ServerConfig::listen`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// See [`ServerConfig::database_url`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<DatabaseUrl>,
    /// See [`ServerConfig::data_dir`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// See [`ServerConfig::permissions_file`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permissions_file: Option<PathBuf>,
    /// argon2id memory cost in KiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub argon2_memory_kib: Option<u32>,
    /// argon2id iterations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub argon2_iterations: Option<u32>,
    /// argon2id lanes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub argon2_parallelism: Option<u32>,
    /// See [`ServerConfig::bootstrap_org`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bootstrap_org: Option<String>,
    /// See [`ServerConfig::bootstrap_token_file`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bootstrap_token_file: Option<PathBuf>,
    /// See [`ServerConfig::db_max_connections`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub db_max_connections: Option<u32>,
    /// argon2 computations at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash_concurrency: Option<usize>,
    /// Credential checks allowed to wait for argon2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash_queue: Option<usize>,
    /// Verification cache TTL in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_cache_ttl_secs: Option<u64>,
    /// See [`ServerConfig::auth_cache_capacity`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_cache_capacity: Option<usize>,
    /// Shutdown grace period in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_grace_secs: Option<u64>,
    /// See [`ServerConfig::metrics_listen`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// See [`ServerConfig::tls_cert`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// See [`ServerConfig::tls_key`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// See [`ServerConfig::tls_client_ca`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_ca: Option<PathBuf>,
    /// Log format (`text` or `json`; default `text`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    /// Log level or filter (default: `RUST_LOG`, else `info`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    /// See [`ServerConfig::transport`]: the `[transport]` table (only in the file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport: Option<TransportConfig>,
}

macro_rules! overlay {
    ($low:expr, $high:expr, $($field:ident),+ $(,)?) => {
        Settings { $($field: $high.$field.or($low.$field)),+ }
    };
}

impl Settings {
    /// Reads a TOML settings file.
    ///
    /// # Errors
    /// A message naming the file and the problem, e.g. the unknown key.
    pub fn from_file(path: &std::path::Path) -> Result<Self, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
        Self::from_toml(&text).map_err(|e| format!("config file {}: {e}", path.display()))
    }

    /// Parses TOML settings.
    ///
    /// # Errors
    /// The parser's message, which names an unknown key and lists the valid ones.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.message().to_owned())
    }

    /// `self` with every setting `higher` gives replaced by it.
    #[must_use]
    pub fn overlaid_with(self, higher: Self) -> Self {
        overlay!(
            self,
            higher,
            listen,
            database_url,
            data_dir,
            permissions_file,
            argon2_memory_kib,
            argon2_iterations,
            argon2_parallelism,
            bootstrap_org,
            bootstrap_token_file,
            db_max_connections,
            hash_concurrency,
            hash_queue,
            auth_cache_ttl_secs,
            auth_cache_capacity,
            shutdown_grace_secs,
            metrics_listen,
            tls_cert,
            tls_key,
            tls_client_ca,
            log_format,
            log_level,
            transport,
        )
    }

    /// The server configuration: these settings over the defaults.
    pub fn server_config(&self) -> ServerConfig {
        let d = ServerConfig::default();
        ServerConfig {
            listen: self.listen.unwrap_or(d.listen),
            database_url: self.database_url.clone(),
            data_dir: self.data_dir.clone().unwrap_or(d.data_dir),
            db_max_connections: self.db_max_connections.unwrap_or(d.db_max_connections),
            bootstrap_org: self.bootstrap_org.clone().unwrap_or(d.bootstrap_org),
            bootstrap_token_file: self.bootstrap_token_file.clone(),
            permissions_file: self.permissions_file.clone(),
            hashing: HashingConfig {
                memory_kib: self.argon2_memory_kib.unwrap_or(d.hashing.memory_kib),
                iterations: self.argon2_iterations.unwrap_or(d.hashing.iterations),
                parallelism: self.argon2_parallelism.unwrap_or(d.hashing.parallelism),
                max_concurrent: self.hash_concurrency.unwrap_or(d.hashing.max_concurrent),
                max_waiting: self.hash_queue.unwrap_or(d.hashing.max_waiting),
            },
            auth_cache_ttl: self.auth_cache_ttl_secs.map_or(d.auth_cache_ttl, Duration::from_secs),
            auth_cache_capacity: self.auth_cache_capacity.unwrap_or(d.auth_cache_capacity),
            health_interval: d.health_interval,
            shutdown_grace: self.shutdown_grace_secs.map_or(d.shutdown_grace, Duration::from_secs),
            metrics_listen: self.metrics_listen,
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            tls_client_ca: self.tls_client_ca.clone(),
            transport: self.transport.clone().unwrap_or_default(),
        }
    }
}

impl ServerConfig {
    /// Every setting in effect, as a [`Settings`] layer (for `apikeys config`), with the database
    /// password redacted. Printed as TOML it is a valid config file.
    pub fn effective_settings(&self) -> Settings {
        Settings {
            listen: Some(self.listen),
            database_url: Some(redact_url(&self.database_url()).into()),
            data_dir: Some(self.data_dir.clone()),
            permissions_file: self.permissions_file.clone(),
            argon2_memory_kib: Some(self.hashing.memory_kib),
            argon2_iterations: Some(self.hashing.iterations),
            argon2_parallelism: Some(self.hashing.parallelism),
            bootstrap_org: Some(self.bootstrap_org.clone()),
            bootstrap_token_file: Some(self.bootstrap_token_path()),
            db_max_connections: Some(self.db_max_connections),
            hash_concurrency: Some(self.hashing.max_concurrent),
            hash_queue: Some(self.hashing.max_waiting),
            auth_cache_ttl_secs: Some(self.auth_cache_ttl.as_secs()),
            auth_cache_capacity: Some(self.auth_cache_capacity),
            shutdown_grace_secs: Some(self.shutdown_grace.as_secs()),
            metrics_listen: self.metrics_listen,
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            tls_client_ca: self.tls_client_ca.clone(),
            log_format: None,
            log_level: None,
            transport: Some(self.transport.clone()),
        }
    }
}

/// Hides every password a database URL carries, for logs and `apikeys config`: the one in the user
/// info (`user:pw@`) and any query parameter whose name contains `password` (`?password=`,
/// `sslpassword=`). A URL that cannot be parsed is hidden whole after its scheme.
pub fn redact_url(url: &str) -> String {
    const MARK: &str = "__APIKEYS_REDACTED__";
    let Ok(mut parsed) = url::Url::parse(url) else {
        return match url.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://<redacted>"),
            None => "<redacted>".to_owned(),
        };
    };
    if parsed.password().is_some() && parsed.set_password(Some(MARK)).is_err() {
        return "<redacted>".to_owned();
    }
    let sensitive = |name: &str| name.to_ascii_lowercase().contains("password");
    if parsed.query_pairs().any(|(name, _)| sensitive(&name)) {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(name, value)| {
                let value = if sensitive(&name) { MARK.to_owned() } else { value.into_owned() };
                (name.into_owned(), value)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string().replace(MARK, "<redacted>")
}

#[cfg(test)]
mod tests {
    use super::Settings;

    #[test]
    fn higher_layers_win_and_missing_settings_fall_through() {
        let file = Settings::from_toml("listen = \"0.0.0.0:1\"\nhash_queue = 5\nbootstrap_org = \"file\"").unwrap();
        let env = Settings { hash_queue: Some(7), bootstrap_org: Some("env".into()), ..Settings::default() };
        let flags = Settings { bootstrap_org: Some("flag".into()), ..Settings::default() };
        let config = file.overlaid_with(env).overlaid_with(flags).server_config();
        assert_eq!(config.listen.to_string(), "0.0.0.0:1");
        assert_eq!(config.hashing.max_waiting, 7);
        assert_eq!(config.bootstrap_org, "flag");
        assert_eq!(config.db_max_connections, 8, "default");
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let error = Settings::from_toml("listen = \"127.0.0.1:1\"\nlisten_port = 5").unwrap_err();
        assert!(error.contains("listen_port"), "{error}");
    }

    #[test]
    fn effective_settings_round_trip_and_hide_the_password() {
        let settings = Settings { database_url: Some("postgres://u:pw@h/db".into()), ..Settings::default() };
        let effective = settings.server_config().effective_settings();
        let text = toml::to_string(&effective).unwrap();
        assert!(!text.contains("pw@"), "{text}");
        assert!(!format!("{settings:?}").contains("pw@"), "Debug hides the password");
        assert!(!format!("{:?}", settings.server_config()).contains("pw@"));
        assert_eq!(Settings::from_toml(&text).unwrap(), effective);
    }

    #[test]
    fn redacts_passwords() {
        use super::redact_url;
        assert_eq!(redact_url("postgres://u:pw@h/db"), "postgres://u:<redacted>@h/db");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite://data/x.db?mode=rwc"), "sqlite://data/x.db?mode=rwc");
        let query = redact_url("postgres://h/db?user=u&password=hunter2&sslmode=require&sslpassword=p%40ss");
        assert_eq!(query, "postgres://h/db?user=u&password=<redacted>&sslmode=require&sslpassword=<redacted>");
        let both = redact_url("postgres://u:a%3Ab@h:5432/db?PassWord=x");
        assert!(!both.contains("a%3Ab") && !both.contains("=x"), "{both}");
        assert_eq!(redact_url("postgres://u:pw@[broken/db"), "postgres://<redacted>");
    }
}
