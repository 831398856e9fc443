//! Throughput under load, in one run, against a baseline started by the same run (issue 9):
//!
//! 1. **Hot path**: a closed-loop client (4 connections, 50 calls in flight) against a bare tonic
//!    server answering a no-op unary RPC (gRPC health `Check`, no layers), then against apikeys'
//!    warm `Authenticate` with the default configuration and apikeys' own log subscriber installed;
//!    short rounds alternate A B A B so machine drift hits both, and each pair's ratio is taken.
//!    Prints each pair (requests/s, p99, CPU per call, ratio) and the median ratios with their
//!    quartiles (goal: throughput >= 0.9x, p99 <= 1.2x). On a shared 2-vCPU VM one pair's ratio
//!    swings by +-0.1, so the median is over many pairs rather than a few long rounds.
//! 2. **Flood**: the same warm traffic while flood clients send forged credentials as fast as they
//!    can (valid-looking tokens of unknown key IDs, and wrong secrets for another known key, which
//!    locks after `lockout_threshold` failures). Prints the
//!    warm throughput against its no-flood figure (goal >= 0.5x), the latency of admin creates during
//!    the flood (goal p99 <= 1 s), the first Authenticate of fresh credentials (goal <= 1 s), and what
//!    the flood itself got.
//!
//! Each round also prints the CPU time of the whole process per call (client and servers share
//! the machine's cores, so this is what each call costs them together): steadier than throughput on
//! a shared VM, and what an optimisation moves.
//!
//! Run with `cargo bench --bench load` (about a minute after the release build);
//! `APIKEYS_LOAD_HOT_PATH_ONLY=1` stops after part 1. Loopback only; every loop is bounded in time.

/// The allocator of the `apikeys` binary (src/main.rs), so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "common/client.rs"]
mod client;
use client::{authed, channel};

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use apikeys::{
    auth::{Credential, Secret},
    config::ServerConfig,
    pb::{self, api_key_service_client::ApiKeyServiceClient},
    server::Application,
    telemetry::{self, LogFormat},
};
use tonic::transport::{Channel, Server, server::TcpIncoming};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

const CONNECTIONS: usize = 4;
const IN_FLIGHT: usize = 50;
/// One round of the flood part.
const ROUND: Duration = Duration::from_secs(3);
/// One round of the hot path, and how many A B pairs of them.
const HOT_ROUND: Duration = Duration::from_millis(1500);
const PAIRS: usize = 15;

async fn channels(addr: SocketAddr) -> Vec<Channel> {
    let mut out = Vec::new();
    for _ in 0..CONNECTIONS {
        out.push(channel(addr).await);
    }
    out
}

/// A bare tonic server: the health service and nothing else.
async fn bare_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (_, health) = tonic_health::server::health_reporter();
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tokio::spawn(Server::builder().add_service(health).serve_with_incoming(incoming));
    addr
}

struct Apikeys {
    addr: SocketAddr,
    admin: String,
    _dir: tempfile::TempDir,
}

/// apikeys with the default configuration (but port 0 and a temporary data directory).
async fn apikeys() -> Apikeys {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.path().to_path_buf(),
        ..ServerConfig::default()
    };
    let app = Application::build(config.clone()).await.expect("server starts");
    let addr = app.local_addr();
    tokio::spawn(app.run(std::future::pending()));
    let admin = std::fs::read_to_string(config.bootstrap_token_path()).expect("token").trim().to_owned();
    Apikeys { addr, admin, _dir: dir }
}

async fn create_key(addr: SocketAddr, admin: &str) -> (Duration, String) {
    let mut client = ApiKeyServiceClient::new(channel(addr).await);
    let request = pb::CreateApiKeyRequest {
        display_name: format!("load-{}", uuid::Uuid::new_v4()),
        permissions: vec!["read_data".into()],
        ..Default::default()
    };
    let started = Instant::now();
    let token = client.create_api_key(authed(request, admin)).await.expect("create").into_inner().token;
    (started.elapsed(), token)
}

/// What one closed-loop round measured.
struct Round {
    per_second: f64,
    p50: Duration,
    p99: Duration,
    /// CPU time of the whole process (client and both servers) per call: steadier than the
    /// throughput on a shared VM, and what an optimisation of either side changes.
    cpu_per_call: Duration,
}

/// The CPU time this process has used (user and system, all threads), from `/proc/self/stat`.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command (which may hold spaces) start after its closing parenthesis;
    // utime and stime are the 12th and 13th of them, in clock ticks (100 per second on Linux).
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks: u64 = fields.get(11..13).map_or(0, |f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum());
    Duration::from_millis(ticks * 10)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

