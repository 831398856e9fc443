//! Server configuration: [`ServerConfig`] is the one place a setting is declared, with its doc
//! comment and its default. [`load`] layers it: defaults, then the TOML file (`--config`), then
//! `APIKEYS_*` environment variables, then command-line flags, each later layer winning, and
//! remembers where each value came from. The flags and environment variables are derived from the
//! struct ([`settings`]), so adding a setting is adding a field.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::LazyLock,
    time::Duration,
};

use figment::{
    Figment, Metadata, Profile, Provider,
    providers::{Format as _, Toml},
    value::{Dict, Map, Value},
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    auth::{cache::MAX_TTL, hashing::HashingConfig},
    keys::MAX_UNDELETE_WINDOW,
    revocation::FeedConfig,
    telemetry::LogFormat,
};

/// A database URL. It may carry a password, so its `Debug` shows it redacted; [`DatabaseUrl::expose`]
/// gives the real value to the code that connects.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, derive_more::From, derive_more::FromStr)]
#[from(forward)]
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

/// Limits of the gRPC transport: what one client can make the server hold. The `[transport]` table of
/// the config file; every key is optional.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TransportConfig {
    /// HTTP/2 streams (RPCs) one connection may have open at once.
    pub max_concurrent_streams: u32,
    /// RPCs of one connection handled at once; further ones wait. 0 (the default): no limit of
    /// its own (a limit here costs a semaphore permit on every call): a connection still has at
    /// most `max_concurrent_streams` RPCs open and, unless `max_in_flight_per_peer` is 0 (as it
    /// may be behind a proxy), its client address at most that many in flight.
    pub concurrency_per_connection: usize,
    /// RPCs one client address may have in flight; further ones are refused at once with
    /// RESOURCE_EXHAUSTED (`PEER_BUSY`), so one flooding client cannot take the server from the
    /// others. 0: no cap.
    pub max_in_flight_per_peer: usize,
    /// Streams a client may make the server reset with protocol errors before its connection is
    /// closed (h2's MadeYouReset protection, CVE-2025-8671).
    pub max_local_error_reset_streams: usize,
    /// Streams a client may open and reset before the server accepts them (Rapid Reset,
    /// CVE-2023-44487).
    pub max_pending_accept_reset_streams: usize,
    /// Seconds an RPC may take to start its answer before it is answered DEADLINE_EXCEEDED (a
    /// stream, once started, runs on); a shorter `grpc-timeout` from the client wins.
    pub request_timeout_secs: u64,
    /// Seconds a TLS handshake may take.
    pub tls_handshake_timeout_secs: u64,
    /// Seconds between HTTP/2 keepalive pings on a connection; 0 (the default): none. Pings
    /// notice a peer whose process hangs with its kernel still answering, but hyper checks their
    /// timer on every pass over the connection, ~0.2 µs per call (BENCHMARKS.md); dead peers and
    /// broken paths are found by TCP keepalive and TCP_USER_TIMEOUT (`tcp_keepalive_*`) at no cost
    /// per call.
    pub keepalive_interval_secs: u64,
    /// Seconds to wait for a ping's answer before closing the connection.
    pub keepalive_timeout_secs: u64,
    /// Seconds of TCP idleness before TCP keepalive probes.
    pub tcp_keepalive_secs: u64,
    /// Seconds between TCP keepalive probes.
    pub tcp_keepalive_interval_secs: u64,
    /// Unanswered TCP keepalive probes before the connection is closed: a peer gone without a word
    /// is noticed after `tcp_keepalive_secs + tcp_keepalive_retries * tcp_keepalive_interval_secs`
    /// (90 s by default). The same time bounds how long data sent to it may stay unacknowledged
    /// (TCP_USER_TIMEOUT, on Linux), when keepalive probes do not go out.
    pub tcp_keepalive_retries: u32,
    /// Largest request message in bytes; larger ones get OUT_OF_RANGE.
    pub max_request_bytes: usize,
    /// Largest header block (metadata) of a request in bytes.
    pub max_header_list_bytes: u32,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 256,
            concurrency_per_connection: 0,
            max_in_flight_per_peer: 64,
            max_local_error_reset_streams: 1024,
            max_pending_accept_reset_streams: 20,
            request_timeout_secs: 30,
            tls_handshake_timeout_secs: 10,
            keepalive_interval_secs: 0,
            keepalive_timeout_secs: 20,
            tcp_keepalive_secs: 60,
            tcp_keepalive_interval_secs: 10,
            tcp_keepalive_retries: 3,
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
        at_least_one(
            "transport.",
            [
                ("max_concurrent_streams", u64::from(self.max_concurrent_streams)),
                ("request_timeout_secs", self.request_timeout_secs),
                ("tls_handshake_timeout_secs", self.tls_handshake_timeout_secs),
                ("keepalive_timeout_secs", self.keepalive_timeout_secs),
                ("tcp_keepalive_secs", self.tcp_keepalive_secs),
                ("tcp_keepalive_interval_secs", self.tcp_keepalive_interval_secs),
                ("tcp_keepalive_retries", u64::from(self.tcp_keepalive_retries)),
            ],
        )?;
        if self.max_request_bytes < 1024 || self.max_header_list_bytes < 1024 {
            return Err("transport.max_request_bytes and transport.max_header_list_bytes must be at least 1024".into());
        }
        Ok(())
    }
}

