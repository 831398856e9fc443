//! A channel to a set of apikeys replicas that survives losing one of them.
//!
//! [`Replicas::connect`] takes one or more URLs. Each host name is resolved to all its addresses,
//! and again every [`ReplicaConfig::refresh`], so several URLs and one DNS name with several records
//! both work. Every address gets a watcher: a connection of its own following
//! `grpc.health.v1.Health/Watch`. An address joins the balanced channel when it reports SERVING and
//! leaves it as soon as it reports NOT_SERVING (a replica draining for shutdown) or its connection
//! breaks (a crash), so new calls go only to replicas that are up. A call whose connection was
//! refused never left this process, so it is sent again to another replica; a call already sent is
//! never repeated (it may have taken effect).

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use tokio::sync::{mpsc, watch};
use tonic::{
    body::Body,
    transport::{Channel, Endpoint, channel::Change},
};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::auth::watch::AbortOnDrop;

/// How a [`Replicas`] finds and reaches the replicas.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// How often host names are resolved again.
    pub refresh: Duration,
    /// Deadline for establishing a connection.
    pub connect_timeout: Duration,
    /// Deadline of each call (none if `None`).
    pub timeout: Option<Duration>,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        Self { refresh: Duration::from_secs(30), connect_timeout: Duration::from_secs(5), timeout: None }
    }
}

/// Why replicas could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// A URL is malformed or names no host.
    #[error("invalid apikeys URL {0:?}")]
    InvalidUrl(String),
    /// Setting up an endpoint failed (e.g. TLS).
    #[error("cannot set up {url}: {source}")]
    Endpoint {
        /// The URL.
        url: String,
        /// What failed.
        source: tonic::transport::Error,
    },
    /// No replica reported SERVING in time.
    #[error("no apikeys replica is serving among {0}")]
    NoneServing(String),
}

/// Sets up the endpoint of one address of `url`: the caller's TLS settings, with `host` as the name
/// the certificate must carry.
pub type Configure = dyn Fn(Endpoint, &str) -> Result<Endpoint, tonic::transport::Error> + Send + Sync;

/// Balanced calls to every serving replica; see the module docs. Clone [`Replicas::channel`] for
/// generated clients; the watchers stop when the last clone of the channel is dropped.
#[derive(Debug)]
pub struct Replicas {
    channel: RetryUnsent,
    serving: watch::Receiver<usize>,
}

/// One URL as given, split into what the endpoints need.
struct Target {
    scheme: String,
    host: String,
    port: u16,
}

impl Target {
    fn parse(url: &str) -> Result<Self, ReplicaError> {
        let invalid = || ReplicaError::InvalidUrl(url.to_owned());
        let uri: http::Uri = url.parse().map_err(|_| invalid())?;
        let scheme = uri.scheme_str().ok_or_else(invalid)?.to_owned();
        let host = uri.host().ok_or_else(invalid)?.trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = uri.port_u16().unwrap_or(if scheme == "https" { 443 } else { 80 });
        Ok(Self { scheme, host, port })
    }
}

impl Replicas {
    /// Starts watching the replicas of `urls` and waits until one is serving (at most
    /// `config.connect_timeout`). `configure` applies TLS to each endpoint; pass `|e, _| Ok(e)` for
    /// plain HTTP.
    ///
    /// # Errors
    /// A malformed URL, an endpoint that cannot be set up, or no replica serving in time.
    pub async fn connect(
        urls: &[String],
        config: ReplicaConfig,
        configure: Arc<Configure>,
    ) -> Result<Self, ReplicaError> {
        let replicas = Self::connect_lazy(urls, config.clone(), configure)?;
        let mut serving = replicas.serving.clone();
        let ready = tokio::time::timeout(config.connect_timeout, serving.wait_for(|n| *n > 0)).await;
        if !matches!(ready, Ok(Ok(_))) {
            return Err(ReplicaError::NoneServing(urls.join(", ")));
        }
        Ok(replicas)
    }

