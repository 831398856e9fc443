//! The server side of the command line: `serve`, `migrate`, `bootstrap` and `config`, and how their
//! flags, `APIKEYS_*` environment variables and the optional TOML file (`--config`) stack up into a
//! [`ServerConfig`]: flags > environment > file > defaults.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, ValueEnum};

use crate::{
    config::{DatabaseUrl, Settings},
    server::StartupError,
    telemetry::LogFormat,
};

/// Where the data lives, and the config file. Shared by `serve`, `migrate`, `bootstrap` and `config`.
#[derive(Debug, Clone, Default, Args)]
pub struct StorageArgs {
    /// TOML file with settings (keys are the flag names with `_`); flags and env vars win over it.
    #[arg(long, env = "APIKEYS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Database URL (`sqlite://...` or `postgres://...`) [default: SQLite file in the data directory].
    #[arg(long, env = "APIKEYS_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<DatabaseUrl>,
    /// Directory for the SQLite file and the bootstrap token [default: data].
    #[arg(long, env = "APIKEYS_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Replace the built-in permission catalog with this TOML file.
    #[arg(long, env = "APIKEYS_PERMISSIONS_FILE")]
    pub permissions_file: Option<PathBuf>,
    /// argon2id memory cost in KiB [default: 19456].
    #[arg(long, env = "APIKEYS_ARGON2_MEMORY_KIB")]
    pub argon2_memory_kib: Option<u32>,
    /// argon2id iterations [default: 2].
    #[arg(long, env = "APIKEYS_ARGON2_ITERATIONS")]
    pub argon2_iterations: Option<u32>,
    /// argon2id lanes [default: 1].
    #[arg(long, env = "APIKEYS_ARGON2_PARALLELISM")]
    pub argon2_parallelism: Option<u32>,
}

/// `apikeys serve` (and `apikeys config`, which shows what `serve` would use).
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:50051].
    #[arg(long, env = "APIKEYS_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Storage settings.
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Name of the org created on first start [default: default].
    #[arg(long, env = "APIKEYS_BOOTSTRAP_ORG")]
    pub bootstrap_org: Option<String>,
    /// Where the first administrator's token is written on first start [default: <data-dir>/bootstrap-token].
    #[arg(long, env = "APIKEYS_BOOTSTRAP_TOKEN_FILE")]
    pub bootstrap_token_file: Option<PathBuf>,
    /// Database pool size [default: 8].
    #[arg(long, env = "APIKEYS_DB_MAX_CONNECTIONS")]
    pub db_max_connections: Option<u32>,
    /// argon2 computations at once [default: number of cores].
    #[arg(long, env = "APIKEYS_HASH_CONCURRENCY")]
    pub hash_concurrency: Option<usize>,
    /// Credential checks allowed to wait for argon2; beyond that RESOURCE_EXHAUSTED [default: 64].
    #[arg(long, env = "APIKEYS_HASH_QUEUE")]
    pub hash_queue: Option<usize>,
    /// Seconds a successful verification is cached; 0 disables the cache [default: 60].
    #[arg(long, env = "APIKEYS_AUTH_CACHE_TTL_SECS")]
    pub auth_cache_ttl_secs: Option<u64>,
    /// Most cached verifications [default: 10000].
    #[arg(long, env = "APIKEYS_AUTH_CACHE_CAPACITY")]
    pub auth_cache_capacity: Option<usize>,
    /// Seconds in-flight RPCs get to finish on shutdown [default: 10].
    #[arg(long, env = "APIKEYS_SHUTDOWN_GRACE_SECS")]
    pub shutdown_grace_secs: Option<u64>,
    /// Serve Prometheus metrics at http://ADDR/metrics [default: off].
    #[arg(long, env = "APIKEYS_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// PEM certificate chain: serve gRPC over TLS (needs --tls-key).
    #[arg(long, env = "APIKEYS_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "APIKEYS_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle: require client certificates signed by it (mutual TLS; needs --tls-cert).
    #[arg(long, env = "APIKEYS_TLS_CLIENT_CA", value_name = "FILE", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
}

/// `apikeys bootstrap`.
#[derive(Debug, Clone, Args)]
pub struct BootstrapArgs {
    /// Name of the organization to create.
    #[arg(long)]
    pub org: String,
    /// Storage settings.
    #[command(flatten)]
    pub storage: StorageArgs,
}

/// How `apikeys config` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum ConfigFormat {
    /// A TOML file `--config` accepts.
    #[default]
    Toml,
    /// One JSON object.
    Json,
}

/// `apikeys config`.
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "toml")]
    pub format: ConfigFormat,
    /// The settings `serve` would get.
    #[command(flatten)]
    pub serve: ServeArgs,
}

impl StorageArgs {
    /// The storage settings given as flags or environment variables.
    fn settings(&self) -> Settings {
        Settings {
            database_url: self.database_url.clone(),
            data_dir: self.data_dir.clone(),
            permissions_file: self.permissions_file.clone(),
            argon2_memory_kib: self.argon2_memory_kib,
            argon2_iterations: self.argon2_iterations,
            argon2_parallelism: self.argon2_parallelism,
            ..Settings::default()
        }
    }

    /// The settings of the `--config` file, if any.
    fn file(&self) -> Result<Settings, StartupError> {
        Ok(match &self.config {
            Some(path) => Settings::from_file(path)?,
            None => Settings::default(),
        })
    }
}

impl ServeArgs {
    /// The settings given as flags or environment variables (clap lets a flag win over its variable).
    pub fn settings(&self) -> Settings {
        Settings {
            listen: self.listen,
            bootstrap_org: self.bootstrap_org.clone(),
            bootstrap_token_file: self.bootstrap_token_file.clone(),
            db_max_connections: self.db_max_connections,
            hash_concurrency: self.hash_concurrency,
            hash_queue: self.hash_queue,
            auth_cache_ttl_secs: self.auth_cache_ttl_secs,
            auth_cache_capacity: self.auth_cache_capacity,
            shutdown_grace_secs: self.shutdown_grace_secs,
            metrics_listen: self.metrics_listen,
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            tls_client_ca: self.tls_client_ca.clone(),
            ..self.storage.settings()
        }
    }

    /// The file's settings overlaid with the flags and environment variables.
    ///
    /// # Errors
    /// The config file cannot be read or has unknown keys or bad values.
    pub fn layered(&self) -> Result<Settings, StartupError> {
        Ok(self.storage.file()?.overlaid_with(self.settings()))
    }
}

impl StorageArgs {
    /// The file's storage settings overlaid with the flags and environment variables.
    ///
    /// # Errors
    /// The config file cannot be read or has unknown keys or bad values.
    pub fn layered(&self) -> Result<Settings, StartupError> {
        Ok(self.file()?.overlaid_with(self.settings()))
    }
}

/// Prints the effective configuration of `serve`, secrets redacted.
///
/// # Errors
/// The configuration cannot be serialized (a bug).
pub fn print_config(layered: &Settings, format: ConfigFormat) -> Result<(), StartupError> {
    let mut settings = layered.server_config().effective_settings();
    settings.log_format = Some(layered.log_format.unwrap_or(LogFormat::Text));
    settings.log_level.clone_from(&layered.log_level);
    let text = match format {
        ConfigFormat::Toml => toml::to_string(&settings)?,
        ConfigFormat::Json => serde_json::to_string_pretty(&settings)? + "\n",
    };
    print!("{text}");
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