/// Human administrators: platform-issued JWTs accepted by the admin RPCs (see
/// [`crate::auth::jwt`]). The `[jwt]` table of the config file; off while `issuer` is empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct JwtConfig {
    /// Issuer (`iss`) of the platform's JWTs. Empty: JWTs are refused and only API keys
    /// administer apikeys.
    pub issuer: String,
    /// Audience (`aud`) a token must name to be accepted here.
    pub audience: String,
    /// JWKS file with the issuer's public keys; re-read when it changes.
    pub jwks_file: Option<PathBuf>,
    /// JWKS URL of the issuer's public keys (`https://`, or `http://` to a loopback address).
    pub jwks_url: String,
    /// Seconds between fetches of `jwks_url` (a token naming an unknown key fetches sooner).
    pub jwks_refresh_secs: u64,
    /// Seconds of clock skew allowed when checking `exp` and `nbf` (at most 300).
    pub leeway_secs: u64,
    /// Claim holding the user's ID. A name not found as is reaches into objects at its dots
    /// (`ext.uid`).
    pub user_id_claim: String,
    /// Claim holding the user's display name (the user ID when absent).
    pub name_claim: String,
    /// Claim holding the ID (a UUID) of the user's organization.
    pub org_claim: String,
    /// Organization of users whose token has no `org_claim`. Empty: the claim is required.
    pub default_org: String,
    /// Claim holding the permissions of the user's global role: a list of names, or one string
    /// of names separated by spaces.
    pub permissions_claim: String,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            issuer: String::new(),
            audience: String::new(),
            jwks_file: None,
            jwks_url: String::new(),
            jwks_refresh_secs: 300,
            leeway_secs: 60,
            user_id_claim: "sub".to_owned(),
            name_claim: "name".to_owned(),
            org_claim: "org".to_owned(),
            default_org: String::new(),
            permissions_claim: "permissions".to_owned(),
        }
    }
}

/// Most clock skew `jwt.leeway_secs` may allow.
const MAX_JWT_LEEWAY_SECS: u64 = 300;

impl JwtConfig {
    /// Whether JWTs are accepted at all.
    pub fn enabled(&self) -> bool {
        !self.issuer.is_empty()
    }

