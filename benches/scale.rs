//! Scale (issue 9): the store seeded with 1 000, 100 000 and 1 000 000 keys through
//! `Store::create_keys` (one precomputed hash, so no argon2 per key), and per size:
//!
//! - a cold `Authenticate` (verification cache off: lookup + argon2id), median of 200 calls with
//!   keys drawn across the whole table (goal: at 1M <= 1.1x its latency at 1k);
//! - `ListApiKeys` with 1 000 keys a page: page 1 against the last page reachable (page 1 000 of
//!   1 000 at 1M; goal <= 1.2x page 1), median of 20 fetches each;
//!
//! then the resident memory of the server while it verifies a stream of distinct valid credentials
//! with the default cache (10 000 entries): it must stay bounded.
//!
//! Run with `cargo bench --bench scale` (SQLite; several minutes at 1M). Set
//! `APIKEYS_BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test` for PostgreSQL (a database is
//! created per size and dropped), and `APIKEYS_SCALE_SIZES=1000,100000` to run fewer sizes.

/// The allocator of the `apikeys` binary (src/main.rs), so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod common;
use std::time::{Duration, Instant};

use apikeys::{
    auth::{Credential, Secret, hashing::Hasher},
    config::ServerConfig,
    domain::{Actor, KeyId, OrgId, display_name},
    pb::{self, api_key_service_client::ApiKeyServiceClient},
    server::Application,
    store::NewKey,
};
use sea_orm::ConnectionTrait;
use tonic::{Request, transport::Channel};

struct Size {
    keys: usize,
    seed: Duration,
    cold_auth: Duration,
    first_page: Duration,
    deep_page: Duration,
    deep_index: usize,
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("metadata"));
    request
}

