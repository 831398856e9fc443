//! What the auth layer costs a consumer, measured against a real apikeys on loopback (production
//! argon2 parameters, SQLite in a temporary directory):
//!
//! 1. in process, through `tower::Service::call`: the same trivial service with and without the layer,
//!    on a cache hit, in the same run (Bearer and Basic); then one thread per core calling at once,
//!    all sharing one layer or each with its own, against one thread alone (what sharing the layer
//!    and its cache costs);
//! 2. end to end over loopback gRPC: a health Check served with and without the layer;
//! 3. a miss: the layer with the consumer cache disabled (one Authenticate round trip per request,
//!    apikeys answering from its own cache), and the first request of never-seen keys (one round trip
//!    plus one argon2 verification at apikeys).
//!
//! Run with `cargo bench --bench auth_layer`; figures and machine notes are in BENCHMARKS.md.

use std::{
    convert::Infallible,
    hint::black_box,
    sync::Arc,
    time::{Duration, Instant},
};

use apikeys::{
    auth::{
        AccessPolicy, AuthLayer, Credential,
        remote::{RemoteAuthenticator, RemoteConfig},
    },
    config::ServerConfig,
    pb::{self, api_key_service_client::ApiKeyServiceClient},
    server::Application,
};
use http::{HeaderValue, Request, Response, header};
use tokio::net::TcpListener;
use tonic::{
    body::Body,
    metadata::MetadataValue,
    transport::{Channel, Server, server::TcpIncoming},
};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tower::{Layer as _, Service, ServiceExt as _};

const IN_PROCESS_ITERATIONS: u32 = 200_000;
const LOOPBACK_ITERATIONS: u32 = 5_000;
const MISS_ITERATIONS: u32 = 2_000;
const FRESH_KEYS: u32 = 5;
const ROUNDS: usize = 3;
const PATH: &str = "/bench.v1.Bench/Call";
const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    runtime.block_on(run());
}

async fn run() {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().expect("address"),
        data_dir: dir.path().join("data"),
        ..ServerConfig::default()
    };
    let app = Application::build(config.clone()).await.expect("apikeys starts");
    let apikeys = format!("http://{}", app.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run(async {
        let _ = stopped.await;
    }));
    let admin = std::fs::read_to_string(config.bootstrap_token_path()).expect("bootstrap token");
    let channel = Channel::from_shared(apikeys).expect("url").connect().await.expect("apikeys reachable");
    let token = create_key(&channel, admin.trim(), "bench").await;
    let credential = Credential::from_token(&token).expect("token");

    println!(
        "auth layer benchmark (apikeys on loopback, argon2id m={} KiB t={} p={})\n",
        config.argon2_memory_kib, config.argon2_iterations, config.argon2_parallelism
    );
    in_process(&channel, &credential).await;
    loopback(&channel, &credential).await;
    misses(&channel, &credential, admin.trim()).await;
    println!("\ntotal run time {:.1} s", started.elapsed().as_secs_f64());

    let _ = stop.send(());
    let _ = server.await;
}

async fn create_key(channel: &Channel, admin: &str, name: &str) -> String {
    let mut request = tonic::Request::new(pb::CreateApiKeyRequest {
        display_name: name.to_owned(),
        permissions: vec!["read_data".to_owned()],
        ..Default::default()
    });
    let value = MetadataValue::try_from(format!("Bearer {admin}")).expect("header value");
    request.metadata_mut().insert("authorization", value);
    ApiKeyServiceClient::new(channel.clone()).create_api_key(request).await.expect("key created").into_inner().token
}

fn remote(channel: &Channel, cache_ttl: Duration) -> Arc<RemoteAuthenticator> {
    let config = RemoteConfig { cache_ttl, ..RemoteConfig::default() };
    Arc::new(RemoteAuthenticator::new(channel.clone(), config).expect("authenticator"))
}

fn request(path: &str, authorization: &HeaderValue) -> Request<Body> {
    let mut request = Request::post(path).body(Body::empty()).expect("request");
    request.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    request.headers_mut().insert(header::AUTHORIZATION, authorization.clone());
    request
}