    /// Checks that an enabled configuration names an audience and exactly one key source.
    ///
    /// # Errors
    /// A message naming the setting.
    pub fn validate(&self) -> Result<(), String> {
        let has_url = !self.jwks_url.is_empty();
        if !self.enabled() {
            return if self.jwks_file.is_some() || has_url || !self.audience.is_empty() {
                Err("jwt.issuer is required when any other jwt setting is set".into())
            } else {
                Ok(())
            };
        }
        if self.audience.is_empty() {
            return Err("jwt.audience is required with jwt.issuer".into());
        }
        match (&self.jwks_file, has_url) {
            (None, false) => return Err("jwt.issuer needs jwt.jwks_file or jwt.jwks_url".into()),
            (Some(_), true) => return Err("set one of jwt.jwks_file and jwt.jwks_url, not both".into()),
            _ => {}
        }
        if has_url {
            let url = url::Url::parse(&self.jwks_url).map_err(|e| format!("jwt.jwks_url: {e}"))?;
            let loopback = match url.host() {
                Some(url::Host::Domain(name)) => name == "localhost",
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            };
            if !(url.scheme() == "https" || url.scheme() == "http" && loopback) {
                return Err("jwt.jwks_url must be https:// (http:// only to a loopback address)".into());
            }
        }
        if self.leeway_secs > MAX_JWT_LEEWAY_SECS {
            return Err(format!("jwt.leeway_secs is {}; at most {MAX_JWT_LEEWAY_SECS} is allowed", self.leeway_secs));
        }
        if !self.default_org.is_empty() && self.default_org.parse::<uuid::Uuid>().is_err() {
            return Err("jwt.default_org must be an organization ID (a UUID)".into());
        }
        for (name, claim) in [
            ("user_id_claim", &self.user_id_claim),
            ("org_claim", &self.org_claim),
            ("permissions_claim", &self.permissions_claim),
        ] {
            if claim.is_empty() {
                return Err(format!("jwt.{name} must name a claim"));
            }
        }
        at_least_one("jwt.", [("jwks_refresh_secs", self.jwks_refresh_secs)])
    }
}

/// Refuses the first of `settings` (named after `prefix`) that is zero.
fn at_least_one<const N: usize>(prefix: &str, settings: [(&str, u64); N]) -> Result<(), String> {
    match settings.into_iter().find(|(_, value)| *value == 0) {
        Some((name, _)) => Err(format!("{prefix}{name} must be at least 1")),
        None => Ok(()),
    }
}

