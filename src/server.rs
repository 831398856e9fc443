//! Wiring: builds the application from a [`ServerConfig`] (connect, migrate, bootstrap, load TLS
//! files, bind) and serves it until shutdown: the API behind the auth layer, gRPC health (SERVING only
//! while the database answers) and server reflection v1 and v1alpha, all inside the per-RPC trace
//! layer; optionally TLS (mutual with a client CA) and a Prometheus `/metrics` listener.
//!
//! `build` binds before `run` serves, so callers (tests) learn the real ports when listening on port 0.

use std::{
    future::Future,
    io::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::net::TcpListener;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig, server::TcpIncoming};
use tonic_health::{
    ServingStatus,
    server::{HealthReporter, HealthService},
};

use crate::{
    auth::{
        AuthLayer, cache::VerifiedCache, hashing::Hasher, jwt::UserTokens, local::LocalAuthenticator,
        restrictions::RateLimiter, watch::AbortOnDrop,
    },
    config::{ServerConfig, redact_url},
    console,
    deadline::DeadlineLayer,
    dispatch::DispatchLayer,
    domain::Catalog,
    error::Error,
    failure_budget::FailureBudget,
    keys::Keys,
    lockout::FailureLog,
    methods,
    metrics::{self, Metrics},
    pb,
    peer_limit::PeerLimitLayer,
    revocation::ChangeFeed,
    rpc_trace::RpcTraceLayer,
    service::{ApiKeyApi, routes::ApiKeyRoutes},
    store::{Store, StoreConfig, breaker::PROBE_INTERVAL},
    usage::UsageLog,
};

/// A startup failure, with a message for the operator.
pub type StartupError = Box<dyn std::error::Error + Send + Sync>;

/// A bound, ready-to-serve apikeys.
pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    store: Store,
    keys: Arc<Keys>,
    authenticator: Arc<LocalAuthenticator>,
    feed: Arc<ChangeFeed>,
    config: ServerConfig,
    tls: Option<ServerTlsConfig>,
    /// The console's TLS (the same certificate), when the console is on and TLS configured.
    console_tls: Option<Arc<rustls::ServerConfig>>,
    metrics: Arc<Metrics>,
    metrics_listener: Option<(TcpListener, SocketAddr)>,
    console_listener: Option<(TcpListener, SocketAddr)>,
    usage: Arc<UsageLog>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application").field("local_addr", &self.local_addr).finish_non_exhaustive()
    }
}

/// The TLS configuration the certificate files describe, if TLS is configured. Checked here, at
/// startup, so a bad file stops the server before it listens.
///
/// # Errors
/// A file cannot be read, only one of certificate and key is given, or the PEM is invalid.
pub fn tls_config(config: &ServerConfig) -> Result<Option<ServerTlsConfig>, StartupError> {
    let read = |path: &PathBuf, what: &str| {
        std::fs::read(path).map_err(|e| format!("cannot read TLS {what} {}: {e}", path.display()))
    };
    let (cert, key) = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => (read(cert, "certificate")?, read(key, "key")?),
        (None, None) if config.tls_client_ca.is_some() => return Err("tls_client_ca needs tls_cert and tls_key".into()),
        (None, None) => return Ok(None),
        _ => return Err("tls_cert and tls_key go together".into()),
    };
    let handshake_timeout = Duration::from_secs(config.transport.tls_handshake_timeout_secs);
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(cert, key)).timeout(handshake_timeout);
    if let Some(ca) = &config.tls_client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read(ca, "client CA")?));
    }
    // Builds the acceptor once, so a malformed certificate or key fails now with a message.
    Server::builder().tls_config(tls.clone()).map_err(|e| format!("invalid TLS configuration: {e}"))?;
    Ok(Some(tls))
}

/// The console's TLS settings: the gRPC certificate and key, for browsers (no client
/// certificates: people sign in instead), HTTP/2 and HTTP/1.1. `None` without `tls_cert`.
///
/// # Errors
/// A file cannot be read or its PEM is invalid.
fn console_tls(config: &ServerConfig) -> Result<Option<Arc<rustls::ServerConfig>>, StartupError> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else { return Ok(None) };
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| format!("console TLS certificate {}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("console TLS key {}: {e}", key.display()))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| format!("console TLS: {e}"))?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(Arc::new(tls)))
}

