//! Authenticate latency over loopback gRPC: cache hit, cache miss (argon2id with the production
//! parameters), and a baseline RPC that does no authentication at all, all in one run.
//!
//! Run with `cargo bench --bench authenticate`. Prints one line per case and the ratios.

/// The allocator of the `apikeys` binary (src/main.rs), so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use apikeys::{
    auth::Credential,
    config::ServerConfig,
    pb::{self, api_key_service_client::ApiKeyServiceClient},
    server::Application,
};
use tonic::{Request, transport::Channel};

struct Running {
    addr: std::net::SocketAddr,
    admin_token: String,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

async fn start(cache_ttl: Duration) -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.path().to_path_buf(),
        auth_cache_ttl_secs: cache_ttl.as_secs(),
        ..ServerConfig::default()
    };
    let app = Application::build(config.clone()).await.expect("server starts");
    let addr = app.local_addr();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run(async {
        let _ = rx.await;
    }));
    let admin_token =
        std::fs::read_to_string(config.bootstrap_token_path()).expect("bootstrap token").trim().to_owned();
    Running { addr, admin_token, _stop: tx, _dir: dir }
}

async fn client(addr: std::net::SocketAddr) -> ApiKeyServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}")).expect("url").connect().await.expect("connect");
    ApiKeyServiceClient::new(channel)
}

async fn new_key(running: &Running) -> String {
    let mut client = client(running.addr).await;
    let mut request = Request::new(pb::CreateApiKeyRequest {
        display_name: format!("bench-{}", uuid::Uuid::new_v4()),
        permissions: vec!["read_data".into()],
        ..Default::default()
    });
    let bearer = format!("Bearer {}", running.admin_token);
    request.metadata_mut().insert("authorization", bearer.parse().expect("metadata"));
    client.create_api_key(request).await.expect("create").into_inner().token
}

/// Median of `rounds` rounds of `per_round` sequential calls, in microseconds per call.
async fn measure<F, Fut>(rounds: usize, per_round: usize, mut call: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = Instant::now();
        for _ in 0..per_round {
            call().await;
        }
        samples.push(start.elapsed().as_secs_f64() * 1e6 / per_round as f64);
    }
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let cached = start(Duration::from_secs(60)).await;
    let token = new_key(&cached).await;
    let mut c = client(cached.addr).await;
    let authenticate = |token: String| pb::AuthenticateRequest { token, ..Default::default() };

    // Warm up the connection and the cache.
    for _ in 0..200 {
        c.authenticate(authenticate(token.clone())).await.expect("authenticate");
        c.list_permissions(pb::ListPermissionsRequest {}).await.expect("list permissions");
    }
    let baseline = measure(7, 2000, || {
        let mut c = c.clone();
        async move {
            c.list_permissions(pb::ListPermissionsRequest {}).await.expect("list permissions");
        }
    })
    .await;
    let hit = measure(7, 2000, || {
        let mut c = c.clone();
        let request = authenticate(token.clone());
        async move {
            c.authenticate(request).await.expect("authenticate");
        }
    })
    .await;

    // Cache disabled: every call looks the key up and runs argon2id (the default parameters).
    let uncached = start(Duration::ZERO).await;
    let token = new_key(&uncached).await;
    let mut u = client(uncached.addr).await;
    u.authenticate(authenticate(token.clone())).await.expect("authenticate");
    // Unknown key IDs are refused after the lookup, without argon2 (IDs are not secret). Interleave
    // the two so machine noise hits both alike.
    let unknown =
        Credential { key_id: uuid::Uuid::new_v4(), secret: apikeys::auth::Secret::generate().expect("random") }.token();
    let (mut misses, mut unknowns) = (Vec::new(), Vec::new());
    for _ in 0..40 {
        let start = Instant::now();
        u.authenticate(authenticate(token.clone())).await.expect("authenticate");
        misses.push(start.elapsed().as_secs_f64() * 1e6);
        let start = Instant::now();
        let _ = u.authenticate(authenticate(unknown.clone())).await;
        unknowns.push(start.elapsed().as_secs_f64() * 1e6);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (miss, unknown_cost) = (median(misses), median(unknowns));

    println!("apikeys Authenticate over loopback gRPC (median of rounds, sequential calls, one connection)");
    println!("{:<48} {:>12}", "case", "µs/call");
    println!("{:<48} {:>12.1}", "baseline: ListPermissions (no auth, no DB)", baseline);
    println!("{:<48} {:>12.1}", "Authenticate, cache hit", hit);
    println!("{:<48} {:>12.1}", "Authenticate, cache miss (DB + argon2id)", miss);
    println!("{:<48} {:>12.1}", "Authenticate, unknown key (lookup, no argon2)", unknown_cost);
    println!("ratio cache hit / baseline:   {:.2}", hit / baseline);
    println!("ratio cache miss / cache hit: {:.0}", miss / hit);
    println!("ratio unknown key / known key (miss): {:.2}", unknown_cost / miss);
}