/// Everything `apikeys serve` needs. Each field is a setting: a key of the TOML file, the flag
/// `--<key with - for _>` and the variable `APIKEYS_<KEY>` (`APIKEYS_TRANSPORT__<KEY>` in the
/// `[transport]` table). Its doc comment is its help text; `apikeys config` shows every value in
/// effect and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on for gRPC; port 0 picks a free one. A warning is logged for a
    /// non-loopback address without TLS.
    pub listen: SocketAddr,
    /// Database URL: `sqlite://PATH` or `postgres://USER:PASSWORD@HOST/DB`. Unset: the SQLite file
    /// `<data_dir>/apikeys.db`.
    pub database_url: Option<DatabaseUrl>,
    /// PostgreSQL URL of the change listener's own connection (LISTEN), for when `database_url`
    /// goes through a transaction pooler such as PgBouncer, which does not carry LISTEN. Unset:
    /// `database_url`.
    pub listener_database_url: Option<DatabaseUrl>,
    /// Directory for the SQLite file and the bootstrap token (created 0700).
    pub data_dir: PathBuf,
    /// Database connection pool size.
    pub db_max_connections: u32,
    /// Name of the org created on first start.
    pub bootstrap_org: String,
    /// Where the first administrator's token is written on first start. Unset:
    /// `<data_dir>/bootstrap-token`.
    pub bootstrap_token_file: Option<PathBuf>,
    /// Replacement permission catalog (TOML, the format of the built-in one). Unset: built-in.
    pub permissions_file: Option<PathBuf>,
    /// argon2id memory cost in KiB.
    pub argon2_memory_kib: u32,
    /// argon2id iterations.
    pub argon2_iterations: u32,
    /// argon2id lanes.
    pub argon2_parallelism: u32,
    /// argon2 verifications at once (the default is half the cores, at least 1, so a flood of
    /// credentials that need hashing leaves CPU to the cache hits).
    pub hash_concurrency: usize,
    /// Verifications waiting while every argon2 slot is busy; beyond that RESOURCE_EXHAUSTED.
    /// 0: never wait.
    pub hash_queue: usize,
    /// argon2 computations at once for new secrets (create, regenerate), in a lane of their own
    /// that a flood of credential checks cannot fill.
    pub admin_hash_concurrency: usize,
    /// Failed authentications per second one client address may cause (bursts of twice that);
    /// beyond it, its credentials that are not cached are refused with RESOURCE_EXHAUSTED
    /// (`TOO_MANY_FAILURES`) after 100 ms, without a database lookup. 0: no budget.
    pub auth_failures_per_peer: u32,
    /// Seconds a successful verification is cached (0 disables the cache; at most 86400).
    pub auth_cache_ttl_secs: u64,
    /// Most cached verifications.
    pub auth_cache_capacity: usize,
    /// Milliseconds between the health check's database pings.
    pub health_interval_ms: u64,
    /// Milliseconds between writes of failed-authentication counts (lockout); at most this long
    /// of counts is lost in a crash.
    pub failure_flush_ms: u64,
    /// Milliseconds between reads of the change log (revocation), also when no change is announced;
    /// on PostgreSQL changes are announced (LISTEN/NOTIFY) and arrive sooner.
    pub change_poll_ms: u64,
    /// Milliseconds a cached verification is trusted while the PostgreSQL change listener is down
    /// (changes made by other replicas may then go unnoticed until the next read of the log).
    pub degraded_cache_ttl_ms: u64,
    /// Milliseconds a cached verification is trusted, counted from the verification, while the
    /// database cannot be reached at all: credentials used in that time keep passing through an
    /// outage; others get UNAVAILABLE. If only this replica is cut off, changes made through
    /// other replicas go unnoticed here for as long. 0: refuse every credential during an outage.
    pub outage_cache_ttl_ms: u64,
    /// Seconds changes stay in the change log, for WatchKeyChanges streams that reconnect with a
    /// cursor; an older cursor is answered with `reset`.
    pub change_retention_secs: u64,
    /// Proxies in front of apikeys that each append the client address to `X-Forwarded-For`; the
    /// address a key's `allowed_cidrs` is checked against on apikeys' own RPCs is the entry that
    /// many from the right. 0: the TCP peer. Only set it when every request passes those proxies.
    pub trusted_proxies: usize,
    /// The networks those proxies connect from, comma-separated CIDRs (`10.0.0.0/8,fd00::/8`):
    /// `X-Forwarded-For` is read only from requests whose TCP peer is in one of them. Empty: from
    /// any peer (then nothing but the proxies may reach apikeys).
    pub trusted_proxy_cidrs: String,
    /// Seconds a deleted key can be restored (UndeleteApiKey) before it is purged for good; at
    /// most a year. 0: deletes are final (purged at the next sweep).
    pub undelete_window_secs: u64,
    /// Milliseconds between sweeps that purge deleted keys past their window (and audit events
    /// past their retention).
    pub purge_interval_ms: u64,
    /// Milliseconds between writes of when keys were last used (batched: never a write per
    /// request); at most this long of it is lost in a crash.
    pub usage_flush_ms: u64,
    /// Whether to note when, from where and by what keys are used (`last_used_*`).
    pub track_usage: bool,
    /// Days before a key's expiry when the first expiry warning (`EXPIRY_WARNING`) goes on the
    /// audit trail; 0: none.
    pub expiry_warning_days: u64,
    /// Hours before a key's expiry when the last expiry warning (`EXPIRY_LAST_WARNING`) goes on
    /// the audit trail; 0: none.
    pub expiry_last_warning_hours: u64,
    /// Days audit events are kept (ListAuditEvents, WatchAuditEvents); older ones are removed.
    pub audit_retention_days: u64,
    /// WatchKeyChanges streams open at once; beyond that RESOURCE_EXHAUSTED.
    pub max_watchers: usize,
    /// WatchKeyChanges streams one client address may have open at once.
    pub max_watchers_per_peer: usize,
    /// Seconds in-flight RPCs get to finish on SIGTERM / Ctrl-C.
    pub shutdown_grace_secs: u64,
    /// Address of the Prometheus `/metrics` HTTP listener. Unset: no listener.
    pub metrics_listen: Option<SocketAddr>,
    /// Whether to serve the admin web console (on `console_listen`).
    pub console: bool,
    /// Address of the admin web console (HTTP; HTTPS with `tls_cert`); port 0 picks a free one.
    pub console_listen: SocketAddr,
    /// Seconds a console session may sit idle before it must sign in again.
    pub console_idle_timeout_secs: u64,
    /// PEM certificate chain; with `tls_key`, gRPC is served over TLS only.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle; clients must present a certificate it signed (mutual TLS).
    pub tls_client_ca: Option<PathBuf>,
    /// Log format: `text` (coloured only on a terminal) or `json` (one object per line).
    pub log_format: LogFormat,
    /// Log level or filter, e.g. `debug` or `apikeys=debug,info`. Unset: `RUST_LOG`, else `info`.
    pub log_level: Option<String>,
    /// Transport limits: what one client can make the server hold.
    pub transport: TransportConfig,
    /// Human administrators: the platform JWTs the admin RPCs accept.
    pub jwt: JwtConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        let hashing = HashingConfig::default();
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            database_url: None,
            listener_database_url: None,
            data_dir: PathBuf::from("data"),
            db_max_connections: 8,
            bootstrap_org: "default".to_owned(),
            bootstrap_token_file: None,
            permissions_file: None,
            argon2_memory_kib: hashing.memory_kib,
            argon2_iterations: hashing.iterations,
            argon2_parallelism: hashing.parallelism,
            hash_concurrency: hashing.max_concurrent,
            hash_queue: hashing.max_waiting,
            admin_hash_concurrency: hashing.admin_concurrent,
            auth_failures_per_peer: 100,
            auth_cache_ttl_secs: 60,
            auth_cache_capacity: 10_000,
            health_interval_ms: 5000,
            failure_flush_ms: 1000,
            change_poll_ms: 1000,
            degraded_cache_ttl_ms: 1000,
            outage_cache_ttl_ms: 30_000,
            change_retention_secs: 24 * 60 * 60,
            trusted_proxies: 0,
            trusted_proxy_cidrs: String::new(),
            undelete_window_secs: crate::keys::DEFAULT_UNDELETE_WINDOW.as_secs(),
            purge_interval_ms: 60_000,
            audit_retention_days: 400,
            expiry_warning_days: 7,
            expiry_last_warning_hours: 24,
            usage_flush_ms: 60_000,
            track_usage: true,
            max_watchers: 1024,
            max_watchers_per_peer: 16,
            shutdown_grace_secs: 10,
            metrics_listen: None,
            console: true,
            console_listen: SocketAddr::from(([127, 0, 0, 1], 50052)),
            console_idle_timeout_secs: 15 * 60,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            log_format: LogFormat::Text,
            log_level: None,
            transport: TransportConfig::default(),
            jwt: JwtConfig::default(),
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

    /// The URL the change listener connects to.
    pub fn listener_database_url(&self) -> String {
        self.listener_database_url.as_ref().map_or_else(|| self.database_url(), |url| url.expose().to_owned())
    }

    /// The bootstrap token path in effect.
    pub fn bootstrap_token_path(&self) -> PathBuf {
        self.bootstrap_token_file.clone().unwrap_or_else(|| self.data_dir.join("bootstrap-token"))
    }

    /// The argon2 parameters and admission limits.
    pub fn hashing(&self) -> HashingConfig {
        HashingConfig {
            memory_kib: self.argon2_memory_kib,
            iterations: self.argon2_iterations,
            parallelism: self.argon2_parallelism,
            max_concurrent: self.hash_concurrency,
            max_waiting: self.hash_queue,
            admin_concurrent: self.admin_hash_concurrency,
        }
    }

    /// When expiry warnings are written.
    pub fn expiry_warnings(&self) -> crate::keys::ExpiryWarnings {
        crate::keys::ExpiryWarnings {
            first: Duration::from_secs(self.expiry_warning_days.saturating_mul(24 * 60 * 60)),
            last: Duration::from_secs(self.expiry_last_warning_hours.saturating_mul(60 * 60)),
        }
    }

    /// `trusted_proxy_cidrs`, parsed.
    ///
    /// # Errors
    /// A message naming the setting and the bad network.
    pub fn trusted_proxy_networks(&self) -> Result<Vec<crate::auth::restrictions::Cidr>, String> {
        self.trusted_proxy_cidrs
            .split(',')
            .map(str::trim)
            .filter(|text| !text.is_empty())
            .map(|text| text.parse().map_err(|reason| format!("trusted_proxy_cidrs: {reason}")))
            .collect()
    }

    /// How long a deleted key can be restored.
    pub fn undelete_window(&self) -> Duration {
        Duration::from_secs(self.undelete_window_secs)
    }

    /// How long a successful verification is cached.
    pub fn auth_cache_ttl(&self) -> Duration {
        Duration::from_secs(self.auth_cache_ttl_secs)
    }

    /// The change feed's settings.
    pub fn feed(&self) -> FeedConfig {
        FeedConfig {
            poll: Duration::from_millis(self.change_poll_ms),
            degraded_cache_ttl: Duration::from_millis(self.degraded_cache_ttl_ms),
            outage_cache_ttl: Duration::from_millis(self.outage_cache_ttl_ms),
            retention: Duration::from_secs(self.change_retention_secs),
            max_watchers: self.max_watchers,
            max_watchers_per_peer: self.max_watchers_per_peer,
            heartbeat: Duration::from_secs(15),
        }
    }

    /// The same configuration with the database password redacted, for showing.
    #[must_use]
    pub fn redacted(&self) -> Self {
        Self {
            database_url: Some(redact_url(&self.database_url()).into()),
            listener_database_url: self.listener_database_url.as_ref().map(|url| redact_url(url.expose()).into()),
            ..self.clone()
        }
    }

    /// Checks the settings that could not take effect or would fail later.
    ///
    /// # Errors
    /// A message naming the setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.auth_cache_ttl() > MAX_TTL {
            return Err(format!(
                "auth_cache_ttl_secs is {}; at most {} (a day) is allowed",
                self.auth_cache_ttl_secs,
                MAX_TTL.as_secs()
            ));
        }
        self.trusted_proxy_networks()?;
        if self.undelete_window_secs > MAX_UNDELETE_WINDOW.as_secs() {
            return Err(format!(
                "undelete_window_secs is {}; at most {} (a year) is allowed",
                self.undelete_window_secs,
                MAX_UNDELETE_WINDOW.as_secs()
            ));
        }
        at_least_one(
            "",
            [
                ("purge_interval_ms", self.purge_interval_ms),
                ("audit_retention_days", self.audit_retention_days),
                ("usage_flush_ms", self.usage_flush_ms),
                ("health_interval_ms", self.health_interval_ms),
                ("failure_flush_ms", self.failure_flush_ms),
                ("change_poll_ms", self.change_poll_ms),
                ("change_retention_secs", self.change_retention_secs),
                ("console_idle_timeout_secs", self.console_idle_timeout_secs),
            ],
        )?;
        self.jwt.validate()?;
        self.transport.validate()
    }
}