/// Mean time of one call over `iterations` sequential calls; panics if a call is rejected.
async fn time_calls<S>(service: &mut S, iterations: u32, authorization: &HeaderValue) -> Duration
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    let start = Instant::now();
    for _ in 0..iterations {
        let response = service.ready().await.expect("ready").call(request(PATH, authorization)).await.expect("call");
        assert!(response.headers().get("grpc-status").is_none(), "rejected: {:?}", response.headers());
        black_box(response);
    }
    start.elapsed() / iterations
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

async fn in_process(channel: &Channel, credential: &Credential) {
    let inner = tower::service_fn(|_: Request<Body>| async { Ok::<_, Infallible>(Response::new(Body::empty())) });
    let policy = AccessPolicy::new().require(PATH, ["read_data"]);
    let authenticator = remote(channel, Duration::from_secs(3600));
    let mut layered = AuthLayer::new(authenticator.clone(), policy.clone()).layer(inner);
    let mut bare = inner;
    println!("1. in process, tower Service::call, cache hit, {IN_PROCESS_ITERATIONS} calls, best of {ROUNDS} rounds");
    let bearer = HeaderValue::from_str(&credential.bearer()).expect("header value");
    settle(&mut layered, &authenticator, &bearer).await;
    let misses = authenticator.cache().misses();
    for (label, value) in [("Bearer", credential.bearer()), ("Basic", credential.basic())] {
        let authorization = HeaderValue::from_str(&value).expect("header value");
        // Warms everything up (both forms are one credential: one cache entry).
        time_calls(&mut layered, 1_000, &authorization).await;
        time_calls(&mut bare, 1_000, &authorization).await;
        let (mut best_bare, mut best_layered) = (Duration::MAX, Duration::MAX);
        for _ in 0..ROUNDS {
            best_bare = best_bare.min(time_calls(&mut bare, IN_PROCESS_ITERATIONS, &authorization).await);
            best_layered = best_layered.min(time_calls(&mut layered, IN_PROCESS_ITERATIONS, &authorization).await);
        }
        println!(
            "   {label:6}  without layer {:8.3} µs   with layer {:8.3} µs   added {:+7.3} µs   ratio {:5.1}x",
            micros(best_bare),
            micros(best_layered),
            micros(best_layered) - micros(best_bare),
            best_layered.as_secs_f64() / best_bare.as_secs_f64(),
        );
    }
    assert_eq!(authenticator.cache().misses(), misses, "every call timed was a cache hit");
    // The layer above (its cache holds the credential) shared; fresh ones as the control.
    let threads = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
    let mut own = Vec::new();
    for _ in 0..threads {
        let authenticator = remote(channel, Duration::from_secs(3600));
        let mut layered = AuthLayer::new(authenticator.clone(), policy.clone()).layer(inner);
        settle(&mut layered, &authenticator, &bearer).await;
        own.push((layered, authenticator));
    }
    all_cores(&layered, &authenticator, &own, &bearer);
}

