//! The cost of tracking when keys were last used (issue 12): warm Authenticate of 100 keys against
//! two apikeys servers started by this run, one with `track_usage` on (flushing every second, 60x
//! more often than the default, to make the writes visible) and one with it off, in alternating
//! rounds. Prints both throughputs, their ratio (goal: on >= 0.95x off), and the database writes
//! the tracking made per 100,000 authentications and per flush interval (goal: <= 100 per interval).
//!
//! Run with `cargo bench --bench usage` (about half a minute after the release build).

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
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use apikeys::{
    config::ServerConfig,
    pb::{self, api_key_service_client::ApiKeyServiceClient},
    server::Application,
    usage::UsageLog,
};
use tonic::transport::Channel;

const KEYS: usize = 100;
const CONNECTIONS: usize = 4;
const IN_FLIGHT: usize = 50;
const ROUND: Duration = Duration::from_secs(3);
const ROUNDS: usize = 3;
const FLUSH: Duration = Duration::from_secs(1);

struct Server {
    addr: SocketAddr,
    usage: Arc<UsageLog>,
    tokens: Arc<Vec<String>>,
    _dir: tempfile::TempDir,
}

async fn server(track_usage: bool) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.path().to_path_buf(),
        track_usage,
        usage_flush_ms: u64::try_from(FLUSH.as_millis()).expect("millis"),
        ..ServerConfig::default()
    };
    let app = Application::build(config.clone()).await.expect("server starts");
    let (addr, usage) = (app.local_addr(), app.usage());
    tokio::spawn(app.run(std::future::pending()));
    let admin = std::fs::read_to_string(config.bootstrap_token_path()).expect("token").trim().to_owned();
    let mut client = ApiKeyServiceClient::new(channel(addr).await);
    let mut tokens = Vec::new();
    for i in 0..KEYS {
        let request = pb::CreateApiKeyRequest {
            display_name: format!("usage {i}"),
            permissions: vec!["read_data".into()],
            ..Default::default()
        };
        tokens.push(client.create_api_key(authed(request, &admin)).await.expect("create").into_inner().token);
    }
    Server { addr, usage, tokens: Arc::new(tokens), _dir: dir }
}

/// Closed-loop warm Authenticate over the server's keys, round robin; returns requests per second
/// and how many were made.
async fn round(server: &Server, channels: &[Channel]) -> (f64, u64) {
    let deadline = Instant::now() + ROUND;
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..IN_FLIGHT)
        .map(|i| {
            let (channel, tokens, done) = (channels[i % channels.len()].clone(), server.tokens.clone(), done.clone());
            tokio::spawn(async move {
                let mut client = ApiKeyServiceClient::new(channel);
                let mut next = i;
                while Instant::now() < deadline {
                    let token = tokens[next % tokens.len()].clone();
                    next += 1;
                    client
                        .authenticate(pb::AuthenticateRequest {
                            token,
                            client_address: "10.0.0.1".into(),
                            ..Default::default()
                        })
                        .await
                        .expect("a warm call failed");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    let calls = done.load(Ordering::Relaxed);
    (calls as f64 / started.elapsed().as_secs_f64(), calls)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main]
async fn main() {
    let (on, off) = (server(true).await, server(false).await);
    let mut channels = Vec::new();
    for server in [&on, &off] {
        let mut list = Vec::new();
        for _ in 0..CONNECTIONS {
            list.push(channel(server.addr).await);
        }
        channels.push(list);
    }
    // Warm the connections and both verification caches.
    round(&on, &channels[0]).await;
    round(&off, &channels[1]).await;
    tokio::time::sleep(FLUSH * 2).await;

    println!(
        "warm Authenticate of {KEYS} keys, {CONNECTIONS} connections, {IN_FLIGHT} in flight, {ROUNDS} rounds of {ROUND:?}, alternating"
    );
    let (written_before, started) = (on.usage.statements(), Instant::now());
    let (mut ratios, mut calls_on) = (Vec::new(), 0);
    for _ in 0..ROUNDS {
        let (rate_on, calls) = round(&on, &channels[0]).await;
        let (rate_off, _) = round(&off, &channels[1]).await;
        calls_on += calls;
        println!(
            "  usage tracking on  {rate_on:>8.0} req/s    off  {rate_off:>8.0} req/s    ratio {:.2}",
            rate_on / rate_off
        );
        ratios.push(rate_on / rate_off);
    }
    // What is still pending is written at the next flush.
    tokio::time::sleep(FLUSH * 2).await;
    let written = on.usage.statements() - written_before;
    let intervals = started.elapsed().as_secs_f64() / FLUSH.as_secs_f64();
    println!("throughput on / off (median) {:.2}x (goal >= 0.95)", median(ratios));
    println!(
        "database writes: {written} statements for {calls_on} authentications = {:.1} per 100,000; {:.2} per flush interval of {FLUSH:?} (goal <= 100); the server with tracking off wrote {}",
        written as f64 * 100_000.0 / calls_on as f64,
        written as f64 / intervals,
        off.usage.statements()
    );
}