/// One setting as the tooling sees it: its key, its help text and its default.
#[derive(Debug, Clone)]
pub struct Setting {
    /// `hash_queue`, or `transport.max_request_bytes` in a table.
    pub key: String,
    /// The field's doc comment.
    pub doc: String,
    /// The default value (null when unset by default).
    pub default: serde_json::Value,
}

impl Setting {
    /// The command-line flag, without its dashes: `hash-queue`, `transport-max-request-bytes`.
    pub fn flag(&self) -> String {
        self.key.replace(['.', '_'], "-")
    }

    /// The environment variable: `APIKEYS_HASH_QUEUE`, `APIKEYS_TRANSPORT__MAX_REQUEST_BYTES`.
    pub fn env(&self) -> String {
        format!("APIKEYS_{}", self.key.replace('.', "__").to_uppercase())
    }

    /// `raw` (a flag's or variable's text) as a value of this setting's type, which its default
    /// tells: numbers and booleans are parsed, everything else stays text.
    fn parse(&self, raw: &str, source: &str) -> Result<Value, String> {
        let bad = |what: &str| format!("{source}: expected {what}, got {raw:?}");
        Ok(match &self.default {
            serde_json::Value::Number(_) => Value::from(raw.trim().parse::<u64>().map_err(|_| bad("a whole number"))?),
            serde_json::Value::Bool(_) => Value::from(raw.trim().parse::<bool>().map_err(|_| bad("true or false"))?),
            _ => Value::from(raw.to_owned()),
        })
    }
}