    /// Like [`Replicas::connect`] without waiting: calls wait (up to their deadline) until a
    /// replica is serving, so a consumer can start while apikeys is down.
    ///
    /// # Errors
    /// A malformed URL or an endpoint that cannot be set up.
    pub fn connect_lazy(
        urls: &[String],
        config: ReplicaConfig,
        configure: Arc<Configure>,
    ) -> Result<Self, ReplicaError> {
        let targets =
            urls.iter().map(|url| Target::parse(url).map(|t| (url.clone(), t))).collect::<Result<Vec<_>, _>>()?;
        if targets.is_empty() {
            return Err(ReplicaError::InvalidUrl(String::new()));
        }
        // Checked now, so a bad TLS setting fails here rather than in the background.
        for (url, target) in &targets {
            endpoint(target, SocketAddr::from(([127, 0, 0, 1], target.port)), &config, &*configure)
                .map_err(|source| ReplicaError::Endpoint { url: url.clone(), source })?;
        }
        let (channel, changes) = Channel::balance_channel::<SocketAddr>(64);
        let (serving_tx, serving) = watch::channel(0);
        let supervisor = tokio::spawn(supervise(targets, config, configure, changes, serving_tx));
        let channel = RetryUnsent { inner: channel, _supervisor: Some(Arc::new(AbortOnDrop(supervisor))) };
        Ok(Self { channel, serving })
    }

    /// The balanced channel, for generated clients (`ApiKeyServiceClient::new(replicas.channel())`).
    pub fn channel(&self) -> RetryUnsent {
        self.channel.clone()
    }

    /// How many replicas report SERVING now.
    pub fn serving(&self) -> usize {
        *self.serving.borrow()
    }
}

fn endpoint(
    target: &Target,
    addr: SocketAddr,
    config: &ReplicaConfig,
    configure: &Configure,
) -> Result<Endpoint, tonic::transport::Error> {
    // Keepalives notice a replica whose host vanished without closing its connections.
    let mut endpoint = Endpoint::from_shared(format!("{}://{addr}", target.scheme))?
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true)
        .tcp_keepalive(Some(Duration::from_secs(30)))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    if let Some(timeout) = config.timeout {
        endpoint = endpoint.timeout(timeout);
    }
    // The `:authority` and the TLS name are the host as written, not the address.
    let origin = format!("{}://{}:{}", target.scheme, target.host, target.port);
    if let Ok(origin) = origin.parse() {
        endpoint = endpoint.origin(origin);
    }
    configure(endpoint, &target.host)
}

/// Resolves the targets now and every `config.refresh`, keeping one health watcher per address.
async fn supervise(
    targets: Vec<(String, Target)>,
    config: ReplicaConfig,
    configure: Arc<Configure>,
    changes: mpsc::Sender<Change<SocketAddr, Endpoint>>,
    serving: watch::Sender<usize>,
) {
    let serving = Arc::new(serving);
    // Per URL: the health watcher of each address it resolved to.
    let mut watchers: Vec<HashMap<SocketAddr, AbortOnDrop>> = targets.iter().map(|_| HashMap::new()).collect();
    loop {
        for ((url, target), known) in targets.iter().zip(&mut watchers) {
            let addrs: HashSet<SocketAddr> = match tokio::net::lookup_host((target.host.as_str(), target.port)).await {
                Ok(addrs) => addrs.collect(),
                Err(error) => {
                    tracing::warn!(%url, %error, "cannot resolve apikeys replica; keeping the known ones");
                    continue;
                }
            };
            // Addresses the name no longer resolves to leave the channel: dropping the watcher
            // takes its replica out (see `Membership`).
            known.retain(|addr, _| addrs.contains(addr));
            for addr in addrs {
                if known.contains_key(&addr) {
                    continue;
                }
                let Ok(endpoint) = endpoint(target, addr, &config, &*configure) else { continue };
                let task = follow_health(addr, endpoint, changes.clone(), serving.clone());
                known.insert(addr, AbortOnDrop(tokio::spawn(task)));
            }
        }
        tokio::select! {
            () = tokio::time::sleep(config.refresh) => {}
            // Every clone of the channel is gone.
            () = changes.closed() => return,
        }
    }
}