/// Creates `dir` and its missing parents, accessible by the owner only (0700; on Unix).
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Options that create a new file readable and writable by the owner only (0600; on Unix).
fn private_file_options() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

/// The file of a `sqlite://` URL, unless it is an in-memory database.
fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && path != ":memory:" && !rest.contains("mode=memory")).then(|| PathBuf::from(path))
}

/// Creates the SQLite file of `url` (and its directory) private to the owner before SQLite opens it;
/// SQLite gives its `-wal` and `-shm` files the database file's mode. Existing files are left alone.
fn prepare_sqlite_file(url: &str) -> Result<(), StartupError> {
    let Some(file) = sqlite_file(url) else { return Ok(()) };
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir(dir).map_err(|e| format!("cannot create data directory {}: {e}", dir.display()))?;
    }
    match private_file_options().open(&file) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!("cannot create database file {}: {e}", file.display()).into()),
    }
}

/// A bootstrap token written to a temporary file beside its final path, moved into place only once
/// the bootstrap has committed ([`StagedToken::publish`]). Dropped unpublished, it removes its own
/// temporary file and nothing else, so a replica that loses a bootstrap race never touches the
/// winner's token.
struct StagedToken {
    target: PathBuf,
    staged: PathBuf,
    written: bool,
}

impl StagedToken {
    fn new(target: &Path) -> Self {
        let name = target.file_name().map_or_else(|| "bootstrap-token".into(), |n| n.to_string_lossy().into_owned());
        let staged = target.with_file_name(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
        Self { target: target.to_path_buf(), staged, written: false }
    }

    fn write(&mut self, token: &str) -> Result<(), Error> {
        let fail = |e: std::io::Error| {
            Error::internal(format!("cannot write bootstrap token file {}: {e}", self.staged.display()))
        };
        if let Some(parent) = self.staged.parent().filter(|p| !p.as_os_str().is_empty()) {
            create_private_dir(parent).map_err(fail)?;
        }
        let mut file = private_file_options().open(&self.staged).map_err(fail)?;
        self.written = true;
        file.write_all(format!("{token}\n").as_bytes()).map_err(fail)?;
        file.sync_all().map_err(fail)
    }

    /// Moves the token to its final path (replacing what was there, which an earlier bootstrap on
    /// another database may have left).
    fn publish(mut self) -> Result<(), StartupError> {
        std::fs::rename(&self.staged, &self.target).map_err(|e| {
            // The key exists now: keep the only copy of its token where the operator can find it.
            self.written = false;
            format!(
                "the first administrator was created, but its token could not be moved from {} to {}: {e}",
                self.staged.display(),
                self.target.display()
            )
        })?;
        self.written = false;
        Ok(())
    }
}

impl Drop for StagedToken {
    fn drop(&mut self) {
        if self.written {
            drop(std::fs::remove_file(&self.staged));
        }
    }
}

/// Connects to the configured database and applies migrations.
///
/// # Errors
/// When the database cannot be reached or migrated.
pub async fn open_store(config: &ServerConfig) -> Result<Store, StartupError> {
    let url = config.database_url();
    prepare_sqlite_file(&url)?;
    let store = Store::connect(&StoreConfig {
        url: url.clone(),
        max_connections: config.db_max_connections,
        acquire_timeout: std::time::Duration::from_secs(5),
    })
    .await
    .map_err(|e| format!("cannot connect to database {}: {e}", redact_url(&url)))?;
    store.migrate().await.map_err(|e| format!("cannot migrate database {}: {e}", redact_url(&url)))?;
    tracing::info!(database = %redact_url(&url), "database ready");
    Ok(store)
}

/// The key lifecycle, the authenticator and the change feed over `store`, as configured; the
/// authenticator takes people's JWTs verified by `users`, if given (only a serving server needs them).
///
/// # Errors
/// Invalid argon2 parameters or catalog file; an unreadable change log.
pub async fn components(
    config: &ServerConfig,
    store: Store,
    users: Option<Arc<UserTokens>>,
) -> Result<(Arc<Keys>, Arc<LocalAuthenticator>, Arc<ChangeFeed>), StartupError> {
    let catalog = match &config.permissions_file {
        Some(path) => Catalog::from_file(path)?,
        None => Catalog::builtin()?,
    };
    let hasher = Arc::new(Hasher::new(&config.hashing())?);
    let cache = Arc::new(VerifiedCache::new(config.auth_cache_ttl(), config.auth_cache_capacity)?);
    let failures = Arc::new(FailureLog::default());
    let budget = FailureBudget::new(config.auth_failures_per_peer).map(Arc::new);
    let usage = Arc::new(UsageLog::new(config.track_usage));
    let authenticator = Arc::new(
        LocalAuthenticator::new(store.clone(), hasher.clone(), cache.clone(), failures.clone(), budget, usage)
            .with_users(users),
    );
    let changed = Arc::new(tokio::sync::Notify::new());
    let feed = ChangeFeed::start(store.clone(), cache.clone(), changed.clone(), config.feed()).await?;
    let keys = Arc::new(
        Keys::new(store, hasher, cache, failures, Arc::new(catalog), changed)
            .with_undelete_window(config.undelete_window()),
    );
    Ok((keys, authenticator, feed))
}

impl Application {
    /// Connects, migrates, bootstraps an empty database, and binds the listener.
    ///
    /// # Errors
    /// Any startup failure, with a message for the operator.
    pub async fn build(config: ServerConfig) -> Result<Self, StartupError> {
        config.validate()?;
        let tls = tls_config(&config)?;
        let console_tls = if config.console { console_tls(&config)? } else { None };
        let store = open_store(&config).await?;
        let users = UserTokens::from_config(&config.jwt).await?.map(Arc::new);
        let (keys, authenticator, feed) = components(&config, store.clone(), users).await?;
        if !store.has_orgs().await? {
            bootstrap(&keys, &config.bootstrap_org, &config.bootstrap_token_path()).await?;
        }
        let listener =
            TcpListener::bind(config.listen).await.map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
        let local_addr = listener.local_addr()?;
        if !local_addr.ip().is_loopback() && tls.is_none() {
            tracing::warn!(%local_addr, "listening on a non-loopback address without TLS: credentials travel in clear text");
        }
        let metrics_listener = match config.metrics_listen {
            Some(addr) => {
                let listener =
                    TcpListener::bind(addr).await.map_err(|e| format!("cannot listen for metrics on {addr}: {e}"))?;
                let bound = listener.local_addr()?;
                Some((listener, bound))
            }
            None => None,
        };
        let console_listener = match config.console {
            true => {
                let addr = config.console_listen;
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|e| format!("cannot listen for the console on {addr}: {e}"))?;
                let bound = listener.local_addr()?;
                if !bound.ip().is_loopback() && tls.is_none() {
                    tracing::warn!(%bound, "console on a non-loopback address without TLS: sign-ins travel in clear text");
                }
                Some((listener, bound))
            }
            false => None,
        };
        let metrics = Arc::new(Metrics::new(authenticator.clone(), store.clone(), feed.clone()));
        let usage = authenticator.usage().clone();
        Ok(Self {
            listener,
            local_addr,
            store,
            keys,
            authenticator,
            feed,
            config,
            tls,
            console_tls,
            metrics,
            metrics_listener,
            console_listener,
            usage,
        })
    }

