//! Server configuration: one plain struct with documented defaults. The CLI fills it from flags and
//! `APIKEYS_*` environment variables; tests build it directly.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use crate::auth::hashing::HashingConfig;

/// Everything `apikeys serve` needs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free one (default 127.0.0.1:50051).
    pub listen: SocketAddr,
    /// Database URL; `None` means the SQLite file `<data_dir>/apikeys.db`.
    pub database_url: Option<String>,
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
        }
    }
}

impl ServerConfig {
    /// The database URL in effect.
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", self.data_dir.join("apikeys.db").display()))
    }

    /// The bootstrap token path in effect.
    pub fn bootstrap_token_path(&self) -> PathBuf {
        self.bootstrap_token_file.clone().unwrap_or_else(|| self.data_dir.join("bootstrap-token"))
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
    #[test]
    fn redacts_passwords() {
        assert_eq!(super::redact_url("postgres://u:pw@h/db"), "postgres://u:<redacted>@h/db");
        assert_eq!(super::redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(super::redact_url("sqlite://data/x.db"), "sqlite://data/x.db");
    }
}