/// Takes `addr` out of the channel.
async fn leave(addr: SocketAddr, changes: &mpsc::Sender<Change<SocketAddr, Endpoint>>, serving: &watch::Sender<usize>) {
    let _ = changes.send(Change::Remove(addr)).await;
    serving.send_modify(|n| *n = n.saturating_sub(1));
}

/// Follows the health of one replica, adding it to the channel while it is SERVING.
async fn follow_health(
    addr: SocketAddr,
    endpoint: Endpoint,
    changes: mpsc::Sender<Change<SocketAddr, Endpoint>>,
    serving: Arc<watch::Sender<usize>>,
) {
    // Removes the replica from the channel if this task ends while it is in (aborted).
    struct Membership {
        addr: SocketAddr,
        changes: mpsc::Sender<Change<SocketAddr, Endpoint>>,
        serving: Arc<watch::Sender<usize>>,
        member: bool,
    }
    impl Drop for Membership {
        fn drop(&mut self) {
            if self.member {
                let _ = self.changes.try_send(Change::Remove(self.addr));
                self.serving.send_modify(|n| *n = n.saturating_sub(1));
            }
        }
    }
    let mut membership = Membership { addr, changes: changes.clone(), serving: serving.clone(), member: false };
    let mut backoff = Duration::from_millis(100);
    loop {
        if let Ok(channel) = endpoint.connect().await {
            let request = HealthCheckRequest { service: String::new() };
            if let Ok(response) = HealthClient::new(channel).watch(request).await {
                let mut stream = response.into_inner();
                while let Ok(Some(status)) = stream.message().await {
                    let up = status.status() == ServingStatus::Serving;
                    if up && !membership.member {
                        if changes.send(Change::Insert(addr, endpoint.clone())).await.is_err() {
                            return;
                        }
                        membership.member = true;
                        serving.send_modify(|n| *n += 1);
                        backoff = Duration::from_millis(100);
                        tracing::info!(%addr, "apikeys replica serving");
                    } else if !up && membership.member {
                        membership.member = false;
                        leave(addr, &changes, &serving).await;
                        tracing::warn!(%addr, "apikeys replica not serving");
                    }
                }
            }
        }
        if membership.member {
            membership.member = false;
            leave(addr, &changes, &serving).await;
            tracing::warn!(%addr, "apikeys replica lost");
        }
        if changes.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// A channel that sends a call again when its connection was refused (it never left this process,
/// so it cannot have taken effect), up to three times: over a [`Replicas`] set, the next attempt
/// goes to a replica that is up.
#[derive(Debug, Clone)]
pub struct RetryUnsent {
    inner: Channel,
    _supervisor: Option<Arc<AbortOnDrop>>,
}

impl From<Channel> for RetryUnsent {
    /// One endpoint (or a balance of the caller's own).
    fn from(inner: Channel) -> Self {
        Self { inner, _supervisor: None }
    }
}

/// Whether `error` (or a cause of it) is a refused connection.
fn refused(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused) {
            return true;
        }
        cause = e.source();
    }
    false
}

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl tower::Service<http::Request<Body>> for RetryUnsent {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower::Service::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // The clone-and-swap idiom: the ready service serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            // Request messages are small and whole: keep a copy to resend. (This buffers a whole
            // request stream first, so it is not for client-streaming RPCs; apikeys has none.)
            let body: Bytes = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                // The message could not be encoded (e.g. too large): answer with that, send nothing.
                Err(status) => return Ok(status.into_http()),
            };
            let mut attempt = 0;
            loop {
                let request =
                    http::Request::from_parts(parts.clone(), Body::new(http_body_util::Full::new(body.clone())));
                let result = tower::Service::call(&mut inner, request).await;
                match result {
                    Err(error) if attempt < 3 && refused(&error) => {
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(10 * attempt)).await;
                        std::future::poll_fn(|cx| tower::Service::poll_ready(&mut inner, cx)).await?;
                    }
                    other => return other,
                }
            }
        })
    }
}
