//! Server configuration: one plain struct with documented defaults ([`ServerConfig`]), and the
//! [`Settings`] layers it is made of. The CLI stacks them with the precedence flags > `APIKEYS_*`
//! environment variables > TOML file (`--config`) > defaults; tests build [`ServerConfig`] directly.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{auth::hashing::HashingConfig, telemetry::LogFormat};

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
        }
    }
}

/// Hides the password of a database URL, for logs and `apikeys config`.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:<redacted>{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
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
        assert_eq!(super::redact_url("postgres://u:pw@h/db"), "postgres://u:<redacted>@h/db");
        assert_eq!(super::redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(super::redact_url("sqlite://data/x.db"), "sqlite://data/x.db");
    }
}