/// Every setting of [`ServerConfig`], in declaration order, tables flattened to dotted keys.
pub fn settings() -> &'static [Setting] {
    static SETTINGS: LazyLock<Vec<Setting>> = LazyLock::new(|| {
        let schema = serde_json::to_value(schemars::schema_for!(ServerConfig)).unwrap_or_default();
        let defaults = serde_json::to_value(ServerConfig::default()).unwrap_or_default();
        let mut out = Vec::new();
        collect_settings(&schema, &schema, &defaults, "", &mut out);
        out
    });
    &SETTINGS
}

fn collect_settings(
    root: &serde_json::Value,
    schema: &serde_json::Value,
    defaults: &serde_json::Value,
    prefix: &str,
    out: &mut Vec<Setting>,
) {
    let Some(properties) = schema.get("properties").and_then(serde_json::Value::as_object) else { return };
    for (name, property) in properties {
        let key = format!("{prefix}{name}");
        let default = defaults.get(name).cloned().unwrap_or_default();
        let table = property
            .get("$ref")
            .and_then(serde_json::Value::as_str)
            .and_then(|r| r.strip_prefix("#/$defs/"))
            .and_then(|name| root.get("$defs")?.get(name))
            .filter(|def| def.get("properties").is_some());
        match table {
            Some(def) => collect_settings(root, def, &default, &format!("{key}."), out),
            None => {
                let doc = property.get("description").and_then(serde_json::Value::as_str).unwrap_or_default();
                out.push(Setting { key, doc: doc.replace('\n', " "), default });
            }
        }
    }
}