    /// The uses of keys waiting to be written (tests count its statements).
    pub fn usage(&self) -> Arc<UsageLog> {
        self.usage.clone()
    }

    /// The address of the metrics listener actually bound, if metrics are on.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().map(|(_, addr)| *addr)
    }

    /// The address of the admin console actually bound, if the console is on.
    pub fn console_addr(&self) -> Option<SocketAddr> {
        self.console_listener.as_ref().map(|(_, addr)| *addr)
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The store (tests use it to inspect audit events or simulate an outage).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The key lifecycle (tests reach its test-only knobs).
    pub fn keys(&self) -> &Arc<Keys> {
        &self.keys
    }

    /// The in-process authenticator (tests inspect its cache).
    pub fn authenticator(&self) -> &Arc<LocalAuthenticator> {
        &self.authenticator
    }

    /// The change feed (tests and benchmarks read its counters).
    pub fn feed(&self) -> &Arc<ChangeFeed> {
        &self.feed
    }

    /// Serves until `shutdown` resolves, then reports NOT_SERVING, stops accepting, and gives
    /// in-flight RPCs the configured grace period.
    ///
    /// # Errors
    /// Transport failures.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), StartupError> {
        let stopping = Arc::new(AtomicBool::new(false));
        let (reporter, health_service) = health(&self.store, &self.config, stopping.clone()).await;
        // Health's descriptors too: grpcurl resolves every method it calls through reflection.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let (reflection_v1, reflection_v1alpha) = (reflection().build_v1()?, reflection().build_v1alpha()?);
        let limits = &self.config.transport;
        // One count per key for its Authenticate calls and its admin calls on this replica.
        let limiter = Arc::new(RateLimiter::default());
        let routes = ApiKeyRoutes::new(
            ApiKeyApi::new(
                self.keys.clone(),
                self.authenticator.clone(),
                self.feed.clone(),
                self.metrics.clone(),
                limiter.clone(),
                self.usage.clone(),
            ),
            limits.max_request_bytes,
        );
        let api = routes.generated();
        let layer = AuthLayer::new(self.authenticator.clone(), methods::access_policy())
            .with_rate_limiter(limiter)
            .trust_forwarded_for(self.config.trusted_proxies)
            .forwarded_only_from(self.config.trusted_proxy_networks().unwrap_or_default());

        // Every call goes through these, from gRPC clients and from the console alike (one count of
        // calls in flight per address for both).
        let layers = tower::ServiceBuilder::new()
            .layer(RpcTraceLayer::new(self.metrics.clone()))
            // Inside the trace, so a call answered DEADLINE_EXCEEDED is logged and counted so.
            .layer(DeadlineLayer::new(Duration::from_secs(limits.request_timeout_secs)))
            .layer(PeerLimitLayer::new(limits.max_in_flight_per_peer, self.authenticator.budget()))
            .layer(layer);
        let console_task = match self.console_listener {
            Some((listener, addr)) => {
                // The console calls the same services through the same layers, in process (only
                // TLS and the transport differ).
                let stack = tower::ServiceBuilder::new()
                    .map_response(|response: http::Response<_>| response.map(tonic::body::Body::new))
                    .layer(layers.clone())
                    .service(api.clone());
                let stack = tower::util::BoxCloneSyncService::new(stack);
                let idle = Duration::from_secs(self.config.console_idle_timeout_secs);
                let tls = self.console_tls;
                let loopback = addr.ip().is_loopback();
                let router = console::router(stack, self.authenticator.clone(), idle, tls.is_some(), loopback);
                let scheme = if tls.is_some() { "https" } else { "http" };
                tracing::info!(%addr, "console at {scheme}://{addr}/");
                let handshake = Duration::from_secs(limits.tls_handshake_timeout_secs);
                Some(AbortOnDrop(tokio::spawn(async move {
                    if let Err(error) = console::serve(listener, router, tls, handshake).await {
                        tracing::error!(%error, "console listener failed");
                    }
                })))
            }
            None => None,
        };
        let draining = Arc::new(tokio::sync::Notify::new());
        let signal = {
            let (draining, feed) = (draining.clone(), self.feed.clone());
            async move {
                shutdown.await;
                tracing::info!("shutting down: draining in-flight RPCs");
                stopping.store(true, Ordering::Release);
                feed.close();
                set_health(&reporter, false).await;
                draining.notify_one();
            }
        };
        let metrics_task = self.metrics_listener.map(|(listener, addr)| {
            tracing::info!(%addr, "metrics at http://{addr}/metrics");
            let metrics = self.metrics.clone();
            AbortOnDrop(tokio::spawn(async move {
                if let Err(error) = metrics::serve(listener, metrics).await {
                    tracing::error!(%error, "metrics listener failed");
                }
            }))
        });
        let flusher = {
            let (keys, interval) = (self.keys.clone(), Duration::from_millis(self.config.failure_flush_ms));
            AbortOnDrop(tokio::spawn(async move {
                let mut ticks = tokio::time::interval(interval);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    if let Err(error) = keys.flush_failures().await {
                        tracing::warn!(%error, "could not write failed-authentication counts; will retry");
                    }
                }
            }))
        };
        let feed_task = AbortOnDrop(tokio::spawn(self.feed.clone().run(self.config.listener_database_url())));
        let jwks_task = self.authenticator.users().map(|users| AbortOnDrop(tokio::spawn(users.clone().keep_fresh())));
        let usage_flusher = {
            let (usage, store) = (self.usage.clone(), self.store.clone());
            let interval = Duration::from_millis(self.config.usage_flush_ms);
            AbortOnDrop(tokio::spawn(async move {
                let mut ticks = tokio::time::interval(interval);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                // The first tick is immediate: nothing has been used yet.
                ticks.tick().await;
                loop {
                    ticks.tick().await;
                    if let Err(error) = usage.flush(&store).await {
                        tracing::warn!(%error, "could not write when keys were last used; will retry");
                    }
                }
            }))
        };
        let purger = {
            let (keys, interval) = (self.keys.clone(), Duration::from_millis(self.config.purge_interval_ms));
            let retention = Duration::from_secs(self.config.audit_retention_days.saturating_mul(24 * 60 * 60));
            let warnings = self.config.expiry_warnings();
            AbortOnDrop(tokio::spawn(async move {
                let mut ticks = tokio::time::interval(interval);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    if let Err(error) = keys.purge_deleted().await {
                        tracing::warn!(%error, "could not purge deleted API keys; will retry");
                    }
                    if let Err(error) = keys.warn_expiring(warnings).await {
                        tracing::warn!(%error, "could not write expiry warnings; will retry");
                    }
                    match keys.prune_audit_events(retention).await {
                        Ok(0) => {}
                        Ok(removed) => tracing::info!(removed, "audit events past their retention removed"),
                        Err(error) => tracing::warn!(%error, "could not remove old audit events; will retry"),
                    }
                }
            }))
        };
        tracing::info!(addr = %self.local_addr, tls = self.tls.is_some(), "apikeys listening");
        let secs = Duration::from_secs;
        let mut builder = Server::builder()
            .max_concurrent_streams(limits.max_concurrent_streams)
            // tonic leaves hyper's limit off unless set: the MadeYouReset protection (CVE-2025-8671).
            .http2_max_local_error_reset_streams(Some(limits.max_local_error_reset_streams))
            .http2_max_pending_accept_reset_streams(Some(limits.max_pending_accept_reset_streams))
            // Off unless configured: see `TransportConfig::keepalive_interval_secs`.
            .http2_keepalive_interval(
                (limits.keepalive_interval_secs > 0).then(|| secs(limits.keepalive_interval_secs)),
            )
            .http2_keepalive_timeout(Some(secs(limits.keepalive_timeout_secs)))
            .http2_max_header_list_size(limits.max_header_list_bytes);
        if limits.concurrency_per_connection > 0 {
            builder = builder.concurrency_limit_per_connection(limits.concurrency_per_connection);
        }
        if let Some(tls) = self.tls {
            builder = builder.tls_config(tls)?;
        }
        let incoming = TcpIncoming::from(self.listener)
            // TCP_NODELAY: without it, small responses wait for delayed ACKs (~40 ms per call).
            .with_nodelay(Some(true))
            .with_keepalive(Some(secs(limits.tcp_keepalive_secs)))
            .with_keepalive_interval(Some(secs(limits.tcp_keepalive_interval_secs)))
            .with_keepalive_retries(Some(limits.tcp_keepalive_retries));
        // Keepalive probes go out only while nothing sent is unacknowledged: a peer that vanishes
        // while a stream is being sent to it would hold the connection until the kernel gives up
        // retransmitting (~15 min). TCP_USER_TIMEOUT bounds that by the same time keepalive takes.
        let silence = limits
            .tcp_keepalive_secs
            .saturating_add(limits.tcp_keepalive_interval_secs.saturating_mul(u64::from(limits.tcp_keepalive_retries)));
        let incoming = tokio_stream::StreamExt::map(incoming, move |accepted| {
            let stream = accepted?;
            #[cfg(target_os = "linux")]
            if let Err(error) = socket2::SockRef::from(&stream).set_tcp_user_timeout(Some(secs(silence))) {
                tracing::debug!(%error, "could not set TCP_USER_TIMEOUT");
            }
            Ok::<_, std::io::Error>(stream)
        });
        let serve = builder
            .layer(layers)
            // The API key service's calls skip tonic's router; the others go through it.
            .layer(DispatchLayer::new(routes))
            .add_service(health_service.max_decoding_message_size(limits.max_request_bytes))
            .add_service(reflection_v1.max_decoding_message_size(limits.max_request_bytes))
            .add_service(reflection_v1alpha.max_decoding_message_size(limits.max_request_bytes))
            .serve_with_incoming_shutdown(incoming, signal);
        tokio::pin!(serve);
        tokio::select! {
            result = &mut serve => result?,
            () = draining.notified() => {
                match tokio::time::timeout(Duration::from_secs(self.config.shutdown_grace_secs), &mut serve).await {
                    Ok(result) => result?,
                    Err(_) => tracing::warn!("grace period over: abandoning RPCs still in flight"),
                }
            }
        }
        drop(metrics_task);
        drop(console_task);
        drop(flusher);
        drop(feed_task);
        drop(jwks_task);
        drop(usage_flusher);
        if let Err(error) = self.usage.flush(&self.store).await {
            tracing::warn!(%error, "could not write when keys were last used at shutdown");
        }
        drop(purger);
        // What is pending survives a graceful restart.
        if let Err(error) = self.keys.flush_failures().await {
            tracing::warn!(%error, "could not write failed-authentication counts at shutdown");
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Creates the first org and its administrator. The token is written to a private temporary file
/// before the database commit (so a failure to save it leaves no key nobody can use) and moved to
/// `token_path` after it; an instance that loses a bootstrap race to another one leaves the winner's
/// token alone.
///
/// # Errors
/// Database or file system failures.
pub async fn bootstrap(keys: &Keys, org: &str, token_path: &Path) -> Result<(), StartupError> {
    let mut staged = StagedToken::new(token_path);
    let result = keys.create_org_admin(org, "default", |credential| staged.write(&credential.token())).await;
    match result {
        Ok((org, issued)) => {
            staged.publish()?;
            tracing::warn!(
                org = %org.name,
                key_id = %issued.key.id,
                path = %token_path.display(),
                "first start: created the first administrator key; its token is in this file (mode 0600). \
                 Move it somewhere safe, then delete the file"
            );
            Ok(())
        }
        Err(Error::OrgExists(_)) => {
            tracing::info!("another instance bootstrapped the database first");
            Ok(())
        }
        Err(e) => Err(format!("bootstrap failed: {e}").into()),
    }
}

/// The health service and a task that keeps it in step with the database until `stopping` is set.
async fn health(
    store: &Store,
    config: &ServerConfig,
    stopping: Arc<AtomicBool>,
) -> (HealthReporter, tonic_health::pb::health_server::HealthServer<HealthService>) {
    let reporter = HealthReporter::new();
    let service =
        tonic_health::pb::health_server::HealthServer::new(HealthService::from_health_reporter(reporter.clone()));
    // A ping without an answer in time counts as a failure (a database that accepts connections
    // and then says nothing is down too).
    let up = store.check().await;
    set_health(&reporter, up).await;
    let interval = Duration::from_millis(config.health_interval_ms);
    let (store, task_reporter) = (store.clone(), reporter.clone());
    tokio::spawn(async move {
        let mut was_up = up;
        let mut pinged = tokio::time::Instant::now();
        loop {
            // Often, so that an outage any call found shows at once, and while the database is
            // down a ping per probe interval finds it back within moments; otherwise a ping per
            // interval.
            tokio::time::sleep(interval.min(PROBE_INTERVAL)).await;
            let up = if was_up && store.reachable() && !store.suspect() && pinged.elapsed() < interval {
                true
            } else {
                pinged = tokio::time::Instant::now();
                store.check().await
            };
            // Once shutdown has begun the status stays NOT_SERVING.
            if stopping.load(Ordering::Acquire) {
                break;
            }
            if up != was_up {
                tracing::warn!(database_up = up, "health changed");
                was_up = up;
                set_health(&task_reporter, up).await;
            }
        }
    });
    (reporter, service)
}

async fn set_health(reporter: &HealthReporter, up: bool) {
    let status = if up { ServingStatus::Serving } else { ServingStatus::NotServing };
    reporter.set_service_status("", status).await;
    reporter.set_service_status(pb::api_key_service_server::SERVICE_NAME, status).await;
}
