//! Revocation across replicas (issue 10), in one run:
//!
//! 1. **Revocation to refusal**: two apikeys replicas on one database and a consumer
//!    (`RemoteAuthenticator`, following the change stream) talking to the second. 100 times: create
//!    a key on the first replica, warm it on the second and at the consumer, delete it on the first,
//!    and time until the second replica and the consumer refuse it (polled every millisecond).
//!    Prints p50, p99 and the worst case of each (goal: within 1 s).
//! 2. **Cost of the stream**: warm `Authenticate` throughput on a replica (closed loop, 4
//!    connections, 50 in flight, rounds of 3 s alternating) with no watchers, then with 100 open
//!    `WatchKeyChanges` streams while a key changes every 100 ms. Prints the ratio (goal >= 0.95x).
//!
//! `cargo bench --bench revocation` runs on SQLite (no notifications: the replicas read the log
//! every `change_poll_ms`, 1 s by default); with
//! `APIKEYS_BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test` on PostgreSQL (LISTEN/NOTIFY;
//! a database is created and dropped).

/// The allocator of the `apikeys` binary (src/main.rs), so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "common/client.rs"]
mod client;
use client::{authed, channel};

mod common;
use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use apikeys::{
    auth::{
        Authenticator as _, Credential,
        remote::{RemoteAuthenticator, RemoteConfig},
    },
    config::ServerConfig,
    pb::{self, api_key_service_client::ApiKeyServiceClient},
    server::Application,
};
use tonic::transport::Channel;

const CONNECTIONS: usize = 4;
const IN_FLIGHT: usize = 50;
const ROUND: Duration = Duration::from_secs(3);
const ROUNDS: usize = 3;
const REVOCATIONS: usize = 100;
const WATCHERS: usize = 100;

async fn replica(config: &ServerConfig) -> SocketAddr {
    let app = Application::build(config.clone()).await.expect("server starts");
    let addr = app.local_addr();
    tokio::spawn(app.run(std::future::pending()));
    addr
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn summary(label: &str, mut samples: Vec<Duration>) {
    samples.sort_unstable();
    println!(
        "  {label:<34} p50 {:>7.1} ms   p99 {:>7.1} ms   worst {:>7.1} ms",
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.99)),
        ms(samples[samples.len() - 1])
    );
}