/// One layer of values with a name saying where they came from.
struct Layer {
    name: String,
    values: Dict,
}

impl Layer {
    /// A layer holding one setting's value; a dotted key is a value inside a table.
    fn single(name: String, mut key: &str, mut value: Value) -> Self {
        while let Some((table, leaf)) = key.rsplit_once('.') {
            value = Value::from(Dict::from([(leaf.to_owned(), value)]));
            key = table;
        }
        Self { name, values: Dict::from([(key.to_owned(), value)]) }
    }
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name.clone())
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.values.clone()))
    }
}

/// A configuration and where each of its values came from.
#[derive(Debug)]
pub struct Loaded {
    /// The configuration in effect.
    pub config: ServerConfig,
    figment: Figment,
}

impl Loaded {
    /// Where the value of setting `key` came from: `default`, `file PATH`, `environment VAR` or
    /// `flag --NAME`.
    pub fn source(&self, key: &str) -> String {
        self.figment.find_metadata(key).map_or_else(|| "default".to_owned(), source_name)
    }
}

/// Where a layer's values came from, as `apikeys config` and error messages say it: a file by its
/// full path, else the layer's name (`environment VAR`, `flag --NAME`, `default`).
fn source_name(metadata: &Metadata) -> String {
    match metadata.source.as_ref().and_then(figment::Source::file_path) {
        Some(path) => format!("file {}", path.display()),
        None => metadata.name.to_string(),
    }
}