/// Calls `service` until its consumer's cache answers every call: a fresh consumer caches nothing
/// until its change stream is up, and for a quarantine after.
async fn settle<S>(service: &mut S, authenticator: &RemoteAuthenticator, authorization: &HeaderValue)
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    for _ in 0..200 {
        let misses = authenticator.cache().misses();
        time_calls(service, 1_000, authorization).await;
        if authenticator.cache().misses() == misses {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("a fresh consumer's cache never answered 1000 calls in a row");
}

/// The layer called from one OS thread per core at once: all threads sharing one layer (one
/// cache), against each thread with a layer of its own (the same work with nothing shared), and
/// against one thread alone. sharing / own is what the threads of a consumer's runtime pay for
/// sharing the layer and its cache (1.00x: nothing); own / alone is what N busy threads cost each
/// other on this machine anyway.
fn all_cores<S>(
    shared: &S,
    authenticator: &RemoteAuthenticator,
    own: &[(S, Arc<RemoteAuthenticator>)],
    authorization: &HeaderValue,
) where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    let threads = own.len();
    // Wall time per call, from the barrier's release to the last thread's end, each thread on a
    // runtime of its own calling its service `IN_PROCESS_ITERATIONS` times.
    let run = |services: Vec<S>| -> Duration {
        let start = Arc::new(std::sync::Barrier::new(services.len()));
        let handles: Vec<_> = services
            .into_iter()
            .map(|mut service| {
                let (authorization, start) = (authorization.clone(), start.clone());
                std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                    // A thread that fails while warming up still meets the others at the barrier
                    // (they would wait for it forever), then fails.
                    let warm = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        runtime.block_on(time_calls(&mut service, 1_000, &authorization))
                    }));
                    start.wait();
                    if let Err(panic) = warm {
                        std::panic::resume_unwind(panic);
                    }
                    let began = Instant::now();
                    runtime.block_on(time_calls(&mut service, IN_PROCESS_ITERATIONS, &authorization));
                    (began, Instant::now())
                })
            })
            .collect();
        let spans: Vec<(Instant, Instant)> = handles.into_iter().map(|h| h.join().expect("caller thread")).collect();
        let began = spans.iter().map(|(began, _)| *began).min().expect("threads");
        let ended = spans.iter().map(|(_, ended)| *ended).max().expect("threads");
        (ended - began) / IN_PROCESS_ITERATIONS
    };
    println!(
        "\n1b. in process, cache hit, Bearer, {IN_PROCESS_ITERATIONS} calls per thread, best of {ROUNDS} rounds: \
         {threads} threads at once (one per core), sharing one layer or each with its own, vs 1 thread alone"
    );
    let (mut alone, mut sharing, mut separate) = (Duration::MAX, Duration::MAX, Duration::MAX);
    let misses = || authenticator.cache().misses() + own.iter().map(|(_, a)| a.cache().misses()).sum::<u64>();
    let before = misses();
    for _ in 0..ROUNDS {
        alone = alone.min(run(vec![shared.clone()]));
        sharing = sharing.min(run(vec![shared.clone(); threads]));
        separate = separate.min(run(own.iter().map(|(service, _)| service.clone()).collect()));
    }
    assert_eq!(misses(), before, "every call timed was a cache hit");
    println!(
        "   1 thread {:6.3} µs/call   {threads} sharing one layer {:6.3} µs/call each   {threads} with a layer each {:6.3} µs/call each",
        micros(alone),
        micros(sharing),
        micros(separate),
    );
    println!(
        "   sharing / a layer each {:5.2}x (1.00x: sharing costs nothing)   a layer each / alone {:5.2}x (the machine's own)",
        sharing.as_secs_f64() / separate.as_secs_f64(),
        separate.as_secs_f64() / alone.as_secs_f64(),
    );
}

/// Serves gRPC health on a fresh loopback port, with or without the layer in front.
async fn serve_health(layer: Option<AuthLayer<RemoteAuthenticator>>) -> Channel {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let (_reporter, health) = tonic_health::server::health_reporter();
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    match layer {
        Some(layer) => tokio::spawn(Server::builder().layer(layer).add_service(health).serve_with_incoming(incoming)),
        None => tokio::spawn(Server::builder().add_service(health).serve_with_incoming(incoming)),
    };
    Channel::from_shared(format!("http://{addr}")).expect("url").connect().await.expect("connect")
}

async fn check(client: &mut HealthClient<Channel>, authorization: &MetadataValue<tonic::metadata::Ascii>) -> Duration {
    let mut request = tonic::Request::new(HealthCheckRequest::default());
    request.metadata_mut().insert("authorization", authorization.clone());
    let start = Instant::now();
    black_box(client.check(request).await.expect("health check"));
    start.elapsed()
}

/// Mean time of one Check on each server, calls interleaved so both see the same machine load.
async fn time_checks(
    bare: &mut HealthClient<Channel>,
    layered: &mut HealthClient<Channel>,
    iterations: u32,
    authorization: &str,
) -> (Duration, Duration) {
    let value = MetadataValue::try_from(authorization).expect("metadata");
    let (mut total_bare, mut total_layered) = (Duration::ZERO, Duration::ZERO);
    for i in 0..iterations {
        // Alternate which goes first, so neither always follows the other.
        if i % 2 == 0 {
            total_bare += check(bare, &value).await;
            total_layered += check(layered, &value).await;
        } else {
            total_layered += check(layered, &value).await;
            total_bare += check(bare, &value).await;
        }
    }
    (total_bare / iterations, total_layered / iterations)
}