/// Time from `since` until `refused` holds, polling every millisecond (at most 10 s).
async fn until<F: std::future::Future<Output = bool>>(since: Instant, mut refused: impl FnMut() -> F) -> Duration {
    while !refused().await {
        assert!(since.elapsed() < Duration::from_secs(10), "a revoked credential still passes after 10 s");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    since.elapsed()
}

/// Warm Authenticate calls per second over `channels` for one round.
async fn throughput(channels: &[Channel], token: Arc<str>) -> f64 {
    let deadline = Instant::now() + ROUND;
    let tasks: Vec<_> = (0..IN_FLIGHT)
        .map(|i| {
            let (mut client, token) = (ApiKeyServiceClient::new(channels[i % channels.len()].clone()), token.clone());
            tokio::spawn(async move {
                let mut calls = 0u64;
                while Instant::now() < deadline {
                    let request = pb::AuthenticateRequest { token: token.to_string(), ..Default::default() };
                    client.authenticate(request).await.expect("a warm call failed");
                    calls += 1;
                }
                calls
            })
        })
        .collect();
    let mut calls = 0;
    for task in tasks {
        calls += task.await.expect("load task");
    }
    calls as f64 / ROUND.as_secs_f64()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (url, drop_after) = common::database("revocation").await;
    let backend = if url.is_some() { "PostgreSQL (LISTEN/NOTIFY)" } else { "SQLite (log read every 1 s)" };
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.path().to_path_buf(),
        database_url: url.map(Into::into),
        // The stream-cost round opens its watchers from one address.
        max_watchers_per_peer: WATCHERS,
        ..ServerConfig::default()
    };
    let first = replica(&config).await;
    let second = replica(&config).await;
    let admin = std::fs::read_to_string(config.bootstrap_token_path()).expect("token").trim().to_owned();
    let mut on_first = ApiKeyServiceClient::new(channel(first).await);
    let on_second = ApiKeyServiceClient::new(channel(second).await);
    let consumer = RemoteAuthenticator::new(channel(second).await, RemoteConfig::default()).expect("consumer");
    while !consumer.watch_stats().connected.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    println!("1. revocation to refusal on {backend}: {REVOCATIONS} deletes on the first replica");
    let (mut at_replica, mut at_consumer) = (Vec::new(), Vec::new());
    for i in 0..REVOCATIONS {
        let request = pb::CreateApiKeyRequest { display_name: format!("revoked {i}"), ..Default::default() };
        let created = on_first.create_api_key(authed(request, &admin)).await.expect("create").into_inner();
        let token = created.token.clone();
        let authenticate = |mut client: ApiKeyServiceClient<Channel>, token: String| async move {
            let request = pb::AuthenticateRequest { token, ..Default::default() };
            client.authenticate(request).await
        };
        authenticate(on_second.clone(), token.clone()).await.expect("warm on the second replica");
        consumer.authenticate(Credential::from_token(&token).expect("token")).await.expect("warm at the consumer");
        let id = created.api_key.expect("key").id;
        let request = pb::DeleteApiKeyRequest { id, ..Default::default() };
        on_first.delete_api_key(authed(request, &admin)).await.expect("delete");
        let deleted = Instant::now();
        let (replica, consumer) = tokio::join!(
            until(deleted, || {
                let (client, token) = (on_second.clone(), token.clone());
                async move { authenticate(client, token).await.is_err() }
            }),
            until(deleted, || {
                let credential = Credential::from_token(&token).expect("token");
                let consumer = &consumer;
                async move { consumer.authenticate(credential).await.is_err() }
            }),
        );
        at_replica.push(replica);
        at_consumer.push(consumer);
    }
    summary("refused by the other replica", at_replica);
    summary("refused by the consumer", at_consumer);

    println!(
        "\n2. warm Authenticate on a replica: no watchers vs {WATCHERS} watchers and a change every 100 ms \
         ({CONNECTIONS} connections, {IN_FLIGHT} in flight, {ROUNDS} rounds of {ROUND:?}, alternating)"
    );
    let request = pb::CreateApiKeyRequest { display_name: "warm".into(), ..Default::default() };
    let token: Arc<str> =
        on_first.create_api_key(authed(request, &admin)).await.expect("create").into_inner().token.into();
    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS {
        channels.push(channel(first).await);
    }
    throughput(&channels, token.clone()).await;
    let mut ratios = Vec::new();
    for _ in 0..ROUNDS {
        let quiet = throughput(&channels, token.clone()).await;
        let watch_channel = channel(first).await;
        let mut streams = Vec::new();
        for _ in 0..WATCHERS {
            let mut client = ApiKeyServiceClient::new(watch_channel.clone());
            let mut stream =
                client.watch_key_changes(pb::WatchKeyChangesRequest::default()).await.expect("watch").into_inner();
            streams.push(tokio::spawn(async move { while let Ok(Some(_)) = stream.message().await {} }));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let churn = {
            let (stop, mut client, admin) = (stop.clone(), on_first.clone(), admin.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let request = pb::CreateApiKeyRequest {
                        display_name: format!("churn {}", uuid::Uuid::new_v4()),
                        ..Default::default()
                    };
                    let created = client.create_api_key(authed(request, &admin)).await.expect("create");
                    let id = created.into_inner().api_key.expect("key").id;
                    let request = pb::DeleteApiKeyRequest { id, ..Default::default() };
                    client.delete_api_key(authed(request, &admin)).await.expect("delete");
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                n
            })
        };
        let watched = throughput(&channels, token.clone()).await;
        stop.store(true, Ordering::Relaxed);
        let changes = churn.await.expect("churn");
        for stream in streams {
            stream.abort();
        }
        println!(
            "  no watchers {quiet:>9.0} req/s   {WATCHERS} watchers, {changes} changes {watched:>9.0} req/s   ratio {:.2}x",
            watched / quiet
        );
        ratios.push(watched / quiet);
    }
    ratios.sort_by(f64::total_cmp);
    println!("  ratio (median) {:.2}x (goal >= 0.95)", ratios[ratios.len() / 2]);

    common::drop_database(drop_after).await;
}