/// Runs `IN_FLIGHT` loops over `channels` for `length`, each calling `call` back to back.
async fn round<F, Fut>(channels: &[Channel], length: Duration, call: F) -> Round
where
    F: Fn(Channel) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let deadline = Instant::now() + length;
    let cpu_before = process_cpu();
    let tasks: Vec<_> = (0..IN_FLIGHT)
        .map(|i| {
            let (channel, call) = (channels[i % channels.len()].clone(), call.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let started = Instant::now();
                    assert!(call(channel.clone()).await, "a warm call failed");
                    latencies.push(started.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all: Vec<Duration> = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("load task"));
    }
    let cpu = process_cpu().saturating_sub(cpu_before);
    all.sort_unstable();
    Round {
        per_second: all.len() as f64 / length.as_secs_f64(),
        p50: percentile(&all, 0.5),
        p99: percentile(&all, 0.99),
        cpu_per_call: cpu.checked_div(u32::try_from(all.len()).unwrap_or(u32::MAX).max(1)).unwrap_or_default(),
    }
}

async fn health_call(channel: Channel) -> bool {
    HealthClient::new(channel).check(HealthCheckRequest::default()).await.is_ok()
}

fn authenticate_call(
    token: Arc<str>,
) -> impl Fn(Channel) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>> + Clone {
    move |channel| {
        let token = token.clone();
        Box::pin(async move {
            let request = pb::AuthenticateRequest { token: token.to_string(), ..Default::default() };
            ApiKeyServiceClient::new(channel).authenticate(request).await.is_ok()
        })
    }
}

fn print_round(label: &str, r: &Round) {
    println!(
        "  {label:<28} {:>9.0} req/s   p50 {:>7.0} µs   p99 {:>7.0} µs   CPU {:>5.1} µs/call",
        r.per_second,
        r.p50.as_secs_f64() * 1e6,
        r.p99.as_secs_f64() * 1e6,
        r.cpu_per_call.as_secs_f64() * 1e6
    );
}

/// A round's figures: requests/s, p99, CPU per call.
fn columns(r: &Round) -> String {
    format!(
        "{:>6.0}  {:>7.0}  {:>8.1}     ",
        r.per_second,
        r.p99.as_secs_f64() * 1e6,
        r.cpu_per_call.as_secs_f64() * 1e6
    )
}

/// `median (quartiles q1-q3)` of `values`.
fn spread(mut values: Vec<f64>) -> String {
    values.sort_by(f64::total_cmp);
    let at = |p: f64| values[((values.len() - 1) as f64 * p).round() as usize];
    format!("median {:.2}x (quartiles {:.2}-{:.2}x)", at(0.5), at(0.25), at(0.75))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    // apikeys' own log setup, at its default level: what a deployment pays for logging.
    telemetry::init(LogFormat::Text, None);
    let bare = bare_server().await;
    let server = apikeys().await;
    let (_, token) = create_key(server.addr, &server.admin).await;
    let token: Arc<str> = token.into();
    let (bare_channels, api_channels) = (channels(bare).await, channels(server.addr).await);
    // Warm the connections and apikeys' verification cache.
    round(&api_channels, ROUND, authenticate_call(token.clone())).await;
    round(&bare_channels, ROUND, health_call).await;

    println!(
        "1. hot path: {CONNECTIONS} connections, {IN_FLIGHT} in flight, {PAIRS} pairs of {HOT_ROUND:?} rounds, alternating"
    );
    println!("        bare tonic, no-op Check          |  apikeys, warm Authenticate       | apikeys / bare");
    println!("        req/s    p99 µs  CPU µs/call     |  req/s    p99 µs  CPU µs/call     | req/s  p99   CPU");
    let (mut ratios, mut p99_ratios, mut cpu_ratios, mut warm) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for pair in 1..=PAIRS {
        let a = round(&bare_channels, HOT_ROUND, health_call).await;
        let b = round(&api_channels, HOT_ROUND, authenticate_call(token.clone())).await;
        let (ratio, p99_ratio) = (b.per_second / a.per_second, b.p99.as_secs_f64() / a.p99.as_secs_f64());
        let cpu_ratio = b.cpu_per_call.as_secs_f64() / a.cpu_per_call.as_secs_f64();
        println!("  {pair:>3}  {}  |  {}  | {ratio:.2}  {p99_ratio:.2}  {cpu_ratio:.2}", columns(&a), columns(&b));
        ratios.push(ratio);
        p99_ratios.push(p99_ratio);
        cpu_ratios.push(cpu_ratio);
        warm.push(b.per_second);
    }
    println!("  throughput ratio {} (goal median >= 0.9)", spread(ratios));
    println!("  p99 ratio        {} (goal median <= 1.2)", spread(p99_ratios));
    println!("  CPU per call     {}", spread(cpu_ratios));
    if std::env::var_os("APIKEYS_LOAD_HOT_PATH_ONLY").is_some() {
        return;
    }

    println!(
        "\n2. flood: the same warm traffic while 2 flood clients (100 in flight each, from 127.0.0.2 and .3) send forged credentials"
    );
    // The wrong secrets go to a key of their own: after `lockout_threshold` failures it locks (and
    // its refusals stop costing argon2), which would otherwise take the warm key down with it.
    let (_, victim) = create_key(server.addr, &server.admin).await;
    let known = Credential::from_token(&victim).expect("token").key_id;
    let stop = Arc::new(AtomicBool::new(false));
    let (flood_ok, flood_refused, flood_shed) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut flooders = Vec::new();
    // The flooders come from other loopback addresses, as they would from other hosts.
    for (unknown_ids, source) in [(true, "127.0.0.2"), (false, "127.0.0.3")] {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
            .expect("url")
            .local_address(Some(source.parse().expect("address")))
            .connect()
            .await
            .expect("connect");
        for _ in 0..100 {
            let (channel, stop) = (channel.clone(), stop.clone());
            let (ok, refused, shed) = (flood_ok.clone(), flood_refused.clone(), flood_shed.clone());
            flooders.push(tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let key_id = if unknown_ids { uuid::Uuid::new_v4() } else { known };
                    let forged = Credential { key_id, secret: Secret::generate().expect("random") }.token();
                    let request = pb::AuthenticateRequest { token: forged, ..Default::default() };
                    match ApiKeyServiceClient::new(channel.clone()).authenticate(request).await {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(s) if s.code() == tonic::Code::ResourceExhausted => shed.fetch_add(1, Ordering::Relaxed),
                        Err(_) => refused.fetch_add(1, Ordering::Relaxed),
                    };
                }
            }));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let flooded_started = Instant::now();
    let flooded = round(&api_channels, ROUND, authenticate_call(token.clone())).await;
    print_round("warm Authenticate, flooded", &flooded);
    let (mut creates, mut firsts, mut fresh_failures) = (Vec::new(), Vec::new(), 0);
    for _ in 0..10 {
        let (took, fresh) = create_key(server.addr, &server.admin).await;
        creates.push(took);
        let started = Instant::now();
        let mut client = ApiKeyServiceClient::new(api_channels[0].clone());
        let request = pb::AuthenticateRequest { token: fresh, ..Default::default() };
        match client.authenticate(request).await {
            Ok(_) => firsts.push(started.elapsed()),
            Err(status) => {
                fresh_failures += 1;
                eprintln!("fresh credential refused during the flood: {:?}", status.code());
            }
        }
    }
    let flood_time = flooded_started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for flooder in flooders {
        flooder.await.expect("flooder");
    }
    creates.sort_unstable();
    firsts.sort_unstable();
    println!("  warm throughput flooded / not flooded: {:.2}x (goal >= 0.5)", flooded.per_second / median(warm));
    println!(
        "  admin CreateApiKey during the flood: p50 {:.1} ms, p99 {:.1} ms (goal p99 <= 1000 ms)",
        percentile(&creates, 0.5).as_secs_f64() * 1e3,
        percentile(&creates, 0.99).as_secs_f64() * 1e3
    );
    println!(
        "  first Authenticate of a fresh credential: p50 {:.1} ms, max {:.1} ms, {fresh_failures} of 10 refused (goal: all, <= 1000 ms)",
        percentile(&firsts, 0.5).as_secs_f64() * 1e3,
        percentile(&firsts, 1.0).as_secs_f64() * 1e3
    );
    let (refused, shed, ok) =
        (flood_refused.load(Ordering::Relaxed), flood_shed.load(Ordering::Relaxed), flood_ok.load(Ordering::Relaxed));
    println!(
        "  the flood: {:.0} refusals/s UNAUTHENTICATED, {:.0}/s RESOURCE_EXHAUSTED, {ok} accepted",
        refused as f64 / flood_time,
        shed as f64 / flood_time
    );
}