async fn loopback(channel: &Channel, credential: &Credential) {
    let policy = AccessPolicy::new().require(HEALTH_CHECK, ["read_data"]);
    let authenticator = remote(channel, Duration::from_secs(3600));
    let layer = AuthLayer::new(authenticator.clone(), policy);
    let mut layered = HealthClient::new(serve_health(Some(layer)).await);
    let mut bare = HealthClient::new(serve_health(None).await);
    let authorization = credential.bearer();
    // Until the layer's cache answers every call (a fresh consumer caches nothing until its
    // change stream is up, and for a quarantine after): else a round times round trips to apikeys.
    for tries in 0.. {
        let misses = authenticator.cache().misses();
        time_checks(&mut bare, &mut layered, 500, &authorization).await;
        if authenticator.cache().misses() == misses {
            break;
        }
        assert!(tries < 200, "the layer's cache never answered 500 calls in a row");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let misses = authenticator.cache().misses();
    println!(
        "\n2. end to end, unary gRPC health Check over loopback, Bearer, cache hit, {LOOPBACK_ITERATIONS} sequential \
         calls per server, interleaved, {ROUNDS} rounds"
    );
    for _ in 0..ROUNDS {
        let (bare_mean, layered_mean) = time_checks(&mut bare, &mut layered, LOOPBACK_ITERATIONS, &authorization).await;
        println!(
            "   without layer {:8.1} µs   with layer {:8.1} µs   difference {:+6.1} µs   ratio {:5.2}x",
            micros(bare_mean),
            micros(layered_mean),
            micros(layered_mean) - micros(bare_mean),
            layered_mean.as_secs_f64() / bare_mean.as_secs_f64(),
        );
    }
    assert_eq!(authenticator.cache().misses(), misses, "every call timed was a cache hit");
    // The same comparison between two identical servers without the layer: the noise floor.
    let mut twin = HealthClient::new(serve_health(None).await);
    time_checks(&mut bare, &mut twin, 500, &authorization).await;
    let (a, b) = time_checks(&mut bare, &mut twin, LOOPBACK_ITERATIONS, &authorization).await;
    println!(
        "   noise floor, two servers both without the layer: {:8.1} µs vs {:8.1} µs   difference {:+6.1} µs",
        micros(a),
        micros(b),
        micros(b) - micros(a),
    );
}

async fn misses(channel: &Channel, credential: &Credential, admin: &str) {
    let inner = tower::service_fn(|_: Request<Body>| async { Ok::<_, Infallible>(Response::new(Body::empty())) });
    let policy = AccessPolicy::new().require(PATH, ["read_data"]);
    let mut uncached = AuthLayer::new(remote(channel, Duration::ZERO), policy.clone()).layer(inner);
    let authorization = HeaderValue::from_str(&credential.bearer()).expect("header value");
    time_calls(&mut uncached, 200, &authorization).await;
    let round_trip = time_calls(&mut uncached, MISS_ITERATIONS, &authorization).await;
    println!("\n3. misses (consumer cache disabled), in process through the layer");
    println!(
        "   one Authenticate round trip, apikeys answering from its cache: {:8.1} µs  (mean of {MISS_ITERATIONS})",
        micros(round_trip)
    );

    let mut fresh = Vec::new();
    for i in 0..FRESH_KEYS {
        fresh.push(create_key(channel, admin, &format!("fresh {i}")).await);
    }
    let mut total = Duration::ZERO;
    for token in &fresh {
        let value = HeaderValue::from_str(&format!("Bearer {token}")).expect("header value");
        total += time_calls(&mut uncached, 1, &value).await;
    }
    println!(
        "   first request of a never-seen key (round trip + argon2id at apikeys): {:8.1} µs  (mean of {FRESH_KEYS})",
        micros(total / FRESH_KEYS)
    );
}