/// Seeds `keys` keys sharing `secret`, returns their IDs.
async fn seed(app: &Application, org: OrgId, keys: usize, secret: &Secret, config: &ServerConfig) -> Vec<KeyId> {
    let hash = Hasher::new(&config.hashing()).expect("hasher").hash(secret).await.expect("hash");
    let mut ids = Vec::with_capacity(keys);
    // Batches of 50 000: one transaction each, so memory stays modest at 1M.
    for start in (0..keys).step_by(50_000) {
        let batch: Vec<NewKey> = (start..keys.min(start + 50_000))
            .map(|i| {
                let name = display_name(&format!("scale {i:07}"), "display_name").expect("name");
                NewKey {
                    id: KeyId(uuid::Uuid::new_v4()),
                    org_id: org,
                    display_name: name,
                    description: String::new(),
                    permissions: vec!["read_data".into()],
                    app_id: None,
                    secret_hash: hash.clone(),
                    expire_time: None,
                    allowed_cidrs: Vec::new(),
                    rate_limit: None,
                    actor: Actor::system("scale-bench"),
                    origin: Default::default(),
                }
            })
            .collect();
        app.store().create_keys(&batch).await.expect("seed");
        ids.extend(batch.iter().map(|k| k.id));
    }
    ids
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let sizes: Vec<usize> = std::env::var("APIKEYS_SCALE_SIZES")
        .unwrap_or_else(|_| "1000,100000,1000000".to_owned())
        .split(',')
        .map(|s| s.trim().parse().expect("a size"))
        .collect();
    let backend =
        if std::env::var("APIKEYS_BENCH_DATABASE_URL").is_ok_and(|u| !u.is_empty()) { "PostgreSQL" } else { "SQLite" };
    println!("scale on {backend}: cold Authenticate (cache off) and ListApiKeys pages of 1000");
    let secret = Secret::generate().expect("random");
    let mut results = Vec::new();
    let mut memory_run = None;
    for (n, &keys) in sizes.iter().enumerate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (url, created) = common::database(&format!("scale_{keys}")).await;
        let last = n + 1 == sizes.len();
        let config = ServerConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            data_dir: dir.path().to_path_buf(),
            database_url: url.map(Into::into),
            // Cold: every Authenticate looks the key up and verifies it. The last size also runs
            // the memory check, with the default cache.
            auth_cache_ttl_secs: 0,
            ..ServerConfig::default()
        };
        let app = Application::build(config.clone()).await.expect("server starts");
        let admin = std::fs::read_to_string(config.bootstrap_token_path()).expect("token").trim().to_owned();
        let addr = app.local_addr();
        let org = app.store().find_org_by_name(&config.bootstrap_org).await.expect("lookup").expect("org").id;
        let started = Instant::now();
        let ids = seed(&app, org, keys, &secret, &config).await;
        let seed_time = started.elapsed();
        // Fresh statistics, as autovacuum would gather them after a bulk import; without them the
        // planner may scan instead of using the indexes.
        if app.store().backend() == sea_orm::DatabaseBackend::Postgres {
            app.store().connection().execute_unprepared("ANALYZE").await.expect("analyze");
        }
        tokio::spawn(app.run(std::future::pending()));
        let channel = Channel::from_shared(format!("http://{addr}")).expect("url").connect().await.expect("connect");
        let mut client = ApiKeyServiceClient::new(channel);

        let mut auths = Vec::new();
        for i in 0..200 {
            let id = ids[(i * 7919 + 13) % ids.len()];
            let token = Credential { key_id: id.0, secret: secret.clone() }.token();
            let started = Instant::now();
            client.authenticate(pb::AuthenticateRequest { token, ..Default::default() }).await.expect("authenticate");
            auths.push(started.elapsed());
        }

        let list = |token: String| pb::ListApiKeysRequest { page_size: 1000, page_token: token, ..Default::default() };
        let mut firsts = Vec::new();
        for _ in 0..20 {
            let started = Instant::now();
            client.list_api_keys(authed(list(String::new()), &admin)).await.expect("list");
            firsts.push(started.elapsed());
        }
        // Walk to the last page reachable within 1000 pages.
        let deep_index = (keys / 1000).clamp(1, 1000);
        let mut token = String::new();
        for _ in 1..deep_index {
            token = client.list_api_keys(authed(list(token), &admin)).await.expect("list").into_inner().next_page_token;
        }
        let mut deeps = Vec::new();
        for _ in 0..20 {
            let started = Instant::now();
            client.list_api_keys(authed(list(token.clone()), &admin)).await.expect("list");
            deeps.push(started.elapsed());
        }
        let size = Size {
            keys,
            seed: seed_time,
            cold_auth: median(auths),
            first_page: median(firsts),
            deep_page: median(deeps),
            deep_index,
        };
        println!(
            "  {:>9} keys  seeded in {:>6.1} s   cold Authenticate {:>7.0} µs   page 1 {:>7.1} ms   page {:>4} {:>7.1} ms",
            size.keys,
            size.seed.as_secs_f64(),
            size.cold_auth.as_secs_f64() * 1e6,
            size.first_page.as_secs_f64() * 1e3,
            size.deep_index,
            size.deep_page.as_secs_f64() * 1e3
        );
        results.push(size);
        if last {
            memory_run = Some((dir, created, ids));
        } else {
            common::drop_database(created).await;
        }
    }
    if let (Some(small), Some(large)) = (results.first(), results.last()) {
        println!(
            "  cold Authenticate {} keys / {} keys: {:.2}x (goal <= 1.1)",
            large.keys,
            small.keys,
            large.cold_auth.as_secs_f64() / small.cold_auth.as_secs_f64()
        );
        println!(
            "  ListApiKeys at {} keys, page {} / page 1: {:.2}x (goal <= 1.2)",
            large.keys,
            large.deep_index,
            large.deep_page.as_secs_f64() / large.first_page.as_secs_f64()
        );
    }

    // Memory: a fresh server with the default cache over the largest table, verifying a stream of
    // distinct valid credentials (each one new to the cache).
    let Some((dir, created, ids)) = memory_run else { return };
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.path().to_path_buf(),
        database_url: created.as_ref().map(|(admin_url, name)| {
            let (base, _) = admin_url.rsplit_once('/').expect("URL");
            format!("{base}/{name}").into()
        }),
        ..ServerConfig::default()
    };
    let app = Application::build(config.clone()).await.expect("server starts");
    let addr = app.local_addr();
    tokio::spawn(app.run(std::future::pending()));
    let channel = Channel::from_shared(format!("http://{addr}")).expect("url").connect().await.expect("connect");
    let distinct = ids.len().min(20_000);
    println!(
        "  memory: {distinct} distinct valid credentials through a cache of {} entries",
        config.auth_cache_capacity
    );
    let before = rss_kib();
    let mut peak = before;
    let deadline = Instant::now() + Duration::from_secs(300);
    for (i, id) in ids.iter().take(distinct).enumerate() {
        if Instant::now() > deadline {
            println!("  (stopped after {i} credentials: time bound)");
            break;
        }
        let token = Credential { key_id: id.0, secret: secret.clone() }.token();
        let mut client = ApiKeyServiceClient::new(channel.clone());
        client.authenticate(pb::AuthenticateRequest { token, ..Default::default() }).await.expect("authenticate");
        if i % 5000 == 4999 {
            let now = rss_kib();
            peak = peak.max(now);
            println!("    after {:>6}: RSS {:>7} KiB", i + 1, now);
        }
    }
    println!("  RSS before {before} KiB, peak {peak} KiB (the process also holds the benchmark's own key list)");
    common::drop_database(created).await;
}