/// Loads the configuration: defaults, then `file` (if any), then `APIKEYS_*` environment variables,
/// then `flags` (setting key and raw text, as given on the command line).
///
/// # Errors
/// A message naming the file, variable or flag and what is wrong: an unknown key, a value of the
/// wrong type, an unreadable file, or a setting that would fail later ([`ServerConfig::validate`]).
pub fn load(file: Option<&Path>, flags: &[(String, String)]) -> Result<Loaded, String> {
    let defaults = Value::serialize(ServerConfig::default()).map_err(|e| e.to_string())?;
    let mut figment =
        Figment::from(Layer { name: "default".to_owned(), values: defaults.into_dict().unwrap_or_default() });
    if let Some(path) = file {
        if !path.is_file() {
            return Err(format!("cannot read config file {}: not a readable file", path.display()));
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    for setting in settings() {
        let var = setting.env();
        if let Some(raw) = std::env::var_os(&var) {
            let raw = raw.into_string().map_err(|_| format!("{var} is not valid UTF-8"))?;
            let value = setting.parse(&raw, &var)?;
            figment = figment.merge(Layer::single(format!("environment {var}"), &setting.key, value));
        }
    }
    for (key, raw) in flags {
        let setting = settings().iter().find(|s| &s.key == key).ok_or_else(|| format!("unknown setting {key}"))?;
        let flag = format!("flag --{}", setting.flag());
        let value = setting.parse(raw, &flag)?;
        figment = figment.merge(Layer::single(flag, key, value));
    }
    let config: ServerConfig = figment.extract().map_err(|e| describe(&e))?;
    config.validate()?;
    Ok(Loaded { config, figment })
}

/// figment's errors, each with the key and where its value came from (a file by its full path).
fn describe(error: &figment::Error) -> String {
    let one = |e: figment::Error| {
        let key = Some(e.path.join(".")).filter(|key| !key.is_empty());
        let parts = [e.metadata.as_ref().map(source_name), key, Some(e.kind.to_string())];
        parts.into_iter().flatten().collect::<Vec<_>>().join(": ")
    };
    error.clone().into_iter().map(one).collect::<Vec<_>>().join("; ")
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
    use super::*;

    #[test]
    fn a_jwt_configuration_is_checked_whole() {
        let on = |change: fn(&mut JwtConfig)| {
            let mut jwt = JwtConfig {
                issuer: "https://id.example.com".into(),
                audience: "apikeys".into(),
                jwks_url: "https://id.example.com/jwks.json".into(),
                ..JwtConfig::default()
            };
            change(&mut jwt);
            jwt.validate()
        };
        assert_eq!(JwtConfig::default().validate(), Ok(()), "off by default");
        assert_eq!(on(|_| {}), Ok(()));
        assert_eq!(on(|j| j.jwks_url = "http://127.0.0.1:8080/jwks".into()), Ok(()));
        assert_eq!(on(|j| j.jwks_url = "http://localhost/jwks".into()), Ok(()));
        let refused = [
            (on(|j| j.issuer.clear()), "jwt.issuer"),
            (on(|j| j.audience.clear()), "jwt.audience"),
            (on(|j| j.jwks_url.clear()), "jwt.jwks_file or jwt.jwks_url"),
            (on(|j| j.jwks_file = Some("/etc/jwks.json".into())), "not both"),
            (on(|j| j.jwks_url = "http://id.example.com/jwks".into()), "https://"),
            (on(|j| j.jwks_url = "not a url".into()), "jwt.jwks_url"),
            (on(|j| j.leeway_secs = 301), "jwt.leeway_secs"),
            (on(|j| j.default_org = "acme".into()), "jwt.default_org"),
            (on(|j| j.user_id_claim.clear()), "jwt.user_id_claim"),
            (on(|j| j.jwks_refresh_secs = 0), "jwt.jwks_refresh_secs"),
        ];
        for (result, needle) in refused {
            let message = result.unwrap_err();
            assert!(message.contains(needle), "{message:?} should name {needle}");
        }
    }

    #[test]
    fn transport_limits_are_checked_and_the_connection_limit_may_be_off() {
        let defaults = TransportConfig::default();
        assert_eq!(defaults.validate(), Ok(()));
        assert_eq!(defaults.concurrency_per_connection, 0, "off: the stream and per-address caps bound it");
        let limited = TransportConfig { concurrency_per_connection: 8, ..TransportConfig::default() };
        assert_eq!(limited.validate(), Ok(()));
        let no_streams = TransportConfig { max_concurrent_streams: 0, ..TransportConfig::default() };
        assert!(no_streams.validate().unwrap_err().contains("transport.max_concurrent_streams"));
    }

    #[test]
    fn every_field_is_a_setting_with_its_doc_and_default() {
        let keys: Vec<&str> = settings().iter().map(|s| s.key.as_str()).collect();
        assert!(keys.contains(&"hash_queue") && keys.contains(&"transport.max_request_bytes"), "{keys:?}");
        for setting in settings() {
            assert!(!setting.doc.is_empty(), "{} has no doc comment", setting.key);
        }
        let queue = settings().iter().find(|s| s.key == "hash_queue").unwrap();
        assert_eq!(queue.default, serde_json::json!(64));
        assert_eq!((queue.flag(), queue.env()), ("hash-queue".to_owned(), "APIKEYS_HASH_QUEUE".to_owned()));
        let nested = settings().iter().find(|s| s.key == "transport.max_request_bytes").unwrap();
        assert_eq!(nested.env(), "APIKEYS_TRANSPORT__MAX_REQUEST_BYTES");
        assert_eq!(nested.flag(), "transport-max-request-bytes");
    }

    #[test]
    fn redacted_hides_the_password() {
        let config = ServerConfig {
            database_url: Some("postgres://u:pw@h/db".into()),
            listener_database_url: Some("postgres://u:pw@direct/db".into()),
            ..ServerConfig::default()
        };
        assert!(!format!("{config:?}").contains("pw@"), "Debug hides the password");
        let shown = serde_json::to_string(&config.redacted()).unwrap();
        assert!(!shown.contains("pw@") && shown.contains("<redacted>"), "{shown}");
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
